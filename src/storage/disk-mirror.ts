/**
 * Mirroring one VM disk into the peer's copy (HA protection), driven over the VM's QMP connection, with the
 * change tracking that lets a reconnected copy be resynced incrementally.
 *
 * The owner's QEMU writes every guest write to its own disk and, synchronously, to the peer's copy: a
 * `blockdev-mirror` in `write-blocking` copy mode into an NBD block node whose server is the peer's
 * `qemu-nbd` (behind a unix socket that the replication stream provides). The default `background` mode
 * acknowledges writes before the copy has them and lost acknowledged records in the lab: never used here.
 *
 * Change tracking: one non-persistent dirty bitmap (`PEER_BITMAP`) on the disk's format node, added at
 * `attach` while QEMU is still paused (`-S`), so no guest write escapes it. It holds every write since the
 * peer's copy was last known identical to ours. It is cleared at one moment only: at the switch to a
 * synchronous mirror, with the guest paused (QEMU drains all I/O on `stop`) and the mirror in sync. So it is
 * never cleared while a write is on its way to the peer: a write that failed on the peer at the moment the
 * link broke reached our disk after the clear, and is in the bitmap (the format node sets the bit itself,
 * below the mirror's filter, whatever the target said). That is why one bitmap is enough here; a design
 * that cleared it while mirroring (to bound resyncs after a long healthy run) would need two, cleared
 * alternately (lab-facts.md).
 *
 * Modes of `start`:
 * - `full`: the peer's copy is unknown. `blockdev-mirror sync=full`, wait for BLOCK_JOB_READY, then with the
 *   guest paused check the job is in sync and clear the bitmap.
 * - `incremental`: the peer's copy is an older state of ours, missing exactly what the bitmap says (it was
 *   identical at the last switch, and nothing else has written to it). QEMU 7.2's `blockdev-mirror` cannot
 *   start from a bitmap (its schema lists sync modes `incremental` and `bitmap`, shared with backup, but it
 *   has no `bitmap` argument and refuses them), so: `blockdev-backup sync=incremental` passes with the
 *   bitmap (`bitmap-mode=on-success`: a pass that fails gives its bits back; writes during a pass are kept
 *   for the next) while what is left is large; then, with the guest paused, a last pass, a write-blocking
 *   mirror with `sync=none`, a check that the bitmap is empty, and `cont`.
 *   Known limit of 7.2: a backup pass puts a copy-before-write filter in the guest's write path whose error
 *   mode is `break-guest-write` and cannot be changed through `blockdev-backup` (nor by `blockdev-reopen`).
 *   If the peer goes away during a pass, a guest write to a block the pass has not copied yet fails with
 *   EIO. Outside passes (full sync, synchronous mirroring) a lost peer never fails a guest write.
 *
 * Jobs use `auto-finalize` and `auto-dismiss`: a failure's message arrives in BLOCK_JOB_COMPLETED's `error`,
 * and a concluded job left for us to dismiss would hold its id (and, for the mirror, the NBD node) if the
 * daemon were not there to do it.
 *
 * When the peer breaks after `ready`, QEMU fails the mirror job (`on-target-error=report`; the guest's own
 * write already succeeded on our disk) and the guest carries on alone; `failed` is emitted and the NBD node
 * removed. A later `start({ mode: 'incremental' })` on a reconnected copy resyncs only the bitmap's blocks.
 *
 * `stop()` cancels the job — without `force`, so that a READY mirror drains the guest's writes and completes
 * without pivoting: QEMU 7.2 corrupts its heap when a READY write-blocking mirror is force-cancelled with
 * guest writes in flight — and removes the NBD node. A target that hangs keeps a cancelled job waiting for
 * its in-flight requests, so past a bound `stop()` force-cancels and yanks the NBD node (QMP `yank`: QEMU shuts the
 * connection down and fails the requests waiting for an answer), and reports `MIRROR_FAILED` if QEMU still
 * does not let go. That happens in 7.2 when a request is blocked sending into a unix socket whose reader
 * has stopped (a full socket buffer): the yank does not wake it, and only the other end closing does, which
 * is the replication stream's `cut`. A later `stop()` then succeeds.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { QmpClient, QmpEvent } from '../qemu/qmp.js';
import { silentLog, type DriverLog } from '../qemu/log.js';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { readGuestIoBytes, resyncSpeed, UNLIMITED_RESYNC, type ResyncRate } from './resync-rate.js';

/** The dirty bitmap on the disk's format node: every write since the peer's copy was last identical. */
export const PEER_BITMAP = 'lockstep-peer';

