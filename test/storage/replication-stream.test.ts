// Replication streams on loopback, with real processes at both ends: qemu-io stands in for the owner's
// QEMU (its NBD client connects to the dialer's unix socket), a real qemu-nbd exports the backup's copy
// behind the server, and two ports on 127.0.0.1 stand in for the two A-Links. `open` dials before it makes
// the socket, so a stream that cannot be had is a rejected `open`, and QEMU connects to a stream already
// answered (its greeting held for it).
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { prepareAlinkTls, type AlinkTlsMaterial } from '../../src/alink/tls.js';
import { CopyExport } from '../../src/storage/copy-export.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import {
  REPLICATION_EARLY_BYTES_MAX,
  ReplicationDialer,
  ReplicationServer,
  type ReplicationDialerTiming,
  type ReplicationPath,
  type ReplicationPathFailure,
} from '../../src/storage/replication-stream.js';
import { isLockstepError, type LockstepError } from '../../src/util/errors.js';
import { run } from '../../src/util/exec.js';
import { LOOPBACK, pairCerts, sleep, waitUntil, type PairCerts } from '../alink/helpers.js';
import { Cleanup, InteractiveQemuIo, blackHole, firstBytes, ioOk, nbdUri, qemuIo, tempDir } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

// Certificates cost about 170 ms each here: one pair (and one other pair) for the whole file.
let certs: PairCerts;
let otherPair: PairCerts;
before(async () => {
  certs = await pairCerts('p1');
  otherPair = await pairCerts('p2');
});
after(async () => {
  await certs.cleanup();
  await otherPair.cleanup();
});

/** Every test is bounded, so a hang fails it and its cleanup still runs. */
/** Every test is bounded, so a hang fails it and its cleanup still runs. */
const BOUND = { timeout: 15_000 };

const SERVER_TIMING = { handshakeTimeoutMs: 1000, headerTimeoutMs: 300, localConnectTimeoutMs: 500, listenRetryMs: 100 };
const DIALER_TIMING: ReplicationDialerTiming = { connectTimeoutMs: 500, answerTimeoutMs: 1000, qemuConnectTimeoutMs: 5000 };

interface DialerOptions {
  host?: string;
  material?: AlinkTlsMaterial;
  paths?: ReplicationPath[];
  socketDir?: string;
  timing?: Partial<ReplicationDialerTiming>;
}

interface World {
  dir: string;
  certs: PairCerts;
  /** VM web's copy; `exports` has every VM's. */
  image: string;
  exportSocket: string;
  copy: CopyExport;
  exports: Map<string, { image: string; socket: string; copy: CopyExport }>;
  server: ReplicationServer;
  ports: number[];
  /** Every event of the server and of the dialers made by `dialer`, in order. */
  events: string[];
  /** A dialer from host1 (by default) over both loopback paths. */
  dialer(opts?: DialerOptions): Promise<ReplicationDialer>;
  /** A dialer from host1 to another server (`port`, one path), whose events also go to `events`. */
  dialerTo(port: number, opts?: DialerOptions): Promise<ReplicationDialer>;
}

