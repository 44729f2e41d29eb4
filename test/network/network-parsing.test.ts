/**
 * The networks' pure parts: an interface's sysfs files made sense of (as a veth up, down, unplugged, gone
 * or unreadable leaves them), the link state judged from them, interface names refused before they become
 * paths, the bandwidth between two counter samples (an interface made again, counters gone back, samples
 * too close or too old), which interface holds an A-Link address in `ip -j addr` output, and the networks
 * a daemon config names. The same files read from a real kernel: networks-netns.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isInterfaceName, linkStateOf, type InterfaceFacts } from '../../src/network/link-facts.js';
import { parseLinkTable, readLinkTable, readingOf } from '../../src/network/link-reader.js';
import { run } from '../../src/util/exec.js';
import { RATE_STALE_MS, RateSampler, rateBetween, type CounterSample } from '../../src/network/rate-sampler.js';
import { interfaceWithAddress } from '../../src/network/interface-address.js';
import { networksOf } from '../../src/daemon/networks.js';

/** What a veth with both ends up shows, as the kernel writes it (newlines included). */
/** `ip -j -s link show` as iproute2 prints it, trimmed to what is read. */
const LINKS = JSON.stringify([
  { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], mtu: 65536, operstate: 'UNKNOWN', address: '00:00:00:00:00:00', stats64: { rx: { bytes: 500 }, tx: { bytes: 500 } } },
  { ifindex: 7, ifname: 'al1', flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], mtu: 1400, operstate: 'UP', address: '02:4C:53:00:00:01', stats64: { rx: { bytes: 123456 }, tx: { bytes: 2 ** 52 } } },
  { ifindex: 8, ifname: 'mg0', flags: ['NO-CARRIER', 'BROADCAST', 'MULTICAST', 'UP'], mtu: 1500, operstate: 'LOWERLAYERDOWN', address: '02:00:00:00:00:02', stats64: { rx: { bytes: 0 }, tx: { bytes: 0 } } },
  { ifindex: 9, ifname: 'bz0', flags: ['BROADCAST', 'MULTICAST'], mtu: 1500, operstate: 'DOWN', address: '02:00:00:00:00:03', stats64: { rx: { bytes: 1 }, tx: { bytes: 1 } } },
  { ifindex: 10, ifname: 'tun0', flags: ['POINTOPOINT', 'UP', 'LOWER_UP'], mtu: 1500, operstate: 'UNKNOWN', stats64: { rx: { bytes: 3 }, tx: { bytes: 4 } } },
  { ifindex: 11, ifname: 'weird', flags: 'UP', mtu: 1500 },
]);

function facts(ifname: string): InterfaceFacts {
  const r = readingOf(parseLinkTable(LINKS), ifname);
  assert.equal(r.kind, 'present', r.kind);
  return (r as { facts: InterfaceFacts }).facts;
}

test('an interface that is up: every fact netlink gives, the MAC lowercased, counters kept exactly; no speed', () => {
  assert.deepEqual(facts('al1'), { ifname: 'al1', ifindex: 7, operstate: 'up', adminUp: true, carrier: true, speedMbps: null, mac: '02:4c:53:00:00:01', mtu: 1400, rxBytes: 123456n, txBytes: 2n ** 52n });
  assert.deepEqual(linkStateOf(facts('al1')), { state: 'up', detail: 'carrier (operstate up)' });
  // Loopback and a tun: operstate unknown with carrier is up; a tun has no hardware address.
  assert.deepEqual(linkStateOf(facts('lo')), { state: 'up', detail: 'carrier (operstate unknown)' });
  assert.equal(facts('tun0').mac, null);
});

test('no carrier, administratively down; an entry that is not an interface is skipped, bad output unreadable', () => {
  assert.deepEqual([facts('mg0').carrier, linkStateOf(facts('mg0'))], [false, { state: 'down', detail: 'no carrier (operstate lowerlayerdown)' }]);
  // Down: the kernel keeps no carrier (sysfs answers EINVAL), so it is unknown.
  assert.deepEqual([facts('bz0').adminUp, facts('bz0').carrier, linkStateOf(facts('bz0')).state], [false, null, 'down']);
  assert.deepEqual(readingOf(parseLinkTable(LINKS), 'weird'), { kind: 'missing' });
  assert.deepEqual(readingOf(parseLinkTable(LINKS), 'nosuch0'), { kind: 'missing' });
  assert.equal(readingOf(parseLinkTable('not json'), 'lo').kind, 'unreadable');
  assert.deepEqual(parseLinkTable('{}'), { ok: false, reason: 'ip -j link: not a list' });
});

test('the real table of this machine: loopback as the kernel has it, its speed unknown', async () => {
  const table = await readLinkTable(run, ['lo']);
  const lo = readingOf(table, 'lo');
  assert.equal(lo.kind, 'present', lo.kind === 'unreadable' ? lo.reason : lo.kind);
  const f = (lo as { facts: InterfaceFacts }).facts;
  assert.deepEqual([f.ifindex, f.adminUp, f.mac, f.mtu, f.speedMbps], [1, true, '00:00:00:00:00:00', 65536, null]);
  assert.ok(f.rxBytes > 0n);
});

test("interface names follow the kernel's rule before they become paths", () => {
  for (const ok of ['lo', 'alink1', 'br-biz', 'veth0@x', 'a'.repeat(15)]) assert.ok(isInterfaceName(ok), ok);
  for (const bad of ['', '.', '..', '../etc', 'a/b', 'eth0:1', 'has space', 'a'.repeat(16)]) assert.equal(isInterfaceName(bad), false, bad);
});

