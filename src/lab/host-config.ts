/**
 * The lockstepd configuration the lab writes for each host: what an operator would type into each server's
 * config when installing a pair, the management API included. Pure; the same pair settings on both hosts,
 * each naming itself.
 */
import type { DaemonConfig } from '../daemon/config.js';
import { ALINKS, ALINK_PORTS, HOST_BUSINESS_BRIDGE, IF, MANAGEMENT_PORT, QUORUM_PORT, QUORUM_SERVERS, addressesOf, alinkBroadcast, peerOf, type HostName, type QuorumName } from './topology.js';

/** The lab's pair is called after the lab, so two labs on one machine never share a quorum record. */
export function labPairId(labName: string): string {
  return `lab-${labName}`.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 63);
}

export interface HostConfigInput {
  host: HostName;
  labName: string;
  dataDir: string;
  apiSocket: string;
  accel: DaemonConfig['accel'];
  pairSecret: string;
  /** Each quorum server's CA certificate, as a file in this host's own data directory. */
  quorumCaFile: (q: QuorumName) => string;
  /** Quorum servers the pair uses, preferred first (the lab has two; tests may use fewer). */
  quorumServers: readonly QuorumName[];
}

/**
 * Where a lab host keeps FT VMs' RAM files and checkpoint stores: tmpfs, as on a server (a store's image
 * becomes a resumed guest's RAM). Named after the lab, so two labs never share one; `lab down` removes it.
 */
export function labFtMemoryDir(labName: string, host: HostName): string {
  return `/dev/shm/lockstep-${labPairId(labName)}-${host}`;
}

/** The lab's FT epochs: on 2 shared cores with two TCG guests a checkpoint cycle takes 60–200 ms (docs/ft.md). */
export const LAB_FT_EPOCH_MS = 200;

/** The lab's SplitSite limits (see `labHostConfig`). */
export const LAB_RTT_LIMIT_MS = { ft: 50, ha: 100 } as const;

/** The JSON written to the host's `lockstepd.json` (parsed by `parseDaemonConfig` in the daemon). */
export function labHostConfig(i: HostConfigInput): Record<string, unknown> {
  const peer = peerOf(i.host);
  return {
    host: i.host,
    dataDir: i.dataDir,
    apiSocket: i.apiSocket,
    businessBridge: HOST_BUSINESS_BRIDGE,
    businessInterface: IF.businessUplink,
    mgmtInterface: IF.mgmt,
    accel: i.accel,
    pair: { id: labPairId(i.labName), peer, secret: i.pairSecret },
    alink: ALINKS.map((a) => ({ name: a, local: addressesOf(i.host)[a], peer: addressesOf(peer)[a], port: ALINK_PORTS[a], broadcast: alinkBroadcast(a) })),
    quorum: i.quorumServers.filter((q) => (QUORUM_SERVERS as readonly string[]).includes(q)).map((q) => ({ id: q, address: addressesOf(q).mgmt, port: QUORUM_PORT, ca: i.quorumCaFile(q) })),
    // SplitSite's limits, raised for the lab: its "A-Link" round trip is measured through two Node event
    // loops sharing a loaded 2-core machine with TCG guests, where scheduling delay (10–40 ms seen) and not
    // distance sets it; with everRun's 2 ms FT would never run here. `lab latency alink MS` above these
    // still shows SplitSite at work (docs/lab.md).
    splitsite: { ftRttLimitMs: LAB_RTT_LIMIT_MS.ft, haRttLimitMs: LAB_RTT_LIMIT_MS.ha },
    ft: { epochMs: LAB_FT_EPOCH_MS, memoryDir: labFtMemoryDir(i.labName, i.host) },
    // The console's API on the management network, as an installer would turn it on: no certificate given,
    // so lockstepd makes a self-signed one at its first start; no user until the first-run setup.
    managementApi: { address: addressesOf(i.host).mgmt, port: MANAGEMENT_PORT },
  };
}
