/**
 * The simulated world the decision core is run in: two hosts running the real core, simulated A-Links,
 * management links, quorum servers (running the real grant logic), disks with persistence latency, clocks
 * with drift and simulated VM processes. This is the simulator's fake of everything around the core,
 * named as such; the real daemon drives the same core with real drivers.
 *
 * Checkers run after every event and throw `SafetyViolation` with the time and the log so far.
 */
import { bootState, deriveHostState, step, type CoreState } from '../core/host-core.js';
import { decideGrant, emptyPairRecord, recoveredPairRecord, type PairRecord } from '../core/quorum-grant.js';
import type { ComponentState, CoreConfig, CoreEvent, Durable, Effect, HealthComponent, HostId, Input, PeerMessage, ProtectionLevel, QuorumServerId, VmName } from '../core/types.js';
import { healthyComponents } from '../core/health.js';
import { DEFAULT_TIMING } from '../core/types.js';

export class SafetyViolation extends Error {
  override readonly name = 'SafetyViolation';
}

export interface WorldOptions {
  hosts: [HostId, HostId];
  quorumServers: QuorumServerId[];
  vms: { name: VmName; owner: HostId; protection?: ProtectionLevel }[];
  /** Per-host clock rate, 1 ± drift. */
  clockRates?: Partial<Record<HostId, number>>;
  timing?: Partial<CoreConfig>;
  /** One-way message delay range, ms. */
  delayMs?: [number, number];
  /** VM process start and stop latencies; a stop must finish within the fence margin. */
  startLatencyMs?: number;
  stopLatencyMs?: number;
  persistLatencyMs?: number;
  /** Time after which a lost quorum request is reported unreachable. */
  quorumTimeoutMs?: number;
  /** Used for random delays and duplication; scenarios pass none and get fixed delays. */
  random?: () => number;
  duplicateProbability?: number;
}

interface SimHost {
  id: HostId;
  cfg: CoreConfig;
  rate: number;
  up: boolean;
  boot: number;
  core: CoreState | null;
  persisted: Durable | null;
  highestEpoch: number;
  /** Ground truth: the VM processes that exist on this host (QEMU, as far as the world can tell). */
  processes: Map<VmName, { instance: number; state: 'starting' | 'running' | 'stopping' }>;
  busyUntil: number;
  queue: Input[];
  tickAt: number | null;
  /** What the host's component checks report (kept across reboots: hardware faults survive them). */
  health: Record<HealthComponent, ComponentState>;
  /** The watchdog: when it kills every VM process unless a later decision moves it (real time). */
  watchdogAt: number | null;
  persistLatencyMs: number;
}

interface SimQuorum {
  id: QuorumServerId;
  up: boolean;
  record: PairRecord;
  durable: { epoch: number; holder: HostId | null };
}

interface Timer {
  at: number;
  seq: number;
  run: () => void;
}

export interface LogLine {
  at: number;
  host: string;
  what: string;
  cause: string;
}

export class World {
  now = 0;
  readonly log: LogLine[] = [];
  readonly hosts: Map<HostId, SimHost> = new Map();
  readonly quorum: Map<QuorumServerId, SimQuorum> = new Map();
  /** Directed cuts: `host1>host2` (A-Link), `host1>quorum1` and `quorum1>host1` (management). */
  readonly cuts = new Set<string>();
  private readonly timers: Timer[] = [];
  private seq = 0;
  private readonly grantsSeen = new Map<string, HostId>();
  private readonly opts: Required<Omit<WorldOptions, 'clockRates' | 'timing' | 'random'>> & Pick<WorldOptions, 'random'>;

