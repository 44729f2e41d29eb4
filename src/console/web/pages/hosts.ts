/**
 * Hosts: this host's Availability Services (state, epoch, authority, health score, the A-Link paths with
 * their round trips), the peer as this host hears it, each health component of both hosts side by side
 * (the peer's as it reports them over the A-Link, `GET /v1/host/health`, or why they are unavailable),
 * this host's CPU, memory, storage and network over the last hour (`resources.ts`), its hardware sensors
 * as its kernel reports them, and the host commands: maintenance mode, force takeover, repaired (platform
 * managers).
 */
import { call, describe } from '../api.js';
import { badge, facts, fill, h, section, table } from '../dom.js';
import { duration, time } from '../format.js';
import { store } from '../store.js';
import type { HealthComponents, HostSensors, PairHealth } from '../types.js';
import { actionButton, type Page } from '../ui.js';
import { hostCharts, resourceCharts } from './resources.js';

export const hostsPage: Page = {
  name: 'hosts',
  title: 'Hosts',
  needs: 'read-only',
  mount(root) {
    const body = h('div', { class: 'grid' });
    fill(root, h('h1', {}, 'Hosts'), body);
    // Made once: the charts follow the history on their own timer, and survive the cards' redraws.
    const resources = resourceCharts('/v1/host/history', hostCharts);
    const charts = section('Resources over time (this host)', resources.element);
    charts.classList.add('wide');
    charts.id = 'host-resources';
    const sensors = sensorsCard();
    const update = (): void => {
      const [self, peer, ...rest] = cards(peerHealth.latest());
      fill(body, self, peer, charts, ...rest, sensors.element);
    };
    // The cards are redrawn from the live status; the peer's components, asked on their own timer, with them.
    const peerHealth = peerHealthFeed(update);
    return {
      update,
      unmount: () => {
        resources.unmount();
        sensors.unmount();
        peerHealth.unmount();
      },
    };
  },
};

/** The peer's section of `GET /v1/host/health`; a string: why the request itself failed; null: not answered yet. */
type PeerHealth = PairHealth['peer'] | string | null;

function cards(peerHealth: PeerHealth): HTMLElement[] {
  const s = store.status;
  if (s === null) return [section('Hosts', h('p', { class: 'empty' }, 'waiting for the host’s status…'))];
  const c = s.core;
  const self = section(
    `${s.host} (this host)`,
    facts([
      ['state', badge(c?.state ?? s.pairing.state)],
      ['pairing', s.pairing.state],
      ['epoch', c ? String(c.epoch) : '—'],
      ['authority', c?.authority ?? '—'],
      ['health score', c ? String(c.health) : '—'],
      ['maintenance', c ? (c.maintenance ? 'on' : 'off') : '—'],
      ['declared down', c ? (c.declaredDown ? 'yes (MTBF below threshold)' : 'no') : '—'],
      ['lockstepd', `pid ${s.pid}, started ${time(s.startedAt)}, incarnation ${s.incarnation}`],
    ]),
    h(
      'div',
      { class: 'actions' },
      c?.maintenance
        ? actionButton('Leave maintenance', 'platform-manager', 'maintenance-off', () => call('POST', '/v1/host/maintenance', { on: false }))
        : actionButton('Enter maintenance', 'platform-manager', 'maintenance-on', () =>
            confirm(`Put ${s.host} in maintenance? Its running HA VMs move to the peer by live migration.`) ? call('POST', '/v1/host/maintenance', { on: true }) : Promise.resolve(null),
          ),
      actionButton('Force takeover', 'platform-manager', 'force-takeover', () =>
        confirm(`Assert that ${c?.peer ?? 'the peer'} is dead and take over its VMs? Only when you know it is off.`) ? call('POST', '/v1/host/force-takeover') : Promise.resolve(null),
      ),
      actionButton('Mark repaired', 'platform-manager', 'repaired', () => call('POST', '/v1/host/repaired')),
    ),
  );
  const components = componentsCard(s.host, s.health, c?.peer ?? null, peerHealth);
  const alink = section(
    'A-Link paths',
    table(
      ['path', 'role', 'state', 'round trip', 'changed', 'dropped frames', 'last error'],
      (s.alink ?? []).map((p) => [p.name, p.role, badge(p.up ? 'up' : 'down'), p.srttMs === null ? '—' : `${p.srttMs.toFixed(2)} ms`, time(p.changedAt), String(p.droppedFrames), p.lastError ?? '']),
      'No A-Link yet (the host is not paired).',
      { id: 'alink-paths' },
    ),
    c ? h('p', {}, `The core's round trip (SplitSite): ${c.rttMs === null ? '—' : `${c.rttMs.toFixed(2)} ms`}`) : null,
  );
  const peer = section(
    c ? `${c.peer} (peer)` : 'peer',
    c
      ? facts([
          ['heard', c.peerHeard ? 'yes' : 'no'],
          ['state', badge(c.peerHeard ? c.peerState : 'not heard')],
          ['health score', c.peerHealth === null ? '—' : String(c.peerHealth)],
          ['VMs it runs', String(s.vms.filter((v) => v.owner === c.peer).length)],
        ])
      : h('p', { class: 'empty' }, 'Not paired yet.'),
    h('p', { class: 'hint' }, `What ${s.host} hears in the peer's heartbeats; its own health components are under Health components.`),
  );
  const uptime = Date.now() - new Date(s.startedAt).getTime();
  self.append(h('p', { class: 'hint' }, `lockstepd up for ${duration(uptime)}`));
  return [self, peer, components, alink];
}

