/**
 * Either host answers for the pair: `GET /v1/networks` and `GET /v1/host/health` on the management API of
 * the harness's host1, whose peer host2 answers its host reports over a real A-Link on loopback
 * (test/api/peer-link.ts). The stories: host1's answer holds host2's own networks and health components,
 * as host2 reads them, each answer matching the schema the OpenAPI document gives for it (which describes
 * the `{host, networks|components, peer}` shape); once host2's A-Link is gone, the peer's section says why
 * it is unavailable and this host's part is still there.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, startHarness } from './harness.js';
import { startPeerLink } from './peer-link.js';
import { NETWORK_ROUTES, type PairNetworks } from '../../src/daemon/network-routes.js';
import { SENSOR_ROUTES, type PairHealth } from '../../src/daemon/sensor-routes.js';
import { managementOpenApi } from '../../src/api/management-server.js';
import { validate, type Schema } from '../../src/api/schema.js';
import type { HealthSnapshot } from '../../src/core/types.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const HEALTH2: HealthSnapshot = { alink1: 'ok', alink2: 'failed', mgmt: 'ok', business: 'degraded', disk: 'ok', qemu: 'ok', 'power-supply': 'ok' };

/** The 200 answer's schema of an operation, as the served OpenAPI document gives it. */
function documented(doc: { paths: Record<string, Record<string, { responses: Record<string, { content: Record<string, { schema: Schema }> }> }>> }, path: string): Schema {
  return doc.paths[path]!['get']!.responses['200']!.content['application/json']!.schema;
}

test("the pair's networks and health components from host1, host2's own over a real A-Link; the OpenAPI document describes both answers", async () => {
  const peer = await startPeerLink(cleanup, HEALTH2);
  const h = await startHarness(cleanup, { withDriver: false, peerReports: peer.peerReports });
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const token = await h.login(ADMIN.name, ADMIN.password);
  const doc = (await h.request('GET', '/api/openapi.json')).body;
  const networksSchema = documented(doc, '/api/v1/networks');
  const healthSchema = documented(doc, '/api/v1/host/health');
  assert.deepEqual(networksSchema, JSON.parse(JSON.stringify(NETWORK_ROUTES.find((r) => r.operationId === 'listNetworks')!.response.schema)));
  assert.deepEqual(healthSchema, JSON.parse(JSON.stringify(SENSOR_ROUTES.find((r) => r.operationId === 'getHostHealth')!.response.schema)));
  assert.deepEqual(networksSchema.required, ['host', 'networks', 'peer']);
  assert.deepEqual(healthSchema.required, ['host', 'components', 'peer']);

  const networks = await h.request('GET', '/api/v1/networks', { token });
  assert.equal(networks.status, 200, networks.text);
  validate(networksSchema, networks.body, 'INVALID_ARGUMENT');
  const pair = networks.body as PairNetworks;
  assert.equal(pair.host, 'host1');
  assert.deepEqual(pair.networks.map((n) => n.host), ['host1', 'host1', 'host1']);
  assert.equal(pair.peer.state, 'available', JSON.stringify(pair.peer));
  if (pair.peer.state !== 'available') return;
  assert.equal(pair.peer.host, 'host2');
  assert.deepEqual(pair.peer.networks.map((n) => [n.host, n.name, n.interface, n.state]), [
    ['host2', 'alink1', 'lo', 'up'],
    ['host2', 'mgmt', 'lo', 'up'],
    ['host2', 'business', 'nobiz-host2', 'missing'],
  ]);
  assert.equal(pair.peer.networks[0]!.alink?.connected, true, "host2's own view of its A-Link path");
  assert.ok(Date.parse(pair.peer.takenAt) <= Date.parse(pair.peer.receivedAt));
  assert.equal('health' in pair.peer, false, 'the networks answer carries no health components');

  const health = await h.request('GET', '/api/v1/host/health', { token });
  assert.equal(health.status, 200, health.text);
  validate(healthSchema, health.body, 'INVALID_ARGUMENT');
  const both = health.body as PairHealth;
  assert.equal(both.host, 'host1');
  assert.equal(both.components, null, 'the harness has had no health check: null, not made up');
  assert.equal(both.peer.state, 'available', JSON.stringify(both.peer));
  if (both.peer.state === 'available') assert.deepEqual(both.peer.components, HEALTH2);

  // host2 goes away: the peer's section says why, this host's part is unchanged.
  await peer.cut();
  const without = await h.request('GET', '/api/v1/networks', { token });
  validate(networksSchema, without.body, 'INVALID_ARGUMENT');
  assert.deepEqual(without.body.peer, { host: 'host2', state: 'unavailable', reason: 'no A-Link path is up' });
  assert.equal(without.body.networks.length, 3);
  const healthWithout = await h.request('GET', '/api/v1/host/health', { token });
  validate(healthSchema, healthWithout.body, 'INVALID_ARGUMENT');
  assert.deepEqual(healthWithout.body.peer, { host: 'host2', state: 'unavailable', reason: 'no A-Link path is up' });
});
