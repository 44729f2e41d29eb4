/**
 * The quorum server's state directory: its own TLS identity, and per enrolled pair the pair's CA and the
 * durable record (epoch, holder).
 *
 * ```
 * DIR/server.json              { v, name, cert, key, ca }: the server's identity (paths inside DIR/server/)
 * DIR/server/ca.pem            the server's own CA: hosts are configured with this certificate
 * DIR/server/ca-key.pem        its key (0600)
 * DIR/server/cert-<name>.pem   the server's certificate, signed by that CA; key-<name>.pem (0600)
 * DIR/pairs/<pair>/ca.pem      the pair's CA: only certificates it signed may ask for this pair
 * DIR/pairs/<pair>/record.json { v, pair, epoch, holder, leaseMs }: written durably before every reply
 *                              that depends on it; never delete it (epochs could then repeat)
 * DIR/serve.pid                the running server's pid: one server per state directory
 * ```
 */
import { X509Certificate } from 'node:crypto';
import { open, readFile, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { createCa, fingerprintOf, issueCert, pairCaCommonName, readCertificate, subjectCommonName } from '../pki/pki.js';
import { QUORUM_NAME_RE } from '../protocol/quorum.js';
import { writeFileDurably } from '../util/durable-file.js';
import { LockstepError } from '../util/errors.js';

export interface ServerIdentityFiles {
  name: string;
  cert: string;
  key: string;
  ca: string;
}

/** The durable part of a pair's record, and the lease it was granted under. */
export interface StoredPairRecord {
  epoch: number;
  holder: string | null;
  /** The lease length in force when this record was written: a restart waits at least this long. */
  leaseMs: number;
}

const SERVER_JSON = 'server.json';
const RECORD_VERSION = 1;

export function pairsDir(stateDir: string): string {
  return path.join(stateDir, 'pairs');
}
export function pairCaFile(stateDir: string, pairId: string): string {
  return path.join(pairsDir(stateDir), pairId, 'ca.pem');
}
export function pairRecordFile(stateDir: string, pairId: string): string {
  return path.join(pairsDir(stateDir), pairId, 'record.json');
}

/**
 * `lockstep-quorum init`: the server's own CA and its certificate (CN = name, SANs = the addresses and
 * names hosts reach it by). Refuses a directory that is initialized already: a new CA would break every
 * host's pinned trust.
 */
export async function initServerState(stateDir: string, name: string, ips: string[], dnsNames: string[] = []): Promise<ServerIdentityFiles> {
  if (!QUORUM_NAME_RE.test(name)) {
    throw new LockstepError('INVALID_ARGUMENT', `quorum server name ${JSON.stringify(name)} is not valid: [a-z0-9][a-z0-9-]{0,62}`, { name });
  }
  if (ips.length === 0 && dnsNames.length === 0) {
    throw new LockstepError('INVALID_ARGUMENT', 'give at least one address (--ip) the hosts reach this server by: it goes into its certificate');
  }
  if (await exists(path.join(stateDir, SERVER_JSON))) {
    throw new LockstepError('QUORUM_STATE', `${stateDir} is initialized already (${SERVER_JSON} exists); a new CA would break the hosts' trust`, {
      stateDir,
    });
  }
  const dir = path.join(stateDir, 'server');
  const ca = await createCa(dir, `lockstep quorum ${name}`);
  const leaf = await issueCert(ca, dir, { commonName: name, ips, dnsNames });
  const identity = { name, cert: path.relative(stateDir, leaf.cert), key: path.relative(stateDir, leaf.key), ca: path.relative(stateDir, leaf.ca) };
  await writeFileDurably(path.join(stateDir, SERVER_JSON), `${JSON.stringify({ v: 1, ...identity }, null, 2)}\n`);
  return { name, cert: leaf.cert, key: leaf.key, ca: leaf.ca };
}

/** The server's identity as `init` left it (absolute paths); throws `QUORUM_STATE` when not initialized. */
export async function loadServerIdentity(stateDir: string): Promise<ServerIdentityFiles> {
  const file = path.join(stateDir, SERVER_JSON);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw new LockstepError(
      'QUORUM_STATE',
      missing ? `${stateDir} is not initialized: run \`lockstep-quorum init --state ${stateDir} --name NAME --ip ADDR\`` : `${file} cannot be read: ${(e as Error).message}`,
      { stateDir },
      { cause: e },
    );
  }
  const o = raw as Record<string, unknown>;
  const field = (k: string): string => {
    const v = o?.[k];
    if (typeof v !== 'string' || v === '') throw new LockstepError('QUORUM_STATE', `${file}: ${k} is missing`, { file });
    return v;
  };
  return { name: field('name'), cert: path.resolve(stateDir, field('cert')), key: path.resolve(stateDir, field('key')), ca: path.resolve(stateDir, field('ca')) };
}

export interface EnrollResult {
  pairId: string;
  /** SHA-256 of the enrolled CA certificate (hex). */
  fingerprint: string;
  /** 'new': first enrollment; 'same': this CA was enrolled already; 'replaced': the pair's CA changed (its record is kept). */
  outcome: 'new' | 'same' | 'replaced';
}

/**
 * Enrolls pair `pairId` on the quorum server: from now on certificates signed by `caCertPem` may ask for
 * this pair. The CA must be a CA whose CN is "lockstep pair <pairId>" (`createPairCa`), so one pair's CA
 * cannot be enrolled under another pair's id by mistake. Re-enrolling replaces the CA and keeps the record:
 * epochs never go back. A running server picks the pair up within its reload interval (or on SIGHUP).
 *
 * The record is written first: a pair whose CA is present always has a record, so a missing record means
 * it was lost, and the server then refuses to serve the pair rather than start again from epoch 0.
 */
