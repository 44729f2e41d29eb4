// Garbage at a real `lockstep-quorum` process over real TLS connections: random bytes, broken JSON, valid
// shapes with wrong values, truncated lines, oversized lines, replays in another host's name, and raw
// non-TLS bytes. Every line gets an error (or, for a line too long, an error and the close), never a grant;
// the server stays up, its record unchanged, and afterwards it answers a valid request as before.
// Seeded: a failure names its seed, and FUZZ_SEED=<seed> replays it.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Prng } from '../../src/sim/prng.js';
import { QUORUM_LINE_BYTES_MAX, parseQuorumReply, parseQuorumRequest } from '../../src/protocol/quorum.js';
import { probeQuorum } from '../../src/quorum/client.js';
import { ask, Cleanup, makeWorld, rawConnect, record, spawnServer, type World } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const SEED = Number(process.env['FUZZ_SEED'] ?? Date.now() % 1_000_000);
const LINES = 3000;

/** One fuzz line (no newline inside); `host` is whose connection it goes over. */
function fuzzLine(rng: Prng, host: string): string | Buffer {
  const valid = { v: 1, type: 'acquire', pair: 'p1', host, knownEpoch: rng.int(0, 50), id: rng.int(0, 1e6) };
  const junkValues = [null, true, false, -1, 0.5, 1e308, -0, 2 ** 53, '', 'x', 'HOST1', [], {}, [1, 2], { v: 1 }, '\u0000', '\u2028', 'a'.repeat(70), NaN];
  switch (rng.int(0, 11)) {
    case 0: {
      // Random bytes, no newline.
      const b = Buffer.alloc(rng.int(0, 300));
      for (let i = 0; i < b.length; i++) b[i] = rng.pick([rng.int(0, 9), rng.int(11, 255)]);
      return b;
    }
    case 1:
      // Random printable text.
      return Array.from({ length: rng.int(0, 120) }, () => String.fromCharCode(rng.int(32, 126))).join('');
    case 2: {
      // A valid request cut short.
      const s = JSON.stringify(valid);
      return s.slice(0, rng.int(0, s.length - 1));
    }
    case 3: {
      // One field replaced by a wrong value.
      const key = rng.pick(['v', 'type', 'pair', 'host', 'knownEpoch', 'id']);
      return JSON.stringify({ ...valid, [key]: rng.pick(junkValues) });
    }
    case 4: {
      // One field missing.
      const o: Record<string, unknown> = { ...valid };
      delete o[rng.pick(['v', 'type', 'pair', 'host', 'knownEpoch', 'id'])];
      return JSON.stringify(o);
    }
    case 5:
      // Replayed in another host's name (or a host of another pair).
      return JSON.stringify({ ...valid, host: rng.pick(['host1', 'host3', 'nobody']) === host ? 'nobody' : rng.pick(['host1', 'host3', 'nobody']) });
    case 6:
      // Another pair, known or not.
      return JSON.stringify({ ...valid, pair: rng.pick(['p2', 'p9', 'zz']) });
    case 7:
      // Other versions and types.
      return JSON.stringify({ ...valid, v: rng.pick([0, 2, 99, '1']), type: rng.pick(['acquire', 'granted', 'release', 'ping']) });
    case 8:
      // JSON that is not an object, or nests deeply.
      return rng.pick(['null', '[]', '"acquire"', '42', '{}', '[{"v":1}]', `${'['.repeat(5000)}${']'.repeat(5000)}`, '{"a":'.repeat(2000)]);
    case 9:
      // Near the line limit, still under it.
      return `{"v":1,"type":"acquire","pad":"${'x'.repeat(QUORUM_LINE_BYTES_MAX - 100 - rng.int(0, 200))}"}`;
    case 10:
      // Stray carriage returns, NULs and invalid UTF-8 around a valid request of another host.
      return Buffer.concat([Buffer.from([0xff, 0x00, 0x0d]), Buffer.from(JSON.stringify({ ...valid, host: 'host1' })), Buffer.from([0xc3])]);
    default:
      // Duplicate keys: the last wins in JSON.parse, and it is another host's name.
      return `{"v":1,"type":"acquire","pair":"p1","host":"${host}","knownEpoch":1,"id":1,"host":"host1"}`;
  }
}

async function fuzzConnection(world: World, port: number, as: 'host1' | 'host2', rng: Prng): Promise<void> {
  const conn = await rawConnect(cleanup, world, port, as);
  const lines: Buffer[] = [];
  for (let i = 0; i < LINES; i++) {
    const l = fuzzLine(rng, as);
    lines.push(Buffer.isBuffer(l) ? l : Buffer.from(l));
  }
  // Send in chunks of random sizes, so lines are split and coalesced across TLS records.
  const payload = Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')]));
  let expectedValid = 0;
  for (const l of lines) {
    try {
      const r = parseQuorumRequest(l);
      // Only a valid request in this connection's own name may be decided (and it must be a denial:
      // fuzzing host2 while host1 holds the lease), plus pings.
      if (r.type === 'ping' || (r.pair === 'p1' && r.host === as)) expectedValid++;
    } catch {
      /* garbage: must be an error */
    }
  }
  for (let at = 0; at < payload.length; ) {
    const n = rng.int(1, 9000);
    conn.socket.write(payload.subarray(at, at + n));
    at += n;
  }
  const replies = await conn.waitReplies(LINES, 60_000);
  assert.equal(replies.length, LINES, `seed ${SEED}: ${replies.length} replies to ${LINES} lines`);
  let decided = 0;
  for (const [i, text] of replies.entries()) {
    const r = parseQuorumReply(text);
    assert.notEqual(r.type, 'granted', `seed ${SEED}: line ${i} (${lines[i]!.toString('utf8').slice(0, 80)}) was granted`);
    if (r.type === 'denied' || r.type === 'pong') decided++;
  }
  assert.equal(decided, expectedValid, `seed ${SEED}: only valid requests in the connection's own name are decided`);
  conn.socket.destroy();
}

