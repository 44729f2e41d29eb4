/**
 * The peer message schema (`src/protocol/peer.ts`): what the core sends passes, what it could not have sent
 * is refused with the field named, and the largest valid message fits in one A-Link frame.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { PeerMessage, VmRecord } from '../../src/core/types.js';
import { PEER_LIMITS, parsePeerEnvelope, parsePeerMessage, toPeerEnvelope } from '../../src/protocol/peer.js';
import { encodeFrame, FRAME_BYTES_MAX_DEFAULT } from '../../src/alink/framing.js';
import { isLockstepError } from '../../src/util/errors.js';
import { World } from '../../src/sim/world.js';
import { runSchedule } from '../../src/sim/schedule.js';
import { heartbeat, pairPropose, vmRecord } from './helpers.js';

/** Asserts that `raw` is refused with INVALID_MESSAGE naming `field`. */
function refused(raw: unknown, field: string, parse: (raw: unknown) => unknown = parsePeerMessage): void {
  assert.throws(
    () => parse(raw),
    (e) => isLockstepError(e, 'INVALID_MESSAGE') && e.fields['field'] === field && e.message.includes(`'${field}'`),
    `expected INVALID_MESSAGE for ${field}`,
  );
}

/** A deep copy with one change at a dotted path (`undefined` deletes the field). */
function withField(msg: PeerMessage, path: string, value: unknown): unknown {
  const copy = structuredClone(msg) as unknown as Record<string, unknown>;
  const keys = path.split('.');
  let at: Record<string, unknown> = copy;
  for (const k of keys.slice(0, -1)) at = at[k] as Record<string, unknown>;
  const last = keys.at(-1)!;
  if (value === undefined) delete at[last];
  else at[last] = value;
  return copy;
}

