/**
 * The backup half of FT for one VM on this host, one *protection run* at a time (docs/ft.md, "lockstepd"):
 * the copy's qemu-nbd (writeback: the epoch disk flushes once per committed epoch, not per write), the epoch
 * disk in front of it where the owner's mirror stream is connected, a checkpoint store in `ft.memoryDir`
 * (tmpfs: its image becomes a resumed guest's RAM), and the unix socket the owner's checkpoint stream is
 * connected to. The first checkpoint stream makes the run's `FtBackup`.
 *
 * A run is used once: an epoch disk never goes back from holding to direct, and a new run starts its epochs
 * at 1 against an empty store. So the run takes the first mirror stream and the first checkpoint stream
 * only; a later one means the owner began a new run, and the copy server builds a fresh one.
 *
 * A *handed-over* run (the owner's HANDOVER, or `handOver()` here for a run with no checkpoint stream going)
 * is HA's copy from then on: its epoch disk takes every write through to the copy before answering, it
 * takes any later mirror stream, and it has no resume point (a takeover boots from the copy).
 *
 * `release()` ends the run as a failover needs it (`FtBackup.release`: a commit under way finishes, the
 * uncommitted epochs are dropped, the export stops) and hands back the *resume point*: the copy and the
 * store at one committed epoch. A run that never committed a checkpoint has none: its copy is then what
 * the initial sync left, a copy as HA's.
 */
import { rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { CheckpointStore } from '../ft/checkpoint-store.js';
import { EpochDisk } from '../ft/epoch-disk.js';
import { FtBackup, type FtBackupStats, type FtTakeOver } from '../ft/ft-backup.js';
import { PAGE_BYTES } from '../ft/ram-tracker.js';
import type { ResumeOptions } from '../ft/resume.js';
import type { DriverLog } from '../qemu/log.js';
import type { VmSupervisor } from '../qemu/supervisor.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import { CopyExport, type CopyFormat } from '../storage/copy-export.js';
import { describeError } from '../util/errors.js';

export interface FtCopyRunOptions {
  vm: string;
  disk: string;
  format: CopyFormat;
  memoryMiB: number;
  /** Where this run's sockets go (the copy server's, private to the daemon). */
  socketDir: string;
  /** The run was handed over: the copy is HA's now. */
  onHandedOver: () => void;
  /** The store's directory: one per run, on tmpfs. */
  storeDir: string;
  log: DriverLog;
}

/** The copy and the store at one committed epoch: a VM resumes from it, or it is thrown away. */
export interface ResumePoint {
  vm: string;
  epoch: number;
  /** QEMU on the copy and the store's image; `spec` is the VM on this host (its disk the copy's image). */
  resume(sup: VmSupervisor, spec: VmSpec, opts: Omit<ResumeOptions, 'paused'>): Promise<FtTakeOver>;
  /** Not resumed, or a resume that failed: the store's memory goes back. Never after a resume that worked. */
  discard(): Promise<void>;
  /** The store's directory: once resumed, the guest's RAM lives there until its QEMU exits. */
  storeDir: string;
}

export interface FtCopyRunStats {
  /** `waiting`: no checkpoint stream yet; `receiving`; `ended`: its stream ended (a new run comes next). */
  state: 'waiting' | 'receiving' | 'ended';
  backup: FtBackupStats | null;
}

export class FtCopyRun {
  private backup: FtBackup | null = null;
  private mirrorTaken = false;
  private streamEnded = false;
  private releasing = false;
  private handedOver = false;

  private constructor(
    private readonly opts: FtCopyRunOptions,
    private readonly copy: CopyExport,
    private readonly disk: EpochDisk,
    private readonly store: CheckpointStore,
    private readonly checkpointServer: net.Server,
  ) {}

  /** Starts the copy's export, the epoch disk (in `direct` mode: the initial sync) and the checkpoint socket. */
  static async start(opts: FtCopyRunOptions): Promise<FtCopyRun> {
    const { vm, socketDir } = opts;
    const copy = await CopyExport.start({ vm, disk: opts.disk, format: opts.format, socketPath: path.join(socketDir, `${vm}.copy.sock`), cache: 'writeback' });
    const undo: (() => Promise<unknown>)[] = [() => copy.stop()];
    try {
      const disk = await EpochDisk.start({ vm, socketPath: path.join(socketDir, `${vm}.sock`), copySocketPath: copy.socketPath, log: opts.log });
      undo.unshift(() => disk.close());
      const store = await CheckpointStore.open(opts.storeDir, { vm, ramBytes: opts.memoryMiB * 1024 * 1024, pageBytes: PAGE_BYTES });
      undo.unshift(() => store.close());
      const server = net.createServer();
      const socketPath = path.join(socketDir, `${vm}.ft.sock`);
      await rm(socketPath, { force: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => resolve());
      });
      const run = new FtCopyRun(opts, copy, disk, store, server);
      server.on('connection', (socket) => run.acceptCheckpoints(socket));
      return run;
    } catch (e) {
      for (const u of undo) await u().catch(() => undefined);
      throw e;
    }
  }

  get pid(): number {
    return this.copy.pid;
  }

  /** Resolves when the copy's qemu-nbd exits (as `CopyExport.exited`). */
  get exited(): CopyExport['exited'] {
    return this.copy.exited;
  }

  /** Where the owner's mirror stream connects (the epoch disk), or null once the run's one mirror was taken (a handed-over run takes any). */
  mirrorSocket(): string | null {
    return this.releasing || (this.mirrorTaken && !this.handedOver) ? null : path.join(this.opts.socketDir, `${this.opts.vm}.sock`);
  }

  /** Where the owner's checkpoint stream connects, or null once the run has had one (or was handed over). */
  checkpointSocket(): string | null {
    return this.backup !== null || this.releasing || this.handedOver ? null : path.join(this.opts.socketDir, `${this.opts.vm}.ft.sock`);
  }

  /** Whether the run was handed over: its copy is HA's. */
  get isHandedOver(): boolean {
    return this.handedOver;
  }

  /**
   * Hands a run over here, without its owner: for a VM that is FT no more while no checkpoint stream is
   * going (it was mirrored as HA into this run, or its run lost the peer). Throws `EPOCH_DISK` when the copy
   * misses a write (`EpochDisk.handOver`): then it must be served again.
   */
  async handOver(): Promise<void> {
    if (this.handedOver) return;
    if (this.stats.state === 'receiving') throw new Error(`the FT run of VM ${this.opts.vm} is receiving checkpoints: its owner hands it over`);
    await this.disk.handOver();
    this.markHandedOver('here, without a checkpoint stream');
  }

  /** The replication server connected the owner's mirror stream to the epoch disk. */
  mirrorConnected(): void {
    this.mirrorTaken = true;
  }

  /** Whether the run can still become a protection: no stream of it has ended. */
  get fresh(): boolean {
    return !this.mirrorTaken && this.backup === null;
  }

  get stats(): FtCopyRunStats {
    return { state: this.backup === null ? 'waiting' : this.streamEnded ? 'ended' : 'receiving', backup: this.backup?.stats ?? null };
  }

  /**
   * Ends the run for a failover (or for good): the resume point when a checkpoint was committed, else null.
   * Every part of the run is stopped either way; the store's memory stays only with a resume point.
   */
  async release(): Promise<ResumePoint | null> {
    this.releasing = true;
    this.checkpointServer.close();
    const backup = this.backup;
    if (backup === null || this.store.committedEpoch === 0 || this.handedOver) {
      await this.close();
      return null;
    }
    let released;
    try {
      released = await backup.release();
    } catch (e) {
      this.opts.log.warn(`FT copy of VM ${this.opts.vm}: no checkpoint to resume from: ${describeError(e)}`, { vm: this.opts.vm });
      await this.close();
      return null;
    }
    this.opts.log.info(`FT copy of VM ${this.opts.vm}: released at checkpoint ${released.epoch} (dropped epochs ${released.discarded.discardedEpochs.join(', ') || 'none'})`, { vm: this.opts.vm, epoch: released.epoch });
    return {
      vm: this.opts.vm,
      epoch: released.epoch,
      storeDir: this.opts.storeDir,
      resume: (sup, spec, opts) => backup.resume(released, sup, spec, opts),
      discard: async () => {
        await this.store.close().catch(() => undefined);
        await rm(this.opts.storeDir, { recursive: true, force: true });
      },
    };
  }

  /** Stops every part of the run and throws its store away. Uncommitted epochs are dropped, never applied in part. */
  async close(): Promise<void> {
    this.releasing = true;
    this.checkpointServer.close();
    // The disk first: a commit under way finishes before the export it writes into goes.
    await this.disk.discardUncommitted().catch(() => undefined);
    await this.disk.close().catch(() => undefined);
    await this.copy.stop().catch((e) => this.opts.log.warn(`stopping the export of VM ${this.opts.vm}'s copy: ${describeError(e)}`, { vm: this.opts.vm }));
    await this.store.close().catch(() => undefined);
    await rm(this.opts.storeDir, { recursive: true, force: true });
  }

  private markHandedOver(how: string): void {
    this.handedOver = true;
    this.opts.log.info(`FT copy of VM ${this.opts.vm}: handed over ${how}: the copy holds every write and takes later ones through (HA's now)`, { vm: this.opts.vm });
    this.opts.onHandedOver();
  }

  private acceptCheckpoints(socket: net.Socket): void {
    if (this.backup !== null || this.releasing) {
      socket.destroy();
      return;
    }
    const backup = new FtBackup({ stream: socket, store: this.store, disk: this.disk, copy: this.copy, log: this.opts.log });
    this.backup = backup;
    this.opts.log.info(`FT copy of VM ${this.opts.vm}: checkpoint stream connected`, { vm: this.opts.vm });
    // An end other than release(): the owner lost protection (it holds the guest's output and starts a new
    // run once its decision core says so), or is gone (then this host's core decides a takeover). Either way
    // the committed checkpoint stays the resume point until then.
    void backup.ended().then((outcome) => {
      this.streamEnded = true;
      if (outcome.handedOverAt !== null) {
        this.markHandedOver(`by its owner after checkpoint ${outcome.handedOverAt}`);
        return;
      }
      if (this.releasing) return;
      const why = outcome.refused ? `refused here: ${outcome.refused.message}` : 'closed';
      this.opts.log.warn(`FT copy of VM ${this.opts.vm}: checkpoint stream ${why}; committed checkpoint ${this.store.committedEpoch} kept`, { vm: this.opts.vm });
    });
  }
}
