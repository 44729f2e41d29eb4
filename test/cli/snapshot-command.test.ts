/**
 * `lockstep snapshot` and `lockstep vm create … --from`: parsing, how answers are shown, and the real CLI
 * against real lockstepd API sockets (the API harness: a state database, the core's driver, real qemu-img):
 * a stopped VM's snapshot taken, listed, shown, exported byte for byte with its progress line, made the source
 * of a new VM sized from it, refused deletion while that VM needs it, deleted; an image imported and refused;
 * exit codes and --json. In a lab (its notebook and two hosts' sockets, no namespaces), `list` asks both hosts
 * and an id is found on the host that holds it. The daemon's own tests are test/api/snapshots-api.test.ts.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLockstepError } from '../../src/util/errors.js';
import { parseSnapshotCommand, renderSnapshotAnswer, renderTransfer, type SnapshotRequest, type SnapshotView } from '../../src/cli/snapshot-command.js';
import { parseVmCommand } from '../../src/cli/vm-command.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { startApiServer } from '../../src/daemon/api.js';
import { createImage } from '../../src/storage/disk-image.js';
import { labPaths, newLabState, saveLabState } from '../../src/lab/lab-state.js';
import { SAMPLE_VM, startHarness, type Harness } from '../api/harness.js';
import { ioOk, qemuIo } from '../storage/helpers.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CLI = fileURLToPath(new URL('../../../bin/lockstep.js', import.meta.url));
const MIB = 1024 * 1024;
const ID = 'snap-0123456789ab';

test('each verb parses into its request; bad input is a usage error naming what is wrong', () => {
  const good: [string[], SnapshotRequest][] = [
    [['list'], { verb: 'list', vm: null, json: false, where: {} }],
    [['list', '--vm', 'web', '--json', '--host', 'host2'], { verb: 'list', vm: 'web', json: true, where: { host: 'host2' } }],
    [['show', ID], { verb: 'show', id: ID, json: false, where: {} }],
    [['delete', 'img-abcdefabcdef', '--socket', '/run/l.sock'], { verb: 'delete', id: 'img-abcdefabcdef', json: false, where: { socket: '/run/l.sock' } }],
    [['take', 'web'], { verb: 'take', vm: 'web', disk: 0, description: null, json: false, where: {} }],
    [['take', 'web', '--description', 'before the upgrade'], { verb: 'take', vm: 'web', disk: 0, description: 'before the upgrade', json: false, where: {} }],
    [['take', 'web', '--disk', '2'], { verb: 'take', vm: 'web', disk: 2, description: null, json: false, where: {} }],
    [['export', ID, '--output', 'out/web.qcow2'], { verb: 'export', id: ID, output: path.resolve('out/web.qcow2'), json: false, where: {} }],
    [['import', 'disk.img'], { verb: 'import', file: 'disk.img', storageGroup: null, description: null, json: false, where: {} }],
    [['import', 'disk.img', '--storage-group', 'fast', '--description', 'golden'], { verb: 'import', file: 'disk.img', storageGroup: 'fast', description: 'golden', json: false, where: {} }],
    [[], { verb: 'help', exit: 2 }],
    [['help'], { verb: 'help', exit: 0 }],
  ];
  for (const [argv, want] of good) assert.deepEqual(parseSnapshotCommand(argv), want, argv.join(' '));
  const bad: [string[], RegExp][] = [
    [['restore', ID], /unknown snapshot command 'restore'/],
    [['show'], /^usage: lockstep snapshot show ID$/],
    [['show', 'web'], /'web' is no snapshot or image id/],
    [['delete', 'snap-0123'], /'snap-0123' is no snapshot or image id/],
    [['take'], /^usage: lockstep snapshot take VM/],
    [['take', 'Web'], /VM name 'Web'/],
    [['take', 'web', '--description', 'x'.repeat(257)], /--description must be at most 256 printable characters/],
    [['take', 'web', '--description', 'two\nlines'], /--description must be at most 256/],
    [['take', 'web', '--name', 'x'], /Unknown option '--name'/],
    [['take', 'web', '--disk', '4'], /--disk is a disk's index, 0 \(vda\) to 3 \(got '4'\)/],
    [['take', 'web', '--disk', 'vdb'], /--disk is a disk's index, 0 \(vda\) to 3 \(got 'vdb'\)/],
    [['export', ID], /^usage: lockstep snapshot export ID --output FILE$/],
    [['import'], /^usage: lockstep snapshot import FILE/],
    [['list', 'web'], /^usage: lockstep snapshot list \[--vm NAME\]$/],
  ];
  for (const [argv, message] of bad) assert.throws(() => parseSnapshotCommand(argv), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && message.test(e.message), argv.join(' '));
});

test('vm create --from names the source; --disk is then optional, and the id is checked', () => {
  const req = parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--from', ID]);
  assert.ok(req.verb === 'create');
  assert.deepEqual(req.disks, [{ storageGroup: 'default', format: 'qcow2', from: ID }]);
  const sized = parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--disk', '32', '--from', ID]);
  assert.ok(sized.verb === 'create');
  assert.deepEqual(sized.disks, [{ storageGroup: 'default', format: 'qcow2', sizeMiB: 32, from: ID }]);
  // A data disk from an image, as large as it: from= in its --disk.
  const data = parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--disk', '16', '--disk', `from=${ID},format=raw`]);
  assert.ok(data.verb === 'create');
  assert.deepEqual(data.disks, [{ storageGroup: 'default', format: 'qcow2', sizeMiB: 16 }, { storageGroup: 'default', format: 'raw', from: ID }]);
  assert.throws(() => parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--disk', `8,from=${ID}`, '--from', ID]), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && /give one or the other/.test(e.message));
  assert.throws(() => parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--disk', '16', '--disk', 'format=raw']), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && /needs its size in MiB/.test(e.message));
  assert.throws(() => parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--disk', '16,from=web']), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && /'web' is no snapshot or image id/.test(e.message));
  assert.throws(() => parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1']), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && /needs --disk/.test(e.message));
  assert.throws(() => parseVmCommand(['create', 'web2', '--memory', '96', '--vcpus', '1', '--from', 'web']), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && /'web' is no snapshot or image id/.test(e.message));
});

const SNAP: SnapshotView = {
  id: ID,
  kind: 'snapshot',
  vm: 'web',
  host: 'host1',
  storageGroup: 'default',
  format: 'qcow2',
  created: '2026-01-02T03:04:05.000Z',
  virtualBytes: 16 * MIB,
  state: 'ready',
  description: 'before the upgrade',
  error: null,
  path: '/var/lib/lockstep/disks/snapshots/snap-0123456789ab.qcow2',
  fileBytes: 5 * MIB,
};
const IMG: SnapshotView = { ...SNAP, id: 'img-abcdefabcdef', kind: 'image', vm: null, format: 'raw', description: '', state: 'failed', error: 'lockstepd stopped', path: null, fileBytes: null };

test('answers render as a table, key-value lines, one line, or the JSON untouched', () => {
  const list = renderSnapshotAnswer(false, { verb: 'list', hosts: ['host1'], vm: null, snapshots: [SNAP, IMG] });
  assert.match(list, /^ID\s+HOST\s+OF\s+FORMAT\s+SIZE\s+ON DISK\s+STATE\s+CREATED\s+DESCRIPTION\n/);
  assert.match(list, /snap-0123456789ab\s+host1\s+VM web\s+qcow2\s+16\.0 MiB\s+5\.0 MiB\s+ready\s+2026-01-02T03:04:05.000Z\s+before the upgrade/);
  assert.match(list, /img-abcdefabcdef\s+host1\s+\(imported image\)\s+raw\s+16\.0 MiB\s+-\s+failed\s+\S+\s+-$/);
  assert.equal(renderSnapshotAnswer(false, { verb: 'list', hosts: ['host1', 'host2'], vm: null, snapshots: [] }), 'no snapshots or images on host1 or host2');
  assert.equal(renderSnapshotAnswer(false, { verb: 'list', hosts: ['host1'], vm: 'web', snapshots: [] }), 'no snapshots of VM web on host1');
  assert.deepEqual(JSON.parse(renderSnapshotAnswer(true, { verb: 'list', hosts: ['host1'], vm: null, snapshots: [SNAP] })), [SNAP]);
  const show = renderSnapshotAnswer(false, { verb: 'show', snapshot: IMG });
  assert.match(show, /^id\s+img-abcdefabcdef$/m);
  assert.match(show, /^file\s+- \(not ready\)$/m);
  assert.match(show, /^state\s+failed: lockstepd stopped$/m);
  assert.equal(renderSnapshotAnswer(false, { verb: 'take', snapshot: SNAP }), 'snapshot snap-0123456789ab of VM web ready on host1: a 16.0 MiB qcow2 disk, 5.0 MiB in storage group default');
  assert.equal(renderSnapshotAnswer(false, { verb: 'export', snapshot: SNAP, file: '/tmp/web.qcow2', bytes: 5 * MIB }), 'snapshot snap-0123456789ab exported from host1 to /tmp/web.qcow2: 5.0 MiB, qcow2');
  assert.deepEqual(JSON.parse(renderSnapshotAnswer(true, { verb: 'delete', host: 'host2', id: IMG.id })), { deleted: IMG.id, host: 'host2' });
  assert.equal(renderSnapshotAnswer(false, { verb: 'delete', host: 'host2', id: IMG.id }), 'image img-abcdefabcdef deleted from host2');
  assert.equal(renderTransfer(ID, 4 * MIB, 16 * MIB), `exporting ${ID}: [#####...............]  25%  4.0 MiB of 16.0 MiB`);
  assert.equal(renderTransfer(ID, 0, 0, 4), `exporting ${ID}: [####] 100%  0 B of 0 B`);
});

function cli(args: string[], env: Record<string, string> = { LOCKSTEP_LAB: `no-such-lab-${process.pid}` }): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The harness's API on `socket` (the lone host never starts a QEMU: a snapshot is of a stopped VM's volume). */
async function daemonAt(socket: string): Promise<Harness> {
  const h = await startHarness(cleanup);
  await mkdir(path.dirname(socket), { recursive: true });
  const server = await startApiServer(socket, h.api, { users: h.users, audit: h.audit }, () => {});
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return h;
}

