/**
 * The lab as a newcomer drives it, through the CLI: up with the demo VM, the record service from the client
 * namespace, each fault and its heal changing reachability as docs/lab.md says, bad input, and down leaving
 * the machine as it was found; each host's management API reached from the client namespace, and the
 * first administrator made with `lockstep user setup`. Real namespaces, real QEMU (TCG), real lockstepd.
 * The demo VM is unprotected here (an unprotected VM waits for its host); HA is test/lab/ha.e2e.test.ts's.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../../src/util/paths.js';

const LAB = `t${process.pid}`;
const DIR = path.join(os.tmpdir(), `lockstep-lab-${LAB}`);
const env = { ...process.env, LOCKSTEP_LAB: LAB, LOCKSTEP_LAB_DIR: DIR };
const ns = (n: string): string => `${LAB}-${n}`;

function cli(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), ...args], { env, encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function ok(...args: string[]): string {
  const r = cli(...args);
  assert.equal(r.code, 0, `lockstep ${args.join(' ')} exited ${r.code}: ${r.err}${r.out}`);
  return r.out.trim();
}

function sh(cmd: string, args: string[]): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

/** Can `from` reach `address`? One ping, one second. */
function reaches(from: string, address: string): boolean {
  return sh('nsenter', [`--net=/run/netns/${ns(from)}`, '--', 'ping', '-c', '1', '-W', '1', address]).code === 0;
}

/** Waits (bounded) for a condition that a fault or heal brings about asynchronously. */
async function eventually(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.fail(`not within ${timeoutMs} ms: ${what}`);
}

function machineState(): { netns: string[]; mounts: string[]; loops: string[]; qemus: string[] } {
  return {
    netns: sh('ip', ['netns', 'list']).out.split('\n').filter((l) => l.startsWith(`${LAB}-`)),
    mounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(DIR)),
    loops: sh('losetup', ['-a']).out.split('\n').filter((l) => l.includes(DIR)),
    qemus: sh('pgrep', ['-af', 'qemu-system']).out.split('\n').filter((l) => l.includes(DIR)),
  };
}

let initial: ReturnType<typeof machineState>;

before(() => {
  initial = machineState();
});

after(() => {
  // Whatever happened, leave nothing behind.
  cli('lab', 'down');
});

test('lab up with the demo VM, idempotent, status shape', () => {
  ok('lab', 'up', '--vm', 'demo', '--protection', 'none', '--memory', '128');
  const status = JSON.parse(ok('lab', 'status', '--json'));
  assert.equal(status.up, true);
  assert.deepEqual(status.hosts.map((h: { name: string; state: string }) => [h.name, h.state]), [['host1', 'up'], ['host2', 'up']]);
  assert.ok(status.hosts.every((h: { daemon: { state: string } }) => h.daemon.state === 'running'));
  assert.deepEqual(status.quorumServers.map((q: { name: string; address: string }) => [q.name, q.address]), [['quorum1', '10.10.0.21'], ['quorum2', '10.10.0.22']]);
  assert.equal(status.vms.length, 1);
  assert.deepEqual(
    { name: status.vms[0].name, host: status.vms[0].host, state: status.vms[0].state, address: status.vms[0].address, protection: status.vms[0].protection },
    { name: 'demo', host: 'host1', state: 'unprotected', address: '10.10.3.50', protection: 'none' },
  );
  const pids = status.hosts.map((h: { daemon: { pid: number } }) => h.daemon.pid);
  ok('lab', 'up', '--vm', 'demo', '--protection', 'none', '--memory', '128');
  const again = JSON.parse(ok('lab', 'status', '--json'));
  assert.deepEqual(again.hosts.map((h: { daemon: { pid: number } }) => h.daemon.pid), pids, 'a second up must not restart the daemons');
});

