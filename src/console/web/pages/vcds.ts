/**
 * Virtual CDs (docs/vcd.md): this host's ISO images, each with its storage group, size, SHA-256 and when it
 * came; upload one (streamed from the operator's disk, with its progress) and delete one. They are this
 * host's only: the peer's console shows the peer's. Not in the live status: fetched on entering the page
 * and after each change.
 */
import { call, describe, explainClosedUpload, upload, type ApiResult } from '../api.js';
import { fill, h, section, table } from '../dom.js';
import { bytes, time } from '../format.js';
import { store } from '../store.js';
import type { StorageGroup, Vcd } from '../types.js';
import { actionButton, can, field, notify, valueOf, type Page } from '../ui.js';

/** As the API's VCD names (src/storage/vcd.ts). */
const NAME_PATTERN = '[a-z][a-z0-9._\\-]{0,63}';
/** Where ISO 9660 puts its signature: `CD001` after the first volume descriptor's type byte. */
const SIGNATURE_AT = 32769;

export const vcdsPage: Page = {
  name: 'vcds',
  title: 'Virtual CDs',
  needs: 'read-only',
  mount(root) {
    const listEl = h('div', {}, section('Virtual CDs', h('p', { class: 'empty' }, 'loading…')));
    const groupSelect = h('select', { name: 'storageGroup' });
    const progress = h('progress', { id: 'vcd-progress', max: 1, value: 0, hidden: true });
    const progressText = h('small', { id: 'vcd-progress-text' });
    const submit = h('button', { type: 'submit', 'data-action': 'upload-vcd', disabled: !can('platform-manager'), title: can('platform-manager') ? '' : `needs the role platform-manager; you have ${store.user?.role ?? 'none'}` }, 'Upload');
    const form = h(
      'form',
      { id: 'vcd-upload', class: 'card' },
      h('h2', {}, 'Upload an ISO image'),
      h(
        'div',
        { class: 'form-grid' },
        field('Name', h('input', { name: 'name', required: true, pattern: NAME_PATTERN, placeholder: 'debian-12.5-netinst' }), 'lowercase letters, digits, . _ -'),
        field('ISO file', h('input', { name: 'file', type: 'file', required: true, accept: '.iso,application/x-iso9660-image' })),
        field('Storage group', groupSelect),
      ),
      submit,
      progress,
      progressText,
    );
    const reload = async (): Promise<void> => {
      const [v, g] = await Promise.all([call<Vcd[]>('GET', '/v1/vcds'), call<StorageGroup[]>('GET', '/v1/storage-groups')]);
      fill(listEl, section('Virtual CDs', v.ok ? vcdTable(v.body, reload) : h('p', { class: 'form-error' }, describe(v))));
      if (g.ok) fill(groupSelect, g.body.map((x) => h('option', { value: x.name }, `${x.name} (${bytes(x.freeBytes)} free)`)));
    };
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = valueOf(form, 'name');
      const file = (form.elements.namedItem('file') as HTMLInputElement).files?.[0];
      if (!file) return;
      submit.disabled = true;
      progress.hidden = false;
      const shown = (sent: number, total: number): void => {
        progress.value = total > 0 ? sent / total : 0;
        progressText.textContent = ` ${bytes(sent)} of ${bytes(total)}`;
      };
      void uploadVcd(name, file, valueOf(form, 'storageGroup'), shown)
        .then((r) => {
          if (!r.ok) return notify(`Upload ${name}: ${describe(r)}`, 'bad');
          notify(`Upload ${name}: stored, sha256 ${r.body.sha256}`, 'good');
          form.reset();
          void reload();
        })
        .finally(() => {
          submit.disabled = !can('platform-manager');
          progress.hidden = true;
          progressText.textContent = '';
        });
    });
    fill(root, h('h1', {}, 'Virtual CDs'), h('p', {}, 'ISO images on this host, to insert into VMs’ CD drives. An image stays on the host that received it: upload it to each host whose VMs need it.'), listEl, form);
    void reload();
    return { update: () => {} };
  },
};

function vcdTable(vcds: Vcd[], reload: () => Promise<void>): HTMLElement {
  return table(
    ['name', 'storage group', 'size', 'sha256', 'uploaded', ''],
    vcds.map((v) => [
      v.name,
      v.storageGroup,
      bytes(v.bytes),
      h('code', { title: v.sha256 }, `${v.sha256.slice(0, 16)}…`),
      time(v.created),
      actionButton('Delete', 'platform-manager', 'delete-vcd', async () => {
        if (!window.confirm(`Delete virtual CD ${v.name} from ${v.host}?`)) return null;
        const r = await call('DELETE', `/v1/vcds/${encodeURIComponent(v.name)}`);
        if (r.ok) void reload();
        return r;
      }, { 'data-vcd': v.name }),
    ]),
    'No virtual CDs on this host.',
    { id: 'vcds' },
  );
}

/**
 * The upload, after the browser's own look at the file's head: a file that is no ISO image is said at once,
 * not after the host has refused it mid-stream. When the host closed the upload without an answer it
 * could send (it refuses before reading the rest), the audit log says why.
 */
async function uploadVcd(name: string, file: File, storageGroup: string, onProgress: (sent: number, total: number) => void): Promise<ApiResult<Vcd>> {
  const signature = new TextDecoder('latin1').decode(await file.slice(SIGNATURE_AT, SIGNATURE_AT + 5).arrayBuffer());
  if (signature !== 'CD001') return { ok: false, status: 0, code: 'VCD_NOT_ISO', message: `${file.name} is not an ISO image: no CD001 signature at byte ${SIGNATURE_AT}`, fields: {} };
  const query = storageGroup ? `?storageGroup=${encodeURIComponent(storageGroup)}` : '';
  const r = await upload<Vcd>(`/v1/vcds/${encodeURIComponent(name)}${query}`, file, onProgress);
  return explainClosedUpload(r, store.user?.name ?? '', 'uploadVcd', name);
}
