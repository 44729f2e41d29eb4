// The quorum server and client over real TLS on 127.0.0.1, in-process: leases, renewals, who may ask for
// what, enrollment, unreadable records, and a client that must answer `unreachable` rather than throw.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { createPairCa, issueCert } from '../../src/pki/pki.js';
import { askQuorum, probeQuorum } from '../../src/quorum/client.js';
import { QuorumServer } from '../../src/quorum/server.js';
import { enrollPair, pairRecordFile } from '../../src/quorum/state.js';
import { LockstepError } from '../../src/util/errors.js';
import { ask, Cleanup, makeWorld, rawConnect, record, sleep, startServer } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const LEASE_MS = 300;

test('grant to the first host, deny the second while the lease runs, renewals keep the epoch, grant the second after expiry', async () => {
  const world = await makeWorld(cleanup);
  const log: string[] = [];
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS, log: (l) => log.push(l) });

  assert.deepEqual(await ask(world, server.port, 'host1', { knownEpoch: 5 }), { kind: 'granted', epoch: 5 });
  assert.deepEqual(await record(world), { epoch: 5, holder: 'host1', leaseMs: LEASE_MS });
  assert.deepEqual(await ask(world, server.port, 'host2', { knownEpoch: 4 }), { kind: 'denied', epoch: 5, holder: 'host1' });

  // Renewals well inside the lease keep host1's epoch and keep host2 out for longer than one lease.
  for (let i = 0; i < 4; i++) {
    await sleep(LEASE_MS / 6);
    assert.deepEqual(await ask(world, server.port, 'host1', { knownEpoch: 5 }), { kind: 'granted', epoch: 5 });
    assert.deepEqual(await ask(world, server.port, 'host2'), { kind: 'denied', epoch: 5, holder: 'host1' });
  }

  await sleep(LEASE_MS + 50);
  assert.deepEqual(await ask(world, server.port, 'host2', { knownEpoch: 5 }), { kind: 'granted', epoch: 6 });
  assert.deepEqual(await record(world), { epoch: 6, holder: 'host2', leaseMs: LEASE_MS });
  assert.deepEqual(await ask(world, server.port, 'host1', { knownEpoch: 5 }), { kind: 'denied', epoch: 6, holder: 'host2' });

  // One log line per decision, naming pair, host, epoch and outcome.
  assert.ok(log.some((l) => /pair=p1 host=host1 granted epoch=5 \(new holder, was none\)/.test(l)), log.join('\n'));
  assert.ok(log.some((l) => /pair=p1 host=host1 granted epoch=5 \(renewed\)/.test(l)));
  assert.ok(log.some((l) => /pair=p1 host=host2 denied epoch=5 holder=host1/.test(l)));
  assert.ok(log.some((l) => /pair=p1 host=host2 granted epoch=6 \(new holder, was host1\)/.test(l)));
});

test('a new holder gets an epoch newer than every grant and at least what it asks for; a holder knowing a newer epoch raises the record', async () => {
  const world = await makeWorld(cleanup);
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS });
  assert.deepEqual(await ask(world, server.port, 'host1', { knownEpoch: 41 }), { kind: 'granted', epoch: 41 });
  assert.deepEqual(await ask(world, server.port, 'host1', { knownEpoch: 50 }), { kind: 'granted', epoch: 50 });
  assert.equal((await record(world)).epoch, 50);
  await sleep(LEASE_MS + 50);
  assert.deepEqual(await ask(world, server.port, 'host2', { knownEpoch: 0 }), { kind: 'granted', epoch: 51 });
});

test('the record is on disk before the reply leaves', async () => {
  const world = await makeWorld(cleanup);
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS });
  for (let known = 0; known < 20; known += 2) {
    const answer = await ask(world, server.port, 'host1', { knownEpoch: known });
    // Read synchronously the moment the reply is in: no write may still be pending.
    const onDisk = JSON.parse(readFileSync(pairRecordFile(world.stateDir, 'p1'), 'utf8')) as { epoch: number; holder: string };
    assert.equal(answer.kind, 'granted');
    assert.equal(onDisk.epoch, (answer as { epoch: number }).epoch);
    assert.equal(onDisk.holder, 'host1');
  }
});

