/**
 * The primary's side of an FT protection: drives one running VM's epochs, composing the checkpoint engine
 * (`checkpoint.ts`), the output gates (`output-commit.ts`, one per NIC) and the backup's epoch disk (through
 * SEAL on the checkpoint stream, `checkpoint-link.ts`). One epoch:
 *
 *   stop → [each gate.seal() + disk seal on the backup, CONFIRMED ‖ RAM copy ‖ device save] → cont
 *        → diff → send checkpoint N → backup commits disk N, then RAM/devices N, then ACK N → each gate.release(N)
 *
 * Every NIC's gate seals the same epoch in the same pause and is released by the same ack: the checkpoint
 * covers what the guest sent on all of them, so none may leave before it, and none need wait for more.
 *
 * Why the disk seal is confirmed inside the pause: the mirror is write-blocking and `stop` drains it, so at
 * the pause every write of epoch N is on the backup and none of N + 1 was sent; once the guest runs again,
 * writes of N + 1 would race the SEAL on the mirror's stream and be counted in N. One round trip of the
 * checkpoint stream, run beside the RAM copy, so it costs the pause only where it is the longer of them.
 *
 * Pipelining: one checkpoint in flight. Epoch N + 1 ends (its `stop`) no earlier than `epochMs` after N's
 * and no earlier than N's ack: so SEAL never waits behind a checkpoint on the stream, and a link that cannot
 * keep up stretches epochs instead of piling them up. Meanwhile the guest runs and its output is held, and
 * held output is what pushes the epoch to end early (`endEpochSoon`: the gate's soft limit, the backup's
 * disk pressure), never what is let out.
 *
 * Handover (`handOver()`, the caller's: the VM goes on as HA, or is about to move): at the next epoch end,
 * with no checkpoint in flight, HANDOVER instead of a pause; the backup applies every disk write it holds
 * and writes later ones through to its copy before it answers HANDEDOVER. Only then does held output leave:
 * every write the guest saw complete before it is on the copy, which a restart there would boot from. The
 * guest is not paused for it.
 *
 * Peer lost (stream closed or failed, a refusal, no ack or seal answer in time, a checkpoint that could not be
 * taken): the loop stops, `peerLost` is emitted and the gate KEEPS HOLDING. Letting the guest's output go
 * unprotected is the caller's decision (later the decision core's: the peer might be about to take over from
 * the last acked epoch, and then frames of later epochs must never have left): `goUnprotected()`.
 */
