/**
 * Volumes and storage groups through the API, on the local socket and the management API alike (one route
 * table), with a real core driver, images made by qemu-img and the host's real file system: each VM's
 * volume and its state as a lone host sees it, a group's usage, a definition refused for a group this host
 * lacks or for a disk that does not fit, and the routes' place in the OpenAPI document (read-only).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness, type Harness } from './harness.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { managementOpenApi } from '../../src/api/management-server.js';
import { ensureDisk } from '../../src/storage/disk-image.js';
import { isLockstepError } from '../../src/util/errors.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MIB = 1024 * 1024;

interface Volume {
  name: string;
  vm: string;
  disk: string;
  host: string;
  owner: string;
  protection: string;
  storageGroup: string;
  format: string;
  sizeBytes: number;
  path: string | null;
  allocatedBytes: number | null;
  state: string;
  reason: string;
  sync: unknown;
}

interface Group {
  name: string;
  path: string;
  sizeMiB: number | null;
  capacityBytes: number;
  usedBytes: number;
  freeBytes: number;
  volumeCount: number;
  error: string | null;
  volumes?: Volume[];
}

/** A lone host1 with the groups `default` (as without a config) and `small` (capped at 8 MiB), and its socket. */
async function lone(): Promise<{ h: Harness; socket: string }> {
  const h = await startHarness(cleanup, {
    storageGroups: (dir) => [
      { name: 'default', path: path.join(dir, 'disks') },
      { name: 'small', path: path.join(dir, 'small'), sizeMiB: 8 },
    ],
  });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { h, socket };
}

async function refused(p: Promise<unknown>, code: string, status: number, field?: string): Promise<void> {
  await assert.rejects(p, (e) => isLockstepError(e) && e.code === code && e.fields['status'] === status && (field === undefined || e.fields['field'] === field));
}

test("each VM's volume as this host sees it: its group, format, file and state", async () => {
  const { h, socket } = await lone();
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);
  await daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, name: 'db', protection: 'none', diskMiB: 4, disk: { storageGroup: 'small', format: 'raw' }, nics: [{ mac: '52:54:00:12:34:57', address: '10.10.3.51' }] });
  const volumes = await daemonRequest<Volume[]>(socket, 'GET', '/v1/volumes');
  assert.deepEqual(
    volumes.map((v) => [v.name, v.owner, v.storageGroup, v.format, v.sizeBytes, v.path, v.allocatedBytes, v.state]),
    [
      ['db', 'host1', 'small', 'raw', 4 * MIB, path.join(h.dir, 'small', 'db.raw'), null, 'simplex'],
      // Protected, but this lone host has never heard its peer: one copy known current.
      ['web', 'host1', 'default', 'qcow2', 16 * MIB, path.join(h.dir, 'disks', 'web.qcow2'), null, 'degraded'],
    ],
  );
  assert.match(volumes[1]!.reason, /host2 is not heard/);
  assert.ok(volumes.every((v) => v.host === 'host1' && v.sync === null));

  // The runner's own function makes the file, as at the VM's first start: its allocation shows.
  await ensureDisk(path.join(h.dir, 'small', 'db.raw'), 4, 'raw');
  const db = await daemonRequest<Volume>(socket, 'GET', '/v1/volumes/db');
  assert.equal(db.state, 'simplex');
  assert.ok(db.allocatedBytes !== null && db.allocatedBytes < 4 * MIB, 'a raw image is sparse');
  await refused(daemonRequest(socket, 'GET', '/v1/volumes/nope'), 'UNKNOWN_VOLUME', 404);

  // The VM goes, and its volume with it from the API's view.
  await daemonRequest(socket, 'DELETE', '/v1/vms/db');
  assert.deepEqual((await daemonRequest<Volume[]>(socket, 'GET', '/v1/volumes')).map((v) => v.name), ['web']);
});

