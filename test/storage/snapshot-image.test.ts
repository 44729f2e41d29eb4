// Snapshot images on real QEMU 7.2 (TCG, no guest; guest writes through the disk's device) and real
// qemu-img: a live snapshot holds exactly the disk as it was when it was taken, while the guest writes
// during the backup and after it; the same under HA's write-blocking mirror into an NBD copy (which must
// stay identical to the disk); an offline snapshot; images that must be refused; a volume from an image.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createImage, createQcow2 } from '../../src/storage/disk-image.js';
import { DiskMirror } from '../../src/storage/disk-mirror.js';
import { inspectImage, liveSnapshotProblem, snapshotLive, snapshotOffline, volumeFromImage } from '../../src/storage/snapshot-image.js';
import { run } from '../../src/util/exec.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, rejectionOf, tempDir } from '../qemu/helpers.js';
import { guestFlush, guestWrite, imagesIdentical, jobIds, nodeNames, quitQemu, startDiskQemu, startPeer } from './mirror-helpers.js';
import { ioOk, qemuIo } from './helpers.js';

const MIB = 1024 * 1024;
const cleanup = new Cleanup();

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function codeOf(p: Promise<unknown>): Promise<LockstepError> {
  const e = await rejectionOf(p);
  assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
  return e;
}
afterEach(() => cleanup.run());

/** True if `image` (qcow2) holds `pattern` over the range, read by qemu-io. */
async function holds(image: string, offset: number, bytes: number, pattern: number, fmt: 'qcow2' | 'raw' = 'qcow2'): Promise<boolean> {
  return ioOk(await qemuIo(fmt, image, [`read -P ${pattern} ${offset} ${bytes}`], { readOnly: true }));
}

/** A disk of 64 MiB whose first 32 MiB hold 0x11, in a running QEMU. */
async function writtenDisk(dir: string) {
  const disk = path.join(dir, 'disk.qcow2');
  await createQcow2(disk, 64);
  const qemu = await startDiskQemu(cleanup, dir, disk);
  await qemu.qmp.execute('cont');
  for (let at = 0; at < 32; at += 8) await guestWrite(qemu, at * MIB, 8 * MIB, 0x11);
  await guestFlush(qemu);
  return { disk, qemu };
}

test('a live snapshot holds the disk as it was when taken, while the guest writes during and after the backup', async () => {
  const dir = await tempDir(cleanup, 'lockstep-snap-test-');
  const { disk, qemu } = await writtenDisk(dir);
  const target = path.join(dir, 'snapshots', 'snap1.qcow2');
  const started = deferred();
  await run('mkdir', ['-p', path.dirname(target)]);
  // Writes all over the disk while the backup copies: each lands before or after the job reached its block.
  // Slowed, so that the writes below surely meet blocks the job has not copied yet.
  const taking = snapshotLive(qemu.qmp, target, { source: { kind: 'guest', node: 'vda' }, id: 'snap-1', speedBytesPerSec: 16 * MIB, onPointInTime: () => started.resolve() });
  await started.promise;
  for (let at = 0; at < 48; at += 4) await guestWrite(qemu, at * MIB, 1 * MIB, 0x22);
  assert.deepEqual(await jobIds(qemu.qmp), ['snap-1'], 'the writes were made while the backup ran');
  await taking;
  // And after it.
  await guestWrite(qemu, 40 * MIB, 4 * MIB, 0x33);
  await guestFlush(qemu);
  // The backup's nodes and job are gone: the guest's disk graph is as before.
  assert.deepEqual(await nodeNames(qemu.qmp), ['vda', 'vda-file']);
  assert.deepEqual(await jobIds(qemu.qmp), []);
  await quitQemu(qemu);
  // The snapshot is the first state: 0x11 over 32 MiB, zeros after, none of 0x22 or 0x33.
  assert.ok(await holds(target, 0, 32 * MIB, 0x11), 'the snapshot lost the data written before it');
  assert.ok(await holds(target, 32 * MIB, 32 * MIB, 0), 'the snapshot holds writes made after it started');
  // The disk itself has every write.
  assert.ok(await holds(disk, 0, 1 * MIB, 0x22));
  assert.ok(await holds(disk, 40 * MIB, 4 * MIB, 0x33));
  assert.ok(await holds(disk, 45 * MIB, 1 * MIB, 0));
  assert.deepEqual((await readdir(path.dirname(target))).sort(), ['snap1.qcow2'], 'no temporary file left');
});

