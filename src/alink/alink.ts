/**
 * The A-Link control channel between the two hosts of a pair: one mutually authenticated TLS 1.3
 * connection per path (one or two direct cables), every message sent on every path that is up, the copy
 * that arrives second dropped, RTT measured per path, paths reconnected with bounded backoff.
 *
 * Who connects: on each path the host with the smaller id dials (from its local address, so the traffic
 * takes that cable) and the other listens on its local address. One connection per path, with no race to
 * settle; if the dialer connects again while the listener still holds an older connection (the dialer saw
 * it die first), the newer authenticated connection replaces the older one.
 *
 * Events (none after `close()`):
 * - `message(msg)`: a peer message for the core that passed the schema and comes from the expected peer;
 * - `daemon-message(msg)`: one of the daemons' own messages (a host report or its request,
 *   `DAEMON_MESSAGE_KINDS`), checked as strictly; the core never sees them;
 * - `daemon-invalid(kind, id, reason)`: a daemon message that failed the schema (also a `protocol-error`):
 *   its kind and, when it has a valid one, its id, so that whoever waits for an answer learns why;
 * - `rtt(ms)`: the smallest smoothed RTT among the up paths, once per ping interval with a new sample
 *   (messages travel on every path, so the fastest one is the delay the core's messages see);
 * - `path-up(name)`, `path-down(name, reason)`: a path starts or stops carrying traffic. The two alternate
 *   per path; each path reports one of them within `connectTimeoutMs + pathTimeoutMs` of `start()` (a
 *   path that has not come up by then reports `path-down` with its last error), so the daemon always
 *   knows each A-Link's state for the host's health;
 * - `refused(name, reason)`: a connection that was not the expected peer (another pair's certificate, the
 *   wrong host's, a failed handshake, a hello for another path) was refused;
 * - `protocol-error(name, reason)`: the authenticated peer sent something invalid: a broken frame (the
 *   connection closes) or a message that fails the schema (it is dropped, the connection stays).
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { PeerMessage } from '../core/types.js';
import { DAEMON_MESSAGE_KINDS, NAME_RE, isDaemonMessage, parseWireEnvelope, parseWireMessage, toWireEnvelope, type DaemonMessage, type WireMessage } from '../protocol/peer.js';
import { LockstepError, describeError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { DuplicateFilter } from './dedup.js';
import { encodeFrame, FRAME_BYTES_MAX_DEFAULT } from './framing.js';
import { ALINK_PROTOCOL } from './frames.js';
import { Link, type HelloFrame, type LinkClose, type LinkHandler, type LinkLimits } from './link.js';
import { peerIdentityProblem, prepareAlinkTls, type AlinkTlsContext, type AlinkTlsMaterial } from './tls.js';

/** One A-Link cable: its own subnet, this host's and the peer's address on it, and the listener's port. */
export interface AlinkPathSpec {
  /** `alink1`, `alink2`: also the health component it reports on. */
  name: string;
  local: string;
  peer: string;
  /**
   * The TCP port of this path's listener (on the host with the larger id): it listens on `local:port`, the
   * other host dials `peer:port`. 0 on the listening side takes any free port (tests; see `status()`).
   */
  port: number;
}

export interface AlinkTiming {
  /** Ping period per path: the RTT sample rate and the liveness heartbeat of the path itself. */
  pingIntervalMs: number;
  /** Silence after which a path is declared down (and a send stall of as long). */
  pathTimeoutMs: number;
  /** Longest a connection attempt may take, TCP + TLS + hello. */
  connectTimeoutMs: number;
  /** First retry delay after a failed attempt; doubled per failure up to the max (with ±20 % jitter). */
  reconnectMinMs: number;
  reconnectMaxMs: number;
}

export const ALINK_DEFAULT_TIMING: Readonly<AlinkTiming> = {
  pingIntervalMs: 100,
  pathTimeoutMs: 1000,
  connectTimeoutMs: 2000,
  reconnectMinMs: 100,
  reconnectMaxMs: 2000,
};

export const ALINK_DEFAULT_LIMITS: Readonly<LinkLimits> = {
  maxFrameBytes: FRAME_BYTES_MAX_DEFAULT,
  sendQueueFramesMax: 64,
  sendQueueBytesMax: 4 * 1024 * 1024,
  writeHighWaterBytes: 256 * 1024,
};

