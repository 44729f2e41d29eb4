/**
 * The backup half of HA on one host: this host's copies of the disks of protected VMs its peer runs, each
 * served by a `qemu-nbd` (`src/storage/copy-export.ts`), and the replication server on the A-Link addresses
 * that connects the owner's mirror streams to them (`src/storage/replication-stream.ts`).
 *
 * It decides nothing: the decision core says which copies to serve (`serve-copy`, `unserve-copy`), and
 * hears back what happened (`export-ready`, `export-failed`, `stream-open`). A copy is either served here or
 * opened by this host's own QEMU, never both: `released(vm)` lets the VM runner wait until an export has let
 * go of the image before it starts the VM on it (the image lock would refuse QEMU otherwise).
 *
 * A VM of several disks has a copy of each (a volume, `volumeName`), each with its own export and its own
 * mirror stream (streams are per volume: `diskStreamId` in vm-mirrors.ts); the core hears of one copy, ready
 * once every export is, failed when one fails, and of a stream once every disk's stream of it is open.
 *
 * An FT VM's copy is served as an FT run (`ft-copy.ts`): the epoch disk in front of the copy's export, and
 * a checkpoint store fed by a second replication server on `dataPorts.checkpoint` (same mutual TLS, same
 * header line: no new transport). A run takes one mirror stream and one checkpoint stream; a mirror stream
 * for a used run is refused while a fresh run is built (the owner's mirror tries again). Stopping to serve
 * an FT copy releases the run — a commit under way finishes, later epochs are dropped, then the export
 * stops — and a takeover keeps what is left as the VM's resume point (`takeResumePoint`).
 *
 * A VM's protection changing between FT and HA while it runs (`reconcile`, after every decision) never
 * pulls a copy from under a mirror stream connected to it: out of FT, the owner hands its run over (the
 * copy keeps every write; a run with no checkpoint stream going is handed over here), and the run serves
 * on as HA's; into FT, the owner ends its HA mirror cleanly, and only then is the copy served again as an
 * FT run. A mirror stream for the kind the VM no longer is is refused meanwhile (the owner's mirror tries
 * again).
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { CopyExport } from '../storage/copy-export.js';
import { ReplicationServer } from '../storage/replication-stream.js';
import { ensureDisk, exists } from '../storage/disk-image.js';
import type { AlinkTlsContext } from '../alink/tls.js';
import type { StorageEvent, VmName } from '../core/types.js';
import { LockstepError, describeError } from '../util/errors.js';
import type { DaemonConfig } from './config.js';
import { parseVmHardware, volumeName, type VmHardware } from './vm-definition.js';
import { baseStreamId } from './vm-mirrors.js';
import { FtCopyRun, type ResumePoint } from './ft-copy.js';
import { ensureRamRoom } from '../qemu/ram-room.js';
import { fileSystemSpace, groupFileAllocations, groupUsage, storageGroupOf, vmOfVolume, volumeFitProblem, volumePath, type StorageGroupConfig } from '../storage/storage-group.js';

interface Served {
  /** Serialises this VM's start and stop: each step waits for the one before. */
  work: Promise<void>;
  /** HA's exports, one per disk (by disk index), or an FT VM's run (its one disk's export inside). */
  exports: CopyExport[];
  /** The VM's volumes, by disk index (known once its hardware is read). */
  volumes: string[];
  ft: FtCopyRun | null;
  /** Served for FT (an FT run taking checkpoints) rather than for HA (an export, or a handed-over run). */
  ftWanted: boolean;
  /** A handover here is under way (`reconcile`), or failed (the copy is then served again, once no stream is connected). */
  handingOver: boolean;
  handoverFailed: boolean;
  /** The core asked to stop serving (or a newer serve replaced this one): an exit is expected. */
  stopping: boolean;
}

