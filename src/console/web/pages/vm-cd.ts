/**
 * A VM's CD drive on its page (docs/vcd.md): what the drive holds as the VM's replicated definition says
 * (a virtual CD by name and SHA-256, or empty), Insert of one of this host's VCDs and Eject (platform
 * managers), each call's refusal shown as the API gives it. The VCDs offered are this host's (a VCD is the
 * host's that received it, and only the VM's owner takes an insert): fetched when the page opens, on
 * Refresh, and after each change. A VM defined without a drive says so and how it gets one.
 */
import { call, describe, type ApiResult } from '../api.js';
import { fill, h, section } from '../dom.js';
import { store } from '../store.js';
import type { Vcd, Vm } from '../types.js';
import { actionButton, can, notify } from '../ui.js';

export interface CdSection {
  /** Made once: the detail's redraws move the same element, so a choice being made in it survives them. */
  element: HTMLElement;
  /** Shows the drive as `vm` has it now. */
  update(vm: Vm | undefined): void;
}

export function cdSection(name: string): CdSection {
  const path = `/v1/vms/${encodeURIComponent(name)}/cdrom`;
  const content = h('p', { id: 'vm-cd-content' }, 'loading…');
  const choice = h('select', { name: 'vcd', id: 'vm-cd-choice', disabled: !can('platform-manager') });
  const note = h('p', { class: 'hint', id: 'vm-cd-note' });
  let vcds: Vcd[] = [];
  let shown: Vm | undefined;

  const loadVcds = async (): Promise<void> => {
    const r = await call<Vcd[]>('GET', '/v1/vcds');
    if (!r.ok) {
      vcds = [];
      fill(note, `This host's virtual CDs: ${describe(r)}`);
    } else vcds = r.body;
    const before = choice.value;
    fill(choice, vcds.length === 0 ? h('option', { value: '' }, 'no virtual CDs on this host') : vcds.map((v) => h('option', { value: v.name, selected: v.name === before }, v.name)));
    draw();
  };
  // The VM as the API answers a change: shown at once, before the status the change brings catches up.
  const changed = (r: ApiResult<Vm | null>): ApiResult<Vm | null> => {
    if (r.ok && r.body !== null) {
      shown = r.body;
      draw();
    }
    return r;
  };
  const insert = actionButton('Insert', 'platform-manager', 'cd-insert', async () => {
    if (choice.value === '') {
      notify(`Insert: choose a virtual CD of ${store.status?.host ?? 'this host'} first (upload one on the Virtual CDs page)`, 'bad');
      return null;
    }
    return changed(await call<Vm | null>('POST', path, { vcd: choice.value }));
  });
  const eject = actionButton('Eject', 'platform-manager', 'cd-eject', async () => changed(await call<Vm | null>('DELETE', path)));
  const refresh = h('button', { type: 'button', 'data-action': 'cd-refresh' }, 'Refresh');
  refresh.addEventListener('click', () => void loadVcds());
  const controls = h('div', { class: 'actions', id: 'vm-cd-actions' }, choice, insert, eject, refresh);

  function draw(): void {
    const vm = shown;
    const drive = vm?.hardware.cdrom;
    if (vm === undefined) {
      fill(content, '—');
      controls.hidden = true;
      return;
    }
    if (drive === undefined) {
      fill(content, `VM ${name} has no CD drive (a VM gets one when it is defined: “CD drive” in the create form, lockstep vm create --cd-drive).`);
      controls.hidden = true;
      fill(note);
      return;
    }
    controls.hidden = false;
    const medium = drive.medium;
    const here = vcds.find((v) => medium !== null && v.name === medium.vcd);
    fill(
      content,
      medium === null
        ? h('span', { 'data-medium': '' }, 'empty')
        : h('span', { 'data-medium': medium.vcd }, h('strong', {}, medium.vcd), ' ', h('code', { title: medium.sha256 }, `sha256 ${medium.sha256.slice(0, 16)}…`), here !== undefined && here.sha256 !== medium.sha256 ? ' (this host’s VCD of that name is another image)' : ''),
    );
    const owner = vm.owner !== store.status?.host ? vm.owner : null;
    fill(note, owner !== null ? `${owner} runs VM ${name}: change its CD in ${owner}'s console (a virtual CD is the host's that received it).` : '');
  }

  void loadVcds();
  const element = section('CD drive', content, controls, note);
  element.id = 'vm-cd';
  return {
    element,
    update(vm) {
      shown = vm;
      draw();
    },
  };
}