/** A pair has one or two A-Links. */
export const ALINK_PATHS_MAX = 2;
/** Connections one listener holds at once, authenticated or not: the peer needs one, a spare for a reconnect. */
const LISTENER_CONNECTIONS_MAX = 4;
/** Repeated refusals or protocol errors on one path are logged at most this often (events are not limited). */
const WARN_INTERVAL_MS = 10_000;

/** The daemon adapts its logger to this shape (the same as the QEMU driver's). */
export interface AlinkLog {
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

const silentLog: AlinkLog = { info() {}, warn() {} };

export interface AlinkOptions {
  self: string;
  peer: string;
  paths: readonly AlinkPathSpec[];
  tls: AlinkTlsMaterial;
  timing?: Partial<AlinkTiming>;
  limits?: Partial<LinkLimits>;
  log?: AlinkLog;
}

export interface AlinkEvents {
  message: [msg: PeerMessage];
  'daemon-message': [msg: DaemonMessage];
  'daemon-invalid': [kind: DaemonMessage['kind'], id: number | null, reason: string];
  rtt: [ms: number];
  'path-up': [name: string];
  'path-down': [name: string, reason: string];
  refused: [name: string, reason: string];
  'protocol-error': [name: string, reason: string];
}

export interface AlinkPathStatus {
  name: string;
  /** This host dials the path, or listens for it. */
  role: 'dial' | 'listen';
  up: boolean;
  /** Wall-clock time of the last up/down change (ms since the epoch), null before any. */
  changedAt: number | null;
  srttMs: number | null;
  /** Why the path last went down or failed to come up. */
  lastError: string | null;
  /** The port dialed, or listened on (the bound one when configured as 0). */
  port: number;
  /** Frames this path dropped from its send queue (superseded heartbeats, a full queue). */
  droppedFrames: number;
}

export interface AlinkCounters {
  /** Messages handed to `send` and to how many paths in total. */
  sent: number;
  sentFrames: number;
  delivered: number;
  duplicates: number;
  invalid: number;
  refused: number;
}

interface Slot {
  spec: AlinkPathSpec;
  role: 'dial' | 'listen';
  /** The connection carrying the path (hello done), or null while it is down. */
  link: Link | null;
  /** Connections whose hello is not done yet. */
  pending: Set<Link>;
  dialing: tls.TLSSocket | null;
  retryTimer: NodeJS.Timeout | null;
  attempts: number;
  server: tls.Server | null;
  port: number;
  lastError: string | null;
  changedAt: number | null;
  /** What the path last reported: nothing yet, path-up, or path-down. */
  reported: 'none' | 'up' | 'down';
  droppedFrames: number;
  lastWarnAt: number;
  lastWarn: string;
}

export class Alink extends EventEmitter<AlinkEvents> {
  readonly self: string;
  readonly peer: string;
  readonly timing: Readonly<AlinkTiming>;
  readonly limits: Readonly<LinkLimits>;
  /** This instance's session: scopes message ids (and tells the peer this host restarted). */
  readonly session = randomBytes(8).toString('hex');
  readonly counters: AlinkCounters = { sent: 0, sentFrames: 0, delivered: 0, duplicates: 0, invalid: 0, refused: 0 };

  private readonly slots: Slot[];
  private readonly tlsContext: AlinkTlsContext;
  private readonly log: AlinkLog;
  private readonly dedup = new DuplicateFilter();
  private readonly sockets = new Set<net.Socket>();
  private readonly listening = new Set<Promise<void>>();
  private nextId = 0;
  private rttFresh = false;
  private reportTimer: NodeJS.Timeout | null = null;
  private startupTimer: NodeJS.Timeout | null = null;
  private state: 'new' | 'started' | 'closed' = 'new';

  /** Checks the options and the TLS material; throws `INVALID_SPEC` or `ALINK_TLS`. */
  constructor(opts: AlinkOptions) {
    super();
    this.self = opts.self;
    this.peer = opts.peer;
    this.timing = { ...ALINK_DEFAULT_TIMING, ...opts.timing };
    this.limits = { ...ALINK_DEFAULT_LIMITS, ...opts.limits };
    validateOptions(opts, this.timing, this.limits);
    this.log = opts.log ?? silentLog;
    this.tlsContext = prepareAlinkTls(opts.tls, opts.self);
    const role = opts.self < opts.peer ? 'dial' : 'listen';
    this.slots = opts.paths.map((spec) => ({
      spec: { ...spec },
      role,
      link: null,
      pending: new Set(),
      dialing: null,
      retryTimer: null,
      attempts: 0,
      server: null,
      port: spec.port,
      lastError: null,
      changedAt: null,
      reported: 'none',
      droppedFrames: 0,
      lastWarnAt: -Infinity,
      lastWarn: '',
    }));
  }

