/**
 * The FT pair end to end on this machine: what FT protection costs a guest that appends records (the lab
 * guest's record service, each record fsynced before its answer), and how long a failover takes.
 *
 * Modes, side by side in one run, each on a fresh guest (harness: `test/ft/ft-pair-harness.ts`): unprotected
 * (NIC straight on its tap, no mirror), and FT with epochs of 20 and 50 ms (`FtPrimary` → `FtBackup` over a
 * unix socket, the disk mirrored write-blocking into the backup's epoch disk). One client, one TCP
 * connection, one append at a time for `LOAD_MS`: appends/s and the latency of each. Then, under FT, the
 * primary's QEMU is SIGKILLed while the client appends, and `FtBackup.takeOver()` resumes the guest on the
 * backup: failover = from the kill to the first append answered after it, on the same connection.
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
const MODES: (number | null)[] = [null, 20, 50];

interface ModeRun {
  epochMs: number | null;
  appends: number;
  appendsPerSec: number;
  latencyMs: number[];
  ft: FtPrimaryStats | null;
  failover: { killToFirstAckMs: number; takeOver: FtTakeOver['timings']; epoch: number } | null;
}

async function measure(cleanup: Cleanup, ns: string, index: number, epochMs: number | null): Promise<ModeRun> {
  const pair = await startPair({ cleanup, ns, index, epochMs });
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
  return { epochMs, appends: latencyMs.length, appendsPerSec: (latencyMs.length * 1000) / elapsedMs, latencyMs, ft, failover };
}

export async function run(): Promise<BenchResult> {
  const cleanup = new Cleanup();
  const runs: ModeRun[] = [];
  try {
    const ns = await pairNetwork(cleanup, 'lsftpb');
    let index = 0;
    for (const epochMs of MODES) {
      const modeCleanup = new Cleanup();
      try {
        runs.push(await measure(modeCleanup, ns, ++index, epochMs));
      } finally {
        await modeCleanup.run();
      }
    }
  } finally {
    await cleanup.run();
  }
  const f = (v: number | null | undefined, d = 1): string => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));
  return {
    name: 'ft-pair',
    title: 'FT pair: guest appends (fsync each) on one connection, unprotected vs FT; failover from SIGKILL of the primary',
    columns: ['mode', 'appends/s', 'p50 ms', 'p99 ms', 'epochs/s', 'pause p50', 'pause p99', 'failover ms', 'takeover ms', 'resume ms'],
    rows: runs.map((r) => [
      r.epochMs === null ? 'unprotected' : `FT ${r.epochMs} ms`,
      f(r.appendsPerSec),
      f(quantile(r.latencyMs, 0.5)),
      f(quantile(r.latencyMs, 0.99)),
      f(r.ft?.epochsPerSec),
      f(r.ft?.pauseP50Ms),
      f(r.ft?.pauseP99Ms),
      f(r.failover?.killToFirstAckMs, 0),
      f(r.failover?.takeOver.totalMs, 0),
      f(r.failover?.takeOver.resumeMs, 0),
    ]),
    notes: [
      `lab guest (128 MiB, TCG, 1 vCPU), record service; one connection, one append at a time for ${LOAD_MS / 1000} s; each append is fsynced in the guest before it is answered`,
      'FT: output gate on the NIC, disk mirrored write-blocking into the backup\'s epoch disk (qemu-nbd writeback behind it), checkpoints over a unix socket; the pause includes the disk seal\'s round trip (beside the RAM copy)',
      'epochs/s: achieved (an epoch ends no earlier than epochMs after the last and no earlier than its predecessor\'s ack); pause p50/p99 over the last 256 epochs',
      'failover: from SIGKILL of the primary\'s QEMU to the first append answered on the same TCP connection (includes TCP\'s retransmission backoff); takeover: FtBackup.takeOver (drain, discard, copy stop, resume, announce-self)',
    ],
    data: runs.map((r) => ({ ...r, latencyMs: undefined, latencyP50Ms: quantile(r.latencyMs, 0.5), latencyP99Ms: quantile(r.latencyMs, 0.99) })),
  };
}