test('a live snapshot of a raw volume under a write-blocking mirror to an NBD copy: point-in-time, and the copy stays identical', async () => {
  const dir = await tempDir(cleanup, 'lockstep-snap-test-');
  const disk = path.join(dir, 'disk.raw');
  const copy = path.join(dir, 'copy.raw');
  await createImage(disk, 64, 'raw');
  await createImage(copy, 64, 'raw');
  const qemu = await startDiskQemu(cleanup, dir, disk, { format: 'raw' });
  const mirror = await DiskMirror.attach(qemu.qmp, { disk: 'vda', vm: 'web' });
  await qemu.qmp.execute('cont');
  for (let at = 0; at < 32; at += 8) await guestWrite(qemu, at * MIB, 8 * MIB, 0x11);
  await guestFlush(qemu);
  const socketPath = path.join(dir, 'copy.sock');
  const peer = await startPeer(cleanup, copy, socketPath, 'web', 'raw');
  await mirror.start({ socketPath, exportName: 'web', streamId: 'host1.1.1', mode: 'full', progressIntervalMs: 10 });
  assert.equal((await mirror.status()).state, 'ready', 'the mirror is write-blocking before the snapshot');
  // The format node is the mirror's: QEMU refuses a backup of it, which is why the file node is copied.
  const busy = await codeOf(snapshotLive(qemu.qmp, path.join(dir, 'no.qcow2'), { source: { kind: 'guest', node: 'vda' }, id: 'snap-x' }));
  assert.match(busy.message, /busy|in use/);
  assert.equal(liveSnapshotProblem('raw', true), null);
  const target = path.join(dir, 'snap.qcow2');
  const started = deferred();
  const taking = snapshotLive(qemu.qmp, target, { source: { kind: 'file', node: 'vda-file', format: 'raw' }, id: 'snap-2', speedBytesPerSec: 16 * MIB, onPointInTime: () => started.resolve() });
  await started.promise;
  for (let at = 0; at < 48; at += 4) await guestWrite(qemu, at * MIB, 1 * MIB, 0x22);
  assert.ok((await jobIds(qemu.qmp)).includes('snap-2'), 'the writes were made while the backup ran');
  await taking;
  await guestWrite(qemu, 50 * MIB, 2 * MIB, 0x33);
  await guestFlush(qemu);
  assert.equal((await mirror.status()).state, 'ready', 'the mirror is still in sync after the snapshot');
  assert.ok((await jobIds(qemu.qmp)).every((j) => !j.startsWith('snap')), 'the snapshot job is gone');
  assert.deepEqual((await nodeNames(qemu.qmp)).filter((n) => n.startsWith('snap')), [], "the snapshot's nodes are gone");
  await mirror.stop();
  await quitQemu(qemu);
  await peer.kill('SIGTERM');
  const same = await imagesIdentical(disk, copy, ['raw', 'raw']);
  assert.ok(same.identical, `the HA copy differs from the disk after the snapshot: ${same.output}`);
  assert.equal((await inspectImage(target, 's')).format, 'qcow2');
  assert.ok(await holds(target, 0, 32 * MIB, 0x11), 'the snapshot lost data written before it');
  assert.ok(await holds(target, 32 * MIB, 32 * MIB, 0), 'the snapshot holds later writes');
  assert.ok(await holds(disk, 0, 1 * MIB, 0x22, 'raw'));
  assert.ok(await holds(disk, 50 * MIB, 2 * MIB, 0x33, 'raw'));
  assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.')), [], 'no scratch file left');
});

