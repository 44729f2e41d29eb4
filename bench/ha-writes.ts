/**
 * What HA's synchronous disk mirror costs the guest: fsync'd appends per second and their latency, on an
 * unprotected VM and on an HA VM whose every write is mirrored to the peer, side by side in one lab, with the
 * A-Link's round trip measured beside them; then again with 2 ms of RTT added to the A-Links.
 *
 * Both VMs run on host1 with the same hardware (1 vCPU, 256 MiB, a 64 MiB disk): `local` (`none`, the
 * lab's own VM) and `mirrored` (`ha`, defined through the daemon API). Each is loaded on its own, one after
 * the other, by the lab's append load from the client namespace: one `append` in flight at a time, each
 * acknowledged by the guest's record service only once written with O_DIRECT and fdatasync'd (docs/guest.md),
 * so the latency is one durable write as the client sees it, over the business network.
 *
 * For the mirrored VM a guest write completes only once it is on host1's disk and on host2's copy: QEMU's
 * write-blocking mirror sends it over NBD through the daemons' TLS replication proxies (host1's, then
 * host2's) on the A-Link to host2's qemu-nbd, which writes through (a write and fdatasync per write). The
 * guest's flush is not forwarded. So the extra latency should be about one round trip between the two
 * daemons plus one synchronous write on host2's disk; both are measured here too.
 *
 * The goal (issue): mirrored p50 ≤ local p50 + 1.5 × RTT, with RTT the A-Link's network round trip (ping).
 * It is printed as measured, not asserted.
 */
import { guestAddress, guestMac } from '../src/lab/topology.js';
import { sleep } from '../src/util/proc.js';
import { acks, median, progress, quantile, withLab, type BenchLab, type BenchVm } from './lab-bench.js';
import type { BenchResult } from './result.js';

const LAB_NAME = 'bench-wr';
const LOAD_SECONDS = 20;
/** Acks in the first second after connecting are left out (connection set-up, the guest's first writes). */
const WARMUP_MS = 1000;
const ADDED_RTT_MS = [0, 2];
const PING_INTERVAL_MS = 200;
const SYNC_WRITE_SAMPLES = 300;

const LOCAL: BenchVm = { name: 'local', address: guestAddress(0), mac: guestMac(0), protection: 'none', memoryMiB: 256, diskMiB: 64 };
/** Outside the addresses the lab hands out from .50 up, as test/lab/availability.e2e.test.ts does. */
const MIRRORED: BenchVm = { name: 'mirrored', address: '10.10.3.60', mac: '52:54:00:4c:54:3c', protection: 'ha', memoryMiB: 256, diskMiB: 64 };

interface LoadMeasurement {
  vm: string;
  protection: string;
  addedRttMs: number;
  seconds: number;
  appends: number;
  appendsPerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** ICMP round trips host1 → host2 on A-Link 1 during the load. */
  pingMs: { samples: number; p50: number; min: number; max: number };
  /** The daemon's A-Link RTT (`core.rttMs` on host1: a ping/pong between the daemons over TLS), sampled each second. */
  coreRttMs: { samples: number; p50: number; min: number; max: number };
  /** The VM's state at the end of the load (the HA VM must still be `protected`, its mirror `ready`). */
  stateAfter: string;
  mirrorAfter: string | null;
}

export async function run(): Promise<BenchResult> {
  return withLab(LAB_NAME, async (lab) => {
    await lab.up({ vm: LOCAL.name, protection: 'none', memoryMiB: LOCAL.memoryMiB });
    await lab.defineVm('host1', MIRRORED);
    await lab.protectedOn(MIRRORED.name, 'host1');
    progress(LAB_NAME, `${LOCAL.name} (none) and ${MIRRORED.name} (ha, protected) run on host1`);
    const since = Date.now();
    const syncWrite = { host1: lab.syncWriteMs('host1', SYNC_WRITE_SAMPLES), host2: lab.syncWriteMs('host2', SYNC_WRITE_SAMPLES) };
    const measurements: LoadMeasurement[] = [];
    for (const added of ADDED_RTT_MS) {
      if (added > 0) {
        await lab.lab.setAlinkLatency(added);
        await sleep(3000); // the daemons' smoothed RTT follows
        await lab.protectedOn(MIRRORED.name, 'host1');
      }
      for (const vm of [LOCAL, MIRRORED]) measurements.push(await measure(lab, vm, added));
    }
    const downgrades = await lab.alerts('SPLITSITE_DOWNGRADE', since);
    return summary(measurements, syncWrite, downgrades);
  });
}

