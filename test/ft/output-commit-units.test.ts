/**
 * FT output commit without QEMU: the framing of filter-redirector's records, the epoch queue's rule (what
 * leaves when), and the gate's sockets with the test as a fake QEMU on both of them.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { FRAME_BYTES_MAX, FrameReader } from '../../src/ft/output-frames.js';
import { OutputQueue } from '../../src/ft/output-queue.js';
import { OutputGate, outputGateSockets } from '../../src/ft/output-commit.js';
import { BugError } from '../../src/util/assert.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup, tempDir, waitFor } from '../qemu/helpers.js';
import { fakeQemu as fakeQemuOf, record, tagOf } from './fake-qemu.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function header(length: number, vnetHdrLen: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(length, 0);
  b.writeUInt32BE(vnetHdrLen, 4);
  return b;
}

/* ------------------------------------------------------------------ framing */

test('framing: records come out whole and in order however the stream is cut', () => {
  const stream = Buffer.concat([record('a'), record('b', 1), record('c', 65_000), record('d', 3, 10)]);
  for (const cut of [1, 3, 7, 8, 9, 100, 4096, stream.length]) {
    const reader = new FrameReader('/s');
    const out: Buffer[] = [];
    for (let i = 0; i < stream.length; i += cut) out.push(...reader.push(stream.subarray(i, i + cut)));
    assert.deepEqual(out.map(tagOf), ['a', 'b', 'c', 'd'], `cut every ${cut} bytes`);
    assert.deepEqual(Buffer.concat(out), stream, 'records pass through byte for byte');
    assert.equal(reader.bufferedBytes, 0);
  }
});

test('framing: a bad length or vnet header length is OUTPUT_GATE_FRAME, naming the offset, before anything of the chunk is returned', () => {
  const bad: [string, Buffer][] = [
    ['zero length', header(0, 12)],
    ['shorter than vnet header + Ethernet header', header(25, 12)],
    ['longer than QEMU can take', header(FRAME_BYTES_MAX + 1, 12)],
    ['vnet header length 0', header(100, 0)],
    ['vnet header length 11', header(100, 11)],
    ['an ASCII line', Buffer.from('GET / HTTP/1.1\r\n')],
  ];
  for (const [what, head] of bad) {
    const reader = new FrameReader('/run/vm/g.sock');
    assert.throws(
      () => reader.push(Buffer.concat([record('ok'), head, Buffer.alloc(100)])),
      (e: unknown) => isLockstepError(e, 'OUTPUT_GATE_FRAME') && e.fields['offset'] === record('ok').length && e.message.includes('/run/vm/g.sock'),
      what,
    );
  }
  // The largest frame QEMU can read back is accepted.
  assert.equal(new FrameReader('/s').push(header(FRAME_BYTES_MAX, 12)).length, 0);
});

/* ------------------------------------------------------------------ the epoch rule */

const limits = { heldBytesSoftMax: 1000, heldBytesMax: 2000, heldFramesMax: 100 };

test('queue: frames wait for their epoch; release lets out epochs ≤ e in read order; a repeated ack releases nothing', () => {
  const q = new OutputQueue(limits, { firstEpoch: 7 });
  assert.equal(q.push(record('a'), 0).kind, 'held');
  assert.equal(q.push(record('b'), 1).kind, 'held');
  assert.equal(q.seal(), 7, 'seal closes epoch 7');
  assert.deepEqual(q.push(record('c'), 2), { kind: 'held', epoch: 8, crossedSoftLimit: false }, 'read after the seal: the next epoch');
  assert.equal(q.seal(), 8);
  q.push(record('d'), 3);
  assert.deepEqual(q.release(7, 10).map(tagOf), ['a', 'b']);
  assert.deepEqual(q.release(7, 11), [], 'the same ack again');
  assert.deepEqual(q.release(6, 11), [], 'a late ack of an older epoch');
  assert.equal(q.seal(), 9);
  assert.deepEqual(q.release(9, 20).map(tagOf), ['c', 'd'], 'one ack covers every epoch before it');
  const s = q.stats();
  assert.deepEqual([s.epoch, s.sealed, s.released, s.heldFrames, s.heldBytes, s.framesIn, s.framesOut, s.framesReleased], [10, 9, 9, 0, 0, 4, 4, 4]);
  assert.equal(s.holdMsMax, 18, 'c was read at 2 and released at 20');
  assert.throws(() => q.release(10, 21), BugError, 'releasing the open epoch is a bug: its frames could still grow');
});

