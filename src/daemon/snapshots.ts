/**
 * This host's snapshots and imported images (docs/snapshots.md). A snapshot is a point-in-time,
 * crash-consistent qcow2 copy of one of a VM's volumes (one disk: `disk`, its index), `snapshots/<id>.qcow2` in the volume's storage group on the
 * host that took it; an image is an uploaded qcow2 or raw file, `snapshots/<id>.<format>`, checked by
 * qemu-img before it is kept. Either can be the source of a new VM. Neither is replicated: the records are
 * this host's (its state database's `snapshots` table), the files its disk's.
 *
 * A record is written `creating` before its file is begun and `ready` only once the file is complete and
 * renamed into place (fsynced, with its directory), so a record is never `ready` without its whole file; a
 * failure marks it `failed` with why, and its file is never kept. At start, what a crash cut off (records
 * still `creating`, scratch files) becomes `failed` and is removed (`recover`).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError, describeError } from '../util/errors.js';
import { snapshotDirectory, storageGroupOf, volumePath, type StorageGroupConfig } from '../storage/storage-group.js';
import { inspectImage, snapshotOffline } from '../storage/snapshot-image.js';
import type { IncomingImage } from '../storage/vcd-store.js';
import type { SnapshotRow, StateDb } from './state-db.js';
import { diskAt, diskId, parseVmHardware, volumeName, type VmHardware, type VmImageSource } from './vm-definition.js';

/** A snapshot or image as the API shows it. */
export interface Snapshot extends SnapshotRow {
  host: string;
  /** When it was made, ISO 8601 (for a live snapshot: the moment of its point in time). */
  created: string;
  /** Its file on this host (null unless ready). */
  path: string | null;
  /** What its file takes on disk (null: not ready). */
  fileBytes: number | null;
}

/** What taking a snapshot reads of the daemon. */
export interface SnapshotPorts {
  /** The VM as the core knows it, or null. */
  vm(name: string): { owner: string; state: string; hardware: unknown; copyHere: boolean | null } | null;
  /** Whether a QEMU of the VM runs (or starts, stops) on this host. */
  runsHere(name: string): boolean;
  /** A live snapshot of disk `disk` through the VM's QEMU here (VmRunner.snapshot). */
  live(name: string, disk: number, target: string, id: string, hw: VmHardware, onPointInTime: () => void): Promise<void>;
  /** The disks of the VMs defined now whose hardware names a source image: the VM, the disk's index, its source. */
  sources(): { vm: string; disk: number; source: VmImageSource; hw: VmHardware }[];
  log(line: string): void;
}

/** A description: free text, bounded so a record stays small. */
export const DESCRIPTION_CHARS_MAX = 256;
/** An upload's limit: the largest volume a VM may have (vm-definition.ts diskMiB's bound is far beyond any test). */
export const IMAGE_BYTES_MAX = 2 * 1024 ** 4;
/** Fewer than this cannot be a disk image (one qcow2 header cluster, or a raw disk's first sector). */
const IMAGE_BYTES_MIN = 512;
const SNAPSHOTS_MAX = 1000;

export class SnapshotStore {
  /** Snapshots being taken now, by VM: one at a time per VM (each is a full copy of its disk). */
  private readonly taking = new Set<string>();
  private receivingBytes = 0;

  constructor(
    private readonly host: string,
    private readonly groups: readonly StorageGroupConfig[],
    private readonly db: StateDb,
    private readonly ports: SnapshotPorts,
  ) {}

  /** Every snapshot and image of this host, oldest first; of one VM when `vm` is given. */
  async list(vm?: string): Promise<Snapshot[]> {
    const rows = this.db.snapshots().filter((r) => vm === undefined || r.vm === vm);
    return Promise.all(rows.map((r) => this.view(r)));
  }

  async get(id: string): Promise<Snapshot> {
    const row = this.db.snapshots().find((r) => r.id === id);
    if (!row) throw unknown(id, this.host);
    return this.view(row);
  }

  /** The file of a ready snapshot or image, to stream (export) or to make a volume from. */
  async readyFile(id: string): Promise<{ snapshot: Snapshot; path: string; bytes: number }> {
    const s = await this.get(id);
    if (s.state !== 'ready' || s.path === null || s.fileBytes === null) {
      throw new LockstepError('UNKNOWN_SNAPSHOT', `snapshot ${id} on ${this.host} is ${s.state}, not ready: it has no image${s.error ? ` (${s.error})` : ''}`, { snapshot: id, state: s.state });
    }
    return { snapshot: s, path: s.path, bytes: (await stat(s.path)).size };
  }

  /** The file's bytes as a stream. */
  stream(file: string): AsyncIterable<Buffer> {
    return createReadStream(file);
  }

