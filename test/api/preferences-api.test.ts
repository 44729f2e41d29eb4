/**
 * The preferences and notifications routes over the real management API (test/api/harness.ts), with real
 * receivers on 127.0.0.1: an SMTP server with STARTTLS and AUTH, Debian's snmptrapd, HTTPS endpoints for
 * Call Home and a webhook, and a webhook whose endpoint is down. "Send test" reaches each receiver and the
 * answer says each outcome; the one that is down gives its error and costs nothing else (the real alert
 * waiting for it stays waiting, the others' deliveries are as they were). No secret of the config is in
 * any answer. Roles, validation, the audit log, and the pure parts (the clock's reading, shown URLs).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, startHarness, type Answer, type Harness } from './harness.js';
import { HttpsTestServer, SmtpTestServer, freePort, logAlert, parseMessage, startSnmptrapd, tempDir, testPki, waitFor } from '../notify/helpers.js';
import { MANAGEMENT_ROUTES } from '../../src/api/management-routes.js';
import { validate } from '../../src/api/schema.js';
import { isLockstepError } from '../../src/util/errors.js';
import { parseAdjtimex } from '../../src/daemon/host-clock.js';
import { notificationsView, shownUrl } from '../../src/notify/receiver-view.js';
import { DEFAULT_RETRY } from '../../src/notify/receivers.js';
import { ConfigFile } from '../../src/daemon/config-file.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const SMTP_PASSWORD = 'smtp-password-never-shown';
const COMMUNITY = 'community-never-shown';
const PAIR_SECRET = 'a-long-enough-secret';
/** Tokens in URLs, as chat services and support portals put them. */
const WEBHOOK_TOKEN = 'WEBHOOKTOKEN0123456789';
const DOWN_TOKEN = 'DOWNTOKEN0123456789';
const CALL_HOME_KEY = 'CALLHOMEKEY0123456789';
const SECRETS = [SMTP_PASSWORD, COMMUNITY, PAIR_SECRET, WEBHOOK_TOKEN, DOWN_TOKEN, CALL_HOME_KEY];

function documented(operationId: string, r: Answer): void {
  const route = MANAGEMENT_ROUTES.find((x) => x.operationId === operationId)!;
  assert.equal(r.status, route.response.status, `${operationId} answered ${r.status}: ${r.text}`);
  try {
    validate(route.response.schema!, r.body, 'INVALID_ARGUMENT');
  } catch (e) {
    assert.fail(`${operationId}'s answer does not match its documented schema: ${isLockstepError(e) ? e.message : String(e)}`);
  }
}

function expectError(r: Answer, status: number, code: string, field?: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.equal(r.body?.error?.code, code, r.text);
  if (field !== undefined) assert.equal(r.body.error.fields.field, field, r.text);
}

function noSecrets(what: string, text: string): void {
  for (const s of SECRETS) assert.ok(!text.includes(s), `${what} shows a secret (${s}): ${text}`);
}

async function users(h: Harness): Promise<{ admin: string; manager: string; reader: string }> {
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const admin = await h.login(ADMIN.name, ADMIN.password);
  const make = async (name: string, group: string): Promise<string> => {
    const r = await h.request('POST', '/api/v1/users', { token: admin, body: { name, password: `${name}-password-1`, groups: [group] } });
    assert.equal(r.status, 201, r.text);
    return h.login(name, `${name}-password-1`);
  };
  return { admin, manager: await make('mark', 'platform-managers'), reader: await make('rita', 'read-only') };
}

/** Every kind of receiver, for real, and one webhook whose endpoint is down. */
async function withReceivers() {
  const scratch = await tempDir(cleanup, 'lockstep-prefs-receivers-');
  const pki = await testPki(scratch);
  const smtp = await SmtpTestServer.start(cleanup, { pki, offerStartTls: true, auth: { user: 'alerts', password: SMTP_PASSWORD, mechanisms: ['PLAIN'] } });
  const passwordFile = path.join(scratch, 'smtp-password');
  await writeFile(passwordFile, `${SMTP_PASSWORD}\n`);
  const trapd = await startSnmptrapd(cleanup, scratch, COMMUNITY);
  const support = await HttpsTestServer.start(cleanup, pki);
  const chat = await HttpsTestServer.start(cleanup, pki);
  const downPort = await freePort('tcp');
  const h = await startHarness(cleanup, {
    testTimeoutMs: 5000,
    config: (dir) => ({
      mgmtInterface: 'mgmt0',
      businessInterface: 'biz0',
      managementApi: { address: '127.0.0.1', port: 7443 },
      owner: { name: 'Example Manufacturing', contact: 'Night shift operations', email: 'ops@example.com', site: 'Plant 2, hall B' },
      quorum: [
        { id: 'quorum1', address: '10.10.0.21', port: 7790, ca: path.join(dir, 'quorum1-ca.crt') },
        { id: 'quorum2', address: '10.10.0.22', port: 7790, ca: path.join(dir, 'quorum2-ca.crt') },
      ],
      splitsite: { ftRttLimitMs: 5, haRttLimitMs: 20 },
      resync: { maxMiBps: 200, busyMiBps: 32 },
      notifications: {
        minSeverity: 'warning',
        smtp: { host: '127.0.0.1', port: smtp.port, from: 'lockstep@example.com', to: ['ops@example.com'], starttls: 'required', user: 'alerts', passwordFile, caFile: pki.caFile },
        snmp: { targets: [{ host: '127.0.0.1', port: trapd.port, community: COMMUNITY }] },
        callHome: { url: support.url(`/v1/reports?key=${CALL_HOME_KEY}`), caFile: pki.caFile },
        webhooks: [
          { url: chat.url(`/hooks/T000/${WEBHOOK_TOKEN}`), caFile: pki.caFile },
          { url: `https://127.0.0.1:${downPort}/hooks/${DOWN_TOKEN}`, caFile: pki.caFile },
        ],
        // No retry within the test: a failed delivery stays waiting, as it was.
        retry: { initialMs: 600_000, maxMs: 600_000 },
      },
    }),
  });
  return { h, smtp, trapd, support, chat, downPort };
}

