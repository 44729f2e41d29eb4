/**
 * `lockstep support bundle`: parsing, and the real CLI against a real lockstepd socket (test/api/harness.ts):
 * into a directory under the host's name for it, or as a file given; never over an existing file; `--json`;
 * the bundle opens with Debian's tar; the download is in the audit log as root's; in a lab, a host must be
 * named.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLockstepError } from '../../src/util/errors.js';
import { parseSupportCommand } from '../../src/cli/support-command.js';
import { startApiServer } from '../../src/daemon/api.js';
import { labPaths, newLabState, saveLabState } from '../../src/lab/lab-state.js';
import { run } from '../../src/util/exec.js';
import { startHarness } from '../api/harness.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const CLI = fileURLToPath(new URL('../../../bin/lockstep.js', import.meta.url));

function cli(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, LOCKSTEP_LAB: `no-such-lab-${process.pid}`, ...opts.env }, ...(opts.cwd ? { cwd: opts.cwd } : {}) }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('the verb parses into its request; anything else is refused before a daemon is asked', () => {
  assert.deepEqual(parseSupportCommand(['bundle']), { verb: 'bundle', output: null, json: false, where: {} });
  assert.deepEqual(parseSupportCommand(['bundle', '-o', '/tmp/x.tar.gz', '--json', '--host', 'host2']), { verb: 'bundle', output: '/tmp/x.tar.gz', json: true, where: { host: 'host2' } });
  assert.deepEqual(parseSupportCommand([]), { verb: 'help', exit: 2 });
  for (const [argv, message] of [
    [['dump'], /unknown support command 'dump'/],
    [['bundle', 'extra'], /^usage: lockstep support bundle/],
    [['bundle', '--since', '1h'], /Unknown option '--since'/],
    [['bundle', '--socket', '/s', '--host', 'host1'], /--socket and --host exclude each other/],
  ] as [string[], RegExp][]) {
    assert.throws(() => parseSupportCommand(argv), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && message.test(e.message), argv.join(' '));
  }
});

test('the CLI against a real lockstepd socket: into a directory, as a file, never over one, --json, audited', async () => {
  const h = await startHarness(cleanup);
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const out = await mkdtemp(path.join(os.tmpdir(), 'lockstep-support-cli-'));
  cleanup.add(() => rm(out, { recursive: true, force: true }));

  const here = await cli(['support', 'bundle', '--socket', socket], { cwd: out });
  assert.equal(here.code, 0, here.stderr);
  const [name, ...others] = await readdir(out);
  assert.deepEqual(others, []);
  assert.match(name!, /^lockstep-support-host1-\d{8}T\d{6}Z\.tar\.gz$/);
  const file = path.join(out, name!);
  assert.equal(here.stdout, `${file} (${(await stat(file)).size} bytes): host1's support bundle\n`);
  const listed = (await run('tar', ['-tzf', file])).stdout.trim().split('\n');
  assert.ok(listed.includes(`${name!.replace(/\.tar\.gz$/, '')}/api/getStatus.json`), listed.join('\n'));

  const given = path.join(out, 'case-1234.tar.gz');
  const json = await cli(['support', 'bundle', '--socket', socket, '--output', given, '--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { host: 'host1', file: given, bytes: (await stat(given)).size });

  // An existing file stays as it was; nothing half-written is left beside it.
  await writeFile(path.join(out, 'keep.tar.gz'), 'mine');
  const refused = await cli(['support', 'bundle', '--socket', socket, '--output', path.join(out, 'keep.tar.gz')]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /keep\.tar\.gz exists already: it is not overwritten/);
  assert.deepEqual((await readdir(out)).sort(), [name!, 'case-1234.tar.gz', 'keep.tar.gz'].sort());

  const audit = h.audit.query({ limit: 10, kind: 'user', text: 'support' }).entries;
  assert.deepEqual(audit.map((e) => [e.user, e.operation, e.result]), [
    ['root@host1', 'makeSupportBundle', 'ok'],
    ['root@host1', 'makeSupportBundle', 'ok'],
  ]);
});

test('in a lab, each host makes its own: the host must be named', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-lab-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const env = { LOCKSTEP_LAB: `support-${process.pid}`, LOCKSTEP_LAB_DIR: dir };
  const lab = labPaths(env);
  await mkdir(lab.dir, { recursive: true });
  await saveLabState(lab, newLabState(lab, new Date()));
  for (const host of ['host1', 'host2'] as const) {
    const h = await startHarness(cleanup);
    h.api.host = host;
    const socket = lab.hostApiSocket(host);
    await mkdir(path.dirname(socket), { recursive: true });
    const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }
  const unnamed = await cli(['support', 'bundle', '--output', dir], { env });
  assert.equal(unnamed.code, 2, unnamed.stderr);
  assert.match(unnamed.stderr, /one host's: name it with --host host1\|host2/);
  const named = await cli(['support', 'bundle', '--output', dir, '--host', 'host2', '--json'], { env });
  assert.equal(named.code, 0, named.stderr);
  assert.match(JSON.parse(named.stdout).file, /lockstep-support-host2-\d{8}T\d{6}Z\.tar\.gz$/);
});