/** host2's copies (VM web, and any other of `vms`) exported by qemu-nbd, host2's replication server on two loopback ports. */
async function world(opts: { serverHost?: string; vms?: string[] } = {}): Promise<World> {
  const dir = await tempDir(cleanup);
  const exports = new Map<string, { image: string; socket: string; copy: CopyExport }>();
  for (const vm of opts.vms ?? ['web']) {
    const image = path.join(dir, `${vm}-copy.qcow2`);
    await createQcow2(image, 16);
    const socket = path.join(dir, `${vm}-copy.sock`);
    const copy = await CopyExport.start({ vm, disk: image, format: 'qcow2', socketPath: socket });
    cleanup.add(() => copy.stop());
    exports.set(vm, { image, socket, copy });
  }
  const web = exports.get('web')!;
  const events: string[] = [];
  const serverHost = opts.serverHost ?? 'host2';
  const server = new ReplicationServer({
    self: serverHost,
    peer: 'host1',
    tls: prepareAlinkTls(await certs.material(serverHost), serverHost),
    listen: [
      { address: LOOPBACK, port: 0 },
      { address: LOOPBACK, port: 0 },
    ],
    resolve: (vm) => exports.get(vm)?.socket ?? null,
    timing: SERVER_TIMING,
  });
  server.on('stream-open', (vm, id) => events.push(`stream-open ${vm} ${id}`));
  server.on('stream-closed', (vm, id, reason) => events.push(`stream-closed ${vm} ${id}: ${reason}`));
  server.on('refused', (reason) => events.push(`refused: ${reason}`));
  await server.start();
  cleanup.add(() => server.close());
  const ports = server.addresses().map((a) => a.port);
  let dialers = 0;
  const dialer = async (o: DialerOptions = {}): Promise<ReplicationDialer> => {
    const host = o.host ?? 'host1';
    const d = new ReplicationDialer({
      self: host,
      peer: 'host2',
      tls: prepareAlinkTls(o.material ?? (await certs.material(host)), host),
      paths: o.paths ?? [
        { name: 'alink1', address: LOOPBACK, port: ports[0]! },
        { name: 'alink2', address: LOOPBACK, port: ports[1]! },
      ],
      socketDir: o.socketDir ?? path.join(dir, `streams-${dialers++}`),
      timing: { ...DIALER_TIMING, ...o.timing },
    });
    d.on('connected', (vm, id, pathName) => events.push(`connected ${vm} ${id} ${pathName}`));
    d.on('broken', (vm, id, reason) => events.push(`broken ${vm} ${id}: ${reason}`));
    cleanup.add(() => d.close());
    return d;
  };
  return {
    dir,
    certs,
    image: web.image,
    exportSocket: web.socket,
    copy: web.copy,
    exports,
    server,
    ports,
    events,
    dialer,
    dialerTo: (port, o = {}) => dialer({ ...o, paths: [{ name: 'alink1', address: LOOPBACK, port }] }),
  };
}

function has(events: string[], prefix: string): boolean {
  return events.some((e) => e.startsWith(prefix));
}

function indexOf(events: string[], prefix: string): number {
  return events.findIndex((e) => e.startsWith(prefix));
}

function count(events: string[], prefix: string): number {
  return events.filter((e) => e.startsWith(prefix)).length;
}

/** A port with nothing listening on it: a path whose cable is down. */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, LOOPBACK, resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** The `REPLICATION_STREAM` error `p` rejects with, and how long it took. */
async function rejection(p: Promise<unknown>): Promise<{ error: LockstepError; paths: ReplicationPathFailure[]; ms: number }> {
  const t0 = Date.now();
  try {
    await p;
  } catch (e) {
    assert.ok(isLockstepError(e, 'REPLICATION_STREAM'), String(e));
    return { error: e, paths: e.fields['paths'] as ReplicationPathFailure[], ms: Date.now() - t0 };
  }
  assert.fail('open resolved; it was expected to reject');
}

/** A replication server of host2 in front of a socket `target` (any VM), on one loopback port. */
async function serverFor(w: World, target: string): Promise<number> {
  const server = new ReplicationServer({
    self: 'host2',
    peer: 'host1',
    tls: prepareAlinkTls(await w.certs.material('host2'), 'host2'),
    listen: [{ address: LOOPBACK, port: 0 }],
    resolve: () => target,
    timing: SERVER_TIMING,
  });
  server.on('stream-open', (vm, id) => w.events.push(`stream-open ${vm} ${id}`));
  server.on('stream-closed', (vm, id, reason) => w.events.push(`stream-closed ${vm} ${id}: ${reason}`));
  await server.start();
  cleanup.add(() => server.close());
  return server.addresses()[0]!.port;
}

