/**
 * The management API over real HTTPS on 127.0.0.1, with a real core driver behind it (a lone host that
 * never has authority, so no QEMU starts): first-run setup, every endpoint's happy path checked against
 * the schema its OpenAPI entry documents, input validation, sessions and roles, rate limiting, and the
 * audit log of every mutating call.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createImage } from '../../src/storage/disk-image.js';
import { Cleanup } from '../support/cleanup.js';
import { makeIso } from '../support/iso.js';
import { ADMIN, SAMPLE_VM, startHarness, type Answer, type Harness } from './harness.js';
import { MANAGEMENT_ROUTES } from '../../src/api/management-routes.js';
import { managementOpenApi } from '../../src/api/management-server.js';
import { validate } from '../../src/api/schema.js';
import { isLockstepError } from '../../src/util/errors.js';
import type { Route } from '../../src/api/routes.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const routeById = new Map(MANAGEMENT_ROUTES.map((r) => [r.operationId, r as Route<unknown>]));

/** Asserts the answer is `operationId`'s documented success, its body valid against the documented schema. */
function expectDocumented(operationId: string, r: Answer, covered?: Set<string>): void {
  const route = routeById.get(operationId);
  assert.ok(route, `no route ${operationId}`);
  assert.equal(r.status, route.response.status, `${operationId} answered ${r.status}: ${r.text}`);
  if (route.response.contentType !== undefined) {
    // Not JSON: its documented type, and a body.
    assert.equal(r.headers['content-type'], route.response.contentType, `${operationId}'s content type`);
    assert.ok(r.bytes.length > 0, `${operationId} answers a body`);
  } else if (route.response.schema) {
    try {
      validate(route.response.schema, r.body, 'INVALID_ARGUMENT');
    } catch (e) {
      assert.fail(`${operationId}'s answer does not match its documented schema: ${isLockstepError(e) ? e.message : String(e)}`);
    }
  } else {
    assert.equal(r.text, '', `${operationId} answers no body`);
  }
  covered?.add(operationId);
}

function expectError(r: Answer, status: number, code: string, field?: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.equal(r.body?.error?.code, code, r.text);
  assert.equal(typeof r.body.error.message, 'string');
  if (field !== undefined) assert.equal(r.body.error.fields.field, field, r.text);
}

async function withAdmin(h: Harness): Promise<string> {
  const r = await h.request('POST', '/api/v1/setup', { body: ADMIN });
  assert.equal(r.status, 201, r.text);
  return h.login(ADMIN.name, ADMIN.password);
}

/** Makes a user in `groups` and logs it in. */
async function userWith(h: Harness, admin: string, name: string, groups: string[]): Promise<string> {
  const r = await h.request('POST', '/api/v1/users', { token: admin, body: { name, password: `${name}-password-1`, groups } });
  assert.equal(r.status, 201, r.text);
  return h.login(name, `${name}-password-1`);
}

/** A path for `route` with every parameter filled. */
function pathOf(route: Route<unknown>, value = 'nobody'): string {
  return `${route.root ? '' : '/api'}${route.path.replace(/\{[a-zA-Z]+\}/g, value)}`;
}

test('first run: setup makes the first administrator, once; there is no default account', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  expectDocumented('getSetup', await h.request('GET', '/api/v1/setup'));
  assert.deepEqual((await h.request('GET', '/api/v1/setup')).body, { needed: true });
  expectError(await h.request('POST', '/api/v1/session', { body: { name: 'admin', password: 'admin' } }), 401, 'LOGIN_FAILED');
  expectError(await h.request('POST', '/api/v1/setup', { body: { name: 'admin', password: 'short' } }), 400, 'INVALID_ARGUMENT', 'password');

  const made = await h.request('POST', '/api/v1/setup', { body: { ...ADMIN, fullName: 'The Admin' } });
  expectDocumented('setup', made);
  assert.equal(made.body.role, 'administrator');
  assert.deepEqual(made.body.groups, ['administrators']);

  expectError(await h.request('POST', '/api/v1/setup', { body: { name: 'mallory', password: 'mallory-password' } }), 409, 'SETUP_DONE');
  assert.deepEqual((await h.request('GET', '/api/v1/setup')).body, { needed: false });
  const token = await h.login(ADMIN.name, ADMIN.password);
  const users = await h.request('GET', '/api/v1/users', { token });
  assert.deepEqual(users.body.map((u: { name: string }) => u.name), ['admin'], 'the refused setup made no user');
  const audit = await h.request('GET', '/api/v1/audit?kind=user&text=setup', { token });
  assert.deepEqual(
    audit.body.entries.map((e: { operation: string; result: string; code: string | null }) => [e.operation, e.result, e.code]),
    [
      ['setup', 'failed', 'SETUP_DONE'],
      ['setup', 'ok', null],
      ['setup', 'failed', 'INVALID_ARGUMENT'],
    ],
  );
});

