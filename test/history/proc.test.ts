/**
 * The resource history's parsers on the kernel's real files (this test process's and a child's it spawns:
 * one that holds 64 MiB and spins), on the oddities the kernel allows (a command name with spaces and
 * parentheses, a kernel thread without VmRSS) and on text that is not what it should be; and the rate
 * arithmetic, including counters that go back and a pid reused by another process.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { Cleanup } from '../support/cleanup.js';
import { childProcess } from './children.js';
import { run } from '../../src/util/exec.js';
import { sleep } from '../../src/util/proc.js';
import {
  counterRate,
  cpuBusyFraction,
  isInterfaceName,
  parseCounter,
  parseCpuTimes,
  parseMeminfo,
  parseProcessStat,
  parseResidentBytes,
  processCores,
  USER_HZ,
} from '../../src/history/proc.js';
import { readCpuTimes, readInterfaceBytes, readMemory, readProcessTimes, readResidentBytes } from '../../src/history/proc-read.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MIB = 1024 * 1024;

test('USER_HZ is what this machine reports', async () => {
  const r = await run('getconf', ['CLK_TCK']);
  assert.equal(Number(r.stdout.trim()), USER_HZ);
});

test("the host's CPU times and memory, from the real /proc", async () => {
  const a = await readCpuTimes();
  assert.ok(a.ok, !a.ok ? a.reason : '');
  assert.ok(a.value.totalTicks > 0 && a.value.busyTicks > 0 && a.value.busyTicks <= a.value.totalTicks);
  await sleep(200);
  const b = await readCpuTimes();
  assert.ok(b.ok);
  const busy = cpuBusyFraction(a.value, b.value);
  assert.ok(busy === null || (busy >= 0 && busy <= 1), String(busy));

  const m = await readMemory();
  assert.ok(m.ok, !m.ok ? m.reason : '');
  const meminfo = await readFile('/proc/meminfo', 'utf8');
  assert.equal(m.value.totalBytes, Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)![1]) * 1024);
  assert.ok(m.value.availableBytes > 0 && m.value.availableBytes <= m.value.totalBytes);
});

test("a busy child's CPU is above zero and its resident memory is what it holds", async () => {
  const { pid } = await childProcess(cleanup, { holdMiB: 64, spin: true });
  const before = await readProcessTimes(pid);
  assert.ok(before.ok, !before.ok ? before.reason : '');
  const t0 = performance.now();
  await sleep(600);
  const after = await readProcessTimes(pid);
  assert.ok(after.ok);
  const cores = processCores(before.value, after.value, performance.now() - t0);
  // A spinning process on a shared 2-core machine gets some of a core, never more than one.
  assert.ok(cores !== null && cores > 0 && cores <= 1.2, `the spinning child used ${cores} cores`);
  const rss = await readResidentBytes(pid);
  assert.ok(rss.ok, !rss.ok ? rss.reason : '');
  assert.ok(rss.value >= 64 * MIB, `the child holds 64 MiB, its RSS is ${rss.value}`);
  assert.ok(rss.value < 512 * MIB, String(rss.value));
  // And this test process's own, read the same way.
  const self = await readResidentBytes(process.pid);
  assert.ok(self.ok && self.value > 0);
});

test('a process that exited is an answer, not a failure', async () => {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  const pid = child.pid!;
  await new Promise((resolve) => child.once('exit', resolve));
  const times = await readProcessTimes(pid);
  assert.deepEqual(times, { ok: false, reason: `process ${pid} has exited`, gone: true });
  const rss = await readResidentBytes(pid);
  assert.equal(rss.ok, false);
  assert.equal(!rss.ok && rss.gone, true);
});

test('network counters of a real interface; a missing one, and a name that is no interface name', async () => {
  const lo = await readInterfaceBytes('lo');
  assert.ok(lo.ok, !lo.ok ? lo.reason : '');
  assert.ok(lo.value.rxBytes >= 0 && lo.value.txBytes >= 0);
  assert.deepEqual(await readInterfaceBytes('nosuch0'), { ok: false, reason: 'no interface nosuch0 in this network namespace' });
  for (const bad of ['../../etc', 'a/b', '', 'x'.repeat(16), 'a b', '..']) {
    assert.equal(isInterfaceName(bad), false, bad);
    assert.equal((await readInterfaceBytes(bad)).ok, false, bad);
  }
  assert.equal(isInterfaceName('br-biz'), true);
});

test('the parsers on what the kernel may write, and on what it would not', () => {
  // guest (9th) and guest_nice are in user and nice already: not counted twice.
  assert.deepEqual(parseCpuTimes('cpu  100 10 50 800 40 0 0 0 30 0\ncpu0 1 2 3 4\n'), { ok: true, value: { busyTicks: 160, totalTicks: 1000 } });
  assert.deepEqual(parseCpuTimes('cpu 1 2 3 4\n'), { ok: true, value: { busyTicks: 6, totalTicks: 10 } });
  assert.equal(parseCpuTimes('intr 1 2 3\n').ok, false);
  assert.equal(parseCpuTimes('cpu  a b c d\n').ok, false);

  assert.deepEqual(parseMeminfo('MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    250 kB\n'), { ok: true, value: { totalBytes: 1000 * 1024, availableBytes: 250 * 1024 } });
  assert.match((parseMeminfo('MemTotal:       1000 kB\n') as { reason: string }).reason, /MemAvailable/);
  assert.equal(parseMeminfo('').ok, false);

  // A command name with spaces and a ')' of its own: fields count from the last ')'.
  const stat = '4242 (qemu (vm) x) S 1 2 3 0 -1 4194304 98 0 0 0 700 300 0 0 20 0 3 0 123456 3133440 394 18446744073709551615';
  assert.deepEqual(parseProcessStat(stat), { ok: true, value: { cpuTicks: 1000, startTicks: 123456 } });
  assert.equal(parseProcessStat('4242 qemu S 1').ok, false);
  assert.equal(parseProcessStat('4242 (qemu) S 1 2').ok, false);

  assert.deepEqual(parseResidentBytes('Name:\tqemu\nVmRSS:\t  2048 kB\n'), { ok: true, value: 2 * MIB });
  assert.equal(parseResidentBytes('Name:\tkthreadd\nState:\tS (sleeping)\n').ok, false, 'a kernel thread has no VmRSS');

  assert.deepEqual(parseCounter('18446744073709551615\n', 'rx'), { ok: true, value: 18446744073709551615 });
  assert.equal(parseCounter('-1\n', 'rx').ok, false);
  assert.equal(parseCounter('', 'rx').ok, false);
});

test('rates: per second over the monotonic elapsed time; none across a reset, a reused pid or no time', () => {
  assert.equal(counterRate(1000, 6000, 5000), 1000);
  assert.equal(counterRate(6000, 1000, 5000), null, 'the interface was made again');
  assert.equal(counterRate(1000, 1000, 0), null);
  assert.equal(cpuBusyFraction({ busyTicks: 100, totalTicks: 1000 }, { busyTicks: 150, totalTicks: 1200 }), 0.25);
  assert.equal(cpuBusyFraction({ busyTicks: 100, totalTicks: 1000 }, { busyTicks: 100, totalTicks: 1000 }), null);
  // 250 ticks in 5 s at 100 ticks a second: half a core.
  assert.equal(processCores({ cpuTicks: 100, startTicks: 7 }, { cpuTicks: 350, startTicks: 7 }, 5000), 0.5);
  assert.equal(processCores({ cpuTicks: 100, startTicks: 7 }, { cpuTicks: 350, startTicks: 9 }, 5000), null, 'another process with the same pid');
  assert.equal(processCores({ cpuTicks: 100, startTicks: 7 }, { cpuTicks: 50, startTicks: 7 }, 5000), null);
});
