/**
 * A VM's snapshots in the console, in Debian's Chromium against the real management server of
 * test/api/harness.ts (the lone host runs no QEMU: the VM is stopped, its volume a qcow2 made here with data
 * in it, its snapshot taken from the volume by real qemu-img): the section empty, a snapshot taken with a
 * description and listed as the API has it, its image downloaded byte for byte, "New VM from it" leading to
 * the create form with that source chosen and a VM defined from it, the snapshot's deletion refused while
 * that VM needs it (said on the notice line) and done once it is gone. A read-only user sees the list and
 * Download, not the buttons' powers. The Snapshots & images page: a raw image imported through its form
 * (streamed by the browser), listed beside a VM's snapshot, a vmdk refused with the host's reason on the
 * notice line, the image deleted from its row. No console error but the expected refusals, no CSP violation.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness } from '../api/harness.js';
import { createImage } from '../../src/storage/disk-image.js';
import { ioOk, qemuIo } from '../storage/helpers.js';
import { run } from '../../src/util/exec.js';
import { artifactsDir, launchBrowser } from './browser.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Snapshot {
  id: string;
  vm: string | null;
  state: string;
  description: string;
  path: string | null;
}

test('a VM’s page takes a snapshot, lists it, downloads it, makes a VM from it, and deletes it', async (t) => {
  const h = await startHarness(cleanup);
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const token = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: { ...SAMPLE_VM, protection: 'none' } })).status, 201);
  const volume = path.join(h.dir, 'disks', 'web.qcow2');
  await mkdir(path.dirname(volume), { recursive: true });
  await createImage(volume, 16, 'qcow2');
  assert.ok(ioOk(await qemuIo('qcow2', volume, ['write -P 0x5a 0 4M'])));
  const VIEWER = { name: 'vic', password: 'vic-read-only-1' };
  assert.equal((await h.request('POST', '/api/v1/users', { token, body: { ...VIEWER, groups: ['read-only'] } })).status, 201);
  const snapshots = async (): Promise<Snapshot[]> => (await h.request('GET', '/api/v1/snapshots', { token })).body;

  const artifacts = await artifactsDir('console-vm-snapshots');
  t.diagnostic(`screenshots in ${artifacts}`);
  const b = await launchBrowser(cleanup, artifacts);
  const { page } = b;
  const failed: string[] = [];
  page.on('response', (r) => {
    if (r.status() >= 400) failed.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`);
  });
  const login = async (who: { name: string; password: string }): Promise<void> => {
    await page.fill('#login-form [name=name]', who.name);
    await page.fill('#login-form [name=password]', who.password);
    await page.click('#login-form button[type=submit]');
    await page.locator('#header-user', { hasText: who.name }).waitFor();
  };
  try {
    await page.goto(`https://127.0.0.1:${h.port}/#/vms/web`);
    await login(ADMIN);
    await page.locator('#vm-snapshots-list', { hasText: 'No snapshots of VM web on this host.' }).waitFor();

    // Taken: listed on the page as the API has it.
    await page.fill('#vm-snapshot-description', 'before the upgrade');
    await page.click('#vm-snapshots-section [data-action=snapshot-take]');
    await page.locator('#notice', { hasText: 'Take snapshot: done (201)' }).waitFor();
    const [snap] = await snapshots();
    assert.ok(snap);
    assert.deepEqual([snap.vm, snap.state, snap.description], ['web', 'ready', 'before the upgrade']);
    const row = page.locator(`#vm-snapshots [data-snapshot="${snap.id}"]`);
    await row.waitFor();
    const cells = await page.locator('#vm-snapshots tbody tr').first().locator('td').allTextContents();
    assert.deepEqual([cells[0], cells[1], cells[3], cells[5]], [snap.id, 'ready', '16.0 MiB', 'before the upgrade']);
    assert.equal(await page.inputValue('#vm-snapshot-description'), '', 'the description field is cleared');
    await b.screenshot('01-vm-snapshot-taken');

    // Downloaded: the snapshot's file, byte for byte.
    const [download] = await Promise.all([page.waitForEvent('download'), row.locator('[data-action=snapshot-download]').click()]);
    const saved = path.join(h.dir, 'downloaded.qcow2');
    await download.saveAs(saved);
    assert.equal(download.suggestedFilename(), `${snap.id}.qcow2`);
    assert.deepEqual(await readFile(saved), await readFile(snap.path!));

    // New VM from it: the create form with that source chosen; the VM defined names it.
    await row.locator('[data-action=snapshot-new-vm]').click();
    await page.locator('#vm-create').waitFor();
    assert.equal(await page.inputValue('#vm-create [name=disk0-source]'), snap.id);
    await page.fill('#vm-create [name=name]', 'web2');
    await page.fill('#vm-create [name=kernel]', '/boot/vmlinuz');
    await page.fill('#vm-create [name=initrd]', '/boot/initrd.img');
    await page.fill('#vm-create [name=nic0-mac]', '52:54:00:12:34:57');
    await page.fill('#vm-create [name=nic0-address]', '10.10.3.51');
    await page.selectOption('#vm-create [name=protection]', 'none');
    await b.screenshot('02-vm-from-snapshot-form');
    await page.click('#vm-create [data-action=create]');
    await page.locator('#notice', { hasText: 'Created VM web2.' }).waitFor();
    const web2 = (await h.request('GET', '/api/v1/vms/web2', { token })).body;
    assert.equal(web2.hardware.source.image, snap.id);
    await page.locator('#vm-snapshots-section').waitFor();
    assert.match((await page.locator('dd', { hasText: snap.id }).textContent()) ?? '', new RegExp(`^${snap.id} on host1, made at its first start$`));

    // Its deletion refused while web2 has not made its volume from it; done once web2 is gone.
    await page.goto(`https://127.0.0.1:${h.port}/#/vms/web`);
    await row.locator('[data-action=snapshot-delete]').click();
    await page.locator('#notice.bad', { hasText: 'Delete: SNAPSHOT_IN_USE' }).waitFor();
    assert.equal((await snapshots()).length, 1);
    assert.equal((await h.request('DELETE', '/api/v1/vms/web2', { token })).status, 204);

    // A read-only user: the list and Download, no powers.
    await page.click('[data-action=logout]');
    await page.locator('#login-form').waitFor();
    await login(VIEWER);
    await page.goto(`https://127.0.0.1:${h.port}/#/vms/web`);
    await row.waitFor();
    for (const action of ['snapshot-delete', 'snapshot-new-vm']) assert.equal(await row.locator(`[data-action=${action}]`).isDisabled(), true, `${action} is disabled for read-only`);
    assert.equal(await page.locator('#vm-snapshots-section [data-action=snapshot-take]').isDisabled(), true);
    assert.equal(await row.locator('[data-action=snapshot-download]').count(), 1);
    await b.screenshot('03-vm-snapshots-read-only');

    await page.click('[data-action=logout]');
    await page.locator('#login-form').waitFor();
    await login(ADMIN);
    await page.goto(`https://127.0.0.1:${h.port}/#/vms/web`);
    await row.locator('[data-action=snapshot-delete]').click();
    await page.locator('#notice', { hasText: 'Delete: done (204)' }).waitFor();
    await page.locator('#vm-snapshots-list', { hasText: 'No snapshots of VM web on this host.' }).waitFor();
    assert.deepEqual(await snapshots(), []);

    assert.deepEqual(failed.filter((f) => !/^GET \/api\/v1\/session 401$/.test(f)), [`DELETE /api/v1/snapshots/${snap.id} 409`]);
    assert.deepEqual(b.problems.filter((p) => !/the server responded with a status of (401|409)/.test(p)), [], 'no console errors, no CSP violations');
  } catch (e) {
    await b.failureShots();
    throw e;
  }
});

test('the Snapshots & images page imports an image, lists it beside a snapshot, refuses a vmdk, and deletes', async (t) => {
  const h = await startHarness(cleanup);
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const token = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: { ...SAMPLE_VM, protection: 'none' } })).status, 201);
  const volume = path.join(h.dir, 'disks', 'web.qcow2');
  await mkdir(path.dirname(volume), { recursive: true });
  await createImage(volume, 16, 'qcow2');
  const snap = await h.request('POST', '/api/v1/vms/web/snapshots', { token, body: {} });
  assert.equal(snap.status, 201, snap.text);
  const raw = path.join(h.dir, 'golden.img');
  await writeFile(raw, Buffer.alloc(2 * 1024 * 1024, 0x42));
  const vmdk = path.join(h.dir, 'other.vmdk');
  await run('qemu-img', ['create', '-q', '-f', 'vmdk', vmdk, '4M']);
  const listed = async (): Promise<Snapshot[]> => (await h.request('GET', '/api/v1/snapshots', { token })).body;

  const artifacts = await artifactsDir('console-images');
  t.diagnostic(`screenshots in ${artifacts}`);
  const b = await launchBrowser(cleanup, artifacts);
  const { page } = b;
  try {
    await page.goto(`https://127.0.0.1:${h.port}/`);
    await page.fill('#login-form [name=name]', ADMIN.name);
    await page.fill('#login-form [name=password]', ADMIN.password);
    await page.click('#login-form button[type=submit]');
    await page.locator('#header-user').waitFor();
    await page.click('nav a[data-page=images]');
    await page.locator(`#images [data-snapshot="${snap.body.id}"]`).waitFor();
    await page.locator('#image-import [name=storageGroup] option', { hasText: 'default' }).waitFor({ state: 'attached' });

    // A vmdk: streamed whole, then refused by qemu-img's reading of it, the reason on the notice line.
    await page.setInputFiles('#image-import [name=file]', vmdk);
    await page.click('#image-import [data-action=import-image]');
    await page.locator('#notice.bad', { hasText: 'Import other.vmdk: IMAGE_INVALID' }).waitFor();
    assert.equal((await listed()).length, 1, 'nothing kept of the refused import');

    await page.setInputFiles('#image-import [name=file]', raw);
    await page.fill('#image-import [name=description]', 'golden');
    await page.click('#image-import [data-action=import-image]');
    await page.locator('#notice', { hasText: 'Import golden.img: stored as img-' }).waitFor();
    const img = (await listed()).find((s) => s.vm === null);
    assert.ok(img);
    assert.deepEqual([img.state, img.description], ['ready', 'golden']);
    assert.deepEqual(await readFile(img.path!), await readFile(raw), 'the image byte for byte');
    const row = page.locator('#images tbody tr', { has: page.locator(`[data-snapshot="${img.id}"]`) });
    await row.waitFor();
    assert.deepEqual((await row.locator('td').allTextContents()).slice(0, 2), [img.id, 'imported image (raw)']);
    const snapRow = page.locator('#images tbody tr', { has: page.locator(`[data-snapshot="${snap.body.id}"]`) });
    assert.equal(await snapRow.locator('a[href="#/vms/web"]').textContent(), 'VM web');
    await b.screenshot('01-images');

    await row.locator('[data-action=snapshot-delete]').click();
    await page.locator('#notice', { hasText: 'Delete: done (204)' }).waitFor();
    await page.locator(`#images [data-snapshot="${img.id}"]`).waitFor({ state: 'detached' });
    assert.deepEqual((await listed()).map((s) => s.id), [snap.body.id]);
    assert.deepEqual(b.problems.filter((p) => !/the server responded with a status of (400|401)/.test(p)), [], 'no console errors, no CSP violations');
  } catch (e) {
    await b.failureShots();
    throw e;
  }
});
