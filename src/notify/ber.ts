/**
 * The few BER encodings (X.690) an SNMPv2c trap needs: definite lengths, INTEGER, OCTET STRING, NULL,
 * OBJECT IDENTIFIER, SEQUENCE and the SNMP application types (TimeTicks). Encoding only: Lockstep sends
 * traps and reads nothing back. Pure.
 */
import { assert } from '../util/assert.js';

export const TAG = {
  integer: 0x02,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  sequence: 0x30,
  /** SNMPv2-SMI `TimeTicks`: [APPLICATION 3] IMPLICIT INTEGER (0..4294967295). */
  timeTicks: 0x43,
  /** RFC 3416 `SNMPv2-Trap-PDU`: [7] IMPLICIT PDU, constructed. */
  snmpV2Trap: 0xa7,
} as const;

/** Tag, definite length (short form under 128, long form above), content. */
export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), berLength(content.length), content]);
}

export function berLength(n: number): Buffer {
  assert(Number.isSafeInteger(n) && n >= 0, `BER length ${n}`);
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** A signed 32-bit INTEGER, two's complement, in the fewest octets. */
export function berInteger(n: number): Buffer {
  assert(Number.isInteger(n) && n >= -0x80000000 && n <= 0x7fffffff, `INTEGER ${n} outside 32 bits`);
  const bytes: number[] = [];
  let v = n;
  for (;;) {
    bytes.unshift(v & 0xff);
    v >>= 8;
    // Done when the remaining value is pure sign extension of the octet just written.
    if ((v === 0 && (bytes[0]! & 0x80) === 0) || (v === -1 && (bytes[0]! & 0x80) !== 0)) break;
  }
  return tlv(TAG.integer, Buffer.from(bytes));
}

/** An unsigned 32-bit value under an application tag (TimeTicks, Counter32, Gauge32). */
export function berUnsigned(tag: number, n: number): Buffer {
  assert(Number.isInteger(n) && n >= 0 && n <= 0xffffffff, `unsigned ${n} outside 32 bits`);
  const bytes: number[] = [];
  for (let v = n; ; v = Math.floor(v / 256)) {
    bytes.unshift(v % 256);
    if (v < 256) break;
  }
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(tag, Buffer.from(bytes));
}

export function berOctetString(s: string | Buffer): Buffer {
  return tlv(TAG.octetString, typeof s === 'string' ? Buffer.from(s, 'utf8') : s);
}

export function berNull(): Buffer {
  return Buffer.from([TAG.null, 0]);
}

/** `1.3.6.1…`: the first two arcs in one octet (40·x + y), every arc base 128 with continuation bits. */
export function berOid(oid: string): Buffer {
  const arcs = oid.split('.').map((a) => {
    assert(/^\d+$/.test(a), `OID ${oid}`);
    return Number(a);
  });
  assert(arcs.length >= 2 && arcs[0]! <= 2 && (arcs[0]! === 2 || arcs[1]! < 40), `OID ${oid}`);
  const out: number[] = [];
  for (const arc of [arcs[0]! * 40 + arcs[1]!, ...arcs.slice(2)]) {
    assert(Number.isSafeInteger(arc), `OID arc of ${oid}`);
    const groups: number[] = [];
    for (let v = arc; ; v = Math.floor(v / 128)) {
      groups.unshift(v % 128);
      if (v < 128) break;
    }
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return tlv(TAG.oid, Buffer.from(out));
}

export function berSequence(items: readonly Buffer[], tag: number = TAG.sequence): Buffer {
  return tlv(tag, Buffer.concat(items));
}
