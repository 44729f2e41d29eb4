/**
 * Checkpoints over a stream, whatever carries it (the A-Link's TLS streams later; a unix socket in tests):
 * the primary's `CheckpointSender` writes each checkpoint and waits for the backup's ack; the backup's
 * `receiveCheckpoints` reads, stages, commits into its `CheckpointStore` and acks. Wire format:
 * `checkpoint-wire.ts`.
 *
 * On bad input (the decoder's or the store's refusal) the receiver answers REFUSED with the error's code and
 * message and ends the stream: past a framing error nothing in it can be trusted, and the store still holds
 * the last committed epoch. The sender then fails every pending send with `CHECKPOINT_REFUSED`; a new stream
 * starts with a full image (`CheckpointEngine.requestFull`) unless the backup's committed epoch is known to
 * be the one before.
 */
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { BugError, assert } from '../util/assert.js';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { sleep } from '../util/proc.js';
import type { Checkpoint } from './checkpoint.js';
import { CheckpointDecoder, ReplyDecoder, checkpointRecords, encodeAck, encodeControl, encodeRefusal, type StagedCheckpoint } from './checkpoint-wire.js';
import type { CheckpointStore, CommitResult } from './checkpoint-store.js';

export interface SendResult {
  epoch: number;
  wireBytes: number;
  /** From the first write to the last one handed to the stream. */
  writeMs: number;
  /** From the first write to the ack. */
  ackMs: number;
}

/** Sends in flight at once: the checkpoint being acked and the next one (the tracker's two buffers). */
const IN_FLIGHT_MAX = 2;

