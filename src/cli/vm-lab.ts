/**
 * What `lockstep vm create` fills in for a VM made in the lab, as the lab does for its own VMs: for each NIC
 * not given both, the next free guest slot on the business network (an address and a MAC per index,
 * `topology.ts`), the lab's guest image, and the kernel command line that gives the guest every NIC's address. A slot the CLI picks is written in the lab's
 * notebook, so the lab's own VMs (`lab up --vm`) never take it again and `lab status` and `lab record --vm`
 * know the VM.
 */
import { LockstepError } from '../util/errors.js';
import { ensureGuestImage, guestKernelCmdline } from '../lab/guest-image.js';
import { loadLabState, saveLabState, type LabPaths, type LabVm } from '../lab/lab-state.js';
import { GUEST_ADDRESS_FIRST, GUEST_ADDRESS_LAST, NETMASK_BITS, guestAddress, guestMac } from '../lab/topology.js';
import type { VmNicIdentity } from '../daemon/vm-definition.js';

/** What the operator may give of a VM's guest and network identity. */
export interface GuestOptions {
  /** One entry per NIC, in the guest's order; what is not given of one the lab fills in. */
  nics: { mac?: string; address?: string }[];
  kernel?: string;
  initrd?: string;
  cmdline?: string;
}

export interface CompleteGuest {
  nics: VmNicIdentity[];
  kernel: string;
  initrd: string;
  cmdline: string;
}

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
 * the index picked for the first NIC when its MAC or address came from the lab's scheme (null when both
 * were given): the notebook keeps that one. The other NICs' slots are kept by the VM's record, which
 * `taken` holds next time.
 */
export async function labGuest(lab: LabPaths, name: string, given: GuestOptions, taken: readonly Taken[], log: (line: string) => void): Promise<{ guest: CompleteGuest; slot: number | null }> {
  const state = await loadLabState(lab);
  // The given NICs first: a free slot must not be one whose MAC or address another NIC of this VM has.
  const inUse: Taken[] = [...taken, ...(state?.vms ?? []), ...given.nics];
  const slots: (number | null)[] = [];
  const nics = given.nics.map((n) => {
    const slot = n.mac !== undefined && n.address !== undefined ? null : freeGuestSlot(inUse);
    slots.push(slot);
    const nic = { mac: n.mac ?? guestMac(slot!), address: n.address ?? guestAddress(slot!) };
    inUse.push(nic);
    return nic;
  });
  let { kernel, initrd } = given;
  if (kernel === undefined || initrd === undefined) ({ kernel, initrd } = await ensureGuestImage({ log }));
  const [first, ...more] = nics;
  const cmdline =
    given.cmdline ??
    guestKernelCmdline({ ip: `${first!.address}/${NETMASK_BITS}`, hostname: name, moreNics: more.map((n) => ({ mac: n.mac, ip: `${n.address}/${NETMASK_BITS}` })) });
  return { guest: { nics, kernel, initrd, cmdline }, slot: slots[0] ?? null };
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