test('"send test" reaches every real receiver; the one that is down gives its error and costs nothing else', async () => {
  const { h, smtp, trapd, support, chat, downPort } = await withReceivers();
  const { manager, reader, admin } = await users(h);
  const names = ['smtp', `snmp:127.0.0.1:${trapd.port}`, 'call-home', 'webhook:1', 'webhook:2'];

  // A real alert first: delivered to four receivers, waiting for the fifth.
  logAlert(h.db, 'critical', 'FAILOVER', 'VM web failed over from host1 to host2');
  h.notifier!.nudge();
  await waitFor('the alert delivered where it can be', () => h.notifier!.outbox.list({ limit: 10, state: 'delivered' }).length === 4);
  await waitFor('the failed attempt recorded', () => h.notifier!.outbox.list({ limit: 10, state: 'pending' })[0]?.attempts === 1);
  const outboxBefore = h.notifier!.outbox.list({ limit: 100 });
  const mailsBefore = smtp.accepted().length;

  const listed = await h.request('GET', '/api/v1/notifications', { token: reader });
  documented('listNotifications', listed);
  noSecrets('GET /v1/notifications', listed.text);
  assert.equal(listed.body.state, 'on');
  assert.equal(listed.body.minSeverity, 'warning');
  assert.deepEqual(listed.body.receivers.map((r: { name: string }) => r.name), names);
  const byName = (body: { receivers: { name: string }[] }, name: string): any => body.receivers.find((r) => r.name === name);
  for (const name of names.slice(0, 4)) {
    assert.equal(byName(listed.body, name).lastDelivery.state, 'delivered', name);
    assert.equal(byName(listed.body, name).lastDelivery.code, 'FAILOVER');
    assert.equal(byName(listed.body, name).pending, 0);
  }
  const down = byName(listed.body, 'webhook:2');
  assert.deepEqual([down.pending, down.lastDelivery.state, down.lastDelivery.attempts], [1, 'retrying', 1]);
  assert.match(down.lastDelivery.lastError, /failed at connect: POST https:\/\/127\.0\.0\.1:\d+\/… failed: .*ECONNREFUSED/);
  assert.equal(down.target, `https://127.0.0.1:${downPort}/…`);
  assert.deepEqual(byName(listed.body, 'smtp').settings, {
    host: '127.0.0.1', port: smtp.port, from: 'lockstep@example.com', to: ['ops@example.com'], starttls: 'required', user: 'alerts',
    passwordFile: byName(listed.body, 'smtp').settings.passwordFile, caFile: byName(listed.body, 'smtp').settings.caFile,
  });
  assert.deepEqual(byName(listed.body, names[1]!).settings, { host: '127.0.0.1', port: trapd.port, version: 'v2c' }, 'no community');

  // Who may: a platform manager; not a reader, not without a session.
  expectError(await h.request('POST', '/api/v1/notifications/test', { token: reader }), 403, 'FORBIDDEN');
  expectError(await h.request('POST', '/api/v1/notifications/test'), 401, 'NOT_AUTHENTICATED');
  expectError(await h.request('POST', '/api/v1/notifications/smtp/test', { token: reader }), 403, 'FORBIDDEN');

  const tested = await h.request('POST', '/api/v1/notifications/test', { token: manager });
  documented('testNotifications', tested);
  noSecrets('POST /v1/notifications/test', tested.text);
  assert.deepEqual([tested.body.host, tested.body.delivered, tested.body.failed], ['host1', 4, 1]);
  const outcome = (name: string): any => tested.body.results.find((r: { receiver: string }) => r.receiver === name).outcome;
  assert.deepEqual(tested.body.results.map((r: { receiver: string }) => r.receiver), names);
  assert.match(outcome('smtp').detail, /^250 /, 'the relay accepted the mail');
  assert.equal(outcome(names[1]!).ok, true);
  assert.equal(outcome('call-home').detail, 'HTTP 200');
  assert.equal(outcome('webhook:1').detail, 'HTTP 200');
  assert.equal(outcome('webhook:2').ok, false);
  assert.equal(outcome('webhook:2').step, 'connect');
  assert.match(outcome('webhook:2').error, new RegExp(`POST https://127\\.0\\.0\\.1:${downPort}/… failed: .*ECONNREFUSED`));

  // Each receiver got the test notification, as a test.
  assert.equal(smtp.accepted().length, mailsBefore + 1);
  const mail = parseMessage(smtp.accepted().at(-1)!.message!);
  assert.match(mail.headers.get('subject')!, /^\[Lockstep info\] TEST on host1: test notification/);
  assert.equal(smtp.accepted().at(-1)!.authUser, 'alerts');
  await waitFor('the test trap', () => trapd.output().includes('.1.3.6.1.4.1.32473.1.0.2'));
  const testPost = (server: HttpsTestServer): any => server.accepted().map((r) => r.body as any).find((b) => (b.alert ?? b).test === true);
  assert.equal(testPost(chat).code, 'TEST');
  assert.equal(testPost(support).alert.code, 'TEST');
  assert.match(chat.accepted().at(-1)!.url, new RegExp(WEBHOOK_TOKEN), 'the webhook is posted to its full URL; only the answer hides it');

  // Nothing else changed: no delivery was made, sent or marked by the test; the waiting one still waits.
  assert.deepEqual(h.notifier!.outbox.list({ limit: 100 }), outboxBefore);

  // The receivers now show their tests.
  const after = (await h.request('GET', '/api/v1/notifications', { token: reader })).body;
  for (const name of names.slice(0, 4)) assert.equal(byName(after, name).lastTest.outcome.ok, true, name);
  assert.equal(byName(after, 'webhook:2').lastTest.outcome.step, 'connect');

  // One receiver by name (a name with colons, percent-encoded or not).
  const one = await h.request('POST', `/api/v1/notifications/${encodeURIComponent(names[1]!)}/test`, { token: manager });
  documented('testNotification', one);
  assert.deepEqual(one.body.results.map((r: { receiver: string; outcome: { ok: boolean } }) => [r.receiver, r.outcome.ok]), [[names[1], true]]);
  const hook = await h.request('POST', '/api/v1/notifications/webhook:1/test', { token: manager });
  assert.deepEqual([hook.body.delivered, hook.body.failed, hook.body.results[0].receiver], [1, 0, 'webhook:1']);
  const unknown = await h.request('POST', '/api/v1/notifications/webhook:9/test', { token: manager });
  expectError(unknown, 404, 'UNKNOWN_RECEIVER');
  assert.match(unknown.body.error.message, /receivers: smtp, snmp:127\.0\.0\.1:\d+, call-home, webhook:1, webhook:2/);

  // Audited like every change, refusals included; the target is the receiver named.
  const audit = await h.request('GET', '/api/v1/audit?kind=user&text=Notification', { token: admin });
  assert.deepEqual(
    audit.body.entries.map((e: { operation: string; user: string; target: string | null; result: string; code: string | null }) => [e.operation, e.user, e.target, e.result, e.code]),
    [
      ['testNotification', 'mark', 'webhook:9', 'failed', 'UNKNOWN_RECEIVER'],
      ['testNotification', 'mark', 'webhook:1', 'ok', null],
      ['testNotification', 'mark', names[1], 'ok', null],
      ['testNotifications', 'mark', null, 'ok', null],
      ['testNotification', 'rita', 'smtp', 'denied', 'FORBIDDEN'],
      ['testNotifications', null, null, 'denied', 'NOT_AUTHENTICATED'],
      ['testNotifications', 'rita', null, 'denied', 'FORBIDDEN'],
    ],
  );
});