/** A TLS server with host2's certificate that completes the handshake and then never answers. */
async function silentPeer(w: World): Promise<number> {
  const m = await w.certs.material('host2');
  const held = new Set<tls.TLSSocket>();
  const server = tls.createServer({ cert: m.cert, key: m.key, ca: [m.ca], requestCert: true, minVersion: 'TLSv1.3' }, (c) => {
    held.add(c);
    c.on('error', () => {});
    c.on('close', () => held.delete(c));
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  cleanup.add(async () => {
    for (const c of held) c.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as net.AddressInfo).port;
}

test('4 MiB from "QEMU" reach the copy byte for byte; events: open (before the socket exists) and connected, then broken and closed when QEMU leaves', BOUND, async () => {
  const w = await world();
  const dialer = await w.dialer();
  const socket = await dialer.open('web', 's1');
  assert.equal(socket, dialer.socketPath('web'));
  // Answered before the socket was made: the backup's side is open already, QEMU's not yet.
  assert.deepEqual(w.events, ['stream-open web s1']);
  assert.deepEqual(dialer.status(), [{ vm: 'web', streamId: 's1', state: 'waiting' }]);
  assert.equal(existsSync(socket), true);

  const data = path.join(w.dir, 'data.bin');
  await writeFile(data, randomBytes(4 * 1024 * 1024));
  const wrote = await qemuIo('raw', nbdUri('web', socket), [`write -s ${data} 0 4M`]);
  assert.ok(ioOk(wrote), wrote.stdout + wrote.stderr);
  await waitUntil(() => has(w.events, 'stream-closed') && has(w.events, 'broken') && dialer.status().length === 0, 3000, 'both ends saw the stream end');
  assert.deepEqual(w.events.slice(0, 2), ['stream-open web s1', 'connected web s1 alink1']);
  // qemu-io's NBD disconnect goes through to qemu-nbd, which closes too: which end is seen first at each
  // side is a race, its outcome the same.
  const ends = w.events.slice(2).sort();
  assert.equal(ends.length, 2, w.events.join('\n'));
  assert.match(ends[0]!, /^broken web s1: (closed by QEMU|host2 ended the stream)$/);
  assert.match(ends[1]!, /^stream-closed web s1: (host1 ended the stream|the copy export ended the connection)$/);
  assert.equal(existsSync(socket), false, 'one connection per stream: the socket went with it');
  assert.deepEqual(w.server.openStreams(), []);

  // The export serves the next stream of the same VM.
  const again = await dialer.open('web', 's2');
  const read = await qemuIo('raw', nbdUri('web', again), [`read -P 0 4M 1M`]);
  assert.ok(ioOk(read), read.stdout + read.stderr);

  await w.copy.stop();
  const reference = path.join(w.dir, 'reference.raw');
  await run('cp', [data, reference]);
  await truncate(reference, 16 * 1024 * 1024);
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', reference, w.image], { allowFailure: true });
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
});

test('the first path down: the second carries the stream', BOUND, async () => {
  const w = await world();
  const dialer = await w.dialer({
    paths: [
      { name: 'alink1', address: LOOPBACK, port: await deadPort() },
      { name: 'alink2', address: LOOPBACK, port: w.ports[1]! },
    ],
  });
  const socket = await dialer.open('web', 's1');
  const r = await qemuIo('raw', nbdUri('web', socket), ['write -P 0x42 0 256k', 'read -P 0x42 0 256k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);
  assert.ok(w.events.includes('connected web s1 alink2'), w.events.join('\n'));
});

test("the held stream delivers qemu-nbd's greeting when QEMU connects, however late", BOUND, async () => {
  const w = await world();
  const dialer = await w.dialer();
  const socket = await dialer.open('web', 's1');
  // qemu-nbd greeted on connect; the greeting waits in the dialer meanwhile.
  await sleep(150);
  const { socket: client, bytes } = await firstBytes(cleanup, socket, 18);
  assert.equal(bytes.subarray(0, 16).toString('latin1'), 'NBDMAGICIHAVEOPT', 'the NBD newstyle greeting, first');
  await waitUntil(() => has(w.events, 'connected web s1 alink1'), 1000, 'connected');
  client.destroy();
  await waitUntil(() => has(w.events, 'broken web s1: closed by QEMU'), 3000, 'broken');

  // And a real NBD client that comes late gets through its whole handshake and its I/O.
  const late = await dialer.open('web', 's2');
  await sleep(150);
  const r = await qemuIo('raw', nbdUri('web', late), ['write -P 0x24 1M 128k', 'read -P 0x24 1M 128k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);
  assert.equal(count(w.events, 'broken web s1'), 1, w.events.join('\n'));
});

test('QEMU never connecting: the stream is closed, broken once, its socket gone; a newer open replaces a waiting one', BOUND, async () => {
  const w = await world();
  const dialer = await w.dialer({ timing: { qemuConnectTimeoutMs: 300 } });
  await dialer.open('web', 's1');
  // Replacing a stream waiting for QEMU cuts it at once: broken once, and its end reaches the server first.
  const socket = await dialer.open('web', 's2');
  assert.ok(w.events.includes('broken web s1: replaced by stream s2'), w.events.join('\n'));
  const closedOld = indexOf(w.events, 'stream-closed web s1');
  assert.ok(closedOld !== -1 && closedOld < indexOf(w.events, 'stream-open web s2'), w.events.join('\n'));
  assert.equal(existsSync(socket), true);

  await waitUntil(() => has(w.events, 'broken web s2'), 2000, 'broken');
  assert.equal(w.events.find((e) => e.startsWith('broken web s2')), `broken web s2: QEMU did not connect to ${socket} within 300 ms`);
  assert.equal(existsSync(socket), false);
  assert.deepEqual(dialer.status(), []);
  await waitUntil(() => has(w.events, 'stream-closed web s2'), 2000, 'the server saw the stream end');
  await assert.rejects(new Promise((resolve, reject) => net.connect(socket).once('connect', resolve).once('error', reject)), /ENOENT/);
  await sleep(100);
  assert.equal(count(w.events, 'broken web s1'), 1);
  assert.equal(count(w.events, 'broken web s2'), 1);
  assert.equal(has(w.events, 'connected'), false);
});

test("the backup's end before QEMU connected closes the stream at once; with no export, the next open is refused", BOUND, async () => {
  const w = await world();
  const dialer = await w.dialer();
  const socket = await dialer.open('web', 's1');
  process.kill(w.copy.pid, 'SIGKILL');
  await waitUntil(() => has(w.events, 'broken web s1'), 3000, 'broken');
  assert.match(w.events.find((e) => e.startsWith('broken web s1'))!, /^broken web s1: (host2 ended the stream|the stream’s connection closed) before QEMU connected$/);
  assert.equal(existsSync(socket), false, 'nothing of QEMU to hold: the socket went at once');
  assert.deepEqual(dialer.status(), []);

  const { error, paths } = await rejection(dialer.open('web', 's2'));
  assert.match(error.message, /^stream s2 of volume web not opened: host2 refused the stream on alink1: cannot reach the copy export of volume web: .*ENOENT/);
  assert.deepEqual(paths.map((p) => p.path), ['alink1']);
  assert.equal(existsSync(socket), false);
  assert.equal(has(w.events, 'broken web s2'), false, 'a rejected open emits nothing');
});

test('a certificate of the wrong host or of another pair is refused, both ways: open rejects, saying why per path, and nothing is written', BOUND, async () => {
  const w = await world();

  // host3 of this pair: TLS passes, the identity check refuses and says why; a refusal ends the dial.
  const wrongHost = await w.dialer({ host: 'host3' });
  const r1 = await rejection(wrongHost.open('web', 's1'));
  assert.match(r1.error.message, /^stream s1 of volume web not opened: host2 refused the stream on alink1: refused by host2: the peer certificate's CN is "host3", not the peer "host1"/);
  assert.deepEqual(r1.paths.map((p) => p.path), ['alink1']);
  assert.match(r1.paths[0]!.reason, /^refused: refused by host2: /);
  assert.deepEqual(r1.error.fields['vm'], 'web');
  assert.deepEqual(r1.error.fields['streamId'], 's1');
  assert.equal(existsSync(wrongHost.socketPath('web')), false);
  assert.deepEqual(wrongHost.status(), []);

  // host1 of another pair: refused in the TLS handshake, on both paths.
  const strangers = await w.dialer({ material: await otherPair.material('host1') });
  const r2 = await rejection(strangers.open('web', 's2'));
  assert.match(r2.error.message, /^stream s2 of volume web not opened: no path to host2 carried the stream: alink1: .+; alink2: .+/);
  assert.deepEqual(r2.paths.map((p) => p.path), ['alink1', 'alink2']);
  assert.ok(has(w.events, 'refused: TLS handshake'), w.events.join('\n'));
  assert.equal(indexOf(w.events, 'stream-open'), -1, w.events.join('\n'));
  assert.equal(has(w.events, 'broken'), false, 'a rejected open emits nothing');
  assert.equal(existsSync(strangers.socketPath('web')), false);

  // The copy is untouched.
  const zero = await qemuIo('raw', nbdUri('web', w.exportSocket), ['read -P 0 0 1M']);
  assert.ok(ioOk(zero), zero.stdout + zero.stderr);
});

test('the dialer refuses a server that is not the expected peer', BOUND, async () => {
  const w = await world({ serverHost: 'host3' });
  const dialer = await w.dialer();
  const { error, paths } = await rejection(dialer.open('web', 's1'));
  assert.match(error.message, /alink1: .*CN is "host3", not the peer "host2".*; alink2: .*CN is "host3"/);
  assert.deepEqual(paths.map((p) => p.path), ['alink1', 'alink2']);
  assert.equal(indexOf(w.events, 'stream-open'), -1);
  assert.equal(has(w.events, 'broken'), false);
});

test('a dial is bounded on every path; cut, a newer open or close() abandon it at once, and none emits an event', BOUND, async () => {
  const w = await world();
  const hole = await blackHole(cleanup);
  const silent = await silentPeer(w);
  const timing = { connectTimeoutMs: 200, answerTimeoutMs: 200 };
  const hung = await w.dialer({
    timing,
    paths: [
      { name: 'alink1', address: LOOPBACK, port: hole },
      { name: 'alink2', address: LOOPBACK, port: silent },
    ],
  });

  // Neither path answers: open rejects within paths × (connect + answer), each path saying why.
  const bounded = await rejection(hung.open('web', 's1'));
  assert.match(bounded.error.message, /no path to host2 carried the stream: alink1: no TLS connection to 127\.0\.0\.1:\d+ within 200 ms; alink2: no complete answer within 200 ms$/);
  assert.ok(bounded.ms >= 350 && bounded.ms < 1500, `${bounded.ms} ms`);
  assert.equal(existsSync(hung.socketPath('web')), false);

  // cut while dialing.
  const cutOpen = rejection(hung.open('web', 's2'));
  await sleep(50);
  assert.deepEqual(hung.status(), [{ vm: 'web', streamId: 's2', state: 'dialing' }]);
  hung.cut('web');
  const cut = await cutOpen;
  assert.equal(cut.error.message, 'stream s2 of volume web not opened: cut');
  assert.ok(cut.ms < 200, `${cut.ms} ms`);
  assert.deepEqual(hung.status(), []);

  // A newer open of the VM while the older dials: the older rejects, the newer goes on (here over alink2).
  const slow = await w.dialer({
    timing,
    paths: [
      { name: 'alink1', address: LOOPBACK, port: hole },
      { name: 'alink2', address: LOOPBACK, port: w.ports[1]! },
    ],
  });
  const olderOpen = rejection(slow.open('web', 's3'));
  await sleep(50);
  const newerOpen = slow.open('web', 's4');
  assert.equal((await olderOpen).error.message, 'stream s3 of volume web not opened: replaced by stream s4');
  const r = await qemuIo('raw', nbdUri('web', await newerOpen), ['write -P 0x55 0 64k', 'read -P 0x55 0 64k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);
  assert.ok(w.events.includes('connected web s4 alink2'), w.events.join('\n'));

  // close() while dialing.
  const closedOpen = rejection(hung.open('web', 's5'));
  await sleep(50);
  await hung.close();
  const closed = await closedOpen;
  assert.equal(closed.error.message, 'stream s5 of volume web not opened: the dialer closed');

  for (const id of ['s1', 's2', 's3', 's5']) assert.equal(has(w.events, `broken web ${id}`) || has(w.events, `connected web ${id}`), false, w.events.join('\n'));
  assert.equal(indexOf(w.events, 'stream-open web s1'), -1);
});

test("the backup's bytes before QEMU connects are kept, bounded, and delivered first; QEMU's reach the export in order", BOUND, async () => {
  // A plain program stands in for the export: it greets with more than NBD would, and records what arrives.
  const w = await world();
  const exportSocket = path.join(w.dir, 'greeter.sock');
  const conns: net.Socket[] = [];
  const received: Buffer[] = [];
  const greeting = randomBytes(40 * 1024);
  const greeter = net.createServer((c) => {
    conns.push(c);
    c.on('error', () => {});
    c.write(greeting);
    c.on('data', (b: Buffer) => received.push(b));
  });
  await new Promise<void>((resolve) => greeter.listen(exportSocket, resolve));
  cleanup.add(() => new Promise((resolve) => greeter.close(resolve)));
  cleanup.add(() => conns.forEach((c) => c.destroy()));
  const dialer = await w.dialerTo(await serverFor(w, exportSocket));

  const socket = await dialer.open('web', 's1');
  await sleep(100);
  const { socket: client, bytes } = await firstBytes(cleanup, socket, greeting.length);
  assert.ok(bytes.equals(greeting), 'the greeting, whole and first');
  const more = randomBytes(100 * 1024);
  const got: Buffer[] = [];
  client.on('data', (b: Buffer) => got.push(b));
  client.resume();
  conns[0]!.write(more); // once QEMU is connected, no bound: the pipe's own flow control
  const mine = randomBytes(256 * 1024);
  client.write(mine);
  await waitUntil(() => received.reduce((n, b) => n + b.length, 0) >= mine.length, 3000, "all of QEMU's bytes at the export");
  assert.ok(Buffer.concat(received).equals(mine));
  await waitUntil(() => got.reduce((n, b) => n + b.length, 0) >= more.length, 3000, "all of the export's bytes at QEMU");
  assert.ok(Buffer.concat(got).equals(more));
  client.destroy();
  await waitUntil(() => has(w.events, 'broken web s1'), 3000, 'broken');

  // Past the bound before QEMU connected: not NBD; the stream is closed.
  const second = await dialer.open('web', 's2');
  await waitUntil(() => conns.length === 2, 2000, 'the second connection at the export');
  conns[1]!.write(randomBytes(REPLICATION_EARLY_BYTES_MAX - greeting.length + 1));
  await waitUntil(() => has(w.events, 'broken web s2'), 3000, 'broken');
  assert.match(w.events.find((e) => e.startsWith('broken web s2'))!, /host2 sent more than 65536 bytes before QEMU connected/);
  assert.equal(existsSync(second), false);
  assert.deepEqual(dialer.status(), []);
});

/** Sends `bytes` on a TLS connection (host1's certificate) to the server, and collects what comes back until the close. */
async function rawExchange(w: World, bytes: Buffer | string, opts: { endAfterWrite?: boolean } = {}): Promise<string> {
  const m = await w.certs.material('host1');
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: LOOPBACK, port: w.ports[0]!, cert: m.cert, key: m.key, ca: [m.ca], minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no close within 3 s; got ${JSON.stringify(got)}`));
    }, 3000);
    s.on('data', (b: Buffer) => (got += b.toString('utf8')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    s.once('secureConnect', () => {
      if (bytes.length > 0) s.write(bytes);
      if (opts.endAfterWrite) s.end();
    });
  });
}
test('bad headers get an error answer and a close; the server serves the next good client', BOUND, async () => {
  const w = await world();
  const cases: [string, Buffer | string, RegExp][] = [
    ['garbage', 'GET / HTTP/1.1\r\n\r\n', /the header is not JSON/],
    ['binary', Buffer.concat([randomBytes(300).map((b) => (b === 10 ? 11 : b)), Buffer.from('\n')]), /the header is not JSON|not a JSON object/],
    ['huge line', 'x'.repeat(5000), /the header is longer than 1024 bytes/],
    ['huge JSON line', JSON.stringify({ v: 1, vm: 'web', stream: 's', pad: 'y'.repeat(2000) }) + '\n', /longer than 1024 bytes/],
    ['bad JSON', '{"v":1,"vm":"web"\n', /the header is not JSON/],
    ['not an object', '[1,2,3]\n', /not a JSON object/],
    ['null', 'null\n', /not a JSON object/],
    ['wrong version', '{"v":2,"vm":"web","stream":"s"}\n', /header version 2 is not 1/],
    ['no version', '{"vm":"web","stream":"s"}\n', /header version missing is not 1/],
    ['bad VM name', '{"v":1,"vm":"Web!","stream":"s"}\n', /header 'vm' is "Web!", not a volume name/],
    ['numeric stream id', '{"v":1,"vm":"web","stream":5}\n', /header 'stream' is 5, not a stream id/],
    ['empty stream id', '{"v":1,"vm":"web","stream":""}\n', /not a stream id/],
    ['unknown VM', '{"v":1,"vm":"nope","stream":"s"}\n', /host2 has no copy export of volume nope/],
    ['silent', '', /no complete header within 300 ms/],
  ];
  for (const [name, bytes, expected] of cases) {
    const answer = await rawExchange(w, bytes);
    assert.ok(answer.endsWith('\n'), `${name}: one line: ${JSON.stringify(answer)}`);
    const parsed = JSON.parse(answer) as { ok: boolean; error: string };
    assert.equal(parsed.ok, false, name);
    assert.match(parsed.error, expected, name);
    assert.ok(parsed.error.length <= 200, name);
  }
  // A client that ends its side early cannot be answered (TLS closes both ways), but is refused all the same.
  assert.equal(await rawExchange(w, '{"v":1,', { endAfterWrite: true }), '');
  await waitUntil(() => has(w.events, 'refused: connection from 127.0.0.1:') && /header was complete/.test(w.events.at(-1)!), 1000, 'the refusal');
  assert.match(w.events.at(-1)!, /the connection ended before the header was complete/);
  assert.equal(indexOf(w.events, 'stream-open'), -1);

  const dialer = await w.dialer();
  const r = await qemuIo('raw', nbdUri('web', await dialer.open('web', 's1')), ['write -P 0x77 0 64k', 'read -P 0x77 0 64k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);
});

test('qemu-nbd killed mid-stream: stream-closed before broken; QEMU stays blocked until cut, then fails', BOUND, async () => {
  const w = await world();
  const dialer = await w.dialer();
  const io = new InteractiveQemuIo(cleanup, nbdUri('web', await dialer.open('web', 's1')));
  await io.ready();
  assert.match(await io.command('write -P 0x11 0 64k'), /wrote 65536\/65536/);

  process.kill(w.copy.pid, 'SIGKILL');
  await waitUntil(() => has(w.events, 'broken web s1'), 3000, 'broken');
  const closed = indexOf(w.events, 'stream-closed web s1');
  assert.ok(closed !== -1 && closed < indexOf(w.events, 'broken web s1'), w.events.join('\n'));
  assert.deepEqual(dialer.status(), [{ vm: 'web', streamId: 's1', state: 'held' }]);

  // The next write is neither done nor failed: QEMU's side is held, not closed.
  let answered = false;
  const pending = io.command('write -P 0x22 64k 64k').then((out) => {
    answered = true;
    return out;
  });
  await sleep(400);
  assert.equal(answered, false, `qemu-io answered while held: ${io.pending}`);

  dialer.cut('web');
  assert.match(await pending, /write failed/);
  assert.deepEqual(dialer.status(), []);
  // Cut once: nothing more is reported for the stream.
  assert.equal(w.events.filter((e) => e.startsWith('broken web s1')).length, 1);

  // With its export gone, the next stream of the VM is refused, saying so: open rejects.
  const { error } = await rejection(dialer.open('web', 's2'));
  assert.match(error.message, /host2 refused the stream on alink1: cannot reach the copy export of volume web: .*ENOENT/);
  assert.equal(has(w.events, 'broken web s2'), false);
});

test('a newer stream of the same VM replaces the older at the server: stream-closed of the older first', BOUND, async () => {
  const w = await world();
  // Two dialers: as a restarted owner daemon whose old connection the server has not seen end.
  const older = await w.dialer();
  const io = new InteractiveQemuIo(cleanup, nbdUri('web', await older.open('web', 's1')));
  await io.ready();
  assert.match(await io.command('write -P 0x31 0 64k'), /wrote/);

  const newer = await w.dialer();
  const r = await qemuIo('raw', nbdUri('web', await newer.open('web', 's2')), ['read -P 0x31 0 64k', 'write -P 0x32 64k 64k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);
  const closedOld = indexOf(w.events, 'stream-closed web s1: replaced by stream s2');
  assert.ok(closedOld !== -1 && closedOld < indexOf(w.events, 'stream-open web s2'), w.events.join('\n'));
  await waitUntil(() => has(w.events, 'broken web s1'), 3000, 'the older stream broken at its owner');
});

test('close() leaves no socket file, listener or stream; an address that cannot be bound is retried, not thrown', BOUND, async () => {
  const w = await world({ vms: ['web', 'db'] });
  const socketDir = path.join(w.dir, 'streams-close');
  const dialer = await w.dialer({ socketDir });
  const io = new InteractiveQemuIo(cleanup, nbdUri('web', await dialer.open('web', 's1')));
  await io.ready();
  await dialer.open('db', 's2'); // waiting for its QEMU
  assert.deepEqual(await readdir(socketDir), ['db.sock']);
  await dialer.close();
  assert.deepEqual(await readdir(socketDir), []);
  assert.match(await io.command('read 0 4k'), /read failed/, 'its NBD connection was closed');
  await waitUntil(() => has(w.events, 'stream-closed web s1') && has(w.events, 'stream-closed db s2'), 3000, 'the server saw both streams end');
  assert.equal(has(w.events, 'broken'), false, 'no dialer event after close()');

  await w.server.close();
  for (const port of w.ports) {
    await assert.rejects(
      new Promise((resolve, reject) => net.connect(port, LOOPBACK).once('connect', resolve).once('error', reject)),
      /ECONNREFUSED/,
    );
  }

  // 192.0.2.1 (TEST-NET-1) is on no interface: the listener keeps trying, and close() stops it.
  const unbound = new ReplicationServer({
    self: 'host2',
    peer: 'host1',
    tls: prepareAlinkTls(await w.certs.material('host2'), 'host2'),
    listen: [{ address: '192.0.2.1', port: 0 }],
    resolve: () => null,
    timing: SERVER_TIMING,
  });
  await unbound.start();
  await sleep(250);
  const [status] = unbound.addresses();
  assert.equal(status!.listening, false);
  assert.match(status!.lastError!, /EADDRNOTAVAIL/);
  await unbound.close();
});
