// The backup's store and the stream into it, with made-up checkpoints (the QEMU path is ft-failover and
// ft-faults): the commit rule, what survives a torn apply, and broken streams that leave the last committed
// epoch as it was.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Checkpoint } from '../../src/ft/checkpoint.js';
import { CheckpointSender, receiveCheckpoints } from '../../src/ft/checkpoint-link.js';
import { CheckpointStore } from '../../src/ft/checkpoint-store.js';
import { encodeCheckpoint, encodeControl, type StagedCheckpoint } from '../../src/ft/checkpoint-wire.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';
import { rejectionOf } from '../qemu/helpers.js';
import { shmDir, socketPair } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const P = 4096;
const RAM = 256 * P;
const geometry = { vm: 'web', pageBytes: P, ramBytes: RAM };

function staged(epoch: number, full: boolean, runs: [number, number, number][]): StagedCheckpoint {
  const r = runs.map(([firstPage, count, fill]) => ({ firstPage, data: Buffer.alloc(count * P, fill) }));
  return { vm: 'web', epoch, full, pageBytes: P, ramBytes: RAM, runs: r, pageCount: r.reduce((n, x) => n + x.data.length / P, 0), deviceState: Buffer.from(`device ${epoch}`), wireBytes: 0 };
}

function asCheckpoint(s: StagedCheckpoint): Checkpoint {
  const timings = { pauseMs: 0, stopMs: 0, ramCopyMs: 0, deviceSaveMs: 0, contMs: 0, diffMs: 0, deviceReadMs: 0 };
  return { ...s, timings, release: () => undefined };
}

function storeError(e: unknown, re: RegExp): void {
  assert.ok(e instanceof LockstepError && e.code === 'CHECKPOINT_STORE', String(e));
  assert.match(e.message, re);
}

async function openStore(dir: string): Promise<CheckpointStore> {
  const s = await CheckpointStore.open(dir, geometry);
  cleanup.add(() => s.close());
  return s;
}

test('commit rule: a full image first, then consecutive epochs; a gap is refused; a later full image re-seeds', async () => {
  const dir = path.join(await shmDir(cleanup), 'store');
  const store = await openStore(dir);
  assert.equal(store.committedEpoch, 0);
  storeError(await rejectionOf(store.commit(staged(1, false, [[0, 1, 1]]))), /first epoch must be a full image/);
  await store.commit(staged(1, true, [[0, 256, 1]]));
  await store.commit(staged(2, false, [[10, 2, 2]]));
  storeError(await rejectionOf(store.commit(staged(4, false, [[20, 1, 4]]))), /does not follow the committed epoch 2/);
  storeError(await rejectionOf(store.commit(staged(2, true, [[0, 256, 9]]))), /later than the committed epoch 2/);
  let image = await readFile(store.imagePath);
  assert.deepEqual([image[0], image[10 * P], image[11 * P], image[12 * P], image[20 * P]], [1, 2, 2, 1, 1]);
  assert.equal(await readFile(store.deviceStatePath, 'utf8'), 'device 2');
  await store.commit(staged(9, true, [[0, 256, 7]]));
  image = await readFile(store.imagePath);
  assert.equal(image.every((b) => b === 7), true);
  assert.deepEqual([store.stats.committedEpoch, store.stats.epochsCommitted, store.stats.pageBytesWritten], [9, 3, (256 + 2 + 256) * P]);
});

