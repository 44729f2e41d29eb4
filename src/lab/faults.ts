/**
 * The lab's fault catalogue, and what each fault does to the links, as a pure function of the set of
 * active faults. Applying that function after every `fail` and `heal` makes faults compose and heal
 * independently: healing a host's management link never brings up a link that its power loss holds down.
 */
import { LockstepError } from '../util/errors.js';
import { ALINKS, HOSTS, IF, QUORUM_SERVERS, isHostName, isQuorumName, type HostName, type NodeName, type QuorumName } from './topology.js';

export const HOST_FAULTS = ['power', 'alink1', 'alink2', 'mgmt', 'business', 'disk'] as const;
export const QUORUM_FAULTS = ['power', 'mgmt'] as const;
export type HostFault = (typeof HOST_FAULTS)[number];
export type QuorumFault = (typeof QUORUM_FAULTS)[number];

/** What one sentence of `lockstep lab fail TARGET FAULT` means. `alink` names both A-Links. */
export type FaultRequest =
  | { target: HostName; kind: 'host'; faults: HostFault[] }
  | { target: QuorumName; kind: 'quorum'; faults: QuorumFault[] };

export interface FaultSet {
  hosts: Record<HostName, HostFault[]>;
  quorumServers: Record<QuorumName, QuorumFault[]>;
}

export function noFaults(): FaultSet {
  return { hosts: { host1: [], host2: [] }, quorumServers: { quorum1: [], quorum2: [] } };
}

export function parseFaultRequest(target: string, fault: string): FaultRequest {
  if (isHostName(target)) {
    if (fault === 'alink') return { target, kind: 'host', faults: ['alink1', 'alink2'] };
    if ((HOST_FAULTS as readonly string[]).includes(fault)) return { target, kind: 'host', faults: [fault as HostFault] };
    throw new LockstepError('UNKNOWN_FAULT', `unknown fault '${fault}' for ${target}: expected one of alink, ${HOST_FAULTS.join(', ')}`, {
      target,
      fault,
    });
  }
  if (isQuorumName(target)) {
    if ((QUORUM_FAULTS as readonly string[]).includes(fault)) return { target, kind: 'quorum', faults: [fault as QuorumFault] };
    throw new LockstepError('UNKNOWN_FAULT', `unknown fault '${fault}' for ${target}: expected one of ${QUORUM_FAULTS.join(', ')}`, {
      target,
      fault,
    });
  }
  throw new LockstepError('UNKNOWN_HOST', `unknown fault target '${target}': expected one of ${[...HOSTS, ...QUORUM_SERVERS].join(', ')}`, {
    target,
  });
}

export function withFault(set: FaultSet, req: FaultRequest): FaultSet {
  const next = cloneFaults(set);
  if (req.kind === 'host') next.hosts[req.target] = union(next.hosts[req.target], req.faults);
  else next.quorumServers[req.target] = union(next.quorumServers[req.target], req.faults);
  return next;
}

/** Heals every fault of a target, or every fault in the lab when no target is named. */
export function healed(set: FaultSet, target?: string): FaultSet {
  if (target === undefined) return noFaults();
  const next = cloneFaults(set);
  if (isHostName(target)) next.hosts[target] = [];
  else if (isQuorumName(target)) next.quorumServers[target] = [];
  else throw new LockstepError('UNKNOWN_HOST', `unknown heal target '${target}': expected one of ${[...HOSTS, ...QUORUM_SERVERS].join(', ')}`, { target });
  return next;
}

/** One interface the lab raises or lowers: `node` is the namespace it lives in. */
export interface LinkState {
  node: NodeName | 'fabric';
  ifname: string;
  up: boolean;
}

/**
 * Every link the lab controls and whether the active faults let it be up. A cut A-Link lowers the fabric's
 * ports at both ends, as a cut cable would: both hosts see the carrier go.
 */
export function linkStates(set: FaultSet): LinkState[] {
  const states: LinkState[] = [];
  for (const host of HOSTS) {
    const f = set.hosts[host];
    const powered = !f.includes('power');
    for (const ifname of [IF.mgmt, IF.businessUplink, ...ALINKS.map(IF.alink)]) states.push({ node: host, ifname, up: powered });
    states.push({ node: 'fabric', ifname: IF.fabricMgmt(host), up: !f.includes('mgmt') });
    states.push({ node: 'fabric', ifname: IF.fabricBusiness(host), up: !f.includes('business') });
  }
  for (const alink of ALINKS) {
    const cut = HOSTS.some((h) => set.hosts[h].includes(alink));
    for (const host of HOSTS) states.push({ node: 'fabric', ifname: IF.fabricAlink(alink, host), up: !cut });
  }
  for (const q of QUORUM_SERVERS) {
    const f = set.quorumServers[q];
    states.push({ node: q, ifname: IF.mgmt, up: !f.includes('power') });
    states.push({ node: 'fabric', ifname: IF.fabricMgmt(q), up: !f.includes('mgmt') });
  }
  return states;
}

export function describeFaults(set: FaultSet): string[] {
  const lines: string[] = [];
  for (const h of HOSTS) for (const f of set.hosts[h]) lines.push(`${h} ${f}`);
  for (const q of QUORUM_SERVERS) for (const f of set.quorumServers[q]) lines.push(`${q} ${f}`);
  return lines;
}

function union<T>(a: readonly T[], b: readonly T[]): T[] {
  return [...a, ...b.filter((x) => !a.includes(x))];
}

function cloneFaults(set: FaultSet): FaultSet {
  return {
    hosts: { host1: [...set.hosts.host1], host2: [...set.hosts.host2] },
    quorumServers: { quorum1: [...set.quorumServers.quorum1], quorum2: [...set.quorumServers.quorum2] },
  };
}
