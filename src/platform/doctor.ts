/**
 * The machine check behind `lockstep doctor`: each check says what it found and what Lockstep will do
 * about it, so a missing piece is a sentence with a package name, never a stack trace later.
 */
import { access, constants, open } from 'node:fs/promises';
import { run, runIn } from '../util/exec.js';
import { probeKvm } from '../qemu/accel.js';

export interface DoctorCheck {
  name: string;
  ok: boolean;
  /** Required for the lab to work at all (as opposed to "works, but slower"). */
  required: boolean;
  found: string;
  consequence: string;
}

export interface DoctorReport {
  ready: boolean;
  checks: DoctorCheck[];
}

export async function runDoctor(): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const root = process.getuid?.() === 0;
  checks.push({ name: 'root', ok: root, required: true, found: root ? 'uid 0' : `uid ${process.getuid?.()}`, consequence: root ? 'can build the lab' : 'the lab needs root (namespaces, mounts)' });

  checks.push(
    await programCheck('qemu', 'qemu-system-x86_64', ['--version'], 'qemu-system-x86', (out) => out.split('\n')[0]!.replace('QEMU emulator version ', ''), 'runs the VMs'),
    await programCheck('qemu-img', 'qemu-img', ['--version'], 'qemu-utils', (out) => out.split('\n')[0]!.replace('qemu-img version ', ''), 'creates and compares disk images'),
  );

  const kvm = await probeKvm();
  checks.push({
    name: 'kvm',
    ok: true,
    required: false,
    found: kvm.usable ? 'usable' : `not usable: ${kvm.reason}`,
    consequence: kvm.usable ? "accel 'auto' uses KVM" : "accel 'auto' uses TCG (software emulation: correct, slower); the lab uses TCG by default",
  });

  checks.push(await netnsCheck(root));
  checks.push(await tunCheck());
  checks.push(await pathCheck('loop devices', '/dev/loop-control', 'each lab host disk is a loop-mounted file system'));
  checks.push(
    await programCheck('busybox-static', 'busybox', ['--help'], 'busybox-static', (out) => out.split('\n')[0]!.trim(), 'the lab guest\'s userland'),
    await programCheck('cpio', 'cpio', ['--version'], 'cpio', (out) => out.split('\n')[0]!, "packs the guest's initramfs"),
    await programCheck('gcc', 'gcc', ['--version'], 'gcc', (out) => out.split('\n')[0]!, 'builds the guest record service and the A-Link wire'),
    await programCheck('xfs_io', 'xfs_io', ['-V'], 'xfsprogs', (out) => out.trim(), "'lab fail HOST disk' shuts the host's file system down"),
    await programCheck('nft', 'nft', ['--version'], 'nftables', (out) => out.trim(), 'packet filtering in the lab'),
  );
  return { ready: checks.every((c) => c.ok || !c.required), checks };
}

async function programCheck(
  name: string,
  cmd: string,
  args: string[],
  pkg: string,
  versionOf: (out: string) => string,
  role: string,
): Promise<DoctorCheck> {
  try {
    const r = await run(cmd, args, { allowFailure: true, timeoutMs: 10_000 });
    return { name, ok: true, required: true, found: versionOf(r.stdout || r.stderr), consequence: role };
  } catch {
    return { name, ok: false, required: true, found: 'missing', consequence: `install Debian package '${pkg}' (npm run setup does)` };
  }
}

async function netnsCheck(root: boolean): Promise<DoctorCheck> {
  if (!root) return { name: 'netns + bridge', ok: false, required: true, found: 'not checked (needs root)', consequence: 'the lab needs network namespaces' };
  const ns = `lsdoctor-${process.pid}`;
  try {
    await run('ip', ['netns', 'add', ns]);
    await runIn(ns, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await runIn(ns, 'ip', ['link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
    return { name: 'netns + bridge', ok: true, required: true, found: 'namespaces, veth and bridges work', consequence: 'builds the lab topology' };
  } catch (e) {
    return { name: 'netns + bridge', ok: false, required: true, found: (e as Error).message.split('\n')[0]!, consequence: 'the lab cannot be built on this kernel' };
  } finally {
    await run('ip', ['netns', 'delete', ns], { allowFailure: true }).catch(() => undefined);
  }
}

async function tunCheck(): Promise<DoctorCheck> {
  try {
    const fh = await open('/dev/net/tun', 'r+');
    await fh.close();
    return { name: 'tun', ok: true, required: true, found: '/dev/net/tun opens', consequence: 'guest NICs are taps on the host bridge' };
  } catch (e) {
    return { name: 'tun', ok: false, required: true, found: (e as Error).message, consequence: 'guests cannot have a network (load the tun module)' };
  }
}

async function pathCheck(name: string, p: string, role: string): Promise<DoctorCheck> {
  try {
    await access(p, constants.R_OK);
    return { name, ok: true, required: true, found: p, consequence: role };
  } catch {
    return { name, ok: false, required: true, found: `${p} missing`, consequence: `needed: ${role}` };
  }
}