export class CopyServer {
  private readonly served = new Map<VmName, Served>();
  /** Exports being stopped: the VM runner waits on these before it opens the image itself. */
  private readonly pending = new Map<VmName, Promise<void>>();
  /** Copies served from inside a live migration's incoming QEMU (its own NBD server), by socket. */
  private readonly adopted = new Map<VmName, string>();
  /**
   * The last reason an export of each VM's copy could not start. The core asks again every second, so a
   * cause that lasts (a storage group this host lacks) is logged when it begins, not at every attempt.
   */
  private readonly lastStartFailure = new Map<VmName, string>();
  /** FT takeovers' resume points, until this host's start of the VM takes (or throws away) each. */
  private readonly resumePoints = new Map<VmName, ResumePoint>();
  /** The hardware each served VM was last served with (a renewed FT run needs it again). */
  private readonly hardware = new Map<VmName, unknown>();
  /** Mirror streams connected to each VM's copies now, by disk stream id. */
  private readonly openStreams = new Map<VmName, Set<string>>();
  /** Whether each VM is FT, as the last `reconcile` heard it. */
  private readonly wantsFt = new Map<VmName, boolean>();
  /** Numbers FT runs, so that each run's store has a directory of its own. */
  private runCounter = 0;
  private readonly server: ReplicationServer;
  private readonly checkpointServer: ReplicationServer;
  private readonly socketDir: string;

  constructor(
    private readonly config: DaemonConfig,
    tls: AlinkTlsContext,
    private readonly report: (vm: VmName, event: StorageEvent) => void,
    private readonly log: (line: string) => void,
  ) {
    this.socketDir = path.join(config.dataDir, 'run', 'exports');
    this.server = new ReplicationServer({
      self: config.host,
      peer: config.pair.peer,
      tls,
      listen: config.alink.map((a) => ({ address: a.local, port: config.dataPorts.replication })),
      // Streams are per volume: a VM's incoming QEMU serves every disk on one socket, by export name.
      resolve: (volume) => {
        const vm = vmOfVolume(volume);
        const incoming = this.adopted.get(vm);
        if (incoming !== undefined) return incoming;
        const slot = this.served.get(vm);
        if (!slot || slot.stopping) return null;
        // Served as the other kind: `reconcile` serves it again once no stream is connected.
        if ((this.wantsFt.get(vm) ?? slot.ftWanted) !== slot.ftWanted) return null;
        if (slot.ft) {
          if (volume !== vm) return null; // an FT VM has one disk
          if (slot.ft.isHandedOver) return slot.ft.mirrorSocket();
          const socket = slot.ft.mirrorSocket();
          if (socket === null) this.renewFtRun(vm, slot, 'the owner began a new protection run');
          return socket;
        }
        return slot.exports[slot.volumes.indexOf(volume)]?.socketPath ?? null;
      },
      log: { info: (m) => log(`replication: ${m}`), warn: (m) => log(`replication: ${m}`) },
    });
    this.server.on('stream-open', (volume, diskStream) => {
      const vm = vmOfVolume(volume);
      log(`replication stream ${diskStream} of volume ${volume} connected to this host's copy`);
      const slot = this.served.get(vm);
      slot?.ft?.mirrorConnected();
      const open = new Set([...(this.openStreams.get(vm) ?? []), diskStream]);
      this.openStreams.set(vm, open);
      // The core's stream is the VM's: connected here once each disk's is.
      const stream = baseStreamId(diskStream);
      const disks = slot?.volumes.length ?? 1;
      if ([...open].filter((s) => baseStreamId(s) === stream).length === disks) report(vm, { kind: 'stream-open', stream });
    });
    this.server.on('stream-closed', (volume, diskStream, reason) => {
      log(`replication stream ${diskStream} of volume ${volume} closed: ${reason}`);
      this.openStreams.get(vmOfVolume(volume))?.delete(diskStream);
    });
    this.checkpointServer = new ReplicationServer({
      self: config.host,
      peer: config.pair.peer,
      tls,
      listen: config.alink.map((a) => ({ address: a.local, port: config.dataPorts.checkpoint })),
      resolve: (vm) => {
        const slot = this.served.get(vm);
        return slot && !slot.stopping ? (slot.ft?.checkpointSocket() ?? null) : null;
      },
      log: { info: (m) => log(`FT checkpoints: ${m}`), warn: (m) => log(`FT checkpoints: ${m}`) },
    });
    this.checkpointServer.on('stream-closed', (vm, stream, reason) => log(`FT checkpoint stream ${stream} of VM ${vm} closed: ${reason}`));
  }

