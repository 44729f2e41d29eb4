/**
 * The resource history of one host: every `intervalMs` (5 s) a round records, for this host, its CPU use,
 * memory, each storage group's use and each configured network's traffic, and for each VM whose QEMU runs
 * here, that process's CPU and resident memory and its volume's allocation. Rounds go into bounded rings
 * (`ring.ts`): an hour by default, then the oldest go. The management API serves them (`GET /v1/host/history`,
 * `GET /v1/vms/{name}/history`) and the console draws them.
 *
 * A round never throws and never blocks the daemon's main thread for long: the kernel's files are small and
 * read asynchronously (`proc-read.ts`), and the storage usage (statfs and a stat per volume, which a dead
 * disk can hang) runs under a time bound, so a stuck file system costs the storage points only. A value that
 * cannot be read is no point this round, with the reason kept for the API (`error`) and logged when it first
 * shows. Rounds never overlap: the next is scheduled when one ends.
 *
 * Rates (CPU, network) are differences between two rounds over the monotonic clock; points are stamped with
 * the wall clock, which is what a person reads on a chart.
 */
import { performance } from 'node:perf_hooks';
import { SingleFlight } from '../health/checks.js';
import { describeError } from '../util/errors.js';
import { cpuBusyFraction, counterRate, processCores, type CpuTimes, type Parsed, type ProcessTimes } from './proc.js';
import { KERNEL_FILES, readCpuTimes, readInterfaceBytes, readMemory, readProcessTimes, readResidentBytes, type KernelFiles } from './proc-read.js';
import { SampleRing, type Point } from './ring.js';

/** A round every 5 s, an hour of them: 720 points a series. */
export const HISTORY_INTERVAL_MS = 5000;
export const HISTORY_POINTS = 720;
/**
 * At most this many VMs' histories are kept (each 720 × 4 × 8 bytes = 23 KiB): a VM that no longer runs here
 * keeps its history until its newest point is older than the window, or until room is needed for another.
 */
export const HISTORY_VMS_MAX = 64;
/** The storage usage of a round not in by then is left out of it (the file system does not answer). */
export const STORAGE_READ_TIMEOUT_MS = 2000;

export const HOST_FAMILIES = ['cpu', 'memory', 'storage', 'network'] as const;
export const VM_FAMILIES = ['cpu', 'memory', 'disk'] as const;
export type HostFamily = (typeof HOST_FAMILIES)[number];
export type VmFamily = (typeof VM_FAMILIES)[number];

/**
 * `ratio`: a share, 0 to 1 (the host's CPU busy); `cores`: CPU seconds per second (a VM's QEMU, 1 = one
 * core busy); `bytes`; `bytes/s`.
 */
export type SeriesUnit = 'ratio' | 'cores' | 'bytes' | 'bytes/s';

/** One series as the API answers it. */
export interface Series {
  /** Stable within a host: `cpu`, `memory`, `storage.<group>`, `network.<network>.rx` / `.tx`, `disk`. */
  id: string;
  family: HostFamily | VmFamily;
  unit: SeriesUnit;
  /** What it measures, for a person: "business (br-biz) received". */
  label: string;
  /** Its ceiling as last measured (memory size, a group's capacity, a VM's cores or disk size); null: none. */
  limit: number | null;
  /** Why the newest round has no value (null: it has one, or there was no earlier round to measure a rate against). */
  error: string | null;
  /** `[wallMs, value]`, oldest first. */
  points: Point[];
}

export interface History {
  intervalMs: number;
  /** How far back the rings reach when full. */
  keptMs: number;
  series: Series[];
}

/** What the API reads: one host's, or one VM's history (null: none kept here). */
export interface HistoryView {
  /** The rounds' spacing and how far back a full history reaches. */
  window(): { intervalMs: number; keptMs: number };
  host(sinceMs: number, families: readonly HostFamily[]): History;
  vm(name: string, sinceMs: number, families: readonly VmFamily[]): (History & { here: boolean }) | null;
  /** A host series' value in the newest round (null: none, or no round yet) and its limit: what `/metrics` shows. */
  hostLatest(id: string): { value: number | null; limit: number | null };
}

