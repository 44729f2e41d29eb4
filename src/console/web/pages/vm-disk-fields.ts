/**
 * The VM create form's disks: one row per disk (its size, storage group, image format, and the snapshot or
 * image it is made from), from one to `DISKS_MAX`, in the guest's order (the first is its vda). Inputs are
 * named `diskN-size`, `diskN-group`, `diskN-format` and `diskN-source`, N from 0, renumbered after a
 * removal. The groups and images are this host's, given once they are fetched (`offer`).
 */
import { fill, h } from '../dom.js';
import { field } from '../ui.js';
import { diskName } from '../format.js';

/** As the API takes them (src/daemon/vm-definition.ts DISKS_PER_VM_MAX). */
const DISKS_MAX = 4;

export interface Choice {
  value: string;
  label: string;
}

/** An image a disk may be made from: it must be at least as large. */
export interface ImageChoice extends Choice {
  virtualBytes: number;
}

export interface DiskValues {
  sizeMiB: number;
  storageGroup: string;
  format: string;
  /** The snapshot or image id; absent: a blank volume. */
  source?: string;
}

export interface DiskFields {
  element: HTMLElement;
  /** The groups and images to offer (each row keeps what it had chosen, when still offered). */
  offer(groups: readonly Choice[], images: readonly ImageChoice[]): void;
  /** Chooses the first disk's image (a snapshot's "new VM from it"). */
  chooseSource(id: string): void;
  values(): DiskValues[];
}

export function diskFields(): DiskFields {
  let groups: readonly Choice[] = [{ value: 'default', label: 'default' }];
  let images: readonly ImageChoice[] = [];
  const rows = h('div', { class: 'disk-rows' });
  const add = h('button', { type: 'button', 'data-action': 'add-disk' }, 'Add a disk');
  const inputs = (row: Element): [HTMLInputElement, HTMLSelectElement, HTMLSelectElement, HTMLSelectElement] => {
    const [size] = row.querySelectorAll('input');
    const [group, format, source] = row.querySelectorAll('select');
    return [size!, group!, format!, source!];
  };
  const renumber = (): void => {
    [...rows.children].forEach((row, i) => {
      const named = inputs(row);
      ['size', 'group', 'format', 'source'].forEach((what, j) => (named[j]!.name = `disk${i}-${what}`));
      const disk = diskName(i);
      row.querySelectorAll('.field > span').forEach((label, j) => (label.textContent = `${disk} ${['size (MiB)', 'storage group', 'format', 'made from'][j]}`));
    });
    add.disabled = rows.children.length >= DISKS_MAX;
  };
  // A disk must hold its image: at least its size, which it is given when smaller.
  const sizeFromSource = (row: Element): void => {
    const [size, , , source] = inputs(row);
    const image = images.find((x) => x.value === source.value);
    const least = image ? Math.ceil(image.virtualBytes / (1024 * 1024)) : 1;
    size.min = String(least);
    if (Number(size.value) < least) size.value = String(least);
  };
  const offerTo = (row: Element): void => {
    const [, group, , source] = inputs(row);
    const [chosenGroup, chosenSource] = [group.value, source.value];
    fill(group, groups.map((g) => h('option', { value: g.value, selected: g.value === chosenGroup }, g.label)));
    // A chosen image not (yet) listed stays chosen: the list may come after a snapshot's "new VM from it".
    const listed = chosenSource === '' || images.some((i) => i.value === chosenSource);
    fill(
      source,
      h('option', { value: '' }, 'blank'),
      listed ? null : h('option', { value: chosenSource, selected: true }, chosenSource),
      images.map((i) => h('option', { value: i.value, selected: i.value === chosenSource }, i.label)),
    );
    sizeFromSource(row);
  };
  const addRow = (): void => {
    const first = rows.children.length === 0;
    const row = h(
      'div',
      { class: 'form-grid disk-row' },
      field('', h('input', { type: 'number', min: 1, value: first ? 64 : 16, required: true })),
      field('', h('select', {})),
      field('', h('select', {}, h('option', { value: 'qcow2' }, 'qcow2'), h('option', { value: 'raw' }, 'raw'))),
      field('', h('select', {})),
      // The first disk stays: a VM has at least one.
      first ? null : h('button', { type: 'button', 'data-action': 'remove-disk' }, 'Remove'),
    );
    row.querySelector('[data-action=remove-disk]')?.addEventListener('click', () => {
      row.remove();
      renumber();
    });
    inputs(row)[3].addEventListener('change', () => sizeFromSource(row));
    rows.append(row);
    offerTo(row);
    renumber();
  };
  add.addEventListener('click', addRow);
  addRow();
  return {
    element: h('fieldset', { class: 'disks' }, h('legend', {}, 'Disks (the first is the guest’s vda; FT protects a VM of one disk)'), rows, add),
    offer: (g, i) => {
      groups = g.length > 0 ? g : groups;
      images = i;
      for (const row of rows.children) offerTo(row);
    },
    chooseSource: (id) => {
      const row = rows.children[0]!;
      const source = inputs(row)[3];
      if (![...source.options].some((o) => o.value === id)) source.append(h('option', { value: id }, id));
      source.value = id;
      sizeFromSource(row);
    },
    values: () =>
      [...rows.children].map((row) => {
        const [size, group, format, source] = inputs(row);
        return { sizeMiB: Number(size.value), storageGroup: group.value, format: format.value, ...(source.value !== '' ? { source: source.value } : {}) };
      }),
  };
}
