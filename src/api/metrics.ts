/**
 * Prometheus metrics of one host, in the text exposition format 0.0.4: what the management server answers
 * at `/metrics`. `metricsView` gathers what the daemon knows into plain data; `renderMetrics` turns that into
 * the text, purely, so its exact output is tested on a fixed view.
 *
 * States are labelled gauges, one series per possible state with the value 1 for the current one and 0 for
 * the others, so that a query can alert on `lockstep_vm_state{state="failed"} == 1` and a graph shows when
 * a state began. Counters count since this lockstepd started (`lockstep_daemon_start_time_seconds` tells
 * Prometheus of a reset); each only grows within a process.
 */
import { HEALTH_COMPONENTS, HOST_STATES, VM_STATES, type ComponentState, type HealthComponent } from '../core/types.js';
import type { AlertCounts, CoreView } from '../daemon/core-driver.js';
import { vmStatuses, type ApiContext } from '../daemon/api.js';
import { PROTECTION_LEVELS } from '../daemon/vm-definition.js';

/** The media type of the text format, as Prometheus asks for it. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const COMPONENT_STATES: readonly ComponentState[] = ['ok', 'degraded', 'failed'];

/** Everything `/metrics` shows, as data. */
export interface MetricsView {
  host: string;
  startedAtMs: number;
  paired: boolean;
  /** The core's view; null before pairing. */
  core: Omit<CoreView, 'vms'> | null;
  /** This host's health components; null before the first check. */
  health: Partial<Record<HealthComponent, ComponentState>> | null;
  alinkPaths: { name: string; up: boolean; srttMs: number | null }[];
  vms: { name: string; owner: string; protection: string; desired: string; state: string; mirror: { copiedBytes: number; totalBytes: number } | null }[];
  alerts: AlertCounts;
  /** Notification deliveries waiting; null when notifications are not configured. */
  notifyPending: number | null;
  streamClients: number;
  /** The resource history's newest round (src/history/): null where not measured yet. */
  resources: { cpuBusyRatio: number | null; memoryUsedBytes: number | null; memoryTotalBytes: number | null };
}

/** The running daemon's metrics view. */
export function metricsView(ctx: ApiContext, streamClients: number): MetricsView {
  const driver = ctx.driver();
  const core = driver?.view() ?? null;
  const paths = (ctx.alink() as { name: string; up: boolean; srttMs: number | null }[] | null) ?? [];
  return {
    host: ctx.host,
    startedAtMs: Date.parse(ctx.startedAt),
    paired: ctx.pairing().state === 'paired',
    core: core === null ? null : (({ vms: _vms, ...rest }) => rest)(core),
    health: ctx.health() as MetricsView['health'],
    alinkPaths: paths.map((p) => ({ name: p.name, up: p.up, srttMs: p.srttMs })),
    vms: vmStatuses(ctx, core).map((v) => ({
      name: v.name,
      owner: v.owner,
      protection: v.protection,
      desired: v.desired,
      state: v.state,
      mirror: v.local?.mirror ? { copiedBytes: v.local.mirror.copiedBytes, totalBytes: v.local.mirror.totalBytes } : null,
    })),
    alerts: driver?.alertCounts() ?? { byCode: [], byVm: [] },
    notifyPending: ctx.notifyPending(),
    streamClients,
    resources: (() => {
      const memory = ctx.history.hostLatest('memory');
      return { cpuBusyRatio: ctx.history.hostLatest('cpu').value, memoryUsedBytes: memory.value, memoryTotalBytes: memory.limit };
    })(),
  };
}

type Labels = readonly (readonly [string, string])[];

interface Family {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  samples: { labels: Labels; value: number }[];
}