/** A VM whose QEMU runs here, as the daemon knows it. */
export interface SampledVm {
  name: string;
  pid: number;
  /** Its hardware: cores, guest memory and disk size (null: its record cannot be read here). */
  vcpus: number | null;
  memoryBytes: number | null;
  diskBytes: number | null;
}

/** What the storage usage of a round found: each group's, and each VM's volume allocation on this host. */
export interface StorageSample {
  groups: { name: string; usedBytes: number; capacityBytes: number | null; error: string | null }[];
  volumes: { vm: string; allocatedBytes: number | null }[];
}

/** A network of the host, by its role (`mgmt`, `business`, `alink1`, …), and how to find its interface now. */
export interface SampledNetwork {
  name: string;
  /** The interface carrying it now, or why there is none (an A-Link is found by its address, which may not be up yet). */
  interface(): { ifname: string } | { error: string };
}

export interface SamplerSources {
  /** The host's storage groups (fixed by the config): a series each. */
  storageGroups: readonly string[];
  networks: readonly SampledNetwork[];
  vms(): SampledVm[];
  storage(): Promise<StorageSample>;
}

export interface SamplerOptions {
  intervalMs?: number;
  points?: number;
  vmsMax?: number;
  storageTimeoutMs?: number;
  files?: KernelFiles;
  /** The wall clock (points' times) and the monotonic one (rates); injected by tests. */
  wallMs?: () => number;
  monoMs?: () => number;
  log: (line: string) => void;
}

interface SeriesMeta {
  family: HostFamily | VmFamily;
  unit: SeriesUnit;
  label: string;
  limit: number | null;
  error: string | null;
}

/** One subject's history: its ring and what each series says besides its points. */
class Track {
  readonly ring: SampleRing;
  readonly meta = new Map<string, SeriesMeta>();

  constructor(capacity: number, series: readonly (readonly [string, SeriesMeta])[]) {
    this.ring = new SampleRing(capacity, series.map(([id]) => id));
    for (const [id, m] of series) this.meta.set(id, m);
  }

  history(sinceMs: number, families: readonly string[], intervalMs: number): History {
    const series: Series[] = [];
    for (const [id, m] of this.meta) {
      if (!families.includes(m.family)) continue;
      series.push({ id, family: m.family, unit: m.unit, label: m.label, limit: m.limit, error: m.error, points: this.ring.since(id, sinceMs) });
    }
    return { intervalMs, keptMs: intervalMs * this.ring.capacity, series };
  }
}

const meta = (family: SeriesMeta['family'], unit: SeriesUnit, label: string): SeriesMeta => ({ family, unit, label, limit: null, error: null });

interface InterfaceReading {
  ifname: string;
  rxBytes: number;
  txBytes: number;
}

interface VmTrack {
  track: Track;
  /** The last reading of its QEMU's CPU time (a rate needs two), with its pid: a new process starts over. */
  prev: { pid: number; times: ProcessTimes; monoMs: number } | null;
  running: boolean;
}

export class HistorySampler implements HistoryView {
  private readonly intervalMs: number;
  private readonly points: number;
  private readonly vmsMax: number;
  private readonly files: KernelFiles;
  private readonly wallMs: () => number;
  private readonly monoMs: () => number;
  private readonly storageRead: SingleFlight<StorageSample>;
  private readonly storageTimeoutMs: number;

  private readonly hostTrack: Track;
  private readonly vmTracks = new Map<string, VmTrack>();
  private prevCpu: CpuTimes | null = null;
  private readonly prevNet = new Map<string, { ifname: string; rxBytes: number; txBytes: number; monoMs: number }>();
  /** Each series' last logged problem, so a problem is logged when it shows and when it clears, not every round. */
  private readonly logged = new Map<string, string>();

