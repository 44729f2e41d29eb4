/**
 * What the lab benches share: a lab of their own (its own `LOCKSTEP_LAB` name and directory, so a bench
 * never touches the demo's lab or a test's), torn down whatever happens — a failed bench, an exception, or
 * Ctrl-C — and found and torn down at the next start if a run was killed outright; the daemons' API; VMs
 * defined through it; loads in the client namespace; round trips between the hosts.
 *
 * The lab runs in this process through the `Lab` class, exactly as `lockstep lab` does; the daemons, quorum
 * servers and QEMUs are the lab's own processes in their namespaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fdatasyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { daemonRequest } from '../src/daemon/api-client.js';
import type { VmStatus } from '../src/daemon/api.js';
import type { CoreView } from '../src/daemon/core-driver.js';
import type { LogEntry } from '../src/daemon/state-db.js';
import { readLoadLog, type LoadEvent } from '../src/lab/append-load.js';
import { ensureGuestImage, guestKernelCmdline, RECORD_SERVICE_PORT } from '../src/lab/guest-image.js';
import { Lab, type LabUpOptions } from '../src/lab/lab.js';
import { addressesOf, NETMASK_BITS, type HostName } from '../src/lab/topology.js';
import { run, runIn } from '../src/util/exec.js';
import { sleep } from '../src/util/proc.js';
import { repoRoot } from '../src/util/paths.js';

export const BENCH_HOSTS = ['host1', 'host2'] as const satisfies readonly HostName[];

/** The part of `GET /v1/status` the benches read. */
export interface BenchDaemonStatus {
  pid: number;
  core: Omit<CoreView, 'vms'> | null;
  vms: VmStatus[];
}

/** A VM's disk mirror as the owner's status shows it (`local.mirror`). */
export interface MirrorStatus {
  stream: string;
  mode: 'full' | 'incremental';
  state: string;
  copiedBytes: number;
  totalBytes: number;
  lastSync: { stream: string; mode: string; copiedBytes: number; pauseMs: number; durationMs: number; at: string } | null;
}

export interface BenchVm {
  name: string;
  address: string;
  mac: string;
  protection: 'none' | 'ha';
  memoryMiB: number;
  diskMiB: number;
}

export interface RunningLoad {
  file: string;
  /** The log so far (the load appends one line per event). */
  events(): LoadEvent[];
  /** Ends the load (SIGTERM) and returns its whole log. */
  stop(): Promise<LoadEvent[]>;
}

export class BenchLab {
  readonly lab: Lab;
  readonly env: NodeJS.ProcessEnv;
  readonly dir: string;
  private readonly loads = new Set<ChildProcess>();
  /** Wall-clock times of the lab's own log lines, for the moments the lab itself acts (a power cut). */
  readonly labLog: { atMs: number; line: string }[] = [];

  constructor(
    readonly name: string,
    /** The bench's own scratch directory (on the machine's disk, not a lab host's), removed with the lab. */
    readonly scratch: string,
  ) {
    this.dir = path.join(os.tmpdir(), `lockstep-lab-${name}`);
    this.env = { ...process.env, LOCKSTEP_LAB: name, LOCKSTEP_LAB_DIR: this.dir };
    this.lab = new Lab(this.env, (line) => {
      this.labLog.push({ atMs: Date.now(), line });
      progress(name, `lab: ${line}`);
    });
  }

  prefix(): string {
    return `${this.name}-`;
  }

  netnsPath(node: 'client' | HostName): string {
    return `/run/netns/${this.prefix()}${node}`;
  }

  socket(host: HostName): string {
    return this.lab.paths.hostApiSocket(host);
  }

  hostDir(host: HostName): string {
    return this.lab.paths.hostDir(host);
  }

