/**
 * The history sampler on this machine's real /proc and /sys: the host's CPU, memory and `lo`'s traffic; a
 * busy child process standing in for a VM's QEMU (its CPU above zero, its resident memory what it holds);
 * that process exiting between rounds (no crash, no point, the reason kept, no log line); an interface that
 * is not there; a storage read that never answers (the other series are still recorded); the bounds on
 * points and on VMs; and a problem logged when it shows and when it clears, not every round.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup } from '../support/cleanup.js';
import { sleep } from '../../src/util/proc.js';
import { HistorySampler, HOST_FAMILIES, VM_FAMILIES, type SampledVm, type SamplerSources, type Series, type StorageSample } from '../../src/history/sampler.js';
import { childProcess } from './children.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

function sources(over: Partial<SamplerSources> & { vmList?: SampledVm[] } = {}): SamplerSources & { vmList: SampledVm[] } {
  const s = {
    vmList: over.vmList ?? [],
    storageGroups: over.storageGroups ?? ['default'],
    networks: over.networks ?? [
      { name: 'mgmt', interface: () => ({ ifname: 'lo' }) },
      { name: 'business', interface: () => ({ ifname: 'nosuch0' }) },
      { name: 'alink1', interface: () => ({ error: 'no interface has the address 10.10.1.1' }) },
    ],
    vms: () => s.vmList,
    storage:
      over.storage ??
      (async (): Promise<StorageSample> => ({
        groups: [{ name: 'default', usedBytes: 3 * GIB, capacityBytes: 10 * GIB, error: null }],
        volumes: s.vmList.map((v) => ({ vm: v.name, allocatedBytes: 200 * MIB })),
      })),
  };
  return s;
}

function series(list: Series[], id: string): Series {
  const s = list.find((x) => x.id === id);
  assert.ok(s, `no series ${id} in ${list.map((x) => x.id).join(', ')}`);
  return s;
}

const VM = (name: string, pid: number): SampledVm => ({ name, pid, vcpus: 2, memoryBytes: 256 * MIB, diskBytes: 1 * GIB });

test("the host's CPU, memory, storage and networks from the real kernel", async () => {
  const lines: string[] = [];
  const sampler = new HistorySampler(sources(), { log: (l) => lines.push(l) });
  await sampler.sampleNow();
  // The first round has nothing to measure a rate against.
  assert.deepEqual(series(sampler.host(0, HOST_FAMILIES).series, 'cpu').points, []);
  await sleep(300);
  await sampler.sampleNow();
  const h = sampler.host(0, HOST_FAMILIES);
  assert.equal(h.intervalMs, 5000);
  assert.equal(h.keptMs, 3600_000);
  assert.deepEqual(
    h.series.map((s) => [s.id, s.family, s.unit]),
    [
      ['cpu', 'cpu', 'ratio'],
      ['memory', 'memory', 'bytes'],
      ['storage.default', 'storage', 'bytes'],
      ['network.mgmt.rx', 'network', 'bytes/s'],
      ['network.mgmt.tx', 'network', 'bytes/s'],
      ['network.business.rx', 'network', 'bytes/s'],
      ['network.business.tx', 'network', 'bytes/s'],
      ['network.alink1.rx', 'network', 'bytes/s'],
      ['network.alink1.tx', 'network', 'bytes/s'],
    ],
  );
  const cpu = series(h.series, 'cpu');
  assert.equal(cpu.points.length, 1);
  assert.ok(cpu.points[0]![1] >= 0 && cpu.points[0]![1] <= 1, String(cpu.points[0]));
  assert.equal(cpu.limit, 1);
  const memory = series(h.series, 'memory');
  assert.equal(memory.points.length, 2);
  assert.ok(memory.limit !== null && memory.points.every(([, v]) => v > 0 && v < memory.limit!));
  const storage = series(h.series, 'storage.default');
  assert.deepEqual([storage.points.map(([, v]) => v), storage.limit, storage.label], [[3 * GIB, 3 * GIB], 10 * GIB, 'default used']);
  const lo = series(h.series, 'network.mgmt.rx');
  assert.equal(lo.label, 'mgmt (lo) received');
  assert.equal(lo.points.length, 1);
  assert.ok(lo.points[0]![1] >= 0);
  const missing = series(h.series, 'network.business.tx');
  assert.deepEqual([missing.points, missing.error], [[], 'no interface nosuch0 in this network namespace']);
  assert.equal(series(h.series, 'network.alink1.rx').error, 'no interface has the address 10.10.1.1');
  // Each problem logged once, though two rounds saw it.
  assert.equal(lines.filter((l) => l.includes('business received not measured: no interface nosuch0')).length, 1, lines.join('\n'));

  // A family asked for alone; only the points after `since`.
  const only = sampler.host(memory.points[0]![0], ['memory']);
  assert.deepEqual(only.series.map((s) => [s.id, s.points.length]), [['memory', 1]]);
});

test("a busy process standing in for a VM's QEMU: its CPU above zero, its resident memory, its volume's allocation", async () => {
  const child = await childProcess(cleanup, { holdMiB: 64, spin: true });
  const src = sources({ vmList: [VM('web', child.pid)] });
  const lines: string[] = [];
  const sampler = new HistorySampler(src, { log: (l) => lines.push(l) });
  assert.equal(sampler.vm('web', 0, VM_FAMILIES), null, 'no history before its first round here');
  await sampler.sampleNow();
  await sleep(600);
  await sampler.sampleNow();
  const vm = sampler.vm('web', 0, VM_FAMILIES)!;
  assert.equal(vm.here, true);
  assert.deepEqual(vm.series.map((s) => [s.id, s.unit]), [['cpu', 'cores'], ['memory', 'bytes'], ['disk', 'bytes']]);
  const cpu = series(vm.series, 'cpu');
  assert.equal(cpu.points.length, 1);
  assert.ok(cpu.points[0]![1] > 0 && cpu.points[0]![1] <= 1.2, `the spinning child used ${cpu.points[0]![1]} cores`);
  assert.equal(cpu.limit, 2, "the VM's cores");
  const rss = series(vm.series, 'memory');
  assert.ok(rss.points.every(([, v]) => v >= 64 * MIB), JSON.stringify(rss.points));
  assert.equal(rss.limit, 256 * MIB);
  assert.deepEqual(series(vm.series, 'disk').points.map(([, v]) => v), [200 * MIB, 200 * MIB]);

  // The QEMU exits between being listed and being read: no crash, no point, the reason, no log line.
  await child.kill();
  await sampler.sampleNow();
  const after = sampler.vm('web', 0, VM_FAMILIES)!;
  assert.equal(series(after.series, 'cpu').points.length, 1);
  assert.equal(series(after.series, 'memory').points.length, 2);
  assert.equal(series(after.series, 'cpu').error, `process ${child.pid} has exited`);
  assert.deepEqual(lines.filter((l) => l.includes('web')), [], lines.join('\n'));
  // No longer listed: its history is kept, and says it does not run here.
  src.vmList = [];
  await sampler.sampleNow();
  assert.equal(sampler.vm('web', 0, VM_FAMILIES)!.here, false);
  assert.equal(series(sampler.vm('web', 0, ['memory'])!.series, 'memory').points.length, 2);
});

test('a storage read that never answers costs only the storage points', async () => {
  const lines: string[] = [];
  const sampler = new HistorySampler(sources({ storage: () => new Promise<StorageSample>(() => {}) }), { storageTimeoutMs: 50, log: (l) => lines.push(l) });
  const t0 = performance.now();
  await sampler.sampleNow();
  await sampler.sampleNow();
  assert.ok(performance.now() - t0 < 2000, 'the rounds did not wait for the storage');
  const h = sampler.host(0, HOST_FAMILIES);
  assert.equal(series(h.series, 'memory').points.length, 2);
  const storage = series(h.series, 'storage.default');
  assert.deepEqual(storage.points, []);
  assert.match(storage.error!, /did not come within 50 ms/);
  assert.equal(lines.filter((l) => l.includes('default used not measured')).length, 1, lines.join('\n'));
});

test('bounds: points per series, VMs kept; a VM forgotten once its newest point leaves the window', async () => {
  let wall = 1_000_000;
  let mono = 0;
  const src = sources({ vmList: [VM('a', process.pid), VM('b', process.pid)] });
  const lines: string[] = [];
  const sampler = new HistorySampler(src, { points: 3, vmsMax: 2, intervalMs: 1000, wallMs: () => wall, monoMs: () => mono, log: (l) => lines.push(l) });
  const round = async (): Promise<void> => {
    await sampler.sampleNow();
    wall += 1000;
    mono += 1000;
  };
  for (let i = 0; i < 5; i++) await round();
  assert.equal(series(sampler.host(0, HOST_FAMILIES).series, 'memory').points.length, 3);
  assert.equal(series(sampler.vm('a', 0, VM_FAMILIES)!.series, 'memory').points.length, 3);
  const fixed = sampler.memoryBytes();

  // A third VM while both places are taken by VMs that run: not recorded, said once.
  src.vmList = [VM('a', process.pid), VM('b', process.pid), VM('c', process.pid)];
  await round();
  await round();
  assert.equal(sampler.vm('c', 0, VM_FAMILIES), null);
  assert.equal(lines.filter((l) => l.includes('VM c not measured: not recorded: the history keeps at most 2 VMs')).length, 1, lines.join('\n'));
  // b stops running here: c takes its place; memory stays what it was.
  src.vmList = [VM('a', process.pid), VM('c', process.pid)];
  await round();
  await round();
  assert.equal(sampler.vm('b', 0, VM_FAMILIES), null);
  assert.ok(sampler.vm('c', 0, VM_FAMILIES) !== null);
  assert.equal(sampler.memoryBytes(), fixed);
  // a stops too: kept for the window (3 points of 1 s), then forgotten.
  src.vmList = [VM('c', process.pid)];
  await round();
  assert.equal(sampler.vm('a', 0, VM_FAMILIES)!.here, false);
  for (let i = 0; i < 4; i++) await round();
  assert.equal(sampler.vm('a', 0, VM_FAMILIES), null);
});

test('a problem is logged when it shows and when it clears', async () => {
  let ifname = 'nosuch0';
  const lines: string[] = [];
  const sampler = new HistorySampler(sources({ networks: [{ name: 'business', interface: () => ({ ifname }) }] }), { log: (l) => lines.push(l) });
  await sampler.sampleNow();
  await sampler.sampleNow();
  ifname = 'lo';
  await sampler.sampleNow();
  await sampler.sampleNow();
  assert.deepEqual(
    lines.filter((l) => l.includes('business')),
    ['history: host business received not measured: no interface nosuch0 in this network namespace', 'history: host business sent not measured: no interface nosuch0 in this network namespace', 'history: host business (lo) received is measured again', 'history: host business (lo) sent is measured again'],
  );
  const rx = series(sampler.host(0, ['network']).series, 'network.business.rx');
  assert.equal(rx.error, null);
  assert.equal(rx.points.length, 1, 'a rate from the second reading of lo on');
});

test('start and stop: rounds on a timer, none after stop', async () => {
  const sampler = new HistorySampler(sources(), { intervalMs: 50, log: () => {} });
  sampler.start();
  await sleep(300);
  await sampler.stop();
  const n = series(sampler.host(0, ['memory']).series, 'memory').points.length;
  assert.ok(n >= 3, `${n} rounds in 300 ms at 50 ms`);
  await sleep(150);
  assert.equal(series(sampler.host(0, ['memory']).series, 'memory').points.length, n);
});
