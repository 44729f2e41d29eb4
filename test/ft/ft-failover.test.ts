// The FT checkpoint engine end to end on real QEMU (TCG): the pattern guest runs on a "primary" with its RAM
// in a shared file; epochs of checkpoints cross a unix socket into a store in the backup's own directory; the
// primary's QEMU is SIGKILLed; the guest is resumed from the store on a second supervisor, and runs on.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Checkpoint } from '../../src/ft/checkpoint.js';
import { PAGE_BYTES } from '../../src/ft/ram-tracker.js';
import { resumeFromCheckpoint } from '../../src/ft/resume.js';
import { VmSupervisor } from '../../src/qemu/supervisor.js';
import { listenForMigration, migrate, waitForIncomingMigration } from '../../src/qemu/migration.js';
import { Cleanup } from '../support/cleanup.js';
import { waitFor } from '../qemu/helpers.js';
import { MiB, checkpointPair, patternVmSpec, sleep } from './helpers.js';
import { checkPattern, type PatternRegion } from './pattern-guest.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const MEMORY_MIB = 128;
/** 16 MiB that the guest rewrites on every pass; the other 112 MiB stay idle. */
const REGION: PatternRegion = { startBytes: 1 * MiB, endBytes: 17 * MiB };
const EPOCHS = 5;
const EPOCH_MS = 100;

test('epochs of checkpoints over a socket, kill -9 of the primary, resume from the backup: the guest runs on where the last committed epoch left it, and live-migrates on like any guest', async () => {
  const { primaryDir, backupDir, backupSup, vm, engine, store, sender, received } = await checkpointPair(cleanup, { name: 'ft1', memoryMiB: MEMORY_MIB, region: REGION });
  const ramBytes = MEMORY_MIB * MiB;

  const taken: Checkpoint[] = [];
  for (let i = 0; i < EPOCHS; i++) {
    await sleep(EPOCH_MS);
    const cp = await engine.checkpoint();
    taken.push(cp);
    const sent = await sender.send(cp);
    assert.equal(sent.epoch, cp.epoch);
    assert.equal(store.committedEpoch, cp.epoch, 'acked means committed');
  }
  assert.deepEqual(taken.map((c) => c.epoch), [1, 2, 3, 4, 5]);
  assert.equal(taken[0]!.full, true);
  assert.equal(taken[0]!.pageCount, ramBytes / PAGE_BYTES);
  assert.equal(checkPattern(taken[0]!.runs[0]!.data, REGION).consistent, true, 'the full image taken while paused holds the pattern');
  for (const cp of taken.slice(1)) {
    assert.equal(cp.full, false);
    // The guest rewrote its region (4096 pages) and a few of its own; the idle 112 MiB were not sent.
    assert.ok(cp.pageCount >= 1 && cp.pageCount < ramBytes / PAGE_BYTES / 4, `epoch ${cp.epoch} carried ${cp.pageCount} pages`);
    assert.ok(cp.deviceState.length > 1000, 'device state saved');
    assert.ok(cp.timings.pauseMs >= cp.timings.ramCopyMs);
  }

  // The primary dies; the backup has epoch 5.
  process.kill(vm.pid, 'SIGKILL');
  assert.equal((await vm.exited).cause, 'killed');
  sender.close();
  const outcome = await received;
  assert.deepEqual(outcome.commits.map((c) => c.epoch), [1, 2, 3, 4, 5]);
  const atCommit = checkPattern(await readFile(store.imagePath), REGION);
  assert.equal(atCommit.consistent, true, `committed image: bad pages ${atCommit.bad.join(', ')}`);

  // The backup's own copy of the boot disk: a host reads only its own files.
  const resumedSpec = await patternVmSpec({ name: 'ft1', memoryMiB: MEMORY_MIB, region: REGION, dir: backupDir, ramFile: store.imagePath });
  const resumed = await resumeFromCheckpoint(backupSup, store, resumedSpec, { runDir: path.join(backupDir, 'run', 'ft1') });
  cleanup.add(() => resumed.vm.stop({ gracefulMs: 0, quitMs: 1000 }));
  assert.equal(resumed.epoch, 5);
  // It runs on: more passes, and no 'A' (the guest did not boot again, it continued).
  await waitFor(async () => /BB/.test(await readFile(resumed.vm.paths.serialLog, 'latin1')), 20_000, 'passes of the resumed guest');
  assert.doesNotMatch(await readFile(resumed.vm.paths.serialLog, 'latin1'), /A/);
  await resumed.vm.qmp.execute('stop');
  const after = checkPattern(await readFile(store.imagePath), REGION);
  assert.equal(after.consistent, true, `resumed guest's RAM: bad pages ${after.bad.join(', ')}`);
  assert.deepEqual((await resumed.vm.qmp.execute('query-status')) as { status: string }, { status: 'paused', singlestep: false, running: false });

  // The resumed guest moves on by live migration (back to the repaired primary), into a QEMU with anonymous
  // RAM: the resumed QEMU's stream is in the format every QEMU of the pair expects (src/qemu/command-line.ts).
  await resumed.vm.qmp.execute('cont');
  const { memoryBackend: _ramFile, ...anonymous } = await patternVmSpec({ name: 'ft1', memoryMiB: MEMORY_MIB, region: REGION, dir: primaryDir, ramFile: store.imagePath });
  const moved = await new VmSupervisor({ runRoot: path.join(primaryDir, 'run') }).start(anonymous, { incoming: true });
  cleanup.add(() => moved.stop({ gracefulMs: 0, quitMs: 1000 }));
  const { uri } = await listenForMigration(moved.qmp, { uri: 'tcp:127.0.0.1:0' });
  const arrived = waitForIncomingMigration(moved.qmp, { timeoutMs: 60_000 });
  await migrate(resumed.vm.qmp, { uri, downtimeLimitMs: 100, autoConverge: false });
  assert.deepEqual(await arrived, { runState: 'running', running: true });
  await waitFor(async () => /BB/.test(await readFile(moved.paths.serialLog, 'latin1')), 20_000, 'passes of the moved guest');
  assert.doesNotMatch(await readFile(moved.paths.serialLog, 'latin1'), /A/, 'the moved guest did not boot again');
});
