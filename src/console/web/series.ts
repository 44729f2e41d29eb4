/**
 * The console's copy of a resource history, pure: the first answer is the whole hour, each later one only
 * the points after the newest the console has (`since=`), merged here. The copy is bounded like the host's
 * own: points older than the host's window (`keptMs`) before the newest are dropped, so a tab left open all
 * day holds an hour, not a day. A series' label, limit and error are the newest answer's.
 */
import type { HistoryAnswer, HistorySeries } from './types.js';

export interface KeptHistory {
  intervalMs: number;
  keptMs: number;
  here: boolean | null;
  /** In the order of the newest answer. */
  series: HistorySeries[];
}

export const EMPTY_HISTORY: KeptHistory = { intervalMs: 5000, keptMs: 3600_000, here: null, series: [] };

/** The newest point's time of any series: what the next request passes as `since` (null: none yet). */
export function newestMs(h: KeptHistory): number | null {
  let newest: number | null = null;
  for (const s of h.series) {
    const t = s.points.at(-1)?.[0];
    if (t !== undefined && (newest === null || t > newest)) newest = t;
  }
  return newest;
}

/** `kept` with `answer`'s points added (none twice: only those after a series' newest), trimmed to the window. */
export function mergeHistory(kept: KeptHistory, answer: HistoryAnswer): KeptHistory {
  const before = new Map(kept.series.map((s) => [s.id, s]));
  const merged = answer.series.map((s): HistorySeries => {
    const old = before.get(s.id)?.points ?? [];
    const last = old.at(-1)?.[0] ?? Number.NEGATIVE_INFINITY;
    return { ...s, points: [...old, ...s.points.filter(([t]) => t > last)] };
  });
  const result: KeptHistory = { intervalMs: answer.intervalMs, keptMs: answer.keptMs, here: answer.here ?? null, series: merged };
  const newest = newestMs(result);
  if (newest === null) return result;
  const from = newest - answer.keptMs;
  return { ...result, series: merged.map((s) => ({ ...s, points: s.points.filter(([t]) => t > from) })) };
}
