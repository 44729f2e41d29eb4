/**
 * The FT pair end to end on this machine: what protection costs a guest that appends records (the lab
 * guest's record service, each record fsynced before its answer) and one that computes (its `spin` work
 * unit), and how long an FT failover takes.
 *
 * Modes, side by side in one run, each on a fresh guest (harness: `test/ft/ft-pair-harness.ts`): unprotected
 * (NIC straight on its tap, no mirror), HA (the disk mirrored write-blocking into a copy that qemu-nbd writes
 * through, as lockstepd's HA copy), and FT with epochs of 20 and 50 ms (`FtPrimary` → `FtBackup` over a
 * unix socket, the disk mirrored write-blocking into the backup's epoch disk). One client, one TCP
 * connection, one append at a time for `LOAD_MS`: appends/s and the latency of each; then `SPINS` CPU work
 * units, timed from the client (so FT's pauses and held output count): units/s. Each mode's rates are also
 * given as ratios to the unprotected guest's. Then, under FT, the primary's QEMU is SIGKILLed while the
 * client appends, and `FtBackup.takeOver()` resumes the guest on the backup: failover = from the kill to
 * the first append answered after it, on the same connection.
 *
 * Needs root (namespace, taps).
 */
import { performance } from 'node:perf_hooks';
import { Cleanup } from '../test/support/cleanup.js';
import { LineClient, pairNetwork, startPair } from '../test/ft/ft-pair-harness.js';
import type { FtPrimaryStats } from '../src/ft/ft-primary.js';
import type { FtTakeOver } from '../src/ft/ft-backup.js';
import { quantile } from './lab-bench.js';
import type { BenchResult } from './result.js';

const LOAD_MS = 6_000;
/** `spin SPIN_MILLIONS` requests, one after the other: a few seconds of guest CPU under TCG here. */
const SPINS = 8;
const SPIN_MILLIONS = 60;

type Mode = { kind: 'unprotected' } | { kind: 'ha' } | { kind: 'ft'; epochMs: number };
const MODES: Mode[] = [{ kind: 'unprotected' }, { kind: 'ha' }, { kind: 'ft', epochMs: 20 }, { kind: 'ft', epochMs: 50 }];

interface ModeRun {
  mode: string;
  epochMs: number | null;
  appends: number;
  appendsPerSec: number;
  latencyMs: number[];
  /** CPU work units (`spin`) answered per second, timed from the client. */
  spinsPerSec: number;
  ft: FtPrimaryStats | null;
  failover: { killToFirstAckMs: number; takeOver: FtTakeOver['timings']; epoch: number } | null;
}

