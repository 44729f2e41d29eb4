// The QEMU argv for a spec: pinned, so that a change to the machine both ends of a migration build is a
// visible diff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuArgs, optionValue } from '../../src/qemu/command-line.js';
import { parseVmSpec } from '../../src/qemu/vm-spec.js';

const io = { qmpSocket: '/run/vm/qmp.sock', serialLog: '/run/vm/serial.log', heartbeatSocket: '/run/vm/heartbeat.sock', pidFile: '/run/vm/qemu.pid' };

test('a lab-style VM: direct kernel boot, a qcow2 disk, a tap NIC, RAM in a shared file, TCG', () => {
  const spec = parseVmSpec({
    name: 'web',
    vcpus: 2,
    memoryMiB: 256,
    accel: 'tcg',
    boot: { kernel: '/g/vmlinuz', initrd: '/g/initrd', cmdline: 'console=ttyS0 quiet' },
    disks: [{ id: 'vda', path: '/d/web,1.qcow2', format: 'qcow2' }],
    nics: [{ id: 'net0', mac: '52:54:00:12:34:56', tap: 't-web' }],
    memoryBackend: { path: '/dev/shm/web.ram' },
    heartbeat: { timeoutMs: 15000 },
  });
  assert.deepEqual(qemuArgs(spec, { accel: 'tcg', ...io }), [
    '-name', 'guest=web,debug-threads=on',
    '-machine', 'pc,memory-backend=pc.ram,suppress-vmdesc=on',
    '-accel', 'tcg',
    '-nodefaults', '-no-user-config', '-display', 'none', '-msg', 'timestamp=on',
    '-smp', '2',
    '-m', '256M',
    '-object', 'memory-backend-file,id=pc.ram,size=256M,mem-path=/dev/shm/web.ram,share=on',
    '-chardev', 'socket,id=qmp,path=/run/vm/qmp.sock,server=on,wait=off',
    '-mon', 'chardev=qmp,mode=control',
    '-chardev', 'file,id=serial0,path=/run/vm/serial.log',
    '-serial', 'chardev:serial0',
    '-pidfile', '/run/vm/qemu.pid',
    '-chardev', 'socket,id=heartbeat,path=/run/vm/heartbeat.sock,server=on,wait=off',
    '-device', 'isa-serial,chardev=heartbeat,index=1,id=heartbeat',
    '-kernel', '/g/vmlinuz',
    '-initrd', '/g/initrd',
    '-append', 'console=ttyS0 quiet',
    // The comma in the file name is doubled inside the option string.
    '-blockdev', 'driver=file,node-name=vda-file,filename=/d/web,,1.qcow2,cache.direct=off,cache.no-flush=off',
    '-blockdev', 'driver=qcow2,node-name=vda,file=vda-file,cache.direct=off,cache.no-flush=off',
    '-device', 'virtio-blk-pci,drive=vda,id=vda,write-cache=on',
    '-netdev', 'tap,id=net0,ifname=t-web,script=no,downscript=no,vhost=off',
    '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,id=net0',
    '-global', 'migration.send-configuration=off',
  ]);
});

test('KVM adds -cpu host; without a kernel the disks get a boot order; cache modes map to two switches', () => {
  const spec = parseVmSpec({
    name: 'db',
    vcpus: 1,
    memoryMiB: 64,
    disks: [
      { id: 'a', path: '/a.raw', format: 'raw', cache: 'directsync' },
      { id: 'b', path: '/b.raw', format: 'raw', cache: 'writethrough' },
    ],
  });
  const args = qemuArgs(spec, { accel: 'kvm', paused: true, ...io });
  const joined = args.join(' ');
  assert.ok(joined.includes('-machine pc,suppress-vmdesc=on -accel kvm -cpu host'));
  assert.ok(joined.includes('driver=file,node-name=a-file,filename=/a.raw,cache.direct=on'));
  assert.ok(joined.includes('virtio-blk-pci,drive=a,id=a,write-cache=off,bootindex=0'));
  assert.ok(joined.includes('driver=file,node-name=b-file,filename=/b.raw,cache.direct=off'));
  assert.ok(joined.includes('virtio-blk-pci,drive=b,id=b,write-cache=off,bootindex=1'));
  assert.equal(args.at(-1), '-S');
  assert.ok(!args.includes('-kernel'));
});

test('a migration destination waits with -incoming defer, after -S when both are asked', () => {
  const spec = parseVmSpec({ name: 'web', vcpus: 1, memoryMiB: 64, disks: [] });
  assert.deepEqual(qemuArgs(spec, { accel: 'tcg', incoming: true, ...io }).slice(-2), ['-incoming', 'defer']);
  assert.deepEqual(qemuArgs(spec, { accel: 'tcg', paused: true, incoming: true, ...io }).slice(-3), ['-S', '-incoming', 'defer']);
  assert.ok(!qemuArgs(spec, { accel: 'tcg', ...io }).includes('-incoming'), 'no -incoming unless asked');
});

test('every QEMU, booted, incoming or restoring an FT checkpoint, has one stream format: no configuration section, no vmdesc', () => {
  const ft = parseVmSpec({ name: 'ft', vcpus: 1, memoryMiB: 128, accel: 'tcg', memoryBackend: { path: '/dev/shm/ft/ram.img' } });
  const plain = parseVmSpec({ name: 'web', vcpus: 1, memoryMiB: 64, disks: [] });
  for (const [spec, machine] of [[ft, 'pc,memory-backend=pc.ram,suppress-vmdesc=on'], [plain, 'pc,suppress-vmdesc=on']] as const) {
    for (const opts of [{}, { paused: true, incoming: true }]) {
      const args = qemuArgs(spec, { accel: 'tcg', ...opts, ...io });
      assert.equal(args[args.indexOf('-machine') + 1], machine);
      assert.equal(args[args.indexOf('-global') + 1], 'migration.send-configuration=off');
    }
  }
});

test('a NIC under FT output commit: the gate\'s two socket chardevs, then fin (indev) before fout (outdev), between netdev and device', () => {
  const spec = parseVmSpec({
    name: 'ft',
    vcpus: 1,
    memoryMiB: 64,
    nics: [{ id: 'net0', mac: '52:54:00:12:34:56', tap: 't-ft', outputGate: { fromGuest: '/run/vm/g,1.sock', toNetwork: '/run/vm/n.sock' } }],
  });
  const args = qemuArgs(spec, { accel: 'tcg', ...io });
  const from = args.indexOf('-netdev');
  assert.deepEqual(args.slice(from, from + 12), [
    '-netdev', 'tap,id=net0,ifname=t-ft,script=no,downscript=no,vhost=off',
    '-chardev', 'socket,id=net0-gate-net,path=/run/vm/n.sock',
    '-chardev', 'socket,id=net0-gate-guest,path=/run/vm/g,,1.sock',
    // The order matters: QEMU walks queue=rx filters last-declared first, so the guest's frames meet fout.
    '-object', 'filter-redirector,id=net0-gate-fin,netdev=net0,queue=rx,indev=net0-gate-net,vnet_hdr_support=on',
    '-object', 'filter-redirector,id=net0-gate-fout,netdev=net0,queue=rx,outdev=net0-gate-guest,vnet_hdr_support=on',
    '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,id=net0',
  ]);
});

test('optionValue doubles commas and nothing else', () => {
  assert.equal(optionValue('/a,b,,c=d'), '/a,,b,,,,c=d');
});
