// Live migration between two real QEMUs (TCG) over loopback TCP. Two supervisors with their own run roots
// stand for the two hosts. Most VMs are bare (SeaBIOS finding nothing to boot: a live machine whose RAM and
// devices migrate like any other); the last test moves the lab guest and asks its shell on both sides.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { ensureGuestImage, guestKernelCmdline } from '../../src/lab/guest-image.js';
import { createPairCa, issueCert, type IssuedFiles } from '../../src/pki/pki.js';
import {
  cancelMigration,
  linkTlsCreds,
  listenForMigration,
  migrate,
  parseMigrationInfo,
  waitForIncomingMigration,
  type MigrationProgress,
  type MigrationStatus,
  type MigrationTls,
} from '../../src/qemu/migration.js';
import { VmSupervisor, type VmInstance } from '../../src/qemu/supervisor.js';
import type { VmSpec } from '../../src/qemu/vm-spec.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { LockstepError } from '../../src/util/errors.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { Cleanup, fakeQmpServer, rejectionOf, sleep, standardServer, tempDir, waitFor } from './helpers.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** Slow enough that a bare VM's ~1 MB of RAM takes seconds: the migration is surely mid-way when we act. */
const THROTTLED = 100_000;
const INCOMING_TIMEOUT_MS = 60_000;

interface Hosts {
  dir: string;
  source: VmSupervisor;
  dest: VmSupervisor;
}

async function hosts(): Promise<Hosts> {
  const dir = await tempDir(cleanup, 'lockstep-mig-');
  const source = new VmSupervisor({ runRoot: path.join(dir, 'host1') });
  const dest = new VmSupervisor({ runRoot: path.join(dir, 'host2') });
  cleanup.add(() => Promise.all([source.stopAll({ gracefulMs: 0 }), dest.stopAll({ gracefulMs: 0 })]));
  return { dir, source, dest };
}

const bare = (extra: Partial<VmSpec> = {}): VmSpec => ({ name: 'web', vcpus: 1, memoryMiB: 64, accel: 'tcg', disks: [], nics: [], ...extra });

/** A running source and a destination listening on a free loopback port. */
async function pair(h: Hosts, opts: { tls?: MigrationTls; destSpec?: VmSpec; multifdChannels?: number } = {}): Promise<{ src: VmInstance; dst: VmInstance; uri: string }> {
  const src = await h.source.start(bare());
  const dst = await h.dest.start(opts.destSpec ?? bare(), { incoming: true });
  const { uri } = await listenForMigration(dst.qmp, { uri: 'tcp:127.0.0.1:0', tls: opts.tls, multifdChannels: opts.multifdChannels });
  return { src, dst, uri };
}

async function status(qmp: QmpClient): Promise<{ status: string; running: boolean }> {
  return qmp.execute<{ status: string; running: boolean }>('query-status');
}

