// The daemon config's `notifications` section: absent means none, a full section gets its defaults, and every
// wrong field is refused with INVALID_SPEC naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDaemonConfig } from '../../src/daemon/config.js';
import { DEFAULT_RETRY, receiversOf } from '../../src/notify/receivers.js';
import { isLockstepError } from '../../src/util/errors.js';

const minimal = {
  host: 'host1',
  dataDir: '/var/lib/lockstep',
  pair: { id: 'lab', peer: 'host2', secret: 'a-long-enough-secret' },
  alink: [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }],
};

const full = {
  minSeverity: 'warning',
  smtp: { host: 'mail.example.com', port: 587, from: 'lockstep@example.com', to: ['ops@example.com'], user: 'alerts', passwordFile: '/etc/lockstep/smtp-password' },
  snmp: { targets: [{ host: '10.0.0.9', community: 'public' }] },
  callHome: { url: 'https://support.example.com/v1/reports', caFile: '/etc/lockstep/support-ca.pem' },
  webhooks: [{ url: 'http://10.0.0.8:8080/hook' }],
};

test('no notifications section: no notifications', () => {
  assert.equal(parseDaemonConfig(minimal).notifications, null);
  assert.equal(parseDaemonConfig({ ...minimal, notifications: null }).notifications, null);
});

test('a full section, with the documented defaults filled in', () => {
  const n = parseDaemonConfig({ ...minimal, notifications: full }).notifications!;
  assert.equal(n.minSeverity, 'warning');
  assert.deepEqual(n.smtp, { host: 'mail.example.com', port: 587, from: 'lockstep@example.com', to: ['ops@example.com'], starttls: 'required', user: 'alerts', passwordFile: '/etc/lockstep/smtp-password', caFile: null });
  assert.deepEqual(n.snmp, { targets: [{ host: '10.0.0.9', port: 162, community: 'public' }] });
  assert.deepEqual(n.callHome, { url: 'https://support.example.com/v1/reports', caFile: '/etc/lockstep/support-ca.pem' });
  assert.deepEqual(n.webhooks, [{ url: 'http://10.0.0.8:8080/hook', caFile: null }]);
  assert.deepEqual(n.retry, DEFAULT_RETRY);
  const only = parseDaemonConfig({ ...minimal, notifications: { webhooks: [{ url: 'https://hooks.example.com/x' }] } }).notifications!;
  assert.equal(only.minSeverity, 'info', 'everything is sent by default');
  assert.equal(only.smtp, null);
  assert.equal(parseDaemonConfig({ ...minimal, notifications: { smtp: { ...full.smtp, user: undefined, passwordFile: undefined } } }).notifications!.smtp!.port, 587);
});

