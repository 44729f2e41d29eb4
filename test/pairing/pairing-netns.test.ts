/**
 * Pairing two hosts for real: two network namespaces joined by one veth (the first A-Link, 10.99.1.0/24),
 * each host's `pairWithPeer` in its own process inside its namespace, finding the other by broadcast.
 *
 * Needs root (namespaces); skipped otherwise. Everything it creates is named after this process and
 * deleted at the end.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { deleteNamespace, ensureAddress, ensureNamespace, ensureVeth, setLinkUp } from '../../src/lab/netns.js';
import { inNetns } from '../../src/util/exec.js';
import { loadAlinkTls, prepareAlinkTls } from '../../src/alink/tls.js';
import { createPairCa, signedBy, subjectCommonName } from '../../src/pki/pki.js';
import { pairFilesIfPaired, pairWithPeer, type PairFiles, type PairOptions } from '../../src/pairing/pairing.js';

const isRoot = process.getuid?.() === 0;
const NS = { host1: `lspair1-${process.pid}`, host2: `lspair2-${process.pid}` };
const ADDR = { host1: '10.99.1.1', host2: '10.99.1.2' };
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'pair-node.js');
const SECRET = 'correct horse battery staple';

type Host = keyof typeof NS;
type Outcome = { ok: true; files: PairFiles; ms: number } | { ok: false; code: string; message: string };

let dir = '';

before(async () => {
  if (!isRoot) return;
  for (const ns of Object.values(NS)) await ensureNamespace(ns);
  await ensureVeth(NS.host1, 'alink1', NS.host2, 'alink1');
  await ensureAddress(NS.host1, 'alink1', `${ADDR.host1}/24`);
  await ensureAddress(NS.host2, 'alink1', `${ADDR.host2}/24`);
  await setLinkUp(NS.host1, 'alink1', true);
  await setLinkUp(NS.host2, 'alink1', true);
  dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-pairing-netns-'));
});

after(async () => {
  if (!isRoot) return;
  for (const ns of Object.values(NS)) await deleteNamespace(ns);
  if (dir) await rm(dir, { recursive: true, force: true });
});

function options(self: Host, pkiDir: string, secret: string): Omit<PairOptions, 'log'> {
  return {
    self,
    peer: self === 'host1' ? 'host2' : 'host1',
    pairId: 'lab-pair',
    secret,
    pkiDir,
    privateNet: { local: ADDR[self], broadcast: '10.99.1.255' },
    timeoutMs: 8000,
  };
}

/** Runs one host's pairing in its namespace; resolves with its outcome and log lines once it exits. */
function pairIn(self: Host, opts: Omit<PairOptions, 'log'>): Promise<{ outcome: Outcome; log: string[] }> {
  const [cmd, args] = inNetns(NS[self], process.execPath, [FIXTURE, JSON.stringify(opts)]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const log: string[] = [];
  let outcome: Outcome | null = null;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const o = JSON.parse(line) as { log?: string } & Partial<Outcome>;
    if (o.log !== undefined) log.push(o.log);
    else outcome = o as Outcome;
  });
  const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve, reject) =>
    child.once('close', (code) => {
      clearTimeout(kill);
      if (outcome === null) reject(new Error(`${self}'s pairing exited (${code}) without an outcome; log: ${log.join(' | ')}`));
      else resolve({ outcome, log });
    }),
  );
}

let paired: { host1: string; host2: string } | null = null;

test('two namespaces pair over broadcast: certificates fit the A-Link identity rule, the CA key stays on the CA host', { skip: !isRoot && 'needs root', timeout: 30_000 }, async (t) => {
  const pki = { host1: path.join(dir, 'ok-host1'), host2: path.join(dir, 'ok-host2') };
  // The joiner first, then the CA host a moment later: each must wait for the other's beacons.
  const joiner = pairIn('host2', options('host2', pki.host2, SECRET));
  await new Promise((r) => setTimeout(r, 200));
  const [h1, h2] = await Promise.all([pairIn('host1', options('host1', pki.host1, SECRET)), joiner]);
  assert.ok(h1.outcome.ok, `host1: ${JSON.stringify(h1.outcome)} ${h1.log.join(' | ')}`);
  assert.ok(h2.outcome.ok, `host2: ${JSON.stringify(h2.outcome)} ${h2.log.join(' | ')}`);
  t.diagnostic(`paired in ${h1.outcome.ms} ms (host1) and ${h2.outcome.ms} ms (host2, started 200 ms earlier)`);
  t.diagnostic(`host1: ${h1.log.join(' | ')}`);
  t.diagnostic(`host2: ${h2.log.join(' | ')}`);
  assert.ok(h1.log.includes(`found host2 at ${ADDR.host2}`), h1.log.join(' | '));
  assert.ok(h2.log.includes(`found host1 at ${ADDR.host1}`), h2.log.join(' | '));

  // Each wrote only its own directory; ca.key only on the CA host; no scratch left behind.
  assert.deepEqual((await readdir(pki.host1)).sort(), ['ca.crt', 'ca.key', 'host.crt', 'host.key']);
  assert.deepEqual((await readdir(pki.host2)).sort(), ['ca.crt', 'host.crt', 'host.key']);
  for (const f of [path.join(pki.host1, 'ca.key'), path.join(pki.host1, 'host.key'), path.join(pki.host2, 'host.key')]) {
    assert.equal((await stat(f)).mode & 0o777, 0o600, f);
  }
  assert.equal(await readFile(path.join(pki.host1, 'ca.crt'), 'utf8'), await readFile(path.join(pki.host2, 'ca.crt'), 'utf8'));

  const ca = new X509Certificate(await readFile(path.join(pki.host1, 'ca.crt')));
  assert.equal(subjectCommonName(ca.subject), 'lockstep pair lab-pair');
  const outcomes = { host1: h1.outcome, host2: h2.outcome };
  for (const host of ['host1', 'host2'] as const) {
    const { files } = outcomes[host] as { files: PairFiles };
    assert.deepEqual(files, { ca: path.join(pki[host], 'ca.crt'), cert: path.join(pki[host], 'host.crt'), key: path.join(pki[host], 'host.key') });
    prepareAlinkTls(await loadAlinkTls(files), host); // throws ALINK_TLS unless CN = host, signed by the CA, key fits
    const leaf = new X509Certificate(await readFile(files.cert));
    assert.ok(signedBy(leaf, ca), `${host}'s certificate is signed by the pair CA`);
    assert.equal(subjectCommonName(leaf.subject), host);
    assert.deepEqual(await pairFilesIfPaired(pki[host], host), files);
  }
  paired = pki;
});

