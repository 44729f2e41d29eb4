/**
 * This host's networks as the API shows them: each A-Link path, the management network and the business
 * network, with its interface's facts read from this namespace's sysfs (src/network/), the bandwidth in
 * use from the health loop's samples of its counters, its health component, and for an A-Link path the
 * round trip the A-Link measures.
 *
 * Which interface is each network's is configuration: `mgmtInterface`; `businessInterface`, the uplink
 * (the bridge the guests' taps join, `businessBridge`, is named beside it); an A-Link path names its
 * addresses only, so its interface is the one holding its local address.
 */
import type { ComponentState, HealthSnapshot } from '../core/types.js';
import type { AlinkPathStatus } from '../alink/alink.js';
import { run } from '../util/exec.js';
import { SingleFlight } from '../health/checks.js';
import { readLinkTable, readingOf } from '../network/link-reader.js';
import { addressListing, interfaceWithAddress, type AddressOwner } from '../network/interface-address.js';
import { linkStateOf, type InterfaceReading } from '../network/link-facts.js';
import { RateSampler, type RateReading } from '../network/rate-sampler.js';
import type { DaemonConfig } from './config.js';

export type NetworkName = 'alink1' | 'alink2' | 'mgmt' | 'business';
export type NetworkRole = 'alink' | 'management' | 'business';
export const NETWORK_STATES = ['up', 'down', 'missing', 'not-configured', 'unreadable'] as const;
export type NetworkState = (typeof NETWORK_STATES)[number];

export interface NetworkStatus {
  /** The network, named as its health component is. */
  name: NetworkName;
  role: NetworkRole;
  /** The host that answered: everything here is its own. */
  host: string;
  /** Its interface on this host; null: not configured, or (an A-Link) no interface holds its address. */
  interface: string | null;
  /** The business network: the bridge the guests' taps join, when it is not the interface itself. */
  bridge: string | null;
  state: NetworkState;
  /** Why, in a few words: "carrier (operstate up)", "no interface has the address 10.10.1.1". */
  detail: string;
  /** Its health component as last checked (null: no check yet, or no component of that name). */
  health: ComponentState | null;
  operstate: string | null;
  adminUp: boolean | null;
  carrier: boolean | null;
  /** Mb/s; null where the kernel does not know it. */
  speedMbps: number | null;
  mac: string | null;
  mtu: number | null;
  /** The interface's byte counters, since it was made. */
  rxBytes: number | null;
  txBytes: number | null;
  bandwidth: Bandwidth;
  /** An A-Link path: its addresses and the A-Link's own view of it (null before pairing: no A-Link yet). */
  alink: { localAddress: string; peerAddress: string; connected: boolean | null; rttMs: number | null; lastError: string | null } | null;
}

/** Bytes per second over the last two samples, or null with the reason. */
export interface Bandwidth {
  rxBytesPerSec: number | null;
  txBytesPerSec: number | null;
  /** The time between the two samples. */
  overMs: number | null;
  sampledAt: string | null;
  reason: string | null;
}

/** One network as configured. */
export interface NetworkSpec {
  name: NetworkName;
  role: NetworkRole;
  /** The interface named by the config; null for an A-Link (found by `address`) or an unconfigured network. */
  interface: string | null;
  bridge: string | null;
  alink: { localAddress: string; peerAddress: string } | null;
}

export type NetworkConfig = Pick<DaemonConfig, 'alink' | 'mgmtInterface' | 'businessInterface' | 'businessBridge'>;

/** The networks a config names, A-Link paths first. Pure. */
export function networksOf(config: NetworkConfig): NetworkSpec[] {
  return [
    ...config.alink.map((p): NetworkSpec => ({ name: p.name, role: 'alink', interface: null, bridge: null, alink: { localAddress: p.local, peerAddress: p.peer } })),
    { name: 'mgmt', role: 'management', interface: config.mgmtInterface, bridge: null, alink: null },
    { name: 'business', role: 'business', interface: config.businessInterface, bridge: config.businessBridge === config.businessInterface ? null : config.businessBridge, alink: null },
  ];
}

export interface HostNetworksOptions {
  host: string;
  config: NetworkConfig;
  /** The A-Link's per-path report; null before pairing. */
  alink: () => readonly AlinkPathStatus[] | null;
  health: () => HealthSnapshot | null;
  /** Starts `ip` to find the A-Link interfaces (lockstepd passes its exec thread's). */
  run?: typeof run;
  /** Monotonic ms (tests move it). */
  now?: () => number;
}

/** Bound on one `ip addr show`, and on one sampling round (a sysfs read that hangs in a driver). */
const IP_TIMEOUT_MS = 2000;
const SAMPLE_TIMEOUT_MS = 5000;
/** How long which interface holds an A-Link address is believed: addresses rarely move; a failure is asked again sooner. */
const ADDRESS_FOUND_TTL_MS = 30_000;
const ADDRESS_MISSING_TTL_MS = 5000;

const NOT_SAMPLING = 'not sampled yet: the health loop samples the counters once the host is paired';

/** Each network's interface, or why it has none: not configured, not found (`absent`), or not known (`unknown`). */
type Resolved = { spec: NetworkSpec; ifname: string | null; why: string | null; unknown: boolean };
type Read = Resolved & { reading: InterfaceReading | null };

export class HostNetworks {
  private readonly specs: NetworkSpec[];
  private readonly sampler = new RateSampler();
  private readonly sampling: SingleFlight<void>;
  private readonly owners = new Map<string, { owner: AddressOwner; atMs: number }>();
  private finding: Promise<void> | null = null;
  /** Whether anyone has sampled yet: lockstepd's health loop, which starts once the host is paired. */
  private sampled = false;
  private readonly now: () => number;

