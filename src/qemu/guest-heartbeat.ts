/**
 * The host side of the guest heartbeat (a watchdog for the guest, kept by the host): the guest's agent
 * writes a line to its second serial port (ttyS1) every second or so; QEMU hands those bytes to a unix
 * socket (command-line.ts) that this module reads. A dead QEMU is seen by its exit; a guest whose kernel
 * or userland is stuck is seen only here: it stops beating.
 *
 * The rule: a guest is hung when it has beaten at least once (a guest without the agent, or still booting,
 * is never called hung) and has then stayed silent for `timeoutMs` of running time — time paused (`stop`,
 * a migration's switch-over, a mirror's switch) does not count, and a resume restarts the count, because a
 * guest cannot beat while it is not running.
 *
 * Every bound is explicit: bytes are only counted (newlines), never buffered.
 */
import net from 'node:net';
import type { QmpClient, QmpEvent } from './qmp.js';
import type { DriverLog } from './log.js';
import { describeError } from '../util/errors.js';

/** How often the silence is measured: a tenth of a second-scale timeout is plenty. */
const CHECK_INTERVAL_MS = 250;

export interface HeartbeatOptions {
  socketPath: string;
  qmp: QmpClient;
  timeoutMs: number;
  vm: string;
  log: DriverLog;
  /** Called once, when the guest is found hung, with how long it has been silent while running. */
  onHung: (silentMs: number) => void;
  /** The clock (milliseconds, monotonic); tests of the rule pass their own. */
  now?: () => number;
}

/** The silence rule, apart from sockets and timers. Pure given its inputs. */
export class HeartbeatRule {
  private beats = 0;
  private running: boolean;
  /** Since when the guest has had the chance to beat and has not: its last beat or its last resume. */
  private quietSince: number;

  constructor(
    private readonly timeoutMs: number,
    now: number,
    running: boolean,
  ) {
    this.running = running;
    this.quietSince = now;
  }

  get beatCount(): number {
    return this.beats;
  }

  beat(now: number): void {
    this.beats++;
    this.quietSince = now;
  }

  /** The guest ran on (`RESUME`) or stopped (`STOP`). */
  runState(running: boolean, now: number): void {
    if (running && !this.running) this.quietSince = now;
    this.running = running;
  }

  /** How long the guest has been silent while running, if that makes it hung; null otherwise. */
  hungFor(now: number): number | null {
    if (this.beats === 0 || !this.running) return null;
    const silent = now - this.quietSince;
    return silent >= this.timeoutMs ? silent : null;
  }
}

export class GuestHeartbeat {
  private socket: net.Socket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(
    private readonly opts: HeartbeatOptions,
    private readonly rule: HeartbeatRule,
    private readonly now: () => number,
  ) {}

  /**
   * Starts watching. QEMU creates the chardev's socket before it answers QMP, so it is there to connect to;
   * a failure to connect is logged and leaves the guest unwatched (a heartbeat must never kill a VM for our
   * own fault).
   */
  static async watch(opts: HeartbeatOptions): Promise<GuestHeartbeat> {
    const now = opts.now ?? (() => performance.now());
    const status = (await opts.qmp.execute<{ running?: unknown }>('query-status')).running === true;
    const hb = new GuestHeartbeat(opts, new HeartbeatRule(opts.timeoutMs, now(), status), now);
    opts.qmp.onEvent((e) => hb.onQmpEvent(e));
    hb.connect();
    hb.timer = setInterval(() => hb.check(), CHECK_INTERVAL_MS).unref();
    return hb;
  }

  /** Beats seen so far (for status and tests). */
  get beats(): number {
    return this.rule.beatCount;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.socket?.destroy();
    this.socket = null;
  }

  private connect(): void {
    const socket = net.connect(this.opts.socketPath);
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      // One beat per line; several lines in one chunk are one moment, so one beat is enough.
      if (chunk.includes(0x0a)) this.rule.beat(this.now());
    });
    socket.on('error', (e) => {
      if (!this.closed) this.opts.log.warn(`guest heartbeat of VM ${this.opts.vm}: ${describeError(e)}; the guest is not watched`, { vm: this.opts.vm });
    });
    // QEMU gone, or the socket lost: the exit (or nothing) is the news, not a hang.
    socket.on('close', () => this.close());
  }

  private onQmpEvent(e: QmpEvent): void {
    if (e.event === 'STOP') this.rule.runState(false, this.now());
    else if (e.event === 'RESUME') this.rule.runState(true, this.now());
  }

  private check(): void {
    if (this.closed) return;
    const silent = this.rule.hungFor(this.now());
    if (silent === null) return;
    this.close();
    this.opts.onHung(silent);
  }
}
