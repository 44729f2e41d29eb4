// The exchange on one loopback connection, both sides: it pairs; a recorded exchange replayed to either
// side fails (fresh nonces), before anything is signed or stored; a request for the wrong host is refused.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCaSide, runJoinerSide, type CaSideOptions, type JoinerSideOptions } from '../../src/pairing/exchange.js';
import { derivePairingKey } from '../../src/pairing/proof.js';
import { createKeyAndCsr, createPairCa, signCsr, type CaFiles } from '../../src/pki/pki.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';
import { RawLines, SECRET, socketPair } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

interface World {
  ca: CaFiles;
  csr: string;
  key: Buffer;
  issued: string[];
  accepted: { ca: string; cert: string }[];
  caSide(): CaSideOptions;
  joinerSide(csr?: string): JoinerSideOptions;
}

async function world(): Promise<World> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-pairing-exchange-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const ca = await createPairCa(dir, 'p1');
  const csr = await createKeyAndCsr(path.join(dir, 'host2.key'), 'host2');
  const key = await derivePairingKey(SECRET, 'p1');
  const deadline = Date.now() + 10_000;
  const w: World = {
    ca,
    csr,
    key,
    issued: [],
    accepted: [],
    caSide: () => ({
      pairId: 'p1',
      self: 'host1',
      peer: 'host2',
      key,
      deadline,
      issue: async (request) => {
        w.issued.push(request);
        return { ca: await readFile(ca.cert, 'utf8'), cert: await signCsr(ca, request, { commonName: 'host2' }) };
      },
    }),
    joinerSide: (request = csr) => ({
      pairId: 'p1',
      self: 'host2',
      peer: 'host1',
      key,
      deadline,
      csr: request,
      accept: async (m) => void w.accepted.push(m),
    }),
  };
  return w;
}

test('an exchange, recorded; replayed to a new joiner and to a new CA host, it fails on both', async () => {
  const w = await world();
  const [c, j] = await socketPair(cleanup);
  const fromCa = new RawLines(j); // a second reader on each end: a wiretap
  const fromJoiner = new RawLines(c);
  assert.deepEqual(await Promise.all([runCaSide(c, w.caSide()), runJoinerSide(j, w.joinerSide())]), ['paired', 'paired']);
  assert.deepEqual(
    [fromCa.lines.map((l) => JSON.parse(l).t), fromJoiner.lines.map((l) => JSON.parse(l).t)],
    [['hello', 'certs'], ['csr', 'done']],
  );
  assert.equal(w.issued.length, 1);
  assert.equal(w.accepted.length, 1);

  // To a joiner with the very same CSR: only its nonce is new, and that is enough.
  const [attacker, j2] = await socketPair(cleanup);
  const toJoiner = new RawLines(attacker);
  const joined = runJoinerSide(j2, w.joinerSide());
  toJoiner.send(`${fromCa.lines[0]}\n`);
  await toJoiner.line(0);
  toJoiner.send(`${fromCa.lines[1]}\n`);
  await assert.rejects(joined, (e) => isLockstepError(e, 'PAIRING') && /^host2 cannot verify host1's proof/.test(e.message));
  assert.equal(w.accepted.length, 1, 'nothing accepted');
  assert.match(JSON.parse(await toJoiner.line(1)).reason, /cannot verify host1's proof/);

  // To a CA host: its new nonce makes the recorded proof worthless; nothing is signed.
  const [c3, attacker2] = await socketPair(cleanup);
  const toCa = new RawLines(attacker2);
  const signed = runCaSide(c3, w.caSide());
  await toCa.line(0);
  toCa.send(`${fromJoiner.lines[0]}\n`);
  await assert.rejects(signed, (e) => isLockstepError(e, 'PAIRING') && /^host1 cannot verify host2's proof/.test(e.message));
  assert.equal(w.issued.length, 1, 'nothing signed');
});

test("a joiner that proves the secret but asks for another host's certificate is refused; both sides say why", async () => {
  const w = await world();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-pairing-exchange-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const wrong = await createKeyAndCsr(path.join(dir, 'k'), 'host1');
  const [c, j] = await socketPair(cleanup);
  const [ca, joiner] = await Promise.allSettled([runCaSide(c, w.caSide()), runJoinerSide(j, w.joinerSide(wrong))]);
  assert.equal(ca.status, 'rejected');
  assert.equal(joiner.status, 'rejected');
  const caError = (ca as PromiseRejectedResult).reason as Error;
  const joinerError = (joiner as PromiseRejectedResult).reason as Error;
  assert.ok(isLockstepError(caError, 'PAIRING') && isLockstepError(joinerError, 'PAIRING'));
  assert.match(caError.message, /^host1 cannot sign host2's certificate request: the certificate request names "CN=host1", not exactly CN=host2/);
  assert.match(joinerError.message, /^host1 refused the pairing: host1 cannot sign host2's certificate request/);
  assert.equal(w.accepted.length, 0);
});

test('a joiner with another secret: the CA host refuses before signing, and the joiner learns why', async () => {
  const w = await world();
  const [c, j] = await socketPair(cleanup);
  const other = { ...w.joinerSide(), key: await derivePairingKey(`${SECRET}!`, 'p1') };
  const [ca, joiner] = await Promise.allSettled([runCaSide(c, w.caSide()), runJoinerSide(j, other)]);
  assert.ok(ca.status === 'rejected' && isLockstepError(ca.reason, 'PAIRING') && /secrets differ/.test(ca.reason.message));
  assert.ok(joiner.status === 'rejected' && isLockstepError(joiner.reason, 'PAIRING') && /^host1 refused the pairing/.test(joiner.reason.message));
  assert.equal(w.issued.length, 0);
});
