/**
 * FT protection end to end, in the lab: real daemons, real QEMU, the real guest, and a client that keeps ONE
 * TCP connection to the guest's record service open and appends on it without pause.
 * - the VM runs on host1 under FT: its epochs are acknowledged by host2, and the status shows the epoch rate,
 *   the pauses, the lag and the peer's committed epoch;
 * - host1's power cut at a random moment: host2 resumes the guest from its last committed checkpoint (no
 *   boot): the same connection carries on after a pause, every acknowledged record is there with its text,
 *   and no seq acknowledged after the cut has other content than before it;
 * - host1 back: protection returns by itself, host2 now the primary (a new run from the resumed guest);
 * - the running VM switched to HA (its run handed over: the copy keeps every write) and back to FT (a new
 *   run over a mirror into the epoch disk), under appends on the one connection, with the same QEMU;
 * - the VM live-migrated to the other host (`lockstep vm migrate`): its run handed over first, the guest
 *   moved with its RAM into a file there, FT again from the new host, the one connection never failing;
 * - the backup lost while the guest runs: the primary's held output goes out once the core cuts the mirror
 *   (the guest runs on unprotected, same connection, same QEMU), and FT returns with the backup.
 *
 * `LOCKSTEP_FT_LAB_REPEATS` (default 2: a cut of each host) repeats the power cut and the return, each at a
 * random moment, alternating hosts; a round costs about 40 s on 2 cores, so CI runs 2 and the issue's 20 are
 * `LOCKSTEP_FT_LAB_REPEATS=20 node scripts/run-tests.js lab/ft`, run by hand (docs/ft.md has the last result).
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
import type { FtView } from '../../src/cli/vm-view.js';

const LAB = `f${process.pid}`;
const DIR = path.join(os.tmpdir(), `lockstep-lab-${LAB}`);
const env = { ...process.env, LOCKSTEP_LAB: LAB, LOCKSTEP_LAB_DIR: DIR };
const HOSTS = ['host1', 'host2'] as const;
type Host = (typeof HOSTS)[number];
const other = (h: Host): Host => (h === 'host1' ? 'host2' : 'host1');
const socket = (h: Host): string => path.join(DIR, 'hosts', h, 'run', 'lockstepd.sock');
const clientNs = `/run/netns/${LAB}-client`;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'lockstep-ft-test-'));
const REPEATS = Number(process.env['LOCKSTEP_FT_LAB_REPEATS'] ?? '2');
/** An FT failover is a pause of the connection: detection, the core's decision, the resume, TCP's retransmission. */
const APPEND_TIMEOUT_MS = 60_000;

