/**
 * The host health monitor against real things: interfaces in a network namespace this test creates (a veth
 * pair as the management link, a bridge with one port as the business network), `ip -j link` output from
 * the kernel, a disk probe on a tmp dir, on a missing dir, on a read-only tmpfs, on a frozen ext4 (a hung
 * disk) and on a shut-down ext4 (EIO, the lab's disk fault); plus change-only emission and the lab's
 * injection file. The monitor that watches the links runs as a child `node` inside the namespace
 * (`nsenter --net`), as lockstepd does.
 *
 * The namespace and file system parts need root and are skipped otherwise. Everything created is named
 * after this process and removed at the end.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  alinkStates,
  applyInjected,
  checkInterface,
  diskStateFromProbe,
  linkStateFromIpJson,
  parseInjectFile,
  SingleFlight,
} from '../../src/health/checks.js';
import { HealthMonitor, type HealthMonitorOptions } from '../../src/health/monitor.js';
import { healthyComponents } from '../../src/core/health.js';
import type { ComponentState, HealthSnapshot } from '../../src/core/types.js';
import { deleteNamespace, ensureBridge, ensureNamespace, ensureVeth, setLinkUp, setMaster } from '../../src/lab/netns.js';
import { createHostDisk, mountHostDisk, shutdownHostDisk, unmountHostDisk } from '../../src/lab/host-disk.js';
import { inNetns, run, runIn } from '../../src/util/exec.js';
import { Cleanup } from '../support/cleanup.js';

const isRoot = process.getuid?.() === 0;
const needsRoot = !isRoot && 'needs root';
const NS = `lshealth-${process.pid}`;
const MONITOR_JS = fileURLToPath(new URL('../../src/health/monitor.js', import.meta.url));

let tmp = '';
const cleanup = new Cleanup();

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'lockstep-health-'));
  cleanup.add(() => rm(tmp, { recursive: true, force: true }));
  if (!isRoot) return;
  await ensureNamespace(NS);
  cleanup.add(() => deleteNamespace(NS));
  // mgmt: m0 (ours) ↔ m0p (the switch's side); business: bridge br0 whose one port b0 ↔ b0p (the uplink's far side).
  await ensureVeth(NS, 'm0', NS, 'm0p');
  await ensureVeth(NS, 'b0', NS, 'b0p');
});

after(() => cleanup.run());

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(10);
  }
}

async function ipJson(ifname: string): Promise<string> {
  return (await runIn(NS, 'ip', ['-j', 'link', 'show', 'dev', ifname])).stdout;
}

/** An in-process monitor with nothing configured but a tmp data dir; `logs` collects its log lines. */
function monitor(over: Partial<HealthMonitorOptions> = {}): { m: HealthMonitor; logs: string[]; events: HealthSnapshot[] } {
  const logs: string[] = [];
  const events: HealthSnapshot[] = [];
  const m = new HealthMonitor({
    intervalMs: 50,
    dataDir: tmp,
    interfaces: { mgmt: null, business: null },
    alinkPaths: () => ({ alink1: true, alink2: true }),
    qemu: async () => 'ok',
    log: (l) => logs.push(l),
    ...over,
  });
  m.on('snapshot', (s) => events.push(s));
  return { m, logs, events };
}

function expect(over: Partial<Record<keyof HealthSnapshot, ComponentState>>): HealthSnapshot {
  return { ...healthyComponents(), ...over };
}

// ── links ──────────────────────────────────────────────────────────────────────────────────────────────