  /**
   * Starts listening (the listening host) or dialing (the other). Resolves once each listener has been
   * tried once; a listener that cannot bind (its address not there yet) is retried, never thrown.
   */
  async start(): Promise<void> {
    assert(this.state === 'new', 'Alink.start called twice or after close');
    this.state = 'started';
    this.reportTimer = setInterval(() => this.reportRtt(), this.timing.pingIntervalMs);
    this.startupTimer = setTimeout(() => {
      for (const slot of this.slots) {
        if (slot.reported === 'none') this.reportDown(slot, slot.lastError ?? 'not connected since start');
      }
    }, this.timing.connectTimeoutMs + this.timing.pathTimeoutMs);
    await Promise.all(this.slots.map((slot) => (slot.role === 'listen' ? this.listenOnce(slot) : (this.dial(slot), undefined))));
  }

  /**
   * Sends a message on every path that is up; returns how many (0: no path is up, the message is lost as
   * on a cut cable — the core's protocol tolerates loss). Throws `INVALID_MESSAGE` for a message the peer
   * would refuse (the schema's bounds, or not from this host): a bug or a limit, better seen here.
   */
  send(msg: WireMessage): number {
    if (this.state === 'closed') return 0;
    const checked = parseWireMessage(msg);
    if (checked.from !== this.self) {
      throw new LockstepError('INVALID_MESSAGE', `peer message: 'from' is ${checked.from}, not this host ${this.self}`, { field: 'from' });
    }
    const frame = encodeFrame({ t: 'msg', id: this.nextId++, env: toWireEnvelope(checked) }, this.limits.maxFrameBytes);
    let paths = 0;
    for (const slot of this.slots) {
      if (slot.link?.sendMessage(frame, checked.kind === 'heartbeat')) paths++;
    }
    this.counters.sent++;
    this.counters.sentFrames += paths;
    return paths;
  }

  status(): AlinkPathStatus[] {
    return this.slots.map((s) => ({
      name: s.spec.name,
      role: s.role,
      up: s.link !== null,
      changedAt: s.changedAt,
      srttMs: s.link?.srttMs ?? null,
      lastError: s.lastError,
      port: s.port,
      droppedFrames: s.droppedFrames + (s.link?.droppedFrames ?? 0),
    }));
  }

  /** Closes every connection (telling the peer why) and listener, and stops every timer. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.reportTimer) clearInterval(this.reportTimer);
    if (this.startupTimer) clearTimeout(this.startupTimer);
    await Promise.all([...this.listening]);
    const servers: Promise<void>[] = [];
    for (const slot of this.slots) {
      if (slot.retryTimer) clearTimeout(slot.retryTimer);
      slot.dialing?.destroy();
      slot.link?.close('the peer is shutting down its A-Link', true);
      for (const link of [...slot.pending]) link.close('the peer is shutting down its A-Link', true);
      const server = slot.server;
      if (server) servers.push(new Promise((resolve) => server.close(() => resolve())));
    }
    // A peer that does not answer the close in time is cut off.
    const waits = [...this.sockets].map((s) => new Promise<void>((resolve) => (s.destroyed && s.closed ? resolve() : s.once('close', () => resolve()))));
    const grace = setTimeout(() => {
      for (const s of this.sockets) s.destroy();
    }, 1000);
    await Promise.all([...waits, ...servers]);
    clearTimeout(grace);
  }

  // ── connecting ───────────────────────────────────────────────────────────────────────────────────────

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private dial(slot: Slot): void {
    if (this.state !== 'started') return;
    const { spec } = slot;
    // The TCP socket first, bound to this path's local address so the traffic takes this cable.
    const tcp = net.connect({ host: spec.peer, port: spec.port, localAddress: spec.local, noDelay: true });
    this.track(tcp);
    tcp.on('error', () => {}); // reported through the TLS socket on top of it
    const socket = tls.connect({
      socket: tcp,
      secureContext: this.tlsContext.secureContext,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      rejectUnauthorized: true,
      checkServerIdentity: (_host, cert) => {
        const problem = peerIdentityProblem(cert, this.peer, this.tlsContext.ca);
        return problem === null ? undefined : Object.assign(new Error(problem), { code: 'ALINK_PEER_IDENTITY' });
      },
    });
    this.track(socket);
    slot.dialing = socket;
    const timer = setTimeout(() => fail(`no connection within ${this.timing.connectTimeoutMs} ms`), this.timing.connectTimeoutMs);
    const fail = (reason: string, error?: NodeJS.ErrnoException): void => {
      if (slot.dialing !== socket) return;
      slot.dialing = null;
      clearTimeout(timer);
      socket.destroy();
      tcp.destroy();
      this.failed(slot, reason, isRefusal(error));
    };
    const onError = (e: NodeJS.ErrnoException): void => fail(`cannot connect to ${spec.peer}:${spec.port}: ${e.message}`, e);
    const onClose = (): void => fail(`connection to ${spec.peer}:${spec.port} closed during the handshake`);
    socket.on('error', () => {}); // after the handshake, the connection's Link reports errors
    socket.on('error', onError);
    socket.once('close', onClose);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      socket.off('close', onClose);
      clearTimeout(timer);
      if (slot.dialing !== socket) return void socket.destroy();
      slot.dialing = null;
      this.adopt(slot, socket);
    });
  }

  /** One attempt to listen, remembered so that `close()` can wait for it. */
  private listenOnce(slot: Slot): Promise<void> {
    const p = this.listen(slot).finally(() => this.listening.delete(p));
    this.listening.add(p);
    return p;
  }

