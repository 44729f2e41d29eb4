/**
 * One network interface's facts from its directory in sysfs (`<net dir>/<ifname>/`, `/sys/class/net` where
 * /sys is this namespace's: see namespace-sysfs.ts): state, carrier, speed, MAC, MTU and the byte counters.
 * Reading the files (`readInterface`) is apart from making sense of them (`parseInterfaceFiles`, pure), so
 * the parsing is tested on any text the kernel may give.
 *
 * Nothing here throws for what the kernel says: a missing interface is `missing`, a file the kernel will not
 * answer in the interface's state (`carrier` of an interface that is down, `speed` of a veth that is down:
 * EINVAL) is an unknown value, any other failure is `unreadable` with the file and the error.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** The files read, relative to the interface's directory. */
export const INTERFACE_FILES = ['ifindex', 'operstate', 'flags', 'carrier', 'speed', 'address', 'mtu', 'statistics/rx_bytes', 'statistics/tx_bytes'] as const;
export type InterfaceFile = (typeof INTERFACE_FILES)[number];

/** What the kernel may refuse while the interface is in some state: the value is then unknown, not an error. */
const OPTIONAL_FILES: ReadonlySet<InterfaceFile> = new Set(['carrier', 'speed']);

/** RFC 2863's operational states as the kernel writes them (`operstate`). */
export const OPERSTATES = ['unknown', 'notpresent', 'down', 'lowerlayerdown', 'testing', 'dormant', 'up'] as const;
export type Operstate = (typeof OPERSTATES)[number];

/** IFF_UP in `flags`: the interface is administratively up (`ip link set … up`). */
const IFF_UP = 0x1;

/** One file's read: its text, or the errno code the read failed with. */
export type FileRead = { ok: true; text: string } | { ok: false; code: string };

export interface InterfaceFacts {
  ifname: string;
  /** The kernel's index: a new interface of the same name has another, and counters of its own. */
  ifindex: number;
  operstate: Operstate;
  adminUp: boolean;
  /** Null: the kernel does not say (the interface is administratively down). */
  carrier: boolean | null;
  /** Null: the driver does not know (no link, a virtual device without a speed). */
  speedMbps: number | null;
  /** Null: the interface has no hardware address (a tun, say). */
  mac: string | null;
  mtu: number;
  /** Since the interface was made; 64-bit counters, hence bigint. */
  rxBytes: bigint;
  txBytes: bigint;
}

export type InterfaceReading =
  | { kind: 'present'; facts: InterfaceFacts }
  | { kind: 'missing' }
  | { kind: 'unreadable'; reason: string };

/**
 * Makes sense of the files of interface `ifname`, as read. Any required file missing (ENOENT) means the
 * interface is not there (or went away while it was read); `carrier` and `speed` may fail with any code
 * and are then unknown (the kernel answers EINVAL for them in states where it has no value).
 */
