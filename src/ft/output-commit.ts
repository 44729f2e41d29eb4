/**
 * FT output commit: nothing a protected guest sends leaves the host before the peer holds the checkpoint of
 * the epoch in which it was sent. Each FT NIC's output goes through an output gate in lockstepd:
 *
 *   guest → virtio-net → netdev ─ fout (filter-redirector, outdev) ──▶ fromGuest socket ─▶ OutputGate
 *                                                                                            │ held per epoch
 *   tap ◀─ netdev ◀─ fin (filter-redirector, indev) ◀── toNetwork socket ◀───── released ────┘
 *
 * The gate listens on both unix sockets (in the VM's run directory); QEMU connects to them as a client,
 * from its command line (`VmNic.outputGate`, `outputGateArgs` in `command-line.ts`) or at run time
 * (`attachOutputGate`, undone by `detachOutputGate`), so a running VM can move between FT and HA or none
 * without a restart. Frames and their framing: `output-frames.ts`; which frame leaves when:
 * `output-queue.ts`.
 *
 * QEMU writes to the fromGuest socket with blocking writes from its main loop: a gate that stopped reading
 * would freeze the whole VM (vCPUs, QMP, every device). So the gate always reads, whatever is held, and
 * bounds memory by dropping frames past a hard limit instead (a dropped frame is a lost packet, which TCP
 * repairs; a frame sent early is a broken FT promise, which nothing repairs).
 *
 * Failure is closed, never open: a malformed record closes the gate (OUTPUT_GATE_FRAME) and drops what it
 * held; QEMU's chardevs do not reconnect, so the NIC's output is then dropped by QEMU until the gate is
 * detached, never sent unheld.
 */
import { rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { outputGateIds } from '../qemu/command-line.js';
import { silentLog, type DriverLog } from '../qemu/log.js';
import type { QmpClient } from '../qemu/qmp.js';
import type { VmOutputGate } from '../qemu/vm-spec.js';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { FrameReader } from './output-frames.js';
import { DEFAULT_OUTPUT_LIMITS, OutputQueue, type OutputQueueLimits, type OutputStats } from './output-queue.js';

export type { VmOutputGate } from '../qemu/vm-spec.js';

/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_MAX = 107;
/** How long QEMU gets to connect to the gate after `chardev-add` (it connects inside the command). */
const QEMU_CONNECT_TIMEOUT_MS = 5_000;
/** How long QEMU gets to close the fromGuest connection after `chardev-remove` (it closes inside the command). */
const GUEST_STREAM_END_TIMEOUT_MS = 5_000;
/**
 * At detach, between writing the last released frame into the toNetwork socket and removing `fin`: QEMU
 * reads that socket in its main loop, 4 KiB per turn, and nothing tells us when it has read the last byte.
 * 100 ms is thousands of main-loop turns; a frame still unread after it is lost like any packet on a network.
 */
const DETACH_DRAIN_MS = 100;
const QMP_TIMEOUT_MS = 10_000;

/** The gate's sockets for a NIC, in the VM's run directory (0700: whoever writes there speaks for the guest). */
export function outputGateSockets(runDir: string, nicId: string): VmOutputGate {
  return { fromGuest: path.join(runDir, `gate-${nicId}-guest.sock`), toNetwork: path.join(runDir, `gate-${nicId}-net.sock`) };
}

export interface OutputGateOptions {
  sockets: VmOutputGate;
  /** Names the gate in logs and errors, e.g. `web/net0`. */
  name: string;
  limits?: OutputQueueLimits;
  /** The number of the first epoch (default 1), so the gate's epochs can be the engine's checkpoints. */
  firstEpoch?: number;
  /** Hold from the start (default true); false starts in pass-through. */
  protected?: boolean;
  /** Called once each time the held bytes pass `limits.heldBytesSoftMax`: the engine should end the epoch. */
  onSoftLimit?: (stats: OutputGateStats) => void;
  log?: DriverLog;
  /** Monotonic milliseconds, for hold times (default `performance.now`). */
  now?: () => number;
}

export interface OutputGateStats extends OutputStats {
  /** Frames let out while QEMU's fin was not connected, waiting for it. */
  unsentFrames: number;
  /** Frames dropped because fin stayed away while more than the hard limit waited for it. */
  unsentDropped: number;
  /** Whether QEMU is connected on each socket. */
  fromGuestConnected: boolean;
  toNetworkConnected: boolean;
}

type Waiter = { check: () => boolean; resolve: () => void };

/**
 * One NIC's output gate. `listen` first (before QEMU starts with the gate on its command line, or before
 * `attachOutputGate`); then the FT engine drives it:
 *
 * 1. at each epoch's end, with the guest paused, `seal()` → the epoch just closed;
 * 2. when the peer acknowledges that epoch's checkpoint, `release(epoch)`;
 * 3. when the peer is lost, `unprotect()` (pass-through); when protection resumes, `protect()`.
 *
 * `closed` resolves once, with the error that closed the gate or `null` after `close()`.
 */
export class OutputGate {
  readonly closed: Promise<LockstepError | null>;
  private resolveClosed!: (e: LockstepError | null) => void;
  private isClosed = false;
  private readonly queue: OutputQueue;
  private readonly limits: OutputQueueLimits;
  private readonly servers: net.Server[] = [];
  private fromGuest: net.Socket | null = null;
  private toNetwork: net.Socket | null = null;
  /** Let out while fin was not connected; sent when it connects. */
  private unsent: Buffer[] = [];
  private unsentBytes = 0;
  private unsentDropped = 0;
  private waiters: Waiter[] = [];
  private readonly log: DriverLog;
  private readonly now: () => number;

  private constructor(private readonly opts: OutputGateOptions) {
    this.limits = opts.limits ?? DEFAULT_OUTPUT_LIMITS;
    this.queue = new OutputQueue(this.limits, { firstEpoch: opts.firstEpoch ?? 1, protected: opts.protected ?? true });
    this.log = opts.log ?? silentLog;
    this.now = opts.now ?? (() => performance.now());
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Listens on both sockets (replacing stale socket files). Throws `INVALID_ARGUMENT` for a socket path too
   * long for a unix socket, `OUTPUT_GATE` when it cannot listen. */
  static async listen(opts: OutputGateOptions): Promise<OutputGate> {
    for (const p of [opts.sockets.fromGuest, opts.sockets.toNetwork]) {
      if (Buffer.byteLength(p) > UNIX_SOCKET_PATH_MAX) {
        throw new LockstepError('INVALID_ARGUMENT', `output gate socket path ${p} is longer than a unix socket path may be (${UNIX_SOCKET_PATH_MAX} bytes)`, { path: p });
      }
    }
    const gate = new OutputGate(opts);
    try {
      await gate.listenOn(opts.sockets.fromGuest, (s) => gate.acceptFromGuest(s));
      await gate.listenOn(opts.sockets.toNetwork, (s) => gate.acceptToNetwork(s));
    } catch (e) {
      await gate.close();
      throw new LockstepError('OUTPUT_GATE', `output gate ${opts.name}: cannot listen: ${describeError(e)}`, { gate: opts.name }, { cause: e });
    }
    return gate;
  }

  get name(): string {
    return this.opts.name;
  }

  get sockets(): VmOutputGate {
    return this.opts.sockets;
  }

  get stats(): OutputGateStats {
    return {
      ...this.queue.stats(),
      unsentFrames: this.unsent.length,
      unsentDropped: this.unsentDropped,
      fromGuestConnected: this.fromGuest !== null,
      toNetworkConnected: this.toNetwork !== null,
    };
  }

  /**
   * Closes the open epoch and returns its number. Call it while the guest is paused at the epoch's end:
   * every frame read so far was sent before the pause, so it belongs to this epoch's checkpoint or an earlier
   * one; a frame sent before the pause and read later joins the next epoch, which only delays it.
   */
  seal(): number {
    return this.queue.seal();
  }

  /** The peer holds checkpoint `epoch`: frames of epochs ≤ `epoch` go out, in the order they were read. */
  release(epoch: number): void {
    for (const r of this.queue.release(epoch, this.now())) this.send(r);
  }

  /** Pass-through (unprotected: the peer is lost): what is held goes out now, later frames at once. */
  unprotect(): void {
    for (const r of this.queue.unprotect(this.now())) this.send(r);
  }

  /** Hold again, from the open epoch on. */
  protect(): void {
    this.queue.protect();
  }

  /** Resolves when QEMU is connected on both sockets; throws `OUTPUT_GATE` after `timeoutMs`. */
  waitForQemu(timeoutMs: number = QEMU_CONNECT_TIMEOUT_MS): Promise<void> {
    return this.waitUntil(() => this.fromGuest !== null && this.toNetwork !== null, timeoutMs, 'QEMU to connect to both sockets');
  }

  /** Resolves when QEMU has closed the fromGuest connection and every frame on it has been read. */
  waitForGuestStreamEnd(timeoutMs: number = GUEST_STREAM_END_TIMEOUT_MS): Promise<void> {
    return this.waitUntil(() => this.fromGuest === null, timeoutMs, 'QEMU to close the guest frame stream');
  }

  /** Resolves when every frame let out so far has been written into the toNetwork socket (not necessarily
   * read by QEMU yet). Frames waiting for fin to connect are not waited for. */
  async flushed(): Promise<void> {
    const s = this.toNetwork;
    if (s === null || s.destroyed) return;
    // Writes complete in order: the callback of an empty write comes after every earlier write's.
    await new Promise<void>((resolve) => s.write(Buffer.alloc(0), () => resolve()));
  }

  /** Stops listening, drops QEMU's connections and every held frame (never sent), removes the socket files. */
  async close(): Promise<void> {
    await this.shut(null);
  }

  private async listenOn(socketPath: string, onConnection: (s: net.Socket) => void): Promise<void> {
    // A socket file left by an earlier run would make listen fail with EADDRINUSE.
    await rm(socketPath, { force: true });
    const server = net.createServer(onConnection);
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.log.warn(`output gate ${this.name}: socket ${socketPath}: ${describeError(e)}`));
  }

  private acceptFromGuest(socket: net.Socket): void {
    if (this.refuseSecond(socket, this.fromGuest, 'fromGuest')) return;
    this.fromGuest = socket;
    // One reader per connection: a record cut short by the connection's end is thrown away with it.
    const reader = new FrameReader(this.sockets.fromGuest);
    socket.on('data', (chunk: Buffer) => this.onGuestData(reader, chunk));
    this.onConnectionEnd(socket, () => {
      if (this.fromGuest === socket) this.fromGuest = null;
      if (reader.bufferedBytes > 0) this.log.warn(`output gate ${this.name}: QEMU's frame stream ended inside a record; its ${reader.bufferedBytes} bytes are dropped`);
    });
    this.log.info(`output gate ${this.name}: QEMU connected (guest frames)`);
    this.wake();
  }

  private acceptToNetwork(socket: net.Socket): void {
    if (this.refuseSecond(socket, this.toNetwork, 'toNetwork')) return;
    this.toNetwork = socket;
    socket.on('data', (chunk: Buffer) => {
      // fin only reads its chardev: bytes from this side are not QEMU's filter-redirector talking.
      this.fail(new LockstepError('OUTPUT_GATE_FRAME', `output gate socket ${this.sockets.toNetwork}: the peer sent ${chunk.length} bytes on the release socket, which QEMU never writes`, {
        socket: this.sockets.toNetwork,
      }));
    });
    this.onConnectionEnd(socket, () => {
      if (this.toNetwork === socket) this.toNetwork = null;
    });
    const waiting = this.unsent;
    this.unsent = [];
    this.unsentBytes = 0;
    for (const r of waiting) socket.write(r);
    this.log.info(`output gate ${this.name}: QEMU connected (released frames)`, { sentOnConnect: waiting.length });
    this.wake();
  }

  /** One QEMU per socket: a second connection would interleave a second stream of frames. */
  private refuseSecond(socket: net.Socket, current: net.Socket | null, which: string): boolean {
    if (this.isClosed || current !== null) {
      this.log.warn(`output gate ${this.name}: refused a second connection on the ${which} socket`);
      socket.destroy();
      return true;
    }
    return false;
  }

  private onConnectionEnd(socket: net.Socket, onEnd: () => void): void {
    // EPIPE/ECONNRESET mean QEMU went away (exit, chardev-remove): its stream ends, the gate stays.
    socket.on('error', (e) => this.log.info(`output gate ${this.name}: QEMU connection: ${describeError(e)}`));
    socket.on('close', () => {
      onEnd();
      this.wake();
    });
  }

  private onGuestData(reader: FrameReader, chunk: Buffer): void {
    if (this.isClosed) return;
    let records: Buffer[];
    try {
      records = reader.push(chunk);
    } catch (e) {
      if (!isLockstepError(e, 'OUTPUT_GATE_FRAME')) throw e;
      this.fail(e);
      return;
    }
    const now = this.now();
    let crossedSoftLimit = false;
    for (const r of records) {
      const outcome = this.queue.push(r, now);
      if (outcome.kind === 'pass') this.send(r);
      else if (outcome.kind === 'held') crossedSoftLimit ||= outcome.crossedSoftLimit;
    }
    if (crossedSoftLimit) {
      const stats = this.stats;
      this.log.warn(`output gate ${this.name}: ${stats.heldBytes} bytes held, over ${this.limits.heldBytesSoftMax}`, { epoch: stats.epoch });
      this.opts.onSoftLimit?.(stats);
    }
  }

  private send(record: Buffer): void {
    if (this.isClosed) return;
    if (this.toNetwork !== null) {
      this.toNetwork.write(record);
      return;
    }
    if (this.unsentBytes + record.length > this.limits.heldBytesMax) {
      this.unsentDropped++;
      return;
    }
    this.unsent.push(record);
    this.unsentBytes += record.length;
  }

  private fail(e: LockstepError): void {
    this.log.warn(`output gate ${this.name} closes: ${e.message}`, { code: e.code, ...e.fields });
    void this.shut(e);
  }

  private async shut(e: LockstepError | null): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    const dropped = this.queue.discard();
    if (dropped > 0) this.log.warn(`output gate ${this.name}: ${dropped} held frames dropped at close`);
    this.unsent = [];
    for (const s of [this.fromGuest, this.toNetwork]) s?.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    await Promise.all([this.sockets.fromGuest, this.sockets.toNetwork].map((p) => rm(p, { force: true })));
    this.resolveClosed(e);
    this.wake();
  }

  private waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new LockstepError('OUTPUT_GATE', `output gate ${this.name}: waited ${timeoutMs} ms for ${what}`, { gate: this.name }));
      }, timeoutMs);
      const waiter: Waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.waiters.push(waiter);
    });
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => w.check());
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }
}