  async up(opts: LabUpOptions = {}): Promise<void> {
    const t = Date.now();
    await this.lab.up(opts);
    progress(this.name, `lab up in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }

  async down(): Promise<void> {
    for (const child of this.loads) child.kill('SIGKILL');
    this.loads.clear();
    await this.lab.down();
  }

  async status(host: HostName): Promise<BenchDaemonStatus | null> {
    try {
      return await daemonRequest<BenchDaemonStatus>(this.socket(host), 'GET', '/v1/status', undefined, 3000);
    } catch {
      return null;
    }
  }

  async vm(host: HostName, name: string): Promise<VmStatus | null> {
    return (await this.status(host))?.vms.find((v) => v.name === name) ?? null;
  }

  /** The event log of a host's daemon from `sinceWallMs` on, oldest first. */
  async events(host: HostName, sinceWallMs: number): Promise<LogEntry[]> {
    const entries = await daemonRequest<LogEntry[]>(this.socket(host), 'GET', '/v1/events?limit=1000', undefined, 5000);
    return entries.filter((e) => e.wallMs >= sinceWallMs).reverse();
  }

  /** Alerts with `code` raised by either host from `sinceWallMs` on (a host that does not answer is skipped). */
  async alerts(code: string, sinceWallMs: number): Promise<{ host: HostName; wallMs: number; what: string }[]> {
    const out: { host: HostName; wallMs: number; what: string }[] = [];
    for (const host of BENCH_HOSTS) {
      const entries = await daemonRequest<LogEntry[]>(this.socket(host), 'GET', '/v1/events?limit=1000&kind=alert', undefined, 5000).catch(() => []);
      for (const e of entries) if (e.code === code && e.wallMs >= sinceWallMs) out.push({ host, wallMs: e.wallMs, what: e.what });
    }
    return out.sort((a, b) => a.wallMs - b.wallMs);
  }

  /** Defines a VM through `host`'s daemon API (as `lockstep lab up --vm` does) and waits for its guest to answer. */
  async defineVm(host: HostName, vm: BenchVm): Promise<void> {
    const image = await ensureGuestImage({ log: () => {} });
    await daemonRequest(
      this.socket(host),
      'POST',
      '/v1/vms',
      {
        name: vm.name,
        vcpus: 1,
        memoryMiB: vm.memoryMiB,
        guest: { kernel: image.kernel, initrd: image.initrd, cmdline: guestKernelCmdline({ ip: `${vm.address}/${NETMASK_BITS}`, hostname: vm.name }) },
        diskMiB: vm.diskMiB,
        nics: [{ mac: vm.mac, address: vm.address }],
        protection: vm.protection,
        desired: 'running',
      },
      60_000,
    );
    await this.waitForGuest(vm.address);
  }

  /** Until the guest's record service answers `last` from the client namespace. */
  async waitForGuest(address: string, timeoutMs = 120_000): Promise<void> {
    const script = path.join(repoRoot(), 'dist', 'src', 'lab', 'record-client.js');
    await eventually(`the record service at ${address} answers`, timeoutMs, async () => {
      const r = await runIn(`${this.prefix()}client`, process.execPath, [script, '--timeout-ms', '2000', address, String(RECORD_SERVICE_PORT), 'last'], {
        allowFailure: true,
        timeoutMs: 6000,
      });
      return r.code === 0 && r.stdout.startsWith('last ');
    });
  }

  /** HA's "protected": the VM runs on `host` and both hosts count the copies current. */
  async protectedOn(vm: string, host: HostName, timeoutMs = 90_000): Promise<VmStatus> {
    const other = peer(host);
    return eventually(`${vm} protected, running on ${host}`, timeoutMs, async () => {
      const [here, there] = [await this.vm(host, vm), await this.vm(other, vm)];
      const mirror = here?.local?.mirror as MirrorStatus | null | undefined;
      return here?.local?.pid && here.state === 'protected' && there?.state === 'protected' && mirror?.state === 'ready' ? here : null;
    });
  }

  /**
   * A load in the client namespace appending to `address` without pause: the lab's own `append-load`, or
   * (`probe: true`) this directory's `probe-load`, the same loop with short timeouts, for timing an outage.
   */
  startLoad(label: string, address: string, opts: { reconnect?: boolean; probe?: boolean } = {}): RunningLoad {
    const file = path.join(this.scratch, `${label}.jsonl`);
    const script = opts.probe ? path.join(repoRoot(), 'dist', 'bench', 'probe-load.js') : path.join(repoRoot(), 'dist', 'src', 'lab', 'append-load.js');
    const args = ['--out', file, ...(opts.reconnect ? ['--reconnect'] : []), '--prefix', label, address, String(RECORD_SERVICE_PORT)];
    const child = spawn('nsenter', [`--net=${this.netnsPath('client')}`, '--', process.execPath, script, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
    this.loads.add(child);
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const events = (): LoadEvent[] => (existsSync(file) ? readLoadLog(file) : []);
    return {
      file,
      events,
      stop: async () => {
        child.kill('SIGTERM');
        await exited;
        this.loads.delete(child);
        return events();
      },
    };
  }

  /** Until the load has `n` more acknowledged appends than it had when this was called. */
  async waitForAcks(load: RunningLoad, n: number, timeoutMs = 120_000): Promise<void> {
    const base = acks(load.events()).length;
    await eventually(`${n} more appends acknowledged`, timeoutMs, async () => acks(load.events()).length >= base + n);
  }

  /** ICMP round trips from `from` to the peer's address on `alink`, one per `intervalMs`: each sample, ms. */
  async ping(from: HostName, alink: 'alink1' | 'alink2', count: number, intervalMs = 200): Promise<number[]> {
    const to = addressesOf(peer(from))[alink]!;
    const r = await runIn(`${this.prefix()}${from}`, 'ping', ['-n', '-c', String(count), '-i', String(intervalMs / 1000), to], {
      allowFailure: true,
      timeoutMs: count * intervalMs + 10_000,
    });
    return [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  }

  /**
   * What a synchronous write costs on a host's own disk (the lab's loop-mounted file system): 512-byte
   * writes at consecutive offsets, each followed by fdatasync, as qemu-nbd's writethrough cache does for
   * every write of the mirror. Milliseconds per write.
   */
  syncWriteMs(host: HostName, count: number): number[] {
    const file = path.join(this.hostDir(host), 'bench-sync-write.tmp');
    const fd = openSync(file, 'w');
    const block = Buffer.alloc(512, 0x5a);
    const samples: number[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const t = performance.now();
        writeSync(fd, block, 0, block.length, i * block.length);
        fdatasyncSync(fd);
        samples.push(performance.now() - t);
      }
    } finally {
      closeSync(fd);
    }
    void rm(file, { force: true });
    return samples;
  }

  /**
   * How fast a host's own disk takes `totalBytes` written in `blockBytes` writes, each followed by fdatasync
   * (a writethrough target's pattern): milliseconds for the whole.
   */
  syncWriteThroughputMs(host: HostName, totalBytes: number, blockBytes: number): number {
    const file = path.join(this.hostDir(host), 'bench-sync-throughput.tmp');
    const fd = openSync(file, 'w');
    const block = randomBytes(blockBytes);
    const t = performance.now();
    try {
      for (let off = 0; off < totalBytes; off += blockBytes) {
        writeSync(fd, block, 0, Math.min(blockBytes, totalBytes - off), off);
        fdatasyncSync(fd);
      }
      return performance.now() - t;
    } finally {
      closeSync(fd);
      rmSync(file, { force: true });
    }
  }
}

/**
 * Runs `body` with a fresh lab named `name`, and tears the lab down afterwards whatever happened (and on
 * SIGINT/SIGTERM). A lab of that name left by a run that was killed outright is torn down first.
 */
export async function withLab<T>(name: string, body: (lab: BenchLab) => Promise<T>): Promise<T> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), `lockstep-bench-${name}-`));
  const lab = new BenchLab(name, scratch);
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(name, `${signal}: tearing the lab down`);
    void lab.down().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (existsSync(lab.dir) || (await run('ip', ['netns', 'list'])).stdout.includes(`${lab.prefix()}fabric`)) {
      progress(name, 'a lab of this name is left from an earlier run: tearing it down first');
      await lab.down();
    }
    return await body(lab);
  } catch (e) {
    // The lab goes away with its logs: keep the daemons' logs of a failed bench for whoever looks into it.
    const kept = path.join(os.tmpdir(), `lockstep-bench-${name}-logs`);
    await rm(kept, { recursive: true, force: true });
    await mkdir(kept, { recursive: true });
    for (const host of BENCH_HOSTS) await copyFile(lab.lab.paths.hostLog(host), path.join(kept, `${host}-lockstepd.log`)).catch(() => undefined);
    progress(name, `the daemons' logs are kept in ${kept}`);
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await lab.down().catch((e: unknown) => progress(name, `tearing the lab down failed: ${String(e)}`));
    await rm(scratch, { recursive: true, force: true });
  }
}

// ── small things the benches share ────────────────────────────────────────────────────────────────────

export type Ack = Extract<LoadEvent, { t: 'ack' }>;

export function acks(events: readonly LoadEvent[]): Ack[] {
  return events.filter((e): e is Ack => e.t === 'ack');
}

export function peer(host: HostName): HostName {
  return host === 'host1' ? 'host2' : 'host1';
}

export async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | null | undefined | false | 0>, pollMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(pollMs);
  }
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** The q-quantile by linear interpolation between the closest ranks (q = 0.5: the median). */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function mib(bytes: number): number {
  return bytes / 2 ** 20;
}

export function progress(bench: string, line: string): void {
  process.stderr.write(`${bench}: ${line}\n`);
}
