/**
 * Disk replication streams: a TLS proxy at both ends of a stream that carries plain NBD bytes from the
 * owner's QEMU (the NBD client under its write-blocking mirror) to the backup's qemu-nbd (`copy-export.ts`),
 * over the A-Link addresses, authenticated with the pair's certificates exactly as the A-Link is.
 *
 * Why a proxy in the daemon rather than QEMU's own NBD TLS:
 * - the daemon must know exactly when a stream starts and ends: the backup's copy is current only while a
 *   stream of the owner's is connected (and the owner says its mirror is in sync);
 * - the owner's daemon must be able to cut a stream that hangs on a dead network. QEMU's NBD client would
 *   wait for TCP to give up (minutes), with the guest's writes blocked all that time.
 *
 * Streams are per volume: a VM of several disks has one per disk, each to its own copy's export. `vm` is
 * the volume's name (its VM's for the first disk, `<vm>.disk<N>` for the others), in the API and on the wire.
 *
 * Wire, after the TLS handshake: the owner sends one header line `{"v":1,"vm":VM,"stream":ID}\n`; the backup
 * answers one line, `{"ok":true}\n` or `{"ok":false,"error":"…"}\n` (and closes); after `ok` both directions
 * carry NBD bytes, untouched. The NBD server speaks first (its greeting), so nothing of QEMU's is sent before
 * the answer.
 *
 * The owner side, `ReplicationDialer`: `open(vm, stream)` dials the peer FIRST — its paths in order, each
 * bounded (TCP and TLS, then the answer) — and only once the backup has answered `ok` makes the VM's unix
 * socket for QEMU's `nbd` block node and resolves with its path. QEMU 7.2's `blockdev-add` of an `nbd` node
 * waits for the NBD greeting with its whole QMP monitor blocked (measured), so the daemon issues it only
 * after `open` resolved, when the greeting is already on its way: a slow or failing dial costs an `open` that
 * rejects (within paths × (connect + answer) timeouts), never a frozen monitor. A rejected `open` emits
 * nothing: the rejection is the report.
 * Until QEMU connects, the answered stream is held: what the backup's qemu-nbd sends meanwhile (its greeting)
 * is buffered, bounded, and delivered first when QEMU connects. QEMU not connecting within a bound, or the
 * stream's TLS side ending before QEMU connected, closes the stream (and its socket) at once: QEMU has had
 * nothing of it, so no request of its can be in flight.
 * Once QEMU is connected, when the stream's TLS side ends, the QEMU side is NOT closed: the dialer stops
 * reading from it, so QEMU's in-flight writes stay blocked. Only `cut(vm)` closes it; QEMU then fails those
 * writes, the mirror job fails and the guest carries on alone. The daemon cuts once its decision core has
 * made sure the peer can no longer take the VM over with a copy that lacks those writes. Closing at once
 * instead would let the guest go on writing to a disk whose copy on the peer may still be taken over.
 * A stream whose `open` resolved emits `broken` exactly once (`close()` excepted), however it ends.
 * A network that goes silent ends nothing by itself (TCP retries for minutes): the daemon learns of it
 * from the A-Link's liveness and cuts.
 *
 * The backup side, `ReplicationServer`: `stream-closed` is emitted synchronously before the other side of
 * the pipe is closed. The daemon persists "my copy is stale" in that handler, before the owner can learn
 * that the stream ended (and before it could acknowledge a guest write the copy did not get).
 */
import { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { ALINK_PATHS_MAX } from '../alink/alink.js';
import { peerIdentityProblem, type AlinkTlsContext } from '../alink/tls.js';
import { NAME_RE, PEER_LIMITS } from '../protocol/peer.js';
import { VOLUME_NAME_BYTES_MAX, VOLUME_NAME_RE } from './storage-group.js';
import { silentLog, type DriverLog } from '../qemu/log.js';
import { LockstepError, describeError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { printableValue } from '../util/printable.js';

const REPLICATION_PROTOCOL_VERSION = 1;
/** Stream ids are the daemon's: printable ASCII without spaces, bounded so that logs stay readable. */
export const STREAM_ID_RE = /^[\x21-\x7e]{1,64}$/;
/** A valid header is under 150 bytes; the limit leaves room for a later optional field. */
const HEADER_BYTES_MAX = 1024;
const ANSWER_BYTES_MAX = 1024;
/**
 * What the backup may send on an answered stream before QEMU connects. An NBD server sends its greeting
 * (18 bytes, newstyle) and then waits for the client, so more than this is not NBD: the stream is closed.
 */
export const REPLICATION_EARLY_BYTES_MAX = 64 * 1024;
/** Error texts in answers are cut to this, so a peer's answer cannot flood a log. */
const ERROR_TEXT_MAX = 200;
/** One stream per VM, plus a few being replaced or refused at the same moment. */
const LISTENER_CONNECTIONS_MAX = PEER_LIMITS.vmsMax + 16;
/** How long a side that is being ended gracefully gets to finish before it is destroyed. */
const CLOSE_GRACE_MS = 1000;
/** The same refusal is logged at most this often (events are not limited). */
const WARN_INTERVAL_MS = 10_000;
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_MAX = 107;

/** One way to the peer: an A-Link's address on the peer, in the dialer's preference order. */
export interface ReplicationPath {
  /** `alink1`, `alink2`: named in `connected` and in failure reasons. */
  name: string;
  /** The backup's address on this path. */
  address: string;
  port: number;
  /** This host's address on the path: bound, so the stream takes that cable and fails when it is gone. */
  local?: string;
}

export interface ReplicationDialerTiming {
  /** Per path: TCP and TLS. */
  connectTimeoutMs: number;
  /** From the header sent to the answer (the backup connects to its export meanwhile). */
  answerTimeoutMs: number;
  /** From `open` resolving to QEMU's connection to the socket; past it the stream is closed, `broken`. */
  qemuConnectTimeoutMs: number;
}

export const REPLICATION_DIALER_DEFAULT_TIMING: Readonly<ReplicationDialerTiming> = {
  connectTimeoutMs: 2000,
  answerTimeoutMs: 2000,
  qemuConnectTimeoutMs: 10_000,
};

export interface ReplicationDialerOptions {
  self: string;
  peer: string;
  /** This host's A-Link TLS context (`prepareAlinkTls`). */
  tls: AlinkTlsContext;
  paths: readonly ReplicationPath[];
  /** Where the per-VM sockets go: private to the daemon (whoever connects writes to the peer's copy). */
  socketDir: string;
  log?: DriverLog;
  timing?: Partial<ReplicationDialerTiming>;
}

/** One path `open` tried, and why it did not carry the stream: the `paths` field of its `REPLICATION_STREAM` error. */
export interface ReplicationPathFailure {
  path: string;
  reason: string;
}

export interface ReplicationDialerEvents {
  /** QEMU connected to the stream's socket: its connection now reaches the peer's export through `pathName`. */
  connected: [vm: string, streamId: string, pathName: string];
  /**
   * The stream ended: exactly once per stream whose `open` resolved, however it ended (`close()` excepted);
   * an `open` that rejected emits nothing. When QEMU had connected and the stream's TLS side ended, QEMU's
   * side is held until `cut(vm)`.
   */
  broken: [vm: string, streamId: string, reason: string];
}

type OutState = 'dialing' | 'waiting' | 'piping' | 'held' | 'ended';

/**
 * One stream on the owner: `dialing` the peer (inside `open`; no event), `waiting` for QEMU (answered, the
 * socket made, the backup's bytes kept), `piping`, `held` (broken, QEMU kept), `ended`.
 */
interface OutStream {
  vm: string;
  id: string;
  socketPath: string;
  state: OutState;
  /** The path that answered `ok`. */
  pathName: string | null;
  server: net.Server | null;
  qemu: net.Socket | null;
  /** The path being tried while dialing, then the answered stream. */
  tls: tls.TLSSocket | null;
  /** What the backup sent while `waiting` (bounded), and the listener that keeps it. */
  early: Buffer[];
  earlyBytes: number;
  keep: ((b: Buffer) => void) | null;
  /** QEMU's bound to connect, while `waiting`. */
  qemuTimer: NodeJS.Timeout | null;
  /** Why it ended: what a pending `open` rejects with. */
  endReason: string | null;
}

type PathOutcome = { kind: 'connected'; socket: tls.TLSSocket; rest: Buffer } | { kind: 'refused'; error: string } | { kind: 'failed'; why: string };

/** The owner's end of its replication streams. */
export class ReplicationDialer extends EventEmitter<ReplicationDialerEvents> {
  readonly self: string;
  readonly peer: string;
  readonly timing: Readonly<ReplicationDialerTiming>;
  private readonly tlsContext: AlinkTlsContext;
  private readonly paths: readonly ReplicationPath[];
  private readonly socketDir: string;
  private readonly log: DriverLog;
  private readonly streams = new Map<string, OutStream>();
  private readonly sockets = new Set<net.Socket>();
  private closed = false;

  /** Checks the options; throws `INVALID_SPEC`. */
  constructor(opts: ReplicationDialerOptions) {
    super();
    this.timing = { ...REPLICATION_DIALER_DEFAULT_TIMING, ...opts.timing };
    validateHosts('replication dialer', opts.self, opts.peer);
    validatePaths(opts.paths);
    validateTiming('replication dialer', this.timing);
    if (!path.isAbsolute(opts.socketDir)) invalidSpec('replication dialer', 'socketDir', 'must be an absolute path');
    if (Buffer.byteLength(path.join(opts.socketDir, `${'x'.repeat(VOLUME_NAME_BYTES_MAX)}.sock`)) > UNIX_SOCKET_PATH_MAX) {
      invalidSpec('replication dialer', 'socketDir', `is too long for a VM's socket path (${UNIX_SOCKET_PATH_MAX} bytes)`);
    }
    this.self = opts.self;
    this.peer = opts.peer;
    this.tlsContext = opts.tls;
    this.paths = opts.paths.map((p) => ({ ...p }));
    this.socketDir = opts.socketDir;
    this.log = opts.log ?? silentLog;
  }

  /** The unix socket QEMU connects to for `vm`'s stream (it exists only while the stream waits for QEMU). */
  socketPath(vm: string): string {
    return path.join(this.socketDir, `${vm}.sock`);
  }

  /**
   * Opens stream `streamId` of `vm`. First dials the peer: its paths in order, each bounded by
   * `connectTimeoutMs` (TCP and TLS) and then `answerTimeoutMs` (the header's answer); a refusal is the
   * peer's answer and ends the dial. Once the backup has answered `ok`, makes the unix socket that QEMU's NBD
   * block node connects to (`{"driver":"nbd","server":{"type":"unix","path":P},"export":VM}`) and resolves
   * with its path P: only then may `blockdev-add` be issued, the greeting being on its way. QEMU must connect
   * within `qemuConnectTimeoutMs`, or the stream is closed and `broken`. One connection is accepted per
   * stream; the socket file goes away with it.
   *
   * An older stream of the VM is replaced at once, which cuts it (its QEMU side is closed): open a new one
   * only when the older may be cut. `cut(vm)`, a newer `open` of the VM or `close()` abandon a dial at once.
   *
   * Rejects with `INVALID_ARGUMENT` (names) or `REPLICATION_STREAM` — no path carried the stream, the peer
   * refused it, the socket cannot be made, or it was cut, replaced or closed meanwhile — whose fields are
   * `vm`, `streamId` and `paths`: each path tried, with why it did not carry the stream
   * (`ReplicationPathFailure[]`). A rejected `open` emits no event (the daemon reports the rejection to its
   * decision core as the mirror's end); a resolved one emits `broken` exactly once, when the stream ends.
   */
  async open(vm: string, streamId: string): Promise<string> {
    assert(!this.closed, 'ReplicationDialer.open after close');
    if (typeof vm !== 'string' || !VOLUME_NAME_RE.test(vm)) throw invalidArgument('vm', vm, 'a volume name (a VM name, [a-z][a-z0-9-]{0,30}, or <vm>.disk<N>)');
    if (typeof streamId !== 'string' || !STREAM_ID_RE.test(streamId)) throw invalidArgument('streamId', streamId, '1 to 64 printable characters, no spaces');
    try {
      // 0700: whoever can connect to a VM's socket writes to the peer's copy of its disk.
      await mkdir(this.socketDir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new LockstepError('REPLICATION_STREAM', `cannot make the replication socket directory ${this.socketDir}: ${describeError(e)}`, { vm, streamId, paths: [] }, { cause: e });
    }
    if (this.closed) {
      throw new LockstepError('REPLICATION_STREAM', `stream ${streamId} of volume ${vm} not opened: the dialer closed`, { vm, streamId, paths: [] });
    }
    // Replacing the older stream closes its listener, which unlinks the socket path, now: the newer one
    // binds it only after its dial, and a newer one still ends this one before it binds.
    const old = this.streams.get(vm);
    if (old) this.end(old, `replaced by stream ${streamId}`);
    const s: OutStream = {
      vm,
      id: streamId,
      socketPath: this.socketPath(vm),
      state: 'dialing',
      pathName: null,
      server: null,
      qemu: null,
      tls: null,
      early: [],
      earlyBytes: 0,
      keep: null,
      qemuTimer: null,
      endReason: null,
    };
    this.streams.set(vm, s);

    const failures: ReplicationPathFailure[] = [];
    const dialed = await this.dial(s, failures);
    if ('problem' in dialed) {
      this.end(s, dialed.problem); // silent: dialing
      throw this.notOpened(s, failures);
    }
    this.hold(s, dialed.socket, dialed.rest, dialed.pathName);
    if (s.state !== 'dialing') throw this.notOpened(s, failures);

    // From the check above to the bind, synchronously: nothing of ours listens on the path (see above), so
    // a file there is one left by a daemon that died.
    rmSync(s.socketPath, { force: true });
    const server = net.createServer((c) => this.qemuConnected(s, c));
    s.server = server;
    const listened = new Promise<string | null>((resolve) => {
      server.once('error', (e) => resolve(e.message));
      server.once('listening', () => resolve(null));
    });
    server.listen(s.socketPath);
    const problem = await listened;
    if (problem !== null) this.end(s, `cannot listen on ${s.socketPath}: ${problem}`);
    if (s.state !== 'dialing') throw this.notOpened(s, failures);
    server.on('error', (e) => this.log.warn(`replication socket of volume ${vm}: ${e.message}`, { vm, stream: streamId }));
    s.state = 'waiting';
    const bound = this.timing.qemuConnectTimeoutMs;
    s.qemuTimer = setTimeout(() => this.end(s, `QEMU did not connect to ${s.socketPath} within ${bound} ms`), bound);
    this.log.info(`replication stream ${streamId} of volume ${vm} answered over ${dialed.pathName}; waiting for QEMU`, { vm, stream: streamId, path: dialed.pathName, peer: this.peer });
    return s.socketPath;
  }

  /**
   * Ends `vm`'s stream and closes QEMU's side of it: QEMU fails the writes still waiting and its mirror job
   * fails. Call it only once the peer can no longer take the VM over with a copy missing those writes. A
   * stream still dialing is abandoned (its `open` rejects). No-op when the VM has no stream.
   */
  cut(vm: string): void {
    const s = this.streams.get(vm);
    if (s) this.end(s, 'cut');
  }

  /** The state of each VM's stream, for status and tests. */
  status(): { vm: string; streamId: string; state: OutState }[] {
    return [...this.streams.values()].map((s) => ({ vm: s.vm, streamId: s.id, state: s.state }));
  }

  /** Ends every stream as `cut` does (no events; pending `open`s reject), and resolves once every socket is closed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.streams.values()]) this.end(s, 'the dialer closed');
    await destroyAll(this.sockets);
  }

  // ── one stream ─────────────────────────────────────────────────────────────────────────────────────

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** The error a pending `open` rejects with; logged, since no event tells of it. */
  private notOpened(s: OutStream, failures: ReplicationPathFailure[]): LockstepError {
    const reason = s.endReason ?? 'ended';
    if (!this.closed) this.log.warn(`replication stream ${s.id} of volume ${s.vm} not opened: ${reason}`, { vm: s.vm, stream: s.id, peer: this.peer });
    return new LockstepError('REPLICATION_STREAM', `stream ${s.id} of volume ${s.vm} not opened: ${reason}`, { vm: s.vm, streamId: s.id, paths: [...failures] });
  }

  /** The paths in order until one answers; each failure is added to `failures`. */
  private async dial(s: OutStream, failures: ReplicationPathFailure[]): Promise<{ socket: tls.TLSSocket; rest: Buffer; pathName: string } | { problem: string }> {
    for (const p of this.paths) {
      const outcome = await this.tryPath(s, p);
      if (s.state !== 'dialing') {
        if (outcome.kind === 'connected') outcome.socket.destroy();
        return { problem: s.endReason ?? 'ended' };
      }
      if (outcome.kind === 'connected') return { socket: outcome.socket, rest: outcome.rest, pathName: p.name };
      if (outcome.kind === 'refused') {
        // A refusal is the peer's answer, the same on every path.
        const before = failures.map((f) => `${f.path}: ${f.reason}`).join('; ');
        failures.push({ path: p.name, reason: `refused: ${outcome.error}` });
        return { problem: `${this.peer} refused the stream on ${p.name}: ${outcome.error}${before ? ` (before: ${before})` : ''}` };
      }
      failures.push({ path: p.name, reason: outcome.why });
    }
    return { problem: `no path to ${this.peer} carried the stream: ${failures.map((f) => `${f.path}: ${f.reason}`).join('; ')}` };
  }

  /** One path: TLS (bounded), the header, the answer (bounded). */
  private async tryPath(s: OutStream, p: ReplicationPath): Promise<PathOutcome> {
    const socket = await this.connect(s, p);
    if (typeof socket === 'string') return { kind: 'failed', why: socket };
    socket.write(JSON.stringify({ v: REPLICATION_PROTOCOL_VERSION, vm: s.vm, stream: s.id }) + '\n');
    const got = await readLine(socket, ANSWER_BYTES_MAX, this.timing.answerTimeoutMs, 'answer');
    if ('problem' in got) {
      socket.destroy();
      return { kind: 'failed', why: got.problem };
    }
    const answer = parseAnswer(got.line);
    if (answer.ok) return { kind: 'connected', socket, rest: got.rest };
    socket.destroy();
    return answer.error === null ? { kind: 'failed', why: `an answer that is not one: ${printableValue(got.line)}` } : { kind: 'refused', error: answer.error };
  }

  private connect(s: OutStream, p: ReplicationPath): Promise<tls.TLSSocket | string> {
    return new Promise((resolve) => {
      const tcp = net.connect({ host: p.address, port: p.port, localAddress: p.local, noDelay: true });
      tcp.on('error', () => {}); // reported through the TLS socket on top of it
      const socket = tls.connect({
        socket: tcp,
        secureContext: this.tlsContext.secureContext,
        minVersion: 'TLSv1.3',
        maxVersion: 'TLSv1.3',
        rejectUnauthorized: true,
        checkServerIdentity: (_host, cert) => {
          const problem = peerIdentityProblem(cert, this.peer, this.tlsContext.ca);
          return problem === null ? undefined : Object.assign(new Error(problem), { code: 'REPLICATION_PEER_IDENTITY' });
        },
      });
      this.track(tcp);
      this.track(socket);
      socket.on('error', () => {}); // after the handshake, the stream's own handlers report errors
      s.tls = socket;
      let settled = false;
      const fail = (why: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        tcp.destroy();
        resolve(why);
      };
      const at = `${p.address}:${p.port}`;
      const timer = setTimeout(() => fail(`no TLS connection to ${at} within ${this.timing.connectTimeoutMs} ms`), this.timing.connectTimeoutMs);
      socket.once('error', (e) => fail(`cannot connect to ${at}: ${e.message}`));
      socket.once('close', () => fail(`the connection to ${at} closed during the handshake`));
      socket.once('secureConnect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(socket);
      });
    });
  }

  /**
   * The backup answered `ok` on `socket`: keep it for QEMU. What it sends (its greeting) is read and kept,
   * bounded, so that the stream's end is seen at once while QEMU has not connected.
   */
  private hold(s: OutStream, socket: tls.TLSSocket, rest: Buffer, pathName: string): void {
    s.tls = socket;
    s.pathName = pathName;
    socket.once('end', () => this.tlsGone(s, socket, `${this.peer} ended the stream`));
    socket.once('close', () => this.tlsGone(s, socket, 'the stream’s connection closed'));
    socket.once('error', (e) => this.tlsGone(s, socket, `the stream’s connection failed: ${e.message}`));
    const keep = (b: Buffer): void => {
      if (s.state !== 'dialing' && s.state !== 'waiting') return;
      s.early.push(b);
      s.earlyBytes += b.length;
      if (s.earlyBytes > REPLICATION_EARLY_BYTES_MAX) {
        this.end(s, `${this.peer} sent more than ${REPLICATION_EARLY_BYTES_MAX} bytes before QEMU connected (an NBD server sends its greeting, then waits)`);
      }
    };
    s.keep = keep;
    // NBD bytes that arrived with the answer (the server's greeting) are the stream's first.
    if (rest.length > 0) keep(rest);
    socket.on('data', keep);
    socket.resume();
  }

  private qemuConnected(s: OutStream, c: net.Socket): void {
    this.track(c);
    c.on('error', () => {}); // its end is handled through 'end'/'close'
    if (s.state !== 'waiting' || this.closed) {
      c.destroy();
      return;
    }
    clearTimeout(s.qemuTimer!);
    s.qemuTimer = null;
    // Exactly one connection per stream: the listener and its socket file go now.
    s.server?.close();
    s.server = null;
    const socket = s.tls!;
    s.qemu = c;
    s.state = 'piping';
    // What the backup sent meanwhile goes first, then the pipe (nothing is read in between: no I/O runs).
    socket.pause();
    socket.off('data', s.keep!);
    s.keep = null;
    if (s.earlyBytes > 0) c.write(Buffer.concat(s.early));
    s.early = [];
    s.earlyBytes = 0;
    c.once('end', () => this.qemuGone(s));
    c.once('close', () => this.qemuGone(s));
    // Both ways through pipe(): a slow side pauses the other, so nothing is buffered without bound. Ends
    // are ours to handle, never passed on by pipe().
    socket.pipe(c, { end: false });
    c.pipe(socket, { end: false });
    this.log.info(`replication stream ${s.id} of volume ${s.vm} connected over ${s.pathName}`, { vm: s.vm, stream: s.id, path: s.pathName, peer: this.peer });
    this.emit('connected', s.vm, s.id, s.pathName!);
  }

  /**
   * The answered stream's TLS side ended. Before QEMU connected: the stream is closed at once (QEMU has had
   * nothing of it). After: QEMU's side is held (nothing more is read from it) until `cut`.
   */
  private tlsGone(s: OutStream, socket: tls.TLSSocket, reason: string): void {
    if (s.tls !== socket) return;
    if (s.state === 'dialing' || s.state === 'waiting') return this.end(s, `${reason} before QEMU connected`);
    if (s.state !== 'piping') return;
    const qemu = s.qemu!;
    s.state = 'held';
    s.tls = null;
    qemu.unpipe(socket);
    socket.unpipe(qemu);
    qemu.pause();
    socket.destroy();
    if (this.closed) return;
    this.log.warn(`replication stream ${s.id} of volume ${s.vm} broken: ${reason}; QEMU's side is held until cut`, { vm: s.vm, stream: s.id, peer: this.peer });
    this.emit('broken', s.vm, s.id, reason);
  }

  private qemuGone(s: OutStream): void {
    if (s.state === 'piping') {
      // Whatever QEMU sent before its end was piped already; the TLS side gets it before the close.
      const socket = s.tls!;
      s.tls = null;
      socket.unpipe(s.qemu!);
      endThenDestroy(socket);
    }
    if (s.state === 'piping' || s.state === 'held') this.end(s, 'closed by QEMU');
  }

  /**
   * Ends the stream: the dial or the answered stream, the listener, QEMU's side. `broken` unless it was
   * still dialing (its `open` rejects instead), was already reported (held), or on close.
   */
  private end(s: OutStream, reason: string): void {
    if (s.state === 'ended') return;
    const silent = s.state === 'dialing' || s.state === 'held';
    s.state = 'ended';
    s.endReason = reason;
    if (this.streams.get(s.vm) === s) this.streams.delete(s.vm);
    if (s.qemuTimer) clearTimeout(s.qemuTimer);
    s.qemuTimer = null;
    if (s.keep) s.tls?.off('data', s.keep);
    s.keep = null;
    s.early = [];
    s.earlyBytes = 0;
    s.server?.close();
    s.server = null;
    s.tls?.destroy();
    s.qemu?.destroy();
    if (silent || this.closed) return;
    this.log.warn(`replication stream ${s.id} of volume ${s.vm} ended: ${reason}`, { vm: s.vm, stream: s.id, peer: this.peer });
    this.emit('broken', s.vm, s.id, reason);
  }
}

// ── the backup's side ──────────────────────────────────────────────────────────────────────────────────

/** One address the server listens on: this host's address on an A-Link. */
export interface ReplicationListen {
  address: string;
  /** 0 takes any free port (tests; see `addresses()`). */
  port: number;
}

export interface ReplicationServerTiming {
  /** The TLS handshake. */
  handshakeTimeoutMs: number;
  /** From the handshake to the header's newline. */
  headerTimeoutMs: number;
  /** Connecting to the VM's copy export on this host. */
  localConnectTimeoutMs: number;
  /** Between attempts to listen on an address that is not configured yet. */
  listenRetryMs: number;
}

export const REPLICATION_SERVER_DEFAULT_TIMING: Readonly<ReplicationServerTiming> = {
  handshakeTimeoutMs: 2000,
  headerTimeoutMs: 2000,
  localConnectTimeoutMs: 1000,
  listenRetryMs: 2000,
};

export interface ReplicationServerOptions {
  self: string;
  peer: string;
  tls: AlinkTlsContext;
  listen: readonly ReplicationListen[];
  /** The unix socket of `vm`'s copy export on this host, or null when it has none. */
  resolve(vm: string): string | null;
  log?: DriverLog;
  timing?: Partial<ReplicationServerTiming>;
}

export interface ReplicationServerEvents {
  /** A stream of the owner's reaches the VM's copy export now (emitted before the `ok` answer leaves). */
  'stream-open': [vm: string, streamId: string];
  /**
   * The stream ended. Emitted synchronously before the other side of the pipe is closed, so that a handler
   * can persist "my copy is stale" before the owner can learn of the end.
   */
  'stream-closed': [vm: string, streamId: string, reason: string];
  /** A connection was refused: identity, header, unknown VM, no export. */
  refused: [reason: string];
}

interface ListenSlot {
  spec: ReplicationListen;
  server: tls.Server | null;
  port: number;
  retryTimer: NodeJS.Timeout | null;
  lastError: string | null;
}

/** One stream on the backup: `connecting` to the export (no event yet), `open`, `closed`. */
interface InStream {
  vm: string;
  id: string;
  state: 'connecting' | 'open' | 'closed';
  tls: tls.TLSSocket;
  local: net.Socket | null;
}

/** The backup's end of the owner's replication streams. */
export class ReplicationServer extends EventEmitter<ReplicationServerEvents> {
  readonly self: string;
  readonly peer: string;
  readonly timing: Readonly<ReplicationServerTiming>;
  private readonly tlsContext: AlinkTlsContext;
  private readonly resolveExport: (vm: string) => string | null;
  private readonly log: DriverLog;
  private readonly slots: ListenSlot[];
  private readonly streams = new Map<string, InStream>();
  private readonly sockets = new Set<net.Socket>();
  private readonly listening = new Set<Promise<void>>();
  private readonly warned = new Map<string, number>();
  private state: 'new' | 'started' | 'closed' = 'new';

  /** Checks the options; throws `INVALID_SPEC`. */
  constructor(opts: ReplicationServerOptions) {
    super();
    this.timing = { ...REPLICATION_SERVER_DEFAULT_TIMING, ...opts.timing };
    validateHosts('replication server', opts.self, opts.peer);
    validateTiming('replication server', this.timing);
    if (opts.listen.length < 1 || opts.listen.length > ALINK_PATHS_MAX) invalidSpec('replication server', 'listen', `must list 1 to ${ALINK_PATHS_MAX} addresses`);
    opts.listen.forEach((l, i) => {
      if (net.isIP(l.address) === 0) invalidSpec('replication server', `listen[${i}].address`, 'must be an IP address');
      if (!Number.isInteger(l.port) || l.port < 0 || l.port > 65535) invalidSpec('replication server', `listen[${i}].port`, 'must be a port number (0: any)');
    });
    this.self = opts.self;
    this.peer = opts.peer;
    this.tlsContext = opts.tls;
    this.resolveExport = opts.resolve;
    this.log = opts.log ?? silentLog;
    this.slots = opts.listen.map((spec) => ({ spec: { ...spec }, server: null, port: spec.port, retryTimer: null, lastError: null }));
  }

  /** Listens on every address; resolves once each has been tried. One that cannot bind yet is retried. */
  async start(): Promise<void> {
    assert(this.state === 'new', 'ReplicationServer.start called twice or after close');
    this.state = 'started';
    await Promise.all(this.slots.map((slot) => this.listenOnce(slot)));
  }

  /** Each address, the port bound (or configured, when not listening), and why it does not listen. */
  addresses(): { address: string; port: number; listening: boolean; lastError: string | null }[] {
    return this.slots.map((s) => ({ address: s.spec.address, port: s.port, listening: s.server !== null, lastError: s.lastError }));
  }

  /** The open streams (connected to their export), by VM. */
  openStreams(): { vm: string; streamId: string }[] {
    return [...this.streams.values()].filter((s) => s.state === 'open').map((s) => ({ vm: s.vm, streamId: s.id }));
  }

  /**
   * Stops listening and ends every stream: each open one emits `stream-closed` first, as any end does. No
   * event after that. Resolves once every listener and socket is closed.
   */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    for (const s of [...this.streams.values()]) this.closeStream(s, `${this.self} is closing its replication server`, false);
    this.state = 'closed';
    await Promise.all([...this.listening]);
    const servers: Promise<void>[] = [];
    for (const slot of this.slots) {
      if (slot.retryTimer) clearTimeout(slot.retryTimer);
      const server = slot.server;
      slot.server = null;
      if (server) servers.push(new Promise((resolve) => server.close(() => resolve())));
    }
    await Promise.all([destroyAll(this.sockets), ...servers]);
  }

  // ── listening ──────────────────────────────────────────────────────────────────────────────────────

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private listenOnce(slot: ListenSlot): Promise<void> {
    const p = this.listen(slot).finally(() => this.listening.delete(p));
    this.listening.add(p);
    return p;
  }

  private async listen(slot: ListenSlot): Promise<void> {
    if (this.state !== 'started') return;
    const server = tls.createServer({
      ...this.tlsContext.options,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.timing.handshakeTimeoutMs,
      noDelay: true,
    });
    server.maxConnections = LISTENER_CONNECTIONS_MAX;
    server.on('connection', (raw: net.Socket) => this.track(raw));
    server.on('secureConnection', (socket: tls.TLSSocket) => void this.accepted(socket));
    server.on('tlsClientError', (e: Error, socket: tls.TLSSocket) => {
      socket.destroy();
      this.refused(`TLS handshake from ${socket.remoteAddress ?? '?'} failed: ${e.message}`);
    });
    const bound = await new Promise<string | null>((resolve) => {
      server.once('error', (e) => resolve(e.message));
      server.listen({ host: slot.spec.address, port: slot.port, exclusive: true }, () => resolve(null));
    });
    if (bound !== null || this.state !== 'started') {
      server.close();
      if (bound !== null) {
        // The address may not be configured yet (an A-Link interface coming up): try again later.
        slot.lastError = `cannot listen on ${slot.spec.address}:${slot.port}: ${bound}`;
        this.warn(slot.lastError);
        slot.retryTimer = setTimeout(() => {
          slot.retryTimer = null;
          void this.listenOnce(slot);
        }, this.timing.listenRetryMs);
      }
      return;
    }
    server.on('error', (e) => this.warn(`replication listener ${slot.spec.address}:${slot.port}: ${e.message}`));
    slot.server = server;
    slot.lastError = null;
    slot.port = (server.address() as net.AddressInfo).port;
  }

  // ── one connection ─────────────────────────────────────────────────────────────────────────────────

  private async accepted(socket: tls.TLSSocket): Promise<void> {
    this.track(socket);
    socket.on('error', () => {}); // each phase below handles the end it cares about
    if (this.state !== 'started') return void socket.destroy();
    const from = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const problem = peerIdentityProblem(socket.getPeerCertificate(), this.peer, this.tlsContext.ca);
    // Signed by our pair's CA (TLS checked that), so telling it why helps whoever set it up.
    if (problem !== null) return this.refuse(socket, `refused by ${this.self}: ${problem}`, `connection from ${from}`);
    const got = await readLine(socket, HEADER_BYTES_MAX, this.timing.headerTimeoutMs, 'header');
    if (this.state !== 'started') return void socket.destroy();
    if ('problem' in got) return this.refuse(socket, got.problem, `connection from ${from}`);
    const header = parseHeader(got.line);
    if ('problem' in header) return this.refuse(socket, header.problem, `connection from ${from}`);
    const { vm, stream } = header;
    const exportPath = this.resolveExport(vm);
    if (exportPath === null) return this.refuse(socket, `${this.self} has no copy export of volume ${vm}`, `stream ${stream}`);

    // At most one stream per VM: the copy export serves one client at a time, and the newer stream is the
    // owner's current one.
    const old = this.streams.get(vm);
    if (old) this.closeStream(old, `replaced by stream ${stream}`, false);
    const s: InStream = { vm, id: stream, state: 'connecting', tls: socket, local: null };
    this.streams.set(vm, s);
    const local = net.connect(exportPath);
    this.track(local);
    local.on('error', () => {});
    s.local = local;
    // Until the export accepts; afterwards the open stream's own handlers take over.
    const abandon = (why: string): void => {
      if (s.state !== 'connecting') return;
      clearTimeout(timer);
      this.closeStream(s, why, false);
    };
    const timer = setTimeout(() => abandon(`the copy export of volume ${vm} did not accept within ${this.timing.localConnectTimeoutMs} ms`), this.timing.localConnectTimeoutMs);
    local.once('error', (e) => abandon(`cannot reach the copy export of volume ${vm}: ${e.message}`));
    socket.once('close', () => abandon('the owner closed the connection before the stream opened'));
    local.once('connect', () => {
      clearTimeout(timer);
      if (s.state === 'connecting') this.opened(s, got.rest);
    });
  }

  private opened(s: InStream, rest: Buffer): void {
    const { tls: socket, local } = s;
    s.state = 'open';
    this.log.info(`replication stream ${s.id} of volume ${s.vm} open`, { vm: s.vm, stream: s.id, peer: this.peer });
    // Before the answer leaves: the daemon hears of the stream before any of its bytes flow.
    this.emit('stream-open', s.vm, s.id);
    if (s.state !== 'open') return;
    socket.write(answerLine({ ok: true }));
    if (rest.length > 0) socket.unshift(rest);
    local!.once('end', () => this.closeStream(s, 'the copy export ended the connection', true));
    local!.once('close', () => this.closeStream(s, 'the copy export’s connection closed', true));
    local!.once('error', (e) => this.closeStream(s, `the copy export’s connection failed: ${e.message}`, true));
    socket.once('end', () => this.closeStream(s, `${this.peer} ended the stream`, true));
    socket.once('close', () => this.closeStream(s, 'the stream’s connection closed', true));
    socket.once('error', (e) => this.closeStream(s, `the stream’s connection failed: ${e.message}`, true));
    socket.pipe(local!, { end: false });
    local!.pipe(socket, { end: false });
  }

  /**
   * Ends a stream. An open one emits `stream-closed` FIRST, synchronously, then its sides are closed:
   * gracefully (what was piped is still delivered) when one side ended on its own, at once when the
   * stream is replaced or on close. One still connecting to its export is refused with the reason.
   */
  private closeStream(s: InStream, reason: string, graceful: boolean): void {
    if (s.state === 'closed') return;
    const wasOpen = s.state === 'open';
    s.state = 'closed';
    if (this.streams.get(s.vm) === s) this.streams.delete(s.vm);
    if (!wasOpen) {
      s.local?.destroy();
      return this.refuse(s.tls, reason, `stream ${s.id} of volume ${s.vm}`);
    }
    if (this.state === 'started') {
      this.log.warn(`replication stream ${s.id} of volume ${s.vm} closed: ${reason}`, { vm: s.vm, stream: s.id, peer: this.peer });
      this.emit('stream-closed', s.vm, s.id, reason);
    }
    s.tls.unpipe();
    s.local?.unpipe();
    if (graceful) {
      endThenDestroy(s.tls);
      if (s.local) endThenDestroy(s.local);
    } else {
      s.tls.destroy();
      s.local?.destroy();
    }
  }

  /** Answers a refusal, then closes. What the client still sends is read and dropped meanwhile, so the
   * close is a FIN after the answer rather than a reset that could discard it. */
  private refuse(socket: tls.TLSSocket, error: string, context: string): void {
    this.refused(`${context}: ${error}`);
    if (socket.destroyed) return;
    socket.end(answerLine({ ok: false, error: truncate(error) }));
    socket.resume();
    const t = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    socket.once('close', () => clearTimeout(t));
  }

  private refused(reason: string): void {
    if (this.state !== 'started') return;
    this.warn(`refused a replication connection: ${reason}`);
    this.emit('refused', reason);
  }

  /** Logs a warning, but the same one at most once per interval (an owner retrying would flood). */
  private warn(message: string): void {
    const now = Date.now();
    const last = this.warned.get(message);
    if (last !== undefined && now - last < WARN_INTERVAL_MS) return;
    if (this.warned.size >= 64) this.warned.clear();
    this.warned.set(message, now);
    this.log.warn(message, { peer: this.peer });
  }
}

// ── the wire ───────────────────────────────────────────────────────────────────────────────────────────

interface StreamHeader {
  vm: string;
  stream: string;
}

/** Checks a header line; a problem is a value (the server answers it), not an exception. */
function parseHeader(line: string): StreamHeader | { problem: string } {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { problem: `the header is not JSON: ${printableValue(line)}` };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { problem: `the header is not a JSON object: ${printableValue(v)}` };
  const o = v as Record<string, unknown>;
  if (o['v'] !== REPLICATION_PROTOCOL_VERSION) return { problem: `header version ${printableValue(o['v'])} is not ${REPLICATION_PROTOCOL_VERSION}` };
  const vm = o['vm'];
  if (typeof vm !== 'string' || !VOLUME_NAME_RE.test(vm)) return { problem: `header 'vm' is ${printableValue(vm)}, not a volume name` };
  const stream = o['stream'];
  if (typeof stream !== 'string' || !STREAM_ID_RE.test(stream)) return { problem: `header 'stream' is ${printableValue(stream)}, not a stream id` };
  return { vm, stream };
}

/** The answer: ok, or the server's error text; `error: null` when the line is not an answer at all. */
function parseAnswer(line: string): { ok: true } | { ok: false; error: string | null } {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return { ok: false, error: null };
  }
  if (typeof v !== 'object' || v === null) return { ok: false, error: null };
  const o = v as Record<string, unknown>;
  if (o['ok'] === true) return { ok: true };
  if (o['ok'] === false && typeof o['error'] === 'string') return { ok: false, error: truncate(o['error']) };
  return { ok: false, error: null };
}

