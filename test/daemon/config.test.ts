import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_DAEMON_TIMING, parseDaemonConfig } from '../../src/daemon/config.js';
import { isLockstepError } from '../../src/util/errors.js';
import { coreConfigOf } from '../../src/daemon/main.js';

const minimal = {
  host: 'host1',
  dataDir: '/var/lib/lockstep',
  pair: { id: 'lab', peer: 'host2', secret: 'a-long-enough-secret' },
  alink: [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }],
};

test('a minimal config gets the documented defaults', () => {
  const c = parseDaemonConfig(minimal);
  assert.equal(c.apiSocket, '/var/lib/lockstep/run/lockstepd.sock');
  assert.equal(c.accel, 'auto');
  assert.equal(c.businessBridge, 'br-biz');
  assert.equal(c.businessInterface, 'br-biz', 'the bridge itself when no uplink is named');
  assert.equal(c.mgmtInterface, null);
  assert.deepEqual(c.quorum, []);
  assert.deepEqual(c.timing, DEFAULT_DAEMON_TIMING);
  assert.equal(c.pair.tiebreakWinner, 'host1', 'the smaller id wins the tie-break by default');
  assert.deepEqual(c.pairingPorts, { discovery: 7791, exchange: 7792 });
  assert.deepEqual(c.dataPorts, { replication: 7793, migration: 7794, checkpoint: 7795 });
  assert.deepEqual(c.resync, { maxBytesPerSec: null, busyBytesPerSec: 64 * 1024 * 1024 }, 'a resync yields to a busy guest by default');
  assert.equal(c.guestHeartbeatTimeoutMs, 15_000);
  assert.deepEqual(c.rttLimitMs, { ft: 2, ha: 10 }, "SplitSite's limits are everRun's by default");
});

test("SplitSite's limits may be raised, and reach the core's configuration", () => {
  const c = parseDaemonConfig({ ...minimal, splitsite: { ftRttLimitMs: 50, haRttLimitMs: 100 } });
  assert.deepEqual(c.rttLimitMs, { ft: 50, ha: 100 });
  assert.deepEqual(coreConfigOf(c).rttLimitMs, { ft: 50, ha: 100 });
  assert.deepEqual(parseDaemonConfig({ ...minimal, splitsite: { haRttLimitMs: 20 } }).rttLimitMs, { ft: 2, ha: 20 }, 'one given, the other default');
});

test('resync limits in MiB/s, null for none', () => {
  const c = parseDaemonConfig({ ...minimal, resync: { maxMiBps: 200, busyMiBps: null } });
  assert.deepEqual(c.resync, { maxBytesPerSec: 200 * 1024 * 1024, busyBytesPerSec: null });
});

test('two quorum servers and two A-Links, timing overridden', () => {
  const c = parseDaemonConfig({
    ...minimal,
    alink: [...minimal.alink, { name: 'alink2', local: '10.10.2.1', peer: '10.10.2.2', port: 7789, broadcast: '10.10.2.255' }],
    quorum: [
      { id: 'quorum1', address: '10.10.0.21', port: 7790, ca: '/etc/lockstep/q1.crt' },
      { id: 'quorum2', address: '10.10.0.22', port: 7790, ca: '/etc/lockstep/q2.crt' },
    ],
    timing: { heartbeatIntervalMs: 50, peerTimeoutMs: 300 },
  });
  assert.deepEqual(c.quorum.map((q) => q.id), ['quorum1', 'quorum2']);
  assert.equal(c.alink.length, 2);
  assert.equal(c.timing.heartbeatIntervalMs, 50);
  assert.equal(c.timing.pairLeaseMs, DEFAULT_DAEMON_TIMING.pairLeaseMs);
});

