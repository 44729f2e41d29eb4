/**
 * A VM as the operator defines it: size, guest, network identity (its hardware), protection, and whether it
 * should run. The protection and desired state go to the decision core; the hardware travels with them,
 * opaque to the core, and the host that runs the VM turns it into a QEMU `VmSpec` in its own data directory.
 */
import { LockstepError } from '../util/errors.js';
import { DEFAULT_STORAGE_GROUP, VOLUME_FORMATS, type VolumeFormat } from '../storage/storage-group.js';
import { VCD_NAME, VCD_NAME_PATTERN } from '../storage/vcd.js';

export const PROTECTION_LEVELS = ['none', 'ha', 'ft'] as const;
export type ProtectionLevel = (typeof PROTECTION_LEVELS)[number];

/** The VM's hardware: replicated with its config to the peer (opaque to the core), so either host can run it. */
export interface VmHardware {
  vcpus: number;
  memoryMiB: number;
  /** Direct kernel boot of the guest (the lab's guest is a kernel + initramfs). */
  guest: { kernel: string; initrd: string; cmdline: string };
  /**
   * The VM's disks (virtio-blk), 1 to `DISKS_PER_VM_MAX`, in the order the guest sees them (the first is its
   * vda): each one volume, on each host, mirrored and checkpointed with the others as one.
   */
  disks: VmDisk[];
  /**
   * The guest's NICs on the business network, 1 to `NICS_PER_VM_MAX`, in the order the guest sees them
   * (the first is its eth0); each address is what the guest configures itself.
   */
  nics: VmNicIdentity[];
  /** A CD drive (absent: none), and the virtual CD in it. */
  cdrom?: VmCdromHardware;
}

/** A NIC's identity: its MAC (unicast, lower case) and the IPv4 address the guest gives it. */
export interface VmNicIdentity {
  mac: string;
  address: string;
}

/** Ample for a business NIC beside a backup or storage one; each is a tap, and under FT an output gate. */
export const NICS_PER_VM_MAX = 4;

export interface VmImageSource {
  host: string;
  /** The snapshot's or image's id. */
  image: string;
  storageGroup: string;
  file: string;
}

/**
 * A VM's CD drive: the virtual CD in it, by name and SHA-256, or none. VCDs are one host's
 * (src/storage/vcd.ts): a host that starts the VM without that very image starts it with the drive empty.
 */
export interface VmCdromHardware {
  medium: VcdRef | null;
}

export interface VcdRef {
  vcd: string;
  sha256: string;
}

/** One disk: its size, where its volume lives on each host (a storage group both hosts configure) and its image format. */
export interface VmDisk {
  sizeMiB: number;
  storageGroup: string;
  format: VolumeFormat;
  /**
   * The image the volume is made from at its first start (absent: blank): a snapshot or an imported image
   * of `host`, a file in its group's `snapshots/` directory. Images are not replicated, so the first start
   * must be there (src/daemon/snapshots.ts); once the volume exists this is history.
   */
  source?: VmImageSource;
}

/** Where a disk's volume goes when the definition does not say: a qcow2 in the default group (also every record made before storage groups). */
export const DEFAULT_DISK_PLACE: Pick<VmDisk, 'storageGroup' | 'format'> = { storageGroup: DEFAULT_STORAGE_GROUP, format: 'qcow2' };

/** A system disk and a few data disks; each is a mirror, a replication stream and an export while protected. */
export const DISKS_PER_VM_MAX = 4;
const DISK_MIB_MAX = 16 * 1024 * 1024;

/** What an operator submits to define a VM: its name, hardware, protection and whether it should run. */
export interface VmDefinition extends VmHardware {
  name: string;
  protection: ProtectionLevel;
  desired: 'running' | 'stopped';
}

const NAME = /^[a-z][a-z0-9-]{0,30}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseVmDefinition(raw: unknown): VmDefinition {
  const o = object(raw, 'vm');
  const name = string(o, 'name');
  if (!NAME.test(name)) invalid('name', 'must match [a-z][a-z0-9-]{0,30}', name);
  const protection = string(o, 'protection');
  if (!(PROTECTION_LEVELS as readonly string[]).includes(protection)) invalid('protection', `must be one of ${PROTECTION_LEVELS.join(', ')}`, protection);
  const desired = string(o, 'desired');
  if (desired !== 'running' && desired !== 'stopped') invalid('desired', 'must be running or stopped', desired);
  const hardware = parseVmHardware(o);
  const problem = protectionProblem(hardware, protection as ProtectionLevel);
  if (problem !== null) invalid('protection', problem, protection);
  return { name, ...hardware, protection: protection as ProtectionLevel, desired };
}

