/**
 * The backup half of HA on one host: this host's copies of the disks of protected VMs its peer runs, each
 * served by a `qemu-nbd` (`src/storage/copy-export.ts`), and the replication server on the A-Link addresses
 * that connects the owner's mirror streams to them (`src/storage/replication-stream.ts`).
 *
 * It decides nothing: the decision core says which copies to serve (`serve-copy`, `unserve-copy`), and
 * hears back what happened (`export-ready`, `export-failed`, `stream-open`). A copy is either served here or
 * opened by this host's own QEMU, never both: `released(vm)` lets the VM runner wait until an export has let
 * go of the image before it starts the VM on it (the image lock would refuse QEMU otherwise).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { CopyExport } from '../storage/copy-export.js';
import { ReplicationServer } from '../storage/replication-stream.js';
import { ensureDisk, exists } from '../storage/disk-image.js';
import type { AlinkTlsContext } from '../alink/tls.js';
import type { StorageEvent, VmName } from '../core/types.js';
import { LockstepError, describeError } from '../util/errors.js';
import type { DaemonConfig } from './config.js';
import { parseVmHardware } from './vm-definition.js';
import { fileSystemSpace, groupFileAllocations, groupUsage, storageGroupOf, volumeFitProblem, volumePath } from '../storage/storage-group.js';

interface Served {
  /** Serialises this VM's start and stop: each step waits for the one before. */
  work: Promise<void>;
  export: CopyExport | null;
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
  private readonly server: ReplicationServer;
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
      resolve: (vm) => {
        const incoming = this.adopted.get(vm);
        if (incoming !== undefined) return incoming;
        const x = this.served.get(vm)?.export;
        return x && !this.served.get(vm)!.stopping ? x.socketPath : null;
      },
      log: { info: (m) => log(`replication: ${m}`), warn: (m) => log(`replication: ${m}`) },
    });
    this.server.on('stream-open', (vm, stream) => {
      log(`replication stream ${stream} of VM ${vm} connected to this host's copy`);
      report(vm, { kind: 'stream-open', stream });
    });
    this.server.on('stream-closed', (vm, stream, reason) => log(`replication stream ${stream} of VM ${vm} closed: ${reason}`));
  }

  async start(): Promise<void> {
    await mkdir(this.socketDir, { recursive: true });
    await this.server.start();
  }

  /** Serves this host's copy of `vm` (made empty, of the VM's size, if there is none yet). */
  serve(vm: VmName, hardwareRaw: unknown): void {
    const before = this.served.get(vm);
    const slot: Served = { work: Promise.resolve(), export: null, stopping: false };
    slot.work = (before?.work ?? Promise.resolve()).then(() => this.startExport(vm, slot, hardwareRaw));
    this.served.set(vm, slot);
  }

  /** Stops serving `vm`'s copy; resolves once qemu-nbd has let go of the image. */
  unserve(vm: VmName, reason: string): Promise<void> {
    const slot = this.served.get(vm);
    if (!slot) return Promise.resolve();
    slot.stopping = true;
    this.served.delete(vm);
    slot.work = slot.work.then(async () => {
      if (!slot.export) return;
      this.log(`stopping the export of VM ${vm}'s copy: ${reason}`);
      await slot.export.stop().catch((e) => this.log(`stopping the export of VM ${vm}: ${describeError(e)}`));
    });
    this.pending.set(vm, slot.work);
    void slot.work.finally(() => {
      if (this.pending.get(vm) === slot.work) this.pending.delete(vm);
    });
    return slot.work;
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

  async close(): Promise<void> {
    await this.server.close();
    await Promise.all([...this.served.keys()].map((vm) => this.unserve(vm, 'lockstepd is stopping')));
  }

  private async startExport(vm: VmName, slot: Served, hardwareRaw: unknown): Promise<void> {
    if (slot.stopping) return;
    try {
      const hw = parseVmHardware(hardwareRaw);
      // A group this host lacks: UNKNOWN_STORAGE_GROUP, reported to the core as the export's failure.
      const group = storageGroupOf(this.config.storageGroups, hw.disk.storageGroup, this.config.host);
      const disk = volumePath(group, vm, hw.disk.format);
      // A new copy must fit as a new VM's disk must on its owner (docs/ha.md): the export fails at once,
      // with the reason, instead of the mirror later.
      if (!(await exists(disk))) {
        const usage = groupUsage(group.sizeMiB, await fileSystemSpace(group.path), await groupFileAllocations(group));
        const problem = volumeFitProblem(group, usage, hw.diskMiB * 1024 * 1024);
        if (problem !== null) throw new LockstepError('STORAGE_GROUP_FULL', `no copy of VM ${vm} on ${this.config.host}: ${problem}`, { vm, storageGroup: group.name });
      }
      await ensureDisk(disk, hw.diskMiB, hw.disk.format);
      const x = await CopyExport.start({ vm, disk, format: hw.disk.format, socketPath: path.join(this.socketDir, `${vm}.sock`) });
      slot.export = x;
      this.lastStartFailure.delete(vm);
      if (slot.stopping) return; // unserve() is waiting behind us and stops it
      this.log(`serving this host's copy of VM ${vm} (qemu-nbd pid ${x.pid})`);
      this.report(vm, { kind: 'export-ready' });
      void x.exited.then((exit) => {
        if (slot.stopping) return;
        this.served.delete(vm);
        const why = `qemu-nbd exited (${exit.signal ?? `exit ${exit.code}`})${exit.stderrTail ? `: ${exit.stderrTail.trim().split('\n').at(-1)}` : ''}`;
        this.log(`the export of VM ${vm}'s copy died: ${why}`);
        this.report(vm, { kind: 'export-failed', reason: why });
      });
    } catch (e) {
      if (this.served.get(vm) === slot) this.served.delete(vm);
      const reason = describeError(e);
      if (this.lastStartFailure.get(vm) !== reason) this.log(`could not serve VM ${vm}'s copy: ${reason}`);
      this.lastStartFailure.set(vm, reason);
      this.report(vm, { kind: 'export-failed', reason });
    }
  }
}
