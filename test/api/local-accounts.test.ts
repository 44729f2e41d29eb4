/**
 * The accounts routes on the local socket, where root on the host is its administrator: first-run setup,
 * users made, changed and removed without a session, the audit log read; every change through the socket
 * audited as `root@host1` from `local`, beside the management API's own entries, and a user made on the
 * socket logs in over HTTPS. Real servers: the socket and the management API over one user database.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { Cleanup } from '../support/cleanup.js';
import { SAMPLE_VM, startHarness, type Harness } from './harness.js';
import { startApiServer, type LocalAccounts } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { LockstepError, isLockstepError } from '../../src/util/errors.js';
import type { AuditEntry } from '../../src/audit/audit-log.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function withSocket(accounts?: (h: Harness) => LocalAccounts): Promise<{ h: Harness; socket: string }> {
  const h = await startHarness(cleanup);
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, accounts ? accounts(h) : { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { h, socket };
}

async function refused(p: Promise<unknown>, code: string, status: number): Promise<void> {
  await assert.rejects(p, (e) => isLockstepError(e) && e.code === code && e.fields['status'] === status);
}

test('root sets up, makes, changes and removes users on the socket; they log in over HTTPS', async () => {
  const { h, socket } = await withSocket();
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/setup'), { needed: true });
  const admin = await daemonRequest<{ name: string; role: string }>(socket, 'POST', '/v1/setup', { name: 'admin', password: 'a long passphrase' });
  assert.deepEqual([admin.name, admin.role], ['admin', 'administrator']);
  await refused(daemonRequest(socket, 'POST', '/v1/setup', { name: 'eve', password: 'another passphrase' }), 'SETUP_DONE', 409);
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/setup'), { needed: false });
  const token = await h.login('admin', 'a long passphrase');

  const olga = await daemonRequest<{ role: string }>(socket, 'POST', '/v1/users', { name: 'olga', password: 'olga-password-1', groups: ['read-only'] });
  assert.equal(olga.role, 'read-only');
  await refused(daemonRequest(socket, 'POST', '/v1/users', { name: 'olga', password: 'olga-password-1' }), 'USER_EXISTS', 409);
  await refused(daemonRequest(socket, 'POST', '/v1/users', { name: 'bob', password: 'short' }), 'INVALID_ARGUMENT', 400);
  assert.deepEqual((await daemonRequest<{ name: string }[]>(socket, 'GET', '/v1/users')).map((u) => u.name), ['admin', 'olga']);
  const olgaToken = await h.login('olga', 'olga-password-1');
  await daemonRequest(socket, 'PATCH', '/v1/users/olga', { password: 'olga-password-2' });
  assert.equal((await h.request('GET', '/api/v1/status', { token: olgaToken })).status, 401, "root's new password ends olga's sessions");
  await h.login('olga', 'olga-password-2');
  assert.equal(await daemonRequest(socket, 'DELETE', '/v1/users/olga'), null);
  await refused(daemonRequest(socket, 'DELETE', '/v1/users/admin'), 'LAST_ADMINISTRATOR', 409);
  await refused(daemonRequest(socket, 'GET', '/v1/users/olga'), 'UNKNOWN_USER', 404);
  assert.equal((await daemonRequest<{ name: string }[]>(socket, 'GET', '/v1/groups')).length, 3);

  // The socket's actions are in the audit log the management API shows, by root@host1 from local.
  const page = await h.request('GET', '/api/v1/audit?kind=user&user=root@host1', { token });
  assert.equal(page.status, 200);
  const mine = (page.body.entries as AuditEntry[]).map((e) => [e.operation, e.target, e.result, e.client, e.path]);
  assert.deepEqual(mine, [
    ['deleteUser', 'admin', 'failed', 'local', '/v1/users/admin'],
    ['deleteUser', 'olga', 'ok', 'local', '/v1/users/olga'],
    ['updateUser', 'olga', 'ok', 'local', '/v1/users/olga'],
    ['createUser', 'bob', 'failed', 'local', '/v1/users'],
    ['createUser', 'olga', 'failed', 'local', '/v1/users'],
    ['createUser', 'olga', 'ok', 'local', '/v1/users'],
    ['setup', 'eve', 'failed', 'local', '/v1/setup'],
    ['setup', 'admin', 'ok', 'local', '/v1/setup'],
  ]);
  // Reads are not audited, on the socket as on HTTPS; the admin's own login is there, by admin.
  const all = await daemonRequest<{ entries: AuditEntry[] }>(socket, 'GET', '/v1/audit?kind=user&limit=500');
  assert.ok(all.entries.every((e) => e.method !== 'GET'));
  assert.ok(all.entries.some((e) => e.operation === 'login' && e.user === 'admin' && e.client === '127.0.0.1'));
});

test('VM commands through the socket are audited like the API calls, refusals included', async () => {
  const { socket } = await withSocket();
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/migrate'), 'COMMAND_REFUSED', 409);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/nope/start'), 'UNKNOWN_VM', 404);
  const { entries } = await daemonRequest<{ entries: AuditEntry[] }>(socket, 'GET', '/v1/audit?kind=user');
  assert.deepEqual(
    entries.map((e) => [e.user, e.operation, e.target, e.result, e.status, e.code]),
    [
      ['root@host1', 'startVm', 'nope', 'failed', 404, 'UNKNOWN_VM'],
      ['root@host1', 'migrateVm', 'web', 'failed', 409, 'COMMAND_REFUSED'],
      ['root@host1', 'defineVm', 'web', 'ok', 201, null],
    ],
  );
  // The merged log also holds the core's own entries of that definition.
  const merged = await daemonRequest<{ entries: AuditEntry[] }>(socket, 'GET', '/v1/audit?limit=100');
  assert.ok(merged.entries.some((e) => e.kind === 'event' && (e.message ?? '').includes('operator defined VM web')));
  await refused(daemonRequest(socket, 'GET', '/v1/audit?user=Root'), 'INVALID_ARGUMENT', 400);
});

test('accounts that could not be opened: their routes answer why, the resources still work', async () => {
  const error = new LockstepError('USERS_DB', 'cannot open the user database: disk on fire', {});
  const { socket } = await withSocket(() => ({ error }));
  await assert.rejects(daemonRequest(socket, 'GET', '/v1/users'), (e) => isLockstepError(e) && e.code === 'USERS_DB' && /disk on fire/.test(e.message));
  await assert.rejects(daemonRequest(socket, 'GET', '/v1/audit'), (e) => isLockstepError(e) && e.code === 'USERS_DB');
  assert.equal((await daemonRequest<{ name: string }>(socket, 'POST', '/v1/vms', SAMPLE_VM)).name, 'web');
});