/** VM `web`'s volume as its first start would have left it, with data in it. */
async function volumeOfWeb(h: Harness): Promise<string> {
  const volume = path.join(h.dir, 'disks', 'web.qcow2');
  await mkdir(path.dirname(volume), { recursive: true });
  await createImage(volume, 16, 'qcow2');
  assert.ok(ioOk(await qemuIo('qcow2', volume, ['write -P 0x5a 0 4M'])));
  return volume;
}

const GUEST = ['--mac', '52:54:00:12:34:57', '--address', '10.10.3.51', '--kernel', '/boot/vmlinuz', '--initrd', '/boot/initrd.img', '--cmdline', 'console=ttyS0'];

test('the CLI against a real lockstepd socket: take, list, show, export, a VM from it, delete, import; exit codes', async () => {
  const socket = path.join(os.tmpdir(), `lockstep-snap-cli-${process.pid}.sock`);
  cleanup.add(() => rm(socket, { force: true }));
  const h = await daemonAt(socket);
  const at = ['--socket', socket];
  await daemonRequest(socket, 'POST', '/v1/vms', { ...SAMPLE_VM, protection: 'none' });

  // No volume yet (it never started): refused by the daemon, exit 1.
  const early = await cli(['snapshot', 'take', 'web', ...at]);
  assert.equal(early.code, 1, early.stderr);
  assert.match(early.stderr, /^lockstep: no snapshot of VM web on this host: it has no volume on host1 yet/);
  const none = await cli(['snapshot', 'list', ...at]);
  assert.deepEqual([none.code, none.stdout], [0, 'no snapshots or images on host1\n']);

  await volumeOfWeb(h);
  const taken = await cli(['snapshot', 'take', 'web', '--description', 'before the upgrade', '--json', ...at]);
  assert.equal(taken.code, 0, taken.stderr);
  const snap = JSON.parse(taken.stdout) as SnapshotView;
  assert.deepEqual([snap.kind, snap.vm, snap.state, snap.format, snap.virtualBytes, snap.description], ['snapshot', 'web', 'ready', 'qcow2', 16 * MIB, 'before the upgrade']);
  const human = await cli(['snapshot', 'take', 'web', ...at]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^snapshot snap-[0-9a-f]{12} of VM web ready on host1: a 16\.0 MiB qcow2 disk, .* in storage group default\n$/);
  const second = human.stdout.split(' ')[1]!;

  const listed = await cli(['snapshot', 'list', '--vm', 'web', ...at]);
  assert.equal(listed.code, 0, listed.stderr);
  const rows = listed.stdout.trimEnd().split('\n');
  assert.equal(rows.length, 3, listed.stdout);
  assert.match(rows[1]!, new RegExp(`^${snap.id}\\s+host1\\s+VM web\\s+qcow2\\s+16\\.0 MiB\\s+\\S+ \\S+\\s+ready\\s+${snap.created}\\s+before the upgrade$`));
  assert.match(rows[2]!, new RegExp(`^${second}\\s+host1\\s+VM web\\s+.*\\s+-$`));
  const shown = await cli(['snapshot', 'show', snap.id, ...at]);
  assert.match(shown.stdout, new RegExp(`^file\\s+${snap.path}$`, 'm'));
  assert.deepEqual(JSON.parse((await cli(['snapshot', 'show', snap.id, '--json', ...at])).stdout), snap);

  // Exported: the file's very bytes, a progress line on stderr; never over an existing file (exit 2).
  const out = path.join(h.dir, 'web-export.qcow2');
  const exported = await cli(['snapshot', 'export', snap.id, '--output', out, ...at]);
  assert.equal(exported.code, 0, exported.stderr);
  const size = (await stat(snap.path!)).size;
  assert.deepEqual(await readFile(out), await readFile(snap.path!));
  assert.equal(exported.stdout, `snapshot ${snap.id} exported from host1 to ${out}: ${(size / MIB).toFixed(1)} MiB, qcow2\n`);
  assert.match(exported.stderr, new RegExp(`exporting ${snap.id}: \\[#{20}\\] 100%  \\S+ \\S+ of \\S+ \\S+\\n$`));
  const again = await cli(['snapshot', 'export', snap.id, '--output', out, '--json', ...at]);
  assert.equal(again.code, 2);
  assert.equal(JSON.parse(again.stdout).error.code, 'INVALID_ARGUMENT');
  const nowhere = await cli(['snapshot', 'export', snap.id, '--output', path.join(h.dir, 'no', 'such', 'dir', 'x'), ...at]);
  assert.equal(nowhere.code, 2);
  assert.match(nowhere.stderr, /is not a directory/);
  const unknown = await cli(['snapshot', 'export', 'snap-000000000000', '--output', path.join(h.dir, 'x'), ...at]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no snapshot or image 'snap-000000000000' on host1/);

  // A VM from it, its disk the snapshot's size when --disk is not given; the snapshot is then in use.
  const made = await cli(['vm', 'create', 'web2', '--memory', '96', '--vcpus', '1', '--protection', 'none', '--stopped', '--from', snap.id, ...GUEST, ...at]);
  assert.equal(made.code, 0, made.stderr);
  assert.match(made.stdout, new RegExp(`^VM web2 defined on host1: none, 1 vCPU, 96 MiB, vda 16 MiB made from snapshot ${snap.id} at its first start, `));
  const web2 = await daemonRequest<{ hardware: { diskMiB: number; source: unknown } }>(socket, 'GET', '/v1/vms/web2');
  assert.deepEqual([web2.hardware.diskMiB, web2.hardware.source], [16, { host: 'host1', image: snap.id, storageGroup: 'default', file: `${snap.id}.qcow2` }]);
  const small = await cli(['vm', 'create', 'web3', '--memory', '96', '--vcpus', '1', '--disk', '8', '--from', snap.id, ...GUEST, ...at]);
  assert.equal(small.code, 2, small.stderr);
  assert.match(small.stderr, /disks\[0\]\.sizeMiB must be at least that/);
  const inUse = await cli(['snapshot', 'delete', snap.id, '--json', ...at]);
  assert.equal(inUse.code, 1);
  assert.equal(JSON.parse(inUse.stdout).error.code, 'SNAPSHOT_IN_USE');
  assert.equal((await cli(['vm', 'remove', 'web2', ...at])).code, 0);
  const deleted = await cli(['snapshot', 'delete', snap.id, ...at]);
  assert.deepEqual([deleted.code, deleted.stdout], [0, `snapshot ${snap.id} deleted from host1\n`]);
  await assert.rejects(stat(snap.path!), 'its file is gone');
  const gone = await cli(['snapshot', 'show', snap.id, ...at]);
  assert.equal(gone.code, 2);

  // The export imported back: an image of the same disk. A file that is no image: IMAGE_INVALID, exit 2.
  const imported = await cli(['snapshot', 'import', out, '--description', 'golden', '--json', ...at]);
  assert.equal(imported.code, 0, imported.stderr);
  const img = JSON.parse(imported.stdout) as SnapshotView;
  assert.deepEqual([img.kind, img.vm, img.format, img.virtualBytes, img.state, img.description], ['image', null, 'qcow2', 16 * MIB, 'ready', 'golden']);
  assert.deepEqual(await readFile(img.path!), await readFile(out));
  const crumb = path.join(h.dir, 'crumb');
  await writeFile(crumb, Buffer.alloc(100, 1));
  const bad = await cli(['snapshot', 'import', crumb, ...at]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /an image of 100 bytes cannot be a VM's disk/);
  const missing = await cli(['snapshot', 'import', path.join(h.dir, 'nothing.img'), ...at]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read .*nothing\.img/);
  const ids = (JSON.parse((await cli(['snapshot', 'list', '--json', ...at])).stdout) as SnapshotView[]).map((s) => s.id);
  assert.deepEqual(ids, [second, img.id]);
});

test('in the lab with no host named, list asks both hosts and an id is found on the host that holds it', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-lab-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const env = { LOCKSTEP_LAB: `snapshot-${process.pid}`, LOCKSTEP_LAB_DIR: dir };
  const lab = labPaths(env);
  await mkdir(lab.dir, { recursive: true });
  await saveLabState(lab, newLabState(lab, new Date()));
  await daemonAt(lab.hostApiSocket('host1'));
  const host2 = await daemonAt(lab.hostApiSocket('host2'));
  const image = path.join(dir, 'disk.img');
  await writeFile(image, Buffer.alloc(MIB, 7));

  // Imported into host2 only.
  const imported = await cli(['snapshot', 'import', image, '--host', 'host2', '--json'], env);
  assert.equal(imported.code, 0, imported.stderr);
  const img = JSON.parse(imported.stdout) as SnapshotView;
  const listed = JSON.parse((await cli(['snapshot', 'list', '--json'], env)).stdout) as SnapshotView[];
  assert.deepEqual(listed.map((s) => s.id), [img.id]);
  assert.equal((await cli(['snapshot', 'list', '--host', 'host1'], env)).stdout, 'no snapshots or images on host1\n');
  // host1 answers first and does not have it: host2 is asked.
  const shown = await cli(['snapshot', 'show', img.id, '--json'], env);
  assert.equal(shown.code, 0, shown.stderr);
  assert.equal(JSON.parse(shown.stdout).id, img.id);
  const named = await cli(['snapshot', 'show', img.id, '--host', 'host1'], env);
  assert.equal(named.code, 2, 'a host named is asked alone');
  const deleted = await cli(['snapshot', 'delete', img.id], env);
  assert.deepEqual([deleted.code, deleted.stdout], [0, `image ${img.id} deleted from host2\n`]);
  assert.deepEqual(await host2.api.snapshots.list(), []);
});