test('reopen: the committed epoch survives; a torn apply or another VM does not open as committed', async () => {
  const dir = path.join(await shmDir(cleanup), 'store');
  const first = await CheckpointStore.open(dir, geometry);
  await first.commit(staged(1, true, [[0, 256, 1]]));
  await first.close();
  const again = await openStore(dir);
  assert.equal(again.committedEpoch, 1);
  await again.close();
  storeError(await rejectionOf(CheckpointStore.open(dir, { ...geometry, vm: 'db' })), /is VM 'web'/);
  // A lockstepd that died while writing epoch 2 into the image.
  const state = JSON.parse(await readFile(path.join(dir, 'state.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(path.join(dir, 'state.json'), JSON.stringify({ ...state, applying: 2 }));
  const torn = await openStore(dir);
  assert.equal(torn.committedEpoch, 0, 'the image may be half epoch 2: only a full image makes it whole');
});

test('handOver: the image becomes a VM’s RAM; the store takes no more epochs and does not open again', async () => {
  const dir = path.join(await shmDir(cleanup), 'store');
  const store = await openStore(dir);
  storeError(await rejectionOf(store.handOver()), /no committed epoch/);
  await store.commit(staged(1, true, [[0, 256, 1]]));
  assert.deepEqual(await store.handOver(), { epoch: 1, imagePath: store.imagePath, deviceStatePath: store.deviceStatePath });
  storeError(await rejectionOf(store.commit(staged(2, false, []))), /handed to a resumed VM/);
  storeError(await rejectionOf(CheckpointStore.open(dir, geometry)), /handed to a resumed VM/);
});

test('over a socket: acks, then a corrupt epoch is refused with its reason, the sender hears it, and epoch N-1 stays whole', async () => {
  const dir = await shmDir(cleanup);
  const store = await openStore(path.join(dir, 'store'));
  const link = await socketPair(cleanup, dir);
  const received = receiveCheckpoints(link.backup, store);
  const sender = new CheckpointSender(link.primary, { vm: 'web', ackTimeoutMs: 10_000 });
  await sender.send(asCheckpoint(staged(1, true, [[0, 256, 1]])));
  await sender.send(asCheckpoint(staged(2, false, [[5, 3, 2]])));
  const before = await readFile(store.imagePath);

  // Epoch 3 with one byte changed after its checksum was computed.
  const bytes = Buffer.concat(encodeCheckpoint(staged(3, false, [[5, 100, 3]])));
  bytes[1000]! ^= 1;
  link.primary.write(bytes);
  const outcome = await received;
  assert.deepEqual(outcome.commits.map((c) => c.epoch), [1, 2]);
  assert.ok(outcome.refused instanceof LockstepError && outcome.refused.code === 'CHECKPOINT_WIRE');
  assert.match(outcome.refused.message, /checksum of epoch 3/);
  const refused = await rejectionOf(sender.send(asCheckpoint(staged(4, false, []))));
  assert.ok(refused instanceof LockstepError && refused.code === 'CHECKPOINT_REFUSED', String(refused));
  assert.equal(refused.fields['peerCode'], 'CHECKPOINT_WIRE');
  assert.equal(store.committedEpoch, 2);
  assert.deepEqual(await readFile(store.imagePath), before);
  assert.equal(await readFile(store.deviceStatePath, 'utf8'), 'device 2');
});

test('over a socket: a stream cut inside an epoch, and an epoch out of sequence, leave epoch N-1', async () => {
  const dir = await shmDir(cleanup);
  const store = await openStore(path.join(dir, 'store'));
  const one = await socketPair(cleanup, dir, 'one.sock');
  const received = receiveCheckpoints(one.backup, store);
  const sender = new CheckpointSender(one.primary, { vm: 'web', ackTimeoutMs: 10_000 });
  await sender.send(asCheckpoint(staged(1, true, [[0, 256, 1]])));
  const before = await readFile(store.imagePath);
  const half = Buffer.concat(encodeCheckpoint(staged(2, false, [[0, 200, 2]])));
  one.primary.end(half.subarray(0, half.length >> 1));
  const cut = await received;
  assert.ok(cut.refused instanceof LockstepError && cut.refused.code === 'CHECKPOINT_WIRE');
  assert.match(cut.refused.message, /ended inside the checkpoint of epoch 2/);
  assert.equal(store.committedEpoch, 1);
  assert.deepEqual(await readFile(store.imagePath), before);

  // A new stream (the primary reconnected) that skips an epoch: the store refuses it; a full one re-seeds.
  const two = await socketPair(cleanup, dir, 'two.sock');
  const again = receiveCheckpoints(two.backup, store);
  const sender2 = new CheckpointSender(two.primary, { vm: 'web', ackTimeoutMs: 10_000 });
  const gap = await rejectionOf(sender2.send(asCheckpoint(staged(3, false, [[1, 1, 3]]))));
  assert.ok(gap instanceof LockstepError && gap.code === 'CHECKPOINT_REFUSED' && gap.fields['peerCode'] === 'CHECKPOINT_STORE', String(gap));
  assert.match(gap.message, /does not follow the committed epoch 1/);
  assert.equal((await again).refused?.code, 'CHECKPOINT_STORE');
  const three = await socketPair(cleanup, dir, 'three.sock');
  void receiveCheckpoints(three.backup, store);
  const sender3 = new CheckpointSender(three.primary, { vm: 'web', ackTimeoutMs: 10_000 });
  await sender3.send(asCheckpoint(staged(4, true, [[0, 256, 4]])));
  assert.equal(store.committedEpoch, 4);
  sender3.close();
});

test('over a socket, the FT pair’s control records: a seal answered once its handler ran, beforeCommit ahead of the store, a pressure note; an EPOCH_DISK refusal of a seal or a commit acks nothing', async () => {
  const dir = await shmDir(cleanup);
  const store = await openStore(path.join(dir, 'store'));
  const link = await socketPair(cleanup, dir);
  const order: string[] = [];
  const pressure: number[] = [];
  let refuseSeal = false;
  const received = receiveCheckpoints(link.backup, store, {
    onSeal: async (epoch) => {
      if (refuseSeal) throw new LockstepError('EPOCH_DISK', `epoch ${epoch} can never commit`, { epoch });
      order.push(`seal ${epoch}`);
    },
    beforeCommit: async (cp) => {
      assert.equal(store.committedEpoch, cp.epoch - 1, 'the disk commits before the store');
      order.push(`disk ${cp.epoch}`);
    },
    onCommit: (c) => order.push(`store ${c.epoch}`),
  });
  const sender = new CheckpointSender(link.primary, { vm: 'web', ackTimeoutMs: 10_000, onPressure: (e) => pressure.push(e) });
  await sender.seal(1);
  assert.deepEqual(order, ['seal 1'], 'SEALED comes after the handler');
  await sender.send(asCheckpoint(staged(1, true, [[0, 256, 1]])));
  assert.deepEqual(order, ['seal 1', 'disk 1', 'store 1']);
  link.backup.write(encodeControl('pressure', 'web', 2));
  await sender.seal(2);
  assert.deepEqual(pressure, [2]);

  refuseSeal = true;
  const refused = await rejectionOf(sender.seal(3));
  assert.ok(refused instanceof LockstepError && refused.code === 'CHECKPOINT_REFUSED', String(refused));
  assert.equal(refused.fields['peerCode'], 'EPOCH_DISK');
  const outcome = await received;
  assert.equal(outcome.refused?.code, 'EPOCH_DISK');
  assert.equal(store.committedEpoch, 1);
});

test('over a socket: a disk commit that fails refuses the checkpoint: the store keeps the epoch before, no ack; a seal to a backup without a disk is refused', async () => {
  const dir = await shmDir(cleanup);
  const store = await openStore(path.join(dir, 'store'));
  const link = await socketPair(cleanup, dir);
  const received = receiveCheckpoints(link.backup, store, {
    onSeal: async () => undefined,
    beforeCommit: async (cp) => {
      if (cp.epoch === 2) throw new LockstepError('EPOCH_DISK', 'epoch 2 could not be applied to the copy', { epoch: 2 });
    },
  });
  const sender = new CheckpointSender(link.primary, { vm: 'web', ackTimeoutMs: 10_000 });
  await sender.send(asCheckpoint(staged(1, true, [[0, 256, 1]])));
  const refused = await rejectionOf(sender.send(asCheckpoint(staged(2, false, [[5, 3, 2]]))));
  assert.ok(refused instanceof LockstepError && refused.code === 'CHECKPOINT_REFUSED' && refused.fields['peerCode'] === 'EPOCH_DISK', String(refused));
  assert.equal((await received).refused?.code, 'EPOCH_DISK');
  assert.equal(store.committedEpoch, 1);

  const store2 = await openStore(path.join(dir, 'store2'));
  const link2 = await socketPair(cleanup, dir, 'two.sock');
  const received2 = receiveCheckpoints(link2.backup, store2);
  const sender2 = new CheckpointSender(link2.primary, { vm: 'web', ackTimeoutMs: 10_000 });
  const noDisk = await rejectionOf(sender2.seal(1));
  assert.ok(noDisk instanceof LockstepError && noDisk.code === 'CHECKPOINT_REFUSED' && noDisk.fields['peerCode'] === 'CHECKPOINT_WIRE', String(noDisk));
  assert.match((await received2).refused?.message ?? '', /holds no disk/);
});
