// Accelerator choice. The machine decides whether KVM works, so these tests assert that the probe ends with
// a verdict and a reason and is cached, not which verdict. The probe guest itself is checked under TCG,
// where its answer is known.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { probeKvm, resolveAccel } from '../../src/qemu/accel.js';
import { findProgram } from '../../src/util/proc.js';
import { KVM_PROBE_DEBUG_EXIT_DEVICE, KVM_PROBE_EXIT_OK, kvmProbeBootSector } from '../../src/qemu/kvm-probe-guest.js';
import { LockstepError } from '../../src/util/errors.js';
import { repoRoot } from '../../src/util/paths.js';
import { Cleanup, tempDir } from './helpers.js';

const exec = promisify(execFile);
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('tcg is tcg, no questions asked', async () => {
  assert.deepEqual(await resolveAccel('tcg'), { accel: 'tcg', reason: 'TCG was asked for' });
});

test('kvm is kvm when /dev/kvm opens, otherwise KVM_UNAVAILABLE with the reason', async () => {
  try {
    assert.equal((await resolveAccel('kvm')).accel, 'kvm');
  } catch (e) {
    assert.ok(e instanceof LockstepError && e.code === 'KVM_UNAVAILABLE', String(e));
    assert.match(e.message, /\/dev\/kvm/);
  }
});

test('auto: the probe ends with a verdict and a reason, caches it for this boot, and auto follows it', { timeout: 60_000 }, async () => {
  const dir = await tempDir(cleanup);
  const cachePath = path.join(dir, 'sub', 'kvm-probe.json');
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(`WARN ${m}`) };
  const first = await probeKvm({ cachePath, log });
  assert.equal(typeof first.usable, 'boolean');
  assert.ok(first.reason.length > 10, first.reason);
  assert.equal(first.cached, false);
  const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  assert.equal(first.bootId, bootId);
  assert.ok(first.durationMs < 15_000, `bounded: ${first.durationMs} ms`);
  // Probes that found /dev/kvm unusable are not cached (a module load fixes that without a reboot).
  if (first.reason.startsWith('/dev/kvm')) return;

  const stored = JSON.parse(await readFile(cachePath, 'utf8')) as Record<string, unknown>;
  assert.equal(stored['bootId'], bootId);
  const started = Date.now();
  const second = await probeKvm({ cachePath });
  assert.equal(second.cached, true);
  assert.deepEqual({ ...second, cached: false }, first);
  assert.ok(Date.now() - started < 1000, 'the cached answer is immediate');

  const verdict = await resolveAccel('auto', { probe: { cachePath }, log });
  assert.equal(verdict.accel, first.usable ? 'kvm' : 'tcg');
  assert.ok(verdict.reason.includes(first.reason));

  // A verdict from another boot is not trusted (a fresh cache path: this process remembers the first one).
  const oldBootCache = path.join(dir, 'old-boot.json');
  await writeFile(oldBootCache, JSON.stringify({ ...stored, bootId: 'another-boot', usable: !first.usable }));
  const afterReboot = await probeKvm({ cachePath: oldBootCache });
  assert.equal(afterReboot.cached, false);
  assert.equal(afterReboot.usable, first.usable);
  assert.equal(JSON.parse(await readFile(oldBootCache, 'utf8')).bootId, bootId, 'rewritten for this boot');
});

test('the probe guest, run under TCG, reaches long mode, computes the right sum and exits 85', async () => {
  const dir = await tempDir(cleanup);
  const image = path.join(dir, 'probe.img');
  await writeFile(image, kvmProbeBootSector());
  const child = spawn(
    'qemu-system-x86_64',
    ['-machine', 'pc', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '64',
      '-drive', `file=${image},format=raw,if=ide`, '-device', KVM_PROBE_DEBUG_EXIT_DEVICE],
    { stdio: 'ignore' },
  );
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  assert.equal(code, KVM_PROBE_EXIT_OK);
});

test('the probe guest bytes are what kvm-probe-guest.S assembles to (when binutils is installed)', async (t) => {
  if (!(await findProgram('as')) || !(await findProgram('ld'))) {
    t.skip('binutils (as, ld) not installed');
    return;
  }
  const dir = await tempDir(cleanup);
  const source = path.join(repoRoot(), 'src', 'qemu', 'kvm-probe-guest.S');
  await exec('as', ['--32', '-o', path.join(dir, 'p.o'), source]);
  await exec('ld', ['-m', 'elf_i386', '-Ttext', '0x7c00', '--oformat', 'binary', '-o', path.join(dir, 'p.img'), path.join(dir, 'p.o')]);
  assert.deepEqual(await readFile(path.join(dir, 'p.img')), kvmProbeBootSector());
});
