/**
 * Runs VMs as QEMU processes and knows, for each, when and why it ended.
 *
 * Contract:
 * - `start` resolves only when QEMU runs and answers QMP (`query-status`); otherwise it rejects with
 *   `VM_START_FAILED` carrying QEMU's stderr, and no process is left behind;
 * - every process started is tracked until it has exited; `stopAll` ends them all, and a Node exit hook
 *   SIGKILLs any still running (see `qemu-process.ts`); `reapStale` covers a lockstepd that was SIGKILLed;
 * - `VmInstance.exited` resolves exactly once, with the cause (see `exit-cause.ts`), never rejects;
 * - `stop` escalates, each step bounded: ACPI power button, QMP `quit`, SIGTERM, SIGKILL.
 *
 * Network namespaces: `nsenter --net=… qemu-system-x86_64 …` execs QEMU in place, so the pid we hold is
 * QEMU's own and signals reach it directly. The QMP socket is a file, reachable from any namespace.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { inNetns, missingProgram } from '../util/exec.js';
import { guestNiceIncrement } from '../platform/priority.js';
import { resolveAccel as resolveAccelDefault, type AccelVerdict } from './accel.js';
import { qemuArgs, type Accel } from './command-line.js';
import { exitCause, type VmExitCause } from './exit-cause.js';
import { GuestHeartbeat } from './guest-heartbeat.js';
import { silentLog, type DriverLog } from './log.js';
import { findProgram, sleep } from '../util/proc.js';
import { QemuProcess } from './qemu-process.js';
import { QmpClient, type QmpEvent, type QmpEventListener } from './qmp.js';
import { reapStale as reapStaleUnder } from './reap.js';
import { isQemuOf, recordedPids, runPaths, type InstanceRecord, type RunPaths } from './run-dir.js';
import { parseVmSpec, type AccelRequest, type VmSpec } from './vm-spec.js';

export { reapStale } from './reap.js';
export type { VmExitCause } from './exit-cause.js';

export interface VmExit {
  cause: VmExitCause;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** `reason` of QEMU's SHUTDOWN event, when it sent one (e.g. 'guest-shutdown', 'host-qmp-quit'). */
  shutdownReason: string | null;
  /** The last bytes QEMU wrote to stderr/stdout. */
  stderrTail: string;
}

export interface VmSupervisorOptions {
  /** Where run directories go (`<runRoot>/<vm name>`) when `start` is not given one. */
  runRoot?: string;
  /** Default `qemu-system-x86_64` from PATH. */
  qemuBinary?: string;
  log?: DriverLog;
  /** Bound on QEMU opening its QMP socket and answering; TCG on a loaded 2-core host starts in < 1 s. */
  qmpConnectTimeoutMs?: number;
  /** How `accel: 'auto'` is resolved (tests and the daemon may inject a cached verdict). */
  resolveAccel?: (requested: AccelRequest) => Promise<AccelVerdict>;
  /**
   * Have the kernel kill each QEMU when this process dies (default true). Only tests turn it off, to make
   * the orphan that `reapStale` exists for.
   */
  dieWithParent?: boolean;
}

export interface StartOptions {
  /** The VM's run directory; default `<runRoot>/<name>`. */
  runDir?: string;
  /** Run QEMU inside this network namespace (its taps are created there). */
  netns?: string;
  /** Use this accelerator instead of resolving `spec.accel`. */
  accel?: Accel;
  /** Start with vCPUs stopped (`-S`) until QMP `cont`. */
  paused?: boolean;
  /** Start as a live migration's destination (`-incoming defer`; see `migration.ts`). */
  incoming?: boolean;
}

export interface StopOptions {
  /** How long the guest gets to power off after the ACPI power button; 0 skips it. */
  gracefulMs?: number;
  /** After QMP `quit`. */
  quitMs?: number;
  /** After SIGTERM. */
  termMs?: number;
  /** After SIGKILL; past this the process is stuck in the kernel and `stop` throws VM_STOP_FAILED. */
  killMs?: number;
}

export const DEFAULT_RUN_ROOT = '/run/lockstep/vms';
const QEMU = 'qemu-system-x86_64';
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_MAX = 107;
const QMP_RETRY_MS = 50;
const QMP_ATTEMPT_MAX_MS = 5_000;
/** After a failed start: how long QEMU gets to exit on its own (its stderr then says why) before SIGKILL. */
const FAILED_START_EXIT_WAIT_MS = 3_000;
const KILL_WAIT_MS = 5_000;
/** After QEMU exits: how long QMP may still deliver what QEMU wrote last (the SHUTDOWN event). */
const QMP_DRAIN_MS = 1_000;
const STATUS_TIMEOUT_MS = 10_000;