test('every endpoint answers its happy path as its OpenAPI entry documents', async () => {
  // A webhook to a closed port: "send test" answers its failure (test/api/preferences-api.test.ts has real receivers).
  const h = await startHarness(cleanup, { config: () => ({ notifications: { webhooks: [{ url: 'http://127.0.0.1:9/hook' }] } }) });
  const covered = new Set<string>();
  const setup = await h.request('GET', '/api/v1/setup');
  expectDocumented('getSetup', setup, covered);
  expectDocumented('setup', await h.request('POST', '/api/v1/setup', { body: ADMIN }), covered);

  const login = await h.request('POST', '/api/v1/session', { body: { name: ADMIN.name, password: ADMIN.password } });
  expectDocumented('login', login, covered);
  const cookie = String(login.headers['set-cookie']);
  assert.match(cookie, new RegExp(`^lockstep_session=${login.body.token};`));
  for (const attr of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/api']) assert.ok(cookie.includes(attr), `cookie has ${attr}: ${cookie}`);
  const token = login.body.token as string;
  assert.equal(login.headers['cache-control'], 'no-store');

  expectDocumented('getSession', await h.request('GET', '/api/v1/session', { token }), covered);
  // The cookie alone is a session too (the browser's way).
  const byCookie = await h.request('GET', '/api/v1/session', { headers: { cookie: `other=1; lockstep_session=${token}` } });
  assert.equal(byCookie.body.user.name, 'admin');
  expectDocumented('getOpenApi', await h.request('GET', '/api/openapi.json'), covered);

  // Resources, through the real core.
  expectDocumented('getStatus', await h.request('GET', '/api/v1/status', { token }), covered);
  expectDocumented('listVms', await h.request('GET', '/api/v1/vms', { token }), covered);
  const defined = await h.request('POST', '/api/v1/vms', { token, body: SAMPLE_VM });
  expectDocumented('defineVm', defined, covered);
  assert.equal(defined.body.name, 'web');
  assert.equal(defined.body.owner, 'host1');
  expectDocumented('getVm', await h.request('GET', '/api/v1/vms/web', { token }), covered);
  const volumes = await h.request('GET', '/api/v1/volumes', { token });
  expectDocumented('listVolumes', volumes, covered);
  assert.deepEqual(volumes.body.map((v: { name: string; storageGroup: string }) => [v.name, v.storageGroup]), [['web', 'default']]);
  expectDocumented('getVolume', await h.request('GET', '/api/v1/volumes/web', { token }), covered);
  expectDocumented('listStorageGroups', await h.request('GET', '/api/v1/storage-groups', { token }), covered);
  const storageGroup = await h.request('GET', '/api/v1/storage-groups/default', { token });
  expectDocumented('getStorageGroup', storageGroup, covered);
  assert.deepEqual(storageGroup.body.volumes.map((v: { name: string }) => v.name), ['web']);
  // A virtual CD: uploaded raw (an ISO 9660 image made by genisoimage), read, deleted (test/api/vcds-api.test.ts has the rest).
  const iso = await readFile(await makeIso(h.dir, 'install'));
  expectDocumented('uploadVcd', await h.request('PUT', '/api/v1/vcds/install', { token, headers: { 'content-type': 'application/octet-stream' }, raw: iso }), covered);
  expectDocumented('listVcds', await h.request('GET', '/api/v1/vcds', { token }), covered);
  expectDocumented('getVcd', await h.request('GET', '/api/v1/vcds/install', { token }), covered);
  const disc = { ...SAMPLE_VM, name: 'disc', protection: 'none', cdrom: {}, nics: [{ mac: '52:54:00:12:34:57', address: '10.10.3.51' }] };
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: disc })).status, 201);
  const inserted = await h.request('POST', '/api/v1/vms/disc/cdrom', { token, body: { vcd: 'install' } });
  expectDocumented('insertCdrom', inserted, covered);
  assert.equal(inserted.body.hardware.cdrom.medium.vcd, 'install');
  expectError(await h.request('DELETE', '/api/v1/vcds/install', { token }), 409, 'VCD_IN_USE');
  expectDocumented('ejectCdrom', await h.request('DELETE', '/api/v1/vms/disc/cdrom', { token }), covered);
  assert.equal((await h.request('DELETE', '/api/v1/vms/disc', { token })).status, 204);
  expectDocumented('deleteVcd', await h.request('DELETE', '/api/v1/vcds/install', { token }), covered);
  // Snapshots and images (test/api/snapshots-api.test.ts has the rest): a raw image imported, a stopped VM's
  // snapshot taken from its volume, each read, exported and deleted.
  const imported = await h.request('POST', '/api/v1/images', { token, headers: { 'content-type': 'application/octet-stream' }, raw: Buffer.alloc(64 * 1024, 7) });
  expectDocumented('importImage', imported, covered);
  await mkdir(path.join(h.dir, 'disks'), { recursive: true });
  await createImage(path.join(h.dir, 'disks', 'web.qcow2'), SAMPLE_VM.diskMiB, 'qcow2');
  const taken = await h.request('POST', '/api/v1/vms/web/snapshots', { token, body: { description: 'tested' } });
  expectDocumented('takeSnapshot', taken, covered);
  expectDocumented('listSnapshots', await h.request('GET', '/api/v1/snapshots', { token }), covered);
  expectDocumented('getSnapshot', await h.request('GET', `/api/v1/snapshots/${taken.body.id}`, { token }), covered);
  const exported = await h.request('GET', `/api/v1/snapshots/${imported.body.id}/image`, { token });
  assert.equal(exported.status, routeById.get('exportSnapshot')!.response.status);
  assert.equal(exported.headers['content-type'], 'application/octet-stream');
  assert.equal(exported.headers['content-length'], String(64 * 1024));
  covered.add('exportSnapshot');
  expectDocumented('deleteSnapshot', await h.request('DELETE', `/api/v1/snapshots/${taken.body.id}`, { token }), covered);
  assert.equal((await h.request('DELETE', `/api/v1/snapshots/${imported.body.id}`, { token })).status, 204);
  expectDocumented('listNetworks', await h.request('GET', '/api/v1/networks', { token }), covered);
  expectDocumented('getHostSensors', await h.request('GET', '/api/v1/host/sensors', { token }), covered);
  expectDocumented('getHostHealth', await h.request('GET', '/api/v1/host/health', { token }), covered);
  const started = await h.request('POST', '/api/v1/vms/web/start', { token });
  expectDocumented('startVm', started, covered);
  assert.equal(started.body.desired, 'running');
  const stopped = await h.request('POST', '/api/v1/vms/web/stop', { token });
  expectDocumented('stopVm', stopped, covered);
  assert.equal(stopped.body.desired, 'stopped');
  // The lone host runs nothing: a restart is a start (the lab's vm-cli test restarts a running VM).
  const restarted = await h.request('POST', '/api/v1/vms/web/restart', { token });
  expectDocumented('restartVm', restarted, covered);
  assert.equal(restarted.body.desired, 'running');
  assert.equal((await h.request('POST', '/api/v1/vms/web/stop', { token })).status, 200);
  const prot = await h.request('POST', '/api/v1/vms/web/protection', { token, body: { protection: 'none' } });
  expectDocumented('setVmProtection', prot, covered);
  assert.equal(prot.body.protection, 'none');
  // Into and out of FT, stopped or running (a running VM's run is handed over, or begins: docs/ft.md).
  const ft = await h.request('POST', '/api/v1/vms/web/protection', { token, body: { protection: 'ft' } });
  assert.equal(ft.status, 200, JSON.stringify(ft.body));
  assert.equal(ft.body.protection, 'ft');
  assert.equal((await h.request('POST', '/api/v1/vms/web/start', { token })).body.desired, 'running');
  assert.equal((await h.request('POST', '/api/v1/vms/web/protection', { token, body: { protection: 'ha' } })).body.protection, 'ha');
  assert.equal((await h.request('GET', '/api/v1/vms/web', { token })).body.protection, 'ha');
  assert.equal((await h.request('POST', '/api/v1/vms/web/stop', { token })).body.desired, 'stopped');
  assert.equal((await h.request('POST', '/api/v1/vms/web/protection', { token, body: { protection: 'none' } })).body.protection, 'none');
  // A lone host has no peer to migrate to or to hand VMs to in maintenance: the core's verdict comes back.
  const migrate = await h.request('POST', '/api/v1/vms/web/migrate', { token });
  expectError(migrate, 409, 'COMMAND_REFUSED');
  covered.add('migrateVm');
  expectError(await h.request('POST', '/api/v1/host/maintenance', { token, body: { on: true } }), 409, 'COMMAND_REFUSED');
  expectDocumented('setMaintenance', await h.request('POST', '/api/v1/host/maintenance', { token, body: { on: false } }), covered);
  expectDocumented('markRepaired', await h.request('POST', '/api/v1/host/repaired', { token }), covered);
  const ca = await h.request('GET', '/api/v1/pair/ca', { token });
  expectDocumented('getPairCa', ca, covered);
  assert.match(ca.body.pem, /^-----BEGIN CERTIFICATE-----/);
  const events = await h.request('GET', '/api/v1/events?limit=50&kind=event', { token });
  expectDocumented('listEvents', events, covered);
  assert.ok(events.body.some((e: { what: string }) => e.what.includes('operator defined VM web')), JSON.stringify(events.body));
  expectDocumented('getPreferences', await h.request('GET', '/api/v1/preferences', { token }), covered);
  expectDocumented('listNotifications', await h.request('GET', '/api/v1/notifications', { token }), covered);
  const tested = await h.request('POST', '/api/v1/notifications/test', { token });
  expectDocumented('testNotifications', tested, covered);
  assert.deepEqual([tested.body.delivered, tested.body.failed, tested.body.results[0].outcome.step], [0, 1, 'connect']);
  expectDocumented('testNotification', await h.request('POST', '/api/v1/notifications/webhook:1/test', { token }), covered);
  expectDocumented('setOwnerPreference', await h.request('PUT', '/api/v1/preferences/owner', { token, body: { name: 'Example Manufacturing' } }), covered);
  expectDocumented('setResyncPreference', await h.request('PUT', '/api/v1/preferences/resync', { token, body: { maxMiBps: 100 } }), covered);
  const notifications = (await h.request('GET', '/api/v1/preferences', { token })).body.notificationsConfig;
  expectDocumented('setNotificationsPreference', await h.request('PUT', '/api/v1/preferences/notifications', { token, body: notifications }), covered);
  await h.history.sampleNow();
  expectDocumented('getHostHistory', await h.request('GET', '/api/v1/host/history', { token }), covered);
  expectDocumented('getVmHistory', await h.request('GET', '/api/v1/vms/web/history', { token }), covered);
  expectDocumented('getVmConsoleLog', await h.request('GET', '/api/v1/vms/web/console-log?bytes=4096', { token }), covered);
  // What is in it: test/api/support-bundle-api.test.ts.
  expectDocumented('makeSupportBundle', await h.request('POST', '/api/v1/support/bundle', { token }), covered);
  expectDocumented('removeVm', await h.request('DELETE', '/api/v1/vms/web', { token }), covered);
  expectError(await h.request('GET', '/api/v1/vms/web', { token }), 404, 'UNKNOWN_VM');
  // Last, with no VM left to start: the operator asserts the (absent) peer is dead.
  const takeover = await h.request('POST', '/api/v1/host/force-takeover', { token });
  expectDocumented('forceTakeover', takeover, covered);
  assert.equal(takeover.body.authority, 'tiebreak');

  // Users and groups.
  const group = await h.request('POST', '/api/v1/groups', { token, body: { name: 'operators', role: 'platform-manager', description: 'night shift' } });
  expectDocumented('createGroup', group, covered);
  assert.deepEqual(group.body, { name: 'operators', role: 'platform-manager', description: 'night shift', builtin: false, members: [] });
  const groups = await h.request('GET', '/api/v1/groups', { token });
  expectDocumented('listGroups', groups, covered);
  assert.deepEqual(groups.body.map((g: { name: string }) => g.name), ['administrators', 'operators', 'platform-managers', 'read-only']);
  expectDocumented('getGroup', await h.request('GET', '/api/v1/groups/operators', { token }), covered);
  const regrouped = await h.request('PATCH', '/api/v1/groups/operators', { token, body: { role: 'read-only', description: 'day shift' } });
  expectDocumented('updateGroup', regrouped, covered);
  assert.equal(regrouped.body.role, 'read-only');

  const olga = await h.request('POST', '/api/v1/users', { token, body: { name: 'olga', password: 'olga-password-1', fullName: 'Olga', groups: ['operators'] } });
  expectDocumented('createUser', olga, covered);
  assert.equal(olga.body.role, 'read-only');
  expectDocumented('listUsers', await h.request('GET', '/api/v1/users', { token }), covered);
  expectDocumented('getUser', await h.request('GET', '/api/v1/users/olga', { token }), covered);
  const patched = await h.request('PATCH', '/api/v1/users/olga', { token, body: { fullName: 'Olga O.', groups: ['operators', 'platform-managers'] } });
  expectDocumented('updateUser', patched, covered);
  assert.equal(patched.body.role, 'platform-manager');
  assert.equal(patched.body.fullName, 'Olga O.');

  const olgaToken = await h.login('olga', 'olga-password-1');
  expectDocumented('changeOwnPassword', await h.request('POST', '/api/v1/session/password', { token: olgaToken, body: { currentPassword: 'olga-password-1', newPassword: 'olga-password-2' } }), covered);
  expectError(await h.request('POST', '/api/v1/session', { body: { name: 'olga', password: 'olga-password-1' } }), 401, 'LOGIN_FAILED');
  await h.login('olga', 'olga-password-2');
  const logout = await h.request('DELETE', '/api/v1/session', { token: olgaToken });
  expectDocumented('logout', logout, covered);
  assert.match(String(logout.headers['set-cookie']), /^lockstep_session=; Path=\/api; Max-Age=0;/);
  expectError(await h.request('GET', '/api/v1/session', { token: olgaToken }), 401, 'NOT_AUTHENTICATED');

  expectDocumented('deleteUser', await h.request('DELETE', '/api/v1/users/olga', { token }), covered);
  expectError(await h.request('GET', '/api/v1/users/olga', { token }), 404, 'UNKNOWN_USER');
  expectDocumented('deleteGroup', await h.request('DELETE', '/api/v1/groups/operators', { token }), covered);
  expectError(await h.request('GET', '/api/v1/groups/operators', { token }), 404, 'UNKNOWN_GROUP');

  const audit = await h.request('GET', '/api/v1/audit', { token });
  expectDocumented('listAudit', audit, covered);
  // The live ones: the stream is a WebSocket (test/api/event-stream.test.ts), metrics are text (metrics-http.test.ts).
  expectError(await h.request('GET', '/api/v1/events/stream', { token }), 426, 'UPGRADE_REQUIRED');
  covered.add('streamEvents');
  const metrics = await h.request('GET', '/metrics', { token });
  assert.equal(metrics.status, 200, metrics.text);
  assert.match(String(metrics.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  covered.add('getMetrics');

  assert.deepEqual([...MANAGEMENT_ROUTES.map((r) => r.operationId)].filter((id) => !covered.has(id)), [], 'every route was called');
});

