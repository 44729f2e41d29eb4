import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_DISK, hardwareOf, parseVmDefinition, parseVmHardware } from '../../src/daemon/vm-definition.js';
import { tapName } from '../../src/daemon/vm-runner.js';
import { isLockstepError } from '../../src/util/errors.js';

const good = {
  name: 'demo',
  vcpus: 1,
  memoryMiB: 256,
  guest: { kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' },
  diskMiB: 64,
  nic: { mac: '52:54:00:4C:53:32', address: '10.10.3.50' },
  protection: 'none',
  desired: 'running',
};

test('a valid definition parses, MAC normalised to lower case', () => {
  const def = parseVmDefinition(good);
  assert.equal(def.nic.mac, '52:54:00:4c:53:32');
  assert.equal(def.memoryMiB, 256);
});

for (const [what, patch, field] of [
  ['bad name', { name: 'Demo!' }, 'name'],
  ['multicast MAC', { nic: { mac: '01:00:5e:00:00:01', address: '10.0.0.1' } }, 'nic.mac'],
  ['bad address', { nic: { mac: '52:54:00:00:00:01', address: '10.0.0.300' } }, 'nic.address'],
  ['relative kernel path', { guest: { kernel: 'k', initrd: '/i', cmdline: 'x' } }, 'guest.kernel'],
  ['zero vCPUs', { vcpus: 0 }, 'vcpus'],
  ['fractional memory', { memoryMiB: 100.5 }, 'memoryMiB'],
  ['unknown protection', { protection: 'gold' }, 'protection'],
] as const) {
  test(`rejects ${what}, naming the field`, () => {
    assert.throws(
      () => parseVmDefinition({ ...good, ...patch }),
      (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === field,
    );
  });
}

test('rejects what is not an object at all', () => {
  for (const bad of [null, 42, 'demo', []]) assert.throws(() => parseVmDefinition(bad), (e) => isLockstepError(e, 'INVALID_SPEC'));
});

test('tap names fit in 15 bytes and stay unique for long VM names', () => {
  assert.equal(tapName('demo'), 't-demo');
  const a = tapName('accounting-database-primary');
  const b = tapName('accounting-database-replica');
  assert.ok(a.length <= 15 && b.length <= 15);
  assert.notEqual(a, b);
});

test('a definition without disk gets the default group and qcow2; hardwareOf carries the disk to the peer', () => {
  const def = parseVmDefinition(good);
  assert.deepEqual(def.disk, { storageGroup: 'default', format: 'qcow2' });
  assert.deepEqual(hardwareOf(def).disk, def.disk);
  const raw = parseVmDefinition({ ...good, disk: { storageGroup: 'fast-ssd', format: 'raw' } });
  assert.deepEqual(raw.disk, { storageGroup: 'fast-ssd', format: 'raw' });
  assert.deepEqual(parseVmDefinition({ ...good, disk: { format: 'raw' } }).disk, { storageGroup: 'default', format: 'raw' });
});

test('a hardware record made before storage groups (no disk field) parses to the defaults', () => {
  // Replicated records carry the hardware as it was defined: old ones have no `disk`, and must still run.
  const { name: _n, protection: _p, desired: _d, ...oldHardware } = good;
  const hw = parseVmHardware(oldHardware);
  assert.deepEqual(hw.disk, DEFAULT_DISK);
  assert.equal(hw.diskMiB, 64);
});

for (const [what, disk, field] of [
  ['a bad group name', { storageGroup: 'Fast!' }, 'disk.storageGroup'],
  ['an unknown format', { format: 'vmdk' }, 'disk.format'],
  ['a disk that is not an object', 'raw', 'disk'],
] as const) {
  test(`rejects ${what}, naming the field`, () => {
    assert.throws(() => parseVmDefinition({ ...good, disk }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === field);
  });
}