import type { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { silentLog, type DriverLog } from '../qemu/log.js';
import type { DiskMirror } from '../storage/disk-mirror.js';
import { assert } from '../util/assert.js';
import { LockstepError, describeError, isLockstepError } from '../util/errors.js';
import { CheckpointEngine, type CheckpointTimings, type CheckpointedVm } from './checkpoint.js';
import { CheckpointSender } from './checkpoint-link.js';
import { PauseWindow, type PauseSummary } from './ft-stats.js';
import type { OutputGate } from './output-commit.js';

export type FtPrimaryState = 'protecting' | 'handed-over' | 'peer-lost' | 'unprotected' | 'stopped';

/** What each state means; checked on every transition. */
export const FT_PRIMARY_STATES: Readonly<Record<FtPrimaryState, string>> = {
  protecting: 'epochs run; the output of an epoch leaves once the backup acked it',
  'handed-over': 'no more epochs, by the caller’s choice: the backup’s copy holds every write and takes later ones through (HA’s); output passes at once',
  'peer-lost': 'no more epochs; output of unacked epochs is held until the caller decides (goUnprotected)',
  unprotected: 'output passes at once: the VM runs without a backup',
  stopped: 'stopped by its owner; whatever was held stays held (the gate is the owner’s to close or detach)',
};

const TRANSITIONS: Readonly<Record<FtPrimaryState, readonly FtPrimaryState[]>> = {
  protecting: ['handed-over', 'peer-lost', 'stopped'],
  'handed-over': ['stopped'],
  'peer-lost': ['unprotected', 'stopped'],
  unprotected: ['stopped'],
  stopped: [],
};

export interface FtPrimaryOptions {
  vm: CheckpointedVm;
  /** The output gate of each of the VM's NICs, protected, at one epoch, none sealed yet (they become the checkpoints' epochs). */
  gates: readonly OutputGate[];
  /** The VM's disk mirrors into the backup's epoch disks: each must be ready (initial sync done) at start. */
  mirrors: readonly DiskMirror[];
  /** The checkpoint stream to the backup (`FtBackup` at its other end). */
  stream: Duplex;
  epochMs: number;
  /** Bound on an epoch's ack after its checkpoint was written. Default 10 s. */
  ackTimeoutMs?: number;
  /** Bound on the disk seal's answer, inside the pause. Default 2 s. */
  sealTimeoutMs?: number;
  /**
   * How fast a full image (the first checkpoint, a re-seed) is written; null: unpaced. Default
   * `FULL_CHECKPOINT_BYTES_PER_SEC` (why: `CheckpointSender.writeAll`).
   */
  fullCheckpointBytesPerSec?: number | null;
  log?: DriverLog;
}

export interface FtEpoch {
  epoch: number;
  full: boolean;
  pageCount: number;
  wireBytes: number;
  timings: CheckpointTimings & {
    /** gate seal + the disk seal's round trip, inside the pause. */
    sealMs: number;
    /** From the first byte written to the ack. */
    ackMs: number;
  };
}

export interface FtPrimaryStats extends PauseSummary {
  vm: string;
  state: FtPrimaryState;
  epochMs: number;
  /** The last epoch whose checkpoint went to the backup, and the last one it acked (committed). */
  sentEpoch: number;
  peerCommittedEpoch: number;
  /** Checkpoints sent and not acked: 0 or 1. */
  lagEpochs: number;
  /** Epochs ended before `epochMs` because output or disk writes piled up. */
  earlyEpochs: number;
  /** Held by every NIC's gate together. */
  heldOutputBytes: number;
  heldOutputFrames: number;
  last: FtEpoch | null;
  /** Why protection was lost, once it was. */
  lostBecause: string | null;
}

export interface FtPrimaryEvents {
  /** The backup acked an epoch, and its output was released. */
  committed: [e: FtEpoch];
  /** Protection was lost; output stays held until `goUnprotected()`. Once. */
  peerLost: [error: LockstepError];
}

const ACK_TIMEOUT_MS = 10_000;
const SEAL_TIMEOUT_MS = 2_000;
/** A full image at 32 MiB/s: 4 s for the lab's 128 MiB guest, about 2 min for 4 GiB. */
export const FULL_CHECKPOINT_BYTES_PER_SEC = 32 * 1024 * 1024;

export class FtPrimary extends EventEmitter<FtPrimaryEvents> {
  private state: FtPrimaryState = 'protecting';
  private readonly pauses = new PauseWindow();
  private sentEpoch = 0;
  private ackedEpoch = 0;
  private earlyEpochs = 0;
  private last: FtEpoch | null = null;
  private lostBecause: LockstepError | null = null;
  private wake: (() => void) | null = null;
  private early = false;
  private loop: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | null = null;
  /** `handOver()` was asked: the loop does it at the next epoch end. */
  private handover: { done: Promise<void>; resolve: () => void; reject: (e: LockstepError) => void } | null = null;
  private readonly log: DriverLog;

  private constructor(
    private readonly opts: FtPrimaryOptions,
    private readonly engine: CheckpointEngine,
    private readonly sender: CheckpointSender,
  ) {
    super();
    this.log = opts.log ?? silentLog;
  }

  /**
   * Starts protecting: the first epoch ends `epochMs` from now with a full image. Throws `FT_PRIMARY` when a
   * disk mirror is not in sync, there is no gate, or a gate is not holding or not at the others' epoch,
   * `CHECKPOINT_CAPTURE` when the VM's RAM file cannot be opened.
   */
  static async start(opts: FtPrimaryOptions): Promise<FtPrimary> {
    const name = opts.vm.spec.name;
    const first = opts.gates[0];
    if (first === undefined) throw new LockstepError('FT_PRIMARY', `VM '${name}': no output gate: a VM has at least one NIC`, { vm: name });
    const epoch = first.stats.epoch;
    for (const gate of opts.gates) {
      const g = gate.stats;
      if (!g.protected || g.sealed !== g.released || g.epoch !== epoch) {
        throw new LockstepError('FT_PRIMARY', `VM '${name}': output gate ${gate.name} must hold output at epoch ${epoch} with no epoch sealed and unreleased (it is at ${g.epoch}, ${g.protected ? 'holding' : 'passing'})`, { vm: name, gate: gate.name });
      }
    }
    for (const m of opts.mirrors) {
      const s = await m.status();
      // The epoch disk turns the copy into the first checkpoint at the first pause: it must be complete then.
      if (s.state !== 'ready') throw new LockstepError('FT_PRIMARY', `VM '${name}': the mirror of disk ${m.disk} is ${s.state}, not ready`, { vm: name, disk: m.disk, mirror: s.state });
    }
    const engine = await CheckpointEngine.open(opts.vm, { firstEpoch: epoch });
    let primary: FtPrimary | undefined;
    const sender = new CheckpointSender(opts.stream, {
      vm: name,
      ackTimeoutMs: opts.ackTimeoutMs ?? ACK_TIMEOUT_MS,
      sealTimeoutMs: opts.sealTimeoutMs ?? SEAL_TIMEOUT_MS,
      fullBytesPerSec: opts.fullCheckpointBytesPerSec === undefined ? FULL_CHECKPOINT_BYTES_PER_SEC : opts.fullCheckpointBytesPerSec,
      onPressure: () => primary?.endEpochSoon(),
    });
    primary = new FtPrimary(opts, engine, sender);
    for (const m of opts.mirrors) m.on('failed', (f) => primary.lose(f.error));
    primary.loop = primary.run();
    return primary;
  }

  /** End the running epoch now rather than at `epochMs` (wire each gate's `onSoftLimit` here). */
  endEpochSoon(): void {
    if (this.state !== 'protecting' || this.early) return;
    this.early = true;
    this.wake?.();
  }

  /**
   * The caller's decision after `peerLost`: the VM runs on without a backup, its held output goes out now and
   * later output at once. Only after `peerLost` (an assertion otherwise: while protecting, releasing unacked
   * output would break the FT promise).
   */
  goUnprotected(): void {
    assert(this.state === 'peer-lost', `goUnprotected() while ${this.state}`);
    this.transition('unprotected');
    for (const gate of this.opts.gates) gate.unprotect();
    this.log.warn(`FT of VM ${this.name}: unprotected, output passes at once`, { vm: this.name, peerCommittedEpoch: this.ackedEpoch });
  }

  /**
   * The caller knows the backup is gone before this run noticed (the decision core cut the mirror: the peer
   * can no longer take the VM over): the run ends as a loss would — `peerLost` is emitted, the stream closed
   * — and goes unprotected at once. While protecting only; otherwise as `goUnprotected()`.
   */
  giveUp(reason: string): void {
    if (this.state === 'protecting') {
      this.lose(new LockstepError('CHECKPOINT_LINK', `FT of VM '${this.name}': ${reason}`, { vm: this.name }));
      this.sender.close();
    }
    if (this.state === 'peer-lost') this.goUnprotected();
  }

  /**
   * Ends protection without a loss (see above): resolves once the backup's copy holds every write and
   * held output has left. Throws `FT_PRIMARY` when not protecting; a handover that fails is a loss
   * (`peerLost`, output held) and rejects with its error. Idempotent.
   */
  handOver(): Promise<void> {
    if (this.handover !== null) return this.handover.done;
    if (this.state !== 'protecting') return Promise.reject(new LockstepError('FT_PRIMARY', `FT of VM '${this.name}' cannot be handed over: it is ${this.state}`, { vm: this.name, state: this.state }));
    let resolve!: () => void;
    let reject!: (e: LockstepError) => void;
    const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
    done.catch(() => undefined);
    this.handover = { done, resolve, reject };
    this.wake?.();
    return done;
  }

  /** Ends the stream and the epoch loop; held output stays held. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.transition('stopped');
      this.wake?.();
      // Closing the stream first ends a wait for an ack or a seal at once (the loop sees 'stopped', not a loss).
      this.sender.close();
      await this.loop;
      await this.engine.close();
    })();
    return this.stopping;
  }

  get stats(): FtPrimaryStats {
    const g = this.opts.gates.reduce((sum, gate) => {
      const s = gate.stats;
      return { heldBytes: sum.heldBytes + s.heldBytes, heldFrames: sum.heldFrames + s.heldFrames };
    }, { heldBytes: 0, heldFrames: 0 });
    return {
      vm: this.name,
      state: this.state,
      epochMs: this.opts.epochMs,
      ...this.pauses.summary(),
      sentEpoch: this.sentEpoch,
      peerCommittedEpoch: this.ackedEpoch,
      lagEpochs: this.sentEpoch - this.ackedEpoch,
      earlyEpochs: this.earlyEpochs,
      heldOutputBytes: g.heldBytes,
      heldOutputFrames: g.heldFrames,
      last: this.last,
      lostBecause: this.lostBecause?.message ?? null,
    };
  }

  private get name(): string {
    return this.opts.vm.spec.name;
  }

  private async run(): Promise<void> {
    let epochStartMs = performance.now();
    while (this.state === 'protecting') {
      if (this.handover === null) await this.untilEpochEnd(epochStartMs + this.opts.epochMs);
      if (this.state !== 'protecting') return;
      if (this.handover !== null) return this.handOverNow(this.handover);
      if (this.early) this.earlyEpochs++;
      this.early = false;
      epochStartMs = performance.now();
      let sealMs = 0;
      let cp;
      try {
        cp = await this.engine.checkpoint({
          atPause: async (epoch) => {
            const t0 = performance.now();
            for (const gate of this.opts.gates) {
              const sealed = gate.seal();
              assert(sealed === epoch, `output gate ${gate.name} sealed epoch ${sealed}, the checkpoint is epoch ${epoch}`);
            }
            await this.sender.seal(epoch);
            sealMs = performance.now() - t0;
          },
        });
      } catch (e) {
        this.lose(e);
        return;
      }
      this.pauses.add(epochStartMs, cp.timings.pauseMs);
      this.sentEpoch = cp.epoch;
      const { epoch, full, pageCount, timings } = cp;
      let sent;
      try {
        sent = await this.sender.send(cp);
      } catch (e) {
        this.lose(e);
        return;
      }
      // Acked: disk and RAM/devices of this epoch are committed on the backup; its output may leave, even
      // if protection was lost meanwhile (a later epoch's problem).
      this.ackedEpoch = epoch;
      for (const gate of this.opts.gates) gate.release(epoch);
      this.last = { epoch, full, pageCount, wireBytes: sent.wireBytes, timings: { ...timings, sealMs, ackMs: sent.ackMs } };
      this.emit('committed', this.last);
    }
  }

  /** Between epochs (nothing in flight: the last checkpoint sent is acked): the handover itself. */
  private async handOverNow(asked: NonNullable<FtPrimary['handover']>): Promise<void> {
    try {
      await this.sender.handOver(this.ackedEpoch);
    } catch (e) {
      this.lose(e);
      asked.reject(this.lostBecause!);
      return;
    }
    if (this.state !== 'protecting') {
      asked.reject(new LockstepError('FT_PRIMARY', `FT of VM '${this.name}': ${this.state} during its handover`, { vm: this.name, state: this.state }));
      return;
    }
    this.transition('handed-over');
    for (const gate of this.opts.gates) gate.unprotect();
    this.sender.close();
    this.log.info(`FT of VM ${this.name}: handed over after epoch ${this.ackedEpoch}: the backup's copy holds every write; output passes at once`, { vm: this.name, peerCommittedEpoch: this.ackedEpoch });
    asked.resolve();
  }

  /** Resolves at `atMs`, or earlier on `endEpochSoon()` or `stop()`. */
  private async untilEpochEnd(atMs: number): Promise<void> {
    if (this.early) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, Math.max(0, atMs - performance.now()));
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
    this.wake = null;
  }

  private lose(e: unknown): void {
    if (this.state !== 'protecting') return;
    const error = isLockstepError(e) ? e : new LockstepError('CHECKPOINT_LINK', `FT of VM '${this.name}': ${describeError(e)}`, { vm: this.name }, { cause: e });
    this.transition('peer-lost');
    this.lostBecause = error;
    this.wake?.();
    this.log.warn(`FT of VM ${this.name}: protection lost at epoch ${this.sentEpoch} (acked ${this.ackedEpoch}): ${error.message}; output held until the caller decides`, {
      vm: this.name,
      code: error.code,
    });
    this.emit('peerLost', error);
  }

  private transition(to: FtPrimaryState): void {
    assert(TRANSITIONS[this.state].includes(to), `FT primary of ${this.name}: ${this.state} → ${to}`);
    this.state = to;
  }
}
