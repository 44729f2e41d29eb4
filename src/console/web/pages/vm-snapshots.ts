/**
 * A VM's snapshots on its page (docs/snapshots.md): this host's snapshots of the VM, each with its state,
 * point in time, size and description; Take (with a description), Delete and "New VM from it" for platform
 * managers, Download (the image file, qcow2) for every user. Snapshots are the host's that took them: the
 * list is this host's, and a running VM's snapshot is taken on the host it runs on, which the note says
 * when that is the peer. Not in the live status: fetched when the page opens, on Refresh and after each
 * change. Taking one answers when the copy is complete, so its call waits as long as a copy may take.
 */
import { call, describe, type ApiResult } from '../api.js';
import { fill, h, section, table, badge } from '../dom.js';
import { bytes, time } from '../format.js';
import { store } from '../store.js';
import type { Snapshot, Vm } from '../types.js';
import { actionButton, can, notify } from '../ui.js';

/** As the daemon's bound on a snapshot copy (src/storage/snapshot-image.ts LIVE_BACKUP_TIMEOUT_MS). */
const TAKE_TIMEOUT_MS = 6 * 60 * 60_000;
/** As the API's bound on a description (src/daemon/snapshots.ts). */
const DESCRIPTION_CHARS_MAX = 256;

export interface SnapshotsSection {
  /** Made once: the detail's redraws move the same element, so a description being typed survives them. */
  element: HTMLElement;
  /** Says where the VM runs now, for the note. */
  update(vm: Vm | undefined): void;
}

/** The snapshot or image the create form starts from, set by "New VM from it" and taken once by the form. */
let pendingSource: string | null = null;

/** The source "New VM from it" chose, once: the create form reads it when it is drawn. */
export function takePendingSource(): string | null {
  const id = pendingSource;
  pendingSource = null;
  return id;
}

export function snapshotsSection(name: string, navigate: (hash: string) => void): SnapshotsSection {
  const listEl = h('div', { id: 'vm-snapshots-list' }, h('p', { class: 'empty' }, 'loading…'));
  const description = h('input', { name: 'description', id: 'vm-snapshot-description', maxlength: DESCRIPTION_CHARS_MAX, placeholder: 'description (optional)', disabled: !can('platform-manager') });
  const note = h('p', { class: 'hint', id: 'vm-snapshots-note' });
  const working = h('p', { class: 'hint', id: 'vm-snapshot-working', hidden: true }, 'Taking the snapshot: a full copy of the volume, answered once it is complete…');

  const reload = async (): Promise<void> => {
    const r = await call<Snapshot[]>('GET', `/v1/snapshots?vm=${encodeURIComponent(name)}`);
    fill(listEl, r.ok ? snapshotTable(r.body, { reload, navigate, empty: `No snapshots of VM ${name} on this host.`, id: 'vm-snapshots', showOf: false }) : h('p', { class: 'form-error' }, `This host's snapshots: ${describe(r)}`));
  };
  const take = actionButton('Take snapshot', 'platform-manager', 'snapshot-take', async () => {
    working.hidden = false;
    try {
      const text = description.value.trim();
      const r = await call<Snapshot>('POST', `/v1/vms/${encodeURIComponent(name)}/snapshots`, text === '' ? {} : { description: text }, TAKE_TIMEOUT_MS);
      if (r.ok) description.value = '';
      // A failed one is kept as failed: the list shows it either way.
      void reload();
      return r;
    } finally {
      working.hidden = true;
    }
  });
  const refresh = h('button', { type: 'button', 'data-action': 'snapshots-refresh' }, 'Refresh');
  refresh.addEventListener('click', () => void reload());

  void reload();
  const element = section('Snapshots (on this host)', listEl, h('div', { class: 'actions', id: 'vm-snapshot-actions' }, description, take, refresh), working, note);
  // Wide: its table has a row of actions per snapshot.
  element.classList.add('wide');
  element.id = 'vm-snapshots-section';
  return {
    element,
    update(vm) {
      const owner = vm !== undefined && vm.owner !== store.status?.host ? vm.owner : null;
      fill(
        note,
        owner !== null
          ? `${owner} owns VM ${name}: while it runs there, its snapshot is taken in ${owner}'s console, and kept on ${owner}. This list is ${store.status?.host ?? 'this host'}'s.`
          : 'A point-in-time copy of the VM’s volume, taken live while it runs (no pause) or from its volume while it is stopped; the guest’s memory is not in it (docs/snapshots.md).',
      );
    },
  };
}

/**
 * Snapshots and images as rows: id, what it is of (`showOf`), state (and why it failed), point in time, size,
 * on disk, description, and its actions: Download and "New VM from it" when ready, Delete.
 */
export function snapshotTable(
  snapshots: Snapshot[],
  opts: { reload: () => Promise<void>; navigate: (hash: string) => void; empty: string; id: string; showOf: boolean },
): HTMLElement {
  return table(
    ['id', ...(opts.showOf ? ['of'] : []), 'state', 'point in time', 'size', 'on disk', 'description', ''],
    snapshots.map((s) => [
      h('code', {}, s.id),
      ...(opts.showOf ? [s.vm === null ? `imported image (${s.format})` : h('a', { href: `#/vms/${encodeURIComponent(s.vm)}` }, `VM ${s.vm}`)] : []),
      s.error ? h('span', { title: s.error }, badge(s.state), ` ${s.error}`) : badge(s.state),
      time(s.created),
      bytes(s.virtualBytes),
      bytes(s.fileBytes),
      s.description || '—',
      h(
        'div',
        { class: 'actions', 'data-snapshot': s.id },
        s.state === 'ready' ? h('a', { href: `/api/v1/snapshots/${encodeURIComponent(s.id)}/image`, download: s.file, 'data-action': 'snapshot-download' }, 'Download') : null,
        s.state === 'ready'
          ? actionButton('New VM from it', 'platform-manager', 'snapshot-new-vm', async () => {
              pendingSource = s.id;
              opts.navigate('#/vms');
              return null;
            })
          : null,
        actionButton('Delete', 'platform-manager', 'snapshot-delete', async () => {
          if (!window.confirm(`Delete ${s.kind} ${s.id}${s.vm === null ? '' : ` of VM ${s.vm}`} from ${s.host}?`)) return null;
          const r: ApiResult<unknown> = await call('DELETE', `/v1/snapshots/${encodeURIComponent(s.id)}`);
          if (r.ok) void opts.reload();
          return r;
        }),
      ),
    ]),
    opts.empty,
    { id: opts.id },
  );
}
