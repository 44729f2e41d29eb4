/**
 * A VM's NICs on the host that runs it: each NIC's QEMU id (netdev, device, and under FT its output gate)
 * and its tap on the business bridge, made before its QEMU starts and removed once it has exited.
 */
import { createHash } from 'node:crypto';
import { run } from '../util/exec.js';
import type { VmNic } from '../qemu/vm-spec.js';
import type { VmNicIdentity } from './vm-definition.js';

/** The QEMU id of the VM's NIC at `index`: `net0` is the first, as it was when a VM had one NIC. */
export function nicId(index: number): string {
  return `net${index}`;
}

/**
 * Interface names are at most 15 bytes. The first NIC's tap is `t-NAME`, as before VMs had several NICs;
 * the others' `t-NAME.N`. A name too long for that keeps its start and a short hash of it, still unique: a
 * VM name has no dot, so no tap of one VM can be another's.
 */
export function tapName(vm: string, index = 0): string {
  const suffix = index === 0 ? '' : `.${index}`;
  const plain = `t-${vm}${suffix}`;
  if (plain.length <= 15) return plain;
  return `t-${vm.slice(0, 8 - suffix.length)}-${createHash('sha256').update(vm).digest('hex').slice(0, 4)}${suffix}`;
}

/** The VM's NICs as QEMU's spec has them, in the definition's order (the guest's eth0 first). */
export function vmNics(vm: string, nics: readonly VmNicIdentity[]): VmNic[] {
  return nics.map((n, i) => ({ id: nicId(i), mac: n.mac, tap: tapName(vm, i) }));
}

/** Each tap exists (one left by an earlier start is reused), is on `bridge` and up. */
export async function ensureTaps(taps: readonly string[], bridge: string): Promise<void> {
  for (const tap of taps) {
    const shown = await run('ip', ['link', 'show', 'dev', tap], { allowFailure: true });
    if (shown.code !== 0) await run('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await run('ip', ['link', 'set', tap, 'master', bridge, 'up']);
  }
}

/** Removes each tap that still exists: they are persistent (`ip tuntap add`), so they outlive their QEMU. */
export async function removeTaps(taps: readonly string[]): Promise<void> {
  for (const tap of taps) {
    const shown = await run('ip', ['link', 'show', 'dev', tap], { allowFailure: true });
    if (shown.code === 0) await run('ip', ['link', 'delete', 'dev', tap]);
  }
}
