/**
 * FT epochs on this machine: how long the guest is paused per checkpoint and what the pause consists of
 * (stop, RAM copy, device-state save — those two at the same time —, cont), how many bytes each epoch ships,
 * how long finding the changed pages takes after the pause, and how long a resume from the backup's store
 * takes. The guest is the FT tests' pattern guest (`test/ft/pattern-guest.ts`), rewriting 64 MiB of its RAM
 * on every pass (a busy 64 MiB working set; the rest idle), under TCG.
 *
 * In process, like the tests: primary engine → unix socket → backup store, one epoch after the other
 * (`EPOCH_MS` of guest run between checkpoints), for every guest size and epoch length. `npm run bench --
 * ft-epoch`; a few minutes.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { CheckpointEngine, type CheckpointTimings } from '../src/ft/checkpoint.js';
import { CheckpointSender, receiveCheckpoints } from '../src/ft/checkpoint-link.js';
import { CheckpointStore } from '../src/ft/checkpoint-store.js';
import { PAGE_BYTES } from '../src/ft/ram-tracker.js';
import { resumeFromCheckpoint } from '../src/ft/resume.js';
import { VmSupervisor } from '../src/qemu/supervisor.js';
import type { VmSpec } from '../src/qemu/vm-spec.js';
import { patternGuestBootSector } from '../test/ft/pattern-guest.js';
import type { BenchResult } from './result.js';

const MiB = 1024 * 1024;
const GUEST_MIB = [128, 512, 1024];
/** The guest's run between checkpoints: every length on every size (a fresh guest each). */
const EPOCH_MS = [20, 50, 200];
const REGION = { startBytes: 1 * MiB, endBytes: 65 * MiB };
const EPOCHS = 30;

interface Epoch extends CheckpointTimings {
  epoch: number;
  full: boolean;
  pages: number;
  wireBytes: number;
  deviceStateBytes: number;
  sendAckMs: number;
  applyMs: number;
}

interface GuestRun {
  guestMiB: number;
  epochMs: number;
  /** From the first epoch's start to the last one's ack: what the checkpoint stream carried meanwhile is its throughput. */
  elapsedMs: number;
  epochs: Epoch[];
  resume: { startMs: number; loadMs: number; contMs: number; totalMs: number };
}

export async function run(): Promise<BenchResult> {
  const runs: GuestRun[] = [];
  for (const guestMiB of GUEST_MIB) for (const epochMs of EPOCH_MS) runs.push(await measure(guestMiB, epochMs));
  return summary(runs);
}

