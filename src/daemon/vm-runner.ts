/**
 * The QEMU processes of one host, started and stopped on the decision core's orders, with the mirror of each
 * protected VM's disk into the peer's copy (HA). Each start is an *instance* named by the core; everything
 * that happens to it (started, failed to start, exited and why; its mirror syncing, in sync, stalled, ended)
 * is reported back with that instance id, so a late event of an old instance can never be mistaken for the
 * current one. The runner decides nothing: whether a VM should run, and be mirrored, is the core's call.
 *
 * A protected VM's QEMU starts paused: its write tracking (the dirty bitmap an incremental resync needs) is
 * attached before the guest's first write, and when the core asks for a mirror at start, the guest runs only
 * once the peer's copy is in sync — the core counts that copy as current, so no write may miss it.
 *
 * Every VM runs with its RAM in a file (`ft.memoryDir`), so that any VM can become FT while it runs. An FT VM,
 * once its mirror into the peer's epoch disk is in sync, runs under an FT protection run (`ft-owner.ts`):
 * its output held per epoch, released on the peer's ack. A run that loses the peer is reported as a stalled
 * mirror, so the core cuts it only once the peer can no longer take over; the cut is what lets the held
 * output go. A start after an FT takeover resumes the guest from the copy's last committed checkpoint
 * instead of booting it.
 *
 * Protection changing while a VM runs (`protectionChanged`): out of FT, its run is handed over (the peer's
 * copy keeps every write and goes on as HA's; to none, the run simply ends); into FT, its HA mirror ends
 * cleanly and the next one — into the peer's epoch disk, incremental from the dirty bitmap — brings a run.
 */
