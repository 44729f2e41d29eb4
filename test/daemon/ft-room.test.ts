// FT admission on the backup: which FT VMs' checkpoint images fit on the FT tmpfs. The account itself
// (figures in, VMs out), then the watch on a real 64 MiB tmpfs with sparse files as guests and stores make
// them: what it reports to the core, and only when the answer changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtRoomWatch, ftRoomShortfall, type FtBackedVm } from '../../src/daemon/ft-room.js';
import { needsRoot, testTmpfs } from '../support/tmpfs.js';

const MiB = 1024 * 1024;

test('the account: served runs cost nothing more, the others are admitted in name order while room lasts', () => {
  const vm = (name: string, mib: number, served = false): FtBackedVm => ({ vm: name, ramBytes: mib * MiB, served });
  const room = { freeBytes: 100 * MiB, promisedBytes: 20 * MiB };
  assert.deepEqual(ftRoomShortfall(room, []), []);
  // 80 MiB left: b (40) and c (40) fit in name order, then d does not, whatever order they came in.
  assert.deepEqual(ftRoomShortfall(room, [vm('d', 1), vm('c', 40), vm('b', 40)]), ['d']);
  // A served run's store is already in the figures: it neither fails nor takes room from the others.
  assert.deepEqual(ftRoomShortfall(room, [vm('a', 500, true), vm('b', 80)]), []);
  // Exactly full fits; one byte more does not.
  assert.deepEqual(ftRoomShortfall(room, [vm('b', 80)]), []);
  assert.deepEqual(ftRoomShortfall(room, [{ vm: 'b', ramBytes: 80 * MiB + 1, served: false }]), ['b']);
  // A tmpfs promised more than it has left has room for nobody new.
  assert.deepEqual(ftRoomShortfall({ freeBytes: 10 * MiB, promisedBytes: 30 * MiB }, [vm('a', 1), vm('b', 1, true)]), ['a']);
});

const tmpfs = testTmpfs('ft-room', 64);

test('the watch reports to the core what does not fit on a real tmpfs, once per change', { skip: needsRoot }, async () => {
  let backed: FtBackedVm[] = ['a', 'b', 'c'].map((vm) => ({ vm, ramBytes: 24 * MiB, served: false }));
  const reports: string[][] = [];
  const logs: string[] = [];
  const watch = new FtRoomWatch({ memoryDir: tmpfs.dir, backed: () => backed, report: (short) => reports.push(short), log: (l) => logs.push(l) });

  // 64 MiB: a and b fit (48), c does not.
  await watch.check();
  assert.deepEqual(reports, [['c']]);
  assert.match(logs.at(-1)!, /no room in .*memory for the checkpoint image of c \(64 MiB free, 0 MiB promised to files there\): served as HA until there is/);
  await watch.check();
  assert.equal(reports.length, 1, 'the same answer is not reported again');

  // A guest this host runs takes a 40 MiB RAM file (sparse, as QEMU's is): only a fits now.
  const guestRam = path.join(tmpfs.dir, 'guest.ram');
  await writeFile(guestRam, '');
  await truncate(guestRam, 40 * MiB);
  await watch.check();
  assert.deepEqual(reports.at(-1), ['b', 'c']);

  // a's run is served: its store is on the tmpfs (promised) and costs nothing more; nothing changes.
  const store = path.join(tmpfs.dir, 'stores', 'a.1', 'ram.img');
  await mkdir(path.dirname(store), { recursive: true });
  await writeFile(store, '');
  await truncate(store, 24 * MiB);
  backed = backed.map((v) => (v.vm === 'a' ? { ...v, served: true } : v));
  await watch.check();
  assert.equal(reports.length, 2);

  // The guest goes: b fits again, c still not.
  await rm(guestRam);
  await watch.check();
  assert.deepEqual(reports.at(-1), ['c']);

  // c is no longer FT: nothing is short.
  backed = backed.filter((v) => v.vm !== 'c');
  await watch.check();
  assert.deepEqual(reports.at(-1), []);
  assert.match(logs.at(-1)!, /FT memory room in .* for every FT VM backed here/);
  await rm(path.join(tmpfs.dir, 'stores'), { recursive: true });
});

test('a memory directory that cannot be read keeps the last account and says why, once', async () => {
  const reports: string[][] = [];
  const logs: string[] = [];
  const watch = new FtRoomWatch({ memoryDir: path.join(tmpfs.tmp, 'absent'), backed: () => [{ vm: 'a', ramBytes: MiB, served: false }], report: (s) => reports.push(s), log: (l) => logs.push(l) });
  await watch.check();
  await watch.check();
  assert.deepEqual(reports, []);
  assert.equal(logs.length, 1);
  assert.match(logs[0]!, /cannot account the FT memory room in .*absent: .*ENOENT/);
});
