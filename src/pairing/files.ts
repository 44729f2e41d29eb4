/**
 * A host's pki directory after pairing, and the order it is written in.
 *
 *   ca.crt     the pair CA certificate                     both hosts
 *   ca.key     the pair CA key (mode 0600)                  the CA host only
 *   host.key   this host's key (mode 0600)                  both hosts
 *   host.crt   this host's certificate, CN = its id         both hosts; written last: the "paired" marker
 *
 * Every file is written durably (temporary name, fsync, rename, fsync the folder), and `host.crt` goes
 * last, after the key and the CA it belongs with. So a crash at any point leaves either no `host.crt` (not
 * paired: pairing runs again and overwrites the rest) or the complete set. A `host.crt` that does not fit
 * the rest was not written by us in that order, and is refused rather than overwritten.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { prepareAlinkTls } from '../alink/tls.js';
import { pairCaCommonName, subjectCommonName, type CaFiles } from '../pki/pki.js';
import { writeFileDurably } from '../util/durable-file.js';
import { describeError, LockstepError } from '../util/errors.js';

/** Paths of a paired host's TLS material: the shape `loadAlinkTls` reads. */
export interface PairFiles {
  ca: string;
  cert: string;
  key: string;
}

export function pairFilePaths(pkiDir: string): PairFiles & { caKey: string } {
  return {
    ca: path.join(pkiDir, 'ca.crt'),
    caKey: path.join(pkiDir, 'ca.key'),
    cert: path.join(pkiDir, 'host.crt'),
    key: path.join(pkiDir, 'host.key'),
  };
}

/**
 * The pair files when this host is paired: `host.crt`, `host.key` and `ca.crt` exist and pass the A-Link's
 * identity rule for `self` (CN = self, signed by the CA, the key is the certificate's). Null when there is
 * no `host.crt`. Throws `PAIRING` when there is one that does not fit: the operator decides what to remove.
 */
export async function pairFilesIfPaired(pkiDir: string, self: string): Promise<PairFiles | null> {
  const files = pairFilePaths(pkiDir);
  const cert = await readIfPresent(files.cert);
  if (cert === null) return null;
  const broken = (why: string, cause?: unknown): LockstepError =>
    new LockstepError(
      'PAIRING',
      `${pkiDir} holds a host.crt but ${why}: it is not a usable pairing for ${self}; remove host.crt (and what goes with it) to pair again`,
      { pkiDir, host: self },
      cause === undefined ? {} : { cause },
    );
  const key = await readIfPresent(files.key);
  const ca = await readIfPresent(files.ca);
  if (key === null || ca === null) throw broken(`no ${key === null ? 'host.key' : 'ca.crt'}`);
  try {
    prepareAlinkTls({ cert, key, ca }, self);
  } catch (e) {
    throw broken(describeError(e), e);
  }
  return { ca: files.ca, cert: files.cert, key: files.key };
}

/**
 * The pair CA that an earlier, interrupted pairing of this host stored (`ca.crt` and `ca.key`), or null.
 * The peer may hold a certificate of it already, so it is reused rather than replaced. Throws `PAIRING`
 * when the files are not pair `pairId`'s CA with its key.
 */
export async function storedPairCa(pkiDir: string, pairId: string): Promise<CaFiles | null> {
  const files = pairFilePaths(pkiDir);
  const cert = await readIfPresent(files.ca);
  const key = await readIfPresent(files.caKey);
  if (cert === null || key === null) return null;
  const refuse = (why: string, cause?: unknown): LockstepError =>
    new LockstepError('PAIRING', `${pkiDir} holds a ca.crt and ca.key that ${why}; remove them to pair again`, { pkiDir, pairId }, cause === undefined ? {} : { cause });
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(cert);
  } catch (e) {
    throw refuse('cannot be read', e);
  }
  const cn = subjectCommonName(ca.subject);
  if (!ca.ca || cn !== pairCaCommonName(pairId)) throw refuse(`are not pair ${pairId}'s CA (CN ${JSON.stringify(cn)})`);
  try {
    if (!ca.checkPrivateKey(createPrivateKey(key))) throw refuse('do not belong together');
  } catch (e) {
    if (e instanceof LockstepError) throw e;
    throw refuse('cannot be read', e);
  }
  return { cert: files.ca, key: files.caKey };
}

/** Stores the pair CA (the CA host does, before the joiner is sent a certificate of it). */
export async function storeCa(pkiDir: string, pem: { cert: string; key: string }): Promise<void> {
  const files = pairFilePaths(pkiDir);
  await writeFileDurably(files.caKey, pem.key, { mode: 0o600 });
  await writeFileDurably(files.ca, pem.cert);
}

/** Stores this host's key, the CA certificate, and last the certificate that marks the host paired. */
export async function storeHostFiles(pkiDir: string, pem: { ca: string; cert: string; key: string }): Promise<PairFiles> {
  const files = pairFilePaths(pkiDir);
  await writeFileDurably(files.key, pem.key, { mode: 0o600 });
  await writeFileDurably(files.ca, pem.ca);
  await writeFileDurably(files.cert, pem.cert);
  return { ca: files.ca, cert: files.cert, key: files.key };
}

async function readIfPresent(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new LockstepError('PAIRING', `cannot read ${file}: ${(e as Error).message}`, { file }, { cause: e });
  }
}
