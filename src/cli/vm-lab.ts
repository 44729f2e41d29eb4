/**
 * What `lockstep vm create` fills in for a VM made in the lab, as the lab does for its own VMs: the next free
 * guest slot on the business network (an address and a MAC per index, `topology.ts`), the lab's guest image,
 * and the kernel command line that gives the guest its address. A slot the CLI picks is written in the lab's
 * notebook, so the lab's own VMs (`lab up --vm`) never take it again and `lab status` and `lab record --vm`
 * know the VM.
 */
import { LockstepError } from '../util/errors.js';
import { ensureGuestImage, guestKernelCmdline } from '../lab/guest-image.js';
import { loadLabState, saveLabState, type LabPaths, type LabVm } from '../lab/lab-state.js';
import { GUEST_ADDRESS_FIRST, GUEST_ADDRESS_LAST, NETMASK_BITS, guestAddress, guestMac } from '../lab/topology.js';

/** What the operator may give of a VM's guest and network identity. */
export interface GuestOptions {
  mac?: string;
  address?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
}

export type CompleteGuest = Required<GuestOptions>;

/** A NIC identity in use on the business network. */
export interface Taken {
  mac?: string;
  address?: string;
}

/** The lowest guest slot whose address and MAC nobody uses. */
export function freeGuestSlot(taken: readonly Taken[]): number {
  const macs = new Set(taken.map((t) => t.mac?.toLowerCase()));
  const addresses = new Set(taken.map((t) => t.address));
  for (let index = 0; index <= GUEST_ADDRESS_LAST - GUEST_ADDRESS_FIRST; index++) {
    if (!macs.has(guestMac(index)) && !addresses.has(guestAddress(index))) return index;
  }
  throw new LockstepError('INVALID_ARGUMENT', `every lab guest address (${guestAddress(0)}–${guestAddress(GUEST_ADDRESS_LAST - GUEST_ADDRESS_FIRST)}) is taken: give --mac and --address`);
}

/**
 * Fills in what was not given. `taken` is every NIC the pair's VMs and the lab's notebook hold; `slot` is
 * the index picked when the MAC or the address came from the lab's scheme (null when both were given).
 */
export async function labGuest(lab: LabPaths, name: string, given: GuestOptions, taken: readonly Taken[], log: (line: string) => void): Promise<{ guest: CompleteGuest; slot: number | null }> {
  const state = await loadLabState(lab);
  const allTaken = [...taken, ...(state?.vms ?? [])];
  const slot = given.mac !== undefined && given.address !== undefined ? null : freeGuestSlot(allTaken);
  const mac = given.mac ?? guestMac(slot!);
  const address = given.address ?? guestAddress(slot!);
  let { kernel, initrd } = given;
  if (kernel === undefined || initrd === undefined) ({ kernel, initrd } = await ensureGuestImage({ log }));
  const cmdline = given.cmdline ?? guestKernelCmdline({ ip: `${address}/${NETMASK_BITS}`, hostname: name });
  return { guest: { mac, address, kernel, initrd, cmdline }, slot };
}

/** Writes a VM whose slot the CLI picked into the lab's notebook. */
export async function noteLabVm(lab: LabPaths, vm: LabVm): Promise<void> {
  const state = await loadLabState(lab);
  if (!state || state.vms.some((v) => v.name === vm.name)) return;
  state.vms.push(vm);
  await saveLabState(lab, state);
}

/** Drops a removed VM from the lab's notebook, if it is there. */
export async function forgetLabVm(lab: LabPaths, name: string): Promise<void> {
  const state = await loadLabState(lab);
  if (!state || !state.vms.some((v) => v.name === name)) return;
  state.vms = state.vms.filter((v) => v.name !== name);
  await saveLabState(lab, state);
}
