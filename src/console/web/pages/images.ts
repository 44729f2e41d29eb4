/**
 * Snapshots and images (docs/snapshots.md): every snapshot of this host (of any VM) and every disk image
 * imported to it, with Download, "New VM from it" and Delete as on a VM's page; import an image (qcow2 or
 * raw, streamed from the operator's disk with its progress). They are this host's only: the peer's console
 * shows the peer's. Not in the live status: fetched on entering the page and after each change.
 */
import { call, describe, explainClosedUpload, upload, type ApiResult } from '../api.js';
import { fill, h, section } from '../dom.js';
import { bytes } from '../format.js';
import { store } from '../store.js';
import type { Snapshot, StorageGroup } from '../types.js';
import { can, field, notify, valueOf, type Page } from '../ui.js';
import { snapshotTable } from './vm-snapshots.js';

/** As the API's bound on a description (src/daemon/snapshots.ts). */
const DESCRIPTION_CHARS_MAX = 256;

export const imagesPage: Page = {
  name: 'images',
  title: 'Snapshots & images',
  needs: 'read-only',
  mount(root, ctx) {
    const listEl = h('div', { id: 'images-list' }, h('p', { class: 'empty' }, 'loading…'));
    const groupSelect = h('select', { name: 'storageGroup' });
    const progress = h('progress', { id: 'image-progress', max: 1, value: 0, hidden: true });
    const progressText = h('small', { id: 'image-progress-text' });
    const manager = can('platform-manager');
    const submit = h('button', { type: 'submit', 'data-action': 'import-image', disabled: !manager, title: manager ? '' : `needs the role platform-manager; you have ${store.user?.role ?? 'none'}` }, 'Import');
    const form = h(
      'form',
      { id: 'image-import', class: 'card' },
      h('h2', {}, 'Import a disk image'),
      h(
        'div',
        { class: 'form-grid' },
        field('Image file', h('input', { name: 'file', type: 'file', required: true }), 'qcow2 or raw, whole: no backing or data file'),
        field('Storage group', groupSelect),
        field('Description', h('input', { name: 'description', maxlength: DESCRIPTION_CHARS_MAX })),
      ),
      submit,
      progress,
      progressText,
    );
    const reload = async (): Promise<void> => {
      const [s, g] = await Promise.all([call<Snapshot[]>('GET', '/v1/snapshots'), call<StorageGroup[]>('GET', '/v1/storage-groups')]);
      fill(listEl, s.ok ? snapshotTable(s.body, { reload, navigate: ctx.navigate, empty: 'No snapshots or images on this host.', id: 'images', showOf: true }) : h('p', { class: 'form-error' }, describe(s)));
      if (g.ok) fill(groupSelect, g.body.map((x) => h('option', { value: x.name }, `${x.name} (${bytes(x.freeBytes)} free)`)));
    };
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const file = (form.elements.namedItem('file') as HTMLInputElement).files?.[0];
      if (!file) return;
      submit.disabled = true;
      progress.hidden = false;
      const shown = (sent: number, total: number): void => {
        progress.value = total > 0 ? sent / total : 0;
        progressText.textContent = ` ${bytes(sent)} of ${bytes(total)}`;
      };
      void importImage(file, valueOf(form, 'storageGroup'), valueOf(form, 'description'), shown)
        .then((r) => {
          if (!r.ok) return notify(`Import ${file.name}: ${describe(r)}`, 'bad');
          notify(`Import ${file.name}: stored as ${r.body.id} (${r.body.format}, ${bytes(r.body.virtualBytes)})`, 'good');
          form.reset();
          void reload();
        })
        .finally(() => {
          submit.disabled = !can('platform-manager');
          progress.hidden = true;
          progressText.textContent = '';
        });
    });
    fill(
      root,
      h('h1', {}, 'Snapshots and images'),
      h('p', {}, 'This host’s snapshots of VMs’ volumes and the disk images imported to it, each the source of a new VM. They stay on this host: the peer’s console shows the peer’s.'),
      section('Snapshots and images', listEl),
      form,
    );
    void reload();
    return { update: () => {} };
  },
};

async function importImage(file: File, storageGroup: string, description: string, onProgress: (sent: number, total: number) => void): Promise<ApiResult<Snapshot>> {
  const q = new URLSearchParams();
  if (storageGroup) q.set('storageGroup', storageGroup);
  if (description) q.set('description', description);
  const query = q.toString() === '' ? '' : `?${q.toString()}`;
  const r = await upload<Snapshot>(`/v1/images${query}`, file, onProgress, 'POST');
  // An import has no name in its path: its audit entry has no target.
  return explainClosedUpload(r, store.user?.name ?? '', 'importImage', null);
}