test('the preferences: addresses, quorum servers, clock, notifications, SplitSite, resync rate; which are editable, no secrets', async () => {
  const { h, trapd } = await withReceivers();
  const { reader } = await users(h);
  const r = await h.request('GET', '/api/v1/preferences', { token: reader });
  documented('getPreferences', r);
  noSecrets('GET /v1/preferences', r.text);
  const p = r.body;
  assert.deepEqual(p.pair, { id: 'test', peer: 'host2', tiebreakWinner: 'host2' });
  assert.deepEqual(p.owner, { name: 'Example Manufacturing', contact: 'Night shift operations', email: 'ops@example.com', phone: null, site: 'Plant 2, hall B' });
  assert.deepEqual(p.editable, { owner: true, notifications: true, resync: true, network: false, quorum: false, splitsite: false, pair: false });
  assert.match(p.howToChange, /owner, notifications and resync: PUT \/v1\/preferences\/SECTION .*the rest: edit lockstepd's config file and restart lockstepd/);
  assert.equal(p.configFile, h.configFile);
  assert.deepEqual(p.network.management, { interface: 'mgmt0', apiAddress: '127.0.0.1', apiPort: 7443 });
  assert.deepEqual(p.network.business, { bridge: 'br-biz', interface: 'biz0' });
  assert.deepEqual(p.network.alink, [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }]);
  assert.deepEqual(p.network.dataPorts, { replication: 7793, migration: 7794, checkpoint: 7795 });
  assert.deepEqual(p.quorum, {
    active: null,
    servers: [
      { id: 'quorum1', role: 'preferred', address: '10.10.0.21', port: 7790, active: false },
      { id: 'quorum2', role: 'alternate', address: '10.10.0.22', port: 7790, active: false },
    ],
  });
  assert.ok(Math.abs(Date.parse(p.clock.now) - Date.now()) < 60_000, p.clock.now);
  assert.equal(typeof p.clock.timeZone, 'string');
  assert.equal(p.clock.utcOffsetMinutes, 0 - new Date().getTimezoneOffset());
  assert.equal(p.clock.ntp.source, 'kernel (adjtimex)');
  assert.ok([true, false, null].includes(p.clock.ntp.synchronized), JSON.stringify(p.clock.ntp));
  assert.deepEqual(p.splitsite, { ftRttLimitMs: 5, haRttLimitMs: 20, alinkRttMs: null });
  assert.deepEqual(p.resync, { maxMiBps: 200, busyMiBps: 32 });
  assert.deepEqual(p.notifications.receivers.map((x: { name: string }) => x.name), ['smtp', `snmp:127.0.0.1:${trapd.port}`, 'call-home', 'webhook:1', 'webhook:2']);
  assert.deepEqual(p.notifications.receivers.map((x: { target: string }) => x.target.replace(/\d{4,5}/g, 'P')), [
    '127.0.0.1:P → ops@example.com',
    '127.0.0.1:P (SNMPv2c trap)',
    'https://127.0.0.1:P/…',
    'https://127.0.0.1:P/…',
    'https://127.0.0.1:P/…',
  ]);
  // The view itself has no setter: each editable section has its own (preference-setters-api.test.ts).
  for (const method of ['PATCH', 'POST', 'PUT', 'DELETE']) expectError(await h.request(method, '/api/v1/preferences', { token: reader, body: { resync: {} } }), 405, 'METHOD_NOT_ALLOWED');
  expectError(await h.request('GET', '/api/v1/preferences'), 401, 'NOT_AUTHENTICATED');
});