test('lockstep status and host: the pair as both hosts see it; a host action needs the host named', () => {
  // Both hosts agree on an epoch once paired (lab up waited for that).
  const status = ok('status');
  assert.match(status, /^host1\s+paired\s+(\d+)\s+pair\s+\d+\s.*alink1 [\d.]+ ms, alink2 [\d.]+ ms$/m);
  assert.match(status, /^host2\s+paired\s+\d+\s+pair\s/m);
  assert.match(status, /^demo\s+host1\s+none\s+unprotected$/m, 'the VM line: this suite runs it unprotected');
  const epochs = [...status.matchAll(/^host[12]\s+paired\s+(\d+)/gm)].map((m) => m[1]);
  assert.equal(new Set(epochs).size, 1, `one epoch: ${status}`);
  const two = JSON.parse(ok('host', 'show', '--host', 'host2', '--json'));
  assert.equal(two.host, 'host2');
  assert.equal(two.core.peer, 'host1');
  assert.match(ok('host', 'show', '--host', 'host2'), /^peer\s+host1: paired/m);
  assert.equal(JSON.parse(ok('host', 'list', '--json')).length, 2, 'host list asks both lab hosts');
  const unnamed = cli('host', 'maintenance', 'on');
  assert.equal(unnamed.code, 2, unnamed.err);
  assert.match(unnamed.err, /concerns one host: name it with --host/);
  // Off while off changes nothing, and says so through the host's own view.
  assert.match(ok('host', 'maintenance', 'off', '--host', 'host2'), /^host2: maintenance off\n[\s\S]*^maintenance\s+off$/m);
});

test('record service from the client namespace', () => {
  assert.equal(ok('lab', 'record', 'append', 'hello'), 'ok 1');
  assert.equal(ok('lab', 'record', 'append', 'second', 'record'), 'ok 2');
  assert.equal(ok('lab', 'record', 'last'), 'last 2');
  assert.equal(ok('lab', 'record', 'get', '1'), 'record 1 hello');
  assert.equal(ok('lab', 'record', 'get', '2'), 'record 2 second record');
  assert.match(ok('lab', 'record', 'get', '99'), /^missing 99$/);
  assert.equal(ok('lab', 'client', '--', 'true'), '');
});

test('the networks reach who docs/lab.md says they reach', () => {
  assert.ok(reaches('client', '10.10.0.11') && reaches('client', '10.10.0.12') && reaches('client', '10.10.0.21') && reaches('client', '10.10.0.22'));
  assert.ok(reaches('client', '10.10.3.50'), 'client → guest on the business network');
  assert.ok(reaches('host1', '10.10.1.2') && reaches('host1', '10.10.2.2'), 'both A-Links');
  assert.ok(!reaches('client', '10.10.1.2'), 'the A-Link is not on the management network');
});

test('the management API: its URL in the status, HTTPS from the management network, first-run setup, login, alerts and audit', () => {
  const hostsOf = (s: { hosts: { management: unknown }[] }): unknown[] => s.hosts.map((h) => h.management);
  assert.deepEqual(hostsOf(JSON.parse(ok('lab', 'status', '--json'))), [
    { url: 'https://10.10.0.11:7443', setupNeeded: true },
    { url: 'https://10.10.0.12:7443', setupNeeded: true },
  ]);
  // From the client namespace, as a console's browser would: the certificate is the host's self-signed one.
  const curl = (...args: string[]): string => {
    const r = sh('nsenter', [`--net=/run/netns/${ns('client')}`, '--', 'curl', '-sS', '-k', '--max-time', '10', ...args]);
    assert.equal(r.code, 0, `curl ${args.join(' ')}: ${r.out}`);
    return r.out;
  };
  assert.equal(curl('-o', '/dev/null', '-w', '%{http_code}', 'https://10.10.0.11:7443/api/openapi.json'), '200');
  const setup = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'user', 'setup', 'admin', '--host', 'host1', '--password-stdin'], {
    env,
    input: 'a long passphrase\n',
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(setup.status, 0, `user setup: ${setup.stderr}`);
  assert.match(setup.stdout, /user admin made on host1: groups administrators, role administrator/);
  const login = JSON.parse(curl('-H', 'content-type: application/json', '-d', JSON.stringify({ name: 'admin', password: 'a long passphrase' }), 'https://10.10.0.11:7443/api/v1/session'));
  const me = JSON.parse(curl('-H', `authorization: Bearer ${login.token}`, 'https://10.10.0.11:7443/api/v1/session'));
  assert.equal(me.user.role, 'administrator');
  assert.deepEqual(hostsOf(JSON.parse(ok('lab', 'status', '--json'))).map((m) => (m as { setupNeeded: boolean }).setupNeeded), [false, true], "users are each host's own");

  assert.ok(Array.isArray(JSON.parse(ok('alert', 'list', '--json', '--host', 'host1'))));
  const audit = JSON.parse(ok('audit', 'list', '--json', '--host', 'host1')) as { entries: { user: string | null; client: string | null; operation: string | null; result: string | null }[] };
  const actions = audit.entries.filter((e) => e.operation !== null).map((e) => [e.user, e.client, e.operation, e.result]);
  assert.deepEqual(actions.slice(0, 2), [
    ['admin', '10.10.0.100', 'login', 'ok'],
    ['root@host1', 'local', 'setup', 'ok'],
  ]);
  assert.ok(audit.entries.some((e) => e.operation === null), "the platform's own events are in the audit log too");
});

