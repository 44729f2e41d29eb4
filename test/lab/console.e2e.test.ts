/**
 * The Availability Console end to end, in the lab: Debian's Chromium in the lab's client namespace (where an
 * operator's browser sits on the management network) drives each host's console over its management API
 * (port 7443), with real daemons, real QEMU (TCG) and the demo VM protected by HA. First-run setup and login
 * on host1, the dashboard showing the pair, a VM created and started from the VMs page; then host2's console
 * open on its dashboard while `lab fail host1 power` cuts host1: the FAILOVER alert and the explained
 * timeline (fault detected → quorum decision → action) appear without a reload, and after `lab heal host1`
 * the resync steps follow. Screenshots of each step go to the printed directory.
 *
 * The lab is named by LOCKSTEP_LAB / LOCKSTEP_LAB_DIR when set (so a shared machine's labs never meet), else
 * after this process; it is torn down afterwards whatever happens.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../../src/util/paths.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { Cleanup } from '../support/cleanup.js';
import { artifactsDir, launchBrowser } from '../console/browser.js';
import type { Page } from 'playwright-core';

const LAB = process.env['LOCKSTEP_LAB'] ?? `c${process.pid}`;
const DIR = process.env['LOCKSTEP_LAB_DIR'] ?? path.join(os.tmpdir(), `lockstep-lab-${LAB}`);
const env = { ...process.env, LOCKSTEP_LAB: LAB, LOCKSTEP_LAB_DIR: DIR };
const PREFIX = LAB === 'default' ? '' : `${LAB}-`;
const ADMIN = { name: 'admin', password: 'a long lab passphrase' };
/** The waits of a fault's consequences on a loaded 2-core machine under TCG. */
const FAILOVER_WAIT_MS = 90_000;
const RESYNC_WAIT_MS = 240_000;

const cleanup = new Cleanup();
/** One directory for the run's screenshots and logs, made once. */
const artifactsReady = artifactsDir('console-lab');

function lab(...args: string[]): string {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'lab', ...args], { env, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `lockstep lab ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

/** A host's core view (state, epoch) and the demo VM as it sees them; null while its lockstepd does not answer. */
async function pairOn(host: 'host1' | 'host2'): Promise<{ state: string; epoch: number; demo: string | null } | null> {
  try {
    const s = await daemonRequest<{ core: { state: string; epoch: number } | null; vms: { name: string; state: string }[] }>(path.join(DIR, 'hosts', host, 'run', 'lockstepd.sock'), 'GET', '/v1/status', undefined, 3000);
    return s.core === null ? null : { state: s.core.state, epoch: s.core.epoch, demo: s.vms.find((v) => v.name === 'demo')?.state ?? null };
  } catch {
    return null;
  }
}

async function demoOn(host: 'host1' | 'host2'): Promise<{ state: string; local: { pid: number | null } | null } | null> {
  try {
    const s = await daemonRequest<{ vms: { name: string; state: string; local: { pid: number | null } | null }[] }>(path.join(DIR, 'hosts', host, 'run', 'lockstepd.sock'), 'GET', '/v1/status', undefined, 3000);
    return s.vms.find((v) => v.name === 'demo') ?? null;
  } catch {
    return null;
  }
}

/** Waits for `probe` to say true; a timeout fails with the last thing it saw (`seen`). */
async function eventually(what: string, probe: () => Promise<{ ok: boolean; seen: unknown }>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { ok, seen } = await probe();
    if (ok) return;
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}; last seen ${JSON.stringify(seen)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** First-run setup on a host's console: the form, then the dashboard with the live stream. */
async function setUp(page: Page, url: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.locator('#setup-form').waitFor();
  await page.fill('#setup-form [name=name]', ADMIN.name);
  await page.fill('#setup-form [name=password]', ADMIN.password);
  await page.fill('#setup-form [name=again]', ADMIN.password);
  await page.click('#setup-form button[type=submit]');
  await page.locator('#header-user', { hasText: `${ADMIN.name} (administrator)` }).waitFor();
  await page.locator('#connection', { hasText: 'live' }).waitFor();
}

before(async () => {
  lab('up', '--vm', 'demo', '--protection', 'ha', '--memory', '128');
  await eventually('demo protected on host1', async () => {
    const [one, two] = [await demoOn('host1'), await demoOn('host2')];
    return { ok: Boolean(one?.local?.pid) && one?.state === 'protected' && two?.state === 'protected', seen: { host1: one, host2: two } };
  }, 180_000);
});

after(async () => {
  await cleanup.run();
  // Both daemons' logs go with the screenshots: `lab down` removes the lab's directory.
  const logs = path.join(await artifactsReady, 'logs');
  spawnSync('mkdir', ['-p', logs]);
  for (const host of ['host1', 'host2']) spawnSync('cp', ['-r', path.join(DIR, 'hosts', host, 'log'), path.join(logs, host)]);
  console.log(`lab daemons' logs kept in ${logs}`);
  spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'lab', 'down'], { env, encoding: 'utf8', timeout: 300_000 });
});