test('without notifications: the view says off, a test is NOTIFICATIONS_OFF; bad input is refused naming the field', async () => {
  const h = await startHarness(cleanup);
  const { manager, reader } = await users(h);
  const listed = await h.request('GET', '/api/v1/notifications', { token: reader });
  documented('listNotifications', listed);
  assert.deepEqual(listed.body, { state: 'off', error: null, minSeverity: null, retry: null, receivers: [] });
  expectError(await h.request('POST', '/api/v1/notifications/test', { token: manager }), 409, 'NOTIFICATIONS_OFF');
  expectError(await h.request('POST', '/api/v1/notifications/smtp/test', { token: manager }), 409, 'NOTIFICATIONS_OFF');
  const prefs = await h.request('GET', '/api/v1/preferences', { token: reader });
  documented('getPreferences', prefs);
  assert.deepEqual(prefs.body.quorum, { active: null, servers: [] });
  assert.equal(prefs.body.owner, null, 'no owner section: null, not an empty owner');
  assert.deepEqual(prefs.body.network.management, { interface: 'lo', apiAddress: null, apiPort: null });
  assert.deepEqual(prefs.body.splitsite, { ftRttLimitMs: 2, haRttLimitMs: 10, alinkRttMs: null }, "everRun's limits by default");
  assert.deepEqual(prefs.body.resync, { maxMiBps: null, busyMiBps: 64 });

  const cases: [string, string, number, string, string?][] = [
    ['GET', '/api/v1/preferences?verbose=1', 400, 'INVALID_ARGUMENT', 'verbose'],
    ['GET', '/api/v1/notifications?receiver=smtp', 400, 'INVALID_ARGUMENT', 'receiver'],
    ['POST', `/api/v1/notifications/${'x'.repeat(301)}/test`, 400, 'INVALID_ARGUMENT', 'name'],
    ['POST', '/api/v1/notifications/%E0%A4%A/test', 400, 'INVALID_ARGUMENT', 'name'],
    ['POST', '/api/v1/notifications/test?receiver=smtp', 400, 'INVALID_ARGUMENT', 'receiver'],
    ['GET', '/api/v1/notifications/test', 405, 'METHOD_NOT_ALLOWED'],
    ['DELETE', '/api/v1/notifications', 405, 'METHOD_NOT_ALLOWED'],
    ['GET', '/api/v1/notifications/smtp', 404, 'UNKNOWN_ENDPOINT'],
  ];
  for (const [method, p, status, code, field] of cases) expectError(await h.request(method, p, { token: manager }), status, code, field);
});

