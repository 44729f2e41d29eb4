/**
 * The FT backup's per-epoch disk: keeps the backup's copy of a VM disk exactly at the last COMMITTED
 * checkpoint, whatever the primary's guest wrote since.
 *
 * Where it sits: where HA puts the copy's qemu-nbd. The primary's QEMU mirrors every guest write
 * (`blockdev-mirror`, `copy-mode: write-blocking`) into an NBD server of ours on a unix socket (the
 * replication stream delivers to it between hosts); behind it, our NBD client (`nbd-client.ts`) applies
 * committed writes into the copy's qemu-nbd (`copy-export.ts`). qemu-nbd keeps Lockstep out of the image
 * format: the copy is qcow2, and only QEMU's own code writes it.
 *
 * The held-write rule: a write received while holding is acknowledged once it is in memory, in the open
 * epoch, and reaches the copy only when that epoch's checkpoint commits. So the copy is always the state of
 * a committed checkpoint; on failover the uncommitted writes are dropped with the uncommitted RAM and device
 * state, and the resumed guest finds the disk its committed state expects.
 *
 * Why `seal(n)` at the primary's pause is complete: the mirror is write-blocking, so a guest write completes
 * only after we replied to it, and `stop` returns only once QEMU has drained every request in flight. At the
 * pause, every write the guest saw complete has been received here, and none of epoch n + 1 can have been
 * sent. The engine must make the seal take effect here before the guest runs again (its `cont` waits for the
 * seal's answer), or writes of n + 1 could be counted in n.
 *
 * Modes are in `EPOCH_DISK_MODES`. Apart from them, a *break* marks the first epoch that can never commit:
 * a write of it was refused (memory bound, a bad request) or its writer vanished without NBD_CMD_DISC, so
 * the primary's guest may have seen a write succeed that is not here. Epochs sealed before stay committable.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { silentLog, type DriverLog } from '../qemu/log.js';
import { NbdClient, NBD_PAYLOAD_BYTES_DEFAULT_MAX, REQUESTS_IN_FLIGHT_MAX } from '../storage/nbd-client.js';
import { NBD_ERR } from '../storage/nbd-protocol.js';
import { NbdServer, type NbdBackend } from '../storage/nbd-server.js';
import { LockstepError, describeError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { EpochBuffer, heldCost, overlay, type HeldWrite } from './epoch-disk-buffer.js';

export type EpochDiskMode = 'direct' | 'holding' | 'through' | 'closed';

/** What each mode means; checked on every transition. */
export const EPOCH_DISK_MODES: Readonly<Record<EpochDiskMode, string>> = {
  direct: 'initial sync: each write reaches the copy before it is acknowledged; the copy is no checkpoint yet',
  holding: 'epochs: writes held in memory, applied to the copy when their checkpoint commits',
  through: 'handed over (the VM is HA now): all it held applied, each write on the copy before it is acknowledged; the copy is no checkpoint',
  closed: 'failed over or stopped: no clients, nothing held, the copy released',
};

const TRANSITIONS: Readonly<Record<EpochDiskMode, readonly EpochDiskMode[]>> = {
  direct: ['holding', 'through', 'closed'],
  holding: ['through', 'closed'],
  through: ['closed'],
  closed: [],
};

export interface EpochDiskOptions {
  /** The VM's name: the export name QEMU asks for, and the copy export's. */
  vm: string;
  /** Where the mirror (or the replication stream) connects. */
  socketPath: string;
  /** The copy's qemu-nbd export (`CopyExport.socketPath`). */
  copySocketPath: string;
  /** Held memory past which writes are refused (and the open epoch can never commit). */
  heldBytesMax?: number;
  /** Held memory past which `pressure` is emitted, so the engine ends the epoch early. */
  pressureBytes?: number;
  /** Bound on each request to the copy. */
  copyRequestTimeoutMs?: number;
  log?: DriverLog;
}

/** From which epoch on nothing can be committed, and why; `fromEpoch` null: the initial sync already. */
export interface EpochDiskBreak {
  fromEpoch: number | null;
  reason: string;
}

export interface EpochDiskStats {
  vm: string;
  mode: EpochDiskMode;
  /** The epoch receiving writes now (holding only). */
  openEpoch: number | null;
  sealedEpochs: number[];
  /** The checkpoint the copy is at; null until the first `hold` has flushed the initial sync. */
  committedEpoch: number | null;
  /** The epoch being applied to the copy now. */
  committingEpoch: number | null;
  heldBytes: number;
  heldBytesMax: number;
  pressureBytes: number;
  pressure: boolean;
  broken: EpochDiskBreak | null;
  /** False once a commit failed part way: then the copy is at no checkpoint and must not be run on. */
  copyConsistent: boolean;
  connections: number;
  /** Requests answered since start, by kind: what QEMU's mirror actually sends. */
  received: { reads: number; writes: number; zeroWrites: number; flushes: number };
}