const MIB = 1024 * 1024;
/** How often job progress is read while syncing: a progress bar's rate, not a load on QMP. */
const PROGRESS_INTERVAL_MS = 500;
/** A sync whose job copies nothing for this long is given up (the target hangs); the daemon may retry. */
const STALL_TIMEOUT_MS = 60_000;
/** Incremental: live passes go on while more than this is dirty; what is left is copied with the guest paused. */
const PAUSED_PASS_BYTES_MAX = 4 * MIB;
/** Incremental: a guest that dirties faster than the link copies never gets under the bound above. */
const LIVE_PASSES_MAX = 8;
/** …and after the last live pass, a paused pass of more than this would freeze the guest too long: fail. */
const PAUSED_PASS_BYTES_LIMIT = 64 * MIB;
/** Full: with the guest paused, how long the mirror may take to copy what was still in flight at READY. */
const SWITCH_SETTLE_MS = 5000;
const SWITCH_POLL_MS = 5;
/** stop(): a cancelled job ends once its in-flight requests do; past this the NBD connection is yanked. */
const CANCEL_WAIT_MS = 2000;
/** …and past this after the yank, QEMU is not letting go: reported, not waited for. */
const YANK_WAIT_MS = 3000;
const RELEASE_POLL_MS = 25;
/** Our cleanup commands are quick in QEMU; a long wait means QEMU itself is stuck. */
const CLEANUP_COMMAND_TIMEOUT_MS = 5000;

export type MirrorMode = 'full' | 'incremental';
export type MirrorState = 'idle' | 'syncing' | 'ready' | 'failed';

export interface DiskMirrorAttachOptions {
  /** The disk id: its format node's name (`vda`); the device id is the same. */
  disk: string;
  /** The VM's name, for logs. */
  vm: string;
  log?: DriverLog;
}

export interface MirrorStartOptions {
  /** Where the NBD server of the peer's copy answers. */
  socketPath: string;
  /** Its export name (the VM's name). */
  exportName: string;
  /** The replication stream this mirror runs over; named in events and logs. */
  streamId: string;
  mode: MirrorMode;
  progressIntervalMs?: number;
  stallTimeoutMs?: number;
  /** How fast the live copying may go (resync-rate.ts); unlimited when absent. */
  rate?: ResyncRate;
}

export interface MirrorProgress {
  copiedBytes: number;
  totalBytes: number;
  /** The speed limit on the copying job now, bytes per second; null: none. */
  limitBytesPerSec: number | null;
  /** Whether the guest did disk I/O of its own since the last look (then a resync yields to it). */
  guestBusy: boolean;
}

export interface MirrorReady {
  mode: MirrorMode;
  streamId: string;
  /** Bytes the sync copied: the mirror job's progress (full), the backup passes' (incremental). */
  copiedBytes: number;
  /** How long the guest was paused at the switch; 0 when it was not running. */
  pauseMs: number;
}

export interface MirrorFailure {
  streamId: string;
  reason: string;
  error: LockstepError;
}

export interface MirrorStatus {
  state: MirrorState;
  mode: MirrorMode | null;
  streamId: string | null;
  copiedBytes: number;
  totalBytes: number;
  limitBytesPerSec: number | null;
  guestBusy: boolean;
  /** What the bitmap holds: bytes an incremental resync would copy now. */
  dirtyBytes: number;
}

export interface DiskMirrorEvents {
  /** While syncing, at most every `progressIntervalMs`, when the numbers changed. */
  progress: [progress: MirrorProgress];
  ready: [ready: MirrorReady];
  /** Once per failure: a sync that failed (also thrown by `start`) or a peer lost after `ready`. */
  failed: [failure: MirrorFailure];
}

/** One block job as `query-block-jobs` describes it. */
export interface BlockJobInfo {
  id: string;
  type: string;
  offset: number;
  len: number;
  ready: boolean;
}

/** How a job ended: its BLOCK_JOB_COMPLETED (with QEMU's error if it failed) or BLOCK_JOB_CANCELLED, or the QMP connection lost. */
interface JobEnd {
  kind: 'completed' | 'cancelled' | 'lost';
  error: string | null;
  offset: number;
}

/** The job being driven. Its promises only resolve, so nothing rejects unobserved. */
interface Job {
  id: string;
  ready: Promise<number>;
  ended: Promise<JobEnd>;
  settleReady: (offset: number) => void;
  settleEnded: (end: JobEnd) => void;
  endedValue: JobEnd | null;
  /** The operation of the first BLOCK_JOB_ERROR (`read`: our disk, `write`: the peer's copy). */
  firstError: string | null;
}

/** Thrown inside `start` when `stop()` ended the run; becomes a MIRROR_FAILED that is not a failure. */
class Stopped extends Error {}

