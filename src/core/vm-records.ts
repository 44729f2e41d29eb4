/**
 * The pair's replicated record of VMs. Two independent orders make merging safe after a partition:
 * - an operator's decisions (`config`) are ordered by a Lamport version, ties broken by host id, so each
 *   side's changes survive unless the same VM was changed on both sides (then one deterministic winner);
 * - ownership (`owner`) is ordered by (epoch, seq) and only a host holding authority writes it, so the
 *   winner of a split always overrides what the loser believed.
 * Merging is commutative, associative and idempotent: duplicated or reordered messages cannot diverge it.
 */
import type { HostId, ProtectionLevel, VmConfig, VmHardware, VmName, VmOwner, VmRecord } from './types.js';

export function configNewer(a: VmConfig, b: VmConfig): boolean {
  return a.version !== b.version ? a.version > b.version : a.by > b.by;
}

export function ownerNewer(a: VmOwner, b: VmOwner): boolean {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch;
  if (a.seq !== b.seq) return a.seq > b.seq;
  return a.host > b.host;
}

export function mergeRecord(a: VmRecord, b: VmRecord): VmRecord {
  const config = configNewer(b.config, a.config) ? b.config : a.config;
  const owner = ownerNewer(b.owner, a.owner) ? b.owner : a.owner;
  return config === a.config && owner === a.owner ? a : { config, owner };
}

/** Merges `theirs` into `ours`; returns `ours` itself when nothing changed (so callers can skip a write). */
export function mergeVms(ours: Readonly<Record<VmName, VmRecord>>, theirs: Readonly<Record<VmName, VmRecord>>): Record<VmName, VmRecord> {
  let merged: Record<VmName, VmRecord> | null = null;
  for (const [name, rec] of Object.entries(theirs)) {
    const mine = ours[name];
    const next = mine ? mergeRecord(mine, rec) : rec;
    if (next !== mine) {
      merged ??= { ...ours };
      merged[name] = next;
    }
  }
  return merged ?? (ours as Record<VmName, VmRecord>);
}

export function newConfig(
  name: VmName,
  fields: { desired: 'running' | 'stopped'; protection: ProtectionLevel; hardware: VmHardware; removed?: boolean },
  clock: number,
  by: HostId,
): VmConfig {
  return { name, desired: fields.desired, protection: fields.protection, hardware: fields.hardware, removed: fields.removed ?? false, version: clock, by };
}

export function sameRecords(a: Readonly<Record<VmName, VmRecord>>, b: Readonly<Record<VmName, VmRecord>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => {
    const x = a[k];
    const y = b[k];
    return (
      x !== undefined &&
      y !== undefined &&
      x.config.version === y.config.version &&
      x.config.by === y.config.by &&
      x.owner.epoch === y.owner.epoch &&
      x.owner.seq === y.owner.seq &&
      x.owner.host === y.owner.host
    );
  });
}
