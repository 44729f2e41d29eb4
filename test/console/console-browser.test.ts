/**
 * The Availability Console in Debian's Chromium against the real management server of test/api/harness.ts
 * (the real core driver, user database, audit log, event stream, this machine's own interfaces; no QEMU:
 * this lone host never has authority). An operator's first visit: first-run setup, then every main page
 * showing the host's real data, the networks' bandwidth redrawn as it is sampled; a VM created and started
 * through the form and buttons; a read-only user, made on the users page, sees every changing button
 * disabled; an alert raised by another operator's call appears without a reload; the preferences page's
 * "Send test" reaches a real HTTPS webhook and reports the one that is down; the hosts page's and a VM
 * page's resource charts drawn with the history API's points (a real process standing in for the VM's
 * QEMU), and growing as the sampler's rounds come; a VM page's console log, its serial log written as its QEMU
 * would, shown on Refresh; the peer host2, answering host reports over a real A-Link on loopback: its health
 * components beside this host's on the hosts page and its networks on the networks page, then, its A-Link
 * gone, why they are unavailable. No console error and no CSP violation on any page.
 * Screenshots of each page go to the printed directory.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup } from '../support/cleanup.js';
import { startHarness, type Harness } from '../api/harness.js';
import { artifactsDir, launchBrowser } from './browser.js';
import { HttpsTestServer, freePort, tempDir, testPki } from '../notify/helpers.js';
import type { Page } from 'playwright-core';
import { HistorySampler } from '../../src/history/sampler.js';
import { historySources } from '../../src/daemon/history-sources.js';
import { childProcess } from '../history/children.js';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { vmSerialLog } from '../../src/daemon/vm-runner.js';
import { run } from '../../src/util/exec.js';
import { startPeerLink } from '../api/peer-link.js';
import type { HealthSnapshot } from '../../src/core/types.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const ADMIN = { name: 'olga', password: 'a long console passphrase' };
const VIEWER = { name: 'vic', password: 'read only passphrase' };
/** The harness's sampler takes a round this often, so that the charts grow while the test watches. */
const HISTORY_INTERVAL_MS = 1000;
/** host2's health components, as it reports them to host1 over the A-Link. */
const HEALTH2: HealthSnapshot = { alink1: 'ok', alink2: 'failed', mgmt: 'ok', business: 'degraded', disk: 'ok', qemu: 'ok', 'power-supply': 'ok' };

/**
 * A chart drawn from the API's points: every point the API had up to the chart's newest is drawn (as
 * many polyline vertices and dots), and the chart grows without a reload. Returns the points drawn.
 */
async function checkChart(page: Page, h: Harness, token: string, selector: string, apiPath: string, seriesId: string): Promise<number> {
  await page.locator(`${selector} [data-series="${seriesId}"]`).first().waitFor();
  // Read at once: the chart is drawn anew after each of the page's requests.
  const { drawn, newest, vertices } = await page.locator(selector).evaluate((el, id) => {
    let n = 0;
    for (const line of el.querySelectorAll(`polyline[data-series="${id}"]`)) n += line.getAttribute('points')!.trim().split(/\s+/).length;
    n += el.querySelectorAll(`circle[data-series="${id}"]`).length;
    return { drawn: Number(el.getAttribute('data-points')), newest: Number(el.getAttribute('data-newest')), vertices: n };
  }, seriesId);
  const series = (await h.request('GET', apiPath, { token })).body.series as { id: string; points: [number, number][] }[];
  const points = series.find((x) => x.id === seriesId)!.points;
  assert.ok(points.some(([t]) => t === newest), `the chart's newest point ${newest} is one of the API's`);
  assert.equal(drawn, points.filter(([t]) => t <= newest).length, `${selector} draws every point the API had`);
  assert.equal(vertices, drawn, 'one vertex a point');
  await page.waitForFunction(([sel, n]) => Number(document.querySelector(sel as string)?.getAttribute('data-points')) > (n as number), [selector, drawn] as const);
  return drawn;
}