test('bad input answers 4xx with a stable code naming the field, never 5xx', async () => {
  const h = await startHarness(cleanup);
  const token = await withAdmin(h);
  const { nics: _nics, ...noNic } = SAMPLE_VM;
  const nic = SAMPLE_VM.nics[0]!;
  const cases: [string, string, { body?: unknown; raw?: string; headers?: Record<string, string> }, number, string, string?][] = [
    ['POST', '/api/v1/vms', { body: noNic }, 400, 'INVALID_SPEC', 'nics'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, nics: [{ ...nic, mac: '01:00:5e:00:00:01' }] } }, 400, 'INVALID_SPEC', 'nics[0].mac'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, nics: [] } }, 400, 'INVALID_SPEC', 'nics'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, nics: [1, 2, 3, 4, 5].map((i) => ({ mac: `52:54:00:00:00:0${i}`, address: `10.0.0.${i}` })) } }, 400, 'INVALID_SPEC', 'nics'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, nics: [nic, { ...nic, address: '10.10.3.99' }] } }, 400, 'INVALID_SPEC', 'nics[1].mac'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, nics: [nic, { mac: '52:54:00:12:34:99', address: nic.address }] } }, 400, 'INVALID_SPEC', 'nics[1].address'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, nics: [{ ...nic, speed: 10 }] } }, 400, 'INVALID_SPEC', 'nics[0].speed'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, vcpus: 0 } }, 400, 'INVALID_SPEC', 'vcpus'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, vcpus: '1' } }, 400, 'INVALID_SPEC', 'vcpus'],
    ['POST', '/api/v1/vms', { body: { ...SAMPLE_VM, extra: true } }, 400, 'INVALID_SPEC', 'extra'],
    ['POST', '/api/v1/vms', { body: [SAMPLE_VM] }, 400, 'INVALID_SPEC', ''],
    ['POST', '/api/v1/vms', {}, 400, 'INVALID_SPEC', ''],
    ['POST', '/api/v1/vms', { raw: '{"name":' }, 400, 'INVALID_ARGUMENT', ''],
    ['POST', '/api/v1/vms', { raw: JSON.stringify(SAMPLE_VM), headers: { 'content-type': 'text/plain' } }, 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['POST', '/api/v1/vms/web/protection', { body: { protection: 'max' } }, 400, 'INVALID_ARGUMENT', 'protection'],
    ['POST', '/api/v1/host/maintenance', { body: { on: 'yes' } }, 400, 'INVALID_ARGUMENT', 'on'],
    ['GET', '/api/v1/events?limit=0', {}, 400, 'INVALID_ARGUMENT', 'limit'],
    ['GET', '/api/v1/events?limit=ten', {}, 400, 'INVALID_ARGUMENT', 'limit'],
    ['GET', '/api/v1/events?limit=1&limit=2', {}, 400, 'INVALID_ARGUMENT', 'limit'],
    ['GET', '/api/v1/events?color=red', {}, 400, 'INVALID_ARGUMENT', 'color'],
    ['GET', '/api/v1/audit?before=garbage', {}, 400, 'INVALID_ARGUMENT', 'before'],
    ['GET', '/api/v1/audit?kind=secret', {}, 400, 'INVALID_ARGUMENT', 'kind'],
    ['POST', '/api/v1/users', { body: { name: 'Bad Name', password: 'long-enough-pw' } }, 400, 'INVALID_ARGUMENT', 'name'],
    ['POST', '/api/v1/users', { body: { name: 'bob', password: 'short' } }, 400, 'INVALID_ARGUMENT', 'password'],
    ['POST', '/api/v1/users', { body: { name: 'bob', password: 'long-enough-pw', groups: ['read-only', 'read-only'] } }, 400, 'INVALID_ARGUMENT', 'groups'],
    ['POST', '/api/v1/users', { body: { name: 'bob', password: 'long-enough-pw', groups: ['nope'] } }, 404, 'UNKNOWN_GROUP'],
    ['POST', '/api/v1/groups', { body: { name: 'g', role: 'root' } }, 400, 'INVALID_ARGUMENT', 'role'],
    ['GET', '/api/v1/users/Not-A-Name', {}, 400, 'INVALID_ARGUMENT', 'name'],
    ['GET', '/api/v1/users/%E0%A4%A', {}, 400, 'INVALID_ARGUMENT', 'name'],
    ['POST', '/api/v1/vms', { raw: `{"a":"${'x'.repeat(1024 * 1024)}"}` }, 413, 'PAYLOAD_TOO_LARGE'],
    ['GET', '/api/v1/nothing', {}, 404, 'UNKNOWN_ENDPOINT'],
    ['GET', '/elsewhere', {}, 404, 'UNKNOWN_ENDPOINT'],
    ['PUT', '/api/v1/vms', {}, 405, 'METHOD_NOT_ALLOWED'],
  ];
  for (const [method, path, opts, status, code, field] of cases) {
    const r = await h.request(method, path, { token, ...opts });
    expectError(r, status, code, field);
  }
  const notAllowed = await h.request('DELETE', '/api/v1/vms', { token });
  assert.equal(notAllowed.headers['allow'], 'GET, POST');
  // Nothing bad was defined.
  assert.deepEqual((await h.request('GET', '/api/v1/vms', { token })).body, []);
});

