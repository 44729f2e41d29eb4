// The QMP client against a fake QMP server that frames badly on purpose: split and coalesced lines,
// answers out of order, invalid JSON, a line that never ends, silence, a dropped connection. Each case must
// end with an answer or a clear error, never a hang.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { QmpClient, type QmpEvent } from '../../src/qemu/qmp.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, GREETING, fakeQmpServer, onRequests, rejectionOf, sleep, standardServer, tempDir } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

function assertCode(e: unknown, code: string): LockstepError {
  assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return e;
}

const event = (name: string, data: object = {}): string =>
  JSON.stringify({ timestamp: { seconds: 1, microseconds: 2 }, event: name, data }) + '\r\n';

async function connect(server: (s: net.Socket) => void, opts: { maxLineBytes?: number; timeoutMs?: number } = {}): Promise<QmpClient> {
  const dir = await tempDir(cleanup);
  const { path } = await fakeQmpServer(cleanup, dir, server);
  const client = await QmpClient.connect(path, { timeoutMs: opts.timeoutMs ?? 2000, ...(opts.maxLineBytes ? { maxLineBytes: opts.maxLineBytes } : {}) });
  cleanup.add(() => client.close());
  return client;
}

/** Writes `text` in pieces of `size` bytes with a pause between, so each arrives as its own chunk. */
async function dribble(socket: net.Socket, text: string, size: number): Promise<void> {
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += size) {
    socket.write(bytes.subarray(i, i + size));
    await sleep(2);
  }
}

test('greeting and answers that arrive a few bytes at a time are reassembled (UTF-8 cut in half too)', async () => {
  const client = await connect((socket) => {
    void dribble(socket, GREETING, 7);
    onRequests(socket, (req) => {
      const answer = req.execute === 'qmp_capabilities' ? { return: {}, id: req.id } : { return: { desc: 'naïve ✓' }, id: req.id };
      void dribble(socket, JSON.stringify(answer) + '\r\n', 3);
    });
  });
  assert.deepEqual(client.version.qemu, { major: 7, minor: 2, micro: 0 });
  assert.deepEqual(client.greeting.capabilities, ['oob']);
  assert.deepEqual(await client.execute('query-thing'), { desc: 'naïve ✓' });
});

test('greeting, events and answers coalesced into one write are all delivered', async () => {
  const events: QmpEvent[] = [];
  const dir = await tempDir(cleanup);
  const { path } = await fakeQmpServer(cleanup, dir, (socket) => {
    onRequests(socket, (req) => {
      if (req.execute === 'qmp_capabilities') socket.write(JSON.stringify({ return: {}, id: req.id }) + '\r\n' + event('EARLY'));
      else socket.write(event('A', { n: 1 }) + JSON.stringify({ return: 42, id: req.id }) + '\r\n' + event('B'));
    });
    socket.write(GREETING);
  });
  const client = await QmpClient.connect(path, { timeoutMs: 2000, onEvent: (e) => events.push(e) });
  cleanup.add(() => client.close());
  assert.equal(await client.execute('x'), 42);
  await sleep(20);
  assert.deepEqual(events.map((e) => e.event), ['EARLY', 'A', 'B'], 'an event in the same chunk as the capabilities answer is not lost');
  assert.deepEqual(events[1]!.data, { n: 1 });
  assert.deepEqual(events[1]!.timestamp, { seconds: 1, microseconds: 2 });
});

test('an event before the greeting (QEMU starting its guest as the client connects) is delivered, not a protocol error', async () => {
  const events: QmpEvent[] = [];
  const dir = await tempDir(cleanup);
  const { path } = await fakeQmpServer(cleanup, dir, (socket) => {
    onRequests(socket, (req) => socket.write(JSON.stringify({ return: {}, id: req.id }) + '\r\n'));
    socket.write(event('RESUME') + GREETING);
  });
  const client = await QmpClient.connect(path, { timeoutMs: 2000, onEvent: (e) => events.push(e) });
  cleanup.add(() => client.close());
  assert.deepEqual(client.version.qemu, { major: 7, minor: 2, micro: 0 });
  assert.deepEqual(events.map((e) => e.event), ['RESUME']);
  assert.deepEqual(await client.execute('query-status'), {});
});

