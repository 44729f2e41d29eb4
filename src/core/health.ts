/**
 * Host health: a comparable score from component checks, and the predictive-failure estimate (transient
 * faults counted per host; a host whose estimated MTBF falls below the threshold is declared down).
 */
import { HEALTH_COMPONENTS, type ComponentState, type HealthComponent, type HealthSnapshot } from './types.js';

/** How much each component counts: losing a disk or the guests' network matters most. Sums to 100. */
export const HEALTH_WEIGHTS: Readonly<Record<HealthComponent, number>> = {
  disk: 30,
  business: 25,
  qemu: 20,
  mgmt: 10,
  alink1: 5,
  alink2: 5,
  'power-supply': 5,
};

export function healthyComponents(): HealthSnapshot {
  return Object.fromEntries(HEALTH_COMPONENTS.map((c) => [c, 'ok'])) as Record<HealthComponent, ComponentState>;
}

export function healthScore(h: HealthSnapshot): number {
  let score = 0;
  for (const c of HEALTH_COMPONENTS) score += h[c] === 'ok' ? HEALTH_WEIGHTS[c] : h[c] === 'degraded' ? HEALTH_WEIGHTS[c] / 2 : 0;
  return score;
}

/** Components that went from working to failed between two snapshots: each is one transient fault. */
export function newFailures(before: HealthSnapshot, after: HealthSnapshot): HealthComponent[] {
  return HEALTH_COMPONENTS.filter((c) => after[c] === 'failed' && before[c] !== 'failed');
}

/**
 * MTBF estimate from the faults seen within the window: the window divided by their number (Infinity with
 * none). A single fault after a short uptime is not a verdict; several within the window are.
 */
export function estimateMtbfMs(faultTimes: readonly number[], now: number, windowMs: number): number {
  const recent = faultTimes.filter((t) => now - t <= windowMs).length;
  return recent === 0 ? Infinity : windowMs / recent;
}

/** How many fault times a host keeps: enough for any sensible threshold, bounded. */
export const FAULT_HISTORY_KEPT = 64;

/** Faults that mean "this host cannot serve its guests": the seed reboots a backup that has one. */
export const SERIOUS_COMPONENTS: readonly HealthComponent[] = ['business', 'disk', 'qemu', 'mgmt'];

/**
 * A-Link paths: a cable joins both hosts, so its loss is seen by both and says nothing about either. It
 * counts in the health score (equally on both hosts) but is no host fault: an alert, never a reboot or an
 * MTBF entry. Losing every path is the peer's silence, which the pair's leases and quorum handle.
 */
export const ALINK_COMPONENTS: readonly HealthComponent[] = ['alink1', 'alink2'];

/** Components that went from failed back to working. */
export function recoveries(before: HealthSnapshot, after: HealthSnapshot): HealthComponent[] {
  return HEALTH_COMPONENTS.filter((c) => before[c] === 'failed' && after[c] !== 'failed');
}
