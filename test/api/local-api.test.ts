/**
 * The local API on the unix socket after the route table was shared with the management API: the CLI's and
 * the lab's requests answer as before, unauthenticated, through the same handlers and input checks; of the
 * management API's own routes, only the accounts routes (setup, users, groups, audit) are on the socket
 * (test/api/local-accounts.test.ts).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { SAMPLE_VM, startHarness } from './harness.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { isLockstepError } from '../../src/util/errors.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function localApi(withDriver: boolean): Promise<string> {
  const h = await startHarness(cleanup, { withDriver });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return socket;
}

async function refused(p: Promise<unknown>, code: string, status: number): Promise<void> {
  await assert.rejects(p, (e) => isLockstepError(e) && e.code === code && e.fields['status'] === status);
}

test('the CLI and lab requests answer as before on the socket, without a session', async () => {
  const socket = await localApi(true);
  const status = await daemonRequest<{ host: string; pairing: { state: string }; vms: unknown[] }>(socket, 'GET', '/v1/status');
  assert.equal(status.host, 'host1');
  assert.equal(status.pairing.state, 'paired');
  const vm = await daemonRequest<{ name: string; owner: string; desired: string }>(socket, 'POST', '/v1/vms', SAMPLE_VM);
  assert.deepEqual([vm.name, vm.owner, vm.desired], ['web', 'host1', 'stopped']);
  assert.equal((await daemonRequest<unknown[]>(socket, 'GET', '/v1/vms')).length, 1);
  assert.equal((await daemonRequest<{ name: string }>(socket, 'GET', '/v1/vms/web')).name, 'web');
  assert.equal((await daemonRequest<{ desired: string }>(socket, 'POST', '/v1/vms/web/start')).desired, 'running');
  assert.equal((await daemonRequest<{ protection: string }>(socket, 'POST', '/v1/vms/web/protection', { protection: 'none' })).protection, 'none');
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/migrate'), 'COMMAND_REFUSED', 409);
  await refused(daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM), 'COMMAND_REFUSED', 409);
  const events = await daemonRequest<{ what: string }[]>(socket, 'GET', '/v1/events?limit=5&kind=event');
  assert.ok(events.some((e) => e.what.includes('operator defined VM web')));
  assert.match((await daemonRequest<{ pem: string }>(socket, 'GET', '/v1/pair/ca')).pem, /BEGIN CERTIFICATE/);
  assert.equal(await daemonRequest(socket, 'DELETE', '/v1/vms/web'), null);
  await refused(daemonRequest(socket, 'GET', '/v1/vms/web'), 'UNKNOWN_VM', 404);
});

test('bad input on the socket: the same checks and codes as the management API', async () => {
  const socket = await localApi(true);
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, memoryMiB: 1 }), 'INVALID_SPEC', 400);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/protection', { protection: 'max' }), 'INVALID_ARGUMENT', 400);
  await refused(daemonRequest(socket, 'POST', '/v1/host/maintenance', {}), 'INVALID_ARGUMENT', 400);
  await refused(daemonRequest(socket, 'GET', '/v1/events?limit=5000'), 'INVALID_ARGUMENT', 400);
  await refused(daemonRequest(socket, 'GET', '/v1/vms/%E0%A4%A'), 'INVALID_ARGUMENT', 400);
  await refused(daemonRequest(socket, 'GET', '/v1/nothing'), 'UNKNOWN_ENDPOINT', 404);
  await refused(daemonRequest(socket, 'PATCH', '/v1/vms'), 'METHOD_NOT_ALLOWED', 405);
  // Sessions, the event stream and metrics are the management API's own: root's socket needs none of them.
  for (const p of ['/v1/session', '/v1/events/stream', '/v1/openapi.json', '/metrics', '/api/v1/status']) await refused(daemonRequest(socket, 'GET', p), 'UNKNOWN_ENDPOINT', 404);
});

test('before pairing, commands answer NOT_PAIRED and reads answer', async () => {
  const socket = await localApi(false);
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/vms'), []);
  assert.equal((await daemonRequest<{ core: unknown }>(socket, 'GET', '/v1/status')).core, null);
  await refused(daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM), 'NOT_PAIRED', 503);
  await refused(daemonRequest(socket, 'POST', '/v1/host/repaired'), 'NOT_PAIRED', 503);
});