  private inFlight: Promise<void> | null = null;
  private running = false;
  private generation = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly sources: SamplerSources,
    private readonly opts: SamplerOptions,
  ) {
    this.intervalMs = opts.intervalMs ?? HISTORY_INTERVAL_MS;
    this.points = opts.points ?? HISTORY_POINTS;
    this.vmsMax = opts.vmsMax ?? HISTORY_VMS_MAX;
    this.files = opts.files ?? KERNEL_FILES;
    this.wallMs = opts.wallMs ?? Date.now;
    this.monoMs = opts.monoMs ?? (() => performance.now());
    this.storageTimeoutMs = opts.storageTimeoutMs ?? STORAGE_READ_TIMEOUT_MS;
    this.storageRead = new SingleFlight(() => sources.storage(), this.storageTimeoutMs);
    this.hostTrack = new Track(this.points, [
      ['cpu', { ...meta('cpu', 'ratio', 'CPU busy'), limit: 1 }],
      ['memory', meta('memory', 'bytes', 'memory used')],
      ...sources.storageGroups.map((g) => [`storage.${g}`, meta('storage', 'bytes', `${g} used`)] as const),
      ...sources.networks.flatMap((n) => [
        [`network.${n.name}.rx`, meta('network', 'bytes/s', `${n.name} received`)] as const,
        [`network.${n.name}.tx`, meta('network', 'bytes/s', `${n.name} sent`)] as const,
      ]),
    ]);
  }

  /** Samples now, then every `intervalMs` until `stop()`. */
  start(): void {
    if (this.running) return;
    this.running = true;
    const gen = ++this.generation;
    void this.tick(gen);
  }

  /** Stops sampling; resolves once a round in progress has ended. */
  async stop(): Promise<void> {
    this.running = false;
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.inFlight;
  }

  /** Runs one round now (or joins the one in progress). Never rejects. */
  sampleNow(): Promise<void> {
    this.inFlight ??= this.round()
      .catch((e) => this.opts.log(`history: a sampling round failed: ${describeError(e)}`))
      .finally(() => {
        this.inFlight = null;
      });
    return this.inFlight;
  }

  window(): { intervalMs: number; keptMs: number } {
    return { intervalMs: this.intervalMs, keptMs: this.intervalMs * this.points };
  }

  host(sinceMs: number, families: readonly HostFamily[]): History {
    return this.hostTrack.history(sinceMs, families, this.intervalMs);
  }

  vm(name: string, sinceMs: number, families: readonly VmFamily[]): (History & { here: boolean }) | null {
    const t = this.vmTracks.get(name);
    if (t === undefined) return null;
    return { ...t.track.history(sinceMs, families, this.intervalMs), here: t.running };
  }

  hostLatest(id: string): { value: number | null; limit: number | null } {
    return { value: this.hostTrack.ring.latest(id), limit: this.hostTrack.meta.get(id)?.limit ?? null };
  }

  /** The bytes the rings hold now (each ring's is fixed when it is made). */
  memoryBytes(): number {
    return this.hostTrack.ring.bytes + [...this.vmTracks.values()].reduce((a, t) => a + t.track.ring.bytes, 0);
  }

  private async tick(gen: number): Promise<void> {
    const t0 = this.monoMs();
    await this.sampleNow();
    if (!this.running || gen !== this.generation) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.tick(gen);
    }, Math.max(0, this.intervalMs - (this.monoMs() - t0)));
  }

  private async round(): Promise<void> {
    const wallMs = this.wallMs();
    const vms = this.sources.vms();
    // Every read at once; each answers a value or why not, so one slow or missing file costs only its series.
    const [cpu, memory, storage, networks, processes] = await Promise.all([
      readCpuTimes(this.files),
      readMemory(this.files),
      this.storageRead.run(),
      Promise.all(this.sources.networks.map((n) => this.readNetwork(n))),
      Promise.all(vms.map(async (vm) => ({ vm, times: await readProcessTimes(vm.pid, this.files), readMs: this.monoMs(), rss: await readResidentBytes(vm.pid, this.files) }))),
    ]);
    const usage: Parsed<StorageSample> =
      storage.kind === 'done'
        ? { ok: true, value: storage.value }
        : { ok: false, reason: storage.kind === 'error' ? `the storage usage could not be read: ${describeError(storage.error)}` : `the storage usage did not come within ${this.storageTimeoutMs} ms (a file system that does not answer)` };

    const host = new RoundWriter(this.hostTrack, 'host', (what, key, error) => this.note(what, key, error));
    if (cpu.ok) host.set('cpu', this.prevCpu === null ? null : cpuBusyFraction(this.prevCpu, cpu.value), null);
    else host.set('cpu', null, cpu.reason);
    this.prevCpu = cpu.ok ? cpu.value : null;
    if (memory.ok) host.set('memory', memory.value.totalBytes - memory.value.availableBytes, null, { limit: memory.value.totalBytes });
    else host.set('memory', null, memory.reason);
    for (const g of this.sources.storageGroups) {
      const found = usage.ok ? usage.value.groups.find((x) => x.name === g) : undefined;
      if (!usage.ok) host.set(`storage.${g}`, null, usage.reason);
      else if (found === undefined) host.set(`storage.${g}`, null, `storage group ${g} was not in the usage read`);
      else host.set(`storage.${g}`, found.error === null ? found.usedBytes : null, found.error, { limit: found.capacityBytes });
    }
    for (const { network, reading, readMs } of networks) this.recordNetwork(host, network, reading, readMs);
    this.hostTrack.ring.push(wallMs, host.values);

    const allocations = usage.ok ? new Map(usage.value.volumes.map((v) => [v.vm, v.allocatedBytes])) : null;
    const here = new Set(vms.map((v) => v.name));
    // Marked first, so that making room for a VM new here never takes the place of one listed after it.
    for (const [name, t] of this.vmTracks) t.running = here.has(name);
    for (const { vm, times, readMs, rss } of processes) {
      const t = this.vmTrack(vm.name);
      if (t === null) continue;
      t.running = true;
      // A QEMU that exited since it was listed is the runner's news (it reports the exit): no log line here.
      const w = new RoundWriter(t.track, `VM ${vm.name}`, (what, key, error) => this.note(what, `vm:${vm.name}:${key}`, error), times.ok ? false : (times.gone ?? false));
      const prev = t.prev !== null && t.prev.pid === vm.pid ? t.prev : null;
      if (times.ok) w.set('cpu', prev === null ? null : processCores(prev.times, times.value, readMs - prev.monoMs), null, { limit: vm.vcpus });
      else w.set('cpu', null, times.reason, { limit: vm.vcpus });
      t.prev = times.ok ? { pid: vm.pid, times: times.value, monoMs: readMs } : null;
      w.set('memory', rss.ok ? rss.value : null, rss.ok ? null : rss.reason, { limit: vm.memoryBytes });
      const allocated = allocations?.get(vm.name) ?? null;
      w.set('disk', allocated, usage.ok ? (allocated === null ? 'its volume has no file on this host' : null) : usage.reason, { limit: vm.diskBytes });
      t.track.ring.push(wallMs, w.values);
    }
    this.forgetOld(wallMs, here);
  }

  /** A network's interface now and its counters, or why not; `readMs`: when they were read (monotonic), for the rate. */
  private async readNetwork(network: SampledNetwork): Promise<{ network: SampledNetwork; reading: Parsed<InterfaceReading>; readMs: number }> {
    const found = safely(() => network.interface());
    if ('error' in found) return { network, reading: { ok: false, reason: found.error }, readMs: this.monoMs() };
    const bytes = await readInterfaceBytes(found.ifname, this.files);
    return { network, reading: bytes.ok ? { ok: true, value: { ifname: found.ifname, ...bytes.value } } : bytes, readMs: this.monoMs() };
  }

  /** A network's rates since its last reading; none when its interface changed (other counters) or was not read. */
  private recordNetwork(host: RoundWriter, network: SampledNetwork, reading: Parsed<InterfaceReading>, monoMs: number): void {
    const rx = `network.${network.name}.rx`;
    const tx = `network.${network.name}.tx`;
    const label = (ifname: string | null, what: string): Partial<SeriesMeta> => ({ label: `${network.name}${ifname === null ? '' : ` (${ifname})`} ${what}` });
    if (!reading.ok) {
      host.set(rx, null, reading.reason, label(null, 'received'));
      host.set(tx, null, reading.reason, label(null, 'sent'));
      this.prevNet.delete(network.name);
      return;
    }
    const now = reading.value;
    const prev = this.prevNet.get(network.name);
    const same = prev !== undefined && prev.ifname === now.ifname ? prev : null;
    host.set(rx, same === null ? null : counterRate(same.rxBytes, now.rxBytes, monoMs - same.monoMs), null, label(now.ifname, 'received'));
    host.set(tx, same === null ? null : counterRate(same.txBytes, now.txBytes, monoMs - same.monoMs), null, label(now.ifname, 'sent'));
    this.prevNet.set(network.name, { ...now, monoMs });
  }

  /** The VM's track, made on its first round here; null when every place is taken by a VM that runs. */
  private vmTrack(name: string): VmTrack | null {
    const known = this.vmTracks.get(name);
    if (known !== undefined) return known;
    if (this.vmTracks.size >= this.vmsMax) {
      const idle = [...this.vmTracks.entries()].filter(([, t]) => !t.running).sort(([, a], [, b]) => (a.track.ring.newestMs ?? 0) - (b.track.ring.newestMs ?? 0));
      if (idle.length === 0) {
        this.note(`VM ${name}`, `vm:${name}:track`, `not recorded: the history keeps at most ${this.vmsMax} VMs`);
        return null;
      }
      this.forget(idle[0]![0]);
    }
    const t: VmTrack = {
      track: new Track(this.points, [
        ['cpu', meta('cpu', 'cores', 'CPU used')],
        ['memory', meta('memory', 'bytes', 'resident memory')],
        ['disk', meta('disk', 'bytes', 'disk allocated')],
      ]),
      prev: null,
      running: false,
    };
    this.vmTracks.set(name, t);
    return t;
  }

  /** A VM that no longer runs here is forgotten once its newest point has left the window. */
  private forgetOld(wallMs: number, here: ReadonlySet<string>): void {
    const keptMs = this.intervalMs * this.points;
    for (const [name, t] of this.vmTracks) {
      if (!here.has(name) && wallMs - (t.track.ring.newestMs ?? 0) > keptMs) this.forget(name);
    }
  }

  private forget(name: string): void {
    this.vmTracks.delete(name);
    for (const key of [...this.logged.keys()]) if (key.startsWith(`vm:${name}:`)) this.logged.delete(key);
  }

  /** Logs a series' problem when it first shows or changes, and once when it clears. */
  private note(what: string, key: string, error: string | null): void {
    const before = this.logged.get(key);
    if (error === null) {
      if (before !== undefined) this.opts.log(`history: ${what} is measured again`);
      this.logged.delete(key);
      return;
    }
    if (before !== error) this.opts.log(`history: ${what} not measured: ${error}`);
    this.logged.set(key, error);
  }
}

/** The values of one subject's round, and each series' label, limit and error as measured in it. */
class RoundWriter {
  readonly values: Record<string, number | null> = {};

  constructor(
    private readonly track: Track,
    private readonly subject: string,
    private readonly note: (what: string, key: string, error: string | null) => void,
    /** Its process exited between being listed and read: the errors are kept, not logged. */
    private readonly quiet = false,
  ) {}

  set(id: string, value: number | null, error: string | null, measured: Partial<SeriesMeta> = {}): void {
    this.values[id] = value;
    const m = this.track.meta.get(id)!;
    Object.assign(m, measured, { error });
    if (!this.quiet) this.note(`${this.subject} ${m.label}`, id, error);
  }
}

/** A source's answer, or its throw as an error value: one network's lookup must not cost the round. */
function safely(f: () => { ifname: string } | { error: string }): { ifname: string } | { error: string } {
  try {
    return f();
  } catch (e) {
    return { error: describeError(e) };
  }
}
