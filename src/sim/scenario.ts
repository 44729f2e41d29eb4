/**
 * Scenario scripts: a fault story in simulated time, run through the real core in the simulated world, whose
 * log is compared with a golden file. Times are in seconds.
 *
 *   # comment
 *   quorum quorum1 [quorum2]             quorum servers, preferred first (none: the tie-break applies)
 *   vm NAME OWNER [ha|ft|none]           a VM and the host that first runs it
 *   timing FIELD MS                      override a timing of the core's config (e.g. mtbfThresholdMs)
 *   at T crash|restart HOST
 *   at T cut|heal alink                  both A-Links, both ways (the pair's A-Link as a whole)
 *   at T cut|heal HOST>HOST              one direction of the A-Link
 *   at T cut|heal HOST<>QUORUM           a host's management path to a quorum server, both ways
 *   at T quorum-down|quorum-up QUORUM
 *   at T quorum-latency QUORUM MS        requests to it take MS longer, there and back (0: normal again)
 *   at T health HOST COMPONENT ok|degraded|failed
 *   at T rtt MS
 *   at T ft-room HOST VM,VM…|none       the FT VMs whose checkpoint image HOST (their backup) has no room for
 *   at T crash-vm HOST VM
 *   at T command HOST maintenance on|off | force-takeover | repaired | stop VM | start VM | migrate VM
 *   expect T VM on HOST|nowhere          checked at time T
 *   expect T VM protection LEVEL on HOST the protection HOST's core runs the VM with at time T (off: host down)
 *   until T                              how long to run
 */
import { readFile } from 'node:fs/promises';
import { HEALTH_COMPONENTS, type ComponentState, type HealthComponent, type HostId, type ProtectionLevel } from '../core/types.js';
import { World, formatLog, SafetyViolation } from './world.js';

export interface ScenarioResult {
  log: string;
  failures: string[];
}

export async function runScenarioFile(file: string): Promise<ScenarioResult> {
  return runScenario(await readFile(file, 'utf8'));
}

export function runScenario(script: string): ScenarioResult {
  const lines = script
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l !== '');
  const servers: string[] = [];
  const vms: { name: string; owner: HostId; protection: ProtectionLevel }[] = [];
  const actions: { at: number; run: (w: World) => void }[] = [];
  const failures: string[] = [];
  let until = 20;
  const timing: Record<string, number> = {};

  for (const line of lines) {
    const w = line.split(/\s+/);
    const fail = (why: string): never => {
      throw new Error(`scenario line '${line}': ${why}`);
    };
    switch (w[0]) {
      case 'quorum':
        servers.push(...w.slice(1));
        break;
      case 'vm':
        vms.push({ name: w[1] ?? fail('vm NAME OWNER'), owner: w[2] ?? fail('vm NAME OWNER'), protection: (w[3] as ProtectionLevel | undefined) ?? 'ha' });
        break;
      case 'until':
        until = seconds(w[1]);
        break;
      case 'timing':
        timing[w[1] ?? fail('timing FIELD MS')] = Number(w[2] ?? fail('timing FIELD MS'));
        break;
      case 'expect': {
        const at = seconds(w[1]);
        if (w[3] === 'protection') {
          // expect T VM protection LEVEL on HOST: the protection that host's core runs the VM with.
          const [vm, level, host] = [w[2] ?? fail('expect T VM protection LEVEL on HOST'), w[4] ?? fail('expect T VM protection LEVEL on HOST'), w[6] ?? fail('expect T VM protection LEVEL on HOST')];
          actions.push({
            at,
            run: (world) => {
              const actual = world.protectionOn(host, vm);
              if (actual !== level) failures.push(`at ${at} s expected ${vm} protected as ${level} on ${host}, found ${actual}`);
            },
          });
          break;
        }
        const vm = w[2] ?? fail('expect T VM on HOST|nowhere');
        const where = w[4] ?? fail('expect T VM on HOST|nowhere');
        actions.push({
          at,
          run: (world) => {
            const copies = world.runningCopies(vm);
            const actual = copies.length === 0 ? 'nowhere' : copies.join(',');
            if (actual !== where) failures.push(`at ${at} s expected ${vm} on ${where}, found ${actual}`);
          },
        });
        break;
      }
      case 'at':
        actions.push({ at: seconds(w[1]), run: parseAction(w.slice(2), fail) });
        break;
      default:
        fail('unknown directive');
    }
  }

  const world = new World({ hosts: ['host1', 'host2'], quorumServers: servers, vms, timing });
  world.start();
  for (const a of actions) world.at(a.at * 1000, () => a.run(world));
  try {
    world.runUntil(until * 1000);
  } catch (e) {
    if (!(e instanceof SafetyViolation)) throw e;
    failures.push(`safety: ${e.message}`);
  }
  return { log: formatLog(world.log) + '\n', failures };
}

