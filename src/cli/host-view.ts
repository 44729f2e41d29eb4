/**
 * How `lockstep status` and `lockstep host` show a daemon's `GET /v1/status` answer: the pair at a glance
 * (each host as it sees itself, its peer as it last heard it), one host's components and A-Link paths; the
 * pair's health components (`GET /v1/host/health`), and a host's hardware sensors.
 * Pure: the tests feed fixed answers.
 */
import type { AlinkPathStatus } from '../alink/alink.js';
import type { CoreView } from '../daemon/core-driver.js';
import type { SensorReading } from '../health/sensors.js';
import { HEALTH_COMPONENTS } from '../core/types.js';
import type { PairHealth } from '../daemon/sensor-routes.js';
import { keyValues, table } from './output.js';

/** The parts of `GET /v1/status` shown here (docs/api.md): the daemon's own types, as the API sends them. */
export interface HostStatus {
  host: string;
  pid: number;
  startedAt: string;
  incarnation: number;
  pairing: { state: string; lastError: string | null };
  /** The core's view without its VMs (they are `vms`, with each one's local state). */
  core: Omit<CoreView, 'host' | 'vms'> | null;
  alink: Pick<AlinkPathStatus, 'name' | 'up' | 'srttMs' | 'lastError'>[] | null;
  health: Record<string, string> | null;
  vms: { name: string; owner: string; protection: string; state: string }[];
}

/** One line per host: the hosts that answered as they see themselves, a silent one as its peer last heard it. */
export function hostRows(answers: readonly HostStatus[]): string[][] {
  const rows = answers.map((s) => [
    s.host,
    s.core?.state ?? s.pairing.state,
    s.core ? String(s.core.epoch) : '-',
    s.core?.authority ?? '-',
    s.core ? String(s.core.health) : '-',
    flags(s),
    alinkSummary(s.alink),
  ]);
  for (const s of answers) {
    const peer = s.core?.peer;
    if (peer === undefined || answers.some((a) => a.host === peer)) continue;
    rows.push([peer, s.core!.peerHeard ? `${s.core!.peerState ?? '?'} (as ${s.host} hears it)` : `not heard by ${s.host}`, '-', '-', s.core!.peerHealth === null ? '-' : String(s.core!.peerHealth), '', '-']);
  }
  return rows;
}

export function renderHostTable(answers: readonly HostStatus[]): string {
  return table(['HOST', 'STATE', 'EPOCH', 'AUTHORITY', 'HEALTH', 'FLAGS', 'A-LINK'], hostRows(answers));
}

/** `lockstep status`: the hosts, then the VMs as the first host that answered records them. */
export function renderStatus(answers: readonly HostStatus[]): string {
  const first = answers[0];
  const vms = first?.vms ?? [];
  const vmTable = vms.length === 0 ? 'no VMs' : table(['VM', 'OWNER', 'PROTECTION', 'STATE'], vms.map((v) => [v.name, v.owner, v.protection, v.state]));
  const quorum = first?.core?.activeQuorum ? `quorum server: ${first.core.activeQuorum}` : 'quorum server: none active';
  return `${renderHostTable(answers)}\n${quorum}\n\n${vmTable}`;
}