export class VmSupervisor {
  private readonly instances = new Map<string, VmInstance>();
  private readonly starting = new Set<string>();
  /** Every process spawned and not yet exited, including those still starting. */
  private readonly processes = new Set<QemuProcess>();
  private readonly runRoot: string;
  private readonly qemuBinary: string;
  private readonly log: DriverLog;
  private readonly qmpConnectTimeoutMs: number;
  private readonly resolveAccel: (requested: AccelRequest) => Promise<AccelVerdict>;
  private readonly dieWithParent: boolean;

  constructor(opts: VmSupervisorOptions = {}) {
    this.runRoot = opts.runRoot ?? DEFAULT_RUN_ROOT;
    this.qemuBinary = opts.qemuBinary ?? QEMU;
    this.log = opts.log ?? silentLog;
    this.qmpConnectTimeoutMs = opts.qmpConnectTimeoutMs ?? 15_000;
    this.resolveAccel = opts.resolveAccel ?? ((requested) => resolveAccelDefault(requested, { log: this.log }));
    this.dieWithParent = opts.dieWithParent ?? true;
  }

  /** The VMs running now (started and not yet exited). */
  get running(): VmInstance[] {
    return [...this.instances.values()];
  }

  get(name: string): VmInstance | undefined {
    return this.instances.get(name);
  }

  /**
   * Starts `spec` (validated again here: TypeScript types do not check ranges). Throws `INVALID_SPEC`,
   * `VM_ALREADY_EXISTS` (tracked here, or a live QEMU recorded in the run directory), `MISSING_PREREQUISITE`,
   * `KVM_UNAVAILABLE`, or `VM_START_FAILED` with QEMU's stderr.
   */
  async start(specInput: VmSpec, opts: StartOptions = {}): Promise<VmInstance> {
    const spec = parseVmSpec(specInput);
    if (this.instances.has(spec.name) || this.starting.has(spec.name)) {
      throw new LockstepError('VM_ALREADY_EXISTS', `VM '${spec.name}' is already running under this supervisor`, { vm: spec.name });
    }
    this.starting.add(spec.name);
    try {
      return await this.startChecked(spec, opts);
    } finally {
      this.starting.delete(spec.name);
    }
  }

