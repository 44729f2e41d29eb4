/**
 * `lockstep lab`: the whole pair on one Linux machine. Network namespaces are the hosts, quorum servers and
 * a client; a "fabric" namespace holds the switches (management and business bridges) and the A-Link
 * cables; each host's disk is its own loop-mounted file system; faults act on links, processes and disks.
 * See docs/lab.md for the drawing and the addresses.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import { LockstepError } from '../util/errors.js';
import { repoRoot } from '../util/paths.js';
import { inNetns, runIn } from '../util/exec.js';
import { sleep, waitGone } from '../util/proc.js';
import { writeFileDurably } from '../util/durable-file.js';
import { daemonRequest } from '../daemon/api-client.js';
import { DEFAULT_DISK_PLACE, type VmDefinition, type ProtectionLevel } from '../daemon/vm-definition.js';
import type { VmStatus } from '../daemon/api.js';
import { labFtMemoryDir, labHostConfig, labPairId } from './host-config.js';
import { enrollLabPair, ensureQuorumInitialized, isQuorumServing, startQuorumServer } from './lab-quorum.js';
import { ensureGuestImage, guestKernelCmdline } from './guest-image.js';
import { isWireRunning, setWireDelay, startWire, stopWire } from './wire.js';
import * as netns from './netns.js';
import { createHostDisk, ensureSharedMount, isMounted, mountHostDisk, repairHostDisk, shutdownHostDisk, unmountHostDisk } from './host-disk.js';
import { describeFaults, healed, linkStates, noFaults, parseFaultRequest, withFault, type FaultSet } from './faults.js';
import { exists } from '../storage/disk-image.js';
import { labPaths, loadLabState, newLabState, removeLabDir, saveLabState, type LabPaths, type LabState, type LabVm } from './lab-state.js';
import {
  ALINKS,
  HOSTS,
  HOST_BUSINESS_BRIDGE,
  IF,
  NETMASK_BITS,
  QUORUM_SERVERS,
  RECORD_SERVICE_PORT,
  addressesOf,
  guestAddress,
  guestMac,
  labNames,
  managementUrl,
  type HostName,
  type QuorumName,
  type LabNames,
  type NodeName,
} from './topology.js';

const HOST_DISK_MIB = 4096;
const DAEMON_READY_MS = 20_000;
const DAEMON_STOP_MS = 15_000;
const GUEST_READY_MS = 90_000;
/** Pairing (discovery, certificates) and the first agreed epoch: seconds on a quiet machine. */
const PAIR_READY_MS = 60_000;
const LATENCY_MS_MAX = 10_000;

export interface LabUpOptions {
  vm?: string;
  /** `strongest` picks the strongest protection this build can keep. */
  protection?: ProtectionLevel | 'strongest';
  memoryMiB?: number;
  accel?: 'auto' | 'kvm' | 'tcg';
}

export interface LabStatus {
  lab: string;
  up: boolean;
  dir: string;
  alinkLatencyMs: number;
  faults: string[];
  hosts: {
    name: HostName;
    netns: string;
    state: 'up' | 'down';
    addresses: ReturnType<typeof addressesOf>;
    faults: string[];
    daemon: { state: 'running' | 'not-running'; pid: number | null };
    /** The host's Availability Services as its lockstepd reports them (null when it does not answer). */
    availability: { state: string; epoch: number; authority: string; health: number } | null;
    /** The host's management API (HTTPS, self-signed): its root, and whether its first administrator is still to be made (null: no answer). */
    management: { url: string; setupNeeded: boolean | null };
  }[];
  quorumServers: { name: string; netns: string; state: 'up' | 'down'; address: string; faults: string[] }[];
  client: { netns: string; addresses: ReturnType<typeof addressesOf> };
  vms: { name: string; host: HostName | null; owner: string | null; protection: string; state: string; address: string; mac: string }[];
}