export function parseInterfaceFiles(ifname: string, files: Readonly<Record<InterfaceFile, FileRead>>): InterfaceReading {
  const text: Partial<Record<InterfaceFile, string>> = {};
  for (const f of INTERFACE_FILES) {
    const r = files[f];
    if (r.ok) text[f] = r.text.trim();
    else if (r.code === 'ENOENT' && !OPTIONAL_FILES.has(f)) return { kind: 'missing' };
    else if (!OPTIONAL_FILES.has(f)) return { kind: 'unreadable', reason: `cannot read ${f} of ${ifname}: ${r.code}` };
  }
  const bad = (f: InterfaceFile, what: string): InterfaceReading => ({ kind: 'unreadable', reason: `${f} of ${ifname} is not ${what}: ${JSON.stringify(text[f])}` });
  const ifindex = decimal(text.ifindex);
  if (ifindex === null || ifindex < 1) return bad('ifindex', 'a positive integer');
  const operstate = text.operstate as Operstate;
  if (!(OPERSTATES as readonly string[]).includes(operstate)) return bad('operstate', `one of ${OPERSTATES.join(', ')}`);
  if (!/^0x[0-9a-f]+$/i.test(text.flags!)) return bad('flags', 'a hexadecimal number');
  const flags = Number.parseInt(text.flags!, 16);
  const mtu = decimal(text.mtu);
  if (mtu === null) return bad('mtu', 'an integer');
  const address = text.address!.toLowerCase();
  if (address !== '' && !/^[0-9a-f]{2}(:[0-9a-f]{2})*$/.test(address)) return bad('address', 'a hardware address');
  const rx = counter(text['statistics/rx_bytes']);
  if (rx === null) return bad('statistics/rx_bytes', 'a byte count');
  const tx = counter(text['statistics/tx_bytes']);
  if (tx === null) return bad('statistics/tx_bytes', 'a byte count');
  return {
    kind: 'present',
    facts: {
      ifname,
      ifindex,
      operstate,
      adminUp: (flags & IFF_UP) !== 0,
      carrier: text.carrier === '1' ? true : text.carrier === '0' ? false : null,
      speedMbps: speedOf(text.speed),
      mac: address === '' ? null : address,
      mtu,
      rxBytes: rx,
      txBytes: tx,
    },
  };
}

/**
 * The link's state as an operator means it: up when administratively up, with carrier, and its operstate
 * `up` — or `unknown`, which drivers that do not track operstate report (loopback, tun/tap, a bridge that
 * never had a port) — as the health check's `linkState` judges it from netlink (src/health/checks.ts).
 */
export function linkStateOf(f: InterfaceFacts): { state: 'up' | 'down'; detail: string } {
  if (!f.adminUp) return { state: 'down', detail: `administratively down (operstate ${f.operstate})` };
  if (f.carrier === false) return { state: 'down', detail: `no carrier (operstate ${f.operstate})` };
  if (f.operstate !== 'up' && f.operstate !== 'unknown') return { state: 'down', detail: `operstate ${f.operstate}` };
  return { state: 'up', detail: `carrier (operstate ${f.operstate})` };
}

/**
 * The kernel's own rule for interface names (`dev_valid_name`): 1–15 bytes, no '/', ':' or white space,
 * not '.' or '..'. A name outside it is refused before it becomes a path.
 */
export function isInterfaceName(name: string): boolean {
  return /^[^/:\s]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

/** Reads interface `ifname`'s files below `netDir` (a `/sys/class/net`) and makes sense of them. Never throws. */
export async function readInterface(netDir: string, ifname: string): Promise<InterfaceReading> {
  if (!isInterfaceName(ifname)) return { kind: 'unreadable', reason: `'${ifname}' is not an interface name` };
  const dir = path.join(netDir, ifname);
  const reads = await Promise.all(INTERFACE_FILES.map((f) => readOne(path.join(dir, f))));
  const files = Object.fromEntries(INTERFACE_FILES.map((f, i) => [f, reads[i]!])) as Record<InterfaceFile, FileRead>;
  return parseInterfaceFiles(ifname, files);
}

async function readOne(file: string): Promise<FileRead> {
  try {
    return { ok: true, text: await readFile(file, 'utf8') };
  } catch (e) {
    return { ok: false, code: (e as NodeJS.ErrnoException).code ?? String(e) };
  }
}

function decimal(s: string | undefined): number | null {
  return s !== undefined && /^\d{1,9}$/.test(s) ? Number(s) : null;
}

function counter(s: string | undefined): bigint | null {
  return s !== undefined && /^\d{1,20}$/.test(s) ? BigInt(s) : null;
}

/** `speed`: Mb/s; the kernel writes -1 (SPEED_UNKNOWN) or fails with EINVAL when the driver does not know. */
function speedOf(s: string | undefined): number | null {
  const n = decimal(s);
  return n === null || n === 0 ? null : n;
}