for (const [what, patch, key] of [
  ['a relative data directory', { dataDir: 'rel' }, 'dataDir'],
  ['an unknown accelerator', { accel: 'hvf' }, 'accel'],
  ['itself as its peer', { pair: { ...minimal.pair, peer: 'host1' } }, 'pair.peer'],
  ['a short pairing secret', { pair: { ...minimal.pair, secret: 'short' } }, 'pair.secret'],
  ['a tie-break winner outside the pair', { pair: { ...minimal.pair, tiebreakWinner: 'host9' } }, 'pair.tiebreakWinner'],
  ['no A-Link', { alink: [] }, 'alink'],
  ['three A-Links', { alink: [minimal.alink[0], minimal.alink[0], minimal.alink[0]] }, 'alink'],
  ['an A-Link named twice', { alink: [minimal.alink[0], minimal.alink[0]] }, 'alink'],
  ['a bad A-Link address', { alink: [{ ...minimal.alink[0], peer: '10.10.1.300' }] }, 'alink[0].peer'],
  ['a port out of range', { alink: [{ ...minimal.alink[0], port: 70000 }] }, 'alink[0].port'],
  ['three quorum servers', { quorum: [1, 2, 3].map((i) => ({ id: `q${i}`, address: 'x', port: 1, ca: '/c' })) }, 'quorum'],
  ['a relative quorum CA path', { quorum: [{ id: 'q1', address: 'x', port: 1, ca: 'c.crt' }] }, 'quorum[0].ca'],
  ['a timeout shorter than two heartbeats', { timing: { heartbeatIntervalMs: 400, peerTimeoutMs: 600 } }, 'timing.peerTimeoutMs'],
  ['a lease no longer than the timeout', { timing: { peerTimeoutMs: 600, pairLeaseMs: 600 } }, 'timing.pairLeaseMs'],
  ['a fence margin of half the lease', { timing: { fenceMarginMs: 500 } }, 'timing.fenceMarginMs'],
  ['a fractional interval', { timing: { heartbeatIntervalMs: 1.5 } }, 'timing.heartbeatIntervalMs'],
  ['a guest heartbeat timeout under a second', { guestHeartbeatTimeoutMs: 100 }, 'guestHeartbeatTimeoutMs'],
  ['a resync limit of 0', { resync: { busyMiBps: 0 } }, 'resync.busyMiBps'],
  ['a resync limit that is not a number', { resync: { maxMiBps: 'fast' } }, 'resync.maxMiBps'],
  ['an FT round trip limit of 0', { splitsite: { ftRttLimitMs: 0 } }, 'splitsite.ftRttLimitMs'],
  ['an FT limit above the HA limit', { splitsite: { ftRttLimitMs: 20 } }, 'splitsite.ftRttLimitMs'],
  ['an unknown SplitSite field', { splitsite: { ftRttMs: 5 } }, 'splitsite.ftRttMs'],
] as const) {
  test(`rejects ${what}, naming '${key}'`, () => {
    assert.throws(
      () => parseDaemonConfig({ ...minimal, ...patch }),
      (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['key'] === key,
    );
  });
}

test('rejects what is not an object', () => {
  for (const bad of [null, 42, 'x', []]) assert.throws(() => parseDaemonConfig(bad), (e) => isLockstepError(e, 'INVALID_SPEC'));
});

test('owner information: a name and optional one-line fields; absent is null; anything else is refused naming the field', () => {
  const base = parseDaemonConfig(minimal);
  assert.equal(base.owner, null);
  const c = parseDaemonConfig({ ...minimal, owner: { name: 'Example Manufacturing', phone: '+33 1 23 45 67 89' } });
  assert.deepEqual(c.owner, { name: 'Example Manufacturing', contact: null, email: null, phone: '+33 1 23 45 67 89', site: null });
  for (const [owner, key] of [
    [{ phone: '1' }, 'owner.name'],
    [{ name: '  ' }, 'owner.name'],
    [{ name: 'x', site: 'line one\nline two' }, 'owner.site'],
    [{ name: 'x', email: 'e'.repeat(201) }, 'owner.email'],
    [{ name: 'x', fax: '1' }, 'owner.fax'],
    ['Example', 'owner'],
  ] as const) {
    assert.throws(() => parseDaemonConfig({ ...minimal, owner }), (e: unknown) => isLockstepError(e) && e.code === 'INVALID_SPEC' && e.fields['key'] === key, JSON.stringify(owner));
  }
});
