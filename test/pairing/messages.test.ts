// The pairing wire formats: every malformed beacon or exchange line is INVALID_MESSAGE naming the field,
// and what parses is a fresh object of the checked fields only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBeacon, formatLine, parseBeacon, parseExchangeLine, PAIRING_LINE_BYTES_MAX } from '../../src/pairing/messages.js';
import { isLockstepError } from '../../src/util/errors.js';

const HEX = 'ab'.repeat(32);
const CSR = '-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n';
const CERT = '-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n';

const invalidAt = (field: string) => (e: unknown) => isLockstepError(e, 'INVALID_MESSAGE') && e.fields['field'] === field;

test('beacons: round trip; unknown fields dropped', () => {
  const b = { pairId: 'p1', host: 'host2', pairingPort: 7792 };
  assert.deepEqual(parseBeacon(formatBeacon(b)), { v: 1, t: 'lockstep-pair-beacon', ...b });
  const extra = Buffer.from(JSON.stringify({ v: 1, t: 'lockstep-pair-beacon', ...b, evil: true }));
  assert.equal('evil' in parseBeacon(extra), false);
});

test('malformed beacons name the field', () => {
  const beacon = (o: Record<string, unknown>) => Buffer.from(JSON.stringify({ v: 1, t: 'lockstep-pair-beacon', pairId: 'p1', host: 'host2', pairingPort: 1, ...o }));
  const cases: [Buffer, string][] = [
    [Buffer.from('not json'), 'datagram'],
    [Buffer.from([0xff, 0xfe, 0x7b]), 'datagram'],
    [Buffer.from('[1,2]'), 'datagram'],
    [Buffer.from('null'), 'datagram'],
    [Buffer.alloc(2000, 0x20), 'datagram'],
    [beacon({ v: 2 }), 'v'],
    [beacon({ t: 'hello' }), 't'],
    [beacon({ pairId: 'P/1' }), 'pairId'],
    [beacon({ host: '' }), 'host'],
    [beacon({ host: 'x'.repeat(64) }), 'host'],
    [beacon({ pairingPort: 70000 }), 'pairingPort'],
    [beacon({ pairingPort: '7792' }), 'pairingPort'],
    [beacon({ pairingPort: 1.5 }), 'pairingPort'],
  ];
  for (const [datagram, field] of cases) assert.throws(() => parseBeacon(datagram), invalidAt(field), `${datagram.toString().slice(0, 80)} → ${field}`);
});

test('exchange lines: each type round-trips', () => {
  const messages = [
    { v: 1, t: 'hello', pairId: 'p1', host: 'host1', nonce: HEX },
    { v: 1, t: 'csr', host: 'host2', nonce: HEX, csr: CSR, proof: HEX },
    { v: 1, t: 'certs', ca: CERT, cert: CERT, proof: HEX },
    { v: 1, t: 'done', proof: HEX },
    { v: 1, t: 'fail', reason: 'no' },
  ] as const;
  for (const m of messages) {
    const line = formatLine(m);
    assert.ok(line.endsWith('\n'));
    assert.deepEqual(parseExchangeLine(Buffer.from(line.slice(0, -1))), m);
  }
});

test('malformed exchange lines name the field', () => {
  const line = (o: Record<string, unknown>) => Buffer.from(JSON.stringify({ v: 1, ...o }));
  const cases: [Buffer, string][] = [
    [Buffer.from('{"v":1,'), 'line'],
    [Buffer.from([0xc3, 0x28]), 'line'],
    [Buffer.from('"hello"'), 'line'],
    [Buffer.alloc(PAIRING_LINE_BYTES_MAX + 1, 0x20), 'line'],
    [Buffer.from('{"t":"hello"}'), 'v'],
    [line({ t: 'bye' }), 't'],
    [line({ t: 'hello', pairId: 'p1', host: 'host1', nonce: 'AB'.repeat(32) }), 'nonce'],
    [line({ t: 'hello', pairId: 'p1', host: 'host1', nonce: HEX.slice(2) }), 'nonce'],
    [line({ t: 'hello', pairId: 'p1', host: 'Host 1', nonce: HEX }), 'host'],
    [line({ t: 'csr', host: 'host2', nonce: HEX, csr: CERT, proof: HEX }), 'csr'],
    [line({ t: 'csr', host: 'host2', nonce: HEX, csr: CSR + CSR, proof: HEX }), 'csr'],
    [line({ t: 'csr', host: 'host2', nonce: HEX, csr: CSR.replace('MIIBAA==', '"evil"'), proof: HEX }), 'csr'],
    [line({ t: 'csr', host: 'host2', nonce: HEX, csr: CSR }), 'proof'],
    [line({ t: 'certs', ca: CERT, cert: 'x'.repeat(20_000), proof: HEX }), 'cert'],
    [line({ t: 'certs', ca: 42, cert: CERT, proof: HEX }), 'ca'],
    [line({ t: 'done', proof: 7 }), 'proof'],
    [line({ t: 'fail', reason: 'r'.repeat(513) }), 'reason'],
  ];
  for (const [bytes, field] of cases) assert.throws(() => parseExchangeLine(bytes), invalidAt(field), `${bytes.toString().slice(0, 80)} → ${field}`);
});
