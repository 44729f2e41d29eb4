/**
 * Random fault schedules for the seeded simulation: one seed chooses the quorum configuration, clock drift,
 * message delays and duplication, and a sequence of faults (host crash and restart, A-Link loss one or both
 * ways, management partitions between hosts and quorum servers, quorum server crash and restart, slow
 * persistence, VM process crashes, operators' live migrations and maintenance mode). After the fault phase everything heals, and the liveness phase checks
 * that every VM that should run runs, once, on a paired (protected) pair within a bound.
 */
import { Prng } from './prng.js';
import { World, SafetyViolation, formatLog } from './world.js';

export interface ScheduleResult {
  seed: number;
  ok: boolean;
  failure?: string;
  faults: string[];
  log: string;
  /** How often the run went through each path worth covering (see COVERAGE): proof the schedules reach them. */
  coverage: Record<CoverageKey, number>;
}

/** Decisions of the cores that the schedules must reach, by the words of their events. */
export const COVERAGE = {
  /** A quorum grant arrived while the peer was still heard (asked on suspicion). */
  earlyGrant: 'quorum lease held in epoch',
  /** A lease held from such a round became the host's authority when the peer was declared lost. */
  earlyGrantAdopted: 'the quorum lease it holds becomes authority',
  /** A denial while the peer was still heard or just lost. */
  denied: 'denied authority',
  /** The pair outlived a round asked on suspicion and moved past the server's epoch. */
  pairPassedQuorumEpoch: 'while the pair went on in epoch',
  /** A host stopped its VMs for want of authority. */
  fenced: 'no authority (fence)',
  takeover: 'took over VM',
} as const;
export type CoverageKey = keyof typeof COVERAGE;

function coverageOf(world: World): Record<CoverageKey, number> {
  const counts = Object.fromEntries(Object.keys(COVERAGE).map((k) => [k, 0])) as Record<CoverageKey, number>;
  for (const line of world.log) {
    for (const [key, words] of Object.entries(COVERAGE) as [CoverageKey, string][]) if (line.what.includes(words)) counts[key] += 1;
  }
  return counts;
}

const FAULT_PHASE_MS = 30_000;
const LIVENESS_BOUND_MS = 20_000;
const HOSTS = ['host1', 'host2'] as const;

