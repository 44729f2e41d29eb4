/**
 * The lab's topology as data: which namespaces exist, which links join them and which addresses they carry.
 * Pure: `netns.ts` and `lab.ts` turn it into real namespaces, veths and bridges.
 *
 *   host1 ──alink1──┐        ┌──alink1── host2      A-Links: direct cables, each through the fabric so the
 *   host1 ──alink2──┤ fabric ├──alink2── host2      lab can cut or delay it (user-space wire, no netem here)
 *   host1/2, quorum1/2, client ── mgmt bridge       management network: API, console, quorum servers
 *   host1/2 br-biz (guest taps), client ── business bridge   business network: the guests' own traffic
 */

export const HOSTS = ['host1', 'host2'] as const;
export const QUORUM_SERVERS = ['quorum1', 'quorum2'] as const;
export const ALINKS = ['alink1', 'alink2'] as const;

export type HostName = (typeof HOSTS)[number];
export type QuorumName = (typeof QUORUM_SERVERS)[number];
export type AlinkName = (typeof ALINKS)[number];
export type NodeName = HostName | QuorumName | 'client';

export const MGMT_PREFIX = '10.10.0';
export const BUSINESS_PREFIX = '10.10.3';
export const NETMASK_BITS = 24;

/** The business network's first address for guests; VMs get consecutive addresses from here. */
export const GUEST_ADDRESS_FIRST = 50;
export const GUEST_ADDRESS_LAST = 99;
export const RECORD_SERVICE_PORT = 7070;

/** The port each lab quorum server listens on, on its management address. */
export const QUORUM_PORT = 7790;
/** The port of each host's management API (HTTPS), on its management address: lockstepd's default. */
export const MANAGEMENT_PORT = 7443;

/** Where a host's management API answers: the console's and the API's root (`/api/v1`, `/api/openapi.json`). */
export function managementUrl(host: HostName): string {
  return `https://${addressesOf(host).mgmt}:${MANAGEMENT_PORT}`;
}

/** Each A-Link's listener port (on host2, the larger id), one per cable. */
export const ALINK_PORTS: Readonly<Record<AlinkName, number>> = { alink1: 7788, alink2: 7789 };

/** The broadcast address of an A-Link's subnet: pairing discovery beacons go there. */
export function alinkBroadcast(a: AlinkName): string {
  return `10.10.${a === 'alink1' ? 1 : 2}.255`;
}

/** The bridge inside each host namespace that holds its guests' taps and its business uplink. */
export const HOST_BUSINESS_BRIDGE = 'br-biz';

export interface Addresses {
  mgmt: string;
  alink1?: string;
  alink2?: string;
  business?: string;
}

export function hostIndex(host: HostName): 1 | 2 {
  return host === 'host1' ? 1 : 2;
}

export function peerOf(host: HostName): HostName {
  return host === 'host1' ? 'host2' : 'host1';
}

export function addressesOf(node: NodeName): Addresses {
  switch (node) {
    case 'host1':
    case 'host2': {
      const i = hostIndex(node);
      return {
        mgmt: `${MGMT_PREFIX}.1${i}`,
        alink1: `10.10.1.${i}`,
        alink2: `10.10.2.${i}`,
        business: `${BUSINESS_PREFIX}.1${i}`,
      };
    }
    case 'quorum1':
      return { mgmt: `${MGMT_PREFIX}.21` };
    case 'quorum2':
      return { mgmt: `${MGMT_PREFIX}.22` };
    case 'client':
      return { mgmt: `${MGMT_PREFIX}.100`, business: `${BUSINESS_PREFIX}.100` };
  }
}

/** Interface names, the same in every lab (interfaces live inside the lab's own namespaces). */
export const IF = {
  mgmt: 'mgmt0',
  businessUplink: 'biz0',
  alink: (a: AlinkName): string => a,
  /** The fabric's side of a node's management link. */
  fabricMgmt: (node: NodeName): string => `m-${node}`,
  /** The fabric's side of a node's business link. */
  fabricBusiness: (node: HostName | 'client'): string => `b-${node}`,
  /** The fabric's side of a host's end of an A-Link: `a1h1` is alink1 at host1. */
  fabricAlink: (a: AlinkName, host: HostName): string => `a${a.slice(-1)}h${hostIndex(host)}`,
  mgmtBridge: 'mgmt',
  businessBridge: 'business',
  alinkBridge: (a: AlinkName): string => `${a}`,
} as const;

/** Names of one lab's network namespaces; a prefix keeps a test's lab apart from the demo's. */
export interface LabNames {
  prefix: string;
  ns: (node: NodeName | 'fabric') => string;
}

export function labNames(prefix: string): LabNames {
  return { prefix, ns: (node) => `${prefix}${node}` };
}

export function isHostName(s: string): s is HostName {
  return (HOSTS as readonly string[]).includes(s);
}

export function isQuorumName(s: string): s is QuorumName {
  return (QUORUM_SERVERS as readonly string[]).includes(s);
}

export function guestAddress(index: number): string {
  return `${BUSINESS_PREFIX}.${GUEST_ADDRESS_FIRST + index}`;
}

/** A locally administered unicast MAC per guest index (QEMU's 52:54:00 prefix, then "LS", then the index). */
export function guestMac(index: number): string {
  return `52:54:00:4c:53:${(GUEST_ADDRESS_FIRST + index).toString(16).padStart(2, '0')}`;
}
