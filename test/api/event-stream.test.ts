/**
 * The live event stream over real HTTPS on 127.0.0.1, with the real core driver behind it: a console's
 * WebSocket gets the status, then the event log entries and audit entries an operator's call produces, and
 * can resume where it left off. Refusals come before the upgrade; broken client frames close the connection
 * with RFC 6455's codes and the server goes on; a client that does not read is cut off at the queue limit;
 * a stream ends with its session.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, SAMPLE_VM, startHarness, type Harness } from './harness.js';
import { connectWs, isClient, type Refusal, type WsClient } from './ws-client.js';
import type { LogEntry } from '../../src/daemon/state-db.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const STREAM = '/api/v1/events/stream';

async function withAdmin(h: Harness): Promise<string> {
  const r = await h.request('POST', '/api/v1/setup', { body: ADMIN });
  assert.equal(r.status, 201, r.text);
  return h.login(ADMIN.name, ADMIN.password);
}

async function userWith(h: Harness, admin: string, name: string, groups: string[]): Promise<string> {
  const r = await h.request('POST', '/api/v1/users', { token: admin, body: { name, password: `${name}-password-1`, groups } });
  assert.equal(r.status, 201, r.text);
  return h.login(name, `${name}-password-1`);
}

/** A stream opened with `token` (or other headers); its first message, the status, read. */
async function open(h: Harness, token: string | null, query = '', headers: Record<string, string> = {}): Promise<WsClient> {
  const c = await connectWs(h.port, h.ca, `${STREAM}${query}`, { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers });
  assert.ok(isClient(c), `expected the upgrade, got ${(c as Refusal).status} ${JSON.stringify((c as Refusal).body)}`);
  cleanup.add(() => c.destroy());
  const first = await c.message();
  assert.equal(first.type, 'status');
  assert.equal(first.status.host, 'host1');
  return c;
}

async function refused(h: Harness, query: string, headers: Record<string, string>, opts: { version?: string } = {}): Promise<Refusal> {
  const c = await connectWs(h.port, h.ca, `${STREAM}${query}`, headers, opts);
  assert.ok(!isClient(c), 'the upgrade was refused');
  return c as Refusal;
}

test('an operator action reaches a live stream as a log entry and an audit entry; after= replays what was missed', async () => {
  const h = await startHarness(cleanup);
  const admin = await withAdmin(h);
  const live = await open(h, admin);

  assert.equal((await h.request('POST', '/api/v1/vms', { token: admin, body: SAMPLE_VM })).status, 201);
  const defined = await live.message((m) => m.type === 'log' && m.entry.what.includes('operator defined VM web'));
  // The same shape as GET /v1/events.
  const listed = (await h.request('GET', '/api/v1/events?limit=1000', { token: admin })).body as (LogEntry & { id: number })[];
  assert.deepEqual(defined.entry, listed.find((e) => e.id === defined.entry.id));
  const audited = await live.message((m) => m.type === 'audit');
  assert.deepEqual([audited.entry.operation, audited.entry.user, audited.entry.target, audited.entry.result], ['defineVm', 'admin', 'web', 'ok']);
  // The status follows the change (the VM is in it).
  const status = await live.message((m) => m.type === 'status' && m.status.vms.length === 1);
  assert.equal(status.status.vms[0].name, 'web');
  live.close();
  assert.equal((await live.closed()).code, 1000, 'the close is answered with its code');

  // Missed while away: the next calls' entries, replayed oldest first after the status, then live again.
  const seen = defined.entry.id as number;
  assert.equal((await h.request('POST', '/api/v1/vms/web/start', { token: admin })).status, 200);
  assert.equal((await h.request('POST', '/api/v1/vms/web/stop', { token: admin })).status, 200);
  const missed = ((await h.request('GET', '/api/v1/events?limit=1000', { token: admin })).body as { id: number }[]).filter((e) => e.id > seen).reverse();
  assert.ok(missed.length >= 2, JSON.stringify(missed));
  // By cookie this time, as a browser connects.
  const back = await open(h, null, `?after=${seen}`, { cookie: `lockstep_session=${admin}` });
  const replayed = [];
  for (let i = 0; i < missed.length; i++) replayed.push((await back.message((m) => m.type === 'log')).entry);
  assert.deepEqual(replayed, missed);
  assert.equal((await h.request('DELETE', '/api/v1/vms/web', { token: admin })).status, 204);
  const next = await back.message((m) => m.type === 'log');
  assert.equal(next.entry.id, missed.at(-1)!.id + 1, 'no entry twice, none skipped');

  // A client that pings is answered with its payload.
  back.send(0x9, 'are you there');
  for (;;) {
    const f = await back.next();
    assert.ok(f !== null);
    if (f.opcode === 0xa) {
      assert.equal(f.payload.toString(), 'are you there');
      break;
    }
  }
});