export interface EpochCommit {
  epoch: number;
  writes: number;
  /** Bytes of the disk the epoch's writes covered (zero writes included). */
  writtenBytes: number;
  /** Applying the writes and the flush that made them durable. */
  applyMs: number;
  flushMs: number;
}

/** What a handover applied: every epoch held, sealed or open, in arrival order. */
export interface EpochHandover {
  /** The checkpoint the copy was at before (null: the initial sync, never held). */
  fromEpoch: number | null;
  appliedEpochs: number[];
  appliedWrites: number;
  appliedBytes: number;
  applyMs: number;
}

export interface EpochDiscard {
  /** The checkpoint the copy holds: the one to resume from. */
  committedEpoch: number;
  discardedEpochs: number[];
  discardedWrites: number;
  discardedBytes: number;
}

export interface EpochDiskEvents {
  /** Held memory crossed `pressureBytes` upwards: end the epoch early. Once per crossing. */
  pressure: [stats: EpochDiskStats];
  /** Epochs from `fromEpoch` on can never commit (see EpochDiskBreak). Once. */
  broken: [b: EpochDiskBreak];
}

export const HELD_BYTES_DEFAULT_MAX = 256 * 1024 * 1024;

export class EpochDisk extends EventEmitter<EpochDiskEvents> {
  readonly vm: string;
  private mode: EpochDiskMode = 'direct';
  private buffer: EpochBuffer | null = null;
  private committedEpoch: number | null = null;
  private committing: { epoch: number; done: Promise<unknown> } | null = null;
  /** hold()'s drain and flush of the initial sync: commits wait for it. */
  private baseline: Promise<unknown> = Promise.resolve();
  /** handOver()'s apply of everything held: writes in `through` mode wait behind it. */
  private handedOver: Promise<EpochHandover> | null = null;
  private broken: EpochDiskBreak | null = null;
  private copyConsistent = true;
  private pressure = false;
  private readonly directWrites = new Set<Promise<unknown>>();
  private readonly received = { reads: 0, writes: 0, zeroWrites: 0, flushes: 0 };
  private server: NbdServer | null = null;
  private shutdown: Promise<EpochDiscard> | null = null;
  private readonly heldBytesMax: number;
  private readonly pressureBytes: number;
  private readonly log: DriverLog;

  private constructor(
    opts: EpochDiskOptions,
    private readonly copy: NbdClient,
  ) {
    super();
    this.vm = opts.vm;
    this.heldBytesMax = opts.heldBytesMax ?? HELD_BYTES_DEFAULT_MAX;
    this.pressureBytes = opts.pressureBytes ?? Math.floor(this.heldBytesMax / 2);
    this.log = opts.log ?? silentLog;
    void copy.closed.then((c) => {
      if (c.cause !== 'client' && this.mode !== 'closed') this.markBroken(this.currentEpoch(), `the copy's export went away: ${c.error.message}`);
    });
  }

  /**
   * Connects to the copy's export, then listens for the mirror, in `direct` mode. Throws `INVALID_ARGUMENT`
   * (limits), `EPOCH_DISK` (the copy cannot be reached, or the socket path cannot be served; the cause says why).
   */
  static async start(opts: EpochDiskOptions): Promise<EpochDisk> {
    const max = opts.heldBytesMax ?? HELD_BYTES_DEFAULT_MAX;
    if (!Number.isSafeInteger(max) || max < 1) throw new LockstepError('INVALID_ARGUMENT', `epoch disk: heldBytesMax ${max}`, { field: 'heldBytesMax' });
    if (opts.pressureBytes !== undefined && !(Number.isSafeInteger(opts.pressureBytes) && opts.pressureBytes > 0 && opts.pressureBytes <= max)) {
      throw new LockstepError('INVALID_ARGUMENT', `epoch disk: pressureBytes ${opts.pressureBytes} must be in 1..heldBytesMax`, { field: 'pressureBytes' });
    }
    const fields = { vm: opts.vm, socketPath: opts.socketPath, copySocketPath: opts.copySocketPath };
    let copy: NbdClient;
    try {
      copy = await NbdClient.connect(opts.copySocketPath, opts.vm, { requestTimeoutMs: opts.copyRequestTimeoutMs });
    } catch (e) {
      throw new LockstepError('EPOCH_DISK', `the epoch disk of VM ${opts.vm} cannot reach its copy: ${describeError(e)}`, fields, { cause: e });
    }
    const disk = new EpochDisk(opts, copy);
    try {
      disk.server = await NbdServer.listen(opts.socketPath, disk.backend(), { log: disk.log });
    } catch (e) {
      await copy.close();
      throw new LockstepError('EPOCH_DISK', `the epoch disk of VM ${opts.vm} cannot serve ${opts.socketPath}: ${describeError(e)}`, fields, { cause: e });
    }
    disk.log.info(`epoch disk of VM ${opts.vm} serving ${opts.socketPath} (direct until the first checkpoint)`, { ...fields, sizeBytes: copy.size });
    return disk;
  }

