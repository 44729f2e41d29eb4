/**
 * HA protection end to end, in the lab, with real daemons, real QEMU and a real guest whose record service
 * acknowledges only durable appends. A client in the client namespace appends without pause throughout;
 * after each fault, every record the guest acknowledged must still be there with its text:
 * - host1's power cut: the VM restarts on host2 from host2's copy, and answers again;
 * - host1 back: it becomes the backup by itself (a full resync: its copy may hold writes the guest never
 *   acknowledged, at unknown places);
 * - the backup away and back while the VM runs: only the blocks written meanwhile are copied, and once the
 *   VM is stopped the two copies are identical (`qemu-img compare`); `lockstep volume list` says the volume
 *   is in sync before, from either host, and degraded while the guest writes alone;
 * - both A-Links cut with the quorum servers reachable only from host2: host1's instance stops before
 *   host2's starts (never two), and no acknowledged record is lost;
 * - live migrations (one completing under appends over one connection, one whose destination dies), and a
 *   business-network loss that moves the VM;
 * - a hung guest: its heartbeat stops, its QEMU is killed, and the VM restarts in place;
 * - a VM of two disks, the second made from an image only host1 holds: each disk mirrored, FT refused, both
 *   volumes on host2 after a power cut, and each one's copies identical once resynced.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../../src/util/paths.js';
import { daemonRequest } from '../../src/daemon/api-client.js';
import { checkAcknowledged, outageAfter, readLoadLog, type LoadEvent } from '../../src/lab/append-load.js';
import { RECORD_SERVICE_PORT } from '../../src/lab/guest-image.js';
import { labFtMemoryDir } from '../../src/lab/host-config.js';
import { MIGRATION_MULTIFD_CHANNELS } from '../../src/core/host-core.js';

const LAB = `h${process.pid}`;
const DIR = path.join(os.tmpdir(), `lockstep-lab-${LAB}`);
const env = { ...process.env, LOCKSTEP_LAB: LAB, LOCKSTEP_LAB_DIR: DIR };
const HOSTS = ['host1', 'host2'] as const;
type Host = (typeof HOSTS)[number];
const socket = (h: Host): string => path.join(DIR, 'hosts', h, 'run', 'lockstepd.sock');
const clientNs = `/run/netns/${LAB}-client`;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'lockstep-ha-test-'));

function lab(...args: string[]): string {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'lab', ...args], { env, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `lockstep lab ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

interface VmStatus {
  name: string;
  owner: string;
  state: string;
  local: { pid: number | null; state: string; mirror: { state: string; mode: string; lastSync: { mode: string; copiedBytes: number } | null } | null } | null;
}

async function vmOn(h: Host): Promise<VmStatus | null> {
  try {
    const s = await daemonRequest<{ vms: VmStatus[] }>(socket(h), 'GET', '/v1/status', undefined, 3000);
    return s.vms.find((v) => v.name === 'demo') ?? null;
  } catch {
    return null;
  }
}

/** The demo VM's volume as `lockstep volume list --json` shows it, asking host `h`. */
function volumeOn(h: Host): { state: string; reason: string } | undefined {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'volume', 'list', '--json', '--host', h], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `lockstep volume list --host ${h} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return (JSON.parse(r.stdout) as { name: string; state: string; reason: string }[]).find((v) => v.name === 'demo');
}

async function eventually<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The VM runs on `h` and the other host counts its copy current: HA's "protected". */
async function protectedOn(h: Host): Promise<void> {
  const other: Host = h === 'host1' ? 'host2' : 'host1';
  await eventually(`demo protected, running on ${h}`, async () => {
    const [here, there] = [await vmOn(h), await vmOn(other)];
    return here?.local?.pid && here.state === 'protected' && there?.state === 'protected';
  });
}

let address = '';
/** As the FT lab's (test/lab/ft.e2e.test.ts): an append under FT is answered once its epoch is acked. */
const FT_APPEND_TIMEOUT_MS = 60_000;

/**
 * The client's append loop, started in the client namespace; stop() ends it and returns its log. `steady`:
 * over one connection that must stay open (a live migration), not reconnecting after a failover.
 * `timeoutMs` bounds each append (the load's default is 3 s): an append under FT waits for its epoch's ack,
 * which on these loaded cores can take longer, and a steady load ends at its first timeout.
 */
function startLoad(name: string, connection: 'reconnect' | 'steady' = 'reconnect', timeoutMs?: number): { stop: () => Promise<LoadEvent[]> } {
  const out = path.join(scratch, `${name}.jsonl`);
  const script = path.join(repoRoot(), 'dist', 'src', 'lab', 'append-load.js');
  const reconnect = connection === 'reconnect' ? ['--reconnect'] : [];
  const timeout = timeoutMs === undefined ? [] : ['--timeout-ms', String(timeoutMs)];
  const child: ChildProcess = spawn('nsenter', [`--net=${clientNs}`, '--', process.execPath, script, '--out', out, ...reconnect, ...timeout, '--prefix', name, address, String(RECORD_SERVICE_PORT)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  return {
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return readLoadLog(out);
    },
  };
}

const acks = (events: readonly LoadEvent[]): number => events.filter((e) => e.t === 'ack').length;

async function waitForAcks(load: { stop: () => Promise<LoadEvent[]> }, name: string, n: number): Promise<void> {
  await eventually(`${n} appends acknowledged`, async () => {
    let events: LoadEvent[];
    try {
      events = readLoadLog(path.join(scratch, `${name}.jsonl`));
    } catch {
      return false;
    }
    // A steady load that lost its connection never acknowledges again: say why now, not at the timeout.
    const ended = events.find((e) => e.t === 'ended');
    if (ended) assert.fail(`the load ended after ${acks(events)} appends: ${ended.t === 'ended' ? ended.why : ''}`);
    return acks(events) >= n;
  });
  void load;
}

/** Asks the guest for every acknowledged seq over one connection from the client namespace. */
async function verify(events: readonly LoadEvent[]): Promise<string[]> {
  const script = `
    import(${JSON.stringify(path.join(repoRoot(), 'dist', 'src', 'lab', 'record-client.js'))}).then(async ({ RecordConnection }) => {
      const seqs = JSON.parse(process.argv[1]);
      const c = new RecordConnection(${JSON.stringify(address)}, ${RECORD_SERVICE_PORT}, { requestTimeoutMs: 10000 });
      await c.connect();
      const out = {};
      for (const s of seqs) out[s] = await c.request('get ' + s);
      c.close();
      console.log(JSON.stringify(out));
    });`;
  const seqs = [...new Set(events.flatMap((e) => (e.t === 'ack' ? [e.seq] : [])))];
  const r = spawnSync('nsenter', [`--net=${clientNs}`, '--', process.execPath, '--input-type=module', '-e', script, JSON.stringify(seqs)], { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  const replies = JSON.parse(r.stdout) as Record<string, string>;
  return checkAcknowledged(events, async (seq) => replies[seq] ?? 'no reply');
}

before(async () => {
  // 128 MiB as in the FT lab: the last test makes the VM FT, whose copy-and-compare tracker reads all of RAM per epoch.
  lab('up', '--vm', 'demo', '--protection', 'ha', '--memory', '128');
  const up = JSON.parse(lab('status', '--json')) as { vms: { name: string; address: string }[] };
  address = up.vms.find((v) => v.name === 'demo')!.address;
  await protectedOn('host1');
});

after(() => {
  // LOCKSTEP_KEEP_LOGS=DIR keeps both daemons' logs for a post-mortem (the lab's own files go with `lab down`).
  const keep = process.env['LOCKSTEP_KEEP_LOGS'];
  if (keep) for (const h of HOSTS) spawnSync('cp', ['-r', path.join(DIR, 'hosts', h, 'log'), path.join(keep, `ha-e2e-${h}`)]);
  spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'lab', 'down'], { env, encoding: 'utf8', timeout: 300_000 });
  rmSync(scratch, { recursive: true, force: true });
});

test("host1's power cut: the VM restarts on host2 from its copy with every acknowledged record", async (t) => {
  const load = startLoad('crash');
  await waitForAcks(load, 'crash', 30);
  lab('fail', 'host1', 'power');
  // When `lab fail` returns, host1's processes are gone: any later acknowledgement comes from host2.
  const faultAt = Date.now();
  await eventually('demo runs on host2', async () => (await vmOn('host2'))?.local?.pid);
  await eventually('appends are acknowledged again', async () => readLoadLog(path.join(scratch, 'crash.jsonl')).some((e) => e.t === 'ack' && e.atMs > faultAt + 100));
  await waitForAcks(load, 'crash', acks(readLoadLog(path.join(scratch, 'crash.jsonl'))) + 20);
  const events = await load.stop();
  const { lastAckBeforeMs, firstAckAfterMs } = outageAfter(events, faultAt);
  t.diagnostic(`${acks(events)} appends acknowledged; power cut → first append acknowledged on host2: ${firstAckAfterMs} ms (last before the cut ${lastAckBeforeMs} ms earlier)`);
  assert.deepEqual(await verify(events), [], 'every acknowledged record is on host2, unchanged');
});

test('host1 returns as the backup by itself: a full resync of its copy, then the VM is protected again', async () => {
  lab('heal', 'host1');
  await protectedOn('host2');
  const v = await vmOn('host2');
  assert.equal(v?.local?.mirror?.state, 'ready');
  assert.equal(v?.local?.mirror?.mode, 'full', 'host1 ran the guest last: its copy may hold unacknowledged writes anywhere');
});

test('the backup away and back: only the blocks written meanwhile are copied, and the copies end identical', async (t) => {
  // Both copies current: either host says so (the owner from its mirror, the backup from its copy record).
  for (const h of HOSTS) assert.equal(volumeOn(h)?.state, 'in-sync', `demo's volume as ${h} sees it: ${JSON.stringify(volumeOn(h))}`);
  const load = startLoad('away');
  await waitForAcks(load, 'away', 20);
  lab('fail', 'host1', 'power');
  const n = acks(readLoadLog(path.join(scratch, 'away.jsonl')));
  await waitForAcks(load, 'away', n + 100); // the guest goes on writing alone on host2
  await eventually("demo's volume degraded on host2 while its backup is away", async () => volumeOn('host2')?.state === 'degraded', 30_000);
  lab('heal', 'host1');
  await protectedOn('host2');
  const events = await load.stop();
  assert.deepEqual(await verify(events), []);
  const sync = (await vmOn('host2'))?.local?.mirror;
  assert.equal(sync?.mode, 'incremental', 'host1 was a backup that missed writes: an incremental resync');
  const info = spawnSync('qemu-img', ['info', '-U', '--output=json', path.join(DIR, 'hosts', 'host2', 'disks', 'demo.qcow2')], { encoding: 'utf8' });
  const diskBytes = (JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'];
  t.diagnostic(`incremental resync copied ${sync?.lastSync?.copiedBytes} bytes of a ${diskBytes}-byte disk`);
  assert.ok(sync?.lastSync && sync.lastSync.copiedBytes < diskBytes / 8, `copied ${sync?.lastSync?.copiedBytes} bytes, far less than the disk`);

  // Quiesce (stop the VM), then compare the two copies block for block.
  await daemonRequest(socket('host2'), 'POST', '/v1/vms/demo/stop', undefined, 10_000);
  await eventually('demo stopped', async () => !(await vmOn('host2'))?.local);
  const img = (h: Host): string => path.join(DIR, 'hosts', h, 'disks', 'demo.qcow2');
  const cmp = spawnSync('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', img('host1'), img('host2')], { encoding: 'utf8' });
  assert.equal(cmp.status, 0, `the copies differ: ${cmp.stdout}${cmp.stderr}`);
  await daemonRequest(socket('host2'), 'POST', '/v1/vms/demo/start', undefined, 10_000);
  await protectedOn('host2');
});