test('a receiver that accepts and then says nothing: the test gives up at the step it had reached', async () => {
  const silent = net.createServer(() => {});
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const sockets = new Set<net.Socket>();
  silent.on('connection', (s) => sockets.add(s));
  cleanup.add(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); silent.close(() => r()); }));
  const port = (silent.address() as net.AddressInfo).port;
  const h = await startHarness(cleanup, {
    testTimeoutMs: 300,
    config: () => ({ notifications: { smtp: { host: '127.0.0.1', port, from: 'lockstep@example.com', to: ['ops@example.com'], starttls: 'off' } } }),
  });
  const { manager } = await users(h);
  const started = Date.now();
  const r = await h.request('POST', '/api/v1/notifications/smtp/test', { token: manager });
  documented('testNotification', r);
  assert.ok(Date.now() - started < 5000, 'bounded by the test timeout');
  const o = r.body.results[0].outcome;
  assert.deepEqual([o.ok, o.step], [false, 'greeting'], JSON.stringify(o));
  assert.match(o.error, /no outcome within 300 ms: the test gave up/);
});

// ── the setters: owner, resync, notifications ─────────────────────────────────────────────────────────

async function onDisk(h: Harness) {
  return (await ConfigFile.load(h.configFile)).config;
}

function auditedPreferences(body: { entries: { operation: string; user: string | null; target: string | null; result: string; code: string | null }[] }) {
  return body.entries.map((e) => [e.operation, e.user, e.target, e.result, e.code]);
}

test('owner and resync: set live by a platform manager or an administrator, written to lockstepd.json, audited; refused to a reader, without a session, and when wrong', async () => {
  const h = await startHarness(cleanup, { config: () => ({ owner: { name: 'Example Manufacturing', site: 'Plant 2' }, resync: { maxMiBps: 200 } }) });
  const { admin, manager, reader } = await users(h);

  const owner = { name: 'Example Manufacturing SA', contact: 'Night shift operations', email: 'ops@example.com', phone: '+33 1 23 45 67 89', site: 'Plant 3, hall A' };
  const set = await h.request('PUT', '/api/v1/preferences/owner', { token: manager, body: owner });
  documented('setOwnerPreference', set);
  assert.deepEqual(set.body.owner, owner, 'the answer is the preferences with the new owner');
  assert.deepEqual((await h.request('GET', '/api/v1/preferences', { token: reader })).body.owner, owner, 'everyone sees it at once');
  // The next start reads what runs now; the rest of the file is as it was, private as it was.
  const disk = await onDisk(h);
  assert.deepEqual(disk.owner, owner);
  assert.deepEqual([disk.pair.secret, disk.resync.maxBytesPerSec, disk.host], [PAIR_SECRET, 200 * 1024 * 1024, 'host1']);
  assert.equal((await stat(h.configFile)).mode & 0o777, 0o600);

  // Partial owners: what is left out is not given; null removes the section.
  const partial = await h.request('PUT', '/api/v1/preferences/owner', { token: admin, body: { name: 'Example Manufacturing SA', email: 'noc@example.com' } });
  assert.deepEqual(partial.body.owner, { name: 'Example Manufacturing SA', contact: null, email: 'noc@example.com', phone: null, site: null });
  const removed = await h.request('PUT', '/api/v1/preferences/owner', { token: admin, body: null });
  documented('setOwnerPreference', removed);
  assert.equal(removed.body.owner, null);
  assert.ok(!('owner' in JSON.parse(await readFile(h.configFile, 'utf8'))), 'no owner section in the file');

  const resync = await h.request('PUT', '/api/v1/preferences/resync', { token: admin, body: { maxMiBps: 100, busyMiBps: null } });
  documented('setResyncPreference', resync);
  assert.deepEqual(resync.body.resync, { maxMiBps: 100, busyMiBps: null });
  assert.deepEqual((await onDisk(h)).resync, { maxBytesPerSec: 100 * 1024 * 1024, busyBytesPerSec: null });
  const defaults = await h.request('PUT', '/api/v1/preferences/resync', { token: manager, body: {} });
  assert.deepEqual(defaults.body.resync, { maxMiBps: null, busyMiBps: 64 }, 'absent: the defaults, as in the file');

  // Refused: nothing written, nothing changed.
  const fileBefore = await readFile(h.configFile, 'utf8');
  expectError(await h.request('PUT', '/api/v1/preferences/owner', { token: reader, body: owner }), 403, 'FORBIDDEN');
  expectError(await h.request('PUT', '/api/v1/preferences/resync', { body: { maxMiBps: 5 } }), 401, 'NOT_AUTHENTICATED');
  const wrong: [string, unknown, string, RegExp][] = [
    ['owner', { contact: 'no name' }, 'name', /'owner\.name' is required/],
    ['owner', { name: 'two\nlines' }, 'name', /text on one line/],
    ['owner', { name: 'x'.repeat(201) }, 'name', /1 to 200 characters/],
    ['owner', { name: 'Example', nickname: 'Ex' }, 'nickname', /not a known field/],
    ['owner', { name: 42 }, 'name', /must be a string/],
    ['resync', { maxMiBps: 0 }, 'maxMiBps', /above 0, or null for no limit/],
    ['resync', { busyMiBps: 'fast' }, 'busyMiBps', /must be a number or null/],
    ['resync', { max: 5 }, 'max', /not a known field/],
    ['resync', null, '', /must be an object/],
  ];
  for (const [section, body, field, message] of wrong) {
    const r = await h.request('PUT', `/api/v1/preferences/${section}`, { token: manager, body });
    expectError(r, 400, 'INVALID_SPEC', field);
    assert.match(r.body.error.message, message);
  }
  assert.equal(await readFile(h.configFile, 'utf8'), fileBefore);
  assert.deepEqual((await h.request('GET', '/api/v1/preferences', { token: reader })).body.resync, { maxMiBps: null, busyMiBps: 64 });

  const audit = await h.request('GET', '/api/v1/audit?kind=user&text=Preference&limit=20', { token: admin });
  assert.deepEqual(auditedPreferences(audit.body), [
    ...wrong.map(([section]) => [section === 'owner' ? 'setOwnerPreference' : 'setResyncPreference', 'mark', section, 'failed', 'INVALID_SPEC']).reverse(),
    ['setResyncPreference', null, 'resync', 'denied', 'NOT_AUTHENTICATED'],
    ['setOwnerPreference', 'rita', 'owner', 'denied', 'FORBIDDEN'],
    ['setResyncPreference', 'mark', 'resync', 'ok', null],
    ['setResyncPreference', 'admin', 'resync', 'ok', null],
    ['setOwnerPreference', 'admin', 'owner', 'ok', null],
    ['setOwnerPreference', 'admin', 'owner', 'ok', null],
    ['setOwnerPreference', 'mark', 'owner', 'ok', null],
  ]);
});

