/**
 * `lockstep vm console-log`: parsing (`--bytes`), how an answer is shown (its header: host, running or last
 * run, how much), and the real CLI against real lockstepd API sockets with the serial log written where the
 * VM's QEMU writes it (the harness's lone host never starts one): `--json`, exit codes, and in a lab (its
 * notebook and two hosts' sockets, no namespaces) the other host asked when the first has no log of the
 * running instance.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLockstepError } from '../../src/util/errors.js';
import { parseVmCommand, type VmRequest } from '../../src/cli/vm-command.js';
import { renderConsoleLog, type ConsoleLog } from '../../src/cli/console-log-view.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { startApiServer } from '../../src/daemon/api.js';
import { vmSerialLog, type RunningVm } from '../../src/daemon/vm-runner.js';
import { labPaths, newLabState, saveLabState } from '../../src/lab/lab-state.js';
import { SAMPLE_VM, startHarness, type Harness } from '../api/harness.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const CLI = fileURLToPath(new URL('../../../bin/lockstep.js', import.meta.url));

test('the verb parses into its request; --bytes is checked before any daemon is asked', () => {
  const good: [string[], VmRequest][] = [
    [['console-log', 'web'], { verb: 'console-log', name: 'web', json: false, where: {} }],
    [['console-log', 'web', '--bytes', '4096', '--json', '--host', 'host2'], { verb: 'console-log', name: 'web', bytes: 4096, json: true, where: { host: 'host2' } }],
    [['console-log', '--bytes=1048576', 'web', '--socket', '/run/l.sock'], { verb: 'console-log', name: 'web', bytes: 1048576, json: false, where: { socket: '/run/l.sock' } }],
  ];
  for (const [argv, want] of good) assert.deepEqual(parseVmCommand(argv), want, argv.join(' '));
  const bad: [string[], RegExp][] = [
    [['console-log'], /^usage: lockstep vm console-log NAME \[--bytes N\]$/],
    [['console-log', 'web', 'db'], /^usage: lockstep vm console-log NAME/],
    [['console-log', 'Web'], /VM name 'Web' must start with a letter/],
    [['console-log', 'web', '--bytes', '0'], /--bytes must be a whole number from 1 to 1048576 \(got '0'\)/],
    [['console-log', 'web', '--bytes', '1048577'], /got '1048577'/],
    [['console-log', 'web', '--bytes', '64k'], /got '64k'/],
    [['console-log', 'web', '--bytes'], /argument missing/],
    [['console-log', 'web', '--lines', '5'], /Unknown option '--lines'/],
  ];
  for (const [argv, message] of bad) assert.throws(() => parseVmCommand(argv), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && message.test(e.message), argv.join(' '));
});

const LOG: ConsoleLog = { vm: 'web', host: 'host1', here: true, running: true, size: 120, bytes: 120, truncated: false, text: 'Linux version 6.1\nguest login: ' };

test('the header says the host, the instance and how much; the text follows without an extra blank line', () => {
  assert.equal(renderConsoleLog(LOG), 'console log of VM web on host1 (running here): all 120 B\nLinux version 6.1\nguest login: ');
  assert.equal(
    renderConsoleLog({ ...LOG, running: false, size: 4 * 1024 * 1024, bytes: 65_500, truncated: true, text: 'Power down.\n' }),
    'console log of VM web on host1 (its last run here, not running here now): the last 64.0 KiB of 4.0 MiB, earlier lines left out\nPower down.',
  );
  assert.equal(renderConsoleLog({ ...LOG, size: 0, bytes: 0, text: '' }), 'console log of VM web on host1 (running here): all 0 B');
  assert.equal(renderConsoleLog({ ...LOG, here: false, running: false, size: 0, bytes: 0, text: '' }), 'VM web: no console log on this host (host1): the host that runs it has it');
});

function cli(args: string[], env: Record<string, string> = { LOCKSTEP_LAB: `no-such-lab-${process.pid}` }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The harness's API on `socket`, with the VM `web` defined (stopped: the lone host runs nothing). */
async function daemonAt(socket: string, host: 'host1' | 'host2'): Promise<Harness> {
  const h = await startHarness(cleanup);
  // Only the name it answers with: the log is found by the data directory, as lockstepd finds it.
  h.api.host = host;
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);
  return h;
}

