/**
 * Volumes and storage groups: this host's groups with their capacity, use and free space, and every VM's
 * volume with its state (simplex, in-sync, syncing with progress and ETA, degraded, failed) and why. Neither
 * is in the live status: they are fetched on entering the page and again as the status changes (at most
 * every 2 s).
 */
import { call, describe } from '../api.js';
import { badge, fill, h, section, table } from '../dom.js';
import { bytes, duration, percent } from '../format.js';
import { store } from '../store.js';
import type { StorageGroup, Volume } from '../types.js';
import type { Page } from '../ui.js';

const REFRESH_MIN_MS = 2000;

export const storagePage: Page = {
  name: 'storage',
  title: 'Storage',
  needs: 'read-only',
  mount(root) {
    const groupsEl = h('div', {}, section('Storage groups', h('p', { class: 'empty' }, 'loading…')));
    const volumesEl = h('div', {}, section('Volumes', h('p', { class: 'empty' }, 'loading…')));
    fill(root, h('h1', {}, 'Volumes and storage groups'), groupsEl, volumesEl);
    let fetched = 0;
    let drawnStatus: unknown = undefined;
    const refresh = async (): Promise<void> => {
      fetched = Date.now();
      const [g, v] = await Promise.all([call<StorageGroup[]>('GET', '/v1/storage-groups'), call<Volume[]>('GET', '/v1/volumes')]);
      fill(groupsEl, section('Storage groups', g.ok ? groupsTable(g.body) : h('p', { class: 'form-error' }, describe(g))));
      fill(volumesEl, section('Volumes', v.ok ? volumesTable(v.body) : h('p', { class: 'form-error' }, describe(v))));
    };
    void refresh();
    return {
      update: () => {
        if (drawnStatus === store.status || Date.now() - fetched < REFRESH_MIN_MS) return;
        drawnStatus = store.status;
        void refresh();
      },
    };
  },
};

function groupsTable(groups: StorageGroup[]): HTMLElement {
  return table(
    ['group', 'path', 'capacity', 'used', 'free', 'volumes', 'error'],
    groups.map((g) => [g.name, g.path, bytes(g.capacityBytes), `${bytes(g.usedBytes)} (${percent(g.usedBytes, g.capacityBytes)})`, bytes(g.freeBytes), String(g.volumeCount), g.error ?? '']),
    'This host has no storage group.',
    { id: 'storage-groups' },
  );
}

function volumesTable(volumes: Volume[]): HTMLElement {
  return table(
    ['volume', 'state', 'why', 'group', 'format', 'size', 'allocated here', 'owner', 'protection', 'sync'],
    volumes.map((v) => [
      v.name,
      badge(v.state),
      v.reason,
      v.storageGroup,
      v.format,
      bytes(v.sizeBytes),
      bytes(v.allocatedBytes),
      v.owner,
      v.protection.toUpperCase(),
      v.sync ? `${percent(v.sync.copiedBytes, v.sync.totalBytes)}, ${v.sync.bytesPerSec === null ? '—' : `${bytes(v.sync.bytesPerSec)}/s`}, ETA ${duration(v.sync.etaMs)}` : '—',
    ]),
    'No volumes: each VM has one.',
    { id: 'volumes' },
  );
}