  /**
   * Takes a snapshot of disk `disk` (its index) of VM `vm` here. A running VM: only on the host it runs on, live. A stopped VM: on a
   * host whose volume is current (its owner, whose disk it last ran on, or a host whose copy the core
   * records current). Refused (`SNAPSHOT_REFUSED`) otherwise, and while another snapshot of it is taken.
   * `availableBytes` is the group's room (volumes.ts groupRoom): a snapshot takes at most the volume's size.
   */
  async take(vm: string, disk: number, description: string, availableBytes: number): Promise<Snapshot> {
    const known = this.ports.vm(vm);
    if (!known) throw new LockstepError('UNKNOWN_VM', `no VM named '${vm}'`, { vm });
    const hw = parseVmHardware(known.hardware);
    const source = diskAt(vm, hw, disk);
    const group = storageGroupOf(this.groups, source.storageGroup, this.host);
    const running = this.ports.runsHere(vm);
    if (!running) {
      if (known.owner !== this.host && ['running', 'protected', 'syncing', 'downgraded', 'starting', 'migrating'].includes(known.state)) {
        throw refused(vm, `it runs on ${known.owner}: ask that host (a running VM's snapshot is taken where it runs)`);
      }
      if (known.owner !== this.host && known.copyHere !== true) {
        throw refused(vm, `${this.host}'s copy of its volume is not known current (its owner ${known.owner} holds the current one): ask ${known.owner}`);
      }
      if (known.state !== 'stopped' && known.state !== 'failed' && known.state !== 'host-down') {
        throw refused(vm, `it is ${known.state} and its QEMU does not run here`);
      }
    }
    const volume = volumePath(group, volumeName(vm, disk), source.format);
    if (!running) {
      try {
        await stat(volume);
      } catch {
        throw refused(vm, `it has no volume on ${this.host} yet (it never started here)`);
      }
    }
    if (this.taking.has(vm)) throw refused(vm, 'a snapshot of it is being taken now');
    if (this.db.snapshots().length >= SNAPSHOTS_MAX) throw refused(vm, `${this.host} holds ${SNAPSHOTS_MAX} snapshots and images already: delete some first`);
    const sizeBytes = source.sizeMiB * 1024 * 1024;
    if (sizeBytes > availableBytes) {
      throw new LockstepError('STORAGE_GROUP_FULL', `a snapshot of VM ${vm}'s ${diskId(disk)} may take up to its ${source.sizeMiB} MiB in storage group '${group.name}' on ${this.host}: ${Math.floor(availableBytes / 1024 / 1024)} MiB available`, { vm, storageGroup: group.name, bytes: sizeBytes, availableBytes });
    }
    this.taking.add(vm);
    const row: SnapshotRow = {
      id: newId('snap'),
      kind: 'snapshot',
      vm,
      disk,
      storageGroup: group.name,
      file: '',
      format: 'qcow2',
      createdMs: Date.now(),
      virtualBytes: sizeBytes,
      state: 'creating',
      description: checkDescription(description),
      error: null,
    };
    row.file = `${row.id}.qcow2`;
    try {
      this.db.saveSnapshot(row);
      const dir = snapshotDirectory(group);
      await mkdir(dir, { recursive: true });
      const target = path.join(dir, row.file);
      if (running) {
        await this.ports.live(vm, disk, target, row.id, hw, () => (row.createdMs = Date.now()));
      } else {
        await snapshotOffline(volume, source.format, target);
      }
      row.virtualBytes = (await inspectImage(target, `snapshot ${row.id}`)).virtualBytes;
      row.state = 'ready';
      this.db.saveSnapshot(row);
      this.ports.log(`snapshot ${row.id} of VM ${vm}'s ${diskId(disk)} ready (${running ? 'live' : 'stopped'})`);
      return await this.view(row);
    } catch (e) {
      await this.fail(row, group, e);
      if (e instanceof LockstepError && e.code !== 'STATE_DB') throw e;
      throw new LockstepError('SNAPSHOT_FAILED', `the snapshot of VM ${vm} failed: ${describeError(e)}`, { vm, snapshot: row.id }, { cause: e });
    } finally {
      this.taking.delete(vm);
    }
  }

