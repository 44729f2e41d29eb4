/** `lockstepd`'s configuration file: which host it is, where its data lives, how it reaches its VMs' network. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';

export interface DaemonConfig {
  /** The host's name in the pair (`host1`, `host2`, or any name an operator gives). */
  host: string;
  /** The host's own data directory: VM disks, state, run files, logs. Never another host's. */
  dataDir: string;
  /** The API's unix socket; the management network API arrives with the console. */
  apiSocket: string;
  /** The bridge on this host that the guests' taps join (the business network). */
  businessBridge: string;
  /** `auto` proves KVM works before using it, else TCG. */
  accel: 'auto' | 'kvm' | 'tcg';
}

export async function loadDaemonConfig(file: string): Promise<DaemonConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new LockstepError('INVALID_SPEC', `cannot read config ${file}: ${(e as Error).message}`, { file }, { cause: e });
  }
  return parseDaemonConfig(raw, file);
}

export function parseDaemonConfig(raw: unknown, source = 'config'): DaemonConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new LockstepError('INVALID_SPEC', `${source}: expected a JSON object`, { source });
  }
  const o = raw as Record<string, unknown>;
  const str = (key: string, fallback?: string): string => {
    const v = o[key] ?? fallback;
    if (typeof v !== 'string' || v === '') throw new LockstepError('INVALID_SPEC', `${source}: '${key}' must be a non-empty string`, { source, key });
    return v;
  };
  const host = str('host');
  if (!/^[a-z][a-z0-9-]{0,30}$/.test(host)) {
    throw new LockstepError('INVALID_SPEC', `${source}: 'host' must match [a-z][a-z0-9-]{0,30}`, { source, host });
  }
  const dataDir = str('dataDir');
  if (!path.isAbsolute(dataDir)) throw new LockstepError('INVALID_SPEC', `${source}: 'dataDir' must be an absolute path`, { source, dataDir });
  const accel = str('accel', 'auto');
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') {
    throw new LockstepError('INVALID_SPEC', `${source}: 'accel' must be auto, kvm or tcg`, { source, accel });
  }
  return {
    host,
    dataDir,
    apiSocket: str('apiSocket', path.join(dataDir, 'run', 'lockstepd.sock')),
    businessBridge: str('businessBridge', 'br-biz'),
    accel,
  };
}
