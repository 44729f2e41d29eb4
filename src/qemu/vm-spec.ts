/**
 * What a VM is, as the QEMU driver needs it, and the one function that turns untrusted input (a config file,
 * an API body) into it. Everything is checked here, before QEMU sees it, so that a mistake gets an error that
 * names the field instead of a QEMU message about an option string.
 *
 * Ids become QEMU node names and device ids (see `command-line.ts`), so their alphabet and length are those
 * QEMU accepts for node names, minus the suffixes we add.
 */
import path from 'node:path';
import { LockstepError } from '../util/errors.js';

export type AccelRequest = 'auto' | 'kvm' | 'tcg';
export type DiskFormat = 'qcow2' | 'raw';
/** QEMU's cache modes: whether the host page cache is bypassed (O_DIRECT) and whether guest writes are
 * acknowledged before they are flushed. All of them honour guest flushes. */
export type DiskCache = 'writeback' | 'none' | 'writethrough' | 'directsync';

export interface VmBoot {
  /** Direct kernel boot (what the lab guest uses): no bootloader, no firmware disk lookup. */
  kernel: string;
  initrd?: string;
  /** The kernel command line. */
  cmdline?: string;
}

export interface VmDisk {
  /** Names the device and the block nodes: format node `<id>`, file node `<id>-file`. */
  id: string;
  path: string;
  format: DiskFormat;
  /** Default `writeback` (QEMU's default; safe because guest flushes reach the disk). */
  cache?: DiskCache;
}

export interface VmNic {
  /** Names the netdev and the device. */
  id: string;
  /** Unicast, `xx:xx:xx:xx:xx:xx`, lower case after parsing. */
  mac: string;
  /** The host tap interface (created by QEMU if it does not exist; needs CAP_NET_ADMIN then). */
  tap: string;
  /** FT output commit from the start: the NIC's output goes through the output gate listening on these
   * sockets (`src/ft/output-commit.ts`), which must listen before QEMU starts. */
  outputGate?: VmOutputGate;
}

/** The two unix sockets of a NIC's output gate; QEMU connects to both as a client. */
export interface VmOutputGate {
  /** QEMU writes the guest's frames here (the `fout` filter-redirector's outdev). */
  fromGuest: string;
  /** The gate writes released frames here, and QEMU sends them out of the tap (`fin`'s indev). */
  toNetwork: string;
}

/**
 * A CD drive (ide-cd on the machine's secondary IDE channel): read-only, with a tray, its medium an ISO
 * image or none. Changed while the VM runs over QMP (`cdrom.ts`).
 */
export interface VmCdrom {
  /** Names the device, and the medium's block nodes at start as a disk's are named. */
  id: string;
  /** The ISO image in the drive at start; null: the drive starts empty. */
  medium: string | null;
}

export interface VmMemoryBackend {
  /** File that holds guest RAM, shared with the host (`share=on`) so the FT engine can read it, typically
   * under /dev/shm. QEMU creates it. */
  path: string;
}

/**
 * The guest heartbeat: a second serial port (the guest's ttyS1) on which a guest agent writes a line every
 * second or so. A guest that has beaten once and then, while running, stays silent for `timeoutMs` is hung
 * (guest-heartbeat.ts): its QEMU is killed with cause `guest-hung`, so the restart policy applies.
 */
export interface VmHeartbeat {
  timeoutMs: number;
}

export const HEARTBEAT_TIMEOUT_MS_MIN = 1000;
export const HEARTBEAT_TIMEOUT_MS_MAX = 600_000;

export interface VmSpec {
  name: string;
  vcpus: number;
  memoryMiB: number;
  accel: AccelRequest;
  /** Absent: the firmware boots the first disk (SeaBIOS, boot order = disk order). */
  boot?: VmBoot;
  disks: VmDisk[];
  nics: VmNic[];
  cdrom?: VmCdrom;
  memoryBackend?: VmMemoryBackend;
  heartbeat?: VmHeartbeat;
}

export const VM_NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;
/** QEMU node names are at most 31 characters; we append `-file`, so ids stop at 20 to leave room. */
export const DEVICE_ID_RE = /^[a-z][a-z0-9-]{0,19}$/;
/** Linux interface names are at most 15 bytes (IFNAMSIZ - 1) and may not contain '/' or whitespace. */
const TAP_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

export const VCPUS_MAX = 64;
/** Below this neither SeaBIOS nor a Linux kernel fits. */
export const MEMORY_MIB_MIN = 16;
export const MEMORY_MIB_MAX = 512 * 1024;
export const DISKS_MAX = 16;
export const NICS_MAX = 8;
/** x86 Linux's COMMAND_LINE_SIZE. */
export const CMDLINE_BYTES_MAX = 2048;
const PATH_BYTES_MAX = 4096;
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_BYTES_MAX = 107;

