/**
 * Snapshots and images through the API, on the local socket (the CLI's client) and the management API:
 * a stopped VM's snapshot taken from its volume (real qemu-img), listed, exported byte for byte, made the
 * source of a new VM and then refused deletion; an image imported and refused when it is not one (random
 * bytes, a qcow2 over a backing file), too big for its group, or cut short, each refusal leaving nothing;
 * roles and audit entries. The lone host of the harness never runs a QEMU: the live path is tested in
 * test/storage/snapshot-image.test.ts, and its refusal for a VM not running here is tested here.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness, type Harness } from './harness.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonDownload, daemonRequest, daemonUpload } from '../../src/daemon/api-client.js';
import { isLockstepError } from '../../src/util/errors.js';
import { run } from '../../src/util/exec.js';
import { createImage } from '../../src/storage/disk-image.js';
import { ioOk, qemuIo } from '../storage/helpers.js';
import { managementOpenApi } from '../../src/api/management-server.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const OCTETS = 'application/octet-stream';
const MIB = 1024 * 1024;

interface Snapshot {
  id: string;
  kind: string;
  vm: string | null;
  host: string;
  storageGroup: string;
  file: string;
  format: string;
  state: string;
  virtualBytes: number;
  description: string;
  path: string | null;
}

async function lone(): Promise<{ h: Harness; socket: string; work: string }> {
  const h = await startHarness(cleanup, {
    storageGroups: (dir) => [
      { name: 'default', path: path.join(dir, 'disks') },
      { name: 'tiny', path: path.join(dir, 'tiny'), sizeMiB: 1 },
    ],
  });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const work = path.join(h.dir, 'work');
  await mkdir(work);
  return { h, socket, work };
}

async function refused(p: Promise<unknown>, code: string, status: number): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(isLockstepError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.fields['status'], status, e.message);
    return true;
  });
}

async function snapshotFiles(h: Harness, group = 'disks'): Promise<string[]> {
  return (await readdir(path.join(h.dir, group, 'snapshots')).catch(() => [] as string[])).sort();
}

test("a stopped VM's snapshot: taken from its volume, listed, exported whole, the source of a new VM, deleted", async () => {
  const { h, socket, work } = await lone();
  await daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, protection: 'none' });
  // Before its first start the VM has no volume: nothing to snapshot.
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/snapshots', {}), 'SNAPSHOT_REFUSED', 409);
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/snapshots'), [], 'a refusal keeps no record');
  // Its volume as a first start would have left it, with data in it.
  const volume = path.join(h.dir, 'disks', 'web.qcow2');
  await mkdir(path.dirname(volume), { recursive: true });
  await createImage(volume, 16, 'qcow2');
  assert.ok(ioOk(await qemuIo('qcow2', volume, ['write -P 0x5a 0 4M', 'write -P 0x6b 8M 1M'])));

  const snap = await daemonRequest<Snapshot>(socket, 'POST', '/v1/vms/web/snapshots', { description: 'before the upgrade' });
  assert.match(snap.id, /^snap-[0-9a-f]{12}$/);
  assert.deepEqual(
    [snap.kind, snap.vm, snap.host, snap.storageGroup, snap.format, snap.state, snap.virtualBytes, snap.description, snap.path],
    ['snapshot', 'web', 'host1', 'default', 'qcow2', 'ready', 16 * MIB, 'before the upgrade', path.join(h.dir, 'disks', 'snapshots', `${snap.id}.qcow2`)],
  );
  const compared = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', volume, snap.path!], { allowFailure: true });
  assert.equal(compared.code, 0, compared.stdout + compared.stderr);
  assert.deepEqual((await daemonRequest<Snapshot[]>(socket, 'GET', '/v1/snapshots')).map((s) => s.id), [snap.id]);
  assert.deepEqual((await daemonRequest<Snapshot[]>(socket, 'GET', '/v1/snapshots?vm=web')).map((s) => s.id), [snap.id]);
  assert.deepEqual(await daemonRequest<Snapshot[]>(socket, 'GET', '/v1/snapshots?vm=other'), []);
  assert.equal((await daemonRequest<Snapshot>(socket, 'GET', `/v1/snapshots/${snap.id}`)).id, snap.id);

  // Exported: the very bytes of its file, and never over an existing file.
  const out = path.join(work, 'web.qcow2');
  const bytes = await daemonDownload(socket, `/v1/snapshots/${snap.id}/image`, out);
  assert.deepEqual(await readFile(out), await readFile(snap.path!));
  assert.equal(bytes, (await readFile(out)).length);
  await assert.rejects(daemonDownload(socket, `/v1/snapshots/${snap.id}/image`, out), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
  await refused(daemonDownload(socket, '/v1/snapshots/snap-000000000000/image', path.join(work, 'none')), 'UNKNOWN_SNAPSHOT', 404);

  // A new VM from it: its hardware names this host's image, and its disk must hold it.
  const clone = { ...SAMPLE_VM, name: 'web2', protection: 'none', nics: [{ mac: '52:54:00:12:34:57', address: '10.10.3.51' }] };
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...clone, diskMiB: 8, source: { snapshot: snap.id } }), 'IMAGE_INVALID', 400);
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...clone, source: { snapshot: 'snap-0123456789ab' } }), 'UNKNOWN_SNAPSHOT', 404);
  const made = await daemonRequest<{ hardware: { source: unknown } }>(socket, 'POST', '/v1/vms', { ...clone, source: { snapshot: snap.id } });
  assert.deepEqual(made.hardware.source, { host: 'host1', image: snap.id, storageGroup: 'default', file: `${snap.id}.qcow2` });
  // Its volume is not made yet: the snapshot is needed for its first start.
  await refused(daemonRequest(socket, 'DELETE', `/v1/snapshots/${snap.id}`), 'SNAPSHOT_IN_USE', 409);
  await daemonRequest(socket, 'DELETE', '/v1/vms/web2');
  await daemonRequest(socket, 'DELETE', `/v1/snapshots/${snap.id}`);
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/snapshots'), []);
  assert.deepEqual(await snapshotFiles(h), [], 'its file is gone');
  await refused(daemonRequest(socket, 'GET', `/v1/snapshots/${snap.id}`), 'UNKNOWN_SNAPSHOT', 404);

  const entries = h.audit.query({ limit: 20, kind: 'user' }).entries.map((e) => [e.operation, e.target, e.result]).reverse();
  assert.deepEqual(
    entries.filter(([op]) => op === 'takeSnapshot' || op === 'deleteSnapshot'),
    [
      ['takeSnapshot', 'web', 'failed'],
      ['takeSnapshot', 'web', 'ok'],
      ['deleteSnapshot', snap.id, 'failed'],
      ['deleteSnapshot', snap.id, 'ok'],
    ],
  );
});

test('a snapshot of an unknown VM, of a disk it does not have, or with a description over its bound, is refused', async () => {
  const { socket } = await lone();
  await refused(daemonRequest(socket, 'POST', '/v1/vms/ghost/snapshots', {}), 'UNKNOWN_VM', 404);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/snapshots', { description: 'x'.repeat(300) }), 'INVALID_ARGUMENT', 400);
  await daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, protection: 'none' });
  await assert.rejects(
    daemonRequest(socket, 'POST', '/v1/vms/web/snapshots', { disk: 1 }),
    (e) => isLockstepError(e, 'INVALID_ARGUMENT') && e.fields['field'] === 'disk' && /VM web has 1 disk: disk 1 is not one of them/.test(e.message),
  );
});

test('an image is imported when qemu-img reads it as qcow2 or raw; anything else is refused and leaves nothing', async () => {
  const { h, socket, work } = await lone();
  // A raw disk: any bytes are a raw image, so a raw upload is what qemu-img says it is.
  const raw = path.join(work, 'disk.img');
  await writeFile(raw, Buffer.alloc(2 * MIB, 0x42));
  const img = await daemonUpload<Snapshot>(socket, '/v1/images?description=golden', raw, OCTETS, 60_000, 'POST');
  assert.match(img.id, /^img-[0-9a-f]{12}$/);
  assert.deepEqual([img.kind, img.vm, img.format, img.virtualBytes, img.state, img.description], ['image', null, 'raw', 2 * MIB, 'ready', 'golden']);
  assert.deepEqual(await readFile(img.path!), await readFile(raw));

  // A qcow2 layered over a file of this host would make QEMU read that file: refused.
  const base = path.join(work, 'base.qcow2');
  await createImage(base, 4, 'qcow2');
  const layer = path.join(work, 'layer.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', layer]);
  await refused(daemonUpload(socket, '/v1/images', layer, OCTETS, 60_000, 'POST'), 'IMAGE_INVALID', 400);
  // Another format qemu-img knows.
  const vmdk = path.join(work, 'x.vmdk');
  await run('qemu-img', ['create', '-q', '-f', 'vmdk', vmdk, '4M']);
  await refused(daemonUpload(socket, '/v1/images', vmdk, OCTETS, 60_000, 'POST'), 'IMAGE_INVALID', 400);
  // Too small to be a disk.
  const crumb = path.join(work, 'crumb');
  await writeFile(crumb, randomBytes(100));
  await refused(daemonUpload(socket, '/v1/images', crumb, OCTETS, 60_000, 'POST'), 'IMAGE_INVALID', 400);
  // Over its group's room (tiny: 1 MiB), refused before it is stored.
  await refused(daemonUpload(socket, '/v1/images?storageGroup=tiny', raw, OCTETS, 60_000, 'POST'), 'STORAGE_GROUP_FULL', 409);
  await refused(daemonUpload(socket, '/v1/images?storageGroup=nowhere', raw, OCTETS, 60_000, 'POST'), 'UNKNOWN_STORAGE_GROUP', 404);
  assert.deepEqual(await snapshotFiles(h), [`${img.id}.raw`], 'no refused upload left a file');
  assert.deepEqual(await snapshotFiles(h, 'tiny'), []);
  assert.deepEqual((await daemonRequest<Snapshot[]>(socket, 'GET', '/v1/snapshots')).map((s) => s.id), [img.id]);

  // A good qcow2 too, and a VM made from the image.
  const q = path.join(work, 'good.qcow2');
  await createImage(q, 4, 'qcow2');
  const qimg = await daemonUpload<Snapshot>(socket, '/v1/images', q, OCTETS, 60_000, 'POST');
  assert.deepEqual([qimg.format, qimg.virtualBytes, qimg.file], ['qcow2', 4 * MIB, `${qimg.id}.qcow2`]);
  const vm = await daemonRequest<{ hardware: { source: { image: string } } }>(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, source: { snapshot: img.id } });
  assert.equal(vm.hardware.source.image, img.id);
});

test('the management API: read-only users list, platform managers take and delete; an import over the limit; OpenAPI', async () => {
  const { h, work } = await lone();
  const admin = (await h.request('POST', '/api/v1/setup', { body: ADMIN }), await h.login(ADMIN.name, ADMIN.password));
  await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'rita', password: 'rita-password-1', groups: ['read-only'] } });
  const reader = await h.login('rita', 'rita-password-1');
  const image = Buffer.alloc(MIB, 1);
  const upload = (token: string, headers: Record<string, string> = { 'content-type': OCTETS }) => h.request('POST', '/api/v1/images', { token, headers, raw: image });
  assert.equal((await upload(reader)).body.error.code, 'FORBIDDEN');
  const tooBig = await h.request('POST', '/api/v1/images', { token: admin, headers: { 'content-type': OCTETS, 'content-length': String(2 * 1024 ** 4 + 1) } });
  assert.equal(tooBig.status, 413, tooBig.text);
  const made = await upload(admin);
  assert.equal(made.status, 201, made.text);
  const listed = await h.request('GET', '/api/v1/snapshots', { token: reader });
  assert.deepEqual(listed.body.map((s: Snapshot) => s.id), [made.body.id]);
  const exported = await h.request('GET', `/api/v1/snapshots/${made.body.id}/image`, { token: reader });
  assert.equal(exported.status, 200);
  assert.equal(exported.headers['content-length'], String(MIB));
  assert.equal(exported.headers['content-type'], OCTETS);
  assert.equal((await h.request('DELETE', `/api/v1/snapshots/${made.body.id}`, { token: reader })).body.error.code, 'FORBIDDEN');
  assert.equal((await h.request('DELETE', `/api/v1/snapshots/${made.body.id}`, { token: admin })).status, 204);
  const audited = (await h.request('GET', '/api/v1/audit?kind=user&user=admin', { token: admin })).body.entries.map((e: { operation: string; result: string }) => `${e.operation} ${e.result}`);
  assert.deepEqual(audited.slice(0, 3).reverse(), ['importImage failed', 'importImage ok', 'deleteSnapshot ok']);
  const doc = managementOpenApi() as { paths: Record<string, Record<string, unknown>> };
  for (const p of ['/api/v1/snapshots', '/api/v1/snapshots/{id}', '/api/v1/snapshots/{id}/image', '/api/v1/vms/{name}/snapshots', '/api/v1/images']) assert.ok(doc.paths[p], `OpenAPI has ${p}`);
  assert.ok(work);
});
