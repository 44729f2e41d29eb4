/**
 * A volume: a VM's disk (qcow2 or raw) in a storage group, with a copy on each host of the pair when the VM
 * is protected. Its state is derived here, purely, from what one host knows: its own file, its disk's
 * health, the VM's QEMU and mirror when it runs here, and the copy records the core keeps (this host's copy
 * of the peer's VMs, the peer's report of its copy of ours). Either host answers for the pair; only the
 * owner knows a resync's progress.
 *
 * | state | meaning |
 * |---|---|
 * | `simplex` | one copy by choice: the VM is not protected |
 * | `in-sync` | both copies hold every write the guest acknowledged |
 * | `syncing` | the peer's copy is being brought up to date (progress and ETA where this host measures them) |
 * | `degraded` | only one copy is current (or this host cannot tell): a failure now would lose redundancy |
 * | `failed` | this host's copy cannot be used: its group is not configured here, its file is missing or unreadable, or the host's disk failed |
 */
import type { VolumeFile } from './storage-group.js';

export type VolumeState = 'simplex' | 'in-sync' | 'syncing' | 'degraded' | 'failed';

/** A resync's figures; null where this host does not know them (the peer's progress, a rate not yet measured). */
export interface SyncProgress {
  copiedBytes: number | null;
  totalBytes: number | null;
  bytesPerSec: number | null;
  etaMs: number | null;
}

export interface VolumeVerdict {
  state: VolumeState;
  /** One sentence: why the volume is in that state. */
  reason: string;
  /** Only while `syncing`. */
  sync: SyncProgress | null;
}

/** The owner's mirror of the VM's disk into the peer's copy, as the VM runner shows it. */
export interface MirrorFacts {
  state: 'syncing' | 'ready' | 'stalled';
  copiedBytes: number;
  totalBytes: number;
  bytesPerSec: number | null;
}

/** Everything one host knows of one volume. */
export interface VolumeFacts {
  self: string;
  peer: string;
  owner: string;
  protection: 'none' | 'ha' | 'ft';
  storageGroup: string;
  /** Whether this host's config has the volume's group. */
  groupKnown: boolean;
  /** This host's file of the volume (null when its group is not configured here: there is no path to look at). */
  file: VolumeFile | null;
  /** The host's disk component (health monitor); null before the first check. */
  diskHealth: 'ok' | 'degraded' | 'failed' | null;
  /** This host's QEMU of the VM, if any: its state and its mirror into the peer's copy. */
  local: { state: string; mirror: MirrorFacts | null } | null;
  peerHeard: boolean;
  /** This host's copy record: current (null: none). Meaningful for the peer's VMs. */
  copyHere: boolean | null;
  /** The peer's last report of its copy of our VM: current (null: no report, or the peer not heard). */
  copyPeer: boolean | null;
}

