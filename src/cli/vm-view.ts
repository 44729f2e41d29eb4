/**
 * A VM as `lockstep vm` reads lockstepd's answer (`GET /v1/vms`, `GET /v1/vms/NAME`) and shows it to a
 * person. Only what the CLI reads is typed here, and whatever the daemon may leave out is optional: `--json`
 * passes the API's JSON through untouched, and the human forms render what is there. Pure.
 */
import { VM_STATES } from '../core/types.js';
import { keyValues, table } from './output.js';
import { diskId } from '../daemon/vm-definition.js';

/** A live migration as the source host reports it in `local.migration`; any field may be missing. */
/** A figure the daemon has not measured yet is null (or absent): the views show only what is known. */
export interface MigrationView {
  phase?: string;
  transferredBytes?: number | null;
  remainingBytes?: number | null;
  totalBytes?: number | null;
  /** QEMU's measured throughput, megabits per second. */
  mbps?: number | null;
  etaMs?: number | null;
  downtimeMs?: number | null;
  /** QEMU's multifd connections beside the main one; 0: one stream. */
  multifd?: number;
  error?: string;
}

export interface MirrorView {
  stream?: string;
  mode?: string;
  state?: string;
  copiedBytes?: number;
  totalBytes?: number;
  limitBytesPerSec?: number | null;
  guestBusy?: boolean;
  lastSync?: { mode?: string; copiedBytes?: number; pauseMs?: number; durationMs?: number; at?: string } | null;
}

/** The answering host's own QEMU for the VM. */
export interface LocalView {
  instance?: number;
  state?: string;
  pid?: number | null;
  startedAt?: string | null;
  mirror?: MirrorView | null;
  migration?: MigrationView | null;
  ft?: FtView | null;
  resumedFrom?: { epoch?: number; totalMs?: number; resumeMs?: number } | null;
}

/** The FT protection run's numbers (`RunningVm.ft`), each optional: an older daemon may lack some. */
export interface FtView {
  run?: number;
  state?: string;
  epochMs?: number;
  epochsPerSec?: number | null;
  pauseP50Ms?: number | null;
  pauseP99Ms?: number | null;
  lastPauseMs?: number | null;
  sentEpoch?: number;
  peerCommittedEpoch?: number;
  lagEpochs?: number;
  earlyEpochs?: number;
  heldOutputBytes?: number;
  lostBecause?: string | null;
}

export interface ExitView {
  instance?: number;
  at?: string;
  cause?: string;
  code?: number | null;
  signal?: string | null;
  shutdownReason?: string | null;
  stderrTail?: string;
  expected?: boolean;
}

export interface VmView {
  name: string;
  owner: string;
  protection: string;
  desired: string;
  state: string;
  hardware?: {
    vcpus?: number;
    memoryMiB?: number;
    disks?: DiskView[];
    /** A record from before VMs had several disks has only these; a one-disk VM's has both. */
    diskMiB?: number;
    disk?: { storageGroup?: string; format?: string };
    guest?: { kernel?: string; initrd?: string; cmdline?: string };
    nics?: NicView[];
    /** A record from before VMs had several NICs has only this; a one-NIC VM's has both. */
    nic?: NicView;
    cdrom?: { medium?: { vcd?: string; sha256?: string } | null };
  } | null;
  local: LocalView | null;
  lastExit: ExitView | null;
}

export interface NicView {
  mac?: string;
  address?: string;
}

export interface DiskView {
  sizeMiB?: number;
  storageGroup?: string;
  format?: string;
}

/** A VM's disks as its record has them: `disks`, or the one disk of a record from before several disks. */
function disksOfView(hw: VmView['hardware']): DiskView[] {
  return hw?.disks ?? (hw?.diskMiB !== undefined ? [{ sizeMiB: hw.diskMiB, ...hw.disk }] : []);
}

/** A `disk` line per disk, in the guest's order (vda, vdb, …); `-` for a record that shows none. */
function diskRows(hw: VmView['hardware']): [string, string][] {
  const disks = disksOfView(hw);
  if (disks.length === 0) return [['disk', '-']];
  return disks.map((d, i) => ['disk', [diskId(i), d.sizeMiB !== undefined ? `${d.sizeMiB} MiB` : null, d.format, d.storageGroup ? `in ${d.storageGroup}` : null].filter((x) => x).join(' ')]);
}