test("a file that cannot be the volume's: failed, with the reason", async () => {
  const { h, socket } = await lone();
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);
  await mkdir(path.join(h.dir, 'disks', 'web.qcow2'), { recursive: true });
  const web = await daemonRequest<Volume>(socket, 'GET', '/v1/volumes/web');
  assert.equal(web.state, 'failed');
  assert.match(web.reason, /web\.qcow2 is not a regular file/);
});

test("storage groups: capacity, use and free space from the file system and the group's volumes", async () => {
  const { h, socket } = await lone();
  await daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, diskMiB: 4, disk: { storageGroup: 'small', format: 'qcow2' } });
  const before = await daemonRequest<Group[]>(socket, 'GET', '/v1/storage-groups');
  assert.deepEqual(before.map((g) => [g.name, g.path, g.sizeMiB, g.volumeCount, g.usedBytes, g.error]), [
    ['default', path.join(h.dir, 'disks'), null, 0, 0, null],
    ['small', path.join(h.dir, 'small'), 8, 1, 0, null],
  ]);
  const [byFs, small] = before as [Group, Group];
  assert.ok(byFs.capacityBytes > small.capacityBytes && byFs.freeBytes <= byFs.capacityBytes, 'without a cap: the file system');
  assert.deepEqual([small.capacityBytes, small.freeBytes], [8 * MIB, 8 * MIB], 'directory not made yet: nothing used');

  await ensureDisk(path.join(h.dir, 'small', 'web.qcow2'), 4, 'qcow2');
  const after = await daemonRequest<Group>(socket, 'GET', '/v1/storage-groups/small');
  assert.ok(after.usedBytes > 0, 'a qcow2 header allocates');
  assert.equal(after.freeBytes, 8 * MIB - after.usedBytes);
  assert.deepEqual(after.volumes?.map((v) => [v.name, v.allocatedBytes]), [['web', after.usedBytes]]);
  await refused(daemonRequest(socket, 'GET', '/v1/storage-groups/slow'), 'UNKNOWN_STORAGE_GROUP', 404);
});

test('a definition is refused for a group this host lacks, and for a disk larger than the free space', async () => {
  const { socket } = await lone();
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, disk: { storageGroup: 'slow' } }), 'INVALID_SPEC', 400, 'disks[0].storageGroup');
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, disk: { format: 'vmdk' } }), 'INVALID_SPEC', 400, 'disk.format');
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, diskMiB: 9, disk: { storageGroup: 'small' } }), 'COMMAND_REFUSED', 409, 'disks');
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/vms'), [], 'nothing was defined');
  // What fits is taken, and then promised: a second thin volume may not count on the first one's unwritten space.
  await daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, diskMiB: 5, disk: { storageGroup: 'small' } });
  const second = { ...SAMPLE_VM, name: 'db', nics: [{ mac: '52:54:00:12:34:57', address: '10.10.3.51' }], diskMiB: 4, disk: { storageGroup: 'small' } };
  await assert.rejects(
    daemonRequest(socket, 'POST', '/v1/vms', second),
    (e) => isLockstepError(e, 'COMMAND_REFUSED') && e.fields['field'] === 'disks' && /3 MiB available, of 8 MiB free 5 MiB are promised to the volumes defined in it/.test(e.message),
  );
  await daemonRequest(socket, 'POST', '/v1/vms', { ...second, diskMiB: 3 });
});

