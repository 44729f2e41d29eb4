/**
 * `lockstep volume` and `lockstep storage-group`, their pure parts: parsing, which host's view of a volume
 * is shown, and how fixed API answers are rendered — tables, `show`, a syncing volume's progress and ETA,
 * and `--json` passing the answer through untouched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LockstepError } from '../../src/util/errors.js';
import { parseVolumeCommand, renderVolumeAnswer, type VolumeRequest } from '../../src/cli/volume-command.js';
import { renderStorageGroupShow, renderVolumeShow, syncLine, volumeRows, type StorageGroupView, type VolumeView } from '../../src/cli/volume-view.js';

const MIB = 1024 * 1024;

test('each verb parses into its request', () => {
  const cases: [Parameters<typeof parseVolumeCommand>, VolumeRequest][] = [
    [['volume', ['list']], { noun: 'volume', verb: 'list', json: false, where: {} }],
    [['volume', ['show', 'demo', '--json', '--host', 'host2']], { noun: 'volume', verb: 'show', name: 'demo', json: true, where: { host: 'host2' } }],
    [['storage-group', ['list', '--socket', '/run/l.sock']], { noun: 'storage-group', verb: 'list', json: false, where: { socket: '/run/l.sock' } }],
    [['storage-group', ['show', 'default']], { noun: 'storage-group', verb: 'show', name: 'default', json: false, where: {} }],
    [['volume', []], { verb: 'help', exit: 2 }],
    [['storage-group', ['help']], { verb: 'help', exit: 0 }],
  ];
  for (const [args, want] of cases) assert.deepEqual(parseVolumeCommand(...args), want, args.join(' '));
});

test('bad input is a usage error naming what is wrong', () => {
  const cases: [Parameters<typeof parseVolumeCommand>, RegExp][] = [
    [['volume', ['create']], /unknown volume command 'create'/],
    [['volume', ['show']], /usage: lockstep volume show NAME/],
    [['storage-group', ['list', 'extra']], /usage: lockstep storage-group list/],
    [['storage-group', ['show', 'Bad_Name']], /storage-group name 'Bad_Name'/],
    [['volume', ['list', '--bogus']], /Unknown option '--bogus'/],
    [['volume', ['list', '--socket', '/s', '--host', 'host1']], /--socket and --host exclude each other/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseVolumeCommand(...args), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT' && message.test(e.message), args.join(' '));
  }
});

const inSync: VolumeView = {
  name: 'demo', vm: 'demo', host: 'host1', owner: 'host1', protection: 'ha', storageGroup: 'default', format: 'qcow2',
  sizeBytes: 64 * MIB, path: '/lab/hosts/host1/disks/demo.qcow2', allocatedBytes: 3 * MIB, state: 'in-sync', reason: 'the mirror into host2\'s copy is in sync: every write is on both hosts', sync: null,
};
const syncing: VolumeView = {
  ...inSync, name: 'web', vm: 'web', owner: 'host2', host: 'host2', state: 'syncing', reason: "resyncing host1's copy",
  sync: { copiedBytes: 16 * MIB, totalBytes: 64 * MIB, bytesPerSec: 8 * MIB, etaMs: 6000 },
};
const failed: VolumeView = { ...inSync, name: 'db', vm: 'db', storageGroup: 'fast', path: null, allocatedBytes: null, state: 'failed', reason: "storage group 'fast' is not configured on host1" };

test('the list: a row per volume, a syncing one with its progress and ETA, a failed one with its reason', () => {
  const out = renderVolumeAnswer(false, { verb: 'volume-list', views: [{ host: 'host1', volumes: [inSync, failed] }, { host: 'host2', volumes: [syncing] }] });
  const lines = out.split('\n');
  assert.match(lines[0]!, /^VOLUME\s+OWNER\s+GROUP\s+FORMAT\s+SIZE\s+ALLOCATED\s+SEEN FROM\s+STATE\s+DETAIL$/);
  assert.match(lines[1]!, /^db\s+host1\s+fast\s+qcow2\s+64\.0 MiB\s+-\s+host1\s+failed\s+storage group 'fast' is not configured on host1$/);
  assert.match(lines[2]!, /^demo\s+host1\s+default\s+qcow2\s+64\.0 MiB\s+3\.0 MiB\s+host1\s+in-sync\s+-$/);
  assert.match(lines[3]!, /^web .*syncing\s+\[#####\.+\]\s+25%\s+16\.0 MiB of 64\.0 MiB\s+8\.0 MiB\/s\s+eta 6\.0 s$/);
  assert.equal(renderVolumeAnswer(false, { verb: 'volume-list', views: [{ host: 'host1', volumes: [] }] }), 'no volumes (a VM has one per disk: `lockstep vm create NAME …`)');
});

test("each volume is shown as its owner sees it when the owner answered: only the owner measures a resync", () => {
  const fromBackup: VolumeView = { ...syncing, host: 'host1', sync: { copiedBytes: null, totalBytes: null, bytesPerSec: null, etaMs: null } };
  assert.deepEqual(volumeRows([{ host: 'host1', volumes: [fromBackup] }, { host: 'host2', volumes: [syncing] }]), [syncing]);
  assert.deepEqual(volumeRows([{ host: 'host1', volumes: [fromBackup] }]), [fromBackup], 'the owner did not answer: the backup stands for the pair');
  assert.equal(syncLine(fromBackup.sync ?? null, 'host2'), 'progress unknown here (host2 has it)');
  assert.equal(syncLine({ copiedBytes: 2 * MIB, totalBytes: null, bytesPerSec: null, etaMs: null }, 'host2'), '2.0 MiB copied  rate not measured yet');
});

test('show: every aspect of one volume, the sync line while syncing', () => {
  const out = renderVolumeShow(syncing);
  assert.match(out, /^volume\s+web$/m);
  assert.match(out, /^vm\s+web, its vda$/m, 'a view from before several disks: its one disk');
  assert.match(renderVolumeShow({ ...syncing, name: 'web.disk1', vm: 'web', disk: 'vdb' }), /^vm\s+web, its vdb$/m);
  assert.match(out, /^storage group\s+default$/m);
  assert.match(out, /^file\s+\/lab\/hosts\/host1\/disks\/demo\.qcow2 on host2$/m);
  assert.match(out, /^state\s+syncing: resyncing host1's copy$/m);
  assert.match(out, /^sync\s+\[#####.*eta 6\.0 s$/m);
  assert.match(renderVolumeShow(failed), /^allocated\s+no file yet$/m);
  assert.doesNotMatch(renderVolumeShow(inSync), /^sync/m);
});

test('storage groups: the table and show with the volumes; --json is the API answer untouched', () => {
  const small: StorageGroupView = { name: 'small', path: '/srv/small', sizeMiB: 8, capacityBytes: 8 * MIB, usedBytes: 3 * MIB, freeBytes: 5 * MIB, volumeCount: 1, error: null, volumes: [inSync] };
  const fsWide: StorageGroupView = { name: 'default', path: '/srv/disks', sizeMiB: null, capacityBytes: 100 * 1024 * MIB, usedBytes: 0, freeBytes: 50 * 1024 * MIB, volumeCount: 0, error: null };
  const table = renderVolumeAnswer(false, { verb: 'group-list', host: 'host1', groups: [fsWide, small] }).split('\n');
  assert.match(table[0]!, /^GROUP\s+HOST\s+PATH\s+CAPACITY\s+USED\s+FREE\s+VOLUMES$/);
  assert.match(table[1]!, /^default\s+host1\s+\/srv\/disks\s+100\.0 GiB \(file system\)\s+0 B\s+50\.0 GiB\s+0$/);
  assert.match(table[2]!, /^small\s+host1\s+\/srv\/small\s+8\.0 MiB \(cap\)\s+3\.0 MiB\s+5\.0 MiB\s+1$/);
  const shown = renderStorageGroupShow('host1', small);
  assert.match(shown, /^free\s+5\.0 MiB$/m);
  assert.match(shown, /^demo\s+host1\s+default/m, 'its volumes follow as a table');
  assert.equal(renderVolumeAnswer(true, { verb: 'group-show', host: 'host1', group: small }), JSON.stringify(small, null, 2));
  assert.equal(renderVolumeAnswer(true, { verb: 'volume-list', views: [{ host: 'host1', volumes: [inSync] }, { host: 'host2', volumes: [syncing] }] }), JSON.stringify([inSync], null, 2));
});
