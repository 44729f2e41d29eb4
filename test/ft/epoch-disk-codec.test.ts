// Unit tests, no I/O: the NBD codec (every message round-trips; bad bytes are reasons, never throws), the
// byte queue, and the epoch buffer (seal order, release, memory accounting, the read overlay and its view
// fixed at the read's start).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EpochBuffer, HELD_WRITE_OVERHEAD_BYTES, overlay, type HeldWrite } from '../../src/ft/epoch-disk-buffer.js';
import {
  ByteQueue,
  NBD_CMD,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT,
  NBD_REP,
  NbdParseError,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGoData,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeOption,
  encodeOptionReply,
  encodeRequest,
  encodeServerGreeting,
  encodeSimpleReply,
  parseClientFlags,
  parseGoData,
  parseInfoReply,
  parseOptionHeader,
  parseOptionReplyHeader,
  parseRequest,
  parseServerGreeting,
  parseSimpleReply,
} from '../../src/storage/nbd-protocol.js';
import { BugError } from '../../src/util/assert.js';

const reason = (v: unknown): string => {
  assert.ok(v instanceof NbdParseError, `expected a parse error, got ${JSON.stringify(v)}`);
  return v.reason;
};

test('handshake messages round-trip; a greeting or client flags that are not fixed newstyle are refused', () => {
  const greeting = encodeServerGreeting();
  assert.equal(greeting.length, 18);
  assert.deepEqual(parseServerGreeting(greeting), { noZeroes: true });
  const oldstyle = Buffer.concat([Buffer.from('NBDMAGIC', 'latin1'), Buffer.alloc(10)]);
  assert.match(reason(parseServerGreeting(oldstyle)), /not a newstyle server/);
  const notFixed = Buffer.from(greeting);
  notFixed.writeUInt16BE(0, 16);
  assert.match(reason(parseServerGreeting(notFixed)), /not fixed newstyle/);
  assert.match(reason(parseServerGreeting(Buffer.alloc(18))), /NBDMAGIC/);

  assert.deepEqual(parseClientFlags(encodeClientFlags(true)), { noZeroes: true });
  assert.deepEqual(parseClientFlags(encodeClientFlags(false)), { noZeroes: false });
  assert.match(reason(parseClientFlags(Buffer.from([0, 0, 0, 2]))), /not fixed newstyle/);
  assert.match(reason(parseClientFlags(Buffer.from([0, 0, 0, 9]))), /unknown client flags 0x9/);

  const opt = encodeOption(NBD_OPT.GO, encodeGoData('web', [NBD_INFO_BLOCK_SIZE]));
  assert.deepEqual(parseOptionHeader(opt.subarray(0, 16)), { option: NBD_OPT.GO, length: opt.length - 16 });
  assert.deepEqual(parseGoData(opt.subarray(16)), { name: 'web', infos: [NBD_INFO_BLOCK_SIZE] });
  assert.match(reason(parseOptionHeader(Buffer.alloc(16))), /IHAVEOPT/);

  const rep = encodeOptionReply(NBD_OPT.GO, NBD_REP.INFO, encodeInfoExport(1 << 20, 0x45));
  assert.deepEqual(parseOptionReplyHeader(rep.subarray(0, 20)), { option: NBD_OPT.GO, type: NBD_REP.INFO, length: 12 });
  assert.deepEqual(parseInfoReply(rep.subarray(20)), { kind: 'export', size: 1 << 20, flags: 0x45 });
  assert.deepEqual(parseInfoReply(encodeInfoBlockSize({ minimum: 1, preferred: 4096, maximum: 1 << 25 })), { kind: 'block-size', minimum: 1, preferred: 4096, maximum: 1 << 25 });
  assert.deepEqual(parseInfoReply(Buffer.from([0, 1, 0, 0])), { kind: 'other', type: 1 });
  assert.match(reason(parseInfoReply(Buffer.from([0, 0, 1]))), /export info of 3 bytes/);
  assert.match(reason(parseOptionReplyHeader(Buffer.alloc(20))), /magic/);
  assert.equal(encodeExportNameReply(512, 1, true).length, 10);
  assert.equal(encodeExportNameReply(512, 1, false).length, 134);
});

test('GO data is parsed exactly: a name past the option, counts that do not add up, an oversized name', () => {
  const good = encodeGoData('web', [0, 3]);
  assert.match(reason(parseGoData(good.subarray(0, 5))), /too short/);
  assert.match(reason(parseGoData(Buffer.concat([good, Buffer.from([0])]))), /does not hold/);
  assert.match(reason(parseGoData(good.subarray(0, good.length - 1))), /does not hold/);
  const longName = Buffer.alloc(10);
  longName.writeUInt32BE(5000, 0);
  assert.match(reason(parseGoData(longName)), /export name of 5000 bytes/);
  const pastEnd = Buffer.alloc(10);
  pastEnd.writeUInt32BE(100, 0);
  assert.match(reason(parseGoData(pastEnd)), /runs past/);
  assert.deepEqual(parseGoData(encodeGoData('', [])), { name: '', infos: [] });
});

