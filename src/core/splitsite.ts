/**
 * SplitSite: synchronous protection needs a short A-Link. FT needs a round trip ≤ 2 ms and HA ≤ 10 ms; over
 * the limit, the protection that cannot be kept is downgraded (and an alert says so) rather than silently
 * slowing every guest write.
 *
 * What the link allows changes only with hysteresis, so that a loaded machine's occasional slow sample does
 * not flap a VM between protected and downgraded (each flap an alert): the allowance drops only after every
 * sample for `downgradeAfterMs` was over the limit, and rises again only after every sample for
 * `restoreAfterMs` was under RESTORE_FRACTION of it. The first sample sets it at once.
 */
import type { CoreConfig, ProtectionLevel } from './types.js';

/** A link restored to a level must be clearly inside its limit, not hovering at it. */
export const RESTORE_FRACTION = 0.8;

const RANK: Readonly<Record<ProtectionLevel, number>> = { none: 0, ha: 1, ft: 2 };

export interface SplitSite {
  /** The strongest protection the A-Link allows now; null before the first round trip was measured. */
  allowed: ProtectionLevel | null;
  /** A change the samples have asked for without a break since `since`. */
  pending: { level: ProtectionLevel; since: number } | null;
  /** The last sample, for the operator. */
  rttMs: number | null;
}

export const SPLITSITE_UNMEASURED: SplitSite = { allowed: null, pending: null, rttMs: null };

/** The strongest level whose limit (scaled by `fraction`) the round trip keeps. */
function levelWithin(rttMs: number, cfg: CoreConfig, fraction: number): ProtectionLevel {
  if (rttMs <= cfg.rttLimitMs.ft * fraction) return 'ft';
  if (rttMs <= cfg.rttLimitMs.ha * fraction) return 'ha';
  return 'none';
}

/** Folds one round-trip sample taken at `now` into the SplitSite state. */
export function splitsiteSample(s: SplitSite, rttMs: number, now: number, cfg: CoreConfig): SplitSite {
  if (s.allowed === null) return { allowed: levelWithin(rttMs, cfg, 1), pending: null, rttMs };
  const lower = levelWithin(rttMs, cfg, 1);
  const higher = levelWithin(rttMs, cfg, RESTORE_FRACTION);
  let wanted: ProtectionLevel | null = null;
  if (RANK[lower] < RANK[s.allowed]) wanted = lower;
  else if (RANK[higher] > RANK[s.allowed]) wanted = higher;
  if (wanted === null) return { ...s, pending: null, rttMs };
  // A change in the same direction keeps its start: "over the limit for 2 s" need not be over by as much.
  const sameDirection = s.pending !== null && RANK[s.pending.level] < RANK[s.allowed] === RANK[wanted] < RANK[s.allowed];
  const since = sameDirection ? s.pending!.since : now;
  return settle({ allowed: s.allowed, pending: { level: wanted, since }, rttMs }, now, cfg);
}

/** Adopts a pending change once it has held long enough. */
export function settle(s: SplitSite, now: number, cfg: CoreConfig): SplitSite {
  const due = splitsiteDueAt(s, cfg);
  if (due === null || now < due) return s;
  return { allowed: s.pending!.level, pending: null, rttMs: s.rttMs };
}

/** When the pending change, if the samples keep asking for it, is adopted. */
export function splitsiteDueAt(s: SplitSite, cfg: CoreConfig): number | null {
  if (s.pending === null || s.allowed === null) return null;
  const down = RANK[s.pending.level] < RANK[s.allowed];
  return s.pending.since + (down ? cfg.splitsiteHoldMs.downgrade : cfg.splitsiteHoldMs.restore);
}

export function stronger(a: ProtectionLevel, b: ProtectionLevel): boolean {
  return RANK[a] > RANK[b];
}

export function effectiveProtection(requested: ProtectionLevel, allowed: ProtectionLevel | null): ProtectionLevel {
  if (allowed === null) return requested;
  return RANK[allowed] < RANK[requested] ? allowed : requested;
}
