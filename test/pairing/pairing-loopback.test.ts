// `pairWithPeer` in this process on loopback, with the test playing the peer the way a broken or hostile
// host would: garbage and endless lines are dropped or refused without a crash, and nothing is written
// unless the exchange is authenticated. Also: option checks and the states of a pki directory.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadAlinkTls, prepareAlinkTls } from '../../src/alink/tls.js';
import { runCaSide } from '../../src/pairing/exchange.js';
import { pairFilesIfPaired, pairWithPeer, type PairOptions } from '../../src/pairing/pairing.js';
import { derivePairingKey } from '../../src/pairing/proof.js';
import { createPairCa, issueCert, signCsr } from '../../src/pki/pki.js';
import { isLockstepError, LockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';
import { beaconAs, freeTcpPort, freeUdpPort, LOOPBACK, LOOPBACK_BROADCAST, RawLines, SECRET } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-pairing-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function optionsFor(self: 'host1' | 'host2', pkiDir: string, log: string[]): Promise<PairOptions> {
  return {
    self,
    peer: self === 'host1' ? 'host2' : 'host1',
    pairId: 'p1',
    secret: SECRET,
    pkiDir,
    privateNet: { local: LOOPBACK, broadcast: LOOPBACK_BROADCAST },
    discoveryPort: await freeUdpPort(),
    pairingPort: await freeTcpPort(),
    timeoutMs: 10_000,
    log: (l) => log.push(l),
  };
}

test('the joiner drops garbage, an endless line and a stranger, then pairs with its peer', async () => {
  const pkiDir = path.join(await tempDir(), 'pki');
  const log: string[] = [];
  const o = await optionsFor('host2', pkiDir, log);
  const joined = pairWithPeer(o);
  joined.catch(() => {}); // awaited below; a failure before then must not be an unhandled rejection
  await beaconAs(cleanup, { pairId: 'p1', host: 'host1', pairingPort: 0 }, o.discoveryPort!);
  // The joiner listens once its key is made, and answers once it has heard host1's beacon: until then a
  // connection is refused or closed unanswered.
  const dialAfterBeacon = async (): Promise<RawLines> => {
    for (;;) {
      const raw = await RawLines.connect(o.pairingPort!, cleanup).catch(() => null);
      const first = raw && (await Promise.race([raw.closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 150))]));
      if (first === 'open') return raw!;
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const garbage = await dialAfterBeacon();
  garbage.send('{"v":1,"t":\n');
  await garbage.closed;
  const endless = await dialAfterBeacon();
  endless.send('x'.repeat(100_000));
  await endless.closed;
  const stranger = await dialAfterBeacon();
  stranger.send(`${JSON.stringify({ v: 1, t: 'hello', pairId: 'p1', host: 'host9', nonce: 'a'.repeat(64) })}\n`);
  assert.match(JSON.parse(await stranger.line(0)).reason, /^this is host2 of pair p1, pairing with host1, not with host9 of pair p1/);
  await stranger.closed;
  assert.deepEqual(await readdir(pkiDir).then((names) => names.filter((n) => !n.startsWith('.pairing-'))), [], 'nothing written yet');

  // Now the real CA host (the exchange's CA side, as pairWithPeer's CA host runs it).
  const caDir = await tempDir();
  const ca = await createPairCa(caDir, 'p1');
  const socket = net.connect({ host: LOOPBACK, port: o.pairingPort! });
  cleanup.add(() => socket.destroy());
  const outcome = await runCaSide(socket, {
    pairId: 'p1',
    self: 'host1',
    peer: 'host2',
    key: await derivePairingKey(SECRET, 'p1'),
    deadline: Date.now() + 5000,
    issue: async (csr) => ({ ca: await readFile(ca.cert, 'utf8'), cert: await signCsr(ca, csr, { commonName: 'host2' }) }),
  });
  assert.equal(outcome, 'paired');
  const files = await joined;
  prepareAlinkTls(await loadAlinkTls(files), 'host2');
  assert.deepEqual((await readdir(pkiDir)).sort(), ['ca.crt', 'host.crt', 'host.key']);
  const dropped = log.filter((l) => l.startsWith('exchange with 127.0.0.1 dropped'));
  assert.equal(dropped.length, 3, log.join('\n'));
  assert.match(dropped[0]!, /no valid hello: pairing message: line is not JSON/);
  assert.match(dropped[1]!, /no valid hello: pairing message: line is longer than 65536 bytes/);
  assert.match(dropped[2]!, /a hello from host9 of pair p1/);
});

/** A fake joiner: beacons as host2 and answers the CA host's hello with `reply`. */
async function fakeJoiner(discoveryPort: number, reply: string): Promise<void> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', () => socket.write(reply));
  });
  await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
  cleanup.add(() => new Promise((r) => server.close(r)));
  await beaconAs(cleanup, { pairId: 'p1', host: 'host2', pairingPort: (server.address() as net.AddressInfo).port }, discoveryPort);
}