test("a VM with several NICs: defined and shown with all of them; another VM's MAC or address is NIC_IN_USE; the one nic of before still defines a VM", async () => {
  const h = await startHarness(cleanup);
  const token = await withAdmin(h);
  const nics = [
    { mac: '52:54:00:12:34:60', address: '10.10.3.60' },
    { mac: '52:54:00:12:34:61', address: '10.10.3.61' },
  ];
  const defined = await h.request('POST', '/api/v1/vms', { token, body: { ...SAMPLE_VM, name: 'duo', nics: nics.map((n) => ({ ...n, mac: n.mac.toUpperCase() })) } });
  assert.equal(defined.status, 201, defined.text);
  assert.deepEqual(defined.body.hardware.nics, nics, 'in order, MACs in lower case');
  assert.equal('nic' in defined.body.hardware, false, 'no one nic for a version that would run it with only that one');
  assert.deepEqual((await h.request('GET', '/api/v1/vms/duo', { token })).body.hardware.nics, nics);
  const clash = (n: { mac: string; address: string }) => h.request('POST', '/api/v1/vms', { token, body: { ...SAMPLE_VM, name: 'trio', nics: [{ mac: '52:54:00:12:34:70', address: '10.10.3.70' }, n] } });
  const byMac = await clash({ mac: '52:54:00:12:34:61', address: '10.10.3.71' });
  expectError(byMac, 409, 'NIC_IN_USE', 'nics[1].mac');
  assert.equal(byMac.body.error.fields.vm, 'duo');
  expectError(await clash({ mac: '52:54:00:12:34:71', address: '10.10.3.60' }), 409, 'NIC_IN_USE', 'nics[1].address');
  assert.equal((await h.request('GET', '/api/v1/vms/trio', { token })).status, 404, 'nothing defined');
  // As a client from before several NICs sends it: one nic, stored with nics and nic.
  const { nics: _nics, ...legacy } = SAMPLE_VM;
  const one = await h.request('POST', '/api/v1/vms', { token, body: { ...legacy, nic: { mac: '52:54:00:12:34:80', address: '10.10.3.80' } } });
  assert.equal(one.status, 201, one.text);
  assert.deepEqual([one.body.hardware.nics, one.body.hardware.nic], [[{ mac: '52:54:00:12:34:80', address: '10.10.3.80' }], { mac: '52:54:00:12:34:80', address: '10.10.3.80' }]);
});