test('link state from real `ip -j link show` output: admin down, NO-CARRIER, carrier; bridges', { skip: needsRoot }, async () => {
  const state = async (ifname: string) => linkStateFromIpJson(await ipJson(ifname), ifname);

  assert.deepEqual(await state('m0'), { state: 'failed', detail: 'administratively down (operstate DOWN)' });
  await setLinkUp(NS, 'm0', true);
  // Up but the far end is down: what a pulled cable looks like.
  assert.deepEqual(await state('m0'), { state: 'failed', detail: 'NO-CARRIER (operstate LOWERLAYERDOWN)' });
  await setLinkUp(NS, 'm0p', true);
  assert.equal((await state('m0')).state, 'ok');
  assert.equal((await state('m0')).detail, 'carrier (operstate UP)');

  // A bridge that never had a port: this kernel (6.x) leaves its carrier on, operstate UNKNOWN; older
  // kernels may show NO-CARRIER. Either way the verdict follows the flags.
  await ensureBridge(NS, 'br0');
  const fresh = JSON.parse(await ipJson('br0')) as { flags: string[]; operstate: string }[];
  const freshCarrier = fresh[0]!.flags.includes('LOWER_UP');
  assert.equal((await state('br0')).state, freshCarrier ? 'ok' : 'failed', JSON.stringify(fresh[0]));
  // Once it has ports, it has carrier only while one of them has: here none does.
  await setMaster(NS, 'b0', 'br0');
  assert.deepEqual(await state('br0'), { state: 'failed', detail: 'NO-CARRIER (operstate DOWN)' });
  await setLinkUp(NS, 'b0', true);
  assert.equal((await state('br0')).state, 'failed', 'its port is up, but the port has no carrier');
  await setLinkUp(NS, 'b0p', true);
  assert.deepEqual(await state('br0'), { state: 'ok', detail: 'carrier (operstate UP)' });

  // A bridge has carrier while ANY port has: with a second port up (a guest's tap), pulling the uplink
  // leaves the bridge ok. Only the uplink shows the loss: the business check must name the uplink.
  await ensureVeth(NS, 'g0', NS, 'g0p');
  await setMaster(NS, 'g0', 'br0');
  await setLinkUp(NS, 'g0p', true);
  await setLinkUp(NS, 'g0', true);
  await setLinkUp(NS, 'b0p', false);
  assert.equal((await state('br0')).state, 'ok', 'the bridge still has carrier through the other port');
  assert.deepEqual(await state('b0'), { state: 'failed', detail: 'NO-CARRIER (operstate LOWERLAYERDOWN)' });
  await runIn(NS, 'ip', ['link', 'del', 'g0']);
  await setLinkUp(NS, 'b0p', true);
  assert.equal((await state('br0')).state, 'ok');

  // The whole listing works too; a name not in it is missing.
  const all = (await runIn(NS, 'ip', ['-j', 'link', 'show'])).stdout;
  assert.equal(linkStateFromIpJson(all, 'm0').state, 'ok');
  assert.deepEqual(linkStateFromIpJson(all, 'nosuch'), { state: 'failed', detail: 'interface nosuch does not exist' });
  const lo = linkStateFromIpJson(all, 'lo');
  assert.equal(lo.state, 'ok', `loopback (up, operstate UNKNOWN): ${lo.detail}`);
  assert.equal(linkStateFromIpJson('not json', 'm0').state, 'failed');
  assert.equal(linkStateFromIpJson('{"ifname":"m0"}', 'm0').state, 'failed');
  assert.equal(linkStateFromIpJson('[{"ifname":"m0"}]', 'm0').state, 'failed');
});

test('checkInterface: an interface that does not exist is failed', async () => {
  assert.deepEqual(await checkInterface(`lshealth-${process.pid}-x`, 2000), { state: 'failed', detail: `interface lshealth-${process.pid}-x does not exist` });
});

