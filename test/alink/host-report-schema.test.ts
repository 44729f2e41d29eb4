/**
 * The daemons' own peer messages (`src/protocol/peer.ts`: `host-report-request`, `host-report`): what a
 * lockstepd sends passes unchanged, through the envelope too; every field the peer could get wrong is
 * refused with the field named; a report past its size limit is refused whole; and the core's parser
 * still refuses these kinds (the core never sees them).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { REPORT_LIMITS, parseDaemonMessage, parsePeerEnvelope, parseWireEnvelope, parseWireMessage, toWireEnvelope, type HostReport } from '../../src/protocol/peer.js';
import type { NetworkStatus } from '../../src/daemon/networks.js';
import { encodeFrame, FRAME_BYTES_MAX_DEFAULT } from '../../src/alink/framing.js';
import { isLockstepError } from '../../src/util/errors.js';

function refused(raw: unknown, field: string, parse: (raw: unknown) => unknown = parseDaemonMessage): void {
  assert.throws(
    () => parse(raw),
    (e) => isLockstepError(e, 'INVALID_MESSAGE') && e.fields['field'] === field && e.message.includes(`'${field}'`),
    `expected INVALID_MESSAGE for ${field}`,
  );
}

function withField(msg: unknown, path: string, value: unknown): unknown {
  const copy = structuredClone(msg) as Record<string, unknown>;
  const keys = path.split('.');
  let at: Record<string, unknown> = copy;
  for (const k of keys.slice(0, -1)) at = at[k] as Record<string, unknown>;
  const last = keys.at(-1)!;
  if (value === undefined) delete at[last];
  else at[last] = value;
  return copy;
}

const alink1: NetworkStatus = {
  name: 'alink1',
  role: 'alink',
  host: 'host2',
  interface: 'alink1',
  bridge: null,
  state: 'up',
  detail: 'carrier (operstate up)',
  health: 'ok',
  operstate: 'up',
  adminUp: true,
  carrier: true,
  speedMbps: 10000,
  mac: '02:4c:53:00:00:02',
  mtu: 1500,
  rxBytes: 123456,
  txBytes: 654321,
  bandwidth: { rxBytesPerSec: 1536, txBytesPerSec: 2048, overMs: 500, sampledAt: '2026-01-02T03:04:05.678Z', reason: null },
  alink: { localAddress: '10.10.1.2', peerAddress: '10.10.1.1', connected: true, rttMs: 0.42, lastError: null },
};
const business: NetworkStatus = {
  ...alink1,
  name: 'business',
  role: 'business',
  interface: 'biz0',
  bridge: 'br-biz',
  state: 'missing',
  detail: 'interface biz0 does not exist',
  health: null,
  operstate: null,
  adminUp: null,
  carrier: null,
  speedMbps: null,
  mac: null,
  mtu: null,
  rxBytes: null,
  txBytes: null,
  bandwidth: { rxBytesPerSec: null, txBytesPerSec: null, overMs: null, sampledAt: null, reason: 'no interface' },
  alink: null,
};
const report: HostReport = {
  kind: 'host-report',
  from: 'host2',
  id: 7,
  takenAt: '2026-01-02T03:04:05.678Z',
  networks: [alink1, business],
  health: { alink1: 'ok', alink2: 'failed', mgmt: 'ok', business: 'degraded', disk: 'ok', qemu: 'ok', 'power-supply': 'ok' },
};

describe('host report messages', () => {
  test('a request and a report pass unchanged, through the envelope too; a report before any health check has null health', () => {
    const request = { kind: 'host-report-request', from: 'host1', id: 0 } as const;
    for (const m of [request, report, { ...report, health: null, networks: [] }]) {
      assert.deepEqual(parseDaemonMessage(structuredClone(m)), m);
      assert.deepEqual(parseWireMessage(structuredClone(m)), m);
      assert.deepEqual(parseWireEnvelope(JSON.parse(JSON.stringify(toWireEnvelope(m)))), m);
    }
  });

  test('unknown fields are dropped, not passed on', () => {
    const raw = withField(withField(report, 'extra', 1), 'networks', [{ ...alink1, note: 'x' }, business]);
    assert.deepEqual(parseDaemonMessage(raw), report);
  });

  test('the core never sees them: its own parser refuses the kinds', () => {
    refused(JSON.parse(JSON.stringify(toWireEnvelope(report))), 'kind', parsePeerEnvelope);
  });

  test('every field is checked, and the error names it', () => {
    const cases: [string, unknown, string?][] = [
      ['kind', 'host-reprot'],
      ['from', 'Host2'],
      ['from', undefined],
      ['id', -1],
      ['id', 1.5],
      ['id', '7'],
      ['takenAt', 'yesterday'],
      ['takenAt', '2026-13-45T99:99:99Z'],
      ['takenAt', 17],
      ['networks', {}],
      ['networks', Array.from({ length: REPORT_LIMITS.networksMax + 1 }, () => alink1)],
      ['networks', [alink1, alink1], 'networks[1].name'],
      ['networks', [{ ...alink1, host: 'host1' }], 'networks[0].host'],
      ['networks.0.name', 'wifi'],
      ['networks.0.role', 'storage'],
      ['networks.0.host', 'HOST'],
      ['networks.0.interface', 7],
      ['networks.0.interface', 'x'.repeat(REPORT_LIMITS.shortChars + 1)],
      ['networks.0.bridge', false],
      ['networks.0.state', 'sideways'],
      ['networks.0.detail', null],
      ['networks.0.detail', 'line one\nline two'],
      ['networks.0.detail', 'x'.repeat(REPORT_LIMITS.textChars + 1)],
      ['networks.0.health', 'fine'],
      ['networks.0.operstate', 1],
      ['networks.0.adminUp', 'yes'],
      ['networks.0.carrier', 0],
      ['networks.0.speedMbps', -1],
      ['networks.0.mac', {}],
      ['networks.0.mtu', 1500.5],
      ['networks.0.rxBytes', '1'],
      ['networks.0.txBytes', Number.MAX_SAFE_INTEGER + 2],
      ['networks.0.bandwidth', null],
      ['networks.0.bandwidth.rxBytesPerSec', -5],
      ['networks.0.bandwidth.txBytesPerSec', 'fast'],
      ['networks.0.bandwidth.overMs', true],
      ['networks.0.bandwidth.sampledAt', 5],
      ['networks.0.bandwidth.reason', 5],
      ['networks.0.alink', 'alink1'],
      ['networks.0.alink.localAddress', null],
      ['networks.0.alink.peerAddress', 3],
      ['networks.0.alink.connected', 'up'],
      ['networks.0.alink.rttMs', -0.1],
      ['networks.0.alink.rttMs', 'NaN'],
      ['networks.0.alink.lastError', 404],
      ['health', []],
      ['health', { ...report.health, fans: 'ok' }, 'health.fans'],
      ['health.disk', undefined],
      ['health.qemu', 'sick'],
    ];
    for (const [path, value, named] of cases) {
      const field = named ?? path.replace(/\.(\d+)(?=\.|$)/g, '[$1]');
      refused(withField(report, path, value), field);
    }
    refused(withField({ kind: 'host-report-request', from: 'host1', id: 1 }, 'id', undefined), 'id');
    refused(null, 'message');
    refused([report], 'message');
    refused({ v: 3, kind: 'host-report', body: report }, 'v', parseWireEnvelope);
    refused({ v: 2, kind: 'host-report', body: 'x' }, 'body', parseWireEnvelope);
  });

  test('a report over its size limit is refused whole, before its fields; the largest valid one fits a frame', () => {
    const long = 'x'.repeat(REPORT_LIMITS.textChars);
    const big = (n: NetworkStatus): NetworkStatus => ({ ...n, detail: long, bandwidth: { ...n.bandwidth, reason: long }, alink: n.alink && { ...n.alink, lastError: long } });
    const names = ['alink1', 'alink2', 'mgmt', 'business'] as const;
    const largest: HostReport = { ...report, networks: names.map((name) => big({ ...alink1, name })) };
    assert.deepEqual(parseDaemonMessage(structuredClone(largest)), largest);
    const bytes = encodeFrame({ t: 'msg', id: 1, env: toWireEnvelope(largest) }).length;
    assert.ok(bytes < REPORT_LIMITS.reportBytesMax && bytes < FRAME_BYTES_MAX_DEFAULT, `the largest valid report is ${bytes} bytes`);
    // Padding in a field the parser ignores still counts: the limit is on what arrives.
    const oversize = { ...report, padding: 'p'.repeat(REPORT_LIMITS.reportBytesMax) };
    assert.throws(
      () => parseDaemonMessage(oversize),
      (e) => isLockstepError(e, 'INVALID_MESSAGE') && e.fields['field'] === 'report' && /bytes of JSON; at most 65536/.test(e.message),
    );
  });
});
