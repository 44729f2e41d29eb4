/**
 * Virtual CDs through the API, on the local socket (the CLI's client, streaming a file) and the management
 * API alike: an ISO made by genisoimage uploaded, listed with its SHA-256 and deleted; refusals before a
 * byte is kept (a name taken, not an ISO, too big for its group, over the limit, no length, the wrong media
 * type, the wrong role); an upload cut off half-way leaves nothing; the group's usage counts the image.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import https from 'node:https';
import net from 'node:net';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, startHarness, type Answer, type Harness } from './harness.js';
import { startApiServer } from '../../src/daemon/api.js';
import { daemonRequest, daemonUpload } from '../../src/daemon/api-client.js';
import { managementOpenApi } from '../../src/api/management-server.js';
import { isLockstepError } from '../../src/util/errors.js';
import { makeIso } from '../support/iso.js';
import { VCD_BYTES_MAX } from '../../src/storage/vcd.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const OCTETS = 'application/octet-stream';

interface Vcd {
  name: string;
  host: string;
  storageGroup: string;
  bytes: number;
  sha256: string;
  created: string;
  path: string;
}

/** host1 with the groups `default` and `tiny` (1 MiB), its socket, and a directory for images. */
async function lone(): Promise<{ h: Harness; socket: string; images: string }> {
  const h = await startHarness(cleanup, {
    storageGroups: (dir) => [
      { name: 'default', path: path.join(dir, 'disks') },
      { name: 'tiny', path: path.join(dir, 'tiny'), sizeMiB: 1 },
    ],
  });
  const socket = path.join(h.dir, 'run', 'lockstepd.sock');
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const images = path.join(h.dir, 'images');
  await mkdir(images);
  return { h, socket, images };
}

async function refused(p: Promise<unknown>, code: string, status: number): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(isLockstepError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.fields['status'], status, e.message);
    return true;
  });
}

function expectError(r: Answer, status: number, code: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.equal(r.body?.error?.code, code, r.text);
}

/** What is in the group's VCD directory: no temporary file may outlive its upload. */
async function vcdFiles(h: Harness, group = 'disks'): Promise<string[]> {
  return (await readdir(path.join(h.dir, group, 'vcds')).catch(() => [] as string[])).sort();
}

test('an ISO streamed to the socket is stored whole with its SHA-256, listed, and deleted', async () => {
  const { h, socket, images } = await lone();
  const iso = await makeIso(images, 'tools', 200_000);
  const bytes = await readFile(iso);
  const stored = await daemonUpload<Vcd>(socket, '/v1/vcds/tools-1.0', iso, OCTETS);
  assert.deepEqual(
    [stored.name, stored.host, stored.storageGroup, stored.bytes, stored.sha256, stored.path],
    ['tools-1.0', 'host1', 'default', bytes.length, createHash('sha256').update(bytes).digest('hex'), path.join(h.dir, 'disks', 'vcds', 'tools-1.0.iso')],
  );
  assert.ok(Math.abs(Date.parse(stored.created) - Date.now()) < 60_000, stored.created);
  assert.deepEqual(await readFile(stored.path), bytes, 'the image is the bytes sent');
  assert.deepEqual(await vcdFiles(h), ['tools-1.0.iso', 'tools-1.0.json']);
  assert.deepEqual(await daemonRequest<Vcd[]>(socket, 'GET', '/v1/vcds'), [stored]);
  assert.deepEqual(await daemonRequest<Vcd>(socket, 'GET', '/v1/vcds/tools-1.0'), stored);

  // The image takes its group's space as a volume does.
  const group = await daemonRequest<{ usedBytes: number }>(socket, 'GET', '/v1/storage-groups/default');
  assert.ok(group.usedBytes >= bytes.length, JSON.stringify(group));

  // A name is never overwritten.
  await refused(daemonUpload(socket, '/v1/vcds/tools-1.0', iso, OCTETS), 'VCD_EXISTS', 409);
  assert.deepEqual(await readFile(stored.path), bytes);

  await daemonRequest(socket, 'DELETE', '/v1/vcds/tools-1.0');
  assert.deepEqual(await daemonRequest(socket, 'GET', '/v1/vcds'), []);
  assert.deepEqual(await vcdFiles(h), []);
  await refused(daemonRequest(socket, 'GET', '/v1/vcds/tools-1.0'), 'UNKNOWN_VCD', 404);
  await refused(daemonRequest(socket, 'DELETE', '/v1/vcds/tools-1.0'), 'UNKNOWN_VCD', 404);

  // Each change audited as root's, named by the VCD.
  const entries = h.audit.query({ limit: 10, kind: 'user' }).entries;
  assert.deepEqual(
    entries.map((e) => [e.operation, e.target, e.result, e.user]).reverse(),
    [
      ['uploadVcd', 'tools-1.0', 'ok', 'root@host1'],
      ['uploadVcd', 'tools-1.0', 'failed', 'root@host1'],
      ['deleteVcd', 'tools-1.0', 'ok', 'root@host1'],
      ['deleteVcd', 'tools-1.0', 'failed', 'root@host1'],
    ],
  );
});

