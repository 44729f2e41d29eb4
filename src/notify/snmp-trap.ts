/**
 * SNMPv2c traps (RFC 3416 `SNMPv2-Trap-PDU` in an RFC 1901 community message) over UDP, one per alert and
 * target. The varbinds are the two every v2 notification starts with (sysUpTime.0, snmpTrapOID.0), then
 * the alert's objects from LOCKSTEP-MIB (docs/LOCKSTEP-MIB.txt, docs/notifications.md).
 *
 * A trap is not acknowledged: "delivered" means the datagram left this host without a local error (the
 * address resolved, the route exists, the kernel took it). An unreachable port may only show as an ICMP
 * error on a later send, so the outbox's retry covers what it can and no more.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import net from 'node:net';
import { berInteger, berOctetString, berOid, berSequence, berUnsigned, TAG } from './ber.js';
import type { NotifyAlert, Severity } from './alert.js';
import { delivered, failed, type DeliveryOutcome } from './outcome.js';

/**
 * The MIB's root. 32473 is the enterprise number IANA reserves for documentation and examples (RFC 5612):
 * Lockstep has no registered number of its own yet. When it gets one, this and docs/LOCKSTEP-MIB.txt move
 * together, and the change is announced as a breaking one for trap receivers.
 */
export const LOCKSTEP_MIB_OID = '1.3.6.1.4.1.32473.1';

export const SNMP_OIDS = {
  sysUpTime0: '1.3.6.1.2.1.1.3.0',
  snmpTrapOid0: '1.3.6.1.6.3.1.1.4.1.0',
  /** lockstepAlertNotification: a fault or state change the Availability Services raised. */
  alertNotification: `${LOCKSTEP_MIB_OID}.0.1`,
  /** lockstepTestNotification: "send test" from the console or the CLI. */
  testNotification: `${LOCKSTEP_MIB_OID}.0.2`,
  alertHost: `${LOCKSTEP_MIB_OID}.1.1`,
  alertSeverity: `${LOCKSTEP_MIB_OID}.1.2`,
  alertCode: `${LOCKSTEP_MIB_OID}.1.3`,
  alertMessage: `${LOCKSTEP_MIB_OID}.1.4`,
  alertPair: `${LOCKSTEP_MIB_OID}.1.5`,
  alertComponent: `${LOCKSTEP_MIB_OID}.1.6`,
  alertVm: `${LOCKSTEP_MIB_OID}.1.7`,
  alertId: `${LOCKSTEP_MIB_OID}.1.8`,
  alertTime: `${LOCKSTEP_MIB_OID}.1.9`,
} as const;

/** LOCKSTEP-MIB's `LockstepSeverity` enumeration. */
export const SNMP_SEVERITY: Readonly<Record<Severity, number>> = { info: 1, warning: 2, critical: 3 };

/** SnmpAdminString's size limit (SNMP-FRAMEWORK-MIB): longer text is cut at a character boundary. */
const ADMIN_STRING_OCTETS_MAX = 255;

export interface SnmpTarget {
  host: string;
  port: number;
  community: string;
}

/** The whole UDP payload: `Message { version v2c(1), community, SNMPv2-Trap-PDU }`. */
export function trapMessage(a: NotifyAlert, community: string, uptimeCs: number, requestId: number): Buffer {
  const varbind = (oid: string, value: Buffer): Buffer => berSequence([berOid(oid), value]);
  const text = (s: string): Buffer => berOctetString(adminString(s));
  const varbinds = [
    varbind(SNMP_OIDS.sysUpTime0, berUnsigned(TAG.timeTicks, uptimeCs % 2 ** 32)),
    varbind(SNMP_OIDS.snmpTrapOid0, berOid(a.test ? SNMP_OIDS.testNotification : SNMP_OIDS.alertNotification)),
    varbind(SNMP_OIDS.alertHost, text(a.host)),
    varbind(SNMP_OIDS.alertSeverity, berInteger(SNMP_SEVERITY[a.severity])),
    varbind(SNMP_OIDS.alertCode, text(a.code)),
    varbind(SNMP_OIDS.alertMessage, text(a.message)),
    varbind(SNMP_OIDS.alertPair, text(a.pair)),
    varbind(SNMP_OIDS.alertComponent, text(a.location.component ?? '')),
    varbind(SNMP_OIDS.alertVm, text(a.location.vm ?? '')),
    varbind(SNMP_OIDS.alertId, text(a.uid)),
    varbind(SNMP_OIDS.alertTime, berOctetString(dateAndTime(a.wallMs))),
  ];
  const pdu = berSequence([berInteger(requestId), berInteger(0), berInteger(0), berSequence(varbinds)], TAG.snmpV2Trap);
  return berSequence([berInteger(1), berOctetString(community), pdu]);
}

/** Sends the alert's trap to one target. */
export async function sendTrap(target: SnmpTarget, a: NotifyAlert, uptimeCs: number): Promise<DeliveryOutcome> {
  const message = trapMessage(a, target.community, Math.floor(uptimeCs), randomInt(1, 0x7fffffff));
  const socket = dgram.createSocket(net.isIPv6(target.host) ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.send(message, target.port, target.host, (err) => (err ? reject(err) : resolve()));
    });
    return delivered(`trap of ${message.length} bytes sent to ${target.host}:${target.port} (SNMPv2c traps are not acknowledged)`);
  } catch (e) {
    return failed('send', `cannot send the trap to ${target.host}:${target.port}: ${(e as Error).message}`);
  } finally {
    socket.close();
  }
}

/** SNMPv2-TC `DateAndTime`, 11 octets, in UTC: year (2), month, day, hour, minutes, seconds, deci-seconds, '+', 0, 0. */
export function dateAndTime(ms: number): Buffer {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  return Buffer.from([y >> 8, y & 0xff, d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), Math.floor(d.getUTCMilliseconds() / 100), 0x2b, 0, 0]);
}

function adminString(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= ADMIN_STRING_OCTETS_MAX) return b;
  let end = ADMIN_STRING_OCTETS_MAX;
  // Back off continuation octets (10xxxxxx) so that no character is cut in half.
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}
