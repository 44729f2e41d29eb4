/**
 * The A-Link wire on real network namespaces: two hosts whose `alink1` veths end in a fabric namespace
 * (`a1h1`, `a1h2`), as in the lab, with the wire instead of the bridge between the fabric ends.
 *
 * Time is only ever bounded from below (an RTT of at least twice the one-way delay): noise can make a
 * machine slower, never faster, so a lower bound cannot pass by luck nor fail by load.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isLockstepError } from '../../src/util/errors.js';
import { run, runIn } from '../../src/util/exec.js';
import {
  isWireRunning,
  parseWireStats,
  setWireDelay,
  startWire,
  stopWire,
  wireBinary,
  wireStats,
  type WireSpec,
} from '../../src/lab/wire.js';

const isRoot = process.getuid?.() === 0;
const PREFIX = `lswt-${process.pid}`;
const H1 = `${PREFIX}-h1`;
const H2 = `${PREFIX}-h2`;
const FABRIC = `${PREFIX}-f`;
const ADDR1 = '192.168.213.1';
const ADDR2 = '192.168.213.2';
/** One Ethernet frame at the default MTU: anything larger that crossed the wire was a GSO super-frame. */
const ETH_FRAME_BYTES_MAX = 1514;

let tmp = '';
const started: number[] = [];

/**
 * A wire across the A-Link, with a log file so its counters can be read. Each test gets a clean cable:
 * a wire left by a failed test would forward every frame a second time, and the neighbour entries that
 * failed while no wire ran would make the first pings "unreachable" until the kernel retries.
 */
async function wire(oneWayDelayUs: number, extra: Partial<WireSpec> = {}): Promise<{ pid: number; logFile: string }> {
  for (const pid of started) await stopWire(pid).catch(() => undefined);
  for (const ns of [H1, H2]) await runIn(ns, 'ip', ['neigh', 'flush', 'dev', 'alink1']);
  const logFile = path.join(tmp, `wire-${started.length}.log`);
  const { pid } = await startWire({ netns: FABRIC, ifA: 'a1h1', ifB: 'a1h2', oneWayDelayUs, logFile, ...extra });
  started.push(pid);
  return { pid, logFile };
}

/** Pings host2 from host1; the RTT of each reply in ms. */
async function ping(count: number, extraArgs: string[] = []): Promise<{ sent: number; rttsMs: number[] }> {
  const r = await runIn(H1, 'ping', ['-n', '-c', String(count), '-i', '0.2', '-W', '2', ...extraArgs, ADDR2], {
    allowFailure: true,
    timeoutMs: 30_000,
  });
  const rttsMs = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  const sent = Number(/(\d+) packets transmitted/.exec(r.stdout)?.[1] ?? 0);
  return { sent, rttsMs };
}

// The two ends of a TCP transfer, run by this same Node inside the host namespaces. The sender sends
// random bytes and prints their hash; the receiver prints what it got and its hash.
const RECEIVER = `
const net = require('node:net'), crypto = require('node:crypto');
const [host, port] = process.argv.slice(1);
const srv = net.createServer((s) => {
  const h = crypto.createHash('sha256'); let bytes = 0;
  s.on('data', (b) => { h.update(b); bytes += b.length; });
  s.on('end', () => { console.log(JSON.stringify({ bytes, sha256: h.digest('hex') })); s.end(); srv.close(); });
});
srv.listen(Number(port), host, () => console.log('listening'));`;
const SENDER = `
const net = require('node:net'), crypto = require('node:crypto');
const [host, port, mib] = process.argv.slice(1);
const h = crypto.createHash('sha256'); let left = Number(mib);
const s = net.connect(Number(port), host, () => {
  const pump = () => {
    while (left > 0) { const chunk = crypto.randomBytes(1 << 20); h.update(chunk); left--; if (!s.write(chunk)) return s.once('drain', pump); }
    s.end();
  };
  pump();
});
s.resume();
s.on('close', () => console.log(JSON.stringify({ sha256: h.digest('hex') })));`;

let nextPort = 5001;

/** Sends `mib` MiB from host1 to host2 over TCP; returns what each end saw. */
async function tcpTransfer(mib: number): Promise<{ sent: string; received: { bytes: number; sha256: string } }> {
  const port = String(nextPort++);
  const receiver = spawn('nsenter', [`--net=/run/netns/${H2}`, '--', process.execPath, '-e', RECEIVER, ADDR2, port], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    let out = '';
    receiver.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<void>((resolve) => receiver.on('close', () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const onData = (): void => {
        if (out.includes('listening\n')) resolve();
      };
      receiver.stdout.on('data', onData);
      receiver.on('close', (code) => reject(new Error(`receiver exited (${code}) before listening: ${out}`)));
    });
    const sender = await runIn(H1, process.execPath, ['-e', SENDER, ADDR2, port, String(mib)], { timeoutMs: 120_000 });
    await exited;
    const received = JSON.parse(out.split('\n').find((l) => l.startsWith('{')) ?? 'null') as { bytes: number; sha256: string };
    return { sent: (JSON.parse(sender.stdout) as { sha256: string }).sha256, received };
  } finally {
    if (receiver.exitCode === null) receiver.kill('SIGKILL');
  }
}