export class DiskMirror extends EventEmitter<DiskMirrorEvents> {
  readonly disk: string;
  readonly vm: string;
  private readonly nodeName: string;
  private readonly mirrorJobId: string;
  private readonly passJobPrefix: string;
  private readonly log: DriverLog;
  private state: MirrorState = 'idle';
  private mode: MirrorMode | null = null;
  private streamId: string | null = null;
  private progress: MirrorProgress = { copiedBytes: 0, totalBytes: 0, limitBytesPerSec: null, guestBusy: false };
  private rate: ResyncRate = UNLIMITED_RESYNC;
  /** The speed limit asked for the current live job (0: none), and whether the guest was busy at the last look. */
  private speed = 0;
  private guestBusy = false;
  /** Whether the current job copies while the guest runs, and so follows the rate; a paused step's does not. */
  private limited = false;
  /** Bytes copied by the incremental passes that have ended. */
  private passedBytes = 0;
  private passCount = 0;
  private job: Job | null = null;
  /** Bumped by stop(): a start() of an older run gives up at its next step. */
  private run = 0;
  private running: Promise<unknown> | null = null;
  private stopping: Promise<void> | null = null;
  /** Removing the NBD node after a peer lost after ready; the next start or stop waits for it. */
  private cleanup: Promise<void> | null = null;
  private stallReason: string | null = null;
  private releasing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly qmp: QmpClient,
    opts: DiskMirrorAttachOptions,
  ) {
    super();
    this.disk = opts.disk;
    this.vm = opts.vm;
    this.log = opts.log ?? silentLog;
    // Disk ids are at most 20 characters (vm-spec.ts) and node names at most 31: the NBD node fits.
    this.nodeName = `${opts.disk}-peer`;
    this.mirrorJobId = `${opts.disk}-mirror`;
    this.passJobPrefix = `${opts.disk}-resync-`;
  }

  /**
   * Starts tracking writes to `disk`: call it right after QEMU starts paused (`-S`), before `cont`, so the
   * bitmap sees every guest write. Throws `MIRROR_FAILED` (no such node, a bitmap already there).
   */
  static async attach(qmp: QmpClient, opts: DiskMirrorAttachOptions): Promise<DiskMirror> {
    try {
      await qmp.execute('block-dirty-bitmap-add', { node: opts.disk, name: PEER_BITMAP, persistent: false, disabled: false });
    } catch (e) {
      throw mirrorFailed(`cannot track writes to disk ${opts.disk} of VM ${opts.vm}: ${describeError(e)}`, { vm: opts.vm, disk: opts.disk }, e);
    }
    const m = new DiskMirror(qmp, opts);
    qmp.onEvent((e) => m.onEvent(e));
    void qmp.closed.then((c) => m.onQmpClosed(c.error));
    return m;
  }

  /**
   * Connects to the peer's copy and brings it in sync (see the modes above); resolves once every guest write
   * is synchronous, as `ready` is emitted. Throws `MIRROR_FAILED` (after emitting `failed`) with nothing of
   * the attempt left in QEMU, or `MIRROR_FAILED` with `fields.stopped` when `stop()` ended it.
   */
  async start(opts: MirrorStartOptions): Promise<MirrorReady> {
    assert(this.state === 'idle' || this.state === 'failed', `start() while the mirror of ${this.disk} is ${this.state}`);
    assert(this.stopping === null, `start() while the mirror of ${this.disk} is stopping`);
    const run = ++this.run;
    const attempt = this.attempt(run, opts);
    this.running = attempt.catch(() => undefined);
    return attempt;
  }

  /** Ends mirroring: no job, no NBD node. Idempotent; concurrent calls share one. Throws `MIRROR_FAILED` if QEMU does not let go. */
  stop(): Promise<void> {
    this.stopping ??= this.stopNow().finally(() => (this.stopping = null));
    return this.stopping;
  }

  /** Where the mirror is, with the bitmap's dirty bytes read from QEMU now. */
  async status(): Promise<MirrorStatus> {
    return {
      state: this.state,
      mode: this.mode,
      streamId: this.streamId,
      ...this.progress,
      dirtyBytes: await readDirtyBytes(this.qmp, this.disk),
    };
  }

  private async attempt(run: number, opts: MirrorStartOptions): Promise<MirrorReady> {
    const fields = { vm: this.vm, disk: this.disk, streamId: opts.streamId, mode: opts.mode };
    if (this.cleanup) await this.cleanup;
    this.state = 'syncing';
    this.mode = opts.mode;
    this.streamId = opts.streamId;
    this.progress = { copiedBytes: 0, totalBytes: 0, limitBytesPerSec: null, guestBusy: false };
    this.passedBytes = 0;
    this.stallReason = null;
    this.rate = opts.rate ?? UNLIMITED_RESYNC;
    this.guestBusy = false;
    this.log.info(`mirror of ${this.vm}/${this.disk}: ${opts.mode} sync to the peer's copy (stream ${opts.streamId})`, fields);
    const poller = this.pollProgress(run, opts.progressIntervalMs ?? PROGRESS_INTERVAL_MS, opts.stallTimeoutMs ?? STALL_TIMEOUT_MS);
    try {
      await this.addTarget(run, opts);
      const ready = opts.mode === 'full' ? await this.syncFull(run) : await this.syncIncremental(run);
      const result: MirrorReady = { mode: opts.mode, streamId: opts.streamId, ...ready };
      this.state = 'ready';
      this.progress = { copiedBytes: ready.copiedBytes, totalBytes: ready.copiedBytes, limitBytesPerSec: null, guestBusy: false };
      this.log.info(`mirror of ${this.vm}/${this.disk} is synchronous: ${ready.copiedBytes} bytes copied, guest paused ${ready.pauseMs.toFixed(1)} ms`, { ...fields, ...ready });
      this.emit('ready', result);
      return result;
    } catch (e) {
      if (e instanceof Stopped || run !== this.run) {
        throw mirrorFailed(`the ${opts.mode} sync of ${this.vm}/${this.disk} was stopped`, { ...fields, stopped: true });
      }
      const reason = this.stallReason ?? describeError(e);
      const error = mirrorFailed(`the ${opts.mode} sync of ${this.vm}/${this.disk} to the peer's copy failed: ${reason}`, fields, e);
      try {
        await this.release();
      } catch (releaseError) {
        this.log.warn(`mirror of ${this.vm}/${this.disk}: ${describeError(releaseError)}`, fields);
      }
      this.fail(reason, error);
      throw error;
    } finally {
      poller.stop();
    }
  }

  private async addTarget(run: number, opts: MirrorStartOptions): Promise<void> {
    try {
      await this.qmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': this.nodeName,
        server: { type: 'unix', path: opts.socketPath },
        export: opts.exportName,
        // A lost peer must fail the mirror at once, never be reconnected behind the daemon's back: a copy
        // that comes back is resynced through a new stream and a new start().
        'reconnect-delay': 0,
      });
    } catch (e) {
      throw new LockstepError('MIRROR_FAILED', `cannot open the peer's copy (export ${opts.exportName} at ${opts.socketPath}): ${describeError(e)}`, {}, { cause: e });
    }
    this.check(run);
  }

  private async syncFull(run: number): Promise<{ copiedBytes: number; pauseMs: number }> {
    const job = await this.startJob(run, this.mirrorJobId, 'blockdev-mirror', { sync: 'full' }, 'live');
    const copiedBytes = await this.untilReady(run, job);
    const pauseMs = await this.paused(run, async () => {
      // The guest waits for what is left: no limit now.
      this.limited = false;
      await this.setSpeed(job, 0);
      await this.untilInSync(run, job);
      await this.qmp.execute('block-dirty-bitmap-clear', { node: this.disk, name: PEER_BITMAP });
    });
    return { copiedBytes, pauseMs };
  }

  private async syncIncremental(run: number): Promise<{ copiedBytes: number; pauseMs: number }> {
    for (let passes = 0; ; passes++) {
      const dirty = await readDirtyBytes(this.qmp, this.disk);
      this.check(run);
      if (dirty <= PAUSED_PASS_BYTES_MAX) break;
      if (passes === LIVE_PASSES_MAX) {
        if (dirty > PAUSED_PASS_BYTES_LIMIT) {
          throw new LockstepError('MIRROR_FAILED', `the resync does not converge: ${dirty} bytes still dirty after ${passes} passes (the guest writes faster than the link copies)`, { dirtyBytes: dirty });
        }
        break;
      }
      await this.backupPass(run, 'live');
    }
    const pauseMs = await this.paused(run, async () => {
      const dirty = await readDirtyBytes(this.qmp, this.disk);
      this.check(run);
      if (dirty > 0) await this.backupPass(run, 'paused');
      const job = await this.startJob(run, this.mirrorJobId, 'blockdev-mirror', { sync: 'none' }, 'paused');
      await this.untilReady(run, job);
      // Nothing can write while the guest is paused, so the last pass left the bitmap empty. If it is not,
      // clearing it would hide blocks the copy lacks: fail instead.
      const left = await readDirtyBytes(this.qmp, this.disk);
      if (left !== 0) throw new LockstepError('MIRROR_FAILED', `${left} bytes were still dirty after the last pass, with the guest paused`, { dirtyBytes: left });
    });
    return { copiedBytes: this.passedBytes, pauseMs };
  }

  /** One `blockdev-backup sync=incremental` of the bitmap into the peer's copy, until it ends. */
  private async backupPass(run: number, guest: 'live' | 'paused'): Promise<void> {
    const job = await this.startJob(
      run,
      `${this.passJobPrefix}${++this.passCount}`,
      'blockdev-backup',
      { sync: 'incremental', bitmap: PEER_BITMAP, 'bitmap-mode': 'on-success' },
      guest,
    );
    const end = await job.ended;
    this.check(run);
    if (end.kind !== 'completed' || end.error !== null) throw this.jobEndError(job, end);
    this.passedBytes += end.offset;
    this.job = null;
  }

  /**
   * Starts a block job from our disk into the NBD node; it is watched before the command so no event is
   * missed. A job that copies while the guest runs (`live`) starts at the resync rate for the guest's load.
   */
  private async startJob(run: number, id: string, command: 'blockdev-mirror' | 'blockdev-backup', args: Record<string, unknown>, guest: 'live' | 'paused'): Promise<Job> {
    const job = newJob(id);
    this.job = job;
    this.limited = guest === 'live';
    this.speed = this.limited ? resyncSpeed(this.rate, this.guestBusy) : 0;
    await this.qmp.execute(command, {
      'job-id': id,
      device: this.disk,
      target: this.nodeName,
      ...args,
      speed: this.speed,
      ...(command === 'blockdev-mirror' ? { 'copy-mode': 'write-blocking' } : {}),
      'on-source-error': 'report',
      'on-target-error': 'report',
      'auto-finalize': true,
      'auto-dismiss': true,
    });
    this.check(run);
    return job;
  }

  /**
   * A new resync rate while running (a preference setter): a live copy under way takes it now, the next
   * runs start with it too only when the caller passes it (`MirrorStartOptions.rate`). A limit QEMU refuses
   * is logged: the next progress look sets it again.
   */
  setRate(rate: ResyncRate): void {
    this.rate = rate;
    const job = this.job;
    if (!this.limited || job === null) return;
    this.setSpeed(job, resyncSpeed(rate, this.guestBusy)).catch((e: unknown) => this.log.warn(`mirror of ${this.vm}/${this.disk}: cannot set the new resync rate: ${describeError(e)}`, { vm: this.vm, disk: this.disk }));
  }

  /** Sets the job's speed limit (0: none) unless it has it already. */
  private async setSpeed(job: Job, speed: number): Promise<void> {
    if (speed === this.speed || this.job !== job) return;
    await this.qmp.execute('block-job-set-speed', { device: job.id, speed });
    this.speed = speed;
  }

  /**
   * While a live job copies: whether the guest did I/O since the last look, and the job's speed limit set
   * to match. Returns the guest's I/O counter for the next look.
   */
  private async adjustSpeed(job: Job, lastGuestIo: number | null): Promise<number | null> {
    if (!this.limited || (this.rate.maxBytesPerSec === null && this.rate.busyBytesPerSec === null)) return null;
    const guestIo = await readGuestIoBytes(this.qmp, this.disk);
    this.guestBusy = guestIo !== null && lastGuestIo !== null && guestIo > lastGuestIo;
    // A paused step may have begun meanwhile: it has set its own limit (none).
    if (this.limited) await this.setSpeed(job, resyncSpeed(this.rate, this.guestBusy));
    return guestIo;
  }

  /** Resolves with the job's offset at BLOCK_JOB_READY; throws if it ended first. */
  private async untilReady(run: number, job: Job): Promise<number> {
    const first = await Promise.race([job.ready.then((offset) => ({ offset })), job.ended.then((end) => ({ end }))]);
    this.check(run);
    if ('end' in first) throw this.jobEndError(job, first.end);
    return first.offset;
  }

  /** With the guest paused: the mirror has copied everything (nothing in flight or left dirty) and has not failed. */
  private async untilInSync(run: number, job: Job): Promise<void> {
    const deadline = Date.now() + SWITCH_SETTLE_MS;
    for (;;) {
      const info = (await readBlockJobs(this.qmp)).find((j) => j.id === job.id);
      this.check(run);
      // QEMU emits a job's end before answering later commands: an ended job is seen here, not missed.
      if (job.endedValue) throw this.jobEndError(job, job.endedValue);
      if (job.firstError !== null) throw new LockstepError('MIRROR_FAILED', `the mirror reported a ${job.firstError} error`, { jobId: job.id });
      if (info === undefined) throw new LockstepError('MIRROR_FAILED', `the mirror job ${job.id} is gone`, { jobId: job.id });
      if (info.ready && info.offset === info.len) return;
      if (Date.now() > deadline) {
        throw new LockstepError('MIRROR_FAILED', `the mirror did not settle within ${SWITCH_SETTLE_MS} ms with the guest paused (${info.len - info.offset} bytes left)`, { jobId: job.id });
      }
      await sleep(SWITCH_POLL_MS);
    }
  }

  /**
   * Runs `step` with the guest paused, if it was running, and resumes it whatever happens; resolves with how
   * long it was paused. `stop` returns once QEMU has drained every request in flight.
   */
  private async paused(run: number, step: () => Promise<void>): Promise<number> {
    const wasRunning = await isRunning(this.qmp);
    this.check(run);
    const startedMs = performance.now();
    if (wasRunning) await this.qmp.execute('stop');
    try {
      await step();
    } catch (e) {
      if (wasRunning) {
        await this.qmp.execute('cont').catch((contError: unknown) => {
          this.log.warn(`VM ${this.vm} could not be resumed after a failed mirror switch: ${describeError(contError)}`, { vm: this.vm });
        });
      }
      throw e;
    }
    if (wasRunning) await this.qmp.execute('cont');
    return wasRunning ? performance.now() - startedMs : 0;
  }

  /** Reads the job's progress every `intervalMs` while syncing; gives the job up when it stops advancing. */
  private pollProgress(run: number, intervalMs: number, stallTimeoutMs: number): { stop: () => void } {
    let timer: NodeJS.Timeout | null = null;
    let stopped = false;
    let lastJobId: string | null = null;
    let lastOffset = 0;
    let lastAdvanceMs = Date.now();
    let lastError: string | null = null;
    let lastGuestIo: number | null = null;
    const tick = async (): Promise<void> => {
      const job = this.job;
      try {
        const info = job ? (await readBlockJobs(this.qmp)).find((j) => j.id === job.id) : undefined;
        if (stopped || run !== this.run) return;
        if (job && info) lastGuestIo = await this.adjustSpeed(job, lastGuestIo);
        if (stopped || run !== this.run) return;
        if (info) {
          if (info.id !== lastJobId || info.offset !== lastOffset) lastAdvanceMs = Date.now();
          lastJobId = info.id;
          lastOffset = info.offset;
          // Incremental: the passes that ended, plus this one (the final sync=none mirror copies nothing).
          const next: MirrorProgress = {
            copiedBytes: this.passedBytes + info.offset,
            totalBytes: this.passedBytes + info.len,
            limitBytesPerSec: this.speed === 0 ? null : this.speed,
            guestBusy: this.guestBusy,
          };
          const p = this.progress;
          if (next.copiedBytes !== p.copiedBytes || next.totalBytes !== p.totalBytes || next.limitBytesPerSec !== p.limitBytesPerSec || next.guestBusy !== p.guestBusy) {
            this.progress = next;
            this.emit('progress', next);
          }
        } else {
          lastAdvanceMs = Date.now();
        }
      } catch (e) {
        // Progress is for display; a failing read counts as no progress, which the stall bound covers.
        if (describeError(e) !== lastError) this.log.warn(`mirror of ${this.vm}/${this.disk}: cannot read job progress: ${describeError(e)}`, { vm: this.vm });
        lastError = describeError(e);
      }
      if (!stopped && job && Date.now() - lastAdvanceMs > stallTimeoutMs && this.stallReason === null) {
        // start() is waiting on this job: end its wait; its failure path cancels the job (and yanks it).
        this.stallReason = `no progress for ${stallTimeoutMs} ms (the peer's copy does not answer)`;
        job.settleEnded({ kind: 'cancelled', error: null, offset: lastOffset });
      }
      if (!stopped) timer = setTimeout(() => void tick(), intervalMs).unref();
    };
    timer = setTimeout(() => void tick(), intervalMs).unref();
    return {
      stop: () => {
        stopped = true;
        if (timer) clearTimeout(timer);
      },
    };
  }

  private async stopNow(): Promise<void> {
    // A start() under way gives up at its next step; its job is cancelled below, which ends its wait.
    this.run++;
    if (this.cleanup) await this.cleanup;
    try {
      await this.release();
      // A start() may still have been inside a command that adds a node or a job: wait for it, release again.
      if (this.running) await this.running;
      await this.release();
    } catch (e) {
      // Not mirroring any more, whatever QEMU still holds: a later stop() or start() releases it again. The
      // job stays watched, so a start() still waiting on it hears when it ends. A QEMU that does not even
      // answer in time is the same news for the caller: it did not let go.
      this.state = 'failed';
      if (isLockstepError(e, 'MIRROR_FAILED')) throw e;
      throw mirrorFailed(`QEMU did not let go of the peer's copy of ${this.vm}/${this.disk}: ${describeError(e)}`, { vm: this.vm, disk: this.disk }, e);
    }
    this.job = null;
    this.state = 'idle';
    this.mode = null;
    this.streamId = null;
    this.log.info(`mirror of ${this.vm}/${this.disk} stopped`, { vm: this.vm, disk: this.disk });
  }

  /**
   * Leaves QEMU with none of our jobs and no NBD node, from whatever state it is in (bounded). Reads QEMU's
   * own lists rather than our bookkeeping, so it also clears what a command that timed out did after all.
   */
  private release(): Promise<void> {
    // One at a time (a stop() may meet a failing start()'s), each reading QEMU's state afresh.
    const next = this.releasing.then(() => this.releaseNow());
    this.releasing = next.catch(() => undefined);
    return next;
  }

  private async releaseNow(): Promise<void> {
    // QEMU gone (or its QMP connection): nothing of ours is left in it.
    if (!this.qmp.isOpen) return;
    const ours = (await readBlockJobs(this.qmp)).filter((j) => this.isOurJob(j.id));
    for (const j of ours) {
      // A job that ended meanwhile answers "not found" or "cannot cancel": what counts is that it goes.
      // Never `force` on a READY mirror: QEMU 7.2 then tears the job down while guest writes are still
      // passing through its write-blocking filter, and corrupts its heap: SIGABRT (glibc's "corrupted
      // double-linked list") or SIGSEGV, about 1 stop in 10 with guest writes in flight
      // (test/storage/mirror-stop-stress.test.ts). Without `force` a READY mirror completes without
      // pivoting, after draining the guest's writes. On a job that is not READY, `force` changes nothing.
      await this.qmp.execute('block-job-cancel', { device: j.id, force: false }, { timeoutMs: CLEANUP_COMMAND_TIMEOUT_MS }).catch(ignoreQmpError);
    }
    if (ours.length > 0 && !(await this.untilOurJobsGone(CANCEL_WAIT_MS))) {
      this.log.warn(`mirror of ${this.vm}/${this.disk}: the peer's copy does not answer; cutting its NBD connection`, { vm: this.vm });
      // A soft-cancelled mirror waits for the copy to catch up, which a hung target never lets it do.
      for (const j of ours) {
        await this.qmp.execute('block-job-cancel', { device: j.id, force: true }, { timeoutMs: CLEANUP_COMMAND_TIMEOUT_MS }).catch(ignoreQmpError);
      }
      await this.qmp.execute('yank', { instances: [{ type: 'block-node', 'node-name': this.nodeName }] }, { timeoutMs: CLEANUP_COMMAND_TIMEOUT_MS }).catch(ignoreQmpError);
      if (!(await this.untilOurJobsGone(YANK_WAIT_MS))) {
        throw mirrorFailed(`QEMU did not let go of the peer's copy of ${this.vm}/${this.disk}: its block job is still there after cancel and yank`, { vm: this.vm, disk: this.disk });
      }
    }
    if ((await readNodeNames(this.qmp)).includes(this.nodeName)) {
      try {
        await this.qmp.execute('blockdev-del', { 'node-name': this.nodeName }, { timeoutMs: CLEANUP_COMMAND_TIMEOUT_MS });
      } catch (e) {
        throw mirrorFailed(`cannot remove the NBD node of the peer's copy of ${this.vm}/${this.disk}: ${describeError(e)}`, { vm: this.vm, disk: this.disk }, e);
      }
    }
  }

  private async untilOurJobsGone(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Bounded like the cleanup's commands: a monitor that does not answer is a job not gone yet, and the
      // caller's next step (force, yank) comes within its own bound rather than QMP's default.
      const jobs = await readBlockJobs(this.qmp, CLEANUP_COMMAND_TIMEOUT_MS).catch((e: unknown) => {
        if (isLockstepError(e, 'QMP_TIMEOUT')) return null;
        throw e;
      });
      if (jobs !== null && !jobs.some((j) => this.isOurJob(j.id))) return true;
      if (Date.now() > deadline) return false;
      await sleep(RELEASE_POLL_MS);
    }
  }

  private isOurJob(id: string): boolean {
    return id === this.mirrorJobId || id.startsWith(this.passJobPrefix);
  }

  private onEvent(e: QmpEvent): void {
    const job = this.job;
    if (!job || e.data['device'] !== job.id) return;
    switch (e.event) {
      case 'BLOCK_JOB_READY':
        job.settleReady(numberOr0(e.data['offset']));
        return;
      case 'BLOCK_JOB_ERROR':
        job.firstError ??= typeof e.data['operation'] === 'string' ? e.data['operation'] : 'unknown';
        return;
      case 'BLOCK_JOB_COMPLETED':
      case 'BLOCK_JOB_CANCELLED': {
        const error = typeof e.data['error'] === 'string' ? e.data['error'] : null;
        this.jobEnded(job, { kind: e.event === 'BLOCK_JOB_COMPLETED' ? 'completed' : 'cancelled', error, offset: numberOr0(e.data['offset']) });
        return;
      }
    }
  }

  private onQmpClosed(error: LockstepError): void {
    if (this.job) this.jobEnded(this.job, { kind: 'lost', error: error.message, offset: 0 });
  }

  private jobEnded(job: Job, end: JobEnd): void {
    job.endedValue = end;
    job.settleEnded(end);
    // While syncing, start() is waiting on this job and reports; after ready, nobody is.
    if (this.state !== 'ready' || this.stopping || job.id !== this.mirrorJobId) return;
    this.job = null;
    const reason = describeJobEnd(job, end);
    const error = mirrorFailed(`the mirror of ${this.vm}/${this.disk} to the peer's copy broke: ${reason}; the guest carries on alone and the bitmap keeps its writes`, {
      vm: this.vm,
      disk: this.disk,
      streamId: this.streamId,
    });
    // Set before `failed` is emitted, so a listener's start() waits for the node to be gone.
    this.cleanup = (end.kind === 'lost' ? Promise.resolve() : this.release())
      .catch((e) => this.log.warn(`mirror of ${this.vm}/${this.disk}: ${describeError(e)}`, { vm: this.vm }))
      .finally(() => (this.cleanup = null));
    this.fail(reason, error);
  }

  private fail(reason: string, error: LockstepError): void {
    this.state = 'failed';
    this.job = null;
    this.log.warn(error.message, { vm: this.vm, disk: this.disk, streamId: this.streamId });
    this.emit('failed', { streamId: this.streamId ?? '', reason, error });
  }

  private jobEndError(job: Job, end: JobEnd): LockstepError {
    return new LockstepError('MIRROR_FAILED', describeJobEnd(job, end), { jobId: job.id, jobError: end.error });
  }

  /** Throws `Stopped` when stop() has begun since this run started. */
  private check(run: number): void {
    if (run !== this.run) throw new Stopped();
  }
}

