/**
 * The guest image builder: it builds from Debian packages once, reuses its cache, keys the cache on every
 * input, and its boot settings and data disks are what the lab expects. (Booting the image is exercised by
 * record-service.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  GUEST_MODULE_ORDER,
  ensureGuestImage,
  guestImageHash,
  guestKernelCmdline,
  parseKernelDepends,
  resolveGuestImageInputs,
  type GuestImageInputs,
} from '../../src/lab/guest-image.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { isLockstepError } from '../../src/util/errors.js';
import { run } from '../../src/util/exec.js';

async function fileIdentity(file: string): Promise<string> {
  const st = await fs.stat(file);
  return `${st.ino}:${st.size}:${st.mtimeMs}`;
}

test('the image is built once, then served from the cache unchanged', async () => {
  const first = await ensureGuestImage();
  const before = [await fileIdentity(first.kernel), await fileIdentity(first.initrd)];

  const lines: string[] = [];
  const second = await ensureGuestImage({ log: (l) => lines.push(l) });

  assert.deepEqual(second, first);
  assert.deepEqual([await fileIdentity(second.kernel), await fileIdentity(second.initrd)], before);
  assert.deepEqual(lines.filter((l) => /building|downloading/.test(l)), [], 'the second call must not rebuild');
  assert.match(first.kernelPackage, /^linux-image-[\w.+-]+-cloud-amd64=\S+$/);
  assert.ok(path.isAbsolute(first.kernel) && first.kernel.includes(first.hash));
});

test('the image holds a bzImage kernel and a gzipped newc initramfs with everything /init needs', async () => {
  const image = await ensureGuestImage();
  const kernel = await fs.readFile(image.kernel);
  assert.equal(kernel.toString('latin1', 0x202, 0x206), 'HdrS', 'a bzImage carries the x86 boot protocol magic');

  const cpio = gunzipSync(await fs.readFile(image.initrd));
  assert.equal(cpio.toString('latin1', 0, 6), '070701', 'newc cpio magic');
  const listing = (await run('cpio', ['-t', '--quiet'], { input: cpio })).stdout.split('\n');
  const expected = ['init', 'bin/busybox', 'bin/record-service', 'lib/modules/order', ...GUEST_MODULE_ORDER.map((m) => `lib/modules/${m}.ko`)];
  for (const entry of expected) assert.ok(listing.includes(entry), `initramfs lacks ${entry}`);
});

test('the hash matches the image and changes when any input changes', async () => {
  const base = await resolveGuestImageInputs();
  const image = await ensureGuestImage();
  assert.equal(guestImageHash(base), image.hash);
  assert.equal(guestImageHash({ ...base, kernelPackage: { ...base.kernelPackage } }), image.hash, 'same inputs, same hash');

  const variants: Record<string, GuestImageInputs> = {
    builderVersion: { ...base, builderVersion: base.builderVersion + 1 },
    initScript: { ...base, initScript: base.initScript + '\n# changed\n' },
    recordServiceSource: { ...base, recordServiceSource: base.recordServiceSource.replace('7070', '7071') },
    kernelName: { ...base, kernelPackage: { ...base.kernelPackage, name: 'linux-image-6.1.0-99-cloud-amd64' } },
    kernelVersion: { ...base, kernelPackage: { ...base.kernelPackage, version: '6.1.999-1' } },
    busyboxVersion: { ...base, busyboxVersion: base.busyboxVersion + '+x' },
  };
  const hashes = new Set([image.hash]);
  for (const [what, inputs] of Object.entries(variants)) {
    const h = guestImageHash(inputs);
    assert.notEqual(h, image.hash, `changing ${what} must change the hash`);
    hashes.add(h);
  }
  assert.equal(hashes.size, Object.keys(variants).length + 1, 'every variant gets its own hash');
});

test('the kernel package is read from the metapackage Depends line', () => {
  const show = 'Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n';
  assert.deepEqual(parseKernelDepends(show), { name: 'linux-image-6.1.0-56-cloud-amd64', version: '6.1.192-2' });
  assert.equal(parseKernelDepends('Package: x\nVersion: 1\n'), undefined);
});

test('the kernel command line carries the console, panic reset and guest settings', () => {
  const line = guestKernelCmdline({ ip: '10.10.3.50/24', gateway: '10.10.3.1', hostname: 'vm1' });
  assert.equal(line, 'console=ttyS0 quiet panic=-1 lockstep.ip=10.10.3.50/24 lockstep.gw=10.10.3.1 lockstep.hostname=vm1');
  assert.doesNotMatch(guestKernelCmdline({ ip: '10.0.0.2/8', hostname: 'a' }), /lockstep\.gw/);
  // Further NICs are found by their MAC: eth0 is the first's, the others' names are not promised.
  assert.equal(
    guestKernelCmdline({ ip: '10.10.3.50/24', hostname: 'vm1', moreNics: [{ mac: '52:54:00:4c:53:33', ip: '10.10.3.51/24' }, { mac: '52:54:00:4c:53:34', ip: '10.10.4.52/24' }] }),
    'console=ttyS0 quiet panic=-1 lockstep.ip=10.10.3.50/24 lockstep.nic=52:54:00:4c:53:33@10.10.3.51/24 lockstep.nic=52:54:00:4c:53:34@10.10.4.52/24 lockstep.hostname=vm1',
  );

  const bad = [
    { ip: '10.10.3.50', hostname: 'vm1' },
    { ip: '10.10.3.256/24', hostname: 'vm1' },
    { ip: '10.10.3.50/33', hostname: 'vm1' },
    { ip: '10.10.3.50/24', gateway: 'gw', hostname: 'vm1' },
    { ip: '10.10.3.50/24', hostname: 'vm 1' },
    { ip: '10.10.3.50/24', hostname: 'vm1', moreNics: [{ mac: '52:54:00:4C:53:33', ip: '10.10.3.51/24' }] },
    { ip: '10.10.3.50/24', hostname: 'vm1', moreNics: [{ mac: '52:54:00:4c:53:33', ip: '10.10.3.51' }] },
  ];
  for (const opts of bad) assert.throws(() => guestKernelCmdline(opts), (e) => isLockstepError(e, 'INVALID_ARGUMENT'), JSON.stringify(opts));
});

test('a data disk is a new qcow2 file and an existing file is never overwritten', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lockstep-disk-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const disk = path.join(dir, 'data.qcow2');

  await createQcow2(disk, 16);
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', disk])).stdout) as { format: string; 'virtual-size': number };
  assert.equal(info.format, 'qcow2');
  assert.equal(info['virtual-size'], 16 * 1024 * 1024);

  const before = await fileIdentity(disk);
  await assert.rejects(createQcow2(disk, 32), (e) => isLockstepError(e, 'DISK_EXISTS'));
  assert.equal(await fileIdentity(disk), before, 'the existing disk is untouched');
  await assert.rejects(createQcow2(path.join(dir, 'zero.qcow2'), 0), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});