const sample = (over: Partial<CounterSample> = {}): CounterSample => ({ ifindex: 7, rxBytes: 1000n, txBytes: 5000n, atMs: 10_000, wallMs: 1_700_000_000_000, ...over });

test('bandwidth: the difference of the last two samples over the time between them, or why there is none', () => {
  assert.deepEqual(rateBetween(sample(), sample({ rxBytes: 1000n + 250_000n, txBytes: 5000n + 1_000_000n, atMs: 10_500, wallMs: 1_700_000_000_500 })), {
    kind: 'measured',
    rxBytesPerSec: 500_000,
    txBytesPerSec: 2_000_000,
    overMs: 500,
    wallMs: 1_700_000_000_500,
  });
  // Beyond 2^53 the counters are exact (bigint) and so is the difference.
  const big = 2n ** 60n;
  assert.equal((rateBetween(sample({ rxBytes: big }), sample({ rxBytes: big + 3n, atMs: 11_000 })) as { rxBytesPerSec: number }).rxBytesPerSec, 3);
  assert.deepEqual(rateBetween(sample(), sample({ ifindex: 8, atMs: 11_000 })), { kind: 'unknown', reason: 'the interface was made again: its counters start over' });
  assert.deepEqual(rateBetween(sample(), sample({ txBytes: 10n, atMs: 11_000 })), { kind: 'unknown', reason: 'the counters went back (the driver reset them)' });
  assert.deepEqual(rateBetween(sample(), sample({ atMs: 10_020 })), { kind: 'unknown', reason: 'samples only 20 ms apart' });

  const s = new RateSampler();
  assert.deepEqual(s.rate('al1', 10_000), { kind: 'unknown', reason: 'not sampled yet' });
  s.observe('al1', sample());
  assert.deepEqual(s.rate('al1', 10_000), { kind: 'unknown', reason: 'one sample so far: a rate needs two' });
  s.observe('al1', sample({ rxBytes: 2000n, atMs: 11_000 }));
  s.observe('al1', sample({ rxBytes: 4000n, atMs: 12_000 }));
  assert.equal((s.rate('al1', 12_000) as { rxBytesPerSec: number }).rxBytesPerSec, 2000, 'the last two samples, not the first');
  assert.deepEqual(s.rate('al1', 12_000 + RATE_STALE_MS + 1000), { kind: 'unknown', reason: 'last sampled 11 s ago' });
  s.forget('al1');
  assert.deepEqual(s.rate('al1', 12_000), { kind: 'unknown', reason: 'not sampled yet' });
});

test("an A-Link's interface is the one holding its local address in `ip -j addr` output", () => {
  const listing = JSON.stringify([
    { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
    { ifindex: 5, ifname: 'alink1', operstate: 'DOWN', addr_info: [{ family: 'inet', local: '10.10.1.1', prefixlen: 24 }] },
    { ifindex: 6, ifname: 'alink2', addr_info: [{ family: 'inet', local: '10.10.2.1', prefixlen: 24 }, { family: 'inet', local: '10.10.9.1', prefixlen: 24 }] },
    { ifindex: 7, ifname: 'odd' },
  ]);
  assert.deepEqual(interfaceWithAddress(listing, '10.10.1.1'), { kind: 'found', ifname: 'alink1' }, 'found whatever the link state');
  assert.deepEqual(interfaceWithAddress(listing, '10.10.9.1'), { kind: 'found', ifname: 'alink2' });
  assert.deepEqual(interfaceWithAddress(listing, '10.10.1.2'), { kind: 'absent', reason: 'no interface has the address 10.10.1.2' });
  assert.equal(interfaceWithAddress('not json', '10.10.1.1').kind, 'unknown', 'output ip would not print says nothing of the host');
  assert.deepEqual(interfaceWithAddress('{}', '10.10.1.1'), { kind: 'unknown', reason: 'ip printed JSON that is not a list of links' });
});

test('the networks a config names: A-Link paths first, the business bridge beside its uplink', () => {
  const alink = [
    { name: 'alink1' as const, local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' },
    { name: 'alink2' as const, local: '10.10.2.1', peer: '10.10.2.2', port: 7789, broadcast: '10.10.2.255' },
  ];
  assert.deepEqual(networksOf({ alink, mgmtInterface: 'mgmt0', businessInterface: 'biz0', businessBridge: 'br-biz' }), [
    { name: 'alink1', role: 'alink', interface: null, bridge: null, alink: { localAddress: '10.10.1.1', peerAddress: '10.10.1.2' } },
    { name: 'alink2', role: 'alink', interface: null, bridge: null, alink: { localAddress: '10.10.2.1', peerAddress: '10.10.2.2' } },
    { name: 'mgmt', role: 'management', interface: 'mgmt0', bridge: null, alink: null },
    { name: 'business', role: 'business', interface: 'biz0', bridge: 'br-biz', alink: null },
  ]);
  // Without an uplink the business network's interface is the bridge itself; no mgmt interface: not configured.
  const [, mgmt, business] = networksOf({ alink: alink.slice(0, 1), mgmtInterface: null, businessInterface: 'br-biz', businessBridge: 'br-biz' });
  assert.deepEqual([mgmt!.interface, business!.interface, business!.bridge], [null, 'br-biz', null]);
});
