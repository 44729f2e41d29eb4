// The pure parts of notifications: where an alert is (read from the core's own phrasings), the e-Alert's
// text encodings (quoted-printable, RFC 2047 headers, folding, dot-stuffing), and the outbox's stored copy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alertFromJson, alertJson, alertOfLogEntry, locate, severityAtLeast, testAlert } from '../../src/notify/alert.js';
import { alertMail, dotStuff, foldHeader, quotedPrintable, rfc5322Date } from '../../src/notify/mail.js';

test('the location of the core alerts: VM, A-Link path, health components', () => {
  assert.deepEqual(locate('host2', 'FAILOVER', 'VM web failed over from host1 to host2'), { host: 'host2', component: null, vm: 'web' });
  assert.deepEqual(locate('host1', 'ALINK_PATH_DOWN', 'A-Link path alink2 down on host1: the pair carries on over alink1'), { host: 'host1', component: 'alink2', vm: null });
  assert.deepEqual(locate('host1', 'PRIMARY_FAULT', 'host1 lost disk, business: its VMs move to host2 if it is healthier'), { host: 'host1', component: 'business, disk', vm: null });
  assert.deepEqual(locate('host1', 'CALL_HOME', 'non-critical fault on host1: mgmt (replacement part needed)'), { host: 'host1', component: 'mgmt', vm: null });
  assert.deepEqual(locate('host1', 'HOST_DECLARED_DOWN', 'host1 declared down: estimated MTBF 40 s is below the threshold 3600 s (qemu)'), { host: 'host1', component: 'qemu', vm: null });
  assert.deepEqual(locate('host1', 'MIRROR_ENDED', 'VM db-1 on host1 is no longer mirrored to host2 (broken)'), { host: 'host1', component: 'replication', vm: 'db-1' });
  assert.deepEqual(locate('host1', 'HOST_ISOLATED', 'host1 lost host2 and has no quorum: stopping its VMs to avoid split-brain'), { host: 'host1', component: null, vm: null });
});

test('log rows become alerts with a stable id; events do not', () => {
  const row = { id: 41, wallMs: 1_700_000_000_000, atMs: 5, host: 'host1', kind: 'alert' as const, severity: 'warning' as const, code: 'TIEBREAK', what: 'x', cause: 'tick' };
  const a = alertOfLogEntry(row, 'lab')!;
  assert.equal(a.uid, 'host1-41-1700000000000');
  assert.equal(alertOfLogEntry({ ...row, kind: 'event', severity: null, code: null }, 'lab'), null);
  assert.deepEqual(alertFromJson(JSON.parse(JSON.stringify(alertJson(a)))), a, 'the outbox copy reads back the same');
  assert.equal(alertFromJson({ ...alertJson(a), severity: 'fatal' }), null);
  assert.ok(severityAtLeast('critical', 'warning') && severityAtLeast('warning', 'warning') && !severityAtLeast('info', 'warning'));
});

test('text encodings: quoted-printable, encoded-word headers folded under 78 columns, dot-stuffing', () => {
  assert.equal(quotedPrintable('MTBF ∞ = bad '), 'MTBF =E2=88=9E =3D bad=20');
  const long = quotedPrintable('x'.repeat(100));
  assert.ok(long.split('\r\n').every((l) => l.length <= 76), 'soft line breaks');
  assert.equal(long.replace(/=\r\n/g, ''), 'x'.repeat(100));
  const subject = foldHeader('Subject', `[Lockstep info] CALL_HOME on host1: ${'word '.repeat(30)}`.trim());
  assert.ok(subject.split('\r\n').every((l) => l.length <= 78));
  assert.equal(subject.replace(/\r\n /g, ' '), `Subject: [Lockstep info] CALL_HOME on host1: ${'word '.repeat(30)}`.trim());
  const utf8 = foldHeader('Subject', 'estimated MTBF ∞ on host1, ünïcödé '.repeat(3));
  assert.match(utf8, /^Subject: =\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=(\r\n =\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=)+$/);
  const decoded = [...utf8.matchAll(/=\?UTF-8\?B\?([^?]+)\?=/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8')).join('');
  assert.equal(decoded, 'estimated MTBF ∞ on host1, ünïcödé '.repeat(3));
  assert.equal(foldHeader('Subject', 'a\r\nBcc: victim@example.com'), 'Subject: a Bcc: victim@example.com', 'no header injection');
  assert.equal(dotStuff('a\n.\n.b\nc'), 'a\r\n..\r\n..b\r\nc\r\n.\r\n');
  assert.equal(rfc5322Date(Date.UTC(2024, 2, 5, 9, 7, 2)), 'Tue, 05 Mar 2024 09:07:02 +0000');
});

test('an e-Alert with non-ASCII text goes quoted-printable, its headers intact', () => {
  const a = { ...testAlert('lab', 'host1', 0), message: 'estimated MTBF ∞' };
  const mail = alertMail(a, { from: 'a@b.example', to: ['c@d.example'] }, [], 0);
  assert.match(mail, /\r\nContent-Transfer-Encoding: quoted-printable\r\n/);
  assert.match(mail, /\r\n\r\nLockstep test notification\r\n\r\nestimated MTBF =E2=88=9E\r\n/);
  assert.match(mail, /^From: a@b\.example\r\nTo: c@d\.example\r\nSubject: =\?UTF-8\?B\?/);
});
