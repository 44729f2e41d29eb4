/**
 * Networks: this host's A-Link paths, management network and business network, each with its interface,
 * state and carrier, speed, MAC, MTU, the bandwidth in use (between the daemon's last two samples of the
 * counters) and an A-Link path's round trip; below, the peer's, as the peer reports them over the A-Link.
 * The bandwidth changes whether or not the status does, so the page asks again every 2 s while it is open.
 */
import { call, describe } from '../api.js';
import { badge, fill, h, section, table } from '../dom.js';
import { bytes, duration, time } from '../format.js';
import { store } from '../store.js';
import type { Network, PairNetworks } from '../types.js';
import type { Page } from '../ui.js';

const REFRESH_MS = 2000;

export const networksPage: Page = {
  name: 'networks',
  title: 'Networks',
  needs: 'read-only',
  mount(root) {
    const body = h('div', {}, section('Networks', h('p', { class: 'empty' }, 'loading…')));
    const host = store.status?.host ?? location.hostname;
    fill(root, h('h1', {}, 'Networks'), h('p', { class: 'hint' }, `${host}'s own interfaces, and the peer's as the peer reports them over the A-Link.`), body);
    let busy = false;
    const refresh = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        const r = await call<PairNetworks>('GET', '/v1/networks');
        if (!r.ok) return void fill(body, section('Networks', h('p', { class: 'form-error' }, describe(r))));
        const p = r.body.peer;
        fill(
          body,
          section(`${r.body.host} (this host)`, networksTable(r.body.networks), sampledNote(r.body.networks)),
          section(
            `${p.host} (peer)`,
            p.state === 'available' ? networksTable(p.networks, 'peer-networks') : h('p', { class: 'empty', id: 'peer-networks-unavailable' }, `Unavailable: ${p.reason}`),
          ),
        );
      } finally {
        busy = false;
      }
    };
    void refresh();
    const timer = setInterval(() => void refresh(), REFRESH_MS);
    return { update: () => {}, unmount: () => clearInterval(timer) };
  },
};

function networksTable(networks: Network[], id = 'networks'): HTMLElement {
  return table(
    ['network', 'role', 'interface', 'state', 'health', 'carrier', 'speed', 'MAC', 'MTU', 'receiving', 'sending', 'round trip', 'detail'],
    networks.map((n) => [
      n.name,
      n.role,
      n.interface === null ? '—' : n.bridge === null ? n.interface : `${n.interface} (bridge ${n.bridge})`,
      badge(n.state),
      badge(n.health),
      n.carrier === null ? '—' : n.carrier ? 'yes' : 'no',
      n.speedMbps === null ? (n.state === 'up' || n.state === 'down' ? 'unknown' : '—') : `${n.speedMbps} Mb/s`,
      n.mac ?? '—',
      n.mtu === null ? '—' : String(n.mtu),
      rate(n.bandwidth.rxBytesPerSec),
      rate(n.bandwidth.txBytesPerSec),
      roundTrip(n),
      n.state === 'up' ? (n.bandwidth.reason ?? '') : n.detail,
    ]),
    'No network is configured.',
    { id },
  );
}

function rate(bytesPerSec: number | null): string {
  return bytesPerSec === null ? '—' : `${bytes(bytesPerSec)}/s`;
}

function roundTrip(n: Network): string {
  if (n.alink === null) return '';
  if (n.alink.connected === null) return 'not paired';
  if (!n.alink.connected) return `not connected${n.alink.lastError ? ` (${n.alink.lastError})` : ''}`;
  return n.alink.rttMs === null ? 'not measured' : `${n.alink.rttMs.toFixed(2)} ms`;
}

/** When the bandwidth was measured, and over how long: the figures are only as fresh as the samples. */
function sampledNote(networks: Network[]): HTMLElement | null {
  const measured = networks.find((n) => n.bandwidth.sampledAt !== null);
  if (!measured) return h('p', { class: 'hint' }, 'Bandwidth: not measured yet (the daemon samples the counters each health round once the host is paired).');
  return h('p', { class: 'hint', id: 'networks-sampled' }, `Bandwidth between the last two samples, ${duration(measured.bandwidth.overMs)} apart, the last at ${time(measured.bandwidth.sampledAt)}.`);
}