/** `lockstep host show`: one host's own view, its health components and each A-Link path. */
export function renderHostShow(s: HostStatus): string {
  const c = s.core;
  const rows: [string, string][] = [
    ['host', s.host],
    ['state', c?.state ?? s.pairing.state],
    ['lockstepd', `pid ${s.pid}, incarnation ${s.incarnation}, since ${s.startedAt}`],
    ['pairing', s.pairing.state + (s.pairing.lastError ? ` (last error: ${s.pairing.lastError})` : '')],
  ];
  if (c) {
    rows.push(
      ['peer', `${c.peer}: ${c.peerHeard ? `${c.peerState ?? '?'}, health ${c.peerHealth ?? '?'}` : 'not heard'}`],
      ['epoch', `${c.epoch} (authority: ${c.authority})`],
      ['health', `${c.health}${c.declaredDown ? ' — declared down (predictive failure): its VMs move to the peer' : ''}`],
      ['maintenance', c.maintenance ? 'on: its VMs move to the peer' : 'off'],
      ['quorum', c.activeQuorum ?? 'none active'],
      ['A-Link RTT', c.rttMs === null ? '-' : `${c.rttMs.toFixed(2)} ms`],
    );
  }
  for (const p of s.alink ?? []) rows.push([p.name, p.up ? `up${p.srttMs === null ? '' : `, srtt ${p.srttMs.toFixed(2)} ms`}` : `down${p.lastError ? `: ${p.lastError}` : ''}`]);
  for (const [component, state] of Object.entries(s.health ?? {})) rows.push([`  ${component}`, state]);
  const running = s.vms.filter((v) => v.owner === s.host);
  rows.push(['VMs owned', running.length === 0 ? 'none' : running.map((v) => `${v.name} (${v.state})`).join(', ')]);
  return keyValues(rows);
}

/**
 * `lockstep host health`: one row per health component, a column per host, the asked host's first; a note
 * on the peer's column: when it reported it over the A-Link, or why it is not shown.
 */
export function renderPairHealth(p: PairHealth): string {
  const peer = p.peer;
  const theirs = peer.state === 'available' ? peer.components : null;
  const notes: string[] = [];
  if (p.components === null) notes.push(`${p.host} has had no health check yet`);
  if (peer.state === 'unavailable') notes.push(`${peer.host}'s components are not shown: ${peer.reason}`);
  else if (theirs === null) notes.push(`${peer.host} has had no health check yet (it reported at ${peer.takenAt})`);
  else notes.push(`${peer.host}'s as it reported them over the A-Link at ${peer.takenAt}`);
  if (p.components === null && theirs === null) return notes.join('\n');
  const rows = HEALTH_COMPONENTS.map((c) => [c, p.components?.[c] ?? '-', theirs?.[c] ?? '-']);
  return [table(['COMPONENT', p.host, peer.host], rows), ...notes].join('\n');
}

function flags(s: HostStatus): string {
  const f: string[] = [];
  if (s.core?.maintenance) f.push('maintenance');
  if (s.core?.declaredDown) f.push('declared-down');
  const failed = Object.entries(s.health ?? {}).filter(([, v]) => v !== 'ok');
  if (failed.length > 0) f.push(failed.map(([k, v]) => `${k} ${v}`).join(', '));
  return f.join('; ');
}

function alinkSummary(paths: HostStatus['alink']): string {
  if (paths === null || paths.length === 0) return '-';
  return paths.map((p) => `${p.name} ${p.up ? (p.srttMs === null ? 'up' : `${p.srttMs.toFixed(1)} ms`) : 'down'}`).join(', ');
}

/** `GET /v1/host/sensors`'s answer (src/daemon/sensor-routes.ts). */
export type HostSensors = { host: string; note: string | null; sensors: SensorReading[] };

const SENSOR_UNIT = { temperature: '°C', fan: 'RPM', voltage: 'V' } as const;

/** One row per sensor with its limits and state; a host without sensors says why. */
export function renderSensors(s: HostSensors): string {
  if (s.sensors.length === 0) return `${s.host}: no sensors${s.note === null ? '' : ` — ${s.note}`}`;
  const limit = (v: number | null, unit: string): string => (v === null ? '-' : `${v} ${unit}`);
  const rows = s.sensors.map((x) => {
    const u = SENSOR_UNIT[x.kind];
    return [x.label, x.chip, x.id, `${x.value} ${u}`, limit(x.min, u), limit(x.max, u), limit(x.critical, u), x.state];
  });
  const lines = [`sensors of ${s.host}`, table(['SENSOR', 'CHIP', 'ID', 'READING', 'MIN', 'MAX', 'CRITICAL', 'STATE'], rows)];
  if (s.note !== null) lines.push(`not read: ${s.note}`);
  return lines.join('\n');
}