function lab(...args: string[]): string {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'lab', ...args], { env, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `lockstep lab ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

interface VmStatus {
  name: string;
  state: string;
  local: { pid: number | null; state: string; ft: FtView | null; resumedFrom: { epoch: number } | null; mirror: { state: string } | null } | null;
}

async function vmOn(h: Host): Promise<VmStatus | null> {
  try {
    const s = await daemonRequest<{ vms: VmStatus[] }>(socket(h), 'GET', '/v1/status', undefined, 3000);
    return s.vms.find((v) => v.name === 'demo') ?? null;
  } catch {
    return null;
  }
}

async function eventually<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 180_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The VM runs on `h` under FT, its epochs acknowledged by the other host, which counts its copy current. */
async function ftProtectedOn(h: Host): Promise<FtView> {
  return eventually(`demo FT-protected, running on ${h}`, async () => {
    const [here, there] = [await vmOn(h), await vmOn(other(h))];
    const ft = here?.local?.ft;
    return here?.state === 'protected' && there?.state === 'protected' && ft?.state === 'protecting' && (ft.peerCommittedEpoch ?? 0) >= 2 && ft;
  });
}

let address = '';

/** The client's append loop on one connection (never reconnecting), in the client namespace. */
function startLoad(name: string): { file: string; stop: () => Promise<LoadEvent[]> } {
  const file = path.join(scratch, `${name}.jsonl`);
  const script = path.join(repoRoot(), 'dist', 'src', 'lab', 'append-load.js');
  const child: ChildProcess = spawn('nsenter', [`--net=${clientNs}`, '--', process.execPath, script, '--out', file, '--timeout-ms', String(APPEND_TIMEOUT_MS), '--prefix', name, address, String(RECORD_SERVICE_PORT)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  return {
    file,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return readLoadLog(file);
    },
  };
}

const acks = (events: readonly LoadEvent[]): number => events.filter((e) => e.t === 'ack').length;
const logOf = (file: string): LoadEvent[] => {
  try {
    return readLoadLog(file);
  } catch {
    return [];
  }
};

/**
 * Sends each line over one fresh connection from the client namespace; the replies in order. Pipelined, 64
 * at a time: under FT every answer waits for its epoch's ack, and hundreds of reads one after the other
 * took minutes.
 */
function ask(lines: readonly string[]): string[] {
  const script = `
    import(${JSON.stringify(path.join(repoRoot(), 'dist', 'src', 'lab', 'record-client.js'))}).then(async ({ RecordConnection }) => {
      const c = new RecordConnection(${JSON.stringify(address)}, ${RECORD_SERVICE_PORT}, { requestTimeoutMs: 20000, connectTimeoutMs: 20000 });
      await c.connect();
      const out = [];
      const lines = JSON.parse(process.argv[1]);
      for (let i = 0; i < lines.length; i += 64) out.push(...(await Promise.all(lines.slice(i, i + 64).map((l) => c.request(l)))));
      c.close();
      console.log(JSON.stringify(out));
    });`;
  const r = spawnSync('nsenter', [`--net=${clientNs}`, '--', process.execPath, '--input-type=module', '-e', script, JSON.stringify(lines)], { encoding: 'utf8', timeout: 300_000, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as string[];
}

/**
 * What is wrong with the acknowledged records, read back over one connection: a record missing or with
 * other text, or a seq acknowledged twice with two texts (a contradiction). Empty when all is well.
 */
async function unreadable(events: readonly LoadEvent[]): Promise<string[]> {
  const seqs = [...new Set(events.flatMap((e) => (e.t === 'ack' ? [e.seq] : [])))];
  const replies = ask(seqs.map((s) => `get ${s}`));
  const bySeq = new Map(seqs.map((s, i) => [s, replies[i]!]));
  return checkAcknowledged(events, async (seq) => bySeq.get(seq) ?? 'no reply');
}

const uptimeMs = (): number => Number(/uptime_ms=(\d+)/.exec(ask(['stats'])[0]!)?.[1]);

before(async () => {
  lab('up', '--vm', 'demo', '--protection', 'ft', '--memory', '128');
  const up = JSON.parse(lab('status', '--json')) as { vms: { name: string; address: string }[] };
  address = up.vms.find((v) => v.name === 'demo')!.address;
  await ftProtectedOn('host1');
});

after(() => {
  // LOCKSTEP_KEEP_LOGS=DIR keeps both daemons' logs for a post-mortem (the lab's own files go with `lab down`).
  const keep = process.env['LOCKSTEP_KEEP_LOGS'];
  if (keep) for (const h of HOSTS) spawnSync('cp', ['-r', path.join(DIR, 'hosts', h, 'log'), path.join(keep, `ft-e2e-${h}`)]);
  spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'lab', 'down'], { env, encoding: 'utf8', timeout: 300_000 });
  rmSync(scratch, { recursive: true, force: true });
});

test('the status shows the FT run: epoch rate, pauses, lag and the peer’s committed epoch', async () => {
  const ft = await ftProtectedOn('host1');
  assert.equal(ft.epochMs, 200, "the lab's epoch length");
  assert.ok(ft.epochsPerSec !== null && ft.epochsPerSec! > 0, `epochs run: ${JSON.stringify(ft)}`);
  assert.ok(ft.lastPauseMs !== null && ft.lastPauseMs! > 0 && ft.pauseP99Ms !== null, `pauses measured: ${JSON.stringify(ft)}`);
  assert.ok(ft.lagEpochs === 0 || ft.lagEpochs === 1, `at most one checkpoint in flight: ${ft.lagEpochs}`);
  assert.ok((ft.sentEpoch ?? 0) >= (ft.peerCommittedEpoch ?? 0));
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'vm', 'show', 'demo', '--host', 'host1'], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /ft\s+protecting, run \d+, epochs of 200 ms/);
  assert.match(r.stdout, /ft epochs\s+[\d.]+\/s, pause last [\d.]+ ms, p50 [\d.]+ ms, p99 [\d.]+ ms, peer committed \d+ of \d+ sent \(lag [01]\)/);
});

for (let round = 1; round <= REPEATS; round++) {
  // Round 1 cuts host1 (the VM's first host), round 2 host2 (where round 1 left it), and so on.
  const primary: Host = round % 2 === 1 ? 'host1' : 'host2';
  const backup = other(primary);

  test(`round ${round}: ${primary}'s power cut at a random moment: ${backup} resumes the guest, the one connection carries on, nothing acknowledged is lost`, async (t) => {
    await ftProtectedOn(primary);
    const uptimeBefore = uptimeMs();
    const load = startLoad(`cut${round}`);
    await eventually('20 appends acknowledged', async () => acks(logOf(load.file)) >= 20);
    await new Promise((r) => setTimeout(r, Math.random() * 3000));
    lab('fail', primary, 'power');
    // When `lab fail` returns, the primary's processes are gone: a later acknowledgement comes from the backup.
    const faultAt = Date.now();
    const resumed = await eventually(`demo resumed on ${backup}`, async () => (await vmOn(backup))?.local?.resumedFrom);
    await eventually('appends acknowledged again on the same connection', async () => logOf(load.file).some((e) => e.t === 'ack' && e.atMs > faultAt + 50));
    await eventually('20 more appends', async () => logOf(load.file).filter((e) => e.t === 'ack' && e.atMs > faultAt).length >= 20);
    const events = await load.stop();
    const ended = events.filter((e) => e.t === 'ended' || e.t === 'failed');
    assert.deepEqual(
      ended.map((e) => e.t),
      ['ended'],
      `the connection never failed, only the test stopped it: ${JSON.stringify(ended)}`,
    );
    assert.equal(events.filter((e) => e.t === 'connected').length, 1, 'one connection throughout');
    const { lastAckBeforeMs, firstAckAfterMs } = outageAfter(events, faultAt);
    t.diagnostic(`resumed from checkpoint ${resumed.epoch}; ${acks(events)} appends; power cut → first append answered on the same connection: ${firstAckAfterMs} ms (last before the cut ${lastAckBeforeMs} ms earlier)`);
    assert.deepEqual(await unreadable(events), []);
    assert.ok(uptimeMs() > uptimeBefore, 'the guest ran on: its service did not start again');
  });

  test(`round ${round}: ${primary} back: FT protection returns by itself, ${backup} the primary`, async () => {
    lab('heal', primary);
    const ft = await ftProtectedOn(backup);
    assert.ok((ft.run ?? 0) >= 1);
    const v = await vmOn(backup);
    assert.equal(v?.local?.mirror?.state, 'ready');
  });
}

