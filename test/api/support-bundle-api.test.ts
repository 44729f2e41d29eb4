/**
 * The support bundle over the real management API (test/api/harness.ts): a platform manager's download is a
 * .tar.gz that Debian's own `tar` opens, under one directory, with the views, the daemon's recent log, the
 * console log of a VM here and the versions; no secret of the config is in any of its files (the pairing
 * secret, an SNMP community, tokens in webhook and Call Home URLs); read-only users are refused; the
 * download is in the audit log.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness, type Harness } from './harness.js';
import { tempDir } from '../notify/helpers.js';
import { run } from '../../src/util/exec.js';
import { BUNDLE_VIEWS } from '../../src/daemon/support-bundle.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const PAIR_SECRET = 'a-long-enough-secret';
const COMMUNITY = 'community-never-in-a-bundle';
const WEBHOOK_TOKEN = 'WEBHOOKTOKEN0123456789';
const CALL_HOME_KEY = 'CALLHOMEKEY0123456789';
const METRICS_TOKEN = 'metrics-token-never-in-a-bundle';
const SECRETS = [PAIR_SECRET, COMMUNITY, WEBHOOK_TOKEN, CALL_HOME_KEY, METRICS_TOKEN];

async function withUsers(h: Harness): Promise<{ manager: string; reader: string }> {
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const admin = await h.login(ADMIN.name, ADMIN.password);
  const make = async (name: string, group: string): Promise<string> => {
    const r = await h.request('POST', '/api/v1/users', { token: admin, body: { name, password: `${name}-password-1`, groups: [group] } });
    assert.equal(r.status, 201, r.text);
    return h.login(name, `${name}-password-1`);
  };
  return { manager: await make('mark', 'platform-managers'), reader: await make('rita', 'read-only') };
}

/** Every file under `dir`, relative to it. */
async function filesUnder(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...(await filesUnder(path.join(dir, e.name), `${prefix}${e.name}/`)));
    else out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

test("a platform manager's support bundle: views, recent log, console log, versions, and no secret; read-only users refused; audited", async () => {
  const scratch = await tempDir(cleanup, 'lockstep-support-bundle-');
  const h = await startHarness(cleanup, {
    metricsToken: METRICS_TOKEN,
    config: () => ({
      notifications: {
        snmp: { targets: [{ host: '127.0.0.1', port: 9, community: COMMUNITY }] },
        callHome: { url: `https://127.0.0.1:9/v1/reports?key=${CALL_HOME_KEY}` },
        webhooks: [{ url: `https://127.0.0.1:9/hooks/${WEBHOOK_TOKEN}` }],
      },
    }),
  });
  const { manager, reader } = await withUsers(h);
  assert.equal((await h.request('POST', '/api/v1/vms', { token: manager, body: SAMPLE_VM })).status, 201);
  // What the VM's QEMU wrote on its serial console here (the file the console-log route reads).
  const serial = h.api.consoleLogFile('web');
  await mkdir(path.dirname(serial), { recursive: true });
  await writeFile(serial, 'Linux version 6.1.0\nrecord service ready\n');
  // The receivers down: their failures are logged, and the log goes in the bundle.
  const tested = await h.request('POST', '/api/v1/notifications/test', { token: manager });
  assert.equal(tested.status, 200, tested.text);
  h.daemonLog.add('a line only the daemon log has');

  const refused = await h.request('POST', '/api/v1/support/bundle', { token: reader });
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.body.error.code, 'FORBIDDEN');

  const r = await h.request('POST', '/api/v1/support/bundle', { token: manager });
  assert.equal(r.status, 200, r.text.slice(0, 200));
  assert.equal(r.headers['content-type'], 'application/gzip');
  const name = /^attachment; filename="(lockstep-support-host1-\d{8}T\d{6}Z)\.tar\.gz"$/.exec(String(r.headers['content-disposition']))?.[1];
  assert.ok(name, `a file name: ${r.headers['content-disposition']}`);
  const archive = path.join(scratch, `${name}.tar.gz`);
  await writeFile(archive, r.bytes);
  const out = path.join(scratch, 'out');
  await mkdir(out);
  await run('tar', ['-xzf', archive, '-C', out]);
  assert.deepEqual(await readdir(out), [name], 'everything under one directory');
  const root = path.join(out, name);
  const files = await filesUnder(root);
  assert.deepEqual(files, [
    'MANIFEST.txt',
    ...Object.keys(BUNDLE_VIEWS).map((id) => `api/${id}.json`).sort(),
    'lockstepd.log',
    'system.json',
    'vms/web/console-log.txt',
  ].sort());

  const json = async (f: string): Promise<any> => JSON.parse(await readFile(path.join(root, f), 'utf8'));
  assert.equal((await json('api/getStatus.json')).host, 'host1');
  assert.deepEqual((await json('api/listVms.json')).map((v: { name: string }) => v.name), ['web']);
  const events = await json('api/listEvents.json');
  assert.ok(events.some((e: { what: string }) => /defined VM web/.test(e.what)), `the event log has the VM defined: ${JSON.stringify(events.map((e: { what: string }) => e.what))}`);
  assert.equal((await json('api/getPreferences.json')).host, 'host1');
  assert.equal((await json('api/listNotifications.json')).receivers.length, 3);
  const system = await json('system.json');
  assert.equal(system.node, process.version);
  assert.match(system.qemu, /^QEMU emulator version \d/);
  assert.equal(system.lockstep, JSON.parse(await readFile(path.join(process.cwd(), 'package.json'), 'utf8')).version);
  assert.equal(await readFile(path.join(root, 'vms/web/console-log.txt'), 'utf8'), 'Linux version 6.1.0\nrecord service ready\n');
  const daemonLog = await readFile(path.join(root, 'lockstepd.log'), 'utf8');
  assert.match(daemonLog, /a line only the daemon log has/);
  const manifest = await readFile(path.join(root, 'MANIFEST.txt'), 'utf8');
  assert.match(manifest, /^Lockstep support bundle of host1, made \d{4}-/);
  for (const f of files.filter((f) => f !== 'MANIFEST.txt')) assert.ok(manifest.includes(`  ${f}`), `the manifest lists ${f}`);
  assert.doesNotMatch(manifest, /Not included/, 'every part could be read');

  for (const f of files) {
    const text = await readFile(path.join(root, f), 'utf8');
    for (const s of SECRETS) assert.ok(!text.includes(s), `${f} holds a secret (${s})`);
  }

  const audit = await h.request('GET', '/api/v1/audit?text=support', { token: manager });
  assert.equal(audit.status, 200, audit.text);
  assert.deepEqual(
    audit.body.entries.map((e: { user: string; operation: string; result: string }) => [e.user, e.operation, e.result]),
    [
      ['mark', 'makeSupportBundle', 'ok'],
      ['rita', 'makeSupportBundle', 'denied'],
    ],
  );
});
