/**
 * The pure parts of the console's charts: the value axis in each unit (round tops at or above the data and
 * the limit, binary steps for bytes, 100 % for a share), the labels, the time axis on round local times in
 * any time zone, the lines broken where rounds are missing, the mapping to pixels (never outside the
 * chart), and the console's bounded copy of a history merged from `since=` answers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FRAME, formatValue, niceStep, polylinePoints, project, segments, timeSpan, timeTicks, valueScale } from '../../src/console/web/chart-scale.js';
import { EMPTY_HISTORY, mergeHistory, newestMs } from '../../src/console/web/series.js';
import type { HistoryAnswer, HistorySeries } from '../../src/console/web/types.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

test('round steps: 1, 2, 2.5, 5 times a power of ten', () => {
  assert.deepEqual([0.07, 0.1, 0.13, 0.24, 0.3, 0.6, 1, 7, 23, 4100].map(niceStep), [0.1, 0.1, 0.2, 0.25, 0.5, 1, 1, 10, 25, 5000]);
  assert.equal(niceStep(0), 1);
  assert.equal(niceStep(Number.NaN), 1);
});

test('labels in the unit: a share in %, cores, bytes and bytes per second in binary units', () => {
  assert.deepEqual(
    [formatValue('ratio', 0.254), formatValue('ratio', 1), formatValue('cores', 1.234), formatValue('cores', 1), formatValue('bytes', 0), formatValue('bytes', 1536), formatValue('bytes', 512 * MIB), formatValue('bytes', 3.25 * GIB), formatValue('bytes/s', 1_300_000)],
    ['25.4 %', '100 %', '1.23 cores', '1 core', '0 B', '1.5 KiB', '512 MiB', '3.3 GiB', '1.2 MiB/s'],
  );
});

test('the value axis: from 0 to a round top at or above the data and the limit', () => {
  // A share: always 0 to 100 %.
  assert.deepEqual(valueScale('ratio', 0.03, null).ticks.map((t) => t.label), ['0 %', '25 %', '50 %', '75 %', '100 %']);
  // Memory against its total (24 GiB): the total sets the top; steps in GiB.
  const mem = valueScale('bytes', 1.2 * GIB, 24 * GIB);
  assert.equal(mem.max, 30 * GIB);
  assert.deepEqual(mem.ticks.map((t) => t.label), ['0 B', '10 GiB', '20 GiB', '30 GiB']);
  assert.deepEqual(valueScale('bytes', 300 * MIB, 1 * GIB).ticks.map((t) => t.label), ['0 B', '256 MiB', '512 MiB', '768 MiB', '1 GiB']);
  // A VM's QEMU using more than its cores (its I/O threads): the data sets the top.
  const cpu = valueScale('cores', 2.3, 2);
  assert.ok(cpu.max >= 2.3);
  assert.deepEqual(cpu.ticks.map((t) => t.value), [0, 1, 2, 3]);
  // Network traffic without a limit; a quiet interface still has an axis.
  assert.deepEqual(valueScale('bytes/s', 700 * 1024, null).ticks.map((t) => t.label), ['0 B/s', '200 KiB/s', '400 KiB/s', '600 KiB/s', '800 KiB/s']);
  const quiet = valueScale('bytes/s', 0, null);
  assert.deepEqual(quiet.ticks.map((t) => t.label), ['0 B/s', '256 B/s', '512 B/s', '768 B/s', '1 KiB/s']);
  assert.deepEqual(valueScale('cores', 0, null).ticks.map((t) => t.label), ['0 cores', '0.05 cores', '0.1 cores', '0.15 cores', '0.2 cores']);
  // The top is a tick; every tick is on the axis.
  for (const s of [mem, cpu, quiet]) {
    assert.equal(s.ticks.at(-1)!.value, s.max);
    assert.ok(s.ticks.every((t) => t.value >= 0 && t.value <= s.max));
  }
});

test('the time axis: round local times, at most six, in any time zone', () => {
  const t0 = Date.UTC(2026, 0, 1, 10, 2, 7);
  // An hour: every 10 min, on the round ten.
  assert.deepEqual(timeTicks(t0, t0 + 3600_000, 0).map((t) => t.label), ['10:10', '10:20', '10:30', '10:40', '10:50', '11:00']);
  // The same hour seen from UTC+5:30.
  assert.deepEqual(timeTicks(t0, t0 + 3600_000, 5.5 * 3600_000).map((t) => t.label), ['15:40', '15:50', '16:00', '16:10', '16:20', '16:30']);
  // Five minutes: every minute.
  assert.deepEqual(timeTicks(t0, t0 + 300_000, 0).map((t) => t.label), ['10:03', '10:04', '10:05', '10:06', '10:07']);
  // Fifty seconds: every 10 s, with seconds.
  assert.deepEqual(timeTicks(t0, t0 + 50_000, 0).map((t) => t.label), ['10:02:10', '10:02:20', '10:02:30', '10:02:40', '10:02:50']);
  assert.ok(timeTicks(t0, t0 + 86_400_000, 0).length <= 13);
  assert.deepEqual(timeTicks(t0, t0, 0), []);
});

test('lines break where rounds are missing', () => {
  const p = (t: number): [number, number] => [t * 1000, t];
  assert.deepEqual(segments([p(0), p(5), p(10), p(30), p(35)], 5000), [[p(0), p(5), p(10)], [p(30), p(35)]]);
  assert.deepEqual(segments([p(0), p(12)], 5000), [[p(0), p(12)]], 'two rounds and a bit is still a line');
  assert.deepEqual(segments([], 5000), []);
});

test('points to pixels: time left to right, values bottom to top, never outside the chart', () => {
  const p = project(FRAME, 0, 100, 10);
  const bottom = FRAME.height - FRAME.bottom;
  assert.deepEqual([p.x(0), p.y(0)], [FRAME.left, bottom]);
  assert.deepEqual([p.x(100), p.y(10)], [FRAME.width - FRAME.right, FRAME.top]);
  assert.equal(p.y(25), FRAME.top, 'above the top: at the top');
  assert.equal(p.y(-1), bottom);
  assert.equal(
    polylinePoints(
      [
        [0, 0],
        [50, 5],
      ],
      p,
    ),
    `${FRAME.left},${bottom} ${FRAME.left + (FRAME.width - FRAME.left - FRAME.right) / 2},${(FRAME.top + bottom) / 2}`,
  );
  // The span: to the newest point, at least ten rounds.
  assert.deepEqual(timeSpan([[100_000, 1], [105_000, 2]], 5000), { fromMs: 55_000, toMs: 105_000 });
  assert.deepEqual(timeSpan([[0, 1], [3600_000, 2]], 5000), { fromMs: 0, toMs: 3600_000 });
  assert.equal(timeSpan([], 5000), null);
});

const series = (id: string, points: [number, number][], over: Partial<HistorySeries> = {}): HistorySeries => ({ id, family: 'cpu', unit: 'ratio', label: id, limit: null, error: null, points, ...over });
const answer = (s: HistorySeries[], keptMs = 20_000): HistoryAnswer => ({ host: 'host1', intervalMs: 5000, keptMs, series: s });

test("the console's copy: answers merged, none twice, the newest meta, bounded to the host's window", () => {
  let kept = mergeHistory(EMPTY_HISTORY, answer([series('cpu', [[5000, 0.1], [10_000, 0.2]]), series('memory', [[10_000, 7]], { limit: 9 })]));
  assert.equal(newestMs(kept), 10_000);
  // The next answer (since=10000) repeats nothing, but a late repeat would be dropped anyway.
  kept = mergeHistory(kept, answer([series('cpu', [[10_000, 0.2], [15_000, 0.3]]), series('memory', [[15_000, 8]], { limit: 10, error: null })]));
  assert.deepEqual(kept.series.map((s) => [s.id, s.points.map(([t]) => t), s.limit]), [
    ['cpu', [5000, 10_000, 15_000], null],
    ['memory', [10_000, 15_000], 10],
  ]);
  // An hour later (here: the 20 s window), the old points are gone.
  kept = mergeHistory(kept, answer([series('cpu', [[30_000, 0.5]], { error: 'no' }), series('memory', [])]));
  assert.deepEqual(kept.series.map((s) => [s.id, s.points.map(([t]) => t), s.error]), [
    ['cpu', [15_000, 30_000], 'no'],
    ['memory', [15_000], null],
  ]);
  assert.equal(newestMs(EMPTY_HISTORY), null);
  assert.equal(mergeHistory(EMPTY_HISTORY, { ...answer([]), here: false }).here, false);
});
