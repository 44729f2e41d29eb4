/**
 * Volumes and storage groups as the API shows them, from one host: its config's groups and their usage on
 * its file systems, and each VM's volumes (one per disk) with their state (derived in `src/storage/volume.ts` from this
 * host's file, its disk health, its QEMU and mirror, and the core's copy records). Also the define-time
 * check that a new VM's volume has a group here and fits in it.
 */
import { LockstepError, describeError } from '../util/errors.js';
import { fileSystemSpace, groupUsage, vcdAllocations, volumeFile, volumePath, type StorageGroupConfig, type VolumeFile, type VolumeFormat } from '../storage/storage-group.js';
import { volumeVerdict, type SyncProgress, type VolumeState } from '../storage/volume.js';
import type { HealthSnapshot } from '../core/types.js';
import type { CoreView } from './core-driver.js';
import type { RunningVm } from './vm-runner.js';
import type { ApiContext } from './api.js';
import { DEFAULT_DISK_PLACE, diskId, parseVmHardware, volumeName, type VmDefinition, type VmDisk } from './vm-definition.js';

const MIB = 1024 * 1024;

/** What the volume views read from the running daemon (a part of the API's context). */
export interface VolumeContext {
  host: string;
  storageGroups: readonly StorageGroupConfig[];
  /** The core's view; null before pairing (no VMs are known then). */
  core: CoreView | null;
  running: readonly RunningVm[];
  health: HealthSnapshot | null;
}

/** The volume context of the API's: what it reads of the daemon, now. */
export function volumeContext(ctx: ApiContext): VolumeContext {
  return { host: ctx.host, storageGroups: ctx.storageGroups, core: ctx.driver()?.view() ?? null, running: ctx.running(), health: ctx.health() };
}

export interface VolumeStatus {
  /** The volume's name: its VM's for the first disk, `<vm>.disk<i>` for the others (vm-definition.ts volumeName). */
  name: string;
  vm: string;
  /** The disk the guest sees it as (vda, vdb, …). */
  disk: string;
  /** The host that answered: `file` and the state are as it sees them. */
  host: string;
  owner: string;
  protection: string;
  storageGroup: string;
  format: VolumeFormat;
  sizeBytes: number;
  /** This host's file of the volume (null: its group is not configured here, or it holds no copy by choice). */
  path: string | null;
  /** Bytes the file has allocated (null: no file here). */
  allocatedBytes: number | null;
  state: VolumeState;
  reason: string;
  sync: SyncProgress | null;
}

export interface StorageGroupStatus {
  name: string;
  path: string;
  sizeMiB: number | null;
  /** Null when the file system cannot be read (`error` says why). */
  capacityBytes: number | null;
  usedBytes: number;
  freeBytes: number | null;
  volumeCount: number;
  error: string | null;
}

interface Located {
  vm: CoreView['vms'][number];
  /** The disk's index in the VM's hardware. */
  index: number;
  disk: Pick<VmDisk, 'storageGroup' | 'format'>;
  sizeBytes: number;
  group: StorageGroupConfig | null;
  /** Null: this host holds no file of it (a peer's unprotected VM) or has no path for it (no such group here). */
  path: string | null;
  /** A hardware record this daemon cannot read (from a newer peer, say): the volume is failed with this. */
  unreadable: string | null;
}

/** The VM's volumes, one per disk; one named after the VM, failed, when its hardware cannot be read here. */
function locate(ctx: VolumeContext, vm: CoreView['vms'][number]): Located[] {
  let disks: Pick<VmDisk, 'storageGroup' | 'format' | 'sizeMiB'>[];
  let unreadable: string | null = null;
  try {
    disks = parseVmHardware(vm.hardware).disks;
  } catch (e) {
    disks = [{ ...DEFAULT_DISK_PLACE, sizeMiB: 0 }];
    unreadable = `the VM's hardware record cannot be read here: ${describeError(e)}`;
  }
  const holdsFile = vm.owner === ctx.host || vm.protection !== 'none';
  return disks.map((disk, index) => {
    const group = ctx.storageGroups.find((g) => g.name === disk.storageGroup) ?? null;
    const path = group && holdsFile && !unreadable ? volumePath(group, volumeName(vm.name, index), disk.format) : null;
    return { vm, index, disk, sizeBytes: disk.sizeMiB * MIB, group, path, unreadable };
  });
}

