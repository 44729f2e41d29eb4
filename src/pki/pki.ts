/**
 * Lockstep's small PKI, on the `openssl` CLI: ECDSA P-256 keys, a CA per pair (and one per quorum server),
 * and leaf certificates good for both ends of a mutual-TLS connection.
 *
 * - A pair's CA signs the certificates of the pair's two hosts (CN = host id). The A-Link and the quorum
 *   server trust exactly that CA for that pair; a certificate of another pair is refused.
 * - A quorum server's CA (made by `lockstep-quorum init`) signs the server's own certificate; hosts are
 *   configured with that CA certificate (trust pinned at enrollment).
 *
 * Keys are written with mode 0600 from the first byte on; certificates and keys are written durably (a
 * power loss leaves the old file or the new one, never half of one). Every openssl run has its own config
 * file, so the system's `openssl.cnf` cannot add extensions we did not ask for.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { run } from '../util/exec.js';
import { writeFileDurably } from '../util/durable-file.js';

/** PEM file paths of a CA: its certificate and its private key. */
export interface CaFiles {
  cert: string;
  key: string;
}

/** PEM file paths of a leaf certificate, its key and the CA certificate that signed it. */
export interface IssuedFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface IssueOptions {
  /** The subject's CN: a host id, or a quorum server's name. */
  commonName: string;
  /** IP addresses for the subjectAltName (a client connecting by address checks it against these). */
  ips?: string[];
  dnsNames?: string[];
  /** Validity; default `CERT_DAYS_DEFAULT`. */
  days?: number;
}

/** Ten years: CAs and leaves alike. A pair's certificates expiring on a quiet Sunday would be an outage. */
export const CA_DAYS = 3650;
export const CERT_DAYS_DEFAULT = 3650;

/** The CN of a pair's CA: the quorum server checks it when the pair is enrolled. */
export function pairCaCommonName(pairId: string): string {
  return `lockstep pair ${pairId}`;
}

/** Pair ids follow the quorum protocol's name rule. */
const PAIR_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** CNs we put in certificates: printable, no characters that mean something to openssl's `-subj` or config. */
const COMMON_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;
const DNS_NAME_RE = /^(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** A self-signed CA for pair `pairId` in `dir`: `ca.pem` and `ca-key.pem`, CN "lockstep pair <pairId>". */
export async function createPairCa(dir: string, pairId: string): Promise<CaFiles> {
  if (!PAIR_ID_RE.test(pairId)) {
    throw new LockstepError('INVALID_ARGUMENT', `pair id ${JSON.stringify(pairId)} is not valid: [a-z0-9][a-z0-9-]{0,62}`, { pairId });
  }
  return createCa(dir, pairCaCommonName(pairId));
}

/**
 * A self-signed CA with the given CN in `dir`: `ca.pem` and `ca-key.pem` (mode 0600). basicConstraints
 * CA:TRUE with no path length below it: it signs leaves only.
 */
export async function createCa(dir: string, commonName: string): Promise<CaFiles> {
  checkCommonName(commonName);
  const files = { cert: path.join(dir, 'ca.pem'), key: path.join(dir, 'ca-key.pem') };
  await withScratch(async (scratch) => {
    await writeKey(files.key);
    const config = path.join(scratch, 'ca.cnf');
    await writeFile(
      config,
      [
        '[req]',
        'distinguished_name = dn',
        'prompt = no',
        'x509_extensions = ext',
        '[dn]',
        `CN = ${commonName}`,
        '[ext]',
        'basicConstraints = critical,CA:TRUE,pathlen:0',
        'keyUsage = critical,keyCertSign,cRLSign',
        'subjectKeyIdentifier = hash',
        '',
      ].join('\n'),
    );
    const { stdout } = await run('openssl', [
      'req', '-x509', '-new', '-config', config, '-key', files.key, '-sha256', '-days', String(CA_DAYS), '-set_serial', serial(),
    ]);
    await writeFileDurably(files.cert, checkedPem(stdout, 'CA certificate'));
  });
  return files;
}

/**
 * A leaf certificate signed by `ca`, for TLS servers and clients alike (extendedKeyUsage serverAuth and
 * clientAuth), in `dir` as `cert-<cn>.pem` and `key-<cn>.pem` (mode 0600). Issuing again for the same CN
 * replaces both files (a new key each time).
 */
export async function issueCert(ca: CaFiles, dir: string, opts: IssueOptions): Promise<IssuedFiles> {
  checkCommonName(opts.commonName);
  const ips = opts.ips ?? [];
  const dnsNames = opts.dnsNames ?? [];
  for (const ip of ips) {
    if (isIP(ip) === 0) throw new LockstepError('INVALID_ARGUMENT', `${JSON.stringify(ip)} is not an IP address`, { ip });
  }
  for (const name of dnsNames) {
    if (!DNS_NAME_RE.test(name)) throw new LockstepError('INVALID_ARGUMENT', `${JSON.stringify(name)} is not a DNS name`, { dnsName: name });
  }
  const days = opts.days ?? CERT_DAYS_DEFAULT;
  if (!Number.isInteger(days) || days < 1 || days > 36500) {
    throw new LockstepError('INVALID_ARGUMENT', `certificate validity ${days} days is not in 1..36500`, { days });
  }
  const slug = opts.commonName.toLowerCase().replace(/[^a-z0-9._-]+/g, '-');
  const files = { cert: path.join(dir, `cert-${slug}.pem`), key: path.join(dir, `key-${slug}.pem`), ca: ca.cert };
  await withScratch(async (scratch) => {
    await writeKey(files.key);
    const config = path.join(scratch, 'leaf.cnf');
    const san = [...ips.map((ip) => `IP:${ip}`), ...dnsNames.map((n) => `DNS:${n}`)];
    await writeFile(
      config,
      [
        '[req]',
        'distinguished_name = dn',
        'prompt = no',
        '[dn]',
        `CN = ${opts.commonName}`,
        '[ext]',
        'basicConstraints = critical,CA:FALSE',
        'keyUsage = critical,digitalSignature',
        'extendedKeyUsage = serverAuth,clientAuth',
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid',
        ...(san.length > 0 ? [`subjectAltName = ${san.join(',')}`] : []),
        '',
      ].join('\n'),
    );
    const csr = path.join(scratch, 'leaf.csr');
    await run('openssl', ['req', '-new', '-config', config, '-key', files.key, '-sha256', '-out', csr]);
    const { stdout } = await run('openssl', [
      'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial(), '-days', String(days), '-sha256',
      '-extfile', config, '-extensions', 'ext',
    ]);
    await writeFileDurably(files.cert, checkedPem(stdout, 'certificate'));
  });
  return files;
}

/** SHA-256 of the certificate's DER, lowercase hex without separators (the first certificate of the file). */
export async function fingerprint(certPath: string): Promise<string> {
  return fingerprintOf(readCertificate(await readFile(certPath, 'utf8'), certPath));
}

export function fingerprintOf(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex');
}

/** Parses a PEM certificate; throws `INVALID_CERTIFICATE` naming `what` (e.g. the file) when it is not one. */
export function readCertificate(pem: string | Buffer, what = 'certificate'): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new LockstepError('INVALID_CERTIFICATE', `${what} is not a PEM certificate`, { what }, { cause: e });
  }
}