async function waitUntil(what: string, cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Namespaces left by an earlier run of this file that was killed before its cleanup (its pid is gone). */
async function removeStaleNamespaces(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const name of stdout.split('\n').map((l) => l.split(' ')[0] ?? '')) {
    const m = /^lswt-(\d+)-/.exec(name);
    if (m && Number(m[1]) !== process.pid && !(await fs.stat(`/proc/${m[1]}`).catch(() => null))) {
      await run('ip', ['netns', 'del', name], { allowFailure: true });
    }
  }
}

test('without gcc, building the wire names the Debian package to install', async () => {
  // A fresh process (the build is memoised per process) with an empty cache and no gcc on its PATH.
  const cache = await fs.mkdtemp(path.join(os.tmpdir(), 'lswt-cache-'));
  try {
    const wireModule = new URL('../../src/lab/wire.js', import.meta.url).href;
    const script = `import(${JSON.stringify(wireModule)}).then((m) => m.wireBinary()).then(
      () => console.log('built'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })));`;
    const r = await run(process.execPath, ['-e', script], { env: { PATH: '/nonexistent', LOCKSTEP_CACHE: cache } });
    const outcome = JSON.parse(r.stdout) as { code: string; message: string };
    assert.equal(outcome.code, 'MISSING_PREREQUISITE');
    assert.match(outcome.message, /'gcc' is not installed: install the Debian package 'gcc'/);
  } finally {
    await fs.rm(cache, { recursive: true, force: true });
  }
});