  async start(): Promise<void> {
    await mkdir(this.socketDir, { recursive: true });
    // Stores of an earlier lockstepd: a store is only good in the life of the run that fed it.
    await rm(this.storeRoot(), { recursive: true, force: true });
    await this.server.start();
    await this.checkpointServer.start();
  }

  /** Serves this host's copy of `vm` (made empty, of the VM's size, if there is none yet); `ft`: as an FT run. */
  serve(vm: VmName, hardwareRaw: unknown, ft: boolean): void {
    const before = this.served.get(vm);
    const slot: Served = { work: Promise.resolve(), exports: [], volumes: [], ft: null, ftWanted: ft, handingOver: false, handoverFailed: false, stopping: false };
    // A new serve means this host will not resume the VM from an older run's checkpoint.
    const stale = this.resumePoints.get(vm);
    this.resumePoints.delete(vm);
    // After the one before, or after an unserve still stopping its export (the socket and image are reused).
    slot.work = (before?.work ?? this.pending.get(vm) ?? Promise.resolve()).then(async () => {
      await stale?.discard();
      await this.startExport(vm, slot, hardwareRaw);
    });
    this.served.set(vm, slot);
  }

  /**
   * Stops serving `vm`'s copy; resolves once qemu-nbd has let go of the image. `takeover`: this host takes
   * the VM over now, so an FT run's committed checkpoint is kept as its resume point.
   */
  unserve(vm: VmName, reason: string, takeover = false): Promise<void> {
    const slot = this.served.get(vm);
    if (!slot) return Promise.resolve();
    slot.stopping = true;
    this.served.delete(vm);
    this.hardware.delete(vm);
    slot.work = slot.work.then(async () => {
      if (slot.ft) {
        this.log(`releasing VM ${vm}'s FT copy: ${reason}`);
        const point = await slot.ft.release();
        if (point && takeover) this.resumePoints.set(vm, point);
        else await point?.discard();
        return;
      }
      if (slot.exports.length === 0) return;
      this.log(`stopping the export of VM ${vm}'s copy: ${reason}`);
      await Promise.all(slot.exports.map((x) => x.stop().catch((e) => this.log(`stopping the export of volume ${x.vm}: ${describeError(e)}`))));
    });
    this.pending.set(vm, slot.work);
    void slot.work.finally(() => {
      if (this.pending.get(vm) === slot.work) this.pending.delete(vm);
    });
    return slot.work;
  }

  /**
   * A copy served for HA while the VM is now FT, or the other way round, is served as the VM now is — never
   * from under a connected mirror stream (see above): out of FT a run is handed over, into FT the copy is
   * served again once its owner's HA mirror has ended.
   */
  reconcile(vm: VmName, hardwareRaw: unknown, ft: boolean): void {
    this.wantsFt.set(vm, ft);
    const slot = this.served.get(vm);
    if (!slot || slot.stopping || slot.ftWanted === ft || slot.handingOver) return;
    const run = slot.ft;
    if (!ft && run !== null && run.stats.state === 'receiving') return; // its owner hands it over
    if (!ft && run !== null && !slot.handoverFailed) {
      slot.handingOver = true;
      slot.work = slot.work.then(async () => {
        try {
          await run.handOver();
        } catch (e) {
          this.log(`VM ${vm} is not FT now, and its FT copy cannot be handed over: ${describeError(e)}; it is served again once no mirror stream is connected`);
          slot.handoverFailed = true;
          if (!this.openStreams.get(vm)?.size && this.served.get(vm) === slot) this.serveAgain(vm, hardwareRaw, ft);
        } finally {
          slot.handingOver = false;
        }
      });
      return;
    }
    if (this.openStreams.get(vm)?.size) return; // the owner ends its HA mirror first
    this.serveAgain(vm, hardwareRaw, ft);
  }

  private serveAgain(vm: VmName, hardwareRaw: unknown, ft: boolean): void {
    this.log(`VM ${vm} is ${ft ? 'FT' : 'not FT'} now: serving its copy again`);
    void this.unserve(vm, `its protection changed to ${ft ? 'FT' : 'HA'}`);
    this.serve(vm, hardwareRaw, ft);
  }

