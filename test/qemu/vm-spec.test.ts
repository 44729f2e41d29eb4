// parseVmSpec: good specs come back with defaults; bad ones get INVALID_SPEC naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseVmSpec } from '../../src/qemu/vm-spec.js';
import { LockstepError } from '../../src/util/errors.js';

const good = {
  name: 'web-1',
  vcpus: 2,
  memoryMiB: 256,
  accel: 'tcg',
  boot: { kernel: '/var/lib/lockstep/vmlinuz', initrd: '/var/lib/lockstep/initrd.img', cmdline: 'console=ttyS0' },
  disks: [{ id: 'vda', path: '/var/lib/lockstep/web-1.qcow2', format: 'qcow2', cache: 'none' }],
  nics: [{ id: 'net0', mac: '52:54:00:AB:cd:01', tap: 't-web-1' }],
  memoryBackend: { path: '/dev/shm/lockstep-web-1.ram' },
};

function invalid(spec: unknown, field: string): void {
  assert.throws(
    () => parseVmSpec(spec),
    (e: unknown) => {
      assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
      assert.equal(e.code, 'INVALID_SPEC');
      assert.equal(e.fields['field'], field, e.message);
      assert.ok(e.message.includes(field), `message names the field: ${e.message}`);
      return true;
    },
  );
}

test('a complete spec parses; the MAC comes back lower case', () => {
  const spec = parseVmSpec(good);
  assert.equal(spec.nics[0]!.mac, '52:54:00:ab:cd:01');
  assert.deepEqual({ ...spec, nics: [] }, { ...good, nics: [] });
});

test('a minimal spec gets defaults: accel auto, no disks, no NICs, no kernel (boot from disk)', () => {
  const spec = parseVmSpec({ name: 'a', vcpus: 1, memoryMiB: 64 });
  assert.deepEqual(spec, { name: 'a', vcpus: 1, memoryMiB: 64, accel: 'auto', disks: [], nics: [] });
});

test('bad input names the bad field', () => {
  invalid(null, 'spec');
  invalid('web', 'spec');
  invalid({ ...good, name: undefined }, 'name');
  invalid({ ...good, name: 'Web' }, 'name');
  invalid({ ...good, name: 'a'.repeat(32) }, 'name');
  invalid({ ...good, name: '1web' }, 'name');
  invalid({ ...good, vcpus: 0 }, 'vcpus');
  invalid({ ...good, vcpus: 1.5 }, 'vcpus');
  invalid({ ...good, vcpus: '2' }, 'vcpus');
  invalid({ ...good, memoryMiB: 8 }, 'memoryMiB');
  invalid({ ...good, memoryMiB: 10_000_000 }, 'memoryMiB');
  invalid({ ...good, accel: 'hvf' }, 'accel');
  invalid({ ...good, memoryMib: 256 }, 'memoryMib');
  invalid({ ...good, boot: { kernel: 'vmlinuz' } }, 'boot.kernel');
  invalid({ ...good, boot: { kernel: '/a/../b' } }, 'boot.kernel');
  invalid({ ...good, boot: { kernel: '/k', cmdline: 'x'.repeat(3000) } }, 'boot.cmdline');
  invalid({ ...good, boot: { kernel: '/k', cmdline: 'a\nb' } }, 'boot.cmdline');
  invalid({ ...good, boot: { kernel: '/k', append: 'x' } }, 'boot.append');
  invalid({ ...good, disks: {} }, 'disks');
  invalid({ ...good, disks: [{ ...good.disks[0], format: 'vmdk' }] }, 'disks[0].format');
  invalid({ ...good, disks: [{ ...good.disks[0], cache: 'unsafe' }] }, 'disks[0].cache');
  invalid({ ...good, disks: [{ ...good.disks[0], path: 'disk.qcow2' }] }, 'disks[0].path');
  invalid({ ...good, disks: [{ ...good.disks[0], id: 'VDA' }] }, 'disks[0].id');
  invalid({ ...good, disks: [{ ...good.disks[0], id: 'a'.repeat(21) }] }, 'disks[0].id');
  invalid({ ...good, disks: [good.disks[0], { ...good.disks[0], path: '/other.qcow2' }] }, 'disks[1].id');
  invalid({ ...good, disks: [good.disks[0], { ...good.disks[0], id: 'vdb' }] }, 'disks[1].path');
  invalid({ ...good, nics: [{ ...good.nics[0], id: 'vda' }] }, 'nics[0].id');
  invalid({ ...good, nics: [{ ...good.nics[0], mac: '52:54:00:ab:cd' }] }, 'nics[0].mac');
  invalid({ ...good, nics: [{ ...good.nics[0], mac: '01:00:5e:00:00:01' }] }, 'nics[0].mac');
  invalid({ ...good, nics: [{ ...good.nics[0], mac: '00:00:00:00:00:00' }] }, 'nics[0].mac');
  invalid({ ...good, nics: [{ ...good.nics[0], tap: 'a-very-long-tap-name' }] }, 'nics[0].tap');
  invalid({ ...good, nics: [{ ...good.nics[0], tap: 'tap/0' }] }, 'nics[0].tap');
  invalid({ ...good, nics: [good.nics[0], { ...good.nics[0], id: 'net1', tap: 't2' }] }, 'nics[1].mac');
  invalid({ ...good, nics: [good.nics[0], { ...good.nics[0], id: 'net1', mac: '52:54:00:00:00:02' }] }, 'nics[1].tap');
  const gate = { fromGuest: '/run/vm/g.sock', toNetwork: '/run/vm/n.sock' };
  invalid({ ...good, nics: [{ ...good.nics[0], outputGate: { ...gate, toNetwork: 'n.sock' } }] }, 'nics[0].outputGate.toNetwork');
  invalid({ ...good, nics: [{ ...good.nics[0], outputGate: { ...gate, fromGuest: `/${'s'.repeat(107)}` } }] }, 'nics[0].outputGate.fromGuest');
  invalid({ ...good, nics: [{ ...good.nics[0], outputGate: { fromGuest: gate.fromGuest } }] }, 'nics[0].outputGate.toNetwork');
  invalid({ ...good, nics: [{ ...good.nics[0], outputGate: { ...gate, hold: true } }] }, 'nics[0].outputGate.hold');
  invalid({ ...good, nics: [{ ...good.nics[0], outputGate: { ...gate, toNetwork: gate.fromGuest } }] }, 'nics[0].outputGate.toNetwork');
  invalid(
    { ...good, nics: [{ ...good.nics[0], outputGate: gate }, { id: 'net1', mac: '52:54:00:00:00:02', tap: 't2', outputGate: { fromGuest: '/run/vm/g2.sock', toNetwork: gate.toNetwork } }] },
    'nics[1].outputGate.toNetwork',
  );
  assert.deepEqual(parseVmSpec({ ...good, nics: [{ ...good.nics[0], outputGate: gate }] }).nics[0]!.outputGate, gate);
  invalid({ ...good, memoryBackend: { path: 'ram' } }, 'memoryBackend.path');
  invalid({ ...good, memoryBackend: { path: '/dev/shm/x', share: false } }, 'memoryBackend.share');
  invalid({ ...good, heartbeat: { timeoutMs: 10 } }, 'heartbeat.timeoutMs');
  invalid({ ...good, heartbeat: { timeoutMs: 5000, every: 1 } }, 'heartbeat.every');
});
