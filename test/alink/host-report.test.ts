/**
 * Host reports over the A-Link, on real TLS over loopback: each host's lockstepd asks the other for its
 * own networks and health components (`src/daemon/peer-report.ts`) and answers the other's questions.
 *
 * The stories: host1 asks and gets host2's real networks (read from this machine's interfaces, as host2's
 * lockstepd reads its own) and health components, and host2 asks host1 the same way; several callers at once
 * share one request; the core's `message` event never sees these messages; a peer that does not answer (a
 * build without host reports) leaves the view unavailable after the timeout, saying so; a peer that answers
 * something invalid is logged and its view unavailable with the schema's reason, and nothing crashes; no
 * A-Link at all, or no path up, is said at once.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { Alink } from '../../src/alink/alink.js';
import { encodeFrame, FrameDecoder, parsePayload } from '../../src/alink/framing.js';
import { HostNetworks, type NetworkConfig } from '../../src/daemon/networks.js';
import { PeerReports, type PeerView } from '../../src/daemon/peer-report.js';
import { toWireEnvelope } from '../../src/protocol/peer.js';
import type { HealthSnapshot } from '../../src/core/types.js';
import { FAST, LOOPBACK, Recorder, loopbackPair, pairCerts, type PairCerts } from './helpers.js';

let certs: PairCerts;
before(async () => {
  certs = await pairCerts('pair-r');
});
after(() => certs.cleanup());

const HEALTH2: HealthSnapshot = { alink1: 'ok', alink2: 'failed', mgmt: 'ok', business: 'degraded', disk: 'ok', qemu: 'ok', 'power-supply': 'ok' };

/** A host's networks as its lockstepd reads them, on this machine: loopback stands for the management network. */
function networksOf(host: string, alink: () => ReturnType<Alink['status']> | null): HostNetworks {
  const config: NetworkConfig = {
    alink: [{ name: 'alink1', local: LOOPBACK, peer: LOOPBACK, port: 0 } as NetworkConfig['alink'][number]],
    mgmtInterface: 'lo',
    businessInterface: `nobiz-${host}`,
    businessBridge: `nobiz-${host}`,
  };
  return new HostNetworks({ host, config, alink, health: () => null });
}

function reportsOf(self: string, peer: string, link: () => Alink | null, networks: HostNetworks, health: HealthSnapshot | null, log: string[], timeoutMs = 2000): PeerReports {
  return new PeerReports({ self, peer, link, own: async () => ({ networks: await networks.list(), health }), log: (l) => log.push(l), timeoutMs });
}