function parseAction(w: string[], fail: (why: string) => never): (world: World) => void {
  const [verb, a, b, c] = w;
  switch (verb) {
    case 'crash':
      return (world) => world.powerOff(a ?? fail('crash HOST'));
    case 'restart':
      return (world) => world.powerOn(a ?? fail('restart HOST'));
    case 'cut':
    case 'heal': {
      const target = a ?? fail(`${verb} alink|HOST>HOST|HOST<>QUORUM`);
      const apply = (world: World, from: string, to: string): void => (verb === 'cut' ? world.cut(from, to) : world.heal(from, to));
      if (target === 'alink') return (world) => (apply(world, 'host1', 'host2'), apply(world, 'host2', 'host1'));
      if (target.includes('<>')) {
        const [x, y] = target.split('<>') as [string, string];
        return (world) => (apply(world, x, y), apply(world, y, x));
      }
      if (target.includes('>')) {
        const [x, y] = target.split('>') as [string, string];
        return (world) => apply(world, x, y);
      }
      return fail('expected alink, HOST>HOST or HOST<>QUORUM');
    }
    case 'quorum-down':
      return (world) => world.quorumDown(a ?? fail('quorum-down Q'));
    case 'quorum-up':
      return (world) => world.quorumUp(a ?? fail('quorum-up Q'));
    case 'quorum-latency': {
      const ms = Number(b);
      if (b === undefined || !Number.isFinite(ms) || ms < 0) fail('quorum-latency QUORUM MS');
      return (world) => world.setQuorumLatency(a ?? fail('quorum-latency QUORUM MS'), ms);
    }
    case 'health': {
      if (!(HEALTH_COMPONENTS as readonly string[]).includes(b ?? '')) fail(`unknown component ${b}`);
      if (c !== 'ok' && c !== 'degraded' && c !== 'failed') fail('state must be ok, degraded or failed');
      return (world) => world.setHealth(a!, b as HealthComponent, c as ComponentState);
    }
    case 'rtt':
      return (world) => world.setRtt(Number(a));
    case 'ft-room': {
      // ft-room HOST VM,VM… | none: what the host's FT room watch reports as short.
      const host = a ?? fail('ft-room HOST VM,VM…|none');
      const vms = b === undefined ? fail('ft-room HOST VM,VM…|none') : b === 'none' ? [] : b.split(',');
      return (world) => world.setFtRoomShort(host, vms);
    }
    case 'crash-vm':
      return (world) => world.crashVm(a!, b ?? fail('crash-vm HOST VM'));
    case 'command': {
      const host = a ?? fail('command HOST …');
      switch (b) {
        case 'maintenance':
          return (world) => world.command(host, { kind: 'maintenance', on: c === 'on' });
        case 'force-takeover':
          return (world) => world.command(host, { kind: 'force-takeover' });
        case 'repaired':
          return (world) => world.command(host, { kind: 'mark-repaired' });
        case 'migrate':
          return (world) => world.command(host, { kind: 'migrate-vm', name: c ?? fail('command HOST migrate VM') });
        case 'stop':
        case 'start':
          return (world) => world.command(host, { kind: 'set-desired', name: c ?? fail('command HOST stop|start VM'), desired: b === 'stop' ? 'stopped' : 'running' });
        default:
          return fail(`unknown command ${b}`);
      }
    }
    default:
      return fail(`unknown action ${verb}`);
  }
}

function seconds(s: string | undefined): number {
  const n = Number(s);
  if (s === undefined || !Number.isFinite(n) || n < 0) throw new Error(`'${s}' is not a time in seconds`);
  return n;
}
