/**
 * What the FT epoch disk costs a mirrored guest write, and what a commit costs, on real QEMU and qemu-nbd
 * (no lab, no A-Link: the mirror's NBD target is a unix socket on this machine):
 * - `none`: the disk not mirrored;
 * - `qemu-nbd`: HA's target, the copy's qemu-nbd writing through (`copy-export.ts`);
 * - `epoch disk`: FT's target, our NBD server holding the writes in memory (epoch open), in front of the
 *   copy's qemu-nbd (writeback: the epoch disk flushes once per commit).
 * Each writes 4 KiB ×300 (latency) and 1 MiB ×32 (throughput) through the disk's device (HMP qemu-io, as the
 * storage tests do: the latency includes the monitor's round trip, the same for all three). Then, for the
 * epoch disk, each epoch is sealed and committed: apply + flush time per MB of held writes.
 * Figures of one machine, printed, not asserted.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { EpochDisk, type EpochCommit } from '../src/ft/epoch-disk.js';
import { CopyExport } from '../src/storage/copy-export.js';
import { createQcow2 } from '../src/storage/disk-image.js';
import { DiskMirror } from '../src/storage/disk-mirror.js';
import { Cleanup, tempDir } from '../test/qemu/helpers.js';
import { guestWrite, startDiskQemu, type DiskQemu } from '../test/storage/mirror-helpers.js';
import type { BenchResult } from './result.js';

const MIB = 1024 * 1024;
const KIB = 1024;
const DISK_MIB = 256;
const SMALL_WRITES = 300;
const LARGE_WRITES = 32;
const VM = 'bench';

type Target = 'none' | 'qemu-nbd' | 'epoch disk';

interface Measurement {
  target: Target;
  smallP50Ms: number;
  smallP99Ms: number;
  largeMBps: number;
  commits: (EpochCommit & { msPerMB: number })[];
}

export async function run(): Promise<BenchResult> {
  const measurements: Measurement[] = [];
  for (const target of ['none', 'qemu-nbd', 'epoch disk'] as const) {
    const cleanup = new Cleanup();
    try {
      measurements.push(await measure(cleanup, target));
    } finally {
      await cleanup.run();
    }
  }
  const fmt = (n: number, d = 2): string => n.toFixed(d);
  const rows = measurements.map((m) => [m.target, fmt(m.smallP50Ms), fmt(m.smallP99Ms), fmt(m.largeMBps, 1)]);
  const commitNotes = measurements
    .flatMap((m) => m.commits)
    .map((c) => `commit of ${c.writes} writes, ${fmt(c.writtenBytes / MIB, 1)} MB: apply ${fmt(c.applyMs, 1)} ms + flush ${fmt(c.flushMs, 1)} ms = ${fmt(c.msPerMB)} ms per MB`);
  return {
    name: 'ft-epoch-disk',
    title: 'FT epoch disk: mirrored guest writes into it vs into qemu-nbd, and commit cost',
    columns: ['target', '4 KiB p50 ms', '4 KiB p99 ms', '1 MiB writes MB/s'],
    rows,
    notes: [
      `${SMALL_WRITES} writes of 4 KiB, then ${LARGE_WRITES} of 1 MiB, one at a time, through HMP qemu-io (its round trip is in every figure); write-blocking mirror, unix sockets, TCG`,
      ...commitNotes,
    ],
    data: measurements,
  };
}

async function measure(cleanup: Cleanup, target: Target): Promise<Measurement> {
  const dir = await tempDir(cleanup, 'lockstep-bench-epoch-');
  const source = path.join(dir, 'disk.qcow2');
  const copy = path.join(dir, 'copy.qcow2');
  await createQcow2(source, DISK_MIB);
  await createQcow2(copy, DISK_MIB);
  const qemu = await startDiskQemu(cleanup, dir, source);
  const mirror = await DiskMirror.attach(qemu.qmp, { disk: 'vda', vm: VM });
  await qemu.qmp.execute('cont');
  let disk: EpochDisk | null = null;
  if (target !== 'none') {
    const exp = await CopyExport.start({ vm: VM, disk: copy, format: 'qcow2', socketPath: path.join(dir, 'copy.sock'), cache: target === 'qemu-nbd' ? 'writethrough' : 'writeback' });
    cleanup.add(() => exp.stop());
    let socketPath = exp.socketPath;
    if (target === 'epoch disk') {
      const d = await EpochDisk.start({ vm: VM, socketPath: path.join(dir, 'ft.sock'), copySocketPath: exp.socketPath });
      cleanup.add(() => d.close());
      socketPath = path.join(dir, 'ft.sock');
      disk = d;
    }
    await mirror.start({ socketPath, exportName: VM, streamId: 'bench.1.1', mode: 'full' });
    cleanup.add(() => mirror.stop());
    if (disk !== null) await paused(qemu, () => disk!.hold(1));
  }

  const small: number[] = [];
  for (let i = 0; i < SMALL_WRITES; i++) {
    const startMs = performance.now();
    await guestWrite(qemu, (i * 64 * KIB) % (DISK_MIB * MIB), 4 * KIB, 1 + (i % 250));
    small.push(performance.now() - startMs);
  }
  const commits: Measurement['commits'] = [];
  if (disk !== null) commits.push(await sealAndCommit(qemu, disk, 1));
  const largeStartMs = performance.now();
  for (let i = 0; i < LARGE_WRITES; i++) await guestWrite(qemu, 64 * MIB + i * MIB, MIB, 0x40 + i);
  const largeMBps = LARGE_WRITES / ((performance.now() - largeStartMs) / 1000);
  if (disk !== null) commits.push(await sealAndCommit(qemu, disk, 2));
  small.sort((a, b) => a - b);
  const q = (p: number): number => small[Math.min(small.length - 1, Math.floor(p * small.length))]!;
  return { target, smallP50Ms: q(0.5), smallP99Ms: q(0.99), largeMBps, commits };
}

async function sealAndCommit(qemu: DiskQemu, disk: EpochDisk, epoch: number): Promise<EpochCommit & { msPerMB: number }> {
  await paused(qemu, () => disk.seal(epoch));
  const c = await disk.commit(epoch);
  return { ...c, msPerMB: (c.applyMs + c.flushMs) / (c.writtenBytes / MIB) };
}

async function paused<T>(q: DiskQemu, step: () => Promise<T> | T): Promise<T> {
  await q.qmp.execute('stop');
  try {
    return await step();
  } finally {
    await q.qmp.execute('cont');
  }
}