async function measure(lab: BenchLab, vm: BenchVm, addedRttMs: number): Promise<LoadMeasurement> {
  const load = lab.startLoad(`${vm.name}-rtt${addedRttMs}`, vm.address);
  try {
    await lab.waitForAcks(load, 1, 30_000);
    const from = acks(load.events())[0]!.atMs + WARMUP_MS;
    const until = from + LOAD_SECONDS * 1000;
    await sleep(Math.max(0, from - Date.now()));
    const coreRtt: number[] = [];
    const sampling = (async () => {
      while (Date.now() < until - 500) {
        const rtt = (await lab.status('host1'))?.core?.rttMs;
        if (typeof rtt === 'number') coreRtt.push(rtt);
        await sleep(1000);
      }
    })();
    const ping = await lab.ping('host1', 'alink1', Math.floor((LOAD_SECONDS * 1000 - 1000) / PING_INTERVAL_MS), PING_INTERVAL_MS);
    await sampling;
    await sleep(Math.max(0, until - Date.now()));
    const events = await load.stop();
    const ended = events.find((e) => e.t === 'ended' && e.why !== 'stopped');
    if (ended) throw new Error(`the load on ${vm.name} ended early: ${ended.t === 'ended' ? ended.why : ''}`);
    const window = acks(events).filter((a) => a.atMs >= from && a.atMs < until);
    const latencies = window.map((a) => a.latencyMs);
    const status = await lab.vm('host1', vm.name);
    const m: LoadMeasurement = {
      vm: vm.name,
      protection: vm.protection,
      addedRttMs,
      seconds: LOAD_SECONDS,
      appends: window.length,
      appendsPerSecond: window.length / LOAD_SECONDS,
      p50Ms: quantile(latencies, 0.5),
      p90Ms: quantile(latencies, 0.9),
      p99Ms: quantile(latencies, 0.99),
      maxMs: Math.max(...latencies),
      pingMs: stats(ping),
      coreRttMs: stats(coreRtt),
      stateAfter: status?.state ?? 'unknown',
      mirrorAfter: (status?.local?.mirror as { state?: string } | null | undefined)?.state ?? null,
    };
    progress(
      LAB_NAME,
      `${vm.name}, +${addedRttMs} ms: ${m.appendsPerSecond.toFixed(0)} appends/s, p50 ${m.p50Ms.toFixed(2)} ms, p99 ${m.p99Ms.toFixed(2)} ms; ` +
        `ping ${m.pingMs.p50.toFixed(3)} ms, A-Link RTT ${m.coreRttMs.p50.toFixed(2)} ms; ${m.stateAfter}`,
    );
    return m;
  } finally {
    await load.stop().catch(() => undefined);
  }
}

function stats(samples: number[]): { samples: number; p50: number; min: number; max: number } {
  return { samples: samples.length, p50: median(samples), min: Math.min(...samples), max: Math.max(...samples) };
}