export function volumeVerdict(f: VolumeFacts): VolumeVerdict {
  const verdict = (state: VolumeState, reason: string, sync: SyncProgress | null = null): VolumeVerdict => ({ state, reason, sync });
  const ownedHere = f.owner === f.self;
  // An unprotected VM of the peer has its only copy there: this host holds nothing of it, by choice.
  if (f.protection === 'none' && !ownedHere) return verdict('simplex', `one copy by choice (protection none), on ${f.owner}`);

  if (!f.groupKnown) return verdict('failed', `storage group '${f.storageGroup}' is not configured on ${f.self}: this host can neither run the VM nor hold its copy`);
  if (f.diskHealth === 'failed') return verdict('failed', `the disk health check of ${f.self} failed: its copy cannot be relied on`);
  if (f.file?.kind === 'unreadable') return verdict('failed', f.file.reason);
  if (f.file?.kind === 'missing' && fileExpected(f)) return verdict('failed', `the volume's file is missing on ${f.self}`);

  if (f.protection === 'none') return verdict('simplex', `one copy by choice (protection none), on ${f.owner}`);

  if (!ownedHere) {
    if (f.copyHere === true) return verdict('in-sync', `${f.self}'s copy holds every write the guest acknowledged`);
    if (f.peerHeard) return verdict('syncing', `${f.self}'s copy is not current yet: ${f.owner} brings it up to date (its progress is on ${f.owner})`, UNKNOWN_PROGRESS);
    return verdict('degraded', `${f.owner}, the owner, is not heard: ${f.self}'s copy is not current`);
  }

  if (f.local) {
    const m = f.local.mirror;
    if (m?.state === 'ready') return verdict('in-sync', `the mirror into ${f.peer}'s copy is in sync: every write is on both hosts`);
    if (m?.state === 'syncing') return verdict('syncing', `resyncing ${f.peer}'s copy`, progressOf(m));
    if (m?.state === 'stalled') return verdict('degraded', `the mirror into ${f.peer}'s copy is stalled: writes wait, or go on alone once ${f.self} may`);
    return verdict('degraded', f.peerHeard ? `the VM runs without a mirror: ${f.peer}'s copy is not kept current` : `the VM runs alone: ${f.peer} is not heard`);
  }
  // Stopped here (or not started yet): what the peer last said of its copy.
  if (f.copyPeer === true) return verdict('in-sync', `the VM is not running here and ${f.peer}'s copy is current`);
  if (!f.peerHeard) return verdict('degraded', `${f.peer} is not heard: only ${f.self}'s copy is known to be current`);
  return verdict('degraded', `${f.peer}'s copy is not current: it is resynced when the VM runs`);
}

const UNKNOWN_PROGRESS: SyncProgress = { copiedBytes: null, totalBytes: null, bytesPerSec: null, etaMs: null };

/**
 * Whether this host must hold the volume's file now: its QEMU has it open, or a copy record says a copy is
 * current (the volume exists, so its file here must). A VM that has never run has no file yet: the first
 * start makes it.
 */
function fileExpected(f: VolumeFacts): boolean {
  if (f.local !== null && (f.local.state !== 'starting' || f.local.mirror !== null)) return true;
  if (f.owner !== f.self) return f.copyHere === true;
  return f.protection !== 'none' && f.copyPeer === true;
}

function progressOf(m: MirrorFacts): SyncProgress {
  // A total of 0 is no total yet (the job has not reported one).
  const total = m.totalBytes > 0 ? m.totalBytes : null;
  return { copiedBytes: m.copiedBytes, totalBytes: total, bytesPerSec: m.bytesPerSec, etaMs: etaMs(m.copiedBytes, total, m.bytesPerSec) };
}

/** Time left at the measured rate; null without a rate or a total. */
export function etaMs(copiedBytes: number, totalBytes: number | null, bytesPerSec: number | null): number | null {
  if (totalBytes === null || bytesPerSec === null || bytesPerSec <= 0) return null;
  return Math.ceil((Math.max(0, totalBytes - copiedBytes) / bytesPerSec) * 1000);
}

// ── the rate of a resync, from successive progress samples ──────────────────────────────────────────────

export interface ProgressSample {
  atMs: number;
  copiedBytes: number;
}

/** The rate is measured over about this long: long enough to smooth the job's bursts, short enough to follow a change of limit. */
export const RATE_WINDOW_MS = 10_000;
/** Samples kept per mirror: the job reports every 500 ms, so the window never needs more. */
const SAMPLES_MAX = 32;

/**
 * The samples to keep after a new one: those within the window, newest last. A count that went back (a new
 * job of the sync started counting from zero) starts the measurement again.
 */
export function addSample(samples: readonly ProgressSample[], next: ProgressSample): ProgressSample[] {
  const last = samples.at(-1);
  if (last && next.copiedBytes < last.copiedBytes) return [next];
  return [...samples, next].filter((s) => next.atMs - s.atMs <= RATE_WINDOW_MS).slice(-SAMPLES_MAX);
}

/** Bytes per second between the oldest and newest sample; null until two samples are at least a second apart. */
export function syncRate(samples: readonly ProgressSample[]): number | null {
  const first = samples[0];
  const last = samples.at(-1);
  if (!first || !last || last.atMs - first.atMs < 1000) return null;
  return Math.round(((last.copiedBytes - first.copiedBytes) * 1000) / (last.atMs - first.atMs));
}
