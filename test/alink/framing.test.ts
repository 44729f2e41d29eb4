/**
 * A-Link framing and one connection's behaviour, without TLS: frames survive any chunking, a broken frame
 * stops the decoder before it buffers anything big, and a connection whose peer stops reading keeps a
 * bounded queue (newest heartbeat kept, pair messages kept while room remains).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { encodeFrame, FrameDecoder, FRAME_HEADER_BYTES, parsePayload } from '../../src/alink/framing.js';
import { parseLinkFrame } from '../../src/alink/frames.js';
import { Link, type LinkHandler, type LinkClose } from '../../src/alink/link.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Prng } from '../../src/sim/prng.js';
import { LOOPBACK, sleep, waitUntil } from './helpers.js';

function randomValue(rnd: Prng, depth = 0): unknown {
  switch (rnd.int(0, depth > 2 ? 3 : 5)) {
    case 0:
      return rnd.int(-1e9, 1e9);
    case 1:
      return String.fromCodePoint(...Array.from({ length: rnd.int(0, 20) }, () => rnd.pick([0x41, 0xe9, 0x4e2d, 0x1f600, 0x22, 0x5c, 0x0a])));
    case 2:
      return rnd.pick([null, true, false]);
    case 3:
      return rnd.next();
    case 4:
      return Array.from({ length: rnd.int(0, 5) }, () => randomValue(rnd, depth + 1));
    default:
      return Object.fromEntries(Array.from({ length: rnd.int(0, 5) }, (_, i) => [`k${i}${rnd.int(0, 9)}`, randomValue(rnd, depth + 1)]));
  }
}

/** Splits a buffer at random points. */
function chop(rnd: Prng, buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    const n = rnd.chance(0.2) ? rnd.int(1, 3) : rnd.int(1, 700);
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

describe('framing', () => {
  test('2000 random frames survive any chunking, in order', () => {
    const rnd = new Prng(42);
    const values = Array.from({ length: 2000 }, () => randomValue(rnd));
    const stream = Buffer.concat(values.map((v) => encodeFrame(v)));
    const dec = new FrameDecoder();
    const got: unknown[] = [];
    for (const chunk of chop(rnd, stream)) {
      const r = dec.push(chunk);
      assert.equal(r.error, null);
      got.push(...r.frames.map(parsePayload));
    }
    assert.deepEqual(got, JSON.parse(JSON.stringify(values)));
    assert.equal(dec.bufferedBytes, 0);
  });

  test('an oversized length is refused as soon as its header arrives; frames before it are kept', () => {
    const dec = new FrameDecoder(1000);
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header.writeUInt32BE(1001);
    const r = dec.push(Buffer.concat([encodeFrame({ a: 1 }), header.subarray(0, 2)]));
    assert.deepEqual(r.frames.map(parsePayload), [{ a: 1 }]);
    assert.equal(r.error, null);
    const r2 = dec.push(header.subarray(2));
    assert.match(r2.error ?? '', /1001 bytes exceeds the limit of 1000/);
    assert.equal(dec.bufferedBytes, 0, 'nothing of it is buffered');
    assert.equal(dec.push(encodeFrame({ b: 2 })).frames.length, 0, 'a broken stream delivers nothing more');
    const zero = new FrameDecoder();
    assert.equal(zero.push(Buffer.alloc(4)).error, 'empty frame');
    const max = new FrameDecoder(1000);
    const exact = encodeFrame('x'.repeat(998), 1000);
    assert.equal(exact.length, FRAME_HEADER_BYTES + 1000);
    assert.equal(max.push(exact).frames.length, 1, 'a frame of exactly the limit passes');
    assert.throws(() => encodeFrame('x'.repeat(999), 1000), (e) => isLockstepError(e, 'INVALID_MESSAGE'));
  });

  test('payloads that are not UTF-8 JSON, and frames that are not A-Link frames, are refused', () => {
    for (const bad of [Buffer.from([0xff, 0xfe]), Buffer.from('{"a":'), Buffer.from('\u00e9', 'latin1'), Buffer.from('')]) {
      assert.throws(() => parsePayload(bad), (e) => isLockstepError(e, 'INVALID_MESSAGE'));
    }
    for (const bad of [
      null,
      [],
      { t: 'nope' },
      { t: 'msg', id: -1, env: {} },
      { t: 'msg', id: 1 },
      { t: 'ping', n: 1.5 },
      { t: 'hello', proto: { min: 2, max: 1 }, host: 'host1', path: 'alink1', session: '0123456789abcdef' },
      { t: 'hello', proto: { min: 1, max: 1 }, host: 'host1', path: 'alink1', session: 'short' },
      { t: 'bye', reason: 3 },
    ]) {
      assert.throws(() => parseLinkFrame(bad), (e) => isLockstepError(e, 'INVALID_MESSAGE'), JSON.stringify(bad));
    }
    assert.equal((parseLinkFrame({ t: 'bye', reason: 'x'.repeat(10_000) }) as { reason: string }).reason.length, 200, 'reasons are bounded');
  });
});

describe('one connection', () => {
  const timing = { pingIntervalMs: 50, pathTimeoutMs: 5000, helloTimeoutMs: 1000 };
  const limits = { maxFrameBytes: 1 << 20, sendQueueFramesMax: 8, sendQueueBytesMax: 4 << 20, writeHighWaterBytes: 64 * 1024 };
  const hello = (host: string) => ({ t: 'hello' as const, proto: { min: 1, max: 1 }, host, path: 'alink1', session: '0123456789abcdef' });

  test('a peer that stops reading meets a bounded queue: the newest heartbeat and the pair messages are kept', async () => {
    // The peer says hello and then never reads: its receive buffer, then ours, fill up.
    const peers: net.Socket[] = [];
    const server = net.createServer((s) => {
      peers.push(s);
      s.write(encodeFrame(hello('host2')));
      s.pause();
    });
    await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
    const socket = net.connect((server.address() as net.AddressInfo).port, LOOPBACK);
    await new Promise((r) => socket.once('connect', r));
    let closed: LinkClose | null = null;
    let up = false;
    const handler: LinkHandler = {
      hello: () => null,
      up: () => (up = true),
      message: () => {},
      rtt: () => {},
      closed: (_l, how) => (closed = how),
    };
    const link = new Link(socket, 'alink1', hello('host1'), timing, limits, handler);
    try {
      await waitUntil(() => up, 2000, 'the peer hello');
      const big = encodeFrame({ t: 'msg', id: 0, env: { pad: 'x'.repeat(200_000) } });
      const pair = encodeFrame({ t: 'msg', id: 1, env: { pair: true } });
      for (let i = 0; i < 500; i++) link.sendMessage(big, true);
      assert.ok(socket.writableLength < limits.writeHighWaterBytes + big.length, `Node's buffer is bounded (${socket.writableLength})`);
      assert.equal(link.queuedFrames, 1, 'only the newest heartbeat waits');
      assert.ok(link.droppedFrames > 400, `superseded heartbeats dropped (${link.droppedFrames})`);
      for (let i = 0; i < 5; i++) link.sendMessage(pair, false);
      assert.equal(link.queuedFrames, 6, 'pair messages are not superseded');
      for (let i = 0; i < 10; i++) link.sendMessage(pair, false);
      assert.equal(link.queuedFrames, limits.sendQueueFramesMax, 'the queue is bounded');
      assert.equal(closed, null);
    } finally {
      link.close('test over', false);
      await link.done;
      for (const p of peers) p.destroy(); // paused: it would never see the end
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('a connection whose writes make no progress is closed after the path timeout', async () => {
    const peers: net.Socket[] = [];
    const server = net.createServer((s) => {
      peers.push(s);
      s.write(encodeFrame(hello('host2')));
      // Keep the connection alive from this side (pings) but never read: only our sending stalls.
      const t = setInterval(() => s.write(encodeFrame({ t: 'ping', n: 1 })), 20);
      s.on('close', () => clearInterval(t));
      s.on('error', () => {});
      s.pause();
    });
    await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
    const socket = net.connect((server.address() as net.AddressInfo).port, LOOPBACK);
    await new Promise((r) => socket.once('connect', r));
    let closed: LinkClose | null = null;
    const handler: LinkHandler = { hello: () => null, up: () => {}, message: () => {}, rtt: () => {}, closed: (_l, how) => (closed = how) };
    const link = new Link(socket, 'alink1', hello('host1'), { ...timing, pathTimeoutMs: 300 }, limits, handler);
    try {
      await sleep(100);
      const big = encodeFrame({ t: 'msg', id: 0, env: { pad: 'x'.repeat(200_000) } });
      for (let i = 0; i < 100; i++) link.sendMessage(big, true);
      await waitUntil(() => closed !== null, 3000, 'the stalled connection closes');
      assert.match(closed!.reason, /sending stalled/);
    } finally {
      link.close('test over', false);
      await link.done;
      for (const p of peers) p.destroy(); // paused: it would never see the end
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
