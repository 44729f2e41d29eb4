// The backup host's export of its copy of a VM disk: a real qemu-nbd on a unix socket, written to and read
// by qemu-io; its refusals (the image locked, missing, the socket path taken); stop; and the promise that a
// SIGKILLed daemon leaves no qemu-nbd behind.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CopyExport } from '../../src/storage/copy-export.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { isLockstepError } from '../../src/util/errors.js';
import { waitGone } from '../../src/util/proc.js';
import { Cleanup, ioOk, nbdUri, qemuIo, tempDir } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Every test is bounded, so a hang fails it and its cleanup still runs. */
const BOUND = { timeout: 15_000 };

async function freshCopy(): Promise<{ dir: string; image: string; socketPath: string }> {
  const dir = await tempDir(cleanup);
  const image = path.join(dir, 'web.qcow2');
  await createQcow2(image, 16);
  return { dir, image, socketPath: path.join(dir, 'web.sock') };
}

async function startExport(image: string, socketPath: string, vm = 'web'): Promise<CopyExport> {
  const exp = await CopyExport.start({ vm, disk: image, format: 'qcow2', socketPath });
  cleanup.add(() => exp.stop());
  return exp;
}

test('writes through the export reach the image; stop removes the socket; the image holds them', BOUND, async () => {
  const { image, socketPath } = await freshCopy();
  const exp = await startExport(image, socketPath);
  assert.ok(existsSync(socketPath));

  const w = await qemuIo('raw', nbdUri('web', socketPath), ['write -P 0x5a 0 1M']);
  assert.ok(ioOk(w), w.stdout + w.stderr);

  const exit = await exp.stop();
  assert.equal(exit.code, 0, exit.stderrTail);
  assert.equal(existsSync(socketPath), false, 'socket removed');
  // The probe at start leaves politely: qemu-nbd has nothing to complain about.
  assert.equal(exit.stderrTail.trim(), '');

  const r = await qemuIo('qcow2', image, ['read -P 0x5a 0 1M', 'read -P 0 1M 1M'], { readOnly: true });
  assert.ok(ioOk(r), r.stdout + r.stderr);
});

test('persistent: clients one after the other are all served', BOUND, async () => {
  const { image, socketPath } = await freshCopy();
  await startExport(image, socketPath);
  const uri = nbdUri('web', socketPath);
  const first = await qemuIo('raw', uri, ['write -P 0x11 0 64k']);
  assert.ok(ioOk(first), first.stdout + first.stderr);
  const second = await qemuIo('raw', uri, ['read -P 0x11 0 64k', 'write -P 0x22 64k 64k']);
  assert.ok(ioOk(second), second.stdout + second.stderr);
  const third = await qemuIo('raw', uri, ['read -P 0x22 64k 64k']);
  assert.ok(ioOk(third), third.stdout + third.stderr);
});

test('a second export of the same image fails with COPY_EXPORT naming the lock, and the first keeps serving', BOUND, async () => {
  const { dir, image, socketPath } = await freshCopy();
  await startExport(image, socketPath);
  const other = path.join(dir, 'other.sock');
  await assert.rejects(CopyExport.start({ vm: 'web', disk: image, format: 'qcow2', socketPath: other }), (e) => {
    assert.ok(isLockstepError(e, 'COPY_EXPORT'), String(e));
    assert.match(e.message, /lock/);
    assert.match(e.message, /web\.qcow2/);
    return true;
  });
  assert.equal(existsSync(other), false, 'the failed export left no socket');
  const r = await qemuIo('raw', nbdUri('web', socketPath), ['write -P 0x33 0 4k', 'read -P 0x33 0 4k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);
});

test('the socket path of a live export is refused before qemu-nbd could unlink it; so is a path that is not a socket', BOUND, async () => {
  const { dir, image, socketPath } = await freshCopy();
  await startExport(image, socketPath);
  const image2 = path.join(dir, 'db.qcow2');
  await createQcow2(image2, 16);
  await assert.rejects(CopyExport.start({ vm: 'db', disk: image2, format: 'qcow2', socketPath }), (e) => {
    assert.ok(isLockstepError(e, 'COPY_EXPORT'), String(e));
    assert.match(e.message, /listening there already/);
    return true;
  });
  const r = await qemuIo('raw', nbdUri('web', socketPath), ['write -P 0x44 0 4k']);
  assert.ok(ioOk(r), r.stdout + r.stderr);

  const notSocket = path.join(dir, 'notes.txt');
  await writeFile(notSocket, 'keep me');
  await assert.rejects(CopyExport.start({ vm: 'db', disk: image2, format: 'qcow2', socketPath: notSocket }), /not a socket/);
  assert.equal(await readFile(notSocket, 'utf8'), 'keep me');
});

test('a missing image fails clearly, with no process or socket left', BOUND, async () => {
  const dir = await tempDir(cleanup);
  const socketPath = path.join(dir, 'web.sock');
  await assert.rejects(CopyExport.start({ vm: 'web', disk: path.join(dir, 'nope.qcow2'), format: 'qcow2', socketPath }), (e) => {
    assert.ok(isLockstepError(e, 'COPY_EXPORT'), String(e));
    assert.match(e.message, /nope\.qcow2.*No such file or directory/s);
    return true;
  });
  assert.equal(existsSync(socketPath), false);
});

test('stop is idempotent; exited resolves once the socket is gone', BOUND, async () => {
  const { image, socketPath } = await freshCopy();
  const exp = await startExport(image, socketPath);
  const a = exp.stop();
  const b = exp.stop();
  assert.equal(a, b);
  const exit = await a;
  assert.deepEqual(await exp.stop(), exit);
  assert.deepEqual(await exp.exited, exit);
  assert.equal(existsSync(socketPath), false);
  // The image lock is free again: a new export starts on it.
  const again = await startExport(image, socketPath);
  await again.stop();
});

test('an export that dies is reported by exited, and its socket file is removed', BOUND, async () => {
  const { image, socketPath } = await freshCopy();
  const exp = await startExport(image, socketPath);
  process.kill(exp.pid, 'SIGKILL');
  const exit = await exp.exited;
  assert.equal(exit.signal, 'SIGKILL');
  assert.equal(existsSync(socketPath), false);
});

test('a SIGKILLed daemon leaves no qemu-nbd behind (parent-death signal)', BOUND, async () => {
  const { image, socketPath } = await freshCopy();
  const moduleUrl = new URL('../../src/storage/copy-export.js', import.meta.url).href;
  const script = `
    const { CopyExport } = await import(${JSON.stringify(moduleUrl)});
    const exp = await CopyExport.start({ vm: 'web', disk: ${JSON.stringify(image)}, format: 'qcow2', socketPath: ${JSON.stringify(socketPath)} });
    console.log(exp.pid);
    setInterval(() => {}, 1000);
  `;
  const daemon = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const daemonExit = new Promise((resolve) => daemon.on('close', resolve));
  cleanup.add(async () => {
    daemon.kill('SIGKILL');
    await daemonExit;
  });
  const pid = await new Promise<number>((resolve, reject) => {
    daemon.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim())));
    daemon.once('close', () => reject(new Error('the stand-in daemon exited before starting the export')));
  });
  assert.ok(Number.isInteger(pid) && pid > 0);
  daemon.kill('SIGKILL');
  assert.ok(await waitGone(pid, 5000), `qemu-nbd ${pid} outlived its daemon`);
  // No writer is left on the copy: the image lock is free for the next daemon.
  const next = await startExport(image, path.join(path.dirname(socketPath), 'next.sock'));
  await next.stop();
});