/**
 * Each health component of both hosts side by side: this host's from the live status, the peer's as it
 * reported them over the A-Link (its heartbeats carry only its score), or why they are unavailable.
 */
function componentsCard(self: string, own: HealthComponents, peerName: string | null, peerHealth: PeerHealth): HTMLElement {
  const peer = typeof peerHealth === 'object' && peerHealth !== null ? peerHealth : null;
  const name = peer?.host ?? peerName ?? 'peer';
  const theirs = peer?.state === 'available' ? peer.components : null;
  const names = [...new Set([...Object.keys(own ?? {}), ...Object.keys(theirs ?? {})])];
  let note: HTMLElement;
  if (typeof peerHealth === 'string') note = h('p', { class: 'form-error', id: 'peer-health-unavailable' }, `${name}'s components could not be asked for: ${peerHealth}`);
  else if (peer === null) note = h('p', { class: 'hint', id: 'peer-health-asking' }, `asking ${name} for its components…`);
  else if (peer.state === 'unavailable') note = h('p', { class: 'hint', id: 'peer-health-unavailable' }, `${name}'s components are unavailable: ${peer.reason}`);
  else note = h('p', { class: 'hint', id: 'peer-health-taken' }, `${name}'s as it reported them over the A-Link at ${time(peer.takenAt)}${theirs === null ? ': it has had no health check yet' : ''}.`);
  const card = section(
    'Health components',
    table(
      ['component', `${self} (this host)`, `${name} (peer)`],
      names.map((n) => [n, badge(own?.[n] ?? null), badge(theirs?.[n] ?? null)]),
      // The note says what there is of the peer's.
      `No health check has run yet on ${self}.`,
      { id: 'health-components' },
    ),
    note,
  );
  card.id = 'host-health';
  return card;
}

/** The peer's components change at its health rounds and are not in the live status: asked again this often. */
const PEER_HEALTH_REFRESH_MS = 5_000;

function peerHealthFeed(changed: () => void): { latest: () => PeerHealth; unmount: () => void } {
  let latest: PeerHealth = null;
  let busy = false;
  let mounted = true;
  const refresh = async (): Promise<void> => {
    // An answer takes up to the daemon's 2 s wait for the peer: one request at a time.
    if (busy) return;
    busy = true;
    try {
      const r = await call<PairHealth>('GET', '/v1/host/health');
      latest = r.ok ? r.body.peer : describe(r);
      if (mounted) changed();
    } finally {
      busy = false;
    }
  };
  void refresh();
  const timer = setInterval(() => void refresh(), PEER_HEALTH_REFRESH_MS);
  return {
    latest: () => latest,
    unmount: () => {
      mounted = false;
      clearInterval(timer);
    },
  };
}

/** Sensors change slowly and are not in the live status: asked again this often while the page is open. */
const SENSORS_REFRESH_MS = 10_000;
const UNIT = { temperature: '°C', fan: 'RPM', voltage: 'V' } as const;

function sensorsCard(): { element: HTMLElement; unmount: () => void } {
  const element = section('Sensors', h('p', { class: 'empty' }, 'loading…'));
  element.id = 'host-sensors';
  const refresh = async (): Promise<void> => {
    const r = await call<HostSensors>('GET', '/v1/host/sensors');
    if (!r.ok) {
      fill(element, h('h2', {}, 'Sensors'), h('p', { class: 'form-error' }, describe(r)));
      return;
    }
    const limit = (v: number | null, unit: string): string => (v === null ? '—' : `${v} ${unit}`);
    fill(
      element,
      h('h2', {}, 'Sensors'),
      table(
        ['sensor', 'chip', 'reading', 'min', 'max', 'critical', 'state'],
        r.body.sensors.map((x) => [x.label, `${x.chip} (${x.id})`, `${x.value} ${UNIT[x.kind]}`, limit(x.min, UNIT[x.kind]), limit(x.max, UNIT[x.kind]), limit(x.critical, UNIT[x.kind]), badge(x.state)]),
        r.body.note ?? 'No sensors.',
        { id: 'sensors' },
      ),
      r.body.note !== null && r.body.sensors.length > 0 ? h('p', { class: 'hint' }, r.body.note) : null,
    );
  };
  void refresh();
  const timer = setInterval(() => void refresh(), SENSORS_REFRESH_MS);
  return { element, unmount: () => clearInterval(timer) };
}