test(`fuzz: thousands of broken lines get errors, never a grant; the server stays up (seed ${SEED})`, async () => {
  const world = await makeWorld(cleanup);
  const server = await spawnServer(cleanup, world.stateDir, { leaseMs: 60_000 });
  const port = server.port;
  assert.deepEqual(await ask(world, port, 'host1', { knownEpoch: 11 }), { kind: 'granted', epoch: 11 });
  const rng = new Prng(SEED);

  // host2 while host1 holds the lease: valid requests are denied, everything else is an error.
  await fuzzConnection(world, port, 'host2', rng);
  // The holder itself sending garbage: still no decision from a broken line.
  const holderRng = new Prng(SEED + 1);
  const conn = await rawConnect(cleanup, world, port, 'host1');
  const garbage: Buffer[] = [];
  for (let i = 0; i < 500; i++) {
    const l = fuzzLine(holderRng, 'host1');
    const b = Buffer.isBuffer(l) ? l : Buffer.from(l);
    let valid = true;
    try {
      parseQuorumRequest(b);
    } catch {
      valid = false;
    }
    if (!valid) garbage.push(b);
  }
  conn.socket.write(Buffer.concat(garbage.flatMap((l) => [l, Buffer.from('\n')])));
  const replies = await conn.waitReplies(garbage.length, 60_000);
  assert.equal(replies.length, garbage.length);
  assert.ok(replies.every((t) => parseQuorumReply(t).type === 'error'), `seed ${SEED}: a broken line of the holder was decided`);
  conn.socket.destroy();

  // A line over the limit: one error, then the server closes the connection.
  const long = await rawConnect(cleanup, world, port, 'host2');
  long.socket.write(`{"v":1,"type":"ping","id":1,"pad":"${'y'.repeat(QUORUM_LINE_BYTES_MAX)}`);
  await long.closed;
  assert.equal(long.replies.length, 1);
  assert.equal((parseQuorumReply(long.replies[0]!) as { code: string }).code, 'LINE_TOO_LONG');

  // The longest valid line is accepted (as a line; it is then not a valid request).
  const edge = await rawConnect(cleanup, world, port, 'host2');
  edge.socket.write(`${'z'.repeat(QUORUM_LINE_BYTES_MAX - 1)}\n{"v":1,"type":"ping","id":5}\n`);
  const edgeReplies = await edge.waitReplies(2);
  assert.equal((parseQuorumReply(edgeReplies[0]!) as { code: string }).code, 'INVALID_MESSAGE');
  assert.deepEqual(parseQuorumReply(edgeReplies[1]!), { v: 1, type: 'pong', id: 5 });
  edge.socket.destroy();

  // Raw bytes that are not TLS at all, all at once: the server closes each, at the latest when its
  // handshake timeout (5 s) runs out.
  const rng2 = new Prng(SEED + 2);
  const closedByServer = await Promise.all(
    Array.from({ length: 20 }, async (_, i) => {
      const s = net.connect(port, '127.0.0.1');
      cleanup.add(() => s.destroy());
      s.on('error', () => {});
      s.resume(); // read (and drop) whatever comes back, so the server's close is seen
      await new Promise<void>((r) => s.once('connect', () => r()));
      const b = Buffer.alloc(rng2.int(1, 4000));
      for (let j = 0; j < b.length; j++) b[j] = rng2.int(0, 255);
      s.write(i % 2 === 0 ? b : Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), b]));
      return new Promise<boolean>((r) => {
        s.once('close', () => r(true));
        setTimeout(() => r(false), 8000).unref();
      });
    }),
  );
  assert.ok(closedByServer.every(Boolean), 'every non-TLS connection was closed by the server');

  // Still up, nothing changed, and it answers valid requests as before.
  assert.equal(server.child.exitCode, null, 'the server process is still running');
  assert.deepEqual(await record(world), { epoch: 11, holder: 'host1', leaseMs: 60_000 });
  assert.deepEqual(await ask(world, port, 'host1', { knownEpoch: 11 }), { kind: 'granted', epoch: 11 });
  assert.deepEqual(await ask(world, port, 'host2', { knownEpoch: 11 }), { kind: 'denied', epoch: 11, holder: 'host1' });
  const h = world.hosts.host2;
  assert.equal(await probeQuorum({ address: '127.0.0.1', port, ca: world.server.ca, cert: h.cert, key: h.key, timeoutMs: 3000 }), true);
  assert.ok(!server.lines.some((l) => /granted epoch=(?!11 )/.test(l)), server.lines.filter((l) => l.includes('granted')).join('\n'));
});
