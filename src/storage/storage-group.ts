/**
 * Storage groups: where a host keeps its volumes. A group is a directory on the host (its own file system,
 * or a part of one) with an optional size cap; each VM's volume belongs to one group, named in the VM's
 * replicated hardware, so both hosts of a pair must configure the groups their protected VMs use.
 *
 * The pure parts (the config section, the volume's file name, the usage arithmetic) come first; reading
 * the file system (`statfs`, each volume's allocated blocks) is at the end.
 */
import { readdir, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';

/** The name of the group every config has unless it says otherwise; old VM records belong to it. */
export const DEFAULT_STORAGE_GROUP = 'default';

export const VOLUME_FORMATS = ['qcow2', 'raw'] as const;
export type VolumeFormat = (typeof VOLUME_FORMATS)[number];

/** A storage group as a host's config declares it. */
export interface StorageGroupConfig {
  name: string;
  /** An absolute directory: the volumes are files in it. */
  path: string;
  /** A cap on what the group's volumes may allocate; null: the file system's size. */
  sizeMiB: number | null;
}

const GROUP_NAME = /^[a-z][a-z0-9-]{0,30}$/;
const GROUP_KEYS = ['name', 'path', 'sizeMiB'] as const;
/** A cap beyond any disk a host has (16 EiB) is a typo. */
const GROUP_SIZE_MIB_MAX = 16 * 1024 ** 4;
/** Enough for any host; a bound keeps one config from making the usage of every request unbounded. */
const GROUPS_MAX = 64;
const MIB = 1024 * 1024;

type Bad = (key: string, why: string, value?: unknown) => never;

/**
 * The `storageGroups` section: names `[a-z][a-z0-9-]{0,30}`, absolute paths, no name or path twice.
 * Absent: one group `default` at `<dataDir>/disks`, where every VM disk was before storage groups existed.
 */
export function parseStorageGroups(raw: unknown, dataDir: string, bad: Bad): StorageGroupConfig[] {
  if (raw === undefined) return [{ name: DEFAULT_STORAGE_GROUP, path: path.join(dataDir, 'disks'), sizeMiB: null }];
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > GROUPS_MAX) bad('storageGroups', `must list 1 to ${GROUPS_MAX} storage groups`);
  const groups = (raw as unknown[]).map((g, i): StorageGroupConfig => {
    const at = `storageGroups[${i}]`;
    if (typeof g !== 'object' || g === null || Array.isArray(g)) return bad(at, 'must be a JSON object');
    const o = g as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!(GROUP_KEYS as readonly string[]).includes(k)) bad(`${at}.${k}`, `is not a known field (known: ${GROUP_KEYS.join(', ')})`);
    const name = o['name'];
    if (typeof name !== 'string' || !GROUP_NAME.test(name)) bad(`${at}.name`, 'must match [a-z][a-z0-9-]{0,30}', name);
    const dir = o['path'];
    if (typeof dir !== 'string' || !path.isAbsolute(dir)) bad(`${at}.path`, 'must be an absolute path', dir);
    const size = o['sizeMiB'] ?? null;
    if (size !== null && (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > GROUP_SIZE_MIB_MAX)) {
      bad(`${at}.sizeMiB`, `must be an integer number of MiB from 1 to ${GROUP_SIZE_MIB_MAX}`, size);
    }
    return { name: name as string, path: path.resolve(dir as string), sizeMiB: size as number | null };
  });
  groups.forEach((g, i) => {
    if (groups.findIndex((o) => o.name === g.name) !== i) bad(`storageGroups[${i}].name`, 'names a group twice', g.name);
    // Two groups in one directory would hold one VM's volume twice over in their counts.
    if (groups.findIndex((o) => o.path === g.path) !== i) bad(`storageGroups[${i}].path`, 'is the path of another group', g.path);
  });
  return groups;
}

/**
 * A volume's name: its VM's for the VM's first disk, `<vm>.disk<N>` for the others (`volumeName` in
 * src/daemon/vm-definition.ts). Replication streams and copy exports are per volume, so they carry it.
 */
export const VOLUME_NAME_RE = /^[a-z][a-z0-9-]{0,30}(\.disk[1-9])?$/;
export const VOLUME_NAME_BYTES_MAX = 37;

/** The VM a volume belongs to. */
export function vmOfVolume(volume: string): string {
  return volume.split('.')[0]!;
}

/**
 * A volume in a group: `<group path>/<volume>.<format>` — the VM's own disk on its owner, the copy on its
 * peer. A volume is named after its VM and disk (`volumeName` in src/daemon/vm-definition.ts).
 */
export function volumePath(group: StorageGroupConfig, volume: string, format: VolumeFormat): string {
  return path.join(group.path, `${volume}.${format}`);
}

/** Where a group keeps the virtual CDs this host received into it (src/storage/vcd.ts): apart from the volumes. */
export function vcdDirectory(group: StorageGroupConfig): string {
  return path.join(group.path, 'vcds');
}

/** Where a group keeps this host's snapshots and imported images (src/daemon/snapshots.ts): apart from the volumes. */
export function snapshotDirectory(group: StorageGroupConfig): string {
  return path.join(group.path, 'snapshots');
}

