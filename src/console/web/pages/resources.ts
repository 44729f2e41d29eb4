/**
 * The resource charts of the hosts page (this host's CPU, memory, each storage group, each network) and of
 * a VM's page (its QEMU's CPU and memory and its volume's allocation, on this host). The history is not in
 * the live status: it is fetched when the page is shown, then every round of the host's sampler (5 s, at
 * least 1 s) while it stays shown, each time only the points newer than those the page has (`since=`,
 * merged by `series.ts`).
 */
import { call, describe } from '../api.js';
import { lineChart, type ChartSpec } from '../chart.js';
import { fill, h } from '../dom.js';
import { EMPTY_HISTORY, mergeHistory, newestMs, type KeptHistory } from '../series.js';
import type { HistoryAnswer, HistorySeries } from '../types.js';

/** However fast the host samples, the page asks at most this often. */
const REFRESH_MIN_MS = 1000;

export interface ResourceCharts {
  element: HTMLElement;
  unmount(): void;
}

/** Follows the history at `path` (`/v1/host/history`, `/v1/vms/NAME/history`) and draws it with `draw` after each answer. */
export function resourceCharts(path: string, draw: (kept: KeptHistory) => HTMLElement[]): ResourceCharts {
  const element = h('div', { class: 'charts' }, h('p', { class: 'empty' }, 'loading the history…'));
  let kept = EMPTY_HISTORY;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let stopped = false;
  const refresh = async (): Promise<void> => {
    const since = newestMs(kept);
    const r = await call<HistoryAnswer>('GET', since === null ? path : `${path}?since=${since}`);
    if (stopped) return;
    try {
      if (r.ok) {
        kept = mergeHistory(kept, r.body);
        fill(element, ...draw(kept));
      } else if (kept.series.length === 0) fill(element, h('p', { class: 'form-error' }, describe(r)));
      // An error after the charts are drawn leaves them as they are: the next round tries again.
    } finally {
      timer = setTimeout(() => void refresh(), Math.max(REFRESH_MIN_MS, kept.intervalMs));
    }
  };
  void refresh();
  return {
    element,
    unmount: () => {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
    },
  };
}

/** What a chart says when its newest round has no value. */
function noteOf(series: HistorySeries[]): string | null {
  const error = series.find((s) => s.error !== null)?.error;
  return error === undefined || error === null ? null : `not measured now: ${error}`;
}

function single(s: HistorySeries, title: string, intervalMs: number, limitLabel: string | null): ChartSpec {
  return {
    id: s.id,
    title,
    unit: s.unit,
    lines: [{ id: s.id, label: s.label, points: s.points }],
    limit: limitLabel !== null && s.limit !== null ? { value: s.limit, label: limitLabel } : null,
    intervalMs,
    note: noteOf([s]),
  };
}

/** The host's charts: CPU, memory, each storage group, each network (received and sent). */
export function hostCharts(kept: KeptHistory): HTMLElement[] {
  const of = (family: string): HistorySeries[] => kept.series.filter((s) => s.family === family);
  const charts: ChartSpec[] = [];
  for (const s of of('cpu')) charts.push(single(s, 'CPU busy (all cores)', kept.intervalMs, null));
  for (const s of of('memory')) charts.push(single(s, 'Memory used', kept.intervalMs, 'total'));
  for (const s of of('storage')) charts.push(single(s, `Storage group ${s.id.slice('storage.'.length)}`, kept.intervalMs, 'capacity'));
  const networks = of('network');
  for (const rx of networks.filter((s) => s.id.endsWith('.rx'))) {
    const tx = networks.find((s) => s.id === `${rx.id.slice(0, -'.rx'.length)}.tx`);
    const pair = tx === undefined ? [rx] : [rx, tx];
    charts.push({
      id: rx.id.slice(0, -'.rx'.length),
      // "business (br-biz) received" → "Network business (br-biz)"
      title: `Network ${rx.label.replace(/ received$/, '')}`,
      unit: rx.unit,
      lines: pair.map((s) => ({ id: s.id, label: s.id.endsWith('.rx') ? 'received' : 'sent', points: s.points })),
      limit: null,
      intervalMs: kept.intervalMs,
      note: noteOf(pair),
    });
  }
  return charts.length === 0 ? [h('p', { class: 'empty' }, 'The host has no history yet.')] : charts.map(lineChart);
}

/**
 * A VM's charts on this host: its QEMU's CPU and resident memory, its volume's allocation. `elsewhere`: the
 * VM's owner when that is another host (which has its charts), else null.
 */
export function vmCharts(vm: string, elsewhere: () => string | null): (kept: KeptHistory) => HTMLElement[] {
  return (kept) => {
    const owner = elsewhere();
    const there = owner !== null ? `: ${owner}, which runs it, has its charts` : '';
    if (kept.series.length === 0) {
      return [h('p', { class: 'empty', id: 'vm-history-none' }, `VM ${vm} has not run on this host in the last ${Math.round(kept.keptMs / 60_000)} min${there}.`)];
    }
    const titles: Record<string, [string, string]> = { cpu: ['CPU used by its QEMU', 'vCPUs'], memory: ['Resident memory of its QEMU', 'guest memory'], disk: ['Disk allocated here', 'disk size'] };
    return [
      ...(kept.here === false ? [h('p', { class: 'hint' }, `VM ${vm} does not run on this host now${there}; what it did here is kept for an hour.`)] : []),
      ...kept.series.map((s) => lineChart(single(s, titles[s.id]?.[0] ?? s.label, kept.intervalMs, titles[s.id]?.[1] ?? null))),
    ];
  };
}