test('the CA host refuses a joiner that answers garbage or an endless line: PAIRING, nothing written', async () => {
  const cases = [
    { reply: 'this is not json\n', cause: /line is not JSON/ },
    { reply: 'x'.repeat(100_000), cause: /line is longer than 65536 bytes/ },
    { reply: `${JSON.stringify({ v: 1, t: 'done', proof: 'a'.repeat(64) })}\n`, cause: /t is "done" where "csr" was due/ },
  ];
  for (const c of cases) {
    const pkiDir = path.join(await tempDir(), 'pki');
    const o = await optionsFor('host1', pkiDir, []);
    await fakeJoiner(o.discoveryPort!, c.reply);
    await assert.rejects(pairWithPeer(o), (e) => {
      assert.ok(isLockstepError(e, 'PAIRING'), String(e));
      assert.ok(isLockstepError(e.cause, 'INVALID_MESSAGE'), String(e.cause));
      assert.match(e.message, c.cause);
      return true;
    });
    assert.deepEqual(await readdir(pkiDir), [], 'no CA, no key, no scratch');
    await cleanup.run();
  }
});

test('options are checked before anything happens', async () => {
  const pkiDir = path.join(await tempDir(), 'pki');
  const o = await optionsFor('host1', pkiDir, []);
  const bad: [Partial<PairOptions>, RegExp][] = [
    [{ secret: 'short secret' }, /fewer than 16 characters/],
    [{ peer: 'host1' }, /self and peer are both host1/],
    [{ pairId: 'Pair 1' }, /pairId "Pair 1" is not a name/],
    [{ privateNet: { local: '10.0.0.1', broadcast: 'everyone' } }, /privateNet.broadcast "everyone" is not an IPv4 address/],
    [{ discoveryPort: 70_000 }, /discoveryPort 70000 is not a port/],
    [{ timeoutMs: 0 }, /timeoutMs 0 is not a positive integer/],
  ];
  for (const [change, why] of bad) {
    await assert.rejects(pairWithPeer({ ...o, ...change }), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && why.test(e.message), why.source);
  }
  await assert.rejects(readdir(pkiDir), { code: 'ENOENT' });
});

test('pki directory states: empty or interrupted is not paired; a host.crt that does not fit is refused, not overwritten', async () => {
  const dir = await tempDir();
  const ca = await createPairCa(path.join(dir, 'ca'), 'p1');
  const host1 = await issueCert(ca, path.join(dir, 'ca'), { commonName: 'host1' });
  const pki = path.join(dir, 'pki');
  await mkdir(pki);
  assert.equal(await pairFilesIfPaired(pki, 'host1'), null);

  // A crash before host.crt: the key and the CA are there, the marker is not.
  await copyFile(host1.key, path.join(pki, 'host.key'));
  await copyFile(ca.cert, path.join(pki, 'ca.crt'));
  assert.equal(await pairFilesIfPaired(pki, 'host1'), null);

  await copyFile(host1.cert, path.join(pki, 'host.crt'));
  assert.deepEqual(await pairFilesIfPaired(pki, 'host1'), { ca: path.join(pki, 'ca.crt'), cert: path.join(pki, 'host.crt'), key: path.join(pki, 'host.key') });
  const refused = (e: unknown): boolean => isLockstepError(e, 'PAIRING') && /holds a host\.crt but .*remove host\.crt/.test((e as LockstepError).message);
  // host1's files are not host2's pairing.
  await assert.rejects(pairFilesIfPaired(pki, 'host2'), refused);
  // pairWithPeer refuses too, rather than pair again over them (and never touches the network).
  await assert.rejects(pairWithPeer({ ...(await optionsFor('host2', pki, [])), timeoutMs: 1 }), refused);
  // Paired, but for another pair.
  await assert.rejects(pairWithPeer({ ...(await optionsFor('host1', pki, [])), pairId: 'p2' }), (e) => isLockstepError(e, 'PAIRING') && /paired for another pair/.test((e as Error).message));
  await writeFile(path.join(pki, 'host.key'), 'not a key');
  await assert.rejects(pairFilesIfPaired(pki, 'host1'), refused);
  await rm(path.join(pki, 'ca.crt'));
  await assert.rejects(pairFilesIfPaired(pki, 'host1'), (e) => refused(e) && /no ca\.crt/.test((e as Error).message));

  // A CA host's stored CA of another pair is not reused, nor replaced.
  const other = await createPairCa(path.join(dir, 'other'), 'p2');
  const caHost = path.join(dir, 'ca-host');
  await mkdir(caHost);
  await copyFile(other.cert, path.join(caHost, 'ca.crt'));
  await copyFile(other.key, path.join(caHost, 'ca.key'));
  await assert.rejects(pairWithPeer(await optionsFor('host1', caHost, [])), (e) => isLockstepError(e, 'PAIRING') && /are not pair p1's CA \(CN "lockstep pair p2"\)/.test((e as Error).message));
});