test("a certificate of another pair grants nothing; a host cannot ask in another's name; unknown pairs and strangers are refused", async () => {
  const world = await makeWorld(cleanup);
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS });

  const wrongPair = await ask(world, server.port, 'host3', { pair: 'p1', host: 'host3' });
  assert.equal(wrongPair.kind, 'unreachable');
  assert.equal((wrongPair as { code?: string }).code, 'NOT_AUTHORIZED');

  const impostor = await ask(world, server.port, 'host1', { host: 'host2' });
  assert.equal((impostor as { code?: string }).code, 'HOST_MISMATCH');

  const unknown = await ask(world, server.port, 'host1', { pair: 'p9' });
  assert.equal((unknown as { code?: string }).code, 'UNKNOWN_PAIR');

  // Right CN, right CA name, wrong key: refused in the TLS handshake.
  const rogue = await ask(world, server.port, 'rogue');
  assert.equal(rogue.kind, 'unreachable');
  assert.equal((rogue as { code?: string }).code, undefined);

  assert.deepEqual(await record(world), { epoch: 0, holder: null, leaseMs: 0 });
  // The rightful host is not held up by any of it.
  assert.deepEqual(await ask(world, server.port, 'host2'), { kind: 'granted', epoch: 1 });
  // Pair p2 is independent of p1.
  assert.deepEqual(await ask(world, server.port, 'host3', { knownEpoch: 3 }), { kind: 'granted', epoch: 3 });
  assert.deepEqual(await record(world), { epoch: 1, holder: 'host2', leaseMs: LEASE_MS });
});

test('enrollment: checked CA, picked up by a running server, re-enrolling keeps the record', async () => {
  const world = await makeWorld(cleanup);
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS });
  const p3 = await createPairCa(path.join(world.dir, 'p3'), 'p3');
  const host5 = await issueCert(p3, path.join(world.dir, 'p3'), { commonName: 'host5' });
  const ask5 = () =>
    askQuorum({ address: '127.0.0.1', port: server.port, ca: world.server.ca, cert: host5.cert, key: host5.key, pair: 'p3', host: 'host5', knownEpoch: 0, timeoutMs: 3000 });

  // p1's CA cannot be enrolled as p3, nor can a leaf certificate.
  await assert.rejects(enrollPair(world.stateDir, 'p3', await readFile(world.pairCa.p1.cert, 'utf8')), (e) => e instanceof LockstepError && e.code === 'INVALID_CERTIFICATE');
  await assert.rejects(enrollPair(world.stateDir, 'p3', await readFile(host5.cert, 'utf8')), (e) => e instanceof LockstepError && e.code === 'INVALID_CERTIFICATE');

  assert.equal((await ask5()).kind, 'unreachable');
  assert.equal((await enrollPair(world.stateDir, 'p3', await readFile(p3.cert, 'utf8'))).outcome, 'new');
  await server.reload();
  assert.deepEqual(await ask5(), { kind: 'granted', epoch: 1 });

  // Re-enrolled with a new CA: old certificates are refused, the epoch carries on.
  const p3b = await createPairCa(path.join(world.dir, 'p3b'), 'p3');
  const host5b = await issueCert(p3b, path.join(world.dir, 'p3b'), { commonName: 'host5' });
  assert.equal((await enrollPair(world.stateDir, 'p3', await readFile(p3b.cert, 'utf8'))).outcome, 'replaced');
  assert.equal((await enrollPair(world.stateDir, 'p3', await readFile(p3b.cert, 'utf8'))).outcome, 'same');
  await server.reload();
  assert.equal((await ask5()).kind, 'unreachable');
  const again = await askQuorum({ address: '127.0.0.1', port: server.port, ca: world.server.ca, cert: host5b.cert, key: host5b.key, pair: 'p3', host: 'host5', knownEpoch: 0, timeoutMs: 3000 });
  assert.deepEqual(again, { kind: 'granted', epoch: 1 });
});

test('a pair whose record cannot be read is not served (never restarted from epoch 0); other pairs are', async () => {
  const world = await makeWorld(cleanup);
  await writeFile(pairRecordFile(world.stateDir, 'p1'), '{"v":1,"pair":"p1","epo');
  const log: string[] = [];
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS, log: (l) => log.push(l) });
  const answer = await ask(world, server.port, 'host1');
  assert.equal((answer as { code?: string }).code, 'PAIR_UNAVAILABLE');
  assert.ok(log.some((l) => l.includes('pair=p1 NOT SERVED')));
  assert.deepEqual(await ask(world, server.port, 'host3'), { kind: 'granted', epoch: 1 });
});