/** A VM's NICs as its record has them: `nics`, or the one `nic` of a record from before several NICs. */
export function nicsOfView(hw: VmView['hardware']): NicView[] {
  return hw?.nics ?? (hw?.nic ? [hw.nic] : []);
}

/** A `nic` line per NIC, in the guest's order (its eth0 first); `-` for a record that shows none. */
function nicRows(hw: VmView['hardware']): [string, string][] {
  const nics = nicsOfView(hw);
  if (nics.length === 0) return [['nic', '-']];
  return nics.map((n) => ['nic', [n.mac, n.address].filter((x) => x !== undefined).join(' ') || '-']);
}

/** One host's answer: the pair's VMs as that host sees them (`local` is that host's own QEMU). */
export interface HostView {
  host: string;
  vms: readonly VmView[];
}

/** The core's VM states in which the VM runs on its owner (a migrating VM runs on until the switch-over). */
const RUNNING_STATES: ReadonlySet<string> = new Set(['unprotected', 'protected', 'syncing', 'migrating', 'downgraded']);

export function runsOnOwner(state: string): boolean {
  return RUNNING_STATES.has(state);
}

/** A VM row: the view to show, and where its QEMU runs (null: nowhere as far as the answers tell). */
export interface VmRow {
  host: string;
  vm: VmView;
  runningOn: string | null;
}

/**
 * One row per VM from one or more hosts' answers. A host sees only its own QEMU, so each VM is shown from the
 * host that runs it when one answered; otherwise from the first answer, running on its owner if the core's
 * state says it runs.
 */
export function vmRows(answers: readonly HostView[]): VmRow[] {
  const names = [...new Set(answers.flatMap((a) => a.vms.map((v) => v.name)))].sort();
  return names.map((name) => {
    const seen = answers.flatMap((a) => a.vms.filter((v) => v.name === name).map((vm) => ({ host: a.host, vm })));
    const local = seen.find((s) => s.vm.local !== null);
    if (local) return { ...local, runningOn: local.host };
    const first = seen[0]!;
    return { ...first, runningOn: runsOnOwner(first.vm.state) ? first.vm.owner : null };
  });
}

export function renderVmTable(rows: readonly VmRow[]): string {
  if (rows.length === 0) return 'no VMs (`lockstep vm create NAME …` defines one)';
  return table(
    ['vm', 'owner', 'running on', 'protection', 'desired', 'state', 'mirror'],
    rows.map(({ vm, runningOn }) => [vm.name, vm.owner, runningOnCell(vm, runningOn), vm.protection, vm.desired, vm.state, mirrorCell(vm.local?.mirror ?? null)]),
  );
}

function runningOnCell(vm: VmView, runningOn: string | null): string {
  if (runningOn === null) return '-';
  const localState = vm.local?.state;
  return localState !== undefined && localState !== 'running' ? `${runningOn} (${localState})` : runningOn;
}

function mirrorCell(m: MirrorView | null): string {
  if (!m) return '-';
  const cell = [m.state, m.mode].filter((x) => x !== undefined).join('/') || 'present';
  const pct = m.state === 'syncing' ? percent(m.copiedBytes, m.totalBytes) : null;
  return pct === null ? cell : `${cell} ${pct}%`;
}

