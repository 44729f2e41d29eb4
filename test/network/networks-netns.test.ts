/**
 * A host's networks read from a real kernel, as lockstepd reads them: a child `node` entered into the host's
 * network namespace with `nsenter --net` (as the lab starts lockstepd), whose own /sys is the root
 * namespace's — the test checks that it is, which is why the reader mounts a sysfs of its own namespace
 * (src/network/namespace-sysfs.ts). In the host namespace: an A-Link veth to a peer namespace (its
 * address, MTU and MAC set here), a management veth whose far end starts down, a business bridge with its
 * uplink veth, and a second A-Link address no interface holds. Traffic over the A-Link (ping) must move its
 * counters, and show as bandwidth between two samples; a link pulled, set down and deleted must show so.
 * The sysfs holder must end with the process that started it, even when that process is SIGKILLed, and be
 * started again after it died.
 *
 * Needs root (namespaces, mounts); skipped otherwise. Everything it creates is named after this process and
 * deleted at the end.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { deleteNamespace, ensureAddress, ensureBridge, ensureNamespace, ensureVeth, setLinkUp, setMaster } from '../../src/lab/netns.js';
import { inNetns, run, runIn } from '../../src/util/exec.js';
import { HostNetworks, type NetworkConfig, type NetworkStatus } from '../../src/daemon/networks.js';
import { Cleanup } from '../support/cleanup.js';

const isRoot = process.getuid?.() === 0;
const needsRoot = !isRoot && 'needs root';
const NS = { host: `lsnet-${process.pid}-h`, peer: `lsnet-${process.pid}-p` };
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'networks-node.js');
const MAC = '02:4c:53:00:00:01';

const CONFIG: NetworkConfig = {
  alink: [
    { name: 'alink1', local: '10.77.1.1', peer: '10.77.1.2', port: 7788, broadcast: '10.77.1.255' },
    { name: 'alink2', local: '10.77.2.1', peer: '10.77.2.2', port: 7789, broadcast: '10.77.2.255' },
  ],
  mgmtInterface: 'mg0',
  businessInterface: 'bz0',
  businessBridge: 'brz',
};

const cleanup = new Cleanup();

before(async () => {
  if (!isRoot) return;
  for (const ns of Object.values(NS)) {
    await ensureNamespace(ns);
    cleanup.add(() => deleteNamespace(ns));
  }
  // alink1: al1 here ↔ al1 at the peer, 10.77.1.0/24.
  await ensureVeth(NS.host, 'al1', NS.peer, 'al1');
  await runIn(NS.host, 'ip', ['link', 'set', 'al1', 'mtu', '1400', 'address', MAC]);
  await runIn(NS.peer, 'ip', ['link', 'set', 'al1', 'mtu', '1400']);
  await ensureAddress(NS.host, 'al1', '10.77.1.1/24');
  await ensureAddress(NS.peer, 'al1', '10.77.1.2/24');
  // mgmt: mg0 here ↔ mg0p at the peer (the switch), which stays down for now: a pulled cable.
  await ensureVeth(NS.host, 'mg0', NS.peer, 'mg0p');
  // business: the bridge brz with its uplink bz0 ↔ bz0p at the peer.
  await ensureVeth(NS.host, 'bz0', NS.peer, 'bz0p');
  await ensureBridge(NS.host, 'brz');
  await setMaster(NS.host, 'bz0', 'brz');
  for (const [ns, ifname] of [[NS.host, 'al1'], [NS.peer, 'al1'], [NS.host, 'mg0'], [NS.host, 'bz0'], [NS.peer, 'bz0p']] as const) await setLinkUp(ns, ifname, true);
});

after(() => cleanup.run());

/** The fixture inside the host namespace; each call of `ask` sends a command and waits for its answer. */
class HostNetworksProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  private readonly lines: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];
  readonly stderr: string[] = [];

  constructor() {
    const [cmd, args] = inNetns(NS.host, process.execPath, [FIXTURE, JSON.stringify({ host: 'host1', config: CONFIG })]);
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(JSON.parse(line) as Record<string, unknown>);
      for (const w of this.waiters.splice(0)) w();
    });
    createInterface({ input: this.child.stderr! }).on('line', (line) => this.stderr.push(line));
  }

  async next(ev: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex((l) => l['ev'] === ev);
      if (i >= 0) return this.lines.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error(`no '${ev}' from the fixture within ${timeoutMs} ms (stderr: ${this.stderr.join(' | ')})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
  }

  async sample(): Promise<void> {
    this.child.stdin!.write('{"sample":true}\n');
    await this.next('sampled');
  }

  async list(): Promise<Record<string, NetworkStatus>> {
    this.child.stdin!.write('{"list":true}\n');
    const networks = (await this.next('list'))['networks'] as NetworkStatus[];
    return Object.fromEntries(networks.map((n) => [n.name, n]));
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin!.write('{"close":true}\n');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

test("each network's facts from the host namespace, by netlink; traffic moves the counters and shows as bandwidth", { skip: needsRoot, timeout: 60_000 }, async () => {
  const p = new HostNetworksProcess();
  cleanup.add(() => p.close());
  const ready = await p.next('ready');
  // Why netlink: the process's own /sys is the root namespace's, and none of the host's interfaces is there.
  assert.deepEqual(ready['plainSysHas'], []);

  let n = await p.list();
  assert.deepEqual(Object.keys(n), ['alink1', 'alink2', 'mgmt', 'business']);
  const a1 = n['alink1']!;
  assert.deepEqual(
    [a1.role, a1.host, a1.interface, a1.state, a1.detail, a1.operstate, a1.adminUp, a1.carrier, a1.speedMbps, a1.mac, a1.mtu],
    // The speed is sysfs's only, and this /sys is another namespace's: unknown.
    ['alink', 'host1', 'al1', 'up', 'carrier (operstate up)', 'up', true, true, null, MAC, 1400],
  );
  assert.deepEqual(a1.alink, { localAddress: '10.77.1.1', peerAddress: '10.77.1.2', connected: null, rttMs: null, lastError: null }, 'no A-Link runs here: its view is unknown');
  assert.deepEqual(a1.bandwidth, { rxBytesPerSec: null, txBytesPerSec: null, overMs: null, sampledAt: null, reason: 'not sampled yet: the health loop samples the counters once the host is paired' });
  const a2 = n['alink2']!;
  assert.deepEqual([a2.interface, a2.state, a2.detail], [null, 'missing', 'no interface has the address 10.77.2.1']);
  const mgmt = n['mgmt']!;
  assert.deepEqual([mgmt.interface, mgmt.state, mgmt.adminUp, mgmt.carrier], ['mg0', 'down', true, false], `the far end is down: ${mgmt.detail}`);
  assert.match(mgmt.detail, /^no carrier/);
  const biz = n['business']!;
  assert.deepEqual([biz.role, biz.interface, biz.bridge, biz.state], ['business', 'bz0', 'brz', 'up']);

  // Two samples around a burst of pings over alink1: the counters move, and the bandwidth is their difference.
  await p.sample();
  n = await p.list();
  assert.equal(n['alink1']!.bandwidth.reason, 'one sample so far: a rate needs two');
  const before = n['alink1']!;
  const PINGS = 100;
  const PAYLOAD = 1200;
  await runIn(NS.host, 'ping', ['-q', '-c', String(PINGS), '-i', '0.005', '-s', String(PAYLOAD), '-W', '1', '10.77.1.2']);
  await p.sample();
  n = await p.list();
  const after = n['alink1']!;
  const sent = after.txBytes! - before.txBytes!;
  const got = after.rxBytes! - before.rxBytes!;
  assert.ok(sent >= PINGS * PAYLOAD, `tx counter moved by ${sent} bytes`);
  assert.ok(got >= PINGS * PAYLOAD, `rx counter moved by ${got} bytes (the replies)`);
  const bw = after.bandwidth;
  assert.equal(bw.reason, null, JSON.stringify(bw));
  assert.ok(bw.overMs! > 0 && bw.sampledAt !== null);
  const txOver = (bw.txBytesPerSec! * bw.overMs!) / 1000;
  const rxOver = (bw.rxBytesPerSec! * bw.overMs!) / 1000;
  // The samples straddle the burst; the lists read a moment before and after them.
  assert.ok(txOver >= PINGS * PAYLOAD && txOver <= sent * 1.01 + 1000, `tx ${bw.txBytesPerSec} B/s over ${bw.overMs} ms ≈ ${txOver} bytes, the counter moved ${sent}`);
  assert.ok(rxOver >= PINGS * PAYLOAD && rxOver <= got * 1.01 + 1000, `rx ${bw.rxBytesPerSec} B/s over ${bw.overMs} ms ≈ ${rxOver} bytes, the counter moved ${got}`);

  // The management cable plugged in, then the interface set down here: carrier and speed become unknown.
  await setLinkUp(NS.peer, 'mg0p', true);
  n = await p.list();
  assert.deepEqual([n['mgmt']!.state, n['mgmt']!.carrier], ['up', true]);
  await setLinkUp(NS.host, 'mg0', false);
  n = await p.list();
  assert.deepEqual([n['mgmt']!.state, n['mgmt']!.adminUp, n['mgmt']!.carrier, n['mgmt']!.speedMbps], ['down', false, null, null]);
  assert.match(n['mgmt']!.detail, /^administratively down/);

  // The A-Link interface deleted: missing, then (its address gone with it) no interface holds the address.
  await runIn(NS.host, 'ip', ['link', 'delete', 'al1']);
  n = await p.list();
  assert.deepEqual([n['alink1']!.state, n['alink1']!.detail], ['missing', 'interface al1 does not exist']);
  n = await p.list();
  assert.deepEqual([n['alink1']!.interface, n['alink1']!.detail], [null, 'no interface has the address 10.77.1.1']);

  await p.close();
});

test("without `ip`, nothing can be known of the links: unreadable, with why, not missing", async () => {
  // This process's own namespace; an `ip` that is not on the PATH.
  const networks = new HostNetworks({
    host: 'host1',
    config: { ...CONFIG, mgmtInterface: 'lo' },
    alink: () => null,
    health: () => null,
    run: (cmd, args, opts) => run(cmd, args, { ...opts, env: { PATH: '/nonexistent' } }),
  });
  const [alink1, , mgmt] = await networks.list();
  assert.equal(alink1!.state, 'unreadable');
  assert.match(alink1!.detail, /'ip' is not installed: install the Debian package 'iproute2'/);
  assert.deepEqual([mgmt!.interface, mgmt!.state], ['lo', 'unreadable'], 'a configured interface is known by name, its state is not');
  assert.match(mgmt!.detail, /ip -j -s link show: 'ip' is not installed/);
});
