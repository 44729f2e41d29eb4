/**
 * `lockstep pref show` and `lockstep notification list|test`: parsing, how fixed answers are shown, and the
 * commands themselves against a real lockstepd socket (test/api/harness.ts) with a real HTTPS webhook and
 * one whose endpoint is down — the exit code says whether every receiver took the test, `--json` passes
 * the answer through, and the tests are in the audit log as root's.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { Cleanup } from '../support/cleanup.js';
import { startHarness } from '../api/harness.js';
import { HttpsTestServer, freePort, testPki, tempDir } from '../notify/helpers.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { LockstepError } from '../../src/util/errors.js';
import { main } from '../../src/cli/main.js';
import { parsePrefCommand, type PrefRequest } from '../../src/cli/pref-command.js';
import { renderNotifications, renderPreferences, renderTestAnswer } from '../../src/cli/pref-view.js';
import type { NotificationTestAnswer, PreferencesView } from '../../src/daemon/preference-routes.js';
import type { AuditEntry } from '../../src/audit/audit-log.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('each verb parses into its request', () => {
  const cases: [['pref' | 'notification', string[]], PrefRequest][] = [
    [['pref', ['show']], { noun: 'pref', verb: 'show', json: false, where: {} }],
    [['pref', ['show', '--json', '--host', 'host2']], { noun: 'pref', verb: 'show', json: true, where: { host: 'host2' } }],
    [['notification', ['list', '--socket', '/run/l.sock']], { noun: 'notification', verb: 'list', json: false, where: { socket: '/run/l.sock' } }],
    [['notification', ['test', '--host', 'host1']], { noun: 'notification', verb: 'test', receiver: null, json: false, where: { host: 'host1' } }],
    [['notification', ['test', 'snmp:10.0.0.9:162', '--json']], { noun: 'notification', verb: 'test', receiver: 'snmp:10.0.0.9:162', json: true, where: {} }],
    [['notification', ['test', 'webhook:2']], { noun: 'notification', verb: 'test', receiver: 'webhook:2', json: false, where: {} }],
    [['notification', ['test', 'webhook:pager']], { noun: 'notification', verb: 'test', receiver: 'webhook:pager', json: false, where: {} }],
    [['pref', ['get', 'notifications']], { noun: 'pref', verb: 'get', section: 'notifications', json: false, where: {} }],
    [['pref', ['set', 'owner', '--name', 'Example SA', '--phone', '', '--host', 'host1']], { noun: 'pref', verb: 'set', section: 'owner', owner: { name: 'Example SA', phone: null }, json: false, where: { host: 'host1' } }],
    [['pref', ['set', 'resync', '--max-mibps', '250.5', '--busy-mibps', 'none', '--json']], { noun: 'pref', verb: 'set', section: 'resync', resync: { maxMiBps: 250.5, busyMiBps: null }, json: true, where: {} }],
    [['pref', ['set', 'resync', '--busy-mibps', '32']], { noun: 'pref', verb: 'set', section: 'resync', resync: { busyMiBps: 32 }, json: false, where: {} }],
    [['pref', ['set', 'notifications', '--file', 'receivers.json', '--socket', '/run/l.sock']], { noun: 'pref', verb: 'set', section: 'notifications', file: 'receivers.json', json: false, where: { socket: '/run/l.sock' } }],
    [['pref', []], { verb: 'help', exit: 2 }],
    [['notification', ['help']], { verb: 'help', exit: 0 }],
  ];
  for (const [[noun, argv], want] of cases) assert.deepEqual(parsePrefCommand(noun, argv), want, `${noun} ${argv.join(' ')}`);
});

test('mistakes are usage errors that say what is wrong', () => {
  const bad: [['pref' | 'notification', string[]], RegExp][] = [
    [['pref', ['set', 'resync', '100']], /lockstep pref set resync takes options only \(got '100'\)/],
    [['pref', ['set', 'quorum', '--file', 'q.json']], /usage: lockstep pref set owner\|resync\|notifications OPTIONS \('quorum' is not one\)/],
    [['pref', ['set']], /\(no section given\)/],
    [['pref', ['set', 'owner']], /needs at least one of --name, --contact, --email, --phone, --site/],
    [['pref', ['set', 'owner', '--name', '']], /--name cannot be cleared/],
    [['pref', ['set', 'owner', '--name', 'X', '--max-mibps', '5']], /lockstep pref set owner does not take --max-mibps/],
    [['pref', ['set', 'resync']], /needs --max-mibps N\|none, --busy-mibps N\|none or both/],
    [['pref', ['set', 'resync', '--max-mibps', 'fast']], /--max-mibps must be a number of MiB\/s or none \(got 'fast'\)/],
    [['pref', ['set', 'notifications']], /needs --file FILE/],
    [['pref', ['set', 'notifications', '--file', 'a.json', '--email', 'x@y']], /does not take --email/],
    [['pref', ['set', 'owner', '--nickname', 'x']], /Unknown option '--nickname'/],
    [['pref', ['get']], /usage: lockstep pref get owner\|resync\|notifications/],
    [['pref', ['get', 'network']], /usage: lockstep pref get/],
    [['pref', ['edit']], /unknown pref command 'edit'/],
    [['pref', ['show', 'network']], /usage: lockstep pref show/],
    [['notification', ['test', 'smtp', 'webhook:1']], /usage: lockstep notification test \[RECEIVER\]/],
    [['notification', ['test', 'https://hooks.example.com/x']], /is not a receiver's name: smtp, snmp:HOST:PORT, call-home, webhook:NAME or webhook:N/],
    [['notification', ['send']], /unknown notification command 'send'/],
    [['notification', ['list', '--all']], /Unknown option '--all'/],
    [['notification', ['list', '--host', 'host3']], /no lab host named 'host3'/],
  ];
  for (const [[noun, argv], message] of bad) {
    assert.throws(() => parsePrefCommand(noun, argv), (e) => e instanceof LockstepError && (e.code === 'INVALID_ARGUMENT' || e.code === 'UNKNOWN_HOST') && message.test(e.message), `${noun} ${argv.join(' ')}`);
  }
});

const PREFS: PreferencesView = {
  host: 'host1',
  pair: { id: 'prod', peer: 'host2', tiebreakWinner: 'host1' },
  owner: { name: 'Example Manufacturing', contact: null, email: 'ops@example.com', phone: '+33 1 23 45 67 89', site: null },
  configFile: '/etc/lockstep/lockstepd.json',
  editable: { owner: true, notifications: true, resync: true, network: false, quorum: false, splitsite: false, pair: false },
  howToChange: "the rest: edit lockstepd's config file and restart lockstepd",
  notificationsConfig: null,
  network: {
    management: { interface: 'mgmt0', apiAddress: '10.10.0.11', apiPort: 7443 },
    business: { bridge: 'br-biz', interface: 'biz0' },
    alink: [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }],
    dataPorts: { replication: 7793, migration: 7794, checkpoint: 7795 },
  },
  quorum: {
    active: 'quorum2',
    servers: [
      { id: 'quorum1', role: 'preferred', address: '10.10.0.21', port: 7790, active: false },
      { id: 'quorum2', role: 'alternate', address: '10.10.0.22', port: 7790, active: true },
    ],
  },
  clock: { now: '2026-12-02T02:00:00.123Z', timeZone: 'Europe/Paris', utcOffsetMinutes: 60, ntp: { synchronized: false, source: 'kernel (adjtimex)', detail: 'clock not synchronized, status 64 (UNSYNC)', maxErrorMs: 16000, estimatedErrorMs: 16000 } },
  notifications: {
    state: 'on',
    error: null,
    minSeverity: 'warning',
    retry: { initialMs: 5000, maxMs: 600_000, giveUpAfterMs: 7 * 86_400_000 },
    receivers: [
      {
        name: 'smtp',
        kind: 'smtp',
        target: 'mail.example.com:587 → ops@example.com',
        settings: {},
        pending: 0,
        lastDelivery: { alert: 'host1-7-1', code: 'FAILOVER', state: 'delivered', attempts: 1, at: '2026-12-02T01:00:00.000Z', detail: '250 2.0.0 queued', lastError: null, nextAttemptAt: null },
        lastTest: null,
      },
      {
        name: 'webhook:1',
        kind: 'webhook',
        target: 'https://chat.example.com/…',
        settings: {},
        pending: 1,
        lastDelivery: { alert: 'host1-7-1', code: 'FAILOVER', state: 'retrying', attempts: 2, at: '2026-12-02T01:00:10.000Z', detail: null, lastError: 'failed at HTTP status: answered 500', nextAttemptAt: '2026-12-02T01:00:30.000Z' },
        lastTest: { at: '2026-12-02T01:30:00.000Z', durationMs: 40, outcome: { ok: true, detail: 'HTTP 200' } },
      },
    ],
  },
  splitsite: { ftRttLimitMs: 2, haRttLimitMs: 10, alinkRttMs: 0.42 },
  resync: { maxMiBps: null, busyMiBps: 64 },
};

test('pref show: every section, what is editable said first; the clock as the kernel says it', () => {
  const text = renderPreferences(PREFS);
  const lines = text.split('\n');
  assert.equal(lines[0], 'preferences of host1 (pair prod with host2), as lockstepd runs them, from /etc/lockstep/lockstepd.json');
  assert.equal(lines[1], "to change: the rest: edit lockstepd's config file and restart lockstepd");
  for (const want of [
    /^owner \(lockstep pref set owner\)\n {2}name +Example Manufacturing\n {2}email +ops@example\.com\n {2}phone +\+33 1 23 45 67 89\nnetwork$/m,
    /^ {2}management +mgmt0, management API on 10\.10\.0\.11:7443$/m,
    /^ {2}alink1 +10\.10\.1\.1 → 10\.10\.1\.2 port 7788 \(broadcast 10\.10\.1\.255\)$/m,
    /^ {2}quorum1 +preferred, 10\.10\.0\.21:7790$/m,
    /^ {2}quorum2 +alternate, 10\.10\.0\.22:7790, active$/m,
    /^ {2}time zone +Europe\/Paris \(UTC\+01:00\)$/m,
    /^ {2}NTP +not synchronised, says the kernel \(adjtimex\): clock not synchronized, status 64 \(UNSYNC\); error at most 16 s, estimated 16 s$/m,
    /^ {2}FT +up to 2 ms A-Link round trip$/m,
    /^ {2}A-Link now +0\.42 ms$/m,
    /^resync \(lockstep pref set resync\)\n {2}rate +no limit$/m,
    /^ {2}while the guest is busy +at most 64 MiB\/s$/m,
    /^notifications: on, minimum severity warning, retried after 5 s doubling to 10 min, given up after 7 days$/m,
  ]) {
    assert.match(text, want);
  }
  const noQuorum = renderPreferences({ ...PREFS, owner: null, quorum: { active: null, servers: [] }, notifications: { state: 'off', error: null, minSeverity: null, retry: null, receivers: [] } });
  assert.match(noQuorum, /^ {2}not given +lockstep pref set owner --name TEXT/m);
  assert.match(noQuorum, /^ {2}none +with no quorum server, host1 keeps its VMs when the A-Links fail$/m);
  assert.match(noQuorum, /^notifications: none configured on host1$/m);
});

test('notification list and test: a row per receiver with its latest outcome; failures name their step', () => {
  const list = renderNotifications('host1', PREFS.notifications).split('\n');
  assert.deepEqual(list.slice(1).map((l) => l.trim().split(/\s{2,}/)), [
    ['RECEIVER', 'TARGET', 'PENDING', 'LAST DELIVERY', 'LAST TEST'],
    ['smtp', 'mail.example.com:587 → ops@example.com', '0', 'delivered FAILOVER 2026-12-02 01:00:00 (250 2.0.0 queued)', '-'],
    ['webhook:1', 'https://chat.example.com/…', '1', 'retrying FAILOVER 2026-12-02 01:00:10: failed at HTTP status: answered 500', '2026-12-02 01:30:00 delivered (HTTP 200)'],
  ]);
  assert.equal(renderNotifications('host1', { ...PREFS.notifications, state: 'failed', error: 'NOTIFY_OUTBOX: cannot open' }).split('\n')[0], 'notifications: configured on host1 but not running: NOTIFY_OUTBOX: cannot open');
  const answer: NotificationTestAnswer = {
    host: 'host1',
    results: [
      { receiver: 'smtp', kind: 'smtp', target: 'mail.example.com:587 → ops@example.com', at: '2026-12-02T02:00:00.000Z', durationMs: 120, outcome: { ok: true, detail: '250 2.0.0 queued' } },
      { receiver: 'webhook:1', kind: 'webhook', target: 'https://chat.example.com/…', at: '2026-12-02T02:00:00.000Z', durationMs: 3, outcome: { ok: false, step: 'connect', error: 'POST https://chat.example.com/… failed: connect ECONNREFUSED', reply: null } },
    ],
    delivered: 1,
    failed: 1,
  };
  const tested = renderTestAnswer(answer).split('\n');
  assert.equal(tested[0], 'test notification from host1: 1 of 2 receivers failed');
  assert.deepEqual(tested.slice(2).map((l) => l.trim().split(/\s{2,}/)), [
    ['smtp', 'mail.example.com:587 → ops@example.com', 'delivered (250 2.0.0 queued) in 120 ms'],
    ['webhook:1', 'https://chat.example.com/…', 'failed at connect: POST https://chat.example.com/… failed: connect ECONNREFUSED in 3 ms'],
  ]);
  assert.equal(renderTestAnswer({ ...answer, results: answer.results.slice(0, 1), failed: 0 }).split('\n')[0], 'test notification from host1: every receiver took it (1)');
});

/** Runs the CLI in this process; what it printed and its exit code. */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  try {
    const code = await main(argv);
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
  }
}

