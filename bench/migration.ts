/**
 * Live migration on this machine: how long QEMU takes to move a guest whose RAM holds data, next to a raw
 * copy of the same number of bytes over the same loopback (`raw-copy.ts`), in the clear and over TLS with a
 * pair's certificates.
 *
 * The guest is the lab's kernel with a memory filler as init (`fill-guest.ts`): a fresh guest's RAM is
 * mostly zero pages, which QEMU sends as a few bytes each, so an idle small guest would measure nothing.
 * Filled under TCG in a few seconds, it then idles: this is the one-pass case, what the link and QEMU's
 * migration thread can do, not a guest that dirties RAM during the copy (that needs auto-converge or a
 * larger downtime limit, and depends on the workload).
 *
 * Each guest boots once and moves back and forth between two supervisors ("hosts"): plain then TLS,
 * `REPEATS` times; the table shows medians.
 *
 * What TLS costs here is mostly QEMU 7.2's TLS channel, not the cipher: it encrypts and sends each piece of
 * the stream on its own, a TLS record and a sendmsg for each page header and each 4 KiB page (strace, 512 MiB
 * of RAM: 262k sendmsg), where the plain socket sends 32 pages per sendmsg (4k sendmsg).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createPairCa, issueCert, type IssuedFiles } from '../src/pki/pki.js';
import { listenForMigration, migrate, waitForIncomingMigration, type MigrationResult, type MigrationTls } from '../src/qemu/migration.js';
import { VmSupervisor, type VmInstance } from '../src/qemu/supervisor.js';
import type { VmSpec } from '../src/qemu/vm-spec.js';
import { ensureFillGuest, FILLED_RE, type FillGuest } from './fill-guest.js';
import { rawCopy } from './raw-copy.js';
import type { BenchResult } from './result.js';

const GUEST_MIB = [256, 1024];
const REPEATS = 3;
const DOWNTIME_LIMIT_MS = 100;
/** One stream, then QEMU's multifd with one sender thread per core of this machine. */
const MULTIFD_CHANNELS = [undefined, 2] as const;
const FILL_TIMEOUT_MS = 120_000;
const INCOMING_TIMEOUT_MS = 120_000;
const HOST_IDS = ['host1', 'host2'] as const;
/** Each repeat moves the guest once per variant, so every variant sees the same guest at the same moment. */
const VARIANTS = [false, true].flatMap((tls) => MULTIFD_CHANNELS.map((multifdChannels) => ({ tls, multifdChannels })));

interface Measurement {
  guestMiB: number;
  filledMiB: number;
  tls: boolean;
  /** QEMU's multifd connections, or null for one stream. */
  multifd: number | null;
  repeat: number;
  migration: MigrationResult;
  /** From `migrate` being called to its result, as a caller sees it. */
  wallMs: number;
  rawMs: number;
}

export async function run(): Promise<BenchResult> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'lockstep-bench-migration-'));
  try {
    const pki = await pairPki(work);
    const guest = await ensureFillGuest();
    const measurements: Measurement[] = [];
    for (const guestMiB of GUEST_MIB) measurements.push(...(await measureGuest(work, guest, guestMiB, pki)));
    return summary(measurements);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A pair CA and its two hosts' certificates, as pairing makes them (CN = host id, no SAN). */
async function pairPki(work: string): Promise<IssuedFiles[]> {
  const ca = await createPairCa(work, 'bench');
  return Promise.all(HOST_IDS.map((commonName) => issueCert(ca, work, { commonName })));
}

async function measureGuest(work: string, guest: FillGuest, guestMiB: number, pki: IssuedFiles[]): Promise<Measurement[]> {
  const spec: VmSpec = {
    name: `bench-${guestMiB}`,
    vcpus: 1,
    memoryMiB: guestMiB,
    accel: 'tcg',
    boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    disks: [],
    nics: [],
  };
  const hosts = HOST_IDS.map((id) => new VmSupervisor({ runRoot: path.join(work, id) }));
  const tlsOf = (self: number, peer: number): MigrationTls => ({ files: pki[self]!, peer: HOST_IDS[peer]!, credsDir: path.join(work, `creds-${HOST_IDS[self]}`) });
  const measurements: Measurement[] = [];
  try {
    const booted = Date.now();
    let here = await hosts[0]!.start(spec);
    let side = 0;
    const filledMiB = await waitUntilFilled(here);
    progress(`${guestMiB} MiB guest: booted and filled ${filledMiB} MiB in ${((Date.now() - booted) / 1000).toFixed(1)} s`);
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const { tls, multifdChannels } of VARIANTS) {
        const other = 1 - side;
        const there = await hosts[other]!.start(spec, { incoming: true });
        const { uri } = await listenForMigration(there.qmp, { uri: 'tcp:127.0.0.1:0', tls: tls ? tlsOf(other, side) : undefined, multifdChannels });
        const incoming = waitForIncomingMigration(there.qmp, { timeoutMs: INCOMING_TIMEOUT_MS });
        const called = Date.now();
        const migration = await migrate(here.qmp, {
          uri,
          downtimeLimitMs: DOWNTIME_LIMIT_MS,
          autoConverge: false,
          tls: tls ? tlsOf(side, other) : undefined,
          multifdChannels,
        });
        const wallMs = Date.now() - called;
        await incoming;
        await here.stop({ gracefulMs: 0 });
        const raw = await rawCopy(migration.transferredBytes, tls ? { server: pki[other]!, client: pki[side]!, serverName: HOST_IDS[other]! } : undefined);
        measurements.push({ guestMiB, filledMiB, tls, multifd: multifdChannels ?? null, repeat, migration, wallMs, rawMs: raw.ms });
        progress(
          `${guestMiB} MiB guest, ${tls ? 'TLS  ' : 'plain'}, ${streamsOf(multifdChannels ?? null)}: migration ${migration.totalMs} ms (downtime ${migration.downtimeMs} ms), ` +
            `raw copy ${raw.ms.toFixed(0)} ms, ${mib(migration.transferredBytes).toFixed(0)} MiB`,
        );
        [here, side] = [there, other];
      }
    }
  } finally {
    await Promise.all(hosts.map((h) => h.stopAll({ gracefulMs: 0 })));
  }
  return measurements;
}