  /**
   * At the first checkpoint's pause: the copy as it is now (the initial sync, and the writes of the guest
   * since, all acknowledged only once on the copy) becomes checkpoint `firstEpoch - 1`, and from this call on
   * writes are held in epoch `firstEpoch`. The switch happens at the call; the promise resolves once the
   * initial sync is flushed to the copy's disk. Throws `EPOCH_DISK` when a write of the initial sync was
   * refused or lost (the copy misses it) or the flush failed.
   */
  hold(firstEpoch: number): Promise<void> {
    this.transition('holding');
    this.buffer = new EpochBuffer(firstEpoch);
    const flushed = (async () => {
      await Promise.all(this.directWrites);
      if (this.broken !== null && this.broken.fromEpoch === null) {
        throw this.error(`the initial sync of VM ${this.vm} is not complete on the copy: ${this.broken.reason}`, { reason: this.broken.reason });
      }
      try {
        await this.copy.flush();
      } catch (e) {
        this.markBroken(null, `the initial sync could not be flushed: ${describeError(e)}`);
        throw this.error(`the initial sync of VM ${this.vm} could not be flushed to the copy: ${describeError(e)}`, {}, e);
      }
      this.committedEpoch = firstEpoch - 1;
      this.log.info(`epoch disk of VM ${this.vm}: holding from epoch ${firstEpoch}`, { vm: this.vm, epoch: firstEpoch });
    })();
    this.baseline = flushed.catch(() => undefined);
    return flushed;
  }

  /** At the primary's epoch end (guest paused, see above): epoch `epoch` receives no more writes. Synchronous. */
  seal(epoch: number): { epoch: number; writes: number; writtenBytes: number; heldBytes: number } {
    assert(this.mode === 'holding' && this.buffer !== null, `seal(${epoch}) in mode ${this.mode}`);
    const e = this.buffer.seal(epoch);
    return { epoch, writes: e.writes.length, writtenBytes: e.writtenBytes, heldBytes: e.heldBytes };
  }

  /**
   * Epoch `epoch`'s checkpoint has committed: applies its writes to the copy in the order they arrived, flushes,
   * and only then resolves (the copy is at checkpoint `epoch`). Epochs commit oldest first, one at a time.
   * Throws `EPOCH_DISK` when the epoch can never commit (a write of it was refused or lost: `fields.reason`)
   * or applying it failed; after a failed apply the copy is at no checkpoint (`copyConsistent: false`).
   */
  async commit(epoch: number): Promise<EpochCommit> {
    // After failover the engine resumes from the committed checkpoint; a late commit is an outcome, not a bug.
    if (this.mode === 'closed') throw this.error(`epoch ${epoch} of VM ${this.vm} cannot commit: the epoch disk is closed`, { epoch });
    assert(this.mode === 'holding' && this.buffer !== null, `commit(${epoch}) before hold()`);
    assert(this.committing === null, `commit(${epoch}) while epoch ${this.committing?.epoch} is being committed`);
    const held = this.buffer.oldestSealed();
    assert(held !== undefined && held.epoch === epoch, `commit(${epoch}) while the oldest sealed epoch is ${held?.epoch}`);
    const run = (async (): Promise<EpochCommit> => {
      await this.baseline;
      if (this.committedEpoch === null || (this.broken !== null && (this.broken.fromEpoch === null || epoch >= this.broken.fromEpoch))) {
        const reason = this.broken?.reason ?? 'the initial sync was not flushed';
        throw this.error(`epoch ${epoch} of VM ${this.vm} can never commit: ${reason}`, { epoch, reason });
      }
      const startedMs = performance.now();
      let flushStartMs = startedMs;
      try {
        if (held.writes.length > 0) {
          await applyInOrder(this.copy, held.writes);
          flushStartMs = performance.now();
          await this.copy.flush();
        }
      } catch (e) {
        this.copyConsistent = false;
        this.markBroken(epoch, `applying epoch ${epoch} to the copy failed: ${describeError(e)}`);
        throw this.error(`epoch ${epoch} of VM ${this.vm} could not be applied to the copy, which is now at no checkpoint: ${describeError(e)}`, { epoch }, e);
      }
      const doneMs = performance.now();
      this.buffer!.release(epoch);
      this.committedEpoch = epoch;
      if (this.pressure && this.buffer!.heldBytes < this.pressureBytes) this.pressure = false;
      return { epoch, writes: held.writes.length, writtenBytes: held.writtenBytes, applyMs: flushStartMs - startedMs, flushMs: doneMs - flushStartMs };
    })();
    this.committing = { epoch, done: run.catch(() => undefined) };
    try {
      return await run;
    } finally {
      this.committing = null;
    }
  }