test('answers are matched to commands by id, even when they come back in another order', async () => {
  const held: { id: string; execute: string }[] = [];
  const client = await connect(
    standardServer((req, socket) => {
      held.push(req);
      if (held.length === 5) {
        for (const r of held.reverse()) socket.write(JSON.stringify({ return: r.execute, id: r.id }) + '\r\n');
      }
    }),
  );
  const names = ['a', 'b', 'c', 'd', 'e'];
  assert.deepEqual(await Promise.all(names.map((n) => client.execute<string>(n))), names);
});

test('an error answer rejects with QMP_ERROR carrying the class; the connection stays usable', async () => {
  const client = await connect(
    standardServer((req, socket) => {
      const answer =
        req.execute === 'bad'
          ? { error: { class: 'GenericError', desc: 'it went wrong' }, id: req.id }
          : { return: {}, id: req.id };
      socket.write(JSON.stringify(answer) + '\r\n');
    }),
  );
  const e = assertCode(await rejectionOf(client.execute('bad', { x: 1 })), 'QMP_ERROR');
  assert.equal(e.fields['errorClass'], 'GenericError');
  assert.equal(e.fields['desc'], 'it went wrong');
  assert.equal(e.fields['command'], 'bad');
  assert.deepEqual(await client.execute('good'), {});
});

test('a command that times out rejects with QMP_TIMEOUT; its late answer is dropped and the next command works', async () => {
  const client = await connect(
    standardServer((req, socket) => {
      const delay = req.execute === 'slow' ? 300 : 0;
      setTimeout(() => socket.write(JSON.stringify({ return: req.execute, id: req.id }) + '\r\n'), delay);
    }),
  );
  const started = Date.now();
  const e = assertCode(await rejectionOf(client.execute('slow', undefined, { timeoutMs: 100 })), 'QMP_TIMEOUT');
  assert.ok(Date.now() - started < 1000, 'the timeout fires on time, not at some later event');
  assert.equal(e.fields['command'], 'slow');
  await sleep(300); // the late answer arrives now
  assert.equal(client.isOpen, true);
  assert.equal(await client.execute('fast'), 'fast');
});

test('invalid JSON is QMP_PROTOCOL: pending commands reject, the connection closes, later commands fail at once', async () => {
  const client = await connect(standardServer((_req, socket) => socket.write('{"return": {}, oops\r\n')));
  const e = assertCode(await rejectionOf(client.execute('x')), 'QMP_PROTOCOL');
  assert.match(e.message, /invalid JSON/);
  const closed = await client.closed;
  assert.equal(closed.cause, 'protocol');
  assertCode(await rejectionOf(client.execute('y')), 'QMP_PROTOCOL');
});

test('a line that never ends (100 MB) is cut at the limit as QMP_PROTOCOL, without reading it all', async () => {
  let sent = 0;
  const client = await connect(
    standardServer((_req, socket) => {
      const chunk = Buffer.alloc(1024 * 1024, 'x');
      const pump = (): void => {
        while (sent < 100 * 1024 * 1024 && !socket.destroyed) {
          sent += chunk.length;
          if (!socket.write(chunk)) {
            socket.once('drain', pump);
            return;
          }
        }
      };
      socket.write('{"return": "');
      pump();
    }),
  );
  const started = Date.now();
  const e = assertCode(await rejectionOf(client.execute('big')), 'QMP_PROTOCOL');
  assert.match(e.message, /longer than 8388608 bytes/);
  assert.ok(sent < 100 * 1024 * 1024, `the client gave up before the whole line (server sent ${sent} bytes)`);
  assert.ok(Date.now() - started < 5000);
  assert.equal((await client.closed).cause, 'protocol');
});

