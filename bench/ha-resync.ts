/**
 * HA resync after the backup was away: how much the owner copies to bring the backup's copy up to date,
 * against what the guest wrote meanwhile and against the disk's size, and how fast it copies against a raw
 * copy over the same A-Link.
 *
 * One HA VM whose 256 MiB disk is full of data from the start (a qcow2 of random bytes put where the owner's
 * daemon creates the VM's disk; the guest's record service formats its superblock over the first sector and
 * appends from there): its first sync to the backup is a full copy of real data, which is what the link
 * comparison needs (an empty disk's full sync sends mostly zero blocks, which NBD carries as a few bytes).
 * Then, for each outage length: a client appends without pause (the lab's append load), the backup is
 * powered off, the guest writes alone for N seconds, the backup is healed, and the owner's status tells
 * the resync it ran (`local.mirror.lastSync`: mode, copiedBytes, durationMs, pauseMs).
 *
 * What the guest dirtied: the owner's status does not show the dirty bitmap (the daemon's `DiskMirror`
 * reads it from QEMU, `status().dirtyBytes`, but `GET /v1/status` does not carry it). So it is computed from
 * the load's log: each acknowledged append wrote one 512-byte slot at seq × 512 (docs/guest.md), so the
 * appends acknowledged between the power cut and the end of the resync are a lower bound on the bytes
 * written, and the bitmap granules they fall in (QEMU's default granularity for a qcow2 disk: its cluster
 * size, read with `qemu-img info`) are what an exact incremental copy must send.
 *
 * The VM runs on host2, host1 is the backup. With the roles the other way round the backup's return sets off
 * a health-driven live migration that is abandoned and leaves the pair unprotected (see ha-failover's
 * notes): this bench measures the resync, so it uses the roles in which the backup's return works.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { HostName } from '../src/lab/topology.js';
import { addressesOf } from '../src/lab/topology.js';
import { run as runProgram } from '../src/util/exec.js';
import { sleep } from '../src/util/proc.js';
import { acks, mib, peer, progress, withLab, type BenchLab, type BenchVm, type MirrorStatus } from './lab-bench.js';
import { rawCopyBetween, type RawCopyTls } from './raw-copy.js';
import type { BenchResult } from './result.js';

const LAB_NAME = 'bench-rs';
const OWNER: HostName = 'host2';
const BACKUP: HostName = peer(OWNER);
const VM: BenchVm = { name: 'resync', address: '10.10.3.61', mac: '52:54:00:4c:54:3d', protection: 'ha', memoryMiB: 256, diskMiB: 256 };
const OUTAGE_SECONDS = [5, 20];
const SLOT_BYTES = 512;
const REPROTECT_TIMEOUT_MS = 90_000;

interface DiskInfo {
  virtualBytes: number;
  clusterBytes: number;
}

interface Resync {
  outageSeconds: number;
  /** Appends acknowledged from the power cut to the heal, and to the end of the resync (lastSync.at). */
  appendsDuringOutage: number;
  appendsUntilSynced: number;
  /** Lower bound of the bytes the guest wrote: acknowledged appends × 512. */
  writtenBytesAtLeast: number;
  /** Bitmap granules (cluster size) those appends fall in × the granule: what an exact copy sends. */
  dirtyGranuleBytes: number;
  sync: NonNullable<MirrorStatus['lastSync']>;
  /** Heal → protected again. */
  reprotectMs: number;
  /** The longest gap between two acknowledged appends around the power cut: the guest's writes wait until the owner cuts the mirror. */
  stallAtCutMs: number;
  /** …and from the heal to the end of the resync (its last pass runs with the guest paused). */
  longestGapDuringResyncMs: number;
}

interface RawCopy {
  tls: boolean;
  bytes: number;
  ms: number;
}