  /**
   * The protection run ends with the copy keeping every write (the VM goes on as HA, or moves): every epoch
   * held — sealed or open, committed by no checkpoint — is applied in arrival order and flushed, and from the
   * call on each write reaches the copy before it is acknowledged (`through`), waiting until the held ones
   * are on it. The switch happens at the call (no write can be held after it); the promise resolves once the
   * copy has everything. A commit under way finishes first. Idempotent.
   *
   * Throws `EPOCH_DISK` when the copy cannot keep every write the guest saw succeed: a write was refused or
   * its writer vanished (the break), or applying failed (then later writes are refused too). The caller must
   * not count the copy as current then.
   */
  handOver(): Promise<EpochHandover> {
    if (this.handedOver !== null) return this.handedOver;
    if (this.mode === 'closed') return Promise.reject(this.error(`the copy of VM ${this.vm} cannot be handed over: the epoch disk is closed`, {}));
    const broken = this.broken;
    const fromEpoch = this.committedEpoch;
    this.transition('through');
    this.handedOver = (async (): Promise<EpochHandover> => {
      if (broken !== null) throw this.error(`the copy of VM ${this.vm} misses a write the guest saw succeed: ${broken.reason}`, { reason: broken.reason });
      await this.baseline;
      if (this.committing !== null) await this.committing.done;
      const startedMs = performance.now();
      const view = this.buffer?.view() ?? [];
      const writes = view.flatMap(([w, count]) => w.slice(0, count));
      const applied: EpochHandover = {
        fromEpoch,
        appliedEpochs: this.buffer === null ? [] : [...this.buffer.sealedEpochs, this.buffer.openEpoch],
        appliedWrites: writes.length,
        appliedBytes: writes.reduce((n, w) => n + w.length, 0),
        applyMs: 0,
      };
      try {
        await Promise.all(this.directWrites);
        await applyInOrder(this.copy, writes);
        await this.copy.flush();
      } catch (e) {
        this.copyConsistent = false;
        throw this.error(`the writes held for VM ${this.vm} could not be applied to the copy: ${describeError(e)}`, {}, e);
      }
      // Reads see the copy alone from here: it has every held write.
      this.buffer = null;
      this.pressure = false;
      applied.applyMs = performance.now() - startedMs;
      this.log.info(`epoch disk of VM ${this.vm} handed over: ${applied.appliedWrites} held writes applied (epochs ${applied.appliedEpochs.join(', ') || 'none'}); writes now go through to the copy`, { vm: this.vm });
      return applied;
    })();
    this.handedOver.catch(() => undefined);
    return this.handedOver;
  }

  /**
   * At failover: no more clients, every uncommitted epoch dropped (a commit under way finishes first: its
   * checkpoint has committed), the copy's connection closed so the copy can be run on. Resolves with the
   * checkpoint the copy holds. Throws `EPOCH_DISK` when the copy is at no checkpoint (initial sync
   * unfinished, a commit failed part way). Idempotent.
   */
  discardUncommitted(): Promise<EpochDiscard> {
    this.shutdown ??= this.shutdownNow();
    return this.shutdown;
  }

  /** Stops serving and releases the copy, without a report (teardown). */
  async close(): Promise<void> {
    await this.discardUncommitted().catch(() => undefined);
  }