test('queue: unprotected passes at once after what was held; protect holds again from the open epoch', () => {
  const q = new OutputQueue(limits);
  q.push(record('a'), 0);
  assert.deepEqual(q.unprotect(5).map(tagOf), ['a'], 'the held frame goes first');
  assert.deepEqual(q.push(record('b'), 6), { kind: 'pass' });
  q.seal();
  q.protect();
  assert.deepEqual(q.push(record('c'), 7), { kind: 'held', epoch: 2, crossedSoftLimit: false });
  assert.deepEqual(q.release(1, 8), [], 'c is in epoch 2');
  q.seal();
  assert.deepEqual(q.release(2, 9).map(tagOf), ['c']);
});

test('queue: going unprotected counts every sealed epoch released, so that a new protection run starts clean', () => {
  const q = new OutputQueue(limits);
  q.push(record('a'), 0);
  q.seal();
  q.push(record('b'), 1);
  q.seal();
  assert.deepEqual(q.unprotect(2).map(tagOf), ['a', 'b']);
  assert.equal(q.stats().sealed, 2);
  assert.equal(q.stats().released, 2, 'nothing sealed is left unreleased');
  q.protect();
  assert.deepEqual(q.push(record('c'), 3), { kind: 'held', epoch: 3, crossedSoftLimit: false });
});

test('queue: the soft limit is signalled once per crossing; past the hard limit frames are dropped, never sent', () => {
  const q = new OutputQueue(limits);
  const size = record('x', 400).length; // 482 bytes
  const outcomes = [1, 2, 3, 4, 5].map((i) => q.push(record(`f${i}`, 400), i));
  assert.deepEqual(
    outcomes.map((o) => (o.kind === 'held' ? `held${o.crossedSoftLimit ? '+soft' : ''}` : o.kind)),
    ['held', 'held', 'held+soft', 'held', 'dropped'],
    `${size} bytes each: the third passes 1000, the fifth would pass 2000`,
  );
  q.seal();
  assert.equal(q.release(1, 10).length, 4);
  q.push(record('g', 400), 11);
  q.push(record('h', 400), 11);
  assert.deepEqual(q.push(record('i', 400), 11), { kind: 'held', epoch: 2, crossedSoftLimit: true }, 're-armed once below the limit');
  assert.deepEqual([q.stats().droppedFrames, q.stats().softLimitCrossings], [1, 2]);
  assert.equal(q.discard(), 3);
  assert.deepEqual([q.stats().heldFrames, q.stats().droppedFrames], [0, 4]);

  const few = new OutputQueue({ heldBytesSoftMax: 10_000, heldBytesMax: 10_000, heldFramesMax: 2 });
  assert.deepEqual([1, 2, 3].map((i) => few.push(record(`${i}`, 0), i).kind), ['held', 'held', 'dropped'], 'a bound on frames too');
});

test('queue: many epochs, frames in every one: nothing lost, nothing twice, order kept', () => {
  const q = new OutputQueue({ heldBytesSoftMax: 1e9, heldBytesMax: 1e9, heldFramesMax: 1e6 });
  const out: string[] = [];
  let n = 0;
  let sealed: number | null = null;
  for (let epoch = 0; epoch < 500; epoch++) {
    for (let i = 0; i < epoch % 7; i++) q.push(record(`${n++}`, 4), epoch);
    // The engine's cadence: the previous epoch's ack arrives while the next one runs.
    if (sealed !== null) out.push(...q.release(sealed, epoch).map(tagOf));
    sealed = q.seal();
  }
  out.push(...q.release(sealed!, 500).map(tagOf));
  assert.deepEqual(out, Array.from({ length: n }, (_, i) => `${i}`));
});

/* ------------------------------------------------------------------ the gate with a fake QEMU */

const fakeQemu = (gate: OutputGate) => fakeQemuOf(cleanup, gate);

async function gateIn(dir: string, opts: Partial<Parameters<typeof OutputGate.listen>[0]> = {}): Promise<OutputGate> {
  const gate = await OutputGate.listen({ sockets: outputGateSockets(dir, 'net0'), name: 'test/net0', limits, ...opts });
  cleanup.add(() => gate.close());
  return gate;
}

