// `lockstep-quorum` as an operator runs it: init, enroll, serve; usage errors exit 2, operational ones 1.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { createPairCa, fingerprint, issueCert } from '../../src/pki/pki.js';
import { askQuorum } from '../../src/quorum/client.js';
import { parseListen } from '../../src/quorum/main.js';
import { Cleanup, runQuorumCli, spawnServer, tempDir } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('init, enroll and serve from the command line; a host asks and is granted', async () => {
  const dir = await tempDir(cleanup);
  const state = path.join(dir, 'state');
  const init = await runQuorumCli(['init', '--state', state, '--name', 'quorum1', '--ip', '127.0.0.1']);
  assert.equal(init.code, 0, init.stderr);
  const serverCa = path.join(state, 'server', 'ca.pem');
  assert.match(init.stdout, new RegExp(`server CA sha256: ${await fingerprint(serverCa)}`));
  assert.equal((await stat(path.join(state, 'server', 'ca-key.pem'))).mode & 0o777, 0o600);

  const again = await runQuorumCli(['init', '--state', state, '--name', 'quorum1', '--ip', '127.0.0.1']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /QUORUM_STATE: .* is initialized already/);

  const ca = await createPairCa(path.join(dir, 'pair'), 'lab');
  const host = await issueCert(ca, path.join(dir, 'pair'), { commonName: 'host1' });
  const wrong = await runQuorumCli(['enroll', '--state', state, '--pair', 'other', '--ca', ca.cert]);
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /INVALID_CERTIFICATE: the CA certificate's CN is "lockstep pair lab", not "lockstep pair other"/);
  const enroll = await runQuorumCli(['enroll', '--state', state, '--pair', 'lab', '--ca', ca.cert]);
  assert.equal(enroll.code, 0, enroll.stderr);

  const server = await spawnServer(cleanup, state, { leaseMs: 500 });
  const answer = await askQuorum({ address: '127.0.0.1', port: server.port, ca: serverCa, cert: host.cert, key: host.key, pair: 'lab', host: 'host1', knownEpoch: 0, timeoutMs: 3000 });
  assert.deepEqual(answer, { kind: 'granted', epoch: 1 });
  assert.deepEqual(JSON.parse(await readFile(path.join(state, 'pairs', 'lab', 'record.json'), 'utf8')), { v: 1, pair: 'lab', epoch: 1, holder: 'host1', leaseMs: 500 });

  // SIGTERM stops it cleanly and releases the state directory.
  server.child.kill('SIGTERM');
  assert.deepEqual(await server.exited, { code: 0, signal: null });
  await assert.rejects(stat(path.join(state, 'serve.pid')));
});

test('usage errors exit 2 with the usage; operational errors exit 1', async () => {
  const dir = await tempDir(cleanup);
  const cases: [string[], number, RegExp][] = [
    [[], 2, /usage:/],
    [['frobnicate'], 2, /unknown command 'frobnicate'/],
    [['init', '--state', dir, '--name', 'Q 1', '--ip', '127.0.0.1'], 2, /quorum server name "Q 1" is not valid/],
    [['init', '--state', dir, '--name', 'q1'], 2, /--ip ADDR is required/],
    [['init', '--state', dir, '--name', 'q1', '--ip', 'nowhere'], 2, /"nowhere" is not an IP address/],
    [['serve', '--state', dir, '--listen', 'localhost:7400'], 2, /is not ADDR:PORT/],
    [['serve', '--state', dir, '--listen', '127.0.0.1:1', '--lease-ms=-5'], 2, /--lease-ms -5 is not a positive integer/],
    [['serve', '--state', dir, '--listen', '127.0.0.1:1', '--lease-ms', '1.5'], 2, /--lease-ms 1.5 is not a positive integer/],
    [['serve', '--state', dir, '--listen', '127.0.0.1:0', '--bogus'], 2, /Unknown option '--bogus'/],
    [['serve', '--state', path.join(dir, 'none'), '--listen', '127.0.0.1:0'], 1, /QUORUM_STATE: .* is not initialized/],
    [['enroll', '--state', dir, '--pair', 'p1', '--ca', path.join(dir, 'missing.pem')], 2, /cannot read/],
  ];
  for (const [args, code, message] of cases) {
    const r = await runQuorumCli(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
  assert.equal((await runQuorumCli(['help'])).code, 0);
});

test('--listen forms', () => {
  assert.deepEqual(parseListen('127.0.0.1:7400'), { host: '127.0.0.1', port: 7400 });
  assert.deepEqual(parseListen('[::1]:7400'), { host: '::1', port: 7400 });
  assert.deepEqual(parseListen('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  for (const bad of ['7400', '127.0.0.1', '127.0.0.1:65536', '::1:7400', 'host:7400', '127.0.0.1:-1']) assert.throws(() => parseListen(bad), bad);
});
