// Certificates by request: a host makes its key and a CSR (the key stays where it put it), the CA host
// signs the CSR into the same leaf `issueCert` makes, and refuses a request that is not exactly what it
// expects: another CN, extra names, a broken self-signature, a key other than P-256, or not a CSR at all.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createKeyAndCsr, createPairCa, issueCert, signCsr, signedBy } from '../../src/pki/pki.js';
import { run } from '../../src/util/exec.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup, tempDir } from '../quorum/helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const badRequest = (why: RegExp) => (e: unknown) => isLockstepError(e, 'INVALID_CERTIFICATE') && why.test((e as Error).message);

/** A CSR made with openssl directly from `config` lines (for requests our own code would never make). */
async function opensslCsr(dir: string, config: string[], keyAlgorithm: string[] = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']): Promise<string> {
  const key = path.join(dir, `k-${Math.random().toString(16).slice(2)}.pem`);
  const cnf = `${key}.cnf`;
  await writeFile(key, (await run('openssl', ['genpkey', ...keyAlgorithm])).stdout);
  await writeFile(cnf, [...config, ''].join('\n'));
  return (await run('openssl', ['req', '-new', '-config', cnf, '-key', key, '-sha256'])).stdout;
}

test('createKeyAndCsr: the key at the given path, mode 0600; a CSR for the CN, with that key', async () => {
  const dir = await tempDir(cleanup);
  const keyFile = path.join(dir, 'host2.key');
  const csr = await createKeyAndCsr(keyFile, 'host2');
  assert.match(csr, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
  assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
  const key = createPrivateKey(await readFile(keyFile));
  assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  const csrFile = path.join(dir, 'r.csr');
  await writeFile(csrFile, csr);
  const shown = await run('openssl', ['req', '-in', csrFile, '-noout', '-subject', '-pubkey']);
  assert.match(shown.stdout, /^subject=CN = host2$/m);
  const { stdout: pub } = await run('openssl', ['pkey', '-in', keyFile, '-pubout']);
  assert.ok(shown.stdout.includes(pub.trim()), 'the CSR holds the key’s public half');
  await assert.rejects(createKeyAndCsr(path.join(dir, 'x.key'), 'x/CN=evil'), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});

test('signCsr: the leaf issueCert would make, for the requester’s key; SANs from the CA side', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(dir, 'p1');
  const keyFile = path.join(dir, 'host2.key');
  const pem = await signCsr(ca, await createKeyAndCsr(keyFile, 'host2'), { commonName: 'host2', ips: ['10.99.1.2'] });
  const cert = new X509Certificate(pem);
  const caCert = new X509Certificate(await readFile(ca.cert));
  assert.equal(cert.subject, 'CN=host2');
  assert.ok(signedBy(cert, caCert));
  assert.ok(cert.checkPrivateKey(createPrivateKey(await readFile(keyFile))));
  assert.equal(cert.subjectAltName, 'IP Address:10.99.1.2');
  // Same extensions as a leaf from issueCert.
  const issued = await issueCert(ca, dir, { commonName: 'host1', ips: ['10.99.1.1'] });
  const extensions = async (file: string) =>
    (await run('openssl', ['x509', '-in', file, '-noout', '-ext', 'basicConstraints,keyUsage,extendedKeyUsage'])).stdout;
  const signedFile = path.join(dir, 'signed.pem');
  await writeFile(signedFile, pem);
  assert.equal(await extensions(signedFile), await extensions(issued.cert));
  const years = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / (365.25 * 86_400_000);
  assert.ok(years > 9.9 && years < 10.1, `valid ${years} years`);
});

test('signCsr refuses requests that are not exactly the expected host’s', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(dir, 'p1');
  const csr = await createKeyAndCsr(path.join(dir, 'k.key'), 'host2');
  await assert.rejects(signCsr(ca, csr, { commonName: 'host3' }), badRequest(/names "CN=host2", not exactly CN=host3/));
  await assert.rejects(signCsr(ca, 'hello', { commonName: 'host2' }), badRequest(/is not a PEM certificate request/));

  // One flipped bit in the signature: the request no longer proves its key.
  const der = Buffer.from(csr.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
  der[der.length - 3]! ^= 1;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(signCsr(ca, tampered, { commonName: 'host2' }), badRequest(/self-signature that does not verify/));

  const dn = (...rdns: string[]) => ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', ...rdns];
  const extra = await opensslCsr(dir, dn('O = evil', 'CN = host2'));
  await assert.rejects(signCsr(ca, extra, { commonName: 'host2' }), badRequest(/names "O=evil, CN=host2"/));
  const rsa = await opensslCsr(dir, dn('CN = host2'), ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']);
  await assert.rejects(signCsr(ca, rsa, { commonName: 'host2' }), badRequest(/does not hold a P-256 key/));
  await assert.rejects(signCsr(ca, csr, { commonName: 'host2', ips: ['not-an-ip'] }), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});

test('signCsr ignores the extensions a request asks for: a request for a CA certificate gets a leaf', async () => {
  const dir = await tempDir(cleanup);
  const ca = await createPairCa(dir, 'p1');
  const greedy = await opensslCsr(dir, [
    '[req]', 'distinguished_name = dn', 'prompt = no', 'req_extensions = ext', '[dn]', 'CN = host2',
    '[ext]', 'basicConstraints = critical,CA:TRUE', 'subjectAltName = DNS:bank.example',
  ]);
  const cert = new X509Certificate(await signCsr(ca, greedy, { commonName: 'host2' }));
  assert.equal(cert.ca, false);
  assert.equal(cert.subjectAltName, undefined);
});
