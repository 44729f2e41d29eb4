/**
 * The A-Link's TLS material and the peer identity rule.
 *
 * Each host holds a leaf certificate whose CN is its host id, signed directly by the pair's own CA
 * (`src/pki/`). A connection is accepted only when the peer's certificate is signed by that CA (so a host
 * of another pair is refused) AND its CN is the expected peer's id (so a certificate for the wrong host of
 * the right pair is refused too). TLS 1.3 only, both directions authenticated. Only the pair CA is trusted:
 * passing `ca` replaces Node's default roots, and the leaf is also checked against the CA's key directly.
 */
import { readFile } from 'node:fs/promises';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { LockstepError } from '../util/errors.js';
import { signedBy, subjectCommonName } from '../pki/pki.js';

/** PEM text of this host's certificate and key and of the pair CA. */
export interface AlinkTlsMaterial {
  cert: string;
  key: string;
  ca: string;
}

/** File paths of the same, as `issueCert` in `src/pki/` returns them. */
export interface AlinkTlsFiles {
  cert: string;
  key: string;
  ca: string;
}

export async function loadAlinkTls(files: AlinkTlsFiles): Promise<AlinkTlsMaterial> {
  const read = async (what: keyof AlinkTlsFiles): Promise<string> => {
    try {
      return await readFile(files[what], 'utf8');
    } catch (e) {
      throw new LockstepError('ALINK_TLS', `cannot read the A-Link ${what} ${files[what]}: ${(e as Error).message}`, { file: files[what] }, { cause: e });
    }
  };
  return { cert: await read('cert'), key: await read('key'), ca: await read('ca') };
}

export interface AlinkTlsContext {
  /** For dialing (`tls.connect` takes a context). */
  secureContext: tls.SecureContext;
  /** For listening (`tls.createServer` builds its own context from these). */
  options: { cert: string; key: string; ca: string[]; minVersion: 'TLSv1.3'; maxVersion: 'TLSv1.3' };
  ca: X509Certificate;
}

/**
 * Checks that the material fits together for host `self` (its CN, signed by the pair CA, the key is its
 * key) and builds the TLS context; throws `ALINK_TLS`. Failing here, at start, beats a peer refusing every
 * connection later with a less telling reason.
 */
export function prepareAlinkTls(m: AlinkTlsMaterial, self: string): AlinkTlsContext {
  const fail = (why: string, cause?: unknown): never => {
    throw new LockstepError('ALINK_TLS', `A-Link TLS material for ${self}: ${why}`, { host: self }, { cause });
  };
  let cert: X509Certificate | undefined;
  let ca: X509Certificate | undefined;
  try {
    cert = new X509Certificate(m.cert);
  } catch (e) {
    fail('the certificate is not a PEM certificate', e);
  }
  try {
    ca = new X509Certificate(m.ca);
  } catch (e) {
    fail('the pair CA is not a PEM certificate', e);
  }
  if (!cert || !ca) throw fail('unreadable');
  if (!ca.ca) fail('the pair CA certificate is not a CA');
  const cn = subjectCommonName(cert.subject);
  if (cn !== self) fail(`the certificate's CN is ${JSON.stringify(cn)}, not this host's id ${JSON.stringify(self)}`);
  if (!signedBy(cert, ca)) fail('the certificate is not signed by the pair CA');
  try {
    if (!cert.checkPrivateKey(createPrivateKey(m.key))) fail('the key is not the certificate’s key');
  } catch (e) {
    if (e instanceof LockstepError) throw e;
    fail('the key is not a PEM private key', e);
  }
  const options = { cert: m.cert, key: m.key, ca: [m.ca], minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;
  let secureContext: tls.SecureContext | undefined;
  try {
    secureContext = tls.createSecureContext({ ...options, ca: [m.ca] });
  } catch (e) {
    fail(`TLS refused the material: ${(e as Error).message}`, e);
  }
  return { secureContext: secureContext!, options: { ...options, ca: [m.ca] }, ca };
}

/**
 * Why the peer's certificate is not the expected peer's, or null when it is. TLS has already checked the
 * chain to the pair CA; this checks the CN, and the CA signature again on the leaf itself.
 */
export function peerIdentityProblem(cert: tls.PeerCertificate | null | undefined, expected: string, ca: X509Certificate): string | null {
  if (!cert || !cert.raw) return 'the peer presented no certificate';
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert.raw);
  } catch {
    return 'the peer certificate cannot be parsed';
  }
  if (!signedBy(leaf, ca)) return 'the peer certificate is not signed by the pair CA';
  const cn = subjectCommonName(leaf.subject);
  if (cn === null) return 'the peer certificate has no single CN';
  if (cn !== expected) return `the peer certificate's CN is ${JSON.stringify(cn)}, not the peer ${JSON.stringify(expected)}`;
  return null;
}