/** Protection levels this build can keep; HA and FT join as they land. */
const AVAILABLE_PROTECTION: readonly ProtectionLevel[] = ['none', 'ha', 'ft'];
/**
 * What `strongest` (the demo's) needs for FT: the lab's two guests run under TCG, a core each when busy, and
 * each FT epoch's copy-and-compare reads all of guest RAM twice (docs/ft.md). On 2 cores that starves the
 * daemons: measured, the A-Link round trip passes SplitSite's FT limit under load and protection flaps. So
 * FT is the demo's on a machine with this many CPUs, HA below it (FT still runs with `--protection ft`).
 */
const FT_DEMO_CPUS_MIN = 4;

export class Lab {
  readonly paths: LabPaths;
  private readonly names: LabNames;

  constructor(
    env: NodeJS.ProcessEnv = process.env,
    private readonly log: (line: string) => void = (l) => console.log(l),
  ) {
    this.paths = labPaths(env);
    this.names = labNames(this.paths.prefix);
  }

  // ── up / down ────────────────────────────────────────────────────────────────────────────────────────

  /** Brings the lab up, or completes it: every step checks before it acts, so `up` twice is harmless. */
  async up(opts: LabUpOptions = {}): Promise<LabStatus> {
    requireRoot();
    const protection = resolveProtection(opts.protection ?? 'strongest', this.log);
    if (opts.vm !== undefined) validateVmName(opts.vm);
    const existing = await loadLabState(this.paths);
    const clash = existing?.vms.find((v) => v.name === opts.vm && v.protection !== protection);
    if (clash) {
      throw new LockstepError(
        'LAB_ALREADY_UP',
        `the lab is up and VM '${clash.name}' has protection ${clash.protection}, not ${protection}: \`lockstep lab down\` first to change it`,
        { vm: clash.name },
      );
    }
    const state = existing ?? newLabState(this.paths, new Date());
    if (existing) this.log(`lab '${this.paths.name}' is up already: checking every piece`);
    try {
      await this.buildNetwork(state);
      await this.startQuorumServers(state);
      await saveLabState(this.paths, state);
      await this.prepareHosts(state, opts.accel ?? 'tcg');
      await this.ensurePaired(state);
      await saveLabState(this.paths, state);
      if (opts.vm !== undefined) await this.ensureVm(state, opts.vm, protection, opts.memoryMiB ?? 256);
    } catch (e) {
      // A first `up` that fails leaves nothing half-made; a repeated one leaves the lab as it was.
      if (!existing) {
        this.log(`lab up failed; removing what it made`);
        await this.down().catch((d: unknown) => this.log(`cleanup after a failed up also failed: ${String(d)}`));
      }
      throw e;
    }
    return this.status();
  }

  /** Stops every process, removes namespaces, links, mounts and the lab's directory. */
  async down(): Promise<void> {
    requireRoot();
    const state = await loadLabState(this.paths);
    for (const host of HOSTS) await this.stopDaemonGracefully(host);
    for (const node of [...HOSTS, ...QUORUM_SERVERS, 'client', 'fabric'] as const) {
      const ns = this.names.ns(node);
      if (await netns.namespaceExists(ns)) await netns.killNamespace(ns);
    }
    for (const host of HOSTS) await unmountHostDisk(this.paths.hostDir(host));
    const hostsDir = path.dirname(this.paths.hostDir('host1'));
    await unmountHostDisk(hostsDir);
    for (const node of [...HOSTS, ...QUORUM_SERVERS, 'client', 'fabric'] as const) await netns.deleteNamespace(this.names.ns(node));
    for (const dir of [...HOSTS.map((h) => this.paths.hostDir(h)), hostsDir]) {
      if (await isMounted(dir)) {
        throw new LockstepError('COMMAND_FAILED', `${dir} is still mounted; not removing the lab directory`, { dir });
      }
    }
    for (const host of HOSTS) await rm(labFtMemoryDir(this.paths.name, host), { recursive: true, force: true });
    await removeLabDir(this.paths);
    if (state) this.log(`lab '${this.paths.name}' is down`);
  }

