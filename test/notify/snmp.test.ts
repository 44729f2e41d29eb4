// SNMPv2c traps: the BER encodings against known byte strings, then real traps to Debian's snmptrapd started
// on a loopback port with a temporary config, whose log must show the OIDs and values of LOCKSTEP-MIB.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { berInteger, berLength, berOctetString, berOid, berUnsigned, TAG } from '../../src/notify/ber.js';
import { dateAndTime, sendTrap, SNMP_OIDS, trapMessage } from '../../src/notify/snmp-trap.js';
import { testAlert, type NotifyAlert } from '../../src/notify/alert.js';
import { repoRoot } from '../../src/util/paths.js';
import { Cleanup, logAlert, notifyConfig, startNotifier, startSnmptrapd, stateDb, tempDir, varbindsOf, waitFor } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const hex = (b: Buffer): string => b.toString('hex');

test('BER: lengths, integers, unsigned, strings and OIDs encode as X.690 says', () => {
  assert.equal(hex(berLength(5)), '05');
  assert.equal(hex(berLength(127)), '7f');
  assert.equal(hex(berLength(128)), '8180');
  assert.equal(hex(berLength(300)), '82012c');
  assert.equal(hex(berInteger(0)), '020100');
  assert.equal(hex(berInteger(127)), '02017f');
  assert.equal(hex(berInteger(128)), '02020080');
  assert.equal(hex(berInteger(-1)), '0201ff');
  assert.equal(hex(berInteger(-129)), '0202ff7f');
  assert.equal(hex(berInteger(0x7fffffff)), '02047fffffff');
  assert.equal(hex(berUnsigned(TAG.timeTicks, 0)), '430100');
  assert.equal(hex(berUnsigned(TAG.timeTicks, 0xffffffff)), '430500ffffffff');
  assert.equal(hex(berOctetString('public')), '04067075626c6963');
  assert.equal(hex(berOid('1.3.6.1.2.1.1.3.0')), '06082b06010201010300');
  assert.equal(hex(berOid('1.3.6.1.4.1.32473.1')), '06092b0601040181fd5901', '32473 = 0x7ed9: the arc in three base-128 groups (81 fd 59)');
  assert.equal(hex(dateAndTime(Date.UTC(2024, 2, 5, 9, 7, 2, 300))), '07e8030509070203' + '2b0000');
});

test('a trap message is an SNMPv2c community message holding one SNMPv2-Trap-PDU', () => {
  const m = trapMessage(testAlert('lab', 'host1', 0), 'public', 42, 7);
  assert.equal(m[0], 0x30, 'SEQUENCE');
  // version v2c(1), then the community, then [7] the trap PDU with request-id 7, error-status 0, error-index 0.
  const afterHeader = m.subarray(m[1]! & 0x80 ? 2 + (m[1]! & 0x7f) : 2);
  assert.equal(hex(afterHeader.subarray(0, 11)), '020101' + '04067075626c6963');
  assert.equal(afterHeader[11], TAG.snmpV2Trap);
});

test('docs/LOCKSTEP-MIB.txt defines exactly the OIDs the traps carry', async () => {
  const mib = await readFile(path.join(repoRoot(), 'docs', 'LOCKSTEP-MIB.txt'), 'utf8');
  const parent: Record<string, string> = { enterprises: '1.3.6.1.4.1' };
  for (const m of mib.matchAll(/^(\w+)[ \t]+(?:OBJECT IDENTIFIER|OBJECT-TYPE|NOTIFICATION-TYPE|MODULE-IDENTITY)\b[\s\S]*?::= \{ (\w+) ([\d ]+) \}/gm)) {
    parent[m[1]!] = `${parent[m[2]!]}.${m[3]!.trim().split(/\s+/).join('.')}`;
  }
  const named = {
    alertNotification: 'lockstepAlertNotification',
    testNotification: 'lockstepTestNotification',
    alertHost: 'lockstepAlertHost',
    alertSeverity: 'lockstepAlertSeverity',
    alertCode: 'lockstepAlertCode',
    alertMessage: 'lockstepAlertMessage',
    alertPair: 'lockstepAlertPair',
    alertComponent: 'lockstepAlertComponent',
    alertVm: 'lockstepAlertVm',
    alertId: 'lockstepAlertId',
    alertTime: 'lockstepAlertTime',
  } as const;
  for (const [key, name] of Object.entries(named)) assert.equal(parent[name], SNMP_OIDS[key as keyof typeof named], name);
  assert.match(mib, /SYNTAX INTEGER \{ info\(1\), warning\(2\), critical\(3\) \}/);
});