test('requests and simple replies round-trip; bad magic, structured replies and offsets beyond 2^53 are refused', () => {
  const req = { flags: 2, type: NBD_CMD.WRITE_ZEROES, handle: 0xfedcba9876543210n, offset: 2 ** 40 + 4096, length: 65536 };
  const b = encodeRequest(req);
  assert.equal(b.length, 28);
  assert.deepEqual(parseRequest(b), req);
  const badMagic = Buffer.from(b);
  badMagic.writeUInt32BE(0x12345678, 0);
  assert.match(reason(parseRequest(badMagic)), /magic 0x12345678/);
  const far = Buffer.from(b);
  far.writeBigUInt64BE(2n ** 60n, 16);
  assert.match(reason(parseRequest(far)), /beyond 2\^53/);

  assert.deepEqual(parseSimpleReply(encodeSimpleReply(22, 5n)), { error: 22, handle: 5n });
  const structured = encodeSimpleReply(0, 1n);
  structured.writeUInt32BE(0x668e33ef, 0);
  assert.match(reason(parseSimpleReply(structured)), /structured reply/);
  assert.match(reason(parseSimpleReply(Buffer.alloc(16))), /magic 0x0/);
});

test('the byte queue hands out exact messages across chunk boundaries, in buffers of their own', () => {
  const q = new ByteQueue();
  const big = Buffer.from('abcdefghij');
  q.push(big.subarray(0, 3));
  q.push(Buffer.alloc(0));
  q.push(big.subarray(3));
  assert.equal(q.length, 10);
  const first = q.take(4);
  assert.equal(first.toString(), 'abcd');
  big[0] = 0x7a;
  assert.equal(first.toString(), 'abcd', 'a copy, not a view of the socket chunk');
  assert.equal(q.take(6).toString(), 'efghij');
  assert.equal(q.length, 0);
  assert.throws(() => q.take(1), BugError);
});

const w = (offset: number, bytes: number, fill: number | null): HeldWrite => ({ offset, length: bytes, data: fill === null ? null : Buffer.alloc(bytes, fill), noHole: false });

test('the epoch buffer: seal and release in order, memory counted, a wrong epoch is a bug', () => {
  const b = new EpochBuffer(3);
  assert.equal(b.openEpoch, 3);
  b.hold(w(0, 100, 1));
  b.hold(w(50, 1000, null));
  assert.equal(b.heldBytes, 100 + 2 * HELD_WRITE_OVERHEAD_BYTES, 'a zero write costs its overhead only');
  assert.throws(() => b.seal(4), /seal\(4\) while epoch 3 is open/);
  const sealed = b.seal(3);
  assert.equal(sealed.writtenBytes, 1100);
  assert.equal(b.openEpoch, 4);
  b.hold(w(0, 10, 2));
  b.seal(4);
  assert.deepEqual(b.sealedEpochs, [3, 4]);
  assert.throws(() => b.release(4), BugError);
  b.release(3);
  assert.equal(b.heldBytes, 10 + HELD_WRITE_OVERHEAD_BYTES);
  b.hold(w(0, 5, 3));
  assert.deepEqual(b.discardAll(), { epochs: [4, 5], heldBytes: 10 + 5 + 2 * HELD_WRITE_OVERHEAD_BYTES, writes: 2 });
  assert.equal(b.openEpoch, 5);
  assert.equal(b.heldBytes, 0);
  assert.throws(() => new EpochBuffer(0), BugError);
});

test('the overlay: writes over the committed bytes in arrival order across epochs; a view ignores later writes', () => {
  const b = new EpochBuffer(1);
  b.hold(w(10, 10, 0xaa));
  b.seal(1);
  b.hold(w(15, 10, null));
  b.hold(w(0, 4, 0xbb));
  const view = b.view();
  b.hold(w(0, 40, 0xcc)); // after the read started: not in its view
  const target = Buffer.alloc(32, 0x11);
  overlay(view, 2, target);
  const expected = Buffer.alloc(32, 0x11);
  expected.fill(0xbb, 0, 2); // bytes 2..4
  expected.fill(0xaa, 8, 13); // bytes 10..15
  expected.fill(0, 13, 23); // bytes 15..25
  assert.deepEqual(target, expected);
  b.release(1); // the view keeps epoch 1's writes: a commit finishing during a read changes nothing
  const again = Buffer.alloc(32, 0x11);
  overlay(view, 2, again);
  assert.deepEqual(again, expected);
  const outside = Buffer.alloc(8, 0x11);
  overlay(b.view(), 100, outside);
  assert.deepEqual(outside, Buffer.alloc(8, 0x11));
});
