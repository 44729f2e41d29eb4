// The quorum wire schema: every field checked, fresh values built, clear errors naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  QUORUM_EPOCH_MAX,
  QUORUM_LINE_BYTES_MAX,
  formatQuorumLine,
  isVersionError,
  parseQuorumReply,
  parseQuorumRequest,
  quorumError,
  salvageId,
} from '../../src/protocol/quorum.js';
import { LockstepError } from '../../src/util/errors.js';

const acquire = { v: 1, type: 'acquire', pair: 'p1', host: 'host1', knownEpoch: 6, id: 7 };
const line = (o: unknown): string => JSON.stringify(o);

function invalidField(f: () => unknown, field: string): LockstepError {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof LockstepError, `expected INVALID_MESSAGE, got ${String(caught)}`);
  assert.equal(caught.code, 'INVALID_MESSAGE');
  assert.equal(caught.fields['field'], field, caught.message);
  return caught;
}

test('requests and replies round-trip through their line form', () => {
  assert.deepEqual(parseQuorumRequest(formatQuorumLine(acquire as never).trimEnd()), acquire);
  assert.deepEqual(parseQuorumRequest(Buffer.from(line({ v: 1, type: 'ping', id: 0 }))), { v: 1, type: 'ping', id: 0 });
  for (const r of [
    { v: 1, type: 'granted', id: 7, epoch: 7 },
    { v: 1, type: 'denied', id: 7, epoch: 7, holder: 'host2' },
    { v: 1, type: 'pong', id: 3 },
    { v: 1, type: 'error', id: 7, code: 'HOST_MISMATCH', message: 'no' },
    { v: 1, type: 'error', code: 'INVALID_MESSAGE', message: 'no' },
  ]) {
    assert.deepEqual(parseQuorumReply(line(r)), r);
  }
});

test('unknown fields are dropped, never passed on', () => {
  const text = line({ ...acquire, extra: { deep: true } }).replace(/}$/, ',"__proto__":{"admin":true}}');
  const parsed = parseQuorumRequest(text);
  assert.equal((parsed as unknown as Record<string, unknown>)['admin'], undefined);
  assert.deepEqual(Object.keys(parsed).sort(), ['host', 'id', 'knownEpoch', 'pair', 'type', 'v']);
});

test('another protocol version is a clear error of its own kind', () => {
  for (const v of [2, 0, '1', null, undefined]) {
    const e = invalidField(() => parseQuorumRequest(line({ ...acquire, v })), 'v');
    assert.ok(isVersionError(e));
    assert.match(e.message, /unsupported protocol version \(this side speaks version 1\)/);
  }
  assert.ok(!isVersionError(invalidField(() => parseQuorumRequest(line({ ...acquire, id: -1 })), 'id')));
});

test('every field is checked: types, ranges and the name rule', () => {
  const bad: [Record<string, unknown>, string][] = [
    [{ type: 'grant' }, 'type'],
    [{ type: undefined }, 'type'],
    [{ id: -1 }, 'id'],
    [{ id: 1.5 }, 'id'],
    [{ id: '7' }, 'id'],
    [{ id: 2 ** 53 }, 'id'],
    [{ knownEpoch: -1 }, 'knownEpoch'],
    [{ knownEpoch: 0.5 }, 'knownEpoch'],
    [{ knownEpoch: Number.MAX_SAFE_INTEGER }, 'knownEpoch'],
    [{ knownEpoch: null }, 'knownEpoch'],
    [{ pair: '' }, 'pair'],
    [{ pair: 'P1' }, 'pair'],
    [{ pair: '-p1' }, 'pair'],
    [{ pair: 'a'.repeat(64) }, 'pair'],
    [{ host: 'host 1' }, 'host'],
    [{ host: 'host1\n' }, 'host'],
    [{ host: ['host1'] }, 'host'],
  ];
  for (const [change, field] of bad) invalidField(() => parseQuorumRequest(line({ ...acquire, ...change })), field);
  assert.equal(parseQuorumRequest(line({ ...acquire, knownEpoch: QUORUM_EPOCH_MAX })).type, 'acquire');
  assert.equal(parseQuorumRequest(line({ ...acquire, pair: 'a'.repeat(63), host: '0' })).type, 'acquire');
});

test('lines that are not JSON objects, not UTF-8, or too long', () => {
  for (const l of ['', 'null', '[]', '7', '"acquire"', '{', '{"v":1,', 'v=1']) invalidField(() => parseQuorumRequest(l), 'line');
  invalidField(() => parseQuorumRequest(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 'line');
  invalidField(() => parseQuorumRequest(' '.repeat(QUORUM_LINE_BYTES_MAX)), 'line');
});

test('replies are checked as strictly as requests', () => {
  invalidField(() => parseQuorumReply(line({ v: 1, type: 'granted', id: 7, epoch: -1 })), 'epoch');
  invalidField(() => parseQuorumReply(line({ v: 1, type: 'granted', id: 7 })), 'epoch');
  invalidField(() => parseQuorumReply(line({ v: 1, type: 'denied', id: 7, epoch: 7, holder: 'Host 2' })), 'holder');
  invalidField(() => parseQuorumReply(line({ v: 1, type: 'error', code: 'lower', message: '' })), 'code');
  invalidField(() => parseQuorumReply(line({ v: 1, type: 'error', code: 'X', message: 'm'.repeat(2000) })), 'message');
  invalidField(() => parseQuorumReply(line({ v: 1, type: 'acquire', id: 7 })), 'type');
  invalidField(() => parseQuorumReply(line({ v: 3, type: 'pong', id: 7 })), 'v');
});

test('error replies are cut to what a parser accepts; ids are salvaged from broken requests when possible', () => {
  const e = quorumError('INVALID_MESSAGE', 'x'.repeat(5000), 9);
  assert.deepEqual(parseQuorumReply(formatQuorumLine(e).trimEnd()), e);
  assert.equal(salvageId(line({ ...acquire, host: 'BAD' })), 7);
  assert.equal(salvageId(line({ id: -4 })), undefined);
  assert.equal(salvageId('{'), undefined);
  assert.equal(salvageId('[1]'), undefined);
});