/** Everything one host's `GET /v1/vms/NAME` says, a line per aspect. */
export function renderVmShow(host: string, vm: VmView): string {
  const hw = vm.hardware ?? {};
  const rows: [string, string][] = [
    ['vm', vm.name],
    ['owner', vm.owner],
    ['protection', vm.protection],
    ['desired', vm.desired],
    ['state', describeState(vm.state)],
    [
      'hardware',
      [
        hw.vcpus !== undefined ? `${hw.vcpus} vCPU${hw.vcpus === 1 ? '' : 's'}` : null,
        hw.memoryMiB !== undefined ? `${hw.memoryMiB} MiB memory` : null,
      ]
        .filter((x) => x !== null)
        .join(', ') || '-',
    ],
    ...diskRows(hw),
    ...nicRows(hw),
    ['kernel', hw.guest?.kernel ?? '-'],
    ['initrd', hw.guest?.initrd ?? '-'],
    ['cmdline', hw.guest?.cmdline ?? '-'],
    ['qemu', qemuLine(host, vm.local)],
  ];
  // Only a VM defined with a CD drive has the line: most have none.
  if (hw.cdrom) rows.splice(rows.length - 1, 0, ['cd', hw.cdrom.medium ? `${hw.cdrom.medium.vcd ?? '?'} (sha256 ${(hw.cdrom.medium.sha256 ?? '?').slice(0, 12)})` : 'empty']);
  const mirror = vm.local?.mirror ?? null;
  if (mirror) {
    rows.push(['mirror', mirrorLine(mirror)]);
    rows.push(['last sync', mirror.lastSync ? lastSyncLine(mirror.lastSync) : 'none yet']);
  }
  const ft = vm.local?.ft ?? null;
  if (ft) {
    rows.push(['ft', ftLine(ft)]);
    rows.push(['ft epochs', ftEpochLine(ft)]);
  }
  const resumed = vm.local?.resumedFrom ?? null;
  if (resumed) rows.push(['resumed', `from FT checkpoint ${resumed.epoch ?? '?'} (takeover ${resumed.totalMs ?? '?'} ms, of it resume ${resumed.resumeMs ?? '?'} ms)`]);
  const migration = vm.local?.migration ?? null;
  if (migration) rows.push(['migration', migrationLine(migration)]);
  rows.push(['last exit', vm.lastExit ? exitLine(vm.lastExit) : 'none']);
  return keyValues(rows);
}

function describeState(state: string): string {
  const meaning = (VM_STATES as Record<string, string>)[state];
  return meaning === undefined ? state : `${state}: ${meaning}`;
}

function qemuLine(host: string, local: LocalView | null): string {
  if (!local) return `not running on ${host}`;
  const parts = [`on ${host}`, local.pid != null ? `pid ${local.pid}` : 'no pid yet', local.state, local.instance !== undefined ? `instance ${local.instance}` : undefined];
  if (local.startedAt) parts.push(`since ${local.startedAt}`);
  return parts.filter((x) => x !== undefined).join(', ');
}

function mirrorLine(m: MirrorView): string {
  const parts = [[m.state, m.mode].filter((x) => x !== undefined).join(', ') || 'present'];
  // A total of 0 is no total (none measured yet, or none reported after the sync): the copied bytes alone then.
  if (m.totalBytes !== undefined && m.totalBytes > 0) {
    parts.push(`${formatBytes(m.copiedBytes)} of ${formatBytes(m.totalBytes)} copied (${percent(m.copiedBytes, m.totalBytes)}%)`);
  } else if (m.copiedBytes !== undefined) {
    parts.push(`${formatBytes(m.copiedBytes)} copied`);
  }
  const limit = known(m.limitBytesPerSec);
  if (limit !== undefined) parts.push(`at most ${formatBytes(limit)}/s${m.guestBusy ? ' (yielding to guest I/O)' : ''}`);
  if (m.stream !== undefined) parts.push(`stream ${m.stream}`);
  return parts.join(', ');
}

function ftLine(f: FtView): string {
  const parts = [f.state ?? 'unknown', f.run !== undefined ? `run ${f.run}` : undefined, f.epochMs !== undefined ? `epochs of ${f.epochMs} ms` : undefined];
  if (f.heldOutputBytes !== undefined) parts.push(`${formatBytes(f.heldOutputBytes)} output held`);
  if (f.lostBecause) parts.push(`lost: ${f.lostBecause}`);
  return parts.filter((x) => x !== undefined).join(', ');
}