  /** The copy of `vm` is served by an incoming QEMU's own NBD server at `socketPath` (a live migration). */
  adopt(vm: VmName, socketPath: string): void {
    this.adopted.set(vm, socketPath);
  }

  disown(vm: VmName): void {
    this.adopted.delete(vm);
  }

  /** Resolves once no export holds `vm`'s image (at once when none does). */
  released(vm: VmName): Promise<void> {
    return this.pending.get(vm) ?? Promise.resolve();
  }

  /** The resume point an FT takeover left for `vm` (once: whoever takes it resumes or discards it). */
  takeResumePoint(vm: VmName): ResumePoint | null {
    const point = this.resumePoints.get(vm) ?? null;
    this.resumePoints.delete(vm);
    return point;
  }

  /** Whether an FT run of `vm`'s copy is served here now (its checkpoint store on the FT tmpfs). */
  servesFtRun(vm: VmName): boolean {
    return (this.served.get(vm)?.ft ?? null) !== null;
  }

  /** What each FT copy served here has received, for the VM views. */
  ftStats(vm: VmName): FtCopyRun['stats'] | null {
    return this.served.get(vm)?.ft?.stats ?? null;
  }

  async close(): Promise<void> {
    await this.server.close();
    await this.checkpointServer.close();
    await Promise.all([...this.served.keys()].map((vm) => this.unserve(vm, 'lockstepd is stopping')));
    await Promise.all([...this.resumePoints.values()].map((p) => p.discard()));
    this.resumePoints.clear();
  }

  private storeRoot(): string {
    return path.join(this.config.ft.memoryDir, 'stores');
  }

  /**
   * The owner began a new FT run (a mirror stream for a run already used): the old run goes — its
   * checkpoints are superseded by the new run's first, a full image — and a fresh one is built behind it.
   * The stream that asked is refused meanwhile; the owner's mirror tries again.
   */
  private renewFtRun(vm: VmName, slot: Served, why: string): void {
    const old = slot.ft;
    if (old === null) return;
    slot.ft = null;
    this.log(`VM ${vm}: a fresh FT run of its copy (${why})`);
    slot.work = slot.work.then(async () => {
      await old.close();
      if (slot.stopping) return;
      try {
        slot.ft = await this.startFtRun(vm, slot, parseVmHardware(this.hardware.get(vm)));
      } catch (e) {
        this.exportFailed(vm, slot, describeError(e));
      }
    });
  }

  private async startFtRun(vm: VmName, slot: Served, hw: VmHardware): Promise<FtCopyRun> {
    // FT protects a VM of one disk (vm-definition.ts `protectionProblem`).
    const disk = hw.disks[0]!;
    const group = storageGroupOf(this.config.storageGroups, disk.storageGroup, this.config.host);
    const storeDir = path.join(this.storeRoot(), `${vm}.${++this.runCounter}`);
    // The FT room watch (ft-room.ts) admitted it; this is the last word, as the tmpfs is now: a store the
    // tmpfs cannot hold fails here (MEMORY_DIR_FULL, the export's failure) rather than at its first full image.
    // The directory is made first: a host that never ran a guest nor held a store has none yet.
    await mkdir(this.storeRoot(), { recursive: true });
    await ensureRamRoom(this.config.ft.memoryDir, path.join(storeDir, 'ram.img'), hw.memoryMiB * 1024 * 1024, vm);
    const run = await FtCopyRun.start({
      vm,
      disk: volumePath(group, vm, disk.format),
      format: disk.format,
      memoryMiB: hw.memoryMiB,
      socketDir: this.socketDir,
      storeDir,
      onHandedOver: () => {
        slot.ftWanted = false;
      },
      log: { info: (m) => this.log(m), warn: (m) => this.log(m) },
    });
    this.watchExit(vm, slot, run.exited);
    return run;
  }

