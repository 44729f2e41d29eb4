/**
 * The decisions of FT output commit, apart from the sockets (`output-commit.ts` does the I/O): which epoch a
 * frame from the guest belongs to, when it may leave, and what happens when too much is held. Pure: time
 * comes in as an argument, frames go out as return values.
 *
 * The rule: a frame is tagged with the epoch that is open when the gate reads it; `seal()` closes that epoch
 * (the FT engine calls it while the guest is paused at the epoch's end) and opens the next; `release(e)`
 * (the peer acknowledged checkpoint e) lets out every frame of epochs ≤ e, in the order they were read.
 * A frame the guest sent before the pause but the gate reads after `seal()` is tagged with the next epoch:
 * it leaves later than it could have, never earlier than its checkpoint is safe on the peer.
 *
 * Unprotected (the peer is lost, or the VM leaves FT): frames pass at once; what was held goes first, so the
 * order on the wire is always the order the guest sent.
 */
import { assert } from '../util/assert.js';

export interface OutputQueueLimits {
  /** Held bytes above which the gate signals once (`crossedSoftLimit`): the engine should end the epoch early. */
  heldBytesSoftMax: number;
  /** Held bytes beyond which new frames are dropped: memory is bounded even if the engine never releases. */
  heldBytesMax: number;
  /** Held frames beyond which new frames are dropped (many tiny frames cost more than their bytes). */
  heldFramesMax: number;
}

/**
 * Defaults: a 20 ms epoch of a guest sending at 125 MB/s holds ~2.5 MB, so 4 MiB ends an epoch early only
 * when the guest outruns that; 64 MiB is where holding more would cost the host more than losing packets
 * (TCP resends them) costs the guest.
 */
export const DEFAULT_OUTPUT_LIMITS: OutputQueueLimits = {
  heldBytesSoftMax: 4 * 1024 * 1024,
  heldBytesMax: 64 * 1024 * 1024,
  heldFramesMax: 262_144,
};

/** What became of a frame from the guest. */
export type PushOutcome =
  /** Unprotected: send it now. */
  | { kind: 'pass' }
  /** Held for its epoch; `crossedSoftLimit` is true for the one frame that took the held bytes past the soft limit. */
  | { kind: 'held'; epoch: number; crossedSoftLimit: boolean }
  /** Over the hard limit: lost, as a congested network would lose it. Never sent early. */
  | { kind: 'dropped' };

export interface OutputStats {
  /** The epoch frames are tagged with now. */
  epoch: number;
  /** The last epoch `seal()` closed (epoch - 1), or firstEpoch - 1 before any seal. */
  sealed: number;
  /** The highest epoch released so far. */
  released: number;
  protected: boolean;
  heldFrames: number;
  heldBytes: number;
  /** Frames read from the guest since the gate started (held, passed or dropped). */
  framesIn: number;
  bytesIn: number;
  /** Frames let out (released or passed). */
  framesOut: number;
  bytesOut: number;
  droppedFrames: number;
  /** How many times the held bytes went past the soft limit. */
  softLimitCrossings: number;
  /** Longest a released frame was held, from being read to being released. */
  holdMsMax: number;
  /** Total hold time of released frames (mean = holdMsTotal / framesReleased). */
  holdMsTotal: number;
  framesReleased: number;
}

interface Held {
  record: Buffer;
  epoch: number;
  readAtMs: number;
}

/** Compact the held array once this many released entries sit before its head. */
const COMPACT_AFTER = 1024;

export class OutputQueue {
  /** Entries before `head` were released and cleared (so their buffers can be collected). */
  private held: (Held | undefined)[] = [];
  /** Index of the oldest frame still held. */
  private head = 0;
  private epoch: number;
  private releasedEpoch: number;
  private isProtected: boolean;
  private heldBytes = 0;
  private overSoftLimit = false;
  private readonly counters = {
    framesIn: 0,
    bytesIn: 0,
    framesOut: 0,
    bytesOut: 0,
    droppedFrames: 0,
    softLimitCrossings: 0,
    holdMsMax: 0,
    holdMsTotal: 0,
    framesReleased: 0,
  };

  constructor(
    private readonly limits: OutputQueueLimits = DEFAULT_OUTPUT_LIMITS,
    opts: { firstEpoch?: number; protected?: boolean } = {},
  ) {
    assert(limits.heldBytesSoftMax <= limits.heldBytesMax, 'the soft limit on held bytes is not above the hard one');
    this.epoch = opts.firstEpoch ?? 1;
    this.releasedEpoch = this.epoch - 1;
    this.isProtected = opts.protected ?? true;
  }

