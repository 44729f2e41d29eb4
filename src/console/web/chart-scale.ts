/**
 * The arithmetic of the console's charts, pure (no DOM), so it is tested in Node: the value axis (from 0 to
 * a round number at or above the data and the series' limit, ticks labelled in the series' unit: %, cores,
 * KiB/MiB/GiB, …/s), the time axis (ticks on round local times), the split of a series into runs where
 * rounds are missing, and the mapping of points to the chart's pixels.
 */

export type Unit = 'ratio' | 'cores' | 'bytes' | 'bytes/s';

export interface Tick {
  value: number;
  label: string;
}

export interface ValueScale {
  max: number;
  ticks: Tick[];
}

/** A round step at or above `rough`: 1, 2, 2.5 or 5 times a power of ten. */
export function niceStep(rough: number): number {
  if (!(rough > 0) || !Number.isFinite(rough)) return 1;
  const p = 10 ** Math.floor(Math.log10(rough));
  const f = rough / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** A number without the float noise of a sum of steps (0.30000000000000004 → 0.3). */
function tidy(n: number): string {
  return String(Number(n.toPrecision(6)));
}

/** The power of 1024 a byte count reads in: 0 for B, 1 for KiB, … */
function binaryPower(n: number): number {
  let k = 0;
  while (n >= 1024 && k < BINARY.length - 1) {
    n /= 1024;
    k++;
  }
  return k;
}

/** A value as a chart labels it: "45 %", "1.5 cores", "512 MiB", "1.2 MiB/s". */
export function formatValue(unit: Unit, v: number): string {
  switch (unit) {
    case 'ratio':
      return `${tidy(Math.round(v * 1000) / 10)} %`;
    case 'cores': {
      const n = Math.round(v * 100) / 100;
      return `${tidy(n)} ${n === 1 ? 'core' : 'cores'}`;
    }
    case 'bytes':
    case 'bytes/s': {
      const k = binaryPower(Math.abs(v));
      const scaled = v / 1024 ** k;
      return `${tidy(k === 0 ? Math.round(scaled) : Math.round(scaled * 10) / 10)} ${BINARY[k]}${unit === 'bytes/s' ? '/s' : ''}`;
    }
  }
}

/** About this many ticks on the value axis (four steps above 0). */
const VALUE_STEPS = 4;
/** The least top of an axis, so that a quiet series (an idle interface, an idle VM) is a flat line on a readable scale. */
const TOP_MIN: Record<Exclude<Unit, 'ratio'>, number> = { cores: 0.2, bytes: 1024, 'bytes/s': 1024 };

/**
 * The value axis: from 0 to a round top at or above the data and the limit (a memory size, a capacity: so
 * a line reads against how full it can get). A share tops at 100 %. Bytes step in their binary unit (0, 256,
 * 512 MiB …), not in decimal bytes. With no data and no limit the axis still has a top.
 */
export function valueScale(unit: Unit, dataMax: number, limit: number | null): ValueScale {
  if (unit === 'ratio') return { max: 1, ticks: [0, 0.25, 0.5, 0.75, 1].map((value) => ({ value, label: formatValue(unit, value) })) };
  const top = Math.max(dataMax, limit ?? 0, TOP_MIN[unit]);
  let step: number;
  if (unit === 'cores') step = niceStep(top / VALUE_STEPS);
  else {
    const u = 1024 ** binaryPower(top);
    step = niceStep(top / u / VALUE_STEPS) * u;
  }
  const max = Math.max(step, Math.ceil(top / step - 1e-9) * step);
  const ticks: Tick[] = [];
  for (let i = 0; i * step <= max + step / 1e6; i++) ticks.push({ value: i * step, label: formatValue(unit, i * step) });
  return { max, ticks };
}

/** The steps the time axis may take, shortest first. */
const TIME_STEPS_MS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].map((s) => s * 1000);
/** At most this many labels fit under a chart. */
const TIME_TICKS_MAX = 6;

/**
 * Ticks on round local times within [fromMs, toMs]: the shortest step that gives at most six, labelled
 * HH:MM (HH:MM:SS below a minute). `tzOffsetMs` is local time less UTC (the browser passes its own), so the
 * result does not depend on where the tests run.
 */
export function timeTicks(fromMs: number, toMs: number, tzOffsetMs: number): Tick[] {
  if (!(toMs > fromMs)) return [];
  const span = toMs - fromMs;
  const step = TIME_STEPS_MS.find((s) => span / s <= TIME_TICKS_MAX) ?? TIME_STEPS_MS.at(-1)!;
  const pad = (n: number): string => String(n).padStart(2, '0');
  const ticks: Tick[] = [];
  // The first round local time at or after fromMs.
  const first = Math.ceil((fromMs + tzOffsetMs) / step) * step - tzOffsetMs;
  for (let t = first; t <= toMs; t += step) {
    const d = new Date(t + tzOffsetMs);
    const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    ticks.push({ value: t, label: step < 60_000 ? `${hm}:${pad(d.getUTCSeconds())}` : hm });
  }
  return ticks;
}

/** A gap of more than this many rounds between two points breaks the line: nothing was measured there. */
const GAP_ROUNDS = 2.5;

/** The runs of a series between missing rounds (a VM that did not run, a file that could not be read). */
export function segments(points: readonly (readonly [number, number])[], intervalMs: number): [number, number][][] {
  const runs: [number, number][][] = [];
  let run: [number, number][] = [];
  let last: number | null = null;
  for (const [t, v] of points) {
    if (last !== null && t - last > GAP_ROUNDS * intervalMs) {
      runs.push(run);
      run = [];
    }
    run.push([t, v]);
    last = t;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/** Where a chart draws: its size in pixels and the margins kept for the axes' labels. */
export interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export const FRAME: Frame = { width: 360, height: 150, left: 62, right: 10, top: 10, bottom: 22 };

/** The pixel of a time and of a value; values above the top are drawn at the top, never outside the chart. */
export function project(frame: Frame, fromMs: number, toMs: number, max: number): { x(t: number): number; y(v: number): number } {
  const w = frame.width - frame.left - frame.right;
  const h = frame.height - frame.top - frame.bottom;
  const round = (n: number): number => Math.round(n * 10) / 10;
  return {
    x: (t) => round(frame.left + (toMs > fromMs ? ((t - fromMs) / (toMs - fromMs)) * w : w)),
    y: (v) => round(frame.top + h - (max > 0 ? Math.min(1, Math.max(0, v / max)) : 0) * h),
  };
}

/** An SVG polyline's `points`: "x,y x,y …". */
export function polylinePoints(run: readonly (readonly [number, number])[], p: { x(t: number): number; y(v: number): number }): string {
  return run.map(([t, v]) => `${p.x(t)},${p.y(v)}`).join(' ');
}

/**
 * The time a chart spans: to its newest point (the host's clock, not the browser's, which may differ), from
 * its oldest, but never less than ten rounds, so the first minutes do not stretch two points across it.
 */
export function timeSpan(points: readonly (readonly [number, number])[], intervalMs: number): { fromMs: number; toMs: number } | null {
  if (points.length === 0) return null;
  let from = Infinity;
  let to = -Infinity;
  for (const [t] of points) {
    from = Math.min(from, t);
    to = Math.max(to, t);
  }
  return { fromMs: Math.min(from, to - 10 * intervalMs), toMs: to };
}