test('what is not an ISO, does not fit, or has a bad name is refused and leaves nothing', async () => {
  const { h, socket, images } = await lone();
  // A disk image's worth of bytes: long enough to be checked, no CD001 where ISO 9660 puts it.
  const notIso = path.join(images, 'disk.img');
  await writeFile(notIso, randomBytes(256 * 1024));
  await refused(daemonUpload(socket, '/v1/vcds/disk', notIso, OCTETS), 'VCD_NOT_ISO', 400);
  const short = path.join(images, 'short.iso');
  await writeFile(short, randomBytes(1000));
  await refused(daemonUpload(socket, '/v1/vcds/short', short, OCTETS), 'VCD_NOT_ISO', 400);
  assert.deepEqual(await vcdFiles(h), [], 'no temporary file left behind');

  // The tiny group is capped at 1 MiB: a 2 MiB image is refused before it is stored.
  const big = await makeIso(images, 'big', 2 * 1024 * 1024);
  await refused(daemonUpload(socket, '/v1/vcds/big?storageGroup=tiny', big, OCTETS), 'STORAGE_GROUP_FULL', 409);
  assert.deepEqual(await vcdFiles(h, 'tiny'), []);
  await refused(daemonUpload(socket, '/v1/vcds/big?storageGroup=nowhere', big, OCTETS), 'UNKNOWN_STORAGE_GROUP', 404);
  await refused(daemonUpload(socket, '/v1/vcds/Big', big, OCTETS), 'INVALID_ARGUMENT', 400);
  await refused(daemonUpload(socket, '/v1/vcds/x%2F..%2Fy', big, OCTETS), 'INVALID_ARGUMENT', 400);
  // The connection the refusals closed did not take the socket with it.
  assert.equal((await daemonUpload<Vcd>(socket, '/v1/vcds/big', big, OCTETS)).name, 'big');
});

test('a refused upload is answered once its body is in, on a connection kept; one whose body keeps coming, with a close', async () => {
  const { socket } = await lone();
  const conn = net.connect(socket);
  cleanup.add(() => conn.destroy());
  const errors: Error[] = [];
  conn.on('error', (e) => errors.push(e));
  let received = '';
  const until = (pattern: RegExp): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (pattern.test(received)) {
          conn.off('data', onData);
          resolve();
        }
      };
      const onData = (d: Buffer): void => {
        received += d.toString('latin1');
        check();
      };
      conn.on('data', onData);
      check();
    });
  const closed = new Promise<void>((resolve) => conn.once('close', () => resolve()));
  const put = (name: string, declared: number): string => `PUT /v1/vcds/${name} HTTP/1.1\r\nHost: lockstepd\r\nContent-Type: ${OCTETS}\r\nContent-Length: ${declared}\r\n\r\n`;

  // The whole body sent (no ISO in its head): the refusal, and the same connection answers the next request.
  conn.write(put('whole', 256 * 1024));
  conn.write(Buffer.alloc(256 * 1024));
  await until(/VCD_NOT_ISO/);
  assert.match(received, /^HTTP\/1\.1 400 /);
  assert.doesNotMatch(received, /connection: close/i);
  received = '';
  conn.write('GET /v1/vcds HTTP/1.1\r\nHost: lockstepd\r\n\r\n');
  await until(/\r\n\r\n\[/);
  assert.match(received, /^HTTP\/1\.1 200 /);

  // 4 MiB declared, 64 KiB sent: enough for its head to be refused, far from the whole body. It is answered
  // with a close, and no write of the client's failed before that answer was in.
  received = '';
  conn.write(put('partial', 4 * 1024 * 1024));
  conn.write(Buffer.alloc(64 * 1024));
  await until(/VCD_NOT_ISO/);
  assert.match(received, /^HTTP\/1\.1 400 /);
  assert.match(received, /connection: close/i);
  assert.deepEqual(errors, [], 'no write failed before the answer was read');
  // The bound is a check that the close comes at all, not a measure of its delay.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closed, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the refused upload\'s connection was not closed within 30 s')), 30_000)))]);
  clearTimeout(timer);
});

