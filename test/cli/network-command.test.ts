/**
 * `lockstep network list`: parsing, how fixed `GET /v1/networks` answers are shown (every network of each
 * host, an A-Link path's round trip, a peer whose view is unavailable, `--json` passing the answer through), and
 * the real CLI against a real lockstepd API socket (the API test harness's: its networks are this machine's),
 * with its exit codes, and with a peer that answers over a real A-Link.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLockstepError } from '../../src/util/errors.js';
import { parseNetworkCommand, renderNetworkAnswer, type NetworkRequest } from '../../src/cli/network-command.js';
import type { PairNetworks } from '../../src/daemon/network-routes.js';
import type { NetworkStatus } from '../../src/daemon/networks.js';
import { startApiServer } from '../../src/daemon/api.js';
import { startHarness } from '../api/harness.js';
import { startPeerLink } from '../api/peer-link.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const CLI = fileURLToPath(new URL('../../../bin/lockstep.js', import.meta.url));

test('the verb parses into its request; mistakes are usage errors', () => {
  const cases: [string[], NetworkRequest][] = [
    [['list'], { verb: 'list', json: false, where: {} }],
    [['list', '--json', '--host', 'host2'], { verb: 'list', json: true, where: { host: 'host2' } }],
    [['list', '--socket', '/run/l.sock'], { verb: 'list', json: false, where: { socket: '/run/l.sock' } }],
    [['help'], { verb: 'help', exit: 0 }],
    [[], { verb: 'help', exit: 2 }],
  ];
  for (const [argv, want] of cases) assert.deepEqual(parseNetworkCommand(argv), want, argv.join(' '));
  const bad: [string[], string, RegExp][] = [
    [['show'], 'INVALID_ARGUMENT', /unknown network command 'show'/],
    [['list', 'alink1'], 'INVALID_ARGUMENT', /usage: lockstep network list/],
    [['list', '--fast'], 'INVALID_ARGUMENT', /Unknown option '--fast'/],
    [['list', '--socket', '/s', '--host', 'host1'], 'INVALID_ARGUMENT', /--socket and --host exclude each other/],
    [['list', '--host', 'host9'], 'UNKNOWN_HOST', /no lab host named 'host9'/],
  ];
  for (const [argv, code, message] of bad) assert.throws(() => parseNetworkCommand(argv), (e) => isLockstepError(e, code as never) && message.test(e.message), argv.join(' '));
});

const NO_RATE = { rxBytesPerSec: null, txBytesPerSec: null, overMs: null, sampledAt: null, reason: 'one sample so far: a rate needs two' };
const base = { host: 'host1', bridge: null, health: 'ok', operstate: 'up', adminUp: true, carrier: true, speedMbps: 10000, mac: '02:4c:53:00:00:01', mtu: 1500, rxBytes: 1000, txBytes: 2000, bandwidth: NO_RATE, alink: null } as const;
const alink1: NetworkStatus = {
  ...base,
  name: 'alink1',
  role: 'alink',
  interface: 'alink1',
  state: 'up',
  detail: 'carrier (operstate up)',
  bandwidth: { rxBytesPerSec: 1536, txBytesPerSec: 3 * 1024 * 1024, overMs: 500, sampledAt: '2025-01-01T00:00:00.000Z', reason: null },
  alink: { localAddress: '10.10.1.1', peerAddress: '10.10.1.2', connected: true, rttMs: 0.4216, lastError: null },
};
const alink2: NetworkStatus = {
  ...base,
  name: 'alink2',
  role: 'alink',
  interface: 'alink2',
  state: 'down',
  detail: 'no carrier (operstate lowerlayerdown)',
  health: 'failed',
  carrier: false,
  alink: { localAddress: '10.10.2.1', peerAddress: '10.10.2.2', connected: false, rttMs: null, lastError: 'path timed out' },
};
const mgmt: NetworkStatus = { ...base, name: 'mgmt', role: 'management', interface: 'mgmt0', state: 'up', detail: 'carrier (operstate up)', speedMbps: null };
const business: NetworkStatus = { ...base, name: 'business', role: 'business', interface: 'biz0', bridge: 'br-biz', state: 'missing', detail: 'interface biz0 does not exist', speedMbps: null, mac: null, mtu: null, rxBytes: null, txBytes: null };

test('the table: a row per network of each host, its bandwidth, an A-Link path’s round trip, why a network is not up', () => {
  const peer: PairNetworks['peer'] = { host: 'host2', state: 'available', takenAt: '2025-01-01T00:00:00.000Z', receivedAt: '2025-01-01T00:00:00.010Z', networks: [{ ...mgmt, host: 'host2', interface: 'mgmt0' }] };
  const lines = renderNetworkAnswer(false, { pair: { host: 'host1', networks: [alink1, alink2, mgmt, business], peer }, direct: null }).split('\n');
  assert.match(lines[0]!, /^HOST\s+NETWORK\s+ROLE\s+INTERFACE\s+STATE\s+SPEED\s+MAC\s+MTU\s+RX\s+TX\s+ROUND TRIP\s+DETAIL$/);
  assert.match(lines[1]!, /^host1\s+alink1\s+alink\s+alink1\s+up\s+10000 Mb\/s\s+02:4c:53:00:00:01\s+1500\s+1\.5 KiB\/s\s+3\.0 MiB\/s\s+0\.42 ms\s+-$/);
  assert.match(lines[2]!, /^host1\s+alink2\s+alink\s+alink2\s+down\s+10000 Mb\/s\s+\S+\s+1500\s+-\s+-\s+not connected\s+no carrier \(operstate lowerlayerdown\)$/);
  assert.match(lines[3]!, /^host1\s+mgmt\s+management\s+mgmt0\s+up\s+unknown\s+\S+\s+1500\s+-\s+-\s+-$/, 'speed unknown to the kernel; no round trip but on an A-Link');
  assert.match(lines[4]!, /^host1\s+business\s+business\s+biz0 \(bridge br-biz\)\s+missing\s+-\s+-\s+-\s+-\s+-\s+interface biz0 does not exist$/);
  assert.match(lines[5]!, /^host2\s+mgmt\s+management/);
  assert.equal(lines.length, 6);
});

test('a peer whose view is unavailable is said, with why; asked directly, its rows are shown; --json is the answer untouched', () => {
  const unavailable = { host: 'host2', state: 'unavailable', reason: 'no answer from host2 within 2000 ms' } as const;
  const pair = { host: 'host1', networks: [alink1], peer: unavailable };
  const out = renderNetworkAnswer(false, { pair, direct: null });
  assert.match(out, /\nhost2's networks are not shown: no answer from host2 within 2000 ms$/);
  const direct = renderNetworkAnswer(false, { pair, direct: [{ ...mgmt, host: 'host2' }] }).split('\n');
  assert.match(direct[2]!, /^host2\s+mgmt\s+management/);
  assert.equal(direct[3], "host2's networks asked of host2 directly: host1 could not get them (no answer from host2 within 2000 ms)");
  assert.equal(renderNetworkAnswer(false, { pair: { host: 'host1', networks: [], peer: { host: 'host2', state: 'unavailable', reason: 'not paired yet' } }, direct: null }), "no networks\nhost2's networks are not shown: not paired yet");
  assert.equal(renderNetworkAnswer(true, { pair, direct: [mgmt] }), JSON.stringify(pair, null, 2));
});

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, LOCKSTEP_LAB: `no-such-lab-${process.pid}` } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('the CLI against a real lockstepd socket: the table, --json, and exit codes', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const table = await cli(['network', 'list', '--socket', socket]);
  assert.equal(table.code, 0, table.stderr);
  const rows = table.stdout.trimEnd().split('\n');
  assert.match(rows[0]!, /^HOST\s+NETWORK/);
  assert.match(rows[1]!, /^host1\s+alink1\s+alink\s+-\s+missing\s.*\bnot paired\s+no interface has the address 10\.10\.1\.1$/);
  assert.match(rows[2]!, /^host1\s+mgmt\s+management\s+lo\s+/, 'the harness names loopback as its management network');
  assert.match(rows[3]!, /^host1\s+business\s+business\s+br-biz\s+missing\s/);
  assert.equal(rows[4], "host2's networks are not shown: not paired yet: there is no A-Link to ask the peer over");

  const json = await cli(['network', 'list', '--socket', socket, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const answer = JSON.parse(json.stdout) as PairNetworks;
  assert.equal(answer.host, 'host1');
  assert.deepEqual(answer.networks.map((n) => [n.host, n.name, n.interface]), [['host1', 'alink1', null], ['host1', 'mgmt', 'lo'], ['host1', 'business', 'br-biz']]);
  assert.deepEqual(answer.peer, { host: 'host2', state: 'unavailable', reason: 'not paired yet: there is no A-Link to ask the peer over' });

  // No daemon there: could not be carried out (1), the error's code in --json; a wrong command line: 2.
  const gone = await cli(['network', 'list', '--socket', path.join(h.dir, 'nothing.sock'), '--json']);
  assert.equal(gone.code, 1);
  assert.equal(JSON.parse(gone.stdout).error.code, 'DAEMON_UNREACHABLE');
  assert.equal((await cli(['network', 'list', 'extra'])).code, 2);
  // Outside a lab with no socket named: which daemon is meant cannot be guessed.
  const nowhere = await cli(['network', 'list']);
  assert.equal(nowhere.code, 2);
  assert.match(nowhere.stderr, /give the daemon's API socket with --socket PATH/);
});

test("the CLI against a real lockstepd socket whose peer answers over a real A-Link: both hosts' rows from the one asked", async () => {
  const peer = await startPeerLink(cleanup, null);
  const h = await startHarness(cleanup, { withDriver: false, peerReports: peer.peerReports });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const table = await cli(['network', 'list', '--socket', socket]);
  assert.equal(table.code, 0, table.stderr);
  const rows = table.stdout.trimEnd().split('\n');
  assert.deepEqual(rows.slice(1).map((r) => r.split(/\s+/).slice(0, 2).join(' ')), ['host1 alink1', 'host1 mgmt', 'host1 business', 'host2 alink1', 'host2 mgmt', 'host2 business']);
  assert.match(rows[4]!, /^host2\s+alink1\s+alink\s+lo\s+up\s/, "host2's A-Link path as host2 reads it");
  assert.equal(rows.length, 7, 'no note: the peer answered');
});