  /** Stops every VM (each as `VmInstance.stop`) and SIGKILLs any still starting. Throws the first failure
   * after trying them all. */
  async stopAll(opts: StopOptions = {}): Promise<VmExit[]> {
    const owned = new Set([...this.instances.values()].map((i) => i.pid));
    const orphans = [...this.processes].filter((p) => !owned.has(p.pid));
    const results = await Promise.allSettled([
      ...[...this.instances.values()].map((i) => i.stop(opts)),
      ...orphans.map(async (p) => {
        p.signal('SIGKILL');
        await p.exitWithin(KILL_WAIT_MS);
      }),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return results.flatMap((r) => (r.status === 'fulfilled' && r.value ? [r.value] : []));
  }

  /** `reapStale` over this supervisor's run root, sparing the QEMUs it runs itself. */
  reapStale(runRoot: string = this.runRoot): Promise<number[]> {
    return reapStaleUnder(runRoot, { log: this.log, exclude: new Set([...this.processes].map((p) => p.pid)) });
  }

  private async startChecked(spec: VmSpec, opts: StartOptions): Promise<VmInstance> {
    const paths = runPaths(opts.runDir ?? path.join(this.runRoot, spec.name));
    if (Buffer.byteLength(paths.qmpSocket) > UNIX_SOCKET_PATH_MAX) {
      throw new LockstepError('INVALID_ARGUMENT', `run directory ${paths.dir} is too long for a unix socket path (${UNIX_SOCKET_PATH_MAX} bytes)`, {
        runDir: paths.dir,
      });
    }
    const accel = opts.accel ?? (await this.resolveAccel(spec.accel)).accel;
    const qemu = await findProgram(this.qemuBinary);
    if (qemu === undefined) throw missingProgram(QEMU);
    let cmd = qemu;
    let prefix: string[] = [];
    if (opts.netns !== undefined) {
      if ((await findProgram('nsenter')) === undefined) throw missingProgram('nsenter');
      [cmd, prefix] = inNetns(opts.netns, qemu);
    }
    // The guest runs at the nice lockstepd was started with, below the daemon's own (platform/priority.ts):
    // its vCPUs must not delay the heartbeats that keep it protected. `nice` execs in place, like nsenter.
    const increment = guestNiceIncrement();
    if (increment > 0) [cmd, prefix] = ['nice', ['-n', String(increment), '--', cmd, ...prefix]];
    // QEMU must not outlive this process however it ends (SIGKILL runs no exit hook): a VM running on after
    // its daemon died would run without a fence while the peer takes it over. The kernel's parent-death
    // signal survives the exec of nsenter and QEMU.
    if (this.dieWithParent) {
      if ((await findProgram('setpriv')) === undefined) throw missingProgram('setpriv');
      [cmd, prefix] = ['setpriv', ['--pdeathsig', 'SIGKILL', '--', cmd, ...prefix]];
    }
    await this.prepareRunDir(spec.name, paths);

    const args = qemuArgs(spec, {
      accel,
      qmpSocket: paths.qmpSocket,
      serialLog: paths.serialLog,
      heartbeatSocket: paths.heartbeatSocket,
      pidFile: paths.pidFile,
      paused: opts.paused ?? false,
      incoming: opts.incoming ?? false,
    });
    const proc = await QemuProcess.start(cmd, [...prefix, ...args], path.basename(cmd));
    this.processes.add(proc);
    void proc.exit.then(() => this.processes.delete(proc));
    this.log.info(`starting VM ${spec.name}`, { pid: proc.pid, accel, netns: opts.netns ?? null, runDir: paths.dir });

    let qmp: QmpClient | undefined;
    let lastShutdown: QmpEvent | undefined;
    try {
      const record: InstanceRecord = { name: spec.name, pid: proc.pid, qemu, argv: [qemu, ...args], netns: opts.netns ?? null, startedAt: new Date().toISOString() };
      await writeFile(paths.instanceRecord, JSON.stringify(record, null, 2) + '\n');
      // Listen from the first byte: the SHUTDOWN event is how we learn why QEMU exits.
      qmp = await this.connectQmp(proc, paths, spec.name, (e) => {
        if (e.event === 'SHUTDOWN') lastShutdown = e;
      });
      // QEMU greets from its monitor thread before the machine is built; commands run in the main loop,
      // after. An answer means every device and backend (disks, taps) was set up.
      await qmp.execute('query-status', undefined, { timeoutMs: STATUS_TIMEOUT_MS });
    } catch (e) {
      void qmp?.close();
      throw await this.failedStart(spec.name, proc, paths, e);
    }
    const instance = new VmInstance(spec, proc, qmp, paths, accel, opts.netns ?? null, () => lastShutdown, this.log);
    if (spec.heartbeat) {
      // QEMU going away right now is its exit's news; the VM simply runs unwatched otherwise.
      await instance.watchHeartbeat(spec.heartbeat.timeoutMs).catch((e: unknown) => {
        this.log.warn(`VM ${spec.name}: cannot watch the guest heartbeat: ${describeError(e)}`, { pid: proc.pid });
      });
    }
    this.instances.set(spec.name, instance);
    void instance.exited.then(() => {
      if (this.instances.get(spec.name) === instance) this.instances.delete(spec.name);
    });
    return instance;
  }

  /** Refuses to start over a live QEMU of the same run directory (a second copy of a VM is the one thing an
   * availability product must never do), then clears what an earlier run left. */
  private async prepareRunDir(name: string, paths: RunPaths): Promise<void> {
    // 0700: whoever can reach the QMP socket controls the VM.
    await mkdir(paths.dir, { recursive: true, mode: 0o700 });
    for (const pid of await recordedPids(paths)) {
      if (await isQemuOf(pid, paths)) {
        throw new LockstepError('VM_ALREADY_EXISTS', `a QEMU for VM '${name}' still runs (pid ${pid}, ${paths.dir}); reap stale QEMUs first`, {
          vm: name,
          pid,
          runDir: paths.dir,
        });
      }
    }
    await Promise.all([paths.qmpSocket, paths.pidFile, paths.instanceRecord, paths.stderrLog].map((p) => rm(p, { force: true })));
  }

  /** Connects to QMP, retrying while QEMU creates its socket; gives up when QEMU exits or at the deadline. */
  private async connectQmp(proc: QemuProcess, paths: RunPaths, name: string, onEvent: QmpEventListener): Promise<QmpClient> {
    const deadline = Date.now() + this.qmpConnectTimeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline && !proc.hasExited) {
      try {
        const timeoutMs = Math.max(1, Math.min(QMP_ATTEMPT_MAX_MS, deadline - Date.now()));
        return await QmpClient.connect(paths.qmpSocket, { timeoutMs, onEvent });
      } catch (e) {
        lastError = e;
        // Not there yet (ENOENT/ECONNREFUSED) or QEMU went away while we connected: retry or notice the exit.
        if (!isLockstepError(e, 'QMP_DISCONNECTED')) throw e;
      }
      await Promise.race([sleep(QMP_RETRY_MS), proc.exit]);
    }
    if (proc.hasExited) throw lastError ?? new Error('QEMU exited');
    throw new LockstepError('VM_START_FAILED', `QEMU for VM '${name}' did not answer on QMP within ${this.qmpConnectTimeoutMs} ms`, {
      vm: name,
      socketPath: paths.qmpSocket,
      cause: describeError(lastError),
    });
  }

  /** Makes sure the process is gone, and builds the error that says why it did not start. */
  private async failedStart(name: string, proc: QemuProcess, paths: RunPaths, cause: unknown): Promise<LockstepError> {
    if (!(await proc.exitWithin(FAILED_START_EXIT_WAIT_MS))) {
      proc.signal('SIGKILL');
      await proc.exitWithin(KILL_WAIT_MS);
    }
    const stderr = proc.stderrTail();
    await writeFile(paths.stderrLog, stderr).catch(() => undefined);
    await Promise.all([paths.qmpSocket, paths.pidFile, paths.instanceRecord].map((p) => rm(p, { force: true })));
    const exit = proc.hasExited ? await proc.exit : { code: null, signal: null };
    const said = lastLines(stderr);
    const why = said !== '' ? said : isLockstepError(cause) ? cause.message : describeError(cause);
    this.log.warn(`VM ${name} failed to start`, { why });
    return new LockstepError('VM_START_FAILED', `QEMU could not start VM '${name}': ${why}`, {
      vm: name,
      code: exit.code,
      signal: exit.signal,
      stderrTail: stderr,
      runDir: paths.dir,
    }, { cause });
  }
}

/** A running VM. Made by `VmSupervisor.start`; `qmp` is its only QMP connection (QEMU serves one client per
 * socket), so every driver of this VM goes through it. */
export class VmInstance {
  readonly exited: Promise<VmExit>;
  private stopping: Promise<VmExit> | undefined;
  private stoppedBySupervisor = false;
  private killedAsHung = false;
  private heartbeat: GuestHeartbeat | null = null;