/** `lockstep vm protect demo --level LEVEL`, asked of `h`. */
function protect(h: Host, level: 'ha' | 'ft'): void {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'vm', 'protect', 'demo', '--level', level, '--host', h], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `vm protect --level ${level}: ${r.stderr}${r.stdout}`);
}

test('the running VM switched from FT to HA and back under appends on one connection: no append fails, the same QEMU, its run handed over and then a new one', async (t) => {
  const primary = await eventually('the host that runs demo', async () => ((await vmOn('host1'))?.local?.ft ? 'host1' : (await vmOn('host2'))?.local?.ft ? 'host2' : null) as Host | null);
  const before = await ftProtectedOn(primary);
  const pid = (await vmOn(primary))?.local?.pid;
  const uptimeBefore = uptimeMs();
  const load = startLoad('switch');
  await eventually('10 appends acknowledged', async () => acks(logOf(load.file)) >= 10);

  protect(primary, 'ha');
  const handedOver = await eventually('the FT run handed over, the VM mirrored as HA', async () => {
    const [here, there] = [await vmOn(primary), await vmOn(other(primary))];
    return here?.local?.ft?.state === 'handed-over' && here.local.mirror?.state === 'ready' && here.state === 'protected' && there?.state === 'protected' && here.local.ft;
  });
  const atHa = acks(logOf(load.file));
  await eventually('10 more appends as HA', async () => acks(logOf(load.file)) >= atHa + 10);

  protect(primary, 'ft');
  const again = await ftProtectedOn(primary);
  assert.ok((again.run ?? 0) > (before.run ?? 0), `a new protection run: ${before.run} → ${again.run}`);
  const atFt = acks(logOf(load.file));
  await eventually('10 more appends under FT again', async () => acks(logOf(load.file)) >= atFt + 10);
  const events = await load.stop();
  t.diagnostic(`handed over after epoch ${handedOver.peerCommittedEpoch} of run ${handedOver.run}; FT again in run ${again.run}; ${acks(events)} appends`);
  assert.deepEqual(
    events.filter((e) => e.t === 'ended' || e.t === 'failed').map((e) => e.t),
    ['ended'],
    'the connection never failed',
  );
  assert.equal((await vmOn(primary))?.local?.pid, pid, 'the same QEMU throughout');
  assert.ok(uptimeMs() > uptimeBefore, 'the guest ran on');
  assert.deepEqual(await unreadable(events), []);
});