const ACCELS: readonly AccelRequest[] = ['auto', 'kvm', 'tcg'];
const FORMATS: readonly DiskFormat[] = ['qcow2', 'raw'];
const CACHES: readonly DiskCache[] = ['writeback', 'none', 'writethrough', 'directsync'];

/**
 * Checks `input` and returns a VmSpec with defaults filled in (`accel` 'auto', no disks, no NICs).
 * Throws `INVALID_SPEC` naming the first bad field (`fields.field`, e.g. `disks[1].path`). Unknown keys are
 * errors too: a misspelt optional field would otherwise be silently ignored.
 */
export function parseVmSpec(input: unknown): VmSpec {
  const o = object(input, 'spec');
  onlyKeys(o, 'spec', ['name', 'vcpus', 'memoryMiB', 'accel', 'boot', 'disks', 'nics', 'cdrom', 'memoryBackend', 'heartbeat']);
  const name = str(o['name'], 'name');
  if (!VM_NAME_RE.test(name)) bad('name', name, 'must be a lower-case letter then up to 30 of [a-z0-9-]');
  const spec: VmSpec = {
    name,
    vcpus: int(o['vcpus'], 'vcpus', 1, VCPUS_MAX),
    memoryMiB: int(o['memoryMiB'], 'memoryMiB', MEMORY_MIB_MIN, MEMORY_MIB_MAX),
    accel: o['accel'] === undefined ? 'auto' : oneOf(o['accel'], 'accel', ACCELS),
    disks: list(o['disks'], 'disks', DISKS_MAX).map((d, i) => disk(d, `disks[${i}]`)),
    nics: list(o['nics'], 'nics', NICS_MAX).map((n, i) => nic(n, `nics[${i}]`)),
  };
  if (o['boot'] !== undefined) spec.boot = boot(o['boot']);
  if (o['memoryBackend'] !== undefined) {
    const m = object(o['memoryBackend'], 'memoryBackend');
    onlyKeys(m, 'memoryBackend', ['path']);
    spec.memoryBackend = { path: absPath(m['path'], 'memoryBackend.path') };
  }
  if (o['heartbeat'] !== undefined) {
    const h = object(o['heartbeat'], 'heartbeat');
    onlyKeys(h, 'heartbeat', ['timeoutMs']);
    spec.heartbeat = { timeoutMs: int(h['timeoutMs'], 'heartbeat.timeoutMs', HEARTBEAT_TIMEOUT_MS_MIN, HEARTBEAT_TIMEOUT_MS_MAX) };
  }
  if (o['cdrom'] !== undefined) {
    const c = object(o['cdrom'], 'cdrom');
    onlyKeys(c, 'cdrom', ['id', 'medium']);
    spec.cdrom = { id: id(c['id'], 'cdrom.id'), medium: c['medium'] === null || c['medium'] === undefined ? null : absPath(c['medium'], 'cdrom.medium') };
  }
  // Disk, NIC and CD drive ids share one namespace so that an id names exactly one device in QMP.
  unique(
    [...spec.disks.map((d, i): Entry => [`disks[${i}].id`, d.id]), ...spec.nics.map((n, i): Entry => [`nics[${i}].id`, n.id]), ...(spec.cdrom ? [['cdrom.id', spec.cdrom.id] as Entry] : [])],
    'id',
  );
  unique(spec.disks.map((d, i): Entry => [`disks[${i}].path`, d.path]), 'path');
  unique(spec.nics.map((n, i): Entry => [`nics[${i}].mac`, n.mac]), 'MAC');
  unique(spec.nics.map((n, i): Entry => [`nics[${i}].tap`, n.tap]), 'tap');
  // Two gates (or both ends of one) on one socket would cross one NIC's frames into another's.
  unique(
    spec.nics.flatMap((n, i): Entry[] =>
      n.outputGate ? [[`nics[${i}].outputGate.fromGuest`, n.outputGate.fromGuest], [`nics[${i}].outputGate.toNetwork`, n.outputGate.toNetwork]] : [],
    ),
    'socket',
  );
  return spec;
}

function boot(v: unknown): VmBoot {
  const o = object(v, 'boot');
  onlyKeys(o, 'boot', ['kernel', 'initrd', 'cmdline']);
  const b: VmBoot = { kernel: absPath(o['kernel'], 'boot.kernel') };
  if (o['initrd'] !== undefined) b.initrd = absPath(o['initrd'], 'boot.initrd');
  if (o['cmdline'] !== undefined) {
    const c = str(o['cmdline'], 'boot.cmdline');
    if (Buffer.byteLength(c) > CMDLINE_BYTES_MAX - 1) bad('boot.cmdline', c, `is longer than ${CMDLINE_BYTES_MAX - 1} bytes`);
    if (hasControlChars(c)) bad('boot.cmdline', c, 'contains control characters');
    b.cmdline = c;
  }
  return b;
}