test('over a real socket: the exit code says whether every receiver took the test; --json passes the answer; audited as root', async () => {
  const scratch = await tempDir(cleanup, 'lockstep-cli-notify-');
  const pki = await testPki(scratch);
  const chat = await HttpsTestServer.start(cleanup, pki);
  const downPort = await freePort('tcp');
  const h = await startHarness(cleanup, {
    config: () => ({ notifications: { webhooks: [{ url: chat.url('/hooks/TOKEN123'), caFile: pki.caFile }, { url: `https://127.0.0.1:${downPort}/hooks/DOWN456`, caFile: pki.caFile }] } }),
  });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const all = await cli(['notification', 'test', '--socket', socket]);
  assert.equal(all.code, 1, `one receiver is down: exit 1\n${all.out}${all.err}`);
  assert.match(all.out, /^test notification from host1: 1 of 2 receivers failed$/m);
  assert.match(all.out, /webhook:1 +https:\/\/127\.0\.0\.1:\d+\/… +delivered \(HTTP 200\)/);
  assert.match(all.out, /webhook:2 +https:\/\/127\.0\.0\.1:\d+\/… +failed at connect: .*ECONNREFUSED/);
  assert.equal(chat.accepted().length, 1, 'the test reached the webhook');
  assert.equal((chat.accepted()[0]!.body as { test: boolean }).test, true);

  const one = await cli(['notification', 'test', 'webhook:1', '--socket', socket, '--json']);
  assert.equal(one.code, 0, one.err);
  const answer = JSON.parse(one.out) as NotificationTestAnswer;
  assert.deepEqual([answer.delivered, answer.failed, answer.results.map((r) => r.receiver)], [1, 0, ['webhook:1']]);

  const unknown = await cli(['notification', 'test', 'webhook:7', '--socket', socket, '--json']);
  assert.equal(unknown.code, 2, 'a receiver not configured is a usage error, as an unknown VM is');
  assert.equal(JSON.parse(unknown.out).error.code, 'UNKNOWN_RECEIVER');

  const list = await cli(['notification', 'list', '--socket', socket]);
  assert.equal(list.code, 0, list.err);
  assert.match(list.out, /^ {2}webhook:2 +https:\/\/127\.0\.0\.1:\d+\/… +0 +- +\S+ \S+ failed at connect/m);
  const shown = await cli(['pref', 'show', '--socket', socket]);
  assert.equal(shown.code, 0, shown.err);
  assert.match(shown.out, /^preferences of host1 \(pair test with host2\)/);
  for (const text of [all.out, one.out, list.out, shown.out]) assert.ok(!text.includes('TOKEN123') && !text.includes('DOWN456'), `a URL token is shown: ${text}`);

  const audit = await daemonRequest<{ entries: AuditEntry[] }>(socket, 'GET', '/v1/audit?kind=user&user=root@host1');
  assert.deepEqual(
    audit.entries.map((e) => [e.operation, e.target, e.result, e.client]),
    [
      ['testNotification', 'webhook:7', 'failed', 'local'],
      ['testNotification', 'webhook:1', 'ok', 'local'],
      ['testNotifications', null, 'ok', 'local'],
    ],
  );
});

