// The checkpoint stream format: round trips, and every kind of bad input is a CHECKPOINT_WIRE error that
// names what is wrong, with nothing handed on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CheckpointDecoder, RUN_PAGES_MAX, ReplyDecoder, encodeAck, encodeCheckpoint, encodeControl, encodeRefusal, type BackupInput, type CheckpointData, type StagedCheckpoint } from '../../src/ft/checkpoint-wire.js';
import { LockstepError } from '../../src/util/errors.js';

const P = 4096;
const RAM = 1024 * P; // 4 MiB
const expect = { vm: 'web', pageBytes: P, ramBytes: RAM };

function pages(n: number, fill: number): Buffer {
  const b = Buffer.alloc(n * P);
  for (let i = 0; i < n; i++) b.fill((fill + i) & 0xff, i * P, i * P + 16);
  return b;
}

function checkpoint(extra: Partial<CheckpointData> = {}): CheckpointData {
  return {
    vm: 'web',
    epoch: 7,
    full: false,
    pageBytes: P,
    ramBytes: RAM,
    runs: [
      { firstPage: 3, data: pages(2, 1) },
      { firstPage: 100, data: pages(300, 5) }, // split into 256 + 44 on the wire
      { firstPage: 1023, data: pages(1, 9) },
    ],
    deviceState: Buffer.from('QEVM device state'),
    ...extra,
  };
}

function wire(cp: CheckpointData): Buffer {
  return Buffer.concat(encodeCheckpoint(cp));
}

function decodeAll(bytes: Buffer, chunk = bytes.length): StagedCheckpoint[] {
  const d = new CheckpointDecoder(expect);
  const out: StagedCheckpoint[] = [];
  for (let o = 0; o < bytes.length; o += chunk) {
    for (const input of d.push(bytes.subarray(o, o + chunk))) {
      assert.equal(input.kind, 'checkpoint');
      if (input.kind === 'checkpoint') out.push(input.checkpoint);
    }
  }
  d.end();
  return out;
}

function wireError(f: () => unknown, re: RegExp, field?: string): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
    assert.equal(e.code, 'CHECKPOINT_WIRE');
    assert.match(e.message, re);
    if (field !== undefined) assert.equal(e.fields['field'], field);
    return true;
  });
}

test('round trip, whole and in 1000-byte pieces: same runs (long ones split), same device state', () => {
  const cp = checkpoint();
  const bytes = wire(cp);
  for (const chunk of [bytes.length, 1000]) {
    const [got, more] = decodeAll(bytes, chunk);
    assert.equal(more, undefined);
    assert.ok(got);
    assert.deepEqual([got.vm, got.epoch, got.full, got.pageCount, got.wireBytes], ['web', 7, false, 303, bytes.length]);
    assert.deepEqual(got.runs.map((r) => [r.firstPage, r.data.length / P]), [[3, 2], [100, RUN_PAGES_MAX], [356, 44], [1023, 1]]);
    assert.deepEqual(Buffer.concat(got.runs.map((r) => r.data)), Buffer.concat(cp.runs.map((r) => r.data)));
    assert.deepEqual(got.deviceState, cp.deviceState);
  }
});

test('one byte at a time: the same checkpoint (and not quadratic in the number of pieces)', () => {
  const cp = checkpoint({ runs: [{ firstPage: 8, data: pages(64, 3) }] });
  const [got] = decodeAll(wire(cp), 1);
  assert.deepEqual(got!.runs.map((r) => [r.firstPage, r.data.length / P]), [[8, 64]]);
  assert.deepEqual(got!.runs[0]!.data, cp.runs[0]!.data);
});

test('two checkpoints back to back in one chunk; an empty epoch; a full image', () => {
  const full = checkpoint({ epoch: 1, full: true, runs: [{ firstPage: 0, data: pages(1024, 0) }] });
  const empty = checkpoint({ epoch: 2, runs: [] });
  const got = decodeAll(Buffer.concat([wire(full), wire(empty)]));
  assert.deepEqual(got.map((c) => [c.epoch, c.full, c.pageCount, c.runs.length]), [[1, true, 1024, 4], [2, false, 0, 0]]);
});

test('truncated anywhere: nothing is handed on, and end() says the stream ended inside the checkpoint', () => {
  const bytes = wire(checkpoint());
  for (const cut of [3, 5, 60, 5000, bytes.length - 1]) {
    const d = new CheckpointDecoder(expect);
    assert.deepEqual(d.push(bytes.subarray(0, cut)), []);
    wireError(() => d.end(), /ended inside/, 'end');
  }
});

test('a bad checksum: one flipped bit in page data, in the device state', () => {
  const bytes = wire(checkpoint());
  for (const at of [200, bytes.length - 20]) {
    const bad = Buffer.from(bytes);
    bad[at]! ^= 0x10;
    wireError(() => decodeAll(bad), /checksum of epoch 7/, 'end.crc32');
  }
});

