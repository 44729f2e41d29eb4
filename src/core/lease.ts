/**
 * Lease arithmetic: how long a host may act on what it last heard, and how long the other side must wait
 * before it may assume the first has stopped. Clocks run at different rates (up to `clockDriftMax`), so a
 * duration measured on one clock is stretched or shrunk by the bound before it is relied on elsewhere.
 */
import type { CoreConfig } from './types.js';

/**
 * A lease the holder measures from `sentAt` (its own clock, before the message that earned it left) is over
 * by this time on the holder's clock, minus the fence margin it keeps for stopping its VMs.
 */
export function holderFenceAt(sentAt: number, leaseMs: number, cfg: CoreConfig): number {
  return sentAt + leaseMs - cfg.fenceMarginMs;
}

/**
 * How long after it last heard the holder the other host waits (on its own clock) until the holder's lease
 * is surely over: the holder's lease began before that message arrived, and its clock may run slow while
 * ours runs fast.
 */
export function waiterSafeAfterMs(leaseMs: number, cfg: CoreConfig): number {
  const rho = cfg.clockDriftMax;
  return Math.ceil((leaseMs * (1 + rho)) / (1 - rho));
}

/**
 * The part of a quorum server's lease the holder may use: the server counts `quorumLeaseMs` from when it
 * received the request (after we sent it) on its own clock, which may run fast relative to ours.
 */
export function quorumLeaseHolderMs(cfg: CoreConfig): number {
  const rho = cfg.clockDriftMax;
  return Math.floor((cfg.quorumLeaseMs * (1 - rho)) / (1 + rho));
}
