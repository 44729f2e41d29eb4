// Broken checkpoint streams on real QEMU: a corrupt epoch is refused with a clear error, the backup keeps
// the epoch before it, and the guest resumes from that one and runs on.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CheckpointStore } from '../../src/ft/checkpoint-store.js';
import { encodeCheckpoint } from '../../src/ft/checkpoint-wire.js';
import { PAGE_BYTES } from '../../src/ft/ram-tracker.js';
import { resumeFromCheckpoint } from '../../src/ft/resume.js';
import { VmSupervisor } from '../../src/qemu/supervisor.js';
import { LockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';
import { rejectionOf, waitFor } from '../qemu/helpers.js';
import { MiB, checkpointPair, patternVmSpec, shmDir, sleep } from './helpers.js';
import { checkPattern, type PatternRegion } from './pattern-guest.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MEMORY_MIB = 64;
const REGION: PatternRegion = { startBytes: 1 * MiB, endBytes: 9 * MiB };

test('a corrupt epoch is refused (CHECKPOINT_WIRE at the backup, CHECKPOINT_REFUSED at the primary); the store keeps epoch 2, and the guest resumes from it', async () => {
  const { backupDir, backupSup, vm, engine, store, sender, received, primaryEnd } = await checkpointPair(cleanup, { name: 'ft2', memoryMiB: MEMORY_MIB, region: REGION });
  for (let i = 0; i < 2; i++) {
    await sleep(50);
    await sender.send(await engine.checkpoint());
  }
  assert.equal(store.committedEpoch, 2);
  const committedImage = await readFile(store.imagePath);
  const committedDevice = await readFile(store.deviceStatePath);

  // Epoch 3, damaged on the way: one bit of its device state.
  await sleep(50);
  const cp3 = await engine.checkpoint();
  const bytes = Buffer.concat(encodeCheckpoint(cp3));
  cp3.release();
  bytes[bytes.length - 30]! ^= 4;
  primaryEnd.write(bytes);
  const outcome = await received;
  assert.ok(outcome.refused instanceof LockstepError && outcome.refused.code === 'CHECKPOINT_WIRE');
  assert.match(outcome.refused.message, /checksum of epoch 3/);
  const heard = await rejectionOf(sender.send(await engine.checkpoint()));
  assert.ok(heard instanceof LockstepError && heard.code === 'CHECKPOINT_REFUSED', String(heard));
  assert.match(heard.message, /refused epoch 3 of 'ft2': CHECKPOINT_WIRE: checkpoint stream: checksum/);
  assert.equal(store.committedEpoch, 2);
  assert.ok((await readFile(store.imagePath)).equals(committedImage), 'the image is still epoch 2');
  assert.ok((await readFile(store.deviceStatePath)).equals(committedDevice));

  process.kill(vm.pid, 'SIGKILL');
  await vm.exited;
  const resumedSpec = await patternVmSpec({ name: 'ft2', memoryMiB: MEMORY_MIB, region: REGION, dir: backupDir, ramFile: store.imagePath });
  const resumed = await resumeFromCheckpoint(backupSup, store, resumedSpec, { runDir: path.join(backupDir, 'run', 'ft2') });
  cleanup.add(() => resumed.vm.stop({ gracefulMs: 0, quitMs: 1000 }));
  assert.equal(resumed.epoch, 2);
  await waitFor(async () => /BB/.test(await readFile(resumed.vm.paths.serialLog, 'latin1')), 20_000, 'passes of the resumed guest');
  await resumed.vm.qmp.execute('stop');
  assert.equal(checkPattern(await readFile(store.imagePath), REGION).consistent, true);
});

test('resume refuses what does not fit: another VM, another RAM size, nothing committed', async () => {
  const dir = await shmDir(cleanup);
  const sup = new VmSupervisor({ runRoot: path.join(dir, 'run') });
  cleanup.add(() => sup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  const store = await CheckpointStore.open(path.join(dir, 'store'), { vm: 'ft3', ramBytes: 64 * MiB, pageBytes: PAGE_BYTES });
  cleanup.add(() => store.close());
  const spec = await patternVmSpec({ name: 'ft3', memoryMiB: 64, region: REGION, dir, ramFile: store.imagePath });
  for (const [s, re] of [
    [{ ...spec, name: 'other' }, /holds VM 'ft3'/],
    [{ ...spec, memoryMiB: 128 }, /128 MiB of RAM, the checkpoint 67108864 bytes/],
    [spec, /no committed epoch/],
  ] as const) {
    const e = await rejectionOf(resumeFromCheckpoint(sup, store, s));
    assert.ok(e instanceof LockstepError && e.code === 'CHECKPOINT_RESUME', String(e));
    assert.match(e.message, re);
  }
  assert.deepEqual(sup.running, []);
});
