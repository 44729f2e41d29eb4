/**
 * A VM's console log through the API, on the management API and the local socket alike (one route table),
 * over real HTTPS: the serial log written where the VM's QEMU writes it on this host (the lone harness host
 * never starts one), its text cleaned and cut at a line start, `bytes`, a log far larger than asked for, a
 * VM with no log here, one whose QEMU runs here, a log that cannot be read (503), bad queries (400 naming
 * the parameter), an unknown VM (404), no session (401) and a read-only user (allowed).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness, type Answer, type Harness } from './harness.js';
import { MANAGEMENT_ROUTES } from '../../src/api/management-routes.js';
import { validate } from '../../src/api/schema.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { vmSerialLog, type RunningVm } from '../../src/daemon/vm-runner.js';
import { isLockstepError } from '../../src/util/errors.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function documented(r: Answer): void {
  const route = MANAGEMENT_ROUTES.find((x) => x.operationId === 'getVmConsoleLog')!;
  assert.equal(r.status, route.response.status, r.text);
  try {
    validate(route.response.schema!, r.body, 'INVALID_ARGUMENT');
  } catch (e) {
    assert.fail(`the answer does not match its documented schema: ${isLockstepError(e) ? e.message : String(e)}`);
  }
}

function refused(r: Answer, status: number, code: string, field?: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.error.code, code, r.text);
  if (field !== undefined) assert.equal(r.body.error.fields.field, field, r.text);
}

/** The harness with its admin's token and the VM `web` defined (stopped: the lone host runs nothing). */
async function withVm(): Promise<{ h: Harness; token: string; log: string }> {
  const h = await startHarness(cleanup);
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const token = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: SAMPLE_VM })).status, 201);
  return { h, token, log: vmSerialLog(h.config.dataDir, 'web') };
}

/** The serial log as a QEMU would leave it: written by the guest, in the VM's run directory. */
async function writeSerialLog(file: string, content: string | Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
}

test('a VM that never ran here: no log, here false; then the log a stopped instance left, cleaned', async () => {
  const { h, token, log } = await withVm();
  const none = await h.request('GET', '/api/v1/vms/web/console-log', { token });
  documented(none);
  assert.deepEqual(none.body, { vm: 'web', host: 'host1', here: false, running: false, size: 0, bytes: 0, truncated: false, text: '' });

  const boot = '\x1b[2J\x1b[HSeaBIOS\r\nLinux version 6.1\r\n[  \x1b[0;32mOK\x1b[0m  ] Started\tjournald\r\nguest login: ';
  await writeSerialLog(log, boot);
  const r = await h.request('GET', '/api/v1/vms/web/console-log', { token });
  documented(r);
  assert.deepEqual(r.body, {
    vm: 'web',
    host: 'host1',
    here: true,
    running: false,
    size: Buffer.byteLength(boot),
    bytes: Buffer.byteLength(boot),
    truncated: false,
    text: 'SeaBIOS\nLinux version 6.1\n[  OK  ] Started\tjournald\nguest login: ',
  });
});

test('bytes: the last N bytes from a line start; a log far larger than asked for; the default 64 KiB', async () => {
  const { h, token, log } = await withVm();
  await writeSerialLog(log, 'first line\nsecond line\nthird\n');
  const r = await h.request('GET', '/api/v1/vms/web/console-log?bytes=15', { token });
  documented(r);
  // The last 15 bytes are "nd line\nthird\n": the partial line goes.
  assert.deepEqual([r.body.text, r.body.bytes, r.body.truncated, r.body.size], ['third\n', 6, true, 29]);
  // The tail beginning right after a newline keeps its first line.
  const exact = await h.request('GET', '/api/v1/vms/web/console-log?bytes=18', { token });
  assert.deepEqual([exact.body.text, exact.body.bytes, exact.body.truncated], ['second line\nthird\n', 18, true]);

  // 4 MiB of numbered lines: the default answer is the last 64 KiB, from a whole line, to the end.
  const lines = Array.from({ length: 4 * 1024 * 1024 / 64 }, (_, i) => `line ${String(i).padStart(8, '0')} ${'x'.repeat(49)}\n`);
  await writeSerialLog(log, lines.join(''));
  const big = await h.request('GET', '/api/v1/vms/web/console-log', { token });
  documented(big);
  assert.equal(big.body.size, 4 * 1024 * 1024);
  assert.equal(big.body.truncated, true);
  assert.equal(big.body.bytes, 64 * 1024, 'the lines are 64 bytes: the tail begins on one');
  assert.equal(big.body.text, lines.slice(-1024).join(''));
  const most = await h.request('GET', `/api/v1/vms/web/console-log?bytes=${1024 * 1024}`, { token });
  assert.equal(most.body.bytes, 1024 * 1024);
});