  constructor(
    readonly spec: VmSpec,
    private readonly proc: QemuProcess,
    readonly qmp: QmpClient,
    readonly paths: RunPaths,
    readonly accel: Accel,
    readonly netns: string | null,
    private readonly lastShutdown: () => QmpEvent | undefined,
    private readonly log: DriverLog,
  ) {
    this.exited = this.watchExit();
  }

  get name(): string {
    return this.spec.name;
  }

  get pid(): number {
    return this.proc.pid;
  }

  get hasExited(): boolean {
    return this.proc.hasExited;
  }

  /** Heartbeats the guest has sent (0 without a heartbeat, or before its agent runs). */
  get heartbeats(): number {
    return this.heartbeat?.beats ?? 0;
  }

  /** Watches the guest heartbeat (vm-spec.ts); a hung guest's QEMU is killed, and exits as `guest-hung`. */
  async watchHeartbeat(timeoutMs: number): Promise<void> {
    this.heartbeat = await GuestHeartbeat.watch({
      socketPath: this.paths.heartbeatSocket,
      qmp: this.qmp,
      timeoutMs,
      vm: this.name,
      log: this.log,
      onHung: (silentMs) => {
        if (this.proc.hasExited || this.stoppedBySupervisor) return;
        this.log.warn(`VM ${this.name}: the guest sent no heartbeat for ${Math.round(silentMs)} ms while running: it is hung; killing its QEMU`, { pid: this.pid, silentMs });
        this.killedAsHung = true;
        this.proc.signal('SIGKILL');
      },
    });
  }