test('A-Link faults: one cable, both cables, heal', async () => {
  ok('lab', 'fail', 'host1', 'alink1');
  assert.ok(!reaches('host1', '10.10.1.2'), 'alink1 cut');
  assert.ok(reaches('host1', '10.10.2.2'), 'alink2 still carries');
  ok('lab', 'fail', 'host2', 'alink');
  assert.ok(!reaches('host2', '10.10.2.1'), 'both cut');
  assert.deepEqual(JSON.parse(ok('lab', 'status', '--json')).faults, ['host1 alink1', 'host2 alink1', 'host2 alink2']);
  ok('lab', 'heal');
  // A link coming back up takes a moment (carrier, neighbour discovery): wait, boundedly.
  await eventually('both A-Links carry again', () => reaches('host1', '10.10.1.2') && reaches('host1', '10.10.2.2'), 10_000);
});

test('management and business faults, and quorum server faults', () => {
  ok('lab', 'fail', 'host1', 'mgmt');
  assert.ok(!reaches('client', '10.10.0.11') && reaches('client', '10.10.0.12'));
  ok('lab', 'fail', 'host1', 'business');
  assert.ok(!reaches('client', '10.10.3.50'), "host1's guest is cut off the business network");
  assert.notEqual(cli('lab', 'record', 'last').code, 0);
  ok('lab', 'heal', 'host1');
  assert.ok(reaches('client', '10.10.0.11') && reaches('client', '10.10.3.50'));
  assert.equal(ok('lab', 'record', 'last'), 'last 2');

  ok('lab', 'fail', 'quorum1', 'mgmt');
  assert.ok(!reaches('client', '10.10.0.21') && reaches('client', '10.10.0.22'));
  ok('lab', 'fail', 'quorum2', 'power');
  assert.ok(!reaches('client', '10.10.0.22'));
  const s = JSON.parse(ok('lab', 'status', '--json'));
  assert.deepEqual(s.quorumServers.map((q: { state: string }) => q.state), ['up', 'down']);
  ok('lab', 'heal');
  assert.ok(reaches('client', '10.10.0.21') && reaches('client', '10.10.0.22'));
});

test('A-Link latency is added in user space and removed again', () => {
  const rttMs = (): number => {
    const r = sh('nsenter', [`--net=/run/netns/${ns('host1')}`, '--', 'ping', '-c', '3', '-i', '0.2', '-W', '2', '10.10.1.2']);
    const m = /= [\d.]+\/([\d.]+)\//.exec(r.out);
    assert.ok(m, `ping printed no summary: ${r.out}`);
    return Number(m[1]);
  };
  assert.match(ok('lab', 'latency', 'alink', '30'), /\+30 ms/);
  // A lower bound is a correctness check: noise can only add time, never remove the delay.
  assert.ok(rttMs() >= 30, 'round trip carries the added 30 ms');
  assert.equal(JSON.parse(ok('lab', 'status', '--json')).alinkLatencyMs, 30);
  ok('lab', 'latency', 'alink', '0');
  assert.ok(reaches('host1', '10.10.1.2') && reaches('host1', '10.10.2.2'));
  assert.equal(JSON.parse(ok('lab', 'status', '--json')).alinkLatencyMs, 0);
});