import { mkdir, rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { LockstepError, describeError } from '../util/errors.js';
import { ensureDisk } from '../storage/disk-image.js';
import type { ResyncRate } from '../storage/resync-rate.js';
import type { ReplicationDialer } from '../storage/replication-stream.js';
import { VmSupervisor, reapStale, type VmExit, type VmInstance } from '../qemu/supervisor.js';
import { runPaths } from '../qemu/run-dir.js';
import { listenForMigration, migrate, waitForIncomingMigration, type MigrationTls } from '../qemu/migration.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import type { MirrorMode, ProtectionLevel, StorageEvent, VmEvent, VmName } from '../core/types.js';
import type { DaemonConfig } from './config.js';
import { diskAt, diskId, parseVmHardware, volumeName, type VcdRef, type VmDisk, type VmHardware } from './vm-definition.js';
import { VmMirrors, diskStreamId, type DiskMirrorProgress } from './vm-mirrors.js';
import { ejectMedium, insertMedium } from '../qemu/cdrom.js';
import type { Vcd } from '../storage/vcd.js';
import { mediumImage } from './cdrom.js';
import { locateVolume, snapshotDirectory, storageGroupOf, vmOfVolume } from '../storage/storage-group.js';
import { exists } from '../storage/disk-image.js';
import { liveSnapshotProblem, snapshotLive, volumeFromImage } from '../storage/snapshot-image.js';
import { addSample, syncRate, type ProgressSample } from '../storage/volume.js';
import type { FtPrimaryStats } from '../ft/ft-primary.js';
import { FtOwner } from './ft-owner.js';
import { ensureTaps, removeTaps, vmNics } from './vm-nics.js';
import { ensureRamRoom } from '../qemu/ram-room.js';
import type { ResumePoint } from './ft-copy.js';

/** `incoming`: a live migration's destination, paused, its guest not running here yet. */
export type VmRunState = 'starting' | 'running' | 'stopping' | 'incoming';

export interface RunningVm {
  name: VmName;
  instance: number;
  state: VmRunState;
  pid: number | null;
  startedAt: string | null;
  /** Its disk's mirror into the peer's copy, and the last sync that completed (for the operator and the tests). */
  mirror: MirrorView | null;
  /** A live migration of it, out of this host (the source's view: progress, then the outcome). */
  migration: MigrationView | null;
  /** FT: the protection run's numbers (null: not FT here, or no run yet). */
  ft: FtView | null;
  /** The checkpoint it was resumed from, for a VM that failed over to this host under FT. */
  resumedFrom: { epoch: number; totalMs: number; resumeMs: number } | null;
}

export type FtView = FtPrimaryStats & { run: number };

/** A live migration as the core names it, with the multifd connections both QEMUs use (0: one stream). */
export interface MigrationPlan {
  id: string;
  multifd: number;
}

export interface MigrationView {
  id: string;
  phase: 'migrating' | 'completed' | 'failed';
  /** QEMU's multifd connections beside the main one; 0: one stream. */
  multifd: number;
  transferredBytes: number | null;
  remainingBytes: number | null;
  totalBytes: number | null;
  mbps: number | null;
  etaMs: number | null;
  downtimeMs?: number;
  totalMs?: number;
  error?: string;
}

export interface MirrorView {
  stream: string;
  mode: MirrorMode;
  state: 'syncing' | 'ready' | 'stalled';
  copiedBytes: number;
  totalBytes: number;
  /** The resync's speed limit now (bytes/s; null: none), and whether it is yielding to guest I/O. */
  limitBytesPerSec: number | null;
  guestBusy: boolean;
  /** How fast the sync copies, measured over its recent progress reports (null: not measured yet, or in sync). */
  bytesPerSec: number | null;
  lastSync: { stream: string; mode: MirrorMode; copiedBytes: number; pauseMs: number; durationMs: number; at: string } | null;
  /** Each disk's mirror, by disk index: the VM's fields above are their sum (bytes) and their worst (state). */
  disks: MirrorDiskView[];
}

/** One disk's part of the mirror (a stall is the VM's: its state says it). */
export type MirrorDiskView = Pick<DiskMirrorProgress, 'state' | 'copiedBytes' | 'totalBytes'>;

export interface LastExit extends VmExit {
  instance: number;
  at: string;
  expected: boolean;
}

interface Slot {
  instance: number;
  state: VmRunState;
  qemu: VmInstance | null;
  startedAt: string | null;
  /** A stop arrived while QEMU was still starting: stop it as soon as it is up. */
  stopWanted: boolean;
  /** Its disks' mirrors into the peer's copies (protected VMs), and the stream (disk 0's) they run over now. */
  mirror: VmMirrors | null;
  /** Its volumes, by disk index: the replication streams to cut are theirs. */
  volumes: string[];
  stream: string | null;
  view: MirrorView | null;
  /** The current sync's recent progress, for its rate. */
  samples: ProgressSample[];
  lastSync: MirrorView['lastSync'];
  migration: MigrationView | null;
  /** An incoming instance: resolves once the migration's state is all here (rejects if it never is). */
  received: Promise<void> | null;
  /** Run under FT whenever its mirror is in sync (SplitSite allowing FT at the start): the VM is FT now. */
  ftWanted: boolean;
  /** Whether the mirror now running was started into an FT run's epoch disk (the VM was FT then). */
  mirrorForFt: boolean;
  /**
   * The peer's copy may lack writes the dirty bitmap does not show: an FT run dropped uncommitted epochs
   * there, or the guest was resumed (tracked only since). Its mirrors then copy the whole disk.
   */
  fullResync: boolean;
  ft: FtOwner | null;
  resumedFrom: RunningVm['resumedFrom'];
  /** Files of its RAM, removed once its QEMU has exited. */
  memoryPaths: string[];
  /** Its taps made for this instance, removed once its QEMU has exited. */
  taps: string[];
  /** The QEMU ids of its NICs (FT gates each one's output). */
  nicIds: string[];
}

/** What the core asks of a start: with `mirror`, the guest runs only once the peer's copy is in sync. */
export interface StartRequest {
  instance: number;
  hardware: unknown;
  /** Protected VMs track their writes (so a later resync can be incremental). */
  protectedVm: boolean;
  /** An FT VM: a protection run whenever its mirror is in sync and SplitSite allows FT. */
  ft?: boolean;
  mirror?: { stream: string; mode: MirrorMode };
}

/** The host-local parts the runner needs from the rest of the daemon. */
export interface VmRunnerPorts {
  report(vm: VmName, event: VmEvent): void;
  reportStorage(vm: VmName, event: StorageEvent): void;
  onPidsChanged(pids: number[]): void;
  /** Resolves once this host's export of the VM's copy (if any) has let go of the image. */
  copyReleased(vm: VmName): Promise<void>;
  /** The owner side of replication streams (null until the pair's certificates exist). */
  dialer(): ReplicationDialer | null;
  /** The owner side of FT checkpoint streams (null until the pair's certificates exist). */
  checkpointDialer(): ReplicationDialer | null;
  /** What an FT takeover left to resume `vm` from (once; null when there is none). */
  takeResumePoint(vm: VmName): ResumePoint | null;
  /** Whether SplitSite allows `vm` FT now (the A-Link round trip within the FT limit). */
  ftAllowed(vm: VmName): boolean;
  /** QEMU's TLS for live migrations, with the pair's certificates (null until they exist). */
  migrationTls(): MigrationTls | null;
  /** An incoming instance serves this host's copy from inside its QEMU: the replication server connects streams there. */
  adoptExport(vm: VmName, socketPath: string): void;
  disownExport(vm: VmName): void;
  /** This host's virtual CD of that name (src/storage/vcd-store.ts), or null. */
  findVcd(name: string): Promise<Vcd | null>;
  log(line: string): void;
}

/** Whether a running VM's CD drive took a change: it did, the VM has no QEMU here, or its QEMU is between states. */
export type MediumChange = 'changed' | 'not-here' | 'busy';

/** QEMU's pause target at a live migration's switch; the issue's goal is a downtime within 300 ms. */
const MIGRATION_DOWNTIME_LIMIT_MS = 200;
/** An incoming instance whose migration has not arrived by then is given up (the source failed or was never started). */
const INCOMING_WAIT_MS = 10 * 60_000;
/** How long a resume waits for the last of the migration to be loaded after the source reported the switch. */
const RESUME_WAIT_MS = 30_000;

/** Longest a graceful stop (ACPI power button) may take before SIGKILL. The watchdog may kill sooner. */
const GRACEFUL_STOP_MS = 5000;
/** The VM's CD drive, when it has one: its device id. */
const CDROM_ID = 'cd0';

/** Where this host's QEMUs keep their run directories, one per VM, each reused by every start of it. */
function vmRunRoot(dataDir: string): string {
  return path.join(dataDir, 'run', 'vms');
}

/**
 * The serial log of the VM's QEMU on this host (its console log). Kept when the QEMU exits, as the rest of
 * its run directory; its next start (a boot, an incoming migration, an FT resume) truncates it.
 */
export function vmSerialLog(dataDir: string, name: VmName): string {
  return runPaths(path.join(vmRunRoot(dataDir), name)).serialLog;
}

export class VmRunner {
  private readonly slots = new Map<VmName, Slot>();
  private readonly lastExits = new Map<VmName, LastExit>();
  /** Per VM, the removal of its last instance's taps: a next start waits for it. */
  private readonly tapsRemoved = new Map<VmName, Promise<void>>();
  private readonly supervisor = new VmSupervisor();
  private readonly runRoot: string;
  /** The resync rate in force: the config's at start, then each `setResyncRate`'s. */
  private resyncRate: ResyncRate;

  private readonly report: (vm: VmName, event: VmEvent) => void;
  private readonly log: (line: string) => void;

  constructor(
    private readonly config: DaemonConfig,
    private readonly ports: VmRunnerPorts,
  ) {
    this.runRoot = vmRunRoot(config.dataDir);
    this.resyncRate = config.resync;
    this.report = ports.report;
    this.log = ports.log;
  }

  /** A new resync rate (a preference setter): the mirrors copying now take it at once, the next ones start with it. */
  setResyncRate(rate: ResyncRate): void {
    this.resyncRate = rate;
    for (const slot of this.slots.values()) slot.mirror?.setRate(rate);
  }

  /** At daemon start: a QEMU left by a crashed predecessor runs without authority; kill it before anything. */
  async reapLeftovers(): Promise<void> {
    for (const pid of await reapStale(this.runRoot)) this.log(`reaped a QEMU (pid ${pid}) left by an earlier lockstepd`);
  }

  start(name: VmName, req: StartRequest): void {
    const busy = this.slots.get(name);
    if (busy) {
      // The core starts a VM only once its previous instance is gone; a second start is a driver bug upstream.
      this.report(name, { kind: 'start-failed', instance: req.instance, reason: `instance ${busy.instance} is still ${busy.state}` });
      return;
    }
    const slot = newSlot(req.instance, 'starting', req.ft === true);
    this.slots.set(name, slot);
    void this.launch(name, slot, req);
  }

  /** Mirrors a running instance's disk into the peer's copy over a new stream (the core's `start-mirror`). */
  startMirror(name: VmName, instance: number, stream: string, mode: MirrorMode): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance || !slot.mirror || slot.state !== 'running') {
      this.ports.reportStorage(name, { kind: 'mirror-ended', instance, stream, reason: 'the instance is not running here' });
      return;
    }
    void this.connectMirror(name, slot, stream, mode).catch((e) => {
      this.log(`mirror of VM ${name} (stream ${stream}) failed: ${describeError(e)}`);
      if (slot.stream === stream) this.endMirror(name, slot, describeError(e));
    });
  }

  /**
   * The core's `cut-mirror`: the peer can no longer take the VM over with a copy lacking what follows. The
   * stream is closed: QEMU fails the writes it held, the mirror job ends, and the guest writes alone.
   */
  cutMirror(name: VmName, instance: number, stream: string): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance || slot.stream !== stream) return;
    this.log(`cutting the mirror of VM ${name} (stream ${stream})`);
    // The same condition lets FT's held output go: nobody can resume the VM from an older checkpoint now.
    if (slot.ft?.active) slot.ft.goUnprotected('the decision core cut the mirror: the peer can no longer take the VM over');
    this.cutStreams(slot);
    // The job fails on the closed stream; stop() removes what is left of it, then the core hears it ended.
    void (slot.mirror?.stop() ?? Promise.resolve())
      .catch((e) => this.log(`stopping the mirror of VM ${name}: ${describeError(e)}`))
      .finally(() => {
        if (slot.stream === stream) this.endMirror(name, slot, 'cut');
      });
  }

  /**
   * The dialer lost the TLS side of one volume's stream. Once QEMU was connected, that disk's writes to the
   * copy now wait (the VM's mirror stalls, until the core cuts); before that the stream is simply gone, and
   * the disk's mirror start fails.
   */
  streamBroken(volume: string, diskStream: string, reason: string): void {
    const name = vmOfVolume(volume);
    const slot = this.slots.get(name);
    if (!slot || slot.stream === null || slot.state === 'stopping') return;
    const disk = slot.volumes.indexOf(volume);
    if (disk < 0 || diskStreamId(slot.stream, disk) !== diskStream) return;
    const held = this.ports.dialer()?.status().some((x) => x.vm === volume && x.streamId === diskStream && x.state === 'held');
    if (!held) return;
    if (slot.view) slot.view = { ...slot.view, state: 'stalled' };
    const why = slot.volumes.length === 1 ? reason : `disk ${diskId(disk)}: ${reason}`;
    this.ports.reportStorage(name, { kind: 'mirror-stalled', instance: slot.instance, stream: slot.stream, reason: why });
  }

  stop(name: VmName, instance: number, reason: string): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance) return;
    slot.stopWanted = true;
    if (slot.qemu && slot.state !== 'stopping' && !(slot.state === 'incoming' && slot.received === null)) {
      // A migration's incoming instance, or a source after the switch, has no running guest to power off.
      // (An incoming one still being set up is stopped as soon as it is: `stopWanted`.)
      const graceful = slot.state === 'running' && slot.migration?.phase !== 'completed';
      slot.state = 'stopping';
      this.log(`stopping VM ${name} (instance ${instance}): ${reason}`);
      void slot.qemu.stop({ gracefulMs: graceful ? GRACEFUL_STOP_MS : 0 });
    }
  }

  /** Daemon shutdown: stop every VM gracefully (the core will decide again at the next boot). */
  async shutdown(): Promise<void> {
    await Promise.all(
      [...this.slots.values()].map(async (slot) => {
        slot.stopWanted = true;
        if (!slot.qemu) return;
        slot.state = 'stopping';
        await slot.qemu.stop({ gracefulMs: GRACEFUL_STOP_MS });
        await slot.qemu.exited;
      }),
    );
  }

  running(): RunningVm[] {
    return [...this.slots.entries()]
      .map(([name, s]) => ({
        name,
        instance: s.instance,
        state: s.state,
        pid: s.qemu?.pid ?? null,
        startedAt: s.startedAt,
        mirror: s.view ? { ...s.view, lastSync: s.lastSync } : null,
        migration: s.migration,
        ft: s.ft?.stats ?? null,
        resumedFrom: s.resumedFrom,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  lastExit(name: VmName): LastExit | null {
    return this.lastExits.get(name) ?? null;
  }

  /** The image for a starting VM's CD drive here; none (and a log line saying why) without the very VCD. */
  private async cdromImage(name: VmName, medium: VcdRef | null): Promise<string | null> {
    const { image, note } = await mediumImage(name, this.config.host, medium, this.ports.findVcd);
    if (note !== null) this.log(note);
    return image;
  }

  /**
   * Puts `image` in the CD drive of the VM's running QEMU here, or empties it (null). A VM starting,
   * stopping or migrating in is `busy`: its QEMU is being built from the definition as it was.
   */
  async changeMedium(name: VmName, image: string | null): Promise<MediumChange> {
    const slot = this.slots.get(name);
    if (!slot) return 'not-here';
    if (slot.state !== 'running' || !slot.qemu) return 'busy';
    if (image === null) await ejectMedium(slot.qemu.qmp, CDROM_ID);
    else await insertMedium(slot.qemu.qmp, CDROM_ID, image);
    this.log(`VM ${name}: CD drive ${image === null ? 'emptied' : `now holds ${image}`}`);
    return 'changed';
  }

  /**
   * A live snapshot of one of the running VM's volumes (`disk`, its index in the hardware) into `target`
   * (src/storage/snapshot-image.ts). Which node is copied: a raw volume's file node always (its file never
   * grows, and no mirror job holds it); a qcow2 volume's format node, only while the VM has no mirror
   * (unprotected). A VM that is not running here (`VM_NOT_RUNNING`), is starting, stopping or migrating, runs
   * under FT, or has a mirrored qcow2 volume is refused (`SNAPSHOT_REFUSED`) before anything is made.
   */
  async snapshot(name: VmName, disk: number, target: string, id: string, hw: VmHardware, onPointInTime: () => void): Promise<void> {
    const slot = this.slots.get(name);
    if (!slot || !slot.qemu) throw new LockstepError('VM_NOT_RUNNING', `VM ${name} does not run on ${this.config.host}`, { vm: name });
    if (slot.state !== 'running' || slot.migration) throw refused(name, `it is ${slot.migration ? 'migrating' : slot.state}: take its snapshot once it runs`);
    if (slot.ftWanted || slot.mirrorForFt) throw refused(name, 'it runs under FT, whose checkpointing owns its disk: snapshot it stopped, or as HA');
    const volume = diskAt(name, hw, disk);
    const problem = liveSnapshotProblem(volume.format, slot.mirror !== null);
    if (problem) throw refused(name, problem);
    const node = diskId(disk);
    const source = volume.format === 'raw' ? { kind: 'file' as const, node: `${node}-file`, format: 'raw' as const } : { kind: 'guest' as const, node };
    this.log(`VM ${name}: live snapshot ${id} of its ${volume.format} volume ${node} (${source.kind === 'file' ? 'file node' : 'format node'}) into ${target}`);
    await snapshotLive(slot.qemu.qmp, target, { source, id, onPointInTime });
  }

  private async connectMirror(name: VmName, slot: Slot, stream: string, asked: MirrorMode): Promise<void> {
    const dialer = this.ports.dialer();
    const mirrors = slot.mirror;
    if (!dialer || !mirrors) throw new Error('no replication stream to the peer yet');
    const mode: MirrorMode = slot.fullResync ? 'full' : asked;
    slot.stream = stream;
    slot.mirrorForFt = slot.ftWanted;
    const startedAt = performance.now();
    slot.view = mirrorView(stream, mode, mirrors.diskProgress(), null);
    slot.samples = [];
    this.ports.reportStorage(name, { kind: 'mirror-syncing', instance: slot.instance, stream });
    const onProgress = (disks: DiskMirrorProgress[]): void => {
      if (slot.view?.stream !== stream) return;
      slot.samples = addSample(slot.samples, { atMs: performance.now(), copiedBytes: sum(disks.map((d) => d.copiedBytes)) });
      slot.view = mirrorView(stream, mode, disks, syncRate(slot.samples));
    };
    mirrors.on('progress', onProgress);
    try {
      const ready = await mirrors.start({ streamId: stream, mode, rate: this.resyncRate, open: (volume, diskStream) => dialer.open(volume, diskStream) });
      const durationMs = performance.now() - startedAt;
      this.log(`mirror of VM ${name} in sync (stream ${stream}, ${mode}: ${ready.copiedBytes} bytes copied in ${Math.round(durationMs)} ms, guest paused ${ready.pauseMs.toFixed(1)} ms)`);
      if (slot.stream !== stream) return;
      slot.lastSync = { stream, mode, copiedBytes: ready.copiedBytes, pauseMs: ready.pauseMs, durationMs, at: new Date().toISOString() };
      slot.view = mirrorView(stream, mode, mirrors.diskProgress(), null);
      slot.samples = [];
      this.ports.reportStorage(name, { kind: 'mirror-ready', instance: slot.instance, stream });
    } finally {
      mirrors.off('progress', onProgress);
    }
    if (!slot.ftWanted) return;
    // It became FT while this mirror synced into an HA copy: the next one goes into an epoch disk.
    if (!slot.mirrorForFt) return this.remirrorForFt(name, slot);
    if (this.ports.ftAllowed(name)) await this.protectFt(name, slot, stream);
    else this.log(`VM ${name}: mirrored as HA, not FT: the A-Link round trip is over SplitSite's FT limit (FT begins when it is restored)`);
  }

  /**
   * SplitSite allows FT again: an FT VM running here with its mirror in sync and no protection run (it was
   * mirrored as HA) begins one over that mirror. The peer's epoch disk is still direct: it holds no epoch.
   */
  ftAllowed(name: VmName): void {
    const slot = this.slots.get(name);
    if (!slot || !slot.ftWanted || slot.state !== 'running' || slot.view?.state !== 'ready' || slot.stream === null || slot.ft?.active) return;
    this.log(`VM ${name}: SplitSite allows FT again: starting a protection run over mirror ${slot.stream}`);
    void this.protectFt(name, slot, slot.stream);
  }

  /**
   * An FT protection run over the mirror now in sync. Its failure to start, like a run that loses the peer
   * later, is reported as the mirror stalling: the core then cuts it once the peer no longer counts its
   * copy as current (or is gone), and a new mirror brings a new run.
   */
  private async protectFt(name: VmName, slot: Slot, stream: string): Promise<void> {
    const qemu = slot.qemu;
    const mirror = slot.mirror;
    const checkpoints = this.ports.checkpointDialer();
    if (!qemu || !mirror) return;
    // FT checkpoints one disk (vm-definition.ts `protectionProblem` refuses more); a VM of several stays HA.
    if (mirror.disks.length !== 1) {
      this.log(`VM ${name}: not FT: it has ${mirror.disks.length} disks, and FT protects a VM of one; mirrored as HA`);
      return;
    }
    slot.ft ??= new FtOwner({
      vm: qemu,
      nicIds: slot.nicIds,
      runDir: path.join(this.runRoot, name),
      epochMs: this.config.ft.epochMs,
      log: { info: (m) => this.log(m), warn: (m) => this.log(m) },
      onLost: (e) => this.ftLost(name, slot, e.message),
    });
    try {
      if (!checkpoints) throw new Error('no checkpoint stream to the peer yet');
      // From the run's first epoch the peer's copy may drop epochs the bitmap no longer shows.
      slot.fullResync = true;
      await slot.ft.protect(mirror.disks[0]!, () => checkpoints.open(name, `${stream}.ft`));
    } catch (e) {
      this.log(`VM ${name}: FT protection did not start: ${describeError(e)}`);
      this.ftLost(name, slot, `FT protection did not start: ${describeError(e)}`);
    }
  }

  /**
   * The VM's protection as the decision core's record has it now (after each decision). Only a VM running
   * here changes; one starting, stopping or migrating takes its protection at its next start.
   */
  protectionChanged(name: VmName, level: ProtectionLevel): void {
    const slot = this.slots.get(name);
    if (!slot || slot.state !== 'running' || slot.migration?.phase === 'migrating') return;
    const ft = level === 'ft';
    if (ft === slot.ftWanted) return;
    slot.ftWanted = ft;
    if (ft) {
      this.log(`VM ${name} is FT now`);
      if (slot.stream !== null && slot.view?.state === 'ready') void this.remirrorForFt(name, slot);
      return;
    }
    const owner = slot.ft;
    if (!owner?.protecting) return;
    if (level === 'none') {
      owner.goUnprotected('its protection was changed to none');
      return;
    }
    this.log(`VM ${name} is HA now: handing its FT run over`);
    // A handover that fails is the run's loss: `onLost` reports it, as any.
    void owner.handOver().catch((e) => this.log(`VM ${name}: the handover of its FT run failed: ${describeError(e)}`));
  }

  /**
   * Into FT while mirrored as HA: the mirror ends cleanly (its copy identical, the bitmap keeping every
   * later write), the core mirrors again — the peer serves its copy as an FT run by then — and the run
   * starts once that mirror is in sync.
   */
  private async remirrorForFt(name: VmName, slot: Slot): Promise<void> {
    const stream = slot.stream;
    if (stream === null || !slot.mirror) return;
    this.log(`VM ${name}: ending mirror ${stream} so that the next one goes into the peer's epoch disk`);
    try {
      await slot.mirror.stop();
    } catch (e) {
      this.log(`stopping the mirror of VM ${name}: ${describeError(e)}`);
    }
    if (slot.stream === stream) this.endMirror(name, slot, 'its protection changed to FT: the next mirror goes into the peer\'s epoch disk');
  }

  private ftLost(name: VmName, slot: Slot, reason: string): void {
    const stream = slot.stream;
    if (stream === null || this.slots.get(name) !== slot || slot.state === 'stopping') return;
    if (slot.view) slot.view = { ...slot.view, state: 'stalled' };
    this.ports.reportStorage(name, { kind: 'mirror-stalled', instance: slot.instance, stream, reason: `FT: ${reason}` });
  }

  private endMirror(name: VmName, slot: Slot, reason: string): void {
    const stream = slot.stream;
    if (stream === null) return;
    slot.stream = null;
    slot.view = null;
    this.cutStreams(slot);
    if (slot.state !== 'stopping' && this.slots.get(name) === slot) this.ports.reportStorage(name, { kind: 'mirror-ended', instance: slot.instance, stream, reason });
  }

  /** Cuts the replication stream of each of the VM's volumes (the dialer's streams are per volume). */
  private cutStreams(slot: Slot): void {
    const dialer = this.ports.dialer();
    for (const volume of slot.volumes) dialer?.cut(volume);
  }

  /**
   * The destination of a live migration: a QEMU on this host's copy, paused and listening for the source
   * (QEMU's TLS, the pair's certificates), serving the copy from inside itself to the source's mirror
   * (an NBD export, writable, writing through) until the switch.
   */
  prepareIncoming(name: VmName, instance: number, migration: MigrationPlan, hardware: unknown, ftVm: boolean): void {
    const busy = this.slots.get(name);
    if (busy) {
      this.report(name, { kind: 'start-failed', instance, reason: `instance ${busy.instance} is still ${busy.state}` });
      return;
    }
    // An FT VM is checkpointed here once its mirror into the old source's copy is in sync.
    const slot = newSlot(instance, 'incoming', ftVm);
    this.slots.set(name, slot);
    void this.launchIncoming(name, slot, migration, hardware);
  }

  private async launchIncoming(name: VmName, slot: Slot, migration: MigrationPlan, hardware: unknown): Promise<void> {
    let qemu: VmInstance | null = null;
    try {
      const tls = this.ports.migrationTls();
      if (!tls) throw new Error('no pair certificates for the migration yet');
      // Beside the copy's export: an incoming QEMU opens its disk inactive (no lock, no write) until the
      // switch, so the copy stays served and current while this QEMU starts.
      const spec = await this.prepare(name, parseVmHardware(hardware), slot);
      await this.ensureRamRoom(spec);
      qemu = await this.supervisor.start(spec, { runDir: path.join(this.runRoot, name), paused: true, incoming: true });
      slot.qemu = qemu;
      this.ports.onPidsChanged(this.pids());
      void qemu.exited.then((exit) => this.onExit(name, slot, exit));
      const listening = await listenForMigration(qemu.qmp, { uri: `tcp:${this.config.alink[0]!.local}:0`, tls, multifdChannels: multifdOption(migration) });
      const port = Number(/:(\d+)$/.exec(listening.uri)?.[1]);
      slot.received = waitForIncomingMigration(qemu.qmp, { timeoutMs: INCOMING_WAIT_MS }).then(() => undefined);
      slot.received.catch(() => undefined);
      this.log(`VM ${name}: incoming instance ${slot.instance} for live migration ${migration.id} listens on port ${port} (${streamsOf(migration)})`);
      this.report(name, { kind: 'incoming-started', instance: slot.instance, port });
      // The core gave the migration up while this QEMU was starting: it goes now.
      if (slot.stopWanted) this.stop(name, slot.instance, 'stop asked while the incoming instance started');
    } catch (e) {
      this.log(`VM ${name}: the incoming instance for live migration ${migration.id} failed: ${describeError(e)}`);
      this.ports.disownExport(name);
      await this.failStart(name, slot, qemu, e);
    }
  }

  /**
   * The incoming instance takes the copy over: once the export has let go of the image, the copy is served
   * from inside this QEMU (its NBD server: writable, writing through; adding it activates the disk).
   */
  exportIncoming(name: VmName, instance: number): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance || slot.state !== 'incoming' || !slot.qemu) return;
    const qemu = slot.qemu;
    void (async () => {
      try {
        await this.ports.copyReleased(name);
        const exportSocket = path.join(this.config.dataDir, 'run', 'exports', `${name}.incoming.sock`);
        await qemu.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: exportSocket } } });
        // One NBD server, an export per disk named after its volume: each disk's stream asks for its own.
        for (const [i, volume] of slot.volumes.entries()) {
          await qemu.qmp.execute('block-export-add', { type: 'nbd', id: incomingExportId(i), 'node-name': diskId(i), name: volume, writable: true, writethrough: true });
        }
        this.ports.adoptExport(name, exportSocket);
        this.report(name, { kind: 'incoming-ready', instance });
      } catch (e) {
        this.log(`VM ${name}: the incoming instance could not serve the copy: ${describeError(e)}`);
        this.ports.disownExport(name);
        await this.failStart(name, slot, qemu, e);
      }
    })();
  }

  /** The source of a live migration: the guest moves to the peer's incoming instance, its disk already in sync there. */
  migrateOut(name: VmName, instance: number, migration: MigrationPlan, port: number): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance || slot.state !== 'running' || !slot.qemu) {
      this.report(name, { kind: 'migration-failed', instance, migration: migration.id, reason: 'the instance is not running here' });
      return;
    }
    void this.runMigration(name, slot, slot.qemu, migration, port);
  }

  private async runMigration(name: VmName, slot: Slot, qemu: VmInstance, plan: MigrationPlan, port: number): Promise<void> {
    const migration = plan.id;
    const view: MigrationView = { id: migration, phase: 'migrating', multifd: plan.multifd, transferredBytes: null, remainingBytes: null, totalBytes: null, mbps: null, etaMs: null };
    slot.migration = view;
    let mirrorStopped = false;
    try {
      const tls = this.ports.migrationTls();
      if (!tls) throw new Error('no pair certificates for the migration yet');
      this.log(`VM ${name}: live migration ${migration} to ${this.config.pair.peer}:${port} (${streamsOf(plan)})`);
      const result = await migrate(qemu.qmp, {
        uri: `tcp:${this.config.alink[0]!.peer}:${port}`,
        downtimeLimitMs: MIGRATION_DOWNTIME_LIMIT_MS,
        autoConverge: true,
        tls,
        multifdChannels: multifdOption(plan),
        // The guest is paused for the switch: every write it made is on the peer's copy (the mirror is in
        // sync). End the mirror without waiting for more; the peer's QEMU takes the disk over as it is.
        pauseBeforeSwitchover: async () => {
          await slot.mirror?.stop();
          mirrorStopped = true;
        },
        onProgress: (p) => {
          const mbps = p.mbps ?? null;
          slot.migration = {
            ...view,
            transferredBytes: p.transferredBytes,
            remainingBytes: p.remainingBytes,
            totalBytes: p.totalBytes,
            mbps,
            etaMs: mbps && p.remainingBytes !== null && mbps > 0 ? Math.round((p.remainingBytes * 8) / (mbps * 1000)) : null,
          };
        },
      });
      slot.migration = { ...view, phase: 'completed', transferredBytes: result.transferredBytes, remainingBytes: 0, downtimeMs: result.downtimeMs, totalMs: result.totalMs };
      slot.stream = null;
      slot.view = null;
      this.cutStreams(slot);
      this.log(`VM ${name}: live migration ${migration} completed in ${result.totalMs} ms, downtime ${result.downtimeMs} ms, ${result.transferredBytes} bytes`);
      this.report(name, { kind: 'migrated', instance: slot.instance, migration });
    } catch (e) {
      slot.migration = { ...view, phase: 'failed', error: describeError(e) };
      this.log(`VM ${name}: live migration ${migration} failed: ${describeError(e)}`);
      if (mirrorStopped) this.endMirror(name, slot, 'stopped for a live migration that then failed');
      this.report(name, { kind: 'migration-failed', instance: slot.instance, migration, reason: describeError(e) });
    }
  }

  /**
   * The destination takes the guest: once the migration's state is all here, its write tracking starts (the
   * copies were identical at the switch), the export to the old source ends, and the guest runs.
   */
  resume(name: VmName, instance: number): void {
    const slot = this.slots.get(name);
    if (!slot || slot.instance !== instance || slot.state !== 'incoming' || !slot.qemu) {
      this.report(name, { kind: 'start-failed', instance, reason: 'no incoming instance to resume here' });
      return;
    }
    slot.state = 'starting';
    void this.resumeIncoming(name, slot, slot.qemu);
  }

  private async resumeIncoming(name: VmName, slot: Slot, qemu: VmInstance): Promise<void> {
    try {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the migration did not arrive within ${RESUME_WAIT_MS} ms`)), RESUME_WAIT_MS)));
      try {
        await Promise.race([slot.received ?? Promise.reject(new Error('no migration was awaited')), late]);
      } finally {
        clearTimeout(timer);
      }
      for (const i of slot.volumes.keys()) await qemu.qmp.execute('block-export-del', { id: incomingExportId(i), mode: 'hard' });
      await qemu.qmp.execute('nbd-server-stop');
      this.ports.disownExport(name);
      slot.mirror = await VmMirrors.attach(qemu.qmp, name, slot.volumes.length, this.log);
      this.watchMirror(name, slot, slot.mirror);
      await qemu.qmp.execute('cont');
    } catch (e) {
      this.ports.disownExport(name);
      await this.failStart(name, slot, qemu, e);
      return;
    }
    slot.startedAt = new Date().toISOString();
    slot.state = 'running';
    this.log(`VM ${name} resumed here after its live migration (instance ${slot.instance})`);
    this.report(name, { kind: 'started', instance: slot.instance });
    if (slot.stopWanted) this.stop(name, slot.instance, 'stop asked while resuming');
  }

  private watchMirror(name: VmName, slot: Slot, mirror: VmMirrors): void {
    mirror.on('failed', (f) => {
      if (slot.stream === f.streamId) {
        this.log(`mirror of VM ${name} (stream ${f.streamId}) failed: ${f.reason}`);
        // Under FT the run loses the peer with it and holds the output: the core's cut ends the mirror.
        if (slot.ft?.active) return;
        this.endMirror(name, slot, f.reason);
      }
    });
  }

  /** A start that got as far as a QEMU but cannot go on: that QEMU never ran the guest; gone before it is reported. */
  private async failStart(name: VmName, slot: Slot, qemu: VmInstance | null, e: unknown): Promise<void> {
    slot.stopWanted = true;
    if (qemu) {
      this.cutStreams(slot);
      this.ports.checkpointDialer()?.cut(name);
      await slot.ft?.close();
      await qemu.stop({ gracefulMs: 0 }).catch(() => undefined);
      await qemu.exited;
    }
    await this.removeMemory(slot);
    await this.removeTaps(name, slot);
    if (this.slots.get(name) === slot) this.slots.delete(name);
    this.ports.onPidsChanged(this.pids());
    this.report(name, { kind: 'start-failed', instance: slot.instance, reason: describeError(e) });
  }

  pids(): number[] {
    return [...this.slots.values()].flatMap((s) => (s.qemu ? [s.qemu.pid] : []));
  }

  /** QMP `query-status` of every running VM within the timeout: the health monitor's QEMU check. */
  async qmpResponsive(timeoutMs: number): Promise<'ok' | 'failed'> {
    const qemus = [...this.slots.values()].flatMap((s) => (s.qemu && s.state === 'running' ? [s.qemu] : []));
    const answers = await Promise.all(
      qemus.map((q) =>
        q.qmp.execute('query-status', undefined, { timeoutMs }).then(
          () => true,
          () => false,
        ),
      ),
    );
    return answers.every(Boolean) ? 'ok' : 'failed';
  }

  private async launch(name: VmName, slot: Slot, req: StartRequest): Promise<void> {
    let qemu: VmInstance | null = null;
    try {
      await this.ports.copyReleased(name);
      const spec = await this.prepare(name, parseVmHardware(req.hardware), slot);
      const runDir = path.join(this.runRoot, name);
      qemu = await this.resumeFromCheckpoint(name, slot, spec, runDir);
      if (qemu === null) {
        await this.ensureRamRoom(spec);
        qemu = await this.supervisor.start(spec, { runDir, paused: req.protectedVm });
      }
      slot.qemu = qemu;
      this.ports.onPidsChanged(this.pids());
      void qemu.exited.then((exit) => this.onExit(name, slot, exit));
      if (req.protectedVm) {
        // A resumed guest already runs: its writes are tracked from here, and its first mirror is full.
        slot.mirror = await VmMirrors.attach(qemu.qmp, name, slot.volumes.length, this.log);
        this.watchMirror(name, slot, slot.mirror);
        if (req.mirror) await this.connectMirror(name, slot, req.mirror.stream, req.mirror.mode);
        if (slot.resumedFrom === null) await qemu.qmp.execute('cont');
      }
    } catch (e) {
      this.log(`VM ${name} (instance ${slot.instance}) failed to start: ${describeError(e)}`);
      await this.failStart(name, slot, qemu, e);
      return;
    }
    slot.startedAt = new Date().toISOString();
    slot.state = 'running';
    this.log(`started VM ${name} (instance ${slot.instance}, QEMU pid ${qemu.pid})`);
    this.report(name, { kind: 'started', instance: slot.instance });
    if (slot.stopWanted) this.stop(name, slot.instance, 'stop asked while starting');
  }

  /**
   * After an FT takeover: the guest resumed from the copy's last committed checkpoint (running, announced on
   * the business network), or null to boot as usual — no resume point, or the resume failed (then the copy,
   * at that checkpoint's disk, is booted: a crash-consistent restart instead of no downtime).
   */
  private async resumeFromCheckpoint(name: VmName, slot: Slot, spec: VmSpec, runDir: string): Promise<VmInstance | null> {
    const point = this.ports.takeResumePoint(name);
    if (point === null) return null;
    try {
      const t = await point.resume(this.supervisor, spec, { runDir });
      slot.memoryPaths.push(point.storeDir);
      // Its writes are tracked only from the resume.
      slot.fullResync = true;
      slot.resumedFrom = { epoch: t.epoch, totalMs: Math.round(t.timings.totalMs), resumeMs: Math.round(t.timings.resumeMs) };
      this.log(
        `VM ${name} resumed from FT checkpoint ${t.epoch} (release ${Math.round(t.timings.releaseMs)} ms, resume ${Math.round(t.timings.resumeMs)} ms, dropped epochs ${t.discarded.discardedEpochs.join(', ') || 'none'})`,
      );
      return t.resumed.vm;
    } catch (e) {
      this.log(`VM ${name}: could not resume from FT checkpoint ${point.epoch}, booting from its copy instead: ${describeError(e)}`);
      await point.discard();
      return null;
    }
  }

  private async removeMemory(slot: Slot): Promise<void> {
    for (const p of slot.memoryPaths.splice(0)) await rm(p, { recursive: true, force: true }).catch((e) => this.log(`removing ${p}: ${describeError(e)}`));
  }

  /** The instance's taps go once its QEMU has exited (a failed removal is logged: the next start reuses them). */
  private removeTaps(name: VmName, slot: Slot): Promise<void> {
    const taps = slot.taps.splice(0);
    const removed = removeTaps(taps).catch((e) => this.log(`VM ${name}: removing its taps ${taps.join(', ')}: ${describeError(e)}`));
    this.tapsRemoved.set(name, removed);
    return removed;
  }

  private onExit(name: VmName, slot: Slot, exit: VmExit): void {
    if (this.slots.get(name) !== slot) return; // a start that failed reported it already
    this.slots.delete(name);
    void this.removeTaps(name, slot);
    this.ports.onPidsChanged(this.pids());
    this.ports.checkpointDialer()?.cut(name);
    // An incoming instance that goes before it resumed (its migration abandoned or failed) served the copy
    // from inside itself: the copy server serves it from its own export again.
    this.ports.disownExport(name);
    // Held output goes with the gate, never sent: its epochs are not on the peer, whose copy is then the
    // state of the last acked checkpoint — what clients saw.
    void slot.ft?.close().finally(() => this.removeMemory(slot));
    if (slot.ft === null) void this.removeMemory(slot);
    if (slot.stream !== null) this.cutStreams(slot);
    const expected = slot.stopWanted;
    this.lastExits.set(name, { ...exit, instance: slot.instance, at: new Date().toISOString(), expected });
    const detail = exit.signal ? ` (${exit.signal})` : exit.code !== null ? ` (exit ${exit.code})` : '';
    // QEMU's last words say why it died (an assertion, a refused device state); its run directory goes with the next start.
    const said = expected ? '' : lastStderrLine(exit.stderrTail);
    this.log(`VM ${name} (instance ${slot.instance}) exited: ${exit.cause}${detail}${expected ? '' : ' — not asked to stop'}${said ? `; QEMU said: ${said}` : ''}`);
    // A guest that powered off, or a QEMU told to quit, left no write in flight: its disk is what it acknowledged.
    const clean = exit.shutdownReason === 'guest-shutdown' || exit.shutdownReason === 'host-qmp-quit';
    this.report(name, { kind: 'exited', instance: slot.instance, cause: exit.cause, expected, clean });
  }

  /** A guest resumed from a checkpoint maps the store's image instead: only a new RAM file is checked. */
  private async ensureRamRoom(spec: VmSpec): Promise<void> {
    if (spec.memoryBackend) await ensureRamRoom(this.config.ft.memoryDir, spec.memoryBackend.path, spec.memoryMiB * 1024 * 1024, spec.name);
  }

  /**
   * The host-local half of starting a VM: its volume in its storage group here and its taps. A group this
   * host lacks fails the start with `UNKNOWN_STORAGE_GROUP`, which the start's failure names in the log.
   */
  private async prepare(name: VmName, hw: VmHardware, slot: Slot): Promise<VmSpec> {
    slot.volumes = hw.disks.map((_, i) => volumeName(name, i));
    const disks: VmSpec['disks'] = [];
    for (const [i, disk] of hw.disks.entries()) {
      disks.push({ id: diskId(i), path: await this.prepareVolume(name, slot.volumes[i]!, disk), format: disk.format, cache: 'writeback' });
    }
    const nics = vmNics(name, hw.nics);
    // The taps of an instance that just exited may still be going: made again only once they are gone.
    await this.tapsRemoved.get(name);
    slot.taps = nics.map((n) => n.tap);
    slot.nicIds = nics.map((n) => n.id);
    await ensureTaps(slot.taps, this.config.businessBridge);
    // Every VM's RAM is in a file, so that any VM can become FT while it runs: FT's checkpoint engine reads
    // the guest's RAM from it (src/ft/checkpoint.ts). It is removed when its QEMU is gone (`removeMemory`).
    const memoryPath = path.join(this.config.ft.memoryDir, `${name}.ram`);
    await mkdir(this.config.ft.memoryDir, { recursive: true, mode: 0o700 });
    slot.memoryPaths.push(memoryPath);
    return {
      memoryBackend: { path: memoryPath },
      name,
      vcpus: hw.vcpus,
      memoryMiB: hw.memoryMiB,
      accel: this.config.accel,
      boot: hw.guest,
      disks,
      nics,
      ...(hw.cdrom ? { cdrom: { id: CDROM_ID, medium: await this.cdromImage(name, hw.cdrom.medium) } } : {}),
      // Every VM has the heartbeat port; only a guest whose agent beats is watched (guest-heartbeat.ts).
      heartbeat: { timeoutMs: this.config.guestHeartbeatTimeoutMs },
    };
  }

  /**
   * One disk's volume here, made if it is not there yet. A disk made from a snapshot or an imported image:
   * its first start makes the volume from the image, and only the host holding it can (images are not
   * replicated; HA's full sync then brings the volume over).
   */
  private async prepareVolume(name: VmName, volume: string, disk: VmDisk): Promise<string> {
    const file = locateVolume(this.config.storageGroups, this.config.host, volume, disk);
    const source = disk.source;
    if (source && !(await exists(file))) {
      if (source.host !== this.config.host) {
        throw new LockstepError('SNAPSHOT_REFUSED', `VM ${name}'s first start must be on ${source.host}, which holds the image ${source.image} its volume ${volume} is made from; ${this.config.host} does not`, { vm: name, host: source.host });
      }
      const image = path.join(snapshotDirectory(storageGroupOf(this.config.storageGroups, source.storageGroup, this.config.host)), source.file);
      await mkdir(path.dirname(file), { recursive: true });
      this.log(`VM ${name}: making its volume ${volume} from image ${source.image} (${image})`);
      await volumeFromImage(image, file, disk.format, disk.sizeMiB);
    }
    await ensureDisk(file, disk.sizeMiB, disk.format);
    return file;
  }
}