async function writeSerialLog(h: Harness, content: string): Promise<void> {
  const file = vmSerialLog(h.config.dataDir, 'web');
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
}

function runsHere(h: Harness): void {
  const instance: RunningVm = { name: 'web', instance: 1, state: 'running', pid: 4242, startedAt: new Date().toISOString(), mirror: null, migration: null, ft: null, resumedFrom: null };
  h.api.running = () => [instance];
}

test('the CLI against a real lockstepd socket: no log, the log, --bytes, --json, and exit codes', async () => {
  const h = await startHarness(cleanup);
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);

  const none = await cli(['vm', 'console-log', 'web', '--socket', socket]);
  assert.equal(none.code, 0, none.stderr);
  assert.equal(none.stdout, 'VM web: no console log on this host (host1): the host that runs it has it\n');

  await writeSerialLog(h, '\x1b[0;32mSeaBIOS\x1b[0m\r\nLinux version 6.1\r\nPower down.\r\n');
  const all = await cli(['vm', 'console-log', 'web', '--socket', socket]);
  assert.equal(all.code, 0, all.stderr);
  assert.equal(all.stdout, 'console log of VM web on host1 (its last run here, not running here now): all 52 B\nSeaBIOS\nLinux version 6.1\nPower down.\n');
  const tail = await cli(['vm', 'console-log', 'web', '--socket', socket, '--bytes', '20']);
  assert.equal(tail.stdout, 'console log of VM web on host1 (its last run here, not running here now): the last 13 B of 52 B, earlier lines left out\nPower down.\n');
  const json = await cli(['vm', 'console-log', 'web', '--socket', socket, '--json', '--bytes', '20']);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { vm: 'web', host: 'host1', here: true, running: false, size: 52, bytes: 13, truncated: true, text: 'Power down.\n' });

  // Usage errors exit 2, before the daemon (--bytes) or from it (an unknown VM); a log it cannot read, 1.
  const badBytes = await cli(['vm', 'console-log', 'web', '--socket', socket, '--bytes', '0', '--json']);
  assert.equal(badBytes.code, 2);
  assert.equal(JSON.parse(badBytes.stdout).error.code, 'INVALID_ARGUMENT');
  const unknown = await cli(['vm', 'console-log', 'nosuch', '--socket', socket]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no VM named 'nosuch'/);
  const file = vmSerialLog(h.config.dataDir, 'web');
  await rm(file);
  await mkdir(file);
  const unreadable = await cli(['vm', 'console-log', 'web', '--socket', socket]);
  assert.equal(unreadable.code, 1);
  assert.match(unreadable.stderr, /cannot read the console log .*serial\.log/);
});

test('in the lab, the host that runs the VM, else one with its last run, when no host is named', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-lab-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const env = { LOCKSTEP_LAB: `console-log-${process.pid}`, LOCKSTEP_LAB_DIR: dir };
  const lab = labPaths(env);
  await mkdir(lab.dir, { recursive: true });
  await saveLabState(lab, newLabState(lab, new Date()));
  const host1 = await daemonAt(lab.hostApiSocket('host1'), 'host1');
  const host2 = await daemonAt(lab.hostApiSocket('host2'), 'host2');
  const header = async (args: string[]): Promise<string> => {
    const r = await cli(['vm', 'console-log', 'web', ...args], env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n')[0]!;
  };

  // host1 answers first and has no log: host2's, where it runs.
  await writeSerialLog(host2, 'on host2\n');
  runsHere(host2);
  assert.equal(await header([]), 'console log of VM web on host2 (running here): all 9 B');
  // host1 has the last run's, host2 the running instance's: the running one.
  await writeSerialLog(host1, 'earlier, on host1\n');
  assert.equal(await header([]), 'console log of VM web on host2 (running here): all 9 B');
  // A host named is asked alone.
  assert.equal(await header(['--host', 'host1']), 'console log of VM web on host1 (its last run here, not running here now): all 18 B');
  // Running nowhere: the asked host's last run.
  host2.api.running = () => [];
  assert.equal(await header([]), 'console log of VM web on host1 (its last run here, not running here now): all 18 B');
  // --json prints the chosen host's answer as it came.
  runsHere(host2);
  const json = JSON.parse((await cli(['vm', 'console-log', 'web', '--json'], env)).stdout) as ConsoleLog;
  assert.deepEqual([json.host, json.running, json.text], ['host2', true, 'on host2\n']);
});