test('a resume too far back replays the newest entries after a gap message', async () => {
  const h = await startHarness(cleanup, { withDriver: false, streamLimits: { replayMax: 5 } });
  const admin = await withAdmin(h);
  const entry = (i: number): LogEntry => ({ wallMs: Date.now(), atMs: i, host: 'host1', kind: 'event', severity: null, code: null, what: `entry ${i}`, cause: 'test' });
  h.db.appendLog(Array.from({ length: 12 }, (_, i) => entry(i + 1)));
  const c = await open(h, admin, '?after=2');
  assert.deepEqual(await c.message(), { type: 'gap', after: 2, before: 8 });
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await c.message()).entry.id);
  assert.deepEqual(ids, [8, 9, 10, 11, 12]);
});

test('refused before the upgrade: no session 401, no role 403, other paths 404, bad query or handshake 400', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const admin = await withAdmin(h);
  const nobody = await userWith(h, admin, 'nora', []);
  const cases: [string, Record<string, string>, number, string, { version?: string }?][] = [
    ['', {}, 401, 'NOT_AUTHENTICATED'],
    ['', { authorization: 'Bearer not-a-session' }, 401, 'NOT_AUTHENTICATED'],
    ['', { cookie: 'lockstep_session=forged' }, 401, 'NOT_AUTHENTICATED'],
    ['', { authorization: `Bearer ${nobody}` }, 403, 'FORBIDDEN'],
    ['?after=-1', { authorization: `Bearer ${admin}` }, 400, 'INVALID_ARGUMENT'],
    ['?since=1', { authorization: `Bearer ${admin}` }, 400, 'INVALID_ARGUMENT'],
    ['', { authorization: `Bearer ${admin}` }, 400, 'INVALID_ARGUMENT', { version: '8' }],
  ];
  for (const [query, headers, status, code, opts] of cases) {
    const r = await refused(h, query, headers, opts);
    assert.equal(r.status, status, `${query} ${JSON.stringify(headers)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, code);
  }
  const elsewhere = await connectWs(h.port, h.ca, '/api/v1/status', { authorization: `Bearer ${admin}` });
  assert.ok(!isClient(elsewhere));
  assert.equal(elsewhere.status, 404);
  assert.equal(elsewhere.body.error.code, 'UNKNOWN_ENDPOINT');
  // Authentication first: an unauthenticated caller learns nothing about its handshake.
  assert.equal((await refused(h, '', {}, { version: '8' })).status, 401);
  const denied = await h.request('GET', '/api/v1/audit?kind=user&text=streamEvents', { token: admin });
  assert.equal(denied.body.entries.length, 0, 'reads, upgrades included, are not audited');
});

test('a malformed client frame closes the connection with its close code; the server goes on', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const admin = await withAdmin(h);
  const long = Buffer.alloc(10);
  long[0] = 0x81;
  long[1] = 0x80 | 127;
  long.writeBigUInt64BE(70_000n, 2);
  const cases: [string, (c: WsClient) => void, number][] = [
    ['an unmasked frame', (c) => c.send(0x1, 'hello', { mask: false }), 1002],
    ['a message over 64 KiB', (c) => c.send(0x1, 'x'.repeat(64 * 1024 + 1)), 1009],
    ['a header announcing 70,000 bytes', (c) => c.raw(long), 1009],
    ['an unknown opcode', (c) => c.send(0x3, 'what'), 1002],
    ['a binary message', (c) => c.send(0x2, Buffer.from([1, 2, 3])), 1003],
    ['a fragmented message', (c) => c.send(0x1, 'part', { fin: false }), 1002],
    ['a continuation out of nowhere', (c) => c.send(0x0, 'more'), 1002],
    ['extension bits', (c) => c.send(0x1, 'deflated?', { rsv: 4 }), 1002],
    ['text that is not UTF-8', (c) => c.send(0x1, Buffer.from([0xc3, 0x28])), 1007],
    ['a ping over 125 bytes', (c) => c.send(0x9, Buffer.alloc(126)), 1002],
  ];
  for (const [what, act, code] of cases) {
    const c = await open(h, admin);
    act(c);
    const closed = await c.closed();
    assert.equal(closed.code, code, `${what}: ${closed.reason}`);
    assert.ok(closed.reason.length > 0, `${what}: a reason is given`);
    c.close(code);
    await c.gone();
  }
  // Text within the limits is read and ignored; the stream stays open.
  const fine = await open(h, admin);
  fine.send(0x1, JSON.stringify({ hello: 'server' }));
  assert.equal((await h.request('GET', '/api/v1/status', { token: admin })).status, 200);
  assert.equal((await h.request('POST', '/api/v1/session', { body: { name: 'admin', password: 'not it at all' } })).status, 401);
  assert.equal((await fine.message((m) => m.type === 'audit')).entry.operation, 'login');
});

test('a client that does not read is closed with 1008 at the send queue limit, and others are served', async () => {
  const h = await startHarness(cleanup, { withDriver: false, streamLimits: { sendQueueBytesMax: 64 * 1024, closeTimeoutMs: 120_000 } });
  const admin = await withAdmin(h);
  const slow = await open(h, admin);
  slow.socket.pause();
  // More than the kernel's socket buffers on both ends can hold (a few MB each), so Node's queue grows.
  const what = 'w'.repeat(32 * 1024);
  const batches = 16;
  const perBatch = 50;
  for (let b = 0; b < batches; b++) {
    h.db.appendLog(Array.from({ length: perBatch }, (_, i) => ({ wallMs: Date.now(), atMs: b * perBatch + i, host: 'host1', kind: 'event' as const, severity: null, code: null, what, cause: 'flood' })));
    h.logged();
  }
  slow.socket.resume();
  const closed = await slow.closed();
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /reads too slowly/);
  const got = closed.messages.filter((m) => m.type === 'log').length;
  assert.ok(got < batches * perBatch, `cut off before the end (${got} of ${batches * perBatch})`);
  slow.destroy();
  // The server is up and a new client gets what comes next.
  const fresh = await open(h, admin);
  h.db.appendLog([{ wallMs: Date.now(), atMs: 0, host: 'host1', kind: 'alert', severity: 'info', code: 'AFTER_FLOOD', what: 'after the flood', cause: 'test' }]);
  h.logged();
  assert.equal((await fresh.message((m) => m.type === 'log')).entry.code, 'AFTER_FLOOD');
});

test('a stream ends with its session: logout, expiry, a role taken away', async () => {
  const h = await startHarness(cleanup, { withDriver: false, idleMs: 60_000 });
  const admin = await withAdmin(h);

  const mine = await h.login(ADMIN.name, ADMIN.password);
  const byLogout = await open(h, mine);
  assert.equal((await h.request('DELETE', '/api/v1/session', { token: mine })).status, 204);
  const ended = await byLogout.closed();
  assert.deepEqual([ended.code, ended.reason], [1008, 'the session has ended: log in again']);

  const reader = await userWith(h, admin, 'rita', ['read-only']);
  const byRole = await open(h, reader);
  assert.equal((await h.request('PATCH', '/api/v1/users/rita', { token: admin, body: { groups: [] } })).status, 200);
  const demoted = await byRole.closed();
  assert.equal(demoted.code, 1008);
  assert.match(demoted.reason, /rita no longer allows/);

  // The stream does not renew its session: idle past the limit, it is closed at the next check.
  const idle = await open(h, admin);
  h.clock.advance(61_000);
  assert.equal((await h.request('POST', '/api/v1/session', { body: { name: 'admin', password: 'a wrong password' } })).status, 401);
  const expired = await idle.closed();
  assert.deepEqual([expired.code, expired.reason], [1008, 'the session has expired: log in again']);
});