for (const [what, notifications, key, message] of [
  ['a section that is not an object', ['smtp'], 'notifications', /must be a JSON object/],
  ['a section with no receiver', { minSeverity: 'info' }, 'notifications', /names no receiver/],
  ['a misspelt field', { ...full, webhook: [] }, 'notifications.webhook', /is not a known field/],
  ['an unknown severity', { ...full, minSeverity: 'error' }, 'notifications.minSeverity', /info, warning or critical/],
  ['an SMTP relay with no recipient', { smtp: { ...full.smtp, to: [] } }, 'notifications.smtp.to', /at least one recipient/],
  ['a recipient that is not an address', { smtp: { ...full.smtp, to: ['ops'] } }, 'notifications.smtp.to[0]', /e-mail address/],
  ['a sender with a line break', { smtp: { ...full.smtp, from: 'a@b.example\r\nRCPT TO:<x@y>' } }, 'notifications.smtp.from', /e-mail address/],
  ['a recipient named twice', { smtp: { ...full.smtp, to: ['a@b.example', 'a@b.example'] } }, 'notifications.smtp.to', /twice/],
  ['an unknown STARTTLS mode', { smtp: { ...full.smtp, starttls: 'yes' } }, 'notifications.smtp.starttls', /required, opportunistic or off/],
  ['a user without a password file', { smtp: { ...full.smtp, passwordFile: undefined } }, 'notifications.smtp.passwordFile', /AUTH needs both/],
  ['a relative password file', { smtp: { ...full.smtp, passwordFile: 'pw' } }, 'notifications.smtp.passwordFile', /absolute path/],
  ['an SMTP port out of range', { smtp: { ...full.smtp, port: 0 } }, 'notifications.smtp.port', /port/],
  ['an SNMP section with no target', { snmp: { targets: [] } }, 'notifications.snmp.targets', /at least one/],
  ['an SNMP target without a community', { snmp: { targets: [{ host: '10.0.0.9' }] } }, 'notifications.snmp.targets[0].community', /non-empty string/],
  ['an SNMP target named twice', { snmp: { targets: [{ host: 'a', community: 'c' }, { host: 'a', port: 162, community: 'd' }] } }, 'notifications.snmp.targets', /twice/],
  ['a host with a space', { snmp: { targets: [{ host: 'a b', community: 'c' }] } }, 'notifications.snmp.targets[0].host', /host name or an IP address/],
  ['Call Home over plain http', { callHome: { url: 'http://support.example.com/' } }, 'notifications.callHome.url', /https URL/],
  ['a webhook that is not a URL', { webhooks: [{ url: 'hooks.example.com/x' }] }, 'notifications.webhooks[0].url', /absolute URL/],
  ['a webhook over ftp', { webhooks: [{ url: 'ftp://hooks.example.com/x' }] }, 'notifications.webhooks[0].url', /http or https URL/],
  ['a CA file for an http webhook', { webhooks: [{ url: 'http://h.example/x', caFile: '/etc/ca.pem' }] }, 'notifications.webhooks[0].caFile', /only applies to an https URL/],
  ['a webhook URL named twice', { webhooks: [{ url: 'https://h.example/x' }, { url: 'https://h.example/x' }] }, 'notifications.webhooks', /twice/],
  ['a webhook name with a capital', { webhooks: [{ url: 'https://h.example/x', name: 'Chat' }] }, 'notifications.webhooks[0].name', /a letter, then letters, digits or -/],
  ['a webhook name that is a number (a place)', { webhooks: [{ url: 'https://h.example/x', name: '2' }] }, 'notifications.webhooks[0].name', /a letter/],
  ['a webhook name given twice', { webhooks: [{ url: 'https://h.example/x', name: 'chat' }, { url: 'https://h.example/y', name: 'chat' }] }, 'notifications.webhooks', /a name twice/],
  ['nine webhooks', { webhooks: Array.from({ length: 9 }, (_, i) => ({ url: `https://h.example/${i}` })) }, 'notifications.webhooks', /at most 8/],
  ['a cap below the first delay', { ...full, retry: { initialMs: 5000, maxMs: 1000 } }, 'notifications.retry.maxMs', /from 5000/],
  ['a give-up time below the cap', { ...full, retry: { giveUpAfterMs: 1000 } }, 'notifications.retry.giveUpAfterMs', /from 600000/],
] as const) {
  test(`refused: ${what}`, () => {
    assert.throws(
      () => parseDaemonConfig({ ...minimal, notifications }, 'lockstepd.json'),
      (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['key'] === key && message.test(e.message) && e.message.startsWith(`lockstepd.json: '${key}' `),
    );
  });
}

test('webhooks are named by their configured name, else by their place: a named one keeps its name when the list is reordered', () => {
  const hooks = [{ url: 'https://chat.example.com/T0K3N' }, { url: 'https://pager.example.com/in', name: 'pager' }];
  const names = (webhooks: object[]) => receiversOf(parseDaemonConfig({ ...minimal, notifications: { webhooks } }).notifications!).map((r) => r.name);
  assert.deepEqual(names(hooks), ['webhook:1', 'webhook:pager']);
  assert.deepEqual(names([...hooks].reverse()), ['webhook:pager', 'webhook:2']);
  assert.equal(parseDaemonConfig({ ...minimal, notifications: { webhooks: hooks } }).notifications!.webhooks[1]!.name, 'pager');
});
