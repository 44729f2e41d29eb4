/**
 * The FT primary's figures for status: the pauses of recent epochs (p50, p99, the last one) and the epoch
 * rate over the same window. Pure: times are arguments, so it is tested without clocks.
 */
import { assert } from '../util/assert.js';

/** Epochs kept: at 50 epochs/s about five seconds, enough for a p99 that moves with the load. */
export const PAUSE_WINDOW_EPOCHS = 256;

export interface PauseSummary {
  /** Epochs in the window. */
  epochs: number;
  lastPauseMs: number | null;
  pauseP50Ms: number | null;
  pauseP99Ms: number | null;
  /** Epochs per second between the first and the last epoch in the window; null below two epochs. */
  epochsPerSec: number | null;
}

export class PauseWindow {
  private readonly at: number[] = [];
  private readonly pauses: number[] = [];

  constructor(private readonly size: number = PAUSE_WINDOW_EPOCHS) {
    assert(Number.isSafeInteger(size) && size >= 2, `pause window of ${size} epochs`);
  }

  /** An epoch whose pause began at `atMs` (monotonic) and lasted `pauseMs`. */
  add(atMs: number, pauseMs: number): void {
    this.at.push(atMs);
    this.pauses.push(pauseMs);
    if (this.at.length > this.size) {
      this.at.shift();
      this.pauses.shift();
    }
  }

  summary(): PauseSummary {
    const n = this.pauses.length;
    const sorted = [...this.pauses].sort((a, b) => a - b);
    const pick = (q: number): number | null => (n === 0 ? null : sorted[Math.min(n - 1, Math.ceil(q * n) - 1)]!);
    const spanMs = n >= 2 ? this.at[n - 1]! - this.at[0]! : 0;
    return {
      epochs: n,
      lastPauseMs: n === 0 ? null : this.pauses[n - 1]!,
      pauseP50Ms: pick(0.5),
      pauseP99Ms: pick(0.99),
      epochsPerSec: spanMs > 0 ? ((n - 1) * 1000) / spanMs : null,
    };
  }
}
