/**
 * The health monitor's component checks: each finds out one component's state from the host itself
 * (netlink link state, a disk probe), or maps what another module reports (A-Link paths, QEMU). The pure
 * parts — parsing `ip -j link` output, mapping A-Link paths, validating the injection file, combining
 * states — are exported on their own so that they can be tested without a network or a disk.
 *
 * Every check gives a `CheckResult`: the state and a short reason, which the monitor logs when the state
 * changes. No check throws.
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { HEALTH_COMPONENTS, type ComponentState, type HealthComponent, type HealthSnapshot } from '../core/types.js';
import { describeError } from '../util/errors.js';
import { run } from '../util/exec.js';

export interface CheckResult {
  state: ComponentState;
  /** Why, for the log: "carrier", "NO-CARRIER (operstate DOWN)", "EIO: i/o error, open …". */
  detail: string;
}

const STATE_RANK: Readonly<Record<ComponentState, number>> = { ok: 0, degraded: 1, failed: 2 };

/** The worse of two states. */
export function worse(a: ComponentState, b: ComponentState): ComponentState {
  return STATE_RANK[a] >= STATE_RANK[b] ? a : b;
}

export function isComponentState(v: unknown): v is ComponentState {
  return v === 'ok' || v === 'degraded' || v === 'failed';
}

export function isHealthComponent(v: unknown): v is HealthComponent {
  return (HEALTH_COMPONENTS as readonly unknown[]).includes(v);
}

export function sameSnapshot(a: HealthSnapshot, b: HealthSnapshot): boolean {
  return HEALTH_COMPONENTS.every((c) => a[c] === b[c]);
}

// ── network interfaces (mgmt, business) ────────────────────────────────────────────────────────────────

/** The fields of one `ip -j link show` entry that the check reads. */
export interface IpLink {
  ifname: string;
  flags: string[];
  operstate: string;
}

/**
 * One link's state from its `ip -j link` entry. Carrier is the kernel's LOWER_UP flag (IFF_LOWER_UP);
 * the interface must also be administratively UP, and its RFC 2863 operstate UP — or UNKNOWN, which is
 * what drivers that do not track operstate report (a bridge that never had a port, a tun/tap, a dummy)
 * while their carrier is on. Anything else is failed: admin down, NO-CARRIER (a pulled cable, a veth
 * whose peer is down, a bridge none of whose ports has carrier), LOWERLAYERDOWN, DORMANT, NOTPRESENT.
 */
export function linkState(link: IpLink): CheckResult {
  const flags = new Set(link.flags);
  if (!flags.has('UP')) return { state: 'failed', detail: `administratively down (operstate ${link.operstate})` };
  if (flags.has('NO-CARRIER') || !flags.has('LOWER_UP')) return { state: 'failed', detail: `NO-CARRIER (operstate ${link.operstate})` };
  if (link.operstate !== 'UP' && link.operstate !== 'UNKNOWN') return { state: 'failed', detail: `operstate ${link.operstate}` };
  return { state: 'ok', detail: `carrier (operstate ${link.operstate})` };
}

/**
 * The state of interface `ifname` from the standard output of `ip -j link show dev IFNAME` (or of
 * `ip -j link show`, which lists every link). Output that is not what iproute2 prints counts as failed:
 * the check could not confirm carrier.
 */
export function linkStateFromIpJson(json: string, ifname: string): CheckResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (e) {
    return { state: 'failed', detail: `ip printed no valid JSON: ${describeError(e)}` };
  }
  if (!Array.isArray(parsed)) return { state: 'failed', detail: 'ip printed JSON that is not a list of links' };
  const entry = (parsed as unknown[]).find((l) => isRecord(l) && l.ifname === ifname);
  if (entry === undefined) return { state: 'failed', detail: `interface ${ifname} does not exist` };
  const l = entry as Record<string, unknown>;
  if (!Array.isArray(l.flags) || !l.flags.every((f) => typeof f === 'string') || typeof l.operstate !== 'string') {
    return { state: 'failed', detail: `ip's entry for ${ifname} has no flags or operstate` };
  }
  return linkState({ ifname, flags: l.flags as string[], operstate: l.operstate });
}