/** The subject CN of a PEM certificate; throws `INVALID_CERTIFICATE` unless it has exactly one. */
export function certCommonName(pem: string | Buffer): string {
  const cn = subjectCommonName(readCertificate(pem).subject);
  if (cn === null) throw new LockstepError('INVALID_CERTIFICATE', 'the certificate does not have exactly one CN');
  return cn;
}

/** The CN of an X509Certificate's subject ("O=..\nCN=host1"), or null when there is not exactly one. */
export function subjectCommonName(subject: string): string | null {
  const cns = subject
    .split('\n')
    .filter((line) => line.startsWith('CN='))
    .map((line) => line.slice(3));
  return cns.length === 1 ? cns[0]! : null;
}

/** Whether `ca` signed `leaf` directly: the issuer name matches and the signature verifies with the CA's key. */
export function signedBy(leaf: X509Certificate, ca: X509Certificate): boolean {
  try {
    return leaf.checkIssued(ca) && leaf.verify(ca.publicKey);
  } catch {
    return false; // e.g. a signature algorithm the CA's key cannot have made
  }
}

function checkCommonName(cn: string): void {
  if (!COMMON_NAME_RE.test(cn)) {
    throw new LockstepError('INVALID_ARGUMENT', `common name ${JSON.stringify(cn)} is not valid: letters, digits, space . _ -, at most 64`, {
      commonName: cn,
    });
  }
}

/** A fresh P-256 key, written with mode 0600 (openssl prints it; we write it, so its mode is ours). */
async function writeKey(file: string): Promise<void> {
  const { stdout } = await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-pkeyopt', 'ec_param_enc:named_curve']);
  await writeFileDurably(file, checkedPem(stdout, 'private key'), { mode: 0o600 });
}

/** A random positive 127-bit serial, as RFC 5280 asks (unique per CA without keeping a counter). */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return `0x${bytes.toString('hex')}`;
}

function checkedPem(text: string, what: string): string {
  if (!text.startsWith('-----BEGIN ')) {
    throw new LockstepError('COMMAND_FAILED', `openssl did not print a PEM ${what}`, { output: text.slice(0, 200) });
  }
  return text;
}

async function withScratch<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-pki-'));
  try {
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