test('every route but the public ones needs a session; every role-bound route checks the role', async () => {
  const h = await startHarness(cleanup);
  const admin = await withAdmin(h);
  const reader = await userWith(h, admin, 'rita', ['read-only']);
  const manager = await userWith(h, admin, 'mark', ['platform-managers']);
  const nobody = await userWith(h, admin, 'nora', []);
  const tokens = { 'read-only': reader, 'platform-manager': manager } as const;
  const ranks = ['read-only', 'platform-manager', 'administrator'];
  let checked = 0;
  for (const route of MANAGEMENT_ROUTES) {
    const path = pathOf(route as Route<unknown>);
    if (route.access === 'public') continue;
    expectError(await h.request(route.method, path), 401, 'NOT_AUTHENTICATED');
    expectError(await h.request(route.method, path, { token: 'not-a-token' }), 401, 'NOT_AUTHENTICATED');
    expectError(await h.request(route.method, path, { headers: { authorization: 'Basic YWRtaW46YWRtaW4=' } }), 401, 'NOT_AUTHENTICATED');
    if (route.access === 'session') continue;
    expectError(await h.request(route.method, path, { token: nobody }), 403, 'FORBIDDEN');
    for (const [role, token] of Object.entries(tokens)) {
      const r = await h.request(route.method, path, { token });
      if (ranks.indexOf(role) < ranks.indexOf(route.access)) {
        expectError(r, 403, 'FORBIDDEN');
        assert.equal(r.body.error.fields.needs, route.access);
      } else {
        assert.notEqual(r.status, 401, `${route.operationId} as ${role}`);
        assert.notEqual(r.status, 403, `${route.operationId} as ${role}: ${r.text}`);
      }
      checked++;
    }
  }
  assert.ok(checked > 20);
  // What a role can do, for real.
  assert.equal((await h.request('GET', '/api/v1/status', { token: reader })).status, 200);
  expectError(await h.request('POST', '/api/v1/vms', { token: reader, body: SAMPLE_VM }), 403, 'FORBIDDEN');
  assert.equal((await h.request('POST', '/api/v1/vms', { token: manager, body: SAMPLE_VM })).status, 201);
  expectError(await h.request('GET', '/api/v1/users', { token: manager }), 403, 'FORBIDDEN');
  // Authentication comes before validation: a caller without the role learns nothing about the input.
  expectError(await h.request('POST', '/api/v1/users', { token: manager, body: { nonsense: 1 } }), 403, 'FORBIDDEN');
  expectError(await h.request('POST', '/api/v1/vms', { body: { nonsense: 1 } }), 401, 'NOT_AUTHENTICATED');
  // A role change applies to live sessions at once.
  await h.request('PATCH', '/api/v1/users/rita', { token: admin, body: { groups: ['platform-managers'] } });
  assert.equal((await h.request('POST', '/api/v1/vms/web/stop', { token: reader })).status, 200);
});

