/**
 * The simulated world the decision core is run in: two hosts running the real core, simulated A-Links,
 * management links, quorum servers (running the real grant logic), disks with persistence latency, clocks
 * with drift, simulated VM processes, and each VM's disk on each host with its guest's writes, the owner's
 * write-blocking mirror into the peer's copy and the peer's export. This is the simulator's fake of
 * everything around the core, named as such; the real daemon drives the same core with real drivers.
 *
 * The disk model: every guest write has an id and a parent (the write before it on the disk it was made
 * on), so a disk's content is a point in a tree of histories. A write is acknowledged when it is on the
 * owner's copy and, while a mirror is connected, on the peer's copy too; a mirror whose link is gone makes
 * the guest's writes wait. The checker then asks, whenever a VM starts running: does its disk hold the last
 * write the guest acknowledged? (Invariant 3: no acknowledged write is lost by a failover.)
 *
 * Checkers run after every event and throw `SafetyViolation` with the time and the log so far.
 */
import { bootState, deriveHostState, runningProtection, step, type CoreState } from '../core/host-core.js';
import { decideGrant, emptyPairRecord, recoveredPairRecord, type PairRecord } from '../core/quorum-grant.js';
import type { ComponentState, CoreConfig, CoreEvent, Durable, Effect, HealthComponent, HostId, Input, MirrorMode, PeerMessage, ProtectionLevel, QuorumServerId, StorageEvent, VmName } from '../core/types.js';
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
  /** How often a running guest writes to its disk. */
  writeIntervalMs?: number;
  /** How long a mirror takes to bring the peer's copy in sync, by mode. */
  syncMs?: Record<MirrorMode, number>;
}

/** The owner's mirror of one VM instance's disk into the peer's copy. */
interface SimMirror {
  instance: number;
  stream: string;
  state: 'connecting' | 'syncing' | 'ready' | 'stalled';
  /** The export generation it connected to: one that changed since (restart, unserve) answers with a reset. */
  exportGen: number;
  /** The peer's copy holds every write of the source's lineage from the connection on (it was not diverged). */
  covering: boolean;
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
  /**
   * `incoming`: a migration's destination, receiving; `received`: it holds the switched-over guest, paused;
   * `migrated`: the source after the switch, its vCPUs stopped for good. None of these runs guest code.
   */
  processes: Map<VmName, { instance: number; state: 'starting' | 'running' | 'stopping' | 'incoming' | 'received' | 'migrated'; multifd?: number }>;
  busyUntil: number;
  queue: Input[];
  tickAt: number | null;
  /** What the host's component checks report (kept across reboots: hardware faults survive them). */
  health: Record<HealthComponent, ComponentState>;
  /** The watchdog: when it kills every VM process unless a later decision moves it (real time). */
  watchdogAt: number | null;
  persistLatencyMs: number;
  /** Each VM's disk on this host: the id of the last write it holds (0: empty), null when a sync left it a mixture. Survives power loss. */
  disks: Map<VmName, number | null>;
  /** The copies this host serves to the peer, with a generation per start. */
  exports: Map<VmName, number>;
  /** Exports being started (a token per serve-copy). */
  serving: Map<VmName, object>;
  exportGen: number;
  mirrors: Map<VmName, SimMirror>;
  /** Streams cut before they connected (`vm#stream`): they never connect, as the daemon's runner does. */
  cutBeforeConnect: Set<string>;
}

