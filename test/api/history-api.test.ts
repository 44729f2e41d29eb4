/**
 * The resource history through the API, on the management API and the local socket alike (one route
 * table), over real HTTPS with the harness's real sampler reading this machine's /proc: the host's series
 * as the OpenAPI entry documents them, `since` and `series`, a VM's history while a real process stands in
 * for its QEMU, a VM that has not run here, bad queries (400 naming the parameter), an unknown VM (404),
 * no session (401) and a read-only user (allowed).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { sleep } from '../../src/util/proc.js';
import { ADMIN, SAMPLE_VM, startHarness, type Answer, type Harness } from './harness.js';
import { MANAGEMENT_ROUTES } from '../../src/api/management-routes.js';
import { validate } from '../../src/api/schema.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { HistorySampler, type SampledVm } from '../../src/history/sampler.js';
import { historySources } from '../../src/daemon/history-sources.js';
import { isLockstepError } from '../../src/util/errors.js';
import { childProcess } from '../history/children.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MIB = 1024 * 1024;

interface Series {
  id: string;
  family: string;
  unit: string;
  label: string;
  limit: number | null;
  error: string | null;
  points: [number, number][];
}

function documented(operationId: string, r: Answer): void {
  const route = MANAGEMENT_ROUTES.find((x) => x.operationId === operationId)!;
  assert.equal(r.status, route.response.status, r.text);
  try {
    validate(route.response.schema!, r.body, 'INVALID_ARGUMENT');
  } catch (e) {
    assert.fail(`${operationId}'s answer does not match its documented schema: ${isLockstepError(e) ? e.message : String(e)}`);
  }
}

function refused(r: Answer, status: number, code: string, field?: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.error.code, code, r.text);
  if (field !== undefined) assert.equal(r.body.error.fields.field, field, r.text);
}

async function admin(h: Harness): Promise<string> {
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  return h.login(ADMIN.name, ADMIN.password);
}

const byId = (series: Series[], id: string): Series => {
  const s = series.find((x) => x.id === id);
  assert.ok(s, `no series ${id} in ${series.map((x) => x.id).join(', ')}`);
  return s;
};

test("the host's history: every family, as documented; since and series", async () => {
  const h = await startHarness(cleanup);
  const token = await admin(h);
  await h.history.sampleNow();
  await sleep(200);
  await h.history.sampleNow();
  const r = await h.request('GET', '/api/v1/host/history', { token });
  documented('getHostHistory', r);
  assert.equal(r.body.host, 'host1');
  assert.deepEqual([r.body.intervalMs, r.body.keptMs], [5000, 3600_000]);
  const series = r.body.series as Series[];
  assert.deepEqual(
    series.map((s) => s.id),
    ['cpu', 'memory', 'storage.default', 'network.mgmt.rx', 'network.mgmt.tx', 'network.business.rx', 'network.business.tx', 'network.alink1.rx', 'network.alink1.tx'],
  );
  const cpu = byId(series, 'cpu');
  assert.equal(cpu.points.length, 1);
  assert.ok(cpu.points[0]![1] >= 0 && cpu.points[0]![1] <= 1);
  const memory = byId(series, 'memory');
  assert.equal(memory.points.length, 2);
  assert.ok(memory.limit! > memory.points[1]![1]);
  // The default group's usage, as GET /v1/storage-groups says it.
  const groups = (await h.request('GET', '/api/v1/storage-groups', { token })).body;
  const storage = byId(series, 'storage.default');
  assert.deepEqual([storage.points.at(-1)![1], storage.limit], [groups[0].usedBytes, groups[0].capacityBytes]);
  assert.equal(byId(series, 'network.mgmt.rx').label, 'mgmt (lo) received');
  assert.equal(byId(series, 'network.mgmt.rx').points.length, 1);
  assert.equal(byId(series, 'network.business.rx').error, 'no interface br-biz in this network namespace');
  assert.equal(byId(series, 'network.alink1.rx').error, 'no interface has the address 10.10.1.1');

  // Only the newer points, of the families asked for.
  const newest = memory.points[1]![0];
  const later = await h.request('GET', `/api/v1/host/history?since=${memory.points[0]![0]}&series=memory,cpu`, { token });
  documented('getHostHistory', later);
  assert.deepEqual(
    (later.body.series as Series[]).map((s) => [s.id, s.points.map(([t]) => t)]),
    [
      ['cpu', [newest]],
      ['memory', [newest]],
    ],
  );
  const none = await h.request('GET', `/api/v1/host/history?since=${newest}&series=storage`, { token });
  assert.deepEqual((none.body.series as Series[]).map((s) => [s.id, s.points.length]), [['storage.default', 0]]);
});

test("a VM's history while a real process stands in for its QEMU; a VM that has not run here", async () => {
  const h = await startHarness(cleanup);
  const token = await admin(h);
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: SAMPLE_VM })).status, 201);
  // The lone host never starts QEMU: its VM has no history here.
  const empty = await h.request('GET', '/api/v1/vms/web/history', { token });
  documented('getVmHistory', empty);
  assert.deepEqual([empty.body.vm, empty.body.here, empty.body.series], ['web', false, []]);

  // A spinning child as web's QEMU, measured by a sampler with the daemon's own storage source.
  const child = await childProcess(cleanup, { holdMiB: 32, spin: true });
  const base = historySources({ host: 'host1', storageGroups: h.config.storageGroups, driver: () => h.driver, running: () => [], health: () => null }, h.config);
  const vm: SampledVm = { name: 'web', pid: child.pid, vcpus: 1, memoryBytes: 128 * MIB, diskBytes: 16 * MIB };
  const sampler = new HistorySampler({ ...base, vms: () => [vm] }, { log: () => {} });
  h.api.history = sampler;
  await sampler.sampleNow();
  await sleep(500);
  await sampler.sampleNow();
  const r = await h.request('GET', '/api/v1/vms/web/history', { token });
  documented('getVmHistory', r);
  assert.equal(r.body.here, true);
  const series = r.body.series as Series[];
  assert.deepEqual(series.map((s) => [s.id, s.unit, s.limit]), [['cpu', 'cores', 1], ['memory', 'bytes', 128 * MIB], ['disk', 'bytes', 16 * MIB]]);
  assert.ok(byId(series, 'cpu').points[0]![1] > 0, 'the spinning process used CPU');
  assert.ok(byId(series, 'memory').points.every(([, v]) => v >= 32 * MIB));
  // Its volume has no file yet (the VM never started): no disk points, and why.
  assert.deepEqual([byId(series, 'disk').points, byId(series, 'disk').error], [[], 'its volume has no file on this host']);
  const cpuOnly = await h.request('GET', '/api/v1/vms/web/history?series=cpu', { token });
  assert.deepEqual((cpuOnly.body.series as Series[]).map((s) => s.id), ['cpu']);
});

test('bad queries are 400 naming the parameter; an unknown VM 404; no session 401; read-only may read', async () => {
  const h = await startHarness(cleanup);
  const token = await admin(h);
  for (const [query, field] of [
    ['since=-1', 'since'],
    ['since=soon', 'since'],
    ['since=1.5', 'since'],
    ['series=gpu', 'series'],
    ['series=', 'series'],
    ['series=cpu,,memory', 'series'],
    ['series=disk', 'series'],
    ['series=cpu&series=memory', 'series'],
    ['colour=red', 'colour'],
  ] as const) {
    refused(await h.request('GET', `/api/v1/host/history?${query}`, { token }), 400, 'INVALID_ARGUMENT', field);
  }
  refused(await h.request('GET', '/api/v1/vms/web/history?series=storage', { token }), 400, 'INVALID_ARGUMENT', 'series');
  refused(await h.request('GET', '/api/v1/vms/nosuch/history', { token }), 404, 'UNKNOWN_VM');
  refused(await h.request('GET', '/api/v1/host/history'), 401, 'NOT_AUTHENTICATED');
  refused(await h.request('GET', '/api/v1/vms/web/history'), 401, 'NOT_AUTHENTICATED');
  refused(await h.request('POST', '/api/v1/host/history', { token }), 405, 'METHOD_NOT_ALLOWED');

  assert.equal((await h.request('POST', '/api/v1/users', { token, body: { name: 'vic', password: 'vic-password-1', groups: ['read-only'] } })).status, 201);
  const viewer = await h.login('vic', 'vic-password-1');
  documented('getHostHistory', await h.request('GET', '/api/v1/host/history?series=cpu', { token: viewer }));
});

test('the local socket serves the same history', async () => {
  const h = await startHarness(cleanup);
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await h.history.sampleNow();
  const r = await daemonRequest<{ host: string; series: Series[] }>(socket, 'GET', '/v1/host/history?series=memory');
  assert.deepEqual([r.host, r.series.map((s) => [s.id, s.points.length])], ['host1', [['memory', 1]]]);
  await assert.rejects(daemonRequest(socket, 'GET', '/v1/host/history?since=x'), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && e.fields['field'] === 'since');
});