  private async listen(slot: Slot): Promise<void> {
    if (this.state !== 'started') return;
    const server = tls.createServer({
      ...this.tlsContext.options,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.timing.connectTimeoutMs,
      noDelay: true,
    });
    server.maxConnections = LISTENER_CONNECTIONS_MAX;
    server.on('connection', (raw: net.Socket) => this.track(raw));
    server.on('secureConnection', (socket: tls.TLSSocket) => this.accepted(slot, socket));
    server.on('tlsClientError', (e: Error, socket: tls.TLSSocket) => {
      socket.destroy();
      this.refused(slot, `TLS handshake from ${socket.remoteAddress ?? '?'} failed: ${e.message}`);
    });
    const bound = await new Promise<string | null>((resolve) => {
      server.once('error', (e) => resolve(e.message));
      server.listen({ host: slot.spec.local, port: slot.port, exclusive: true }, () => resolve(null));
    });
    if (bound !== null || this.state !== 'started') {
      server.close();
      if (bound !== null) {
        slot.lastError = `cannot listen on ${slot.spec.local}:${slot.port}: ${bound}`;
        this.warn(slot, slot.lastError);
        slot.retryTimer = setTimeout(() => {
          slot.retryTimer = null;
          void this.listenOnce(slot);
        }, this.timing.reconnectMaxMs);
      }
      return;
    }
    server.on('error', (e) => this.warn(slot, `listener error: ${e.message}`));
    slot.server = server;
    slot.port = (server.address() as net.AddressInfo).port;
  }

  private accepted(slot: Slot, socket: tls.TLSSocket): void {
    this.track(socket);
    if (this.state !== 'started') return void socket.destroy();
    const problem = peerIdentityProblem(socket.getPeerCertificate(), this.peer, this.tlsContext.ca);
    if (problem !== null) {
      // Signed by our pair's CA (TLS checked that), so telling it why helps whoever set it up.
      socket.on('error', () => {});
      socket.end(encodeFrame({ t: 'bye', reason: `refused by ${this.self}: ${problem}` }));
      const t = setTimeout(() => socket.destroy(), 1000);
      socket.once('close', () => clearTimeout(t));
      this.refused(slot, `connection from ${socket.remoteAddress ?? '?'}: ${problem}`);
      return;
    }
    this.adopt(slot, socket);
  }

  private adopt(slot: Slot, socket: tls.TLSSocket): void {
    const hello: HelloFrame = { t: 'hello', proto: { ...ALINK_PROTOCOL }, host: this.self, path: slot.spec.name, session: this.session };
    const timing = { ...this.timing, helloTimeoutMs: this.timing.connectTimeoutMs };
    slot.pending.add(new Link(socket, slot.spec.name, hello, timing, this.limits, this.handlerFor(slot)));
  }

  private failed(slot: Slot, reason: string, refused: boolean): void {
    slot.lastError = reason;
    if (refused) this.refused(slot, reason);
    this.scheduleDial(slot);
  }

