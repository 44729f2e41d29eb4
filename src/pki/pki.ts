/**
 * Lockstep's small PKI, on the `openssl` CLI: ECDSA P-256 keys, a CA per pair (and one per quorum server),
 * and leaf certificates good for both ends of a mutual-TLS connection.
 *
 * - A pair's CA signs the certificates of the pair's two hosts (CN = host id). The A-Link and the quorum
 *   server trust exactly that CA for that pair; a certificate of another pair is refused.
 * - A quorum server's CA (made by `lockstep-quorum init`) signs the server's own certificate; hosts are
 *   configured with that CA certificate (trust pinned at enrollment).
 * - At pairing (`src/pairing/`) the host that holds the pair CA signs its peer's certificate request
 *   (`createKeyAndCsr` on the peer, `signCsr` on the CA host): the peer's key never leaves the peer.
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
  const leaf = checkedLeafOptions(opts);
  const slug = opts.commonName.toLowerCase().replace(/[^a-z0-9._-]+/g, '-');
  const files = { cert: path.join(dir, `cert-${slug}.pem`), key: path.join(dir, `key-${slug}.pem`), ca: ca.cert };
  await withScratch(async (scratch) => {
    await writeKey(files.key);
    const config = await writeLeafConfig(scratch, leaf);
    const csr = path.join(scratch, 'leaf.csr');
    await run('openssl', ['req', '-new', '-config', config, '-key', files.key, '-sha256', '-out', csr]);
    const { stdout } = await run('openssl', signArgs(ca, csr, config, leaf.days));
    await writeFileDurably(files.cert, checkedPem(stdout, 'certificate'));
  });
  return files;
}

/**
 * A self-signed leaf certificate in `dir`, `cert.pem` and `key.pem` (mode 0600): for a TLS server that no CA
 * of ours vouches for — the management API when the operator gives it no certificate. The same extensions
 * as an issued leaf, signed by its own key.
 */
export async function createSelfSignedCert(dir: string, opts: IssueOptions): Promise<{ cert: string; key: string }> {
  const leaf = checkedLeafOptions(opts);
  const files = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  await withScratch(async (scratch) => {
    await writeKey(files.key);
    const config = await writeLeafConfig(scratch, leaf);
    const { stdout } = await run('openssl', [
      'req', '-x509', '-new', '-config', config, '-extensions', 'ext', '-key', files.key, '-sha256', '-days', String(leaf.days), '-set_serial', serial(),
    ]);
    await writeFileDurably(files.cert, checkedPem(stdout, 'certificate'));
  });
  return files;
}

/**
 * A fresh P-256 key written at `keyFile` (mode 0600, durably) and a CSR for `commonName` signed with it,
 * returned as PEM. The key stays where the caller put it: a host that asks its peer for a certificate
 * sends only the CSR.
 */
export async function createKeyAndCsr(keyFile: string, commonName: string): Promise<string> {
  checkCommonName(commonName);
  return withScratch(async (scratch) => {
    await writeKey(keyFile);
    const config = path.join(scratch, 'req.cnf');
    await writeFile(config, ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', `CN = ${commonName}`, ''].join('\n'));
    const { stdout } = await run('openssl', ['req', '-new', '-config', config, '-key', keyFile, '-sha256']);
    return checkedPem(stdout, 'certificate request');
  });
}

/**
 * Signs someone else's CSR with `ca` and returns the certificate PEM: the same leaf as `issueCert` makes
 * (extensions, validity, SANs from `opts`, never from the request). The request must prove its key (its
 * self-signature verifies: openssl refuses it otherwise), hold a P-256 key like every key of the pair,
 * and name exactly `CN=<opts.commonName>`, nothing else; else `INVALID_CERTIFICATE`.
 */
export async function signCsr(ca: CaFiles, csrPem: string, opts: IssueOptions): Promise<string> {
  const leaf = checkedLeafOptions(opts);
  const pem = await withScratch(async (scratch) => {
    const csr = path.join(scratch, 'peer.csr');
    await writeFile(csr, csrPem);
    const loaded = await run('openssl', ['req', '-in', csr, '-noout'], { allowFailure: true });
    if (loaded.code !== 0) throw badRequest('is not a PEM certificate request', loaded.stderr);
    const config = await writeLeafConfig(scratch, leaf);
    const signed = await run('openssl', signArgs(ca, csr, config, leaf.days), { allowFailure: true });
    if (signed.code !== 0 && /self-signature/i.test(signed.stderr)) throw badRequest('has a self-signature that does not verify', signed.stderr);
    if (signed.code !== 0) {
      throw new LockstepError('COMMAND_FAILED', `openssl could not sign the certificate request: ${signed.stderr.trim()}`, { stderr: signed.stderr });
    }
    return checkedPem(signed.stdout, 'certificate');
  });
  // Checked on the result, where Node parses the names and the key: the request's own encoding is openssl's.
  const cert = readCertificate(pem, 'the signed certificate');
  if (cert.subject !== `CN=${opts.commonName}`) {
    throw badRequest(`names ${JSON.stringify(cert.subject.replaceAll('\n', ', '))}, not exactly CN=${opts.commonName}`);
  }
  if (cert.publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw badRequest('does not hold a P-256 key');
  return pem;
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

interface LeafOptions {
  commonName: string;
  /** subjectAltName entries, `IP:…` and `DNS:…`. */
  san: string[];
  days: number;
}

function checkedLeafOptions(opts: IssueOptions): LeafOptions {
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
  return { commonName: opts.commonName, san: [...ips.map((ip) => `IP:${ip}`), ...dnsNames.map((n) => `DNS:${n}`)], days };
}

/** The openssl config of a leaf: its subject for the request, its extensions for the signature. */
async function writeLeafConfig(scratch: string, leaf: LeafOptions): Promise<string> {
  const config = path.join(scratch, 'leaf.cnf');
  await writeFile(
    config,
    [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      '[dn]',
      `CN = ${leaf.commonName}`,
      '[ext]',
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature',
      'extendedKeyUsage = serverAuth,clientAuth',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      ...(leaf.san.length > 0 ? [`subjectAltName = ${leaf.san.join(',')}`] : []),
      '',
    ].join('\n'),
  );
  return config;
}

/** `openssl x509 -req` signing `csr` with `ca`; only the config's extensions go in (openssl copies none of the request's). */
function signArgs(ca: CaFiles, csr: string, config: string, days: number): string[] {
  return [
    'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial(), '-days', String(days), '-sha256',
    '-extfile', config, '-extensions', 'ext',
  ];
}

function badRequest(why: string, stderr?: string): LockstepError {
  return new LockstepError('INVALID_CERTIFICATE', `the certificate request ${why}`, stderr === undefined ? {} : { stderr: stderr.trim() });
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
