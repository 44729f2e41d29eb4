// After a lockstepd crash: a real "daemon" (a Node process using the supervisor) starts a VM and is killed
// with SIGKILL. Normally the kernel kills its QEMU with it (parent-death signal); a QEMU started without it
// (the test turns it off, as the window between fork and prctl would) is orphaned, and reapStale must kill
// it, leaving alone a process whose pid merely appears in a stale pid file.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile, access } from 'node:fs/promises';
import path from 'node:path';
import { processState, waitGone } from '../../src/util/proc.js';
import { reapStale } from '../../src/qemu/reap.js';
import { VmSupervisor } from '../../src/qemu/supervisor.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, rejectionOf, tempDir } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Starts a Node process that starts VM `name` under `runRoot`, prints QEMU's pid, then idles. */
async function crashingDaemon(runRoot: string, name: string, dieWithParent = false): Promise<{ daemonPid: number; qemuPid: number; killDaemon: () => Promise<void> }> {
  const supervisorUrl = new URL('../../src/qemu/supervisor.js', import.meta.url).href;
  const script = `
    import { VmSupervisor } from ${JSON.stringify(supervisorUrl)};
    const sup = new VmSupervisor({ runRoot: process.env.RUN_ROOT, dieWithParent: process.env.DIE_WITH_PARENT === '1' });
    const vm = await sup.start({ name: process.env.VM, vcpus: 1, memoryMiB: 32, accel: 'tcg' });
    process.stdout.write(vm.pid + '\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, RUN_ROOT: runRoot, VM: name, DIE_WITH_PARENT: dieWithParent ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const closed = new Promise((resolve) => child.on('close', resolve));
  cleanup.add(async () => {
    child.kill('SIGKILL');
    await closed;
  });
  const qemuPid = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    child.on('close', () => reject(new Error(`the daemon exited before starting its VM: ${out}`)));
  });
  // Whatever happens in the test, this QEMU must not outlive it.
  cleanup.add(() => {
    try {
      process.kill(qemuPid, 'SIGKILL');
    } catch {
      /* already gone: the expected case */
    }
  });
  return {
    daemonPid: child.pid!,
    qemuPid,
    killDaemon: async () => {
      child.kill('SIGKILL');
      await closed;
    },
  };
}

test("by default a SIGKILLed daemon's QEMU dies with it: no VM runs on without its daemon's fence", async () => {
  const dir = await tempDir(cleanup);
  const daemon = await crashingDaemon(path.join(dir, 'run'), 'follower', true);
  await daemon.killDaemon();
  assert.ok(await waitGone(daemon.qemuPid, 5000), 'the QEMU was killed by its parent-death signal');
});

test('a QEMU orphaned by a SIGKILLed daemon is killed by reapStale; a recycled pid is left alone', async () => {
  const dir = await tempDir(cleanup);
  const runRoot = path.join(dir, 'run');
  const daemon = await crashingDaemon(runRoot, 'orphan');
  await daemon.killDaemon();
  assert.equal(await processState(daemon.qemuPid), 'alive', 'the QEMU outlived its daemon (no hook runs on SIGKILL)');

  // A run directory whose pid file names an innocent process: what a recycled pid looks like.
  const innocent = spawn('sleep', ['60'], { stdio: 'ignore' });
  const innocentClosed = new Promise((resolve) => innocent.on('close', resolve));
  cleanup.add(async () => {
    innocent.kill('SIGKILL');
    await innocentClosed;
  });
  await mkdir(path.join(runRoot, 'recycled'), { recursive: true });
  await writeFile(path.join(runRoot, 'recycled', 'qemu.pid'), `${innocent.pid}\n`);
  // And one whose process is long gone.
  await mkdir(path.join(runRoot, 'gone'), { recursive: true });
  await writeFile(path.join(runRoot, 'gone', 'qemu.pid'), '999999999\n');

  const killed = await reapStale(runRoot);
  assert.deepEqual(killed, [daemon.qemuPid]);
  assert.notEqual(await processState(daemon.qemuPid), 'alive');
  assert.equal(await processState(innocent.pid!), 'alive', 'the innocent process was not touched');
  for (const d of ['orphan', 'recycled', 'gone']) {
    await assert.rejects(access(path.join(runRoot, d, 'qemu.pid')), `${d}: stale pid file removed`);
  }
  assert.deepEqual(await reapStale(runRoot), [], 'a second reap finds nothing');
  assert.deepEqual(await reapStale(path.join(dir, 'no-such-root')), [], 'a missing run root is nothing to reap');
});

test('a supervisor refuses to start a VM over a live QEMU of the same run directory; after reaping it can', async () => {
  const dir = await tempDir(cleanup);
  const runRoot = path.join(dir, 'run');
  const daemon = await crashingDaemon(runRoot, 'twin');
  await daemon.killDaemon();
  const sup = new VmSupervisor({ runRoot });
  cleanup.add(() => sup.stopAll({ gracefulMs: 0 }));
  const e = await rejectionOf(sup.start({ name: 'twin', vcpus: 1, memoryMiB: 32, accel: 'tcg', disks: [], nics: [] }));
  assert.ok(e instanceof LockstepError && e.code === 'VM_ALREADY_EXISTS', String(e));
  assert.deepEqual(await sup.reapStale(), [daemon.qemuPid]);
  const vm = await sup.start({ name: 'twin', vcpus: 1, memoryMiB: 32, accel: 'tcg', disks: [], nics: [] });
  assert.deepEqual(await sup.reapStale(), [], "the supervisor's own QEMU is spared");
  assert.equal(await processState(vm.pid), 'alive');
});
