/**
 * A volume's state from what one host knows, one story per state and per way into it; and a resync's rate
 * and time left from successive progress samples.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addSample, etaMs, syncRate, volumeVerdict, RATE_WINDOW_MS, type VolumeFacts, type ProgressSample } from '../../src/storage/volume.js';

const MIB = 1024 * 1024;

/** host1 owns a protected VM, stopped, its file here, the peer heard and its copy current. */
const base: VolumeFacts = {
  self: 'host1',
  peer: 'host2',
  owner: 'host1',
  protection: 'ha',
  storageGroup: 'default',
  groupKnown: true,
  file: { kind: 'present', allocatedBytes: 4 * MIB },
  diskHealth: 'ok',
  local: null,
  peerHeard: true,
  copyHere: true,
  copyPeer: true,
};
const running = (mirror: NonNullable<VolumeFacts['local']>['mirror']): Partial<VolumeFacts> => ({ local: { state: 'running', mirror } });
/** The same VM as host2, its backup, sees it. */
const backup: Partial<VolumeFacts> = { self: 'host2', peer: 'host1', copyPeer: null };

const cases: [string, Partial<VolumeFacts>, string, RegExp][] = [
  ['unprotected, owned here: one copy by choice', { protection: 'none', copyPeer: null }, 'simplex', /protection none/],
  ['unprotected, owned by the peer: nothing here, by choice (even without the group)', { ...backup, protection: 'none', groupKnown: false, file: null }, 'simplex', /on host1/],
  ['running here, mirror ready', running({ state: 'ready', copiedBytes: 64 * MIB, totalBytes: 64 * MIB, bytesPerSec: null }), 'in-sync', /in sync/],
  ['running here, mirror syncing', running({ state: 'syncing', copiedBytes: 16 * MIB, totalBytes: 64 * MIB, bytesPerSec: 8 * MIB }), 'syncing', /resyncing host2/],
  ['running here, mirror stalled', running({ state: 'stalled', copiedBytes: 0, totalBytes: 0, bytesPerSec: null }), 'degraded', /stalled/],
  ['running here without a mirror, peer heard', { ...running(null), copyPeer: false }, 'degraded', /without a mirror/],
  ['running here alone, peer not heard', { ...running(null), peerHeard: false, copyPeer: null }, 'degraded', /host2 is not heard/],
  ['stopped here, peer copy current', {}, 'in-sync', /host2's copy is current/],
  ['stopped here, peer copy not current', { copyPeer: false }, 'degraded', /not current: it is resynced when the VM runs/],
  ['stopped here, peer not heard', { peerHeard: false, copyPeer: null }, 'degraded', /host2 is not heard/],
  ["the peer's VM, this host's copy current", backup, 'in-sync', /host2's copy holds every write/],
  ["the peer's VM, copy not current, owner heard", { ...backup, copyHere: false }, 'syncing', /host1 brings it up to date/],
  ["the peer's VM, copy not current, owner not heard", { ...backup, copyHere: false, peerHeard: false }, 'degraded', /host1, the owner, is not heard/],
  ["the peer's VM in a group this host lacks", { ...backup, groupKnown: false, file: null, copyHere: null }, 'failed', /storage group 'default' is not configured on host2/],
  ['the host disk failed', { diskHealth: 'failed' }, 'failed', /disk health check of host1 failed/],
  ['the file unreadable', { file: { kind: 'unreadable', reason: 'cannot read /d/x.qcow2: EACCES' } }, 'failed', /EACCES/],
  ['the file missing while the VM runs here', { ...running({ state: 'ready', copiedBytes: 1, totalBytes: 1, bytesPerSec: null }), file: { kind: 'missing' } }, 'failed', /missing on host1/],
  ["the file missing while the peer's copy of it is current", { file: { kind: 'missing' } }, 'failed', /missing on host1/],
  ["this host's current copy of the peer's VM missing", { ...backup, file: { kind: 'missing' } }, 'failed', /missing on host2/],
];

for (const [story, patch, state, reason] of cases) {
  test(`${story}: ${state}`, () => {
    const v = volumeVerdict({ ...base, ...patch });
    assert.equal(v.state, state);
    assert.match(v.reason, reason);
    assert.equal(v.sync !== null, state === 'syncing', 'figures only while syncing');
  });
}

test('a VM that never ran has no file yet, and that is no failure', () => {
  // Defined, stopped, the peer's copy never made current: nothing was written anywhere.
  assert.equal(volumeVerdict({ ...base, file: { kind: 'missing' }, copyPeer: false }).state, 'degraded');
  assert.equal(volumeVerdict({ ...base, protection: 'none', copyPeer: null, file: { kind: 'missing' } }).state, 'simplex');
  // Starting: the runner makes the file before QEMU opens it.
  assert.equal(volumeVerdict({ ...base, local: { state: 'starting', mirror: null }, file: { kind: 'missing' }, copyPeer: false }).state, 'degraded');
});

test("a resync's figures: the owner's progress, rate and time left; none on the backup", () => {
  const v = volumeVerdict({ ...base, ...running({ state: 'syncing', copiedBytes: 16 * MIB, totalBytes: 64 * MIB, bytesPerSec: 8 * MIB }) });
  assert.deepEqual(v.sync, { copiedBytes: 16 * MIB, totalBytes: 64 * MIB, bytesPerSec: 8 * MIB, etaMs: 6000 });
  const early = volumeVerdict({ ...base, ...running({ state: 'syncing', copiedBytes: 0, totalBytes: 0, bytesPerSec: null }) });
  assert.deepEqual(early.sync, { copiedBytes: 0, totalBytes: null, bytesPerSec: null, etaMs: null }, 'a total of 0 is none reported yet');
  assert.deepEqual(volumeVerdict({ ...base, ...backup, copyHere: false }).sync, { copiedBytes: null, totalBytes: null, bytesPerSec: null, etaMs: null });
});

test('eta: what is left at the rate, none without a rate or a total', () => {
  assert.equal(etaMs(10, 110, 50), 2000);
  assert.equal(etaMs(110, 100, 50), 0, 'a total that was passed (the guest wrote meanwhile) leaves nothing');
  assert.equal(etaMs(10, null, 50), null);
  assert.equal(etaMs(10, 100, null), null);
  assert.equal(etaMs(10, 100, 0), null, 'a stalled copy has no end in sight');
});

test('the rate from successive samples: over the window, restarted when the count goes back', () => {
  let s: ProgressSample[] = [];
  s = addSample(s, { atMs: 0, copiedBytes: 0 });
  assert.equal(syncRate(s), null, 'one sample is no rate');
  s = addSample(s, { atMs: 500, copiedBytes: 5 * MIB });
  assert.equal(syncRate(s), null, 'under a second apart is too short to tell');
  s = addSample(s, { atMs: 1000, copiedBytes: 10 * MIB });
  assert.equal(syncRate(s), 10 * MIB);
  // Old samples leave the window: the rate follows a change of speed.
  for (let t = 1500; t <= 1000 + RATE_WINDOW_MS + 2000; t += 500) s = addSample(s, { atMs: t, copiedBytes: s.at(-1)!.copiedBytes + MIB });
  assert.ok(s[0]!.atMs >= s.at(-1)!.atMs - RATE_WINDOW_MS);
  assert.equal(syncRate(s), 2 * MIB);
  assert.ok(s.length <= 32);
  // A new job counting from zero (the next pass of an incremental resync) starts the measurement again.
  s = addSample(s, { atMs: 20_000, copiedBytes: MIB });
  assert.deepEqual(s, [{ atMs: 20_000, copiedBytes: MIB }]);
  assert.equal(syncRate(s), null);
});