/**
 * The group of `name` on this host, or `UNKNOWN_STORAGE_GROUP`: thrown when a host is asked to run or serve
 * a volume in a group it does not have (its peer defined the VM, and this host's config lacks the group).
 */
export function storageGroupOf(groups: readonly StorageGroupConfig[], name: string, host: string): StorageGroupConfig {
  const g = groups.find((x) => x.name === name);
  if (!g) {
    throw new LockstepError('UNKNOWN_STORAGE_GROUP', `storage group '${name}' is not configured on ${host} (it has ${groups.map((x) => x.name).join(', ')})`, { storageGroup: name, host });
  }
  return g;
}

/** The file of a volume on this host; `UNKNOWN_STORAGE_GROUP` when its group is not configured here. */
export function locateVolume(groups: readonly StorageGroupConfig[], host: string, volume: string, disk: { storageGroup: string; format: VolumeFormat }): string {
  return volumePath(storageGroupOf(groups, disk.storageGroup, host), volume, disk.format);
}

/** What a group holds and has left, in bytes. */
export interface GroupUsage {
  capacityBytes: number;
  usedBytes: number;
  freeBytes: number;
  volumeCount: number;
}

/** The file system under a group's directory, as `statfs` reports it (free: what an unprivileged writer may use). */
export interface FileSystemSpace {
  totalBytes: number;
  freeBytes: number;
}

/**
 * A group's usage: capacity is its cap, or the file system's size without one; used is what its volumes
 * have allocated; free is the lower of the file system's free space (other files share it) and what the cap
 * leaves. Never negative: a group over its cap (volumes grew) has nothing free.
 */
export function groupUsage(sizeMiB: number | null, fs: FileSystemSpace, allocatedBytes: readonly number[]): GroupUsage {
  const capacityBytes = sizeMiB === null ? fs.totalBytes : sizeMiB * MIB;
  const usedBytes = allocatedBytes.reduce((a, b) => a + b, 0);
  return { capacityBytes, usedBytes, freeBytes: Math.max(0, Math.min(fs.freeBytes, capacityBytes - usedBytes)), volumeCount: allocatedBytes.length };
}

/**
 * Why a new volume of `sizeBytes` does not fit in a group with `usage` (null: it fits). Its whole size is
 * counted, since a thin image grows to it: a copy that runs out of space half-way through a resync would fail
 * the mirror, and with it the protection, long after anyone could have been told at its start.
 */
export function volumeFitProblem(group: StorageGroupConfig, usage: GroupUsage, sizeBytes: number): string | null {
  if (sizeBytes <= usage.freeBytes) return null;
  return `a ${Math.ceil(sizeBytes / MIB)} MiB volume does not fit in storage group '${group.name}' (${group.path}): ${Math.floor(usage.freeBytes / MIB)} MiB free`;
}

// ── the file system ────────────────────────────────────────────────────────────────────────────────────

/**
 * The space of the file system a group's directory is (or will be) on. A group's directory is made with
 * its first volume, so until then the nearest existing parent tells which file system that will be.
 */
export async function fileSystemSpace(dir: string): Promise<FileSystemSpace> {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      const s = await statfs(d);
      return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || d === path.dirname(d)) throw e;
    }
  }
}

/**
 * The bytes allocated by the volume files (`<vm>.qcow2`, `<vm>.raw`) in a group's directory now, and by its
 * virtual CDs: what a host that knows no VM records (the backup making a copy) counts against the group. A
 * directory not made yet holds nothing.
 */
export async function groupFileAllocations(group: StorageGroupConfig): Promise<number[]> {
  const volumes = (await filesIn(group.path)).filter((n) => VOLUME_FORMATS.some((f) => n.endsWith(`.${f}`)));
  const files = await Promise.all(volumes.map((n) => volumeFile(path.join(group.path, n))));
  return [...files.flatMap((f) => (f.kind === 'present' ? [f.allocatedBytes] : [])), ...(await vcdAllocations(group))];
}

/**
 * The bytes allocated by the virtual CDs in a group (`vcds/*.iso`) and by its snapshots and images
 * (`snapshots/*`, those being made included): they take the group's space as volumes do.
 */
export async function vcdAllocations(group: StorageGroupConfig): Promise<number[]> {
  const dir = vcdDirectory(group);
  const images = (await filesIn(dir)).filter((n) => n.endsWith('.iso'));
  const snapDir = snapshotDirectory(group);
  const snapshots = await filesIn(snapDir);
  const files = await Promise.all([...images.map((n) => volumeFile(path.join(dir, n))), ...snapshots.map((n) => volumeFile(path.join(snapDir, n)))]);
  return files.flatMap((f) => (f.kind === 'present' ? [f.allocatedBytes] : []));
}

/** The names in a directory; none when it is not made yet. */
async function filesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** A volume's file on this host: the bytes it has allocated (a thin image is smaller than its size), or why not. */
export type VolumeFile = { kind: 'present'; allocatedBytes: number } | { kind: 'missing' } | { kind: 'unreadable'; reason: string };

export async function volumeFile(file: string): Promise<VolumeFile> {
  try {
    const s = await stat(file);
    if (!s.isFile()) return { kind: 'unreadable', reason: `${file} is not a regular file` };
    return { kind: 'present', allocatedBytes: s.blocks * 512 };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'unreadable', reason: `cannot read ${file}: ${(e as Error).message}` };
  }
}
