/**
 * The host health monitor: every `intervalMs` it checks each component of `HEALTH_COMPONENTS` (see
 * `checks.ts` and docs/health.md) and emits a `HealthSnapshot` when the snapshot differs from the previous
 * one (and always the first). The daemon feeds each emitted snapshot to the core as a `health` input. Each
 * round of the loop also emits `round`, so that the daemon samples what it watches at the same pace.
 *
 * A round never throws and is bounded in time: each check has a timeout, and a check that hangs past it
 * (a write to a dead disk cannot be cancelled) reports failed and is not started again until it settles.
 * Rounds never overlap: the next is scheduled when one ends.
 */
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { HEALTH_COMPONENTS, type ComponentState, type HealthComponent, type HealthSnapshot } from '../core/types.js';
import { describeError } from '../util/errors.js';
import type { run } from '../util/exec.js';
import {
  alinkStates,
  applyInjected,
  checkInterface,
  diskProbe,
  diskResult,
  parseInjectFile,
  qemuResult,
  sameSnapshot,
  SingleFlight,
  type CheckResult,
  type Injected,
} from './checks.js';

export interface HealthMonitorOptions {
  /** Time from the start of one round to the start of the next (longer when a round takes longer). */
  intervalMs: number;
  /** lockstepd's data directory: the disk probe writes its file there. */
  dataDir: string;
  /** Names of the interfaces (or bridges) that carry each network, in lockstepd's namespace; null: not checked (ok). */
  interfaces: { mgmt: string | null; business: string | null };
  /** The A-Link module's per-path report: path name ('alink1', 'alink2') → up. A path left out is not configured. */
  alinkPaths: () => Record<string, boolean>;
  /** The daemon's QEMU check (QMP `query-status` of each running VM, with its own timeout); ok with no VMs. */
  qemu: () => Promise<ComponentState>;
  /** The lab's fault injection file (e.g. `<dataDir>/health-inject.json`); missing means nothing injected. */
  injectFile?: string;
  log: (line: string) => void;
  /** A disk probe (or injection file read) not done by then is failed. Default 2000. */
  diskTimeoutMs?: number;
  /** A disk probe that succeeds but takes longer than this is degraded. Default 500. */
  diskSlowMs?: number;
  /** Bound on one `ip link show`. Default 2000. */
  linkTimeoutMs?: number;
  /** Starts `ip` for the link checks; default `run` on this thread (lockstepd passes its `ExecThread`'s). */
  run?: typeof run;
  /** Bound on the `qemu` function, over its own timeout. Default 5000. */
  qemuTimeoutMs?: number;
}

export interface HealthMonitorEvents {
  snapshot: [HealthSnapshot];
  /** Every round of the loop, changed or not: what else the daemon samples at the health interval (networks' counters). */
  round: [];
}

export const HEALTH_DEFAULTS = { diskTimeoutMs: 2000, diskSlowMs: 500, linkTimeoutMs: 2000, qemuTimeoutMs: 5000 } as const;

type Results = Record<HealthComponent, CheckResult>;

export class HealthMonitor extends EventEmitter<HealthMonitorEvents> {
  private readonly timing: { diskTimeoutMs: number; diskSlowMs: number; linkTimeoutMs: number; qemuTimeoutMs: number };
  private readonly disk: SingleFlight<void>;
  private readonly qemu: SingleFlight<ComponentState>;
  private readonly links: { mgmt: SingleFlight<CheckResult> | null; business: SingleFlight<CheckResult> | null };
  private readonly injectRead: SingleFlight<string> | null;

