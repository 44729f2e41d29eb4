/**
 * The backup's side of an FT protection: the VM's checkpoint store (RAM and device state) and its epoch disk,
 * fed by one checkpoint stream from `FtPrimary`, and the failover that resumes the VM from them.
 *
 * The order that makes an ACK mean "epoch N is complete here": when checkpoint N is fully received and
 * verified, the epoch disk commits N (its writes applied and flushed into the copy), then the store commits N,
 * then ACK N goes back. A SEAL of N (the primary's guest paused at N's end) seals the disk's epoch N before
 * SEALED goes back; the first SEAL turns the initial sync into the copy of checkpoint N (`hold(N + 1)`: the
 * primary's mirror was ready, and every write until this pause belongs to checkpoint N, the full image).
 *
 * Handover (HANDOVER, the primary's last record): the epoch disk applies every write it holds and takes later
 * ones through (`EpochDisk.handOver`) before HANDEDOVER goes back; the copy is then HA's, ahead of every
 * checkpoint, and the store is no resume point any more (`release()` refuses).
 *
 * Failover (`takeOver`): the stream is cut, a checkpoint being committed finishes on both (the receive loop
 * commits disk then store and is awaited), the disk drops every uncommitted epoch and releases the copy; the
 * two must then be at the same epoch; the copy's qemu-nbd stops (it holds the image's lock); the VM resumes
 * from the store on the copy with its NIC on this host's tap, and `announce-self` tells the network where its
 * MAC is now.
 */
