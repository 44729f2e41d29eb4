/**
 * The VM create form's NICs: one row per NIC (its MAC and the IPv4 address the guest gives it), from one to
 * `NICS_MAX`, in the guest's order (the first is its eth0). Rows are added and removed in place; their
 * inputs are named `nicN-mac` and `nicN-address`, N from 0, renumbered after a removal.
 */
import { h } from '../dom.js';
import { field } from '../ui.js';

/** As the API takes them (src/daemon/vm-definition.ts NICS_PER_VM_MAX). */
const NICS_MAX = 4;

export interface NicFields {
  element: HTMLElement;
  /** The rows' values, in order. */
  values(): { mac: string; address: string }[];
}

export function nicFields(): NicFields {
  const rows = h('div', { class: 'nic-rows' });
  const add = h('button', { type: 'button', 'data-action': 'add-nic' }, 'Add a NIC');
  const renumber = (): void => {
    [...rows.children].forEach((row, i) => {
      const [mac, address] = row.querySelectorAll('input');
      mac!.name = `nic${i}-mac`;
      address!.name = `nic${i}-address`;
      row.querySelectorAll('.field > span').forEach((label, j) => (label.textContent = `NIC ${i + 1} ${j === 0 ? 'MAC' : 'IPv4 address'}`));
    });
    add.disabled = rows.children.length >= NICS_MAX;
  };
  const addRow = (): void => {
    const first = rows.children.length === 0;
    const row = h(
      'div',
      { class: 'form-grid nic-row' },
      field('', h('input', { required: true, placeholder: '52:54:00:12:34:56' })),
      field('', h('input', { required: true, placeholder: '10.10.3.60' })),
      // The first NIC stays: a VM has at least one.
      first ? null : h('button', { type: 'button', 'data-action': 'remove-nic' }, 'Remove'),
    );
    row.querySelector('[data-action=remove-nic]')?.addEventListener('click', () => {
      row.remove();
      renumber();
    });
    rows.append(row);
    renumber();
  };
  add.addEventListener('click', addRow);
  addRow();
  return {
    element: h('fieldset', { class: 'nics' }, h('legend', {}, 'NICs (the first is the guest’s eth0)'), rows, add),
    values: () =>
      [...rows.children].map((row) => {
        const [mac, address] = row.querySelectorAll('input');
        return { mac: mac!.value.trim(), address: address!.value.trim() };
      }),
  };
}
