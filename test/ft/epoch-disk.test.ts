// The FT per-epoch disk on real QEMU 7.2 and real qemu-nbd: the primary's write-blocking mirror syncs into
// our NBD server straight through to the copy; from the first checkpoint on, an epoch's writes are held
// until it commits; before the commit the copy lacks them, after it has them; reads through the server see
// the pending writes; at failover the uncommitted epoch is dropped and the copy is exactly the source as it
// was at the committed checkpoint.
import { afterEach, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { EpochDisk } from '../../src/ft/epoch-disk.js';
import { CopyExport } from '../../src/storage/copy-export.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { DiskMirror } from '../../src/storage/disk-mirror.js';
import { LockstepError } from '../../src/util/errors.js';
import { run } from '../../src/util/exec.js';
import { Cleanup, tempDir } from '../qemu/helpers.js';
import { guestFlush, guestWrite, imagesIdentical, quitQemu, startDiskQemu, type DiskQemu } from '../storage/mirror-helpers.js';
import { copyFileHolds, guestZero, serverHolds } from './epoch-disk-helpers.js';

const MIB = 1024 * 1024;
const KIB = 1024;
const VM = 'web';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function paused<T>(q: DiskQemu, step: () => Promise<T> | T): Promise<T> {
  await q.qmp.execute('stop');
  try {
    return await step();
  } finally {
    await q.qmp.execute('cont');
  }
}

test('epochs on a real mirror: held until commit, on the copy after, pending reads overlaid, uncommitted dropped at failover', async (t: TestContext) => {
  const dir = await tempDir(cleanup, 'lockstep-epoch-disk-');
  const source = path.join(dir, 'disk.qcow2');
  const copy = path.join(dir, 'copy.qcow2');
  const atCheckpoint1 = path.join(dir, 'source-at-1.qcow2');
  await createQcow2(source, 64);
  await createQcow2(copy, 64);

  // The primary: a VM whose disk has data before FT starts, tracked as the daemon does (attach while paused).
  const qemu = await startDiskQemu(cleanup, dir, source);
  const mirror = await DiskMirror.attach(qemu.qmp, { disk: 'vda', vm: VM });
  await qemu.qmp.execute('cont');
  await guestWrite(qemu, 0, 16 * MIB, 0x5a);
  await guestFlush(qemu);

  // The backup: the copy's qemu-nbd (writeback: the epoch disk flushes at each commit), our server in front.
  const exp = await CopyExport.start({ vm: VM, disk: copy, format: 'qcow2', socketPath: path.join(dir, 'copy.sock'), cache: 'writeback' });
  cleanup.add(() => exp.stop());
  const disk = await EpochDisk.start({ vm: VM, socketPath: path.join(dir, 'ft.sock'), copySocketPath: exp.socketPath });
  cleanup.add(() => disk.close());
  assert.equal(disk.stats().mode, 'direct');

  // Initial sync: straight through to the copy.
  const syncStartMs = performance.now();
  const ready = await mirror.start({ socketPath: path.join(dir, 'ft.sock'), exportName: VM, streamId: 'host1.1.1', mode: 'full' });
  const afterSync = disk.stats().received;
  t.diagnostic(`initial sync of 64 MiB (16 MiB data) ready in ${(performance.now() - syncStartMs).toFixed(0)} ms; mirror sent ${JSON.stringify(afterSync)}`);
  assert.equal(ready.copiedBytes, 64 * MIB);
  assert.ok(afterSync.zeroWrites > 0, 'the mirror sends the empty part of the disk as zero writes (WRITE_ZEROES advertised)');

  // First checkpoint's pause: the copy as it is becomes checkpoint 0; epoch 1 is held from here.
  await paused(qemu, () => disk.hold(1));
  assert.equal(disk.stats().committedEpoch, 0);
  assert.ok(await copyFileHolds(copy, 2 * MIB, 1 * MIB, 0x5a), 'the initial sync is on the copy');

  // Epoch 1: data, an overlapping rewrite (later bytes must win), a zero write.
  await guestWrite(qemu, 2 * MIB, 1 * MIB, 0x11);
  await guestWrite(qemu, 30 * MIB, 64 * KIB, 0x12);
  await guestWrite(qemu, 2 * MIB, 4 * KIB, 0x13);
  await guestZero(qemu, 4 * MIB, 256 * KIB);
  const sealed = await paused(qemu, async () => {
    const s = disk.seal(1);
    // The source now is exactly checkpoint 1 (stop drained and flushed it): kept to compare at the end.
    await run('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'qcow2', source, atCheckpoint1]);
    return s;
  });
  assert.equal(sealed.writes, 4);
  assert.equal(sealed.writtenBytes, 1 * MIB + 64 * KIB + 4 * KIB + 256 * KIB);
  let stats = disk.stats();
  assert.deepEqual(stats.sealedEpochs, [1]);
  assert.equal(stats.openEpoch, 2);
  assert.ok(stats.heldBytes >= 1 * MIB + 68 * KIB, `held ${stats.heldBytes}`);

  // Sealed but not committed: the copy has none of epoch 1, reads through the server have all of it.
  assert.ok(await copyFileHolds(copy, 2 * MIB, 1 * MIB, 0x5a), 'epoch 1 is not on the copy before its commit');
  assert.ok(await copyFileHolds(copy, 4 * MIB, 256 * KIB, 0x5a));
  assert.ok(await copyFileHolds(copy, 30 * MIB, 64 * KIB, 0), 'the copy has zeroes where epoch 1 wrote');
  assert.ok(await serverHolds(dir, VM, 2 * MIB, 4 * KIB, 0x13), 'a read through the server sees the later, overlapping write');
  assert.ok(await serverHolds(dir, VM, 2 * MIB + 4 * KIB, 1 * MIB - 4 * KIB, 0x11));
  assert.ok(await serverHolds(dir, VM, 4 * MIB, 256 * KIB, 0), 'and the pending zero write');

  const committed = await disk.commit(1);
  t.diagnostic(`commit of epoch 1: ${committed.writes} writes, ${committed.writtenBytes} bytes, apply ${committed.applyMs.toFixed(1)} ms, flush ${committed.flushMs.toFixed(1)} ms`);
  stats = disk.stats();
  assert.equal(stats.committedEpoch, 1);
  assert.deepEqual(stats.sealedEpochs, []);
  assert.equal(stats.heldBytes, 0);
  assert.ok(await copyFileHolds(copy, 2 * MIB, 4 * KIB, 0x13), 'after the commit epoch 1 is on the copy, in order');
  assert.ok(await copyFileHolds(copy, 2 * MIB + 4 * KIB, 1 * MIB - 4 * KIB, 0x11));
  assert.ok(await copyFileHolds(copy, 30 * MIB, 64 * KIB, 0x12));
  assert.ok(await copyFileHolds(copy, 4 * MIB, 256 * KIB, 0));

  // Epoch 2, never committed: the primary dies before its checkpoint does.
  await guestWrite(qemu, 40 * MIB, 512 * KIB, 0x21);
  await guestWrite(qemu, 2 * MIB, 64 * KIB, 0x22);
  assert.ok(await serverHolds(dir, VM, 40 * MIB, 512 * KIB, 0x21), 'pending epoch 2 is seen through the server');
  const discard = await disk.discardUncommitted();
  assert.deepEqual(discard, { committedEpoch: 1, discardedEpochs: [2], discardedWrites: 2, discardedBytes: discard.discardedBytes });
  assert.ok(discard.discardedBytes >= 576 * KIB);
  assert.equal(disk.stats().mode, 'closed');
  await assert.rejects(disk.commit(2), (e: unknown) => e instanceof Error && /closed/.test(e.message));

  // Quiesced: the copy is exactly the source at checkpoint 1, not the source now.
  await mirror.stop().catch(() => undefined);
  await quitQemu(qemu);
  await exp.stop();
  const vsCheckpoint = await imagesIdentical(atCheckpoint1, copy);
  assert.ok(vsCheckpoint.identical, `the copy differs from the source at checkpoint 1: ${vsCheckpoint.output}`);
  assert.equal((await imagesIdentical(source, copy)).identical, false, 'epoch 2 is on the source only');
});

test('an epoch disk that cannot reach its copy, or asks for an export it does not have, says so; closed before hold it is no checkpoint', async () => {
  const dir = await tempDir(cleanup, 'lockstep-epoch-disk-');
  const copy = path.join(dir, 'copy.qcow2');
  await createQcow2(copy, 16);
  const exp = await CopyExport.start({ vm: VM, disk: copy, format: 'qcow2', socketPath: path.join(dir, 'copy.sock') });
  cleanup.add(() => exp.stop());
  const isEpochDisk = (pattern: RegExp) => (e: unknown) => e instanceof LockstepError && e.code === 'EPOCH_DISK' && pattern.test(e.message);
  await assert.rejects(EpochDisk.start({ vm: VM, socketPath: path.join(dir, 'ft.sock'), copySocketPath: path.join(dir, 'none.sock') }), isEpochDisk(/cannot reach its copy.*ENOENT/));
  await assert.rejects(EpochDisk.start({ vm: 'other', socketPath: path.join(dir, 'ft.sock'), copySocketPath: exp.socketPath }), isEpochDisk(/refused export other: ERR_UNKNOWN/));
  const disk = await EpochDisk.start({ vm: VM, socketPath: path.join(dir, 'ft.sock'), copySocketPath: exp.socketPath });
  cleanup.add(() => disk.close());
  await assert.rejects(disk.discardUncommitted(), isEpochDisk(/no checkpoint yet/));
});