test('sessions end on logout, when idle, at their absolute limit, and with a password change', async () => {
  const h = await startHarness(cleanup, { withDriver: false, idleMs: 60_000, maxMs: 300_000 });
  const admin = await withAdmin(h);
  const status = (token: string): Promise<Answer> => h.request('GET', '/api/v1/session', { token });

  // Idle: each request renews the session; a minute of silence ends it.
  const a = await h.login(ADMIN.name, ADMIN.password);
  h.clock.advance(59_000);
  assert.equal((await status(a)).status, 200);
  h.clock.advance(59_000);
  assert.equal((await status(a)).status, 200);
  h.clock.advance(60_000);
  const idle = await status(a);
  expectError(idle, 401, 'NOT_AUTHENTICATED');
  assert.match(idle.body.error.message, /expired/);
  expectError(await status(a), 401, 'NOT_AUTHENTICATED');

  // Absolute: however busy, five minutes after login it is over.
  const b = await h.login(ADMIN.name, ADMIN.password);
  for (let i = 0; i < 5; i++) {
    h.clock.advance(50_000);
    assert.equal((await status(b)).status, 200, `after ${(i + 1) * 50} s`);
  }
  h.clock.advance(50_000);
  expectError(await status(b), 401, 'NOT_AUTHENTICATED');

  // Logout ends only that session.
  const c = await h.login(ADMIN.name, ADMIN.password);
  const d = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('DELETE', '/api/v1/session', { token: c })).status, 204);
  expectError(await status(c), 401, 'NOT_AUTHENTICATED');
  assert.equal((await status(d)).status, 200);

  // One's own new password ends one's other sessions, not this one; an administrator's reset ends them all.
  const e = await h.login(ADMIN.name, ADMIN.password);
  expectError(await h.request('POST', '/api/v1/session/password', { token: e, body: { currentPassword: 'wrong password', newPassword: 'another long one' } }), 403, 'WRONG_PASSWORD');
  assert.equal((await h.request('POST', '/api/v1/session/password', { token: e, body: { currentPassword: ADMIN.password, newPassword: 'another long one' } })).status, 204);
  assert.equal((await status(e)).status, 200);
  expectError(await status(d), 401, 'NOT_AUTHENTICATED');
  expectError(await status(admin), 401, 'NOT_AUTHENTICATED');
  const victim = await userWith(h, e, 'vic', ['read-only']);
  assert.equal((await h.request('PATCH', '/api/v1/users/vic', { token: e, body: { password: 'reset-by-admin' } })).status, 200);
  expectError(await status(victim), 401, 'NOT_AUTHENTICATED');
  await h.login('vic', 'reset-by-admin');
});