  // ── status ───────────────────────────────────────────────────────────────────────────────────────────

  async status(): Promise<LabStatus> {
    const state = await loadLabState(this.paths);
    const present = await netns.listNamespaces();
    const up = state !== null && present.includes(this.names.ns('fabric'));
    const faults = state?.faults ?? noFaults();
    const daemonStatus = new Map<HostName, DaemonStatus | null>();
    const setupNeeded = new Map<HostName, boolean | null>();
    for (const host of HOSTS) {
      const d = up && !faults.hosts[host].includes('power') ? await this.daemonStatus(host) : null;
      daemonStatus.set(host, d);
      setupNeeded.set(host, d ? await this.setupNeeded(host) : null);
    }
    return {
      lab: this.paths.name,
      up,
      dir: this.paths.dir,
      alinkLatencyMs: state?.alinkLatencyMs ?? 0,
      faults: describeFaults(faults),
      hosts: HOSTS.map((name) => {
        const d = daemonStatus.get(name) ?? null;
        return {
          name,
          netns: this.names.ns(name),
          state: up && present.includes(this.names.ns(name)) && !faults.hosts[name].includes('power') ? 'up' : 'down',
          addresses: addressesOf(name),
          faults: [...faults.hosts[name]],
          daemon: { state: d ? 'running' : 'not-running', pid: d?.pid ?? null },
          availability: d?.core ? { state: d.core.state, epoch: d.core.epoch, authority: d.core.authority, health: d.core.health } : null,
          management: { url: managementUrl(name), setupNeeded: setupNeeded.get(name) ?? null },
        };
      }),
      quorumServers: QUORUM_SERVERS.map((name) => ({
        name,
        netns: this.names.ns(name),
        state: up && !faults.quorumServers[name].includes('power') ? 'up' : 'down',
        address: addressesOf(name).mgmt,
        faults: [...faults.quorumServers[name]],
      })),
      client: { netns: this.names.ns('client'), addresses: addressesOf('client') },
      vms: (state?.vms ?? []).map((vm) => {
        // The VM runs wherever a daemon reports its QEMU; its owner is in the pair's replicated record.
        const seen = HOSTS.flatMap((host) => {
          const v = daemonStatus.get(host)?.vms.find((x) => x.name === vm.name);
          return v ? [{ host, v }] : [];
        });
        const runningOn = seen.find((x) => x.v.local !== null);
        const any = runningOn ?? seen[0];
        return {
          name: vm.name,
          host: runningOn?.host ?? null,
          owner: any?.v.owner ?? null,
          protection: any?.v.protection ?? vm.protection,
          state: any?.v.state ?? 'unknown',
          address: vm.address,
          mac: vm.mac,
        };
      }),
    };
  }

  // ── faults ───────────────────────────────────────────────────────────────────────────────────────────

  async fail(target: string, fault: string): Promise<string> {
    requireRoot();
    const req = parseFaultRequest(target, fault);
    const state = await this.requireUp();
    const before = state.faults;
    const after = withFault(before, req);
    if (req.kind === 'host') {
      const host = req.target;
      const wasPowered = !before.hosts[host].includes('power');
      if (!wasPowered && !req.faults.includes('power')) {
        throw new LockstepError('HOST_DOWN', `${host} is powered off: \`lockstep lab heal ${host}\` first`, { host });
      }
      if (req.faults.includes('power') && wasPowered) {
        const killed = await netns.killNamespace(this.names.ns(host));
        this.log(`${host}: power off (${killed.length} processes killed)`);
        await this.applyLinks(after);
        await unmountHostDisk(this.paths.hostDir(host));
      }
      if (req.faults.includes('disk') && !before.hosts[host].includes('disk')) {
        await shutdownHostDisk(this.paths.hostDir(host));
        this.log(`${host}: disk failed (every I/O on it now returns EIO)`);
      }
    } else if (req.faults.includes('power') && !before.quorumServers[req.target].includes('power')) {
      const killed = await netns.killNamespace(this.names.ns(req.target));
      this.log(`${req.target}: power off (${killed.length} processes killed)`);
    }
    await this.applyLinks(after);
    state.faults = after;
    await saveLabState(this.paths, state);
    return `${target}: ${req.faults.join(', ')} failed`;
  }