export class CheckpointSender {
  private readonly replies = new ReplyDecoder();
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: LockstepError) => void }>();
  /** The disk seal waiting for SEALED: one at a time (it is asked inside the primary's pause). */
  private sealing: { epoch: number; resolve: () => void; reject: (e: LockstepError) => void } | undefined;
  /** The handover waiting for HANDEDOVER: once per stream. */
  private handingOver: { epoch: number; resolve: () => void; reject: (e: LockstepError) => void } | undefined;
  private failed: LockstepError | undefined;
  /** Writes go out one checkpoint after the other. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly stream: Duplex,
    private readonly opts: {
      vm: string;
      ackTimeoutMs: number;
      sealTimeoutMs?: number;
      onPressure?: (epoch: number) => void;
      /** A full image is written no faster than this (null: as fast as the stream takes it); see `writeAll`. */
      fullBytesPerSec?: number | null;
    },
  ) {
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (e) => this.fail(new LockstepError('CHECKPOINT_LINK', `checkpoint stream of '${opts.vm}' failed: ${e.message}`, { vm: opts.vm }, { cause: e })));
    stream.on('close', () => this.fail(new LockstepError('CHECKPOINT_LINK', `checkpoint stream of '${opts.vm}' closed`, { vm: opts.vm })));
  }

  /**
   * Writes `cp` and resolves once the backup has committed it. Releases the checkpoint's page data once
   * written. Throws `CHECKPOINT_REFUSED` (the backup's code and message in fields), `CHECKPOINT_LINK`
   * (stream closed or failed, no ack within `ackTimeoutMs`), `CHECKPOINT_WIRE` (the backup's answer is not
   * the wire format).
   */
  async send(cp: Checkpoint): Promise<SendResult> {
    assert(cp.vm === this.opts.vm, `a checkpoint of '${cp.vm}' sent on the stream of '${this.opts.vm}'`);
    assert(!this.waiting.has(cp.epoch), `epoch ${cp.epoch} sent twice`);
    assert(this.waiting.size < IN_FLIGHT_MAX, `more than ${IN_FLIGHT_MAX} checkpoints in flight`);
    if (this.failed) {
      cp.release();
      throw this.failed;
    }
    const acked = new Promise<void>((resolve, reject) => this.waiting.set(cp.epoch, { resolve, reject }));
    acked.catch(() => undefined);
    const t0 = performance.now();
    let wireBytes = 0;
    const write = this.writing.then(async () => {
      try {
        await this.writeAll(checkpointRecords(cp), (n) => (wireBytes += n), cp.full ? (this.opts.fullBytesPerSec ?? null) : null);
      } finally {
        cp.release();
      }
    });
    this.writing = write.catch(() => undefined);
    await write;
    const writeMs = performance.now() - t0;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LockstepError('CHECKPOINT_LINK', `the backup did not ack epoch ${cp.epoch} of '${cp.vm}' within ${this.opts.ackTimeoutMs} ms`, { vm: cp.vm, epoch: cp.epoch, ackTimeoutMs: this.opts.ackTimeoutMs })),
        this.opts.ackTimeoutMs,
      );
    });
    try {
      await Promise.race([acked, timeout]);
    } finally {
      clearTimeout(timer);
      this.waiting.delete(cp.epoch);
    }
    return { epoch: cp.epoch, wireBytes, writeMs, ackMs: performance.now() - t0 };
  }

  /**
   * Asks the backup to seal epoch `epoch` of the VM's disk and resolves once it did (SEALED). Called with the
   * guest paused, between checkpoints on the stream (its record cannot go inside one). Throws what `send`
   * throws; no answer within `sealTimeoutMs` (default `ackTimeoutMs`) is `CHECKPOINT_LINK`.
   */
  async seal(epoch: number): Promise<void> {
    assert(this.sealing === undefined, `seal(${epoch}) while the seal of ${this.sealing?.epoch} waits`);
    await this.request('sealing', 'seal', epoch, this.opts.sealTimeoutMs ?? this.opts.ackTimeoutMs, `seal epoch ${epoch} of '${this.opts.vm}'`);
  }

  /**
   * Hands the run over after checkpoint `epoch` (the last acked; nothing may be in flight): resolves once the
   * backup answered HANDEDOVER — its copy then holds every write and takes later ones through. Throws as
   * `seal()` does; no answer within `ackTimeoutMs` is `CHECKPOINT_LINK` (applying held writes takes longer
   * than a seal). The stream carries nothing after it.
   */
  async handOver(epoch: number): Promise<void> {
    assert(this.handingOver === undefined && this.waiting.size === 0 && this.sealing === undefined, `handOver(${epoch}) with a handover, a send or a seal pending`);
    await this.request('handingOver', 'handover', epoch, this.opts.ackTimeoutMs, `take the handover of '${this.opts.vm}' after epoch ${epoch}`);
  }

  /** Writes a control record and waits for its answer (`onData` resolves the slot), within `timeoutMs`. */
  private async request(slot: 'sealing' | 'handingOver', type: 'seal' | 'handover', epoch: number, timeoutMs: number, what: string): Promise<void> {
    if (this.failed) throw this.failed;
    const answered = new Promise<void>((resolve, reject) => (this[slot] = { epoch, resolve, reject }));
    answered.catch(() => undefined);
    const write = this.writing.then(() => this.writeAll([encodeControl(type, this.opts.vm, epoch)], () => undefined));
    this.writing = write.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new LockstepError('CHECKPOINT_LINK', `the backup did not ${what} within ${timeoutMs} ms`, { vm: this.opts.vm, epoch, timeoutMs })), timeoutMs);
    });
    try {
      await Promise.race([write.then(() => answered), timeout]);
    } finally {
      clearTimeout(timer);
      this[slot] = undefined;
    }
  }

  /** Ends the stream; pending sends fail with `CHECKPOINT_LINK`. */
  close(): void {
    this.stream.destroy();
  }

  /** Writes in order, waiting for 'drain' when the stream's buffer is full; resolves once the last buffer
   * was handed on (to the kernel or the TLS layer), so the views it holds may change then. */
  /**
   * `bytesPerSec` paces the writes (a full image): unpaced, a RAM-sized image goes through both daemons'
   * TLS and the backup's store as fast as two loaded cores allow, and their A-Link heartbeats wait behind
   * it (seen in the lab: a 128 MiB image took 7 s, and the pair split before its ack). Paced, it takes
   * longer while the guest's output waits for that first ack (it does anyway), and the daemons keep time.
   */
  private async writeAll(buffers: Iterable<Buffer>, counted: (n: number) => void, bytesPerSec: number | null = null): Promise<void> {
    const t0 = performance.now();
    let written = 0;
    // One buffer ahead, so the last one is known: its write is the one waited for.
    const it = buffers[Symbol.iterator]();
    let next = it.next();
    while (!next.done) {
      if (this.failed) throw this.failed;
      const b = next.value;
      next = it.next();
      counted(b.length);
      if (bytesPerSec !== null) {
        const aheadMs = (written * 1000) / bytesPerSec - (performance.now() - t0);
        if (aheadMs > 1) await sleep(aheadMs);
        if (this.failed) throw this.failed;
      }
      written += b.length;
      if (next.done) {
        await new Promise<void>((resolve, reject) => this.stream.write(b, (e) => (e ? reject(this.linkError(e)) : resolve())));
      } else if (!this.stream.write(b)) {
        await new Promise<void>((resolve, reject) => {
          const done = (e?: Error): void => {
            this.stream.off('drain', done);
            this.stream.off('close', done);
            if (e !== undefined || this.failed) reject(this.failed ?? this.linkError(e!));
            else resolve();
          };
          this.stream.on('drain', done);
          this.stream.on('close', done);
        });
      }
    }
  }

  private linkError(e: Error): LockstepError {
    return this.failed ?? new LockstepError('CHECKPOINT_LINK', `checkpoint stream of '${this.opts.vm}': ${e.message}`, { vm: this.opts.vm }, { cause: e });
  }

  private onData(chunk: Buffer): void {
    let replies;
    try {
      replies = this.replies.push(chunk);
    } catch (e) {
      this.fail(isLockstepError(e) ? e : new LockstepError('CHECKPOINT_WIRE', describeError(e), {}));
      this.stream.destroy();
      return;
    }
    for (const r of replies) {
      if (r.kind === 'refused') {
        const { epoch, code, message } = r.refusal;
        this.fail(new LockstepError('CHECKPOINT_REFUSED', `the backup refused epoch ${epoch} of '${this.opts.vm}': ${code}: ${message}`, { vm: this.opts.vm, epoch, peerCode: code, peerMessage: message }));
        // The backup reads no more of this stream: a write waiting for room would wait for ever.
        this.stream.destroy();
        return;
      }
      if (r.kind === 'pressure') {
        if (r.ack.vm === this.opts.vm) this.opts.onPressure?.(r.ack.epoch);
        continue;
      }
      if (r.kind === 'sealed') {
        if (r.ack.vm !== this.opts.vm || this.sealing?.epoch !== r.ack.epoch) {
          this.fail(new LockstepError('CHECKPOINT_WIRE', `the backup sealed epoch ${r.ack.epoch} of '${r.ack.vm}', which was not asked`, { vm: this.opts.vm, field: 'sealed.epoch', epoch: r.ack.epoch }));
          this.stream.destroy();
          return;
        }
        this.sealing.resolve();
        continue;
      }
      if (r.kind === 'handedover') {
        if (r.ack.vm !== this.opts.vm || this.handingOver?.epoch !== r.ack.epoch) {
          this.fail(new LockstepError('CHECKPOINT_WIRE', `the backup took a handover at epoch ${r.ack.epoch} of '${r.ack.vm}', which was not asked`, { vm: this.opts.vm, field: 'handedover.epoch', epoch: r.ack.epoch }));
          this.stream.destroy();
          return;
        }
        this.handingOver.resolve();
        continue;
      }
      const w = this.waiting.get(r.ack.epoch);
      if (r.ack.vm !== this.opts.vm || w === undefined) {
        this.fail(new LockstepError('CHECKPOINT_WIRE', `the backup acked epoch ${r.ack.epoch} of '${r.ack.vm}', which was not sent`, { vm: this.opts.vm, field: 'ack.epoch', epoch: r.ack.epoch }));
        this.stream.destroy();
        return;
      }
      w.resolve();
    }
  }

  private fail(e: LockstepError): void {
    this.failed ??= e;
    for (const w of this.waiting.values()) w.reject(this.failed);
    this.sealing?.reject(this.failed);
    this.handingOver?.reject(this.failed);
  }
}

