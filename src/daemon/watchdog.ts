/**
 * The fencing watchdog: kills every QEMU of this host when the core's authority runs out (`Decision.fenceAt`)
 * unless a later decision moved the time. It runs on its own thread because the decision loop can stall
 * (a disk that takes seconds to fsync, a long garbage collection): the fence must not wait for it.
 */
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';

/** What the decision loop tells the watchdog thread: when to fence, and which processes. */
export interface WatchdogOrder {
  /** `performance.timeOrigin + fenceAt` (fenceAt on the core's clock, which is `performance.now()`); null: never. */
  fenceAtWallMs: number | null;
  pids: number[];
}

export class Watchdog {
  private readonly worker: Worker;
  private fenceAt: number | null = null;
  private pids: number[] = [];

  constructor(onFired: (pids: number[]) => void) {
    this.worker = new Worker(new URL('./watchdog-worker.js', import.meta.url));
    this.worker.on('message', (m: { fired: number[] }) => onFired(m.fired));
    // The thread must not keep the daemon alive on its own.
    this.worker.unref();
  }

  /** Re-arm at `fenceAt` (core clock; null disarms). */
  arm(fenceAt: number | null): void {
    this.fenceAt = fenceAt;
    this.post();
  }

  /** The QEMU processes to kill when the watchdog fires (updated as VMs start and exit). */
  setPids(pids: number[]): void {
    this.pids = pids;
    this.post();
  }

  /** Whether `fenceAt` has passed at `now` (core clock): a start decided before but run after must not happen. */
  expired(now: number): boolean {
    return this.fenceAt !== null && now >= this.fenceAt;
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private post(): void {
    const order: WatchdogOrder = { fenceAtWallMs: this.fenceAt === null ? null : performance.timeOrigin + this.fenceAt, pids: this.pids };
    this.worker.postMessage(order);
  }
}

/** The core's clock: monotonic milliseconds since this process started. */
export function coreNow(): number {
  return Math.floor(performance.now());
}
