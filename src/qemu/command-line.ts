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
 *   packets that vhost moves in the kernel. A NIC with an `outputGate` gets them on the command line
 *   (`outputGateArgs`), in the order that works: `fin` (indev) first, then `fout` (outdev).
 * - `-cpu host` under KVM (fast, but migration needs the same CPU on both hosts); QEMU's default model
 *   under TCG.
 */
import type { VmCdrom, VmDisk, VmOutputGate, VmSpec } from './vm-spec.js';

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

/**
 * The id of the memory backend object, for `-machine memory-backend=` and for QMP (`query-memdev`). It is
 * the pc machine's own name for its RAM (`default-ram-id`), so the RAM block has the same name with or
 * without a file behind it: a guest migrates from a QEMU whose RAM is anonymous into one whose RAM is a
 * file (an FT VM moved to a host where it is then checkpointed), and back.
 */
export const RAM_BACKEND_ID = 'pc.ram';

/**
 * Every QEMU of the pair speaks one migration stream format: without the configuration section
 * (`-global migration.send-configuration=off`) and without the VM description after the end
 * (`suppress-vmdesc=on`). An FT checkpoint's device state (`xen-save-devices-state`) has neither, so the
 * QEMU that resumes from it must expect neither (src/ft/resume.ts); and both flags govern what a QEMU sends
 * as well as what it expects, so that resumed guest, live-migrated later, sends neither. With the flags on
 * every QEMU a stream from any of them loads into any other. What QEMU gives up is the configuration
 * section's check of the machine type's name: hosts whose QEMU builds resolve `pc` to different types find
 * out on a device section instead, a failed migration either way.
 */
const STREAM_FORMAT_MACHINE_OPTION = 'suppress-vmdesc=on';
const STREAM_FORMAT_GLOBAL = 'migration.send-configuration=off';

export function qemuArgs(spec: VmSpec, opts: QemuArgsOptions): string[] {
  const machine = ['pc', ...(spec.memoryBackend ? [`memory-backend=${RAM_BACKEND_ID}`] : []), STREAM_FORMAT_MACHINE_OPTION].join(',');
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
  if (spec.cdrom) args.push(...cdromArgs(spec.cdrom));
  for (const n of spec.nics) {
    args.push('-netdev', `tap,id=${n.id},ifname=${n.tap},script=no,downscript=no,vhost=off`);
    if (n.outputGate) args.push(...outputGateArgs(n.id, n.outputGate));
    args.push('-device', `virtio-net-pci,netdev=${n.id},mac=${n.mac},id=${n.id}`);
  }
  args.push('-global', STREAM_FORMAT_GLOBAL);
  if (opts.paused) args.push('-S');
  if (opts.incoming) args.push('-incoming', 'defer');
  return args;
}

/** The QEMU ids of a NIC's output gate: its two chardevs and its two filter-redirectors. */
export interface OutputGateIds {
  /** Socket chardev QEMU reads released frames from (the gate's `toNetwork` socket). */
  toNetworkChardev: string;
  /** Socket chardev QEMU writes the guest's frames to (the gate's `fromGuest` socket). */
  fromGuestChardev: string;
  /** `fin`: reads `toNetworkChardev` and sends what it reads out of the tap. */
  releaseFilter: string;
  /** `fout`: takes the guest's frames off the netdev and writes them to `fromGuestChardev`. */
  holdFilter: string;
}

export function outputGateIds(nicId: string): OutputGateIds {
  return { toNetworkChardev: `${nicId}-gate-net`, fromGuestChardev: `${nicId}-gate-guest`, releaseFilter: `${nicId}-gate-fin`, holdFilter: `${nicId}-gate-fout` };
}

/**
 * A NIC's output gate on the command line. QEMU walks a netdev's `queue=rx` filters last-declared first, so
 * the guest's frames meet `fout` (to the gate) before `fin`, and what `fin` injects goes on to the tap; the
 * other way round, released frames would be taken by `fout` again and loop. The chardevs are clients of the
 * gate's sockets, without `reconnect`: if the gate dies, QEMU drops the NIC's output rather than sending it
 * unheld.
 */
function outputGateArgs(nicId: string, gate: VmOutputGate): string[] {
  const ids = outputGateIds(nicId);
  return [
    '-chardev', `socket,id=${ids.toNetworkChardev},path=${optionValue(gate.toNetwork)}`,
    '-chardev', `socket,id=${ids.fromGuestChardev},path=${optionValue(gate.fromGuest)}`,
    '-object', `filter-redirector,id=${ids.releaseFilter},netdev=${nicId},queue=rx,indev=${ids.toNetworkChardev},vnet_hdr_support=on`,
    '-object', `filter-redirector,id=${ids.holdFilter},netdev=${nicId},queue=rx,outdev=${ids.fromGuestChardev},vnet_hdr_support=on`,
  ];
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

/**
 * The CD drive: `ide-cd` on the `pc` machine's own PIIX IDE controller (secondary master, where a CD drive
 * usually is; no controller to add, and every guest has the driver). Its medium at start is a read-only raw
 * image as block nodes named as a disk's; without one the drive starts empty, its tray closed. The firmware
 * boots it only after the disks (no bootindex).
 */
function cdromArgs(cd: VmCdrom): string[] {
  const device = ['ide-cd', 'bus=ide.1', 'unit=0', `id=${cd.id}`];
  if (cd.medium === null) return ['-device', device.join(',')];
  return [
    '-blockdev', `driver=file,node-name=${fileNodeName(cd.id)},filename=${optionValue(cd.medium)},read-only=on`,
    '-blockdev', `driver=raw,node-name=${cd.id},file=${fileNodeName(cd.id)},read-only=on`,
    '-device', [...device, `drive=${cd.id}`].join(','),
  ];
}

/** QEMU option strings separate keys with commas; a comma inside a value is written twice. */
export function optionValue(v: string): string {
  return v.replaceAll(',', ',,');
}