/**
 * Why `level` cannot protect a VM of this hardware, or null. FT checkpoints one disk: the backup commits
 * each epoch into one epoch disk before the RAM and devices of that epoch (src/ft/ft-backup.ts), and a VM
 * of several disks would need every one of them committed as one. Such a VM is protected as HA.
 */
export function protectionProblem(hw: VmHardware, level: ProtectionLevel): string | null {
  if (level === 'ft' && hw.disks.length > 1) return `FT protects a VM of one disk; this one has ${hw.disks.length}: protect it as ha`;
  return null;
}

/** The hardware fields of a definition (also what arrives from the peer, re-checked before a start). */
export function parseVmHardware(raw: unknown): VmHardware {
  const o = object(raw, 'hardware');
  const guestRaw = object(o['guest'], 'guest');
  return {
    vcpus: integer(o, 'vcpus', 1, 64),
    memoryMiB: integer(o, 'memoryMiB', 64, 1024 * 1024),
    guest: {
      kernel: absolutePath(guestRaw, 'kernel', 'guest.kernel'),
      initrd: absolutePath(guestRaw, 'initrd', 'guest.initrd'),
      cmdline: string(guestRaw, 'cmdline', 'guest.cmdline'),
    },
    disks: parseDisks(o),
    nics: parseNics(o),
    ...(o['cdrom'] === undefined ? {} : { cdrom: parseCdrom(o['cdrom']) }),
  };
}

/**
 * `disks`, or the one disk of a record stored or replicated before VMs had several: `diskMiB`, with `disk`
 * (its place) and `source` (its image) when it had them. Both forms at once must agree (`hardwareRecord`
 * writes both for a one-disk VM), so neither is silently lost.
 */
function parseDisks(o: Record<string, unknown>): VmDisk[] {
  const list = o['disks'];
  const legacy = o['diskMiB'] === undefined && o['disk'] === undefined && o['source'] === undefined ? null : parseLegacyDisk(o);
  if (list === undefined) {
    if (legacy === null) invalid('disks', `must list the VM's disks (1 to ${DISKS_PER_VM_MAX})`);
    return [legacy];
  }
  if (!Array.isArray(list) || list.length < 1 || list.length > DISKS_PER_VM_MAX) invalid('disks', `must be a list of 1 to ${DISKS_PER_VM_MAX} disks`, Array.isArray(list) ? list.length : list);
  const disks = list.map((d, i) => parseDisk(d, `disks[${i}]`));
  if (legacy !== null && (disks.length !== 1 || JSON.stringify(legacy) !== JSON.stringify(disks[0]))) invalid('diskMiB', 'must be the one disk of disks when both are given', o['diskMiB']);
  return disks;
}

function parseLegacyDisk(o: Record<string, unknown>): VmDisk {
  const place = o['disk'] === undefined ? {} : object(o['disk'], 'disk');
  return diskOf(integer(o, 'diskMiB', 1, DISK_MIB_MAX), place, 'disk', o['source']);
}

function parseDisk(raw: unknown, field: string): VmDisk {
  const o = object(raw, field);
  return diskOf(integer(o, 'sizeMiB', 1, DISK_MIB_MAX, `${field}.sizeMiB`), o, field, o['source'], `${field}.source`);
}

/** A disk from its size and its place's fields (each defaulted when absent: the default group, qcow2). */
function diskOf(sizeMiB: number, place: Record<string, unknown>, field: string, source: unknown, sourceField = 'source'): VmDisk {
  const storageGroup = place['storageGroup'] ?? DEFAULT_DISK_PLACE.storageGroup;
  if (typeof storageGroup !== 'string' || !NAME.test(storageGroup)) invalid(`${field}.storageGroup`, 'must match [a-z][a-z0-9-]{0,30}', storageGroup);
  const format = place['format'] ?? DEFAULT_DISK_PLACE.format;
  if (!(VOLUME_FORMATS as readonly unknown[]).includes(format)) invalid(`${field}.format`, `must be one of ${VOLUME_FORMATS.join(', ')}`, format);
  return { sizeMiB, storageGroup, format: format as VolumeFormat, ...(source === undefined ? {} : { source: parseSource(source, sourceField) }) };
}

/**
 * `nics`, or `nic` alone: a record stored or replicated before VMs had several NICs, read as a one-element
 * list. Both at once must agree (`hardwareRecord` writes both for a one-NIC VM), so neither is silently lost.
 */