  private scheduleDial(slot: Slot): void {
    if (this.state !== 'started' || slot.role !== 'dial' || slot.link || slot.pending.size > 0 || slot.dialing || slot.retryTimer) return;
    const base = Math.min(this.timing.reconnectMaxMs, this.timing.reconnectMinMs * 2 ** slot.attempts);
    const delayMs = Math.min(this.timing.reconnectMaxMs, base * (0.8 + 0.4 * Math.random()));
    slot.attempts = Math.min(slot.attempts + 1, 30);
    slot.retryTimer = setTimeout(() => {
      slot.retryTimer = null;
      this.dial(slot);
    }, delayMs);
  }

  // ── connections ──────────────────────────────────────────────────────────────────────────────────────

  private handlerFor(slot: Slot): LinkHandler {
    return {
      hello: (_link, h) => {
        const refusal = this.checkHello(slot, h);
        if (refusal !== null) this.refused(slot, refusal);
        return refusal;
      },
      up: (link) => {
        slot.pending.delete(link);
        if (this.state !== 'started') return link.close('the peer is shutting down its A-Link', true);
        const old = slot.link;
        slot.link = link;
        slot.attempts = 0;
        if (old) {
          old.close('replaced by a newer connection on the same path', true);
          return;
        }
        slot.lastError = null;
        slot.changedAt = Date.now();
        slot.reported = 'up';
        this.log.info(`A-Link ${slot.spec.name} up`, { path: slot.spec.name, peer: this.peer });
        this.emit('path-up', slot.spec.name);
      },
      message: (link, id, env) => this.received(slot, link, id, env),
      rtt: (link) => {
        if (slot.link === link) this.rttFresh = true;
      },
      closed: (link, how) => this.linkClosed(slot, link, how),
    };
  }

  private checkHello(slot: Slot, h: HelloFrame): string | null {
    const by = `refused by ${this.self}`;
    if (h.host !== this.peer) return `${by}: the hello is from ${h.host}, not the peer ${this.peer}`;
    if (h.path !== slot.spec.name) {
      return `${by}: path names differ: this connection is ${slot.spec.name} at ${this.self} and ${h.path} at ${this.peer} (cabling or config)`;
    }
    if (h.proto.max < ALINK_PROTOCOL.min || h.proto.min > ALINK_PROTOCOL.max) {
      return `${by}: no common protocol version (${this.self} speaks ${ALINK_PROTOCOL.min}..${ALINK_PROTOCOL.max}, ${this.peer} ${h.proto.min}..${h.proto.max})`;
    }
    return null;
  }

  private received(slot: Slot, link: Link, id: number, env: unknown): void {
    if (this.state !== 'started') return;
    if (!this.dedup.fresh(link.peerHello!.session, id)) {
      this.counters.duplicates++;
      return;
    }
    let msg: WireMessage;
    try {
      msg = parseWireEnvelope(env);
      if (msg.from !== this.peer) throw new LockstepError('INVALID_MESSAGE', `peer message: 'from' is ${msg.from}, not the peer ${this.peer}`, { field: 'from' });
    } catch (e) {
      this.counters.invalid++;
      const reason = `dropped an invalid message: ${describeError(e)}`;
      this.warn(slot, reason);
      this.emit('protocol-error', slot.spec.name, reason);
      const daemon = daemonKindOf(env);
      if (daemon) this.emit('daemon-invalid', daemon.kind, daemon.id, describeError(e));
      return;
    }
    this.counters.delivered++;
    if (isDaemonMessage(msg)) this.emit('daemon-message', msg);
    else this.emit('message', msg);
  }

  private linkClosed(slot: Slot, link: Link, how: LinkClose): void {
    slot.pending.delete(link);
    slot.droppedFrames += link.droppedFrames;
    if (this.state !== 'started') return;
    if (slot.link === link) {
      slot.link = null;
      slot.lastError = how.reason;
      this.reportDown(slot, how.reason);
      if (this.state !== 'started') return;
    } else if (!how.wasUp) {
      slot.lastError = how.reason;
      if (isRefusal(how.error) || (how.byPeer && how.reason.includes('refused by'))) this.refused(slot, how.reason);
    }
    if (how.protocol) this.emit('protocol-error', slot.spec.name, how.reason);
    if (how.wasUp) slot.attempts = 0;
    this.scheduleDial(slot);
  }

  // ── reporting ────────────────────────────────────────────────────────────────────────────────────────

  private reportDown(slot: Slot, reason: string): void {
    if (this.state !== 'started' || slot.reported === 'down') return;
    slot.reported = 'down';
    slot.changedAt = Date.now();
    this.log.warn(`A-Link ${slot.spec.name} down: ${reason}`, { path: slot.spec.name, peer: this.peer });
    this.emit('path-down', slot.spec.name, reason);
  }