/**
 * Puts the gate on a running VM's NIC: two socket chardevs (clients of the gate's sockets), then `fin`, then
 * `fout` — the order of the command line, for the same reason (`outputGateArgs`). From the moment `fout`
 * exists the guest's frames go to the gate, held or not as the gate's mode says; it returns once QEMU is
 * connected on both sockets. A step that fails undoes the steps before it and throws `OUTPUT_GATE` naming
 * it (`fields.step`), with QEMU's error as the cause.
 */
export async function attachOutputGate(qmp: QmpClient, nicId: string, gate: OutputGate): Promise<void> {
  const ids = outputGateIds(nicId);
  const undo: { step: string; command: string; args: Record<string, unknown> }[] = [];
  const chardev = (id: string, socketPath: string): Record<string, unknown> => ({
    id,
    backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socketPath } }, server: false } },
  });
  const filter = (id: string, end: 'indev' | 'outdev', chardevId: string): Record<string, unknown> => ({
    'qom-type': 'filter-redirector',
    id,
    netdev: nicId,
    queue: 'rx',
    [end]: chardevId,
    vnet_hdr_support: true,
  });
  const steps = [
    { step: `chardev-add ${ids.toNetworkChardev}`, command: 'chardev-add', args: chardev(ids.toNetworkChardev, gate.sockets.toNetwork), undo: { command: 'chardev-remove', args: { id: ids.toNetworkChardev } } },
    { step: `chardev-add ${ids.fromGuestChardev}`, command: 'chardev-add', args: chardev(ids.fromGuestChardev, gate.sockets.fromGuest), undo: { command: 'chardev-remove', args: { id: ids.fromGuestChardev } } },
    { step: `object-add ${ids.releaseFilter}`, command: 'object-add', args: filter(ids.releaseFilter, 'indev', ids.toNetworkChardev), undo: { command: 'object-del', args: { id: ids.releaseFilter } } },
    { step: `object-add ${ids.holdFilter}`, command: 'object-add', args: filter(ids.holdFilter, 'outdev', ids.fromGuestChardev), undo: { command: 'object-del', args: { id: ids.holdFilter } } },
  ];
  let current = 'connect';
  try {
    for (const s of steps) {
      current = s.step;
      await qmp.execute(s.command, s.args, { timeoutMs: QMP_TIMEOUT_MS });
      undo.unshift({ step: s.step, ...s.undo });
    }
    current = 'wait for QEMU to connect';
    await gate.waitForQemu();
  } catch (e) {
    for (const u of undo) await qmp.execute(u.command, u.args, { timeoutMs: QMP_TIMEOUT_MS }).catch(() => undefined);
    throw new LockstepError('OUTPUT_GATE', `attaching output gate ${gate.name} to NIC ${nicId}: ${current} failed: ${describeError(e)}`, { gate: gate.name, nic: nicId, step: current }, { cause: e });
  }
}

