/**
 * Fuzzing the A-Link receiver over real sockets while a good connection carries the real traffic.
 *
 * host2 listens on alink1 (where host1, a real Alink, sends a heartbeat every 5 ms) and on alink2, where a
 * rogue that holds host1's certificate (the worst case: it passes TLS) sends garbage:
 * - on one connection, after a proper hello, thousands of well-framed messages that fail the schema
 *   (these are dropped and the connection stays);
 * - on hundreds of connections, streams that break the framing or the A-Link protocol (random bytes,
 *   oversized or zero lengths, truncated frames, a frame of exactly the size limit, frames out of order);
 * - on plain TCP, bytes that are not even TLS.
 * host2 must not crash, must deliver exactly host1's messages (all of them, each once, unchanged), and
 * alink1 must never go down. One seed drives all of it, so a failure replays.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import type { PeerMessage } from '../../src/core/types.js';
import { encodeFrame, FRAME_BYTES_MAX_DEFAULT } from '../../src/alink/framing.js';
import { toPeerEnvelope } from '../../src/protocol/peer.js';
import { Prng } from '../../src/sim/prng.js';
import { LOOPBACK, Recorder, heartbeat, loopbackPair, pairCerts, sleep, vmRecord, waitUntil, type PairCerts } from './helpers.js';

const SEED = Number(process.env['LOCKSTEP_FUZZ_SEED'] ?? 1);
const IN_STREAM = 4000;
const BROKEN_STREAMS = 400;
const NOT_TLS = 50;

let certs: PairCerts;
before(async () => {
  certs = await pairCerts('pair-fuzz');
});
after(async () => {
  await certs.cleanup();
});

/** Fields of a heartbeat envelope's body and values each can never take. */
const INVALID_BY_FIELD: [string, unknown[]][] = [
  ['from', ['', 'Host1', 7, null, 'x'.repeat(32), 'host3']],
  ['incarnation', [-1, 0.5, '1', null, 2 ** 53, NaN]],
  ['seq', [-5, 1e300, [], {}]],
  ['echo', [null, 3, []]],
  ['echo.seq', [-1, 'x']],
  ['echo.incarnation', [-2, true]],
  ['epoch', [-1, 1.1, '3']],
  ['authority', ['owner', 1, null]],
  ['hostState', ['constructor', 'toString', 'PAIRED', '']],
  ['health', [101, -1, '100', null]],
  ['quorumReachable', ['quorum1', [1], Array(9).fill('q')]],
  ['activeQuorum', ['', 5, '-bad']],
  ['vms', [[], 'x', null, { 'Bad Name': {} }]],
  ['vms.web.config.name', ['db', 'Web']],
  ['vms.web.config.desired', ['paused']],
  ['vms.web.config.protection', ['max', null]],
  ['vms.web.owner.epoch', [-3, 'x']],
  ['vms.web.owner', [null, [], 1]],
  ['running', ['web', [1], [null]]],
];

function invalidEnvelope(rnd: Prng, host1Seq: number): unknown {
  const env = JSON.parse(JSON.stringify(toPeerEnvelope(heartbeat('host1', host1Seq, { web: vmRecord('web', 'host1') })))) as Record<string, unknown>;
  switch (rnd.int(0, 5)) {
    case 0:
      return rnd.pick([null, 1, 'heartbeat', [], [env], true]);
    case 1:
      return { ...env, v: rnd.pick([0, 1, 3, '2', null, 1.5]) };
    case 2:
      return { ...env, kind: rnd.pick(['ping', 'Heartbeat', '', null, 'pair-accepts']) };
    case 3:
      return { ...env, body: rnd.pick([null, 'x', [], 7]) };
    default: {
      const [field, values] = rnd.pick(INVALID_BY_FIELD);
      const keys = field.split('.');
      let at = env['body'] as Record<string, unknown>;
      for (const k of keys.slice(0, -1)) at = at[k] as Record<string, unknown>;
      at[keys.at(-1)!] = rnd.pick(values);
      return env;
    }
  }
}

function randomBytes(rnd: Prng, n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, () => rnd.int(0, 255)));
}

function header(length: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(length >>> 0);
  return b;
}

const HELLO = encodeFrame({ t: 'hello', proto: { min: 1, max: 1 }, host: 'host1', path: 'alink2', session: 'fedcba9876543210' });

/** One broken stream: what a confused or hostile peer might send. */
function brokenStream(rnd: Prng): Buffer {
  const junkJson = (): Buffer => encodeFrame(rnd.pick([null, [], 'hello', { t: 'nope' }, { t: 'msg', id: -1, env: {} }, { t: 'ping' }, { t: 'msg', id: 1 }]));
  switch (rnd.int(0, 9)) {
    case 0:
      return randomBytes(rnd, rnd.int(1, 3000));
    case 1:
      return Buffer.concat([HELLO, randomBytes(rnd, rnd.int(1, 3000))]);
    case 2:
      return Buffer.concat([HELLO, header(rnd.int(FRAME_BYTES_MAX_DEFAULT + 1, 2 ** 32 - 1)), randomBytes(rnd, 100)]);
    case 3:
      return Buffer.concat([HELLO, header(0)]);
    case 4: {
      // A truncated frame, then the end of the stream.
      const f = encodeFrame({ t: 'msg', id: 5, env: toPeerEnvelope(heartbeat('host1', 1)) });
      return Buffer.concat([HELLO, f.subarray(0, rnd.int(1, f.length - 1))]);
    }
    case 5:
      return Buffer.concat([HELLO, header(rnd.int(2, 5000)), Buffer.from('{"t":"msg",'), randomBytes(rnd, 5000)]).subarray(0, 5000);
    case 6:
      return Buffer.concat([HELLO, junkJson()]);
    case 7:
      // Messages before any hello, or a second hello.
      return rnd.chance(0.5) ? encodeFrame({ t: 'msg', id: 1, env: toPeerEnvelope(heartbeat('host1', 1)) }) : Buffer.concat([HELLO, HELLO]);
    case 8: {
      // A frame of exactly the size limit: framing takes it, the link parser refuses it.
      const s = JSON.stringify('x'.repeat(FRAME_BYTES_MAX_DEFAULT - 2));
      return Buffer.concat([HELLO, header(Buffer.byteLength(s)), Buffer.from(s)]);
    }
    default:
      return Buffer.concat([HELLO, encodeFrame({ t: 'hello', proto: { min: 7, max: 9 }, host: 'host1', path: 'alink2', session: 'fedcba9876543210' })]);
  }
}