  /**
   * Stops the VM: ACPI power button (skipped if `gracefulMs` is 0), then QMP `quit`, then SIGTERM, then
   * SIGKILL, each step bounded. Concurrent calls share one stop. Resolves with the exit; an exit that had
   * already happened is returned as it was.
   */
  stop(opts: StopOptions = {}): Promise<VmExit> {
    this.stopping ??= this.escalate(opts);
    return this.stopping;
  }

  private async escalate(opts: StopOptions): Promise<VmExit> {
    if (this.proc.hasExited) return this.exited;
    this.stoppedBySupervisor = true;
    const gracefulMs = opts.gracefulMs ?? 10_000;
    const quitMs = opts.quitMs ?? 3_000;
    // Each step says whether it could act; one that could not (QMP already gone) is not waited for.
    const steps: { name: string; act: () => boolean; waitMs: number }[] = [
      { name: 'ACPI power button', act: () => this.tryQmp('system_powerdown', gracefulMs), waitMs: gracefulMs },
      { name: 'QMP quit', act: () => this.tryQmp('quit', quitMs), waitMs: quitMs },
      { name: 'SIGTERM', act: () => this.proc.signal('SIGTERM'), waitMs: opts.termMs ?? 3_000 },
      { name: 'SIGKILL', act: () => this.proc.signal('SIGKILL'), waitMs: opts.killMs ?? KILL_WAIT_MS },
    ];
    for (const step of steps) {
      if (step.waitMs <= 0) continue;
      this.log.info(`stopping VM ${this.name}: ${step.name}`, { pid: this.pid, waitMs: step.waitMs });
      if (!step.act()) continue;
      if (await this.proc.exitWithin(step.waitMs)) return this.exited;
    }
    // A signal to a process already reaped does nothing: it exited between two steps.
    if (this.proc.hasExited) return this.exited;
    throw new LockstepError('VM_STOP_FAILED', `QEMU of VM '${this.name}' (pid ${this.pid}) did not exit after SIGKILL`, { vm: this.name, pid: this.pid });
  }

  /** Sends a command whose answer does not matter: the process exiting is what the caller waits for. */
  private tryQmp(command: string, timeoutMs: number): boolean {
    if (!this.qmp.isOpen) return false;
    this.qmp.execute(command, undefined, { timeoutMs: Math.max(1, timeoutMs) }).catch(() => undefined);
    return true;
  }

  private async watchExit(): Promise<VmExit> {
    const { code, signal } = await this.proc.exit;
    this.heartbeat?.close();
    // QEMU writes the SHUTDOWN event just before it exits; the socket may deliver it after the exit status.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.qmp.closed, new Promise((resolve) => (timer = setTimeout(resolve, QMP_DRAIN_MS)))]);
    clearTimeout(timer);
    await this.qmp.close();
    const shutdown = this.lastShutdown();
    const reason = typeof shutdown?.data['reason'] === 'string' ? shutdown.data['reason'] : null;
    const exit: VmExit = {
      cause: exitCause({
        stoppedBySupervisor: this.stoppedBySupervisor,
        killedAsHung: this.killedAsHung,
        shutdown: reason !== null ? { reason, guest: shutdown?.data['guest'] === true } : undefined,
        code,
        signal,
      }),
      code,
      signal,
      shutdownReason: reason,
      stderrTail: this.proc.stderrTail(),
    };
    // Keep stderr and the serial log for post-mortems; the pid records now describe nothing. Failing to tidy
    // (run directory removed under us) must not turn an exit into a rejection.
    try {
      await writeFile(this.paths.stderrLog, exit.stderrTail);
      await Promise.all([this.paths.qmpSocket, this.paths.pidFile, this.paths.instanceRecord].map((p) => rm(p, { force: true })));
    } catch (e) {
      this.log.warn(`could not tidy the run directory of VM ${this.name}`, { runDir: this.paths.dir, error: describeError(e) });
    }
    this.log.info(`VM ${this.name} exited: ${exit.cause}`, { pid: this.pid, code, signal, shutdownReason: reason });
    return exit;
  }
}

/** QEMU's last messages, without the `-msg timestamp=on` prefix and program name, for an error message. */
function lastLines(text: string, n = 3): string {
  return text
    .trim()
    .split('\n')
    .slice(-n)
    .map((l) => l.replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z /, '').replace(/^qemu-system-x86_64: /, '').trim())
    .filter((l) => l !== '')
    .join(' / ');
}