/** The VM alert codes counted as their own metrics (the rest are in `lockstep_alerts_total`). */
const VM_COUNTERS = [
  { name: 'lockstep_vm_failovers_total', code: 'FAILOVER', help: 'Times this host took the VM over from its failed peer.' },
  { name: 'lockstep_vm_migrations_total', code: 'VM_MIGRATED', help: 'Live migrations of the VM from this host to the peer that completed.' },
  { name: 'lockstep_vm_migration_failures_total', code: 'MIGRATION_FAILED', help: 'Live migrations of the VM, out of or into this host, that failed.' },
  { name: 'lockstep_vm_restarts_total', code: 'VM_RESTARTED', help: 'Times the VM failed on this host and was restarted in place.' },
] as const;

/** The text exposition (format 0.0.4) of `v`: every family with its HELP and TYPE, in a fixed order. */
export function renderMetrics(v: MetricsView): string {
  const host = ['host', v.host] as const;
  const families: Family[] = [];
  const family = (name: string, type: Family['type'], help: string, samples: Family['samples']): void => void families.push({ name, type, help, samples });
  const flag = (b: boolean): number => (b ? 1 : 0);

  family('lockstep_daemon_start_time_seconds', 'gauge', 'When this lockstepd started, in seconds since the epoch: its counters count from then.', [{ labels: [host], value: v.startedAtMs / 1000 }]);
  family('lockstep_host_paired', 'gauge', 'Whether this host has paired with its peer (1) or is still pairing (0).', [{ labels: [host], value: flag(v.paired) }]);
  const c = v.core;
  if (c !== null) {
    family('lockstep_host_state', 'gauge', "The host's state in the core's state table: 1 for the current state.", Object.keys(HOST_STATES).map((s) => ({ labels: [host, ['state', s]], value: flag(c.state === s) })));
    family('lockstep_host_epoch', 'gauge', "The pair's epoch as this host holds it.", [{ labels: [host], value: c.epoch }]);
    family('lockstep_host_health_score', 'gauge', "This host's health score, from its components' states.", [{ labels: [host], value: c.health }]);
    family('lockstep_host_maintenance', 'gauge', 'Whether the host is in maintenance mode.', [{ labels: [host], value: flag(c.maintenance) }]);
    family('lockstep_host_declared_down', 'gauge', 'Whether the host was declared down (MTBF below the threshold) and waits for repair.', [{ labels: [host], value: flag(c.declaredDown) }]);
    family('lockstep_peer_heard', 'gauge', "Whether the peer's heartbeats are heard over the A-Link.", [{ labels: [host, ['peer', c.peer]], value: flag(c.peerHeard) }]);
    family('lockstep_peer_health_score', 'gauge', "The peer's health score, as its last heartbeat said (absent while it is not heard).", c.peerHealth === null ? [] : [{ labels: [host, ['peer', c.peer]], value: c.peerHealth }]);
    family('lockstep_alink_rtt_seconds', 'gauge', "The A-Link's round-trip time the core uses (SplitSite), absent until measured.", c.rttMs === null ? [] : [{ labels: [host], value: c.rttMs / 1000 }]);
  }
  const health = v.health;
  family(
    'lockstep_health_component',
    'gauge',
    "This host's health components: 1 for each component's current state.",
    health === null ? [] : HEALTH_COMPONENTS.filter((k) => health[k] !== undefined).flatMap((k) => COMPONENT_STATES.map((s) => ({ labels: [host, ['component', k], ['state', s]] as Labels, value: flag(health[k] === s) }))),
  );
  family('lockstep_alink_path_up', 'gauge', 'Whether each A-Link path is connected.', v.alinkPaths.map((p) => ({ labels: [host, ['path', p.name]], value: flag(p.up) })));
  family('lockstep_alink_path_rtt_seconds', 'gauge', "Each connected A-Link path's smoothed round-trip time.", v.alinkPaths.filter((p) => p.srttMs !== null).map((p) => ({ labels: [host, ['path', p.name]], value: p.srttMs! / 1000 })));
  const r = v.resources;
  const measured = (value: number | null): Family['samples'] => (value === null ? [] : [{ labels: [host], value }]);
  family('lockstep_host_cpu_busy_ratio', 'gauge', "The share of this host's CPU time, all cores, that was busy between the resource history's last two rounds (5 s apart): 0 to 1.", measured(r.cpuBusyRatio));
  family('lockstep_host_memory_used_bytes', 'gauge', "This host's memory in use: its total less what the kernel counts available (MemAvailable).", measured(r.memoryUsedBytes));
  family('lockstep_host_memory_total_bytes', 'gauge', "This host's memory (MemTotal).", measured(r.memoryTotalBytes));

  const vmLabel = (name: string): readonly [string, string] => ['vm', name];
  family('lockstep_vm_state', 'gauge', "Each VM's state in the core's state table: 1 for the current state.", v.vms.flatMap((vm) => Object.keys(VM_STATES).map((s) => ({ labels: [host, vmLabel(vm.name), ['state', s]] as Labels, value: flag(vm.state === s) }))));
  family('lockstep_vm_protection', 'gauge', "Each VM's protection level: 1 for the level it has.", v.vms.flatMap((vm) => PROTECTION_LEVELS.map((p) => ({ labels: [host, vmLabel(vm.name), ['level', p]] as Labels, value: flag(vm.protection === p) }))));
  family('lockstep_vm_desired_running', 'gauge', 'Whether the operator wants the VM running (1) or stopped (0).', v.vms.map((vm) => ({ labels: [host, vmLabel(vm.name)], value: flag(vm.desired === 'running') })));
  family('lockstep_vm_owner', 'gauge', 'The host that owns (runs) each VM, as a label; the value is always 1.', v.vms.map((vm) => ({ labels: [host, vmLabel(vm.name), ['owner', vm.owner]], value: 1 })));
  const mirrored = v.vms.filter((vm) => vm.mirror !== null);
  family('lockstep_vm_sync_copied_bytes', 'gauge', "Bytes of the VM's disk its mirror on this host has copied into the peer's copy.", mirrored.map((vm) => ({ labels: [host, vmLabel(vm.name)], value: vm.mirror!.copiedBytes })));
  family('lockstep_vm_sync_total_bytes', 'gauge', "Bytes the VM's mirror on this host has to copy in all.", mirrored.map((vm) => ({ labels: [host, vmLabel(vm.name)], value: vm.mirror!.totalBytes })));
  // Every VM defined has its counters from 0, so that rate() works from the first event; a VM that is gone
  // keeps its count while this process lives.
  const counted = [...new Set([...v.vms.map((vm) => vm.name), ...v.alerts.byVm.map((a) => a.vm)])].sort();
  for (const k of VM_COUNTERS) {
    family(k.name, 'counter', k.help, counted.map((name) => ({ labels: [host, vmLabel(name)], value: v.alerts.byVm.find((a) => a.vm === name && a.code === k.code)?.count ?? 0 })));
  }
  family('lockstep_alerts_total', 'counter', 'Alerts the core raised on this host, by code and severity.', v.alerts.byCode.map((a) => ({ labels: [host, ['code', a.code], ['severity', a.severity]], value: a.count })));
  if (v.notifyPending !== null) family('lockstep_notify_outbox_pending', 'gauge', 'Notification deliveries waiting to go out (e-Alerts, traps, Call Home, webhooks).', [{ labels: [host], value: v.notifyPending }]);
  family('lockstep_event_stream_clients', 'gauge', 'Clients connected to the live event stream.', [{ labels: [host], value: v.streamClients }]);

  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) out.push(`${f.name}{${s.labels.map(([k, val]) => `${k}="${escapeLabel(val)}"`).join(',')}} ${formatValue(s.value)}`);
  }
  return `${out.join('\n')}\n`;
}

/** HELP text: backslash and newline escaped (format 0.0.4). */
function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A label value: backslash, double quote and newline escaped (format 0.0.4). */
export function escapeLabel(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Number.POSITIVE_INFINITY) return '+Inf';
  if (n === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(n);
}
