/**
 * The lab bench's own notebook (`lab.json` in the lab's directory): which lab this is, which faults are
 * injected, the A-Link latency and its wires, and the VMs the lab created. It is the bench's record, not a
 * host's: hosts keep their own state in their own data directories.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeFileDurably } from '../util/durable-file.js';
import { noFaults, type FaultSet } from './faults.js';
import { randomBytes } from 'node:crypto';
import type { HostName, AlinkName, QuorumName } from './topology.js';
import type { ProtectionLevel } from '../daemon/vm-definition.js';

export interface LabVm {
  name: string;
  /** Where the lab created it; once the pair runs, the hosts decide where it runs. */
  host: HostName;
  protection: ProtectionLevel;
  index: number;
  address: string;
  mac: string;
}

export interface LabState {
  version: 1;
  name: string;
  prefix: string;
  createdAt: string;
  faults: FaultSet;
  alinkLatencyMs: number;
  /** Pids of the user-space wires that delay each A-Link while a latency is set. */
  wires: Partial<Record<AlinkName, number>>;
  vms: LabVm[];
  /** The pairing secret the lab "operator" gives both hosts' configs. */
  pairSecret: string;
  /** Pids of the running `lockstep-quorum serve` processes. */
  quorumPids: Partial<Record<QuorumName, number>>;
}

export interface LabPaths {
  name: string;
  prefix: string;
  dir: string;
  stateFile: string;
  hostImage: (host: HostName) => string;
  hostDir: (host: HostName) => string;
  hostConfig: (host: HostName) => string;
  hostApiSocket: (host: HostName) => string;
  hostLog: (host: HostName) => string;
}

/** `LOCKSTEP_LAB` names a lab (default `default`, whose namespaces have no prefix); `LOCKSTEP_LAB_DIR` moves it. */
export function labPaths(env: NodeJS.ProcessEnv = process.env): LabPaths {
  const name = env['LOCKSTEP_LAB'] ?? 'default';
  const prefix = name === 'default' ? '' : `${name}-`;
  const dir = env['LOCKSTEP_LAB_DIR'] ?? path.join('/var/lib/lockstep/lab', name);
  const hostDir = (h: HostName): string => path.join(dir, 'hosts', h);
  return {
    name,
    prefix,
    dir,
    stateFile: path.join(dir, 'lab.json'),
    hostImage: (h) => path.join(dir, `${h}.disk.img`),
    hostDir,
    hostConfig: (h) => path.join(hostDir(h), 'lockstepd.json'),
    hostApiSocket: (h) => path.join(hostDir(h), 'run', 'lockstepd.sock'),
    hostLog: (h) => path.join(hostDir(h), 'log', 'lockstepd.log'),
  };
}

export function newLabState(paths: LabPaths, now: Date): LabState {
  return {
    version: 1,
    name: paths.name,
    prefix: paths.prefix,
    createdAt: now.toISOString(),
    faults: noFaults(),
    alinkLatencyMs: 0,
    wires: {},
    vms: [],
    pairSecret: randomBytes(24).toString('base64url'),
    quorumPids: {},
  };
}

export async function loadLabState(paths: LabPaths): Promise<LabState | null> {
  try {
    return JSON.parse(await readFile(paths.stateFile, 'utf8')) as LabState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

export async function saveLabState(paths: LabPaths, state: LabState): Promise<void> {
  await writeFileDurably(paths.stateFile, JSON.stringify(state, null, 2) + '\n');
}

export async function removeLabDir(paths: LabPaths): Promise<void> {
  await rm(paths.dir, { recursive: true, force: true });
}
