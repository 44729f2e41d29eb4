// Mirroring a disk into the peer's copy on real QEMU 7.2 (TCG, no guest; guest writes go through the disk's
// device): a full sync to ready with writes on the copy at once; a resync rate, and a new one taken while
// copying; a peer lost after ready, the guest writing on alone, and an incremental resync of only what
// changed; writes racing the break not lost; targets that cannot be used; stop() mid-sync on a hung target
// and after ready; a stalled sync; the reply parsers.
import { afterEach, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DiskMirror, dirtyBytesOf, parseBlockJobs, parseNodeNames, type MirrorFailure, type MirrorProgress } from '../../src/storage/disk-mirror.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { guestIoBytesOf, readGuestIoBytes, resyncSpeed } from '../../src/storage/resync-rate.js';
import type { QmpEvent } from '../../src/qemu/qmp.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, rejectionOf, tempDir, waitFor } from '../qemu/helpers.js';
import {
  copyHolds,
  guestFlush,
  guestWrite,
  imagesIdentical,
  jobIds,
  nodeNames,
  quitQemu,
  startDiskQemu,
  startPeer,
  type DiskQemu,
  type Peer,
} from './mirror-helpers.js';

const MIB = 1024 * 1024;
const KIB = 1024;
const VM = 'web';
const BARE_NODES = ['vda', 'vda-file'];

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Bench {
  dir: string;
  source: string;
  copy: string;
  qemu: DiskQemu;
  mirror: DiskMirror;
  peer: Peer;
  socketPath: string;
}

/**
 * A VM's QEMU with a `sizeMiB` disk whose first `dataMiB` hold data, tracked by a DiskMirror, then resumed
 * (as the daemon does: attach while paused, then `cont`); and the peer's empty copy of the same size.
 */
async function bench(sizeMiB: number, dataMiB: number, copyMiB = sizeMiB): Promise<Bench> {
  const dir = await tempDir(cleanup, 'lockstep-mirror-test-');
  const source = path.join(dir, 'disk.qcow2');
  const copy = path.join(dir, 'copy.qcow2');
  await createQcow2(source, sizeMiB);
  await createQcow2(copy, copyMiB);
  const qemu = await startDiskQemu(cleanup, dir, source);
  const mirror = await DiskMirror.attach(qemu.qmp, { disk: 'vda', vm: VM });
  await qemu.qmp.execute('cont');
  for (let at = 0; at < dataMiB; at += 16) await guestWrite(qemu, at * MIB, Math.min(16, dataMiB - at) * MIB, 0x5a);
  // As a guest's fsync would: otherwise the switch's `stop`, which flushes every disk, writes this back.
  await guestFlush(qemu);
  const socketPath = path.join(dir, 'copy.sock');
  const peer = await startPeer(cleanup, copy, socketPath, VM);
  return { dir, source, copy, qemu, mirror, peer, socketPath };
}

function startOpts(b: Bench, mode: 'full' | 'incremental', streamId = 'host1.1.1') {
  return { socketPath: b.socketPath, exportName: VM, streamId, mode, progressIntervalMs: 10 } as const;
}

/** Stops the mirror, ends QEMU and the peer (so both images are complete on disk) and compares them. */
async function assertCopyIdentical(b: Bench): Promise<void> {
  await b.mirror.stop();
  await quitQemu(b.qemu);
  await b.peer.kill('SIGTERM');
  const { identical, output } = await imagesIdentical(b.source, b.copy);
  assert.ok(identical, `the peer's copy differs from the disk: ${output}`);
}

