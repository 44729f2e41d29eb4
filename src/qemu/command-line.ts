/**
 * The QEMU command line for a VmSpec. Pure: the same spec and options always give the same argv, which the
 * tests pin and `reapStale` recognises in /proc/PID/cmdline.
 *
 * Choices, and why:
 * - `-machine pc` (i440FX), not q35: the FT checkpoint path (shared RAM file + device-state save + incoming
 *   restore) was measured to work on `pc` with QEMU 7.2, and q35 tripped an assertion in COLO's checkpoint
 *   path here (lab-facts.md). Nothing the guest needs (virtio, ACPI power button) requires PCIe.
 * - `-nodefaults -no-user-config`: every device is one we asked for, so both ends of a migration or a
 *   checkpoint restore build the same machine, whatever /etc/qemu holds.
 * - `-blockdev` with explicit node names (format node `<id>`, file node `<id>-file`), not `-drive`: block
 *   jobs (mirror to the peer's NBD export, incremental backup) and dirty bitmaps address nodes by name.
 * - Tap NICs with `vhost=off`: the FT output path puts filter-redirectors on the netdev, which do not see
 *   packets that vhost moves in the kernel.
 * - `-cpu host` under KVM (fast, but migration needs the same CPU on both hosts); QEMU's default model
 *   under TCG.
 */
import type { VmDisk, VmSpec } from './vm-spec.js';

export type Accel = 'kvm' | 'tcg';

export interface QemuArgsOptions {
  accel: Accel;
  qmpSocket: string;
  serialLog: string;
  /** The guest heartbeat's chardev socket; used when the spec has a heartbeat. */
  heartbeatSocket: string;
  pidFile: string;
  /** `-S`: QEMU starts with the vCPUs stopped until `cont` (for a migration or checkpoint target). */
  paused?: boolean;
  /**
   * `-incoming defer`: QEMU builds the machine and waits for a migration stream, which QMP `migrate-incoming`
   * then opens (`migration.ts`). Deferred rather than a URI on the command line, so capabilities and TLS are
   * set over QMP before the first byte arrives.
   */
  incoming?: boolean;
}

/** The id of the memory backend object, for `-machine memory-backend=` and for QMP (`query-memdev`). */
export const RAM_BACKEND_ID = 'ram0';

export function qemuArgs(spec: VmSpec, opts: QemuArgsOptions): string[] {
  const machine = spec.memoryBackend ? `pc,memory-backend=${RAM_BACKEND_ID}` : 'pc';
  const args: string[] = [
    '-name', `guest=${spec.name},debug-threads=on`,
    '-machine', machine,
    ...(opts.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg']),
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    // Timestamps on QEMU's own messages, so a stderr tail can be lined up with the daemon's log.
    '-msg', 'timestamp=on',
    '-smp', String(spec.vcpus),
    '-m', `${spec.memoryMiB}M`,
  ];
  if (spec.memoryBackend) {
    args.push(
      '-object',
      `memory-backend-file,id=${RAM_BACKEND_ID},size=${spec.memoryMiB}M,mem-path=${optionValue(spec.memoryBackend.path)},share=on`,
    );
  }
  args.push(
    '-chardev', `socket,id=qmp,path=${optionValue(opts.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-chardev', `file,id=serial0,path=${optionValue(opts.serialLog)}`,
    '-serial', 'chardev:serial0',
    // A plain argument, not an option string: no comma escaping.
    '-pidfile', opts.pidFile,
  );
  if (spec.heartbeat) {
    // The guest's second UART (ttyS1): the 8250 driver is built into every x86 kernel, so a guest needs no
    // module or agent package to beat, only a line written now and then.
    args.push(
      '-chardev', `socket,id=heartbeat,path=${optionValue(opts.heartbeatSocket)},server=on,wait=off`,
      '-device', 'isa-serial,chardev=heartbeat,index=1,id=heartbeat',
    );
  }
  if (spec.boot) {
    args.push('-kernel', spec.boot.kernel);
    if (spec.boot.initrd !== undefined) args.push('-initrd', spec.boot.initrd);
    if (spec.boot.cmdline !== undefined) args.push('-append', spec.boot.cmdline);
  }
  spec.disks.forEach((d, i) => {
    // Without a kernel the firmware boots from disk: the first disk first.
    args.push(...diskArgs(d, spec.boot ? undefined : i));
  });
  for (const n of spec.nics) {
    args.push(
      '-netdev', `tap,id=${n.id},ifname=${n.tap},script=no,downscript=no,vhost=off`,
      '-device', `virtio-net-pci,netdev=${n.id},mac=${n.mac},id=${n.id}`,
    );
  }
  if (opts.paused) args.push('-S');
  if (opts.incoming) args.push('-incoming', 'defer');
  return args;
}

/** The file node's name for a disk: block jobs that need the raw file (not the format) name it. */
export function fileNodeName(diskId: string): string {
  return `${diskId}-file`;
}

function diskArgs(d: VmDisk, bootIndex: number | undefined): string[] {
  const cache = d.cache ?? 'writeback';
  // QEMU's cache modes are two switches: O_DIRECT on the file, and whether the device tells the guest it has
  // a volatile write cache (writethrough modes flush after every write instead).
  const direct = cache === 'none' || cache === 'directsync' ? 'on' : 'off';
  const writeCache = cache === 'writeback' || cache === 'none' ? 'on' : 'off';
  const device = [`virtio-blk-pci`, `drive=${d.id}`, `id=${d.id}`, `write-cache=${writeCache}`];
  if (bootIndex !== undefined) device.push(`bootindex=${bootIndex}`);
  return [
    '-blockdev', `driver=file,node-name=${fileNodeName(d.id)},filename=${optionValue(d.path)},cache.direct=${direct},cache.no-flush=off`,
    '-blockdev', `driver=${d.format},node-name=${d.id},file=${fileNodeName(d.id)},cache.direct=${direct},cache.no-flush=off`,
    '-device', device.join(','),
  ];
}

/** QEMU option strings separate keys with commas; a comma inside a value is written twice. */
export function optionValue(v: string): string {
  return v.replaceAll(',', ',,');
}