function assertCode(e: unknown, code: string): LockstepError {
  assert.ok(e instanceof LockstepError, `expected a LockstepError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return e;
}

/** The source is back to running, and the error says so. */
async function assertSourceRunsOn(src: VmInstance, e: LockstepError): Promise<void> {
  assert.equal(e.fields['sourceRunning'], true, e.message);
  assert.deepEqual(await status(src.qmp), { status: 'running', singlestep: false, running: true });
}

/* ------------------------------------------------------------------ the pair's certificates */

interface Pki {
  dir: string;
  host1: IssuedFiles;
  host2: IssuedFiles;
  /** Signed by the pair's CA, but not the host the destination expects. */
  host3: IssuedFiles;
  /** A host of another pair, with the same name. */
  stranger: IssuedFiles;
}

let pki: Pki;
const pkiCleanup = new Cleanup();
before(async () => {
  const dir = await tempDir(pkiCleanup, 'lockstep-mig-pki-');
  await Promise.all(['pair', 'other'].map((d) => mkdir(path.join(dir, d))));
  const ca = await createPairCa(path.join(dir, 'pair'), 'pair-a');
  const otherCa = await createPairCa(path.join(dir, 'other'), 'pair-b');
  pki = {
    dir,
    // As pairing makes them: CN = host id, no subjectAltName.
    host1: await issueCert(ca, path.join(dir, 'pair'), { commonName: 'host1' }),
    host2: await issueCert(ca, path.join(dir, 'pair'), { commonName: 'host2' }),
    host3: await issueCert(ca, path.join(dir, 'pair'), { commonName: 'host3' }),
    stranger: await issueCert(otherCa, path.join(dir, 'other'), { commonName: 'host1' }),
  };
});
after(() => pkiCleanup.run());

const tlsOf = (files: IssuedFiles, peer: string, name: string): MigrationTls => ({ files, peer, credsDir: path.join(pki.dir, `creds-${name}`) });

/* ------------------------------------------------------------------ tests */

test('a migration completes: the destination runs, the source is postmigrate, QEMU reports its figures', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h);
  assert.match(uri, /^tcp:127\.0\.0\.1:\d+$/);
  assert.notEqual(uri, 'tcp:127.0.0.1:0', 'the chosen port is reported');
  assert.equal((await status(dst.qmp)).status, 'inmigrate');

  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  const result = await migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: false });
  assert.deepEqual(await incoming, { runState: 'running', running: true });
  assert.ok(result.transferredBytes > 100_000, `sent ${result.transferredBytes} bytes`);
  assert.ok(result.totalMs >= result.setupMs && result.downtimeMs >= 0, JSON.stringify(result));
  assert.equal((await status(src.qmp)).status, 'postmigrate');
  assert.deepEqual(await status(dst.qmp), { status: 'running', singlestep: false, running: true });

  // The source is discarded; the VM runs on where it went.
  assert.equal((await src.stop({ gracefulMs: 0 })).cause, 'stopped-by-supervisor');
  assert.equal((await status(dst.qmp)).running, true);
});

test('RAM in a file or not, the guest migrates both ways: the RAM block has one name (the file gets the guest\'s RAM)', async () => {
  const h = await hosts();
  const ramFile = path.join(h.dir, 'web.ram');
  const inFile = bare({ memoryBackend: { path: ramFile } });
  // Anonymous RAM → RAM in a file: an FT VM started as HA, moved where it is to be checkpointed.
  const src = await h.source.start(bare());
  const dst = await h.dest.start(inFile, { incoming: true });
  const { uri } = await listenForMigration(dst.qmp, { uri: 'tcp:127.0.0.1:0' });
  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  await migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: false });
  assert.deepEqual(await incoming, { runState: 'running', running: true });
  const ram = await readFile(ramFile);
  assert.equal(ram.length, 64 * 1024 * 1024);
  assert.ok(ram.some((b) => b !== 0), 'the guest\'s RAM arrived in the file');
  await src.stop({ gracefulMs: 0 });

  // And back: RAM in a file → anonymous RAM.
  const back = await h.source.start(bare(), { incoming: true });
  const listening = await listenForMigration(back.qmp, { uri: 'tcp:127.0.0.1:0' });
  const arrived = waitForIncomingMigration(back.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  await migrate(dst.qmp, { uri: listening.uri, downtimeLimitMs: 100, autoConverge: false });
  assert.deepEqual(await arrived, { runState: 'running', running: true });
});

test('over TLS with the pair certificates: verified both ways, the migration completes', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h, { tls: tlsOf(pki.host2, 'host1', 'dst') });
  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  const result = await migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: false, tls: tlsOf(pki.host1, 'host2', 'src') });
  assert.equal((await incoming).running, true);
  assert.ok(result.transferredBytes > 100_000);
  assert.equal((await status(src.qmp)).status, 'postmigrate');
});

test('multifd, in the clear and over TLS: QEMU opens the extra connections on both sides and the migration completes', async () => {
  const h = await hosts();
  for (const secure of [false, true]) {
    const { src, dst, uri } = await pair(h, { multifdChannels: 2, tls: secure ? tlsOf(pki.host2, 'host1', 'dst') : undefined });
    const params = await dst.qmp.execute<{ 'multifd-channels': number }>('query-migrate-parameters');
    assert.equal(params['multifd-channels'], 2, 'the destination waits for two multifd channels');
    const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
    const result = await migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: false, multifdChannels: 2, tls: secure ? tlsOf(pki.host1, 'host2', 'src') : undefined });
    assert.equal((await incoming).running, true);
    assert.ok(result.transferredBytes > 100_000, `sent ${result.transferredBytes} bytes`);
    const caps = await src.qmp.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
    assert.equal(caps.find((c) => c.capability === 'multifd')?.state, true, 'the source migrated with multifd');
    await src.stop({ gracefulMs: 0 });
    await dst.stop({ gracefulMs: 0 });
  }
  // A later migration without the option is one stream again: nothing lingers.
  const { src, dst, uri } = await pair(h);
  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  await migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: false });
  assert.equal((await incoming).running, true);
  const caps = await src.qmp.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
  assert.equal(caps.find((c) => c.capability === 'multifd')?.state, false);
});

test('the TLS destination refuses another pair and the wrong host; each source runs on; the right one then gets in', async () => {
  const h = await hosts();
  const dst = await h.dest.start(bare(), { incoming: true });
  const { uri } = await listenForMigration(dst.qmp, { uri: 'tcp:127.0.0.1:0', tls: tlsOf(pki.host2, 'host1', 'dst') });
  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  const source = async (name: string): Promise<VmInstance> => h.source.start(bare({ name }));

  // A host of another pair: it does not trust this pair's CA, so it refuses the destination first.
  const stranger = await source('stranger');
  const refused = assertCode(
    await rejectionOf(migrate(stranger.qmp, { uri, downtimeLimitMs: 100, autoConverge: false, tls: tlsOf(pki.stranger, 'host2', 'stranger') })),
    'MIGRATION_FAILED',
  );
  assert.match(refused.message, /known issuer/);
  await assertSourceRunsOn(stranger, refused);

  // An impostor that trusts this pair's CA but shows another pair's certificate. QEMU's own check of its
  // certificate against its CA is off (the API never does that): the destination must refuse it itself.
  const impostor = await source('impostor');
  const impostorCreds = path.join(pki.dir, 'creds-impostor');
  await linkTlsCreds({ ca: pki.host1.ca, cert: pki.stranger.cert, key: pki.stranger.key }, impostorCreds);
  await impostor.qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: 'fake', dir: impostorCreds, endpoint: 'client', 'verify-peer': true, 'sanity-check': false });
  await impostor.qmp.execute('migrate-set-parameters', { 'tls-creds': 'fake', 'tls-hostname': 'host2' });
  await impostor.qmp.execute('migrate', { uri });
  await waitFor(async () => parseMigrationInfo(await impostor.qmp.execute('query-migrate')).status === 'failed', 10_000, 'the impostor to fail');
  assert.equal((await status(impostor.qmp)).running, true);

  // The right pair, the wrong host: the CA is right, the destination's authz wants CN=host1.
  const host3 = await source('host3');
  const denied = assertCode(
    await rejectionOf(migrate(host3.qmp, { uri, downtimeLimitMs: 100, autoConverge: false, tls: tlsOf(pki.host3, 'host2', 'host3') })),
    'MIGRATION_FAILED',
  );
  await assertSourceRunsOn(host3, denied);

  // A source without TLS.
  const plain = await source('plain');
  await assertSourceRunsOn(plain, assertCode(await rejectionOf(migrate(plain.qmp, { uri, downtimeLimitMs: 100, autoConverge: false })), 'MIGRATION_FAILED'));

  // None of them got in or broke the listener: the destination still waits, and host1 migrates.
  assert.equal((await status(dst.qmp)).status, 'inmigrate');
  const host1 = await source('host1');
  await migrate(host1.qmp, { uri, downtimeLimitMs: 100, autoConverge: false, tls: tlsOf(pki.host1, 'host2', 'src') });
  assert.equal((await incoming).running, true);
});

test('cancel mid-way: the source runs on as before, the destination gives up and exits', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h);
  const incoming = rejectionOf(waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS }));
  const seen: MigrationProgress[] = [];
  let cancelled: Promise<MigrationStatus> | undefined;
  const e = assertCode(
    await rejectionOf(
      migrate(src.qmp, {
        uri,
        maxBandwidthBytesPerS: THROTTLED,
        downtimeLimitMs: 100,
        autoConverge: false,
        progressIntervalMs: 100,
        onProgress: (p) => {
          seen.push(p);
          if (p.status === 'active' && (p.transferredBytes ?? 0) > 0) cancelled ??= cancelMigration(src.qmp);
        },
      }),
    ),
    'MIGRATION_FAILED',
  );
  assert.equal(await cancelled, 'cancelled');
  assert.equal(e.fields['status'], 'cancelled');
  await assertSourceRunsOn(src, e);
  const last = seen.at(-1)!;
  assert.ok(last.remainingBytes! > 0 && last.totalBytes! > last.remainingBytes!, `mid-way: ${JSON.stringify(last)}`);
  assert.ok(last.passes === 1 && last.mbps !== null && last.elapsedMs !== null, JSON.stringify(last));

  assertCode(await incoming, 'MIGRATION_FAILED');
  assert.equal((await dst.exited).cause, 'crashed', 'QEMU 7.2 exits when its incoming stream breaks');
  assert.equal(await cancelMigration(src.qmp), 'cancelled', 'cancelling again reports how the last one ended');
});

test('a migration that does not complete in time is cancelled, and the source runs on', async () => {
  const h = await hosts();
  const { src, uri } = await pair(h);
  const started = Date.now();
  const e = assertCode(
    await rejectionOf(migrate(src.qmp, { uri, maxBandwidthBytesPerS: THROTTLED, downtimeLimitMs: 100, autoConverge: false, timeoutMs: 800 })),
    'MIGRATION_FAILED',
  );
  assert.match(e.message, /did not complete within 800 ms \(active, \d+ MiB sent/);
  assert.ok(Date.now() - started < 5_000);
  await assertSourceRunsOn(src, e);
});

test('the destination dying mid-migration fails it with QEMU’s reason; the source runs on', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h);
  let killed = false;
  const e = assertCode(
    await rejectionOf(
      migrate(src.qmp, {
        uri,
        maxBandwidthBytesPerS: THROTTLED,
        downtimeLimitMs: 100,
        autoConverge: false,
        progressIntervalMs: 100,
        onProgress: (p) => {
          if (!killed && p.status === 'active' && (p.transferredBytes ?? 0) > 0) killed = process.kill(dst.pid, 'SIGKILL');
        },
      }),
    ),
    'MIGRATION_FAILED',
  );
  assert.ok(killed);
  assert.equal(e.fields['status'], 'failed');
  assert.ok(typeof e.fields['desc'] === 'string' && e.fields['desc'] !== '', e.message);
  await assertSourceRunsOn(src, e);
  assert.equal((await dst.exited).cause, 'killed');
});

test('a destination that cannot load the stream (a device it lacks) fails the migration; the source runs on', async () => {
  // Without the return path, QEMU 7.2's source calls this migration completed and stays paused while the
  // destination exits: the guest would run nowhere.
  const h = await hosts();
  const disk = path.join(h.dir, 'disk.raw');
  await writeFile(disk, Buffer.alloc(1024 * 1024));
  const src = await h.source.start(bare({ disks: [{ id: 'vda', path: disk, format: 'raw' }] }));
  const dst = await h.dest.start(bare(), { incoming: true });
  const { uri } = await listenForMigration(dst.qmp, { uri: 'tcp:127.0.0.1:0' });
  const e = assertCode(await rejectionOf(migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: false })), 'MIGRATION_FAILED');
  await assertSourceRunsOn(src, e);
  const exit = await dst.exited;
  assert.match(exit.stderrTail, /Unknown savevm section or instance '0000:00:02.0\/virtio-blk'/);
});

test('pause-before-switchover: the hook runs with the guest paused, its time is downtime, then the migration completes', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h);
  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  let during: { status: string; running: boolean } | undefined;
  const result = await migrate(src.qmp, {
    uri,
    downtimeLimitMs: 100,
    autoConverge: false,
    pauseBeforeSwitchover: async () => {
      during = await status(src.qmp);
      await sleep(300);
    },
  });
  assert.deepEqual(during && { status: during.status, running: during.running }, { status: 'finish-migrate', running: false });
  assert.ok(result.downtimeMs >= 300, `downtime ${result.downtimeMs} ms includes the hook`);
  assert.equal((await incoming).running, true);
});

test('a pre-switchover hook that fails cancels the migration; the source runs on', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h);
  const incoming = rejectionOf(waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS }));
  const e = assertCode(
    await rejectionOf(
      migrate(src.qmp, {
        uri,
        downtimeLimitMs: 100,
        autoConverge: false,
        pauseBeforeSwitchover: () => {
          throw new Error('the disk mirror would not stop');
        },
      }),
    ),
    'MIGRATION_FAILED',
  );
  assert.match(e.message, /pre-switchover hook failed: the disk mirror would not stop/);
  assert.equal(e.fields['status'], 'cancelled');
  await assertSourceRunsOn(src, e);
  assertCode(await incoming, 'MIGRATION_FAILED');

  // The capabilities are set again each time: a second migration without the hook goes straight through.
  const dst2 = await h.dest.start(bare({ name: 'web2' }), { incoming: true });
  const again = await listenForMigration(dst2.qmp, { uri: 'tcp:127.0.0.1:0' });
  await migrate(src.qmp, { uri: again.uri, downtimeLimitMs: 100, autoConverge: true });
  assert.equal((await status(dst2.qmp)).running, true);
});

test('bad options are INVALID_ARGUMENT before QEMU is asked anything; a taken port is QEMU’s error', async () => {
  const h = await hosts();
  const { src, dst, uri } = await pair(h);
  const base = { uri, downtimeLimitMs: 100, autoConverge: false };
  for (const bad of [
    { ...base, uri: 'exec:cat /etc/passwd' },
    { ...base, uri: 'tcp:127.0.0.1:0' },
    { ...base, uri: 'tcp:127.0.0.1:70000' },
    { ...base, downtimeLimitMs: 0 },
    { ...base, maxBandwidthBytesPerS: 0.5 },
    { ...base, tls: tlsOf(pki.host1, 'host2,O=evil', 'bad') },
    { ...base, multifdChannels: 0 },
    { ...base, multifdChannels: 1.5 },
    { ...base, multifdChannels: 256 },
  ]) {
    assertCode(await rejectionOf(migrate(src.qmp, bad)), 'INVALID_ARGUMENT');
  }
  assert.equal((await status(src.qmp)).running, true);
  assert.equal(parseMigrationInfo(await src.qmp.execute('query-migrate')).status, 'none', 'nothing was started');

  const taken = await h.dest.start(bare({ name: 'other' }), { incoming: true });
  assertCode(await rejectionOf(listenForMigration(taken.qmp, { uri: 'tcp:127.0.0.1:0', multifdChannels: 0 })), 'INVALID_ARGUMENT');
  const port = Number(uri.split(':').at(-1));
  assertCode(await rejectionOf(listenForMigration(taken.qmp, { uri: `tcp:127.0.0.1:${port}` })), 'QMP_ERROR');
  assert.equal((await status(dst.qmp)).status, 'inmigrate');
});

test('query-migrate answers are parsed defensively: what QEMU 7.2 sends, and malformed ones', () => {
  // Captured from QEMU 7.2: a completed source and a destination that only listens.
  const completed = parseMigrationInfo({
    status: 'completed',
    'setup-time': 2,
    downtime: 3,
    'total-time': 21,
    ram: { total: 67641344, 'dirty-sync-count': 2, 'page-size': 4096, remaining: 0, mbps: 349.59, transferred: 718389, 'dirty-pages-rate': 0 },
  });
  assert.equal(completed.status, 'completed');
  assert.deepEqual([completed.totalMs, completed.downtimeMs, completed.setupMs, completed.ram?.transferred], [21, 3, 2, 718389]);
  const listening = parseMigrationInfo({ 'socket-address': [{ port: '41503', ipv4: true, host: '127.0.0.1', type: 'inet' }] });
  assert.equal(listening.status, 'none');
  assert.deepEqual(listening.listening, [{ host: '127.0.0.1', port: 41503 }]);

  for (const bad of [
    null,
    [],
    'completed',
    { status: 'teleported' },
    { status: 7 },
    { status: 'active', ram: { remaining: 5 } },
    { status: 'active', ram: 'lots' },
    { status: 'active', 'total-time': -1 },
    { status: 'active', 'expected-downtime': '300' },
    { status: 'failed', 'error-desc': { why: 'x' } },
    { 'socket-address': { port: 1 } },
    { 'socket-address': [{ type: 'unix', path: '/x' }] },
    { 'socket-address': [{ type: 'inet', host: '::1', port: 'http' }] },
  ]) {
    assert.throws(() => parseMigrationInfo(bad), (e) => assertCode(e, 'QMP_PROTOCOL') !== undefined, JSON.stringify(bad));
  }
});

test('a source whose query-migrate answer cannot be read is cancelled, not left to finish unseen', async () => {
  // Real QEMU never sends this; a fake QMP server (as in qmp-protocol.test.ts) does.
  const dir = await tempDir(cleanup);
  const received: string[] = [];
  const answers: Record<string, unknown> = {
    'query-status': { status: 'running', singlestep: false, running: true },
    'qom-list': [{ name: 'pc.ram', type: 'child<memory-region>' }],
    'query-migrate': { status: 'active', ram: { transferred: 'a lot' } },
  };
  const server = await fakeQmpServer(
    cleanup,
    dir,
    standardServer((req, socket) => {
      received.push(req.execute);
      socket.write(JSON.stringify({ return: answers[req.execute] ?? {}, id: req.id }) + '\r\n');
    }),
  );
  const qmp = await QmpClient.connect(server.path, { timeoutMs: 2_000 });
  cleanup.add(() => qmp.close());
  const e = assertCode(await rejectionOf(migrate(qmp, { uri: 'tcp:127.0.0.1:4444', downtimeLimitMs: 100, autoConverge: false })), 'QMP_PROTOCOL');
  assert.match(e.message, /query-migrate ram has a transferred that is not a non-negative number: "a lot"/);
  assert.deepEqual(received.slice(-3), ['migrate', 'query-migrate', 'migrate_cancel']);
});

/* ------------------------------------------------------------------ a real guest */

/** The guest's serial console as a unix socket (QEMU swaps the backend live), to type into its shell. */
async function guestConsole(vm: VmInstance, socketPath: string): Promise<{ ask: (command: string, expect: string, timeoutMs: number) => Promise<void> }> {
  await vm.qmp.execute('chardev-change', {
    id: 'serial0',
    backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socketPath } }, server: true, wait: false } },
  });
  const socket = net.connect(socketPath);
  cleanup.add(() => socket.destroy());
  let output = '';
  socket.on('data', (b: Buffer) => (output += b.toString('latin1')));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return {
    // Types the line until `expect` shows up: the shell may not be reading yet.
    ask: async (command, expect, timeoutMs) => {
      await waitFor(
        async () => {
          socket.write(`${command}\n`);
          await sleep(300);
          return output.includes(expect);
        },
        timeoutMs,
        `'${expect}' on the console of ${vm.name} (got: ${JSON.stringify(output.slice(-300))})`,
      );
    },
  };
}

test('a real guest moves: its shell answers on the destination with what it held in RAM', async () => {
  const h = await hosts();
  const image = await ensureGuestImage();
  // Shared storage, as on one host: QEMU hands the image's lock over at switch-over.
  const disk = path.join(h.dir, 'data.qcow2');
  await createQcow2(disk, 64);
  const spec: VmSpec = {
    name: 'guest',
    vcpus: 1,
    memoryMiB: 256,
    accel: 'tcg',
    boot: { kernel: image.kernel, initrd: image.initrd, cmdline: guestKernelCmdline({ ip: '10.10.3.50/24', hostname: 'guest' }) },
    disks: [{ id: 'vda', path: disk, format: 'qcow2' }],
    nics: [],
  };
  const src = await h.source.start(spec);
  const srcConsole = await guestConsole(src, path.join(h.dir, 'src-console.sock'));
  // The arithmetic is done by the guest's shell, so the typed line's echo cannot match.
  await srcConsole.ask('echo $((6 * 7))-up', '42-up', 60_000);
  const token = `t${Date.now().toString(36)}`;
  await srcConsole.ask(`echo ${token} > /tmp/token; echo $((6 * 7))-saved`, '42-saved', 10_000);

  const dst = await h.dest.start(spec, { incoming: true });
  const { uri } = await listenForMigration(dst.qmp, { uri: 'tcp:127.0.0.1:0', tls: tlsOf(pki.host2, 'host1', 'guest-dst') });
  const dstConsole = await guestConsole(dst, path.join(h.dir, 'dst-console.sock'));
  const incoming = waitForIncomingMigration(dst.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
  const result = await migrate(src.qmp, { uri, downtimeLimitMs: 100, autoConverge: true, tls: tlsOf(pki.host1, 'host2', 'guest-src') });
  assert.deepEqual(await incoming, { runState: 'running', running: true });
  assert.ok(result.transferredBytes > 10 * 2 ** 20, `a booted kernel's RAM: ${result.transferredBytes} bytes`);

  await src.stop({ gracefulMs: 0 });
  await dstConsole.ask('echo $((6 * 7))-$(cat /tmp/token)', `42-${token}`, 20_000);
  assert.equal((await status(dst.qmp)).running, true);
});
