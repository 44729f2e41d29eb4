/**
 * `lockstep host history` and `lockstep vm history`: parsing (`--last`, `--series`), how fixed history
 * answers are shown (each unit, the statistics, the sparkline and its gaps, a series' error, a VM not running
 * here), and the real CLI against a real lockstepd API socket whose sampler reads this machine's /proc (a
 * spinning child standing in for a VM's QEMU), with its exit codes.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLockstepError } from '../../src/util/errors.js';
import { sleep } from '../../src/util/proc.js';
import { parseHostCommand, type HostRequest } from '../../src/cli/host-command.js';
import { historyQuery, parseVmCommand, type VmRequest } from '../../src/cli/vm-command.js';
import { formatDuration, formatValue, renderHostHistory, renderVmHistory, sparkline, summarize, type HostHistory, type VmHistory } from '../../src/cli/history-view.js';
import type { Series } from '../../src/history/sampler.js';
import { HistorySampler } from '../../src/history/sampler.js';
import { historySources } from '../../src/daemon/history-sources.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { startApiServer } from '../../src/daemon/api.js';
import { SAMPLE_VM, startHarness } from '../api/harness.js';
import { childProcess } from '../history/children.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const CLI = fileURLToPath(new URL('../../../bin/lockstep.js', import.meta.url));
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

test('the verbs parse into their requests; --last defaults to 10m', () => {
  const hosts: [string[], HostRequest][] = [
    [['history'], { verb: 'history', lastMs: 600_000, json: false, where: {} }],
    [['history', '--last', '1h', '--series', 'cpu,memory', '--json', '--host', 'host2'], { verb: 'history', lastMs: 3_600_000, series: 'cpu,memory', json: true, where: { host: 'host2' } }],
    [['history', '--last=90s', '--socket', '/run/l.sock'], { verb: 'history', lastMs: 90_000, json: false, where: { socket: '/run/l.sock' } }],
  ];
  for (const [argv, want] of hosts) assert.deepEqual(parseHostCommand(argv), want, argv.join(' '));
  const vms: [string[], VmRequest][] = [
    [['history', 'web'], { verb: 'history', name: 'web', lastMs: 600_000, json: false, where: {} }],
    [['history', 'web', '--last', '5m', '--series', 'disk'], { verb: 'history', name: 'web', lastMs: 300_000, series: 'disk', json: false, where: {} }],
  ];
  for (const [argv, want] of vms) assert.deepEqual(parseVmCommand(argv), want, argv.join(' '));
});

test('a bad --last, a stray argument or a missing VM name is a usage error that says what is wrong', () => {
  const bad: [(argv: string[]) => unknown, string[], RegExp][] = [
    [parseHostCommand, ['history', '--last', '10'], /--last must be a whole number of seconds, minutes or hours, like 90s, 10m or 1h \(got '10'\)/],
    [parseHostCommand, ['history', '--last', '0m'], /got '0m'/],
    [parseHostCommand, ['history', '--last', '1d'], /got '1d'/],
    [parseHostCommand, ['history', '--last', '1.5h'], /got '1\.5h'/],
    [parseHostCommand, ['history', '--last=-5m'], /got '-5m'/],
    [parseHostCommand, ['history', '--last'], /argument missing/],
    [parseHostCommand, ['history', 'host1'], /usage: lockstep host history/],
    [parseVmCommand, ['history'], /usage: lockstep vm history NAME/],
    [parseVmCommand, ['history', 'web', '--last', 'soon'], /got 'soon'/],
    [parseVmCommand, ['history', 'Web'], /VM name 'Web' must start with a letter/],
  ];
  for (const [parse, argv, message] of bad) assert.throws(() => parse(argv), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && message.test(e.message), argv.join(' '));
});

test("the query: since is the window's start, series passed through", () => {
  assert.equal(historyQuery({ lastMs: 600_000 }, 1_700_000_600_000), '?since=1700000000000');
  assert.equal(historyQuery({ lastMs: 60_000, series: 'cpu,memory' }, 1_700_000_060_000), '?since=1700000000000&series=cpu%2Cmemory');
});

test('each unit formatted: a ratio as a percentage, cores with 2 decimals, bytes and bytes/s in binary units', () => {
  assert.equal(formatValue('ratio', 0.1234), '12.3%');
  assert.equal(formatValue('ratio', 1), '100.0%');
  assert.equal(formatValue('cores', 0.5), '0.50 cores');
  assert.equal(formatValue('cores', 2), '2.00 cores');
  assert.equal(formatValue('bytes', 512), '512 B');
  assert.equal(formatValue('bytes', 1536), '1.5 KiB');
  assert.equal(formatValue('bytes', 300 * MIB), '300.0 MiB');
  assert.equal(formatValue('bytes', 7.5 * GIB), '7.5 GiB');
  assert.equal(formatValue('bytes/s', 195.4), '195 B/s', 'a rate is rounded to whole bytes');
  assert.equal(formatValue('bytes/s', 3 * MIB), '3.0 MiB/s');
  assert.deepEqual(summarize([3, 1, 2]), { min: 1, mean: 2, max: 3 });
  assert.equal(summarize([]), null);
  assert.deepEqual([formatDuration(600_000), formatDuration(3_600_000), formatDuration(90_000), formatDuration(5000)], ['10m', '1h', '90s', '5s']);
});

test('the sparkline: a column per span, levels from 0 to the limit or the peak, a gap where nothing was measured', () => {
  // 80 s in rounds of 5 s: 8 columns of 10 s.
  const at = (s: number, v: number): [number, number] => [s * 1000, v];
  assert.equal(sparkline([at(5, 0), at(15, 1), at(25, 2), at(35, 3), at(45, 4), at(55, 5), at(65, 6), at(75, 7)], 0, 80_000, 5000, null), '▁▂▃▄▅▆▇█');
  // Against its limit: 10 % of it is the lowest level, not the highest.
  assert.equal(sparkline([at(5, 0.1), at(75, 0.1)], 0, 80_000, 5000, 1), '▁······▁');
  assert.equal(sparkline([at(5, 0.5), at(75, 1)], 0, 80_000, 5000, 1), '▅······█');
  // A peak past the limit (a QEMU's threads over its vCPUs) is the top.
  assert.equal(sparkline([at(5, 1), at(75, 2)], 0, 80_000, 5000, 1), '▅······█');
  // Each column is its points' mean; a round stamped after the window's end goes in the last column.
  assert.equal(sparkline([at(1, 0), at(6, 8), at(79, 8), at(81, 8)], 0, 80_000, 5000, null), '▅······█');
  assert.equal(sparkline([at(5, 0), at(75, 0)], 0, 80_000, 5000, null), '▁······▁', 'all zero: the lowest level');
  assert.equal(sparkline([], 0, 80_000, 5000, 1), '········');
  // A long window has at most 30 columns; a short one at least one.
  assert.equal(sparkline([], 0, 3_600_000, 5000, null).length, 30);
  assert.equal(sparkline([at(1, 1)], 0, 5000, 5000, null), '█');
});

const NOW = 1_767_225_600_000;
const point = (agoS: number, v: number): [number, number] => [NOW - agoS * 1000, v];
const series = (over: Partial<Series> & Pick<Series, 'id' | 'unit' | 'label'>): Series => ({ family: 'cpu', limit: null, error: null, points: [], ...over });

const HOST: HostHistory = {
  host: 'host1',
  intervalMs: 5000,
  keptMs: 3_600_000,
  series: [
    series({ id: 'cpu', unit: 'ratio', label: 'CPU busy', limit: 1, points: [point(590, 0.1), point(300, 0.3), point(5, 0.5)] }),
    series({ id: 'memory', family: 'memory', unit: 'bytes', label: 'memory used', limit: 8 * GIB, points: [point(590, 2 * GIB), point(5, 4 * GIB)] }),
    series({ id: 'network.mgmt.rx', family: 'network', unit: 'bytes/s', label: 'mgmt (lo) received', points: [point(590, 1024), point(5, 3072)] }),
    series({ id: 'network.business.rx', family: 'network', unit: 'bytes/s', label: 'business received', error: 'no interface br-biz in this network namespace' }),
  ],
};

test("the host's table: each series' now, min, avg, max, limit and sparkline; why a series has no value now", () => {
  const lines = renderHostHistory(HOST, { lastMs: 600_000, nowMs: NOW }).split('\n');
  assert.equal(lines[0], 'history of host1, last 10m, a round every 5s');
  assert.match(lines[1]!, /^SERIES\s+NOW\s+MIN\s+AVG\s+MAX\s+LIMIT\s+TREND$/);
  assert.match(lines[2]!, /^CPU busy\s+50\.0%\s+10\.0%\s+30\.0%\s+50\.0%\s+100\.0%\s+▁·+▃·+▅$/);
  assert.match(lines[3]!, /^memory used\s+4\.0 GiB\s+2\.0 GiB\s+3\.0 GiB\s+4\.0 GiB\s+8\.0 GiB\s+▃·+▅$/);
  assert.match(lines[4]!, /^mgmt \(lo\) received\s+3\.0 KiB\/s\s+1\.0 KiB\/s\s+2\.0 KiB\/s\s+3\.0 KiB\/s\s+-\s+▃·+█$/);
  assert.match(lines[5]!, /^business received\s+-\s+-\s+-\s+-\s+-\s+·{30}$/);
  assert.equal(lines[6], 'business received: not measured now: no interface br-biz in this network namespace');
  assert.equal(lines.length, 7);
  // A series whose newest round failed shows its older points, but no value now.
  const stale = renderHostHistory({ ...HOST, series: [{ ...HOST.series[1]!, error: 'cannot read /proc/meminfo' }] }, { lastMs: 600_000, nowMs: NOW });
  assert.match(stale, /^memory used\s+-\s+2\.0 GiB\s+3\.0 GiB\s+4\.0 GiB\s+8\.0 GiB\s/m);
  assert.match(stale, /\nmemory used: not measured now: cannot read \/proc\/meminfo$/);
  // More than the history keeps is what it keeps.
  assert.match(renderHostHistory(HOST, { lastMs: 7_200_000, nowMs: NOW }), /^history of host1, last 1h \(all it keeps; 2h asked\), a round every 5s$/m);
});

test("a VM's table in cores and bytes; a VM not running on the host asked", () => {
  const vm: VmHistory = {
    host: 'host1',
    vm: 'web',
    here: true,
    intervalMs: 5000,
    keptMs: 3_600_000,
    series: [
      series({ id: 'cpu', unit: 'cores', label: 'CPU used', limit: 2, points: [point(20, 0.25), point(5, 0.75)] }),
      series({ id: 'disk', family: 'disk', unit: 'bytes', label: 'disk allocated', limit: GIB, points: [point(5, 200 * MIB)] }),
    ],
  };
  const lines = renderVmHistory(vm, { lastMs: 60_000, nowMs: NOW }).split('\n');
  assert.equal(lines[0], 'history of VM web on host1, last 1m, a round every 5s');
  assert.match(lines[2]!, /^CPU used\s+0\.75 cores\s+0\.25 cores\s+0\.50 cores\s+0\.75 cores\s+2\.00 cores\s+·{4}▂▄$/);
  assert.match(lines[3]!, /^disk allocated\s+200\.0 MiB\s+200\.0 MiB\s+200\.0 MiB\s+200\.0 MiB\s+1\.0 GiB\s+·{5}▂$/);
  assert.equal(lines.length, 4);
  assert.equal(renderVmHistory({ ...vm, here: false, series: [] }, { lastMs: 60_000, nowMs: NOW }), 'VM web: not running on this host (host1): the host that runs it has its history');
  // It ran here within the hour: the history it left, and that it no longer runs here.
  assert.match(renderVmHistory({ ...vm, here: false }, { lastMs: 60_000, nowMs: NOW }), /\nVM web is not running on this host \(host1\) now: this is its history from while it ran here$/);
});

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, LOCKSTEP_LAB: `no-such-lab-${process.pid}` } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('the CLI against a real lockstepd socket: the host and a VM, the table, --json, and exit codes', async () => {
  const h = await startHarness(cleanup);
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  // Two rounds: the rates (CPU, network) need both.
  await h.history.sampleNow();
  await sleep(300);
  await h.history.sampleNow();

  const table = await cli(['host', 'history', '--socket', socket]);
  assert.equal(table.code, 0, table.stderr);
  const rows = table.stdout.trimEnd().split('\n');
  assert.equal(rows[0], 'history of host1, last 10m, a round every 5s');
  assert.match(rows[1]!, /^SERIES\s+NOW\s+MIN\s+AVG\s+MAX\s+LIMIT\s+TREND$/);
  assert.match(rows[2]!, /^CPU busy\s+\d+\.\d%\s+\d+\.\d%\s+\d+\.\d%\s+\d+\.\d%\s+100\.0%\s+·{29}[▁▂▃▄▅▆▇█]$/);
  assert.match(rows[3]!, /^memory used\s+\d+\.\d [MG]iB\s+.*\s+\d+\.\d GiB\s+·{29}[▁▂▃▄▅▆▇█]$/);
  assert.match(rows[4]!, /^default used\s+\d/);
  assert.match(rows[5]!, /^mgmt \(lo\) received\s+\d+(\.\d)? (B|KiB|MiB)\/s\s/);
  assert.match(rows[7]!, /^business received\s+-\s+-\s+-\s+-\s+-\s+·{30}$/);
  assert.ok(rows.includes('business received: not measured now: no interface br-biz in this network namespace'), table.stdout);
  assert.ok(rows.includes('alink1 received: not measured now: no interface has the address 10.10.1.1'), table.stdout);

  const json = await cli(['host', 'history', '--socket', socket, '--json', '--series', 'cpu,memory', '--last', '1m']);
  assert.equal(json.code, 0, json.stderr);
  const answer = JSON.parse(json.stdout) as HostHistory;
  assert.deepEqual([answer.host, answer.intervalMs, answer.keptMs], ['host1', 5000, 3_600_000]);
  assert.deepEqual(answer.series.map((s) => [s.id, s.unit, s.points.length]), [['cpu', 'ratio', 1], ['memory', 'bytes', 2]]);

  // A bad --last is refused before any daemon is asked; a family the API does not know, by the API: both 2.
  const badLast = await cli(['host', 'history', '--socket', socket, '--last', '10x']);
  assert.equal(badLast.code, 2);
  assert.match(badLast.stderr, /^lockstep: --last must be a whole number of seconds, minutes or hours, like 90s, 10m or 1h \(got '10x'\)$/m);
  const badLastJson = await cli(['host', 'history', '--socket', socket, '--last', '10x', '--json']);
  assert.equal(badLastJson.code, 2);
  assert.equal(JSON.parse(badLastJson.stdout).error.code, 'INVALID_ARGUMENT');
  const badSeries = await cli(['host', 'history', '--socket', socket, '--series', 'gpu', '--json']);
  assert.equal(badSeries.code, 2);
  assert.deepEqual([JSON.parse(badSeries.stdout).error.code, JSON.parse(badSeries.stdout).error.fields.field], ['INVALID_ARGUMENT', 'series']);

  // A VM the pair knows that does not run here (the lone host never starts QEMU); one it does not know.
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);
  const notHere = await cli(['vm', 'history', 'web', '--socket', socket]);
  assert.equal(notHere.code, 0, notHere.stderr);
  assert.equal(notHere.stdout, 'VM web: not running on this host (host1): the host that runs it has its history\n');
  const notHereJson = JSON.parse((await cli(['vm', 'history', 'web', '--socket', socket, '--json'])).stdout) as VmHistory;
  assert.deepEqual([notHereJson.host, notHereJson.vm, notHereJson.here, notHereJson.series], ['host1', 'web', false, []]);
  const unknown = await cli(['vm', 'history', 'nosuch', '--socket', socket]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no VM named 'nosuch'/);

  // A spinning child as web's QEMU, measured by a sampler with the daemon's own storage source.
  const child = await childProcess(cleanup, { holdMiB: 32, spin: true });
  const base = historySources({ host: 'host1', storageGroups: h.config.storageGroups, driver: () => h.driver, running: () => [], health: () => null }, h.config);
  const sampler = new HistorySampler({ ...base, vms: () => [{ name: 'web', pid: child.pid, vcpus: 1, memoryBytes: 128 * MIB, diskBytes: 16 * MIB }] }, { log: () => {} });
  h.api.history = sampler;
  await sampler.sampleNow();
  await sleep(500);
  await sampler.sampleNow();
  const running = await cli(['vm', 'history', 'web', '--socket', socket, '--last', '2m']);
  assert.equal(running.code, 0, running.stderr);
  const vmRows = running.stdout.trimEnd().split('\n');
  assert.equal(vmRows[0], 'history of VM web on host1, last 2m, a round every 5s');
  assert.match(vmRows[2]!, /^CPU used\s+\d\.\d\d cores\s+\d\.\d\d cores\s+\d\.\d\d cores\s+\d\.\d\d cores\s+1\.00 cores\s+·{11}[▁▂▃▄▅▆▇█]$/);
  assert.match(vmRows[3]!, /^resident memory\s+\d+\.\d MiB\s+.*\s+128\.0 MiB\s+·{11}[▁▂▃▄▅▆▇█]$/);
  assert.match(vmRows[4]!, /^disk allocated\s+-\s+-\s+-\s+-\s+16\.0 MiB\s+·{12}$/);
  assert.equal(vmRows[5], 'disk allocated: not measured now: its volume has no file on this host');
});