function describeJobEnd(job: Job, end: JobEnd): string {
  const op = job.firstError === null ? '' : ` (${job.firstError === 'write' ? 'writing the peer\'s copy' : `${job.firstError} error`})`;
  if (end.kind === 'lost') return `the QMP connection closed: ${end.error ?? ''}`;
  if (end.kind === 'cancelled') return `job ${job.id} was cancelled${op}`;
  return `job ${job.id} ended${end.error === null ? ' early' : ` with ${end.error}`}${op}`;
}

function newJob(id: string): Job {
  let settleReady!: (offset: number) => void;
  let settleEnded!: (end: JobEnd) => void;
  const ready = new Promise<number>((resolve) => (settleReady = resolve));
  const ended = new Promise<JobEnd>((resolve) => (settleEnded = resolve));
  return { id, ready, ended, settleReady, settleEnded, endedValue: null, firstError: null };
}

/** The bytes `bitmap` on node `node` marks dirty. Throws `QMP_PROTOCOL` on a malformed answer, `MIRROR_FAILED` if there is no such bitmap. */
export async function readDirtyBytes(qmp: QmpClient, node: string, bitmap: string = PEER_BITMAP): Promise<number> {
  return dirtyBytesOf(await qmp.execute('query-named-block-nodes', { flat: true }), node, bitmap);
}

