/**
 * VMs: the pair's VMs with their state and where they run, the operator's commands on each (start, stop,
 * migrate, protection level, remove: platform managers), a form to create one with what the API takes
 * (cores, memory, its disks with their storage groups, formats and images: `vm-disk-fields.ts`, guest
 * kernel, its NICs: `vm-nic-fields.ts`), and one VM's detail: its record, its process on this host, its
 * volumes, its QEMU's CPU and memory and its disks' allocation over
 * the last hour here (`resources.ts`), its CD drive with Insert and Eject (`vm-cd.ts`), its snapshots on
 * this host (`vm-snapshots.ts`), its console log here (`console-log.ts`), its timeline and its recent
 * events. The create form can make each volume from one of this host's snapshots or images.
 */
import { call, describe } from '../api.js';
import { badge, facts, fill, h, section, table } from '../dom.js';
import { bytes, diskName, duration, percent, time } from '../format.js';
import { store } from '../store.js';
import { incidents } from '../timeline.js';
import type { Snapshot, StorageGroup, Vm, VmDisk, Volume } from '../types.js';
import { actionButton, can, field, notify, valueOf, type Page } from '../ui.js';
import { incidentView } from './timeline.js';
import { resourceCharts, vmCharts } from './resources.js';
import { consoleLogSection } from './console-log.js';
import { cdSection, type CdSection } from './vm-cd.js';
import { snapshotsSection, takePendingSource, type SnapshotsSection } from './vm-snapshots.js';
import { nicFields } from './vm-nic-fields.js';
import { diskFields } from './vm-disk-fields.js';

/** A restart's answer waits for the old QEMU to exit: up to 30 s on the host, and the way there and back. */
const RESTART_TIMEOUT_MS = 45_000;

const PROTECTION_LEVELS = ['none', 'ha', 'ft'] as const;
/** Events shown on a VM's page. */
const VM_EVENTS_SHOWN = 30;

export const vmsPage: Page = {
  name: 'vms',
  title: 'VMs',
  needs: 'read-only',
  mount(root, ctx) {
    if (ctx.param !== null) return mountDetail(root, ctx.param, ctx.navigate);
    const list = h('div', {});
    const form = createForm(ctx.navigate);
    fill(root, h('h1', {}, 'VMs'), list, form);
    // Come from a snapshot's "New VM from it": the form, with that source chosen, in view.
    if (form.dataset['source']) form.scrollIntoView();
    // Redrawn only when the status changed, so a selection being made in a row survives other messages.
    let drawn: unknown = undefined;
    return {
      update: () => {
        if (drawn === store.status) return;
        drawn = store.status;
        fill(list, vmTable(store.status?.vms ?? []));
      },
    };
  },
};

function vmTable(vms: Vm[]): HTMLElement {
  return section(
    'Virtual machines',
    table(
      ['VM', 'state', 'desired', 'protection', 'owner', 'here', 'cores', 'memory', 'disk', 'address', 'actions'],
      vms.map((v) => [
        h('a', { href: `#/vms/${encodeURIComponent(v.name)}` }, v.name),
        badge(v.state),
        v.desired,
        v.protection.toUpperCase(),
        v.owner,
        v.local ? badge(v.local.state) : '—',
        String(v.hardware.vcpus ?? '—'),
        v.hardware.memoryMiB !== undefined ? `${v.hardware.memoryMiB} MiB` : '—',
        disksOf(v.hardware).map((d) => `${d.sizeMiB} MiB`).join(' + ') || '—',
        nicsOf(v.hardware).map((n) => n.address).join(', ') || '—',
        vmActions(v),
      ]),
      'No VMs yet: create one below.',
      { id: 'vm-table' },
    ),
  );
}

function vmActions(v: Vm): HTMLElement {
  const path = `/v1/vms/${encodeURIComponent(v.name)}`;
  const level = h('select', { 'data-action': 'protection-level', disabled: !can('platform-manager') }, PROTECTION_LEVELS.map((p) => h('option', { value: p, selected: p === v.protection }, p.toUpperCase())));
  return h(
    'div',
    { class: 'actions', 'data-vm': v.name },
    v.desired === 'running'
      ? actionButton('Stop', 'platform-manager', 'stop', () => call('POST', `${path}/stop`))
      : actionButton('Start', 'platform-manager', 'start', () => call('POST', `${path}/start`)),
    // The host answers once the old instance has exited (its graceful stop, then its kill) and the start is asked.
    v.desired === 'running' ? actionButton('Restart', 'platform-manager', 'restart', () => call('POST', `${path}/restart`, undefined, RESTART_TIMEOUT_MS), { title: can('platform-manager') ? 'stop it and start it again, on the host that runs it' : '' }) : null,
    actionButton('Migrate', 'platform-manager', 'migrate', () => call('POST', `${path}/migrate`), { title: can('platform-manager') ? 'live migration to the peer' : '' }),
    level,
    actionButton('Set protection', 'platform-manager', 'protect', () => call('POST', `${path}/protection`, { protection: (level as HTMLSelectElement).value })),
    actionButton('Remove', 'platform-manager', 'remove', () => (confirm(`Remove VM ${v.name} and its volume?`) ? call('DELETE', path) : Promise.resolve(null))),
  );
}

