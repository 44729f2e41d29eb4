/**
 * A VM's CD drive through the API, on a lone host with a real core (which never starts QEMU here: the
 * drive on real QEMU is test/qemu/cdrom.test.ts): a VM defined with a drive takes a virtual CD of this host
 * into its definition by name and SHA-256 and gives it up on eject; the VCD cannot be deleted meanwhile;
 * refusals for a VM without a drive, an unknown VCD or VM. And what a start on a host makes of the VCD named.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { makeIso } from '../support/iso.js';
import { SAMPLE_VM, startHarness } from './harness.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest, daemonUpload } from '../../src/daemon/api-client.js';
import { isLockstepError } from '../../src/util/errors.js';
import { mediumImage } from '../../src/daemon/cdrom.js';
import { parseVmDefinition } from '../../src/daemon/vm-definition.js';
import type { Vcd } from '../../src/storage/vcd.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface Vm {
  name: string;
  hardware: { cdrom?: { medium: { vcd: string; sha256: string } | null } };
}

async function lone(): Promise<{ socket: string; dir: string }> {
  const h = await startHarness(cleanup);
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { socket, dir: h.dir };
}

async function refused(p: Promise<unknown>, code: string, status: number, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(isLockstepError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.fields['status'], status, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

test('a virtual CD goes into a VM’s drive by name and SHA-256, stays undeletable there, and is ejected', async () => {
  const { socket, dir } = await lone();
  const vcd = await daemonUpload<Vcd>(socket, '/v1/vcds/tools', await makeIso(dir, 'tools'), 'application/octet-stream');
  const defined = await daemonRequest<Vm>(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, cdrom: {} });
  assert.deepEqual(defined.hardware.cdrom, { medium: null }, 'defined with an empty drive');

  const inserted = await daemonRequest<Vm>(socket, 'POST', '/v1/vms/web/cdrom', { vcd: 'tools' });
  assert.deepEqual(inserted.hardware.cdrom, { medium: { vcd: 'tools', sha256: vcd.sha256 } });
  assert.deepEqual((await daemonRequest<Vm>(socket, 'GET', '/v1/vms/web')).hardware.cdrom, { medium: { vcd: 'tools', sha256: vcd.sha256 } }, 'in the replicated definition');
  await refused(daemonRequest(socket, 'DELETE', '/v1/vcds/tools'), 'VCD_IN_USE', 409, /VM web/);

  const ejected = await daemonRequest<Vm>(socket, 'DELETE', '/v1/vms/web/cdrom');
  assert.deepEqual(ejected.hardware.cdrom, { medium: null });
  await daemonRequest(socket, 'DELETE', '/v1/vcds/tools');
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/vcds'), []);
});

test('a VM without a drive, an unknown VCD or VM are refused, naming what to do', async () => {
  const { socket, dir } = await lone();
  await daemonUpload<Vcd>(socket, '/v1/vcds/tools', await makeIso(dir, 'tools'), 'application/octet-stream');
  await daemonRequest(socket, 'POST', '/v1/vms', SAMPLE_VM);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/cdrom', { vcd: 'tools' }), 'COMMAND_REFUSED', 409, /no CD drive.*--cd-drive/);
  await refused(daemonRequest(socket, 'DELETE', '/v1/vms/web/cdrom'), 'COMMAND_REFUSED', 409, /no CD drive/);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/cdrom', { vcd: 'nothing' }), 'UNKNOWN_VCD', 404);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/nobody/cdrom', { vcd: 'tools' }), 'UNKNOWN_VM', 404);
  await refused(daemonRequest(socket, 'POST', '/v1/vms/web/cdrom', { vcd: 'Tools' }), 'INVALID_ARGUMENT', 400);
  // A drive is defined empty: a disc goes in through the insert, which finds it on this host.
  await refused(daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, name: 'other', cdrom: { medium: { vcd: 'tools', sha256: 'c'.repeat(64) } } }), 'INVALID_SPEC', 400);
});

test('a start finds the VCD by name and SHA-256 on its host; without that very image the drive starts empty, said why', async () => {
  const sha = 'a'.repeat(64);
  const tools: Vcd = { name: 'tools', host: 'host2', storageGroup: 'default', bytes: 4096, sha256: sha, created: '2026-01-01T00:00:00.000Z', path: '/srv/disks/vcds/tools.iso' };
  const find = (found: Vcd | null) => async () => found;
  assert.deepEqual(await mediumImage('web', 'host2', { vcd: 'tools', sha256: sha }, find(tools)), { image: tools.path, note: null });
  assert.deepEqual(await mediumImage('web', 'host2', null, find(tools)), { image: null, note: null });
  const missing = await mediumImage('web', 'host2', { vcd: 'tools', sha256: sha }, find(null));
  assert.equal(missing.image, null);
  assert.match(missing.note!, /^VM web starts with its CD drive empty: host2 has no virtual CD 'tools'/);
  const other = await mediumImage('web', 'host2', { vcd: 'tools', sha256: 'b'.repeat(64) }, find(tools));
  assert.equal(other.image, null);
  assert.match(other.note!, /another image \(sha256 aaaaaaaaaaaa…, the VM's is bbbbbbbbbbbb…\)/);
  const broken = await mediumImage('web', 'host2', { vcd: 'tools', sha256: sha }, () => Promise.reject(new Error('EIO')));
  assert.match(broken.note!, /cannot be looked up on host2: EIO/);
});

test('the definition’s drive: {} is an empty drive; a medium names a VCD and its SHA-256', () => {
  const base = { ...SAMPLE_VM };
  assert.equal(parseVmDefinition(base).cdrom, undefined, 'no drive unless asked');
  assert.deepEqual(parseVmDefinition({ ...base, cdrom: {} }).cdrom, { medium: null });
  assert.deepEqual(parseVmDefinition({ ...base, cdrom: { medium: { vcd: 'tools', sha256: 'c'.repeat(64) } } }).cdrom, { medium: { vcd: 'tools', sha256: 'c'.repeat(64) } });
  assert.throws(() => parseVmDefinition({ ...base, cdrom: { medium: { vcd: 'tools', sha256: 'short' } } }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === 'cdrom.medium.sha256');
  assert.throws(() => parseVmDefinition({ ...base, cdrom: { medium: { vcd: '../x', sha256: 'c'.repeat(64) } } }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === 'cdrom.medium.vcd');
});
