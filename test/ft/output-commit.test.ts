/**
 * FT output commit on real QEMU: the lab guest (its record service on TCP 7070) booted with its NIC's output
 * gate on the command line, a tap in a network namespace the test creates, and a client reaching the guest
 * from inside that namespace (through a unix-socket proxy, so the test binds nothing outside it).
 *
 * The story: the guest's answers wait for a release, one release per turn of the conversation; with epochs
 * sealed and released every 20 ms, many appends from several clients are all acknowledged, in order, none
 * lost or twice; with nothing released the VM keeps running (QMP answers, the guest keeps beating on its
 * serial port) while frames pile up and the soft limit is signalled; pass-through passes; detached at run
 * time, the NIC works directly; attached again at run time, answers wait for releases again.
 *
 * Needs root (namespaces, taps); skipped otherwise. No timed assertions: waits are generous bounds on
 * conditions, and "no answer" is checked while the gate provably holds frames.
 *
 * Then a VM's two NICs under `FtPrimary`: the pattern guest checkpointed into a real store over a socket,
 * each NIC's gate fed by the test as QEMU on its sockets; the backup's commit (so its ack) is held back to
 * show that each NIC's frames wait for their epoch's ack, and that one ack lets out both, each in its order.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { attachOutputGate, detachOutputGate, OutputGate, outputGateSockets } from '../../src/ft/output-commit.js';
import { GUEST_READY_MARKER, RECORD_SERVICE_PORT, ensureGuestImage, guestKernelCmdline } from '../../src/lab/guest-image.js';
import { deleteNamespace, ensureNamespace, setLinkUp } from '../../src/lab/netns.js';
import { VmSupervisor } from '../../src/qemu/supervisor.js';
import { createQcow2 } from '../../src/storage/disk-image.js';
import { inNetns, runIn } from '../../src/util/exec.js';
import { Cleanup, sleep, waitFor } from '../qemu/helpers.js';
import { receiveCheckpoints } from '../../src/ft/checkpoint-link.js';
import { CheckpointStore } from '../../src/ft/checkpoint-store.js';
import { FtPrimary, type FtEpoch } from '../../src/ft/ft-primary.js';
import { PAGE_BYTES } from '../../src/ft/ram-tracker.js';
import { MiB, patternVmSpec, shmDir, socketPair, startVm } from './helpers.js';
import { fakeQemu, record, tagOf } from './fake-qemu.js';

const isRoot = process.getuid?.() === 0;
const NS = `lsft-${process.pid}`;
const TAP = 'tft0';
const GUEST_IP = '10.10.3.50';
const HOST_IP = '10.10.3.1';
const PROXY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'unix-tcp-proxy.js');
const BOOT_TIMEOUT_MS = 90_000;
/** Long enough for a guest under TCG on a loaded machine to answer many times over, were it not held. */
const HOLD_CHECK_MS = 1_500;
const REPLY_TIMEOUT_MS = 20_000;
const EPOCH_MS = 20;

const cleanup = new Cleanup();
after(() => cleanup.run());

/** One connection to the record service, through the proxy; replies are collected as they arrive. */
class LineClient {
  readonly replies: string[] = [];
  private taken = 0;
  private constructor(private readonly socket: net.Socket) {
    createInterface({ input: socket }).on('line', (l) => this.replies.push(l));
    socket.on('error', () => undefined);
  }

  static async open(proxySocket: string): Promise<LineClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(proxySocket, () => resolve(s));
      s.once('error', reject);
    });
    const c = new LineClient(socket);
    cleanup.add(() => socket.destroy());
    return c;
  }

  send(line: string): void {
    this.socket.write(`${line}\n`);
  }

  /** The next reply not taken yet, waiting at most `timeoutMs`. */
  async next(timeoutMs = REPLY_TIMEOUT_MS): Promise<string> {
    await waitFor(() => this.replies.length > this.taken, timeoutMs, 'a reply');
    return this.replies[this.taken++]!;
  }

  async request(line: string): Promise<string> {
    this.send(line);
    return this.next();
  }

  get unread(): number {
    return this.replies.length - this.taken;
  }
}

