/**
 * `lockstep status` and `lockstep host`: parsing every verb, how fixed `GET /v1/status` and `GET
 * /v1/host/health` answers are shown, and `lockstep host health` against a real lockstepd socket whose
 * peer answers over a real A-Link (test/api/peer-link.ts), then is gone.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLockstepError } from '../../src/util/errors.js';
import { parseHostCommand, parseStatusCommand, type HostRequest } from '../../src/cli/host-command.js';
import { hostRows, renderHostShow, renderPairHealth, renderSensors, renderStatus, type HostStatus } from '../../src/cli/host-view.js';
import type { PairHealth } from '../../src/daemon/sensor-routes.js';
import type { HealthSnapshot } from '../../src/core/types.js';
import { startApiServer } from '../../src/daemon/api.js';
import { startHarness } from '../api/harness.js';
import { startPeerLink } from '../api/peer-link.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const CLI = fileURLToPath(new URL('../../../bin/lockstep.js', import.meta.url));

test('each verb parses into its request', () => {
  const cases: [string[], HostRequest][] = [
    [['list'], { verb: 'list', json: false, where: {} }],
    [['show', '--host', 'host2', '--json'], { verb: 'show', json: true, where: { host: 'host2' } }],
    [['sensors', '--host', 'host1'], { verb: 'sensors', json: false, where: { host: 'host1' } }],
    [['health', '--json'], { verb: 'health', json: true, where: {} }],
    [['maintenance', 'on', '--host', 'host1'], { verb: 'action', action: 'maintenance-on', json: false, where: { host: 'host1' } }],
    [['maintenance', 'off', '--socket', '/run/l.sock'], { verb: 'action', action: 'maintenance-off', json: false, where: { socket: '/run/l.sock' } }],
    [['repaired', '--host', 'host2'], { verb: 'action', action: 'repaired', json: false, where: { host: 'host2' } }],
    [['force-takeover', '--host', 'host2'], { verb: 'action', action: 'force-takeover', json: false, where: { host: 'host2' } }],
    [['help'], { verb: 'help', exit: 0 }],
    [[], { verb: 'help', exit: 2 }],
  ];
  for (const [argv, want] of cases) assert.deepEqual(parseHostCommand(argv), want, argv.join(' '));
  assert.deepEqual(parseStatusCommand(['--json']), { verb: 'status', json: true, where: {} });
});

test('mistakes are usage errors that say what is wrong', () => {
  const bad: [string[], RegExp][] = [
    [['maintenance'], /maintenance on\|off/],
    [['maintenance', 'maybe'], /maintenance on\|off/],
    [['show', 'host1'], /usage: lockstep host show/],
    [['health', 'host2'], /usage: lockstep host health/],
    [['list', '--fast'], /Unknown option '--fast'/],
    [['reboot'], /unknown host command 'reboot'/],
    [['show', '--host', 'host9'], /no lab host named 'host9'/],
    [['show', '--host', 'host1', '--socket', '/s'], /exclude each other/],
  ];
  for (const [argv, message] of bad) {
    assert.throws(() => parseHostCommand(argv), (e) => isLockstepError(e) && (e.code === 'INVALID_ARGUMENT' || e.code === 'UNKNOWN_HOST') && message.test(e.message), argv.join(' '));
  }
  assert.throws(() => parseStatusCommand(['host1']), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});

const HEALTHY = { alink1: 'ok', alink2: 'ok', mgmt: 'ok', business: 'ok', disk: 'ok', qemu: 'ok', 'power-supply': 'ok' };

function status(host: string, peer: string, over: Partial<NonNullable<HostStatus['core']>> = {}, health: Record<string, string> = HEALTHY): HostStatus {
  return {
    host,
    pid: 100,
    startedAt: '2026-12-02T04:00:00.000Z',
    incarnation: 3,
    pairing: { state: 'paired', lastError: null },
    core: { peer, state: 'paired', epoch: 7, authority: 'pair', health: 100, peerHeard: true, peerState: 'paired', peerHealth: 100, activeQuorum: 'quorum1', rttMs: 0.84, maintenance: false, declaredDown: false, ...over },
    alink: [
      { name: 'alink1', up: true, srttMs: 0.81, lastError: null },
      { name: 'alink2', up: false, srttMs: null, lastError: 'connect ECONNREFUSED 10.10.2.2:7789' },
    ],
    health,
    vms: [{ name: 'demo', owner: 'host1', protection: 'ha', state: 'protected' }],
  };
}

test('status: both hosts as they see themselves, the quorum server, the VMs', () => {
  const out = renderStatus([status('host1', 'host2'), status('host2', 'host1', { maintenance: true }, { ...HEALTHY, business: 'failed' })]);
  const lines = out.split('\n');
  assert.match(lines[0]!, /^HOST\s+STATE\s+EPOCH\s+AUTHORITY\s+HEALTH\s+FLAGS\s+A-LINK$/);
  assert.match(lines[1]!, /^host1\s+paired\s+7\s+pair\s+100\s+alink1 0\.8 ms, alink2 down$/);
  assert.match(lines[2]!, /^host2\s+paired\s+7\s+pair\s+100\s+maintenance; business failed\s+alink1 0\.8 ms, alink2 down$/);
  assert.equal(lines[3], 'quorum server: quorum1');
  assert.match(out, /\nVM\s+OWNER\s+PROTECTION\s+STATE\ndemo\s+host1\s+ha\s+protected$/);
});

test('a host that did not answer is shown as its peer last heard it, or as not heard', () => {
  assert.deepEqual(hostRows([status('host1', 'host2', { peerState: 'solo', peerHealth: 80 })])[1], ['host2', 'solo (as host1 hears it)', '-', '-', '80', '', '-']);
  assert.deepEqual(hostRows([status('host1', 'host2', { peerHeard: false, peerState: null, peerHealth: null, state: 'solo' })])[1], ['host2', 'not heard by host1', '-', '-', '-', '', '-']);
  const unpaired: HostStatus = { ...status('host1', 'host2'), core: null, alink: null, pairing: { state: 'pairing', lastError: 'no beacon yet' } };
  assert.deepEqual(hostRows([unpaired]), [['host1', 'pairing', '-', '-', '-', '', '-']]);
});

test('host show: the peer, epoch, health, maintenance, each A-Link path and component, the VMs it owns', () => {
  const out = renderHostShow(status('host1', 'host2', { declaredDown: true, health: 60 }, { ...HEALTHY, disk: 'degraded' }));
  assert.match(out, /^host\s+host1$/m);
  assert.match(out, /^peer\s+host2: paired, health 100$/m);
  assert.match(out, /^epoch\s+7 \(authority: pair\)$/m);
  assert.match(out, /^health\s+60 — declared down \(predictive failure\)/m);
  assert.match(out, /^maintenance\s+off$/m);
  assert.match(out, /^A-Link RTT\s+0\.84 ms$/m);
  assert.match(out, /^alink1\s+up, srtt 0\.81 ms$/m);
  assert.match(out, /^alink2\s+down: connect ECONNREFUSED 10\.10\.2\.2:7789$/m);
  assert.match(out, /^ {2}disk\s+degraded$/m);
  assert.match(out, /^VMs owned\s+demo \(protected\)$/m);
});

test('host sensors: one row per sensor with its limits and state; a host without any says why', () => {
  const text = renderSensors({
    host: 'host1',
    note: null,
    sensors: [
      { chip: 'coretemp', id: 'hwmon1/temp1', label: 'Package id 0', kind: 'temperature', value: 86, min: null, max: 85, critical: 100, state: 'warning' },
      { chip: 'nct6775', id: 'hwmon2/fan1', label: 'CPU Fan', kind: 'fan', value: 1200, min: 300, max: null, critical: null, state: 'ok' },
    ],
  });
  assert.match(text, /^sensors of host1$/m);
  assert.match(text, /^SENSOR +CHIP +ID +READING +MIN +MAX +CRITICAL +STATE$/m);
  assert.match(text, /^Package id 0 +coretemp +hwmon1\/temp1 +86 °C +- +85 °C +100 °C +warning$/m);
  assert.match(text, /^CPU Fan +nct6775 +hwmon2\/fan1 +1200 RPM +300 RPM +- +- +ok$/m);
  assert.equal(renderSensors({ host: 'host2', note: 'the kernel reports no hardware sensors on this host', sensors: [] }), 'host2: no sensors — the kernel reports no hardware sensors on this host');
});

const HEALTH2: HealthSnapshot = { alink1: 'ok', alink2: 'failed', mgmt: 'ok', business: 'degraded', disk: 'ok', qemu: 'ok', 'power-supply': 'ok' };

test("host health: a row per component, the asked host's column first, the peer's as it reported them or why it is not shown", () => {
  const own = { ...HEALTHY, disk: 'degraded' } as HealthSnapshot;
  const available: PairHealth = { host: 'host1', components: own, peer: { host: 'host2', state: 'available', takenAt: '2025-01-01T00:00:00.000Z', receivedAt: '2025-01-01T00:00:00.004Z', components: HEALTH2 } };
  const lines = renderPairHealth(available).split('\n');
  assert.match(lines[0]!, /^COMPONENT\s+HOST1\s+HOST2$/);
  assert.match(lines[2]!, /^alink2\s+ok\s+failed$/);
  assert.match(lines[5]!, /^disk\s+degraded\s+ok$/);
  assert.equal(lines.length, 9);
  assert.equal(lines[8], "host2's as it reported them over the A-Link at 2025-01-01T00:00:00.000Z");
  const gone = renderPairHealth({ host: 'host1', components: own, peer: { host: 'host2', state: 'unavailable', reason: 'no answer from host2 within 2000 ms' } }).split('\n');
  assert.match(gone[2]!, /^alink2\s+ok\s+-$/);
  assert.equal(gone[8], "host2's components are not shown: no answer from host2 within 2000 ms");
  assert.equal(renderPairHealth({ host: 'host1', components: null, peer: { host: 'host2', state: 'unavailable', reason: 'not paired yet' } }), "host1 has had no health check yet\nhost2's components are not shown: not paired yet");
});

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, LOCKSTEP_LAB: `no-such-lab-${process.pid}` } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('lockstep host health against a real lockstepd socket: host2 answers over a real A-Link, then its A-Link is gone', async () => {
  const peer = await startPeerLink(cleanup, HEALTH2);
  const h = await startHarness(cleanup, { withDriver: false, peerReports: peer.peerReports });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const out = await cli(['host', 'health', '--socket', socket]);
  assert.equal(out.code, 0, out.stderr);
  const lines = out.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^COMPONENT\s+HOST1\s+HOST2$/);
  assert.match(lines[2]!, /^alink2\s+-\s+failed$/, "the harness's host1 has had no health check; host2's as it reported them");
  assert.equal(lines[8], 'host1 has had no health check yet');
  assert.match(lines[9]!, /^host2's as it reported them over the A-Link at \d{4}-\d{2}-\d{2}T/);

  const json = await cli(['host', 'health', '--socket', socket, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const answer = JSON.parse(json.stdout) as PairHealth;
  assert.deepEqual([answer.host, answer.components, answer.peer.state, answer.peer.state === 'available' && answer.peer.components], ['host1', null, 'available', HEALTH2]);

  await peer.cut();
  const gone = await cli(['host', 'health', '--socket', socket]);
  assert.equal(gone.code, 0, gone.stderr);
  assert.equal(gone.stdout, "host1 has had no health check yet\nhost2's components are not shown: no A-Link path is up\n");
});