  private reportRtt(): void {
    if (!this.rttFresh) return;
    this.rttFresh = false;
    let best: number | null = null;
    for (const s of this.slots) {
      const r = s.link?.srttMs ?? null;
      if (r !== null && (best === null || r < best)) best = r;
    }
    if (best !== null) this.emit('rtt', best);
  }

  private refused(slot: Slot, reason: string): void {
    if (this.state !== 'started') return;
    this.counters.refused++;
    this.warn(slot, `refused a connection: ${reason}`);
    this.emit('refused', slot.spec.name, reason);
  }

  /** Logs a warning, but the same one on a path at most once per interval (a retry loop would flood). */
  private warn(slot: Slot, message: string): void {
    const now = Date.now();
    if (message === slot.lastWarn && now - slot.lastWarnAt < WARN_INTERVAL_MS) return;
    slot.lastWarn = message;
    slot.lastWarnAt = now;
    this.log.warn(`A-Link ${slot.spec.name}: ${message}`, { path: slot.spec.name, peer: this.peer });
  }
}

/** The kind and id of an envelope that names a daemon message kind, however broken the rest is. */
function daemonKindOf(env: unknown): { kind: DaemonMessage['kind']; id: number | null } | null {
  if (typeof env !== 'object' || env === null) return null;
  const kind = (env as Record<string, unknown>)['kind'];
  if (typeof kind !== 'string' || !(DAEMON_MESSAGE_KINDS as readonly string[]).includes(kind)) return null;
  const body = (env as Record<string, unknown>)['body'];
  const id = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['id'] : undefined;
  return { kind: kind as DaemonMessage['kind'], id: typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? id : null };
}

/** A TLS or identity failure (refuse and say so), as opposed to a network one (ECONNREFUSED, ETIMEDOUT …). */
function isRefusal(e: NodeJS.ErrnoException | undefined): boolean {
  const code = e?.code;
  return typeof code === 'string' && !/^E[A-Z0-9]+$/.test(code);
}

function validateOptions(o: AlinkOptions, timing: AlinkTiming, limits: LinkLimits): void {
  const bad = (field: string, why: string): never => {
    throw new LockstepError('INVALID_SPEC', `A-Link: '${field}' ${why}`, { field });
  };
  if (typeof o.self !== 'string' || !NAME_RE.test(o.self)) bad('self', 'must be a host name');
  if (typeof o.peer !== 'string' || !NAME_RE.test(o.peer)) bad('peer', 'must be a host name');
  if (o.self === o.peer) bad('peer', 'must differ from self');
  if (o.paths.length < 1 || o.paths.length > ALINK_PATHS_MAX) bad('paths', `must list 1 to ${ALINK_PATHS_MAX} paths`);
  const names = new Set<string>();
  const listens = o.self > o.peer;
  o.paths.forEach((p, i) => {
    const at = `paths[${i}]`;
    if (typeof p.name !== 'string' || !NAME_RE.test(p.name)) bad(`${at}.name`, 'must be a name like alink1');
    if (names.has(p.name)) bad(`${at}.name`, `repeats ${p.name}`);
    names.add(p.name);
    if (net.isIP(p.local) === 0) bad(`${at}.local`, 'must be an IP address');
    if (net.isIP(p.peer) === 0) bad(`${at}.peer`, 'must be an IP address');
    if (!Number.isInteger(p.port) || p.port < (listens ? 0 : 1) || p.port > 65535) bad(`${at}.port`, `must be a port number${listens ? ' (0: any)' : ''}`);
  });
  for (const [k, v] of Object.entries(timing)) if (!(Number.isFinite(v) && v > 0)) bad(`timing.${k}`, 'must be a positive number of ms');
  if (timing.pathTimeoutMs < 2 * timing.pingIntervalMs) bad('timing.pathTimeoutMs', 'must be at least two ping intervals');
  if (timing.reconnectMinMs > timing.reconnectMaxMs) bad('timing.reconnectMinMs', 'must not exceed reconnectMaxMs');
  for (const [k, v] of Object.entries(limits)) if (!(Number.isSafeInteger(v) && v > 0)) bad(`limits.${k}`, 'must be a positive integer');
  if (limits.maxFrameBytes < 1024) bad('limits.maxFrameBytes', 'must be at least 1024');
}
