/**
 * Pairing: two hosts that share nothing yet but a pairing secret (configured by their operators) and a
 * private network (the first A-Link) end up with the pair's certificates, which the A-Link and the quorum
 * servers then trust. Done once: a paired host returns at once.
 *
 * The host whose id sorts first is the **CA host** (the A-Link's dialer rule): it makes the pair CA and
 * signs both certificates. The other, the **joiner**, makes its own key and sends only a CSR. Each host
 * finds the other by beacons (discovery.ts); the CA host then dials the joiner's pairing port and they run
 * the exchange (exchange.ts), in which each proves the secret before the other gives anything away. Each
 * host writes only its own pki directory (files.ts). See docs/pairing.md.
 */
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { prepareAlinkTls } from '../alink/tls.js';
import { createKeyAndCsr, createPairCa, pairCaCommonName, signCsr, subjectCommonName } from '../pki/pki.js';
import { describeError, LockstepError } from '../util/errors.js';
import { sleep } from '../util/proc.js';
import { Discovery, DISCOVERY_PORT_DEFAULT, type DiscoveryOptions } from './discovery.js';
import { runCaSide, runJoinerSide, type Dropped } from './exchange.js';
import { pairFilesIfPaired, storeCa, storedPairCa, storeHostFiles, type PairFiles } from './files.js';
import { PAIRING_NAME_RE } from './messages.js';
import { derivePairingKey } from './proof.js';

export { pairFilesIfPaired, type PairFiles } from './files.js';

export const PAIRING_PORT_DEFAULT = 7792;
export const SECRET_CHARS_MIN = 16;
/** The CA host's pause between two connections to the joiner (one beacon interval). */
const REDIAL_MS = 300;
/** Scratch directories in the pki directory, for keys not yet part of a pairing. */
const SCRATCH_PREFIX = '.pairing-';

export interface PairOptions {
  /** This host's id, and the peer's: the CNs of their certificates. */
  self: string;
  peer: string;
  pairId: string;
  /** The same on both hosts, at least `SECRET_CHARS_MIN` characters. It never goes on the wire. */
  secret: string;
  /** This host's own pki directory (created 0700 when missing). */
  pkiDir: string;
  /** The first A-Link: this host's address on it and the network's broadcast address. */
  privateNet: { local: string; broadcast: string };
  /** UDP port of the beacons, the same on both hosts; default `DISCOVERY_PORT_DEFAULT` (7791). */
  discoveryPort?: number;
  /** TCP port the joiner accepts the exchange on (advertised in its beacons); 0 picks a free one. Default 7792. */
  pairingPort?: number;
  /** For the whole pairing: discovery, exchange and writing the files. */
  timeoutMs: number;
  /** One line per event: found the peer, an exchange dropped, paired (the caller adds time and context). */
  log: (line: string) => void;
}

/**
 * Pairs this host with its peer and returns its pair files; throws `PAIRING` (no peer in time, the secrets
 * differ, the peer sent something unusable) or `INVALID_ARGUMENT`. Nothing is written unless the exchange
 * is authenticated; see files.ts for the order and docs/pairing.md for what a crash leaves.
 */