  stats(): EpochDiskStats {
    return {
      vm: this.vm,
      mode: this.mode,
      openEpoch: this.mode === 'holding' ? this.buffer!.openEpoch : null,
      sealedEpochs: this.buffer?.sealedEpochs ?? [],
      committedEpoch: this.committedEpoch,
      committingEpoch: this.committing?.epoch ?? null,
      heldBytes: this.buffer?.heldBytes ?? 0,
      heldBytesMax: this.heldBytesMax,
      pressureBytes: this.pressureBytes,
      pressure: this.pressure,
      broken: this.broken,
      copyConsistent: this.copyConsistent,
      connections: this.server?.connectionCount ?? 0,
      received: { ...this.received },
    };
  }

  private async shutdownNow(): Promise<EpochDiscard> {
    const handedOver = this.handedOver;
    this.transition('closed');
    await this.server?.close();
    await this.baseline;
    if (this.committing !== null) await this.committing.done;
    await handedOver?.catch(() => undefined);
    const dropped = this.buffer?.discardAll() ?? { epochs: [], heldBytes: 0, writes: 0 };
    await Promise.all(this.directWrites);
    await this.copy.close();
    const fields = { vm: this.vm, committedEpoch: this.committedEpoch };
    if (handedOver !== null) throw this.error(`the copy of VM ${this.vm} was handed over: it holds later writes than any checkpoint`, fields);
    if (!this.copyConsistent) throw this.error(`the copy of VM ${this.vm} is at no checkpoint: ${this.broken?.reason ?? 'a commit failed'}`, fields);
    if (this.committedEpoch === null) throw this.error(`the copy of VM ${this.vm} is no checkpoint yet: its initial sync never reached hold()`, fields);
    this.log.info(`epoch disk of VM ${this.vm} closed at checkpoint ${this.committedEpoch}; dropped epochs ${dropped.epochs.join(', ') || 'none'}`, {
      ...fields,
      discardedBytes: dropped.heldBytes,
    });
    return { committedEpoch: this.committedEpoch, discardedEpochs: dropped.epochs, discardedWrites: dropped.writes, discardedBytes: dropped.heldBytes };
  }

  private transition(to: EpochDiskMode): void {
    assert(TRANSITIONS[this.mode].includes(to), `epoch disk of ${this.vm}: ${this.mode} → ${to}`);
    this.mode = to;
  }

  /** The epoch a refusal or a lost writer breaks now: the open one, or the initial sync (null). */
  private currentEpoch(): number | null {
    return this.mode === 'holding' ? this.buffer!.openEpoch : null;
  }

  private markBroken(fromEpoch: number | null, reason: string): void {
    // Handed over, each write is on the copy before its answer: a writer lost then loses nothing.
    if (this.broken !== null || this.mode === 'through') return; // the earliest break is the one that counts
    this.broken = { fromEpoch, reason };
    this.log.warn(`epoch disk of VM ${this.vm}: ${fromEpoch === null ? 'the initial sync' : `epoch ${fromEpoch} and later`} can never commit: ${reason}`, { vm: this.vm, fromEpoch });
    this.emit('broken', this.broken);
  }

  private error(message: string, fields: Record<string, unknown>, cause?: unknown): LockstepError {
    return new LockstepError('EPOCH_DISK', message, { vm: this.vm, ...fields }, cause === undefined ? undefined : { cause });
  }

  /** A write of the mirror's: applied at once (direct), held (holding), or refused. */
  private take(w: HeldWrite): number | Promise<number> {
    if (this.mode === 'closed') return NBD_ERR.ESHUTDOWN;
    if (this.mode === 'through') return this.applyThrough(w);
    // Past a break nothing more can commit: failing at once makes the mirror fail, and the engine notice.
    if (this.broken !== null) return NBD_ERR.EIO;
    if (this.mode === 'direct') return this.applyDirect(w);
    const buffer = this.buffer!;
    if (buffer.heldBytes + heldCost(w) > this.heldBytesMax) {
      this.markBroken(buffer.openEpoch, `held writes would pass ${this.heldBytesMax} bytes (the epoch did not end in time)`);
      return NBD_ERR.ENOSPC;
    }
    buffer.hold(w);
    if (!this.pressure && buffer.heldBytes >= this.pressureBytes) {
      this.pressure = true;
      this.emit('pressure', this.stats());
    }
    return 0;
  }