/** From a `query-named-block-nodes` answer. Pure. */
export function dirtyBytesOf(reply: unknown, node: string, bitmap: string): number {
  const command = 'query-named-block-nodes';
  const entry = arrayOf(reply, command).find((n) => record(n, command)['node-name'] === node);
  if (entry === undefined) throw mirrorFailed(`no block node ${node}`, { node });
  const bitmaps = record(entry, command)['dirty-bitmaps'] ?? [];
  const found = arrayOf(bitmaps, command).find((b) => record(b, command)['name'] === bitmap);
  if (found === undefined) throw mirrorFailed(`node ${node} has no dirty bitmap ${bitmap}`, { node, bitmap });
  return byteCount(record(found, command)['count'], command, 'dirty-bitmaps[].count');
}

/** From a `query-block-jobs` answer. Pure. */
export function parseBlockJobs(reply: unknown): BlockJobInfo[] {
  const command = 'query-block-jobs';
  return arrayOf(reply, command).map((j) => {
    const o = record(j, command);
    const id = o['device'];
    const type = o['type'];
    if (typeof id !== 'string' || typeof type !== 'string' || typeof o['ready'] !== 'boolean') throw malformed(command, 'a job without device, type or ready');
    return { id, type, offset: byteCount(o['offset'], command, 'offset'), len: byteCount(o['len'], command, 'len'), ready: o['ready'] };
  });
}

