/**
 * `lockstep user`, `lockstep alert` and `lockstep audit`, their pure parts: parsing (passwords never an
 * argument), paging alerts by severity, reading a password from stdin, and how fixed API answers are
 * rendered — tables, lines, and `--json` passing the answer through untouched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { LockstepError } from '../../src/util/errors.js';
import { parseUserCommand, renderUserAnswer, type UserRequest } from '../../src/cli/user-command.js';
import { alertsOf, parseLogCommand, renderAlerts, renderAudit, type LogRequest } from '../../src/cli/log-command.js';
import { firstLine, readPassword } from '../../src/cli/password-input.js';
import { EXIT, reportError } from '../../src/cli/output.js';
import type { UserView } from '../../src/users/user-store.js';
import type { LogEntry } from '../../src/daemon/state-db.js';
import type { AuditEntry } from '../../src/audit/audit-log.js';

test('user verbs parse into their requests; add joins read-only unless told', () => {
  const cases: [string[], UserRequest][] = [
    [['list', '--host', 'host2'], { verb: 'list', json: false, where: { host: 'host2' } }],
    [['setup', 'admin', '--full-name', 'Ada Admin', '--password-stdin', '--json'], { verb: 'setup', name: 'admin', fullName: 'Ada Admin', passwordStdin: true, json: true, where: {} }],
    [['add', 'olga'], { verb: 'add', name: 'olga', groups: ['read-only'], passwordStdin: false, json: false, where: {} }],
    [['add', 'olga', '--group', 'platform-managers', '--group', 'night.shift', '--group', 'platform-managers'], { verb: 'add', name: 'olga', groups: ['platform-managers', 'night.shift'], passwordStdin: false, json: false, where: {} }],
    [['passwd', 'olga', '--socket', '/run/l.sock'], { verb: 'passwd', name: 'olga', passwordStdin: false, json: false, where: { socket: '/run/l.sock' } }],
    [['remove', 'olga'], { verb: 'remove', name: 'olga', json: false, where: {} }],
    [[], { verb: 'help', exit: 2 }],
    [['help'], { verb: 'help', exit: 0 }],
  ];
  for (const [args, want] of cases) assert.deepEqual(parseUserCommand(args), want, args.join(' '));
});

test('bad user input is a usage error; a password on the command line is refused', () => {
  const cases: [string[], RegExp][] = [
    [['add', 'olga', '--password', 'hunter2hunter2'], /Unknown option '--password'/],
    [['setup', 'admin', 'a long passphrase'], /usage: lockstep user setup NAME/],
    [['add', 'Olga'], /user name 'Olga'/],
    [['add', 'olga', '--group', 'Night Shift'], /group name 'Night Shift'/],
    [['remove'], /usage: lockstep user remove NAME/],
    [['list', 'extra'], /usage: lockstep user list/],
    [['grant', 'olga'], /unknown user command 'grant'/],
    [['list', '--host', 'host3'], /no lab host named 'host3'/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseUserCommand(args), (e) => e instanceof LockstepError && (e.code === 'INVALID_ARGUMENT' || e.code === 'UNKNOWN_HOST') && message.test(e.message), args.join(' '));
  }
});

test('an unknown user or group named on the command line is a usage error (exit 2), as an unknown VM is', () => {
  const quiet = console.error;
  console.error = () => {};
  try {
    assert.equal(reportError(new LockstepError('UNKNOWN_USER', "no user named 'nope'", { user: 'nope' }), false), EXIT.usage);
    assert.equal(reportError(new LockstepError('UNKNOWN_GROUP', "no group named 'nope'", { group: 'nope' }), false), EXIT.usage);
    assert.equal(reportError(new LockstepError('SETUP_DONE', 'host1 has its first administrator already', {}), false), EXIT.failed);
  } finally {
    console.error = quiet;
  }
});

const OLGA: UserView = { name: 'olga', fullName: 'Olga', groups: ['read-only'], role: 'read-only', createdAt: '2026-12-02T02:00:00.123Z', passwordChangedAt: '2026-12-02T02:05:00.000Z' };

test('user answers: a table, one line per change, the JSON untouched', () => {
  const list = renderUserAnswer(false, { verb: 'list', host: 'host1', users: [OLGA, { ...OLGA, name: 'nora', fullName: '', groups: [], role: null }] });
  assert.deepEqual(list.split('\n').map((l) => l.split(/\s{2,}/)), [
    ['USER', 'FULL NAME', 'GROUPS', 'ROLE', 'CREATED', 'PASSWORD CHANGED'],
    ['olga', 'Olga', 'read-only', 'read-only', '2026-12-02 02:00:00', '2026-12-02 02:05:00'],
    ['nora', '-', '-', 'none', '2026-12-02 02:00:00', '2026-12-02 02:05:00'],
  ]);
  assert.match(renderUserAnswer(false, { verb: 'list', host: 'host2', users: [] }), /host2 has no users yet .*user setup NAME --host host2/);
  assert.equal(renderUserAnswer(false, { verb: 'made', host: 'host1', user: OLGA }), 'user olga made on host1: groups read-only, role read-only');
  assert.equal(renderUserAnswer(false, { verb: 'passwd', host: 'host1', user: OLGA }), 'password of olga changed on host1; its sessions ended');
  assert.equal(renderUserAnswer(false, { verb: 'removed', host: 'host1', name: 'olga', user: null }), 'user olga removed from host1');
  assert.deepEqual(JSON.parse(renderUserAnswer(true, { verb: 'list', host: 'host1', users: [OLGA] })), [OLGA]);
  assert.equal(renderUserAnswer(true, { verb: 'removed', host: 'host1', name: 'olga', user: null }), 'null');
});

test('a password from stdin: its first line, within the API length rule', async () => {
  const stdin = (text: string): NodeJS.ReadStream => Readable.from([Buffer.from(text)]) as unknown as NodeJS.ReadStream;
  assert.equal(await readPassword({ fromStdin: true, prompt: 'p' }, stdin('a long passphrase\nignored\n')), 'a long passphrase');
  assert.equal(firstLine('windows line\r\nnext'), 'windows line');
  assert.equal(firstLine('no newline at all'), 'no newline at all');
  await assert.rejects(readPassword({ fromStdin: true, prompt: 'p' }, stdin('short\n')), /10 to 256 characters \(this one has 5\)/);
  // Without --password-stdin a pipe is refused rather than read: the caller said nothing of stdin.
  const pipe = stdin('a long passphrase\n');
  await assert.rejects(readPassword({ fromStdin: false, prompt: 'p' }, pipe), /give --password-stdin/);
});

test('alert and audit verbs parse; their options are checked', () => {
  const cases: [['alert' | 'audit', string[]], LogRequest][] = [
    [['alert', ['list']], { noun: 'alert', verb: 'list', severity: 'info', limit: 50, json: false, where: {} }],
    [['alert', ['list', '--severity', 'critical', '--limit', '5', '--json']], { noun: 'alert', verb: 'list', severity: 'critical', limit: 5, json: true, where: {} }],
    [['audit', ['list', '--user', 'root@host1', '--host', 'host1']], { noun: 'audit', verb: 'list', limit: 50, user: 'root@host1', json: false, where: { host: 'host1' } }],
    [['audit', ['list', '--user', 'olga', '--limit', '500']], { noun: 'audit', verb: 'list', limit: 500, user: 'olga', json: false, where: {} }],
    [['audit', []], { verb: 'help', exit: 2 }],
  ];
  for (const [args, want] of cases) assert.deepEqual(parseLogCommand(...args), want, args.join(' '));
  const bad: [['alert' | 'audit', string[]], RegExp][] = [
    [['alert', ['list', '--severity', 'major']], /--severity must be one of info, warning, critical/],
    [['alert', ['list', '--limit', '0']], /--limit must be a whole number from 1 to 1000/],
    [['audit', ['list', '--limit', '501']], /from 1 to 500/],
    [['audit', ['list', '--user', 'Root']], /--user must be a user name or root@HOST/],
    [['audit', ['list', '--severity', 'info']], /--severity is not an option of audit list/],
    [['alert', ['list', '--user', 'olga']], /--user is not an option of alert list/],
    [['alert', ['show']], /unknown alert command 'show'/],
  ];
  for (const [args, message] of bad) {
    assert.throws(() => parseLogCommand(...args), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT' && message.test(e.message), args.join(' '));
  }
});

function alert(id: number, severity: 'info' | 'warning' | 'critical'): LogEntry & { id: number } {
  return { id, wallMs: Date.UTC(2026, 11, 2, 2, 0, id % 60), atMs: id, host: 'host1', kind: 'alert', severity, code: 'PEER_LOST', what: `alert ${id}`, cause: 'test' };
}

test('alerts of at least a severity: pages on through the log until enough match, and stops at its end', async () => {
  // 2500 alerts, newest first by id; every 100th is critical.
  const log = Array.from({ length: 2500 }, (_, i) => alert(2500 - i, (2500 - i) % 100 === 0 ? 'critical' : 'warning'));
  const asked: (number | null)[] = [];
  const page = async (before: number | null): Promise<(LogEntry & { id: number })[]> => {
    asked.push(before);
    return log.filter((e) => before === null || e.id < before).slice(0, 1000);
  };
  const critical = await alertsOf(page, 'critical', 20);
  assert.deepEqual(critical.map((a) => a.id), Array.from({ length: 25 }, (_, i) => 2500 - i * 100).slice(0, 20));
  assert.deepEqual(asked, [null, 1501], 'a second page for the rest, no more');
  asked.length = 0;
  assert.equal((await alertsOf(page, 'critical', 1000)).length, 25, 'the log ends before the limit');
  assert.deepEqual(asked, [null, 1501, 501]);
  assert.equal((await alertsOf(page, 'info', 3)).length, 3);
});

test('alert and audit tables', () => {
  assert.deepEqual(renderAlerts('host1', [alert(7, 'critical')]).split('\n').map((l) => l.split(/\s{2,}/)), [
    ['AT', 'SEVERITY', 'CODE', 'HOST', 'WHAT'],
    ['2026-12-02 02:00:07', 'critical', 'PEER_LOST', 'host1', 'alert 7'],
  ]);
  assert.equal(renderAlerts('host2', []), 'no alerts on host2');
  const base = { wallMs: 0, host: 'host1', method: null, path: null, target: null, result: null, status: null, severity: null, code: null, message: null, cause: null, client: null, user: null, operation: null };
  const entries: AuditEntry[] = [
    { ...base, id: 'u2', kind: 'user', at: '2026-12-02T02:00:02.000Z', user: 'root@host1', client: 'local', operation: 'createUser', method: 'POST', path: '/v1/users', target: 'olga', result: 'ok', status: 201 },
    { ...base, id: 'u1', kind: 'user', at: '2026-12-02T02:00:01.000Z', user: null, client: '10.10.0.100', operation: 'login', method: 'POST', path: '/api/v1/session', target: 'admin', result: 'denied', status: 401, code: 'LOGIN_FAILED' },
    { ...base, id: 'c5', kind: 'alert', at: '2026-12-02T02:00:00.000Z', severity: 'warning', code: 'PEER_LOST', message: 'host2 is silent', cause: 'tick' },
  ];
  assert.deepEqual(renderAudit('host1', entries).split('\n').map((l) => l.split(/\s{2,}/)), [
    ['AT', 'KIND', 'USER', 'CLIENT', 'WHAT', 'TARGET', 'RESULT'],
    ['2026-12-02 02:00:02', 'user', 'root@host1', 'local', 'createUser (POST /v1/users)', 'olga', 'ok'],
    ['2026-12-02 02:00:01', 'user', '-', '10.10.0.100', 'login (POST /api/v1/session)', 'admin', 'denied 401 LOGIN_FAILED'],
    ['2026-12-02 02:00:00', 'alert', '-', '-', 'PEER_LOST: host2 is silent', '-', 'warning'],
  ]);
  assert.equal(renderAudit('host1', []), 'the audit log of host1 is empty');
});
