/**
 * The lab's quorum servers: `lockstep-quorum` initialized in the lab's own directory for each server (its
 * state is the server's disk, apart from both hosts'), served inside the server's namespace on the
 * management network, and told about the lab's pair once the pair has its CA.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { inNetns, run } from '../util/exec.js';
import { isAlive, readCmdline, signalProcess, sleep } from '../util/proc.js';
import { repoRoot } from '../util/paths.js';
import { exists } from '../storage/disk-image.js';
import { loadServerIdentity } from '../quorum/state.js';
import { QUORUM_PORT, addressesOf, type QuorumName } from './topology.js';

const SERVE_READY_MS = 10_000;

function quorumBin(): string {
  return path.join(repoRoot(), 'bin', 'lockstep-quorum.js');
}

export function quorumStateDir(labDir: string, q: QuorumName): string {
  return path.join(labDir, 'quorum', q);
}

/** `lockstep-quorum init` once: the server's CA and certificate for its management address. */
export async function ensureQuorumInitialized(labDir: string, q: QuorumName): Promise<string> {
  const dir = quorumStateDir(labDir, q);
  if (!(await exists(path.join(dir, 'server.json')))) {
    await mkdir(dir, { recursive: true });
    await run(process.execPath, [quorumBin(), 'init', '--state', dir, '--name', q, '--ip', addressesOf(q).mgmt]);
  }
  return (await loadServerIdentity(dir)).ca;
}

/** Whether `pid` is this server's `lockstep-quorum serve` (a recycled pid is not). */
export async function isQuorumServing(labDir: string, pid: number | undefined): Promise<boolean> {
  if (pid === undefined || !(await isAlive(pid))) return false;
  const argv = await readCmdline(pid);
  return argv !== null && argv.some((a) => a.endsWith('lockstep-quorum.js')) && argv.includes('serve') && argv.some((a) => a.startsWith(labDir));
}

/** Starts `lockstep-quorum serve` in the server's namespace; returns its pid once it listens. */
export async function startQuorumServer(labDir: string, q: QuorumName, netns: string): Promise<number> {
  const dir = quorumStateDir(labDir, q);
  const logFile = path.join(dir, 'serve.log');
  const log = await open(logFile, 'a');
  let pid: number;
  try {
    const [cmd, args] = inNetns(netns, process.execPath, [quorumBin(), 'serve', '--state', dir, '--listen', `${addressesOf(q).mgmt}:${QUORUM_PORT}`]);
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
    child.unref();
    pid = child.pid!;
  } finally {
    await log.close();
  }
  const deadline = Date.now() + SERVE_READY_MS;
  while (Date.now() < deadline) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    if (text.includes(`pid ${pid})`)) return pid;
    if (!(await isAlive(pid))) break;
    await sleep(100);
  }
  const tail = (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-10).join('\n');
  throw new LockstepError('COMMAND_FAILED', `lockstep-quorum on ${q} did not start listening; its log ends:\n${tail}`, { server: q });
}

/** Enrolls the pair's CA with the server and has a running server pick it up now rather than at its next reload. */
export async function enrollLabPair(labDir: string, q: QuorumName, pairId: string, caPem: string, servingPid: number | undefined): Promise<void> {
  const dir = quorumStateDir(labDir, q);
  const caFile = path.join(dir, `incoming-${pairId}.crt`);
  await mkdir(dir, { recursive: true });
  await writeFile(caFile, caPem);
  await run(process.execPath, [quorumBin(), 'enroll', '--state', dir, '--pair', pairId, '--ca', caFile]);
  if (servingPid !== undefined) signalProcess(servingPid, 'SIGHUP');
}