test('a config file edited by hand since lockstepd read it is not overwritten: CONFIG_CHANGED, and nothing changes live', async () => {
  const h = await startHarness(cleanup, { config: () => ({ owner: { name: 'As read at start' } }) });
  const { admin, manager } = await users(h);
  const edited = (await readFile(h.configFile, 'utf8')).replace('"As read at start"', '"Edited by hand"');
  await writeFile(h.configFile, edited);

  const owner = await h.request('PUT', '/api/v1/preferences/owner', { token: manager, body: { name: 'Through the API' } });
  expectError(owner, 409, 'CONFIG_CHANGED');
  assert.match(owner.body.error.message, /was changed on disk since lockstepd read it; lockstepd does not overwrite that edit/);
  expectError(await h.request('PUT', '/api/v1/preferences/resync', { token: manager, body: { maxMiBps: 10 } }), 409, 'CONFIG_CHANGED');
  assert.equal(await readFile(h.configFile, 'utf8'), edited, 'the hand edit is kept');
  const now = (await h.request('GET', '/api/v1/preferences', { token: manager })).body;
  assert.deepEqual([now.owner.name, now.resync.maxMiBps], ['As read at start', null], 'what runs is what lockstepd read');
  const audit = await h.request('GET', '/api/v1/audit?kind=user&text=Preference', { token: admin });
  assert.deepEqual(auditedPreferences(audit.body), [
    ['setResyncPreference', 'mark', 'resync', 'failed', 'CONFIG_CHANGED'],
    ['setOwnerPreference', 'mark', 'owner', 'failed', 'CONFIG_CHANGED'],
  ]);
});

test('a write that fails changes nothing, in the file or live: CONFIG_WRITE; the next one works', async () => {
  const h = await startHarness(cleanup, { config: () => ({ owner: { name: 'As read at start' }, resync: { maxMiBps: 200 } }) });
  const { manager } = await users(h);
  const before = await readFile(h.configFile, 'utf8');
  // The setter's temporary file cannot be made: a directory stands where it goes (the write step fails for real).
  const tmp = path.join(h.dir, `.lockstepd.json.${process.pid}.tmp`);
  await mkdir(tmp);
  const r = await h.request('PUT', '/api/v1/preferences/resync', { token: manager, body: { maxMiBps: 10 } });
  expectError(r, 500, 'CONFIG_WRITE');
  assert.match(r.body.error.message, /^cannot write .*lockstepd\.json: .*; nothing was changed$/);
  assert.equal(r.body.error.fields.step, 'write');
  assert.equal(await readFile(h.configFile, 'utf8'), before);
  assert.deepEqual((await h.request('GET', '/api/v1/preferences', { token: manager })).body.resync, { maxMiBps: 200, busyMiBps: 64 }, 'not applied');
  await rmdir(tmp);
  const ok = await h.request('PUT', '/api/v1/preferences/resync', { token: manager, body: { maxMiBps: 10 } });
  assert.deepEqual([ok.status, ok.body.resync], [200, { maxMiBps: 10, busyMiBps: 64 }]);
  assert.deepEqual((await onDisk(h)).resync.maxBytesPerSec, 10 * 1024 * 1024);
});