/** A VM's disks as its record has them: `disks`, or the one disk of a record from before several disks. */
function disksOf(hw: Vm['hardware']): VmDisk[] {
  if (hw.disks) return hw.disks;
  if (hw.diskMiB === undefined) return [];
  return [{ sizeMiB: hw.diskMiB, storageGroup: hw.disk?.storageGroup ?? 'default', format: hw.disk?.format ?? 'qcow2', ...(hw.source ? { source: hw.source } : {}) }];
}

/** A fact per disk, by the name the guest gives it, and where one is made from an image, that image. */
function diskFacts(hw: Vm['hardware']): [string, string][] {
  const disks = disksOf(hw);
  if (disks.length === 0) return [['disk', '—']];
  return disks.flatMap((d, i): [string, string][] => {
    const id = diskName(i);
    return [[`disk ${id}`, `${d.sizeMiB} MiB, ${d.format} in ${d.storageGroup}`], ...(d.source ? [[`${id} from`, `${d.source.image} on ${d.source.host}, made at its first start`] as [string, string]] : [])];
  });
}

function volumeSection(volume: Volume): HTMLElement {
  return section(
    `Volume ${volume.name} (${volume.disk})`,
    facts([
      ['state', badge(volume.state)],
      ['why', volume.reason],
      ['size', bytes(volume.sizeBytes)],
      ['allocated here', bytes(volume.allocatedBytes)],
      ['file here', volume.path ?? '—'],
      ['sync', volume.sync ? `${bytes(volume.sync.copiedBytes)} of ${bytes(volume.sync.totalBytes)} (${percent(volume.sync.copiedBytes, volume.sync.totalBytes)}), ETA ${duration(volume.sync.etaMs)}` : '—'],
    ]),
  );
}

/** A VM's NICs as its record has them: `nics`, or the one `nic` of a record from before several NICs. */
function nicsOf(hw: Vm['hardware']): { mac: string; address: string }[] {
  return hw.nics ?? (hw.nic ? [hw.nic] : []);
}

/** A fact per NIC, in the guest's order: `NIC` alone for a VM with one, `NIC 1` … for several. */
function nicFacts(hw: Vm['hardware']): [string, string][] {
  const nics = nicsOf(hw);
  if (nics.length === 0) return [['NIC', '—']];
  return nics.map((n, i) => [nics.length === 1 ? 'NIC' : `NIC ${i + 1}`, `${n.mac}, ${n.address}`]);
}