/**
 * Checks interface `ifname` in this process's network namespace (lockstepd runs inside the host's).
 * A missing interface is failed; so is an `ip` that fails or takes longer than `timeoutMs`. `runner` starts
 * `ip` (the daemon's runs it off its main thread: `ExecThread`).
 */
export async function checkInterface(ifname: string, timeoutMs: number, runner: typeof run = run): Promise<CheckResult> {
  try {
    const r = await runner('ip', ['-j', 'link', 'show', 'dev', ifname], { allowFailure: true, timeoutMs });
    if (r.code !== 0) {
      const why = r.stderr.trim() || `exit ${r.code}`;
      return { state: 'failed', detail: /does not exist/i.test(why) ? `interface ${ifname} does not exist` : `ip link show ${ifname}: ${why}` };
    }
    return linkStateFromIpJson(r.stdout, ifname);
  } catch (e) {
    return { state: 'failed', detail: describeError(e) };
  }
}

// ── A-Link paths (alink1, alink2) ──────────────────────────────────────────────────────────────────────

/**
 * The two A-Link components from the A-Link module's per-path report (path name → up). Up is ok, down is
 * failed. A path that is not in the report is not configured — a pair may have one A-Link — and is ok:
 * the missing cable is a configuration, not a fault, and must not lower the score.
 */
export function alinkStates(paths: Readonly<Record<string, boolean>>): { alink1: CheckResult; alink2: CheckResult } {
  const one = (name: 'alink1' | 'alink2'): CheckResult => {
    if (!Object.hasOwn(paths, name)) return { state: 'ok', detail: 'not configured' };
    return paths[name] ? { state: 'ok', detail: 'path up' } : { state: 'failed', detail: 'path down' };
  };
  return { alink1: one('alink1'), alink2: one('alink2') };
}

// ── disk ───────────────────────────────────────────────────────────────────────────────────────────────

/** The probe file's name in the data directory. */
export const DISK_PROBE_FILE = '.lockstep-health-probe';
const PROBE_BYTES = 4096;
let probeSeq = 0;

/**
 * Writes a 4 KiB probe file in `dir` (created or truncated), fdatasyncs it, reads it back through the same
 * handle and compares. Throws what the file system says (ENOENT for a missing directory, EROFS, EIO, …).
 * Not bounded in time: a hung disk hangs it, and nothing can cancel it — see `SingleFlight`.
 */
export async function diskProbe(dir: string): Promise<void> {
  const text = `lockstep health probe pid ${process.pid} #${++probeSeq} at ${new Date().toISOString()}\n`;
  const payload = Buffer.alloc(PROBE_BYTES, ' ');
  payload.write(text);
  const fh = await open(path.join(dir, DISK_PROBE_FILE), 'w+');
  try {
    await fh.write(payload, 0, payload.length, 0);
    await fh.datasync();
    const back = Buffer.alloc(PROBE_BYTES);
    const { bytesRead } = await fh.read(back, 0, PROBE_BYTES, 0);
    if (bytesRead !== PROBE_BYTES || !back.equals(payload)) throw new Error(`probe read back ${bytesRead} bytes that differ from those written`);
  } finally {
    await fh.close();
  }
}

/** A probe that succeeded: ok, or degraded when it took longer than `slowMs`. */
export function diskStateFromProbe(elapsedMs: number, slowMs: number): CheckResult {
  const ms = Math.round(elapsedMs);
  return elapsedMs > slowMs ? { state: 'degraded', detail: `probe took ${ms} ms (slow above ${slowMs} ms)` } : { state: 'ok', detail: `probe took ${ms} ms` };
}

// ── bounded, never overlapping checks ──────────────────────────────────────────────────────────────────

export type Bounded<T> =
  | { kind: 'done'; value: T; elapsedMs: number }
  | { kind: 'error'; error: unknown; elapsedMs: number }
  /** It did not settle in time; it still runs, and the next call reports `busy` until it settles. */
  | { kind: 'timeout'; elapsedMs: number }
  /** The previous call's operation has not settled yet: no second one was started. */
  | { kind: 'busy'; pendingMs: number };

/**
 * Runs an operation with a time bound, never two at once. An operation that cannot be cancelled (a write
 * to a hung disk, a QMP call) keeps running after its timeout; starting another on top would only pile
 * up stuck threads, so until it settles every call reports `busy` at once.
 */