describe('host reports between two hosts', () => {
  test('each host asks the other and gets its own networks and health components; callers at once share one request', async () => {
    const pair = await loopbackPair(certs, ['alink1']);
    const log1: string[] = [];
    const log2: string[] = [];
    try {
      await new Recorder(pair.host1, 'path-up').some(() => true, 5000, 'host1 alink1 up');
      const r1 = reportsOf('host1', 'host2', () => pair.host1, networksOf('host1', () => pair.host1.status()), null, log1);
      const r2 = reportsOf('host2', 'host1', () => pair.host2, networksOf('host2', () => pair.host2.status()), HEALTH2, log2);
      pair.host1.on('daemon-message', (m) => r1.handle(m));
      pair.host2.on('daemon-message', (m) => r2.handle(m));
      const core1 = new Recorder(pair.host1, 'message');
      const core2 = new Recorder(pair.host2, 'message');
      const sentBefore = pair.host1.counters.sent;

      const [a, b, c] = await Promise.all([r1.ask(), r1.ask(), r1.ask()]);
      assert.equal(pair.host1.counters.sent - sentBefore, 1, 'three callers, one request');
      assert.equal(a, b);
      assert.equal(a, c);
      assert.equal(a.state, 'available', JSON.stringify(a));
      if (a.state !== 'available') return;
      assert.equal(a.host, 'host2');
      assert.deepEqual(a.health, HEALTH2);
      assert.deepEqual(a.networks.map((n) => [n.host, n.name, n.interface, n.state]), [
        ['host2', 'alink1', 'lo', 'up'],
        ['host2', 'mgmt', 'lo', 'up'],
        ['host2', 'business', 'nobiz-host2', 'missing'],
      ]);
      assert.equal(a.networks[0]!.alink?.connected, true, "host2's own A-Link view: its path is up");
      assert.ok(Date.parse(a.takenAt) <= Date.parse(a.receivedAt));

      const back = await r2.ask();
      assert.equal(back.state, 'available', JSON.stringify(back));
      assert.equal(back.host, 'host1');
      if (back.state === 'available') {
        assert.equal(back.health, null, 'host1 has had no health check: null, not made up');
        assert.deepEqual(back.networks.map((n) => n.host), ['host1', 'host1', 'host1']);
      }
      assert.equal(core1.seen.length + core2.seen.length, 0, "the core's event carried none of it");
      assert.deepEqual([log1, log2], [[], []]);
    } finally {
      await pair.close();
    }
  });

  test('a peer that does not answer: unavailable after the timeout, saying why; then no A-Link path up, said at once', async () => {
    const pair = await loopbackPair(certs, ['alink1']);
    try {
      await new Recorder(pair.host1, 'path-up').some(() => true, 5000, 'host1 alink1 up');
      // host2's lockstepd does not answer (nothing handles its daemon messages): as a build without host
      // reports, which drops the request as an unknown kind, or one too busy to answer in time.
      const r1 = reportsOf('host1', 'host2', () => pair.host1, networksOf('host1', () => null), null, [], 300);
      pair.host1.on('daemon-message', (m) => r1.handle(m));
      const t0 = Date.now();
      const view = await r1.ask();
      const tookMs = Date.now() - t0;
      assert.deepEqual(view, { host: 'host2', state: 'unavailable', reason: 'no answer from host2 within 300 ms' });
      assert.ok(tookMs >= 290 && tookMs < 2000, `answered after ${tookMs} ms`);
      // A later answer would find no request: the next ask is a new request with a new id.
      const down = new Recorder(pair.host1, 'path-down');
      await pair.host2.close();
      await down.some(() => true, 5000, 'host1 alink1 down');
      assert.deepEqual(await r1.ask(), { host: 'host2', state: 'unavailable', reason: 'no A-Link path is up' });
    } finally {
      await pair.close();
    }
  });

  test('before pairing (no A-Link), and while stopping, the view is unavailable with the reason', async () => {
    const r = reportsOf('host1', 'host2', () => null, networksOf('host1', () => null), null, []);
    assert.deepEqual(await r.ask(), { host: 'host2', state: 'unavailable', reason: 'not paired yet: there is no A-Link to ask the peer over' });
    r.close();
    assert.deepEqual(await r.ask(), { host: 'host2', state: 'unavailable', reason: 'lockstepd is stopping' });
  });
});

/**
 * host2's lockstepd as a real Alink, asking; host1 as a raw TLS client with host1's real certificate that
 * keeps the path alive (answers pings) and answers each request with `reply(id)`, whatever that holds.
 */