/** The create form; its guest fields can be filled from an existing VM (the guest files are the pair's). */
function createForm(navigate: (hash: string) => void): HTMLElement {
  const nics = nicFields();
  const disks = diskFields();
  const pending = takePendingSource();
  if (pending) disks.chooseSource(pending);
  void Promise.all([call<StorageGroup[]>('GET', '/v1/storage-groups'), call<Snapshot[]>('GET', '/v1/snapshots')]).then(([g, s]) => {
    const groups = g.ok ? g.body.map((x) => ({ value: x.name, label: `${x.name} (${bytes(x.freeBytes)} free)` })) : [];
    const images = s.ok ? s.body.filter((x) => x.state === 'ready') : [];
    disks.offer(
      groups,
      images.map((x) => ({ value: x.id, virtualBytes: x.virtualBytes, label: `${x.id}: ${x.vm === null ? 'image' : `VM ${x.vm}`}, ${bytes(x.virtualBytes)}${x.description ? `, ${x.description}` : ''}` })),
    );
  });
  const form = h(
    'form',
    { id: 'vm-create', class: 'card' },
    h('h2', {}, 'Create a VM'),
    h(
      'div',
      { class: 'form-grid' },
      field('Name', h('input', { name: 'name', required: true, pattern: '[a-z][a-z0-9\\-]{0,30}' })),
      field('Cores', h('input', { name: 'vcpus', type: 'number', min: 1, max: 64, value: 1, required: true })),
      field('Memory (MiB)', h('input', { name: 'memoryMiB', type: 'number', min: 64, value: 256, required: true })),
      field('Kernel', h('input', { name: 'kernel', required: true, placeholder: '/path/on/both/hosts/vmlinuz' })),
      field('Initrd', h('input', { name: 'initrd', required: true })),
      field('Kernel command line', h('input', { name: 'cmdline', required: true, value: 'console=ttyS0' })),
      field('CD drive', h('select', { name: 'cdDrive' }, h('option', { value: 'no' }, 'no'), h('option', { value: 'yes' }, 'yes, empty'))),
      field('Protection', h('select', { name: 'protection' }, PROTECTION_LEVELS.map((p) => h('option', { value: p, selected: p === 'ha' }, p.toUpperCase())))),
      field('Start now', h('select', { name: 'desired' }, h('option', { value: 'stopped' }, 'no'), h('option', { value: 'running' }, 'yes'))),
    ),
    disks.element,
    nics.element,
    h('div', { class: 'actions' }, h('button', { type: 'button', 'data-action': 'copy-guest' }, 'Guest from an existing VM'), h('button', { type: 'submit', 'data-action': 'create', disabled: !can('platform-manager') }, 'Create')),
  );
  if (pending) form.dataset['source'] = pending;
  form.querySelector('[data-action=copy-guest]')!.addEventListener('click', () => {
    const g = store.status?.vms.find((v) => v.hardware.guest !== undefined)?.hardware.guest;
    if (!g) return notify('No VM to copy the guest from.', 'bad');
    for (const [k, v] of Object.entries({ kernel: g.kernel, initrd: g.initrd, cmdline: g.cmdline })) (form.elements.namedItem(k) as HTMLInputElement).value = v;
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = valueOf(form, 'name');
    const body = {
      name,
      vcpus: Number(valueOf(form, 'vcpus')),
      memoryMiB: Number(valueOf(form, 'memoryMiB')),
      // An image is named by id; the daemon records it as its file (a snapshot or image of this host).
      disks: disks.values().map(({ source, ...d }) => ({ ...d, ...(source ? { source: { snapshot: source } } : {}) })),
      guest: { kernel: valueOf(form, 'kernel'), initrd: valueOf(form, 'initrd'), cmdline: valueOf(form, 'cmdline') },
      nics: nics.values(),
      protection: valueOf(form, 'protection'),
      desired: valueOf(form, 'desired'),
      ...(valueOf(form, 'cdDrive') === 'yes' ? { cdrom: {} } : {}),
    };
    void call('POST', '/v1/vms', body).then((r) => {
      if (!r.ok) return notify(`Create ${name}: ${describe(r)}${r.fields['field'] ? ` (field ${String(r.fields['field'])})` : ''}`, 'bad');
      notify(`Created VM ${name}.`, 'good');
      navigate(`#/vms/${encodeURIComponent(name)}`);
    });
  });
  return form;
}

function mountDetail(root: HTMLElement, name: string, navigate: (hash: string) => void): { update(): void; unmount(): void } {
  const body = h('div', { class: 'grid' });
  let volumes: Volume[] | null = null;
  let volumeNote = 'loading…';
  let lastFetch = 0;
  fill(root, h('h1', {}, `VM ${name}`), h('p', {}, h('a', { href: '#/vms' }, '← all VMs')), body);
  // Made once, on its own timer: the detail's redraws move the same element.
  const resources = resourceCharts(`/v1/vms/${encodeURIComponent(name)}/history`, vmCharts(name, () => ownerElsewhere(name)));
  const charts = section('Resources over time (on this host)', resources.element);
  charts.classList.add('wide');
  charts.id = 'vm-resources';
  const consoleLog = consoleLogSection(name, () => ownerElsewhere(name));
  const cd = cdSection(name);
  const snapshots = snapshotsSection(name, navigate);
  // Drawn from the store as it is now: a volume answer that comes after a newer status must not bring back
  // the VM as the status was when it was asked for (it would show "not found" for a VM just created).
  const draw = (): void => {
    const vm = store.status?.vms.find((v) => v.name === name);
    fill(body, ...detail(name, vm, volumes, volumeNote, charts, consoleLog, cd, snapshots));
  };
  const update = (): void => {
    // The volumes are not in the status: fetched again at most every 2 s while the status changes.
    if (Date.now() - lastFetch > 2000) {
      lastFetch = Date.now();
      void call<Volume[]>('GET', '/v1/volumes').then((r) => {
        volumes = r.ok ? r.body.filter((v) => v.vm === name) : null;
        volumeNote = r.ok ? '' : describe(r);
        draw();
      });
    }
    cd.update(store.status?.vms.find((v) => v.name === name));
    snapshots.update(store.status?.vms.find((v) => v.name === name));
    draw();
  };
  return { update, unmount: resources.unmount };
}

/** The VM's owner when it is not this host (then that host has its charts), else null. */
function ownerElsewhere(name: string): string | null {
  const owner = store.status?.vms.find((v) => v.name === name)?.owner ?? null;
  return owner !== null && owner !== store.status?.host ? owner : null;
}