test('FT output commit on a real guest', { skip: !isRoot && 'needs root (network namespaces, taps)' }, async (t) => {
  const image = await ensureGuestImage();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-ft-out-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  await ensureNamespace(NS);
  cleanup.add(() => deleteNamespace(NS));
  const disk = path.join(dir, 'data.qcow2');
  await createQcow2(disk, 64);

  // The gate listens before QEMU starts: QEMU connects to it while it builds the NIC.
  const runDir = path.join(dir, 'run', 'ftvm');
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  let softSignals = 0;
  const gate = await OutputGate.listen({
    sockets: outputGateSockets(runDir, 'net0'),
    name: 'ftvm/net0',
    // Small, so the frames piled up by a few blocked clients pass the soft limit; the hard limit is not hit.
    // How many bytes pile up depends on the guest's TCP (Nagle holds answers back while nothing is acked;
    // retransmissions add some): a few KiB here, so the soft limit sits well below that.
    limits: { heldBytesSoftMax: 2 * 1024, heldBytesMax: 16 * 1024 * 1024, heldFramesMax: 65_536 },
    onSoftLimit: () => softSignals++,
  });
  cleanup.add(() => gate.close());

  const sup = new VmSupervisor({ runRoot: path.join(dir, 'run') });
  cleanup.add(() => sup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  const vm = await sup.start(
    {
      name: 'ftvm',
      vcpus: 1,
      memoryMiB: 128,
      accel: 'tcg',
      boot: { kernel: image.kernel, initrd: image.initrd, cmdline: guestKernelCmdline({ ip: `${GUEST_IP}/24`, gateway: HOST_IP, hostname: 'ftvm' }) },
      disks: [{ id: 'vda', path: disk, format: 'qcow2' }],
      nics: [{ id: 'net0', mac: '52:54:00:4c:53:10', tap: TAP, outputGate: gate.sockets }],
      heartbeat: { timeoutMs: 60_000 },
    },
    { netns: NS, runDir },
  );
  await runIn(NS, 'ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', TAP]);
  await setLinkUp(NS, TAP, true);
  await waitFor(async () => (await readFile(vm.paths.serialLog, 'utf8').catch(() => '')).includes(GUEST_READY_MARKER), BOOT_TIMEOUT_MS, 'the guest to boot');
  assert.ok(gate.stats.fromGuestConnected && gate.stats.toNetworkConnected, 'QEMU connected to the gate from its command line');

  const proxySocket = path.join(dir, 'proxy.sock');
  const [cmd, args] = inNetns(NS, process.execPath, [PROXY, proxySocket, GUEST_IP, String(RECORD_SERVICE_PORT)]);
  const proxy = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const proxyExited = new Promise((resolve) => proxy.once('close', resolve));
  cleanup.add(async () => {
    proxy.kill('SIGKILL');
    await proxyExited;
  });
  await new Promise((resolve, reject) => {
    createInterface({ input: proxy.stdout! }).once('line', resolve);
    proxy.once('close', () => reject(new Error('the proxy exited before it listened')));
  });

  /** Seals and releases one epoch at a time, `pauseMs` apart, until `done`; returns how many it took. */
  async function releaseUntil(done: () => boolean, what: string, pauseMs = 200): Promise<number> {
    for (let round = 1; round <= 100; round++) {
      gate.release(gate.seal());
      await sleep(pauseMs);
      if (done()) return round;
    }
    throw new Error(`${what}: not done after 100 releases`);
  }

  /** Sends `line` while the gate holds, shows that no answer comes while frames wait, then releases. */
  async function heldThenReleased(client: LineClient, line: string): Promise<{ reply: string; rounds: number }> {
    const before = gate.stats.framesIn;
    client.send(line);
    await waitFor(() => gate.stats.framesIn > before && gate.stats.heldFrames > 0, REPLY_TIMEOUT_MS, 'the guest to answer into the gate');
    await sleep(HOLD_CHECK_MS);
    assert.equal(client.unread, 0, `no answer to '${line}' while the gate holds ${gate.stats.heldFrames} frames`);
    assert.ok(gate.stats.heldFrames > 0);
    const rounds = await releaseUntil(() => client.unread > 0, `the answer to '${line}'`);
    return { reply: await client.next(), rounds };
  }

  let client!: LineClient;

  await t.test('the guest’s answers wait for releases: one for the handshake, one for the answer', async () => {
    client = await LineClient.open(proxySocket);
    const first = await heldThenReleased(client, 'append first');
    assert.equal(first.reply, 'ok 1');
    // The SYN-ACK (and the guest's ARP) went out with one release, the answer only with a later one.
    assert.ok(first.rounds >= 2, `answered after ${first.rounds} releases`);
    const second = await heldThenReleased(client, 'append second');
    assert.equal(second.reply, 'ok 2');
  });

  await t.test(`epochs of ${EPOCH_MS} ms: every append from four clients acknowledged, in order, none lost or twice`, async () => {
    let sealed = gate.seal();
    const epochs = setInterval(() => {
      // The engine's cadence: the previous epoch's ack arrives while the next epoch runs.
      gate.release(sealed);
      sealed = gate.seal();
    }, EPOCH_MS);
    try {
      const clients = [client, ...(await Promise.all([1, 2, 3].map(() => LineClient.open(proxySocket))))];
      const latencies: number[] = [];
      const acked = await Promise.all(
        clients.map(async (c, i) => {
          const seqs: { seq: number; text: string }[] = [];
          for (let n = 0; n < 25; n++) {
            const text = `c${i}-${n}`;
            const sentAt = performance.now();
            const reply = await c.request(`append ${text}`);
            latencies.push(performance.now() - sentAt);
            const m = /^ok (\d+)$/.exec(reply);
            assert.ok(m, `reply '${reply}'`);
            seqs.push({ seq: Number(m[1]), text });
          }
          return seqs;
        }),
      );
      for (const seqs of acked) assert.deepEqual(seqs.map((s) => s.seq), [...seqs.map((s) => s.seq)].sort((a, b) => a - b), 'one client’s seqs grow');
      const all = acked.flat().sort((a, b) => a.seq - b.seq);
      assert.deepEqual(all.map((s) => s.seq), Array.from({ length: 100 }, (_, i) => i + 3), 'dense: none lost, none twice');
      for (const { seq, text } of all) assert.equal(await client.request(`get ${seq}`), `record ${seq} ${text}`);
      latencies.sort((a, b) => a - b);
      const s = gate.stats;
      t.diagnostic(
        `append round trip through ${EPOCH_MS} ms epochs: median ${latencies[50]!.toFixed(0)} ms, p90 ${latencies[90]!.toFixed(0)} ms; ` +
          `held at most ${s.holdMsMax.toFixed(0)} ms, mean ${(s.holdMsTotal / s.framesReleased).toFixed(1)} ms over ${s.framesReleased} frames`,
      );
    } finally {
      clearInterval(epochs);
    }
    gate.release(gate.seal());
    const s = gate.stats;
    assert.equal(s.framesIn, s.framesOut + s.heldFrames + s.droppedFrames, 'every frame read is out, held or counted as dropped');
    assert.equal(s.droppedFrames, 0);
  });

  await t.test('nothing released: the VM keeps running and the gate keeps draining while frames pile up', async () => {
    const clients = [client, ...(await Promise.all([1, 2].map(() => LineClient.open(proxySocket))))];
    // The new clients' handshakes go out; from here on nothing does.
    await releaseUntil(() => true, 'handshakes', 500);
    const heldBefore = gate.stats.heldFrames;
    const softSignalsBefore = softSignals;
    const beatsBefore = vm.heartbeats;
    for (const c of clients) for (let i = 0; i < 40; i++) c.send('stats');
    const startedAt = Date.now();
    let statusAnswers = 0;
    // At least 4 s, and on until the soft limit is crossed: a loaded machine's guest answers later.
    while (Date.now() - startedAt < 4_000 || (softSignals === softSignalsBefore && Date.now() - startedAt < 30_000)) {
      const status = await vm.qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: 5_000 });
      assert.equal(status.status, 'running');
      statusAnswers++;
      await sleep(250);
    }
    await waitFor(() => vm.heartbeats >= beatsBefore + 2, 10_000, 'the guest to keep beating on its serial port');
    const s = gate.stats;
    t.diagnostic(`held ${s.heldFrames} frames, ${s.heldBytes} bytes; ${statusAnswers} query-status answers; ${vm.heartbeats - beatsBefore} heartbeats`);
    assert.ok(s.heldFrames > heldBefore, 'frames piled up in the gate');
    assert.ok(softSignals > softSignalsBefore, 'the soft limit was signalled');
    assert.equal(clients.reduce((n, c) => n + c.unread, 0), 0, 'no answer left the host');
    await releaseUntil(() => clients.every((c) => c.unread === 40), 'every stats answer');
    for (const c of clients) for (let i = 0; i < 40; i++) assert.match(await c.next(), /^stats uptime_ms=/);
  });

  await t.test('pass-through: answers come with no release', async () => {
    gate.unprotect();
    const released = gate.stats.released;
    for (let i = 0; i < 10; i++) assert.match(await client.request('last'), /^last \d+$/);
    assert.equal(gate.stats.released, released, 'nothing was released');
  });

  await t.test('detached at run time: the NIC sends straight to the tap, old and new connections work', async () => {
    await detachOutputGate(vm.qmp, 'net0', gate);
    const chardevs = await vm.qmp.execute<{ label: string }[]>('query-chardev');
    assert.deepEqual(chardevs.map((c) => c.label).filter((l) => l.includes('gate')), [], 'no gate chardev left');
    const framesIn = gate.stats.framesIn;
    for (let i = 0; i < 10; i++) assert.match(await client.request('last'), /^last \d+$/);
    const fresh = await LineClient.open(proxySocket);
    assert.match(await fresh.request('stats'), /^stats /);
    assert.equal(gate.stats.framesIn, framesIn, 'no frame went through the gate');
  });

  await t.test('attached again at run time: answers wait for releases again', async () => {
    gate.protect();
    await attachOutputGate(vm.qmp, 'net0', gate);
    const third = await heldThenReleased(client, 'append third');
    assert.equal(third.reply, 'ok 103');
    assert.equal(await vm.qmp.execute<{ status: string }>('query-status').then((s) => s.status), 'running');
    await detachOutputGate(vm.qmp, 'net0', gate);
    assert.equal(await client.request('get 103'), 'record 103 third');
  });
});