export function runSchedule(seed: number): ScheduleResult {
  const rnd = new Prng(seed);
  const serverCount = rnd.int(0, 2);
  const servers = ['quorum1', 'quorum2'].slice(0, serverCount);
  const drift = 0.004;
  const world = new World({
    hosts: ['host1', 'host2'],
    quorumServers: servers,
    vms: [
      { name: 'vm1', owner: 'host1' },
      { name: 'vm2', owner: 'host2' },
      { name: 'vm3', owner: 'host1' },
    ],
    clockRates: { host1: 1 + rnd.between(-drift, drift), host2: 1 + rnd.between(-drift, drift) },
    delayMs: [0.2, rnd.between(1, 40)],
    duplicateProbability: rnd.between(0, 0.05),
    random: () => rnd.next(),
  });
  const faults: string[] = [`quorum servers: ${serverCount}`];
  const plan = (at: number, what: string, run: () => void): void => {
    faults.push(`${(at / 1000).toFixed(3)} ${what}`);
    world.at(at, run);
  };
  world.start();

  let t = 2000;
  while (t < FAULT_PHASE_MS) {
    t += rnd.between(200, 4000);
    if (t >= FAULT_PHASE_MS) break;
    const heal = Math.min(FAULT_PHASE_MS, t + rnd.between(300, 8000));
    const host = rnd.pick(HOSTS);
    const peer = host === 'host1' ? 'host2' : 'host1';
    switch (rnd.int(0, 12)) {
      case 0:
        plan(t, `crash ${host}`, () => world.powerOff(host));
        plan(heal, `restart ${host}`, () => world.powerOn(host));
        break;
      case 1:
        plan(t, 'cut A-Link both ways', () => {
          world.cut('host1', 'host2');
          world.cut('host2', 'host1');
        });
        plan(heal, 'heal A-Link', () => {
          world.heal('host1', 'host2');
          world.heal('host2', 'host1');
        });
        break;
      case 2:
        plan(t, `cut A-Link ${host}→${peer}`, () => world.cut(host, peer));
        plan(heal, `heal A-Link ${host}→${peer}`, () => world.heal(host, peer));
        break;
      case 3: {
        if (servers.length === 0) break;
        const q = rnd.pick(servers);
        const oneWay = rnd.chance(0.3);
        plan(t, `cut ${host}↔${q}${oneWay ? ' (one way)' : ''}`, () => {
          world.cut(host, q);
          if (!oneWay) world.cut(q, host);
        });
        plan(heal, `heal ${host}↔${q}`, () => {
          world.heal(host, q);
          world.heal(q, host);
        });
        break;
      }
      case 4: {
        if (servers.length === 0) break;
        const q = rnd.pick(servers);
        plan(t, `crash ${q}`, () => world.quorumDown(q));
        plan(heal, `restart ${q}`, () => world.quorumUp(q));
        break;
      }
      case 5:
        plan(t, `slow disk on ${host}`, () => world.setPersistLatency(host, rnd.between(20, 400)));
        plan(heal, `disk fast on ${host}`, () => world.setPersistLatency(host, 2));
        break;
      case 6: {
        const vm = rnd.pick(['vm1', 'vm2', 'vm3']);
        plan(t, `crash VM ${vm} wherever it runs`, () => {
          for (const h of world.runningCopies(vm)) world.crashVm(h, vm);
        });
        break;
      }
      case 8: {
        // An operator's live migration, asked of both hosts (the one that does not run the VM refuses).
        const vm = rnd.pick(['vm1', 'vm2', 'vm3']);
        plan(t, `migrate VM ${vm}`, () => {
          for (const h of HOSTS) world.command(h, { kind: 'migrate-vm', name: vm });
        });
        break;
      }
      case 9:
        plan(t, `maintenance on ${host}`, () => world.command(host, { kind: 'maintenance', on: true }));
        plan(heal, `maintenance off ${host}`, () => world.command(host, { kind: 'maintenance', on: false }));
        break;
      case 10: {
        // A short silence on the A-Link, one way or both: long enough to be suspected, often too short to be a loss.
        const oneWay = rnd.chance(0.5);
        const end = Math.min(FAULT_PHASE_MS, t + rnd.between(200, 900));
        plan(t, `blip A-Link ${oneWay ? `${host}→${peer}` : 'both ways'}`, () => {
          world.cut(host, peer);
          if (!oneWay) world.cut(peer, host);
        });
        plan(end, 'A-Link back', () => {
          world.heal(host, peer);
          world.heal(peer, host);
        });
        break;
      }
      case 11: {
        // A slow quorum server (a loaded machine: TLS rounds of hundreds of ms), for a while.
        if (servers.length === 0) break;
        const q = rnd.pick(servers);
        const ms = rnd.between(100, 800);
        plan(t, `slow ${q} (${Math.round(ms)} ms)`, () => world.setQuorumLatency(q, ms));
        plan(heal, `${q} fast again`, () => world.setQuorumLatency(q, 0));
        break;
      }
      case 12: {
        // A host's driver loop held up: its heartbeats stop, then it catches up with what queued meanwhile.
        const ms = rnd.between(150, 1200);
        plan(t, `stall ${host} ${Math.round(ms)} ms`, () => world.stall(host, ms));
        break;
      }
      case 7:
        plan(t, `crash both hosts`, () => {
          world.powerOff('host1');
          world.powerOff('host2');
        });
        plan(heal, 'restart host2', () => world.powerOn('host2'));
        plan(heal + rnd.between(0, 3000), 'restart host1', () => world.powerOn('host1'));
        break;
    }
  }
  plan(FAULT_PHASE_MS, 'heal everything', () => {
    world.cuts.clear();
    for (const h of HOSTS) {
      world.setPersistLatency(h, 2);
      world.powerOn(h);
      world.command(h, { kind: 'maintenance', on: false });
    }
    for (const q of servers) {
      world.quorumUp(q);
      world.setQuorumLatency(q, 0);
    }
    // The operator's repair: VMs the restart policy gave up on (the schedule crashed them) are wanted again.
    for (const vm of ['vm1', 'vm2', 'vm3']) world.command('host1', { kind: 'set-desired', name: vm, desired: 'running' });
  });

  try {
    world.runUntil(FAULT_PHASE_MS + LIVENESS_BOUND_MS);
    const problems: string[] = [];
    for (const h of HOSTS) if (world.hostState(h) !== 'paired') problems.push(`${h} is ${world.hostState(h)}, not paired`);
    for (const vm of ['vm1', 'vm2', 'vm3']) {
      const copies = world.runningCopies(vm).filter((h) => world.host(h).processes.get(vm)?.state === 'running');
      if (copies.length !== 1) problems.push(`${vm} runs on ${copies.length} hosts`);
      else if (!world.isProtected(vm)) problems.push(`${vm} is not protected (its mirror is not in sync with a current copy)`);
    }
    if (problems.length > 0) {
      return { seed, ok: false, failure: `liveness: ${LIVENESS_BOUND_MS / 1000} s after faults healed: ${problems.join('; ')}`, faults, log: formatLog(world.log), coverage: coverageOf(world) };
    }
    return { seed, ok: true, faults, log: '', coverage: coverageOf(world) };
  } catch (e) {
    if (e instanceof SafetyViolation) return { seed, ok: false, failure: `safety: ${e.message}`, faults, log: formatLog(world.log), coverage: coverageOf(world) };
    // An assertion inside the core is a bug that this seed found: report it like a violation.
    return { seed, ok: false, failure: `bug: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`, faults, log: formatLog(world.log), coverage: coverageOf(world) };
  }
}