test('gate: holds what QEMU sends until release, then writes it back whole and in order; pass-through sends at once', async () => {
  const dir = await tempDir(cleanup, 'lockstep-gate-');
  const gate = await gateIn(dir);
  const qemu = await fakeQemu(gate);
  // Sent in one write and byte by byte: the gate cuts records, not writes.
  qemu.guest.write(Buffer.concat([record('a'), record('b')]));
  for (const byte of record('c')) qemu.guest.write(Buffer.from([byte]));
  await waitFor(() => gate.stats.heldFrames === 3, 2000, 'three frames held');
  const e = gate.seal();
  qemu.guest.write(record('d'));
  await waitFor(() => gate.stats.heldFrames === 4, 2000, 'd held');
  gate.release(e);
  await waitFor(() => qemu.received.length === 3, 2000, 'epoch 1 released');
  assert.deepEqual(qemu.received.map(tagOf), ['a', 'b', 'c']);
  assert.deepEqual(qemu.received[0], record('a'), 'byte for byte, header included');
  gate.unprotect();
  qemu.guest.write(record('e'));
  await waitFor(() => qemu.received.length === 5, 2000, 'd, then e passed through');
  assert.deepEqual(qemu.received.map(tagOf), ['a', 'b', 'c', 'd', 'e']);
  const s = gate.stats;
  assert.deepEqual([s.framesIn, s.framesOut, s.heldFrames, s.droppedFrames], [5, 5, 0, 0]);
});

test('gate: a malformed record closes the gate with OUTPUT_GATE_FRAME; what it held is dropped, never sent', async () => {
  const dir = await tempDir(cleanup, 'lockstep-gate-');
  const gate = await gateIn(dir);
  const qemu = await fakeQemu(gate);
  qemu.guest.write(record('held'));
  await waitFor(() => gate.stats.heldFrames === 1, 2000, 'a frame held');
  qemu.guest.write(header(100, 7));
  const e = await gate.closed;
  assert.ok(isLockstepError(e, 'OUTPUT_GATE_FRAME'), String(e));
  assert.equal(e.fields['vnetHdrLen'], 7);
  gate.seal();
  gate.release(1);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(qemu.received, [], 'nothing half-forwarded, nothing held let out');
  assert.equal(gate.stats.droppedFrames, 1);
  await waitFor(() => qemu.net.destroyed || qemu.net.readableEnded, 2000, 'the gate hung up on QEMU');
});

test('gate: bytes on the release socket, which QEMU never writes, close the gate too', async () => {
  const dir = await tempDir(cleanup, 'lockstep-gate-');
  const gate = await gateIn(dir);
  const qemu = await fakeQemu(gate);
  qemu.net.write('hello');
  assert.ok(isLockstepError(await gate.closed, 'OUTPUT_GATE_FRAME'));
});

test('gate: a second QEMU on a socket is refused; a stream that ends mid-record drops that record; a new connection starts clean', async () => {
  const dir = await tempDir(cleanup, 'lockstep-gate-');
  const gate = await gateIn(dir, { protected: false });
  const qemu = await fakeQemu(gate);
  const second = net.connect(gate.sockets.fromGuest);
  second.on('error', () => undefined);
  await new Promise((r) => second.once('close', r));
  const partial = record('cut');
  qemu.guest.end(Buffer.concat([record('whole'), partial.subarray(0, 20)]));
  await gate.waitForGuestStreamEnd(2000);
  const again = net.connect(gate.sockets.fromGuest);
  cleanup.add(() => again.destroy());
  await waitFor(() => gate.stats.fromGuestConnected, 2000, 'reconnected');
  again.write(record('next'));
  await waitFor(() => qemu.received.length === 2, 2000, 'two frames out');
  assert.deepEqual(qemu.received.map(tagOf), ['whole', 'next']);
});

test('gate: frames let out before QEMU connects its release socket wait for it; the socket paths are checked', async () => {
  const dir = await tempDir(cleanup, 'lockstep-gate-');
  const gate = await gateIn(dir, { protected: false });
  const guest = net.connect(gate.sockets.fromGuest);
  cleanup.add(() => guest.destroy());
  guest.write(record('early'));
  await waitFor(() => gate.stats.unsentFrames === 1, 2000, 'the frame waits');
  const fin = net.connect(gate.sockets.toNetwork);
  cleanup.add(() => fin.destroy());
  const got = await new Promise<Buffer>((resolve) => fin.once('data', resolve));
  assert.equal(tagOf(got), 'early');
  await assert.rejects(
    OutputGate.listen({ sockets: outputGateSockets(path.join(dir, 'x'.repeat(100)), 'net0'), name: 't' }),
    (e: unknown) => isLockstepError(e, 'INVALID_ARGUMENT'),
  );
});