  constructor(options: WorldOptions) {
    this.opts = {
      hosts: options.hosts,
      quorumServers: options.quorumServers,
      vms: options.vms,
      delayMs: options.delayMs ?? [1, 1],
      startLatencyMs: options.startLatencyMs ?? 300,
      stopLatencyMs: options.stopLatencyMs ?? 50,
      persistLatencyMs: options.persistLatencyMs ?? 2,
      quorumTimeoutMs: options.quorumTimeoutMs ?? 300,
      duplicateProbability: options.duplicateProbability ?? 0,
      random: options.random,
    };
    const [a, b] = options.hosts;
    for (const id of options.hosts) {
      const cfg: CoreConfig = {
        self: id,
        peer: id === a ? b : a,
        quorumServers: options.quorumServers,
        tiebreakWinner: a,
        ...DEFAULT_TIMING,
        ...options.timing,
      };
      this.hosts.set(id, {
        id,
        cfg,
        rate: options.clockRates?.[id] ?? 1,
        up: false,
        boot: 0,
        core: null,
        persisted: null,
        highestEpoch: 0,
        processes: new Map(),
        busyUntil: 0,
        queue: [],
        tickAt: null,
        watchdogAt: null,
        health: { ...healthyComponents() },
        persistLatencyMs: this.opts.persistLatencyMs,
      });
    }
    for (const q of options.quorumServers) this.quorum.set(q, { id: q, up: true, record: emptyPairRecord(), durable: { epoch: 0, holder: null } });
  }

  // ── driving the world ───────────────────────────────────────────────────────────────────────────────

  /** Boots both hosts and defines the VMs on their owners (as an operator would, through either host). */
  start(): void {
    for (const h of this.hosts.values()) this.powerOn(h.id);
    for (const vm of this.opts.vms) {
      this.input(vm.owner, { type: 'command', now: 0, command: { kind: 'define-vm', name: vm.name, protection: vm.protection ?? 'ha', desired: 'running', hardware: {} } });
    }
  }

  runUntil(t: number): void {
    let sameInstant = 0;
    for (;;) {
      this.timers.sort((x, y) => x.at - y.at || x.seq - y.seq);
      const next = this.timers[0];
      if (!next || next.at > t) break;
      this.timers.shift();
      // A core that keeps asking to run again at the same instant has a livelock: a bug worth a seed.
      sameInstant = next.at === this.now ? sameInstant + 1 : 0;
      if (sameInstant > 10_000) throw new SafetyViolation(`livelock: over 10,000 events at ${this.now} ms`);
      this.now = next.at;
      next.run();
      this.check();
    }
    this.now = t;
  }

  at(t: number, run: () => void): void {
    this.timers.push({ at: t, seq: this.seq++, run });
  }

  hostClock(h: SimHost): number {
    return Math.floor(this.now * h.rate);
  }

  // ── faults ──────────────────────────────────────────────────────────────────────────────────────────

  powerOff(id: HostId): void {
    const h = this.host(id);
    if (!h.up) return;
    h.up = false;
    h.core = null;
    h.processes.clear();
    h.queue = [];
    h.busyUntil = 0;
    h.tickAt = null;
    h.watchdogAt = null;
    this.note(id, 'power off', 'fault');
  }

  powerOn(id: HostId): void {
    const h = this.host(id);
    if (h.up) return;
    h.up = true;
    h.boot++;
    h.core = bootState(h.cfg, h.persisted ? structuredClone(h.persisted) : null, this.hostClock(h), h.boot);
    this.note(id, h.boot === 1 ? 'boot' : 'power on', 'fault');
    this.input(id, { type: 'tick', now: 0 });
    if (Object.values(h.health).some((c) => c !== 'ok')) this.input(id, { type: 'health', now: 0, wallMs: this.now, health: h.health });
  }

  quorumDown(id: QuorumServerId): void {
    const q = this.quorum.get(id)!;
    q.up = false;
    this.note(id, 'quorum server down', 'fault');
  }

  quorumUp(id: QuorumServerId): void {
    const q = this.quorum.get(id)!;
    if (q.up) return;
    q.up = true;
    q.record = recoveredPairRecord(q.durable.epoch, q.durable.holder, this.now, this.hosts.values().next().value!.cfg.quorumLeaseMs);
    this.note(id, 'quorum server up', 'fault');
  }

  cut(from: string, to: string): void {
    this.cuts.add(`${from}>${to}`);
  }

