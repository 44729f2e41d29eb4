/**
 * A VM's CD drive as its definition holds it (src/daemon/vm-definition.ts): the hardware with another
 * virtual CD in the drive, or none. Pure; the API puts the result through the core (`set-hardware`) and
 * into the running QEMU.
 */
import { LockstepError, describeError } from '../util/errors.js';
import type { Vcd } from '../storage/vcd.js';
import type { VcdRef, VmHardware } from './vm-definition.js';

/** `hw` with `medium` in its CD drive; `COMMAND_REFUSED` for a VM defined without one. */
export function withMedium(vm: string, hw: VmHardware, medium: VcdRef | null): VmHardware {
  if (!hw.cdrom) {
    throw new LockstepError('COMMAND_REFUSED', `VM ${vm} has no CD drive (a VM gets one when it is defined: lockstep vm create --cd-drive)`, { command: 'set-hardware', vm });
  }
  return { ...hw, cdrom: { medium } };
}

/** The VMs whose drive holds the virtual CD `vcd` of this host (that name, that very image). */
export function vmsHolding(vms: readonly { name: string; hardware: unknown }[], vcd: VcdRef): string[] {
  return vms.filter((v) => {
    const medium = (v.hardware as { cdrom?: { medium?: VcdRef | null } } | null)?.cdrom?.medium;
    return medium?.vcd === vcd.vcd && medium.sha256 === vcd.sha256;
  }).map((v) => v.name);
}

/**
 * The image of the virtual CD in a VM's drive on this host: the same name and SHA-256 (a VCD is the host's
 * that received it; the peer may hold another image under that name, or none). Without it the VM starts all
 * the same, its drive empty, and `note` says why: a missing installer disc must not keep a protected VM
 * from its restart on the peer.
 */
export async function mediumImage(vm: string, host: string, medium: VcdRef | null, findVcd: (name: string) => Promise<Vcd | null>): Promise<{ image: string | null; note: string | null }> {
  if (medium === null) return { image: null, note: null };
  const empty = (why: string) => ({ image: null, note: `VM ${vm} starts with its CD drive empty: ${why}` });
  let vcd: Vcd | null;
  try {
    vcd = await findVcd(medium.vcd);
  } catch (e) {
    return empty(`its virtual CD '${medium.vcd}' cannot be looked up on ${host}: ${describeError(e)}`);
  }
  if (vcd === null) return empty(`${host} has no virtual CD '${medium.vcd}' (upload it to ${host} and insert it again)`);
  if (vcd.sha256 !== medium.sha256) return empty(`${host}'s virtual CD '${medium.vcd}' is another image (sha256 ${vcd.sha256.slice(0, 12)}…, the VM's is ${medium.sha256.slice(0, 12)}…)`);
  return { image: vcd.path, note: null };
}
