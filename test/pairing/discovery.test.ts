// Discovery on loopback: garbage on the discovery port is counted and ignored, never fatal; the peer is
// found by its beacon; without one, the error says what was heard instead.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Discovery } from '../../src/pairing/discovery.js';
import { formatBeacon } from '../../src/pairing/messages.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';
import { beaconAs, LOOPBACK, LOOPBACK_BROADCAST } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function start(log: string[]): Promise<Discovery> {
  const d = await Discovery.start({
    self: 'host2',
    peer: 'host1',
    pairId: 'p1',
    local: LOOPBACK,
    broadcast: LOOPBACK_BROADCAST,
    port: 0,
    pairingPort: 7792,
    intervalMs: 50,
    log: (l) => log.push(l),
  });
  cleanup.add(() => d.close());
  return d;
}

async function sendRaw(port: number, datagrams: Buffer[]): Promise<void> {
  const s = dgram.createSocket('udp4');
  for (const d of datagrams) await new Promise<void>((r, j) => s.send(d, port, LOOPBACK, (e) => (e ? j(e) : r())));
  s.close();
}

test('malformed, oversized, foreign and own beacons are counted and ignored; the peer is found by its beacon', async () => {
  const log: string[] = [];
  const d = await start(log);
  await sendRaw(d.port, [
    Buffer.from('hello?'),
    Buffer.from([0xff, 0x00, 0xfe]),
    Buffer.from('{"v":1,"t":"lockstep-pair-beacon"}'),
    Buffer.from(JSON.stringify({ v: 9, t: 'lockstep-pair-beacon', pairId: 'p1', host: 'host1', pairingPort: 1 })),
    Buffer.alloc(60_000, 0x7b),
    formatBeacon({ pairId: 'p2', host: 'host1', pairingPort: 1 }),
    formatBeacon({ pairId: 'p1', host: 'host3', pairingPort: 1 }),
  ]);
  // Another address claiming our own id: ignored, and worth a warning (both hosts configured alike?).
  await beaconAs(cleanup, { pairId: 'p1', host: 'host2', pairingPort: 1 }, d.port, '127.0.0.2');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(d.peer, null);
  await beaconAs(cleanup, { pairId: 'p1', host: 'host1', pairingPort: 4321 }, d.port);
  assert.deepEqual(await d.waitForPeer(Date.now() + 2000), { address: LOOPBACK, pairingPort: 4321 });
  assert.ok(d.heardPeerFrom(LOOPBACK));
  assert.ok(!d.heardPeerFrom('127.0.0.2'));

  assert.equal(d.stats.malformed, 5);
  assert.equal(d.stats.strangers, 2);
  assert.ok(d.stats.own > 1, `own beacons came back over the broadcast address: ${d.stats.own}`);
  assert.ok(d.stats.sent > 1);
  // One warning per kind, however many datagrams.
  assert.equal(log.filter((l) => l.startsWith('ignoring datagrams')).length, 1);
  assert.equal(log.filter((l) => l.startsWith('ignoring the beacon of')).length, 1);
  assert.equal(log.filter((l) => l.includes('also beacons as host2')).length, 1);
  assert.ok(log.includes('found host1 at 127.0.0.1'), log.join('\n'));
});

test('no beacon from the peer: PAIRING at the deadline, naming the strangers heard instead', async () => {
  const d = await start([]);
  await beaconAs(cleanup, { pairId: 'p9', host: 'host1', pairingPort: 1 }, d.port);
  const started = Date.now();
  await assert.rejects(d.waitForPeer(Date.now() + 400), (e) => {
    assert.ok(isLockstepError(e, 'PAIRING'));
    assert.match(e.message, /^no pairing beacon from host1 of pair p1 on UDP port \d+ \(sent \d+ to 127\.255\.255\.255\); heard \d+ beacon\(s\) of others, the last from host1 of pair p9 at 127\.0\.0\.1/);
    return true;
  });
  assert.ok(Date.now() - started >= 390);
});

test('a port in use is a PAIRING error, not a crash', async () => {
  const d = await start([]);
  await assert.rejects(
    Discovery.start({ self: 'host1', peer: 'host2', pairId: 'p1', local: LOOPBACK, broadcast: LOOPBACK_BROADCAST, port: d.port, pairingPort: 0, log: () => {} }),
    (e) => isLockstepError(e, 'PAIRING') && /cannot listen for pairing beacons on UDP port/.test(e.message),
  );
});
