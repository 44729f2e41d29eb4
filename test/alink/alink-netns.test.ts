/**
 * Two A-Links as real cables: two network namespaces joined by two veth pairs (alink1 10.10.1.0/24,
 * alink2 10.10.2.0/24, as in the lab), each host's Alink in its own process inside its namespace.
 * Pulling one cable (`ip link set alink1 down` on host1) must show as path-down for alink1 on both hosts
 * while every heartbeat still arrives over alink2; plugging it back shows path-up.
 *
 * Needs root (namespaces); skipped otherwise. Everything it creates is named after this process and
 * deleted at the end.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { deleteNamespace, ensureAddress, ensureNamespace, ensureVeth, setLinkUp } from '../../src/lab/netns.js';
import { inNetns, runIn } from '../../src/util/exec.js';
import { createPairCa, issueCert } from '../../src/pki/pki.js';
import { sleep, waitUntil } from './helpers.js';

const isRoot = process.getuid?.() === 0;
const NS = { host1: `lsal-${process.pid}-h1`, host2: `lsal-${process.pid}-h2` };
const PORT = 7400;
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'alink-node.js');
const TIMING = { pingIntervalMs: 50, pathTimeoutMs: 400, connectTimeoutMs: 1000, reconnectMinMs: 50, reconnectMaxMs: 400 };

interface Event {
  ev: string;
  name?: string;
  reason?: string;
  seq?: number;
  ms?: number;
  paths?: number;
}

class HostProcess {
  readonly events: Event[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  constructor(ns: string, config: unknown) {
    const [cmd, args] = inNetns(ns, process.execPath, [FIXTURE, JSON.stringify(config)]);
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.events.push(JSON.parse(line) as Event));
  }
  command(c: Record<string, unknown>): void {
    this.child.stdin!.write(`${JSON.stringify(c)}\n`);
  }
  count(pred: (e: Event) => boolean): number {
    return this.events.filter(pred).length;
  }
  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.command({ close: true });
      const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(t);
    }
  }
}

let dir = '';
let procs: HostProcess[] = [];

before(async () => {
  if (!isRoot) return;
  for (const ns of Object.values(NS)) await ensureNamespace(ns);
  for (const [i, link] of [[1, 'alink1'], [2, 'alink2']] as const) {
    await ensureVeth(NS.host1, link, NS.host2, link);
    await ensureAddress(NS.host1, link, `10.10.${i}.1/24`);
    await ensureAddress(NS.host2, link, `10.10.${i}.2/24`);
    await setLinkUp(NS.host1, link, true);
    await setLinkUp(NS.host2, link, true);
  }
  dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-alink-netns-'));
});

after(async () => {
  await Promise.all(procs.map((p) => p.close()));
  if (!isRoot) return;
  for (const ns of Object.values(NS)) await deleteNamespace(ns);
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('pulling one of two A-Link cables: path-down there, every message still arrives, path-up when back', { skip: !isRoot && 'needs root', timeout: 60_000 }, async (t) => {
  const ca = await createPairCa(dir, 'pair-netns');
  const tlsOf = async (host: 'host1' | 'host2', i: 1 | 2) => issueCert(ca, dir, { commonName: host, ips: [`10.10.1.${i}`, `10.10.2.${i}`] });
  const paths = (i: 1 | 2, j: 1 | 2) => [
    { name: 'alink1', local: `10.10.1.${i}`, peer: `10.10.1.${j}`, port: PORT },
    { name: 'alink2', local: `10.10.2.${i}`, peer: `10.10.2.${j}`, port: PORT },
  ];
  const host2 = new HostProcess(NS.host2, { self: 'host2', peer: 'host1', paths: paths(2, 1), tls: await tlsOf('host2', 2), timing: TIMING });
  procs.push(host2);
  await waitUntil(() => host2.count((e) => e.ev === 'ready') === 1, 10_000, 'host2 ready');
  const host1 = new HostProcess(NS.host1, { self: 'host1', peer: 'host2', paths: paths(1, 2), tls: await tlsOf('host1', 1), timing: TIMING });
  procs.push(host1);
  const up = (h: HostProcess, name: string) => h.count((e) => e.ev === 'path-up' && e.name === name);
  const down = (h: HostProcess, name: string) => h.count((e) => e.ev === 'path-down' && e.name === name);
  await waitUntil(() => [host1, host2].every((h) => up(h, 'alink1') === 1 && up(h, 'alink2') === 1), 10_000, 'both paths up on both hosts');

  host1.command({ pump: 10 });
  await sleep(300);
  await runIn(NS.host1, 'ip', ['link', 'set', 'alink1', 'down']);
  await waitUntil(() => down(host1, 'alink1') === 1 && down(host2, 'alink1') === 1, 5000, 'alink1 down on both hosts');
  await sleep(500);
  const sentDuringCut = host1.events.filter((e) => e.ev === 'sent').at(-1)!;
  assert.equal(sentDuringCut.paths, 1, 'host1 sends on alink2 alone');
  await runIn(NS.host1, 'ip', ['link', 'set', 'alink1', 'up']);
  await waitUntil(() => up(host1, 'alink1') === 2 && up(host2, 'alink1') === 2, 10_000, 'alink1 back up on both hosts');
  await sleep(300);
  host1.command({ stop: true });
  await sleep(300);

  const sent = host1.events.filter((e) => e.ev === 'sent').map((e) => e.seq!);
  const got = [...new Set(host2.events.filter((e) => e.ev === 'msg').map((e) => e.seq!))].sort((a, b) => a - b);
  assert.ok(sent.length > 50, `${sent.length} heartbeats sent`);
  assert.deepEqual(got, sent, 'every heartbeat arrived, through the cut');
  assert.equal(host2.count((e) => e.ev === 'msg'), sent.length, 'each once');
  assert.equal(down(host1, 'alink2') + down(host2, 'alink2'), 0, 'alink2 never went down');
  const why = host2.events.find((e) => e.ev === 'path-down')!.reason;
  const rtts = host1.events.filter((e) => e.ev === 'rtt').map((e) => e.ms!).sort((a, b) => a - b);
  assert.ok(rtts.length > 10 && rtts[0]! > 0);
  t.diagnostic(`host2 saw alink1 go down: ${why}; veth smoothed RTT median ${rtts[rtts.length >> 1]!.toFixed(3)} ms`);
});
