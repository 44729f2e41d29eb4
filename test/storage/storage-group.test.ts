/**
 * Storage groups: the config section and its defaults, the volume's file name, and a group's usage — the
 * arithmetic on its own, and against a real directory with real files (allocated blocks, not sizes).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileSystemSpace, groupFileAllocations, groupUsage, locateVolume, volumeFile, volumeFitProblem, volumePath } from '../../src/storage/storage-group.js';
import { parseDaemonConfig } from '../../src/daemon/config.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MIB = 1024 * 1024;
const minimal = {
  host: 'host1',
  dataDir: '/var/lib/lockstep',
  pair: { id: 'lab', peer: 'host2', secret: 'a-long-enough-secret' },
  alink: [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }],
};

test('without storageGroups, one group default at <dataDir>/disks: where every disk was before groups', () => {
  const c = parseDaemonConfig(minimal);
  assert.deepEqual(c.storageGroups, [{ name: 'default', path: '/var/lib/lockstep/disks', sizeMiB: null }]);
  assert.equal(volumePath(c.storageGroups[0]!, 'demo', 'qcow2'), '/var/lib/lockstep/disks/demo.qcow2');
});

test('configured groups: names, absolute paths (normalised), optional caps', () => {
  const c = parseDaemonConfig({ ...minimal, storageGroups: [{ name: 'default', path: '/srv/disks/' }, { name: 'fast-ssd', path: '/srv/ssd/../nvme', sizeMiB: 4096 }] });
  assert.deepEqual(c.storageGroups, [
    { name: 'default', path: '/srv/disks', sizeMiB: null },
    { name: 'fast-ssd', path: '/srv/nvme', sizeMiB: 4096 },
  ]);
  assert.equal(locateVolume(c.storageGroups, 'host1', 'web', { storageGroup: 'fast-ssd', format: 'raw' }), '/srv/nvme/web.raw');
  assert.throws(
    () => locateVolume(c.storageGroups, 'host1', 'web', { storageGroup: 'slow', format: 'qcow2' }),
    (e) => isLockstepError(e, 'UNKNOWN_STORAGE_GROUP') && e.fields['storageGroup'] === 'slow' && /not configured on host1/.test(e.message),
  );
});

for (const [what, groups, key] of [
  ['an empty list', [], 'storageGroups'],
  ['not a list', { name: 'default' }, 'storageGroups'],
  ['a bad name', [{ name: 'Fast', path: '/srv/a' }], 'storageGroups[0].name'],
  ['a name too long', [{ name: `g${'x'.repeat(31)}`, path: '/srv/a' }], 'storageGroups[0].name'],
  ['a relative path', [{ name: 'a', path: 'srv/a' }], 'storageGroups[0].path'],
  ['a name twice', [{ name: 'a', path: '/srv/a' }, { name: 'a', path: '/srv/b' }], 'storageGroups[1].name'],
  ['a path twice', [{ name: 'a', path: '/srv/a' }, { name: 'b', path: '/srv/a/' }], 'storageGroups[1].path'],
  ['a zero cap', [{ name: 'a', path: '/srv/a', sizeMiB: 0 }], 'storageGroups[0].sizeMiB'],
  ['a fractional cap', [{ name: 'a', path: '/srv/a', sizeMiB: 1.5 }], 'storageGroups[0].sizeMiB'],
  ['an unknown field', [{ name: 'a', path: '/srv/a', quota: 1 }], 'storageGroups[0].quota'],
] as const) {
  test(`storageGroups: ${what} is refused, naming the field`, () => {
    assert.throws(() => parseDaemonConfig({ ...minimal, storageGroups: groups }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['key'] === key);
  });
}

test('usage arithmetic: capacity is the cap or the file system; free is the lower of what is left of either', () => {
  const fs = { totalBytes: 100 * MIB, freeBytes: 30 * MIB };
  assert.deepEqual(groupUsage(null, fs, [10 * MIB, 5 * MIB]), { capacityBytes: 100 * MIB, usedBytes: 15 * MIB, freeBytes: 30 * MIB, volumeCount: 2 });
  // A cap leaves less than the file system has free.
  assert.deepEqual(groupUsage(20, fs, [10 * MIB, 5 * MIB]), { capacityBytes: 20 * MIB, usedBytes: 15 * MIB, freeBytes: 5 * MIB, volumeCount: 2 });
  // A cap larger than the file system's free space: the file system is the limit.
  assert.equal(groupUsage(1000, fs, []).freeBytes, 30 * MIB);
  // Volumes that grew past the cap: nothing free, never negative.
  assert.equal(groupUsage(10, fs, [12 * MIB]).freeBytes, 0);
});

test("usage against a real directory: allocated blocks of the group's volumes, the file system's figures", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-group-test-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const written = path.join(dir, 'a.raw');
  await writeFile(written, Buffer.alloc(MIB, 1));
  // A sparse file of 64 MiB allocates (next to) nothing: used counts blocks, not sizes.
  const sparse = path.join(dir, 'b.raw');
  await writeFile(sparse, '');
  await truncate(sparse, 64 * MIB);
  const a = await volumeFile(written);
  const b = await volumeFile(sparse);
  assert.ok(a.kind === 'present' && a.allocatedBytes >= MIB && a.allocatedBytes < 2 * MIB, JSON.stringify(a));
  assert.ok(b.kind === 'present' && b.allocatedBytes < MIB, JSON.stringify(b));
  assert.deepEqual(await volumeFile(path.join(dir, 'none.qcow2')), { kind: 'missing' });
  const notFile = await volumeFile(dir);
  assert.equal(notFile.kind, 'unreadable');

  const space = await fileSystemSpace(dir);
  const s = statfsSync(dir);
  assert.equal(space.totalBytes, s.blocks * s.bsize);
  // Free space moves as other tests write: within 64 MiB of a second look is the same file system.
  assert.ok(Math.abs(space.freeBytes - s.bavail * s.bsize) < 64 * MIB);
  // A group whose directory is not made yet: the file system it will be on.
  assert.equal((await fileSystemSpace(path.join(dir, 'later', 'disks'))).totalBytes, space.totalBytes);

  const used = [a, b].map((f) => (f.kind === 'present' ? f.allocatedBytes : 0));
  const capped = groupUsage(2, space, used);
  assert.equal(capped.capacityBytes, 2 * MIB);
  assert.equal(capped.usedBytes, used[0]! + used[1]!);
  assert.equal(capped.freeBytes, Math.max(0, 2 * MIB - capped.usedBytes));
  assert.equal(groupUsage(null, space, used).freeBytes, Math.min(space.freeBytes, space.totalBytes - capped.usedBytes));
});

test("a new copy's fit: its whole size against what the group's files leave, other files not counted", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-fit-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const group = { name: 'small', path: dir, sizeMiB: 4 };
  // A directory not made yet holds nothing.
  assert.deepEqual(await groupFileAllocations({ ...group, path: path.join(dir, 'not-yet') }), []);
  await writeFile(path.join(dir, 'web.raw'), Buffer.alloc(2 * MIB, 1));
  await writeFile(path.join(dir, 'notes.txt'), Buffer.alloc(MIB, 1));
  const allocated = await groupFileAllocations(group);
  assert.equal(allocated.length, 1, 'only volume files count');
  assert.ok(allocated[0]! >= 2 * MIB && allocated[0]! < 3 * MIB, String(allocated[0]));

  const usage = groupUsage(group.sizeMiB, await fileSystemSpace(dir), allocated);
  assert.equal(volumeFitProblem(group, usage, MIB), null);
  const problem = volumeFitProblem(group, usage, 3 * MIB);
  assert.ok(problem !== null && problem.includes("storage group 'small'") && problem.includes('3 MiB volume'), String(problem));
  assert.equal(volumeFitProblem(group, usage, usage.freeBytes), null, 'exactly what is free fits');
  assert.notEqual(volumeFitProblem(group, usage, usage.freeBytes + 1), null);
});
