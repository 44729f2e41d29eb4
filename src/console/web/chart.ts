/**
 * A line chart of one or a few series over time, drawn as inline SVG with DOM calls (names and values go in
 * as text, never as markup) and styled by classes from style.css (the CSP allows no inline style). The axes'
 * arithmetic is `chart-scale.ts`'s. A chart says what it lacks instead of drawing nothing: no points yet, or
 * why the newest round has none.
 *
 * The figure carries `data-chart` (its id), `data-points` (the points drawn) and `data-newest` (the newest
 * point's time), which the browser test compares with the API's answer.
 */
import { h } from './dom.js';
import { FRAME, formatValue, polylinePoints, project, segments, timeSpan, timeTicks, valueScale, type Unit } from './chart-scale.js';

export interface ChartLine {
  /** The series' id (`data-series` of its lines). */
  id: string;
  label: string;
  points: readonly (readonly [number, number])[];
}

export interface ChartSpec {
  id: string;
  title: string;
  unit: Unit;
  /** Drawn in the order given, each in its own colour (at most three differ). */
  lines: ChartLine[];
  /** A ceiling drawn as a dashed line (a memory size, a capacity, a VM's cores), and what it is. */
  limit: { value: number; label: string } | null;
  intervalMs: number;
  /** Why there is nothing new to draw (the API's error, or the series' own), or null. */
  note: string | null;
}

const SVG = 'http://www.w3.org/2000/svg';

type SvgAttrs = Record<string, string | number>;

function svg(tag: string, attrs: SvgAttrs = {}, ...children: (SVGElement | string)[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

export function lineChart(spec: ChartSpec): HTMLElement {
  const f = FRAME;
  const all = spec.lines.flatMap((l) => l.points);
  const dataMax = all.reduce((m, [, v]) => Math.max(m, v), 0);
  const scale = valueScale(spec.unit, dataMax, spec.limit?.value ?? null);
  const span = timeSpan(all, spec.intervalMs);
  const root = svg('svg', { viewBox: `0 0 ${f.width} ${f.height}`, class: 'chart-plot', role: 'img', 'aria-label': spec.title });
  const p = project(f, span?.fromMs ?? 0, span?.toMs ?? 1, scale.max);

  for (const tick of scale.ticks) {
    const y = p.y(tick.value);
    root.append(svg('line', { class: 'grid', x1: f.left, x2: f.width - f.right, y1: y, y2: y }));
    root.append(svg('text', { class: 'axis', x: f.left - 4, y: y + 3, 'text-anchor': 'end' }, tick.label));
  }
  if (span !== null) {
    for (const tick of timeTicks(span.fromMs, span.toMs, -new Date().getTimezoneOffset() * 60_000)) {
      root.append(svg('text', { class: 'axis', x: p.x(tick.value), y: f.height - 6, 'text-anchor': 'middle' }, tick.label));
    }
  }
  if (spec.limit !== null && spec.limit.value <= scale.max) {
    const y = p.y(spec.limit.value);
    root.append(svg('line', { class: 'limit', x1: f.left, x2: f.width - f.right, y1: y, y2: y }, svg('title', {}, `${spec.limit.label}: ${formatValue(spec.unit, spec.limit.value)}`)));
  }
  let drawn = 0;
  spec.lines.forEach((line, i) => {
    for (const run of segments(line.points, spec.intervalMs)) {
      drawn += run.length;
      if (run.length === 1) root.append(svg('circle', { class: `dot s${i % 3}`, 'data-series': line.id, cx: p.x(run[0]![0]), cy: p.y(run[0]![1]), r: 2 }));
      else root.append(svg('polyline', { class: `line s${i % 3}`, 'data-series': line.id, points: polylinePoints(run, p) }));
    }
  });

  const latest = spec.lines.flatMap((l) => {
    const v = l.points.at(-1)?.[1];
    return v === undefined ? [] : [`${spec.lines.length > 1 ? `${l.label} ` : ''}${formatValue(spec.unit, v)}`];
  });
  const newest = all.reduce((m, [t]) => Math.max(m, t), Number.NEGATIVE_INFINITY);
  return h(
    'figure',
    { class: 'chart', 'data-chart': spec.id, 'data-points': drawn, 'data-newest': Number.isFinite(newest) ? newest : '' },
    h('figcaption', {}, h('strong', {}, spec.title), latest.length > 0 ? h('span', { class: 'now' }, latest.join(' · ')) : null),
    root,
    spec.lines.length > 1 || spec.limit !== null
      ? h(
          'p',
          { class: 'legend' },
          spec.lines.map((l, i) => h('span', {}, h('span', { class: `swatch s${i % 3}` }), l.label)),
          spec.limit !== null ? h('span', {}, h('span', { class: 'swatch limit' }), `${spec.limit.label}: ${formatValue(spec.unit, spec.limit.value)}`) : null,
        )
      : null,
    spec.note !== null ? h('p', { class: 'hint' }, spec.note) : all.length === 0 ? h('p', { class: 'hint' }, 'no points yet: a round every few seconds') : null,
  );
}