  private applyDirect(w: HeldWrite): Promise<number> {
    const applied = (w.data === null ? this.copy.writeZeroes(w.offset, w.length, w.noHole) : this.copy.write(w.offset, w.data)).then(
      () => 0,
      (e: unknown) => {
        this.markBroken(null, `a write of the initial sync failed on the copy: ${describeError(e)}`);
        return NBD_ERR.EIO;
      },
    );
    this.directWrites.add(applied);
    void applied.then(() => this.directWrites.delete(applied));
    return applied;
  }

  /** Handed over: after everything held is on the copy, this write too, before its answer. */
  private async applyThrough(w: HeldWrite): Promise<number> {
    try {
      await this.handedOver;
    } catch {
      return NBD_ERR.EIO;
    }
    if (!this.copyConsistent) return NBD_ERR.EIO;
    try {
      await (w.data === null ? this.copy.writeZeroes(w.offset, w.length, w.noHole) : this.copy.write(w.offset, w.data));
      return 0;
    } catch (e) {
      this.log.warn(`epoch disk of VM ${this.vm}: a write of ${w.length} at ${w.offset} failed on the copy: ${describeError(e)}`, { vm: this.vm });
      return NBD_ERR.EIO;
    }
  }

  private backend(): NbdBackend {
    const copy = this.copy;
    return {
      exportName: this.vm,
      size: copy.size,
      maxPayloadBytes: Math.min(NBD_PAYLOAD_BYTES_DEFAULT_MAX, copy.maxPayloadBytes),
      canWriteZeroes: copy.canWriteZeroes,
      read: async (offset, length) => {
        this.received.reads++;
        if (this.mode === 'closed') return NBD_ERR.ESHUTDOWN;
        // Fixed before the copy is read: a commit finishing meanwhile leaves its writes in this view, so the
        // bytes come out right whether the copy was read before or after they were applied.
        const view = this.buffer?.view() ?? [];
        try {
          const data = await copy.read(offset, length);
          overlay(view, offset, data);
          return data;
        } catch (e) {
          this.log.warn(`epoch disk of VM ${this.vm}: a read of ${length} at ${offset} failed on the copy: ${describeError(e)}`, { vm: this.vm });
          return NBD_ERR.EIO;
        }
      },
      write: (offset, data) => {
        this.received.writes++;
        return this.take({ offset, length: data.length, data, noHole: false });
      },
      writeZeroes: (offset, length, noHole) => {
        this.received.zeroWrites++;
        return this.take({ offset, length, data: null, noHole });
      },
      flush: async () => {
        this.received.flushes++;
        // Holding: a held write must not reach the copy before its checkpoint commits, so a flush cannot make
        // it durable there. The guest's durable effects are visible outside only after the commit (output
        // commit), when the epoch is flushed here; a flush has nothing more to promise. Direct and handed
        // over, it is the copy's flush.
        if (this.mode === 'holding') return 0;
        if (this.mode === 'closed') return NBD_ERR.ESHUTDOWN;
        try {
          if (this.mode === 'through') await this.handedOver;
          await copy.flush();
          return 0;
        } catch {
          return NBD_ERR.EIO;
        }
      },
      writeRefused: (reason) => this.markBroken(this.currentEpoch(), reason),
      writerLost: (reason) => {
        if (this.mode !== 'closed') this.markBroken(this.currentEpoch(), reason);
      },
    };
  }
}

/**
 * Applies held writes in their order with up to the client's window in flight. NBD orders nothing among
 * requests in flight, so a write overlapping one still in flight waits for the in-flight ones to end first:
 * the later bytes land last. On the first failure it stops sending, lets the rest end, and throws.
 */
async function applyInOrder(copy: NbdClient, writes: readonly HeldWrite[]): Promise<void> {
  const inFlight = new Map<Promise<void>, { from: number; to: number }>();
  let failure: unknown = null;
  const send = (w: HeldWrite): void => {
    const p: Promise<void> = (w.data === null ? copy.writeZeroes(w.offset, w.length, w.noHole) : copy.write(w.offset, w.data)).then(
      () => void inFlight.delete(p),
      (e: unknown) => {
        inFlight.delete(p);
        failure ??= e;
      },
    );
    inFlight.set(p, { from: w.offset, to: w.offset + w.length });
  };
  for (const w of writes) {
    const overlaps = (): boolean => [...inFlight.values()].some((r) => r.from < w.offset + w.length && w.offset < r.to);
    while (failure === null && inFlight.size > 0 && (inFlight.size >= REQUESTS_IN_FLIGHT_MAX || overlaps())) await Promise.race(inFlight.keys());
    if (failure !== null) break;
    send(w);
  }
  await Promise.all(inFlight.keys());
  if (failure !== null) throw failure;
}
