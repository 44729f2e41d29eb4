/** `lockstep status` and `lockstep host`: parsing every verb, and how fixed `GET /v1/status` answers are shown. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isLockstepError } from '../../src/util/errors.js';
import { parseHostCommand, parseStatusCommand, type HostRequest } from '../../src/cli/host-command.js';
import { hostRows, renderHostShow, renderSensors, renderStatus, type HostStatus } from '../../src/cli/host-view.js';

test('each verb parses into its request', () => {
  const cases: [string[], HostRequest][] = [
    [['list'], { verb: 'list', json: false, where: {} }],
    [['show', '--host', 'host2', '--json'], { verb: 'show', json: true, where: { host: 'host2' } }],
    [['sensors', '--host', 'host1'], { verb: 'sensors', json: false, where: { host: 'host1' } }],
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
