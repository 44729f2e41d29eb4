/**
 * Which interface carries an address. An A-Link path is configured by its addresses (this host's and the
 * peer's on the cable), not by an interface name; its interface is the one holding the local address.
 * Asked over netlink (`ip -j addr show`), which lists addresses whatever the link's state, in this
 * process's network namespace (sysfs has no IP addresses).
 */
import { describeError } from '../util/errors.js';
import { run } from '../util/exec.js';

/** Found; no interface has it (a fact about the host); or the kernel's answer could not be had (unknown). */
export type AddressOwner = { kind: 'found'; ifname: string } | { kind: 'absent'; reason: string } | { kind: 'unknown'; reason: string };

/** The interface holding IPv4 `address`, from `ip -j addr show`'s standard output. Pure. */
export function interfaceWithAddress(json: string, address: string): AddressOwner {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (e) {
    return { kind: 'unknown', reason: `ip printed no valid JSON: ${describeError(e)}` };
  }
  if (!Array.isArray(parsed)) return { kind: 'unknown', reason: 'ip printed JSON that is not a list of links' };
  for (const link of parsed as unknown[]) {
    if (typeof link !== 'object' || link === null) continue;
    const l = link as { ifname?: unknown; addr_info?: unknown };
    if (typeof l.ifname !== 'string' || !Array.isArray(l.addr_info)) continue;
    if (l.addr_info.some((a: unknown) => typeof a === 'object' && a !== null && (a as { local?: unknown }).local === address)) return { kind: 'found', ifname: l.ifname };
  }
  return { kind: 'absent', reason: `no interface has the address ${address}` };
}

/**
 * `ip -j -4 addr show`'s output: every interface with its IPv4 addresses, in one answer for every address
 * asked about. `runner` starts `ip` (lockstepd's runs off its main thread). Never throws.
 */
export async function addressListing(timeoutMs: number, runner: typeof run = run): Promise<{ ok: true; json: string } | { ok: false; reason: string }> {
  try {
    const r = await runner('ip', ['-j', '-4', 'addr', 'show'], { allowFailure: true, timeoutMs });
    if (r.code !== 0) return { ok: false, reason: `ip addr show: ${r.stderr.trim() || `exit ${r.code}`}` };
    return { ok: true, json: r.stdout };
  } catch (e) {
    return { ok: false, reason: describeError(e) };
  }
}
