/**
 * The primary side of one FT epoch: pause the guest, take its RAM and device state, let it run again, then
 * work out what changed. The guest's pause is only what must happen while it is stopped:
 *
 *   stop → [RAM copy ‖ xen-save-devices-state] → cont → diff, read the device state → Checkpoint
 *
 * The RAM copy (libuv threads) and QEMU's device-state save (QEMU's main loop, into a file in the VM's run
 * directory) run at the same time, so the pause is about the longer of the two, not their sum. Finding the
 * changed pages and reading the device-state file back happen after `cont`, while the guest runs.
 *
 * `xen-save-devices-state {live: false}` writes every device's state and no RAM (its name is historical: Xen
 * keeps RAM itself, and so do we). Other RAM blocks than the main RAM (ROMs) are not carried: both ends load
 * the same ROM files; a device with guest-writable RAM of its own (VGA's vram) would not be, so FT VMs have
 * none (`-nodefaults -display none`).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import type { QmpClient } from '../qemu/qmp.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import { CopyCompareTracker, type PageRun, type RamTracker } from './ram-tracker.js';

/** What the engine needs of a running VM: a `VmInstance` has it. */
export interface CheckpointedVm {
  readonly spec: VmSpec;
  readonly qmp: QmpClient;
  readonly paths: { readonly dir: string };
}

export interface CheckpointTimings {
  /** From sending `stop` to `cont` answered: the guest ran at neither end of it, so this bounds the pause. */
  pauseMs: number;
  stopMs: number;
  /** The RAM copy, inside the pause. */
  ramCopyMs: number;
  /** `xen-save-devices-state`, inside the pause, at the same time as the RAM copy. */
  deviceSaveMs: number;
  contMs: number;
  /** After `cont`: finding the changed pages. */
  diffMs: number;
  /** After `cont`: reading the device-state file QEMU wrote. */
  deviceReadMs: number;
}

/** One epoch's checkpoint: what the peer needs to hold the guest as it was at the pause. */
export interface Checkpoint {
  vm: string;
  /** 1, 2, 3…: one more than the last checkpoint this engine produced. */
  epoch: number;
  /** Every page of RAM (the first checkpoint, or a re-seed): the peer replaces its image. */
  full: boolean;
  pageBytes: number;
  ramBytes: number;
  /** The pages that changed since the previous checkpoint (all of them if `full`): views, see `release`. */
  runs: readonly PageRun[];
  pageCount: number;
  /** QEMU's device state (its migration stream format, without RAM). */
  deviceState: Buffer;
  timings: CheckpointTimings;
  /** The page data may be overwritten from now on: call once they were written out (the sender does). */
  release(): void;
}

/** QEMU's device state for a small VM is ~13 KB; a bound keeps a misbehaving QEMU from filling memory. */
export const DEVICE_STATE_BYTES_MAX = 8 * 1024 * 1024;
const QMP_TIMEOUT_MS = 10_000;
const DEVICE_STATE_FILE = 'ft-device-state.bin';

export class CheckpointEngine {
  private nextEpoch: number;

  constructor(
    private readonly vm: CheckpointedVm,
    private readonly tracker: RamTracker,
    opts: { firstEpoch?: number } = {},
  ) {
    this.nextEpoch = opts.firstEpoch ?? 1;
  }

  /**
   * An engine over a VM whose RAM is in a shared file (`spec.memoryBackend`), with the copy-and-compare
   * tracker. Throws `CHECKPOINT_CAPTURE` if the VM has no RAM file or it cannot be read.
   */
  static async open(vm: CheckpointedVm, opts: { firstEpoch?: number } = {}): Promise<CheckpointEngine> {
    const backend = vm.spec.memoryBackend;
    if (backend === undefined) {
      throw new LockstepError('CHECKPOINT_CAPTURE', `VM '${vm.spec.name}' has no RAM file (memoryBackend): its RAM cannot be checkpointed`, { vm: vm.spec.name });
    }
    return new CheckpointEngine(vm, await CopyCompareTracker.open(backend.path, vm.spec.memoryMiB * 1024 * 1024), opts);
  }

  get deviceStatePath(): string {
    return path.join(this.vm.paths.dir, DEVICE_STATE_FILE);
  }

  /** The epoch the next checkpoint will carry. */
  get epoch(): number {
    return this.nextEpoch;
  }