function parseNics(o: Record<string, unknown>): VmNicIdentity[] {
  const list = o['nics'];
  if (list === undefined) {
    if (o['nic'] === undefined) invalid('nics', `must list the VM's NICs (1 to ${NICS_PER_VM_MAX})`);
    return [parseNic(o['nic'], 'nic')];
  }
  if (!Array.isArray(list) || list.length < 1 || list.length > NICS_PER_VM_MAX) invalid('nics', `must be a list of 1 to ${NICS_PER_VM_MAX} NICs`, Array.isArray(list) ? list.length : list);
  const nics = list.map((n, i) => parseNic(n, `nics[${i}]`));
  nics.forEach((n, i) => {
    const earlier = nics.slice(0, i);
    if (earlier.some((e) => e.mac === n.mac)) invalid(`nics[${i}].mac`, 'is the MAC of an earlier NIC of the VM', n.mac);
    if (earlier.some((e) => e.address === n.address)) invalid(`nics[${i}].address`, 'is the address of an earlier NIC of the VM', n.address);
  });
  if (o['nic'] !== undefined) {
    const legacy = parseNic(o['nic'], 'nic');
    if (nics.length !== 1 || legacy.mac !== nics[0]!.mac || legacy.address !== nics[0]!.address) invalid('nic', 'must be the one NIC of nics when both are given', o['nic']);
  }
  return nics;
}

function parseNic(raw: unknown, field: string): VmNicIdentity {
  const o = object(raw, field);
  const mac = string(o, 'mac', `${field}.mac`).toLowerCase();
  // The first octet's low bit marks multicast: a NIC's own address must be unicast.
  if (!MAC.test(mac) || (parseInt(mac.slice(0, 2), 16) & 1) === 1) invalid(`${field}.mac`, 'must be a unicast MAC like 52:54:00:12:34:56', mac);
  const address = string(o, 'address', `${field}.address`);
  const m = IPV4.exec(address);
  if (!m || m.slice(1).some((x) => Number(x) > 255)) invalid(`${field}.address`, 'must be an IPv4 address', address);
  return { mac, address };
}

const IMAGE_ID = /^(snap|img)-[0-9a-f]{12}$/;
const IMAGE_FILE = /^(snap|img)-[0-9a-f]{12}\.(qcow2|raw)$/;

function parseSource(raw: unknown, field: string): VmImageSource {
  const o = object(raw, field);
  const host = string(o, 'host', `${field}.host`);
  if (!NAME.test(host)) invalid(`${field}.host`, 'must be a host name', host);
  const image = string(o, 'image', `${field}.image`);
  if (!IMAGE_ID.test(image)) invalid(`${field}.image`, 'must be a snapshot or image id', image);
  const storageGroup = string(o, 'storageGroup', `${field}.storageGroup`);
  if (!NAME.test(storageGroup)) invalid(`${field}.storageGroup`, 'must match [a-z][a-z0-9-]{0,30}', storageGroup);
  // A file name, never a path: the image is looked for in the group's snapshots directory only.
  const file = string(o, 'file', `${field}.file`);
  if (!IMAGE_FILE.test(file)) invalid(`${field}.file`, "must be an image's file name", file);
  return { host, image, storageGroup, file };
}

/** The `cdrom` object: `{}` (or `medium: null`) is an empty drive. */
function parseCdrom(raw: unknown): VmCdromHardware {
  const o = object(raw, 'cdrom');
  if (o['medium'] === undefined || o['medium'] === null) return { medium: null };
  const m = object(o['medium'], 'cdrom.medium');
  const vcd = string(m, 'vcd', 'cdrom.medium.vcd');
  if (!VCD_NAME.test(vcd)) invalid('cdrom.medium.vcd', `must match ${VCD_NAME_PATTERN}`, vcd);
  const sha256 = string(m, 'sha256', 'cdrom.medium.sha256');
  if (!/^[0-9a-f]{64}$/.test(sha256)) invalid('cdrom.medium.sha256', 'must be 64 lowercase hex digits', sha256);
  return { medium: { vcd, sha256 } };
}

/** The hardware part of a definition. */
export function hardwareOf(def: VmDefinition): VmHardware {
  return { vcpus: def.vcpus, memoryMiB: def.memoryMiB, guest: def.guest, disks: def.disks, nics: def.nics, ...(def.cdrom ? { cdrom: def.cdrom } : {}) };
}

