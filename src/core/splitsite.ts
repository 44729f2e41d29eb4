/**
 * SplitSite: synchronous protection needs a short A-Link. FT needs a round trip ≤ 2 ms and HA ≤ 10 ms; over
 * the limit, the protection that cannot be kept is downgraded (and an alert says so) rather than silently
 * slowing every guest write.
 */
import type { CoreConfig, ProtectionLevel } from './types.js';

export function effectiveProtection(requested: ProtectionLevel, rttMs: number | null, cfg: CoreConfig): ProtectionLevel {
  if (rttMs === null || requested === 'none') return requested;
  if (requested === 'ft' && rttMs <= cfg.rttLimitMs.ft) return 'ft';
  if (rttMs <= cfg.rttLimitMs.ha) return 'ha';
  return 'none';
}