test('live migration of the FT VM under appends on one connection: its run handed over, the guest moved, FT again on the other host, no append fails', async (t) => {
  const source = await eventually('the host that runs demo', async () => ((await vmOn('host1'))?.local?.ft ? 'host1' : (await vmOn('host2'))?.local?.ft ? 'host2' : null) as Host | null);
  const destination = other(source);
  await ftProtectedOn(source);
  const uptimeBefore = uptimeMs();
  const load = startLoad('ft-migrate');
  await eventually('10 appends acknowledged', async () => acks(logOf(load.file)) >= 10);
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'lockstep.js'), 'vm', 'migrate', 'demo', '--host', source], { env, encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, `vm migrate: ${r.stderr}${r.stdout}`);
  t.diagnostic(r.stdout.trim().split('\n').at(-1) ?? '');
  const ft = await ftProtectedOn(destination);
  const atFt = acks(logOf(load.file));
  await eventually('10 more appends under FT on the destination', async () => acks(logOf(load.file)) >= atFt + 10);
  const events = await load.stop();
  t.diagnostic(`FT on ${destination} in run ${ft.run}, peer committed epoch ${ft.peerCommittedEpoch}; ${acks(events)} appends`);
  assert.deepEqual(
    events.filter((e) => e.t === 'ended' || e.t === 'failed').map((e) => e.t),
    ['ended'],
    'the connection never failed',
  );
  assert.ok(uptimeMs() > uptimeBefore, 'the guest ran on: no reboot');
  assert.deepEqual(await unreadable(events), []);
});

test('the backup lost while the guest runs: its output goes on unprotected, and FT returns with the backup, without a guest restart', async () => {
  const primary = await eventually('the host that runs demo', async () => ((await vmOn('host1'))?.local?.ft ? 'host1' : (await vmOn('host2'))?.local?.ft ? 'host2' : null) as Host | null);
  const backup = other(primary);
  const before = await ftProtectedOn(primary);
  const pid = (await vmOn(primary))?.local?.pid;
  const uptimeBefore = uptimeMs();
  const load = startLoad('backup-lost');
  await eventually('10 appends acknowledged', async () => acks(logOf(load.file)) >= 10);
  lab('fail', backup, 'power');
  const faultAt = Date.now();
  // The core cuts the mirror once the backup is lost and the primary holds authority alone: that cut lets
  // the held output go, so the appends go on (unprotected) on the same connection.
  await eventually('the FT run went unprotected', async () => (await vmOn(primary))?.local?.ft?.state === 'unprotected');
  await eventually('20 appends after the backup was lost', async () => logOf(load.file).filter((e) => e.t === 'ack' && e.atMs > faultAt).length >= 20);
  lab('heal', backup);
  const after = await ftProtectedOn(primary);
  assert.ok((after.run ?? 0) > (before.run ?? 0), `a new protection run: ${before.run} → ${after.run}`);
  const events = await load.stop();
  assert.deepEqual(
    events.filter((e) => e.t === 'ended' || e.t === 'failed').map((e) => e.t),
    ['ended'],
    'the connection never failed',
  );
  assert.equal((await vmOn(primary))?.local?.pid, pid, 'the same QEMU throughout');
  assert.ok(uptimeMs() > uptimeBefore, 'the guest ran on');
  assert.deepEqual(await unreadable(events), []);
});