test('a paired host returns at once, without the network, and changes nothing', { skip: !isRoot && 'needs root' }, async () => {
  assert.ok(paired, 'the pairing test ran first');
  for (const host of ['host1', 'host2'] as const) {
    const before = await snapshot(paired[host]);
    const log: string[] = [];
    const started = Date.now();
    // An address this machine does not have: any attempt to use the network would fail.
    const files = await pairWithPeer({ ...options(host, paired[host], SECRET), privateNet: { local: '192.0.2.1', broadcast: '192.0.2.255' }, log: (l) => log.push(l) });
    assert.ok(Date.now() - started < 500, `returned in ${Date.now() - started} ms`);
    assert.equal(files.cert, path.join(paired[host], 'host.crt'));
    assert.deepEqual(log, []);
    assert.deepEqual(await snapshot(paired[host]), before);
  }
});

test('different secrets: both hosts fail with PAIRING, and neither writes anything', { skip: !isRoot && 'needs root', timeout: 30_000 }, async () => {
  const pki = { host1: path.join(dir, 'bad-host1'), host2: path.join(dir, 'bad-host2') };
  const [h1, h2] = await Promise.all([
    pairIn('host1', options('host1', pki.host1, 'one pairing secret, host1')),
    pairIn('host2', options('host2', pki.host2, 'another pairing secret, host2')),
  ]);
  assert.ok(!h1.outcome.ok && !h2.outcome.ok, `${JSON.stringify(h1.outcome)} ${JSON.stringify(h2.outcome)}`);
  assert.equal(h1.outcome.code, 'PAIRING');
  assert.equal(h2.outcome.code, 'PAIRING');
  assert.match(h1.outcome.message, /^host1 cannot verify host2's proof: the pairing secrets differ/);
  assert.match(h2.outcome.message, /^host1 refused the pairing: host1 cannot verify host2's proof: the pairing secrets differ/);
  assert.deepEqual(await readdir(pki.host1), []);
  assert.deepEqual(await readdir(pki.host2), []);
});

test('a CA host interrupted after storing its CA reuses it: the joiner may trust it already', { skip: !isRoot && 'needs root', timeout: 30_000 }, async () => {
  const pki = { host1: path.join(dir, 'resume-host1'), host2: path.join(dir, 'resume-host2') };
  // What a crash of the CA host right after sending `certs` leaves: ca.crt and ca.key, no host.crt.
  const earlier = await createPairCa(path.join(dir, 'resume-ca'), 'lab-pair');
  await mkdir(pki.host1);
  await copyFile(earlier.cert, path.join(pki.host1, 'ca.crt'));
  await copyFile(earlier.key, path.join(pki.host1, 'ca.key'));
  const [h1, h2] = await Promise.all([pairIn('host1', options('host1', pki.host1, SECRET)), pairIn('host2', options('host2', pki.host2, SECRET))]);
  assert.ok(h1.outcome.ok && h2.outcome.ok, `${JSON.stringify(h1.outcome)} ${JSON.stringify(h2.outcome)}`);
  const pem = await readFile(earlier.cert, 'utf8');
  assert.equal(await readFile(path.join(pki.host1, 'ca.crt'), 'utf8'), pem);
  assert.equal(await readFile(path.join(pki.host2, 'ca.crt'), 'utf8'), pem);
  assert.equal(await readFile(path.join(pki.host1, 'ca.key'), 'utf8'), await readFile(earlier.key, 'utf8'));
});

async function snapshot(pkiDir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(pkiDir)).sort()) {
    const s = await stat(path.join(pkiDir, name));
    out[name] = `${s.mtimeMs} ${await readFile(path.join(pkiDir, name), 'utf8')}`;
  }
  return out;
}