  /** The next checkpoint is a full image (the peer's store is new or lost an epoch). */
  requestFull(): void {
    this.tracker.requestFull();
  }

  /**
   * Takes the next checkpoint. Throws `CHECKPOINT_CAPTURE` (QEMU refused a command, RAM or the device state
   * could not be read); the guest is let run again whenever it was stopped, and the epoch is not used up:
   * the next checkpoint is taken against the last good one.
   *
   * `atPause(epoch)` runs while the guest is paused, beside the RAM copy and the device save, and `cont`
   * waits for it: what must happen at the epoch's boundary (the FT pair seals the output gate and the disk
   * there). Its error is thrown as it is, after `cont`.
   */
  async checkpoint(opts: { atPause?: (epoch: number) => Promise<void> } = {}): Promise<Checkpoint> {
    const qmp = this.vm.qmp;
    const name = this.vm.spec.name;
    const t0 = performance.now();
    let stopped = false;
    let tStop = t0;
    let ramCopyMs = 0;
    let deviceSaveMs = 0;
    let tSaved = t0;
    let atPauseError: unknown;
    try {
      await qmp.execute('stop', undefined, { timeoutMs: QMP_TIMEOUT_MS });
      stopped = true;
      tStop = performance.now();
      const atPause = opts.atPause?.(this.nextEpoch).catch((e: unknown) => {
        atPauseError = e;
        throw e;
      });
      const [ram, deviceSave] = await Promise.all([
        this.tracker.capture(),
        qmp.execute('xen-save-devices-state', { filename: this.deviceStatePath, live: false }, { timeoutMs: QMP_TIMEOUT_MS }).then(() => performance.now() - tStop),
        atPause,
      ]);
      ramCopyMs = ram.copyMs;
      deviceSaveMs = deviceSave;
      tSaved = performance.now();
    } catch (e) {
      if (stopped) await qmp.execute('cont', undefined, { timeoutMs: QMP_TIMEOUT_MS }).catch(() => undefined);
      if (atPauseError !== undefined) throw atPauseError;
      throw captureError(name, this.nextEpoch, 'while the guest was paused', e);
    }
    try {
      await qmp.execute('cont', undefined, { timeoutMs: QMP_TIMEOUT_MS });
    } catch (e) {
      throw captureError(name, this.nextEpoch, 'letting the guest run again (cont)', e);
    }
    const tCont = performance.now();
    const changes = await this.tracker.changes();
    const tRead = performance.now();
    let deviceState: Buffer;
    try {
      deviceState = await readFile(this.deviceStatePath);
    } catch (e) {
      changes.release();
      throw captureError(name, this.nextEpoch, `reading the device state QEMU saved in ${this.deviceStatePath}`, e);
    }
    if (deviceState.length === 0 || deviceState.length > DEVICE_STATE_BYTES_MAX) {
      changes.release();
      throw new LockstepError('CHECKPOINT_CAPTURE', `VM '${name}': QEMU saved ${deviceState.length} bytes of device state (expected 1 to ${DEVICE_STATE_BYTES_MAX})`, {
        vm: name,
        epoch: this.nextEpoch,
        bytes: deviceState.length,
      });
    }
    const deviceReadMs = performance.now() - tRead;
    const epoch = this.nextEpoch++;
    return {
      vm: name,
      epoch,
      full: changes.full,
      pageBytes: this.tracker.pageBytes,
      ramBytes: this.tracker.ramBytes,
      runs: changes.runs,
      pageCount: changes.pageCount,
      deviceState,
      timings: {
        pauseMs: tCont - t0,
        stopMs: tStop - t0,
        ramCopyMs,
        deviceSaveMs,
        contMs: tCont - tSaved,
        diffMs: changes.diffMs,
        deviceReadMs,
      },
      release: changes.release,
    };
  }

  async close(): Promise<void> {
    await this.tracker.close();
  }
}

function captureError(vm: string, epoch: number, when: string, e: unknown): LockstepError {
  if (isLockstepError(e, 'CHECKPOINT_CAPTURE')) return e;
  return new LockstepError('CHECKPOINT_CAPTURE', `VM '${vm}': checkpoint of epoch ${epoch} failed ${when}: ${describeError(e)}`, {
    vm,
    epoch,
    ...(isLockstepError(e) ? { causeCode: e.code } : {}),
  }, { cause: e });
}