  /** A whole record (header + frame) read from the guest at `nowMs`. A held record is copied: the caller's
   * buffer may be a slice of a larger chunk, which must not stay alive for as long as the frame is held. */
  push(record: Buffer, nowMs: number): PushOutcome {
    this.counters.framesIn++;
    this.counters.bytesIn += record.length;
    if (!this.isProtected) {
      this.counted(record);
      return { kind: 'pass' };
    }
    const heldFrames = this.held.length - this.head;
    if (this.heldBytes + record.length > this.limits.heldBytesMax || heldFrames + 1 > this.limits.heldFramesMax) {
      this.counters.droppedFrames++;
      return { kind: 'dropped' };
    }
    this.held.push({ record: Buffer.from(record), epoch: this.epoch, readAtMs: nowMs });
    this.heldBytes += record.length;
    const crossedSoftLimit = !this.overSoftLimit && this.heldBytes > this.limits.heldBytesSoftMax;
    if (crossedSoftLimit) {
      this.overSoftLimit = true;
      this.counters.softLimitCrossings++;
    }
    return { kind: 'held', epoch: this.epoch, crossedSoftLimit };
  }

  /** Closes the open epoch and returns its number; frames read from now on belong to the next one. */
  seal(): number {
    return this.epoch++;
  }

  /**
   * The peer has checkpoint `epoch`: returns the frames of epochs ≤ `epoch`, oldest first, to send now.
   * Releasing an epoch not yet sealed is a bug (its frames could still grow); an epoch at or below one
   * already released releases nothing (a late or repeated ack).
   */
  release(epoch: number, nowMs: number): Buffer[] {
    assert(epoch < this.epoch, `release of epoch ${epoch}, which is not sealed (open epoch ${this.epoch})`);
    if (epoch <= this.releasedEpoch) return [];
    this.releasedEpoch = epoch;
    return this.takeWhile((h) => h.epoch <= epoch, nowMs);
  }

  /** Unprotected from now on: returns every held frame (to send first), and later frames pass at once. */
  unprotect(nowMs: number): Buffer[] {
    this.isProtected = false;
    // Every sealed epoch's frames go out now: they count as released, so that a later protection run can
    // start from the open epoch with nothing sealed and unreleased.
    this.releasedEpoch = this.epoch - 1;
    return this.takeWhile(() => true, nowMs);
  }

  /** Protected again: frames read from now on are held for the open epoch. */
  protect(): void {
    this.isProtected = true;
  }

  /** The gate closed: every held frame is dropped, never sent (the checkpoints they waited for may never
   * reach the peer). Returns how many. */
  discard(): number {
    const n = this.held.length - this.head;
    this.counters.droppedFrames += n;
    this.held = [];
    this.head = 0;
    this.heldBytes = 0;
    this.overSoftLimit = false;
    return n;
  }

  stats(): OutputStats {
    return {
      epoch: this.epoch,
      sealed: this.epoch - 1,
      released: this.releasedEpoch,
      protected: this.isProtected,
      heldFrames: this.held.length - this.head,
      heldBytes: this.heldBytes,
      ...this.counters,
    };
  }

  private takeWhile(pred: (h: Held) => boolean, nowMs: number): Buffer[] {
    const out: Buffer[] = [];
    while (this.head < this.held.length && pred(this.held[this.head]!)) {
      const h = this.held[this.head]!;
      this.held[this.head++] = undefined;
      this.heldBytes -= h.record.length;
      const holdMs = nowMs - h.readAtMs;
      this.counters.holdMsMax = Math.max(this.counters.holdMsMax, holdMs);
      this.counters.holdMsTotal += holdMs;
      this.counters.framesReleased++;
      this.counted(h.record);
      out.push(h.record);
    }
    if (this.head === this.held.length) {
      this.held = [];
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.held.length) {
      this.held = this.held.slice(this.head);
      this.head = 0;
    }
    // Re-armed below the soft limit, so the next time the guest outruns an epoch is signalled too.
    if (this.heldBytes <= this.limits.heldBytesSoftMax) this.overSoftLimit = false;
    return out;
  }

  private counted(record: Buffer): void {
    this.counters.framesOut++;
    this.counters.bytesOut += record.length;
  }
}