  /**
   * Receives an uploaded disk image into `groupName`: streamed to a hidden file in its `snapshots/`
   * directory, then read by qemu-img (`IMAGE_INVALID`: not qcow2 or raw, a backing or data file, cut short),
   * kept `ready` as `img-<id>.<format>`. Refused before a byte is read when it cannot fit
   * (`STORAGE_GROUP_FULL`, `availableBytes` less the uploads under way) or is too small to be an image.
   * Nothing is kept of a refused upload.
   */
  async receive(image: IncomingImage, groupName: string, description: string, availableBytes: number): Promise<Snapshot> {
    const group = storageGroupOf(this.groups, groupName, this.host);
    const desc = checkDescription(description);
    if (image.bytes < IMAGE_BYTES_MIN) throw new LockstepError('IMAGE_INVALID', `an image of ${image.bytes} bytes cannot be a VM's disk: ${IMAGE_BYTES_MIN} at least`, { bytes: image.bytes });
    const room = Math.max(0, availableBytes - this.receivingBytes);
    if (image.bytes > room) {
      throw new LockstepError('STORAGE_GROUP_FULL', `the image (${Math.ceil(image.bytes / 1024 / 1024)} MiB) does not fit in storage group '${group.name}' on ${this.host}: ${Math.floor(room / 1024 / 1024)} MiB available`, { storageGroup: group.name, bytes: image.bytes, availableBytes: room });
    }
    if (this.db.snapshots().length >= SNAPSHOTS_MAX) throw new LockstepError('COMMAND_REFUSED', `${this.host} holds ${SNAPSHOTS_MAX} snapshots and images already: delete some first`, { command: 'import-image' });
    this.receivingBytes += image.bytes;
    const id = newId('img');
    const dir = snapshotDirectory(group);
    const tmp = path.join(dir, `.${id}.upload`);
    try {
      await mkdir(dir, { recursive: true });
      await receiveInto(tmp, image, group.name, this.host);
      const info = await inspectImage(tmp, 'the uploaded image');
      const row: SnapshotRow = { id, kind: 'image', vm: null, disk: null, storageGroup: group.name, file: `${id}.${info.format}`, format: info.format, createdMs: Date.now(), virtualBytes: info.virtualBytes, state: 'ready', description: desc, error: null };
      await rename(tmp, path.join(dir, row.file));
      await fsyncDir(dir);
      // The record after the file: a file without its record is swept at start, a record never lacks its file.
      this.db.saveSnapshot(row);
      this.ports.log(`image ${id} imported: ${info.format}, ${info.virtualBytes} bytes`);
      return await this.view(row);
    } finally {
      this.receivingBytes -= image.bytes;
      await rm(tmp, { force: true });
    }
  }

  /**
   * Deletes a snapshot or image: refused (`SNAPSHOT_IN_USE`) while a VM made from it has no volume here yet
   * (its first start needs the image). The file first, then the record.
   */
  async remove(id: string): Promise<void> {
    const s = await this.get(id);
    if (s.state === 'creating') throw new LockstepError('SNAPSHOT_IN_USE', `snapshot ${id} is being taken now: delete it once it is ready or failed`, { snapshot: id });
    const waiting: string[] = [];
    for (const { vm, disk, source, hw } of this.ports.sources()) {
      if (source.host !== this.host || source.image !== id) continue;
      const { storageGroup, format } = hw.disks[disk]!;
      const group = this.groups.find((g) => g.name === storageGroup);
      const made = group ? await fileExists(volumePath(group, volumeName(vm, disk), format)) : false;
      if (!made && !waiting.includes(vm)) waiting.push(vm);
    }
    if (waiting.length > 0) {
      throw new LockstepError('SNAPSHOT_IN_USE', `${s.kind} ${id} is the source of ${waiting.map((v) => `VM ${v}`).join(', ')}, whose volume is made from it at the first start: start or delete the VM first`, { snapshot: id, vms: waiting });
    }
    const group = this.groups.find((g) => g.name === s.storageGroup);
    if (group) await rm(path.join(snapshotDirectory(group), s.file), { force: true });
    this.db.deleteSnapshot(id);
  }

