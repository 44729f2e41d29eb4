// The change finder: the pure diff, and the copy-and-compare tracker over a plain file standing in for a
// guest's RAM file (what it reads is a file either way).
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CopyCompareTracker, PAGE_BYTES, changedPageRuns } from '../../src/ft/ram-tracker.js';
import { BugError } from '../../src/util/assert.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';
import { rejectionOf } from '../qemu/helpers.js';
import { shmDir } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const P = PAGE_BYTES;
const runsOf = (runs: { firstPage: number; data: Buffer }[]): [number, number][] => runs.map((r) => [r.firstPage, r.data.length / P]);

test('changedPageRuns: nothing, single pages, merged neighbours, first and last page, one byte is enough', async () => {
  const prev = Buffer.alloc(16 * P);
  assert.deepEqual(await changedPageRuns(Buffer.from(prev), prev, P), []);
  const cur = Buffer.from(prev);
  cur[0] = 1; // page 0
  cur[3 * P + P - 1] = 1; // last byte of page 3
  cur[4 * P] = 1; // page 4: touches page 3, one run
  cur[9 * P + 100] = 1;
  cur[15 * P + 5] = 1; // the last page
  const runs = await changedPageRuns(cur, prev, P);
  assert.deepEqual(runsOf(runs), [[0, 1], [3, 2], [9, 1], [15, 1]]);
  // Views into the current buffer, not copies.
  assert.equal(runs[1]!.data.buffer, cur.buffer);
  assert.equal(runs[1]!.data[P - 1], 1);
  assert.deepEqual(runsOf(await changedPageRuns(Buffer.alloc(16 * P, 7), prev, P)), [[0, 16]]);
});

test('changedPageRuns over several slices: runs that cross a slice boundary stay whole, and the event loop turns between slices', async () => {
  const pages = 3 * 4096 + 17; // three whole slices of the yielding diff and a partial one
  const prev = Buffer.alloc(pages * P);
  const cur = Buffer.from(prev);
  // A run across the first slice boundary, one ending on the second, single pages, the last page.
  for (const page of [0, 4090, 4091, 4092, 4093, 4094, 4095, 4096, 4097, 8190, 8191, 9000, pages - 1]) cur[page * P + 7] = 9;
  // An immediate that requeues itself runs once per turn of the loop: only if the diff lets the loop turn.
  let turns = 0;
  let done = false;
  const spin = (): void => {
    turns++;
    if (!done) setImmediate(spin);
  };
  setImmediate(spin);
  const turnsBefore = turns;
  const yielding = await changedPageRuns(cur, prev, P);
  done = true;
  assert.deepEqual(runsOf(yielding), [[0, 1], [4090, 8], [8190, 2], [9000, 1], [pages - 1, 1]]);
  assert.ok(turns - turnsBefore >= 3, `the loop turned between the slices (${turns - turnsBefore} turns)`);
});

test('CopyCompareTracker: the first capture is full; then only what changed in the file; requestFull', async () => {
  const dir = await shmDir(cleanup);
  const file = path.join(dir, 'ram');
  await writeFile(file, Buffer.alloc(64 * P));
  const tracker = await CopyCompareTracker.open(file, 64 * P);
  cleanup.add(() => tracker.close());
  await tracker.capture();
  const first = await tracker.changes();
  assert.equal(first.full, true);
  assert.equal(first.pageCount, 64);
  first.release();

  const fh = await open(file, 'r+');
  await fh.write(Buffer.from([1]), 0, 1, 10 * P + 7);
  await fh.write(Buffer.alloc(2 * P, 9), 0, 2 * P, 40 * P);
  await tracker.capture();
  const second = await tracker.changes();
  assert.equal(second.full, false);
  assert.deepEqual(runsOf(second.runs), [[10, 1], [40, 2]]);
  assert.equal(second.runs[1]!.data[0], 9);

  // Nothing changed: an empty epoch. The second's views are still in use, and this capture does not touch them.
  await tracker.capture();
  const third = await tracker.changes();
  assert.deepEqual(third.runs, []);
  assert.equal(second.runs[1]!.data[0], 9);
  second.release();
  third.release();

  await fh.write(Buffer.from([2]), 0, 1, 63 * P);
  await fh.close();
  tracker.requestFull();
  await tracker.capture();
  const fourth = await tracker.changes();
  assert.equal(fourth.full, true);
  assert.equal(fourth.runs[0]!.data[63 * P], 2);
  fourth.release();
  // After the full one, the diff is against it again.
  await tracker.capture();
  assert.deepEqual((await tracker.changes()).runs, []);
});

test('CopyCompareTracker: a capture over page data still in use is a bug; a wrong file size is CHECKPOINT_CAPTURE', async () => {
  const dir = await shmDir(cleanup);
  const file = path.join(dir, 'ram');
  await writeFile(file, Buffer.alloc(8 * P));
  const tracker = await CopyCompareTracker.open(file, 8 * P);
  cleanup.add(() => tracker.close());
  await tracker.capture();
  tracker.changes(); // not released
  await tracker.capture();
  tracker.changes(); // not released: both buffers in use
  assert.ok((await rejectionOf(tracker.capture())) instanceof BugError);

  const e = await rejectionOf(CopyCompareTracker.open(file, 16 * P));
  assert.ok(e instanceof LockstepError && e.code === 'CHECKPOINT_CAPTURE', String(e));
  assert.match(e.message, /holds 32768 bytes, not the VM's 65536/);
  const missing = await rejectionOf(CopyCompareTracker.open(path.join(dir, 'nope'), 8 * P));
  assert.ok(missing instanceof LockstepError && missing.code === 'CHECKPOINT_CAPTURE');
});