test('snmptrapd receives the alert trap: sysUpTime.0, snmpTrapOID.0 and the LOCKSTEP-MIB varbinds', async () => {
  const dir = await tempDir(cleanup);
  const trapd = await startSnmptrapd(cleanup, dir);
  const alert: NotifyAlert = {
    uid: 'host2-17-1709629622300',
    logId: 17,
    pair: 'lab',
    host: 'host2',
    severity: 'critical',
    code: 'FAILOVER',
    message: 'VM web failed over from host1 to host2',
    cause: 'tick',
    wallMs: Date.UTC(2024, 2, 5, 9, 7, 2, 300),
    location: { host: 'host2', component: null, vm: 'web' },
    test: false,
  };
  const outcome = await sendTrap({ host: '127.0.0.1', port: trapd.port, community: 'public' }, alert, 12_345);
  assert.equal(outcome.ok, true, JSON.stringify(outcome));
  await waitFor('the trap in snmptrapd\'s log', () => trapd.output().includes(alert.uid));
  const v = varbindsOf(trapd.output(), alert.uid);
  assert.equal(v.get(`.${SNMP_OIDS.sysUpTime0}`), 'Timeticks: (12345) 0:02:03.45');
  assert.equal(v.get(`.${SNMP_OIDS.snmpTrapOid0}`), 'OID: .1.3.6.1.4.1.32473.1.0.1');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.1'), 'STRING: "host2"');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.2'), 'INTEGER: 3');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.3'), 'STRING: "FAILOVER"');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.4'), 'STRING: "VM web failed over from host1 to host2"');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.5'), 'STRING: "lab"');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.6'), '""', 'no component known: an empty string (net-snmp prints it without a type)');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.7'), 'STRING: "web"');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.8'), `STRING: "${alert.uid}"`);
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.9'), 'Hex-STRING: 07 E8 03 05 09 07 02 03 2B 00 00');

  // A trap with another community is dropped by snmptrapd's authCommunity: the receiver's own check works.
  const wrong = await sendTrap({ host: '127.0.0.1', port: trapd.port, community: 'private' }, { ...alert, uid: 'wrong-community' }, 1);
  assert.equal(wrong.ok, true, 'a trap is not acknowledged: sending it is all the sender can know');
});

test('through the notifier: an alert logged by the driver reaches snmptrapd; "send test" sends the test notification', async () => {
  const dir = await tempDir(cleanup);
  const trapd = await startSnmptrapd(cleanup, dir);
  const { db } = stateDb(cleanup, dir);
  const { notifier } = startNotifier(cleanup, dir, db, notifyConfig({ snmp: { targets: [{ host: '127.0.0.1', port: trapd.port, community: 'public' }] } }));
  logAlert(db, 'warning', 'ALINK_PATH_DOWN', 'A-Link path alink2 down on host1: the pair carries on over alink1');
  notifier.nudge();
  await waitFor('the delivery', () => notifier.outbox.list({ limit: 1 })[0]?.state === 'delivered');
  const [d] = notifier.outbox.list({ limit: 1 });
  assert.equal(d!.receiver, `snmp:127.0.0.1:${trapd.port}`);
  await waitFor('the trap', () => trapd.output().includes(d!.alertUid));
  const v = varbindsOf(trapd.output(), d!.alertUid);
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.2'), 'INTEGER: 2', 'warning');
  assert.equal(v.get('.1.3.6.1.4.1.32473.1.1.6'), 'STRING: "alink2"', 'the component, read from the message');

  const result = await notifier.sendTest(`snmp:127.0.0.1:${trapd.port}`);
  assert.equal(result.outcome.ok, true);
  await waitFor('the test trap', () => /OID: \.1\.3\.6\.1\.4\.1\.32473\.1\.0\.2/.test(trapd.output()));
  const unknown = await notifier.sendTest('snmp:192.0.2.1:162');
  assert.deepEqual({ ok: unknown.outcome.ok, step: !unknown.outcome.ok && unknown.outcome.step }, { ok: false, step: 'receiver' });
});