export interface ReceiveOutcome {
  /** Every commit made from this stream, in order. */
  commits: CommitResult[];
  /** The primary handed the run over (HANDOVER, answered HANDEDOVER) at this epoch; null: it did not. */
  handedOverAt: number | null;
  /** Why the stream was refused, or null if it simply ended. */
  refused: LockstepError | null;
}

export interface ReceiveOptions {
  onCommit?: (c: CommitResult) => void;
  /**
   * A SEAL record: seal the disk's epoch, answered SEALED once this resolves. Without it a SEAL is refused
   * (`CHECKPOINT_WIRE`). Throwing `EPOCH_DISK` refuses the stream.
   */
  onSeal?: (epoch: number) => Promise<void>;
  /** Runs before the store commits a checkpoint (the disk's commit of that epoch); throwing `EPOCH_DISK` refuses. */
  beforeCommit?: (cp: StagedCheckpoint) => Promise<void>;
  /**
   * A HANDOVER record (the primary's last): answered HANDEDOVER once this resolves. Without it a handover is
   * refused (`CHECKPOINT_WIRE`). Throwing `EPOCH_DISK` refuses the stream.
   */
  onHandover?: (epoch: number) => Promise<void>;
}

/** The errors the receiver answers with REFUSED: bad input, or an epoch this backup cannot hold. */
const REFUSING_CODES = ['CHECKPOINT_WIRE', 'CHECKPOINT_STORE', 'EPOCH_DISK'] as const;