test('an answer to a command never sent, or a non-QMP object, is a protocol error', async () => {
  const a = await connect(standardServer((_req, socket) => socket.write(JSON.stringify({ return: {}, id: 'someone-else' }) + '\r\n')));
  assertCode(await rejectionOf(a.execute('x')), 'QMP_PROTOCOL');
  const b = await connect(standardServer((_req, socket) => socket.write('[1, 2]\r\n')));
  assertCode(await rejectionOf(b.execute('x')), 'QMP_PROTOCOL');
  const c = await connect(standardServer((_req, socket) => socket.write('{"hello": 1}\r\n')));
  assertCode(await rejectionOf(c.execute('x')), 'QMP_PROTOCOL');
});

test('connect: silence is QMP_TIMEOUT, a wrong greeting QMP_PROTOCOL, no socket QMP_DISCONNECTED', async () => {
  const dir = await tempDir(cleanup);
  const silent = await fakeQmpServer(cleanup, dir, () => undefined);
  const started = Date.now();
  assertCode(await rejectionOf(QmpClient.connect(silent.path, { timeoutMs: 200 })), 'QMP_TIMEOUT');
  assert.ok(Date.now() - started < 1000);

  const rude = await fakeQmpServer(cleanup, dir, (s) => s.write('{"return": {}}\r\n'));
  assertCode(await rejectionOf(QmpClient.connect(rude.path, { timeoutMs: 2000 })), 'QMP_PROTOCOL');

  const e = assertCode(await rejectionOf(QmpClient.connect(`${dir}/nothing.sock`, { timeoutMs: 2000 })), 'QMP_DISCONNECTED');
  assert.equal(e.fields['errno'], 'ENOENT');

  const hangsUp = await fakeQmpServer(cleanup, dir, (s) => s.end());
  assertCode(await rejectionOf(QmpClient.connect(hangsUp.path, { timeoutMs: 2000 })), 'QMP_DISCONNECTED');
});

test('the server dropping the connection rejects every pending command with QMP_DISCONNECTED', async () => {
  let count = 0;
  const client = await connect(
    standardServer((_req, socket) => {
      if (++count === 3) socket.destroy();
    }),
  );
  const pending = [client.execute('a'), client.execute('b'), client.execute('c')];
  const waiting = client.waitForEvent('NEVER', undefined, 10_000);
  for (const p of pending) assertCode(await rejectionOf(p), 'QMP_DISCONNECTED');
  assertCode(await rejectionOf(waiting), 'QMP_DISCONNECTED');
  assert.equal((await client.closed).cause, 'peer');
});

test('waitForEvent: matches name and predicate, times out with QMP_TIMEOUT', async () => {
  let socketRef: net.Socket | undefined;
  const client = await connect((socket) => {
    socketRef = socket;
    standardServer(() => undefined)(socket);
  });
  const job = client.waitForEvent('JOB_STATUS_CHANGE', (e) => e.data['status'] === 'ready', 2000);
  socketRef!.write(event('JOB_STATUS_CHANGE', { status: 'running' }) + event('OTHER') + event('JOB_STATUS_CHANGE', { status: 'ready' }));
  assert.deepEqual((await job).data, { status: 'ready' });
  const e = assertCode(await rejectionOf(client.waitForEvent('NEVER', undefined, 50)), 'QMP_TIMEOUT');
  assert.equal(e.fields['event'], 'NEVER');
});

test('close() rejects pending commands with QMP_DISCONNECTED and reports cause client', async () => {
  const client = await connect(standardServer(() => undefined));
  const pending = client.execute('never-answered');
  const closed = await client.close();
  assert.equal(closed.cause, 'client');
  assertCode(await rejectionOf(pending), 'QMP_DISCONNECTED');
});