test('first-run setup, every page with real data, a VM created and started, a live alert, a read-only user', async (t) => {
  // Notifications to a real HTTPS webhook and to one whose endpoint is down, for the preferences page's "Send test".
  const scratch = await tempDir(cleanup, 'lockstep-console-notify-');
  const pki = await testPki(scratch);
  const chat = await HttpsTestServer.start(cleanup, pki);
  const downPort = await freePort('tcp');
  const peer = await startPeerLink(cleanup, HEALTH2);
  const h = await startHarness(cleanup, {
    historyIntervalMs: HISTORY_INTERVAL_MS,
    peerReports: peer.peerReports,
    config: () => ({ notifications: { webhooks: [{ url: chat.url('/hooks/CONSOLETOKEN'), caFile: pki.caFile }, { url: `https://127.0.0.1:${downPort}/hooks/DOWNTOKEN`, caFile: pki.caFile }] } }),
  });
  const artifacts = await artifactsDir('console');
  t.diagnostic(`screenshots in ${artifacts}`);
  const b = await launchBrowser(cleanup, artifacts);
  const { page } = b;
  // A failed step leaves a picture of the page it failed on.
  try {
    const base = `https://127.0.0.1:${h.port}`;

    // ── the page and its headers ──
    const first = await page.goto(`${base}/`);
    assert.equal(first?.status(), 200);
    const headers = first!.headers();
    assert.match(headers['content-security-policy']!, /script-src 'self'/);
    assert.doesNotMatch(headers['content-security-policy']!, /unsafe-inline|unsafe-eval/);
    assert.equal(headers['x-frame-options'], 'DENY');

    // ── first-run setup: no user yet ──
    await page.locator('#setup-form').waitFor();
    await b.screenshot('01-setup');
    await page.fill('#setup-form [name=name]', ADMIN.name);
    await page.fill('#setup-form [name=fullName]', 'Olga Operator');
    await page.fill('#setup-form [name=password]', ADMIN.password);
    await page.fill('#setup-form [name=again]', ADMIN.password);
    await page.click('#setup-form button[type=submit]');
    await page.locator('#header-user', { hasText: `${ADMIN.name} (administrator)` }).waitFor();
    assert.equal((await h.request('GET', '/api/v1/setup')).body.needed, false, 'the administrator exists on the server');

    // ── dashboard: the live stream and the pair as the core sees it ──
    await page.locator('#connection', { hasText: 'live' }).waitFor();
    await page.locator('#pair [data-host=host1]').waitFor();
    await page.locator('#pair [data-host=host2]').waitFor();
    const status = (await h.request('GET', '/api/v1/status', { token: await h.login(ADMIN.name, ADMIN.password) })).body;
    const hostState = await page.locator('#pair [data-host=host1] .badge').first().textContent();
    assert.equal(hostState, status.core.state, 'the dashboard shows the core’s host state');
    await b.screenshot('02-dashboard');

    // ── VMs: create through the form, then start ──
    await page.click('nav a[data-page=vms]');
    await page.locator('#vm-create').waitFor();
    const form = '#vm-create';
    // Two NICs: a third added and removed again on the way, up to four offered.
    for (let i = 0; i < 3; i++) await page.click(`${form} [data-action=add-nic]`);
    assert.equal(await page.locator(`${form} [data-action=add-nic]`).isDisabled(), true, 'four NICs at most');
    await page.locator(`${form} [data-action=remove-nic]`).nth(1).click();
    await page.locator(`${form} [data-action=remove-nic]`).nth(1).click();
    assert.equal(await page.locator(`${form} .nic-row`).count(), 2);
    // Two disks, the second a raw one: added, up to four offered, two removed again.
    for (let i = 0; i < 3; i++) await page.click(`${form} [data-action=add-disk]`);
    assert.equal(await page.locator(`${form} [data-action=add-disk]`).isDisabled(), true, 'four disks at most');
    await page.locator(`${form} [data-action=remove-disk]`).nth(1).click();
    await page.locator(`${form} [data-action=remove-disk]`).nth(1).click();
    assert.equal(await page.locator(`${form} .disk-row`).count(), 2);
    await page.selectOption(`${form} [name=disk1-format]`, 'raw');
    const fields = { name: 'web', vcpus: '2', memoryMiB: '128', 'disk0-size': '16', 'disk1-size': '8', kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'console=ttyS0', 'nic0-mac': '52:54:00:12:34:56', 'nic0-address': '10.10.3.60', 'nic1-mac': '52:54:00:12:34:5a', 'nic1-address': '10.10.3.61' };
    for (const [name, value] of Object.entries(fields)) {
      await page.fill(`${form} [name=${name}]`, value);
    }
    await page.selectOption(`${form} [name=protection]`, 'ha');
    await page.click(`${form} [data-action=create]`);
    await page.locator('h1', { hasText: 'VM web' }).waitFor();
    await page.locator('.facts dd', { hasText: '2' }).first().waitFor();
    const defined = (await h.request('GET', '/api/v1/vms/web', { token: await h.login(ADMIN.name, ADMIN.password) })).body;
    assert.deepEqual([defined.hardware.vcpus, defined.hardware.memoryMiB, defined.protection, defined.desired], [2, 128, 'ha', 'stopped'], 'the VM the form defined');
    assert.deepEqual(defined.hardware.nics, [{ mac: '52:54:00:12:34:56', address: '10.10.3.60' }, { mac: '52:54:00:12:34:5a', address: '10.10.3.61' }], 'both NICs, in the form’s order');
    assert.deepEqual(defined.hardware.disks, [{ sizeMiB: 16, storageGroup: 'default', format: 'qcow2' }, { sizeMiB: 8, storageGroup: 'default', format: 'raw' }], 'both disks, in the form’s order');
    const diskFacts = await page.locator('.facts dt', { hasText: /^disk / }).evaluateAll((dts) => dts.map((dt) => [dt.textContent, dt.nextElementSibling?.textContent]));
    assert.deepEqual(diskFacts, [['disk vda', '16 MiB, qcow2 in default'], ['disk vdb', '8 MiB, raw in default']], 'the detail shows every disk');
    await page.locator('h2', { hasText: 'Volume web.disk1 (vdb)' }).waitFor();
    const nicFacts = await page.locator('.facts dt', { hasText: /^NIC/ }).evaluateAll((dts) => dts.map((dt) => [dt.textContent, dt.nextElementSibling?.textContent]));
    assert.deepEqual(nicFacts, [['NIC 1', '52:54:00:12:34:56, 10.10.3.60'], ['NIC 2', '52:54:00:12:34:5a, 10.10.3.61']], 'the detail shows every NIC');
    await page.click('.actions[data-vm=web] [data-action=start]');
    await page.locator('.actions[data-vm=web] [data-action=stop]').waitFor();
    assert.equal((await h.request('GET', '/api/v1/vms/web', { token: await h.login(ADMIN.name, ADMIN.password) })).body.desired, 'running');
    // Restart is offered while it is meant to run (the lab's vm-cli test restarts a running one).
    await page.click('.actions[data-vm=web] [data-action=restart]');
    await page.locator('#notice.good', { hasText: 'Restart: done (200)' }).waitFor();
    await b.screenshot('03-vm-detail');
    await page.click('nav a[data-page=vms]');
    await page.locator('#vm-table td', { hasText: 'web' }).first().waitFor();
    await page.locator('#vm-table td', { hasText: '10.10.3.60, 10.10.3.61' }).waitFor();
    await b.screenshot('04-vms');

    // ── hosts, storage, alerts and audit, timeline ──
    await page.click('nav a[data-page=hosts]');
    await page.locator('h2', { hasText: 'host1 (this host)' }).waitFor();
    await page.locator('h2', { hasText: 'host2 (peer)' }).waitFor();
    // Each health component of both hosts side by side: host2's as it reported them over the A-Link (the
    // harness's host1 has had no health check: its column is empty, not made up).
    await page.locator('#peer-health-taken', { hasText: "host2's as it reported them over the A-Link at" }).waitFor();
    assert.deepEqual(await page.locator('#health-components thead th').allTextContents(), ['component', 'host1 (this host)', 'host2 (peer)']);
    const healthRows = await page.locator('#health-components tbody tr').evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
    assert.deepEqual(healthRows, Object.entries(HEALTH2).map(([component, state]) => [component, '—', state]), "host2's components as it reported them");
    await b.screenshot('05-hosts');
    // Maintenance mode from its button: the notice says the core's verdict, and the page follows the host's state.
    await page.click('[data-action=maintenance-on]');
    const verdict = (await page.locator('#notice').filter({ hasText: 'Enter maintenance' }).textContent())!;
    const afterMaintenance = (await h.request('GET', '/api/v1/status', { token: await h.login(ADMIN.name, ADMIN.password) })).body.core;
    if (afterMaintenance.maintenance) {
      assert.match(verdict, /done \(200\)/);
      await page.click('[data-action=maintenance-off]');
      await page.locator('[data-action=maintenance-on]').waitFor();
    } else {
      assert.match(verdict, /COMMAND_REFUSED: /, 'a refusal is shown with the API’s code and reason');
    }
    // ── hosts: the resource charts, from GET /v1/host/history, following it live ──
    const token = await h.login(ADMIN.name, ADMIN.password);
    await checkChart(page, h, token, '#host-resources [data-chart=memory]', '/api/v1/host/history', 'memory');
    await checkChart(page, h, token, '#host-resources [data-chart=cpu]', '/api/v1/host/history', 'cpu');
    await page.locator('#host-resources [data-chart="network.mgmt"] figcaption', { hasText: 'Network mgmt (lo)' }).waitFor();
    await page.locator('#host-resources [data-chart="network.mgmt"] [data-series="network.mgmt.tx"]').first().waitFor();
    await page.locator('#host-resources [data-chart="network.business"] .hint', { hasText: 'no interface br-biz' }).waitFor();
    await page.locator('#host-resources [data-chart="storage.default"]').waitFor();
    await b.screenshot('05b-hosts-resources');

    // ── a VM's charts: none while it has not run here, then a real process as its QEMU ──
    await page.evaluate(() => {
      location.hash = '#/vms/web';
    });
    await page.locator('#vm-resources #vm-history-none', { hasText: 'has not run on this host' }).waitFor();
    const qemu = await childProcess(cleanup, { holdMiB: 32, spin: false });
    const harnessSources = historySources({ host: 'host1', storageGroups: h.config.storageGroups, driver: () => h.driver, running: () => [], health: () => null }, h.config);
    const standIn = new HistorySampler({ ...harnessSources, vms: () => [{ name: 'web', pid: qemu.pid, vcpus: 2, memoryBytes: 128 * 1024 * 1024, diskBytes: 16 * 1024 * 1024 }] }, { intervalMs: HISTORY_INTERVAL_MS, log: () => {} });
    standIn.start();
    cleanup.add(() => standIn.stop());
    h.api.history = standIn;
    await checkChart(page, h, token, '#vm-resources [data-chart=memory]', '/api/v1/vms/web/history', 'memory');
    await page.locator('#vm-resources [data-chart=cpu] figcaption', { hasText: 'CPU used by its QEMU' }).waitFor();
    await page.locator('#vm-resources [data-chart=disk] .hint', { hasText: 'its volume has no file on this host' }).waitFor();
    await b.screenshot('05c-vm-resources');
    // ── a VM's console log: none here yet, then what its guest wrote, on Refresh (no polling) ──
    await page.locator('#vm-console-log .hint', { hasText: 'VM web has no console log on this host' }).waitFor();
    const serialLog = vmSerialLog(h.config.dataDir, 'web');
    await mkdir(path.dirname(serialLog), { recursive: true });
    await writeFile(serialLog, '\x1b[0;32mSeaBIOS\x1b[0m\r\n<b>guest web ready</b>\r\n');
    await page.click('#vm-console-log [data-action=console-log-refresh]');
    await page.locator('#vm-console-log .hint', { hasText: 'Its last run on this host: all' }).waitFor();
    assert.equal(await page.locator('#vm-console-log-text').textContent(), 'SeaBIOS\n<b>guest web ready</b>\n', 'the text as text, cleaned');
    await b.screenshot('05d-vm-console-log');
    h.api.history = h.history;
    await standIn.stop();
    await qemu.kill();

    await page.click('nav a[data-page=storage]');
    await page.locator('#volumes td', { hasText: 'web' }).first().waitFor();
    await page.locator('#storage-groups td', { hasText: 'default' }).first().waitFor();
    await b.screenshot('06-storage');
    // Networks: the harness's real interfaces (loopback as its management network); no A-Link interface here.
    await page.click('nav a[data-page=networks]');
    await page.locator('#networks td', { hasText: 'lo' }).first().waitFor();
    await page.locator('#networks tr', { hasText: 'no interface has the address 10.10.1.1' }).waitFor();
    const mgmtRow = page.locator('#networks tbody tr', { hasText: 'management' });
    assert.equal(await mgmtRow.locator('.badge').first().textContent(), 'up', 'loopback is up');
    assert.match((await mgmtRow.textContent())!, /65536/, 'its MTU');
    // The page asks again while open: a sample taken meanwhile shows without a reload.
    await h.networks.sample();
    await new Promise((r) => setTimeout(r, 300));
    await h.networks.sample();
    await page.locator('#networks-sampled').waitFor({ timeout: 10_000 });
    await page.waitForFunction(() => /\d+(\.\d)? (B|KiB|MiB)\/s/.test(document.querySelector('#networks tbody tr:nth-child(2)')?.textContent ?? ''));
    // host2's networks below, as host2 reads its own: its A-Link path on loopback, up; no business interface.
    await page.locator('h2', { hasText: 'host2 (peer)' }).waitFor();
    assert.equal(await page.locator('#peer-networks tbody tr', { hasText: 'alink1' }).locator('.badge').first().textContent(), 'up');
    await page.locator('#peer-networks tr', { hasText: 'interface nobiz-host2 does not exist' }).waitFor();
    await b.screenshot('06b-networks');
    // host2's A-Link goes: the page, asking again, says why its networks are unavailable; so does the hosts page.
    await peer.cut();
    await page.locator('#peer-networks-unavailable', { hasText: 'Unavailable: no A-Link path is up' }).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('#peer-networks').count(), 0);
    await page.click('nav a[data-page=hosts]');
    await page.locator('#peer-health-unavailable', { hasText: "host2's components are unavailable: no A-Link path is up" }).waitFor({ timeout: 10_000 });
    await page.locator('#host-health p.empty', { hasText: 'No health check has run yet on host1.' }).waitFor();
    await b.screenshot('06c-hosts-peer-unavailable');
    await page.click('nav a[data-page=alerts]');
    await page.locator('#audit td', { hasText: 'defineVm' }).first().waitFor();
    await page.locator('#audit td', { hasText: 'startVm' }).first().waitFor();
    // Server-side search: only the matching entries.
    await page.fill('#audit-filter [name=text]', 'startVm');
    await page.click('#audit-filter [data-action=audit-search]');
    await page.waitForFunction(() => [...document.querySelectorAll('#audit tbody tr')].every((r) => r.textContent!.includes('startVm')));
    await b.screenshot('07-alerts-audit');

    // ── a live alert: another operator forces a takeover through the API; no reload ──
    await page.click('nav a[data-page=dashboard]');
    await page.locator('#dashboard-alerts, .card p.empty').first().waitFor();
    const other = await h.login(ADMIN.name, ADMIN.password);
    assert.equal((await h.request('POST', '/api/v1/vms/web/stop', { token: other })).status, 200);
    assert.equal((await h.request('POST', '/api/v1/host/force-takeover', { token: other })).status, 200);
    await page.locator('#dashboard-alerts td', { hasText: 'FORCED_TAKEOVER' }).waitFor();
    await page.locator('#dashboard-vms td', { hasText: 'web' }).first().waitFor();
    await b.screenshot('08-dashboard-live-alert');
    await page.click('nav a[data-page=timeline]');
    await page.locator('h1', { hasText: 'Failovers and migrations' }).waitFor();
    await b.screenshot('09-timeline');

    // ── users: a read-only user made on the page ──
    await page.click('nav a[data-page=users]');
    await page.locator('#users td', { hasText: ADMIN.name }).first().waitFor();
    await page.fill('#user-create [name=name]', VIEWER.name);
    await page.fill('#user-create [name=password]', VIEWER.password);
    await page.fill('#user-create [name=groups]', 'read-only');
    await page.click('#user-create [data-action=create-user]');
    await page.locator('#users td', { hasText: VIEWER.name }).first().waitFor();
    const made = (await h.request('GET', `/api/v1/users/${VIEWER.name}`, { token: other })).body;
    assert.deepEqual([made.groups, made.role], [['read-only'], 'read-only']);
    await b.screenshot('10-users');

    // ── preferences: the view, and "Send test" to each receiver with its outcome on the notice line ──
    await page.click('nav a[data-page=preferences]');
    await page.locator('#notification-receivers td', { hasText: 'webhook:2' }).first().waitFor();
    await page.locator('h2', { hasText: 'IP settings' }).waitFor();
    await page.locator('.facts dd', { hasText: '10.10.1.1 → 10.10.1.2' }).waitFor();
    await page.locator('#ntp .badge').waitFor();
    await page.locator('#preferences-how', { hasText: 'To change: owner, notifications and resync: PUT /v1/preferences/SECTION' }).waitFor();
    assert.equal(await page.locator('#notification-receivers td', { hasText: 'CONSOLETOKEN' }).count(), 0, 'a webhook URL’s token is not shown');
    await page.click('[data-action=send-test][data-receiver="webhook:1"]');
    await page.locator('#notice.good', { hasText: 'Send test to webhook:1: delivered (HTTP 200)' }).waitFor();
    assert.equal(chat.accepted().filter((r) => (r.body as { test?: boolean }).test === true).length, 1, 'the test reached the webhook');
    await page.click('[data-action=send-test][data-receiver="webhook:2"]');
    await page.locator('#notice.bad', { hasText: 'Send test to webhook:2: failed at connect' }).waitFor();
    await page.locator('#notification-receivers tr', { hasText: 'webhook:2' }).locator('.badge', { hasText: 'failed' }).waitFor();
    await page.click('[data-action=send-test-all]');
    await page.locator('#notice.bad', { hasText: 'Send test: 1 of 2 delivered' }).waitFor();
    assert.ok(!(await page.locator('#notice').textContent())!.includes('DOWNTOKEN'), 'nor is it in an error');
    // Remote support: the support bundle, downloaded by the browser under the host's name for it, opens with tar.
    const [bundle] = await Promise.all([page.waitForEvent('download'), page.click('[data-action=support-bundle]')]);
    assert.match(bundle.suggestedFilename(), /^lockstep-support-host1-\d{8}T\d{6}Z\.tar\.gz$/);
    const bundleFile = path.join(scratch, bundle.suggestedFilename());
    await bundle.saveAs(bundleFile);
    const listed = (await run('tar', ['-tzf', bundleFile])).stdout.split('\n');
    assert.ok(listed.some((f) => f.endsWith('/MANIFEST.txt')) && listed.some((f) => f.endsWith('/api/getStatus.json')), listed.join('\n'));
    await page.locator('#notice.good', { hasText: 'Support bundle: lockstep-support-host1-' }).waitFor();

    // ── preferences edited on the page: saved to lockstepd.json and shown; a refusal next to its form ──
    await page.locator('#owner.empty').waitFor();
    await page.fill('#owner-form [name=name]', 'Example Manufacturing SA');
    await page.fill('#owner-form [name=site]', 'Plant 3, hall A');
    await page.click('#owner-form [data-action=save-owner]');
    await page.locator('#notice.good', { hasText: `Save owner: written to ${h.configFile} and applied` }).waitFor();
    await page.locator('#owner dd', { hasText: 'Plant 3, hall A' }).waitFor();
    assert.deepEqual(JSON.parse(await readFile(h.configFile, 'utf8')).owner, { name: 'Example Manufacturing SA', site: 'Plant 3, hall A' });
    assert.equal(await page.locator('#owner-form [name=site]').inputValue(), 'Plant 3, hall A', 'the form starts from what was saved');
    await page.fill('#resync-form [name=maxMiBps]', '0');
    await page.click('#resync-form [data-action=save-resync]');
    await page.locator('#resync-form-error', { hasText: "INVALID_SPEC: preferences: 'resync.maxMiBps' must be a number of MiB/s above 0" }).waitFor();
    await page.fill('#resync-form [name=maxMiBps]', '120');
    await page.click('#resync-form [data-action=save-resync]');
    await page.locator('#resync dd', { hasText: '120 MiB/s' }).waitFor();
    assert.equal(await page.locator('#resync-form-error').textContent(), '', 'the refusal is gone once saved');
    assert.deepEqual(JSON.parse(await readFile(h.configFile, 'utf8')).resync, { maxMiBps: 120, busyMiBps: 64 });
    // The notifications' editor holds the section with its secrets kept by name, never a token.
    const section = JSON.parse(await page.locator('#notifications-form [name=section]').inputValue());
    assert.deepEqual(section.webhooks.map((w: { url: unknown }) => w.url), [{ keep: 'webhook:1' }, { keep: 'webhook:2' }]);
    await page.fill('#notifications-form [name=section]', '{"minSeverity": ');
    await page.click('#notifications-form [data-action=save-notifications]');
    await page.locator('#notifications-form-error', { hasText: 'the section is not JSON' }).waitFor();
    await page.fill('#notifications-form [name=section]', JSON.stringify({ ...section, minSeverity: 'critical' }, null, 2));
    await page.click('#notifications-form [data-action=save-notifications]');
    await page.locator('#notice.good', { hasText: 'Save notifications: written to' }).waitFor();
    await page.locator('p', { hasText: 'Alerts of severity critical and above' }).waitFor();
    const savedHooks = JSON.parse(await readFile(h.configFile, 'utf8')).notifications.webhooks;
    assert.equal(savedHooks[0].url, chat.url('/hooks/CONSOLETOKEN'), 'the kept secret is in the file');
    assert.equal(await page.locator('body', { hasText: 'CONSOLETOKEN' }).count(), 0, 'and nowhere on the page');
    // Set elsewhere (another console, the CLI): the page follows, from the live audit stream, without a reload.
    const elsewhere = await h.request('PUT', '/api/v1/preferences/owner', { token: other, body: { name: 'Set from elsewhere' } });
    assert.equal(elsewhere.status, 200, elsewhere.text);
    await page.locator('#owner dd', { hasText: 'Set from elsewhere' }).waitFor();
    assert.deepEqual(
      [await page.locator('#owner-form [name=name]').inputValue(), await page.locator('#owner-form [name=site]').inputValue()],
      ['Set from elsewhere', ''],
      'an untouched form follows too',
    );
    await b.screenshot('11-preferences');

    // ── the read-only user: everything visible, nothing changeable ──
    await page.click('[data-action=logout]');
    await page.locator('#login-form').waitFor();
    await page.fill('#login-form [name=name]', VIEWER.name);
    await page.fill('#login-form [name=password]', 'not the password');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-form .form-error', { hasText: 'LOGIN_FAILED' }).waitFor();
    await page.fill('#login-form [name=password]', VIEWER.password);
    await page.click('#login-form button[type=submit]');
    await page.locator('#header-user', { hasText: `${VIEWER.name} (read-only)` }).waitFor();
    await page.click('nav a[data-page=vms]');
    await page.locator('.actions[data-vm=web]').waitFor();
    for (const action of ['start', 'migrate', 'protect', 'remove']) {
      assert.equal(await page.locator(`.actions[data-vm=web] [data-action=${action}]`).isDisabled(), true, `${action} is disabled for read-only`);
    }
    assert.equal(await page.locator('#vm-create [data-action=create]').isDisabled(), true);
    await page.click('nav a[data-page=hosts]');
    for (const action of ['maintenance-on', 'force-takeover', 'repaired']) assert.equal(await page.locator(`[data-action=${action}]`).isDisabled(), true, `${action} is disabled for read-only`);
    await page.click('nav a[data-page=preferences]');
    await page.locator('#notification-receivers [data-action=send-test]').first().waitFor();
    for (const button of await page.locator('[data-action=send-test], [data-action=send-test-all], [data-action=support-bundle]').all()) assert.equal(await button.isDisabled(), true, `${await button.textContent()} is disabled for read-only`);
    await page.locator('#owner dd', { hasText: 'Set from elsewhere' }).waitFor();
    assert.equal(await page.locator('#owner-form, #resync-form, #notifications-form, [data-action^=save-]').count(), 0, 'read-only sees the preferences, no edit form');
    await page.click('nav a[data-page=hosts]');
    assert.equal(await page.locator('nav [data-page=users]').evaluate((el) => el.tagName), 'SPAN', 'the users page is not a link for read-only');
    await page.locator('#connection', { hasText: 'live' }).waitFor();
    await b.screenshot('12-read-only-hosts');

    // The browser logs every 4xx answer as an error: the wrong password above and the session check of the
    // login page are 401, the lone host's refusal of maintenance 409, and the refused resync rate 400, by
    // design. Anything else (a CSP violation, an exception, a 404) fails the test.
    assert.deepEqual(b.problems.filter((p) => !/the server responded with a status of (400|401|409)/.test(p)), [], 'no console errors, no CSP violations');
  } catch (e) {
    await b.failureShots();
    throw e;
  }
});