  constructor(private readonly opts: HostNetworksOptions) {
    this.specs = networksOf(opts.config);
    this.now = opts.now ?? performance.now.bind(performance);
    this.sampling = new SingleFlight(() => this.sampleNow(), SAMPLE_TIMEOUT_MS);
  }

  /**
   * One sample of every network's counters (the health loop calls it each round). Never two at once: a
   * round that finds the previous one still reading skips.
   */
  async sample(): Promise<void> {
    await this.sampling.run();
  }

  /** Every network, read now, with the bandwidth of the last samples. Never throws. */
  async list(): Promise<NetworkStatus[]> {
    const now = this.now();
    return (await this.readAll()).map((r) => this.statusOf(r, now));
  }

  private async sampleNow(): Promise<void> {
    this.sampled = true;
    for (const r of await this.readAll()) {
      if (r.ifname === null || r.reading === null) continue;
      if (r.reading.kind === 'present') {
        const f = r.reading.facts;
        this.sampler.observe(r.ifname, { ifindex: f.ifindex, rxBytes: f.rxBytes, txBytes: f.txBytes, atMs: this.now(), wallMs: Date.now() });
      } else if (r.reading.kind === 'missing') {
        this.sampler.forget(r.ifname);
      }
    }
  }

  private async readAll(): Promise<Read[]> {
    const resolved = await this.resolve();
    const table = await readLinkTable(this.opts.run ?? run, resolved.flatMap((r) => r.ifname ?? []));
    return Promise.all(
      resolved.map(async (r): Promise<Read> => {
        if (r.ifname === null) return { ...r, reading: null };
        const reading = readingOf(table, r.ifname);
        // An A-Link interface that went away: which one holds the address now is asked again next time.
        if (reading.kind === 'missing' && r.spec.alink) this.owners.delete(r.spec.alink.localAddress);
        return { ...r, reading };
      }),
    );
  }

  /** Each network's interface: the configured one, or for an A-Link the holder of its local address. */
  private async resolve(): Promise<Resolved[]> {
    const now = this.now();
    const stale = this.specs.some((s) => {
      if (!s.alink) return false;
      const c = this.owners.get(s.alink.localAddress);
      return c === undefined || now - c.atMs > (c.owner.kind === 'found' ? ADDRESS_FOUND_TTL_MS : ADDRESS_MISSING_TTL_MS);
    });
    if (stale) {
      this.finding ??= this.findOwners().finally(() => (this.finding = null));
      await this.finding;
    }
    return this.specs.map((spec): Resolved => {
      if (!spec.alink) return { spec, ifname: spec.interface, why: spec.interface === null ? 'not configured' : null, unknown: false };
      const owner: AddressOwner = this.owners.get(spec.alink.localAddress)?.owner ?? { kind: 'unknown', reason: 'not looked up yet' };
      return owner.kind === 'found' ? { spec, ifname: owner.ifname, why: null, unknown: false } : { spec, ifname: null, why: owner.reason, unknown: owner.kind === 'unknown' };
    });
  }

  private async findOwners(): Promise<void> {
    const listing = await addressListing(IP_TIMEOUT_MS, this.opts.run);
    const atMs = this.now();
    for (const s of this.specs) {
      if (!s.alink) continue;
      const a = s.alink.localAddress;
      this.owners.set(a, { owner: listing.ok ? interfaceWithAddress(listing.json, a) : { kind: 'unknown', reason: listing.reason }, atMs });
    }
  }

  private statusOf(r: Read, now: number): NetworkStatus {
    const { spec } = r;
    const path = spec.alink && this.opts.alink()?.find((p) => p.name === spec.name);
    const base: NetworkStatus = {
      name: spec.name,
      role: spec.role,
      host: this.opts.host,
      interface: r.ifname,
      bridge: spec.bridge,
      state: 'not-configured',
      detail: r.why ?? '',
      health: this.opts.health()?.[spec.name] ?? null,
      operstate: null,
      adminUp: null,
      carrier: null,
      speedMbps: null,
      mac: null,
      mtu: null,
      rxBytes: null,
      txBytes: null,
      bandwidth: bandwidthOf(r.ifname === null ? { kind: 'unknown', reason: 'no interface' } : this.sampled ? this.sampler.rate(r.ifname, now) : { kind: 'unknown', reason: NOT_SAMPLING }),
      alink: spec.alink && { ...spec.alink, connected: path ? path.up : null, rttMs: path ? path.srttMs : null, lastError: path ? path.lastError : null },
    };
    if (r.reading === null) return { ...base, state: !spec.alink ? 'not-configured' : r.unknown ? 'unreadable' : 'missing' };
    switch (r.reading.kind) {
      case 'missing':
        return { ...base, state: 'missing', detail: `interface ${r.ifname} does not exist` };
      case 'unreadable':
        return { ...base, state: 'unreadable', detail: r.reading.reason };
      case 'present': {
        const f = r.reading.facts;
        const link = linkStateOf(f);
        return {
          ...base,
          state: link.state,
          detail: link.detail,
          operstate: f.operstate,
          adminUp: f.adminUp,
          carrier: f.carrier,
          speedMbps: f.speedMbps,
          mac: f.mac,
          mtu: f.mtu,
          rxBytes: Number(f.rxBytes),
          txBytes: Number(f.txBytes),
        };
      }
    }
  }
}

function bandwidthOf(rate: RateReading): Bandwidth {
  if (rate.kind === 'unknown') return { rxBytesPerSec: null, txBytesPerSec: null, overMs: null, sampledAt: null, reason: rate.reason };
  return { rxBytesPerSec: rate.rxBytesPerSec, txBytesPerSec: rate.txBytesPerSec, overMs: rate.overMs, sampledAt: new Date(rate.wallMs).toISOString(), reason: null };
}