export async function run(): Promise<BenchResult> {
  return withLab(LAB_NAME, async (lab) => {
    await lab.up();
    const disk = path.join(lab.hostDir(OWNER), 'disks', `${VM.name}.qcow2`);
    await fillDisk(lab, disk, VM.diskMiB);
    const info = await diskInfo(disk);
    await lab.defineVm(OWNER, VM);
    const first = await lab.protectedOn(VM.name, OWNER);
    const full = (first.local!.mirror as MirrorStatus).lastSync!;
    progress(LAB_NAME, `first sync (${full.mode}): ${mib(full.copiedBytes).toFixed(0)} MiB in ${full.durationMs.toFixed(0)} ms`);
    const raw = await rawCopies(lab, full.copiedBytes);
    // The other end's yardstick: the backup's own disk taking the same bytes, 1 MiB writes each fdatasync'd.
    const backupDiskMs = lab.syncWriteThroughputMs(BACKUP, full.copiedBytes, 2 ** 20);
    progress(LAB_NAME, `${BACKUP}'s disk: ${mib(full.copiedBytes).toFixed(0)} MiB in 1 MiB fdatasync'd writes in ${backupDiskMs.toFixed(0)} ms`);
    const since = Date.now();
    const resyncs: Resync[] = [];
    for (const seconds of OUTAGE_SECONDS) {
      const r = await outage(lab, seconds, info);
      resyncs.push(r);
      progress(
        LAB_NAME,
        `backup away ${seconds} s: ${r.appendsUntilSynced} appends, ${r.sync.mode} resync copied ${(r.sync.copiedBytes / 1024).toFixed(0)} KiB ` +
          `(dirty granules ${(r.dirtyGranuleBytes / 1024).toFixed(0)} KiB) in ${r.sync.durationMs.toFixed(0)} ms, guest paused ${r.sync.pauseMs.toFixed(1)} ms`,
      );
    }
    return summary(info, full, raw, backupDiskMs, resyncs, await lab.alerts('SPLITSITE_DOWNGRADE', since));
  });
}

/**
 * A qcow2 of `sizeMiB` random bytes at the path the owner's daemon will find (and use) for the VM's disk,
 * written out to the host's disk before the VM starts. Left in the page cache, those hundreds of MiB would be
 * written back during the first sync, and the owner's health probe (a small fsync'd write on the same file
 * system) would wait behind them: a slow probe lowers the host's health, and the owner then starts moving
 * the VM to its peer (seen: a 1.2 s probe, a live migration prepared and abandoned, the mirror cut).
 */