export class SingleFlight<T> {
  private pendingSince: number | null = null;

  constructor(
    private readonly op: () => Promise<T>,
    private readonly timeoutMs: number,
  ) {}

  get pending(): boolean {
    return this.pendingSince !== null;
  }

  async run(): Promise<Bounded<T>> {
    const t0 = performance.now();
    if (this.pendingSince !== null) return { kind: 'busy', pendingMs: t0 - this.pendingSince };
    this.pendingSince = t0;
    const settled: Promise<Bounded<T>> = (async () => {
      try {
        return { kind: 'done' as const, value: await this.op(), elapsedMs: performance.now() - t0 };
      } catch (error) {
        return { kind: 'error' as const, error, elapsedMs: performance.now() - t0 };
      } finally {
        this.pendingSince = null;
      }
    })();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Bounded<T>>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'timeout', elapsedMs: performance.now() - t0 }), this.timeoutMs);
    });
    try {
      return await Promise.race([settled, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A disk probe's outcome as a component state. */
export function diskResult(b: Bounded<void>, slowMs: number, timeoutMs: number): CheckResult {
  switch (b.kind) {
    case 'done':
      return diskStateFromProbe(b.elapsedMs, slowMs);
    case 'error':
      return { state: 'failed', detail: describeError(b.error) };
    case 'timeout':
      return { state: 'failed', detail: `probe did not finish within ${timeoutMs} ms` };
    case 'busy':
      return { state: 'failed', detail: `previous probe still pending after ${Math.round(b.pendingMs)} ms` };
  }
}

/** The QEMU check's outcome: the daemon's answer, or failed when it threw, hung or is still pending. */
export function qemuResult(b: Bounded<ComponentState>, timeoutMs: number): CheckResult {
  switch (b.kind) {
    case 'done':
      return isComponentState(b.value) ? { state: b.value, detail: `VMs answer: ${b.value}` } : { state: 'failed', detail: `QEMU check returned ${String(b.value)}` };
    case 'error':
      return { state: 'failed', detail: `QEMU check failed: ${describeError(b.error)}` };
    case 'timeout':
      return { state: 'failed', detail: `QEMU check did not answer within ${timeoutMs} ms` };
    case 'busy':
      return { state: 'failed', detail: `previous QEMU check still pending after ${Math.round(b.pendingMs)} ms` };
  }
}

// ── injected faults (lab) ──────────────────────────────────────────────────────────────────────────────

export type Injected = Readonly<Partial<Record<HealthComponent, ComponentState>>>;

export type InjectParse = { ok: true; components: Injected } | { ok: false; reason: string };

/**
 * Validates the injection file's text: `{ "components": { "<component>": "ok"|"degraded"|"failed", … } }`.
 * `components` may be left out or empty (nothing injected). Any other key, component or state makes the
 * whole file invalid: a typo must not silently inject nothing.
 */
export function parseInjectFile(text: string): InjectParse {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { ok: false, reason: `not valid JSON: ${describeError(e)}` };
  }
  if (!isRecord(v)) return { ok: false, reason: 'not a JSON object' };
  for (const k of Object.keys(v)) if (k !== 'components') return { ok: false, reason: `unknown key '${k}' (only 'components')` };
  if (v.components === undefined) return { ok: true, components: {} };
  if (!isRecord(v.components)) return { ok: false, reason: "'components' is not an object" };
  const out: Partial<Record<HealthComponent, ComponentState>> = {};
  for (const [c, s] of Object.entries(v.components)) {
    if (!isHealthComponent(c)) return { ok: false, reason: `unknown component '${c}' (one of ${HEALTH_COMPONENTS.join(', ')})` };
    if (!isComponentState(s)) return { ok: false, reason: `component '${c}': state ${JSON.stringify(s)} is not ok, degraded or failed` };
    out[c] = s;
  }
  return { ok: true, components: out };
}

/** The measured snapshot with injected states applied: each component gets the worse of the two. */
export function applyInjected(measured: HealthSnapshot, injected: Injected): HealthSnapshot {
  const out = {} as Record<HealthComponent, ComponentState>;
  for (const c of HEALTH_COMPONENTS) out[c] = worse(measured[c], injected[c] ?? 'ok');
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