  /**
   * This host's copy of each of the VM's disks, made empty of the disk's size where there is none yet; the
   * files by disk index. A new copy must fit as a new VM's disk must on its owner (docs/ha.md): the export
   * fails at once, with the reason, instead of the mirror later — every new copy of a group counted together.
   * A group this host lacks: UNKNOWN_STORAGE_GROUP, reported to the core as the export's failure.
   */
  private async ensureCopies(vm: VmName, hw: VmHardware, volumes: string[]): Promise<string[]> {
    const placed = hw.disks.map((disk, i) => {
      const group = storageGroupOf(this.config.storageGroups, disk.storageGroup, this.config.host);
      return { disk, group, file: volumePath(group, volumes[i]!, disk.format) };
    });
    const newBytes = new Map<StorageGroupConfig, number>();
    for (const { disk, group, file } of placed) {
      if (!(await exists(file))) newBytes.set(group, (newBytes.get(group) ?? 0) + disk.sizeMiB * 1024 * 1024);
    }
    for (const [group, bytes] of newBytes) {
      const usage = groupUsage(group.sizeMiB, await fileSystemSpace(group.path), await groupFileAllocations(group));
      const problem = volumeFitProblem(group, usage, bytes);
      if (problem !== null) throw new LockstepError('STORAGE_GROUP_FULL', `no copy of VM ${vm} on ${this.config.host}: ${problem}`, { vm, storageGroup: group.name });
    }
    for (const { disk, file } of placed) await ensureDisk(file, disk.sizeMiB, disk.format);
    return placed.map((p) => p.file);
  }

  private watchExit(vm: VmName, slot: Served, exited: CopyExport['exited']): void {
    void exited.then((exit) => {
      if (slot.stopping || this.served.get(vm) !== slot) return;
      // A renewed FT run stops its old export on purpose.
      if (slot.ftWanted && slot.ft !== null && slot.ft.exited !== exited) return;
      const why = `qemu-nbd exited (${exit.signal ?? `exit ${exit.code}`})${exit.stderrTail ? `: ${exit.stderrTail.trim().split('\n').at(-1)}` : ''}`;
      this.exportFailed(vm, slot, why);
    });
  }

  private exportFailed(vm: VmName, slot: Served, why: string): void {
    if (this.served.get(vm) !== slot) return;
    this.log(`the export of VM ${vm}'s copy died: ${why}`);
    if (slot.ft) {
      this.served.delete(vm);
      void slot.ft.close();
    } else {
      // The other disks' exports go too (the next serve, all of them, waits until they have).
      void this.unserve(vm, `the export of one of its disks died`);
    }
    this.report(vm, { kind: 'export-failed', reason: why });
  }

  private async startExport(vm: VmName, slot: Served, hardwareRaw: unknown): Promise<void> {
    if (slot.stopping) return;
    try {
      this.hardware.set(vm, hardwareRaw);
      const hw = parseVmHardware(hardwareRaw);
      slot.volumes = hw.disks.map((_, i) => volumeName(vm, i));
      const files = await this.ensureCopies(vm, hw, slot.volumes);
      let pids: number[];
      if (slot.ftWanted && hw.disks.length === 1) {
        slot.ft = await this.startFtRun(vm, slot, hw);
        pids = [slot.ft.pid];
      } else {
        for (const [i, volume] of slot.volumes.entries()) {
          const x = await CopyExport.start({ vm: volume, disk: files[i]!, format: hw.disks[i]!.format, socketPath: path.join(this.socketDir, `${volume}.sock`) });
          slot.exports.push(x);
          this.watchExit(vm, slot, x.exited);
          if (slot.stopping) break; // unserve() is waiting behind us and stops what started
        }
        pids = slot.exports.map((x) => x.pid);
      }
      this.lastStartFailure.delete(vm);
      if (slot.stopping) return; // unserve() is waiting behind us and stops it
      this.log(`serving this host's copy of VM ${vm}${slot.ft ? ' for FT' : ''} (qemu-nbd pid ${pids.join(', ')})`);
      this.report(vm, { kind: 'export-ready' });
    } catch (e) {
      if (this.served.get(vm) === slot) this.served.delete(vm);
      // Exports of the disks before the one that failed: the core serves the copy again, all of it.
      await Promise.all(slot.exports.splice(0).map((x) => x.stop().catch(() => undefined)));
      const reason = describeError(e);
      if (this.lastStartFailure.get(vm) !== reason) this.log(`could not serve VM ${vm}'s copy: ${reason}`);
      this.lastStartFailure.set(vm, reason);
      this.report(vm, { kind: 'export-failed', reason });
    }
  }
}