test('two NICs under FtPrimary: each NIC’s frames wait for their epoch’s ack; that one ack lets out both NICs’ frames, each NIC’s in order', async () => {
  const memoryMiB = 32;
  const primaryDir = await shmDir(cleanup, 'lockstep-ft-nics-primary-');
  const backupDir = await shmDir(cleanup, 'lockstep-ft-nics-backup-');
  const sup = new VmSupervisor({ runRoot: path.join(primaryDir, 'run') });
  cleanup.add(() => sup.stopAll({ gracefulMs: 0, quitMs: 1000 }));
  const spec = await patternVmSpec({ name: 'duo', memoryMiB, region: { startBytes: 1 * MiB, endBytes: 2 * MiB }, dir: primaryDir, ramFile: path.join(primaryDir, 'duo.ram') });
  const vm = await startVm(cleanup, sup, spec, path.join(primaryDir, 'run', 'duo'));
  const gates = await Promise.all(
    ['net0', 'net1'].map(async (nic) => {
      const gate = await OutputGate.listen({ sockets: outputGateSockets(path.join(primaryDir, 'run', 'duo'), nic), name: `duo/${nic}` });
      cleanup.add(() => gate.close());
      return gate;
    }),
  );
  const qemus = await Promise.all(gates.map((g) => fakeQemu(cleanup, g)));

  // The backup: a real store; its commits wait while `allowedEpoch` is below theirs, and no commit, no ack.
  const store = await CheckpointStore.open(path.join(backupDir, 'store'), { vm: 'duo', ramBytes: memoryMiB * MiB, pageBytes: PAGE_BYTES });
  cleanup.add(() => store.close());
  const link = await socketPair(cleanup, backupDir);
  let allowedEpoch = Infinity;
  let allowed = (): void => undefined;
  const received = receiveCheckpoints(link.backup, store, {
    onSeal: async () => undefined,
    beforeCommit: async (cp) => {
      while (cp.epoch > allowedEpoch) await new Promise<void>((resolve) => (allowed = resolve));
    },
  });
  const allow = (epoch: number): void => {
    allowedEpoch = epoch;
    allowed();
  };

  const primary = await FtPrimary.start({ vm, gates, mirrors: [], stream: link.primary, epochMs: 50, ackTimeoutMs: 60_000, fullCheckpointBytesPerSec: null });
  cleanup.add(() => primary.stop());
  const committed: { epoch: FtEpoch; released: number[] }[] = [];
  primary.on('committed', (e) => committed.push({ epoch: e, released: gates.map((g) => g.stats.released) }));
  await waitFor(() => primary.stats.peerCommittedEpoch >= 1, 60_000, 'the first checkpoint acked');

  // Acks stop; the checkpoint in flight (or the next) waits for its commit, and the guest's output is held.
  allow(primary.stats.peerCommittedEpoch);
  await waitFor(() => primary.stats.sentEpoch > allowedEpoch, 30_000, 'a checkpoint waiting for its ack');
  const frames = [['a0', 'b0'], ['a1', 'b1'], ['a2', 'b2']];
  for (const pair of frames) pair.forEach((tag, nic) => qemus[nic]!.guest.write(record(tag)));
  await waitFor(() => gates.every((g) => g.stats.heldFrames === 3), 10_000, 'three frames held on each NIC');
  const epochs = gates.map((g) => g.stats.epoch);
  const epoch = epochs[0]!;
  assert.deepEqual(epochs, [epoch, epoch], 'both gates tag the frames with the open epoch');
  assert.ok(epoch > primary.stats.sentEpoch, `the frames' epoch ${epoch} is not sent yet (sent ${primary.stats.sentEpoch})`);

  // Every epoch before theirs is acked: the frames stay held, on both NICs.
  allow(epoch - 1);
  await waitFor(() => primary.stats.sentEpoch === epoch && primary.stats.peerCommittedEpoch === epoch - 1, 30_000, `epoch ${epoch - 1} acked, ${epoch} sent`);
  await sleep(300);
  assert.deepEqual(qemus.map((q) => q.received.length), [0, 0], 'nothing of a NIC leaves before its epoch is acked');
  assert.deepEqual(gates.map((g) => g.stats.released), [epoch - 1, epoch - 1]);

  // Their epoch's ack: one release of both NICs, in each NIC's order, none crossing to the other NIC.
  allow(Infinity);
  await waitFor(() => qemus.every((q) => q.received.length === 3), 10_000, 'both NICs’ frames out');
  assert.deepEqual(qemus[0]!.received.map(tagOf), ['a0', 'a1', 'a2']);
  assert.deepEqual(qemus[1]!.received.map(tagOf), ['b0', 'b1', 'b2']);
  const at = committed.find((c) => c.epoch.epoch === epoch);
  assert.deepEqual(at?.released, [epoch, epoch], 'the ack of their epoch released both gates at once');
  assert.equal(primary.stats.heldOutputFrames, 0, 'held over both NICs: none left');

  await primary.stop();
  link.primary.destroy();
  await received;
});