/**
 * Takes the gate off a running VM's NIC, leaving the NIC sending straight to its tap, without losing what the
 * gate holds: the VM leaves FT, so nothing will acknowledge it any more and it is let out first.
 *
 * 1. `unprotect`: held frames go out, later ones pass;
 * 2. `object-del fout`: new guest frames go straight to the tap (`fin` without an outdev passes them on);
 * 3. `chardev-remove` of the guest-frame chardev, and wait until the gate has read that stream to its end;
 * 4. wait until every frame is written to the release socket, and `DETACH_DRAIN_MS` for QEMU to read it;
 * 5. `object-del fin`, `chardev-remove` of the release chardev.
 *
 * The gate keeps listening (for a later attach) until it is closed. Throws `OUTPUT_GATE` naming the step.
 */
export async function detachOutputGate(qmp: QmpClient, nicId: string, gate: OutputGate): Promise<void> {
  const ids = outputGateIds(nicId);
  let current = 'unprotect';
  try {
    gate.unprotect();
    current = `object-del ${ids.holdFilter}`;
    await qmp.execute('object-del', { id: ids.holdFilter }, { timeoutMs: QMP_TIMEOUT_MS });
    current = `chardev-remove ${ids.fromGuestChardev}`;
    await qmp.execute('chardev-remove', { id: ids.fromGuestChardev }, { timeoutMs: QMP_TIMEOUT_MS });
    current = 'wait for the end of the guest frame stream';
    await gate.waitForGuestStreamEnd();
    await gate.flushed();
    await sleep(DETACH_DRAIN_MS);
    current = `object-del ${ids.releaseFilter}`;
    await qmp.execute('object-del', { id: ids.releaseFilter }, { timeoutMs: QMP_TIMEOUT_MS });
    current = `chardev-remove ${ids.toNetworkChardev}`;
    await qmp.execute('chardev-remove', { id: ids.toNetworkChardev }, { timeoutMs: QMP_TIMEOUT_MS });
  } catch (e) {
    throw new LockstepError('OUTPUT_GATE', `detaching output gate ${gate.name} from NIC ${nicId}: ${current} failed: ${describeError(e)}`, { gate: gate.name, nic: nicId, step: current }, { cause: e });
  }
}
