/**
 * How `lockstep host history` and `lockstep vm history` show a `GET /v1/host/history` or
 * `GET /v1/vms/NAME/history` answer: a row per series with its newest value, its min, mean and max over the
 * window asked, its limit and a sparkline of the window; under the table, why a series has no value now.
 * The answers are the daemon's own types; `--json` passes them through untouched. Pure: the window's end is
 * given (the CLI's clock when it asked; the tests fix it).
 */
import type { History, Series, SeriesUnit } from '../history/sampler.js';
import type { Point } from '../history/ring.js';
import { table } from './output.js';
import { formatBytes } from './vm-view.js';

export type HostHistory = History & { host: string };
export type VmHistory = HostHistory & { vm: string; here: boolean };

/** The window asked for: the `lastMs` before `nowMs`. */
export interface HistoryWindow {
  lastMs: number;
  nowMs: number;
}

const SPARK = '▁▂▃▄▅▆▇█';
/** A sparkline column without a point: a time not measured (before the daemon started, or a gap). */
const UNMEASURED = '·';
const SPARK_WIDTH = 30;

export function renderHostHistory(h: HostHistory, w: HistoryWindow): string {
  return `history of ${h.host}, ${windowWords(h, w)}\n${seriesTable(h, w)}`;
}

/** A VM's history as the asked host kept it; a host it has not run on lately has none to show. */
export function renderVmHistory(h: VmHistory, w: HistoryWindow): string {
  if (!h.here && h.series.length === 0) return `VM ${h.vm}: not running on this host (${h.host}): the host that runs it has its history`;
  const lines = [`history of VM ${h.vm} on ${h.host}, ${windowWords(h, w)}`, seriesTable(h, w)];
  if (!h.here) lines.push(`VM ${h.vm} is not running on this host (${h.host}) now: this is its history from while it ran here`);
  return lines.join('\n');
}

/** The window as shown: no longer than the history reaches, which is all the daemon can answer. */
function shownMs(h: History, w: HistoryWindow): number {
  return Math.min(w.lastMs, h.keptMs);
}

function windowWords(h: History, w: HistoryWindow): string {
  const clipped = w.lastMs > h.keptMs ? ` (all it keeps; ${formatDuration(w.lastMs)} asked)` : '';
  return `last ${formatDuration(shownMs(h, w))}${clipped}, a round every ${formatDuration(h.intervalMs)}`;
}

function seriesTable(h: History, w: HistoryWindow): string {
  if (h.series.length === 0) return 'no series';
  const fromMs = w.nowMs - shownMs(h, w);
  const rows = h.series.map((s) => seriesRow(s, fromMs, w.nowMs, h.intervalMs));
  const notes = h.series.filter((s) => s.error !== null).map((s) => `${s.label}: not measured now: ${s.error}`);
  return [table(['series', 'now', 'min', 'avg', 'max', 'limit', 'trend'], rows), ...notes].join('\n');
}

function seriesRow(s: Series, fromMs: number, toMs: number, intervalMs: number): string[] {
  const shown = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : formatValue(s.unit, v));
  const values = s.points.map(([, v]) => v);
  const stats = summarize(values);
  // A series with an error has no value in the newest round: its last point is older than "now".
  const now = s.error === null ? values.at(-1) : null;
  return [s.label, shown(now), shown(stats?.min), shown(stats?.mean), shown(stats?.max), shown(s.limit), sparkline(s.points, fromMs, toMs, intervalMs, s.limit)];
}

export function summarize(values: readonly number[]): { min: number; mean: number; max: number } | null {
  if (values.length === 0) return null;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const v of values) {
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  return { min, mean: sum / values.length, max };
}

/** A value in its unit: a ratio as a percentage, cores with two decimals, bytes (and per second) in KiB, MiB, GiB. */
export function formatValue(unit: SeriesUnit, v: number): string {
  switch (unit) {
    case 'ratio':
      return `${(v * 100).toFixed(1)}%`;
    case 'cores':
      return `${v.toFixed(2)} cores`;
    case 'bytes':
      return formatBytes(Math.round(v));
    case 'bytes/s':
      return `${formatBytes(Math.round(v))}/s`;
  }
}

/**
 * The window `fromMs`–`toMs` in at most SPARK_WIDTH columns, each the mean of the points in its span. A
 * column is at least two rounds wide, so it holds a point whenever the series was measured then: an empty
 * one (`·`) is a time not measured. Levels run from 0 to the limit (or the peak, when there is none or it is
 * passed), so a flat memory use at a third of the host's reads as a third, not as its noise magnified.
 */
export function sparkline(points: readonly Point[], fromMs: number, toMs: number, intervalMs: number, limit: number | null): string {
  const spanMs = Math.max(1, toMs - fromMs);
  const columns = Math.max(1, Math.min(SPARK_WIDTH, Math.floor(spanMs / (2 * intervalMs))));
  const sums = new Array<number>(columns).fill(0);
  const counts = new Array<number>(columns).fill(0);
  for (const [t, v] of points) {
    // A round taken while the CLI asked is stamped after `toMs`: it belongs to the last column.
    const i = Math.min(columns - 1, Math.max(0, Math.floor(((t - fromMs) / spanMs) * columns)));
    sums[i]! += v;
    counts[i]! += 1;
  }
  const ceiling = Math.max(limit ?? 0, ...points.map(([, v]) => v));
  return sums.map((sum, i) => (counts[i] === 0 ? UNMEASURED : level(sum / counts[i]!, ceiling))).join('');
}

function level(v: number, ceiling: number): string {
  if (ceiling <= 0) return SPARK[0]!;
  return SPARK[Math.max(0, Math.min(SPARK.length - 1, Math.floor((v / ceiling) * SPARK.length)))]!;
}

/** `10m`, `1h`, `90s`: the largest unit that says it whole, as `--last` takes it. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${ms / 1000}s`;
}
