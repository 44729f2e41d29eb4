/**
 * The dashboard: the pair as one system (both hosts' states as this host knows them, the epoch, the
 * authority, the quorum server, the A-Link round trip), the latest alerts, every VM's protection at a glance,
 * and the latest failover or migration's explained timeline.
 */
import { badge, facts, fill, h, section, table } from '../dom.js';
import { duration, time } from '../format.js';
import { store } from '../store.js';
import { incidents } from '../timeline.js';
import type { Page } from '../ui.js';
import { incidentView } from './timeline.js';

/** Alerts shown on the dashboard; the alerts page has them all. */
const ALERTS_SHOWN = 8;

export const dashboardPage: Page = {
  name: 'dashboard',
  title: 'Dashboard',
  needs: 'read-only',
  mount(root) {
    const body = h('div', { class: 'grid' });
    fill(root, h('h1', {}, 'Dashboard'), body);
    return { update: () => fill(body, pairCard(), vmsCard(), wide(alertsCard()), wide(latestIncidentCard())) };
  },
};

/** A card across the whole grid: tables of sentences need the width. */
function wide(card: HTMLElement): HTMLElement {
  card.classList.add('wide');
  return card;
}

function pairCard(): HTMLElement {
  const s = store.status;
  if (s === null) return section('Pair', h('p', { class: 'empty' }, 'waiting for the host’s status…'));
  const c = s.core;
  if (c === null) return section('Pair', facts([['this host', s.host], ['pairing', badge(s.pairing.state)], ['last error', s.pairing.lastError ?? '—']]));
  return section(
    'Pair',
    h(
      'div',
      { class: 'pair', id: 'pair' },
      hostBox(c.host, c.state, c.health, true, c.maintenance),
      h('div', { class: 'alink-box' }, h('span', {}, 'A-Link'), h('span', {}, c.rttMs === null ? '—' : `${c.rttMs.toFixed(2)} ms`)),
      hostBox(c.peer, c.peerHeard ? (c.peerState ?? 'heard') : 'not heard', c.peerHealth, false, false),
    ),
    facts([
      ['epoch', String(c.epoch)],
      ['authority', c.authority],
      ['active quorum server', c.activeQuorum ?? 'none'],
      ['VMs', String(s.vms.length)],
    ]),
  );
}

function hostBox(name: string, state: string, health: number | null, self: boolean, maintenance: boolean): HTMLElement {
  return h(
    'div',
    { class: 'host-box', 'data-host': name },
    h('strong', {}, name),
    h('small', {}, self ? 'this host (answering)' : 'peer'),
    badge(state),
    h('span', {}, `health ${health ?? '—'}`),
    maintenance ? badge('maintenance') : null,
  );
}

function alertsCard(): HTMLElement {
  const alerts = store.log.filter((e) => e.kind === 'alert').slice(-ALERTS_SHOWN).reverse();
  return section(
    'Latest alerts',
    table(
      ['when', 'severity', 'code', 'what'],
      alerts.map((a) => [time(a.wallMs), badge(a.severity), a.code ?? '', a.what]),
      'No alerts.',
      { id: 'dashboard-alerts' },
    ),
    h('p', {}, h('a', { href: '#/alerts' }, 'All alerts and the audit log →')),
  );
}

function vmsCard(): HTMLElement {
  const vms = store.status?.vms ?? [];
  return section(
    'VM protection',
    table(
      ['VM', 'state', 'protection', 'owner', 'runs here', 'copies (here / peer)'],
      vms.map((v) => [
        h('a', { href: `#/vms/${encodeURIComponent(v.name)}` }, v.name),
        badge(v.state),
        v.protection.toUpperCase(),
        v.owner,
        v.local ? badge(v.local.state) : '—',
        v.protection === 'none' ? 'one copy' : `${copyWord(v.copies?.here)} / ${copyWord(v.copies?.peer)}`,
      ]),
      'No VMs yet.',
      { id: 'dashboard-vms' },
    ),
  );
}

function copyWord(current: boolean | null | undefined): string {
  return current === true ? 'current' : current === false ? 'not current' : 'unknown';
}

function latestIncidentCard(): HTMLElement {
  const protection = new Map((store.status?.vms ?? []).map((v) => [v.name, v.protection]));
  const [latest] = incidents(store.log, (vm) => protection.get(vm));
  if (latest === undefined) return section('Latest failover or migration', h('p', { class: 'empty' }, 'None in the event log.'));
  const first = latest.steps[0]?.entry.wallMs ?? latest.anchor.wallMs;
  return section(
    'Latest failover or migration',
    h('p', {}, `${time(first)} · over ${duration(latest.anchor.wallMs - first)} to the action · `, h('a', { href: '#/timeline' }, 'every timeline →')),
    incidentView(latest),
  );
}