/** Connects with host1's certificate, writes `data`, ends, and waits for the connection to close. */
async function rogue(port: number, m: { cert: string; key: string; ca: string }, data: Buffer, write?: (s: tls.TLSSocket) => Promise<void>): Promise<void> {
  const s = tls.connect({ host: LOOPBACK, port, cert: m.cert, key: m.key, ca: [m.ca], checkServerIdentity: () => undefined });
  s.on('error', () => {});
  s.resume();
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  await new Promise<void>((r) => {
    s.once('secureConnect', () => r());
    s.once('close', () => r());
  });
  if (write) await write(s);
  else if (!s.destroyed) s.end(data);
  const t = setTimeout(() => s.destroy(), 5000);
  await closed;
  clearTimeout(t);
}

test(`A-Link receiver fuzz (seed ${SEED}): garbage on one path never crashes, never delivers, never disturbs the other`, { timeout: 120_000 }, async (t) => {
  const rnd = new Prng(SEED);
  const pair = await loopbackPair(certs, ['alink1', 'alink2'], { host1Paths: ['alink1'] });
  const host1Cert = await certs.material('host1');
  const got = new Recorder(pair.host2, 'message');
  const down = new Recorder(pair.host2, 'path-down');
  const protocolErrors = new Recorder(pair.host2, 'protocol-error');
  const refused = new Recorder(pair.host2, 'refused');
  const sent = new Map<number, PeerMessage>();
  let seq = 0;
  let pump: NodeJS.Timeout | undefined;
  try {
    await waitUntil(() => pair.host1.status()[0]!.up && pair.host2.status()[0]!.up, 5000, 'alink1 up');
    pump = setInterval(() => {
      const m = heartbeat('host1', ++seq, { web: vmRecord('web', 'host1') });
      sent.set(seq, m);
      assert.equal(pair.host1.send(m), 1);
    }, 5);
    const port2 = pair.host2.status().find((s) => s.name === 'alink2')!.port;

    // 1. One connection, a proper hello, then thousands of messages that fail the schema.
    await rogue(port2, host1Cert, Buffer.alloc(0), async (s) => {
      s.write(HELLO);
      for (let id = 0; id < IN_STREAM; id++) {
        const ok = s.write(encodeFrame({ t: 'msg', id, env: invalidEnvelope(rnd, 1_000_000 + id) }));
        if (!ok) await new Promise((r) => s.once('drain', r));
      }
      await waitUntil(() => pair.host2.counters.invalid >= IN_STREAM, 20_000, 'every invalid message seen');
      s.end();
    });
    assert.equal(pair.host2.counters.invalid, IN_STREAM, 'each invalid message dropped, once');

    // 2. Hundreds of connections whose streams break the framing or the protocol.
    for (let i = 0; i < BROKEN_STREAMS; i++) await rogue(port2, host1Cert, brokenStream(rnd));

    // 3. Bytes that are not TLS at all.
    for (let i = 0; i < NOT_TLS; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(port2, LOOPBACK, () => s.end(randomBytes(rnd, rnd.int(1, 2000))));
        s.on('error', () => {});
        s.resume();
        s.on('close', () => resolve());
      });
    }
    clearInterval(pump);
    pump = undefined;
    await waitUntil(() => got.seen.length >= seq, 5000, `all ${seq} heartbeats of host1 delivered`);
    await sleep(100);

    assert.equal(got.seen.length, seq, 'nothing but host1’s messages delivered');
    for (const [m] of got.seen) {
      assert.equal(m.kind, 'heartbeat');
      assert.deepEqual(m, sent.get((m as { seq: number }).seq), 'delivered as sent');
    }
    assert.deepEqual(
      down.seen.filter(([n]) => n === 'alink1'),
      [],
      'the good path never went down',
    );
    assert.ok(pair.host1.status()[0]!.up && pair.host2.status()[0]!.up, 'the good path is still up');
    assert.ok(protocolErrors.seen.length >= IN_STREAM + BROKEN_STREAMS / 2, `protocol errors reported (${protocolErrors.seen.length})`);
    assert.ok(refused.seen.length >= NOT_TLS, `non-TLS connections refused (${refused.seen.length})`);
    t.diagnostic(
      `host1 heartbeats delivered: ${seq}; invalid messages dropped: ${pair.host2.counters.invalid}; protocol errors: ${protocolErrors.seen.length}; refusals: ${refused.seen.length}`,
    );
  } finally {
    if (pump) clearInterval(pump);
    await pair.close();
  }
});
