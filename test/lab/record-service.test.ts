/**
 * The guest's record service on a real guest: the lab image booted with QEMU under TCG, a qcow2 data disk on
 * virtio-blk, and user-mode networking that forwards a loopback port to the guest's fixed address.
 *
 * The story: a fresh disk starts empty; records go in and come back; bad requests get `error` answers and
 * leave the connection usable; concurrent appends get dense seqs; init restarts a crashed service; and after
 * QEMU is killed mid-stream, a fresh boot from the same disk still has every record that was acknowledged.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GUEST_READY_MARKER, RECORD_SERVICE_PORT, ensureGuestImage, guestKernelCmdline, type GuestImage } from '../../src/lab/guest-image.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { RecordConnection, recordRequest } from '../../src/lab/record-client.js';
import { isLockstepError } from '../../src/util/errors.js';

const GUEST_IP = '10.10.3.50';
const BOOT_TIMEOUT_MS = 60_000;
const HOST = '127.0.0.1';

/* ------------------------------------------------------------------ a guest under QEMU */

interface Guest {
  port: number;
  serialLog: string;
  qemu: ChildProcess;
  /** Resolves when QEMU has exited. */
  exited: Promise<void>;
}

async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Boots the lab guest on `disk`; the serial console is QEMU's stdin (to type into) and a log file. */
async function bootGuest(t: TestContext, image: GuestImage, disk: string, dir: string, name: string): Promise<Guest> {
  const port = await freeLoopbackPort();
  const serialLog = path.join(dir, `${name}.serial.log`);
  const args = [
    '-accel', 'tcg', '-m', '128', '-nodefaults', '-display', 'none',
    '-kernel', image.kernel, '-initrd', image.initrd,
    '-append', guestKernelCmdline({ ip: `${GUEST_IP}/24`, gateway: '10.10.3.1', hostname: name }),
    '-chardev', `stdio,id=ser0,signal=off,logfile=${serialLog}`, '-serial', 'chardev:ser0',
    '-drive', `if=none,id=d0,file=${disk},format=qcow2,cache=writeback`, '-device', 'virtio-blk-pci,drive=d0',
    '-netdev', `user,id=n0,net=10.10.3.0/24,host=10.10.3.1,hostfwd=tcp:${HOST}:${port}-${GUEST_IP}:${RECORD_SERVICE_PORT}`,
    '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:4c:53:01',
  ];
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => qemu.once('exit', () => resolve()));
  let stderr = '';
  qemu.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  t.after(async () => {
    qemu.kill('SIGKILL');
    await exited;
  });
  const guest = { port, serialLog, qemu, exited };
  await waitForSerial(guest, 1, () => stderr);
  return guest;
}

async function readSerial(guest: Guest): Promise<string> {
  return fs.readFile(guest.serialLog, 'utf8').catch(() => '');
}

/** Waits until the ready marker has appeared `count` times on the serial console. */
async function waitForSerial(guest: Guest, count: number, stderr: () => string = () => ''): Promise<void> {
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  for (;;) {
    const serial = await readSerial(guest);
    if (serial.split(GUEST_READY_MARKER).length - 1 >= count) return;
    if (guest.qemu.exitCode !== null || guest.qemu.signalCode !== null || Date.now() > deadline) {
      assert.fail(`guest not ready (marker seen < ${count} times)\nqemu stderr:\n${stderr()}\nserial:\n${serial}`);
    }
    await sleep(50);
  }
}

async function killQemu(guest: Guest): Promise<void> {
  guest.qemu.kill('SIGKILL');
  await guest.exited;
}

/**
 * Opens a connection and makes one round trip on it before returning. QEMU's user-mode networking listens on
 * the forwarded port with a backlog of 1: a second connect before slirp has accepted the first is dropped
 * and retried by TCP a second later. One round trip proves slirp accepted it, so connections opened one after
 * another never wait. (The lab's tap networking has no such limit.)
 */
async function connect(t: TestContext, guest: Guest): Promise<RecordConnection> {
  const conn = new RecordConnection(HOST, guest.port, { connectTimeoutMs: 10_000, requestTimeoutMs: 10_000 });
  t.after(() => conn.close());
  await conn.connect();
  assert.match(await conn.request('last'), /^last \d+$/);
  return conn;
}

async function connectMany(t: TestContext, guest: Guest, count: number): Promise<RecordConnection[]> {
  const conns: RecordConnection[] = [];
  for (let i = 0; i < count; i++) conns.push(await connect(t, guest));
  return conns;
}