test('both A-Links cut, quorum only on host1: host2 stops its instance, host1 runs the VM, no acknowledged record lost', async () => {
  const load = startLoad('split');
  await waitForAcks(load, 'split', 20);
  lab('fail', 'host2', 'mgmt');
  lab('fail', 'host1', 'alink');
  await eventually('demo runs on host1', async () => (await vmOn('host1'))?.local?.pid, 60_000);
  const n = acks(readLoadLog(path.join(scratch, 'split.jsonl')));
  await waitForAcks(load, 'split', n + 20);
  // host2 fenced itself: its instance is gone (a stop escalates to SIGKILL when the guest's I/O hangs).
  await eventually('host2 runs no instance', async () => ((await vmOn('host2'))?.local ?? null) === null, 30_000);
  lab('heal');
  await protectedOn('host1');
  const events = await load.stop();
  assert.deepEqual(await verify(events), []);
});

function vmCli(...args: string[]): string {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'vm', ...args], { env, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `lockstep vm ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

test('live migration under continuous appends: no append fails, the connection stays open, no record lost', async (t) => {
  const load = startLoad('migrate', 'steady');
  await waitForAcks(load, 'migrate', 20);
  const pidBefore = (await vmOn('host1'))?.local?.pid;
  assert.ok(pidBefore, 'demo runs on host1 before');
  const migrated = vmCli('migrate', 'demo').split('\n').at(-1) ?? '';
  t.diagnostic(migrated);
  assert.match(migrated, new RegExp(`RAM over ${MIGRATION_MULTIFD_CHANNELS} multifd connections`), 'the pair agreed on multifd');
  await protectedOn('host2');
  const n = acks(readLoadLog(path.join(scratch, 'migrate.jsonl')));
  await waitForAcks(load, 'migrate', n + 20);
  const events = await load.stop();
  assert.deepEqual(events.filter((e) => e.t === 'failed' || (e.t === 'ended' && e.why !== 'stopped')), [], 'no append failed, the connection never dropped');
  assert.equal(events.filter((e) => e.t === 'connected').length, 1, 'one connection throughout');
  const latencies = events.flatMap((e) => (e.t === 'ack' ? [e.latencyMs] : []));
  t.diagnostic(`${acks(events)} appends over one connection across the migration; slowest ${Math.round(Math.max(...latencies))} ms`);
  assert.deepEqual(await verify(events), []);
});

test('a migration whose destination dies half-way: the VM keeps running where it was, nothing lost', async () => {
  const load = startLoad('abort');
  await waitForAcks(load, 'abort', 20);
  const pidBefore = (await vmOn('host2'))?.local?.pid;
  vmCli('migrate', 'demo', '--no-wait');
  await eventually('the migration is under way', async () => (await vmOn('host2'))?.state === 'migrating', 30_000);
  await eventually('the destination receives', async () => (await vmOn('host1'))?.local?.state === 'incoming', 60_000);
  lab('fail', 'host1', 'power');
  await eventually('host2 gave the migration up', async () => (await vmOn('host2'))?.state !== 'migrating', 60_000);
  assert.equal((await vmOn('host2'))?.local?.pid, pidBefore, 'the same QEMU runs on, on host2');
  const n = acks(readLoadLog(path.join(scratch, 'abort.jsonl')));
  await waitForAcks(load, 'abort', n + 20);
  lab('heal', 'host1');
  await protectedOn('host2');
  const events = await load.stop();
  assert.deepEqual(await verify(events), []);
});

test("business-network loss on the VM's host: it migrates to the peer, where the client reaches it", async () => {
  lab('fail', 'host2', 'business');
  await eventually('demo runs on host1', async () => (await vmOn('host1'))?.local?.state === 'running', 120_000);
  lab('heal', 'host2');
  await protectedOn('host1');
  const load = startLoad('business');
  await waitForAcks(load, 'business', 10);
  assert.deepEqual(await verify(await load.stop()), []);
});

test('a hung guest (it stops beating while running) is killed and restarted in place, with every acknowledged record', async (t) => {
  const load = startLoad('hang');
  await waitForAcks(load, 'hang', 20);
  const before = await vmOn('host1');
  assert.ok(before?.local?.pid, 'demo runs on host1 before');
  // The lab guest's fault: a runaway real-time process on every CPU; nothing in the guest's userland runs again.
  assert.equal(lab('record', 'hang'), 'hanging');
  const hungAt = Date.now();
  const after = await eventually(
    'demo killed as hung and running again on host1',
    async () => {
      const v = (await vmOn('host1')) as (VmStatus & { lastExit: { cause: string } | null }) | null;
      return v?.lastExit?.cause === 'guest-hung' && v.local?.state === 'running' && v.local.pid !== before.local!.pid ? v : null;
    },
    120_000,
  );
  t.diagnostic(`hang → running again on host1 (pid ${after.local?.pid}) in ${Date.now() - hungAt} ms`);
  await eventually('appends are acknowledged again', async () => readLoadLog(path.join(scratch, 'hang.jsonl')).some((e) => e.t === 'ack' && e.atMs > hungAt + 1000));
  const events = await load.stop();
  assert.deepEqual(await verify(events), [], 'every acknowledged record survived the hang and the restart');
  await protectedOn('host1');
});

test('an HA VM made FT while it runs: the same QEMU comes under an FT run, one connection throughout, and back to HA', async (t) => {
  const load = startLoad('into-ft', 'steady', FT_APPEND_TIMEOUT_MS);
  await waitForAcks(load, 'into-ft', 20);
  const pid = (await vmOn('host1'))?.local?.pid;
  assert.ok(pid, 'demo runs on host1 before');
  // First host2, the backup, has no room for the checkpoint image: a 64 MiB tmpfs over its FT memory
  // directory (empty: host2 runs no guest), where the 128 MiB guest's image would go. FT is admitted once
  // it goes.
  const backupMemory = labFtMemoryDir(LAB, 'host2');
  const small = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', `${LAB}-small-ft-memory`, backupMemory], { encoding: 'utf8' });
  assert.equal(small.status, 0, `mount a small tmpfs on ${backupMemory}: ${small.stderr}`);
  let mounted = true;
  const unmount = (): void => {
    if (mounted) spawnSync('umount', ['-l', backupMemory]);
    mounted = false;
  };
  t.after(unmount);
  vmCli('protect', 'demo', '--level', 'ft', '--host', 'host1');
  // What was seen last goes into the failure: this wait once ran out in a full run and not since.
  let seen = '';
  await eventually('demo downgraded to HA, host1 alerting that host2 has no room for FT', async () => {
    const alerts = await daemonRequest<{ code: string }[]>(socket('host1'), 'GET', '/v1/events?kind=alert&limit=50', undefined, 5000);
    const [here, there] = [await vmOn('host1'), await vmOn('host2')];
    seen = `host1 ${here?.state}, host2 ${there?.state}, alerts ${alerts.map((a) => a.code).join(' ')}`;
    return alerts.some((a) => a.code === 'FT_BACKUP_NO_ROOM') && here?.state === 'downgraded';
  }).catch((e: unknown) => assert.fail(`${(e as Error).message} (last seen: ${seen})`));
  await new Promise((r) => setTimeout(r, 3000));
  const downgraded = (await vmOn('host1')) as (VmStatus & { local: { ft?: { state: string } | null } | null }) | null;
  assert.equal(downgraded?.state, 'downgraded', 'still HA while host2 has no room');
  assert.notEqual(downgraded?.local?.ft?.state, 'protecting', 'no FT run without room on the backup');
  unmount();
  const ft = await eventually('demo under an FT run with epochs committed on host2', async () => {
    const v = (await vmOn('host1')) as (VmStatus & { local: { ft?: { state: string; peerCommittedEpoch: number | null } | null } | null }) | null;
    const run = v?.local?.ft;
    return run?.state === 'protecting' && (run.peerCommittedEpoch ?? 0) >= 2 && v?.state === 'protected' && run;
  });
  assert.equal((await vmOn('host1'))?.local?.pid, pid, 'the guest was not restarted to become FT');
  t.diagnostic(`FT run protecting, host2 committed epoch ${ft.peerCommittedEpoch}`);
  const n = acks(readLoadLog(path.join(scratch, 'into-ft.jsonl')));
  await waitForAcks(load, 'into-ft', n + 10);
  vmCli('protect', 'demo', '--level', 'ha', '--host', 'host1');
  await eventually('demo HA again (its run handed over)', async () => {
    const v = (await vmOn('host1')) as (VmStatus & { local: { ft?: { state: string } | null } | null }) | null;
    return v?.local?.ft?.state === 'handed-over' && v.state === 'protected';
  });
  await waitForAcks(load, 'into-ft', acks(readLoadLog(path.join(scratch, 'into-ft.jsonl'))) + 10);
  const events = await load.stop();
  assert.equal((await vmOn('host1'))?.local?.pid, pid, 'the same QEMU throughout');
  assert.deepEqual(events.filter((e) => e.t === 'failed' || (e.t === 'ended' && e.why !== 'stopped')), [], 'no append failed, the connection never dropped');
  assert.equal(events.filter((e) => e.t === 'connected').length, 1, 'one connection throughout');
  assert.deepEqual(await verify(events), []);
});

/** VM `name` as host `h` sees it, with its disks' mirrors. */
async function vmNamed(h: Host, name: string): Promise<(VmStatus & { local: { mirror: { disks: { state: string }[] } | null } | null }) | null> {
  try {
    const s = await daemonRequest<{ vms: (VmStatus & { local: { mirror: { disks: { state: string }[] } | null } | null })[] }>(socket(h), 'GET', '/v1/status', undefined, 3000);
    return s.vms.find((v) => v.name === name) ?? null;
  } catch {
    return null;
  }
}

/** VM `name` runs on `h`, the peer counts its copies current, and every disk's mirror is ready. */
async function allDisksProtectedOn(h: Host, name: string, disks: number): Promise<void> {
  const other: Host = h === 'host1' ? 'host2' : 'host1';
  await eventually(
    `${name} protected on ${h}, its ${disks} disks mirrored`,
    async () => {
      const [here, there] = [await vmNamed(h, name), await vmNamed(other, name)];
      const mirrors = here?.local?.mirror?.disks ?? [];
      return here?.local?.pid && here.state === 'protected' && there?.state === 'protected' && mirrors.length === disks && mirrors.every((d) => d.state === 'ready');
    },
    300_000,
  );
}

test('a VM of two disks: each mirrored, the second made from an image only host1 holds; FT refused; both on host2 after a power cut', async (t) => {
  // The data disk's image: 4 MiB of a pattern at its start. Only host1 receives it: host2's copy of the
  // volume can only have it through the mirror.
  const image = path.join(scratch, 'data.raw');
  assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'raw', image, '8M']).status, 0);
  const written = spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 4M', image], { encoding: 'utf8' });
  assert.equal(written.status, 0, written.stderr);
  const imported = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'snapshot', 'import', image, '--host', 'host1', '--json'], { env, encoding: 'utf8', timeout: 120_000 });
  assert.equal(imported.status, 0, imported.stderr);
  const { id } = JSON.parse(imported.stdout) as { id: string };
  vmCli('create', 'two', '--memory', '96', '--vcpus', '1', '--disk', '16', '--disk', `from=${id}`, '--protection', 'ha', '--host', 'host1');
  await allDisksProtectedOn('host1', 'two', 2);

  const volumes = JSON.parse(spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'volume', 'list', '--json', '--host', 'host2'], { env, encoding: 'utf8', timeout: 60_000 }).stdout) as { name: string; disk: string; state: string; sizeBytes: number }[];
  assert.deepEqual(
    volumes.filter((v) => v.name.startsWith('two')).map((v) => [v.name, v.disk, v.state, v.sizeBytes]),
    [
      ['two', 'vda', 'in-sync', 16 << 20],
      ['two.disk1', 'vdb', 'in-sync', 8 << 20],
    ],
  );
  const ft = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'vm', 'protect', 'two', '--level', 'ft', '--host', 'host1'], { env, encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(ft.status, 0, 'FT is refused for a VM of two disks');
  assert.match(ft.stderr, /FT protects a VM of one disk; this one has 2/);

  lab('fail', 'host1', 'power');
  const faultAt = Date.now();
  await eventually('two runs on host2', async () => (await vmNamed('host2', 'two'))?.local?.pid, 180_000);
  t.diagnostic(`power cut → two's QEMU on host2 in ${Date.now() - faultAt} ms`);
  lab('heal', 'host1');
  await allDisksProtectedOn('host2', 'two', 2);

  // Quiesced, each volume's two copies are identical, and host2's data disk holds the image's pattern.
  await daemonRequest(socket('host2'), 'POST', '/v1/vms/two/stop', undefined, 10_000);
  await eventually('two stopped', async () => !(await vmNamed('host2', 'two'))?.local);
  for (const volume of ['two', 'two.disk1']) {
    const img = (h: Host): string => path.join(DIR, 'hosts', h, 'disks', `${volume}.qcow2`);
    const cmp = spawnSync('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', img('host1'), img('host2')], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, `${volume}'s copies differ: ${cmp.stdout}${cmp.stderr}`);
  }
  const read = spawnSync('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x5a 0 4M', path.join(DIR, 'hosts', 'host2', 'disks', 'two.disk1.qcow2')], { encoding: 'utf8' });
  assert.equal(read.status, 0, read.stderr);
  assert.doesNotMatch(read.stdout, /Pattern verification failed/, "host2's data disk holds the image host1 made it from");
});
