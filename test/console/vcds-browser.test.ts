/**
 * The console's Virtual CDs page in Debian's Chromium against the real management server of
 * test/api/harness.ts: an ISO made by genisoimage uploaded through the form (the browser streams the file
 * from disk), listed with its SHA-256 as the API has it; a file that is no ISO refused by the page before it
 * is sent; the image deleted from its row. A VM's page: its CD drive empty, a VCD inserted from the choice
 * of this host's and ejected, each as the page shows it and the API then reports it; an insert the host
 * refuses (the VCD deleted meanwhile) said on the notice line; a VM without a drive says so; a read-only
 * user sees the drive's buttons disabled. No console error (but the 401s of the visits before login), no
 * CSP violation. (The progress bar is not watched: a local upload of 3 MiB is over before it could be.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { makeIso } from '../support/iso.js';
import { ADMIN, SAMPLE_VM, startHarness } from '../api/harness.js';
import { artifactsDir, launchBrowser } from './browser.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('the Virtual CDs page uploads an ISO, refuses a non-ISO, and deletes', async (t) => {
  const h = await startHarness(cleanup);
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const iso = await makeIso(h.dir, 'rescue', 3 * 1024 * 1024);
  const notIso = path.join(h.dir, 'disk.img');
  await writeFile(notIso, randomBytes(64 * 1024));
  const artifacts = await artifactsDir('console-vcds');
  t.diagnostic(`screenshots in ${artifacts}`);
  const b = await launchBrowser(cleanup, artifacts);
  const { page } = b;
  try {
    await page.goto(`https://127.0.0.1:${h.port}/`);
    await page.fill('#login-form [name=name]', ADMIN.name);
    await page.fill('#login-form [name=password]', ADMIN.password);
    await page.click('#login-form button[type=submit]');
    await page.locator('#header-user').waitFor();
    await page.click('nav a[data-page=vcds]');
    await page.locator('#vcd-upload').waitFor();
    await page.locator('#vcd-upload [name=storageGroup] option', { hasText: 'default' }).waitFor({ state: 'attached' });

    // A file that is no ISO: the page says so, nothing reaches the host.
    await page.fill('#vcd-upload [name=name]', 'disk');
    await page.setInputFiles('#vcd-upload [name=file]', notIso);
    await page.click('#vcd-upload [data-action=upload-vcd]');
    await page.locator('#notice', { hasText: 'VCD_NOT_ISO' }).waitFor();
    const token = await h.login(ADMIN.name, ADMIN.password);
    assert.deepEqual((await h.request('GET', '/api/v1/vcds', { token })).body, []);

    await page.fill('#vcd-upload [name=name]', 'rescue-1.0');
    await page.setInputFiles('#vcd-upload [name=file]', iso);
    await page.click('#vcd-upload [data-action=upload-vcd]');
    await page.locator('#notice', { hasText: 'Upload rescue-1.0: stored' }).waitFor();
    await page.locator('#vcds td', { hasText: 'rescue-1.0' }).waitFor();
    const sha256 = createHash('sha256').update(await readFile(iso)).digest('hex');
    const listed = (await h.request('GET', '/api/v1/vcds', { token })).body;
    assert.deepEqual(listed.map((v: { name: string; sha256: string }) => [v.name, v.sha256]), [['rescue-1.0', sha256]]);
    assert.equal(await page.locator('#vcds code').getAttribute('title'), sha256, 'the row shows the whole SHA-256 on hover');
    await b.screenshot('01-vcds');

    await page.click('#vcds [data-action=delete-vcd][data-vcd="rescue-1.0"]');
    await page.locator('#vcds', { hasText: 'rescue-1.0' }).waitFor({ state: 'detached' });
    assert.deepEqual((await h.request('GET', '/api/v1/vcds', { token })).body, []);
    // The visit's first GET /v1/session, before login, is a 401 the browser reports.
    assert.deepEqual(b.problems.filter((p) => !/the server responded with a status of 401/.test(p)), [], 'no console errors, no CSP violations');
  } catch (e) {
    await b.failureShots();
    throw e;
  }
});

test('a VM’s page shows its CD drive, inserts one of this host’s VCDs, ejects it, and says a refusal', async (t) => {
  const h = await startHarness(cleanup);
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const token = await h.login(ADMIN.name, ADMIN.password);
  const octets = { 'content-type': 'application/octet-stream' };
  const tools = await h.request('PUT', '/api/v1/vcds/tools', { token, headers: octets, raw: await readFile(await makeIso(h.dir, 'tools')) });
  assert.equal(tools.status, 201, tools.text);
  const spare = await h.request('PUT', '/api/v1/vcds/spare', { token, headers: octets, raw: await readFile(await makeIso(h.dir, 'spare')) });
  assert.equal(spare.status, 201, spare.text);
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: { ...SAMPLE_VM, cdrom: {} } })).status, 201);
  assert.equal((await h.request('POST', '/api/v1/vms', { token, body: { ...SAMPLE_VM, name: 'plain', nics: [{ mac: '52:54:00:12:34:57', address: '10.10.3.51' }] } })).status, 201);
  const VIEWER = { name: 'vic', password: 'vic-read-only-1' };
  assert.equal((await h.request('POST', '/api/v1/users', { token, body: { ...VIEWER, groups: ['read-only'] } })).status, 201);
  const medium = async (): Promise<unknown> => (await h.request('GET', '/api/v1/vms/web', { token })).body.hardware.cdrom.medium;

  const artifacts = await artifactsDir('console-vm-cd');
  t.diagnostic(`screenshots in ${artifacts}`);
  const b = await launchBrowser(cleanup, artifacts);
  const { page } = b;
  // Every API answer that is an error, to tell the browser's "Failed to load resource" lines apart.
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
    await page.goto(`https://127.0.0.1:${h.port}/#/vms/plain`);
    await login(ADMIN);
    await page.locator('#vm-cd-content', { hasText: 'has no CD drive' }).waitFor();
    assert.equal(await page.locator('#vm-cd-actions').isHidden(), true, 'no buttons for a VM without a drive');

    await page.goto(`https://127.0.0.1:${h.port}/#/vms/web`);
    await page.locator('#vm-cd-content', { hasText: 'empty' }).waitFor();
    await page.locator('#vm-cd-choice option[value=tools]').waitFor({ state: 'attached' });
    assert.deepEqual(await page.locator('#vm-cd-choice option').allTextContents(), ['spare', 'tools'], "this host's VCDs, by name");

    // Insert: the page shows the disc, the API's definition holds it by name and SHA-256.
    await page.selectOption('#vm-cd-choice', 'tools');
    await page.click('#vm-cd [data-action=cd-insert]');
    await page.locator('#notice', { hasText: 'Insert: done (200)' }).waitFor();
    await page.locator('#vm-cd-content [data-medium=tools]').waitFor();
    assert.equal(await page.locator('#vm-cd-content code').getAttribute('title'), tools.body.sha256, 'the whole SHA-256 on hover');
    assert.deepEqual(await medium(), { vcd: 'tools', sha256: tools.body.sha256 });
    await b.screenshot('01-vm-cd-inserted');

    // A refusal: the VCD chosen is gone from the host by the time Insert is clicked.
    assert.equal((await h.request('DELETE', '/api/v1/vcds/spare', { token })).status, 204);
    await page.selectOption('#vm-cd-choice', 'spare');
    await page.click('#vm-cd [data-action=cd-insert]');
    await page.locator('#notice.bad', { hasText: "Insert: UNKNOWN_VCD" }).waitFor();
    await page.locator('#vm-cd-content [data-medium=tools]').waitFor();
    assert.deepEqual(await medium(), { vcd: 'tools', sha256: tools.body.sha256 }, 'the refused insert changed nothing');

    // Eject: the drive empty on the page and in the API's definition.
    await page.click('#vm-cd [data-action=cd-eject]');
    await page.locator('#notice', { hasText: 'Eject: done (200)' }).waitFor();
    await page.locator('#vm-cd-content [data-medium=""]').waitFor();
    assert.equal(await medium(), null);

    // A read-only user sees the drive, not its buttons' powers.
    assert.equal((await h.request('POST', '/api/v1/vms/web/cdrom', { token, body: { vcd: 'tools' } })).status, 200);
    await page.click('[data-action=logout]');
    await page.locator('#login-form').waitFor();
    await login(VIEWER);
    await page.goto(`https://127.0.0.1:${h.port}/#/vms/web`);
    await page.locator('#vm-cd-content [data-medium=tools]').waitFor();
    for (const action of ['cd-insert', 'cd-eject']) assert.equal(await page.locator(`#vm-cd [data-action=${action}]`).isDisabled(), true, `${action} is disabled for read-only`);
    assert.equal(await page.locator('#vm-cd-choice').isDisabled(), true);
    await b.screenshot('02-vm-cd-read-only');
    // The only failed request but the visits' first GET /v1/session is the refused insert, which the browser reports.
    assert.deepEqual(failed.filter((f) => !/^GET \/api\/v1\/session 401$/.test(f)), ['POST /api/v1/vms/web/cdrom 404']);
    assert.deepEqual(b.problems.filter((p) => !/the server responded with a status of (401|404)/.test(p)), [], 'no console errors, no CSP violations');
  } catch (e) {
    await b.failureShots();
    throw e;
  }
});