/** From a `query-named-block-nodes` answer. Pure. */
export function parseNodeNames(reply: unknown): string[] {
  const command = 'query-named-block-nodes';
  return arrayOf(reply, command).map((n) => {
    const name = record(n, command)['node-name'];
    if (typeof name !== 'string') throw malformed(command, 'a node without node-name');
    return name;
  });
}

async function readBlockJobs(qmp: QmpClient, timeoutMs?: number): Promise<BlockJobInfo[]> {
  return parseBlockJobs(await qmp.execute('query-block-jobs', undefined, timeoutMs === undefined ? undefined : { timeoutMs }));
}

async function readNodeNames(qmp: QmpClient): Promise<string[]> {
  return parseNodeNames(await qmp.execute('query-named-block-nodes', { flat: true }));
}

async function isRunning(qmp: QmpClient): Promise<boolean> {
  const running = record(await qmp.execute('query-status'), 'query-status')['running'];
  if (typeof running !== 'boolean') throw malformed('query-status', 'no boolean running');
  return running;
}

function arrayOf(v: unknown, command: string): unknown[] {
  if (!Array.isArray(v)) throw malformed(command, 'not a list');
  return v;
}

function record(v: unknown, command: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw malformed(command, 'an entry that is not an object');
  return v as Record<string, unknown>;
}

function byteCount(v: unknown, command: string, field: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw malformed(command, `${field} is not a byte count`);
  return v;
}

function numberOr0(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function malformed(command: string, what: string): LockstepError {
  return new LockstepError('QMP_PROTOCOL', `QEMU's answer to ${command} does not have the expected shape: ${what}`, { command });
}

function mirrorFailed(message: string, fields: Record<string, unknown>, cause?: unknown): LockstepError {
  return new LockstepError('MIRROR_FAILED', message, fields, cause === undefined ? undefined : { cause });
}

function ignoreQmpError(e: unknown): void {
  if (!isLockstepError(e, 'QMP_ERROR')) throw e;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
