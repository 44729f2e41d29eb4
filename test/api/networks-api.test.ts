/**
 * `GET /v1/networks` on the local socket and the management API alike (one route table), from this test
 * process's real interfaces: its loopback stands for the management network (up, counters moving with the
 * test's own HTTPS requests, which show as bandwidth between two samples); the A-Link's address and the
 * business bridge are not on this machine, which the answer says. Each answer matches its documented schema;
 * a read-only user may read it.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, startHarness } from './harness.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { NETWORK_ROUTES } from '../../src/daemon/network-routes.js';
import { managementOpenApi } from '../../src/api/management-server.js';
import { validate } from '../../src/api/schema.js';
import type { NetworkStatus } from '../../src/daemon/networks.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const isRoot = process.getuid?.() === 0;
const schema = NETWORK_ROUTES.find((r) => r.operationId === 'listNetworks')!.response.schema!;

test("this host's networks on the local socket: each configured one, as the kernel has it here", { skip: !isRoot && 'needs root (the sysfs holder mounts)' }, async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const answer = await daemonRequest<{ host: string; networks: NetworkStatus[]; peer: unknown }>(socket, 'GET', '/v1/networks');
  validate(schema, answer, 'INVALID_ARGUMENT');
  assert.deepEqual(answer.peer, { host: 'host2', state: 'unavailable', reason: 'not paired yet: there is no A-Link to ask the peer over' });
  const networks = answer.networks;
  assert.deepEqual(networks.map((n) => [n.name, n.role, n.host]), [['alink1', 'alink', 'host1'], ['mgmt', 'management', 'host1'], ['business', 'business', 'host1']]);
  const [alink1, mgmt, business] = networks as [NetworkStatus, NetworkStatus, NetworkStatus];
  assert.deepEqual([alink1.interface, alink1.state, alink1.detail], [null, 'missing', 'no interface has the address 10.10.1.1']);
  assert.deepEqual(alink1.alink, { localAddress: '10.10.1.1', peerAddress: '10.10.1.2', connected: null, rttMs: null, lastError: null });
  // Loopback: up with carrier and operstate unknown (it does not track one), no speed, a zero MAC.
  assert.deepEqual([mgmt.interface, mgmt.state, mgmt.operstate, mgmt.carrier, mgmt.speedMbps, mgmt.mac, mgmt.mtu], ['lo', 'up', 'unknown', true, null, '00:00:00:00:00:00', 65536]);
  assert.ok(mgmt.rxBytes! > 0 && mgmt.txBytes! > 0, 'the harness has talked over loopback already');
  assert.deepEqual([business.interface, business.bridge, business.state, business.detail], ['br-biz', null, 'missing', 'interface br-biz does not exist']);
  assert.deepEqual(mgmt.bandwidth, { rxBytesPerSec: null, txBytesPerSec: null, overMs: null, sampledAt: null, reason: 'not sampled yet: the health loop samples the counters once the host is paired' });
});

test('bandwidth on the management API: two samples around requests over loopback; a read-only user reads it; OpenAPI documents it', { skip: !isRoot && 'needs root (the sysfs holder mounts)' }, async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const admin = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'rita', password: 'rita-password-1', groups: ['read-only'] } })).status, 201);
  const reader = await h.login('rita', 'rita-password-1');

  await h.networks.sample();
  const first = await h.request('GET', '/api/v1/networks', { token: reader });
  assert.equal(first.status, 200, first.text);
  validate(schema, first.body, 'INVALID_ARGUMENT');
  assert.equal(first.body.networks[1].bandwidth.reason, 'one sample so far: a rate needs two');
  // Some traffic of our own over loopback: the OpenAPI document, ten times.
  for (let i = 0; i < 10; i++) assert.equal((await h.request('GET', '/api/openapi.json')).status, 200);
  await h.networks.sample();
  const second = await h.request('GET', '/api/v1/networks', { token: reader });
  validate(schema, second.body, 'INVALID_ARGUMENT');
  const lo = second.body.networks[1] as NetworkStatus;
  const doc = JSON.stringify(managementOpenApi()).length;
  assert.equal(lo.bandwidth.reason, null, JSON.stringify(lo.bandwidth));
  // On loopback every byte sent is received: both directions carried the ten documents.
  for (const perSec of [lo.bandwidth.rxBytesPerSec!, lo.bandwidth.txBytesPerSec!]) {
    assert.ok((perSec * lo.bandwidth.overMs!) / 1000 >= 10 * doc, `${perSec} B/s over ${lo.bandwidth.overMs} ms carried ten ${doc}-byte documents`);
  }
  assert.ok(lo.txBytes! - (first.body.networks[1] as NetworkStatus).txBytes! >= 10 * doc);

  const openapi = managementOpenApi() as { paths: Record<string, Record<string, { 'x-lockstep-access': string }>> };
  assert.equal(openapi.paths['/api/v1/networks']?.['get']?.['x-lockstep-access'], 'read-only');
  assert.equal((await h.request('GET', '/api/v1/networks')).status, 401, 'not without a session');
});
