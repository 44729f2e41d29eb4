/**
 * The console's Virtual CDs page in Debian's Chromium against the real management server of
 * test/api/harness.ts: an ISO made by genisoimage uploaded through the form (the browser streams the file
 * from disk), listed with its SHA-256 as the API has it; a file that is no ISO refused by the page before it
 * is sent; the image deleted from its row. No console error (but the 401 of the visit before login), no CSP
 * violation. (The progress bar is not watched: a local upload of 3 MiB is over before it could be.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { makeIso } from '../support/iso.js';
import { ADMIN, startHarness } from '../api/harness.js';
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