test('a mirrored qcow2 volume is refused a live snapshot, with why (QEMU 7.2 would abort on its growing file)', () => {
  const why = liveSnapshotProblem('qcow2', true);
  assert.ok(why !== null && /stop the VM/.test(why));
  assert.equal(liveSnapshotProblem('qcow2', false), null);
});

test('a live snapshot that QEMU refuses leaves no file and no node', async () => {
  const dir = await tempDir(cleanup, 'lockstep-snap-test-');
  const { qemu } = await writtenDisk(dir);
  const target = path.join(dir, 'bad.qcow2');
  const e = await rejectionOf(snapshotLive(qemu.qmp, target, { source: { kind: 'guest', node: 'no-such-node' }, id: 'snap-3' }));
  assert.ok(e instanceof LockstepError && e.code === 'SNAPSHOT_FAILED', String(e));
  assert.deepEqual(await nodeNames(qemu.qmp), ['vda', 'vda-file']);
  assert.deepEqual((await readdir(dir)).filter((n) => n.includes('bad')), []);
});

test('an offline snapshot is a qcow2 copy identical to the volume; a volume is made from it in either format', async () => {
  const dir = await tempDir(cleanup, 'lockstep-snap-test-');
  const { disk, qemu } = await writtenDisk(dir);
  await quitQemu(qemu);
  const target = path.join(dir, 'off.qcow2');
  await snapshotOffline(disk, 'qcow2', target);
  assert.ok((await imagesIdentical(disk, target)).identical);
  assert.deepEqual(await inspectImage(target, 't').then((i) => [i.format, i.virtualBytes]), ['qcow2', 64 * MIB]);

  const raw = path.join(dir, 'vm2.raw');
  await volumeFromImage(target, raw, 'raw', 128);
  assert.equal((await inspectImage(raw, 'r')).virtualBytes, 128 * MIB, 'grown to the VM disk size');
  assert.ok(await holds(raw, 0, 32 * MIB, 0x11, 'raw'));
  // A volume is never overwritten, and an image larger than the disk is refused.
  assert.equal((await codeOf(volumeFromImage(target, raw, 'raw', 128))).code, 'DISK_EXISTS');
  const small = await codeOf(volumeFromImage(target, path.join(dir, 'vm3.qcow2'), 'qcow2', 32));
  assert.equal(small.code, 'IMAGE_INVALID');
  assert.ok(!(await readdir(dir)).includes('vm3.qcow2'));
});

test('inspectImage refuses what cannot be a disk: a backing file, an unknown format; accepts raw and qcow2', async () => {
  const dir = await tempDir(cleanup, 'lockstep-snap-test-');
  const base = path.join(dir, 'base.qcow2');
  await createQcow2(base, 8);
  const layered = path.join(dir, 'layer.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', layered]);
  const e1 = await codeOf(inspectImage(layered, 'the upload'));
  assert.equal(e1.code, 'IMAGE_INVALID');
  assert.match(e1.message, /backing file/);
  const vmdk = path.join(dir, 'x.vmdk');
  await run('qemu-img', ['create', '-q', '-f', 'vmdk', vmdk, '8M']);
  assert.match((await codeOf(inspectImage(vmdk, 'the upload'))).message, /format is vmdk/);
  const rawFile = path.join(dir, 'r.img');
  await writeFile(rawFile, Buffer.alloc(MIB, 7));
  assert.deepEqual(await inspectImage(rawFile, 'r'), { format: 'raw', virtualBytes: MIB, actualBytes: (await inspectImage(rawFile, 'r')).actualBytes });
  assert.equal((await inspectImage(base, 'b')).format, 'qcow2');
});