export async function enrollPair(stateDir: string, pairId: string, caCertPem: string): Promise<EnrollResult> {
  if (!QUORUM_NAME_RE.test(pairId)) {
    throw new LockstepError('INVALID_ARGUMENT', `pair id ${JSON.stringify(pairId)} is not valid: [a-z0-9][a-z0-9-]{0,62}`, { pairId });
  }
  await loadServerIdentity(stateDir);
  const ca = checkPairCa(caCertPem, pairId);
  const fp = fingerprintOf(ca);
  const caFile = pairCaFile(stateDir, pairId);
  const recordFile = pairRecordFile(stateDir, pairId);
  const hadCa = await exists(caFile);
  if (!(await exists(recordFile))) {
    if (hadCa) {
      throw new LockstepError('QUORUM_STATE', `pair ${pairId} is enrolled but its record ${recordFile} is missing: restore it from a backup (never start it again from epoch 0)`, {
        pairId,
      });
    }
    await writePairRecord(stateDir, pairId, { epoch: 0, holder: null, leaseMs: 0 });
  }
  let outcome: EnrollResult['outcome'] = 'new';
  if (hadCa) {
    let old: X509Certificate | null = null;
    try {
      old = new X509Certificate(await readFile(caFile));
    } catch {
      old = null;
    }
    outcome = old !== null && fingerprintOf(old) === fp ? 'same' : 'replaced';
  }
  if (outcome !== 'same') await writeFileDurably(caFile, ca.toString());
  return { pairId, fingerprint: fp, outcome };
}

/** Parses and checks a pair CA certificate; throws `INVALID_CERTIFICATE`. */
export function checkPairCa(pem: string | Buffer, pairId: string): X509Certificate {
  const ca = readCertificate(pem, `the CA certificate of pair ${pairId}`);
  if (!ca.ca) throw new LockstepError('INVALID_CERTIFICATE', `the certificate given for pair ${pairId} is not a CA certificate`, { pairId });
  const cn = subjectCommonName(ca.subject);
  const expected = pairCaCommonName(pairId);
  if (cn !== expected) {
    throw new LockstepError('INVALID_CERTIFICATE', `the CA certificate's CN is ${JSON.stringify(cn)}, not ${JSON.stringify(expected)}: is it another pair's CA?`, {
      pairId,
      commonName: cn,
    });
  }
  if (!ca.verify(ca.publicKey)) throw new LockstepError('INVALID_CERTIFICATE', `the CA certificate of pair ${pairId} is not self-signed`, { pairId });
  return ca;
}

/** Enrolled pair ids: folders under `pairs/` with a `ca.pem`. */
export async function listEnrolledPairs(stateDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(pairsDir(stateDir));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: string[] = [];
  for (const n of names.sort()) if (QUORUM_NAME_RE.test(n) && (await exists(pairCaFile(stateDir, n)))) out.push(n);
  return out;
}

/** Reads a pair's record; throws `QUORUM_STATE` when it is missing or not a valid record. */
export async function readPairRecord(stateDir: string, pairId: string): Promise<StoredPairRecord> {
  const file = pairRecordFile(stateDir, pairId);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new LockstepError('QUORUM_STATE', `pair ${pairId}: record ${file} cannot be read: ${(e as Error).message}`, { pairId, file }, { cause: e });
  }
  const bad = (why: string): LockstepError => new LockstepError('QUORUM_STATE', `pair ${pairId}: record ${file} ${why}`, { pairId, file });
  if (typeof raw !== 'object' || raw === null) throw bad('is not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o['v'] !== RECORD_VERSION) throw bad(`has version ${JSON.stringify(o['v'])}, not ${RECORD_VERSION}`);
  if (o['pair'] !== pairId) throw bad(`is the record of ${JSON.stringify(o['pair'])}`);
  const epoch = o['epoch'];
  const holder = o['holder'];
  const leaseMs = o['leaseMs'];
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) throw bad('has no valid epoch');
  if (holder !== null && (typeof holder !== 'string' || !QUORUM_NAME_RE.test(holder))) throw bad('has no valid holder');
  if (typeof leaseMs !== 'number' || !Number.isSafeInteger(leaseMs) || leaseMs < 0) throw bad('has no valid leaseMs');
  if (holder === null && epoch !== 0) throw bad('has an epoch but no holder');
  return { epoch, holder, leaseMs };
}

export async function writePairRecord(stateDir: string, pairId: string, rec: StoredPairRecord): Promise<void> {
  const body = { v: RECORD_VERSION, pair: pairId, epoch: rec.epoch, holder: rec.holder, leaseMs: rec.leaseMs };
  await writeFileDurably(pairRecordFile(stateDir, pairId), `${JSON.stringify(body)}\n`);
}

/**
 * One server per state directory: two would each grant epochs from their own copy of the records. The
 * lock is a pid file; a lock left by a process that is gone (kill -9, power loss) is taken over.
 */
export async function lockStateDir(stateDir: string): Promise<() => Promise<void>> {
  const file = path.join(stateDir, 'serve.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return async () => {
        try {
          if ((await readFile(file, 'utf8')).trim() === String(process.pid)) await rm(file, { force: true });
        } catch {
          /* gone already */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && (await isQuorumProcess(pid))) {
        throw new LockstepError('QUORUM_STATE', `${stateDir} is served already by lockstep-quorum pid ${pid}`, { stateDir, pid });
      }
      await rm(file, { force: true });
    }
  }
  throw new LockstepError('QUORUM_STATE', `cannot take the lock ${file}: another server is starting on ${stateDir}`, { stateDir });
}

/** Whether `pid` is alive and looks like a quorum server (not an unrelated process that reused the pid). */
async function isQuorumProcess(pid: number): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('quorum');
  } catch {
    return false;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}