function failedOnce(m: DiskMirror, timeoutMs = 10_000): Promise<MirrorFailure> {
  return Promise.race([
    once(m, 'failed').then(([f]) => f as MirrorFailure),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no failed event within ${timeoutMs} ms`)), timeoutMs).unref()),
  ]);
}

function assertMirrorFailed(e: unknown, pattern: RegExp): LockstepError {
  assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
  assert.equal(e.code, 'MIRROR_FAILED', e.message);
  assert.match(e.message, pattern);
  return e;
}

async function assertNothingAttached(b: Bench): Promise<void> {
  assert.deepEqual(await jobIds(b.qemu.qmp), []);
  assert.deepEqual(await nodeNames(b.qemu.qmp), BARE_NODES);
}

for (const sizeMiB of [64, 128]) {
  test(`full sync of a ${sizeMiB} MiB disk reaches ready; writes after ready are on the copy at once`, async (t: TestContext) => {
    const b = await bench(sizeMiB, sizeMiB);
    const progress: MirrorProgress[] = [];
    b.mirror.on('progress', (p) => progress.push(p));
    const startedMs = performance.now();
    const ready = await b.mirror.start(startOpts(b, 'full'));
    const toReadyMs = performance.now() - startedMs;
    t.diagnostic(`${sizeMiB} MiB full: ready in ${toReadyMs.toFixed(0)} ms, ${ready.copiedBytes} bytes, guest paused ${ready.pauseMs.toFixed(1)} ms, ${progress.length} progress events`);

    assert.equal(ready.mode, 'full');
    assert.equal(ready.copiedBytes, sizeMiB * MIB);
    assert.ok(ready.pauseMs > 0 && ready.pauseMs < 1000, `guest paused ${ready.pauseMs} ms`);
    assert.ok(progress.length > 0, 'progress was reported while syncing');
    assert.ok(progress.every((p) => p.copiedBytes <= p.totalBytes && p.totalBytes <= sizeMiB * MIB), JSON.stringify(progress));
    let status = await b.mirror.status();
    assert.deepEqual(status, {
      state: 'ready',
      mode: 'full',
      streamId: 'host1.1.1',
      copiedBytes: sizeMiB * MIB,
      totalBytes: sizeMiB * MIB,
      limitBytesPerSec: null,
      guestBusy: false,
      dirtyBytes: 0,
    });
    assert.equal((await b.qemu.qmp.execute<{ running: boolean }>('query-status')).running, true, 'the guest runs again');

    await guestWrite(b.qemu, 2 * MIB, 64 * KIB, 0x22);
    assert.ok(await copyHolds(b.peer, VM, 2 * MIB, 64 * KIB, 0x22), 'the write is on the copy as soon as the guest has it');
    status = await b.mirror.status();
    assert.equal(status.dirtyBytes, 64 * KIB, 'the bitmap keeps writes since the sync point');
    await assertCopyIdentical(b);
  });
}

test('a resync rate holds the live copying to it; the switch with the guest paused is not limited', async (t: TestContext) => {
  const b = await bench(64, 64);
  const RATE = 24 * MIB;
  const progress: MirrorProgress[] = [];
  b.mirror.on('progress', (p) => progress.push(p));
  const startedMs = performance.now();
  // The guest of this test runs only its firmware: once the mirror's sync point lets it run, the BIOS may read
  // the disk while it boots, and then the busy limit applies; otherwise the ceiling.
  const BUSY_RATE = 4 * MIB;
  const ready = await b.mirror.start({ ...startOpts(b, 'full'), rate: { maxBytesPerSec: RATE, busyBytesPerSec: BUSY_RATE } });
  const tookMs = performance.now() - startedMs;
  t.diagnostic(`64 MiB full at most 24 MiB/s: ready in ${tookMs.toFixed(0)} ms, guest paused ${ready.pauseMs.toFixed(1)} ms`);
  assert.equal(ready.copiedBytes, 64 * MIB);
  // 64 MiB at 24 MiB/s is 2.7 s; QEMU lets one 100 ms slice through at once. A lower bound only: no timing goal.
  assert.ok(tookMs >= 2000, `a 64 MiB sync limited to 24 MiB/s took only ${tookMs.toFixed(0)} ms`);
  // Limited while copying; the switch (guest paused) lifts the limit, so the events it reports come last.
  const firstUnlimited = progress.findIndex((p) => p.limitBytesPerSec === null);
  const copying = firstUnlimited === -1 ? progress : progress.slice(0, firstUnlimited);
  assert.ok(copying.length > 0 && copying.every((p) => p.limitBytesPerSec === (p.guestBusy ? BUSY_RATE : RATE)), JSON.stringify(progress));
  assert.ok(progress.slice(copying.length).every((p) => p.limitBytesPerSec === null && p.copiedBytes === p.totalBytes), JSON.stringify(progress));
  assert.ok(ready.pauseMs < 1000, `guest paused ${ready.pauseMs} ms`);
  await assertCopyIdentical(b);
});

test('a new resync rate while the live copying runs (a preference setter) takes effect at once', async (t: TestContext) => {
  const b = await bench(64, 64);
  const SLOW = 2 * MIB;
  const FAST = 48 * MIB;
  const progress: MirrorProgress[] = [];
  let raised = false;
  b.mirror.on('progress', (p) => {
    progress.push(p);
    if (!raised && p.limitBytesPerSec !== null) {
      raised = true;
      b.mirror.setRate({ maxBytesPerSec: FAST, busyBytesPerSec: FAST });
    }
  });
  const startedMs = performance.now();
  const ready = await b.mirror.start({ ...startOpts(b, 'full'), rate: { maxBytesPerSec: SLOW, busyBytesPerSec: SLOW } });
  const tookMs = performance.now() - startedMs;
  t.diagnostic(`64 MiB full from 2 to 48 MiB/s: ready in ${tookMs.toFixed(0)} ms`);
  assert.equal(ready.copiedBytes, 64 * MIB);
  // At 2 MiB/s the 64 MiB would take 32 s.
  assert.ok(tookMs < 15_000, `the sync took ${tookMs.toFixed(0)} ms: the new rate did not apply`);
  assert.ok(progress.some((p) => p.limitBytesPerSec === SLOW) && progress.some((p) => p.limitBytesPerSec === FAST), JSON.stringify(progress));
  await assertCopyIdentical(b);
});

test('the resync speed: the lower of the ceiling and, while the guest is busy, the busy limit; the guest counters from QEMU', async () => {
  assert.equal(resyncSpeed({ maxBytesPerSec: null, busyBytesPerSec: null }, true), 0, 'no limit is 0 for QEMU');
  assert.equal(resyncSpeed({ maxBytesPerSec: null, busyBytesPerSec: 8 }, false), 0);
  assert.equal(resyncSpeed({ maxBytesPerSec: null, busyBytesPerSec: 8 }, true), 8);
  assert.equal(resyncSpeed({ maxBytesPerSec: 100, busyBytesPerSec: 8 }, false), 100);
  assert.equal(resyncSpeed({ maxBytesPerSec: 5, busyBytesPerSec: 8 }, true), 5, 'a busy limit above the ceiling does not raise it');
  const dir = await tempDir(cleanup, 'lockstep-mirror-test-');
  const source = path.join(dir, 'disk.qcow2');
  await createQcow2(source, 16);
  const qemu = await startDiskQemu(cleanup, dir, source);
  assert.equal(await readGuestIoBytes(qemu.qmp, 'vda'), 0, 'a guest that did nothing has read and written nothing');
  assert.equal(await readGuestIoBytes(qemu.qmp, 'nosuch'), null);
  assert.equal(guestIoBytesOf([{ 'node-name': 'vda', stats: { rd_bytes: 512, wr_bytes: 4096 } }], 'vda'), 4608);
  assert.throws(() => guestIoBytesOf({}, 'vda'), (e: unknown) => e instanceof LockstepError && e.code === 'QMP_PROTOCOL');
  assert.throws(() => guestIoBytesOf([{ 'node-name': 'vda', stats: { wr_bytes: 1 } }], 'vda'), /rd_bytes/);
  await quitQemu(qemu);
});

test('a peer lost after ready: the guest writes on alone; an incremental resync copies only what changed', async (t: TestContext) => {
  const b = await bench(64, 32);
  await b.mirror.start(startOpts(b, 'full'));
  await guestWrite(b.qemu, 1 * MIB, 256 * KIB, 0x31);
  assert.ok(await copyHolds(b.peer, VM, 1 * MIB, 256 * KIB, 0x31));

  const failed = failedOnce(b.mirror);
  await b.peer.kill('SIGKILL');
  await guestWrite(b.qemu, 8 * MIB, 1 * MIB, 0x32); // throws unless the guest's write succeeded
  const failure = await failed;
  assert.equal(failure.streamId, 'host1.1.1');
  assert.match(failure.reason, /ended with Input\/output error/);
  assert.equal(failure.error.code, 'MIRROR_FAILED');
  await guestWrite(b.qemu, 20 * MIB, 512 * KIB, 0x33);
  await waitFor(async () => (await nodeNames(b.qemu.qmp)).length === BARE_NODES.length, 5000, 'the NBD node removed');
  await assertNothingAttached(b);

  const status = await b.mirror.status();
  assert.equal(status.state, 'failed');
  // Every write since the sync point: the one the copy got, the one that broke, the one after.
  const dirtied = status.dirtyBytes;
  assert.equal(dirtied, 256 * KIB + 1 * MIB + 512 * KIB);

  b.peer = await startPeer(cleanup, b.copy, b.socketPath, VM);
  // A write while the first pass runs: kept by the bitmap for the next pass, not lost.
  let duringPass: Promise<void> | undefined;
  b.mirror.once('progress', () => {
    duringPass = guestWrite(b.qemu, 40 * MIB, 128 * KIB, 0x34);
  });
  // Bigger than the paused pass bound, so the resync starts with a live pass.
  await guestWrite(b.qemu, 24 * MIB, 8 * MIB, 0x35);
  const ready = await b.mirror.start(startOpts(b, 'incremental', 'host1.1.2'));
  assert.ok(duringPass, 'progress was reported during the pass');
  await duringPass;
  assert.equal(ready.mode, 'incremental');
  const dirtiedNow = dirtied + 8 * MIB;
  t.diagnostic(`incremental: ${ready.copiedBytes} bytes copied for ${dirtiedNow} dirtied (+128 KiB written during the first pass), guest paused ${ready.pauseMs.toFixed(1)} ms`);
  assert.ok(ready.copiedBytes >= dirtiedNow && ready.copiedBytes <= 2 * dirtiedNow + 128 * KIB, `copied ${ready.copiedBytes} for ${dirtiedNow} dirtied`);
  assert.ok(ready.copiedBytes < (64 * MIB) / 4, 'far less than the disk');
  assert.equal((await b.mirror.status()).dirtyBytes, 0);

  await guestWrite(b.qemu, 50 * MIB, 64 * KIB, 0x36);
  assert.ok(await copyHolds(b.peer, VM, 50 * MIB, 64 * KIB, 0x36), 'synchronous again');
  assert.ok(await copyHolds(b.peer, VM, 40 * MIB, 128 * KIB, 0x34), 'the write during the pass reached the copy');
  await assertCopyIdentical(b);
});

test('writes racing the break are not lost: the bitmap has every one, and the resync brings them over', async (t: TestContext) => {
  const b = await bench(64, 16);
  await b.mirror.start(startOpts(b, 'full'));
  const jobErrors: QmpEvent[] = [];
  b.qemu.qmp.onEvent((e) => {
    if (e.event === 'BLOCK_JOB_ERROR') jobErrors.push(e);
  });
  const failed = failedOnce(b.mirror);
  const WRITES = 64;
  const WRITE_BYTES = 256 * KIB;
  for (let i = 0; i < WRITES; i++) {
    const write = guestWrite(b.qemu, i * 512 * KIB, WRITE_BYTES, 1 + (i % 200));
    // The kill goes out while QEMU has this write in hand, or the next: the first write the copy fails.
    if (i === 20) b.peer.child.kill('SIGKILL');
    await write; // every guest write succeeds, racing the break or not
  }
  await failed;
  await b.peer.exited;
  assert.ok(jobErrors.some((e) => e.data['operation'] === 'write'), 'a guest write failed on the copy');
  assert.equal((await b.mirror.status()).dirtyBytes, WRITES * WRITE_BYTES, 'every write since the sync point is in the bitmap');

  b.peer = await startPeer(cleanup, b.copy, b.socketPath, VM);
  const ready = await b.mirror.start(startOpts(b, 'incremental', 'host1.1.2'));
  t.diagnostic(`incremental after a racing break: ${ready.copiedBytes} bytes copied for ${WRITES * WRITE_BYTES} dirtied, guest paused ${ready.pauseMs.toFixed(1)} ms`);
  assert.equal(ready.copiedBytes, WRITES * WRITE_BYTES);
  await assertCopyIdentical(b);
});

test('a target that cannot be used is a clear MIRROR_FAILED with nothing left attached; the mirror works after', async () => {
  const b = await bench(64, 4);
  const failures: MirrorFailure[] = [];
  b.mirror.on('failed', (f) => failures.push(f));

  const missing = path.join(b.dir, 'nobody.sock');
  let e = assertMirrorFailed(await rejectionOf(b.mirror.start({ ...startOpts(b, 'full'), socketPath: missing })), /cannot open the peer's copy/);
  assert.match(e.message, new RegExp(`${missing}.*No such file or directory`));
  assert.equal(e.fields['streamId'], 'host1.1.1');
  await assertNothingAttached(b);
  assert.equal((await b.mirror.status()).state, 'failed');

  e = assertMirrorFailed(await rejectionOf(b.mirror.start({ ...startOpts(b, 'full'), exportName: 'other' })), /export other.*not available/);
  await assertNothingAttached(b);

  const small = await bench(64, 0, 32);
  e = assertMirrorFailed(await rejectionOf(small.mirror.start(startOpts(small, 'full'))), /different sizes/);
  await assertNothingAttached(small);

  assert.equal(failures.length, 2, 'one failed event per failed start');
  const ready = await b.mirror.start(startOpts(b, 'full'));
  assert.equal(ready.copiedBytes, 64 * MIB);
  assert.equal((await b.mirror.status()).dirtyBytes, 0);
});

test('stop() mid-sync on a hung target and after ready leaves no job and no NBD node', async (t: TestContext) => {
  const b = await bench(128, 128);
  let hung = false;
  b.mirror.on('progress', (p) => {
    if (!hung && p.copiedBytes < p.totalBytes) {
      hung = true;
      b.peer.child.kill('SIGSTOP'); // the copy stops answering, with the mirror's writes in flight
    }
  });
  const starting = rejectionOf(b.mirror.start(startOpts(b, 'full'))); // observed now, so it never goes unhandled
  await waitFor(() => hung, 10_000, 'the sync under way');
  const stoppedAt = performance.now();
  const first = await b.mirror.stop().then(
    () => null,
    (e: unknown) => e,
  );
  const stopMs = performance.now() - stoppedAt;
  t.diagnostic(`stop() with the target hung mid-sync: ${first === null ? 'released' : 'reported'} after ${stopMs.toFixed(0)} ms`);
  // Bounded, not fast: QEMU's monitor can stall behind the hung target, so a QMP command may wait out its
  // own timeout (30 s) before stop() goes on to force and yank. The bound says it ends; it is not a speed goal.
  assert.ok(stopMs < 60_000, `stop took ${stopMs} ms`);
  if (first !== null) {
    // Yank fails the requests waiting for an answer, but not one blocked sending into a unix socket whose
    // reader stopped: QEMU keeps the job until the other end closes, which is the transport's cut.
    assertMirrorFailed(first, /did not let go/);
  }
  await b.peer.kill('SIGKILL');
  await b.mirror.stop();
  const e = assertMirrorFailed(await starting, /was stopped/);
  assert.equal(e.fields['stopped'], true);
  await assertNothingAttached(b);
  assert.equal((await b.mirror.status()).state, 'idle');

  b.peer = await startPeer(cleanup, b.copy, b.socketPath, VM);
  await b.mirror.start(startOpts(b, 'full', 'host1.1.2'));
  await b.mirror.stop();
  await assertNothingAttached(b);
  await b.mirror.stop(); // idempotent
  await guestWrite(b.qemu, 0, 64 * KIB, 0x41);
  const status = await b.mirror.status();
  assert.deepEqual({ state: status.state, mode: status.mode, dirtyBytes: status.dirtyBytes }, { state: 'idle', mode: null, dirtyBytes: 64 * KIB });
});

test('a sync that stops making progress fails after stallTimeoutMs; stop() then clears what QEMU kept', async () => {
  const b = await bench(128, 128);
  const failures: MirrorFailure[] = [];
  b.mirror.on('failed', (f) => failures.push(f));
  b.mirror.once('progress', () => b.peer.child.kill('SIGSTOP'));
  const startedMs = performance.now();
  const e = assertMirrorFailed(await rejectionOf(b.mirror.start({ ...startOpts(b, 'full'), stallTimeoutMs: 300 })), /no progress for 300 ms/);
  assert.ok(performance.now() - startedMs < 10_000);
  assert.notEqual(e.fields['stopped'], true);
  assert.equal(failures.length, 1);
  assert.equal((await b.mirror.status()).state, 'failed');
  await b.peer.kill('SIGKILL'); // the transport's cut
  await b.mirror.stop();
  await assertNothingAttached(b);
});

test('malformed QMP answers are QMP_PROTOCOL errors, a missing bitmap is MIRROR_FAILED', () => {
  const code = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof LockstepError, String(e));
      return e.code;
    }
    throw new Error('expected a throw');
  };
  const nodes = [{ 'node-name': 'vda', 'dirty-bitmaps': [{ granularity: 65536, count: 0 }, { name: 'lockstep-peer', count: 131072 }] }, { 'node-name': 'vda-file' }];
  assert.equal(dirtyBytesOf(nodes, 'vda', 'lockstep-peer'), 131072);
  assert.deepEqual(parseNodeNames(nodes), ['vda', 'vda-file']);
  assert.equal(code(() => dirtyBytesOf(nodes, 'vda', 'other')), 'MIRROR_FAILED');
  assert.equal(code(() => dirtyBytesOf(nodes, 'vdb', 'lockstep-peer')), 'MIRROR_FAILED');
  for (const bad of [null, {}, [1], [{ 'node-name': 'vda', 'dirty-bitmaps': {} }], [{ 'node-name': 'vda', 'dirty-bitmaps': [{ name: 'lockstep-peer', count: '1' }] }], [{ 'node-name': 'vda', 'dirty-bitmaps': [{ name: 'lockstep-peer', count: -1 }] }]]) {
    assert.equal(code(() => dirtyBytesOf(bad, 'vda', 'lockstep-peer')), 'QMP_PROTOCOL', JSON.stringify(bad));
  }
  assert.equal(code(() => parseNodeNames([{ 'node-name': 7 }])), 'QMP_PROTOCOL');
  const job = { device: 'vda-mirror', type: 'mirror', offset: 10, len: 20, ready: false, status: 'running' };
  assert.deepEqual(parseBlockJobs([job]), [{ id: 'vda-mirror', type: 'mirror', offset: 10, len: 20, ready: false }]);
  for (const bad of [{}, [null], [{ ...job, offset: 1.5 }], [{ ...job, ready: 'no' }], [{ ...job, device: undefined }]]) {
    assert.equal(code(() => parseBlockJobs(bad)), 'QMP_PROTOCOL', JSON.stringify(bad));
  }
});