describe('the A-Link wire: a user-space cable with latency', { skip: !isRoot && 'needs root (network namespaces)' }, () => {
  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lswt-'));
    await removeStaleNamespaces();
    for (const ns of [H1, H2, FABRIC]) await run('ip', ['netns', 'add', ns]);
    // Each host's alink1 is one end of a veth; the other end is in the fabric, which has no bridge here.
    await runIn(H1, 'ip', ['link', 'add', 'alink1', 'type', 'veth', 'peer', 'name', 'a1h1', 'netns', FABRIC]);
    await runIn(H2, 'ip', ['link', 'add', 'alink1', 'type', 'veth', 'peer', 'name', 'a1h2', 'netns', FABRIC]);
    // The fabric is plumbing: no IPv6 chatter of its own on the ports.
    await runIn(FABRIC, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    for (const [ns, addr] of [[H1, ADDR1], [H2, ADDR2]] as const) {
      await runIn(ns, 'ip', ['addr', 'add', `${addr}/24`, 'dev', 'alink1']);
      await runIn(ns, 'ip', ['link', 'set', 'alink1', 'up']);
      await runIn(ns, 'ip', ['link', 'set', 'lo', 'up']);
    }
    for (const port of ['a1h1', 'a1h2']) await runIn(FABRIC, 'ip', ['link', 'set', port, 'up']);
  });

  after(async () => {
    for (const pid of started) await stopWire(pid).catch(() => undefined);
    for (const ns of [H1, H2, FABRIC]) await run('ip', ['netns', 'del', ns], { allowFailure: true });
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  test('the forwarder is compiled once into the cache and reused', async () => {
    const first = await wireBinary();
    assert.match(first, /\/wire\/[0-9a-f]{16}\/lockstep-wire$/);
    await fs.access(first, fs.constants.X_OK);
    assert.equal(await wireBinary(), first);
  });

  test('bad arguments: the wire says what is wrong and exits with status 2', async () => {
    const bin = await wireBinary();
    const cases: Array<[string[], RegExp]> = [
      [[], /expected 3 arguments, got 0/],
      [['a1h1', 'a1h1', '5'], /a wire needs two ends/],
      [['a1h1', 'a1h2', '20ms'], /ONE_WAY_DELAY_US must be a whole number of microseconds .* not '20ms'/],
      [['a1h1', 'a1h2', '-5'], /not '-5'/],
      [['a1h1', 'a1h2', '10000001'], /from 0 to 10000000/],
      [['--queue-frames', '0', 'a1h1', 'a1h2', '0'], /--queue-frames must be/],
      [['--bogus', 'a1h1', 'a1h2', '0'], /unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = await run(bin, args, { allowFailure: true });
      assert.equal(r.code, 2, `exit status for ${JSON.stringify(args)}`);
      assert.match(r.stderr, message);
    }
    // A well-formed command for interfaces that do not exist is a runtime failure, status 1.
    const r = await runIn(FABRIC, bin, ['a1h1', 'nosuch0', '0'], { allowFailure: true });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no interface 'nosuch0' in this network namespace/);
  });

  test('startWire refuses a bad spec before starting anything, and reports why a wire would not start', async () => {
    await assert.rejects(
      startWire({ netns: FABRIC, ifA: 'a1h1', ifB: 'a1h2', oneWayDelayUs: -1 }),
      (e) => isLockstepError(e, 'INVALID_ARGUMENT') && /one-way delay/.test(e.message),
    );
    await assert.rejects(
      startWire({ netns: FABRIC, ifA: 'a1h1', ifB: 'a1h1', oneWayDelayUs: 0 }),
      (e) => isLockstepError(e, 'INVALID_ARGUMENT'),
    );
    await assert.rejects(
      startWire({ netns: FABRIC, ifA: 'a1h1', ifB: 'nosuch0', oneWayDelayUs: 0 }),
      (e) => isLockstepError(e, 'COMMAND_FAILED') && /no interface 'nosuch0'/.test(e.message),
    );
    // A port still in a bridge is refused: its frames would be bridged and forwarded, broadcasts would loop.
    await runIn(FABRIC, 'ip', ['link', 'add', 'lswtbr', 'type', 'bridge']);
    try {
      await runIn(FABRIC, 'ip', ['link', 'set', 'a1h2', 'master', 'lswtbr']);
      await assert.rejects(
        startWire({ netns: FABRIC, ifA: 'a1h1', ifB: 'a1h2', oneWayDelayUs: 0 }),
        (e) => isLockstepError(e, 'COMMAND_FAILED') && /a1h2 is a port of lswtbr/.test(e.message),
      );
    } finally {
      await runIn(FABRIC, 'ip', ['link', 'del', 'lswtbr']);
    }
  });

  test('without a wire (and without the bridge) host1 cannot reach host2', async () => {
    const { rttsMs } = await ping(1);
    assert.equal(rttsMs.length, 0);
  });

  test('at delay 0, ping and a 4 MiB TCP transfer cross the wire, in GSO super-frames', async () => {
    const { pid, logFile } = await wire(0);
    const { sent, rttsMs } = await ping(3);
    assert.equal(rttsMs.length, sent, 'every ping answered');

    const t = await tcpTransfer(4);
    assert.equal(t.received.bytes, 4 << 20);
    assert.equal(t.received.sha256, t.sent);

    const stats = await wireStats({ pid, logFile });
    assert.equal(stats.delayUs, 0);
    assert.ok(stats.a2b.bytes >= 4 << 20, `host1→host2 carried the transfer (${stats.a2b.bytes} bytes)`);
    assert.ok(stats.a2b.gsoFrames > 0 && stats.a2b.maxFrame > ETH_FRAME_BYTES_MAX, 'super-frames crossed whole');
    for (const d of [stats.a2b, stats.b2a]) {
      assert.equal(d.sendErrors + d.oversize + d.rxErrors, 0, 'nothing refused or malformed');
    }
    assert.equal(await stopWire(pid), true);
  });

  test('a one-way delay of 20 ms makes every ping RTT at least 40 ms', async () => {
    const { pid } = await wire(20_000);
    const { sent, rttsMs } = await ping(5);
    assert.equal(rttsMs.length, sent);
    for (const rtt of rttsMs) assert.ok(rtt >= 40, `RTT ${rtt} ms is at least 2 × 20 ms`);
    await stopWire(pid);
  });

  test('TCP in GSO super-frames crosses a 20 ms wire intact', async () => {
    // With 20 ms each way the transfer runs window by window: many super-frames wait in the queue at once.
    const { pid, logFile } = await wire(20_000);
    const t = await tcpTransfer(8);
    assert.equal(t.received.bytes, 8 << 20);
    assert.equal(t.received.sha256, t.sent);
    const stats = await wireStats({ pid, logFile });
    assert.ok(stats.a2b.gsoFrames > 0, 'the sender used GSO');
    assert.ok(stats.a2b.maxFrame > ETH_FRAME_BYTES_MAX, `largest frame ${stats.a2b.maxFrame} bytes`);
    assert.equal(stats.a2b.sendErrors + stats.a2b.oversize + stats.a2b.rxErrors, 0);
    await stopWire(pid);
  });

  test('the delay changes while the wire runs (SIGHUP re-reads the delay file), same process', async () => {
    const delayFile = path.join(tmp, 'delay-us');
    const { pid, logFile } = await wire(0, { delayFile });
    assert.equal((await fs.readFile(delayFile, 'utf8')).trim(), '0');
    assert.equal((await ping(2)).rttsMs.length, 2);

    await setWireDelay({ pid, delayFile, oneWayDelayUs: 20_000 });
    await waitUntil('the wire reports the new delay', async () => (await wireStats({ pid, logFile })).delayUs === 20_000);
    const { rttsMs } = await ping(3);
    assert.equal(rttsMs.length, 3);
    for (const rtt of rttsMs) assert.ok(rtt >= 40, `RTT ${rtt} ms after the change to 20 ms`);
    assert.equal(await isWireRunning(pid), true, 'no restart');
    await assert.rejects(setWireDelay({ pid, delayFile, oneWayDelayUs: 1.5 }), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
    await stopWire(pid);
  });

  test('a full buffer drops at the tail and counts it, like a link buffer', async () => {
    // Eight frames of buffer and 20 ms of delay; ping preloads 20 echo requests back to back, so most of
    // them find the buffer full.
    const { pid, logFile } = await wire(20_000, { queueFramesMax: 8 });
    const { sent, rttsMs } = await ping(20, ['-l', '20']);
    const stats = await wireStats({ pid, logFile });
    assert.ok(stats.a2b.queueDrops > 0, `drops counted (${stats.a2b.queueDrops})`);
    assert.ok(rttsMs.length < sent, `${rttsMs.length} of ${sent} answered`);
    await stopWire(pid);
  });

  test('SIGTERM stops a detached wire: it prints its counters and the process is gone', async () => {
    const { pid, logFile } = await wire(1_000, { detached: true });
    assert.equal(await isWireRunning(pid), true);
    assert.equal(await stopWire(pid), true);
    assert.equal(await isWireRunning(pid), false);
    await waitUntil('the process has been reaped', async () => !(await fs.stat(`/proc/${pid}`).catch(() => null)));
    const log = await fs.readFile(logFile, 'utf8');
    const exitLine = log.split('\n').find((l) => l.startsWith('lockstep-wire: exit '));
    assert.ok(exitLine, `exit counters in the log:\n${log}`);
    assert.equal(parseWireStats(exitLine).delayUs, 1_000);
    assert.equal(await stopWire(pid), false, 'stopping it again finds nothing to stop');
  });

  test('a detached wire outlives the process that started it, as the lab CLI needs', async () => {
    // A short-lived Node process (standing in for `lockstep lab latency`) starts the wire and exits.
    const wireModule = new URL('../../src/lab/wire.js', import.meta.url).href;
    const logFile = path.join(tmp, 'wire-detached.log');
    const spec = { netns: FABRIC, ifA: 'a1h1', ifB: 'a1h2', oneWayDelayUs: 20_000, detached: true, logFile };
    const script = `import(${JSON.stringify(wireModule)}).then((m) => m.startWire(${JSON.stringify(spec)}))
      .then(({ pid }) => console.log(pid));`;
    const r = await run(process.execPath, ['-e', script], { timeoutMs: 30_000 });
    const pid = Number(r.stdout.trim());
    started.push(pid);
    assert.equal(await isWireRunning(pid), true, 'still running after its starter exited');
    const { sent, rttsMs } = await ping(2);
    assert.equal(rttsMs.length, sent);
    for (const rtt of rttsMs) assert.ok(rtt >= 40, `RTT ${rtt} ms through the detached 20 ms wire`);
    assert.equal(await stopWire(pid), true);
    await waitUntil('the orphaned wire is gone', async () => !(await isWireRunning(pid)));
  });

  test('the wire exits by itself when one of its interfaces is deleted', async () => {
    // A spare pair of veths in the fabric, so the A-Link itself stays for other tests.
    for (const [end, peer] of [['lswtx', 'lswtx2'], ['lswty', 'lswty2']]) {
      await runIn(FABRIC, 'ip', ['link', 'add', end!, 'type', 'veth', 'peer', 'name', peer!]);
      await runIn(FABRIC, 'ip', ['link', 'set', end!, 'up']);
    }
    const logFile = path.join(tmp, 'wire-deleted.log');
    const { pid } = await startWire({ netns: FABRIC, ifA: 'lswtx', ifB: 'lswty', oneWayDelayUs: 0, logFile });
    started.push(pid);
    await runIn(FABRIC, 'ip', ['link', 'del', 'lswtx']);
    await waitUntil('the wire has exited', async () => !(await isWireRunning(pid)));
    assert.match(await fs.readFile(logFile, 'utf8'), /interface lswtx disappeared/);
    await runIn(FABRIC, 'ip', ['link', 'del', 'lswty']);
  });
});