test('power loss: processes gone, disk unreachable, links dark; heal boots the host and its VM with its records', async () => {
  ok('lab', 'fail', 'host1', 'power');
  assert.deepEqual(sh('ip', ['netns', 'pids', ns('host1')]).out.trim(), '', 'no process survives a power loss');
  assert.ok(!existsSync(path.join(DIR, 'hosts', 'host1', 'lockstepd.json')), "a dead host's disk cannot be read");
  assert.ok(!reaches('client', '10.10.0.11') && !reaches('host2', '10.10.1.1'), 'a dead host answers nothing');
  const s = JSON.parse(ok('lab', 'status', '--json'));
  assert.equal(s.hosts[0].state, 'down');
  assert.equal(s.vms[0].state, 'host-down', 'an unprotected VM waits for its host: host2 does not take it');
  assert.equal(cli('lab', 'fail', 'host1', 'mgmt').code, 1, 'faults on a dead host are refused');

  ok('lab', 'heal', 'host1');
  await eventually('the demo VM answers again after power-on', () => cli('lab', 'record', 'last').out.trim() === 'last 2');
  assert.equal(ok('lab', 'record', 'get', '1'), 'record 1 hello');
});

test('disk failure: the host cannot do I/O; heal reboots it with its disk repaired', async () => {
  ok('lab', 'fail', 'host1', 'disk');
  const probe = path.join(DIR, 'hosts', 'host1', 'probe');
  assert.throws(() => writeFileSync(probe, 'x'), /EIO|input\/output/i);
  const appended = cli('lab', 'record', 'append', 'during-disk-failure');
  assert.notEqual(appended.out.trim().startsWith('ok'), true, `an append must not be acknowledged on a dead disk: ${appended.out}`);
  ok('lab', 'heal', 'host1');
  await eventually('the demo VM answers again after the disk repair', () => /^last \d+$/.test(cli('lab', 'record', 'last').out.trim()));
  assert.equal(ok('lab', 'record', 'get', '2'), 'record 2 second record');
});

test('bad input: clear errors, nothing changed', () => {
  const before = ok('lab', 'status', '--json');
  const cases: [string[], number, RegExp][] = [
    [['lab', 'fail', 'host3', 'power'], 2, /unknown fault target 'host3'/],
    [['lab', 'fail', 'host1', 'fire'], 2, /unknown fault 'fire'/],
    [['lab', 'fail', 'quorum1', 'disk'], 2, /unknown fault 'disk' for quorum1/],
    [['lab', 'heal', 'nowhere'], 2, /unknown heal target/],
    [['lab', 'latency', 'alink', '-5'], 2, /latency must be/],
    [['lab', 'latency', 'alink', 'fast'], 2, /latency must be/],
    [['lab', 'record', 'get', 'x'], 2, /usage/],
    [['lab', 'record', '--vm', 'nope', 'last'], 2, /no VM named 'nope'/],
    [['lab', 'up', '--vm', 'demo', '--protection', 'gold'], 2, /--protection must be/],
    [['lab', 'up', '--vm', 'Bad_Name'], 2, /VM name 'Bad_Name'/],
    [['lab', 'up', '--memory', 'lots'], 2, /--memory must be/],
    [['lab', 'frobnicate'], 2, /unknown lab command/],
    [['lab', 'up', '--bogus'], 2, /Unknown option/],
  ];
  for (const [args, code, message] of cases) {
    const r = cli(...args);
    assert.equal(r.code, code, `lockstep ${args.join(' ')}: exit ${r.code}\n${r.err}`);
    assert.match(r.err, message, `lockstep ${args.join(' ')}`);
    assert.doesNotMatch(r.err, /^\s+at /m, 'no stack trace for bad input');
  }
  const json = cli('lab', 'fail', 'host3', 'power', '--json');
  assert.equal(JSON.parse(json.out).error.code, 'UNKNOWN_HOST');
  const after = JSON.parse(ok('lab', 'status', '--json'));
  assert.deepEqual(after.hosts.map((h: { daemon: { pid: number } }) => h.daemon.pid), JSON.parse(before).hosts.map((h: { daemon: { pid: number } }) => h.daemon.pid));
  assert.deepEqual(after.faults, []);
});

test('down leaves the machine as it found it', () => {
  ok('lab', 'down');
  assert.deepEqual(machineState(), initial);
  assert.ok(!existsSync(DIR), 'the lab directory is gone');
  assert.equal(JSON.parse(ok('lab', 'status', '--json')).up, false);
  const r = cli('lab', 'fail', 'host1', 'power');
  assert.equal(r.code, 1);
  assert.match(r.err, /not up/);
});
