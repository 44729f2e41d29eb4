import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_DISK_PLACE, diskId, hardwareOf, hardwareRecord, nicInUse, parseVmDefinition, parseVmHardware, protectionProblem, volumeName } from '../../src/daemon/vm-definition.js';
import { tapName, vmNics } from '../../src/daemon/vm-nics.js';
import { isLockstepError } from '../../src/util/errors.js';

const good = {
  name: 'demo',
  vcpus: 1,
  memoryMiB: 256,
  guest: { kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' },
  diskMiB: 64,
  nics: [{ mac: '52:54:00:4C:53:32', address: '10.10.3.50' }],
  protection: 'none',
  desired: 'running',
};

test('a valid definition parses, MAC normalised to lower case', () => {
  const def = parseVmDefinition(good);
  assert.deepEqual(def.nics, [{ mac: '52:54:00:4c:53:32', address: '10.10.3.50' }]);
  assert.equal(def.memoryMiB, 256);
});

for (const [what, patch, field] of [
  ['bad name', { name: 'Demo!' }, 'name'],
  ['multicast MAC', { nics: [{ mac: '01:00:5e:00:00:01', address: '10.0.0.1' }] }, 'nics[0].mac'],
  ['bad address', { nics: [{ mac: '52:54:00:00:00:01', address: '10.0.0.300' }] }, 'nics[0].address'],
  ['a bad second NIC', { nics: [{ mac: '52:54:00:00:00:01', address: '10.0.0.1' }, { mac: '52:54:00:00:00:02' }] }, 'nics[1].address'],
  ['no NIC at all', { nics: [] }, 'nics'],
  ['five NICs', { nics: [1, 2, 3, 4, 5].map((i) => ({ mac: `52:54:00:00:00:0${i}`, address: `10.0.0.${i}` })) }, 'nics'],
  ['nics that is not a list', { nics: { mac: '52:54:00:00:00:01', address: '10.0.0.1' } }, 'nics'],
  ['one MAC twice (in any case)', { nics: [{ mac: '52:54:00:00:00:0a', address: '10.0.0.1' }, { mac: '52:54:00:00:00:0A', address: '10.0.0.2' }] }, 'nics[1].mac'],
  ['one address twice', { nics: [{ mac: '52:54:00:00:00:01', address: '10.0.0.1' }, { mac: '52:54:00:00:00:02', address: '10.0.0.1' }] }, 'nics[1].address'],
  ['a legacy nic that is not the one of nics', { nic: { mac: '52:54:00:00:00:09', address: '10.0.0.9' } }, 'nic'],
  ['a legacy bad nic', { nics: undefined, nic: { mac: 'nonsense', address: '10.0.0.1' } }, 'nic.mac'],
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

test('tap names fit in 15 bytes and stay unique for long VM names and every NIC', () => {
  assert.equal(tapName('demo'), 't-demo');
  assert.equal(tapName('demo', 3), 't-demo.3');
  const longest = 'a'.repeat(31);
  const names = ['accounting-database-primary', 'accounting-database-replica', longest, 'abcdefghijklm', 'abcdefghijklmn'].flatMap((vm) => [0, 1, 2, 3].map((i) => tapName(vm, i)));
  for (const n of names) assert.ok(Buffer.byteLength(n) <= 15, `${n} fits IFNAMSIZ`);
  assert.equal(new Set(names).size, names.length, 'all distinct');
});

test("a VM's NICs become QEMU NICs in order: net0 on the VM's first tap, as with one NIC", () => {
  const def = parseVmDefinition({ ...good, nics: [{ mac: '52:54:00:00:00:01', address: '10.0.0.1' }, { mac: '52:54:00:00:00:02', address: '10.0.0.2' }] });
  assert.deepEqual(vmNics(def.name, def.nics), [
    { id: 'net0', mac: '52:54:00:00:00:01', tap: 't-demo' },
    { id: 'net1', mac: '52:54:00:00:00:02', tap: 't-demo.1' },
  ]);
});

test('a record from before several NICs (only nic) reads as one NIC; a one-NIC record is written with both', () => {
  const { nics: _n, ...legacy } = good;
  const old = parseVmDefinition({ ...legacy, nic: { mac: '52:54:00:4C:53:32', address: '10.10.3.50' } });
  assert.deepEqual(old.nics, [{ mac: '52:54:00:4c:53:32', address: '10.10.3.50' }]);
  // What an older peer reads: a one-NIC VM keeps its nic, so it runs there during a rolling upgrade.
  const one = hardwareRecord(hardwareOf(old));
  assert.deepEqual(one.nic, { mac: '52:54:00:4c:53:32', address: '10.10.3.50' });
  assert.deepEqual(parseVmHardware(one).nics, old.nics, 'and this version reads its own record back');
  // A VM with more NICs has none: an older peer refuses it (vm.nic) instead of running it with one NIC.
  const two = parseVmDefinition({ ...good, nics: [{ mac: '52:54:00:00:00:01', address: '10.0.0.1' }, { mac: '52:54:00:00:00:02', address: '10.0.0.2' }] });
  const record = hardwareRecord(hardwareOf(two));
  assert.equal('nic' in record, false);
  assert.deepEqual(parseVmHardware(JSON.parse(JSON.stringify(record))).nics, two.nics, 'replicated as JSON, read back whole');
});

test("a NIC whose MAC or address another of the pair's VMs has is NIC_IN_USE, naming both", () => {
  const other = { name: 'other', hardware: hardwareRecord(hardwareOf(parseVmDefinition({ ...good, name: 'other', nics: [{ mac: '52:54:00:00:00:07', address: '10.0.0.7' }, { mac: '52:54:00:00:00:08', address: '10.0.0.8' }] }))) };
  const legacy = { name: 'old', hardware: { nic: { mac: '52:54:00:00:00:09', address: '10.0.0.9' } } };
  const unreadable = { name: 'newer', hardware: { from: 'a newer peer' } };
  const mine = (nics: { mac: string; address: string }[]) => parseVmDefinition({ ...good, nics });
  assert.equal(nicInUse(mine([{ mac: '52:54:00:00:00:01', address: '10.0.0.1' }]), [other, legacy, unreadable]), null);
  const byMac = nicInUse(mine([{ mac: '52:54:00:00:00:01', address: '10.0.0.1' }, { mac: '52:54:00:00:00:08', address: '10.0.0.2' }]), [other]);
  assert.ok(byMac && byMac.code === 'NIC_IN_USE');
  assert.deepEqual([byMac.fields['field'], byMac.fields['vm']], ['nics[1].mac', 'other']);
  const byAddress = nicInUse(mine([{ mac: '52:54:00:00:00:01', address: '10.0.0.9' }]), [other, { ...legacy, hardware: { ...good, ...legacy.hardware, nics: undefined } }]);
  assert.deepEqual([byAddress?.code, byAddress?.fields['field'], byAddress?.fields['vm']], ['NIC_IN_USE', 'nics[0].address', 'old']);
  // Its own name is not another VM (defining it again is the core's refusal).
  assert.equal(nicInUse(mine([{ mac: '52:54:00:00:00:07', address: '10.0.0.7' }]), [{ ...other, name: 'demo' }]), null);
});

test('a definition without disk gets the default group and qcow2; hardwareOf carries the disk to the peer', () => {
  const def = parseVmDefinition(good);
  assert.deepEqual(def.disks, [{ sizeMiB: 64, ...DEFAULT_DISK_PLACE }]);
  assert.deepEqual(hardwareOf(def).disks, def.disks);
  const raw = parseVmDefinition({ ...good, disk: { storageGroup: 'fast-ssd', format: 'raw' } });
  assert.deepEqual(raw.disks, [{ sizeMiB: 64, storageGroup: 'fast-ssd', format: 'raw' }]);
  assert.deepEqual(parseVmDefinition({ ...good, disk: { format: 'raw' } }).disks, [{ sizeMiB: 64, storageGroup: 'default', format: 'raw' }]);
});

test('a hardware record made before storage groups (no disk field) parses to the defaults', () => {
  // Replicated records carry the hardware as it was defined: old ones have no `disk`, and must still run.
  const { name: _n, protection: _p, desired: _d, ...oldHardware } = good;
  assert.deepEqual(parseVmHardware(oldHardware).disks, [{ sizeMiB: 64, ...DEFAULT_DISK_PLACE }]);
});

test('a VM of several disks: each placed and sized, a volume each named after the VM, FT refused', () => {
  const { diskMiB: _, ...noLegacy } = good;
  const disks = [{ sizeMiB: 64 }, { sizeMiB: 128, storageGroup: 'fast', format: 'raw' }, { sizeMiB: 8 }];
  const def = parseVmDefinition({ ...noLegacy, disks });
  assert.deepEqual(def.disks, [
    { sizeMiB: 64, storageGroup: 'default', format: 'qcow2' },
    { sizeMiB: 128, storageGroup: 'fast', format: 'raw' },
    { sizeMiB: 8, storageGroup: 'default', format: 'qcow2' },
  ]);
  assert.deepEqual([0, 1, 2].map((i) => [volumeName('db', i), diskId(i)]), [['db', 'vda'], ['db.disk1', 'vdb'], ['db.disk2', 'vdc']]);
  // Several disks have no one-disk fields in their record: a peer from before several disks cannot read it
  // and refuses to run it, rather than run it with one disk of three.
  const record = hardwareRecord(hardwareOf(def));
  assert.equal('diskMiB' in record || 'disk' in record, false);
  assert.deepEqual(parseVmHardware(JSON.parse(JSON.stringify(record))).disks, def.disks);
  assert.equal(protectionProblem(def, 'ha'), null);
  assert.match(protectionProblem(def, 'ft') ?? '', /FT protects a VM of one disk; this one has 3/);
  assert.throws(() => parseVmDefinition({ ...noLegacy, disks, protection: 'ft' }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === 'protection');
  // A one-disk record carries both forms; they must agree, so neither is silently lost.
  const one = hardwareRecord(hardwareOf(parseVmDefinition(good)));
  assert.deepEqual([one.diskMiB, one.disk], [64, DEFAULT_DISK_PLACE]);
  assert.throws(() => parseVmHardware({ ...one, diskMiB: 65 }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === 'diskMiB');
});

for (const [what, patch, field] of [
  ['no disk at all', { diskMiB: undefined }, 'disks'],
  ['an empty disk list', { diskMiB: undefined, disks: [] }, 'disks'],
  ['five disks', { diskMiB: undefined, disks: [1, 2, 3, 4, 5].map((sizeMiB) => ({ sizeMiB })) }, 'disks'],
  ['a disk without a size', { diskMiB: undefined, disks: [{ sizeMiB: 8 }, { storageGroup: 'default' }] }, 'disks[1].sizeMiB'],
  ['a bad group of a second disk', { diskMiB: undefined, disks: [{ sizeMiB: 8 }, { sizeMiB: 8, storageGroup: 'Fast!' }] }, 'disks[1].storageGroup'],
  ['two disks and a diskMiB', { disks: [{ sizeMiB: 64 }, { sizeMiB: 8 }] }, 'diskMiB'],
] as const) {
  test(`rejects ${what}, naming the field`, () => {
    assert.throws(() => parseVmDefinition({ ...good, ...patch }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === field);
  });
}

for (const [what, disk, field] of [
  ['a bad group name', { storageGroup: 'Fast!' }, 'disk.storageGroup'],
  ['an unknown format', { format: 'vmdk' }, 'disk.format'],
  ['a disk that is not an object', 'raw', 'disk'],
] as const) {
  test(`rejects ${what}, naming the field`, () => {
    assert.throws(() => parseVmDefinition({ ...good, disk }), (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === field);
  });
}
