/**
 * The networks' pure parts: an interface's sysfs files made sense of (as a veth up, down, unplugged, gone
 * or unreadable leaves them), the link state judged from them, interface names refused before they become
 * paths, the bandwidth between two counter samples (an interface made again, counters gone back, samples
 * too close or too old), which interface holds an A-Link address in `ip -j addr` output, and the networks
 * a daemon config names. The same files read from a real kernel: networks-netns.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { INTERFACE_FILES, isInterfaceName, linkStateOf, parseInterfaceFiles, type FileRead, type InterfaceFacts, type InterfaceFile } from '../../src/network/sysfs-interface.js';
import { RATE_STALE_MS, RateSampler, rateBetween, type CounterSample } from '../../src/network/rate-sampler.js';
import { interfaceWithAddress } from '../../src/network/interface-address.js';
import { networksOf } from '../../src/daemon/networks.js';

/** What a veth with both ends up shows, as the kernel writes it (newlines included). */
const VETH_UP: Record<InterfaceFile, string> = {
  ifindex: '7\n',
  operstate: 'up\n',
  flags: '0x1003\n',
  carrier: '1\n',
  speed: '10000\n',
  address: '02:4C:53:00:00:01\n',
  mtu: '1400\n',
  'statistics/rx_bytes': '123456\n',
  'statistics/tx_bytes': '18446744073709551615\n',
};

function files(over: Partial<Record<InterfaceFile, string | { code: string }>> = {}): Record<InterfaceFile, FileRead> {
  const out = {} as Record<InterfaceFile, FileRead>;
  for (const f of INTERFACE_FILES) {
    const v = f in over ? over[f]! : VETH_UP[f];
    out[f] = typeof v === 'string' ? { ok: true, text: v } : { ok: false, code: v.code };
  }
  return out;
}

function facts(over: Partial<Record<InterfaceFile, string | { code: string }>> = {}): InterfaceFacts {
  const r = parseInterfaceFiles('al1', files(over));
  assert.equal(r.kind, 'present', r.kind === 'present' ? '' : JSON.stringify(r));
  return (r as { facts: InterfaceFacts }).facts;
}

test('an interface that is up: every fact, the MAC lowercased, 64-bit counters kept exactly', () => {
  assert.deepEqual(facts(), {
    ifname: 'al1',
    ifindex: 7,
    operstate: 'up',
    adminUp: true,
    carrier: true,
    speedMbps: 10000,
    mac: '02:4c:53:00:00:01',
    mtu: 1400,
    rxBytes: 123456n,
    txBytes: 18446744073709551615n,
  });
  assert.deepEqual(linkStateOf(facts()), { state: 'up', detail: 'carrier (operstate up)' });
});

test('what the kernel will not say in a state is unknown, not an error', () => {
  // Administratively down: carrier and speed fail with EINVAL.
  const down = facts({ flags: '0x1002', operstate: 'down', carrier: { code: 'EINVAL' }, speed: { code: 'EINVAL' } });
  assert.deepEqual([down.adminUp, down.carrier, down.speedMbps], [false, null, null]);
  assert.deepEqual(linkStateOf(down), { state: 'down', detail: 'administratively down (operstate down)' });
  // Up, but the far end is down: no carrier, a speed the driver does not know (-1, or u32 -1 on older kernels).
  const unplugged = facts({ operstate: 'lowerlayerdown', carrier: '0', speed: '-1' });
  assert.deepEqual([unplugged.carrier, unplugged.speedMbps], [false, null]);
  assert.deepEqual(linkStateOf(unplugged), { state: 'down', detail: 'no carrier (operstate lowerlayerdown)' });
  assert.equal(facts({ speed: '4294967295' }).speedMbps, null);
  assert.equal(facts({ speed: '0' }).speedMbps, null);
  // A bridge that never had a port, loopback, a tun: operstate unknown with carrier is up.
  assert.equal(linkStateOf(facts({ operstate: 'unknown' })).state, 'up');
  assert.deepEqual(linkStateOf(facts({ operstate: 'dormant' })), { state: 'down', detail: 'operstate dormant' });
  // No hardware address at all (a tun): no MAC.
  assert.equal(facts({ address: '\n' }).mac, null);
});

test('an interface that is not there, or goes away while read, is missing; other failures are unreadable', () => {
  assert.deepEqual(parseInterfaceFiles('al1', files({ ifindex: { code: 'ENOENT' } })), { kind: 'missing' });
  assert.deepEqual(parseInterfaceFiles('al1', files({ 'statistics/tx_bytes': { code: 'ENOENT' } })), { kind: 'missing' });
  assert.deepEqual(parseInterfaceFiles('al1', files({ mtu: { code: 'EIO' } })), { kind: 'unreadable', reason: 'cannot read mtu of al1: EIO' });
  const bad: [Partial<Record<InterfaceFile, string>>, RegExp][] = [
    [{ ifindex: '0' }, /^ifindex of al1 is not a positive integer/],
    [{ operstate: 'sideways' }, /^operstate of al1 is not one of unknown, notpresent/],
    [{ flags: '4099' }, /^flags of al1 is not a hexadecimal number/],
    [{ mtu: '' }, /^mtu of al1 is not an integer/],
    [{ address: 'zz:zz' }, /^address of al1 is not a hardware address/],
    [{ 'statistics/rx_bytes': '-5' }, /^statistics\/rx_bytes of al1 is not a byte count/],
  ];
  for (const [over, reason] of bad) {
    const r = parseInterfaceFiles('al1', files(over));
    assert.equal(r.kind, 'unreadable', JSON.stringify(over));
    assert.match((r as { reason: string }).reason, reason);
  }
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