  private last: HealthSnapshot | null = null;
  private lastResults: Results | null = null;
  private injected: Injected = {};
  /** The injection file's current problem, logged when it first shows (and again only once it changed). */
  private injectProblem: string | null = null;
  private inFlight: Promise<HealthSnapshot> | null = null;
  private running = false;
  /** Bumped by start and stop: a round of an older run schedules nothing. */
  private generation = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: HealthMonitorOptions) {
    super();
    this.timing = {
      diskTimeoutMs: opts.diskTimeoutMs ?? HEALTH_DEFAULTS.diskTimeoutMs,
      diskSlowMs: opts.diskSlowMs ?? HEALTH_DEFAULTS.diskSlowMs,
      linkTimeoutMs: opts.linkTimeoutMs ?? HEALTH_DEFAULTS.linkTimeoutMs,
      qemuTimeoutMs: opts.qemuTimeoutMs ?? HEALTH_DEFAULTS.qemuTimeoutMs,
    };
    const { diskTimeoutMs, linkTimeoutMs, qemuTimeoutMs } = this.timing;
    this.disk = new SingleFlight(() => diskProbe(opts.dataDir), diskTimeoutMs);
    this.qemu = new SingleFlight(() => opts.qemu(), qemuTimeoutMs);
    // `run` kills `ip` at the timeout; the outer bound (twice as long) covers an `ip` stuck in the kernel.
    const link = (ifname: string | null) => (ifname === null ? null : new SingleFlight(() => checkInterface(ifname, linkTimeoutMs, opts.run), 2 * linkTimeoutMs));
    this.links = { mgmt: link(opts.interfaces.mgmt), business: link(opts.interfaces.business) };
    this.injectRead = opts.injectFile === undefined ? null : new SingleFlight(() => readFile(opts.injectFile!, 'utf8'), diskTimeoutMs);
  }

  /** Checks now, then every `intervalMs` until `stop()`. */
  start(): void {
    if (this.running) return;
    this.running = true;
    const gen = ++this.generation;
    void this.tick(gen);
  }

  /** Stops checking; resolves once a round in progress has ended (no snapshot is emitted after that). */
  async stop(): Promise<void> {
    this.running = false;
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.inFlight?.catch(() => undefined);
  }

  /** The last snapshot (emitted or not, they are equal); null before the first round has ended. */
  current(): HealthSnapshot | null {
    return this.last;
  }

  /**
   * Runs one round now (or joins the one in progress), emits 'snapshot' if it changed, returns it. Rejects
   * only when a 'snapshot' listener throws.
   */
  check(): Promise<HealthSnapshot> {
    if (this.inFlight) return this.inFlight;
    const round = this.round()
      .then((snap) => {
        if (this.last !== null && sameSnapshot(this.last, snap)) return this.last;
        this.last = snap;
        this.emit('snapshot', snap);
        return snap;
      })
      .finally(() => {
        this.inFlight = null;
      });
    this.inFlight = round;
    return round;
  }

  private async tick(gen: number): Promise<void> {
    const t0 = performance.now();
    try {
      await this.check();
      // A round that ends after stop() is not told: what rides on the loop stops with it.
      if (this.running && gen === this.generation) this.emit('round');
    } catch (e) {
      this.opts.log(`health: a snapshot or round listener threw: ${describeError(e)}`);
    }
    if (!this.running || gen !== this.generation) return;
    const delay = Math.max(0, this.opts.intervalMs - (performance.now() - t0));
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.tick(gen);
    }, delay);
  }

  private async round(): Promise<HealthSnapshot> {
    const { diskSlowMs, diskTimeoutMs, qemuTimeoutMs, linkTimeoutMs } = this.timing;
    const iface = async (f: SingleFlight<CheckResult> | null): Promise<CheckResult> => {
      if (f === null) return { state: 'ok', detail: 'not configured' };
      const b = await f.run();
      if (b.kind === 'done') return b.value;
      if (b.kind === 'error') return { state: 'failed', detail: describeError(b.error) };
      return { state: 'failed', detail: `ip link show did not finish within ${2 * linkTimeoutMs} ms` };
    };
    const [mgmt, business, disk, qemu] = await Promise.all([
      iface(this.links.mgmt),
      iface(this.links.business),
      this.disk.run().then((b) => diskResult(b, diskSlowMs, diskTimeoutMs)),
      this.qemu.run().then((b) => qemuResult(b, qemuTimeoutMs)),
      this.readInjected(),
    ]);
    let alink: { alink1: CheckResult; alink2: CheckResult };
    try {
      alink = alinkStates(this.opts.alinkPaths());
    } catch (e) {
      const failed: CheckResult = { state: 'failed', detail: `A-Link path report failed: ${describeError(e)}` };
      alink = { alink1: failed, alink2: failed };
    }
    const measured: Results = { ...alink, mgmt, business, disk, qemu, 'power-supply': { state: 'ok', detail: 'no sensor' } };
    const results = {} as Results;
    const finalStates = applyInjected(statesOf(measured), this.injected);
    for (const c of HEALTH_COMPONENTS) {
      const m = measured[c];
      results[c] = finalStates[c] === m.state ? m : { state: finalStates[c], detail: `injected ${finalStates[c]} (measured ${m.state}: ${m.detail})` };
    }
    this.logChanges(results);
    return Object.freeze(statesOf(results));
  }

  /** Reads the injection file into `this.injected`; never throws. */
  private async readInjected(): Promise<void> {
    if (this.injectRead === null) return;
    const file = this.opts.injectFile!;
    const b = await this.injectRead.run();
    let next: Injected = this.injected;
    let problem: string | null = null;
    if (b.kind === 'done') {
      const p = parseInjectFile(b.value);
      if (p.ok) next = p.components;
      else {
        next = {};
        problem = `health: injection file ${file} is invalid and ignored: ${p.reason}`;
      }
    } else if (b.kind === 'error' && (b.error as NodeJS.ErrnoException).code === 'ENOENT') {
      next = {};
    } else {
      // Unreadable (EIO on a failed disk, a read that hangs): keep what it said last.
      const why = b.kind === 'error' ? ((b.error as NodeJS.ErrnoException).code ?? describeError(b.error)) : 'the read did not finish in time';
      problem = `health: cannot read injection file ${file} (${why}): keeping the injected states read last`;
    }
    if (problem !== null && problem !== this.injectProblem) this.opts.log(problem);
    this.injectProblem = problem;
    if (!sameInjected(next, this.injected)) {
      const list = Object.entries(next).map(([c, s]) => `${c}=${s}`);
      this.opts.log(`health: injected states ${list.length ? list.join(', ') : 'none'}`);
    }
    this.injected = next;
  }

  private logChanges(results: Results): void {
    const before = this.lastResults;
    this.lastResults = results;
    if (before === null) {
      const bad = HEALTH_COMPONENTS.filter((c) => results[c].state !== 'ok');
      this.opts.log(`health: first check: ${bad.length === 0 ? 'all components ok' : bad.map((c) => `${c} ${results[c].state} (${results[c].detail})`).join('; ')}`);
      return;
    }
    for (const c of HEALTH_COMPONENTS) {
      if (before[c].state !== results[c].state) this.opts.log(`health: ${c} ${before[c].state} → ${results[c].state} (${results[c].detail})`);
    }
  }
}

function statesOf(r: Results): Record<HealthComponent, ComponentState> {
  const out = {} as Record<HealthComponent, ComponentState>;
  for (const c of HEALTH_COMPONENTS) out[c] = r[c].state;
  return out;
}

function sameInjected(a: Injected, b: Injected): boolean {
  return HEALTH_COMPONENTS.every((c) => a[c] === b[c]);
}
