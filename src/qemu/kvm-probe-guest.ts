/**
 * The guest `probeKvm` boots under KVM: a boot sector that enters long mode, touches 32 MiB and runs a
 * 2^24-iteration loop, then reports through isa-debug-exit. Assembled from `kvm-probe-guest.S` (next to this
 * file, with the reasons); a test rebuilds it with binutils and compares.
 *
 * Why not a simpler guest: on nested or paravirtualized KVM (this lab's), real-mode code runs fine while
 * CPU-bound code crawls, so "the boot sector wrote to a port" would say yes where Linux then hangs.
 */
import { bootSector } from './boot-sector.js';

/** isa-debug-exit turns a byte v written to its port into QEMU's exit status (v << 1) | 1. */
export const KVM_PROBE_EXIT_OK = (0x2a << 1) | 1; // 85: the loop finished with the right sum
export const KVM_PROBE_EXIT_WRONG_SUM = (0x15 << 1) | 1; // 43: the guest ran, but computed a wrong sum

/** QEMU arguments that give the probe guest its exit port (the values the boot sector writes to). */
export const KVM_PROBE_DEBUG_EXIT_DEVICE = 'isa-debug-exit,iobase=0xf4,iosize=0x04';

const CODE_HEX =
  'fa31c08ed88ec08ed0bc007cbf0010b90018f3abc70600100320c70600200330bf003066b883000000b9000266890566' +
  '050000200083c708e2f20f0116f07c0f20c06683c8010f22c0ea4e7c080066b810008ed88ec08ed00f20e083c8200f22' +
  'e0b8001000000f22d8b9800000c00f320d000100000f300f20c00d000000800f22c0ea897c0000180048c7c700001000' +
  '48893f4881c7001000004881ff0000100272ed31c0b9000000014801c848ffc975f848ba0000800000800000b3154839' +
  'd07502b32a88d8e6f4f4ebfd8d7426000000000000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf00' +
  '1f00d07c';

export function kvmProbeBootSector(): Buffer {
  return bootSector(Buffer.from(CODE_HEX, 'hex'));
}