test('notifications: set live with every secret kept by name, the notifier reconfigured in place, the file holding the secrets and nothing else showing them', async () => {
  const { h, trapd } = await withReceivers();
  const { admin, manager, reader } = await users(h);
  const snmpName = `snmp:127.0.0.1:${trapd.port}`;

  // A real alert first: delivered to four, waiting for the webhook that is down.
  logAlert(h.db, 'critical', 'FAILOVER', 'VM web failed over from host1 to host2');
  h.notifier!.nudge();
  await waitFor('the alert delivered where it can be', () => h.notifier!.outbox.list({ limit: 10, state: 'delivered' }).length === 4);

  // The view gives the section in the setter's form, secrets kept by name.
  const form = (await h.request('GET', '/api/v1/preferences', { token: reader })).body.notificationsConfig;
  noSecrets('notificationsConfig', JSON.stringify(form));
  assert.deepEqual(form.snmp, { targets: [{ host: '127.0.0.1', port: trapd.port, community: { keep: snmpName } }] });
  assert.deepEqual([form.callHome.url, form.webhooks.map((w: { url: unknown }) => w.url)], [{ keep: 'call-home' }, [{ keep: 'webhook:1' }, { keep: 'webhook:2' }]]);

  // Sent back unchanged, the file is the same config.
  const unchanged = await h.request('PUT', '/api/v1/preferences/notifications', { token: manager, body: form });
  documented('setNotificationsPreference', unchanged);
  assert.deepEqual((await onDisk(h)).notifications, h.config.notifications);

  // A second relay, another recipient, the webhook that is down removed, only critical alerts.
  const relay = await SmtpTestServer.start(cleanup, { offerStartTls: false });
  const next = {
    ...form,
    minSeverity: 'critical',
    smtp: { host: '127.0.0.1', port: relay.port, from: 'lockstep@example.com', to: ['ops@example.com', 'night@example.com'], starttls: 'off' },
    webhooks: [{ name: 'chat', url: { keep: 'webhook:1' }, caFile: form.webhooks[0].caFile }],
  };
  const set = await h.request('PUT', '/api/v1/preferences/notifications', { token: manager, body: next });
  documented('setNotificationsPreference', set);
  noSecrets('PUT /v1/preferences/notifications', set.text);
  const n = set.body.notifications;
  assert.deepEqual([n.state, n.minSeverity, n.receivers.map((r: { name: string }) => r.name)], ['on', 'critical', ['smtp', snmpName, 'call-home', 'webhook:chat']]);
  assert.equal(n.receivers[0].target, `127.0.0.1:${relay.port} → ops@example.com, night@example.com`);

  // The file has the secrets it kept, for the next start.
  const disk = (await onDisk(h)).notifications!;
  assert.equal(disk.snmp!.targets[0]!.community, COMMUNITY);
  assert.match(disk.callHome!.url, new RegExp(CALL_HOME_KEY));
  assert.deepEqual(disk.webhooks.map((w) => [w.name, w.url.includes(WEBHOOK_TOKEN)]), [['chat', true]]);
  assert.deepEqual([disk.minSeverity, disk.smtp!.port, disk.smtp!.to], ['critical', relay.port, ['ops@example.com', 'night@example.com']]);

  // The same notifier, reconfigured: the delivery waiting for the removed webhook is abandoned, saying so.
  assert.equal(h.notifications.notifier(), h.notifier);
  const abandoned = h.notifier!.outbox.list({ limit: 10, state: 'abandoned' });
  assert.deepEqual(abandoned.map((d) => [d.alert.code, d.detail]), [['FAILOVER', 'the receiver is no longer configured']]);
  // A new alert goes to the new relay and recipients.
  logAlert(h.db, 'critical', 'HOST_FAILED', 'host2 failed');
  h.notifier!.nudge();
  await waitFor('the mail through the new relay', () => relay.accepted().length === 1);
  assert.deepEqual(relay.accepted()[0]!.to, ['ops@example.com', 'night@example.com']);

  // A secret kept from a receiver that is not there, or of another kind, is refused naming the field; a
  // wrong URL is refused without being echoed.
  // The section now, as the view gives it: the base of each refusal.
  const current = set.body.notificationsConfig;
  const refusals: [unknown, string, RegExp][] = [
    [{ ...current, webhooks: [{ url: { keep: 'webhook:7' } }] }, 'webhooks[0].url', /keeps the value of "webhook:7", which is not a configured receiver \(configured: smtp, snmp:127\.0\.0\.1:\d+, call-home, webhook:chat\)/],
    [{ ...current, snmp: { targets: [{ host: '127.0.0.1', community: { keep: 'call-home' } }] } }, 'snmp.targets[0].community', /keeps the value of call-home, which is not a snmp receiver/],
    [{ ...current, webhooks: [{ url: `hooks.example.com/${WEBHOOK_TOKEN}` }] }, 'webhooks[0].url', /must be an absolute URL$/],
    [{ ...current, callHome: { url: `http://support.example.com/?key=${CALL_HOME_KEY}` } }, 'callHome.url', /must be an https URL \(got "http:"\)$/],
    [{ ...current, snmp: { targets: [{ host: '127.0.0.1', community: `${COMMUNITY}\n` }] } }, 'snmp.targets[0].community', /must be 1–64 printable ASCII characters$/],
    [{ ...current, smtp: { ...current.smtp, port: 0 } }, 'smtp.port', /must be a TCP\/UDP port/],
    [{ ...current, pager: {} }, 'pager', /not a known field/],
    [{ minSeverity: 'info' }, '', /names no receiver/],
    [[{ url: `https://hooks.example.com/${WEBHOOK_TOKEN}` }], '', /'notifications' must be a JSON object$/],
  ];
  const fileBefore = await readFile(h.configFile, 'utf8');
  for (const [body, field, message] of refusals) {
    const r = await h.request('PUT', '/api/v1/preferences/notifications', { token: manager, body });
    expectError(r, 400, 'INVALID_SPEC', field);
    assert.match(r.body.error.message, message);
    noSecrets(`refusing ${field}`, r.text);
  }
  assert.equal(await readFile(h.configFile, 'utf8'), fileBefore);
  expectError(await h.request('PUT', '/api/v1/preferences/notifications', { token: reader, body: next }), 403, 'FORBIDDEN');

  // Off, and on again: a new notifier over the same outbox.
  const off = await h.request('PUT', '/api/v1/preferences/notifications', { token: admin, body: null });
  documented('setNotificationsPreference', off);
  assert.deepEqual([off.body.notifications.state, off.body.notificationsConfig], ['off', null]);
  assert.ok(!('notifications' in JSON.parse(await readFile(h.configFile, 'utf8'))));
  expectError(await h.request('POST', '/api/v1/notifications/test', { token: manager }), 409, 'NOTIFICATIONS_OFF');
  const on = await h.request('PUT', '/api/v1/preferences/notifications', { token: admin, body: { webhooks: [{ url: `https://127.0.0.1:${relay.port}/hooks/${DOWN_TOKEN}` }] } });
  assert.deepEqual([on.body.notifications.state, on.body.notifications.receivers.map((r: { name: string }) => r.name)], ['on', ['webhook:1']]);
  assert.notEqual(h.notifications.notifier(), h.notifier);

  // No secret in the audit log, the daemon's log or the notifier's.
  const audit = await h.request('GET', '/api/v1/audit?kind=user&text=setNotifications&limit=50', { token: admin });
  noSecrets('the audit log', audit.text);
  assert.deepEqual(auditedPreferences(audit.body).slice(0, 3), [
    ['setNotificationsPreference', 'admin', 'notifications', 'ok', null],
    ['setNotificationsPreference', 'admin', 'notifications', 'ok', null],
    ['setNotificationsPreference', 'rita', 'notifications', 'denied', 'FORBIDDEN'],
  ]);
  noSecrets('the daemon log', h.daemonLog.text());
  noSecrets('the notifier log', h.notifyLog.join('\n'));
});

