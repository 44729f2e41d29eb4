/**
 * The quorum server (`lockstep-quorum serve`): grants each enrolled pair's epochs to at most one host at a
 * time, as leases, over mutual TLS 1.3.
 *
 * The rule itself is `decideGrant` (`src/core/quorum-grant.ts`); this file is its driver, in raft's order:
 * decide, persist the new record durably, then reply. A reply that depends on a record never leaves before
 * the record is on disk, so a server killed at any moment restarts with every epoch it ever granted.
 *
 * Who may ask: a connection's client certificate must be signed by the CA of the pair it asks for, and its
 * CN must be the request's `host` (a host asks only in its own name). Anything else gets an `error` reply
 * and changes nothing.
 *
 * Bounds: line length (`QUORUM_LINE_BYTES_MAX`), connections (`maxConnections`), TLS handshake time, idle
 * time per connection, and lines in flight per connection (reading pauses behind a slow reader).
 */
import { X509Certificate } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { decideGrant, recoveredPairRecord, type PairRecord } from '../core/quorum-grant.js';
import { DEFAULT_TIMING } from '../core/types.js';
import { signedBy, subjectCommonName } from '../pki/pki.js';
import {
  QUORUM_LINE_BYTES_MAX,
  formatQuorumLine,
  isVersionError,
  parseQuorumRequest,
  quorumError,
  salvageId,
  type AcquireRequest,
  type QuorumReplyMessage,
} from '../protocol/quorum.js';
import { LineSplitter } from '../util/line-splitter.js';
import { assert } from '../util/assert.js';
import { describeError, LockstepError } from '../util/errors.js';
import { listEnrolledPairs, loadServerIdentity, lockStateDir, pairCaFile, readPairRecord, writePairRecord } from './state.js';

export interface QuorumServerOptions {
  stateDir: string;
  /** Address to listen on (an IP address). */
  host: string;
  /** Port; 0 picks a free one (see `port`). */
  port: number;
  /** How long a grant lasts without renewal; the hosts must use the same figure. */
  leaseMs?: number;
  maxConnections?: number;
  /** A connection that sends nothing for this long is closed. */
  idleTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  /** How often newly enrolled pairs and changed pair CAs are picked up (0: only by `reload()`). */
  reloadIntervalMs?: number;
  /** One line per decision and per notable event. */
  log?: (line: string) => void;
}

export const QUORUM_SERVER_DEFAULTS = {
  leaseMs: DEFAULT_TIMING.quorumLeaseMs,
  maxConnections: 256,
  idleTimeoutMs: 30_000,
  handshakeTimeoutMs: 5_000,
  reloadIntervalMs: 2_000,
  /** Lines read but not yet answered on one connection before reading pauses. */
  linesInFlightMax: 32,
} as const;

/** One enrolled pair, as the server holds it. */
interface PairEntry {
  id: string;
  ca: X509Certificate;
  caPem: string;
  /** The live record, or why the pair cannot be served (its record on disk cannot be read). */
  record: PairRecord | null;
  brokenReason: string | null;
  /** Decisions on one pair are made one at a time, each with its write, in arrival order. */
  queue: Promise<void>;
}

export class QuorumServer {
  private readonly pairs = new Map<string, PairEntry>();
  /** Every TCP connection, in handshake or not, so that `close` can end them all. */
  private readonly sockets = new Set<Socket>();
  private server: tls.Server | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;
  private releaseLock: (() => Promise<void>) | null = null;
  private identity: { cert: string; key: string; serverCa: string } | null = null;
  /** The CA set the TLS context was last built with (to rebuild it only when it changes). */
  private trustedCas = '';
  private reloading: Promise<void> | null = null;
  readonly leaseMs: number;
  private readonly opts: Required<Omit<QuorumServerOptions, 'log'>> & { log: (line: string) => void };

  private constructor(opts: QuorumServerOptions) {
    this.opts = {
      stateDir: opts.stateDir,
      host: opts.host,
      port: opts.port,
      leaseMs: opts.leaseMs ?? QUORUM_SERVER_DEFAULTS.leaseMs,
      maxConnections: opts.maxConnections ?? QUORUM_SERVER_DEFAULTS.maxConnections,
      idleTimeoutMs: opts.idleTimeoutMs ?? QUORUM_SERVER_DEFAULTS.idleTimeoutMs,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? QUORUM_SERVER_DEFAULTS.handshakeTimeoutMs,
      reloadIntervalMs: opts.reloadIntervalMs ?? QUORUM_SERVER_DEFAULTS.reloadIntervalMs,
      log: opts.log ?? (() => {}),
    };
    this.leaseMs = this.opts.leaseMs;
    if (!Number.isSafeInteger(this.leaseMs) || this.leaseMs < 1) {
      throw new LockstepError('INVALID_ARGUMENT', `lease ${String(opts.leaseMs)} ms is not a positive integer`, { leaseMs: opts.leaseMs });
    }
  }