function summary(measurements: LoadMeasurement[], syncWrite: { host1: number[]; host2: number[] }, downgrades: { host: string; wallMs: number; what: string }[]): BenchResult {
  const rows = ADDED_RTT_MS.map((addedRttMs) => {
    const local = measurements.find((m) => m.addedRttMs === addedRttMs && m.protection === 'none')!;
    const mirrored = measurements.find((m) => m.addedRttMs === addedRttMs && m.protection === 'ha')!;
    const rttMs = mirrored.pingMs.p50;
    const allowedMs = local.p50Ms + 1.5 * rttMs;
    return {
      addedRttMs,
      pingRttMs: rttMs,
      alinkRttMs: mirrored.coreRttMs.p50,
      local,
      mirrored,
      throughputRatio: mirrored.appendsPerSecond / local.appendsPerSecond,
      p50Ratio: mirrored.p50Ms / local.p50Ms,
      extraP50Ms: mirrored.p50Ms - local.p50Ms,
      goal: { allowedP50Ms: allowedMs, met: mirrored.p50Ms <= allowedMs },
    };
  });
  const sync = { host1P50Ms: median(syncWrite.host1), host2P50Ms: median(syncWrite.host2), host2P99Ms: quantile(syncWrite.host2, 0.99) };
  const f = (n: number, d = 2): string => n.toFixed(d);
  return {
    name: 'ha-writes',
    title: `Guest fsync'd appends, unprotected vs HA-mirrored to the peer (${LOAD_SECONDS} s of load each, one append in flight)`,
    columns: ['added RTT', 'ping RTT ms', 'A-Link RTT ms', 'local/s', 'p50 ms', 'p99 ms', 'HA/s', 'p50 ms', 'p99 ms', 'HA/local', 'p50 +ms', 'goal: HA p50 ≤ local p50 + 1.5 RTT'],
    rows: rows.map((r) => [
      `${r.addedRttMs} ms`,
      f(r.pingRttMs, 3),
      f(r.alinkRttMs),
      f(r.local.appendsPerSecond, 0),
      f(r.local.p50Ms),
      f(r.local.p99Ms),
      f(r.mirrored.appendsPerSecond, 0),
      f(r.mirrored.p50Ms),
      f(r.mirrored.p99Ms),
      `${f(r.throughputRatio)}x`,
      f(r.extraP50Ms),
      `${r.goal.met ? 'met' : 'not met'} (${f(r.mirrored.p50Ms)} vs ≤ ${f(r.goal.allowedP50Ms)})`,
    ]),
    notes: [
      `both VMs on host1, 1 vCPU, 256 MiB, 64 MiB qcow2 disk (cache=writeback), QEMU under TCG; loaded one after the other by the lab's append load (src/lab/append-load.ts) from the client namespace; the first ${WARMUP_MS} ms after connecting left out`,
      'local/s, HA/s: acknowledged appends per second; p50/p99: latency of one append as the client sees it (send to "ok SEQ"), each durable (O_DIRECT write + fdatasync in the guest)',
      'HA/local: mirrored appends/s ÷ local appends/s; p50 +ms: mirrored p50 − local p50',
      `ping RTT: median ICMP round trip host1 → host2 on A-Link 1 during the mirrored load; A-Link RTT: the daemon's own (core.rttMs on host1, a ping/pong between the daemons over TLS), median of 1 s samples`,
      `added RTT: \`lab latency alink MS\` (the user-space wire, half each way); the goal is checked against the ping RTT`,
      `a synchronous 512-byte write (write + fdatasync) on the hosts' own disks, as qemu-nbd's writethrough does for each mirrored write: host1 p50 ${f(sync.host1P50Ms)} ms, host2 p50 ${f(sync.host2P50Ms)} ms (p99 ${f(sync.host2P99Ms)} ms)`,
      ...rows.map(
        (r) =>
          `+${r.addedRttMs} ms: the mirror adds ${f(r.extraP50Ms)} ms at p50; the parts measured here, one daemon-to-daemon round trip (${f(r.alinkRttMs)} ms) + one synchronous write on host2's disk (${f(sync.host2P50Ms)} ms), make ${f(r.alinkRttMs + sync.host2P50Ms)} ms of it` +
            (r.extraP50Ms > r.alinkRttMs + sync.host2P50Ms ? `; the other ${f(r.extraP50Ms - r.alinkRttMs - sync.host2P50Ms)} ms are elsewhere on the path (QEMU's mirror and NBD client, qemu-nbd's qcow2 write on host2, the two proxies' hops), on 2 cores shared with the TCG vCPUs` : ''),
      ),
      `the HA VM after each load: ${rows.map((r) => `${r.mirrored.stateAfter}/${r.mirrored.mirrorAfter ?? '-'}`).join(', ')}; ` +
        `SplitSite downgrades of HA (the daemon's A-Link RTT over the 10 ms HA limit) during the bench: ${downgrades.length}${downgrades.length > 0 ? ` (${downgrades.map((d) => d.what.replace(/^.*round trip /, '').replace(/ exceeds.*$/, '')).join(', ')})` : ''}`,
    ],
    data: { rows, measurements, splitSiteDowngrades: downgrades, syncWrite: { ...sync, host1: syncWrite.host1, host2: syncWrite.host2 }, loadSeconds: LOAD_SECONDS, warmupMs: WARMUP_MS },
  };
}