  async heal(target?: string): Promise<string> {
    requireRoot();
    const state = await this.requireUp();
    const before = state.faults;
    const after = healed(before, target);
    for (const host of HOSTS) {
      const was = before.hosts[host];
      const repaired = was.includes('disk') && !after.hosts[host].includes('disk');
      const poweredOn = was.includes('power') && !after.hosts[host].includes('power');
      if (repaired) {
        // A shut-down file system cannot be revived under running programs: the host reboots with its
        // disk repaired (journal replayed, checked), as a server does after a disk controller reset.
        await netns.killNamespace(this.names.ns(host));
        if (was.includes('power')) await this.mountHost(host);
        await repairHostDisk(this.paths.hostImage(host), this.paths.hostDir(host));
        this.log(`${host}: disk repaired; host rebooted`);
      } else if (poweredOn) {
        await this.mountHost(host);
      }
      if ((repaired || poweredOn) && !after.hosts[host].includes('power')) {
        state.faults = after;
        await this.applyLinks(after);
        await this.startDaemon(host);
        this.log(`${host}: powered on; lockstepd started`);
      }
    }
    await this.applyLinks(after);
    state.faults = after;
    for (const q of QUORUM_SERVERS) {
      if (before.quorumServers[q].includes('power') && !after.quorumServers[q].includes('power')) {
        state.quorumPids[q] = await startQuorumServer(this.paths.dir, q, this.names.ns(q));
        this.log(`${q}: powered on; lockstep-quorum started`);
      }
    }
    await saveLabState(this.paths, state);
    const healedList = describeFaults(before).filter((f) => !describeFaults(after).includes(f));
    return healedList.length === 0 ? 'nothing to heal' : `healed: ${healedList.join('; ')}`;
  }

  /** Adds `ms` of round-trip time to both A-Links (half each way), in user space: this kernel has no netem. */
  async setAlinkLatency(ms: number): Promise<string> {
    requireRoot();
    if (!Number.isFinite(ms) || ms < 0 || ms > LATENCY_MS_MAX) {
      throw new LockstepError('INVALID_ARGUMENT', `latency must be a number of milliseconds from 0 to ${LATENCY_MS_MAX} (got ${ms})`, { ms });
    }
    const state = await this.requireUp();
    const fabric = this.names.ns('fabric');
    const oneWayDelayUs = Math.round((ms * 1000) / 2);
    for (const alink of ALINKS) {
      const ends = HOSTS.map((h) => IF.fabricAlink(alink, h)) as [string, string];
      const running = state.wires[alink];
      const delayFile = path.join(this.paths.dir, `wire-${alink}.delay`);
      if (ms === 0) {
        if (running !== undefined) await stopWire(running);
        delete state.wires[alink];
        for (const end of ends) await netns.setMaster(fabric, end, IF.alinkBridge(alink));
      } else if (running !== undefined && (await isWireRunning(running))) {
        // A live change: no frame lost, the link never goes dark.
        await setWireDelay({ pid: running, delayFile, oneWayDelayUs });
      } else {
        for (const end of ends) await netns.setMaster(fabric, end, null);
        const logFile = path.join(this.paths.dir, `wire-${alink}.log`);
        const { pid } = await startWire({ netns: fabric, ifA: ends[0], ifB: ends[1], oneWayDelayUs, detached: true, delayFile, logFile });
        state.wires[alink] = pid;
      }
    }
    state.alinkLatencyMs = ms;
    await saveLabState(this.paths, state);
    return ms === 0 ? 'A-Link latency removed' : `A-Link round trip +${ms} ms (${ms / 2} ms each way) on ${ALINKS.join(' and ')}`;
  }

