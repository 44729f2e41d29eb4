/**
 * The per-VM run directory: where a QEMU's sockets and records live while it runs, and what a later
 * lockstepd reads to find QEMUs an earlier one left behind.
 *
 *   qmp.sock       QMP server socket (QEMU listens, the supervisor connects)
 *   serial.log     the guest's serial console
 *   qemu.pid       written by QEMU itself (`-pidfile`), removed when it exits cleanly
 *   instance.json  written by the supervisor right after spawning (pid, argv): covers the moment before
 *                  QEMU writes its pid file; removed when the supervisor has seen the process exit
 *   stderr.log     the last bytes QEMU wrote to stderr, written when it exits (kept for post-mortems)
 */
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { readCmdline } from '../util/proc.js';

export interface RunPaths {
  dir: string;
  qmpSocket: string;
  serialLog: string;
  heartbeatSocket: string;
  pidFile: string;
  instanceRecord: string;
  stderrLog: string;
}

export function runPaths(runDir: string): RunPaths {
  // Absolute, because the pid file path is matched against QEMU's argv by a later process.
  const dir = path.resolve(runDir);
  return {
    dir,
    qmpSocket: path.join(dir, 'qmp.sock'),
    serialLog: path.join(dir, 'serial.log'),
    heartbeatSocket: path.join(dir, 'heartbeat.sock'),
    pidFile: path.join(dir, 'qemu.pid'),
    instanceRecord: path.join(dir, 'instance.json'),
    stderrLog: path.join(dir, 'stderr.log'),
  };
}

export interface InstanceRecord {
  name: string;
  pid: number;
  qemu: string;
  argv: string[];
  netns: string | null;
  startedAt: string;
}

/** The pids recorded in a run directory (QEMU's pid file and the supervisor's record), deduplicated. */
export async function recordedPids(paths: RunPaths): Promise<number[]> {
  const pids = new Set<number>();
  const fromPidFile = parsePid(await readFile(paths.pidFile, 'utf8').catch(() => ''));
  if (fromPidFile !== undefined) pids.add(fromPidFile);
  try {
    const rec: unknown = JSON.parse(await readFile(paths.instanceRecord, 'utf8'));
    const pid = typeof rec === 'object' && rec !== null ? (rec as { pid?: unknown }).pid : undefined;
    if (typeof pid === 'number' && Number.isInteger(pid) && pid > 1) pids.add(pid);
  } catch {
    /* no record, or a torn one: the pid file may still name the process */
  }
  return [...pids];
}

/**
 * Whether `pid` runs the QEMU of this run directory now. A pid is recycled after its process dies, so the
 * pid alone proves nothing: the command line must be a QEMU whose `-pidfile` is this directory's.
 */
export async function isQemuOf(pid: number, paths: RunPaths): Promise<boolean> {
  const argv = await readCmdline(pid);
  if (!argv || argv.length === 0) return false;
  if (path.basename(argv[0]!) !== 'qemu-system-x86_64') return false;
  const at = argv.indexOf('-pidfile');
  return at >= 0 && argv[at + 1] === paths.pidFile;
}

function parsePid(text: string): number | undefined {
  const n = Number(text.trim());
  return Number.isInteger(n) && n > 1 ? n : undefined;
}