interface SimQuorum {
  id: QuorumServerId;
  up: boolean;
  /** Extra round-trip time of a request to it (a loaded server or host: TLS handshakes that take long), half each way. */
  extraLatencyMs: number;
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
  /** Every copy a host stopped serving, in order: what the daemon's copy server is told (FT keeps a resume point on `takeover`). */
  readonly unserved: { at: number; host: HostId; vm: VmName; reason: string; takeover: boolean }[] = [];
  readonly hosts: Map<HostId, SimHost> = new Map();
  readonly quorum: Map<QuorumServerId, SimQuorum> = new Map();
  /** Directed cuts: `host1>host2` (A-Link), `host1>quorum1` and `quorum1>host1` (management). */
  readonly cuts = new Set<string>();
  private readonly timers: Timer[] = [];
  private seq = 0;
  private readonly grantsSeen = new Map<string, HostId>();
  /** The disk model: each write's parent; and per VM the last write its guest was told is durable. */
  private readonly parents = new Map<number, number>([[0, 0]]);
  private nextWrite = 1;
  private readonly acked = new Map<VmName, number>();
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
      writeIntervalMs: options.writeIntervalMs ?? 100,
      syncMs: options.syncMs ?? { full: 400, incremental: 100 },
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
        disks: new Map(),
        exports: new Map(),
        serving: new Map(),
        exportGen: 0,
        mirrors: new Map(),
        cutBeforeConnect: new Set(),
      });
    }
    for (const q of options.quorumServers) this.quorum.set(q, { id: q, up: true, extraLatencyMs: 0, record: emptyPairRecord(), durable: { epoch: 0, holder: null } });
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
    h.exports.clear();
    h.serving.clear();
    h.mirrors.clear();
    h.cutBeforeConnect.clear();
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

  /** Requests to a quorum server take this much longer, there and back (0: back to normal). */
  setQuorumLatency(id: QuorumServerId, ms: number): void {
    const q = this.quorum.get(id)!;
    if (q.extraLatencyMs === ms) return;
    q.extraLatencyMs = ms;
    this.note(id, `quorum server answers ${ms} ms slower`, 'fault');
  }

  cut(from: string, to: string): void {
    this.cuts.add(`${from}>${to}`);
  }

  heal(from: string, to: string): void {
    this.cuts.delete(`${from}>${to}`);
  }

  /**
   * The host's driver loop is held up (a loaded machine, a long pause): inputs wait until it resumes. Its
   * watchdog, its own thread, still fires on time; so do effects already under way.
   */
  stall(id: HostId, ms: number): void {
    const h = this.host(id);
    if (!h.up) return;
    const boot = h.boot;
    h.busyUntil = Math.max(h.busyUntil, this.now + ms);
    const until = h.busyUntil;
    this.note(id, `driver loop stalls ${Math.round(ms)} ms`, 'fault');
    this.at(until, () => {
      if (h.up && h.boot === boot) this.drain(h);
    });
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
    this.exportDiesWith(h, vm, p.state);
    this.note(id, `VM ${vm} process crashed`, 'fault');
    h.mirrors.delete(vm);
    this.input(id, { type: 'vm-event', now: 0, vm, event: { kind: 'exited', instance: p.instance, cause: 'crashed', expected: false, clean: false } });
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

  /** The FT VMs whose checkpoint image a host, as their backup, has no room for (its FT room watch's report). */
  setFtRoomShort(id: HostId, vms: VmName[]): void {
    this.note(id, vms.length === 0 ? 'FT memory room for every FT VM' : `no FT memory room for ${vms.join(', ')}`, 'fault');
    this.input(id, { type: 'ft-room', now: 0, short: vms });
  }

  // ── observation ─────────────────────────────────────────────────────────────────────────────────────

  host(id: HostId): SimHost {
    const h = this.hosts.get(id);
    if (!h) throw new Error(`no simulated host ${id}`);
    return h;
  }

  /** Hosts whose process of the VM runs (or may run) guest code: from its start until its stop completes. */
  runningCopies(vm: VmName): HostId[] {
    const executes = (state: string | undefined): boolean => state === 'starting' || state === 'running' || state === 'stopping';
    return [...this.hosts.values()].filter((h) => executes(h.processes.get(vm)?.state)).map((h) => h.id);
  }

  /** The protection a host's core runs a VM with now (`off` while the host is down). */
  protectionOn(id: HostId, vm: VmName): string {
    const h = this.host(id);
    return h.core ? runningProtection(h.core, vm) : 'off';
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
      h.mirrors.clear();
      for (const [vm, p] of killed) this.exportDiesWith(h, vm, p.state);
      this.note(h.id, `watchdog killed ${killed.map(([vm]) => vm).join(', ')}`, 'fence');
      for (const [vm, p] of killed) {
        this.input(h.id, { type: 'vm-event', now: 0, vm, event: { kind: 'exited', instance: p.instance, cause: 'watchdog', expected: true, clean: false } });
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
        const leg = q.extraLatencyMs / 2;
        this.at(this.now + this.delay() + leg, () => {
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
          this.at(this.now + this.delay() + leg, () => {
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
        if (h.exports.has(e.vm)) throw new SafetyViolation(`${h.id} started VM ${e.vm} on the copy it still serves to its peer`);
        h.processes.set(e.vm, { instance: e.instance, state: 'starting' });
        const mirror = e.mirror;
        this.at(this.now + this.opts.startLatencyMs, () => {
          const p = h.processes.get(e.vm);
          if (!alive() || p?.instance !== e.instance || p.state !== 'starting') return;
          // A start with a mirror runs the guest only once the mirror is connected (QEMU starts paused).
          if (mirror && !this.connectMirror(h, e.vm, e.instance, mirror.stream, mirror.mode)) {
            h.processes.delete(e.vm);
            this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'start-failed', instance: e.instance, reason: 'the mirror could not connect' } });
            return;
          }
          this.checkDiskOnStart(h, e.vm);
          h.processes.set(e.vm, { instance: e.instance, state: 'running' });
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'started', instance: e.instance } });
          this.scheduleWrite(h, e.vm, e.instance);
        });
        return;
      }
      case 'start-mirror': {
        this.at(this.now + 20, () => {
          const p = h.processes.get(e.vm);
          if (!alive() || p?.instance !== e.instance || h.mirrors.has(e.vm)) return;
          if (h.cutBeforeConnect.delete(`${e.vm}#${e.stream}`)) return;
          if (!this.connectMirror(h, e.vm, e.instance, e.stream, e.mode)) {
            this.storage(h, e.vm, { kind: 'mirror-ended', instance: e.instance, stream: e.stream, reason: 'could not connect to the peer' });
          }
        });
        return;
      }
      case 'cut-mirror': {
        const m = h.mirrors.get(e.vm);
        if (!m || m.stream !== e.stream) {
          // A running instance's start-mirror not connected yet: it never will be, and the core hears it
          // ended, as from the daemon's runner (which names the stream as soon as it starts connecting). A
          // starting instance's mirror has no stream in the runner until QEMU is up: the cut is dropped
          // there, and here too (the core does not cut it before the instance runs).
          if (h.processes.get(e.vm)?.instance !== e.instance || h.processes.get(e.vm)?.state !== 'running' || m !== undefined) return;
          h.cutBeforeConnect.add(`${e.vm}#${e.stream}`);
          this.at(this.now + 5, () => {
            if (alive()) this.storage(h, e.vm, { kind: 'mirror-ended', instance: e.instance, stream: e.stream, reason: 'cut' });
          });
          return;
        }
        h.mirrors.delete(e.vm);
        this.at(this.now + 5, () => {
          if (alive()) this.storage(h, e.vm, { kind: 'mirror-ended', instance: e.instance, stream: e.stream, reason: 'cut' });
        });
        return;
      }
      case 'prepare-incoming': {
        if (h.processes.has(e.vm)) throw new SafetyViolation(`${h.id} started an incoming instance of ${e.vm} beside another`);
        // What it listens for: the source must migrate with the same (QEMU's multifd on both sides).
        h.processes.set(e.vm, { instance: e.instance, state: 'incoming', multifd: e.multifd });
        this.at(this.now + this.opts.startLatencyMs, () => {
          if (!alive() || h.processes.get(e.vm)?.instance !== e.instance) return;
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'incoming-started', instance: e.instance, port: 49152 } });
        });
        return;
      }
      case 'export-incoming': {
        if (h.exports.has(e.vm) || h.serving.has(e.vm)) throw new SafetyViolation(`${h.id} exported ${e.vm}'s copy from its incoming instance while still serving it`);
        this.at(this.now + 10, () => {
          if (!alive() || h.processes.get(e.vm)?.instance !== e.instance) return;
          h.exportGen += 1;
          h.exports.set(e.vm, h.exportGen);
          if (!h.disks.has(e.vm)) h.disks.set(e.vm, 0);
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'incoming-ready', instance: e.instance } });
        });
        return;
      }
      case 'migrate-vm': {
        this.at(this.now + 200, () => {
          const p = h.processes.get(e.vm);
          if (!alive() || p?.instance !== e.instance || p.state !== 'running') return;
          const peer = this.peerOf(h);
          const dest = peer.processes.get(e.vm);
          const m = h.mirrors.get(e.vm);
          const fail = (reason: string): void => this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'migration-failed', instance: e.instance, migration: e.migration, reason } });
          if (this.mirrorPath(h, e.vm, m?.exportGen ?? null) !== 'ok' || dest?.state !== 'incoming') return fail('the destination is gone');
          if (dest.multifd !== e.multifd) {
            throw new SafetyViolation(`${h.id} migrated ${e.vm} with ${e.multifd} multifd connections to an incoming instance that listens for ${dest.multifd}`);
          }
          if (m?.state !== 'ready' || peer.disks.get(e.vm) !== h.disks.get(e.vm)) {
            throw new SafetyViolation(`${h.id} switched ${e.vm} over to ${peer.id} with the copies differing (mirror ${m?.state ?? 'none'})`);
          }
          h.processes.set(e.vm, { instance: e.instance, state: 'migrated' });
          h.mirrors.delete(e.vm);
          peer.processes.set(e.vm, { instance: dest.instance, state: 'received' });
          peer.exports.delete(e.vm);
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'migrated', instance: e.instance, migration: e.migration } });
        });
        return;
      }
      case 'resume-vm': {
        const d = h.persisted;
        if (!d || d.authority === 'none' || d.epoch !== e.epoch || d.vms[e.vm]?.owner.host !== h.id) {
          throw new SafetyViolation(`${h.id} resumed VM ${e.vm} without a durable grant (persisted epoch ${d?.epoch}, effect epoch ${e.epoch})`);
        }
        const p = h.processes.get(e.vm);
        this.at(this.now + 5, () => {
          if (!alive() || h.processes.get(e.vm)?.instance !== e.instance) return;
          if (p?.state !== 'received') {
            h.processes.delete(e.vm);
            if (p) this.exportDiesWith(h, e.vm, p.state);
            this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'start-failed', instance: e.instance, reason: 'the migration did not arrive' } });
            return;
          }
          this.checkDiskOnStart(h, e.vm);
          h.processes.set(e.vm, { instance: e.instance, state: 'running' });
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'started', instance: e.instance } });
          this.scheduleWrite(h, e.vm, e.instance);
        });
        return;
      }
      case 'serve-copy': {
        if (h.processes.has(e.vm)) throw new SafetyViolation(`${h.id} serves its copy of ${e.vm} while running the VM on it`);
        const serve = {};
        h.serving.set(e.vm, serve);
        this.at(this.now + 30, () => {
          // An unserve (or a newer serve) since: this start is abandoned, as the daemon's copy server does.
          if (!alive() || h.serving.get(e.vm) !== serve) return;
          h.serving.delete(e.vm);
          h.exportGen += 1;
          h.exports.set(e.vm, h.exportGen);
          if (!h.disks.has(e.vm)) h.disks.set(e.vm, 0);
          this.storage(h, e.vm, { kind: 'export-ready' });
        });
        return;
      }
      case 'unserve-copy':
        this.unserved.push({ at: this.now, host: h.id, vm: e.vm, reason: e.reason, takeover: e.takeover === true });
        h.exports.delete(e.vm);
        h.serving.delete(e.vm);
        return;
      case 'stop-vm': {
        const p = h.processes.get(e.vm);
        if (!p || p.instance !== e.instance) {
          this.at(this.now, () => {
            if (alive()) this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'exited', instance: e.instance, cause: 'was not running', expected: true, clean: true } });
          });
          return;
        }
        // A process that runs no guest code (a migration's incoming or switched-away end) stays one while it
        // goes; any other is stopping, and runs guest code until it is gone.
        if (p.state === 'starting' || p.state === 'running') h.processes.set(e.vm, { instance: e.instance, state: 'stopping' });
        this.at(this.now + this.opts.stopLatencyMs, () => {
          const gone = h.processes.get(e.vm);
          if (!alive() || gone?.instance !== e.instance) return;
          h.processes.delete(e.vm);
          h.mirrors.delete(e.vm);
          this.exportDiesWith(h, e.vm, gone.state);
          this.input(h.id, { type: 'vm-event', now: 0, vm: e.vm, event: { kind: 'exited', instance: e.instance, cause: 'stopped', expected: true, clean: true } });
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

  // ── the disk model ──────────────────────────────────────────────────────────────────────────────────

  private peerOf(h: SimHost): SimHost {
    return this.host(h.cfg.peer);
  }

  /** The mirror's data path: the peer is up, serves this copy (the same export), and the A-Link carries both ways. */
  private mirrorPath(h: SimHost, vm: VmName, exportGen: number | null): 'ok' | 'hung' | 'reset' {
    const peer = this.peerOf(h);
    if (!peer.up || this.cuts.has(`${h.id}>${peer.id}`) || this.cuts.has(`${peer.id}>${h.id}`)) return 'hung';
    const gen = peer.exports.get(vm);
    if (gen === undefined || (exportGen !== null && gen !== exportGen)) return 'reset';
    return 'ok';
  }

  /** Connects a mirror (the peer sees the stream open), then syncs it; false when it cannot connect. */
  private connectMirror(h: SimHost, vm: VmName, instance: number, stream: string, mode: MirrorMode): boolean {
    if (this.mirrorPath(h, vm, null) !== 'ok') return false;
    const peer = this.peerOf(h);
    const source = h.disks.get(vm) ?? 0;
    const target = peer.disks.get(vm) ?? 0;
    const covering = target !== null && source !== null && this.contains(source, target);
    if (mode === 'incremental' && !covering) {
      throw new SafetyViolation(`${h.id} resynced ${vm} incrementally onto a copy on ${peer.id} that is not an older state of its own (diverged)`);
    }
    const m: SimMirror = { instance, stream, state: 'syncing', exportGen: peer.exports.get(vm)!, covering };
    h.mirrors.set(vm, m);
    // Not covering: until the sync completes the peer's copy is a mixture of two histories.
    if (!covering) peer.disks.set(vm, null);
    this.input(peer.id, { type: 'storage', now: 0, vm, event: { kind: 'stream-open', stream } });
    this.storage(h, vm, { kind: 'mirror-syncing', instance, stream });
    const boot = h.boot;
    const finish = (): void => {
      if (h.boot !== boot || h.mirrors.get(vm) !== m || m.state !== 'syncing') return;
      const path = this.mirrorPath(h, vm, m.exportGen);
      // A hung link holds the copy job back until it carries again (TCP resumes); a reset stalls it.
      if (path === 'hung') return this.at(this.now + this.opts.writeIntervalMs, finish);
      if (path === 'reset') {
        m.state = 'stalled';
        return this.storage(h, vm, { kind: 'mirror-stalled', instance, stream, reason: 'the peer reset the stream' });
      }
      peer.disks.set(vm, h.disks.get(vm) ?? 0);
      m.state = 'ready';
      m.covering = true;
      this.storage(h, vm, { kind: 'mirror-ready', instance, stream });
    };
    this.at(this.now + this.opts.syncMs[mode], finish);
    return true;
  }

  /** A running guest writes every `writeIntervalMs`; the write waits while a mirror cannot reach the copy. */
  private scheduleWrite(h: SimHost, vm: VmName, instance: number): void {
    const boot = h.boot;
    this.at(this.now + this.opts.writeIntervalMs, () => {
      const p = h.processes.get(vm);
      if (h.boot !== boot || !h.up || p?.instance !== instance) return;
      if (p.state === 'running') this.write(h, vm);
      this.scheduleWrite(h, vm, instance);
    });
  }

  private write(h: SimHost, vm: VmName): void {
    const m = h.mirrors.get(vm);
    if (m && m.state !== 'stalled') {
      const path = this.mirrorPath(h, vm, m.exportGen);
      if (path === 'reset') {
        m.state = 'stalled';
        this.storage(h, vm, { kind: 'mirror-stalled', instance: m.instance, stream: m.stream, reason: 'the peer reset the stream' });
      }
      if (path !== 'ok') return; // the guest's write waits; nothing is acknowledged
    }
    if (m?.state === 'stalled') return;
    const head = h.disks.get(vm) ?? 0;
    if (head === null) throw new SafetyViolation(`${h.id} runs ${vm} on a disk left a mixture by an unfinished sync`);
    const w = this.nextWrite++;
    this.parents.set(w, head);
    h.disks.set(vm, w);
    if (m?.covering) this.peerOf(h).disks.set(vm, w);
    this.acked.set(vm, w);
  }

  /** Does the disk whose last write is `head` hold write `w`? */
  private contains(head: number, w: number): boolean {
    for (let x = head; ; x = this.parents.get(x)!) {
      if (x === w) return true;
      if (x === 0) return w === 0;
    }
  }

  /** Invariant 3: a VM runs only on a disk that holds every write its guest acknowledged. */
  private checkDiskOnStart(h: SimHost, vm: VmName): void {
    const head = h.disks.get(vm) ?? 0;
    const acked = this.acked.get(vm) ?? 0;
    if (head === null || !this.contains(head, acked)) {
      throw new SafetyViolation(`VM ${vm} started on ${h.id} with a disk that lacks acknowledged write ${acked} (disk at ${head})`);
    }
  }

  /** A migration's incoming instance serves the copy from inside its QEMU: the export ends with the process. */
  private exportDiesWith(h: SimHost, vm: VmName, state: string): void {
    if (state === 'incoming' || state === 'received') h.exports.delete(vm);
  }

  private storage(h: SimHost, vm: VmName, event: StorageEvent): void {
    this.input(h.id, { type: 'storage', now: 0, vm, event });
  }

  /** A host's mirror of a VM that is in sync, and the peer's core counting its copy current (HA's "protected"). */
  isProtected(vm: VmName): boolean {
    const owner = [...this.hosts.values()].find((h) => h.processes.get(vm)?.state === 'running');
    if (!owner) return false;
    const peer = this.peerOf(owner);
    return owner.mirrors.get(vm)?.state === 'ready' && peer.core?.durable.copies[vm]?.current === true;
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
