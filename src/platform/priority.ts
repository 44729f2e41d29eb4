/**
 * Scheduling priority: the Availability Services run ahead of the guests they protect.
 *
 * Why: a host's heartbeats, quorum rounds and fences are small, late work is what loses a pair (a heartbeat
 * 300 ms late makes the peer ask the quorum server; 750 ms late ends the pair lease and fences the VMs).
 * The guests' vCPUs (a TCG vCPU is a thread at 100 % by itself), resyncs and whatever else the host runs all
 * compete for the same cores. Cluster stacks answer this the same way: corosync runs its totem protocol at a
 * real-time priority. Lockstep asks for less: nice −10 for lockstepd and lockstep-quorum (a CFS weight ten
 * times a nice-0 thread's), which keeps a busy daemon from starving the host, and puts the guests' QEMUs back
 * at the nice the daemon was started with.
 *
 * Linux keeps a nice value per thread: raising the calling thread affects the threads it creates later,
 * so call `raiseServicePriority` first thing in a service's main. Without the privilege (not root, no
 * CAP_SYS_NICE) nothing changes and the caller says so.
 */
import { getPriority, setPriority } from 'node:os';
import { describeError } from '../util/errors.js';

/** The nice value of lockstepd and lockstep-quorum. */
export const SERVICE_NICE = -10;

export type PriorityOutcome = { raised: true; from: number; to: number } | { raised: false; nice: number; why: string };

/** How much nicer than this thread the guests' processes run (`guestNiceIncrement`): 0 until raised. */
let guestIncrement = 0;

/** Raises the calling thread (and the threads and processes it starts from now on) to `SERVICE_NICE`. */
export function raiseServicePriority(): PriorityOutcome {
  const from = getPriority(0);
  if (from <= SERVICE_NICE) return { raised: false, nice: from, why: `already at nice ${from}` };
  try {
    setPriority(0, SERVICE_NICE);
  } catch (e) {
    return { raised: false, nice: from, why: describeError(e) };
  }
  guestIncrement = from - SERVICE_NICE;
  return { raised: true, from, to: SERVICE_NICE };
}

/** The `nice -n` increment that puts a guest's QEMU back at the nice this service was started with. */
export function guestNiceIncrement(): number {
  return guestIncrement;
}

/** A line for the service's log. */
export function describePriority(p: PriorityOutcome): string {
  return p.raised ? `scheduling: nice ${p.from} → ${p.to} (guests' QEMUs stay at ${p.from})` : `scheduling: nice ${p.nice} kept (${p.why})`;
}