/** Every volume this host holds in `group`. */
function heldIn(ctx: VolumeContext, group: StorageGroupConfig): Located[] {
  return (ctx.core?.vms ?? []).flatMap((vm) => locate(ctx, vm)).filter((l) => l.group === group && l.path !== null);
}

async function statusOf(ctx: VolumeContext, l: Located): Promise<VolumeStatus> {
  const file: VolumeFile | null = l.path === null ? null : await volumeFile(l.path);
  const local = ctx.running.find((r) => r.name === l.vm.name) ?? null;
  const verdict = l.unreadable
    ? { state: 'failed' as const, reason: l.unreadable, sync: null }
    : volumeVerdict({
        self: ctx.host,
        peer: ctx.core?.peer ?? '',
        owner: l.vm.owner,
        protection: l.vm.protection as 'none' | 'ha' | 'ft',
        storageGroup: l.disk.storageGroup,
        groupKnown: l.group !== null,
        file,
        diskHealth: ctx.health?.disk ?? null,
        local: local && { state: local.state, mirror: diskMirror(local.mirror, l.index) },
        peerHeard: ctx.core?.peerHeard ?? false,
        copyHere: l.vm.copies.here,
        copyPeer: l.vm.copies.peer,
      });
  return {
    name: volumeName(l.vm.name, l.index),
    vm: l.vm.name,
    disk: diskId(l.index),
    host: ctx.host,
    owner: l.vm.owner,
    protection: l.vm.protection,
    storageGroup: l.disk.storageGroup,
    format: l.disk.format,
    sizeBytes: l.sizeBytes,
    path: l.path,
    allocatedBytes: file?.kind === 'present' ? file.allocatedBytes : null,
    ...verdict,
  };
}

/**
 * One disk's mirror as the volume verdict reads it. The disks sync one after another, so the VM's measured
 * rate is the rate of the disk syncing now.
 */
function diskMirror(mirror: RunningVm['mirror'], index: number): { state: 'syncing' | 'ready' | 'stalled'; copiedBytes: number; totalBytes: number; bytesPerSec: number | null } | null {
  const disk = mirror?.disks[index];
  if (!mirror || !disk) return null;
  return { ...disk, bytesPerSec: disk.state === 'syncing' ? mirror.bytesPerSec : null };
}

/** Every VM's volumes, by VM and disk. */
export async function volumeStatuses(ctx: VolumeContext): Promise<VolumeStatus[]> {
  return Promise.all((ctx.core?.vms ?? []).flatMap((vm) => locate(ctx, vm)).map((l) => statusOf(ctx, l)));
}

export async function volumeStatus(ctx: VolumeContext, name: string): Promise<VolumeStatus> {
  const located = (ctx.core?.vms ?? []).flatMap((vm) => locate(ctx, vm)).find((l) => volumeName(l.vm.name, l.index) === name);
  if (!located) throw new LockstepError('UNKNOWN_VOLUME', `no volume named '${name}' (a VM's first volume is named after it, its others <vm>.disk1, <vm>.disk2…)`, { volume: name });
  return statusOf(ctx, located);
}

/** One group's usage, from its file system and the volumes this host holds in it. */
async function groupStatus(ctx: VolumeContext, group: StorageGroupConfig): Promise<StorageGroupStatus> {
  const held = heldIn(ctx, group);
  const files = await Promise.all(held.map((l) => volumeFile(l.path!)));
  const base = { name: group.name, path: group.path, sizeMiB: group.sizeMiB };
  let allocated = files.flatMap((f) => (f.kind === 'present' ? [f.allocatedBytes] : []));
  try {
    // The group's virtual CDs take its space too (src/storage/vcd.ts).
    allocated = [...allocated, ...(await vcdAllocations(group))];
    const u = groupUsage(group.sizeMiB, await fileSystemSpace(group.path), allocated);
    // The count is of the volumes this host holds in the group, whether their file is made yet or not.
    return { ...base, ...u, volumeCount: held.length, error: null };
  } catch (e) {
    return { ...base, capacityBytes: null, usedBytes: allocated.reduce((a, b) => a + b, 0), freeBytes: null, volumeCount: held.length, error: `cannot read the file system of ${group.path}: ${describeError(e)}` };
  }
}

export async function storageGroupStatuses(ctx: VolumeContext): Promise<StorageGroupStatus[]> {
  return Promise.all(ctx.storageGroups.map((g) => groupStatus(ctx, g)));
}