describe('peer messages', () => {
  const hb = heartbeat('host1', 7, { web: vmRecord('web', 'host1'), db: vmRecord('db', 'host2') });

  test('valid messages pass unchanged, through the envelope too', () => {
    for (const m of [hb, pairPropose('host2', 9), { kind: 'pair-accept', from: 'host1', epoch: 0 } as const]) {
      assert.deepEqual(parsePeerMessage(structuredClone(m)), m);
      const env = JSON.parse(JSON.stringify(toPeerEnvelope(m))) as unknown;
      assert.deepEqual(parsePeerEnvelope(env), m);
    }
  });

  test('unknown fields are dropped, not passed on', () => {
    const raw = { ...structuredClone(hb), extra: 'x' } as Record<string, unknown>;
    (raw['vms'] as Record<string, Record<string, unknown>>)['web']!['note'] = 1;
    const parsed = parsePeerMessage(raw) as unknown as Record<string, unknown>;
    assert.equal('extra' in parsed, false);
    assert.deepEqual(parsed, hb);
  });

  test('every field is checked, and the error names it', () => {
    const cases: [string, unknown][] = [
      ['kind', 'hearbeat'],
      ['from', 'Host1'],
      ['from', undefined],
      ['incarnation', -1],
      ['incarnation', 1.5],
      ['seq', 2 ** 53],
      ['seq', '7'],
      ['echo', null],
      ['echo.incarnation', -2],
      ['echo.seq', -1],
      ['epoch', Infinity],
      ['authority', 'owner'],
      ['hostState', 'toString'],
      ['hostState', 'sleeping'],
      ['health', 101],
      ['health', -0.5],
      ['health', 'ok'],
      ['quorumReachable', 'quorum1'],
      ['quorumReachable', Array.from({ length: PEER_LIMITS.quorumServersMax + 1 }, (_, i) => `q${i}`)],
      ['activeQuorum', ''],
      ['activeQuorum', undefined],
      ['vms', []],
      ['vms', null],
      ['running', 'web'],
      ['vms.web', 3],
      ['vms.web.config', undefined],
      ['vms.web.config.name', 'db'],
      ['vms.web.config.desired', 'paused'],
      ['vms.web.config.protection', 'max'],
      ['vms.web.config.version', -1],
      ['vms.web.config.by', 7],
      ['vms.web.config.removed', 'no'],
      ['vms.web.owner', []],
      ['vms.web.owner.host', ''],
      ['vms.web.owner.epoch', null],
      ['vms.web.owner.seq', 1e300],
    ];
    for (const [field, value] of cases) refused(withField(hb, field, value), field);
    refused(withField(hb, 'running', ['web', 'Bad Name']), 'running[1]');
    refused({ ...structuredClone(hb), vms: { 'Not-a-name': vmRecord('web', 'host1') } }, 'vms.Not-a-name');
    refused({ ...structuredClone(hb), vms: { __proto__: null, constructor: 1 } }, 'vms.constructor');
    refused({ kind: 'pair-accept', from: 'host1' }, 'epoch');
    refused({ kind: 'pair-propose', from: 'host1', epoch: 1, activeQuorum: null, vms: { a: 1 } }, 'vms.a');
    refused(null, 'message');
    refused([hb], 'message');
  });

  test("a migration's multifd connections: absent (a host that predates them) reads as one stream, bad values are refused", () => {
    const migrating: PeerMessage = {
      ...hb,
      migrations: { web: { id: 'host1.1.4', multifd: 2 } },
      incoming: { db: { id: 'host2.1.9', ready: true, port: 49152, multifd: 2, failed: false } },
    };
    assert.deepEqual(parsePeerMessage(structuredClone(migrating)), migrating);
    const old = parsePeerMessage(withField(withField(migrating, 'migrations.web.multifd', undefined) as PeerMessage, 'incoming.db.multifd', undefined)) as typeof migrating;
    assert.equal(old.migrations.web!.multifd, 0);
    assert.equal(old.incoming.db!.multifd, 0);
    for (const bad of [-1, 1.5, '2', null, PEER_LIMITS.multifdChannelsMax + 1]) {
      refused(withField(migrating, 'migrations.web.multifd', bad), 'migrations.web.multifd');
      refused(withField(migrating, 'incoming.db.multifd', bad), 'incoming.db.multifd');
    }
  });

  test('at most 1024 VMs, and the largest valid heartbeat fits in one frame', (t) => {
    const long = (i: number): string => `v${String(i).padStart(30, '0')}`.slice(0, 31);
    const big: Record<string, VmRecord> = {};
    for (let i = 0; i < PEER_LIMITS.vmsMax; i++) {
      const name = long(i);
      const r = vmRecord(name, 'h'.repeat(31));
      big[name] = { config: { ...r.config, version: Number.MAX_SAFE_INTEGER }, owner: { ...r.owner, epoch: Number.MAX_SAFE_INTEGER, seq: Number.MAX_SAFE_INTEGER } };
    }
    const largest = {
      ...heartbeat('h'.repeat(31), Number.MAX_SAFE_INTEGER, big),
      quorumReachable: Array.from({ length: PEER_LIMITS.quorumServersMax }, (_, i) => `q${i}`.padEnd(64, 'x')),
    };
    assert.deepEqual(parsePeerMessage(largest), largest);
    const bytes = encodeFrame({ t: 'msg', id: Number.MAX_SAFE_INTEGER, env: toPeerEnvelope(largest) }).length;
    assert.ok(bytes < FRAME_BYTES_MAX_DEFAULT / 2, `largest heartbeat is ${bytes} bytes`);
    t.diagnostic(`the largest valid heartbeat is ${bytes} bytes as a frame (limit ${FRAME_BYTES_MAX_DEFAULT})`);
    big[long(PEER_LIMITS.vmsMax)] = vmRecord(long(PEER_LIMITS.vmsMax), 'host1');
    refused({ ...largest, vms: big }, 'vms');
  });

  test('the envelope carries a version, and another version is refused', () => {
    const env = toPeerEnvelope(hb);
    assert.equal(env.v, 2);
    refused({ ...env, v: 1 }, 'v', parsePeerEnvelope);
    refused({ ...env, v: 3 }, 'v', parsePeerEnvelope);
    refused({ ...env, v: '2' }, 'v', parsePeerEnvelope);
    refused({ ...env, kind: 'ping' }, 'kind', parsePeerEnvelope);
    refused({ ...env, body: 'x' }, 'body', parsePeerEnvelope);
    // The body's own `kind`, if any, cannot override the envelope's.
    assert.equal(parsePeerEnvelope({ ...env, body: { ...env.body, kind: 'pair-accept' } }).kind, 'heartbeat');
  });

  test('every message the decision core sends in 50 seeded fault schedules passes the schema', () => {
    // The simulator's delivery of a `send-peer` effect is where every core message passes; wrap it.
    const proto = World.prototype as unknown as { runEffect: (h: unknown, e: { kind: string; msg?: PeerMessage }) => void };
    const original = proto.runEffect;
    const kinds = new Map<string, number>();
    let failure: unknown = null;
    proto.runEffect = function (this: unknown, h, e) {
      if (e.kind === 'send-peer' && failure === null) {
        try {
          const wire = JSON.parse(JSON.stringify(toPeerEnvelope(e.msg!))) as unknown;
          assert.deepEqual(parsePeerEnvelope(wire), e.msg);
          kinds.set(e.msg!.kind, (kinds.get(e.msg!.kind) ?? 0) + 1);
        } catch (err) {
          failure = err;
        }
      }
      return original.call(this, h, e);
    };
    try {
      for (let seed = 1; seed <= 50; seed++) runSchedule(seed);
    } finally {
      proto.runEffect = original;
    }
    if (failure) throw failure;
    for (const k of ['heartbeat', 'pair-propose', 'pair-accept']) assert.ok((kinds.get(k) ?? 0) > 0, `the core sent some ${k}`);
  });
});