function answerLine(a: { ok: true } | { ok: false; error: string }): string {
  return JSON.stringify(a) + '\n';
}

function truncate(text: string): string {
  return text.length > ERROR_TEXT_MAX ? `${text.slice(0, ERROR_TEXT_MAX - 1)}…` : text;
}

/**
 * Reads one line (without its newline) of at most `maxBytes`, within `timeoutMs`; what came after the
 * newline is returned, and the socket is left paused. A problem is a value, so callers answer it.
 */
function readLine(socket: net.Socket, maxBytes: number, timeoutMs: number, what: string): Promise<{ line: string; rest: Buffer } | { problem: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const done = (result: { line: string; rest: Buffer } | { problem: string }): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
      socket.pause();
      resolve(result);
    };
    const onData = (b: Buffer): void => {
      const nl = b.indexOf(0x0a);
      if (bytes + (nl === -1 ? b.length : nl) > maxBytes) return done({ problem: `the ${what} is longer than ${maxBytes} bytes` });
      if (nl === -1) {
        chunks.push(b);
        bytes += b.length;
        return;
      }
      chunks.push(b.subarray(0, nl));
      done({ line: Buffer.concat(chunks).toString('utf8'), rest: b.subarray(nl + 1) });
    };
    const onEnd = (): void => done({ problem: `the connection ended before the ${what} was complete` });
    const onError = (e: Error): void => done({ problem: `the connection failed before the ${what} was complete: ${e.message}` });
    const timer = setTimeout(() => done({ problem: `no complete ${what} within ${timeoutMs} ms` }), timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onError);
  });
}