async function waitUntilFilled(vm: VmInstance): Promise<number> {
  const deadline = Date.now() + FILL_TIMEOUT_MS;
  for (;;) {
    const m = FILLED_RE.exec(await readFile(vm.paths.serialLog, 'utf8').catch(() => ''));
    if (m) return Number(m[1]);
    if (vm.hasExited || Date.now() > deadline) throw new Error(`the bench guest ${vm.name} did not report its RAM filled`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function summary(measurements: Measurement[]): BenchResult {
  const groups = GUEST_MIB.flatMap((guestMiB) =>
    VARIANTS.map(({ tls, multifdChannels }) => {
      const multifd = multifdChannels ?? null;
      return { guestMiB, tls, multifd, runs: measurements.filter((m) => m.guestMiB === guestMiB && m.tls === tls && m.multifd === multifd) };
    }),
  );
  const rows = groups.map(({ guestMiB, tls, multifd, runs }) => {
    const sent = median(runs.map((r) => r.migration.transferredBytes));
    const migrationMs = median(runs.map((r) => r.migration.totalMs));
    const rawMs = median(runs.map((r) => r.rawMs));
    return {
      guestMiB,
      tls,
      multifd,
      filledMiB: runs[0]!.filledMiB,
      sentMiB: mib(sent),
      migrationMs,
      migrationMiBs: mib(sent) / (migrationMs / 1000),
      rawMs,
      rawMiBs: mib(sent) / (rawMs / 1000),
      ratio: migrationMs / rawMs,
      downtimeMs: median(runs.map((r) => r.migration.downtimeMs)),
      setupMs: median(runs.map((r) => r.migration.setupMs)),
    };
  });
  const tlsCost = GUEST_MIB.map((guestMiB) => {
    const [plain, secure] = [false, true].map((tls) => rows.find((r) => r.guestMiB === guestMiB && r.tls === tls && r.multifd === null)!);
    const slower = (a: number, b: number): string => `${((b / a - 1) * 100).toFixed(0)}%`;
    return `TLS, ${guestMiB} MiB guest: migration ${slower(plain!.migrationMs, secure!.migrationMs)} longer (QEMU's GnuTLS), raw copy ${slower(plain!.rawMs, secure!.rawMs)} longer (Node's OpenSSL)`;
  });
  return {
    name: 'migration',
    title: 'Live migration over loopback TCP vs a raw copy of the same bytes (medians)',
    columns: ['guest', 'filled', 'TLS', 'streams', 'sent MiB', 'migration ms', 'MiB/s', 'raw copy ms', 'MiB/s', 'ratio', 'downtime ms', 'setup ms'],
    rows: rows.map((r) => [
      `${r.guestMiB} MiB`,
      `${r.filledMiB} MiB`,
      r.tls ? 'yes' : 'no',
      streamsOf(r.multifd),
      r.sentMiB.toFixed(0),
      r.migrationMs.toFixed(0),
      r.migrationMiBs.toFixed(0),
      r.rawMs.toFixed(0),
      r.rawMiBs.toFixed(0),
      `${r.ratio.toFixed(1)}x`,
      r.downtimeMs.toFixed(0),
      r.setupMs.toFixed(0),
    ]),
    notes: [
      `${REPEATS} migrations per row (the guest moves back and forth between two QEMUs); QEMU 7.2 under TCG, 1 vCPU, no bandwidth cap, downtime-limit ${DOWNTIME_LIMIT_MS} ms, return-path on`,
      'guest: the lab kernel with a filler as init that writes pseudo-random data over its free RAM, then idles (one pass: nothing is dirtied during the copy)',
      'migration ms, downtime ms, setup ms: QEMU\'s own total-time, downtime, setup-time; sent: QEMU\'s ram.transferred, which the raw copy then sends',
      `streams: one, or QEMU's multifd with that many connections (each its own sender thread and TLS session) beside the main one`,
      'raw copy: a Node sender and a Node receiver process on the same loopback, until the receiver has every byte; TLS 1.3 with the same certificates',
      'ratio: migration time / raw copy time',
      ...tlsCost,
    ],
    data: { rows, measurements, downtimeLimitMs: DOWNTIME_LIMIT_MS, repeats: REPEATS, multifdChannels: MULTIFD_CHANNELS },
  };
}

function streamsOf(multifd: number | null): string {
  return multifd === null ? 'one' : `multifd ${multifd}`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function mib(bytes: number): number {
  return bytes / 2 ** 20;
}

function progress(line: string): void {
  process.stderr.write(`migration: ${line}\n`);
}