/**
 * The hardware as it is stored and replicated: a one-NIC VM's also carries that NIC as `nic`, a one-disk
 * VM's that disk as `diskMiB`, `disk` and `source`.
 */
export type StoredVmHardware = VmHardware & { nic?: VmNicIdentity; diskMiB?: number; disk?: Pick<VmDisk, 'storageGroup' | 'format'>; source?: VmImageSource };

/**
 * A disk's volume name: the VM's for its first disk (the one a VM had before several), `<vm>.disk<N>` for
 * the others (a VM name has no dot, so no volume name is another VM's).
 */
export function volumeName(vm: string, index: number): string {
  return index === 0 ? vm : `${vm}.disk${index}`;
}

/** Disk `index` of VM `vm`, or `INVALID_ARGUMENT` (field `disk`) when the VM has no such disk. */
export function diskAt(vm: string, hw: VmHardware, index: number): VmDisk {
  const disk = hw.disks[index];
  if (disk === undefined) {
    const n = hw.disks.length;
    throw new LockstepError('INVALID_ARGUMENT', `VM ${vm} has ${n} disk${n === 1 ? '' : 's'}: disk ${index} is not one of them (0${n > 1 ? ` to ${n - 1}` : ''})`, { field: 'disk', vm });
  }
  return disk;
}

/** A disk's QEMU node and device id: vda, vdb, … as the guest names them. */
export function diskId(index: number): string {
  return `vd${String.fromCharCode(0x61 + index)}`;
}

/**
 * The hardware as the core stores and replicates it. A peer running a version from before several NICs
 * reads only `nic`: with it, a one-NIC VM runs there as before, during a rolling upgrade. A VM with more NICs
 * has no `nic`, so such a peer cannot parse it: it refuses to start the VM (INVALID_SPEC, vm.nic) rather
 * than run it with one NIC and the others' output ungated. Disks the same way: a peer from before several
 * disks reads `diskMiB`, `disk` and `source`, which only a one-disk VM's record has (INVALID_SPEC, vm.diskMiB,
 * rather than a VM run with one disk of its several).
 */
export function hardwareRecord(hw: VmHardware): StoredVmHardware {
  const record: StoredVmHardware = { ...hw };
  if (hw.nics.length === 1) record.nic = hw.nics[0]!;
  if (hw.disks.length === 1) {
    const { sizeMiB, storageGroup, format, source } = hw.disks[0]!;
    Object.assign(record, { diskMiB: sizeMiB, disk: { storageGroup, format }, ...(source ? { source } : {}) });
  }
  return record;
}

/**
 * The first NIC of `def` whose MAC or address a NIC of another of the pair's VMs has, as `NIC_IN_USE`; null
 * when none. A record this version cannot read (a newer peer's) has no NICs it can compare: it is passed over.
 */
export function nicInUse(def: VmDefinition, vms: readonly { name: string; hardware: unknown }[]): LockstepError | null {
  const others = vms.filter((v) => v.name !== def.name).flatMap((v) => readableNics(v.hardware).map((nic) => ({ vm: v.name, nic })));
  for (const [i, nic] of def.nics.entries()) {
    for (const key of ['mac', 'address'] as const) {
      const other = others.find((o) => o.nic[key] === nic[key]);
      if (other) return new LockstepError('NIC_IN_USE', `vm.nics[${i}].${key} ${nic[key]} is already a NIC's of VM ${other.vm}`, { field: `nics[${i}].${key}`, value: nic[key], vm: other.vm });
    }
  }
  return null;
}

function readableNics(hardware: unknown): VmNicIdentity[] {
  try {
    return parseVmHardware(hardware).nics;
  } catch {
    return [];
  }
}

function invalid(field: string, why: string, value?: unknown): never {
  throw new LockstepError('INVALID_SPEC', `vm.${field} ${why}${value === undefined ? '' : ` (got ${JSON.stringify(value)})`}`, { field, value });
}

function object(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) invalid(field, 'must be an object');
  return v as Record<string, unknown>;
}

function string(o: Record<string, unknown>, key: string, field = key): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '' || v.length > 4096) invalid(field, 'must be a non-empty string', v);
  return v;
}

function integer(o: Record<string, unknown>, key: string, min: number, max: number, field = key): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) invalid(field, `must be an integer from ${min} to ${max}`, v);
  return v;
}

function absolutePath(o: Record<string, unknown>, key: string, field: string): string {
  const v = string(o, key, field);
  if (!v.startsWith('/')) invalid(field, 'must be an absolute path', v);
  return v;
}