/** One group with the volumes this host holds in it. */
export async function storageGroupDetail(ctx: VolumeContext, name: string): Promise<StorageGroupStatus & { volumes: VolumeStatus[] }> {
  const group = ctx.storageGroups.find((g) => g.name === name);
  if (!group) {
    throw new LockstepError('UNKNOWN_STORAGE_GROUP', `no storage group named '${name}' on ${ctx.host} (it has ${ctx.storageGroups.map((g) => g.name).join(', ')})`, { storageGroup: name, host: ctx.host });
  }
  const volumes = (await volumeStatuses(ctx)).filter((v) => v.storageGroup === name && v.path !== null);
  return { ...(await groupStatus(ctx, group)), volumes };
}

/**
 * A new VM's volumes must each have their group on this host (`INVALID_SPEC` naming `disks[i].storageGroup`)
 * and fit (`COMMAND_REFUSED`): their whole size, since a thin image grows to it, in what the group has free
 * now less what the volumes already defined in it may still grow by (their size less what they have
 * allocated; the whole size of one whose file is not made yet). The new VM's disks in one group are summed,
 * so two thin volumes can never be promised the same space.
 */
export async function checkVolumeFits(ctx: VolumeContext, def: VmDefinition): Promise<void> {
  const byGroup = new Map<StorageGroupConfig, number>();
  def.disks.forEach((disk, i) => {
    const group = ctx.storageGroups.find((g) => g.name === disk.storageGroup);
    if (!group) {
      throw new LockstepError(
        'INVALID_SPEC',
        `vm.disks[${i}].storageGroup names '${disk.storageGroup}', which is not configured on ${ctx.host} (it has ${ctx.storageGroups.map((g) => g.name).join(', ')})`,
        { field: `disks[${i}].storageGroup`, value: disk.storageGroup },
      );
    }
    byGroup.set(group, (byGroup.get(group) ?? 0) + disk.sizeMiB * MIB);
  });
  for (const [group, sizeBytes] of byGroup) {
    const room = await groupRoom(ctx, group);
    if ('error' in room) throw new LockstepError('COMMAND_REFUSED', `cannot tell whether VM ${def.name}'s disks fit in storage group '${group.name}': ${room.error}`, { command: 'define-vm', storageGroup: group.name });
    const { freeBytes, reservedBytes, availableBytes } = room;
    if (sizeBytes > availableBytes) {
      const promised = reservedBytes > 0 ? `, of ${Math.floor(freeBytes / MIB)} MiB free ${Math.ceil(reservedBytes / MIB)} MiB are promised to the volumes defined in it` : '';
      const what = def.disks.length === 1 ? `${sizeBytes / MIB} MiB disk does` : `disks in it (${sizeBytes / MIB} MiB) do`;
      throw new LockstepError(
        'COMMAND_REFUSED',
        `VM ${def.name}'s ${what} not fit in storage group '${group.name}' on ${ctx.host}: ${Math.floor(availableBytes / MIB)} MiB available${promised}`,
        { command: 'define-vm', field: 'disks', storageGroup: group.name, sizeBytes, freeBytes, reservedBytes },
      );
    }
  }
}

/** What a group can take now: its free space, what of it the volumes defined in it may still grow into, and the rest. */
export type GroupRoom = { freeBytes: number; reservedBytes: number; availableBytes: number } | { error: string };

/** A group's room: no new file (a volume, a virtual CD) may take space a thin volume was promised. */
export async function groupRoom(ctx: VolumeContext, group: StorageGroupConfig): Promise<GroupRoom> {
  const status = await groupStatus(ctx, group);
  if (status.freeBytes === null) return { error: status.error ?? `the file system of ${group.path} cannot be read` };
  const reservedBytes = await growthRoom(ctx, group);
  return { freeBytes: status.freeBytes, reservedBytes, availableBytes: Math.max(0, status.freeBytes - reservedBytes) };
}

/** What the volumes this host holds in `group` may still grow by: each one's size less what it has allocated. */
async function growthRoom(ctx: VolumeContext, group: StorageGroupConfig): Promise<number> {
  const held = heldIn(ctx, group);
  const files = await Promise.all(held.map((l) => volumeFile(l.path!)));
  return held.reduce((sum, l, i) => {
    const f = files[i]!;
    return sum + Math.max(0, l.sizeBytes - (f.kind === 'present' ? f.allocatedBytes : 0));
  }, 0);
}