async function askRawPeer(reply: (id: number) => unknown, timeoutMs = 1500): Promise<{ view: PeerView; log: string[]; protocolErrors: string[]; host2: Alink }> {
  const host2 = new Alink({ self: 'host2', peer: 'host1', paths: [{ name: 'alink1', local: LOOPBACK, peer: LOOPBACK, port: 0 }], tls: await certs.material('host2'), timing: FAST });
  const up = new Recorder(host2, 'path-up');
  const errors = new Recorder(host2, 'protocol-error');
  await host2.start();
  const m = await certs.material('host1');
  const s = tls.connect({ host: LOOPBACK, port: host2.status()[0]!.port, cert: m.cert, key: m.key, ca: [m.ca], checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' });
  s.on('error', () => {});
  const dec = new FrameDecoder();
  let next = 0;
  s.on('secureConnect', () => s.write(encodeFrame({ t: 'hello', proto: { min: 1, max: 1 }, host: 'host1', path: 'alink1', session: '0123456789abcdef' })));
  s.on('data', (b: Buffer) => {
    for (const f of dec.push(b).frames) {
      const v = parsePayload(f) as { t: string; n?: number; env?: { kind: string; body: { id: number } } };
      if (v.t === 'ping') s.write(encodeFrame({ t: 'pong', n: v.n }));
      if (v.t === 'msg' && v.env?.kind === 'host-report-request') s.write(encodeFrame({ t: 'msg', id: next++, env: reply(v.env.body.id) }));
    }
  });
  const log: string[] = [];
  try {
    await up.some(() => true, 5000, 'host2 alink1 up');
    const reports = new PeerReports({ self: 'host2', peer: 'host1', link: () => host2, own: async () => ({ networks: [], health: null }), log: (l) => log.push(l), timeoutMs });
    host2.on('daemon-message', (msg) => reports.handle(msg));
    host2.on('daemon-invalid', (kind, id, reason) => reports.invalid(kind, id, reason));
    const view = await reports.ask();
    return { view, log, protocolErrors: errors.seen.map(([, r]) => r), host2 };
  } finally {
    s.destroy();
    await host2.close();
  }
}

describe('a peer that answers badly', () => {
  const valid = (id: number) => toWireEnvelope({ kind: 'host-report', from: 'host1', id, takenAt: new Date().toISOString(), networks: [], health: null });

  test('a valid answer from the raw peer is taken (the harness speaks the protocol)', async () => {
    const r = await askRawPeer(valid);
    assert.equal(r.view.state, 'available', JSON.stringify(r.view));
    assert.deepEqual(r.log, []);
  });

  test('a malformed report is logged and the view unavailable, with the schema’s reason', async () => {
    const r = await askRawPeer((id) => {
      const env = valid(id);
      return { ...env, body: { ...env.body, networks: [{ name: 'wifi' }] } };
    });
    assert.equal(r.view.state, 'unavailable');
    assert.equal(r.view.state === 'unavailable' && r.view.reason, "host1 answered with an invalid report: peer message: 'networks[0].name' must be one of alink1, alink2, mgmt, business");
    assert.equal(r.log.length, 1);
    assert.match(r.log[0]!, /^the peer's host report was invalid, its view is unavailable: peer message: 'networks\[0\]\.name'/);
    assert.equal(r.protocolErrors.length, 1, 'the A-Link reports it as a protocol error too');
    assert.equal(r.host2.counters.invalid, 1);
  });

  test('a report without a readable id is taken as the answer to the one request in flight; an oversized one is refused whole', async () => {
    const noId = await askRawPeer((id) => {
      const env = valid(id);
      return { ...env, body: { ...env.body, id: 'seven' } };
    });
    assert.equal(noId.view.state === 'unavailable' && noId.view.reason, "host1 answered with an invalid report: peer message: 'id' must be a safe integer ≥ 0 (got \\\"seven\\\")");
    const huge = await askRawPeer((id) => {
      const env = valid(id);
      return { ...env, body: { ...env.body, padding: 'p'.repeat(100_000) } };
    });
    assert.match(huge.view.state === 'unavailable' ? huge.view.reason : '', /^host1 answered with an invalid report: peer message: 'report' is \d+ bytes of JSON; at most 65536$/);
  });

  test('an answer to another request (a stale id) is ignored: the view is unavailable after the timeout', async () => {
    const r = await askRawPeer((id) => valid(id + 100), 300);
    assert.deepEqual(r.view, { host: 'host1', state: 'unavailable', reason: 'no answer from host1 within 300 ms' });
  });
});