/** Ends a socket gracefully (pending writes, then FIN), destroying it if the other side does not close in time. */
function endThenDestroy(socket: net.Socket): void {
  if (socket.destroyed) return;
  socket.end();
  const t = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  socket.once('close', () => clearTimeout(t));
}

/** Destroys every socket and resolves once all are closed. */
async function destroyAll(sockets: Set<net.Socket>): Promise<void> {
  const waits = [...sockets].map((s) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve()))));
  for (const s of sockets) s.destroy();
  await Promise.all(waits);
}

// ── options ────────────────────────────────────────────────────────────────────────────────────────────

function invalidSpec(what: string, field: string, why: string): never {
  throw new LockstepError('INVALID_SPEC', `${what}: '${field}' ${why}`, { field });
}

function invalidArgument(field: string, value: unknown, expected: string): LockstepError {
  return new LockstepError('INVALID_ARGUMENT', `replication stream: '${field}' is ${printableValue(value)}, not ${expected}`, { field });
}

function validateHosts(what: string, self: string, peer: string): void {
  if (typeof self !== 'string' || !NAME_RE.test(self)) invalidSpec(what, 'self', 'must be a host name');
  if (typeof peer !== 'string' || !NAME_RE.test(peer)) invalidSpec(what, 'peer', 'must be a host name');
  if (self === peer) invalidSpec(what, 'peer', 'must differ from self');
}

function validatePaths(paths: readonly ReplicationPath[]): void {
  const what = 'replication dialer';
  if (paths.length < 1 || paths.length > ALINK_PATHS_MAX) invalidSpec(what, 'paths', `must list 1 to ${ALINK_PATHS_MAX} paths`);
  const names = new Set<string>();
  paths.forEach((p, i) => {
    const at = `paths[${i}]`;
    if (typeof p.name !== 'string' || !NAME_RE.test(p.name)) invalidSpec(what, `${at}.name`, 'must be a name like alink1');
    if (names.has(p.name)) invalidSpec(what, `${at}.name`, `repeats ${p.name}`);
    names.add(p.name);
    if (net.isIP(p.address) === 0) invalidSpec(what, `${at}.address`, 'must be an IP address');
    if (p.local !== undefined && net.isIP(p.local) === 0) invalidSpec(what, `${at}.local`, 'must be an IP address');
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) invalidSpec(what, `${at}.port`, 'must be a port number');
  });
}

function validateTiming(what: string, timing: object): void {
  for (const [k, v] of Object.entries(timing)) {
    if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) invalidSpec(what, `timing.${k}`, 'must be a positive number of ms');
  }
}
