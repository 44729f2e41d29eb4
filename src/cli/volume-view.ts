/**
 * Volumes and storage groups as `lockstep volume` and `lockstep storage-group` read lockstepd's answers
 * (`GET /v1/volumes`, `/v1/storage-groups`) and show them to a person. As in vm-view.ts, only what is read
 * is typed, anything may be missing, and `--json` passes the API's JSON through untouched. Pure.
 */
import { keyValues, table } from './output.js';
import { formatBytes, formatSeconds } from './vm-view.js';

export interface SyncView {
  copiedBytes?: number | null;
  totalBytes?: number | null;
  bytesPerSec?: number | null;
  etaMs?: number | null;
}

export interface VolumeView {
  name: string;
  vm?: string;
  /** The disk the guest sees it as (vda, vdb, …); absent from a daemon before several disks: vda. */
  disk?: string;
  host?: string;
  owner?: string;
  protection?: string;
  storageGroup?: string;
  format?: string;
  sizeBytes?: number;
  path?: string | null;
  allocatedBytes?: number | null;
  state: string;
  reason?: string;
  sync?: SyncView | null;
}

export interface StorageGroupView {
  name: string;
  path?: string;
  sizeMiB?: number | null;
  capacityBytes?: number | null;
  usedBytes?: number;
  freeBytes?: number | null;
  volumeCount?: number;
  error?: string | null;
  volumes?: VolumeView[];
}

/** One host's `GET /v1/volumes`. */
export interface HostVolumes {
  host: string;
  volumes: readonly VolumeView[];
}

/**
 * One row per volume from one or more hosts' answers: each volume as its owner sees it when the owner
 * answered (only the owner measures a resync's progress), else as the first answer has it.
 */
export function volumeRows(answers: readonly HostVolumes[]): VolumeView[] {
  const names = [...new Set(answers.flatMap((a) => a.volumes.map((v) => v.name)))].sort();
  return names.map((name) => {
    const seen = answers.flatMap((a) => a.volumes.filter((v) => v.name === name).map((v) => ({ host: a.host, v })));
    return (seen.find((s) => s.v.owner === s.host) ?? seen[0]!).v;
  });
}

export function renderVolumeTable(volumes: readonly VolumeView[]): string {
  if (volumes.length === 0) return 'no volumes (a VM has one per disk: `lockstep vm create NAME …`)';
  return table(
    ['volume', 'owner', 'group', 'format', 'size', 'allocated', 'seen from', 'state', 'detail'],
    volumes.map((v) => [
      v.name,
      v.owner ?? '-',
      v.storageGroup ?? '-',
      v.format ?? '-',
      bytes(v.sizeBytes),
      bytes(v.allocatedBytes),
      v.host ?? '-',
      v.state,
      detail(v),
    ]),
  );
}

/** What a row adds to its state: a resync's progress, or why a volume is not redundant. */
function detail(v: VolumeView): string {
  if (v.state === 'syncing') return syncLine(v.sync ?? null, v.owner);
  if (v.state === 'degraded' || v.state === 'failed') return v.reason ?? '-';
  return '-';
}

export function renderVolumeShow(v: VolumeView): string {
  const rows: [string, string][] = [
    ['volume', v.name],
    ['vm', `${v.vm ?? v.name}, its ${v.disk ?? 'vda'}`],
    ['owner', v.owner ?? '-'],
    ['protection', v.protection ?? '-'],
    ['storage group', v.storageGroup ?? '-'],
    ['format', v.format ?? '-'],
    ['size', bytes(v.sizeBytes)],
    ['file', v.path ? `${v.path} on ${v.host ?? '?'}` : `none on ${v.host ?? '?'}`],
    ['allocated', v.allocatedBytes == null ? 'no file yet' : formatBytes(v.allocatedBytes)],
    ['state', v.reason ? `${v.state}: ${v.reason}` : v.state],
  ];
  if (v.state === 'syncing') rows.push(['sync', syncLine(v.sync ?? null, v.owner)]);
  return keyValues(rows);
}

/**
 * A resync in one line: a bar and the share copied when the total is known, the bytes, the measured rate
 * and the time left; where the answering host does not measure them (the peer's resync), where they are.
 */
export function syncLine(s: SyncView | null, owner: string | undefined, width = 20): string {
  const copied = known(s?.copiedBytes);
  const total = known(s?.totalBytes);
  if (copied === undefined && total === undefined) return `progress unknown here${owner ? ` (${owner} has it)` : ''}`;
  const parts: string[] = [];
  if (copied !== undefined && total !== undefined && total > 0) {
    const pct = Math.min(100, Math.max(0, Math.floor((copied / total) * 100)));
    const filled = Math.round((pct / 100) * width);
    parts.push(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}%`);
    parts.push(`${formatBytes(copied)} of ${formatBytes(total)}`);
  } else {
    parts.push(`${formatBytes(copied)} copied`);
  }
  const rate = known(s?.bytesPerSec);
  parts.push(rate === undefined ? 'rate not measured yet' : `${formatBytes(rate)}/s`);
  const eta = known(s?.etaMs);
  if (eta !== undefined) parts.push(`eta ${formatSeconds(eta)}`);
  return parts.join('  ');
}

export function renderStorageGroupTable(host: string, groups: readonly StorageGroupView[]): string {
  if (groups.length === 0) return `${host} has no storage groups`;
  return table(
    ['group', 'host', 'path', 'capacity', 'used', 'free', 'volumes'],
    groups.map((g) => [g.name, host, g.path ?? '-', capacity(g), bytes(g.usedBytes), g.error ? `? (${g.error})` : bytes(g.freeBytes), String(g.volumeCount ?? '-')]),
  );
}

export function renderStorageGroupShow(host: string, g: StorageGroupView): string {
  const rows: [string, string][] = [
    ['group', g.name],
    ['host', host],
    ['path', g.path ?? '-'],
    ['capacity', capacity(g)],
    ['used', bytes(g.usedBytes)],
    ['free', bytes(g.freeBytes)],
    ['volumes', String(g.volumeCount ?? '-')],
  ];
  if (g.error) rows.push(['error', g.error]);
  const volumes = g.volumes ?? [];
  return volumes.length === 0 ? keyValues(rows) : `${keyValues(rows)}\n\n${renderVolumeTable(volumes)}`;
}

function capacity(g: StorageGroupView): string {
  const c = bytes(g.capacityBytes);
  return g.sizeMiB == null ? `${c} (file system)` : `${c} (cap)`;
}

function bytes(n: number | null | undefined): string {
  return n == null ? '-' : formatBytes(n);
}

function known(figure: number | null | undefined): number | undefined {
  return figure === null ? undefined : figure;
}
