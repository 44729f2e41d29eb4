// The PKI on the openssl CLI: what the certificates say about themselves, and that they do their job in a
// real mutual-TLS connection on 127.0.0.1 (one CA's certificates connect; another CA's are refused).
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { certCommonName, createPairCa, fingerprint, issueCert, signedBy } from '../../src/pki/pki.js';
import { run } from '../../src/util/exec.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup, tempDir } from '../quorum/helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const EKU_SERVER = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT = '1.3.6.1.5.5.7.3.2';

test('a pair CA: CN "lockstep pair <id>", CA:TRUE, ten years, P-256, key mode 0600', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(dir, 'pair-7');
  const cert = new X509Certificate(await readFile(ca.cert));
  assert.equal(certCommonName(await readFile(ca.cert, 'utf8')), 'lockstep pair pair-7');
  assert.equal(cert.ca, true);
  assert.ok(cert.verify(cert.publicKey), 'self-signed');
  assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  const years = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / (365.25 * 86_400_000);
  assert.ok(years > 9.9 && years < 10.1, `valid ${years} years`);
  assert.equal((await stat(ca.key)).mode & 0o777, 0o600);
  const text = (await run('openssl', ['x509', '-in', ca.cert, '-noout', '-text'])).stdout;
  assert.match(text, /Basic Constraints: critical\s+CA:TRUE/);
});

test('a leaf: CN as asked, SANs, server and client auth, signed by the CA; fingerprint is SHA-256 of the DER', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(dir, 'p1');
  const leaf = await issueCert(ca, dir, { commonName: 'host1', ips: ['127.0.0.1', '::1'], dnsNames: ['host1.example'] });
  assert.equal(leaf.ca, ca.cert);
  const pem = await readFile(leaf.cert, 'utf8');
  const cert = new X509Certificate(pem);
  assert.equal(certCommonName(pem), 'host1');
  assert.equal(cert.ca, false);
  assert.deepEqual([...(cert.keyUsage ?? [])].sort(), [EKU_SERVER, EKU_CLIENT]);
  assert.equal(cert.subjectAltName, 'IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:host1.example');
  assert.ok(signedBy(cert, new X509Certificate(await readFile(ca.cert))));
  assert.equal((await stat(leaf.key)).mode & 0o777, 0o600);
  assert.equal(path.dirname(leaf.key), dir);

  const openssl = (await run('openssl', ['x509', '-in', leaf.cert, '-noout', '-fingerprint', '-sha256'])).stdout;
  const expected = openssl.trim().split('=')[1]!.replaceAll(':', '').toLowerCase();
  assert.equal(await fingerprint(leaf.cert), expected);
  assert.match(expected, /^[0-9a-f]{64}$/);
});

test('bad names and addresses are refused before openssl runs', async () => {
  const dir = await tempDir(cleanup);
  await assert.rejects(createPairCa(dir, 'Not/A/Pair'), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT');
  const ca = await createPairCa(dir, 'p1');
  await assert.rejects(issueCert(ca, dir, { commonName: 'x/CN=evil' }), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT');
  await assert.rejects(issueCert(ca, dir, { commonName: 'h', ips: ['300.1.1.1'] }), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT');
  await assert.rejects(issueCert(ca, dir, { commonName: 'h', dnsNames: ['a,DNS:evil'] }), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT');
  assert.throws(() => certCommonName('not a certificate'), (e) => e instanceof LockstepError && e.code === 'INVALID_CERTIFICATE');
});

/** A TLS 1.3 server on 127.0.0.1 that requires a client certificate from `caFile` and echoes one line. */
const accepted: string[] = [];

async function echoServer(server: { cert: string; key: string }, caFile: string): Promise<{ port: number; refused: Promise<Error> }> {
  accepted.length = 0;
  let refusedWith: (e: Error) => void = () => {};
  const refused = new Promise<Error>((r) => (refusedWith = r));
  const srv = tls.createServer(
    {
      cert: await readFile(server.cert),
      key: await readFile(server.key),
      ca: [await readFile(caFile)],
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (socket) => {
      const peer = socket.getPeerX509Certificate();
      accepted.push(peer ? certCommonName(peer.toString()) : '?');
      socket.on('error', () => {});
      socket.once('data', () => socket.end(`hello ${peer ? certCommonName(peer.toString()) : '?'}\n`));
    },
  );
  srv.on('tlsClientError', (e, socket) => {
    refusedWith(e);
    socket.destroy();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup.add(() => new Promise<void>((r) => srv.close(() => r())));
  return { port: (srv.address() as AddressInfo).port, refused };
}

/** Connects with `client` trusting `caFile`, sends a line, returns what came back (or the error). */
async function talk(port: number, client: { cert: string; key: string }, caFile: string): Promise<string | Error> {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: [await readFile(caFile)],
    cert: await readFile(client.cert),
    key: await readFile(client.key),
    minVersion: 'TLSv1.3',
  });
  cleanup.add(() => socket.destroy());
  return new Promise((resolve) => {
    let got = '';
    socket.on('secureConnect', () => socket.write('hi\n'));
    socket.on('data', (b: Buffer) => (got += b.toString()));
    socket.on('error', (e) => resolve(e));
    socket.on('close', () => resolve(got === '' ? new Error('closed with no reply') : got));
  });
}

test('mutual TLS on 127.0.0.1: certificates from one CA connect; a client certificate of another CA is refused', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(path.join(dir, 'a'), 'a');
  const other = await createPairCa(path.join(dir, 'b'), 'b');
  const server = await issueCert(ca, path.join(dir, 'a'), { commonName: 'server', ips: ['127.0.0.1'] });
  const good = await issueCert(ca, path.join(dir, 'a'), { commonName: 'host1' });
  const stranger = await issueCert(other, path.join(dir, 'b'), { commonName: 'host1' });

  const { port, refused } = await echoServer(server, ca.cert);
  assert.equal(await talk(port, good, ca.cert), 'hello host1\n');

  const answer = await talk(port, stranger, ca.cert);
  assert.ok(answer instanceof Error, `the stranger got an answer: ${String(answer)}`);
  // The server never saw a secure connection: its handshake failed (TLS 1.3 reports it as a hang-up).
  await refused;
  assert.deepEqual(accepted, ['host1']);
});

test('a client refuses a server whose certificate is not for the address it connects to', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(dir, 'a');
  const server = await issueCert(ca, dir, { commonName: 'server', ips: ['10.9.9.9'] });
  const client = await issueCert(ca, dir, { commonName: 'host1' });
  const { port } = await echoServer(server, ca.cert);
  const answer = await talk(port, client, ca.cert);
  assert.ok(answer instanceof Error);
  assert.match(answer.message, /IP: 127\.0\.0\.1 is not in the cert's list/);
});
