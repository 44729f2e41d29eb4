/**
 * What Lockstep knows of one network interface (state, carrier, speed, MAC, MTU, byte counters), read by
 * `link-reader.ts`, and the link state an operator means by it.
 */

/** RFC 2863's operational states as the kernel writes them (`operstate`). */
export const OPERSTATES = ['unknown', 'notpresent', 'down', 'lowerlayerdown', 'testing', 'dormant', 'up'] as const;
export type Operstate = (typeof OPERSTATES)[number];

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