test("the console on both hosts: setup, the pair, a VM created and started, host1's power cut seen live with its timeline", async (t) => {
  const status = JSON.parse(lab('status', '--json')) as { hosts: { name: string; management: { url: string; setupNeeded: boolean } | null }[]; client: { netns: string } };
  const urls = Object.fromEntries(status.hosts.map((h) => [h.name, h.management?.url]));
  assert.equal(urls['host1'], 'https://10.10.0.11:7443');
  assert.equal(urls['host2'], 'https://10.10.0.12:7443');
  assert.equal(status.client.netns, `${PREFIX}client`);
  const artifacts = await artifactsReady;
  t.diagnostic(`screenshots and, afterwards, both daemons' logs in ${artifacts}`);
  const b = await launchBrowser(cleanup, artifacts, { netns: status.client.netns });
  const one = b.page;
  // A failed step leaves a picture of the page it failed on.
  try {
    const shot = async (p: Page, name: string): Promise<void> => {
      await p.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
    };

    // ── host1: first run, the pair on the dashboard ──
    await setUp(one, urls['host1']!);
    await one.locator('#pair [data-host=host1] .badge', { hasText: 'paired' }).waitFor();
    await one.locator('#pair [data-host=host2] .badge', { hasText: 'paired' }).waitFor();
    await one.locator('#dashboard-vms td', { hasText: 'demo' }).first().waitFor();
    await shot(one, '01-host1-dashboard');

    // ── a VM made from the form (the guest files of the demo VM: the pair's), started, seen running, stopped ──
    await one.click('nav a[data-page=vms]');
    await one.locator('#vm-create').waitFor();
    await one.click('#vm-create [data-action=copy-guest]');
    for (const [name, value] of Object.entries({ name: 'web', vcpus: '1', memoryMiB: '128', 'disk0-size': '16', 'nic0-mac': '52:54:00:4c:53:60', 'nic0-address': '10.10.3.60' })) await one.fill(`#vm-create [name=${name}]`, value);
    await one.selectOption('#vm-create [name=protection]', 'none');
    await one.click('#vm-create [data-action=create]');
    await one.locator('h1', { hasText: 'VM web' }).waitFor();
    await one.click('.actions[data-vm=web] [data-action=start]');
    await one.locator('.facts dd', { hasText: /^running, pid \d+/ }).waitFor({ timeout: 60_000 });
    await shot(one, '02-host1-vm-running');
    // Stopped again: a second guest booting under TCG would only slow the failover down.
    await one.click('.actions[data-vm=web] [data-action=stop]');
    await one.locator('.facts dd', { hasText: 'not running here' }).waitFor({ timeout: 60_000 });
    await one.close();

    // ── host2's console, on its dashboard, when host1 loses power ──
    // The failover needs host2's copy current in the pair's epoch: the second guest's boot may have made the
    // pair lose and find itself again, so the cut waits until both hosts are paired in one epoch, demo protected.
    await eventually('both hosts paired in the same epoch, demo protected on both', async () => {
      const [p1, p2] = [await pairOn('host1'), await pairOn('host2')];
      const ok = p1 !== null && p2 !== null && p1.state === 'paired' && p2.state === 'paired' && p1.epoch === p2.epoch && p1.demo === 'protected' && p2.demo === 'protected';
      return { ok, seen: { host1: p1, host2: p2 } };
    }, 120_000);
    const two = await b.context.newPage();
    await setUp(two, urls['host2']!);
    await two.locator('#dashboard-vms td', { hasText: 'web' }).first().waitFor();
    await shot(two, '03-host2-dashboard-before');
    const faultAt = Date.now();
    lab('fail', 'host1', 'power');
    await two.locator('#dashboard-alerts td', { hasText: 'FAILOVER' }).first().waitFor({ timeout: FAILOVER_WAIT_MS });
    t.diagnostic(`FAILOVER alert on host2's dashboard ${Date.now() - faultAt} ms after the power cut`);
    const incident = two.locator('article.incident[data-kind=failover][data-vm=demo]');
    await incident.waitFor();
    // The survivor asks the quorum early (half the peer timeout): its lease comes before the loss, or after it.
    assert.match((await incident.locator('li[data-phase=detect] .what').first().textContent())!, /→ peer-lost|^quorum lease held in epoch \d+ while host1 is still heard/);
    // The decision may pass through isolated (no authority yet) before the grant: the grant is among its steps.
    const decisions = await incident.locator('li[data-phase=decide] .what').allTextContents();
    assert.ok(decisions.some((d) => /^(quorum granted authority|the quorum lease it holds becomes authority) in epoch \d+$/.test(d)), decisions.join(' | '));
    const actions = await incident.locator('li[data-phase=act] .what').allTextContents();
    assert.ok(actions.some((a) => /^took over VM demo from host1 in epoch \d+$/.test(a)), actions.join(' | '));
    assert.ok(actions.some((a) => /^start VM demo \(epoch \d+\)/.test(a)), actions.join(' | '));
    assert.match((await incident.locator('li.pending[data-phase=resync]').textContent())!, /waiting for the peer to return/);
    await two.locator('#pair [data-host=host2] .badge', { hasText: 'solo' }).waitFor();
    await shot(two, '04-host2-dashboard-failover');

    // ── host1 back: the resync steps join the timeline, still without a reload ──
    await two.click('nav a[data-page=timeline]');
    lab('heal', 'host1');
    const timeline = two.locator('article.incident[data-kind=failover][data-vm=demo]').first();
    await timeline.locator('li[data-phase=resync] .what', { hasText: /^mirror VM demo to host1/ }).waitFor({ timeout: RESYNC_WAIT_MS });
    await timeline.locator('li[data-phase=resync] .what', { hasText: /^mirror of VM demo in sync with host1/ }).waitFor({ timeout: RESYNC_WAIT_MS });
    assert.equal(await timeline.locator('li.pending').count(), 0, 'nothing pending once resynced');
    await shot(two, '05-host2-timeline-resynced');
    await two.click('nav a[data-page=storage]');
    await two.locator('#volumes td', { hasText: 'demo' }).first().waitFor();
    await shot(two, '06-host2-storage');

    assert.deepEqual(b.problems.filter((p) => !/status of 401/.test(p)), [], 'no console errors, no CSP violations');
  } catch (e) {
    await b.failureShots();
    throw e;
  }
});