import type { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { silentLog, type DriverLog } from '../qemu/log.js';
import type { VmSupervisor } from '../qemu/supervisor.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import { LockstepError, describeError } from '../util/errors.js';
import { receiveCheckpoints, type ReceiveOutcome } from './checkpoint-link.js';
import type { CheckpointStore, CommitResult } from './checkpoint-store.js';
import { encodeControl, type StagedCheckpoint } from './checkpoint-wire.js';
import type { EpochCommit, EpochDisk, EpochDiscard } from './epoch-disk.js';
import { resumeFromCheckpoint, type ResumeOptions, type ResumeResult } from './resume.js';

export interface FtBackupOptions {
  /** The checkpoint stream from the primary. */
  stream: Duplex;
  store: CheckpointStore;
  /** The VM's disk: the primary's mirror writes into it; `copy` is the export behind it. */
  disk: EpochDisk;
  copy: { stop(): Promise<unknown> };
  log?: DriverLog;
}

export interface FtBackupCommit {
  epoch: number;
  disk: EpochCommit | null;
  store: CommitResult;
}

export interface FtBackupStats {
  vm: string;
  committedEpoch: number;
  epochsCommitted: number;
  diskHeldBytes: number;
  last: FtBackupCommit | null;
}

/** What `release()` leaves: the copy and the store at one committed epoch, nothing of the run still running. */
export interface FtRelease {
  /** The last one acked to the primary, or one later whose ack was lost with it. */
  epoch: number;
  discarded: EpochDiscard;
  timings: {
    /** Cutting the stream until the receive loop ended (a commit under way finishes). */
    drainMs: number;
    discardMs: number;
    copyStopMs: number;
    releaseMs: number;
  };
}

export interface FtTakeOver {
  resumed: ResumeResult;
  /** The epoch the VM resumed from: the last one acked to the primary (or one later, committed unacked). */
  epoch: number;
  discarded: EpochDiscard;
  timings: FtRelease['timings'] & {
    /** `resumeFromCheckpoint`: QEMU start, device-state load, cont. */
    resumeMs: number;
    announceMs: number;
    totalMs: number;
  };
}

export interface FtBackupEvents {
  committed: [c: FtBackupCommit];
  /** The stream ended: the primary closed it, it failed, or it was refused (`outcome.refused`). */
  ended: [outcome: ReceiveOutcome];
}

/** QEMU's announce-self: RARPs at 50 ms, then every 100 ms, 5 rounds: a bridge learns the MAC's new port. */
const ANNOUNCE = { initial: 50, max: 550, rounds: 5, step: 100 };

export class FtBackup extends EventEmitter<FtBackupEvents> {
  private readonly received: Promise<ReceiveOutcome>;
  private diskCommit: EpochCommit | null = null;
  private last: FtBackupCommit | null = null;
  private epochsCommitted = 0;
  private released: Promise<FtRelease> | null = null;
  private readonly log: DriverLog;

  constructor(private readonly opts: FtBackupOptions) {
    super();
    this.log = opts.log ?? silentLog;
    const { stream, disk, store } = opts;
    // The stream is cut at takeover with commits possibly writing acks into it: nobody is there to tell.
    stream.on('error', () => undefined);
    disk.on('pressure', (s) => {
      if (!stream.destroyed && s.openEpoch !== null) stream.write(encodeControl('pressure', store.vm, s.openEpoch));
    });
    this.received = receiveCheckpoints(stream, store, {
      onSeal: (epoch) => this.seal(epoch),
      onHandover: async () => {
        await disk.handOver();
      },
      beforeCommit: (cp) => this.commitDisk(cp),
      onCommit: (c) => {
        this.epochsCommitted++;
        this.last = { epoch: c.epoch, disk: this.diskCommit, store: c };
        this.diskCommit = null;
        this.emit('committed', this.last);
      },
    });
    void this.received.then((outcome) => {
      if (outcome.refused) this.log.warn(`FT backup of VM ${store.vm}: stream refused: ${outcome.refused.message}`, { vm: store.vm, code: outcome.refused.code });
      this.emit('ended', outcome);
    });
  }

  get stats(): FtBackupStats {
    return {
      vm: this.opts.store.vm,
      committedEpoch: this.opts.store.committedEpoch,
      epochsCommitted: this.epochsCommitted,
      diskHeldBytes: this.opts.disk.stats().heldBytes,
      last: this.last,
    };
  }

  /** Resolves when the stream has ended, with what it committed and why it ended. */
  ended(): Promise<ReceiveOutcome> {
    return this.received;
  }

  /**
   * The first half of a failover, and all of one when the VM will not be resumed here: the stream is cut, a
   * checkpoint being committed finishes (disk then store), every uncommitted epoch is dropped, the disk and
   * the store must be at the same epoch, and the copy's export stops (it holds the image's lock). Never the
   * export first: that could tear a commit. Resolves with the epoch the copy and the store now hold: the
   * resume point. Throws `FT_TAKEOVER` (disk and store at different epochs, the copy not released) and
   * `EPOCH_DISK` (the copy is at no checkpoint). Once only.
   */
  release(): Promise<FtRelease> {
    this.released ??= this.releaseOnce();
    return this.released;
  }

  /**
   * Failover: `release()`, then the VM resumed from the last committed epoch. `spec` is the VM's spec on this
   * host: its disk is the copy's image (the epoch disk's), its NICs on this host's taps, without an output
   * gate. Throws as `release()` and `resume()` do.
   */
  async takeOver(sup: VmSupervisor, spec: VmSpec, opts: Omit<ResumeOptions, 'paused'> = {}): Promise<FtTakeOver> {
    const released = await this.release();
    return this.resume(released, sup, spec, opts);
  }

  /** The second half of a failover: QEMU on the released copy and the store's image, then `announce-self`. Throws `CHECKPOINT_RESUME`. */
  async resume(released: FtRelease, sup: VmSupervisor, spec: VmSpec, opts: Omit<ResumeOptions, 'paused'> = {}): Promise<FtTakeOver> {
    const { store } = this.opts;
    const t0 = performance.now();
    const resumed = await resumeFromCheckpoint(sup, store, spec, opts);
    const tResumed = performance.now();
    if (spec.nics.length > 0) await resumed.vm.qmp.execute('announce-self', ANNOUNCE);
    const tEnd = performance.now();
    const { discarded } = released;
    this.log.info(`FT backup of VM ${store.vm}: took over at epoch ${resumed.epoch}, dropped epochs ${discarded.discardedEpochs.join(', ') || 'none'}`, { vm: store.vm, epoch: resumed.epoch });
    return {
      resumed,
      epoch: resumed.epoch,
      discarded,
      timings: {
        ...released.timings,
        resumeMs: tResumed - t0,
        announceMs: tEnd - tResumed,
        totalMs: released.timings.releaseMs + (tEnd - t0),
      },
    };
  }

  private async releaseOnce(): Promise<FtRelease> {
    const { stream, disk, store, copy } = this.opts;
    const t0 = performance.now();
    stream.destroy();
    const outcome = await this.received;
    if (outcome.handedOverAt !== null) {
      throw new LockstepError('FT_TAKEOVER', `VM '${store.vm}': its run was handed over after checkpoint ${outcome.handedOverAt}: the copy is ahead of every checkpoint (boot from it)`, { vm: store.vm, epoch: outcome.handedOverAt });
    }
    const tDrained = performance.now();
    const discarded = await disk.discardUncommitted();
    const tDiscarded = performance.now();
    if (discarded.committedEpoch !== store.committedEpoch) {
      throw new LockstepError('FT_TAKEOVER', `VM '${store.vm}': the disk is at checkpoint ${discarded.committedEpoch}, RAM and devices at ${store.committedEpoch}: no consistent state to resume`, {
        vm: store.vm,
        diskEpoch: discarded.committedEpoch,
        storeEpoch: store.committedEpoch,
      });
    }
    try {
      await copy.stop();
    } catch (e) {
      throw new LockstepError('FT_TAKEOVER', `VM '${store.vm}': the copy's export did not stop: ${describeError(e)}`, { vm: store.vm }, { cause: e });
    }
    const tEnd = performance.now();
    return {
      epoch: store.committedEpoch,
      discarded,
      timings: { drainMs: tDrained - t0, discardMs: tDiscarded - tDrained, copyStopMs: tEnd - tDiscarded, releaseMs: tEnd - t0 },
    };
  }

  /** SEAL N: the first one makes the initial sync checkpoint N; later ones close the disk's epoch N. */
  private async seal(epoch: number): Promise<void> {
    const disk = this.opts.disk;
    const s = disk.stats();
    // An epoch that can never commit: refuse now rather than let the primary wait for an ack that cannot come.
    if (s.broken !== null && (s.broken.fromEpoch === null || s.broken.fromEpoch <= epoch)) {
      throw new LockstepError('EPOCH_DISK', `epoch ${epoch} of VM ${disk.vm} can never commit: ${s.broken.reason}`, { vm: disk.vm, epoch, reason: s.broken.reason });
    }
    if (s.mode === 'direct') await disk.hold(epoch + 1);
    else if (s.mode === 'holding') disk.seal(epoch);
    else throw new LockstepError('EPOCH_DISK', `epoch ${epoch} of VM ${disk.vm} cannot be sealed: the epoch disk is ${s.mode === 'through' ? 'handed over' : 'closed'}`, { vm: disk.vm, epoch, mode: s.mode });
  }

  /** Before the store commits checkpoint N: the disk's epoch N (none for the checkpoint `hold` made). */
  private async commitDisk(cp: StagedCheckpoint): Promise<void> {
    const disk = this.opts.disk;
    const s = disk.stats();
    if (s.committedEpoch !== null && s.committedEpoch >= cp.epoch) {
      this.diskCommit = null;
      return;
    }
    // Only the oldest sealed epoch can commit: a checkpoint without its SEAL is the primary's mistake, refused.
    if (s.sealedEpochs[0] !== cp.epoch) {
      throw new LockstepError('EPOCH_DISK', `checkpoint ${cp.epoch} of VM ${disk.vm} came while the disk's oldest sealed epoch is ${s.sealedEpochs[0] ?? 'none'}`, { vm: disk.vm, epoch: cp.epoch });
    }
    this.diskCommit = await disk.commit(cp.epoch);
  }
}
