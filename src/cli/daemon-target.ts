/**
 * Which lockstepd a `lockstep vm` command talks to: the API socket given, a lab host's, or — in the lab, with
 * no host named — the first host whose daemon answers. Either host answers for the pair (its VM records are
 * replicated: a single-system image), so any will do for what they share; what is one host's own (its QEMU,
 * the source of a migration) is asked of that host, which in the lab the CLI can reach too.
 */
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import { labPaths, loadLabState, type LabPaths } from '../lab/lab-state.js';
import { HOSTS, isHostName, peerOf, type HostName } from '../lab/topology.js';

const PROBE_MS = 3000;

export interface Daemon {
  host: string;
  /** The host it is paired with (null while it is not paired yet). */
  peer: string | null;
  socket: string;
}

export interface LabDaemon extends Daemon {
  host: HostName;
}

export type Target =
  /** `--socket`: that daemon and nothing else; everything about the VM must be given. */
  | { kind: 'socket'; daemon: Daemon }
  /** A lab host's daemon; `anyHost` when none was named (the lab's hosts may then all be asked). */
  | { kind: 'lab'; daemon: LabDaemon; lab: LabPaths; pair: LabDaemon[]; anyHost: boolean };

export interface Where {
  socket?: string;
  host?: string;
}

/** The `--socket`/`--host` options: at most one, and a host must be one of the lab's. */
export function checkWhere(where: Where): void {
  if (where.socket !== undefined && where.host !== undefined) throw new LockstepError('INVALID_ARGUMENT', '--socket and --host exclude each other: give one');
  if (where.host !== undefined && !isHostName(where.host)) {
    throw new LockstepError('UNKNOWN_HOST', `no lab host named '${where.host}' (hosts: ${HOSTS.join(', ')})`, { host: where.host });
  }
}

export async function resolveTarget(where: Where, env: NodeJS.ProcessEnv = process.env): Promise<Target> {
  checkWhere(where);
  if (where.socket !== undefined) {
    // The host's name and its peer come from the daemon itself: nothing else knows which host a socket is.
    const s = await daemonRequest<{ host: string; core: { peer: string } | null }>(where.socket, 'GET', '/v1/status', undefined, PROBE_MS);
    return { kind: 'socket', daemon: { host: s.host, peer: s.core?.peer ?? null, socket: where.socket } };
  }
  const lab = labPaths(env);
  if (!(await labIsUp(lab))) {
    if (where.host !== undefined) throw new LockstepError('LAB_NOT_UP', `the lab '${lab.name}' is not up: run \`lockstep lab up\``, { lab: lab.name });
    throw new LockstepError(
      'INVALID_ARGUMENT',
      `no lab is up here (lab '${lab.name}' in ${lab.dir}): give the daemon's API socket with --socket PATH (lockstepd's apiSocket, by default <dataDir>/run/lockstepd.sock)`,
    );
  }
  const pair: LabDaemon[] = HOSTS.map((h) => ({ host: h, peer: peerOf(h), socket: lab.hostApiSocket(h) }));
  if (where.host !== undefined) return { kind: 'lab', daemon: pair.find((d) => d.host === where.host)!, lab, pair, anyHost: false };
  const failures: string[] = [];
  for (const d of pair) {
    try {
      await daemonRequest(d.socket, 'GET', '/v1/status', undefined, PROBE_MS);
      return { kind: 'lab', daemon: d, lab, pair, anyHost: true };
    } catch (e) {
      failures.push(`${d.host}: ${(e as Error).message}`);
    }
  }
  throw new LockstepError('DAEMON_UNREACHABLE', `no lockstepd of lab '${lab.name}' answers (${failures.join('; ')})`, { lab: lab.name });
}

/** The lab is up when its notebook exists; its daemons may still be down, which their requests then say. */
async function labIsUp(lab: LabPaths): Promise<boolean> {
  try {
    return (await loadLabState(lab)) !== null;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EACCES') {
      throw new LockstepError('PERMISSION_DENIED', `cannot read the lab's notebook ${lab.stateFile}: the lab needs root (try sudo)`, { file: lab.stateFile });
    }
    throw e;
  }
}

/**
 * In the lab with no host named, what the other hosts answer to `GET path` too: each host sees only its own
 * QEMU and mirrors, while the pair's records came with the first answer. A host that does not answer has
 * nothing to add.
 */
export async function askOtherLabHosts<T>(target: Target, path: string): Promise<{ host: string; body: T }[]> {
  if (target.kind !== 'lab' || !target.anyHost) return [];
  const others = target.pair.filter((d) => d.host !== target.daemon.host);
  const answers = await Promise.all(
    others.map((d) =>
      daemonRequest<T>(d.socket, 'GET', path, undefined, PROBE_MS).then(
        (body) => ({ host: d.host, body }),
        () => null,
      ),
    ),
  );
  return answers.filter((a) => a !== null);
}
