/**
 * Every interface of this process's network namespace, as netlink tells it (`ip -j -s link show`): state,
 * carrier, MAC, MTU and the byte counters, in the shape `link-facts.ts` parses sysfs into.
 *
 * Why netlink and not sysfs: sysfs shows the network namespace of whoever *mounted* it, and the lab puts
 * lockstepd into its host's namespace with `nsenter --net`, which keeps the root namespace's /sys (on purpose:
 * src/util/exec.ts). A sysfs of its own would need a mount namespace, and changing mount propagation fails
 * where / is no mount point (a chroot, a container). Netlink answers for the caller's namespace wherever it
 * runs. What it lacks is the link's speed (sysfs and ethtool only): it is read from sysfs only where /sys is
 * this namespace's (the interface there has the same index and address), and is unknown otherwise.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { run as runProgram } from '../util/exec.js';
import { describeError } from '../util/errors.js';
import { OPERSTATES, isInterfaceName, type InterfaceFacts, type InterfaceReading, type Operstate } from './link-facts.js';

/** Every interface's facts by name, or why none could be read. */
export type LinkTable = { ok: true; links: Map<string, InterfaceFacts> } | { ok: false; reason: string };

const IP_TIMEOUT_MS = 2000;

/** Makes sense of `ip -j -s link show` (pure). Entries that do not read as an interface are skipped. */
export function parseLinkTable(json: string): LinkTable {
  let entries: unknown;
  try {
    entries = JSON.parse(json);
  } catch (e) {
    return { ok: false, reason: `ip -j link: not JSON: ${describeError(e)}` };
  }
  if (!Array.isArray(entries)) return { ok: false, reason: 'ip -j link: not a list' };
  const links = new Map<string, InterfaceFacts>();
  for (const e of entries as Record<string, unknown>[]) {
    const facts = factsOf(e);
    if (facts) links.set(facts.ifname, facts);
  }
  return { ok: true, links };
}

function factsOf(e: Record<string, unknown>): InterfaceFacts | null {
  const { ifindex, ifname, flags, mtu, operstate, address, stats64 } = e as {
    ifindex?: unknown; ifname?: unknown; flags?: unknown; mtu?: unknown; operstate?: unknown; address?: unknown; stats64?: { rx?: { bytes?: unknown }; tx?: { bytes?: unknown } };
  };
  if (typeof ifname !== 'string' || !isInterfaceName(ifname) || typeof ifindex !== 'number' || !Number.isInteger(ifindex) || ifindex < 1) return null;
  if (!Array.isArray(flags) || typeof mtu !== 'number') return null;
  const rx = stats64?.rx?.bytes;
  const tx = stats64?.tx?.bytes;
  if (typeof rx !== 'number' || typeof tx !== 'number') return null;
  const state = String(operstate ?? 'UNKNOWN').toLowerCase();
  const adminUp = flags.includes('UP');
  return {
    ifname,
    ifindex,
    operstate: ((OPERSTATES as readonly string[]).includes(state) ? state : 'unknown') as Operstate,
    adminUp,
    // The kernel keeps no carrier for an interface that is administratively down (sysfs: EINVAL).
    carrier: adminUp ? flags.includes('LOWER_UP') && !flags.includes('NO-CARRIER') : null,
    speedMbps: null,
    mac: typeof address === 'string' && /^[0-9a-f]{2}(:[0-9a-f]{2})+$/i.test(address) ? address.toLowerCase() : null,
    mtu,
    // JSON numbers hold 2^53 exactly: years of traffic at 10 Gb/s.
    rxBytes: BigInt(rx),
    txBytes: BigInt(tx),
  };
}

/**
 * This namespace's interfaces now, with the speeds of those `wanted` (where /sys is this namespace's: three
 * small reads each, not worth doing for interfaces no one asked about). Never throws.
 */
export async function readLinkTable(run: typeof runProgram, wanted: readonly string[], sysClassNet = '/sys/class/net'): Promise<LinkTable> {
  let json: string;
  try {
    json = (await run('ip', ['-j', '-s', 'link', 'show'], { timeoutMs: IP_TIMEOUT_MS })).stdout;
  } catch (e) {
    return { ok: false, reason: `ip -j -s link show: ${describeError(e)}` };
  }
  const table = parseLinkTable(json);
  if (!table.ok) return table;
  const asked = wanted.flatMap((name) => table.links.get(name) ?? []);
  await Promise.all(asked.map(async (f) => (f.speedMbps = await speedIfSameNamespace(sysClassNet, f))));
  return table;
}

/** The interface's entry in one table, as the sysfs reader would answer it. */
export function readingOf(table: LinkTable, ifname: string): InterfaceReading {
  if (!table.ok) return { kind: 'unreadable', reason: table.reason };
  const f = table.links.get(ifname);
  return f ? { kind: 'present', facts: f } : { kind: 'missing' };
}

/** `speed` in sysfs when the interface there is this one (same index and address): Mb/s, or null. */
async function speedIfSameNamespace(dir: string, f: InterfaceFacts): Promise<number | null> {
  const read = (name: string): Promise<string | null> => readFile(path.join(dir, f.ifname, name), 'utf8').then((t) => t.trim(), () => null);
  const [ifindex, address, speed] = await Promise.all([read('ifindex'), read('address'), read('speed')]);
  if (ifindex !== String(f.ifindex) || (address ?? '').toLowerCase() !== (f.mac ?? '')) return null;
  const n = speed !== null && /^\d{1,9}$/.test(speed) ? Number(speed) : 0;
  return n > 0 ? n : null;
}