  heal(from: string, to: string): void {
    this.cuts.delete(`${from}>${to}`);
  }

  setPersistLatency(id: HostId, ms: number): void {
    this.host(id).persistLatencyMs = ms;
  }

  /** Kills a VM process as a crash would (not a decision of the core). */
  crashVm(id: HostId, vm: VmName): void {
    const h = this.host(id);
    const p = h.processes.get(vm);
    if (!p) return;
    h.processes.delete(vm);
    this.note(id, `VM ${vm} process crashed`, 'fault');
    this.input(id, { type: 'vm-event', now: 0, vm, event: { kind: 'exited', instance: p.instance, cause: 'crashed', expected: false } });
  }

  command(id: HostId, command: Extract<Input, { type: 'command' }>['command']): void {
    this.input(id, { type: 'command', now: 0, command });
  }

  /** A component check on a host reports a new state (the health monitor's input). */
  setHealth(id: HostId, component: HealthComponent, state: ComponentState): void {
    const h = this.host(id);
    h.health = { ...h.health, [component]: state };
    this.note(id, `${component} ${state}`, 'fault');
    this.input(id, { type: 'health', now: 0, wallMs: this.now, health: h.health });
  }

  /** The A-Link round trip both hosts measure (SplitSite). */
  setRtt(ms: number): void {
    this.note('a-link', `round trip ${ms} ms`, 'fault');
    for (const h of this.hosts.values()) this.input(h.id, { type: 'alink-rtt', now: 0, rttMs: ms });
  }

  // ── observation ─────────────────────────────────────────────────────────────────────────────────────

  host(id: HostId): SimHost {
    const h = this.hosts.get(id);
    if (!h) throw new Error(`no simulated host ${id}`);
    return h;
  }

  runningCopies(vm: VmName): HostId[] {
    return [...this.hosts.values()].filter((h) => h.processes.has(vm)).map((h) => h.id);
  }

  hostState(id: HostId): string {
    const h = this.host(id);
    return h.core ? deriveHostState(h.core) : 'off';
  }

  // ── the host's driver loop, simulated ───────────────────────────────────────────────────────────────

  private input(id: HostId, input: Input): void {
    const h = this.host(id);
    if (!h.up || !h.core) return;
    if (this.now < h.busyUntil) {
      h.queue.push(input);
      return;
    }
    this.process(h, input);
  }

  private process(h: SimHost, input: Input): void {
    const boot = h.boot;
    const [core, decision] = step(h.core!, { ...input, now: Math.max(this.hostClock(h), h.core!.now) } as Input);
    h.core = core;
    for (const e of decision.events) this.record(e);
    // Stops first: a fence never waits for the disk. Then the watchdog, also before the disk.
    for (const e of decision.effects) if (e.kind === 'stop-vm') this.runEffect(h, e);
    this.armWatchdog(h, decision.fenceAt);
    const rest = decision.effects.filter((e) => e.kind !== 'stop-vm');
    const afterPersist = (): void => {
      if (!h.up || h.boot !== boot) return;
      if (decision.persist) {
        if (decision.persist.epoch < h.highestEpoch) throw new SafetyViolation(`${h.id} persisted epoch ${decision.persist.epoch} after ${h.highestEpoch}`);
        h.highestEpoch = decision.persist.epoch;
        h.persisted = structuredClone(decision.persist);
      }
      for (const e of rest) this.runEffect(h, e);
      this.scheduleTick(h, decision.wakeAt);
      this.drain(h);
    };
    if (decision.persist && h.persistLatencyMs > 0) {
      h.busyUntil = this.now + h.persistLatencyMs;
      this.at(h.busyUntil, afterPersist);
    } else {
      afterPersist();
    }
  }