function disk(v: unknown, field: string): VmDisk {
  const o = object(v, field);
  onlyKeys(o, field, ['id', 'path', 'format', 'cache']);
  const d: VmDisk = {
    id: id(o['id'], `${field}.id`),
    path: absPath(o['path'], `${field}.path`),
    format: oneOf(o['format'], `${field}.format`, FORMATS),
  };
  if (o['cache'] !== undefined) d.cache = oneOf(o['cache'], `${field}.cache`, CACHES);
  return d;
}

function nic(v: unknown, field: string): VmNic {
  const o = object(v, field);
  onlyKeys(o, field, ['id', 'mac', 'tap', 'outputGate']);
  const mac = str(o['mac'], `${field}.mac`);
  if (!MAC_RE.test(mac)) bad(`${field}.mac`, mac, 'must look like 52:54:00:12:34:56');
  const first = parseInt(mac.slice(0, 2), 16);
  // A multicast source address is invalid on Ethernet, and all zeros is "no address".
  if ((first & 1) === 1) bad(`${field}.mac`, mac, 'is a multicast address (lowest bit of the first byte set); use a unicast one');
  if (/^00(:00){5}$/.test(mac)) bad(`${field}.mac`, mac, 'is all zeros');
  const tap = str(o['tap'], `${field}.tap`);
  if (!TAP_RE.test(tap) || tap === '.' || tap === '..') bad(`${field}.tap`, tap, 'must be an interface name of 1-15 characters from [A-Za-z0-9_.-]');
  const n: VmNic = { id: id(o['id'], `${field}.id`), mac: mac.toLowerCase(), tap };
  if (o['outputGate'] !== undefined) {
    const g = object(o['outputGate'], `${field}.outputGate`);
    onlyKeys(g, `${field}.outputGate`, ['fromGuest', 'toNetwork']);
    n.outputGate = { fromGuest: socketPath(g['fromGuest'], `${field}.outputGate.fromGuest`), toNetwork: socketPath(g['toNetwork'], `${field}.outputGate.toNetwork`) };
  }
  return n;
}

function socketPath(v: unknown, field: string): string {
  const s = absPath(v, field);
  if (Buffer.byteLength(s) > UNIX_SOCKET_PATH_BYTES_MAX) bad(field, s, `is longer than a unix socket path may be (${UNIX_SOCKET_PATH_BYTES_MAX} bytes)`);
  return s;
}

function id(v: unknown, field: string): string {
  const s = str(v, field);
  if (!DEVICE_ID_RE.test(s)) bad(field, s, 'must be a lower-case letter then up to 19 of [a-z0-9-]');
  return s;
}

function absPath(v: unknown, field: string): string {
  const s = str(v, field);
  if (!path.isAbsolute(s)) bad(field, s, 'must be an absolute path');
  if (Buffer.byteLength(s) > PATH_BYTES_MAX) bad(field, s, `is longer than ${PATH_BYTES_MAX} bytes`);
  if (hasControlChars(s)) bad(field, s, 'contains control characters');
  // `..`, `.`, `//` or a trailing `/` make two spellings of one file; one spelling keeps duplicate checks honest.
  if (path.posix.normalize(s) !== s || (s.length > 1 && s.endsWith('/'))) bad(field, s, `must be normalised (e.g. ${path.posix.normalize(s).replace(/(.)\/$/, '$1')})`);
  return s;
}

function object(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(field, v, 'must be an object');
  return v as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, field: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) bad(field === 'spec' ? k : `${field}.${k}`, o[k], `is not a known field (known: ${allowed.join(', ')})`);
  }
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string') bad(field, v, v === undefined ? 'is required' : 'must be a string');
  if (v === '') bad(field, v, 'must not be empty');
  return v;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (v === undefined) bad(field, v, 'is required');
  if (typeof v !== 'number' || !Number.isInteger(v)) bad(field, v, 'must be an integer');
  if (v < min || v > max) bad(field, v, `must be between ${min} and ${max}`);
  return v;
}

function oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) bad(field, v, `must be one of ${allowed.join(', ')}`);
  return v as T;
}

function list(v: unknown, field: string, max: number): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) bad(field, v, 'must be an array');
  if (v.length > max) bad(field, v.length, `has more than ${max} entries`);
  return v;
}

/** [field, value] */
type Entry = readonly [string, string];

function unique(entries: readonly Entry[], what: string): void {
  const seen = new Map<string, string>();
  for (const [field, value] of entries) {
    const earlier = seen.get(value);
    if (earlier !== undefined) bad(field, value, `repeats the ${what} of ${earlier}`);
    seen.set(value, field);
  }
}

function hasControlChars(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(s);
}

function bad(field: string, value: unknown, problem: string): never {
  throw new LockstepError('INVALID_SPEC', `VM spec: ${field} ${problem} (got ${show(value)})`, { field, value: show(value) });
}

function show(v: unknown): string {
  const s = v === undefined ? 'nothing' : typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}
