// The supervisor on real QEMU (TCG). The VMs have no kernel: SeaBIOS runs and finds nothing to boot, which
// is a live QEMU to supervise at almost no cost. One test boots a 512-byte disk that powers the guest off,
// to see a real guest-initiated shutdown.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { bootSector } from '../../src/qemu/boot-sector.js';
import { readCmdline } from '../../src/util/proc.js';
import { VmSupervisor, type VmInstance } from '../../src/qemu/supervisor.js';
import type { VmSpec } from '../../src/qemu/vm-spec.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, rejectionOf, tempDir } from './helpers.js';

const exec = promisify(execFile);
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function setup(): Promise<{ sup: VmSupervisor; dir: string }> {
  const dir = await tempDir(cleanup);
  const sup = new VmSupervisor({ runRoot: path.join(dir, 'run') });
  cleanup.add(() => sup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  return { sup, dir };
}

const spec = (name: string, extra: Partial<VmSpec> = {}): VmSpec => ({ name, vcpus: 1, memoryMiB: 32, accel: 'tcg', disks: [], nics: [], ...extra });

function assertCode(e: unknown, code: string): LockstepError {
  assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return e;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

test('start: QEMU runs, answers QMP, and its run directory holds socket, pid file and record', async () => {
  const { sup } = await setup();
  const vm = await sup.start(spec('alpha'));
  assert.deepEqual(await vm.qmp.execute('query-status'), { status: 'running', singlestep: false, running: true });
  assert.equal(Number((await readFile(vm.paths.pidFile, 'utf8')).trim()), vm.pid);
  assert.equal(JSON.parse(await readFile(vm.paths.instanceRecord, 'utf8')).pid, vm.pid);
  assert.equal(path.basename((await readCmdline(vm.pid))![0]!), 'qemu-system-x86_64');
  assert.deepEqual(sup.running.map((i) => i.name), ['alpha']);
  assertCode(await rejectionOf(sup.start(spec('alpha'))), 'VM_ALREADY_EXISTS');
});

test('kill -9 from outside is noticed: cause killed, signal SIGKILL, records removed, stderr kept', async () => {
  const { sup } = await setup();
  const vm = await sup.start(spec('beta'));
  process.kill(vm.pid, 'SIGKILL');
  const exit = await vm.exited;
  assert.equal(exit.cause, 'killed');
  assert.equal(exit.signal, 'SIGKILL');
  assert.equal(exit.shutdownReason, null);
  assert.equal(await exists(vm.paths.pidFile), false);
  assert.equal(await exists(vm.paths.instanceRecord), false);
  assert.equal(await exists(vm.paths.stderrLog), true);
  assert.deepEqual(sup.running, []);
});

test('QMP quit: cause quit, with QEMU’s reason host-qmp-quit', async () => {
  const { sup } = await setup();
  const vm = await sup.start(spec('gamma'));
  await vm.qmp.execute('quit').catch(() => undefined); // QEMU may close before the answer is read
  const exit = await vm.exited;
  assert.deepEqual([exit.cause, exit.code, exit.shutdownReason], ['quit', 0, 'host-qmp-quit']);
});

test('SIGTERM from outside: QEMU shuts down cleanly, cause killed, reason host-signal', async () => {
  const { sup } = await setup();
  const vm = await sup.start(spec('delta'));
  process.kill(vm.pid, 'SIGTERM');
  const exit = await vm.exited;
  assert.deepEqual([exit.cause, exit.shutdownReason], ['killed', 'host-signal']);
});

test('the guest powers itself off (ACPI, from a boot sector on a raw virtio disk): cause guest-shutdown', async () => {
  const { sup, dir } = await setup();
  // cli; mov dx, 0x604; mov ax, 0x2000; out dx, ax  (PIIX4 PM1a_CNT: SLP_EN with sleep type 0 = soft off)
  const disk = path.join(dir, 'poweroff.raw');
  await writeFile(disk, Buffer.concat([bootSector(Buffer.from([0xfa, 0xba, 0x04, 0x06, 0xb8, 0x00, 0x20, 0xef, 0xf4, 0xeb, 0xfd])), Buffer.alloc(1024 * 1024 - 512)]));
  // Paused until QMP is up: this guest powers off within milliseconds, before the start's QMP handshake
  // would finish, and a VM that is gone before QMP answers is a failed start, not a guest shutdown.
  const vm = await sup.start(spec('epsilon', { disks: [{ id: 'vda', path: disk, format: 'raw' }] }), { paused: true });
  await vm.qmp.execute('cont').catch(() => undefined); // the guest may power off before the answer is read
  const exit = await vm.exited;
  assert.deepEqual([exit.cause, exit.shutdownReason], ['guest-shutdown', 'guest-shutdown']);
});

test('stop(): power button ignored (no OS), then quit; cause stopped-by-supervisor; a second stop returns the same exit', async () => {
  const { sup } = await setup();
  const vm = await sup.start(spec('zeta'));
  const started = Date.now();
  const exit = await vm.stop({ gracefulMs: 300 });
  assert.equal(exit.cause, 'stopped-by-supervisor');
  assert.equal(exit.shutdownReason, 'host-qmp-quit');
  assert.ok(Date.now() - started < 3000);
  assert.equal(await vm.stop(), exit);
  assert.equal(await vm.exited, exit);
});

test('stopAll ends every VM', async () => {
  const { sup } = await setup();
  const vms: VmInstance[] = [await sup.start(spec('one')), await sup.start(spec('two'))];
  const exits = await sup.stopAll({ gracefulMs: 0 });
  assert.deepEqual(exits.map((e) => e.cause), ['stopped-by-supervisor', 'stopped-by-supervisor']);
  for (const vm of vms) assert.equal(vm.hasExited, true);
  assert.deepEqual(sup.running, []);
});

test('a bad spec is INVALID_SPEC before anything runs', async () => {
  const { sup } = await setup();
  const e = assertCode(await rejectionOf(sup.start({ ...spec('eta'), memoryMiB: 1 })), 'INVALID_SPEC');
  assert.equal(e.fields['field'], 'memoryMiB');
});

test('a missing disk file is VM_START_FAILED with QEMU’s own words, and no QEMU is left', async () => {
  const { sup, dir } = await setup();
  const missing = path.join(dir, 'missing.qcow2');
  const e = assertCode(await rejectionOf(sup.start(spec('theta', { disks: [{ id: 'vda', path: missing, format: 'qcow2' }] }))), 'VM_START_FAILED');
  assert.match(e.message, /Could not open/);
  assert.ok(e.message.includes(missing));
  assert.match(String(e.fields['stderrTail']), /No such file or directory/);
  const { stdout } = await exec('ps', ['-eo', 'args']);
  assert.ok(!stdout.includes(path.join(dir, 'run', 'theta')), 'no QEMU of that run directory is running');
  assert.deepEqual(sup.running, []);
});

test('no qemu-system-x86_64 is MISSING_PREREQUISITE naming the Debian package', async () => {
  const dir = await tempDir(cleanup);
  const sup = new VmSupervisor({ runRoot: dir, qemuBinary: path.join(dir, 'qemu-system-x86_64') });
  const e = assertCode(await rejectionOf(sup.start(spec('iota'))), 'MISSING_PREREQUISITE');
  assert.equal(e.fields['package'], 'qemu-system-x86');
  assert.match(e.message, /qemu-system-x86/);
});

test('disks are named block nodes; RAM can live in a shared file; paused start waits for cont', async () => {
  const { sup, dir } = await setup();
  const image = path.join(dir, 'd,isk.qcow2'); // a comma in the path must survive QEMU's option syntax
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  const ram = `/dev/shm/lockstep-test-${process.pid}.ram`;
  cleanup.add(() => exec('rm', ['-f', ram]));
  const vm = await sup.start(spec('kappa', { memoryBackend: { path: ram }, disks: [{ id: 'vda', path: image, format: 'qcow2', cache: 'writethrough' }] }), { paused: true });
  assert.equal((await vm.qmp.execute<{ status: string }>('query-status')).status, 'prelaunch');
  const nodes = await vm.qmp.execute<{ 'node-name': string; drv: string; file: string }[]>('query-named-block-nodes');
  const byName = new Map(nodes.map((n) => [n['node-name'], n]));
  assert.equal(byName.get('vda')?.drv, 'qcow2');
  assert.equal(byName.get('vda-file')?.drv, 'file');
  assert.equal(byName.get('vda-file')?.file, image);
  const memdev = await vm.qmp.execute<{ id: string; share: boolean; size: number }[]>('query-memdev');
  assert.deepEqual(memdev.map((m) => [m.id, m.share, m.size]), [['pc.ram', true, 32 * 1024 * 1024]]);
  assert.equal((await stat(ram)).size, 32 * 1024 * 1024);
  await vm.qmp.execute('cont');
  assert.equal((await vm.qmp.execute<{ status: string }>('query-status')).status, 'running');
});

test('in a network namespace: the pid is QEMU’s own and its tap is created inside the namespace', async () => {
  const { sup } = await setup();
  const ns = `lsqtest-${process.pid}`;
  await exec('ip', ['netns', 'add', ns]);
  cleanup.add(() => exec('ip', ['netns', 'delete', ns]));
  const vm = await sup.start(spec('lambda', { nics: [{ id: 'net0', mac: '52:54:00:00:00:42', tap: 'tq0' }] }), { netns: ns });
  assert.equal(path.basename((await readCmdline(vm.pid))![0]!), 'qemu-system-x86_64');
  const { stdout } = await exec('nsenter', [`--net=/run/netns/${ns}`, '--', 'ip', 'link', 'show', 'tq0']);
  assert.match(stdout, /tq0/);
  const exit = await vm.stop({ gracefulMs: 0 });
  assert.equal(exit.cause, 'stopped-by-supervisor');
});
