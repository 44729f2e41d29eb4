/**
 * Failover for FT: start the VM on the backup from its store's committed checkpoint.
 *
 * The new QEMU maps the store's RAM image directly as the guest's RAM (`memory-backend-file,share=on`), so no
 * RAM is copied: only the device state is loaded, through QEMU's incoming-migration path (a stream with no
 * RAM section). `xen-load-devices-state` would be the symmetric command, but trips an assertion in QEMU 7.2
 * here (lab-facts.md); the incoming path does not. Steps:
 *
 *   start paused with `-incoming defer` → `migrate-incoming exec:cat <device state>` → wait until it
 *   completed → `cont`
 *
 * The stream has no configuration section and no VM description; no QEMU of the pair expects either
 * (src/qemu/command-line.ts), so neither does this one.
 *
 * While QEMU waits for an incoming stream it does not copy its ROMs into guest RAM (the stream would bring
 * them), so the image stays the checkpoint until `cont`. From then on it is the running guest's RAM: the
 * store is handed over first and takes no more epochs.
 */
import { performance } from 'node:perf_hooks';
import { LockstepError, describeError } from '../util/errors.js';
import { waitForIncomingMigration } from '../qemu/migration.js';
import type { Accel } from '../qemu/command-line.js';
import type { VmInstance, VmSupervisor } from '../qemu/supervisor.js';
import type { VmSpec } from '../qemu/vm-spec.js';
import type { CheckpointStore } from './checkpoint-store.js';

export interface ResumeOptions {
  runDir?: string;
  netns?: string;
  accel?: Accel;
  /** Bound on loading the device state; ~25 ms for a small VM. Default 30 s. */
  loadTimeoutMs?: number;
  /** Leave the guest paused after loading (the caller runs `cont` once its disk and network are ready). */
  paused?: boolean;
}

export interface ResumeResult {
  vm: VmInstance;
  /** The epoch the guest resumed from. */
  epoch: number;
  timings: {
    /** Spawning QEMU until it answers QMP. */
    startMs: number;
    /** `migrate-incoming` until the device state is loaded. */
    loadMs: number;
    contMs: number;
    totalMs: number;
  };
}

const LOAD_TIMEOUT_MS = 30_000;

/**
 * Resumes `spec` (the VM's own spec; its RAM file is replaced by the store's image) from `store`'s committed
 * epoch. Throws `CHECKPOINT_RESUME` (nothing committed, the spec does not fit the store, QEMU failed to start
 * or to load the device state: then its QEMU is stopped), with the cause.
 */
export async function resumeFromCheckpoint(sup: VmSupervisor, store: CheckpointStore, spec: VmSpec, opts: ResumeOptions = {}): Promise<ResumeResult> {
  const fail = (problem: string, cause?: unknown): LockstepError =>
    new LockstepError('CHECKPOINT_RESUME', `cannot resume VM '${spec.name}' from its checkpoint: ${problem}`, { vm: spec.name, epoch: store.committedEpoch }, { cause });
  if (spec.name !== store.vm) throw fail(`the store holds VM '${store.vm}'`);
  if (spec.memoryMiB * 1024 * 1024 !== store.geometry.ramBytes) throw fail(`the spec has ${spec.memoryMiB} MiB of RAM, the checkpoint ${store.geometry.ramBytes} bytes`);
  if (store.committedEpoch === 0) throw fail('the store has no committed epoch');
  const t0 = performance.now();
  let handed;
  try {
    handed = await store.handOver();
  } catch (e) {
    throw fail(describeError(e), e);
  }
  let vm: VmInstance;
  try {
    vm = await sup.start(
      { ...spec, memoryBackend: { path: handed.imagePath } },
      { paused: true, incoming: true, ...(opts.runDir ? { runDir: opts.runDir } : {}), ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.accel ? { accel: opts.accel } : {}) },
    );
  } catch (e) {
    throw fail(describeError(e), e);
  }
  const tStarted = performance.now();
  try {
    // MIGRATION events wake the wait at once instead of at its next poll.
    await vm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await vm.qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(handed.deviceStatePath)}` });
    await waitForIncomingMigration(vm.qmp, { timeoutMs: opts.loadTimeoutMs ?? LOAD_TIMEOUT_MS });
  } catch (e) {
    await vm.stop({ gracefulMs: 0, quitMs: 1000 }).catch(() => undefined);
    throw fail(`loading the device state of epoch ${handed.epoch}: ${describeError(e)}`, e);
  }
  const tLoaded = performance.now();
  if (!opts.paused) {
    try {
      await vm.qmp.execute('cont');
    } catch (e) {
      await vm.stop({ gracefulMs: 0, quitMs: 1000 }).catch(() => undefined);
      throw fail(`cont: ${describeError(e)}`, e);
    }
  }
  const tEnd = performance.now();
  return {
    vm,
    epoch: handed.epoch,
    timings: { startMs: tStarted - t0, loadMs: tLoaded - tStarted, contMs: tEnd - tLoaded, totalMs: tEnd - t0 },
  };
}

/** QEMU runs an `exec:` URI with /bin/sh -c: the path goes in single quotes. */
function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}
