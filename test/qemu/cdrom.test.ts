// The CD drive on real QEMU (TCG, no guest: SeaBIOS finds nothing to boot): a drive that starts empty takes
// an ISO over QMP, shows it in query-block read-only, and gives it up on eject; a drive with a medium on the
// command line has it from the start, and another can replace it.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { VmSupervisor } from '../../src/qemu/supervisor.js';
import type { VmSpec } from '../../src/qemu/vm-spec.js';
import { parseVmSpec } from '../../src/qemu/vm-spec.js';
import { ejectMedium, insertMedium, mediumOf } from '../../src/qemu/cdrom.js';
import { qemuArgs } from '../../src/qemu/command-line.js';
import { Cleanup, tempDir } from './helpers.js';
import { makeIso } from '../support/iso.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function setup(): Promise<{ sup: VmSupervisor; dir: string }> {
  const dir = await tempDir(cleanup);
  const sup = new VmSupervisor({ runRoot: path.join(dir, 'run') });
  cleanup.add(() => sup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  return { sup, dir };
}

const spec = (name: string, medium: string | null): VmSpec => ({ name, vcpus: 1, memoryMiB: 32, accel: 'tcg', disks: [], nics: [], cdrom: { id: 'cd0', medium } });

test('an empty drive takes an ISO over QMP, shows it read-only, and ejects it', async () => {
  const { sup, dir } = await setup();
  const iso = await makeIso(dir, 'tools');
  const vm = await sup.start(spec('cd-empty', null));
  assert.equal(await mediumOf(vm.qmp, 'cd0'), null, 'the drive starts empty');
  await insertMedium(vm.qmp, 'cd0', iso);
  assert.deepEqual(await mediumOf(vm.qmp, 'cd0'), { file: iso, readOnly: true });
  await ejectMedium(vm.qmp, 'cd0');
  assert.equal(await mediumOf(vm.qmp, 'cd0'), null);
  // Ejecting an empty drive is no error: the operator's eject is idempotent.
  await ejectMedium(vm.qmp, 'cd0');
});

test('a medium on the command line is in the drive from the start and can be replaced', async () => {
  const { sup, dir } = await setup();
  const first = await makeIso(dir, 'first');
  const second = await makeIso(dir, 'second');
  const vm = await sup.start(spec('cd-full', first));
  assert.deepEqual(await mediumOf(vm.qmp, 'cd0'), { file: first, readOnly: true });
  await insertMedium(vm.qmp, 'cd0', second);
  assert.deepEqual(await mediumOf(vm.qmp, 'cd0'), { file: second, readOnly: true });
});

test('the spec checks the drive; the command line puts it on the secondary IDE channel', () => {
  assert.deepEqual(parseVmSpec({ name: 'a', vcpus: 1, memoryMiB: 32, cdrom: { id: 'cd0', medium: null } }).cdrom, { id: 'cd0', medium: null });
  assert.throws(() => parseVmSpec({ name: 'a', vcpus: 1, memoryMiB: 32, cdrom: { id: 'cd0', medium: 'relative.iso' } }), /cdrom\.medium/);
  assert.throws(() => parseVmSpec({ name: 'a', vcpus: 1, memoryMiB: 32, disks: [{ id: 'cd0', path: '/d.qcow2', format: 'qcow2' }], cdrom: { id: 'cd0', medium: null } }), /cdrom\.id/);
  const opts = { accel: 'tcg' as const, qmpSocket: '/q', serialLog: '/s', heartbeatSocket: '/h', pidFile: '/p' };
  const empty = qemuArgs(spec('a', null), opts);
  assert.ok(empty.includes('ide-cd,bus=ide.1,unit=0,id=cd0'), empty.join(' '));
  const full = qemuArgs(spec('a', '/isos/a,b.iso'), opts).join(' ');
  assert.match(full, /-blockdev driver=file,node-name=cd0-file,filename=\/isos\/a,,b\.iso,read-only=on -blockdev driver=raw,node-name=cd0,file=cd0-file,read-only=on -device ide-cd,bus=ide\.1,unit=0,id=cd0,drive=cd0/);
});