test('a header for another VM, page size or RAM size; epoch 0; a full image that does not cover RAM', () => {
  wireError(() => decodeAll(wire(checkpoint({ vm: 'db' }))), /header.vm is 'db', this stream is for 'web'/, 'header.vm');
  wireError(() => decodeAll(wire(checkpoint({ ramBytes: RAM * 2 }))), /header.ramBytes is 8388608, not the VM's 4194304/, 'header.ramBytes');
  wireError(() => decodeAll(wire(checkpoint({ pageBytes: 2 * P, runs: [] }))), /header.pageBytes is 8192/, 'header.pageBytes');
  wireError(() => decodeAll(wire(checkpoint({ epoch: 0 }))), /epoch is 0/, 'header.epoch');
  wireError(() => decodeAll(wire(checkpoint({ full: true }))), /does not cover RAM's 1024 pages/, 'header.pageCount');
  const badMagic = wire(checkpoint());
  badMagic[5] = 0;
  wireError(() => decodeAll(badMagic), /not a checkpoint stream/, 'header.magic');
});

test('pages outside RAM, runs that overlap or go backwards', () => {
  wireError(() => decodeAll(wire(checkpoint({ runs: [{ firstPage: 1020, data: pages(5, 0) }] }))), /outside RAM's 1024 pages/, 'pages.firstPage');
  wireError(() => decodeAll(wire(checkpoint({ runs: [{ firstPage: 10, data: pages(5, 0) }, { firstPage: 12, data: pages(1, 0) }] }))), /before the end of the previous run/, 'pages.firstPage');
  wireError(() => decodeAll(wire(checkpoint({ runs: [{ firstPage: 10, data: pages(1, 0) }, { firstPage: 2, data: pages(1, 0) }] }))), /before the end of the previous run/);
});

test('counts that do not add up, a device state of another length, records out of order or unknown', () => {
  const bytes = wire(checkpoint({ runs: [{ firstPage: 1, data: pages(1, 0) }] }));
  // The header's pageCount is at 5 (record head) + 4 + 1 + 1 + 1 + 3 ("web") + 8 + 4 + 8 = 35.
  const morePages = Buffer.from(bytes);
  morePages.writeUInt32BE(2, 35);
  wireError(() => decodeAll(morePages), /runs carried 1 pages, the header said 2/);
  const lessPages = Buffer.from(bytes);
  lessPages.writeUInt32BE(0, 35);
  wireError(() => decodeAll(lessPages), /runCount 1 does not fit 0 pages/, 'header.runCount');
  const device = Buffer.from(bytes);
  device.writeUInt32BE(3, 35 + 8); // deviceStateBytes
  wireError(() => decodeAll(device), /a device record of 17 bytes is over its bound of 3/, 'length');
  // A PAGES record where the header should be; an ACK on the checkpoint direction; type 99.
  wireError(() => decodeAll(bytes.subarray(bytes.indexOf(2, 5))), /unexpected record type/, 'type');
  wireError(() => decodeAll(encodeAck({ vm: 'web', epoch: 1 })), /unexpected record type 5 \(ack\)/);
  wireError(() => decodeAll(Buffer.from([99, 0, 0, 0, 0])), /unexpected record type 99/);
});

test('oversized: a length over its bound is refused from the 5-byte head, before any payload is buffered', () => {
  const d = new CheckpointDecoder(expect);
  const head = Buffer.from([1, 0xff, 0xff, 0xff, 0xff]);
  wireError(() => d.push(head), /header record of 4294967295 bytes is over its bound/, 'length');
  // Broken once, broken for good.
  wireError(() => d.push(wire(checkpoint())), /over its bound/);
  const big = wire(checkpoint({ runs: [{ firstPage: 0, data: pages(RUN_PAGES_MAX, 0) }] }));
  const at = big.indexOf(2, 5); // the PAGES record's head
  big.writeUInt32BE(8 + (RUN_PAGES_MAX + 1) * P, at + 1);
  wireError(() => decodeAll(big), /pages record of .* bytes is over its bound of 1048584/);
});

test('acks and refusals: round trip; garbage is an error', () => {
  const r = new ReplyDecoder();
  const bytes = Buffer.concat([encodeAck({ vm: 'web', epoch: 3 }), encodeRefusal({ vm: 'web', epoch: 4, code: 'CHECKPOINT_WIRE', message: 'checksum…' })]);
  const got = [...bytes].flatMap((b) => r.push(Buffer.from([b])));
  assert.deepEqual(got, [
    { kind: 'ack', ack: { vm: 'web', epoch: 3 } },
    { kind: 'refused', refusal: { vm: 'web', epoch: 4, code: 'CHECKPOINT_WIRE', message: 'checksum…' } },
  ]);
  wireError(() => new ReplyDecoder().push(Buffer.from([5, 0, 0, 0, 2, 9, 9])), /not a VM name|too short/);
  wireError(() => new ReplyDecoder().push(wire(checkpoint())), /unexpected record type 1/);
});

test('seal requests between checkpoints: in stream order with them, byte by byte; inside a checkpoint, for another VM or epoch 0 they are errors', () => {
  const d = new CheckpointDecoder(expect);
  const bytes = Buffer.concat([encodeControl('seal', 'web', 7), wire(checkpoint()), encodeControl('seal', 'web', 8)]);
  const got = [...bytes].flatMap((b) => d.push(Buffer.from([b])));
  assert.deepEqual(got.map(describeInput), ['seal 7', 'checkpoint 7', 'seal 8']);
  d.end();
  const cp = wire(checkpoint());
  const headerEnd = 5 + cp.readUInt32BE(1);
  wireError(() => new CheckpointDecoder(expect).push(Buffer.concat([cp.subarray(0, headerEnd), encodeControl('seal', 'web', 7)])), /unexpected record type 7 \(seal\)/, 'type');
  wireError(() => new CheckpointDecoder(expect).push(encodeControl('seal', 'other', 7)), /seal.vm is 'other'/, 'seal.vm');
  wireError(() => new CheckpointDecoder(expect).push(encodeControl('seal', 'web', 0)), /seal.epoch is 0/, 'seal.epoch');
  const long = encodeControl('seal', 'web', 7);
  long.writeUInt32BE(1000, 1);
  wireError(() => new CheckpointDecoder(expect).push(long), /seal record of 1000 bytes is over its bound/, 'length');
  // The backup's control records are not the primary's to send.
  wireError(() => new CheckpointDecoder(expect).push(encodeControl('sealed', 'web', 7)), /unexpected record type 8/, 'type');
});

function describeInput(i: BackupInput): string {
  return i.kind === 'checkpoint' ? `checkpoint ${i.checkpoint.epoch}` : `${i.kind} ${i.epoch}`;
}

test('a handover between checkpoints is the last record of a stream: after a checkpoint or before any (epoch 0); inside a checkpoint, for another VM or followed by anything, an error', () => {
  const d = new CheckpointDecoder(expect);
  const bytes = Buffer.concat([encodeControl('seal', 'web', 7), wire(checkpoint()), encodeControl('handover', 'web', 7)]);
  assert.deepEqual([...bytes].flatMap((b) => d.push(Buffer.from([b]))).map(describeInput), ['seal 7', 'checkpoint 7', 'handover 7']);
  d.end();
  assert.deepEqual(new CheckpointDecoder(expect).push(encodeControl('handover', 'web', 0)).map(describeInput), ['handover 0']);
  const cp = wire(checkpoint());
  const headerEnd = 5 + cp.readUInt32BE(1);
  wireError(() => new CheckpointDecoder(expect).push(Buffer.concat([cp.subarray(0, headerEnd), encodeControl('handover', 'web', 6)])), /unexpected record type 10 \(handover\)/, 'type');
  wireError(() => new CheckpointDecoder(expect).push(encodeControl('handover', 'other', 7)), /handover.vm is 'other'/, 'handover.vm');
  wireError(() => new CheckpointDecoder(expect).push(Buffer.concat([encodeControl('handover', 'web', 0), encodeControl('seal', 'web', 1)])), /a seal record after the handover/, 'type');
  wireError(() => new CheckpointDecoder(expect).push(Buffer.concat([encodeControl('handover', 'web', 0), wire(checkpoint())])), /a header record after the handover/, 'type');
  wireError(() => new CheckpointDecoder(expect).push(encodeControl('handedover', 'web', 7)), /unexpected record type 11/, 'type');
});

test('sealed and pressure replies: round trip beside acks; a seal is not a reply', () => {
  const r = new ReplyDecoder();
  const bytes = Buffer.concat([encodeControl('sealed', 'web', 3), encodeControl('pressure', 'web', 4), encodeAck({ vm: 'web', epoch: 3 })]);
  assert.deepEqual([...bytes].flatMap((b) => r.push(Buffer.from([b]))), [
    { kind: 'sealed', ack: { vm: 'web', epoch: 3 } },
    { kind: 'pressure', ack: { vm: 'web', epoch: 4 } },
    { kind: 'ack', ack: { vm: 'web', epoch: 3 } },
  ]);
  assert.deepEqual(new ReplyDecoder().push(encodeControl('handedover', 'web', 5)), [{ kind: 'handedover', ack: { vm: 'web', epoch: 5 } }]);
  wireError(() => new ReplyDecoder().push(encodeControl('seal', 'web', 3)), /unexpected record type 7/, 'type');
  wireError(() => new ReplyDecoder().push(encodeControl('handover', 'web', 3)), /unexpected record type 10/, 'type');
});