  /** Loads the identity and every enrolled pair's record, takes the state directory's lock, listens. */
  static async start(opts: QuorumServerOptions): Promise<QuorumServer> {
    const s = new QuorumServer(opts);
    const id = await loadServerIdentity(opts.stateDir);
    const [cert, key, serverCa] = await Promise.all([readFile(id.cert, 'utf8'), readFile(id.key, 'utf8'), readFile(id.ca, 'utf8')]);
    s.identity = { cert, key, serverCa };
    s.releaseLock = await lockStateDir(opts.stateDir);
    try {
      await s.loadPairs();
      await s.listen();
    } catch (e) {
      await s.close();
      throw e;
    }
    if (s.opts.reloadIntervalMs > 0) {
      s.reloadTimer = setInterval(() => {
        s.reload().catch((e: unknown) => s.opts.log(`reload failed: ${describeError(e)}`));
      }, s.opts.reloadIntervalMs);
      s.reloadTimer.unref();
    }
    return s;
  }

  /** The port listened on (useful after listening on port 0). */
  get port(): number {
    const addr = this.server?.address() as AddressInfo | null | undefined;
    assert(addr, 'QuorumServer.port read before listening');
    return addr.port;
  }

  /** Enrolled pairs and whether each is served. */
  pairStatus(): { pair: string; epoch: number | null; holder: string | null; broken: string | null }[] {
    return [...this.pairs.values()].map((p) => ({ pair: p.id, epoch: p.record?.epoch ?? null, holder: p.record?.holder ?? null, broken: p.brokenReason }));
  }

  /**
   * Picks up newly enrolled pairs and changed pair CAs. Records of pairs already loaded are never read
   * again: the server's own copy is the newest (it writes every change). A pair whose folder vanished keeps
   * being served from memory (and its record is written again at its next change).
   */
  async reload(): Promise<void> {
    // One reload at a time: two would race to add the same pair.
    while (this.reloading) await this.reloading;
    this.reloading = this.loadPairs().finally(() => (this.reloading = null));
    return this.reloading;
  }