/** The migration library's option: none for one stream. */
function multifdOption(plan: MigrationPlan): number | undefined {
  return plan.multifd > 0 ? plan.multifd : undefined;
}

function streamsOf(plan: MigrationPlan): string {
  return plan.multifd > 0 ? `multifd ${plan.multifd}` : 'one stream';
}

/** A disk's export from a migration's incoming QEMU. */
function incomingExportId(disk: number): string {
  return `copy-${diskId(disk)}`;
}

/** The VM's mirror as the API shows it: its disks' bytes summed, its state the least advanced of theirs. */
function mirrorView(stream: string, mode: MirrorMode, disks: DiskMirrorProgress[], bytesPerSec: number | null): MirrorView {
  const ready = disks.every((d) => d.state === 'ready');
  const limits = disks.flatMap((d) => (d.state === 'syncing' && d.limitBytesPerSec !== null ? [d.limitBytesPerSec] : []));
  return {
    stream,
    mode,
    state: ready ? 'ready' : 'syncing',
    copiedBytes: sum(disks.map((d) => d.copiedBytes)),
    totalBytes: sum(disks.map((d) => d.totalBytes)),
    limitBytesPerSec: ready || limits.length === 0 ? null : Math.min(...limits),
    guestBusy: !ready && disks.some((d) => d.guestBusy),
    bytesPerSec: ready ? null : bytesPerSec,
    lastSync: null,
    disks: disks.map((d) => ({ state: d.state, copiedBytes: d.copiedBytes, totalBytes: d.totalBytes })),
  };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function newSlot(instance: number, state: VmRunState, ftWanted: boolean): Slot {
  return {
    instance,
    state,
    qemu: null,
    startedAt: null,
    stopWanted: false,
    mirror: null,
    volumes: [],
    stream: null,
    view: null,
    samples: [],
    lastSync: null,
    migration: null,
    received: null,
    ftWanted,
    mirrorForFt: false,
    // An FT VM's copy on the peer is what its last run left (later epochs dropped): whole at the first mirror.
    fullResync: ftWanted,
    ft: null,
    resumedFrom: null,
    memoryPaths: [],
    taps: [],
    nicIds: [],
  };
}

/** The last non-empty line QEMU wrote to stderr, cut to what a log line carries. */
function lastStderrLine(tail: string): string {
  const line = tail.trim().split('\n').at(-1)?.trim() ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

function refused(vm: VmName, why: string): LockstepError {
  return new LockstepError('SNAPSHOT_REFUSED', `no live snapshot of VM ${vm}: ${why}`, { vm });
}