  // ── the client's view ────────────────────────────────────────────────────────────────────────────────

  /** Runs a command in the client namespace with the terminal attached; resolves to its exit code. */
  async clientExec(cmd: readonly string[]): Promise<number> {
    requireRoot();
    await this.requireUp();
    if (cmd.length === 0) throw new LockstepError('INVALID_ARGUMENT', 'lab client needs a command: lockstep lab client -- CMD [ARGS…]');
    const [c, a] = inNetns(this.names.ns('client'), cmd[0]!, cmd.slice(1));
    const child = spawn(c, a, { stdio: 'inherit' });
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    });
  }

  /** Sends one request line to a VM's record service, from the client namespace, and returns the reply. */
  async record(line: string, vmName?: string, timeoutMs = 10_000): Promise<string> {
    requireRoot();
    const state = await this.requireUp();
    const vm = pickVm(state, vmName);
    const script = path.join(repoRoot(), 'dist', 'src', 'lab', 'record-client.js');
    const args = [script, '--timeout-ms', String(timeoutMs), vm.address, String(RECORD_SERVICE_PORT), line];
    const r = await runIn(this.names.ns('client'), process.execPath, args, { allowFailure: true, timeoutMs: timeoutMs + 5000 });
    if (r.code !== 0) {
      throw new LockstepError('RECORD_SERVICE', `VM '${vm.name}' (${vm.address}:${RECORD_SERVICE_PORT}) did not answer: ${r.stderr.trim() || `exit ${r.code}`}`, {
        vm: vm.name,
      });
    }
    return r.stdout.trim();
  }

  // ── pieces ───────────────────────────────────────────────────────────────────────────────────────────

  private async requireUp(): Promise<LabState> {
    const state = await loadLabState(this.paths);
    if (!state || !(await netns.namespaceExists(this.names.ns('fabric')))) {
      throw new LockstepError('LAB_NOT_UP', `the lab '${this.paths.name}' is not up: run \`lockstep lab up\``, { lab: this.paths.name });
    }
    return state;
  }

  private async buildNetwork(state: LabState): Promise<void> {
    const ns = (n: NodeName | 'fabric'): string => this.names.ns(n);
    const fabric = ns('fabric');
    for (const node of ['fabric', ...HOSTS, ...QUORUM_SERVERS, 'client'] as const) await netns.ensureNamespace(ns(node));
    for (const bridge of [IF.mgmtBridge, IF.businessBridge, ...ALINKS.map(IF.alinkBridge)]) await netns.ensureBridge(fabric, bridge);

    for (const node of [...HOSTS, ...QUORUM_SERVERS, 'client'] as const) {
      await netns.ensureVeth(ns(node), IF.mgmt, fabric, IF.fabricMgmt(node));
      await netns.setMaster(fabric, IF.fabricMgmt(node), IF.mgmtBridge);
      await netns.ensureAddress(ns(node), IF.mgmt, `${addressesOf(node).mgmt}/${NETMASK_BITS}`);
    }
    for (const node of [...HOSTS, 'client'] as const) {
      await netns.ensureVeth(ns(node), IF.businessUplink, fabric, IF.fabricBusiness(node));
      await netns.setMaster(fabric, IF.fabricBusiness(node), IF.businessBridge);
    }
    await netns.ensureAddress(ns('client'), IF.businessUplink, `${addressesOf('client').business}/${NETMASK_BITS}`);
    for (const host of HOSTS) {
      // The host's own business bridge: its guests' taps join it, and its uplink carries them to the switch.
      await netns.ensureBridge(ns(host), HOST_BUSINESS_BRIDGE);
      await netns.setMaster(ns(host), IF.businessUplink, HOST_BUSINESS_BRIDGE);
      await netns.ensureAddress(ns(host), HOST_BUSINESS_BRIDGE, `${addressesOf(host).business}/${NETMASK_BITS}`);
      for (const alink of ALINKS) {
        await netns.ensureVeth(ns(host), IF.alink(alink), fabric, IF.fabricAlink(alink, host));
        if (state.wires[alink] === undefined) await netns.setMaster(fabric, IF.fabricAlink(alink, host), IF.alinkBridge(alink));
        await netns.ensureAddress(ns(host), IF.alink(alink), `${addressesOf(host)[alink]}/${NETMASK_BITS}`);
      }
    }
    // Links no fault touches: the client's own, and the fabric's port towards the client.
    for (const ifname of [IF.mgmt, IF.businessUplink]) await netns.setLinkUp(ns('client'), ifname, true);
    await netns.setLinkUp(fabric, IF.fabricMgmt('client'), true);
    await netns.setLinkUp(fabric, IF.fabricBusiness('client'), true);
    await this.applyLinks(state.faults);
  }

  private async applyLinks(faults: FaultSet): Promise<void> {
    for (const link of linkStates(faults)) await netns.setLinkUp(this.names.ns(link.node), link.ifname, link.up);
  }

  private async prepareHosts(state: LabState, accel: 'auto' | 'kvm' | 'tcg'): Promise<void> {
    for (const host of HOSTS) {
      if (state.faults.hosts[host].includes('power')) continue;
      await this.mountHost(host);
      const dataDir = this.paths.hostDir(host);
      // What an installer does on each server: the quorum servers' CA certificates go onto the host's disk.
      const quorumCaFile = (q: QuorumName): string => path.join(dataDir, 'quorum', `${q}-ca.crt`);
      await mkdir(path.join(dataDir, 'quorum'), { recursive: true });
      for (const q of QUORUM_SERVERS) await copyFile(await ensureQuorumInitialized(this.paths.dir, q), quorumCaFile(q));
      const config = labHostConfig({
        host,
        labName: this.paths.name,
        dataDir,
        apiSocket: this.paths.hostApiSocket(host),
        accel,
        pairSecret: state.pairSecret,
        quorumCaFile,
        quorumServers: QUORUM_SERVERS,
      });
      await writeFileDurably(this.paths.hostConfig(host), JSON.stringify(config, null, 2) + '\n');
      if (!(await this.daemonStatus(host))) await this.startDaemon(host);
    }
  }

  /** Each quorum server's state (initialized once) and its `lockstep-quorum serve` in its namespace. */
  private async startQuorumServers(state: LabState): Promise<void> {
    for (const q of QUORUM_SERVERS) {
      await ensureQuorumInitialized(this.paths.dir, q);
      if (state.faults.quorumServers[q].includes('power') || (await isQuorumServing(this.paths.dir, state.quorumPids[q]))) continue;
      state.quorumPids[q] = await startQuorumServer(this.paths.dir, q, this.names.ns(q));
    }
  }

  /**
   * Waits for the hosts to pair (they find each other on the first A-Link and make the pair CA), enrolls the
   * pair's CA with the quorum servers (as an operator would, with the CA the pair's API hands out), then
   * waits for both hosts to agree on an epoch.
   */
  private async ensurePaired(state: LabState): Promise<void> {
    const live = HOSTS.filter((h) => !state.faults.hosts[h].includes('power'));
    const deadline = Date.now() + PAIR_READY_MS;
    const waitFor = async (what: string, ok: (d: DaemonStatus) => boolean): Promise<void> => {
      for (;;) {
        const statuses = await Promise.all(live.map((h) => this.daemonStatus(h)));
        if (statuses.every((d) => d !== null && ok(d))) return;
        if (Date.now() > deadline) {
          const seen = statuses.map((d, i) => `${live[i]}: ${d === null ? 'no answer' : `${d.pairing.state}${d.pairing.lastError ? ` (${d.pairing.lastError})` : ''}, core ${d.core?.state ?? '-'}`}`);
          throw new LockstepError('DAEMON_ERROR', `the hosts did not ${what} within ${PAIR_READY_MS} ms: ${seen.join('; ')}`, {});
        }
        await sleep(200);
      }
    };
    await waitFor('pair', (d) => d.pairing.state === 'paired');
    const caHost = live[0];
    if (caHost === undefined) return;
    const { pem } = await daemonRequest<{ pem: string }>(this.paths.hostApiSocket(caHost), 'GET', '/v1/pair/ca', undefined, 5000);
    for (const q of QUORUM_SERVERS) await enrollLabPair(this.paths.dir, q, labPairId(this.paths.name), pem, state.quorumPids[q]);
    if (live.length === HOSTS.length) await waitFor('agree on an epoch', (d) => d.core?.state === 'paired');
    this.log(`pair formed: ${live.join(' and ')}`);
  }

  private async mountHost(host: HostName): Promise<void> {
    await ensureSharedMount(path.dirname(this.paths.hostDir(host)));
    const image = this.paths.hostImage(host);
    if (!(await exists(image))) await createHostDisk(image, HOST_DISK_MIB);
    await mountHostDisk(image, this.paths.hostDir(host));
  }

  private async startDaemon(host: HostName): Promise<void> {
    const logFile = this.paths.hostLog(host);
    await mkdir(path.dirname(logFile), { recursive: true });
    const log = await open(logFile, 'a');
    try {
      const bin = path.join(repoRoot(), 'bin', 'lockstepd.js');
      const [cmd, args] = inNetns(this.names.ns(host), process.execPath, [bin, '--config', this.paths.hostConfig(host)]);
      const child = spawn(cmd, args, {
        detached: true,
        stdio: ['ignore', log.fd, log.fd],
      });
      child.unref();
    } finally {
      await log.close();
    }
    const deadline = Date.now() + DAEMON_READY_MS;
    while (Date.now() < deadline) {
      if (await this.daemonStatus(host)) return;
      await sleep(100);
    }
    const tail = (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-15).join('\n');
    throw new LockstepError('DAEMON_UNREACHABLE', `lockstepd on ${host} did not come up within ${DAEMON_READY_MS} ms; its log ends:\n${tail}`, { host });
  }

  private async daemonStatus(host: HostName): Promise<DaemonStatus | null> {
    try {
      return await daemonRequest<DaemonStatus>(this.paths.hostApiSocket(host), 'GET', '/v1/status', undefined, 3000);
    } catch {
      return null;
    }
  }

  /** Whether the host's first administrator is still to be made, asked over its socket; null: no answer. */
  private async setupNeeded(host: HostName): Promise<boolean | null> {
    try {
      return (await daemonRequest<{ needed: boolean }>(this.paths.hostApiSocket(host), 'GET', '/v1/setup', undefined, 3000)).needed;
    } catch {
      return null;
    }
  }

  private async stopDaemonGracefully(host: HostName): Promise<void> {
    const d = await this.daemonStatus(host);
    if (!d) return;
    try {
      process.kill(d.pid, 'SIGTERM');
    } catch {
      return;
    }
    if (!(await waitGone(d.pid, DAEMON_STOP_MS))) this.log(`${host}: lockstepd did not stop within ${DAEMON_STOP_MS} ms; killing`);
  }

  private async ensureVm(state: LabState, name: string, protection: ProtectionLevel, memoryMiB: number): Promise<void> {
    let vm = state.vms.find((v) => v.name === name);
    if (!vm) {
      const used = new Set(state.vms.map((v) => v.index));
      let index = 0;
      while (used.has(index)) index++;
      vm = { name, host: 'host1', protection, index, address: guestAddress(index), mac: guestMac(index) };
      const image = await ensureGuestImage({ log: this.log });
      const def: VmDefinition = {
        name,
        vcpus: 1,
        memoryMiB,
        guest: { kernel: image.kernel, initrd: image.initrd, cmdline: guestKernelCmdline({ ip: `${vm.address}/${NETMASK_BITS}`, hostname: name }) },
        disks: [{ sizeMiB: 64, ...DEFAULT_DISK_PLACE }],
        nics: [{ mac: vm.mac, address: vm.address }],
        protection,
        desired: 'running',
      };
      if (state.faults.hosts[vm.host].includes('power')) throw new LockstepError('HOST_DOWN', `${vm.host} is powered off`, { host: vm.host });
      await daemonRequest(this.paths.hostApiSocket(vm.host), 'POST', '/v1/vms', def, 60_000);
      state.vms.push(vm);
      await saveLabState(this.paths, state);
      this.log(`VM ${name} defined on ${vm.host} (${vm.address}), booting`);
    }
    await this.waitForGuest(vm);
  }

  /** Waits until the guest's record service answers from the client namespace. */
  private async waitForGuest(vm: LabVm): Promise<void> {
    const deadline = Date.now() + GUEST_READY_MS;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const reply = await this.record('last', vm.name, 2000);
        if (reply.startsWith('last ')) return;
      } catch (e) {
        last = e;
      }
      await sleep(500);
    }
    throw new LockstepError('RECORD_SERVICE', `VM '${vm.name}' did not answer on ${vm.address}:${RECORD_SERVICE_PORT} within ${GUEST_READY_MS} ms`, {
      vm: vm.name,
      cause: String(last),
    });
  }
}