/** FT: the protection run on this host, or the checkpoint this host resumed the VM from. */
function ftSection(vm: Vm): HTMLElement {
  const ft = vm.local?.ft ?? null;
  const resumed = vm.local?.resumedFrom ?? null;
  if (ft === null && resumed === null) return h('span', { hidden: true });
  const ms = (v: number | null): string => (v === null ? '—' : `${v.toFixed(1)} ms`);
  return section(
    'Fault tolerance',
    facts([
      ...(ft
        ? ([
            ['run', `${ft.run}: ${ft.state}${ft.lostBecause ? ` (${ft.lostBecause})` : ''}`],
            ['epochs', `${ft.epochsPerSec === null ? '—' : ft.epochsPerSec.toFixed(1)}/s of ${ft.epochMs} ms`],
            ['pause', `last ${ms(ft.lastPauseMs)}, p50 ${ms(ft.pauseP50Ms)}, p99 ${ms(ft.pauseP99Ms)}`],
            ['peer committed', `epoch ${ft.peerCommittedEpoch} of ${ft.sentEpoch} sent (lag ${ft.lagEpochs})`],
            ['output held', bytes(ft.heldOutputBytes)],
          ] as [string, string][])
        : []),
      ...(resumed ? ([['resumed', `from checkpoint ${resumed.epoch}: takeover ${resumed.totalMs} ms, of it resume ${resumed.resumeMs} ms`]] as [string, string][]) : []),
    ]),
  );
}

function detail(name: string, vm: Vm | undefined, volumes: Volume[] | null, volumeNote: string, charts: HTMLElement, consoleLog: HTMLElement, cd: CdSection, snapshots: SnapshotsSection): HTMLElement[] {
  if (vm === undefined) return [section('Not found', h('p', { class: 'empty' }, store.status === null ? 'waiting for the host’s status…' : `The pair has no VM named ${name}.`))];
  const hw = vm.hardware;
  const m = vm.local?.migration ?? null;
  const protection = new Map((store.status?.vms ?? []).map((v) => [v.name, v.protection]));
  const own = incidents(store.log, (x) => protection.get(x)).filter((i) => i.vm === name);
  const events = store.log.filter((e) => e.what.includes(`VM ${name}`)).slice(-VM_EVENTS_SHOWN).reverse();
  return [
    section(
      'Status',
      facts([
        ['state', badge(vm.state)],
        ['desired', vm.desired],
        ['protection', vm.protection.toUpperCase()],
        ['owner', vm.owner],
        ['copies', vm.protection === 'none' ? 'one (unprotected)' : `here ${String(vm.copies?.here ?? 'unknown')}, peer ${String(vm.copies?.peer ?? 'unknown')}`],
        ['on this host', vm.local ? `${vm.local.state}, pid ${vm.local.pid ?? '—'}, since ${time(vm.local.startedAt)}` : 'not running here'],
        ['last exit here', vm.lastExit ? JSON.stringify(vm.lastExit) : '—'],
      ]),
      vmActions(vm),
    ),
    section(
      'Hardware',
      facts([
        ['cores', String(hw.vcpus ?? '—')],
        ['memory', hw.memoryMiB !== undefined ? `${hw.memoryMiB} MiB` : '—'],
        ...diskFacts(hw),
        ['kernel', hw.guest?.kernel ?? '—'],
        ['command line', hw.guest?.cmdline ?? '—'],
        ...nicFacts(hw),
        ['CD drive', hw.cdrom === undefined ? 'none' : hw.cdrom.medium === null ? 'empty' : hw.cdrom.medium.vcd],
      ]),
    ),
    cd.element,
    snapshots.element,
    ...(volumes === null || volumes.length === 0 ? [section('Volume', h('p', { class: 'empty' }, volumes === null ? volumeNote : 'none on this host'))] : volumes.map(volumeSection)),
    charts,
    consoleLog,
    ftSection(vm),
    m
      ? section(
          'Live migration',
          facts([
            ['id', m.id],
            ['phase', badge(m.phase)],
            ['RAM over', m.multifd > 0 ? `${m.multifd} multifd connections` : 'one stream'],
            ['transferred', `${bytes(m.transferredBytes)} of ${bytes(m.totalBytes)}`],
            ['rate', m.mbps === null ? '—' : `${m.mbps.toFixed(0)} Mbit/s`],
            ['ETA', duration(m.etaMs)],
            ['downtime', duration(m.downtimeMs)],
            ['error', m.error ?? '—'],
          ]),
        )
      : h('span', { hidden: true }),
    section('Timeline', own.length === 0 ? h('p', { class: 'empty' }, 'No failover, migration or restart of this VM in the event log.') : own.map(incidentView)),
    section('Recent events', table(['when', 'what', 'cause'], events.map((e) => [time(e.wallMs), e.what, e.cause]), 'No events name this VM.')),
  ];
}