async function measure(guestMiB: number, epochMs: number): Promise<GuestRun> {
  const work = await mkdtemp(path.join('/dev/shm', 'lockstep-bench-ft-'));
  const primary = new VmSupervisor({ runRoot: path.join(work, 'primary') });
  const backup = new VmSupervisor({ runRoot: path.join(work, 'backup') });
  const closers: (() => Promise<unknown> | unknown)[] = [];
  try {
    const disk = path.join(work, 'boot.img');
    await writeFile(disk, Buffer.concat([patternGuestBootSector(REGION), Buffer.alloc(MiB - 512)]));
    const spec: VmSpec = { name: 'bench', vcpus: 1, memoryMiB: guestMiB, accel: 'tcg', disks: [{ id: 'boot', path: disk, format: 'raw' }], nics: [], memoryBackend: { path: path.join(work, 'ram') } };
    const vm = await primary.start(spec);
    const deadline = Date.now() + 30_000;
    while (!/AB/.test(await readFile(vm.paths.serialLog, 'latin1'))) {
      if (Date.now() > deadline) throw new Error('the pattern guest did not start its loop');
      await sleep(50);
    }
    const engine = await CheckpointEngine.open(vm);
    closers.push(() => engine.close());
    const store = await CheckpointStore.open(path.join(work, 'store'), { vm: 'bench', ramBytes: guestMiB * MiB, pageBytes: PAGE_BYTES });
    closers.push(() => store.close());
    const { a, b } = await connectedPair(path.join(work, 'ft.sock'));
    closers.push(() => a.destroy(), () => b.destroy());
    const received = receiveCheckpoints(b, store);
    const sender = new CheckpointSender(a, { vm: 'bench', ackTimeoutMs: 60_000 });
    const epochs: Epoch[] = [];
    const startedAt = performance.now();
    for (let i = 0; i < EPOCHS; i++) {
      await sleep(epochMs);
      const cp = await engine.checkpoint();
      const sent = await sender.send(cp);
      epochs.push({
        epoch: cp.epoch,
        full: cp.full,
        pages: cp.pageCount,
        wireBytes: sent.wireBytes,
        deviceStateBytes: cp.deviceState.length,
        sendAckMs: sent.ackMs,
        applyMs: store.stats.last?.applyMs ?? 0,
        ...cp.timings,
      });
    }
    const elapsedMs = performance.now() - startedAt;
    process.kill(vm.pid, 'SIGKILL');
    await vm.exited;
    sender.close();
    await received;
    const resumed = await resumeFromCheckpoint(backup, store, { ...spec, memoryBackend: { path: store.imagePath } });
    await resumed.vm.stop({ gracefulMs: 0, quitMs: 2000 });
    return { guestMiB, epochMs, elapsedMs, epochs, resume: resumed.timings };
  } finally {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    await primary.stopAll({ gracefulMs: 0, quitMs: 1000 }).catch(() => undefined);
    await backup.stopAll({ gracefulMs: 0, quitMs: 1000 }).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}

function summary(runs: GuestRun[]): BenchResult {
  const rows: string[][] = [];
  for (const r of runs) {
    // The first epoch is the full image: its pause is like the others', its bytes are not.
    const inc = r.epochs.filter((e) => !e.full);
    const q = (k: keyof Epoch, p: number): string => quantile(inc.map((e) => e[k] as number), p).toFixed(1);
    const wireMiB = r.epochs.reduce((sum, e) => sum + e.wireBytes, 0) / MiB;
    rows.push([
      `${r.guestMiB} MiB`,
      String(r.epochMs),
      q('pauseMs', 0.5),
      q('pauseMs', 0.99),
      q('stopMs', 0.5),
      q('ramCopyMs', 0.5),
      q('deviceSaveMs', 0.5),
      q('contMs', 0.5),
      q('diffMs', 0.5),
      (quantile(inc.map((e) => e.wireBytes), 0.5) / MiB).toFixed(1),
      (r.epochs[0]!.wireBytes / MiB).toFixed(0),
      q('sendAckMs', 0.5),
      (wireMiB / (r.elapsedMs / 1000)).toFixed(0),
      r.resume.totalMs.toFixed(0),
      r.resume.loadMs.toFixed(0),
    ]);
  }
  return {
    name: 'ft-epoch',
    title: 'FT epochs: guest pause per checkpoint and its parts, bytes per epoch, diff, resume (medians unless p99)',
    columns: ['guest', 'epoch ms', 'pause p50 ms', 'p99', 'stop', 'RAM copy', 'dev save', 'cont', 'diff ms', 'MiB/epoch', 'first MiB', 'send+ack ms', 'stream MiB/s', 'resume ms', 'load ms'],
    rows,
    notes: [
      `${EPOCHS} epochs per guest and epoch length (a fresh guest each), "epoch ms" of guest run between checkpoints; QEMU 7.2 under TCG, 1 vCPU; the pattern guest rewrites 64 MiB (16384 pages) on every pass, the rest of RAM is idle`,
      'pause: from sending QMP stop to cont answered; RAM copy and device save run at the same time inside it (4 parallel reads of the RAM file on /dev/shm into a preallocated buffer); diff: Buffer.compare per 4 KiB page after cont',
      'MiB/epoch: bytes of an incremental epoch on the wire (pages + device state + framing); first: the full image',
      'send+ack: encoding (crc32), writing over a unix socket, the backup staging, applying to its image on /dev/shm and acking',
      'stream MiB/s: every byte the checkpoint stream carried (the full image included) over the time from the first epoch to the last ack: what an A-Link would have to carry',
      'resume: QEMU start (paused, -incoming defer) + loading the device state (exec:cat) + cont; RAM is the store image, mapped, not copied',
    ],
    data: runs,
  };
}

function quantile(values: number[], p: number): number {
  const s = [...values].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function connectedPair(sockPath: string): Promise<{ a: net.Socket; b: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(sockPath, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const a = net.createConnection(sockPath);
  const b = await accepted;
  server.close();
  return { a, b };
}