/** The part of lockstepd's `GET /v1/status` the lab reads. */
interface DaemonStatus {
  pid: number;
  pairing: { state: 'pairing' | 'paired'; lastError: string | null };
  core: { state: string; epoch: number; authority: string; health: number } | null;
  vms: VmStatus[];
}

function pickVm(state: LabState, name?: string): LabVm {
  if (name !== undefined) {
    const vm = state.vms.find((v) => v.name === name);
    if (!vm) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}' in the lab (VMs: ${state.vms.map((v) => v.name).join(', ') || 'none'})`, { vm: name });
    return vm;
  }
  if (state.vms.length === 1) return state.vms[0]!;
  const demo = state.vms.find((v) => v.name === 'demo');
  if (demo) return demo;
  throw new LockstepError('UNKNOWN_VM', state.vms.length === 0 ? 'the lab has no VM: `lockstep lab up --vm demo`' : 'several VMs: name one with --vm', {});
}

function resolveProtection(p: ProtectionLevel | 'strongest', log: (line: string) => void): ProtectionLevel {
  if (p === 'strongest') {
    const cpus = os.availableParallelism();
    if (cpus >= FT_DEMO_CPUS_MIN) return 'ft';
    log(`protection: HA, the strongest that keeps up here: FT needs ${FT_DEMO_CPUS_MIN} CPUs beside two TCG guests and this machine has ${cpus} (\`--protection ft\` runs it anyway)`);
    return 'ha';
  }
  if (!AVAILABLE_PROTECTION.includes(p)) {
    throw new LockstepError('INVALID_ARGUMENT', `protection '${p}' is not available in this build yet (available: ${AVAILABLE_PROTECTION.join(', ')})`, {
      protection: p,
    });
  }
  return p;
}

function validateVmName(name: string): void {
  if (!/^[a-z][a-z0-9-]{0,30}$/.test(name)) {
    throw new LockstepError('INVALID_ARGUMENT', `VM name '${name}' must start with a letter and use a–z, 0–9 and '-', 31 characters at most`, { vm: name });
  }
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new LockstepError('PERMISSION_DENIED', 'the lab needs root: it creates network namespaces and mounts each host disk (try sudo)');
  }
}
