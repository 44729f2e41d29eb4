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
  /** Size of the VM's data disk (virtio-blk): its volume. */
  diskMiB: number;
  /** Where the volume lives on each host (a storage group both hosts configure) and its image format. */
  disk: VmDisk;
  /**
   * The guest's NICs on the business network, 1 to `NICS_PER_VM_MAX`, in the order the guest sees them
   * (the first is its eth0); each address is what the guest configures itself.
   */
  nics: VmNicIdentity[];
  /** A CD drive (absent: none), and the virtual CD in it. */
  cdrom?: VmCdromHardware;
  /**
   * The image the volume is made from at its first start (absent: blank): a snapshot or an imported image
   * of `host`, a file in its group's `snapshots/` directory. Images are not replicated, so the first start
   * must be there (src/daemon/snapshots.ts); once the volume exists this is history.
   */
  source?: VmImageSource;
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

export interface VmDisk {
  storageGroup: string;
  format: VolumeFormat;
}

/** A record made before storage groups had neither field: its disk was a qcow2 in what is now the default group. */
export const DEFAULT_DISK: VmDisk = { storageGroup: DEFAULT_STORAGE_GROUP, format: 'qcow2' };

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
  return { name, ...parseVmHardware(o), protection: protection as ProtectionLevel, desired };
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
    diskMiB: integer(o, 'diskMiB', 1, 16 * 1024 * 1024),
    disk: parseDisk(o['disk']),
    nics: parseNics(o),
    ...(o['cdrom'] === undefined ? {} : { cdrom: parseCdrom(o['cdrom']) }),
    ...(o['source'] === undefined ? {} : { source: parseSource(o['source']) }),
  };
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

function parseSource(raw: unknown): VmImageSource {
  const o = object(raw, 'source');
  const host = string(o, 'host', 'source.host');
  if (!NAME.test(host)) invalid('source.host', 'must be a host name', host);
  const image = string(o, 'image', 'source.image');
  if (!IMAGE_ID.test(image)) invalid('source.image', 'must be a snapshot or image id', image);
  const storageGroup = string(o, 'storageGroup', 'source.storageGroup');
  if (!NAME.test(storageGroup)) invalid('source.storageGroup', 'must match [a-z][a-z0-9-]{0,30}', storageGroup);
  // A file name, never a path: the image is looked for in the group's snapshots directory only.
  const file = string(o, 'file', 'source.file');
  if (!IMAGE_FILE.test(file)) invalid('source.file', "must be an image's file name", file);
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

/** The `disk` object; absent (an older record, or a definition that leaves it out): the default group, qcow2. */
function parseDisk(raw: unknown): VmDisk {
  if (raw === undefined) return { ...DEFAULT_DISK };
  const o = object(raw, 'disk');
  const storageGroup = o['storageGroup'] ?? DEFAULT_DISK.storageGroup;
  if (typeof storageGroup !== 'string' || !NAME.test(storageGroup)) invalid('disk.storageGroup', 'must match [a-z][a-z0-9-]{0,30}', storageGroup);
  const format = o['format'] ?? DEFAULT_DISK.format;
  if (!(VOLUME_FORMATS as readonly unknown[]).includes(format)) invalid('disk.format', `must be one of ${VOLUME_FORMATS.join(', ')}`, format);
  return { storageGroup, format: format as VolumeFormat };
}

/** The hardware part of a definition. */
export function hardwareOf(def: VmDefinition): VmHardware {
  return { vcpus: def.vcpus, memoryMiB: def.memoryMiB, guest: def.guest, diskMiB: def.diskMiB, disk: def.disk, nics: def.nics, ...(def.cdrom ? { cdrom: def.cdrom } : {}), ...(def.source ? { source: def.source } : {}) };
}

/** The hardware as it is stored and replicated: a one-NIC VM's also carries that NIC as `nic`. */
export type StoredVmHardware = VmHardware & { nic?: VmNicIdentity };

/**
 * The hardware as the core stores and replicates it. A peer running a version from before several NICs
 * reads only `nic`: with it, a one-NIC VM runs there as before, during a rolling upgrade. A VM with more NICs
 * has no `nic`, so such a peer cannot parse it: it refuses to start the VM (INVALID_SPEC, vm.nic) rather
 * than run it with one NIC and the others' output ungated.
 */
export function hardwareRecord(hw: VmHardware): StoredVmHardware {
  return hw.nics.length === 1 ? { ...hw, nic: hw.nics[0]! } : { ...hw };
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

function integer(o: Record<string, unknown>, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) invalid(key, `must be an integer from ${min} to ${max}`, v);
  return v;
}

function absolutePath(o: Record<string, unknown>, key: string, field: string): string {
  const v = string(o, key, field);
  if (!v.startsWith('/')) invalid(field, 'must be an absolute path', v);
  return v;
}