test('a VM of several disks: a volume per disk, their sizes summed per group, FT refused', async () => {
  const { socket } = await lone();
  const { diskMiB: _, ...base } = SAMPLE_VM;
  const db = { ...base, name: 'db', nics: [{ mac: '52:54:00:12:34:57', address: '10.10.3.51' }], disks: [{ sizeMiB: 4 }, { sizeMiB: 5, storageGroup: 'small', format: 'raw' }, { sizeMiB: 2, storageGroup: 'small' }] };
  // 5 + 4 MiB in an 8 MiB group: each fits alone, together they do not.
  await assert.rejects(
    daemonRequest(socket, 'POST', '/v1/vms', { ...db, disks: [{ sizeMiB: 5, storageGroup: 'small' }, { sizeMiB: 4, storageGroup: 'small' }] }),
    (e) => isLockstepError(e, 'COMMAND_REFUSED') && e.fields['storageGroup'] === 'small' && /disks in it \(9 MiB\) do not fit/.test(e.message),
  );
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...db, disks: [{ sizeMiB: 4 }, { sizeMiB: 1, storageGroup: 'slow' }] }), 'INVALID_SPEC', 400, 'disks[1].storageGroup');
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...db, protection: 'ft' }), 'INVALID_SPEC', 400, 'protection');
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...db, disks: [1, 2, 3, 4, 5].map((sizeMiB) => ({ sizeMiB })) }), 'INVALID_SPEC', 400);
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/vms'), [], 'nothing was defined');

  await daemonRequest(socket, 'POST', '/v1/vms', db);
  const volumes = await daemonRequest<Volume[]>(socket, 'GET', '/v1/volumes');
  assert.deepEqual(
    volumes.map((v) => [v.name, v.vm, v.disk, v.storageGroup, v.format, v.sizeBytes]),
    [
      ['db', 'db', 'vda', 'default', 'qcow2', 4 * MIB],
      ['db.disk1', 'db', 'vdb', 'small', 'raw', 5 * MIB],
      ['db.disk2', 'db', 'vdc', 'small', 'qcow2', 2 * MIB],
    ],
  );
  assert.match((await daemonRequest<Volume>(socket, 'GET', '/v1/volumes/db.disk1')).path ?? '', /small\/db\.disk1\.raw$/);
  await refused(daemonRequest(socket, 'GET', '/v1/volumes/db.disk3'), 'UNKNOWN_VOLUME', 404);
  const small = await daemonRequest<Group>(socket, 'GET', '/v1/storage-groups/small');
  assert.deepEqual([small.volumeCount, small.volumes?.map((v) => v.name)], [2, ['db.disk1', 'db.disk2']]);
  // The group has promised 7 of its 8 MiB: a 2 MiB disk no longer fits.
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, diskMiB: 2, disk: { storageGroup: 'small' } }), 'COMMAND_REFUSED', 409, 'disks');
  await refused(daemonRequest(socket, 'POST', '/v1/vms/db/protection', { protection: 'ft' }), 'INVALID_SPEC', 400, 'protection');
  await daemonRequest(socket, 'POST', '/v1/vms/db/protection', { protection: 'ha' });
});

test('the management API serves the same routes to a read-only user; OpenAPI documents them', async () => {
  const { h } = await lone();
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const admin = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'rita', password: 'rita-password-1', groups: ['read-only'] } })).status, 201);
  const reader = await h.login('rita', 'rita-password-1');
  assert.equal((await h.request('POST', '/api/v1/vms', { token: admin, body: SAMPLE_VM })).status, 201);
  const volumes = await h.request('GET', '/api/v1/volumes', { token: reader });
  assert.equal(volumes.status, 200, volumes.text);
  assert.deepEqual(volumes.body.map((v: Volume) => v.name), ['web']);
  assert.equal((await h.request('GET', '/api/v1/storage-groups/small', { token: reader })).body.sizeMiB, 8);
  const unknown = await h.request('GET', '/api/v1/volumes/nope', { token: reader });
  assert.deepEqual([unknown.status, unknown.body.error.code], [404, 'UNKNOWN_VOLUME']);

  const doc = managementOpenApi() as { paths: Record<string, Record<string, { 'x-lockstep-access': string; responses: Record<string, unknown> }>> };
  for (const p of ['/api/v1/volumes', '/api/v1/volumes/{name}', '/api/v1/storage-groups', '/api/v1/storage-groups/{name}']) {
    assert.equal(doc.paths[p]?.['get']?.['x-lockstep-access'], 'read-only', p);
  }
  assert.ok(doc.paths['/api/v1/volumes/{name}']!['get']!.responses['404'], 'UNKNOWN_VOLUME is documented');
  assert.ok(doc.paths['/api/v1/storage-groups/{name}']!['get']!.responses['404'], 'UNKNOWN_STORAGE_GROUP is documented');
});
