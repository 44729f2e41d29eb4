/**
 * The FT backup's held disk writes, by epoch: pure bookkeeping for `epoch-disk.ts`, no I/O.
 *
 * One epoch is open (it receives the writes arriving now); `seal(n)` closes epoch n at the primary's epoch
 * end and opens n + 1; sealed epochs wait, oldest first, until their checkpoint commits and their writes are
 * applied to the copy (`release`). Writes are kept in the order they arrived, so applying them (and
 * overlaying them on a read) in that order gives what the guest's disk held.
 */
import { assert } from '../util/assert.js';

export interface HeldWrite {
  offset: number;
  length: number;
  /** The bytes; null for a zero write (NBD_CMD_WRITE_ZEROES), which holds no payload. */
  data: Buffer | null;
  /** The zero write asked for allocated zeroes (NBD_CMD_FLAG_NO_HOLE); passed on when applied. */
  noHole: boolean;
}

export interface HeldEpoch {
  epoch: number;
  writes: HeldWrite[];
  /** What this epoch holds in memory: payloads plus `HELD_WRITE_OVERHEAD_BYTES` per write. */
  heldBytes: number;
  /** Bytes of the disk the epoch's writes cover (zero writes included), for commit figures. */
  writtenBytes: number;
}

/** A held write's own cost beyond its payload (the object, its place in the list): a zero write is not free. */
export const HELD_WRITE_OVERHEAD_BYTES = 64;

/** The writes a read must overlay, fixed when the read starts: later writes and releases do not change it. */
export type ReadView = readonly (readonly [writes: readonly HeldWrite[], count: number])[];

export function heldCost(w: HeldWrite): number {
  return (w.data?.length ?? 0) + HELD_WRITE_OVERHEAD_BYTES;
}

export class EpochBuffer {
  private open: HeldEpoch;
  private readonly sealed: HeldEpoch[] = [];
  private held = 0;

  constructor(firstEpoch: number) {
    assert(Number.isSafeInteger(firstEpoch) && firstEpoch >= 1, `first epoch ${firstEpoch}`);
    this.open = emptyEpoch(firstEpoch);
  }

  get openEpoch(): number {
    return this.open.epoch;
  }

  get heldBytes(): number {
    return this.held;
  }

  get sealedEpochs(): number[] {
    return this.sealed.map((e) => e.epoch);
  }

  hold(w: HeldWrite): void {
    assert(w.data === null || w.data.length === w.length, `a held write of ${w.length} bytes with ${w.data?.length} bytes of data`);
    this.open.writes.push(w);
    const cost = heldCost(w);
    this.open.heldBytes += cost;
    this.open.writtenBytes += w.length;
    this.held += cost;
  }

  /** Closes the open epoch, which must be `epoch`: the engine and the disk count epochs alike or it is a bug. */
  seal(epoch: number): HeldEpoch {
    assert(epoch === this.open.epoch, `seal(${epoch}) while epoch ${this.open.epoch} is open`);
    const sealed = this.open;
    this.sealed.push(sealed);
    this.open = emptyEpoch(epoch + 1);
    return sealed;
  }

  oldestSealed(): HeldEpoch | undefined {
    return this.sealed[0];
  }

  /** Forgets the oldest sealed epoch once its writes are on the copy; it must be `epoch`. */
  release(epoch: number): void {
    const oldest = this.sealed[0];
    assert(oldest !== undefined && oldest.epoch === epoch, `release(${epoch}) while the oldest sealed epoch is ${oldest?.epoch}`);
    this.sealed.shift();
    this.held -= oldest.heldBytes;
  }

  /** Every held write, sealed epochs first, as a read starting now must see them. */
  view(): ReadView {
    return [...this.sealed, this.open].filter((e) => e.writes.length > 0).map((e) => [e.writes, e.writes.length] as const);
  }

  /** Drops every epoch not yet released (sealed and open); says which and how much. */
  discardAll(): { epochs: number[]; heldBytes: number; writes: number } {
    const all = [...this.sealed, this.open];
    const result = { epochs: all.filter((e) => e.writes.length > 0).map((e) => e.epoch), heldBytes: this.held, writes: all.reduce((n, e) => n + e.writes.length, 0) };
    this.sealed.length = 0;
    this.open = emptyEpoch(this.open.epoch);
    this.held = 0;
    return result;
  }
}

/** Puts the view's writes over `target`, which holds the committed bytes of [offset, offset + target.length). */
export function overlay(view: ReadView, offset: number, target: Buffer): void {
  const end = offset + target.length;
  for (const [writes, count] of view) {
    for (let i = 0; i < count; i++) {
      const w = writes[i]!;
      const from = Math.max(offset, w.offset);
      const to = Math.min(end, w.offset + w.length);
      if (from >= to) continue;
      if (w.data === null) target.fill(0, from - offset, to - offset);
      else w.data.copy(target, from - offset, from - w.offset, to - w.offset);
    }
  }
}

function emptyEpoch(epoch: number): HeldEpoch {
  return { epoch, writes: [], heldBytes: 0, writtenBytes: 0 };
}