test('pure parts: the kernel clock reading, URLs as shown, a notifier that did not start', () => {
  const unsynced = parseAdjtimex(
    '    mode:         0\n-o  offset:       0 us\n    maxerror:     16000000\n    esterror:     16000000\n    status:       64 (UNSYNC)\n    return value: 5 (clock not synchronized)\n',
  );
  assert.deepEqual(unsynced, { synchronized: false, source: 'kernel (adjtimex)', detail: 'clock not synchronized, status 64 (UNSYNC)', maxErrorMs: 16000, estimatedErrorMs: 16000 });
  const synced = parseAdjtimex('    maxerror:     1500\n    esterror:     20\n    status:       8192 (NANO)\n    return value: 0 (clock synchronized)\n');
  assert.deepEqual([synced.synchronized, synced.maxErrorMs, synced.estimatedErrorMs], [true, 1.5, 0.02]);
  assert.equal(parseAdjtimex('adjtimex: Operation not permitted\n').synchronized, null, 'no status word: unknown, not guessed');

  assert.equal(shownUrl('https://hooks.example.com/services/T0/B0/secret'), 'https://hooks.example.com/…');
  assert.equal(shownUrl('https://user:pw@hooks.example.com:8443/?token=x'), 'https://hooks.example.com:8443/…');
  assert.equal(shownUrl('http://hooks.example.com'), 'http://hooks.example.com/');

  const view = notificationsView({
    state: 'failed',
    error: 'NOTIFY_OUTBOX: cannot open',
    config: { minSeverity: 'info', smtp: null, snmp: { targets: [{ host: '10.0.0.9', port: 162, community: COMMUNITY }] }, callHome: null, webhooks: [], retry: DEFAULT_RETRY },
  });
  assert.deepEqual([view.state, view.error, view.receivers.map((r) => [r.name, r.pending, r.lastDelivery])], ['failed', 'NOTIFY_OUTBOX: cannot open', [['snmp:10.0.0.9:162', null, null]]]);
  noSecrets('a failed notifier’s view', JSON.stringify(view));
});