test('pref get and set over a real socket: the fields given change and the rest stay, the file round-trips the notifications with their secrets kept; errors exit as documented; audited as root', async () => {
  const scratch = await tempDir(cleanup, 'lockstep-cli-prefs-');
  const pki = await testPki(scratch);
  const chat = await HttpsTestServer.start(cleanup, pki);
  const h = await startHarness(cleanup, {
    config: () => ({
      owner: { name: 'Example Manufacturing', site: 'Plant 2' },
      resync: { maxMiBps: 200, busyMiBps: 32 },
      notifications: { minSeverity: 'warning', webhooks: [{ url: chat.url('/hooks/TOKEN123'), caFile: pki.caFile }] },
    }),
  });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const owner = await cli(['pref', 'set', 'owner', '--email', 'ops@example.com', '--site', '', '--socket', socket]);
  assert.equal(owner.code, 0, owner.err);
  assert.equal(owner.out, `owner of host1 set: written to ${h.configFile} and applied\n  name   Example Manufacturing\n  email  ops@example.com`);
  assert.deepEqual(JSON.parse(await readFile(h.configFile, 'utf8')).owner, { name: 'Example Manufacturing', email: 'ops@example.com' });

  const resync = await cli(['pref', 'set', 'resync', '--max-mibps', 'none', '--socket', socket, '--json']);
  assert.equal(resync.code, 0, resync.err);
  assert.deepEqual((JSON.parse(resync.out) as PreferencesView).resync, { maxMiBps: null, busyMiBps: 32 }, 'the limit not given is kept');

  // What get prints, set takes: edited and sent back, the token never leaves the host.
  const got = await cli(['pref', 'get', 'notifications', '--socket', socket]);
  assert.equal(got.code, 0, got.err);
  assert.ok(!got.out.includes('TOKEN123'), got.out);
  const form = JSON.parse(got.out);
  assert.deepEqual(form.webhooks[0].url, { keep: 'webhook:1' });
  const file = path.join(scratch, 'receivers.json');
  await writeFile(file, JSON.stringify({ ...form, minSeverity: 'critical' }));
  const set = await cli(['pref', 'set', 'notifications', '--file', file, '--socket', socket]);
  assert.equal(set.code, 0, set.err);
  assert.match(set.out, /^notifications of host1 set: written to .* and applied\nnotifications: on, minimum severity critical/);
  assert.ok(!set.out.includes('TOKEN123'), set.out);
  const disk = JSON.parse(await readFile(h.configFile, 'utf8')).notifications;
  assert.deepEqual([disk.minSeverity, disk.webhooks[0].url], ['critical', chat.url('/hooks/TOKEN123')]);

  // A wrong value is a usage error (2), naming the field; a file that is not JSON too, without quoting it;
  // a hand-edited config is a failure (1).
  const wrong = await cli(['pref', 'set', 'resync', '--busy-mibps', '0', '--socket', socket, '--json']);
  assert.equal(wrong.code, 2);
  assert.deepEqual([JSON.parse(wrong.out).error.code, JSON.parse(wrong.out).error.fields.field], ['INVALID_SPEC', 'busyMiBps']);
  await writeFile(file, '{"webhooks": [{"url": "https://h.example/TOKEN123"');
  const notJson = await cli(['pref', 'set', 'notifications', '--file', file, '--socket', socket]);
  assert.equal(notJson.code, 2);
  assert.match(notJson.err, /receivers\.json is not valid JSON/);
  assert.ok(!notJson.err.includes('TOKEN123'), notJson.err);
  await writeFile(h.configFile, `${await readFile(h.configFile, 'utf8')} `);
  const changed = await cli(['pref', 'set', 'owner', '--name', 'Someone else', '--socket', socket]);
  assert.equal(changed.code, 1);
  assert.match(changed.err, /^lockstep: .*lockstepd\.json was changed on disk since lockstepd read it; lockstepd does not overwrite that edit/);

  const audit = await daemonRequest<{ entries: AuditEntry[] }>(socket, 'GET', '/v1/audit?kind=user&user=root@host1');
  assert.deepEqual(
    audit.entries.map((e) => [e.operation, e.target, e.result, e.code]),
    [
      ['setOwnerPreference', 'owner', 'failed', 'CONFIG_CHANGED'],
      ['setResyncPreference', 'resync', 'failed', 'INVALID_SPEC'],
      ['setNotificationsPreference', 'notifications', 'ok', null],
      ['setResyncPreference', 'resync', 'ok', null],
      ['setOwnerPreference', 'owner', 'ok', null],
    ],
  );
  assert.ok(!JSON.stringify(audit).includes('TOKEN123'));
});