  async close(): Promise<void> {
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    this.reloadTimer = null;
    for (const s of this.sockets) s.destroy();
    if (this.server) {
      const srv = this.server;
      this.server = null;
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
    // Let writes in flight finish: a decision is either on disk or not made, never half.
    await Promise.all([...this.pairs.values()].map((p) => p.queue));
    if (this.releaseLock) await this.releaseLock();
    this.releaseLock = null;
  }

  // ── pairs ────────────────────────────────────────────────────────────────────────────────────────────

  private async loadPairs(): Promise<void> {
    const { stateDir } = this.opts;
    for (const id of await listEnrolledPairs(stateDir)) {
      let caPem: string;
      let ca: X509Certificate;
      try {
        caPem = await readFile(pairCaFile(stateDir, id), 'utf8');
        ca = new X509Certificate(caPem);
      } catch (e) {
        this.opts.log(`pair=${id} CA certificate unreadable, ${this.pairs.has(id) ? 'keeping the previous one' : 'not served'}: ${describeError(e)}`);
        continue;
      }
      const known = this.pairs.get(id);
      if (known) {
        if (known.caPem !== caPem) {
          known.ca = ca;
          known.caPem = caPem;
          this.opts.log(`pair=${id} CA replaced (re-enrolled)`);
        }
        continue;
      }
      const entry: PairEntry = { id, ca, caPem, record: null, brokenReason: null, queue: Promise.resolve() };
      try {
        const stored = await readPairRecord(stateDir, id);
        // The previous run may have granted with a longer lease than ours: wait out the longer.
        entry.record = recoveredPairRecord(stored.epoch, stored.holder, performance.now(), Math.max(this.leaseMs, stored.leaseMs));
        this.opts.log(
          `pair=${id} loaded: epoch=${stored.epoch} holder=${stored.holder ?? '-'}${stored.holder ? ` (others wait ${Math.max(this.leaseMs, stored.leaseMs)} ms)` : ''}`,
        );
      } catch (e) {
        entry.brokenReason = describeError(e);
        this.opts.log(`pair=${id} NOT SERVED: ${entry.brokenReason}`);
      }
      this.pairs.set(id, entry);
    }
    this.refreshTrust();
  }

  /** Trust exactly the enrolled pairs' CAs for client certificates (never Node's default roots). */
  private secureOptions(): tls.SecureContextOptions {
    assert(this.identity, 'identity loaded before TLS is set up');
    const cas = [...this.pairs.values()].map((p) => p.caPem);
    // With no pair enrolled, trust the server's own CA rather than nothing (an empty list would mean Node's
    // default roots); its certificates are refused after the handshake anyway, as no pair's CA signed them.
    return {
      cert: this.identity.cert,
      key: this.identity.key,
      ca: cas.length > 0 ? cas : [this.identity.serverCa],
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
    };
  }

  private trustedCaKey(): string {
    return [...this.pairs.values()].map((p) => p.caPem).join('|');
  }

  private refreshTrust(): void {
    const cas = this.trustedCaKey();
    if (cas === this.trustedCas) return;
    this.trustedCas = cas;
    if (this.server) this.server.setSecureContext(this.secureOptions());
  }

  // ── connections ──────────────────────────────────────────────────────────────────────────────────────

  private async listen(): Promise<void> {
    this.trustedCas = this.trustedCaKey();
    const server = tls.createServer({
      ...this.secureOptions(),
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.opts.handshakeTimeoutMs,
      // No half-open connections: a client that ends its side gets no further replies (it must read its
      // replies before closing). Half-open sockets would also outlive a failed handshake.
    });
    server.maxConnections = this.opts.maxConnections;
    server.on('connection', (raw: Socket) => {
      this.sockets.add(raw);
      raw.on('close', () => this.sockets.delete(raw));
    });
    server.on('secureConnection', (socket) => this.onConnection(socket));
    // Handshake failures (no certificate, another CA, garbage): the socket is closed; nothing to decide.
    server.on('tlsClientError', (_e, socket) => socket.destroy());
    server.on('error', (e) => this.opts.log(`server error: ${describeError(e)}`));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  private onConnection(socket: tls.TLSSocket): void {
    socket.on('error', () => socket.destroy());
    socket.setTimeout(this.opts.idleTimeoutMs, () => socket.destroy());
    socket.setNoDelay(true);

    const peer = socket.getPeerX509Certificate();
    const cn = peer ? subjectCommonName(peer.subject) : null;
    const conn: Connection = { socket, peer: peer ?? null, cn, invalidLines: 0 };
    if (!peer || ![...this.pairs.values()].some((p) => signedBy(peer, p.ca))) {
      // TLS accepted the chain, but no enrolled pair's CA signed the leaf itself (e.g. the server's own CA).
      socket.end(formatQuorumLine(quorumError('NOT_AUTHORIZED', 'the client certificate is not signed by the CA of any enrolled pair')));
      return;
    }

    const splitter = new LineSplitter(QUORUM_LINE_BYTES_MAX - 1);
    let chain: Promise<void> = Promise.resolve();
    let inFlight = 0;
    let closing = false;
    const enqueue = (work: () => Promise<void>): void => {
      inFlight++;
      if (inFlight >= QUORUM_SERVER_DEFAULTS.linesInFlightMax) socket.pause();
      chain = chain
        .then(work)
        .catch((e: unknown) => {
          // A bug in handling one line: say so and drop the connection, never grant on it.
          this.opts.log(`connection ${cn ?? '?'}: internal error, closing: ${describeError(e)}`);
          socket.destroy();
        })
        .finally(() => {
          inFlight--;
          if (inFlight === 0 && !closing && !socket.destroyed) socket.resume();
        });
    };
    socket.on('data', (chunk: Buffer) => {
      if (closing) return;
      const { lines, overflow } = splitter.push(chunk);
      for (const line of lines) enqueue(() => this.answer(conn, line));
      if (overflow) {
        closing = true;
        socket.pause();
        enqueue(async () => {
          await send(socket, quorumError('LINE_TOO_LONG', `a line is longer than ${QUORUM_LINE_BYTES_MAX} bytes; closing`));
          socket.end();
        });
      }
    });
  }

  /** Answers one line: exactly one reply, and a decision only for a valid, authorized `acquire`. */
  private async answer(conn: Connection, raw: Buffer): Promise<void> {
    const line = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw;
    let req;
    try {
      req = parseQuorumRequest(line);
    } catch (e) {
      if (conn.invalidLines++ === 0) this.opts.log(`connection ${conn.cn ?? '?'}: invalid line: ${describeError(e)}`);
      const id = salvageId(line);
      await send(conn.socket, quorumError(isVersionError(e) ? 'UNSUPPORTED_VERSION' : 'INVALID_MESSAGE', describeError(e), id));
      return;
    }
    if (req.type === 'ping') {
      await send(conn.socket, { v: 1, type: 'pong', id: req.id });
      return;
    }
    await send(conn.socket, await this.acquire(conn, req));
  }

  private async acquire(conn: Connection, req: AcquireRequest): Promise<QuorumReplyMessage> {
    const pair = this.pairs.get(req.pair);
    const refuse = (code: 'UNKNOWN_PAIR' | 'NOT_AUTHORIZED' | 'HOST_MISMATCH' | 'PAIR_UNAVAILABLE', why: string): QuorumReplyMessage => {
      this.opts.log(`pair=${req.pair} host=${req.host} refused ${code}: ${why}`);
      return quorumError(code, why, req.id);
    };
    if (!pair) return refuse('UNKNOWN_PAIR', `pair ${req.pair} is not enrolled on this quorum server`);
    if (!conn.peer || !signedBy(conn.peer, pair.ca)) return refuse('NOT_AUTHORIZED', `the client certificate is not signed by the CA of pair ${req.pair}`);
    if (conn.cn !== req.host) {
      return refuse('HOST_MISMATCH', `the client certificate is ${JSON.stringify(conn.cn)}'s; it cannot ask for host ${req.host}`);
    }
    // One decision at a time per pair, each persisted before the next is made.
    let reply: QuorumReplyMessage | undefined;
    const turn = pair.queue.then(async () => {
      reply = await this.decide(pair, req);
    });
    pair.queue = turn.catch(() => {});
    await turn;
    assert(reply, 'a decision produces a reply');
    return reply;
  }

  private async decide(pair: PairEntry, req: AcquireRequest): Promise<QuorumReplyMessage> {
    if (pair.record === null) {
      this.opts.log(`pair=${pair.id} host=${req.host} refused PAIR_UNAVAILABLE: ${pair.brokenReason ?? 'no record'}`);
      return quorumError('PAIR_UNAVAILABLE', `pair ${pair.id} is not served: ${pair.brokenReason ?? 'no record'}`, req.id);
    }
    const before = pair.record;
    const now = performance.now();
    const outcome = decideGrant(before, { pair: pair.id, host: req.host, knownEpoch: req.knownEpoch }, now, this.leaseMs);
    if (outcome.kind === 'denied') {
      this.opts.log(`pair=${pair.id} host=${req.host} denied epoch=${outcome.epoch} holder=${outcome.holder} (lease ${Math.ceil(before.leaseUntil - now)} ms left)`);
      return { v: 1, type: 'denied', id: req.id, epoch: outcome.epoch, holder: outcome.holder };
    }
    if (!Number.isSafeInteger(outcome.epoch)) {
      this.opts.log(`pair=${pair.id} host=${req.host} refused EPOCH_EXHAUSTED`);
      return quorumError('EPOCH_EXHAUSTED', `pair ${pair.id}: the next epoch would not be a safe integer`, req.id);
    }
    if (outcome.persist) {
      try {
        await writePairRecord(this.opts.stateDir, pair.id, { epoch: outcome.epoch, holder: req.host, leaseMs: this.leaseMs });
      } catch (e) {
        // Not on disk, so not granted: the in-memory record stays as it was, and the host asks again.
        this.opts.log(`pair=${pair.id} host=${req.host} refused PAIR_UNAVAILABLE: record not written: ${describeError(e)}`);
        return quorumError('PAIR_UNAVAILABLE', `pair ${pair.id}: the record could not be written`, req.id);
      }
    }
    pair.record = outcome.record;
    const how = before.holder === req.host ? (outcome.epoch === before.epoch ? 'renewed' : `renewed, raised from ${before.epoch}`) : `new holder, was ${before.holder ?? 'none'}`;
    this.opts.log(`pair=${pair.id} host=${req.host} granted epoch=${outcome.epoch} (${how})`);
    return { v: 1, type: 'granted', id: req.id, epoch: outcome.epoch };
  }
}

interface Connection {
  socket: tls.TLSSocket;
  peer: X509Certificate | null;
  cn: string | null;
  invalidLines: number;
}

/** Writes one reply; waits for the socket to drain when the client reads slowly (bounded buffering). */
async function send(socket: tls.TLSSocket, msg: QuorumReplyMessage): Promise<void> {
  if (socket.destroyed || !socket.writable) return;
  if (socket.write(formatQuorumLine(msg))) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}