export async function pairWithPeer(o: PairOptions): Promise<PairFiles> {
  checkOptions(o);
  const paired = await pairFilesIfPaired(o.pkiDir, o.self);
  if (paired) {
    await checkPairOf(paired, o.pairId);
    return paired;
  }
  const deadline = Date.now() + o.timeoutMs;
  await mkdir(o.pkiDir, { recursive: true, mode: 0o700 });
  const key = await derivePairingKey(o.secret, o.pairId);
  const role = o.self < o.peer ? 'CA host' : 'joiner';
  o.log(`pairing ${o.self} with ${o.peer} as pair ${o.pairId} (this host is the ${role}) on ${o.privateNet.local}`);
  // New keys live in a scratch directory until the exchange is authenticated, so a failure writes nothing.
  // A crashed run's scratch holds keys nobody got a certificate for: removed (one pairing per pki
  // directory at a time, as one lockstepd per host runs it).
  await removeScratch(o.pkiDir);
  const scratch = await mkdtemp(path.join(o.pkiDir, SCRATCH_PREFIX));
  try {
    const files = role === 'CA host' ? await pairAsCaHost(o, key, deadline, scratch) : await pairAsJoiner(o, key, deadline, scratch);
    o.log(`paired with ${o.peer}: pair ${o.pairId} certificates in ${o.pkiDir}`);
    return files;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function pairAsCaHost(o: PairOptions, key: Buffer, deadline: number, scratch: string): Promise<PairFiles> {
  const stored = await storedPairCa(o.pkiDir, o.pairId);
  const ca = stored ?? (await createPairCa(scratch, o.pairId));
  const caPem = { cert: await readFile(ca.cert, 'utf8'), key: await readFile(ca.key, 'utf8') };
  const ownKey = path.join(scratch, 'host.key');
  const ownCert = await signCsr(ca, await createKeyAndCsr(ownKey, o.self), { commonName: o.self });
  let caStored = stored !== null;
  let certsSent = false;
  const issue = async (csr: string): Promise<{ ca: string; cert: string }> => {
    const cert = await signCsr(ca, csr, { commonName: o.peer });
    // The joiner may trust this CA from the next line on: it must survive a crash of ours from now.
    if (!caStored) await storeCa(o.pkiDir, caPem);
    caStored = true;
    certsSent = true;
    return { ca: caPem.cert, cert };
  };

  const discovery = await Discovery.start({ ...discoveryOptions(o), pairingPort: 0 });
  try {
    await discovery.waitForPeer(deadline);
    for (let last: Dropped | null = null; ; ) {
      const at = discovery.peer!; // the latest beacon: the joiner may have restarted on another port
      if (at.pairingPort === 0) {
        throw new LockstepError(
          'PAIRING',
          `${o.peer} at ${at.address} does not accept the exchange: it takes itself for the CA host, so its peer is not ${o.self}; check both hosts' ids`,
          { peer: o.peer },
        );
      }
      if (Date.now() >= deadline) throw exchangeTimeout(o, at.address, last, certsSent);
      const conn = await dial(at.address, at.pairingPort, o.privateNet.local, deadline);
      const outcome = conn instanceof net.Socket ? await runCaSide(conn, { pairId: o.pairId, self: o.self, peer: o.peer, key, deadline, issue }) : conn;
      if (outcome === 'paired') break;
      last = outcome;
      o.log(`exchange with ${o.peer} at ${at.address}:${at.pairingPort} dropped, trying again: ${outcome.dropped}`);
      await sleep(Math.min(REDIAL_MS, Math.max(0, deadline - Date.now())));
    }
  } finally {
    await discovery.close();
  }
  return storeHostFiles(o.pkiDir, { ca: caPem.cert, cert: ownCert, key: await readFile(ownKey, 'utf8') });
}

async function pairAsJoiner(o: PairOptions, key: Buffer, deadline: number, scratch: string): Promise<PairFiles> {
  const ownKey = path.join(scratch, 'host.key');
  const csr = await createKeyAndCsr(ownKey, o.self);
  let stored: PairFiles | null = null;
  const accept = async (m: { ca: string; cert: string }): Promise<void> => {
    const keyPem = await readFile(ownKey, 'utf8');
    checkReceived(m, keyPem, o);
    stored = await storeHostFiles(o.pkiDir, { ca: m.ca, cert: m.cert, key: keyPem });
  };
  // Listening before the first beacon: the beacon advertises this port.
  const server = net.createServer();
  await listen(server, o.privateNet.local, o.pairingPort ?? PAIRING_PORT_DEFAULT);
  const pairingPort = (server.address() as net.AddressInfo).port;
  const discovery = await Discovery.start({ ...discoveryOptions(o), pairingPort }).catch(async (e: unknown) => {
    await closeServer(server);
    throw e;
  });
  try {
    await new Promise<void>((resolve, reject) => {
      let busy = false;
      let expired = false;
      let last: Dropped | null = null;
      const timeout = (): void => reject(discovery.peer ? exchangeTimeout(o, discovery.peer.address, last, false) : discovery.notFoundError());
      // An exchange under way at the deadline ends by its own (it has the same deadline), and is let finish:
      // a host that stored its certificate must not report that pairing failed.
      const timer = setTimeout(() => (busy ? (expired = true) : timeout()), Math.max(0, deadline - Date.now()));
      server.on('connection', (socket) => {
        socket.on('error', () => {}); // the exchange reports what matters; a reset after it does not
        const from = socket.remoteAddress ?? '?';
        // One exchange at a time, and only with the address the peer beacons from (until we have heard
        // it, the CA host's connection is dropped and it dials again).
        if (busy || expired || !discovery.heardPeerFrom(from)) return void socket.destroy();
        busy = true;
        runJoinerSide(socket, { pairId: o.pairId, self: o.self, peer: o.peer, key, deadline, csr, accept }).then(
          (outcome) => {
            busy = false;
            if (outcome === 'paired') {
              clearTimeout(timer);
              return resolve();
            }
            last = outcome;
            if (expired) return timeout();
            o.log(`exchange with ${from} dropped, waiting for another: ${outcome.dropped}`);
          },
          (e: unknown) => {
            clearTimeout(timer);
            reject(e);
          },
        );
      });
    });
    return stored!;
  } finally {
    await discovery.close();
    await closeServer(server);
  }
}

/** The CA and certificate the CA host sent fit this host: the A-Link's rule, and the CA is this pair's. */
function checkReceived(m: { ca: string; cert: string }, key: string, o: PairOptions): void {
  try {
    prepareAlinkTls({ ca: m.ca, cert: m.cert, key }, o.self);
  } catch (e) {
    throw new LockstepError('PAIRING', describeError(e), { host: o.self }, { cause: e });
  }
  const cn = subjectCommonName(new X509Certificate(m.ca).subject);
  if (cn !== pairCaCommonName(o.pairId)) throw new LockstepError('PAIRING', `the CA is ${JSON.stringify(cn)}, not pair ${o.pairId}'s`, { cn });
}

/** A paired host of another pair is not paired for this one: say so rather than return its files. */
async function checkPairOf(files: PairFiles, pairId: string): Promise<void> {
  const cn = subjectCommonName(new X509Certificate(await readFile(files.ca)).subject);
  if (cn !== pairCaCommonName(pairId)) {
    throw new LockstepError('PAIRING', `${files.ca} is the CA ${JSON.stringify(cn)}, not pair ${pairId}'s: this host is paired for another pair`, { pairId, cn });
  }
}

function checkOptions(o: PairOptions): void {
  const bad = (why: string, fields: Record<string, unknown>): never => {
    throw new LockstepError('INVALID_ARGUMENT', `pairing: ${why}`, fields);
  };
  for (const [what, v] of [['self', o.self], ['peer', o.peer], ['pairId', o.pairId]] as const) {
    if (!PAIRING_NAME_RE.test(v)) bad(`${what} ${JSON.stringify(v)} is not a name ([a-z0-9][a-z0-9-]{0,62})`, { [what]: v });
  }
  if (o.self === o.peer) bad(`self and peer are both ${o.self}`, { self: o.self });
  if (typeof o.secret !== 'string' || o.secret.length < SECRET_CHARS_MIN) bad(`the pairing secret has fewer than ${SECRET_CHARS_MIN} characters`, {});
  for (const [what, v] of [['privateNet.local', o.privateNet.local], ['privateNet.broadcast', o.privateNet.broadcast]] as const) {
    if (!net.isIPv4(v)) bad(`${what} ${JSON.stringify(v)} is not an IPv4 address`, { [what]: v });
  }
  for (const [what, v] of [['discoveryPort', o.discoveryPort], ['pairingPort', o.pairingPort]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 65535)) bad(`${what} ${v} is not a port (0..65535)`, { [what]: v });
  }
  if (!Number.isInteger(o.timeoutMs) || o.timeoutMs <= 0) bad(`timeoutMs ${o.timeoutMs} is not a positive integer`, { timeoutMs: o.timeoutMs });
}

function discoveryOptions(o: PairOptions): Omit<DiscoveryOptions, 'pairingPort'> {
  return {
    self: o.self,
    peer: o.peer,
    pairId: o.pairId,
    local: o.privateNet.local,
    broadcast: o.privateNet.broadcast,
    port: o.discoveryPort ?? DISCOVERY_PORT_DEFAULT,
    log: o.log,
  };
}

function exchangeTimeout(o: PairOptions, address: string, last: Dropped | null, certsSent: boolean): LockstepError {
  const why = last ? `the last attempt: ${last.dropped}` : `${o.peer} never completed a connection`;
  const sent = certsSent
    ? `; ${o.peer} was sent its certificate and may be paired: if it is, remove its pki directory and this one's and pair both again`
    : '';
  return new LockstepError('PAIRING', `no complete pairing exchange with ${o.peer} at ${address} in ${o.timeoutMs} ms (${why})${sent}`, {
    peer: o.peer,
    address,
    certsSent,
  });
}

/** A connected socket, or why there is none. */
function dial(host: string, port: number, localAddress: string, deadline: number): Promise<net.Socket | Dropped> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localAddress });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ dropped: `connecting to ${host}:${port} timed out` });
    }, Math.max(0, deadline - Date.now()));
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (e: Error): void => {
      clearTimeout(timer);
      resolve({ dropped: `cannot connect to ${host}:${port}: ${e.message}` });
    };
    socket.once('error', onError);
  });
}

function listen(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new LockstepError('PAIRING', `cannot listen for the pairing exchange on ${host}:${port}: ${e.message}`, { host, port }, { cause: e })));
    server.listen(port, host, () => resolve());
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Scratch directories of runs that crashed. */
async function removeScratch(pkiDir: string): Promise<void> {
  for (const name of await readdir(pkiDir)) {
    if (name.startsWith(SCRATCH_PREFIX)) await rm(path.join(pkiDir, name), { recursive: true, force: true });
  }
}
