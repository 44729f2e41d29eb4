// The `managementApi` section of lockstepd's config, and the management API's certificate made once.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { parseDaemonConfig } from '../../src/daemon/config.js';
import { loadManagementTls, managementTlsDir } from '../../src/api/management-tls.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const minimal = {
  host: 'host1',
  dataDir: '/var/lib/lockstep',
  pair: { id: 'lab', peer: 'host2', secret: 'a-long-enough-secret' },
  alink: [{ name: 'alink1', local: '10.10.1.1', peer: '10.10.1.2', port: 7788, broadcast: '10.10.1.255' }],
};

test('no managementApi section: not served', () => {
  assert.equal(parseDaemonConfig(minimal).managementApi, null);
  assert.equal(parseDaemonConfig({ ...minimal, managementApi: null }).managementApi, null);
});

test('defaults: port 7443, a self-signed certificate, 30 min idle and 12 h sessions', () => {
  assert.deepEqual(parseDaemonConfig({ ...minimal, managementApi: { address: '10.10.0.11' } }).managementApi, {
    address: '10.10.0.11', port: 7443, certFile: null, keyFile: null, sessionIdleMs: 30 * 60_000, sessionMaxMs: 12 * 3600_000, metricsToken: null,
  });
  const token = 'a'.repeat(64);
  const full = parseDaemonConfig({ ...minimal, managementApi: { address: '::', port: 8443, certFile: '/etc/l/c.pem', keyFile: '/etc/l/k.pem', sessionIdleMinutes: 5, sessionMaxHours: 1, metricsToken: token } }).managementApi;
  assert.deepEqual(full, { address: '::', port: 8443, certFile: '/etc/l/c.pem', keyFile: '/etc/l/k.pem', sessionIdleMs: 300_000, sessionMaxMs: 3600_000, metricsToken: token });
});

for (const [what, api, key] of [
  ['a section that is not an object', 'yes', 'managementApi'],
  ['no address', {}, 'managementApi.address'],
  ['a host name for an address', { address: 'host1' }, 'managementApi.address'],
  ['a port out of range', { address: '10.0.0.1', port: 0 }, 'managementApi.port'],
  ['a relative certificate path', { address: '10.0.0.1', certFile: 'c.pem', keyFile: '/k.pem' }, 'managementApi.certFile'],
  ['a certificate without its key', { address: '10.0.0.1', certFile: '/c.pem' }, 'managementApi.keyFile'],
  ['an idle limit longer than the session', { address: '10.0.0.1', sessionIdleMinutes: 120, sessionMaxHours: 1 }, 'managementApi.sessionIdleMinutes'],
  ['an unknown field', { address: '10.0.0.1', prot: 1 }, 'managementApi.prot'],
  ['a metrics token too short to be a secret', { address: '10.0.0.1', metricsToken: 'short-token' }, 'managementApi.metricsToken'],
  ['a metrics token with characters a bearer has not', { address: '10.0.0.1', metricsToken: `${'a'.repeat(40)} b` }, 'managementApi.metricsToken'],
] as const) {
  test(`rejects ${what}, naming '${key}'`, () => {
    assert.throws(() => parseDaemonConfig({ ...minimal, managementApi: api }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['key'] === key);
  });
}

test('without a configured certificate one is made once, self-signed, and kept; a configured one is used as is', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-mgmt-tls-test-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const first = await loadManagementTls({ dataDir: dir, host: 'host1', address: '10.10.0.11', certFile: null, keyFile: null });
  assert.equal(first.selfSigned, true);
  assert.equal(path.dirname(first.certFile), managementTlsDir(dir));
  const cert = new X509Certificate(first.cert);
  assert.equal(cert.subject, 'CN=lockstepd host1');
  assert.equal(cert.issuer, cert.subject, 'self-signed');
  assert.ok(cert.verify(cert.publicKey));
  assert.match(cert.subjectAltName ?? '', /DNS:host1/);
  assert.match(cert.subjectAltName ?? '', /IP Address:10\.10\.0\.11/);
  const again = await loadManagementTls({ dataDir: dir, host: 'host1', address: '10.10.0.11', certFile: null, keyFile: null });
  assert.deepEqual(again.cert, first.cert, 'kept, not made again');
  const given = await loadManagementTls({ dataDir: '/nonexistent', host: 'host1', address: '10.10.0.11', certFile: first.certFile, keyFile: first.keyFile });
  assert.equal(given.selfSigned, false);
  const other = path.join(dir, 'other');
  const { createSelfSignedCert } = await import('../../src/pki/pki.js');
  const otherFiles = await createSelfSignedCert(other, { commonName: 'other' }).catch(async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(other, { recursive: true });
    return createSelfSignedCert(other, { commonName: 'other' });
  });
  await assert.rejects(
    loadManagementTls({ dataDir: dir, host: 'host1', address: '10.10.0.11', certFile: first.certFile, keyFile: otherFiles.key }),
    (e) => isLockstepError(e, 'MANAGEMENT_TLS'),
  );
  await assert.rejects(loadManagementTls({ dataDir: dir, host: 'host1', address: '1.2.3.4', certFile: '/nonexistent/c', keyFile: '/nonexistent/k' }), (e) => isLockstepError(e, 'MANAGEMENT_TLS'));
  assert.ok((await readFile(first.keyFile, 'utf8')).includes('PRIVATE KEY'));
});
