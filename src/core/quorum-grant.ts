/**
 * The quorum server's decision, pure: grant a pair's next epoch to at most one host at a time.
 *
 * A grant is a lease: the holder renews it; another host can be granted a newer epoch only once the
 * holder's lease has run out on the server's clock (the holder stops using it earlier, see `lease.ts`).
 * The epoch and holder are durable, and a restarted server waits one full lease before granting to
 * anyone but the recorded holder: it cannot know how much of the old lease was left.
 */
import type { HostId } from './types.js';

export interface PairRecord {
  epoch: number;
  holder: HostId | null;
  /** Server clock; volatile (a restart sets it to restart time + lease). */
  leaseUntil: number;
}

export type QuorumRequest = { pair: string; host: HostId; knownEpoch: number };

export type GrantOutcome =
  | { kind: 'granted'; epoch: number; record: PairRecord; persist: boolean }
  | { kind: 'denied'; epoch: number; holder: HostId; record: PairRecord };

export function emptyPairRecord(): PairRecord {
  return { epoch: 0, holder: null, leaseUntil: 0 };
}

/** After a restart: the durable epoch and holder, with a lease that runs a full term from now. */
export function recoveredPairRecord(epoch: number, holder: HostId | null, now: number, leaseMs: number): PairRecord {
  return { epoch, holder, leaseUntil: holder === null ? 0 : now + leaseMs };
}

export function decideGrant(rec: PairRecord, req: QuorumRequest, now: number, leaseMs: number): GrantOutcome {
  if (rec.holder === req.host) {
    // The holder renews. A holder that knows a newer epoch (from pairing, or from the other quorum server
    // of its set) brings this server up to it, so that every server of the set records the same epoch and
    // anyone acquiring through any of them later gets a newer one.
    const epoch = Math.max(rec.epoch, req.knownEpoch);
    return { kind: 'granted', epoch, record: { epoch, holder: req.host, leaseUntil: now + leaseMs }, persist: epoch !== rec.epoch };
  }
  if (rec.holder !== null && now < rec.leaseUntil) {
    return { kind: 'denied', epoch: rec.epoch, holder: rec.holder, record: rec };
  }
  // A new holder gets an epoch newer than any granted, and at least the one it asks for: a host starting a
  // term of its own asks for one past every epoch it shared with its peer, and gets exactly that when nobody
  // held authority since — which is how its peer's copies tell a solo run of the owner apart (host-core.ts).
  const epoch = Math.max(rec.epoch + 1, req.knownEpoch);
  return { kind: 'granted', epoch, record: { epoch, holder: req.host, leaseUntil: now + leaseMs }, persist: true };
}