test('the management API takes an upload from a platform manager, as raw bytes with a length', async () => {
  const { h, images } = await lone();
  const admin = (await h.request('POST', '/api/v1/setup', { body: ADMIN }), await h.login(ADMIN.name, ADMIN.password));
  await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'rita', password: 'rita-password-1', groups: ['read-only'] } });
  const reader = await h.login('rita', 'rita-password-1');
  const iso = await readFile(await makeIso(images, 'rescue'));
  const put = (token: string, headers: Record<string, string> = { 'content-type': OCTETS }, raw: Buffer | null = iso): Promise<Answer> =>
    h.request('PUT', '/api/v1/vcds/rescue', { token, headers, ...(raw ? { raw } : {}) });

  expectError(await put(reader), 403, 'FORBIDDEN');
  expectError(await put(admin, { 'content-type': 'application/json' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
  expectError(await put(admin, { 'content-type': OCTETS, 'content-length': String(VCD_BYTES_MAX + 1) }, null), 413, 'PAYLOAD_TOO_LARGE');
  expectError(await chunked(h, admin, iso), 400, 'INVALID_ARGUMENT');
  const made = await put(admin);
  assert.equal(made.status, 201, made.text);
  assert.equal(made.body.sha256, createHash('sha256').update(iso).digest('hex'));
  const listed = await h.request('GET', '/api/v1/vcds', { token: reader });
  assert.deepEqual(listed.body.map((v: Vcd) => [v.name, v.bytes]), [['rescue', iso.length]]);
  expectError(await h.request('DELETE', '/api/v1/vcds/rescue', { token: reader }), 403, 'FORBIDDEN');
  assert.equal((await h.request('DELETE', '/api/v1/vcds/rescue', { token: admin })).status, 204);
  const audited = (await h.request('GET', '/api/v1/audit?kind=user&user=admin', { token: admin })).body.entries.map((e: { operation: string; result: string; status: number }) => `${e.operation} ${e.result} ${e.status}`);
  assert.deepEqual(audited.slice(0, 5).reverse(), ['uploadVcd failed 415', 'uploadVcd failed 413', 'uploadVcd failed 400', 'uploadVcd ok 201', 'deleteVcd ok 204']);
});

test('an upload cut off half-way keeps nothing, and frees its name', async () => {
  const { h, images } = await lone();
  const token = (await h.request('POST', '/api/v1/setup', { body: ADMIN }), await h.login(ADMIN.name, ADMIN.password));
  const iso = await readFile(await makeIso(images, 'half', 512 * 1024));
  await new Promise<void>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: h.port, method: 'PUT', path: '/api/v1/vcds/half', ca: h.ca, headers: { authorization: `Bearer ${token}`, 'content-type': OCTETS, 'content-length': iso.length } });
    req.on('error', () => resolve());
    req.on('response', () => reject(new Error('a cut-off upload was answered')));
    req.write(iso.subarray(0, iso.length / 2), () => setTimeout(() => req.destroy(), 200));
  });
  // The server notices the cut and cleans up on its own time.
  for (let i = 0; i < 50 && (await vcdFiles(h)).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(await vcdFiles(h), []);
  const again = await h.request('PUT', '/api/v1/vcds/half', { token, headers: { 'content-type': OCTETS }, raw: iso });
  assert.equal(again.status, 201, again.text);
  const cut = (await h.request('GET', '/api/v1/audit?kind=user&user=admin', { token })).body.entries.find((e: { operation: string; status: number }) => e.operation === 'uploadVcd' && e.status === 400);
  assert.equal(cut?.code, 'VCD_UPLOAD', 'the cut-off upload is audited as such');
});

test('the OpenAPI document describes the upload as raw bytes with its limit and role', () => {
  const doc = managementOpenApi() as { paths: Record<string, Record<string, any>> };
  const put = doc.paths['/api/v1/vcds/{name}']!['put'];
  assert.equal(put['x-lockstep-access'], 'platform-manager');
  assert.deepEqual(Object.keys(put.requestBody.content), [OCTETS]);
  assert.equal(put.requestBody.content[OCTETS].schema.maxLength, VCD_BYTES_MAX);
  for (const status of ['400', '404', '409', '413', '415']) assert.ok(put.responses[status], `documents ${status}`);
  assert.equal(doc.paths['/api/v1/vcds']!['get']['x-lockstep-access'], 'read-only');
  assert.equal(doc.paths['/api/v1/vcds/{name}']!['delete']['x-lockstep-access'], 'platform-manager');
});

/** A PUT without a Content-Length: the body sent chunked. */
function chunked(h: Harness, token: string, body: Buffer): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: h.port, method: 'PUT', path: '/api/v1/vcds/rescue', ca: h.ca, headers: { authorization: `Bearer ${token}`, 'content-type': OCTETS, 'transfer-encoding': 'chunked' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const bytes = Buffer.concat(chunks);
        const text = bytes.toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(text), text, bytes });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the temporary file of an upload a crash cut off is swept at start, and only that', async () => {
  const { h, socket, images } = await lone();
  await daemonUpload<Vcd>(socket, '/v1/vcds/kept', await makeIso(images, 'kept'), OCTETS);
  await writeFile(path.join(h.dir, 'disks', 'vcds', '.cut.0123456789ab.part'), randomBytes(4096));
  assert.deepEqual(await h.api.vcds.sweepLeftovers(), [path.join(h.dir, 'disks', 'vcds', '.cut.0123456789ab.part')]);
  assert.deepEqual(await vcdFiles(h), ['kept.iso', 'kept.json']);
});
