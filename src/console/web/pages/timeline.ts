/**
 * The explained timelines (src/console/web/timeline.ts) of every failover, live migration and restart in the
 * host's event log, newest first: each step with its time, the time since the first step, what the core
 * wrote, what it means, and its cause; a phase still to come says what it waits for.
 */
import { badge, fill, h } from '../dom.js';
import { duration, time } from '../format.js';
import { store } from '../store.js';
import { incidents, PHASE_NAMES, type Incident } from '../timeline.js';
import type { Page } from '../ui.js';

export const timelinePage: Page = {
  name: 'timeline',
  title: 'Timeline',
  needs: 'read-only',
  mount(root, ctx) {
    const body = h('div', {});
    fill(root, h('h1', {}, 'Failovers and migrations'), h('p', {}, "Read from this host's event log: each step is an entry the decision core wrote, with its cause."), body);
    return {
      update: () => {
        const protection = new Map((store.status?.vms ?? []).map((v) => [v.name, v.protection]));
        const all = incidents(store.log, (vm) => protection.get(vm)).filter((i) => ctx.param === null || i.vm === ctx.param);
        fill(body, all.length === 0 ? h('p', { class: 'empty' }, 'No failover, migration or restart in the event log.') : all.map(incidentView));
      },
    };
  },
};

export function incidentView(i: Incident): HTMLElement {
  const t0 = i.steps[0]?.entry.wallMs ?? i.anchor.wallMs;
  const names = PHASE_NAMES[i.kind];
  return h(
    'article',
    { class: 'incident', 'data-kind': i.kind, 'data-vm': i.vm },
    h('h3', {}, `${i.kind} of ${i.vm} on ${i.host} `, badge(i.outcome === 'in progress' ? 'pending' : i.outcome)),
    h('p', {}, i.summary),
    h(
      'ol',
      { class: 'steps' },
      i.steps.map((s) =>
        h(
          'li',
          { class: `step ${s.phase}`, 'data-phase': s.phase },
          h('span', { class: 'phase' }, names[s.phase]),
          h('span', { class: 'when' }, time(s.entry.wallMs), h('small', {}, ` +${duration(s.entry.wallMs - t0)}`)),
          h('span', { class: 'what' }, s.entry.what),
          h('span', { class: 'why' }, s.explanation),
          h('span', { class: 'cause' }, `cause: ${s.causeExplained}`),
        ),
      ),
      i.pending.map((p) => h('li', { class: 'step pending', 'data-phase': p.phase }, h('span', { class: 'phase' }, names[p.phase]), h('span', { class: 'why' }, `pending: ${p.why}`))),
    ),
  );
}
