/**
 * How fast a resync may copy (HA protection): a resync shares the disk and the A-Link with the guest, so it
 * yields to guest I/O, as DRBD's resync controller does. Two figures: a ceiling for the resync at any time,
 * and a lower one that applies while the guest is doing disk I/O of its own. "Busy" is measured, not
 * guessed: the guest's device counters (`query-blockstats`, which counts what the guest's virtual disk
 * asked, not what our block jobs copy) moved since the last look.
 *
 * Only the live copying is limited. A step that runs with the guest paused (the last incremental pass, the
 * full sync's final settle) copies at full speed: there the guest waits for it.
 */
import type { QmpClient } from '../qemu/qmp.js';
import { LockstepError } from '../util/errors.js';

export interface ResyncRate {
  /** The most bytes per second a resync copies; null: as fast as the disks and the link go. */
  maxBytesPerSec: number | null;
  /** While the guest does disk I/O, at most this many bytes per second; null: the guest's I/O changes nothing. */
  busyBytesPerSec: number | null;
}

export const UNLIMITED_RESYNC: ResyncRate = { maxBytesPerSec: null, busyBytesPerSec: null };

/** The limit for a resync now, in QEMU's terms (bytes per second, 0 for none). Pure. */
export function resyncSpeed(rate: ResyncRate, guestBusy: boolean): number {
  const limits = [rate.maxBytesPerSec, guestBusy ? rate.busyBytesPerSec : null].filter((l): l is number => l !== null);
  return limits.length === 0 ? 0 : Math.min(...limits);
}

/**
 * The bytes the guest's virtual disk `node` has read and written so far, from `query-blockstats`: the
 * counters of the device's BlockBackend, to which our jobs' own I/O is not added. Null when QEMU lists no
 * device on that node (then the guest's load is unknown, and the resync runs at its ceiling).
 */
export async function readGuestIoBytes(qmp: QmpClient, node: string): Promise<number | null> {
  return guestIoBytesOf(await qmp.execute('query-blockstats'), node);
}

/** From a `query-blockstats` answer. Pure. */
export function guestIoBytesOf(reply: unknown, node: string): number | null {
  if (!Array.isArray(reply)) throw malformed('not a list');
  for (const entry of reply) {
    if (typeof entry !== 'object' || entry === null) throw malformed('an entry that is not an object');
    const e = entry as Record<string, unknown>;
    if (e['node-name'] !== node) continue;
    const stats = e['stats'];
    if (typeof stats !== 'object' || stats === null) throw malformed(`no stats for node ${node}`);
    const s = stats as Record<string, unknown>;
    const read = s['rd_bytes'];
    const written = s['wr_bytes'];
    if (typeof read !== 'number' || typeof written !== 'number') throw malformed(`no rd_bytes/wr_bytes for node ${node}`);
    return read + written;
  }
  return null;
}

function malformed(what: string): LockstepError {
  return new LockstepError('QMP_PROTOCOL', `QEMU's answer to query-blockstats does not have the expected shape: ${what}`, { command: 'query-blockstats' });
}