test('the last administrator and the built-in groups cannot be removed', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const admin = await withAdmin(h);
  expectError(await h.request('DELETE', '/api/v1/users/admin', { token: admin }), 409, 'LAST_ADMINISTRATOR');
  expectError(await h.request('PATCH', '/api/v1/users/admin', { token: admin, body: { groups: ['read-only'] } }), 409, 'LAST_ADMINISTRATOR');
  expectError(await h.request('DELETE', '/api/v1/groups/administrators', { token: admin }), 409, 'BUILTIN_GROUP');
  expectError(await h.request('PATCH', '/api/v1/groups/administrators', { token: admin, body: { role: 'read-only' } }), 409, 'BUILTIN_GROUP');
  expectError(await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'admin', password: 'long-enough-pw' } }), 409, 'USER_EXISTS');
  expectError(await h.request('POST', '/api/v1/groups', { token: admin, body: { name: 'read-only', role: 'read-only' } }), 409, 'GROUP_EXISTS');
  // With a second administrator (through a custom group) the first may go.
  await h.request('POST', '/api/v1/groups', { token: admin, body: { name: 'admins2', role: 'administrator' } });
  const second = await userWith(h, admin, 'second', ['admins2']);
  assert.equal((await h.request('DELETE', '/api/v1/users/admin', { token: admin })).status, 204);
  expectError(await h.request('GET', '/api/v1/session', { token: admin }), 401, 'NOT_AUTHENTICATED');
  expectError(await h.request('PATCH', '/api/v1/groups/admins2', { token: second, body: { role: 'read-only' } }), 409, 'LAST_ADMINISTRATOR');
  expectError(await h.request('DELETE', '/api/v1/groups/admins2', { token: second }), 409, 'LAST_ADMINISTRATOR');
  assert.equal((await h.request('GET', '/api/v1/groups/admins2', { token: second })).body.role, 'administrator');
});

test('failed logins are limited per user and per address: 429 with Retry-After, then a doubling window', async () => {
  const h = await startHarness(cleanup, { withDriver: false, limiter: { freeFailures: 5, baseLockMs: 60_000, maxLockMs: 600_000, forgetMs: 3600_000, maxKeys: 100 } });
  await withAdmin(h);
  const attempt = (name: string, password: string): Promise<Answer> => h.request('POST', '/api/v1/session', { body: { name, password } });
  for (let i = 0; i < 5; i++) expectError(await attempt('admin', `guess ${i}`), 401, 'LOGIN_FAILED');
  const limited = await attempt('admin', 'guess 5');
  expectError(limited, 429, 'RATE_LIMITED');
  assert.equal(limited.headers['retry-after'], '60');
  // Closed means closed: the right password is not even checked.
  expectError(await attempt('admin', ADMIN.password), 429, 'RATE_LIMITED');
  h.clock.advance(61_000);
  // Open again: one more failure closes it for twice as long.
  expectError(await attempt('admin', 'guess 6'), 401, 'LOGIN_FAILED');
  const longer = await attempt('admin', ADMIN.password);
  expectError(longer, 429, 'RATE_LIMITED');
  assert.equal(longer.headers['retry-after'], '120');
  h.clock.advance(121_000);
  await h.login(ADMIN.name, ADMIN.password);
  // The success cleared the user's count, not the address's (six failures within the hour): one more closes it.
  expectError(await attempt('admin', 'again'), 401, 'LOGIN_FAILED');
  expectError(await attempt('admin', ADMIN.password), 429, 'RATE_LIMITED');
  // Spraying one guess over many names is stopped by the address's count.
  h.clock.advance(3600_000 * 2);
  for (let i = 0; i < 5; i++) expectError(await attempt(`user${i}`, 'whatever pw'), 401, 'LOGIN_FAILED');
  expectError(await attempt('user9', 'whatever pw'), 429, 'RATE_LIMITED');
  expectError(await attempt('admin', ADMIN.password), 429, 'RATE_LIMITED');
  // Many attempts at once are counted before any is checked: no more than the free ones get through.
  h.clock.advance(3600_000 * 2);
  const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt('admin', `burst ${i}`)));
  assert.equal(burst.filter((r) => r.status === 401).length, 5);
  assert.equal(burst.filter((r) => r.status === 429).length, 15);
});

