/**
 * The A-Link over real TLS on loopback: two Alink instances in this process, host2 listening on one port
 * per path, host1 dialing (through a proxy standing in for the cable where a test cuts it).
 *
 * The story each test tells: messages flow both ways and arrive once though they travel twice; losing one
 * of two paths changes nothing but a path-down event (every message still arrives), and the path comes
 * back by itself; RTT is measured; a certificate of another pair, or of the wrong host, is refused.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type { PeerMessage } from '../../src/core/types.js';
import { Alink } from '../../src/alink/alink.js';
import { encodeFrame, FrameDecoder, parsePayload } from '../../src/alink/framing.js';
import { isLockstepError } from '../../src/util/errors.js';
import { FAST, LOOPBACK, Recorder, heartbeat, loopbackPair, pairCerts, pairPropose, sleep, waitUntil, type PairCerts } from './helpers.js';

let certs: PairCerts;
let otherPair: PairCerts;

before(async () => {
  certs = await pairCerts('pair-a');
  otherPair = await pairCerts('pair-b');
});

after(async () => {
  await certs.cleanup();
  await otherPair.cleanup();
});

function seqs(msgs: [PeerMessage][]): number[] {
  return msgs.flatMap(([m]) => (m.kind === 'heartbeat' ? [m.seq] : []));
}

describe('two hosts over two A-Links', () => {
  test('messages flow both ways, each delivered once though sent on both paths', async () => {
    const pair = await loopbackPair(certs, ['alink1', 'alink2']);
    try {
      const up1 = new Recorder(pair.host1, 'path-up');
      const up2 = new Recorder(pair.host2, 'path-up');
      const got1 = new Recorder(pair.host1, 'message');
      const got2 = new Recorder(pair.host2, 'message');
      for (const name of ['alink1', 'alink2']) {
        await up1.some(([n]) => n === name, 5000, `host1 ${name} up`);
        await up2.some(([n]) => n === name, 5000, `host2 ${name} up`);
      }
      const n = 200;
      for (let i = 1; i <= n; i++) {
        assert.equal(pair.host1.send(heartbeat('host1', i)), 2, 'sent on both paths');
        assert.equal(pair.host2.send(heartbeat('host2', i)), 2);
      }
      pair.host1.send(pairPropose('host1', 4));
      await waitUntil(() => got2.seen.length === n + 1 && got1.seen.length === n, 5000, 'every message arrived');
      await waitUntil(() => pair.host2.counters.duplicates === n + 1 && pair.host1.counters.duplicates === n, 5000, 'every copy arrived');
      await sleep(100);
      assert.deepEqual([...seqs(got2.seen)].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i + 1));
      assert.deepEqual([...seqs(got1.seen)].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i + 1));
      assert.equal(got2.seen.length, n + 1, 'no copy delivered twice');
      assert.deepEqual(got2.seen.find(([m]) => m.kind === 'pair-propose')?.[0], pairPropose('host1', 4));
      assert.deepEqual(got2.seen[0]![0], heartbeat('host1', seqs(got2.seen)[0]!), 'a message arrives as it was sent');
      assert.deepEqual(
        pair.host1.status().map((s) => [s.name, s.role, s.up]),
        [
          ['alink1', 'dial', true],
          ['alink2', 'dial', true],
        ],
      );
      assert.deepEqual(
        pair.host2.status().map((s) => [s.name, s.role, s.up]),
        [
          ['alink1', 'listen', true],
          ['alink2', 'listen', true],
        ],
      );
    } finally {
      await pair.close();
    }
  });

  test('RTT is measured on each path and reported as the best smoothed RTT', async (t) => {
    const pair = await loopbackPair(certs, ['alink1', 'alink2']);
    try {
      const rtt1 = new Recorder(pair.host1, 'rtt');
      const rtt2 = new Recorder(pair.host2, 'rtt');
      await sleep(1500);
      for (const r of [rtt1, rtt2]) {
        assert.ok(r.seen.length >= 10, `about one report per ping interval (${r.seen.length})`);
        for (const [ms] of r.seen) assert.ok(ms > 0 && ms < 1000, `a plausible RTT: ${ms}`);
      }
      const status = pair.host1.status();
      const best = Math.min(...status.map((s) => s.srttMs!));
      assert.ok(status.every((s) => s.srttMs !== null && s.srttMs > 0));
      const last = rtt1.seen.at(-1)![0];
      assert.ok(Math.abs(last - best) < 5, `the report is the best path's (${last} vs ${best})`);
      const sorted = rtt1.seen.map(([ms]) => ms).sort((a, b) => a - b);
      t.diagnostic(`loopback smoothed RTT: median ${sorted[sorted.length >> 1]!.toFixed(3)} ms, min ${sorted[0]!.toFixed(3)} ms, max ${sorted.at(-1)!.toFixed(3)} ms`);
    } finally {
      await pair.close();
    }
  });

  for (const fault of ['reset', 'stall'] as const) {
    test(`losing one path (${fault}) changes nothing but path-down; it comes back with path-up`, async () => {
      const pair = await loopbackPair(certs, ['alink1', 'alink2'], { proxies: true });
      try {
        const up1 = new Recorder(pair.host1, 'path-up');
        const up2 = new Recorder(pair.host2, 'path-up');
        const down1 = new Recorder(pair.host1, 'path-down');
        const down2 = new Recorder(pair.host2, 'path-down');
        const got2 = new Recorder(pair.host2, 'message');
        for (const name of ['alink1', 'alink2']) await up1.some(([n]) => n === name, 5000, `host1 ${name} up`);
        for (const name of ['alink1', 'alink2']) await up2.some(([n]) => n === name, 5000, `host2 ${name} up`);

        // A heartbeat every 10 ms throughout, as the core would send.
        let seq = 0;
        const pathsUsed: number[] = [];
        const pump = setInterval(() => pathsUsed.push(pair.host1.send(heartbeat('host1', ++seq))), 10);
        try {
          await sleep(200);
          const cable = pair.proxies.get('alink1')!;
          if (fault === 'reset') cable.reset();
          else cable.stall();
          const [, why1] = await down1.some(([n]) => n === 'alink1', 3000, 'host1 alink1 down');
          const [, why2] = await down2.some(([n]) => n === 'alink1', 3000, 'host2 alink1 down');
          assert.ok(fault === 'reset' || /nothing heard/.test(why1), why1);
          assert.ok(fault === 'reset' || /nothing heard/.test(why2), why2);
          await sleep(300);
          assert.equal(pathsUsed.at(-1), 1, 'sent on the one path left');
          cable.heal();
          await up1.next(([n]) => n === 'alink1', 5000, 'host1 alink1 back up');
          await up2.some(([n]) => n === 'alink1' && up2.seen.filter(([m]) => m === 'alink1').length >= 2, 5000, 'host2 alink1 back up');
          await sleep(200);
          assert.equal(pathsUsed.at(-1), 2, 'sent on both paths again');
        } finally {
          clearInterval(pump);
        }
        await waitUntil(() => seqs(got2.seen).length === seq, 3000, 'every heartbeat arrived');
        assert.deepEqual([...seqs(got2.seen)].sort((a, b) => a - b), Array.from({ length: seq }, (_, i) => i + 1), 'no heartbeat lost');
        assert.equal(down1.seen.filter(([n]) => n === 'alink2').length, 0, 'alink2 never went down');
        assert.equal(down2.seen.filter(([n]) => n === 'alink2').length, 0, 'alink2 never went down');
      } finally {
        await pair.close();
      }
    });
  }

  test('a lone path lost and back: no messages meanwhile, then they flow again', async () => {
    const pair = await loopbackPair(certs, ['alink1'], { proxies: true });
    try {
      const up1 = new Recorder(pair.host1, 'path-up');
      const down2 = new Recorder(pair.host2, 'path-down');
      const got2 = new Recorder(pair.host2, 'message');
      await up1.some(() => true, 5000, 'host1 up');
      await waitUntil(() => pair.host2.status()[0]!.up, 5000, 'host2 up');
      pair.proxies.get('alink1')!.reset();
      await down2.some(() => true, 3000, 'host2 down');
      await waitUntil(() => !pair.host1.status()[0]!.up, 3000, 'host1 down');
      assert.equal(pair.host1.send(heartbeat('host1', 1)), 0, 'no path up: the message goes nowhere');
      assert.ok(pair.host1.status()[0]!.lastError, 'the status says why');
      pair.proxies.get('alink1')!.heal();
      await up1.next(() => true, 5000, 'host1 up again');
      await waitUntil(() => pair.host2.status()[0]!.up, 5000, 'host2 up again');
      assert.equal(pair.host1.send(heartbeat('host1', 2)), 1);
      const [m] = await got2.next(() => true, 3000, 'a message');
      assert.equal(m.kind === 'heartbeat' && m.seq, 2);
    } finally {
      await pair.close();
    }
  });

  test('a path that never comes up reports path-down after the startup grace; close() is prompt mid-handshake', async () => {
    const pair = await loopbackPair(certs, ['alink1', 'alink2'], { proxies: true });
    try {
      // alink2's cable is stalled before host1 even dials: its connection hangs in the TLS handshake.
      pair.proxies.get('alink2')!.stall();
      const up = new Recorder(pair.host1, 'path-up');
      const down = new Recorder(pair.host1, 'path-down');
      await up.some(([n]) => n === 'alink1', 5000, 'alink1 up');
      // (loopbackPair started host1 already; its grace is connect + path timeout = 1400 ms.)
      const [, why] = await down.some(([n]) => n === 'alink2', 3000, 'alink2 reported down');
      assert.match(why, /no connection within|not connected/);
      assert.equal(up.seen.filter(([n]) => n === 'alink2').length, 0);
      assert.equal(down.seen.filter(([n]) => n === 'alink2').length, 1, 'reported once, not at every retry');
      const started = Date.now();
      await pair.host1.close();
      assert.ok(Date.now() - started < 1500, `close took ${Date.now() - started} ms`);
    } finally {
      await pair.close();
    }
  });

  test('a restarted peer (a new session, ids from 0 again) is heard again', async () => {
    const pair = await loopbackPair(certs, ['alink1', 'alink2']);
    let again: Alink | null = null;
    try {
      const got2 = new Recorder(pair.host2, 'message');
      const up2 = new Recorder(pair.host2, 'path-up');
      await waitUntil(() => pair.host1.status().every((s) => s.up), 5000, 'host1 up');
      pair.host1.send(heartbeat('host1', 1));
      await got2.some(() => true, 3000, 'first boot heard');
      await pair.host1.close();
      again = new Alink({
        self: 'host1',
        peer: 'host2',
        paths: pair.host2.status().map((s) => ({ name: s.name, local: LOOPBACK, peer: LOOPBACK, port: s.port })),
        tls: await certs.material('host1'),
        timing: FAST,
      });
      await again.start();
      await waitUntil(() => up2.seen.length >= 4, 5000, 'both paths up again on host2');
      await waitUntil(() => again!.status().every((s) => s.up), 5000, 'the new host1 up');
      again.send({ ...heartbeat('host1', 1), incarnation: 2 });
      const [m] = await got2.next(() => true, 3000, 'second boot heard');
      assert.equal(m.kind === 'heartbeat' && m.incarnation, 2);
    } finally {
      await again?.close();
      await pair.close();
    }
  });

  test('a listener whose address is not there yet retries, and the path reports down', async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails with EADDRNOTAVAIL, as before an A-Link's
    // address is configured.
    const host2 = new Alink({
      self: 'host2',
      peer: 'host1',
      paths: [{ name: 'alink1', local: '192.0.2.1', peer: '192.0.2.2', port: 0 }],
      tls: await certs.material('host2'),
      timing: FAST,
    });
    const down = new Recorder(host2, 'path-down');
    await host2.start();
    try {
      const [, why] = await down.some(() => true, 3000, 'path-down after the startup grace');
      assert.match(why, /cannot listen on 192\.0\.2\.1:0: .*(EADDRNOTAVAIL|address not available)/i);
      assert.equal(host2.status()[0]!.up, false);
    } finally {
      await host2.close();
    }
  });

  test('close() releases everything and says why to the peer', async () => {
    const pair = await loopbackPair(certs, ['alink1', 'alink2']);
    const down2 = new Recorder(pair.host2, 'path-down');
    const up2 = new Recorder(pair.host2, 'path-up');
    await up2.some(([n]) => n === 'alink1', 5000, 'up');
    await up2.some(([n]) => n === 'alink2', 5000, 'up');
    await pair.host1.close();
    const [, why] = await down2.some(() => true, 3000, 'host2 sees host1 leave');
    assert.match(why, /shutting down/);
    assert.equal(pair.host1.send(heartbeat('host1', 1)), 0, 'a closed Alink sends nothing');
    await pair.close();
  });
});

describe('identity', () => {
  test('the Alink refuses its own material when it does not fit (ALINK_TLS)', async () => {
    const h1 = await certs.material('host1');
    const other = await otherPair.material('host1');
    const path = [{ name: 'alink1', local: LOOPBACK, peer: LOOPBACK, port: 1 }];
    const make = (tlsm: typeof h1, self = 'host1') => () => new Alink({ self, peer: self === 'host1' ? 'host2' : 'host1', paths: path, tls: tlsm });
    assert.throws(make(h1, 'host3'), (e) => isLockstepError(e, 'ALINK_TLS') && /CN/.test(e.message));
    assert.throws(make({ ...h1, ca: other.ca }), (e) => isLockstepError(e, 'ALINK_TLS') && /not signed by the pair CA/.test(e.message));
    assert.throws(make({ ...h1, key: other.key }), (e) => isLockstepError(e, 'ALINK_TLS') && /key/.test(e.message));
    assert.throws(make({ ...h1, cert: 'nonsense' }), (e) => isLockstepError(e, 'ALINK_TLS'));
    assert.throws(
      () => new Alink({ self: 'host1', peer: 'host1', paths: path, tls: h1 }),
      (e) => isLockstepError(e, 'INVALID_SPEC'),
    );
  });

  /** host2 alone, listening on one path; a rogue client tries it. */
  async function listener(): Promise<{ host2: Alink; port: number; refused: Recorder<'refused'>; up: Recorder<'path-up'>; got: Recorder<'message'> }> {
    const host2 = new Alink({
      self: 'host2',
      peer: 'host1',
      paths: [{ name: 'alink1', local: LOOPBACK, peer: LOOPBACK, port: 0 }],
      tls: await certs.material('host2'),
      timing: FAST,
    });
    const refused = new Recorder(host2, 'refused');
    const up = new Recorder(host2, 'path-up');
    const got = new Recorder(host2, 'message');
    await host2.start();
    return { host2, port: host2.status()[0]!.port, refused, up, got };
  }

  /** A client that connects with the given material, says hello as host1 and sends one heartbeat. */
  async function rogueClient(port: number, m: { cert: string; key: string; ca: string }): Promise<{ bye: string | null; error: string | null }> {
    return new Promise((resolve) => {
      const s = tls.connect({ host: LOOPBACK, port, cert: m.cert, key: m.key, ca: [m.ca], checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' });
      const dec = new FrameDecoder();
      let bye: string | null = null;
      let error: string | null = null;
      s.on('secureConnect', () => {
        s.write(encodeFrame({ t: 'hello', proto: { min: 1, max: 1 }, host: 'host1', path: 'alink1', session: '0123456789abcdef' }));
        s.write(encodeFrame({ t: 'msg', id: 0, env: { v: 1, kind: 'heartbeat', body: { ...heartbeat('host1', 1), kind: undefined } } }));
      });
      s.on('data', (b: Buffer) => {
        for (const f of dec.push(b).frames) {
          const v = parsePayload(f) as { t: string; reason?: string };
          if (v.t === 'bye') bye = v.reason ?? null;
        }
      });
      s.on('error', (e) => (error = e.message));
      s.on('close', () => resolve({ bye, error }));
      setTimeout(() => s.destroy(), 3000);
    });
  }

  test('a certificate of another pair is refused; nothing is delivered', async () => {
    const l = await listener();
    try {
      // Trusts our pair's CA (so it accepts host2's certificate) but holds a certificate of pair B.
      const other = await otherPair.material('host1');
      const ours = await certs.material('host1');
      const r = await rogueClient(l.port, { ...other, ca: ours.ca });
      const [, reason] = await l.refused.some(() => true, 3000, 'refused');
      assert.match(reason, /TLS handshake .* failed/);
      assert.ok(r.error !== null || r.bye === null, 'the rogue learns nothing but a TLS alert');
      await sleep(200);
      assert.equal(l.up.seen.length, 0, 'the path never came up');
      assert.equal(l.got.seen.length, 0, 'no message delivered');
    } finally {
      await l.host2.close();
    }
  });

  test('a certificate of the right pair but the wrong host is refused; nothing is delivered', async () => {
    const l = await listener();
    try {
      const r = await rogueClient(l.port, await certs.material('host3'));
      const [, reason] = await l.refused.some(() => true, 3000, 'refused');
      assert.match(reason, /CN is "host3", not the peer "host1"/);
      assert.match(r.bye ?? '', /refused by host2: .*CN is "host3"/, 'a host of our own pair is told why');
      await sleep(200);
      assert.equal(l.up.seen.length, 0);
      assert.equal(l.got.seen.length, 0);
      // host2 itself, impersonating host1 with its own certificate: the right pair, the wrong host.
      await rogueClient(l.port, await certs.material('host2'));
      await l.refused.some(([, why]) => /CN is "host2"/.test(why), 3000, 'refused host2 as host1');
      assert.equal(l.got.seen.length, 0);
    } finally {
      await l.host2.close();
    }
  });

  test('the dialing host refuses a listener with another pair’s or the wrong host’s certificate', async () => {
    for (const [label, m, expect] of [
      ['another pair', await otherPair.material('host2'), /certificate|issuer|verify/i],
      ['the wrong host', await certs.material('host3'), /CN is "host3", not the peer "host2"/],
    ] as const) {
      // A rogue listener: TLS 1.3 with client certificates like host2, but not host2.
      const server = tls.createServer({ cert: m.cert, key: m.key, ca: [(await certs.material('host1')).ca], requestCert: true, minVersion: 'TLSv1.3' }, (s) => {
        s.on('error', () => {});
        s.write(encodeFrame({ t: 'hello', proto: { min: 1, max: 1 }, host: 'host2', path: 'alink1', session: '0123456789abcdef' }));
        s.write(encodeFrame({ t: 'msg', id: 0, env: { v: 1, kind: 'pair-accept', body: { from: 'host2', epoch: 9 } } }));
      });
      server.on('tlsClientError', () => {});
      await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
      const port = (server.address() as { port: number }).port;
      const host1 = new Alink({ self: 'host1', peer: 'host2', paths: [{ name: 'alink1', local: LOOPBACK, peer: LOOPBACK, port }], tls: await certs.material('host1'), timing: FAST });
      const refused = new Recorder(host1, 'refused');
      const up = new Recorder(host1, 'path-up');
      const got = new Recorder(host1, 'message');
      try {
        await host1.start();
        const [, reason] = await refused.some(() => true, 3000, `refused (${label})`);
        assert.match(reason, expect, label);
        await sleep(300);
        assert.equal(up.seen.length, 0, label);
        assert.equal(got.seen.length, 0, label);
      } finally {
        await host1.close();
        await new Promise<void>((r) => server.close(() => r()));
      }
    }
  });

  test('a hello for another path is refused (cabling or configuration differ)', async () => {
    const l = await listener();
    try {
      const ours = await certs.material('host1');
      await new Promise<void>((resolve) => {
        const s = tls.connect({ host: LOOPBACK, port: l.port, cert: ours.cert, key: ours.key, ca: [ours.ca], checkServerIdentity: () => undefined });
        s.on('secureConnect', () => s.write(encodeFrame({ t: 'hello', proto: { min: 1, max: 1 }, host: 'host1', path: 'alink2', session: '0123456789abcdef' })));
        s.on('error', () => {});
        s.resume(); // read, so that the refusal (bye, then the close) is seen
        s.on('close', () => resolve());
      });
      const [, reason] = await l.refused.some(() => true, 3000, 'refused');
      assert.match(reason, /path names differ/);
      assert.equal(l.up.seen.length, 0);
    } finally {
      await l.host2.close();
    }
  });
});