function ftEpochLine(f: FtView): string {
  const ms = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : `${v.toFixed(1)} ms`);
  const rate = f.epochsPerSec === null || f.epochsPerSec === undefined ? '-' : `${f.epochsPerSec.toFixed(1)}/s`;
  return [
    `${rate}`,
    `pause last ${ms(f.lastPauseMs)}, p50 ${ms(f.pauseP50Ms)}, p99 ${ms(f.pauseP99Ms)}`,
    `peer committed ${f.peerCommittedEpoch ?? '-'} of ${f.sentEpoch ?? '-'} sent (lag ${f.lagEpochs ?? '-'})`,
    f.earlyEpochs ? `${f.earlyEpochs} ended early` : undefined,
  ]
    .filter((x) => x !== undefined)
    .join(', ');
}

function lastSyncLine(s: NonNullable<MirrorView['lastSync']>): string {
  const parts = [s.mode ?? 'sync', `${formatBytes(s.copiedBytes)} copied`];
  if (s.durationMs !== undefined) parts.push(`in ${Math.round(s.durationMs)} ms`);
  if (s.pauseMs !== undefined) parts.push(`guest paused ${s.pauseMs.toFixed(1)} ms`);
  if (s.at !== undefined) parts.push(`at ${s.at}`);
  return parts.join(', ');
}

function migrationLine(m: MigrationView): string {
  const line = renderProgress(m, 20);
  return m.error !== undefined ? `${line}: ${m.error}` : line;
}

function exitLine(e: ExitView): string {
  const status = e.signal ? `signal ${e.signal}` : e.code != null ? `code ${e.code}` : null;
  const parts = [
    [e.cause ?? 'exited', status ? `(${status})` : null].filter((x) => x !== null).join(' '),
    e.shutdownReason ? `shutdown reason ${e.shutdownReason}` : null,
    e.expected === undefined ? null : e.expected ? 'expected' : 'unexpected',
    e.instance !== undefined ? `instance ${e.instance}` : null,
    e.at ? `at ${e.at}` : null,
  ];
  // QEMU's last words say why an unexpected exit happened; its last line is the one that names it.
  const lastWords = e.stderrTail?.trim().split('\n').pop();
  if (lastWords) parts.push(`stderr: ${lastWords}`);
  return parts.filter((x) => x !== null).join(', ');
}

/** One line after a command that changed a VM: what was asked, and how the pair sees the VM now. */
export function renderChange(headline: string, vm: VmView | null): string {
  return vm ? `${headline} (state ${vm.state}, owner ${vm.owner})` : headline;
}

/**
 * A migration's progress in one line: a bar when the share done is known, then whatever figures the daemon
 * gave. The share comes from transferred/total, or from remaining/total when only that is there.
 */
export function renderProgress(m: MigrationView | null, width = 30): string {
  if (!m) return 'migrating: waiting for the first figures';
  const total = known(m.totalBytes);
  const remaining = known(m.remainingBytes);
  const mbps = known(m.mbps);
  const eta = known(m.etaMs);
  const downtime = known(m.downtimeMs);
  const parts: string[] = [];
  const done = known(m.transferredBytes) ?? (total !== undefined && remaining !== undefined ? Math.max(0, total - remaining) : undefined);
  const pct = percent(done, total);
  if (pct !== null) {
    const filled = Math.round((pct / 100) * width);
    parts.push(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}%`);
  }
  parts.push(m.phase ?? 'migrating');
  if (done !== undefined || total !== undefined) parts.push(total !== undefined ? `${formatBytes(done)} of ${formatBytes(total)}` : `${formatBytes(done)} sent`);
  if (remaining !== undefined) parts.push(`${formatBytes(remaining)} left`);
  if (mbps !== undefined) parts.push(`${mbps.toFixed(mbps < 10 ? 1 : 0)} Mbit/s`);
  if (eta !== undefined) parts.push(`eta ${formatSeconds(eta)}`);
  if (downtime !== undefined) parts.push(`downtime ${Math.round(downtime)} ms`);
  return parts.join('  ');
}

function known(figure: number | null | undefined): number | undefined {
  return figure === null ? undefined : figure;
}

/** A whole percentage from 0 to 100, or null without both figures (or a zero total). */
function percent(part: number | undefined, total: number | undefined): number | null {
  if (part === undefined || total === undefined || total <= 0) return null;
  return Math.min(100, Math.max(0, Math.floor((part / total) * 100)));
}

export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}