async function fillDisk(lab: BenchLab, disk: string, sizeMiB: number): Promise<void> {
  await mkdir(path.dirname(disk), { recursive: true });
  const raw = path.join(lab.scratch, `${VM.name}.fill.raw`);
  await runProgram('sh', ['-c', `head -c ${sizeMiB}M /dev/urandom > '${raw}'`]);
  await runProgram('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, disk]);
  await runProgram('rm', ['-f', raw]);
  await runProgram('sync', ['-f', disk]);
}

async function diskInfo(disk: string): Promise<DiskInfo> {
  const { stdout } = await runProgram('qemu-img', ['info', '-U', '--output=json', disk]);
  const j = JSON.parse(stdout) as { 'virtual-size': number; 'cluster-size': number };
  return { virtualBytes: j['virtual-size'], clusterBytes: j['cluster-size'] };
}

/** The same bytes as the full sync, owner → backup over A-Link 1, plain TCP and TLS with the pair's certificates. */
async function rawCopies(lab: BenchLab, bytes: number): Promise<RawCopy[]> {
  const pki = (h: HostName): { cert: string; key: string; ca: string } => {
    const dir = path.join(lab.hostDir(h), 'pki');
    return { cert: path.join(dir, 'host.crt'), key: path.join(dir, 'host.key'), ca: path.join(dir, 'ca.crt') };
  };
  const secure: RawCopyTls = { server: pki(BACKUP), client: pki(OWNER), serverName: BACKUP };
  const out: RawCopy[] = [];
  for (const tls of [false, true]) {
    const { ms } = await rawCopyBetween({ bytes, from: `${lab.prefix()}${OWNER}`, to: `${lab.prefix()}${BACKUP}`, address: addressesOf(BACKUP).alink1!, ...(tls ? { secure } : {}) });
    out.push({ tls, bytes, ms });
    progress(LAB_NAME, `raw copy over alink1, ${tls ? 'TLS' : 'TCP'}: ${mib(bytes).toFixed(0)} MiB in ${ms.toFixed(0)} ms`);
  }
  return out;
}

async function outage(lab: BenchLab, seconds: number, info: DiskInfo): Promise<Resync> {
  const load = lab.startLoad(`outage-${seconds}`, VM.address, { reconnect: true });
  try {
    await lab.waitForAcks(load, 30);
    const cutAt = Date.now();
    await lab.lab.fail(BACKUP, 'power');
    await sleep(seconds * 1000);
    const healAt = Date.now();
    await lab.lab.heal(BACKUP);
    const status = await lab.protectedOn(VM.name, OWNER, REPROTECT_TIMEOUT_MS);
    const syncedAt = Date.now();
    await lab.waitForAcks(load, 10);
    const events = await load.stop();
    const sync = (status.local!.mirror as MirrorStatus).lastSync!;
    const all = acks(events);
    const during = all.filter((a) => a.atMs > cutAt && a.atMs <= healAt);
    // The resync ended at lastSync.at: what the guest wrote after it went through the synchronous mirror.
    const resyncEndedAt = Date.parse(sync.at);
    const untilSynced = all.filter((a) => a.atMs > cutAt && a.atMs <= resyncEndedAt);
    const granules = new Set(untilSynced.map((a) => Math.floor((a.seq * SLOT_BYTES) / info.clusterBytes)));
    return {
      outageSeconds: seconds,
      appendsDuringOutage: during.length,
      appendsUntilSynced: untilSynced.length,
      writtenBytesAtLeast: untilSynced.length * SLOT_BYTES,
      dirtyGranuleBytes: granules.size * info.clusterBytes,
      sync,
      reprotectMs: syncedAt - healAt,
      stallAtCutMs: longestGap(all, cutAt - 1000, cutAt + 5000),
      longestGapDuringResyncMs: longestGap(all, healAt, resyncEndedAt),
    };
  } finally {
    await load.stop();
  }
}

/** The longest time without an acknowledged append within [from, to], the edges included. */
function longestGap(all: readonly { atMs: number }[], from: number, to: number): number {
  const times = [from, ...all.map((a) => a.atMs).filter((t) => t > from && t < to), to];
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
  return gap;
}

function summary(info: DiskInfo, full: NonNullable<MirrorStatus['lastSync']>, raw: RawCopy[], backupDiskMs: number, resyncs: Resync[], downgrades: { host: string; what: string }[]): BenchResult {
  const rate = (bytes: number, ms: number): number => mib(bytes) / (ms / 1000);
  const [tcp, tls] = [raw.find((r) => !r.tls)!, raw.find((r) => r.tls)!];
  const kib = (b: number): string => (b / 1024).toFixed(0);
  const rows: string[][] = [
    [
      'first sync',
      '-',
      '-',
      '-',
      '-',
      full.mode,
      kib(full.copiedBytes),
      `${((full.copiedBytes / info.virtualBytes) * 100).toFixed(1)}%`,
      full.durationMs.toFixed(0),
      rate(full.copiedBytes, full.durationMs).toFixed(0),
      full.pauseMs.toFixed(1),
      '-',
    ],
    ...resyncs.map((r) => [
      `backup away ${r.outageSeconds} s`,
      String(r.appendsUntilSynced),
      kib(r.writtenBytesAtLeast),
      kib(r.dirtyGranuleBytes),
      r.stallAtCutMs.toFixed(0),
      r.sync.mode,
      kib(r.sync.copiedBytes),
      `${((r.sync.copiedBytes / info.virtualBytes) * 100).toFixed(2)}%`,
      r.sync.durationMs.toFixed(0),
      rate(r.sync.copiedBytes, r.sync.durationMs).toFixed(1),
      r.sync.pauseMs.toFixed(1),
      `${(r.reprotectMs / 1000).toFixed(1)} s`,
    ]),
  ];
  const exact = resyncs.map((r) => `${r.outageSeconds} s: copied ${(r.sync.copiedBytes / r.dirtyGranuleBytes).toFixed(2)}× the dirty granules`);
  return {
    name: 'ha-resync',
    title: `HA resync of a ${mib(info.virtualBytes).toFixed(0)} MiB disk after the backup was powered off, vs what the guest wrote and a raw copy over the A-Link`,
    columns: ['sync', 'appends', 'written KiB', 'dirty KiB', 'stall ms', 'mode', 'copied KiB', 'of disk', 'ms', 'MiB/s', 'paused ms', 'protected again'],
    rows,
    notes: [
      `one HA VM on ${OWNER} (1 vCPU, ${VM.memoryMiB} MiB), its ${mib(info.virtualBytes).toFixed(0)} MiB qcow2 disk full of random data from the start; ${BACKUP} is the backup; the lab's append load from the client namespace throughout each outage`,
      'appends: acknowledged from the power cut until the resync ended (lastSync.at); written KiB: appends × 512 (each one 512-byte slot: a lower bound of what the guest wrote); ' +
        `dirty KiB: the ${kib(info.clusterBytes)} KiB bitmap granules (the disk's cluster size, QEMU's default granularity) those slots fall in — the status does not show the dirty bitmap itself`,
      'stall ms: the longest gap between acknowledged appends around the power cut (from 1 s before to 5 s after): the guest\'s writes wait on the dead backup until the owner cuts the mirror',
      'mode, copied KiB, ms, paused ms: the owner\'s local.mirror.lastSync (ms from dialing the backup to the synchronous mirror; paused: the guest paused for the last pass and the switch); MiB/s = copied ÷ ms; protected again: from `heal` until both hosts report the VM protected',
      `raw copy of the first sync's ${mib(tcp.bytes).toFixed(0)} MiB over A-Link 1, ${OWNER} → ${BACKUP}, between two Node processes in the hosts' namespaces: TCP ${tcp.ms.toFixed(0)} ms (${rate(tcp.bytes, tcp.ms).toFixed(0)} MiB/s), TLS 1.3 with the pair's certificates ${tls.ms.toFixed(0)} ms (${rate(tls.bytes, tls.ms).toFixed(0)} MiB/s); the first sync ran at ${((rate(full.copiedBytes, full.durationMs) / rate(tls.bytes, tls.ms)) * 100).toFixed(0)}% of the TLS copy's rate (its path: QEMU's mirror → NBD → the owner's TLS proxy → A-Link → the backup's proxy → qemu-nbd writing through)`,
      `the backup's own disk (the lab host's loop-mounted ext4) took the same ${mib(full.copiedBytes).toFixed(0)} MiB as 1 MiB writes each followed by fdatasync in ${backupDiskMs.toFixed(0)} ms (${rate(full.copiedBytes, backupDiskMs).toFixed(0)} MiB/s)`,
      `incremental resyncs: ${exact.join('; ')}; they are too small for a rate: their time is the fixed cost of dialing, starting the backup pass and the switch`,
      `an incremental resync with at most 4 MiB dirty is copied entirely with the guest paused (src/storage/disk-mirror.ts, PAUSED_PASS_BYTES_MAX): the pause grows with the outage up to that; longest gap between appends during each resync: ${resyncs.map((r) => `${r.longestGapDuringResyncMs.toFixed(0)} ms`).join(', ')}`,
      `SplitSite downgrades of HA during the outages and resyncs: ${downgrades.length}`,
      `goal: resync bytes ≪ disk — ${resyncs.every((r) => r.sync.mode === 'incremental' && r.sync.copiedBytes < info.virtualBytes / 100) ? 'met' : 'not met'}: ${resyncs.map((r) => `${((r.sync.copiedBytes / info.virtualBytes) * 100).toFixed(2)}%`).join(' and ')} of the disk`,
    ],
    data: { disk: info, splitSiteDowngrades: downgrades, fullSync: full, rawCopies: raw, backupDisk: { bytes: full.copiedBytes, blockBytes: 2 ** 20, ms: backupDiskMs }, resyncs, owner: OWNER, backup: BACKUP, slotBytes: SLOT_BYTES },
  };
}
