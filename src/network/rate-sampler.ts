/**
 * Bandwidth in use on each interface, from successive samples of its byte counters: the difference between
 * the last two samples over the time between them. The sampler has no timer: whoever samples drives it
 * (lockstepd's health loop, every round), and what it answers is as fresh as the last sample, which it says.
 *
 * A rate is only computed between samples of the same interface with counters that went forward: an
 * interface made again under the same name (another ifindex) starts its counters from zero, and the
 * difference across would be meaningless.
 */

export interface CounterSample {
  ifindex: number;
  rxBytes: bigint;
  txBytes: bigint;
  /** Monotonic time of the read (ms), for the interval; and the wall-clock time, for the answer. */
  atMs: number;
  wallMs: number;
}

export type RateReading =
  | { kind: 'measured'; rxBytesPerSec: number; txBytesPerSec: number; overMs: number; wallMs: number }
  | { kind: 'unknown'; reason: string };

/** Samples closer than this say nothing useful about a rate (two reads in one burst of the same round). */
export const RATE_INTERVAL_MS_MIN = 50;
/** A rate whose last sample is older than this is no longer the bandwidth in use: sampling stopped. */
export const RATE_STALE_MS = 10_000;

/** The rate between two samples of one interface, or why there is none. Pure. */
export function rateBetween(before: CounterSample, after: CounterSample): RateReading {
  if (after.ifindex !== before.ifindex) return { kind: 'unknown', reason: 'the interface was made again: its counters start over' };
  if (after.rxBytes < before.rxBytes || after.txBytes < before.txBytes) return { kind: 'unknown', reason: 'the counters went back (the driver reset them)' };
  const overMs = after.atMs - before.atMs;
  if (overMs < RATE_INTERVAL_MS_MIN) return { kind: 'unknown', reason: `samples only ${Math.round(overMs)} ms apart` };
  const perSec = (bytes: bigint): number => Math.round(Number(bytes) / (overMs / 1000));
  return { kind: 'measured', rxBytesPerSec: perSec(after.rxBytes - before.rxBytes), txBytesPerSec: perSec(after.txBytes - before.txBytes), overMs: Math.round(overMs), wallMs: after.wallMs };
}

/** The last two samples of each interface, by name. */
export class RateSampler {
  private readonly samples = new Map<string, { before: CounterSample | null; last: CounterSample }>();

  /** Records a sample of `ifname`; samples must come in time order. */
  observe(ifname: string, sample: CounterSample): void {
    const prior = this.samples.get(ifname);
    this.samples.set(ifname, { before: prior?.last ?? null, last: sample });
  }

  /** Forgets an interface that is gone: its next sample starts afresh. */
  forget(ifname: string): void {
    this.samples.delete(ifname);
  }

  /** `ifname`'s rate over its last two samples, as of monotonic time `nowMs`. */
  rate(ifname: string, nowMs: number): RateReading {
    const s = this.samples.get(ifname);
    if (s === undefined) return { kind: 'unknown', reason: 'not sampled yet' };
    if (nowMs - s.last.atMs > RATE_STALE_MS) return { kind: 'unknown', reason: `last sampled ${Math.round((nowMs - s.last.atMs) / 1000)} s ago` };
    if (s.before === null) return { kind: 'unknown', reason: 'one sample so far: a rate needs two' };
    return rateBetween(s.before, s.last);
  }
}