  private armWatchdog(h: SimHost, fenceAtHostClock: number | null): void {
    // Rounded up so that at the moment it fires the host's clock has reached the fence (the core agrees).
    const realAt = fenceAtHostClock === null ? null : Math.max(this.now, Math.ceil(fenceAtHostClock / h.rate) + 1);
    h.watchdogAt = realAt;
    if (realAt === null) return;
    const boot = h.boot;
    this.at(realAt, () => {
      if (h.boot !== boot || h.watchdogAt !== realAt || !h.up) return;
      const killed = [...h.processes.entries()];
      if (killed.length === 0) return;
      h.processes.clear();
      this.note(h.id, `watchdog killed ${killed.map(([vm]) => vm).join(', ')}`, 'fence');
      for (const [vm, p] of killed) {
        this.input(h.id, { type: 'vm-event', now: 0, vm, event: { kind: 'exited', instance: p.instance, cause: 'watchdog', expected: true } });
      }
    });
  }

  private drain(h: SimHost): void {
    while (h.up && h.queue.length > 0 && this.now >= h.busyUntil) this.process(h, h.queue.shift()!);
  }

  private scheduleTick(h: SimHost, wakeAtHostClock: number): void {
    const realAt = Math.max(this.now, Math.ceil(wakeAtHostClock / h.rate));
    if (h.tickAt !== null && h.tickAt <= realAt && h.tickAt >= this.now) return;
    h.tickAt = realAt;
    const boot = h.boot;
    this.at(realAt, () => {
      if (h.boot !== boot || h.tickAt !== realAt) return;
      h.tickAt = null;
      this.input(h.id, { type: 'tick', now: 0 });
    });
  }