test('running: a QEMU of the VM here now; a log that cannot be read is 503 with its path', async () => {
  const { h, token, log } = await withVm();
  const instance: RunningVm = { name: 'web', instance: 1, state: 'running', pid: 4242, startedAt: new Date().toISOString(), mirror: null, migration: null, ft: null, resumedFrom: null };
  h.api.running = () => [instance];
  await writeSerialLog(log, 'booting\n');
  const r = await h.request('GET', '/api/v1/vms/web/console-log', { token });
  documented(r);
  assert.deepEqual([r.body.here, r.body.running, r.body.text], [true, true, 'booting\n']);

  // A directory where the file should be: opened, but not readable as a log.
  await rm(log);
  await mkdir(log);
  const bad = await h.request('GET', '/api/v1/vms/web/console-log', { token });
  refused(bad, 503, 'CONSOLE_LOG_UNREADABLE');
  assert.deepEqual([bad.body.error.fields.path, bad.body.error.fields.errno], [log, 'EISDIR']);
});

test('bad queries are 400 naming the parameter; an unknown VM 404; no session 401; read-only may read', async () => {
  const { h, token, log } = await withVm();
  await writeSerialLog(log, 'hello\n');
  for (const query of ['bytes=0', 'bytes=-1', `bytes=${1024 * 1024 + 1}`, 'bytes=1.5', 'bytes=lots', 'bytes=1&bytes=2']) {
    refused(await h.request('GET', `/api/v1/vms/web/console-log?${query}`, { token }), 400, 'INVALID_ARGUMENT', 'bytes');
  }
  refused(await h.request('GET', '/api/v1/vms/web/console-log?lines=5', { token }), 400, 'INVALID_ARGUMENT', 'lines');
  refused(await h.request('GET', '/api/v1/vms/nosuch/console-log', { token }), 404, 'UNKNOWN_VM');
  refused(await h.request('GET', '/api/v1/vms/..%2F..%2Fstate/console-log', { token }), 404, 'UNKNOWN_VM');
  refused(await h.request('GET', '/api/v1/vms/web/console-log'), 401, 'NOT_AUTHENTICATED');
  refused(await h.request('POST', '/api/v1/vms/web/console-log', { token }), 405, 'METHOD_NOT_ALLOWED');

  assert.equal((await h.request('POST', '/api/v1/users', { token, body: { name: 'vic', password: 'vic-password-1', groups: ['read-only'] } })).status, 201);
  const viewer = await h.login('vic', 'vic-password-1');
  const r = await h.request('GET', '/api/v1/vms/web/console-log', { token: viewer });
  documented(r);
  assert.equal(r.body.text, 'hello\n');
});

test('the local socket serves the same console log', async () => {
  const { h, log } = await withVm();
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await writeSerialLog(log, 'one\ntwo\n');
  const r = await daemonRequest<{ text: string; truncated: boolean }>(socket, 'GET', '/v1/vms/web/console-log?bytes=4');
  assert.deepEqual([r.text, r.truncated], ['two\n', true]);
  await assert.rejects(daemonRequest(socket, 'GET', '/v1/vms/web/console-log?bytes=x'), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && e.fields['field'] === 'bytes');
  await assert.rejects(daemonRequest(socket, 'GET', '/v1/vms/nosuch/console-log'), (e) => isLockstepError(e, 'UNKNOWN_VM'));
});