test('every mutating call is in the audit log with who, what, target, result and address; none can be changed or removed', async () => {
  const h = await startHarness(cleanup);
  const admin = await withAdmin(h);
  expectError(await h.request('POST', '/api/v1/session', { body: { name: 'admin', password: 'not the password' } }), 401, 'LOGIN_FAILED');
  await h.request('POST', '/api/v1/vms', { token: admin, body: SAMPLE_VM });
  await h.request('POST', '/api/v1/vms/web/start', { token: admin });
  const reader = await userWith(h, admin, 'rita', ['read-only']);
  await h.request('POST', '/api/v1/vms/web/stop', { token: reader });
  await h.request('DELETE', '/api/v1/vms/web');
  await h.request('DELETE', '/api/v1/users/rita', { token: admin });
  await h.request('GET', '/api/v1/vms', { token: admin });

  const all = await h.request('GET', '/api/v1/audit?kind=user&limit=500', { token: admin });
  const rows = all.body.entries.map((e: Record<string, unknown>) => [e['operation'], e['user'], e['target'], e['result'], e['status'], e['code']]);
  assert.deepEqual(rows.reverse(), [
    ['setup', 'admin', 'admin', 'ok', 201, null],
    ['login', 'admin', 'admin', 'ok', 201, null],
    ['login', null, 'admin', 'denied', 401, 'LOGIN_FAILED'],
    ['defineVm', 'admin', 'web', 'ok', 201, null],
    ['startVm', 'admin', 'web', 'ok', 200, null],
    ['createUser', 'admin', 'rita', 'ok', 201, null],
    ['login', 'rita', 'rita', 'ok', 201, null],
    ['stopVm', 'rita', 'web', 'denied', 403, 'FORBIDDEN'],
    ['removeVm', null, 'web', 'denied', 401, 'NOT_AUTHENTICATED'],
    ['deleteUser', 'admin', 'rita', 'ok', 204, null],
  ]);
  for (const e of all.body.entries) {
    assert.equal(e.client, '127.0.0.1');
    assert.equal(e.host, 'host1');
    assert.equal(e.kind, 'user');
    assert.ok(Math.abs(e.wallMs - h.clock.now) < 1000);
  }
  assert.ok(!all.text.includes(ADMIN.password) && !all.text.includes('rita-password-1'), 'no password is ever logged');

  // Together with the platform's own events, newest first, and filters.
  const merged = await h.request('GET', '/api/v1/audit?limit=500', { token: admin });
  const kinds = new Set(merged.body.entries.map((e: { kind: string }) => e.kind));
  assert.ok(kinds.has('user') && kinds.has('event'), [...kinds].join());
  assert.ok(merged.body.entries.some((e: { kind: string; message: string }) => e.kind === 'event' && e.message.includes('operator defined VM web')));
  const times = merged.body.entries.map((e: { wallMs: number }) => e.wallMs);
  assert.deepEqual(times, [...times].sort((a: number, b: number) => b - a));
  const ritas = await h.request('GET', '/api/v1/audit?user=rita', { token: admin });
  assert.deepEqual(ritas.body.entries.map((e: { operation: string }) => e.operation), ['stopVm', 'login']);
  const webs = await h.request('GET', '/api/v1/audit?text=WEB&kind=user', { token: admin });
  assert.deepEqual(webs.body.entries.map((e: { operation: string }) => e.operation), ['removeVm', 'stopVm', 'startVm', 'defineVm']);
  // Paging: small pages, following next, give every entry once.
  const seen: string[] = [];
  let cursor: string | null = '';
  for (let pages = 0; cursor !== null; pages++) {
    assert.ok(pages < 100);
    const page: Answer = await h.request('GET', `/api/v1/audit?limit=3${cursor ? `&before=${cursor}` : ''}`, { token: admin });
    assert.equal(page.status, 200, page.text);
    seen.push(...page.body.entries.map((e: { id: string }) => e.id));
    cursor = page.body.next;
  }
  assert.deepEqual(seen, merged.body.entries.map((e: { id: string }) => e.id));

  // No way to change or remove an entry.
  const before = (await h.request('GET', '/api/v1/audit?limit=500', { token: admin })).body.entries;
  const id = before[0].id as string;
  for (const [method, path] of [
    ['DELETE', '/api/v1/audit'],
    ['PATCH', '/api/v1/audit'],
    ['POST', '/api/v1/audit'],
    ['PUT', '/api/v1/audit'],
    ['DELETE', `/api/v1/audit/${id}`],
    ['PATCH', `/api/v1/audit/${id}`],
    ['PUT', `/api/v1/audit/${id}`],
    ['POST', '/api/v1/audit/clear'],
  ] as const) {
    const r = await h.request(method, path, { token: admin, body: { entries: [] } });
    assert.ok(r.status === 404 || r.status === 405, `${method} ${path}: ${r.status}`);
  }
  // The core may log an event of its own meanwhile (a tick's state change): new entries may appear, none of
  // the earlier ones may change or go.
  const ids = new Set(before.map((e: { id: string }) => e.id));
  const after = (await h.request('GET', '/api/v1/audit?limit=500', { token: admin })).body.entries;
  assert.deepEqual(after.filter((e: { id: string }) => ids.has(e.id)), before);
});

test('the OpenAPI document describes every route with the schemas that validate it', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const served = await h.request('GET', '/api/openapi.json');
  assert.equal(served.status, 200);
  const doc = served.body;
  assert.deepEqual(doc, JSON.parse(JSON.stringify(managementOpenApi())));
  assert.equal(doc.openapi, '3.1.0');
  let operations = 0;
  for (const p of Object.values(doc.paths) as Record<string, unknown>[]) operations += Object.keys(p).length;
  assert.equal(operations, MANAGEMENT_ROUTES.length, 'no undocumented route, no documented route that does not exist');
  for (const route of MANAGEMENT_ROUTES) {
    // A root route (/metrics) is documented at its own path; the others below /api.
    const op = doc.paths[`${route.root ? '' : '/api'}${route.path}`]?.[route.method.toLowerCase()];
    assert.ok(op, `${route.method} ${route.path} is documented`);
    assert.equal(op.operationId, route.operationId);
    assert.equal(op['x-lockstep-access'], route.access);
    assert.ok(op.responses[String(route.response.status)], `${route.operationId} documents its success`);
    if (route.body) assert.deepEqual(op.requestBody.content['application/json'].schema, JSON.parse(JSON.stringify(route.body)));
    else if (route.upload) assert.deepEqual(Object.keys(op.requestBody.content), [route.upload.contentType]);
    else assert.equal(op.requestBody, undefined);
    const names = (op.parameters ?? []).map((p: { name: string; in: string }) => `${p.in}:${p.name}`).sort();
    const want = [...Object.keys(route.params ?? {}).map((n) => `path:${n}`), ...Object.keys(route.query?.properties ?? {}).map((n) => `query:${n}`)].sort();
    assert.deepEqual(names, want, route.operationId);
    if (route.access !== 'public') assert.ok(op.responses['401'], `${route.operationId} documents 401`);
    if (route.access !== 'public' && route.access !== 'session') assert.ok(op.responses['403'], `${route.operationId} documents 403`);
  }
  // Every resource of the local socket API is on the management API too.
  for (const id of ['getStatus', 'listVms', 'getVm', 'defineVm', 'startVm', 'stopVm', 'migrateVm', 'setVmProtection', 'removeVm', 'setMaintenance', 'forceTakeover', 'markRepaired', 'getPairCa', 'listEvents', 'listNetworks']) {
    assert.ok(routeById.get(id)?.path.startsWith('/v1/'), id);
  }
});