test('a monitor inside the namespace sees a cable pulled and plugged back, on a veth and on a bridge', { skip: needsRoot, timeout: 20_000 }, async () => {
  // Needs the previous test's wiring: m0 and br0 (port b0) up with carrier.
  const dataDir = await mkdtemp(path.join(tmp, 'ns-'));
  const config = { intervalMs: 50, dataDir, interfaces: { mgmt: 'm0', business: 'br0' } };
  const script = `
    const { HealthMonitor } = await import(process.argv[1]);
    const m = new HealthMonitor({ ...JSON.parse(process.argv[2]), alinkPaths: () => ({ alink1: true }), qemu: async () => 'ok',
      log: (l) => process.stderr.write(l + '\\n') });
    m.on('snapshot', (s) => process.stdout.write(JSON.stringify(s) + '\\n'));
    m.start();
    process.stdin.on('end', () => m.stop().then(() => process.exit(0)));
    process.stdin.resume();`;
  const [cmd, args] = inNetns(NS, process.execPath, ['--input-type=module', '-e', script, MONITOR_JS, JSON.stringify(config)]);
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const snaps: HealthSnapshot[] = [];
  const logs: string[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => snaps.push(JSON.parse(l) as HealthSnapshot));
  createInterface({ input: child.stderr }).on('line', (l) => logs.push(l));
  try {
    const lastIs = (want: HealthSnapshot) => () => snaps.length > 0 && JSON.stringify(snaps.at(-1)) === JSON.stringify(want);
    const steps: [string, () => Promise<void>, HealthSnapshot][] = [
      ['start', async () => {}, expect({})],
      ['mgmt cable pulled', () => setLinkUp(NS, 'm0p', false), expect({ mgmt: 'failed' })],
      ['mgmt cable back', () => setLinkUp(NS, 'm0p', true), expect({})],
      ['business uplink pulled', () => setLinkUp(NS, 'b0p', false), expect({ business: 'failed' })],
      ['business uplink back', () => setLinkUp(NS, 'b0p', true), expect({})],
      ['mgmt interface set down here', () => setLinkUp(NS, 'm0', false), expect({ mgmt: 'failed' })],
      ['mgmt interface up again', () => setLinkUp(NS, 'm0', true), expect({})],
    ];
    for (const [what, act, want] of steps) {
      await act();
      await waitFor(lastIs(want), 5000, `${what}: ${JSON.stringify(want)} (got ${JSON.stringify(snaps)}; log ${logs.join(' | ')})`);
    }
    await sleep(200); // four more rounds with nothing changed: nothing more emitted
    assert.equal(snaps.length, steps.length, `one snapshot per change: ${JSON.stringify(snaps)}`);
    assert.ok(logs.some((l) => /^health: mgmt ok → failed \(NO-CARRIER/.test(l)), logs.join('\n'));
    assert.ok(logs.some((l) => /^health: business ok → failed \(NO-CARRIER \(operstate DOWN\)\)/.test(l)), logs.join('\n'));
  } finally {
    child.stdin.end();
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    assert.equal(await exited, 0);
    clearTimeout(t);
  }
});

// ── A-Link, QEMU, power supply, emission ───────────────────────────────────────────────────────────────

test('A-Link paths: up ok, down failed, a path not configured ok', () => {
  assert.deepEqual(alinkStates({ alink1: true, alink2: false }), {
    alink1: { state: 'ok', detail: 'path up' },
    alink2: { state: 'failed', detail: 'path down' },
  });
  assert.deepEqual(alinkStates({ alink1: false }), {
    alink1: { state: 'failed', detail: 'path down' },
    alink2: { state: 'ok', detail: 'not configured' },
  });
  assert.deepEqual(alinkStates({}).alink1.state, 'ok');
});

test('a snapshot is emitted first and then only when it changed; current() is the last one', async () => {
  let paths: Record<string, boolean> = { alink1: true, alink2: true };
  let qemu: () => Promise<ComponentState> = async () => 'ok';
  const { m, events, logs } = monitor({ alinkPaths: () => paths, qemu: () => qemu(), qemuTimeoutMs: 200 });
  assert.equal(m.current(), null);
  assert.deepEqual(await m.check(), expect({}));
  await m.check();
  await m.check();
  assert.equal(events.length, 1, 'the first snapshot, then nothing while nothing changes');
  assert.deepEqual(logs, ['health: first check: all components ok']);

  paths = { alink1: true, alink2: false };
  await m.check();
  await m.check();
  assert.deepEqual(events.slice(1), [expect({ alink2: 'failed' })]);
  paths = { alink1: true }; // alink2 removed from the configuration: ok again
  await m.check();
  qemu = async () => 'degraded';
  await m.check();
  qemu = async () => {
    throw new Error('QMP socket gone');
  };
  await m.check();
  assert.deepEqual(events.slice(2), [expect({}), expect({ qemu: 'degraded' }), expect({ qemu: 'failed' })]);
  assert.ok(logs.includes('health: qemu degraded → failed (QEMU check failed: QMP socket gone)'), logs.join('\n'));

  // A QEMU check that hangs: failed at its timeout, and not called again while it hangs.
  let calls = 0;
  let release: (s: ComponentState) => void = () => {};
  qemu = () => {
    calls++;
    return new Promise((r) => (release = r));
  };
  const logged = logs.length;
  await m.check();
  const t0 = performance.now();
  await m.check();
  assert.ok(performance.now() - t0 < 100, 'a check still pending is reported at once');
  assert.equal(calls, 1);
  assert.equal(logs.length, logged, 'still failed: no new log line');
  release('ok');
  await sleep(0);
  qemu = async () => 'ok';
  assert.deepEqual(await m.check(), expect({}));
  assert.deepEqual(m.current(), expect({}));
  assert.equal(events.length, 6);
  assert.ok(Object.isFrozen(m.current()));
});

test('start() checks every interval and emits only changes, and every round as a round; stop() ends it', async () => {
  let down = false;
  const { m, events } = monitor({ intervalMs: 30, alinkPaths: () => ({ alink1: !down, alink2: true }) });
  let rounds = 0;
  m.on('round', () => rounds++);
  m.start();
  m.start(); // no second loop
  await waitFor(() => events.length === 1, 2000, 'first snapshot');
  await sleep(150);
  assert.equal(events.length, 1);
  assert.ok(rounds >= 3, `${rounds} rounds in 150 ms at a 30 ms interval, each one told (the networks' sampling rides on it)`);
  down = true;
  await waitFor(() => events.length === 2, 2000, 'the change');
  assert.equal(events[1]!.alink1, 'failed');
  await m.stop();
  const roundsAtStop = rounds;
  down = false;
  await sleep(150);
  assert.equal(events.length, 2, 'nothing after stop');
  assert.equal(rounds, roundsAtStop, 'no round after stop');
});

// ── disk ───────────────────────────────────────────────────────────────────────────────────────────────

test('disk probe: ok in a writable dir; failed when the dir does not exist', async () => {
  const { m, logs } = monitor();
  assert.equal((await m.check()).disk, 'ok');
  const gone = monitor({ dataDir: path.join(tmp, 'no-such-dir') });
  assert.equal((await gone.m.check()).disk, 'failed');
  assert.match(gone.logs[0]!, /^health: first check: disk failed \(ENOENT/);
  assert.equal(logs.length, 1);
});

test('disk state: slower than the threshold is degraded', () => {
  assert.equal(diskStateFromProbe(12, 500).state, 'ok');
  assert.equal(diskStateFromProbe(500, 500).state, 'ok');
  assert.deepEqual(diskStateFromProbe(730.4, 500), { state: 'degraded', detail: 'probe took 730 ms (slow above 500 ms)' });
});

test('disk probe: failed on a read-only file system (EROFS)', { skip: needsRoot }, async () => {
  const dir = path.join(tmp, 'ro');
  await mkdir(dir);
  await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'lshealth-ro', dir]);
  cleanup.add(() => run('umount', [dir]));
  const { m, logs } = monitor({ dataDir: dir });
  assert.equal((await m.check()).disk, 'failed');
  assert.match(logs[0]!, /disk failed \(EROFS/);
  await run('umount', [dir]);
});

test('disk probe on ext4: a frozen (hung) disk fails at the timeout without a second probe; EIO fails', { skip: needsRoot, timeout: 20_000 }, async () => {
  const image = path.join(tmp, 'disk.img');
  const mnt = path.join(tmp, 'mnt');
  await createHostDisk(image, 16);
  await mountHostDisk(image, mnt);
  cleanup.add(() => unmountHostDisk(mnt));
  cleanup.add(() => run('fsfreeze', ['-u', mnt], { allowFailure: true }));
  const { m, logs } = monitor({ dataDir: mnt, diskTimeoutMs: 300 });
  assert.equal((await m.check()).disk, 'ok');

  await run('fsfreeze', ['-f', mnt]);
  let t0 = performance.now();
  assert.equal((await m.check()).disk, 'failed');
  const took = performance.now() - t0;
  assert.ok(took >= 290 && took < 1500, `failed at the timeout (${Math.round(took)} ms)`);
  assert.equal(logs.at(-1), 'health: disk ok → failed (probe did not finish within 300 ms)');
  t0 = performance.now();
  assert.equal((await m.check()).disk, 'failed');
  assert.ok(performance.now() - t0 < 200, 'the probe still pending is reported at once, no second probe waits');
  assert.equal(logs.length, 2, 'still failed: nothing new to log');

  await run('fsfreeze', ['-u', mnt]);
  let snap: HealthSnapshot | null = null;
  const end = Date.now() + 3000;
  while (Date.now() < end && (snap = await m.check()).disk !== 'ok') await sleep(20);
  assert.equal(snap?.disk, 'ok', 'ok again once the thawed probe has finished');
  assert.match(logs.at(-1)!, /^health: disk failed → ok \(probe took \d+ ms\)$/);

  await shutdownHostDisk(mnt); // the lab's disk fault: every I/O returns EIO
  assert.equal((await m.check()).disk, 'failed');
  assert.match(logs.at(-1)!, /^health: disk ok → failed \(EIO/);
});

// ── injected faults ────────────────────────────────────────────────────────────────────────────────────

test('injection file: missing is none; valid applies; a fault cannot be injected away; invalid is logged once and ignored', async () => {
  const injectFile = path.join(tmp, 'health-inject.json');
  const { m, logs, events } = monitor({ injectFile });
  assert.deepEqual(await m.check(), expect({}));
  assert.deepEqual(logs, ['health: first check: all components ok']);

  await writeFile(injectFile, JSON.stringify({ components: { 'power-supply': 'degraded' } }));
  assert.deepEqual(await m.check(), expect({ 'power-supply': 'degraded' }));
  assert.deepEqual(logs.slice(1), [
    'health: injected states power-supply=degraded',
    'health: power-supply ok → degraded (injected degraded (measured ok: no sensor))',
  ]);

  await writeFile(injectFile, '{ "components": { "power-supply": "degr');
  for (let i = 0; i < 3; i++) assert.deepEqual(await m.check(), expect({}));
  const invalid = logs.filter((l) => l.includes('is invalid and ignored'));
  assert.equal(invalid.length, 1, logs.join('\n'));
  assert.match(invalid[0]!, /not valid JSON/);

  await writeFile(injectFile, JSON.stringify({ components: { psu: 'failed' } }));
  await m.check();
  await m.check();
  assert.equal(logs.filter((l) => l.includes("unknown component 'psu'")).length, 1, 'a new problem is logged, once');

  await writeFile(injectFile, JSON.stringify({ components: { mgmt: 'failed', disk: 'ok' } }));
  assert.deepEqual(await m.check(), expect({ mgmt: 'failed' }));
  await rm(injectFile);
  assert.deepEqual(await m.check(), expect({}));
  assert.ok(logs.includes('health: injected states none'));
  assert.deepEqual(
    events.map((e) => Object.entries(e).filter(([, s]) => s !== 'ok')),
    [[], [['power-supply', 'degraded']], [], [['mgmt', 'failed']], []],
  );

  // A measured fault is not hidden by an injected 'ok'.
  const gone = monitor({ dataDir: path.join(tmp, 'no-such-dir'), injectFile });
  await writeFile(injectFile, JSON.stringify({ components: { disk: 'ok' } }));
  assert.equal((await gone.m.check()).disk, 'failed');
  await rm(injectFile);
});

test('parseInjectFile and applyInjected', () => {
  assert.deepEqual(parseInjectFile('{}'), { ok: true, components: {} });
  assert.deepEqual(parseInjectFile('{"components":{}}'), { ok: true, components: {} });
  assert.deepEqual(parseInjectFile('{"components":{"disk":"failed","qemu":"degraded"}}'), { ok: true, components: { disk: 'failed', qemu: 'degraded' } });
  for (const bad of ['', '[]', 'null', '{"components":[]}', '{"components":{"disk":"broken"}}', '{"components":{"disc":"failed"}}', '{"component":{}}']) {
    assert.equal(parseInjectFile(bad).ok, false, bad);
  }
  const measured = expect({ disk: 'failed', qemu: 'degraded' });
  assert.deepEqual(applyInjected(measured, { disk: 'ok', qemu: 'failed', 'power-supply': 'degraded' }), expect({ disk: 'failed', qemu: 'failed', 'power-supply': 'degraded' }));
});

test('SingleFlight: bounded, and never two at once', async () => {
  let calls = 0;
  let release: () => void = () => {};
  const f = new SingleFlight(() => {
    calls++;
    return new Promise<string>((r) => (release = () => r('late')));
  }, 50);
  assert.equal((await f.run()).kind, 'timeout');
  assert.equal((await f.run()).kind, 'busy');
  assert.equal(calls, 1);
  release();
  await sleep(0);
  assert.equal(f.pending, false);
  const next = f.run();
  release();
  const r = await next;
  assert.equal(r.kind, 'done');
  assert.equal(calls, 2);
});