/**
 * Reads checkpoints from `stream` into `store` until the stream ends, acking each one once committed (after
 * `beforeCommit`, then the store). Resolves (never rejects on bad input) with what was committed and, if it
 * came to that, the error the stream was refused with (`CHECKPOINT_WIRE`, `CHECKPOINT_STORE`, `EPOCH_DISK`),
 * which was also sent back as REFUSED.
 */
export async function receiveCheckpoints(stream: Duplex, store: CheckpointStore, opts: ReceiveOptions = {}): Promise<ReceiveOutcome> {
  const decoder = new CheckpointDecoder(store.geometry);
  const commits: CommitResult[] = [];
  let epoch = 0;
  let handedOverAt: number | null = null;
  try {
    // Not destroyed when the loop is left on an error: the REFUSED record must still go out.
    for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
      for (const input of decoder.push(chunk as Buffer)) {
        if (input.kind === 'seal') {
          epoch = input.epoch;
          if (opts.onSeal === undefined) throw new LockstepError('CHECKPOINT_WIRE', `checkpoint stream: a seal of epoch ${input.epoch}, and this backup holds no disk`, { field: 'type', epoch: input.epoch });
          await opts.onSeal(input.epoch);
          stream.write(encodeControl('sealed', store.vm, input.epoch));
          continue;
        }
        if (input.kind === 'handover') {
          if (opts.onHandover === undefined) throw new LockstepError('CHECKPOINT_WIRE', `checkpoint stream: a handover at epoch ${input.epoch}, and this backup holds no disk`, { field: 'type', epoch: input.epoch });
          if (input.epoch !== store.committedEpoch) {
            throw new LockstepError('CHECKPOINT_WIRE', `checkpoint stream: a handover after epoch ${input.epoch}, and this backup committed epoch ${store.committedEpoch}`, { field: 'handover.epoch', epoch: input.epoch });
          }
          await opts.onHandover(input.epoch);
          handedOverAt = input.epoch;
          stream.write(encodeControl('handedover', store.vm, input.epoch));
          continue;
        }
        const staged = input.checkpoint;
        epoch = staged.epoch;
        await opts.beforeCommit?.(staged);
        const c = await store.commit(staged);
        commits.push(c);
        opts.onCommit?.(c);
        stream.write(encodeAck({ vm: store.vm, epoch: staged.epoch }));
      }
      epoch = decoder.receivingEpoch ?? epoch;
    }
    decoder.end();
    stream.end();
    return { commits, handedOverAt, refused: null };
  } catch (e) {
    if (e instanceof BugError) throw e;
    if (!REFUSING_CODES.some((code) => isLockstepError(e, code))) {
      // The stream itself failed (reset, TLS error): nobody is left to tell; the store keeps what it has.
      stream.destroy();
      return { commits, handedOverAt, refused: new LockstepError('CHECKPOINT_LINK', `checkpoint stream of '${store.vm}' failed: ${describeError(e)}`, { vm: store.vm }, { cause: e }) };
    }
    const err = e as LockstepError;
    refuse(stream, encodeRefusal({ vm: store.vm, epoch: decoder.receivingEpoch ?? epoch, code: err.code, message: err.message }));
    return { commits, handedOverAt, refused: err };
  }
}

/** How long a refused stream is drained, for the sender to read REFUSED and close its end. */
const REFUSED_LINGER_MS = 5_000;

/**
 * Sends REFUSED and half-closes; what the sender still writes is read and dropped (a peer that closes with
 * unread data resets the connection, and the sender could lose the REFUSED record), until it closes or the
 * linger bound.
 */
function refuse(stream: Duplex, record: Buffer): void {
  if (stream.destroyed) return;
  stream.on('error', () => undefined);
  const timer = setTimeout(() => stream.destroy(), REFUSED_LINGER_MS);
  timer.unref();
  stream.once('close', () => clearTimeout(timer));
  stream.once('end', () => stream.destroy());
  stream.resume();
  stream.end(record);
}