  private runEffect(h: SimHost, e: Effect): void {
    const boot = h.boot;
    const alive = (): boolean => h.up && h.boot === boot;
    switch (e.kind) {
      case 'send-peer': {
        const to = h.cfg.peer;
        this.deliver(h.id, to, () => this.input(to, { type: 'peer-message', now: 0, msg: structuredClone(e.msg) as PeerMessage }));
        return;
      }
      case 'ask-quorum': {
        const q = this.quorum.get(e.server);
        const reached = q !== undefined && q.up && !this.cuts.has(`${h.id}>${e.server}`);
        const reportUnreachable = (): void => {
          if (alive()) this.input(h.id, { type: 'quorum-reply', now: 0, server: e.server, requestId: e.requestId, reply: { kind: 'unreachable' } });
        };
        if (!reached) {
          this.at(this.now + this.opts.quorumTimeoutMs, reportUnreachable);
          return;
        }
        this.at(this.now + this.delay(), () => {
          if (!q.up) return reportUnreachable();
          const outcome = decideGrant(q.record, { pair: 'sim', host: h.id, knownEpoch: e.knownEpoch }, this.now, h.cfg.quorumLeaseMs);
          q.record = outcome.record;
          if (outcome.kind === 'granted') {
            const key = `${q.id}#${outcome.epoch}`;
            const earlier = this.grantsSeen.get(key);
            if (earlier !== undefined && earlier !== h.id) throw new SafetyViolation(`${q.id} granted epoch ${outcome.epoch} to ${earlier} and to ${h.id}`);
            this.grantsSeen.set(key, h.id);
            if (outcome.epoch < q.durable.epoch) throw new SafetyViolation(`${q.id} epoch went back`);
            q.durable = { epoch: outcome.epoch, holder: h.id };
          }
          const reply = outcome.kind === 'granted' ? { kind: 'granted' as const, epoch: outcome.epoch } : { kind: 'denied' as const, epoch: outcome.epoch, holder: outcome.holder };
          if (this.cuts.has(`${e.server}>${h.id}`)) {
            this.at(this.now + this.opts.quorumTimeoutMs, reportUnreachable);
            return;
          }
          this.at(this.now + this.delay(), () => {
            if (alive()) this.input(h.id, { type: 'quorum-reply', now: 0, server: e.server, requestId: e.requestId, reply });
          });
        });
        return;
      }
      case 'probe-quorum': {
        const q = this.quorum.get(e.server);
        const reachable = q !== undefined && q.up && !this.cuts.has(`${h.id}>${e.server}`) && !this.cuts.has(`${e.server}>${h.id}`);
        this.at(this.now + (reachable ? 2 * this.delay() : this.opts.quorumTimeoutMs), () => {
          if (alive()) this.input(h.id, { type: 'quorum-probe', now: 0, server: e.server, reachable });
        });
        return;
      }
      case 'start-vm': {
        const d = h.persisted;
        const owner = d?.vms[e.vm]?.owner.host;
        if (!d || d.authority === 'none' || d.epoch !== e.epoch || owner !== h.id) {
          throw new SafetyViolation(`${h.id} started VM ${e.vm} without a durable grant (persisted epoch ${d?.epoch}, authority ${d?.authority}, owner ${owner}, effect epoch ${e.epoch})`);
        }
        if (h.watchdogAt !== null && this.now >= h.watchdogAt) {
          // Decided in time, but a slow disk delayed it past the fence: the driver must not run it.
          this.note(h.id, `start of ${e.vm} refused: the fence passed while it waited`, 'fence');
          this.at(this.now, () => {
            if (alive()) this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'start-failed', instance: e.instance, reason: 'fence passed' } });
          });
          return;
        }
        if (h.processes.has(e.vm)) throw new SafetyViolation(`${h.id} started VM ${e.vm} twice`);
        h.processes.set(e.vm, { instance: e.instance, state: 'starting' });
        this.at(this.now + this.opts.startLatencyMs, () => {
          const p = h.processes.get(e.vm);
          if (!alive() || p?.instance !== e.instance || p.state !== 'starting') return;
          h.processes.set(e.vm, { instance: e.instance, state: 'running' });
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'started', instance: e.instance } });
        });
        return;
      }
      case 'stop-vm': {
        const p = h.processes.get(e.vm);
        if (!p || p.instance !== e.instance) {
          this.at(this.now, () => {
            if (alive()) this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'exited', instance: e.instance, cause: 'was not running', expected: true } });
          });
          return;
        }
        h.processes.set(e.vm, { instance: e.instance, state: 'stopping' });
        this.at(this.now + this.opts.stopLatencyMs, () => {
          if (!alive() || h.processes.get(e.vm)?.instance !== e.instance) return;
          h.processes.delete(e.vm);
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'exited', instance: e.instance, cause: 'stopped', expected: true } });
        });
        return;
      }
      case 'restart-services':
        this.powerOff(h.id);
        this.at(this.now + 1000, () => this.powerOn(h.id));
        return;
      case 'alert':
        return;
    }
  }

  private deliver(from: string, to: string, run: () => void): void {
    if (this.cuts.has(`${from}>${to}`)) return;
    this.at(this.now + this.delay(), () => {
      if (!this.cuts.has(`${from}>${to}`)) run();
    });
    if (this.opts.random && this.opts.random() < this.opts.duplicateProbability) this.at(this.now + this.delay() * 3, run);
  }

  private delay(): number {
    const [min, max] = this.opts.delayMs;
    return this.opts.random ? min + (max - min) * this.opts.random() : min;
  }

  private record(e: CoreEvent): void {
    this.log.push({ at: this.now, host: e.host, what: e.what, cause: e.cause });
  }

  private note(host: string, what: string, cause: string): void {
    this.log.push({ at: this.now, host, what, cause });
  }

  /** Invariant 1: never two copies of a VM (a VM's process exists from start until its stop completes). */
  private check(): void {
    for (const vm of this.opts.vms) {
      const copies = this.runningCopies(vm.name);
      if (copies.length > 1) throw new SafetyViolation(`VM ${vm.name} runs on ${copies.join(' and ')} at ${this.now} ms`);
    }
  }
}

export function formatLog(lines: readonly LogLine[], filter: (l: LogLine) => boolean = () => true): string {
  return lines
    .filter(filter)
    .map((l) => `${(l.at / 1000).toFixed(3).padStart(8)}  ${l.host.padEnd(8)} ${l.what}${l.cause === 'fault' || l.cause === 'tick' ? '' : `  [${l.cause}]`}`)
    .join('\n');
}
