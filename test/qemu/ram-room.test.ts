// Room for guest RAM files on a real tmpfs of 64 MiB: sparse files count at their full size, a start that
// would overcommit the tmpfs is refused with the figures, and the VM's own file does not count against it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureRamRoom, ramRoom } from '../../src/qemu/ram-room.js';
import { LockstepError } from '../../src/util/errors.js';
import { needsRoot, testTmpfs } from '../support/tmpfs.js';

const MiB = 1024 * 1024;
const tmpfs = testTmpfs('ram-room', 64);

test('an empty tmpfs has its size free and promises nothing', { skip: needsRoot }, async () => {
  const room = await ramRoom(tmpfs.dir);
  assert.equal(room.freeBytes, 64 * MiB);
  assert.equal(room.promisedBytes, 0);
});

test('a sparse RAM file promises its holes, a touched page is free space used instead', { skip: needsRoot }, async () => {
  const ram = path.join(tmpfs.dir, 'a.ram');
  await truncate(await touch(ram), 24 * MiB);
  assert.deepEqual(await ramRoom(tmpfs.dir), { freeBytes: 64 * MiB, promisedBytes: 24 * MiB });
  // Touch its first MiB, as a guest does: it moves from promised to used.
  const fh = await open(ram, 'r+');
  await fh.write(Buffer.alloc(MiB, 1), 0, MiB, 0);
  await fh.close();
  assert.deepEqual(await ramRoom(tmpfs.dir), { freeBytes: 63 * MiB, promisedBytes: 23 * MiB });
  // Files in subdirectories (the backup's checkpoint stores) count too.
  await mkdir(path.join(tmpfs.dir, 'stores', 'demo.1'), { recursive: true });
  await truncate(await touch(path.join(tmpfs.dir, 'stores', 'demo.1', 'ram.img')), 8 * MiB);
  assert.deepEqual(await ramRoom(tmpfs.dir), { freeBytes: 63 * MiB, promisedBytes: 31 * MiB });
  await rm(path.join(tmpfs.dir, 'stores'), { recursive: true });
  await rm(ram);
});

test('a start that would overcommit the tmpfs is refused with the figures; its own file does not count', { skip: needsRoot }, async () => {
  const other = path.join(tmpfs.dir, 'other.ram');
  await truncate(await touch(other), 40 * MiB);
  const mine = path.join(tmpfs.dir, 'mine.ram');
  await ensureRamRoom(tmpfs.dir, mine, 24 * MiB, 'mine');
  await assert.rejects(ensureRamRoom(tmpfs.dir, mine, 25 * MiB, 'mine'), (e: unknown) => {
    assert.ok(e instanceof LockstepError);
    assert.equal(e.code, 'MEMORY_DIR_FULL');
    assert.deepEqual(e.fields, { dir: tmpfs.dir, vm: 'mine', freeBytes: 64 * MiB, promisedBytes: 40 * MiB, ramBytes: 25 * MiB });
    assert.match(e.message, /has 24 MiB left for guest RAM \(64 MiB free, 40 MiB promised to files there\), VM 'mine' needs 25 MiB/);
    return true;
  });
  // A stale file of the VM's own (a restart) is about to be replaced: it does not count against it.
  await truncate(await touch(mine), 24 * MiB);
  await ensureRamRoom(tmpfs.dir, mine, 24 * MiB, 'mine');
  await assert.rejects(ensureRamRoom(tmpfs.dir, path.join(tmpfs.dir, 'third.ram'), 1 * MiB, 'third'), /has 0 MiB left/);
  await rm(other);
  await rm(mine);
});

test('a directory that cannot be read is a refusal that says why', async () => {
  await assert.rejects(ensureRamRoom(path.join(tmpfs.tmp, 'absent'), path.join(tmpfs.tmp, 'absent', 'x.ram'), MiB, 'x'), (e: unknown) => {
    assert.ok(e instanceof LockstepError);
    assert.equal(e.code, 'MEMORY_DIR_FULL');
    assert.match(e.message, /cannot tell whether .*absent has room for the RAM of VM 'x': .*ENOENT/);
    return true;
  });
});

async function touch(p: string): Promise<string> {
  await writeFile(p, '');
  return p;
}
