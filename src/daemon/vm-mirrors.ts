/**
 * The mirrors of one VM's disks into the peer's copies (HA; FT over its one disk): a `DiskMirror` per disk,
 * each over a replication stream of its own to its own copy's export (streams and exports are per volume),
 * started, stopped and failed as one. The decision core knows one mirror per VM — one stream id, one state —
 * and this is that mirror.
 *
 * The disks sync one after the other, never at once: each sync ends with the guest paused while its bitmap
 * is cleared (src/storage/disk-mirror.ts), and a second sync pausing and resuming the guest in the middle
 * of the first's switch would let a guest write escape that disk's mirror and its bitmap both. A disk in
 * sync stays synchronous while the next syncs, so once the last is ready every write of every disk reaches
 * the peer before the guest sees it complete.
 *
 * One disk's mirror failing fails the VM's: the others are stopped (their copies stay identical up to the
 * stop, their bitmaps keep every later write), so that the next mirror starts every disk again, from its
 * bitmap.
 */
import { EventEmitter } from 'node:events';
import type { QmpClient } from '../qemu/qmp.js';
import { DiskMirror, type MirrorMode, type MirrorProgress, type MirrorReady } from '../storage/disk-mirror.js';
import type { ResyncRate } from '../storage/resync-rate.js';
import { describeError } from '../util/errors.js';
import { diskId, volumeName } from './vm-definition.js';

/** One disk's part of the VM's mirror. */
export interface DiskMirrorProgress extends MirrorProgress {
  state: 'syncing' | 'ready';
}

export interface VmMirrorsEvents {
  /** While syncing: every disk's progress, by disk index, when one of them changed. */
  progress: [disks: DiskMirrorProgress[]];
  /** Once per VM mirror (its base stream id): a disk's mirror failed, after `ready` or while syncing. */
  failed: [failure: { streamId: string; reason: string }];
}

export interface VmMirrorsStartOptions {
  /** The decision core's stream id: disk 0's stream; the others' are derived (`diskStreamId`). */
  streamId: string;
  mode: MirrorMode;
  rate: ResyncRate;
  /** Opens the replication stream of one volume; resolves with the unix socket its NBD node connects to. */
  open(volume: string, streamId: string): Promise<string>;
}

/**
 * The stream of a disk: the core's id for the first disk (the one stream a VM had before several disks, so
 * an older peer sees the same header), `<id>+<disk id>` for the others.
 */
export function diskStreamId(streamId: string, disk: number): string {
  return disk === 0 ? streamId : `${streamId}+${diskId(disk)}`;
}

/** The core's stream id of a disk's stream. */
export function baseStreamId(diskStream: string): string {
  return diskStream.split('+')[0]!;
}

export class VmMirrors extends EventEmitter<VmMirrorsEvents> {
  private progress: DiskMirrorProgress[];
  /** The VM mirror now running (its base stream id), or null. */
  private streamId: string | null = null;
  private stopping: Promise<void> | null = null;

  private constructor(
    readonly vm: string,
    /** By disk index. */
    readonly disks: readonly DiskMirror[],
    private readonly log: (line: string) => void,
  ) {
    super();
    this.progress = disks.map(() => idleProgress());
    disks.forEach((m, i) => {
      m.on('progress', (p) => this.onProgress(i, p));
      m.on('failed', (f) => this.onFailed(i, f.streamId, f.reason));
    });
  }

  /** Starts tracking writes to every disk (`DiskMirror.attach`): right after QEMU starts paused, before `cont`. */
  static async attach(qmp: QmpClient, vm: string, diskCount: number, log: (line: string) => void): Promise<VmMirrors> {
    const disks: DiskMirror[] = [];
    for (let i = 0; i < diskCount; i++) disks.push(await DiskMirror.attach(qmp, { disk: diskId(i), vm }));
    return new VmMirrors(vm, disks, log);
  }

  /**
   * Brings every disk's copy in sync, one disk after the other (see above); resolves once every guest write
   * is synchronous. Throws what a disk's stream or mirror threw, the others stopped by then.
   */
  async start(opts: VmMirrorsStartOptions): Promise<MirrorReady> {
    await this.stopping;
    this.streamId = opts.streamId;
    this.progress = this.disks.map(() => idleProgress());
    let copiedBytes = 0;
    let pauseMs = 0;
    for (const [i, mirror] of this.disks.entries()) {
      const streamId = diskStreamId(opts.streamId, i);
      const volume = volumeName(this.vm, i);
      try {
        const socketPath = await opts.open(volume, streamId);
        const ready = await mirror.start({ socketPath, exportName: volume, streamId, mode: opts.mode, rate: opts.rate });
        copiedBytes += ready.copiedBytes;
        pauseMs += ready.pauseMs;
        this.progress[i] = { ...this.progress[i]!, state: 'ready', totalBytes: Math.max(this.progress[i]!.totalBytes, ready.copiedBytes) };
      } catch (e) {
        // The disks already in sync would stay synchronous into copies the core no longer counts on.
        if (this.streamId === opts.streamId) await this.stopAll().catch(() => undefined);
        throw e;
      }
      if (this.streamId !== opts.streamId) throw new Error(`mirror ${opts.streamId} of VM ${this.vm} was stopped while disk ${diskId(i)} synced`);
    }
    return { mode: opts.mode, streamId: opts.streamId, copiedBytes, pauseMs };
  }

  /** Every disk's progress (what its last sync copied, once ready). */
  diskProgress(): DiskMirrorProgress[] {
    return this.progress.map((p) => ({ ...p }));
  }

  /** Ends every disk's mirror (`DiskMirror.stop`, all at once): throws the first disk's failure to let go. */
  stop(): Promise<void> {
    this.streamId = null;
    return this.stopAll();
  }

  setRate(rate: ResyncRate): void {
    for (const m of this.disks) m.setRate(rate);
  }

  private stopAll(): Promise<void> {
    const stopping = Promise.allSettled(this.disks.map((m) => m.stop())).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    });
    this.stopping = stopping.catch(() => undefined);
    return stopping;
  }

  private onProgress(disk: number, p: MirrorProgress): void {
    this.progress[disk] = { ...p, state: this.progress[disk]!.state };
    this.emit('progress', this.diskProgress());
  }

  private onFailed(disk: number, diskStream: string, reason: string): void {
    const streamId = this.streamId;
    if (streamId === null || diskStream !== diskStreamId(streamId, disk)) return;
    this.streamId = null;
    const why = this.disks.length === 1 ? reason : `disk ${diskId(disk)}: ${reason}`;
    // The others end too: a VM's mirror is whole or not at all (the core starts the next for every disk).
    if (this.disks.length > 1) void this.stopAll().catch((e) => this.log(`VM ${this.vm}: stopping its other disks' mirrors after ${why}: ${describeError(e)}`));
    this.emit('failed', { streamId, reason: why });
  }
}

function idleProgress(): DiskMirrorProgress {
  return { state: 'syncing', copiedBytes: 0, totalBytes: 0, limitBytesPerSec: null, guestBusy: false };
}