/** Reads the first line the service sends on a connection without being asked, waiting at most `timeoutMs`. */
function firstLineOn(socket: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no line within ${timeoutMs} ms (got '${text}')`)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) {
        clearTimeout(timer);
        resolve(text.slice(0, text.indexOf('\n')));
      }
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/* ------------------------------------------------------------------ the client's own errors */

/** A stand-in service on loopback whose behaviour the test chooses, to see how the client reports trouble. */
async function fakeService(t: TestContext, onLine: (socket: net.Socket, line: string) => void): Promise<number> {
  const server = net.createServer((socket) => {
    let text = '';
    socket.on('data', (b: Buffer) => {
      text += b.toString();
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
        onLine(socket, text.slice(0, nl));
        text = text.slice(nl + 1);
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as net.AddressInfo).port;
}

test('the client reports a late reply, a lost connection and a refused one by their codes', async (t) => {
  const silentPort = await fakeService(t, () => {});
  const slow = new RecordConnection(HOST, silentPort, { requestTimeoutMs: 200 });
  await slow.connect();
  await assert.rejects(slow.request('last'), (e) => isLockstepError(e, 'RECORD_TIMEOUT'));
  assert.equal(slow.isOpen, false, 'a timeout closes the connection: a late reply would answer the next request');
  await assert.rejects(slow.request('last'), (e) => isLockstepError(e, 'RECORD_TIMEOUT'));

  const hangUpPort = await fakeService(t, (socket, line) => (line === 'last' ? socket.end('last 7\n') : socket.destroy()));
  const conn = new RecordConnection(HOST, hangUpPort);
  await conn.connect();
  const [first, second] = await Promise.allSettled([conn.request('last'), conn.request('stats')]);
  assert.deepEqual(first, { status: 'fulfilled', value: 'last 7' });
  assert.ok(second.status === 'rejected' && isLockstepError(second.reason, 'RECORD_CONNECTION_LOST'));

  await assert.rejects(recordRequest(HOST, 1, 'last', 1_000), (e) => isLockstepError(e, 'RECORD_CONNECTION_LOST'));
  await assert.rejects(conn.request('a\nb'), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});

/* ------------------------------------------------------------------ the story */

test('the record service on a real guest', async (t) => {
  const image = await ensureGuestImage();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lockstep-records-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'data.qcow2');
  await createQcow2(disk, 64);

  const bootStarted = Date.now();
  const guest = await bootGuest(t, image, disk, dir, 'records1');
  t.diagnostic(`boot to ready: ${Date.now() - bootStarted} ms`);
  const conn = await connect(t, guest);

  await t.test('a fresh disk has no records', async () => {
    assert.equal(await conn.request('last'), 'last 0');
    assert.equal(await conn.request('get 1'), 'missing 1');
  });

  await t.test('an appended record comes back byte for byte', async () => {
    assert.equal(await conn.request('append hello world'), 'ok 1');
    assert.equal(await conn.request('append  spaces \u0000 and ünïcödé ✓ '), 'ok 2');
    assert.equal(await conn.request('get 1'), 'record 1 hello world');
    assert.equal(await conn.request('get 2'), 'record 2  spaces \u0000 and ünïcödé ✓ ');
    assert.equal(await conn.request('last'), 'last 2');
    assert.equal(await recordRequest(HOST, guest.port, 'get 1', 10_000), 'record 1 hello world', 'one-shot request');
  });

  await t.test('spin: a CPU work unit answered when done', async () => {
    assert.equal(await conn.request('spin 1'), 'spun 1');
    assert.equal(await conn.request('spin 5'), 'spun 5');
  });

  await t.test('bad requests get an error and leave the connection usable', async () => {
    assert.equal(await conn.request(`append ${'x'.repeat(400)}`), 'ok 3', '400 bytes is the limit, inclusive');
    assert.match(await conn.request(`append ${'x'.repeat(401)}`), /^error too long/);
    assert.match(await conn.request(`append ${'é'.repeat(201)}`), /^error too long/, 'the limit is in bytes');
    assert.match(await conn.request('append'), /^error usage/);
    assert.match(await conn.request('frobnicate'), /^error unknown command/);
    assert.match(await conn.request(''), /^error unknown command/);
    assert.match(await conn.request('get x1'), /^error bad seq/);
    assert.match(await conn.request(`get ${'9'.repeat(30)}`), /^error bad seq/);
    assert.equal(await conn.request('get 999'), 'missing 999');
    assert.match(await conn.request('spin 0'), /^error usage: spin <1\.\.1000>/);
    assert.match(await conn.request('spin 1001'), /^error usage: spin/);
    assert.match(await conn.request('spin x'), /^error usage: spin/);
    assert.match(await conn.request('y'.repeat(5000)), /^error line too long/);
    assert.equal(await conn.request('last'), 'last 3', 'no failed request wrote anything');
  });

  await t.test('stats count records, appends since boot and clients', async () => {
    const extra = await connect(t, guest);
    const stats = await extra.request('stats');
    const m = /^stats uptime_ms=(\d+) records=(\d+) appends=(\d+) clients=(\d+)$/.exec(stats);
    assert.ok(m, stats);
    assert.deepEqual(m.slice(2).map(Number), [3, 3, 2]);
    assert.ok(Number(m[1]) > 0);
    extra.close();
  });

  await t.test('concurrent appends from many connections get dense seqs', async () => {
    const conns = await connectMany(t, guest, 8);
    const perConnection = 25;
    const replies = await Promise.all(
      conns.map((c, ci) => Promise.all(Array.from({ length: perConnection }, (_, i) => c.request(`append c${ci}-${i}`)))),
    );
    const seqs = replies.flat().map((r) => Number(/^ok (\d+)$/.exec(r)?.[1]));
    const sorted = [...seqs].sort((a, b) => a - b);
    assert.deepEqual(sorted, Array.from({ length: 8 * perConnection }, (_, i) => 4 + i), 'seqs 4..203, each once');
    for (const c of conns) c.close();
    // Each connection's own appends were acknowledged in the order it sent them.
    for (const r of replies) {
      const own = r.map((x) => Number(x.slice(3)));
      assert.deepEqual(own, [...own].sort((a, b) => a - b));
    }
    assert.equal(await conn.request(`get ${seqs[8 * perConnection - 1]}`), `record ${seqs[8 * perConnection - 1]} c7-24`);
  });

  await t.test('clients beyond the limit are told so; the ones inside it are served', async () => {
    const limit = 64;
    const held = await connectMany(t, guest, limit - 1); // plus `conn`
    assert.equal(await held[limit - 2]!.request('last'), 'last 203');
    const over = net.connect(guest.port, HOST);
    t.after(() => over.destroy());
    assert.equal(await firstLineOn(over, 10_000), 'error too many clients');
    for (const c of held) c.close();
  });

  await t.test('init restarts a crashed service, which finds its records again', async () => {
    guest.qemu.stdin?.write('kill -9 $(pidof record-service)\n');
    await waitForSerial(guest, 2);
    await assert.rejects(conn.request('last'), (e) => isLockstepError(e, 'RECORD_CONNECTION_LOST'));
    assert.equal(await recordRequest(HOST, guest.port, 'last', 10_000), 'last 203');
  });

  await t.test('after kill -9 of QEMU mid-stream, a fresh boot has every acknowledged record', async () => {
    const acked = new Map<number, string>();
    const writers = await connectMany(t, guest, 4);
    let stop = false;
    const streams = writers.map(async (w, wi) => {
      for (let i = 0; !stop; i++) {
        const text = `w${wi}-${i}`;
        let reply: string;
        try {
          reply = await w.request(`append ${text}`);
        } catch (e) {
          assert.ok(isLockstepError(e, 'RECORD_CONNECTION_LOST'), String(e));
          return;
        }
        const seq = Number(/^ok (\d+)$/.exec(reply)?.[1]);
        assert.ok(seq > 0, reply);
        acked.set(seq, text);
      }
    });
    await sleep(1500);
    await killQemu(guest);
    await Promise.all(streams);
    stop = true;
    assert.ok(acked.size > 20, `only ${acked.size} appends acknowledged before the kill`);

    const again = await bootGuest(t, image, disk, dir, 'records2');
    const after = await connect(t, again);
    const last = Number((await after.request('last')).slice('last '.length));
    const maxAcked = Math.max(...acked.keys());
    assert.ok(last >= maxAcked, `last ${last} < highest acknowledged ${maxAcked}`);
    for (const [seq, text] of acked) assert.equal(await after.request(`get ${seq}`), `record ${seq} ${text}`);
    assert.equal(await after.request('get 1'), 'record 1 hello world', 'records from before the restart are kept');
    assert.equal(await after.request('append after the crash'), `ok ${last + 1}`);
    assert.match(await after.request('stats'), new RegExp(`records=${last + 1} appends=1 `));
    t.diagnostic(`${acked.size} appends acknowledged before kill -9; all present after reboot (last ${last})`);
  });
});