async function measure(cleanup: Cleanup, ns: string, index: number, mode: Mode): Promise<ModeRun> {
  const epochMs = mode.kind === 'ft' ? mode.epochMs : null;
  const pair = await startPair({ cleanup, ns, index, epochMs, ha: mode.kind === 'ha' });
  const client = await LineClient.open(cleanup, pair.proxySocket);
  const latencyMs: number[] = [];
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < LOAD_MS) {
    const sentAt = performance.now();
    const reply = await client.request(`append bench-${++n}`);
    if (!/^ok \d+$/.test(reply)) throw new Error(`append answered '${reply}'`);
    latencyMs.push(performance.now() - sentAt);
  }
  const elapsedMs = performance.now() - t0;
  const spinStart = performance.now();
  for (let i = 0; i < SPINS; i++) {
    const reply = await client.request(`spin ${SPIN_MILLIONS}`);
    if (reply !== `spun ${SPIN_MILLIONS}`) throw new Error(`spin answered '${reply}'`);
  }
  const spinsPerSec = (SPINS * 1000) / (performance.now() - spinStart);
  const ft = pair.primary?.stats ?? null;
  let failover: ModeRun['failover'] = null;
  if (pair.primary) {
    // Appends go on while the primary dies; the first one answered after the kill ends the outage.
    let killedAt = 0;
    let firstAckAt = 0;
    const load = (async () => {
      while (firstAckAt === 0) {
        const reply = await client.request(`append failover-${++n}`);
        if (!/^ok \d+$/.test(reply)) throw new Error(`append answered '${reply}'`);
        if (killedAt !== 0) firstAckAt = performance.now();
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    killedAt = performance.now();
    await pair.killPrimary();
    const took = await pair.takeOver();
    await load;
    failover = { killToFirstAckMs: firstAckAt - killedAt, takeOver: took.timings, epoch: took.epoch };
  }
  const name = mode.kind === 'ft' ? `FT ${mode.epochMs} ms` : mode.kind === 'ha' ? 'HA' : 'unprotected';
  return { mode: name, epochMs, appends: latencyMs.length, appendsPerSec: (latencyMs.length * 1000) / elapsedMs, latencyMs, spinsPerSec, ft, failover };
}

export async function run(): Promise<BenchResult> {
  const cleanup = new Cleanup();
  const runs: ModeRun[] = [];
  try {
    const ns = await pairNetwork(cleanup, 'lsftpb');
    let index = 0;
    for (const mode of MODES) {
      const modeCleanup = new Cleanup();
      try {
        runs.push(await measure(modeCleanup, ns, ++index, mode));
      } finally {
        await modeCleanup.run();
      }
    }
  } finally {
    await cleanup.run();
  }
  const f = (v: number | null | undefined, d = 1): string => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));
  const base = runs[0]!;
  return {
    name: 'ft-pair',
    title: 'Protection\'s cost to a guest: appends (fsync each) and CPU work on one connection, unprotected vs HA vs FT; FT failover from SIGKILL of the primary',
    columns: ['mode', 'appends/s', '× unprot.', 'p50 ms', 'p99 ms', 'CPU units/s', '× unprot.', 'epochs/s', 'pause p50', 'pause p99', 'failover ms', 'takeover ms', 'resume ms'],
    rows: runs.map((r) => [
      r.mode,
      f(r.appendsPerSec),
      f(r.appendsPerSec / base.appendsPerSec, 3),
      f(quantile(r.latencyMs, 0.5)),
      f(quantile(r.latencyMs, 0.99)),
      f(r.spinsPerSec, 2),
      f(r.spinsPerSec / base.spinsPerSec, 3),
      f(r.ft?.epochsPerSec),
      f(r.ft?.pauseP50Ms),
      f(r.ft?.pauseP99Ms),
      f(r.failover?.killToFirstAckMs, 0),
      f(r.failover?.takeOver.totalMs, 0),
      f(r.failover?.takeOver.resumeMs, 0),
    ]),
    notes: [
      `lab guest (128 MiB, TCG, 1 vCPU), record service; one connection, one append at a time for ${LOAD_MS / 1000} s; each append is fsynced in the guest before it is answered`,
      `CPU units: ${SPINS} requests of \`spin ${SPIN_MILLIONS}\` (${SPIN_MILLIONS} million rounds of a loop in the guest), one after the other, timed from the client: FT's pauses and its held answers count`,
      'HA: the disk mirrored write-blocking into a qcow2 copy that qemu-nbd writes through, over a unix socket (no A-Link, no TLS proxies: the daemon\'s path adds those, see ha-writes)',
      'FT: output gate on the NIC, disk mirrored write-blocking into the backup\'s epoch disk (qemu-nbd writeback behind it), checkpoints over a unix socket; the pause includes the disk seal\'s round trip (beside the RAM copy)',
      'epochs/s: achieved (an epoch ends no earlier than epochMs after the last and no earlier than its predecessor\'s ack); pause p50/p99 over the last 256 epochs',
      'failover: from SIGKILL of the primary\'s QEMU to the first append answered on the same TCP connection (includes TCP\'s retransmission backoff); takeover: FtBackup.takeOver (drain, discard, copy stop, resume, announce-self)',
    ],
    data: runs.map((r) => ({ ...r, latencyMs: undefined, latencyP50Ms: quantile(r.latencyMs, 0.5), latencyP99Ms: quantile(r.latencyMs, 0.99) })),
  };
}