test('probes; the server pinned by its own certificate; a wrong pin or a wrong CA is unreachable', async () => {
  const world = await makeWorld(cleanup);
  const server = await startServer(cleanup, world, { leaseMs: LEASE_MS });
  const h = world.hosts.host1;
  const endpoint = { address: '127.0.0.1', port: server.port, ca: world.server.ca, cert: h.cert, key: h.key, timeoutMs: 3000 };
  assert.equal(await probeQuorum(endpoint), true);
  assert.equal(await probeQuorum({ ...endpoint, ca: world.server.cert }), true, 'pinned server certificate');
  assert.equal(await probeQuorum({ ...endpoint, ca: world.hosts.host2.cert }), false, 'another pinned certificate');
  assert.equal(await probeQuorum({ ...endpoint, ca: world.pairCa.p1.cert }), false, 'a CA that did not sign the server');
  // PEM text works as well as paths.
  assert.equal(await probeQuorum({ ...endpoint, ca: await readFile(world.server.ca, 'utf8'), cert: await readFile(h.cert), key: await readFile(h.key, 'utf8') }), true);
  await assert.rejects(probeQuorum({ ...endpoint, cert: '/nonexistent/cert.pem' }), (e) => e instanceof LockstepError && e.code === 'INVALID_CERTIFICATE');
  await server.close();
  assert.equal(await probeQuorum(endpoint), false);
});

test('the client answers unreachable on timeout, refusal and garbage, within its time limit', async () => {
  const world = await makeWorld(cleanup, { enroll: false });
  const sockets = new Set<net.Socket>();
  let mode: 'silent' | 'garbage' = 'silent';
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    if (mode === 'garbage') s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup.add(() => new Promise<void>((r) => srv.close(() => r())));
  cleanup.add(() => sockets.forEach((s) => s.destroy())); // runs first: close waits for connections
  const port = (srv.address() as net.AddressInfo).port;

  const t0 = performance.now();
  const silent = await ask(world, port, 'host1', { timeoutMs: 300 });
  const took = performance.now() - t0;
  assert.equal(silent.kind, 'unreachable');
  assert.match((silent as { reason: string }).reason, /no reply within 300 ms/);
  assert.ok(took >= 290 && took < 1500, `took ${took} ms`);

  mode = 'garbage';
  assert.equal((await ask(world, port, 'host1', { timeoutMs: 2000 })).kind, 'unreachable');

  sockets.forEach((s) => s.destroy());
  await new Promise<void>((r) => srv.close(() => r()));
  assert.equal((await ask(world, port, 'host1', { timeoutMs: 2000 })).kind, 'unreachable');
});

test('bounds: idle connections are closed, connections beyond the limit are refused, lines are answered in order', async () => {
  const world = await makeWorld(cleanup);
  const server = await QuorumServer.start({ stateDir: world.stateDir, host: '127.0.0.1', port: 0, leaseMs: LEASE_MS, reloadIntervalMs: 0, idleTimeoutMs: 300, maxConnections: 2 });
  cleanup.add(() => server.close());

  const idle = await rawConnect(cleanup, world, server.port, 'host1');
  const t0 = performance.now();
  await idle.closed;
  assert.ok(performance.now() - t0 < 2000);

  const a = await rawConnect(cleanup, world, server.port, 'host1');
  const b = await rawConnect(cleanup, world, server.port, 'host2');
  const third = await ask(world, server.port, 'host1', { timeoutMs: 2000 });
  assert.equal(third.kind, 'unreachable', 'a third connection is refused');

  // Many lines in one write: one reply each, in order.
  a.socket.write(Array.from({ length: 200 }, (_, i) => `{"v":1,"type":"ping","id":${i}}\n`).join(''));
  const replies = await a.waitReplies(200);
  assert.deepEqual(replies.map((r) => (JSON.parse(r) as { id: number }).id), Array.from({ length: 200 }, (_, i) => i));
  a.socket.destroy();
  b.socket.destroy();
  await Promise.all([a.closed, b.closed]);
  await sleep(50);
  assert.deepEqual(await ask(world, server.port, 'host1'), { kind: 'granted', epoch: 1 });
});