  /**
   * At start, before any snapshot can be under way: records a crash left `creating` become `failed`,
   * scratch files (`.*`) and files no record names are removed. Returns what it did, for the log.
   */
  async recover(): Promise<string[]> {
    const done: string[] = [];
    const rows = this.db.snapshots();
    for (const r of rows.filter((x) => x.state === 'creating')) {
      const group = this.groups.find((g) => g.name === r.storageGroup);
      if (group) await rm(path.join(snapshotDirectory(group), r.file), { force: true });
      this.db.saveSnapshot({ ...r, state: 'failed', error: 'lockstepd stopped while it was being taken' });
      done.push(`snapshot ${r.id} was cut off by a restart: failed`);
    }
    const named = new Set(rows.filter((r) => r.state === 'ready').map((r) => `${r.storageGroup}/${r.file}`));
    for (const g of this.groups) {
      let names: string[];
      try {
        names = await readdir(snapshotDirectory(g));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      for (const n of names.filter((x) => x.startsWith('.') || !named.has(`${g.name}/${x}`))) {
        await rm(path.join(snapshotDirectory(g), n), { force: true });
        done.push(`removed ${path.join(snapshotDirectory(g), n)}`);
      }
    }
    return done;
  }

  private async fail(row: SnapshotRow, group: StorageGroupConfig, e: unknown): Promise<void> {
    await rm(path.join(snapshotDirectory(group), row.file), { force: true });
    try {
      this.db.saveSnapshot({ ...row, state: 'failed', error: describeError(e) });
    } catch (dbError) {
      this.ports.log(`snapshot ${row.id}: cannot record its failure: ${describeError(dbError)}`);
    }
    this.ports.log(`snapshot ${row.id} of VM ${row.vm} failed: ${describeError(e)}`);
  }

  private async view(r: SnapshotRow): Promise<Snapshot> {
    const group = this.groups.find((g) => g.name === r.storageGroup);
    const file = group && r.state === 'ready' ? path.join(snapshotDirectory(group), r.file) : null;
    let fileBytes: number | null = null;
    if (file) {
      try {
        fileBytes = (await stat(file)).blocks * 512;
      } catch {
        fileBytes = null;
      }
    }
    return { ...r, host: this.host, created: new Date(r.createdMs).toISOString(), path: file, fileBytes };
  }
}

/** The hardware source of a VM made from snapshot or image `s` of this host. */
export function sourceOf(s: Snapshot): VmImageSource {
  return { host: s.host, image: s.id, storageGroup: s.storageGroup, file: s.file };
}

function newId(prefix: 'snap' | 'img'): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

function checkDescription(d: string): string {
  if (d.length > DESCRIPTION_CHARS_MAX || /[\u0000-\u001f\u007f]/.test(d)) {
    throw new LockstepError('INVALID_ARGUMENT', `a description is at most ${DESCRIPTION_CHARS_MAX} printable characters`, { field: 'description' });
  }
  return d;
}

function refused(vm: string, why: string): LockstepError {
  return new LockstepError('SNAPSHOT_REFUSED', `no snapshot of VM ${vm} on this host: ${why}`, { vm });
}

function unknown(id: string, host: string): LockstepError {
  return new LockstepError('UNKNOWN_SNAPSHOT', `no snapshot or image '${id}' on ${host} (they stay on the host that made or received them)`, { snapshot: id, host });
}

async function fileExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Streams an upload into `file` (created exclusively), fsynced; `IMAGE_INVALID` when it ends short. */
async function receiveInto(file: string, image: IncomingImage, group: string, host: string): Promise<void> {
  const fh = await open(file, 'wx', 0o600);
  try {
    let received = 0;
    // Read by hand, not `for await`: leaving that loop would destroy the request, and with it the
    // connection its refusal is to be answered on (as vcd-store.ts).
    const chunks = image.stream[Symbol.asyncIterator]();
    try {
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
        received += next.value.length;
        if (received > image.bytes) break;
        await fh.write(next.value);
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC') throw new LockstepError('STORAGE_GROUP_FULL', `storage group '${group}' on ${host} ran out of space receiving an image`, { storageGroup: group });
      if (code === 'ECONNRESET' || (e as Error).message === 'aborted') throw short(received, image.bytes);
      throw e;
    }
    if (received !== image.bytes) throw short(received, image.bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function short(received: number, bytes: number): LockstepError {
  return new LockstepError('IMAGE_INVALID', `the image's upload ended after ${received} of its ${bytes} bytes: nothing was kept`, { receivedBytes: received, bytes });
}

/** The ports of a running daemon: its core's view of the VMs and its runner's QEMUs. */
export function daemonSnapshotPorts(d: {
  driver: () => { view(): { vms: readonly { name: string; owner: string; state: string; hardware: unknown; copies: { here: boolean | null } }[] } } | null;
  runner: () => { running(): readonly { name: string }[]; snapshot(name: string, disk: number, target: string, id: string, hw: VmHardware, onPointInTime: () => void): Promise<void> } | null;
  log: (line: string) => void;
}): SnapshotPorts {
  const vms = () => d.driver()?.view().vms ?? [];
  return {
    vm: (name) => {
      const v = vms().find((x) => x.name === name);
      return v ? { owner: v.owner, state: v.state, hardware: v.hardware, copyHere: v.copies.here } : null;
    },
    runsHere: (name) => (d.runner()?.running() ?? []).some((r) => r.name === name),
    live: (name, disk, target, id, hw, onPointInTime) => {
      const runner = d.runner();
      if (!runner) throw new LockstepError('VM_NOT_RUNNING', `VM ${name} does not run here`, { vm: name });
      return runner.snapshot(name, disk, target, id, hw, onPointInTime);
    },
    sources: () =>
      vms().flatMap((v) => {
        try {
          const hw = parseVmHardware(v.hardware);
          return hw.disks.flatMap((d, disk) => (d.source ? [{ vm: v.name, disk, source: d.source, hw }] : []));
        } catch {
          return [];
        }
      }),
    log: d.log,
  };
}
