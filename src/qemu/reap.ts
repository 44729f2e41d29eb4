/**
 * After a lockstepd crash, the QEMUs it started keep running with nobody supervising them. Before a new
 * lockstepd starts anything, `reapStale` kills every QEMU recorded under the run root whose command line
 * still matches its run directory — never a process that merely inherited a recycled pid.
 *
 * SIGKILL, not a graceful stop: while nobody supervised it, the peer may have taken the VM over; a second
 * running copy must end now, and a guest shutdown would only delay that.
 */
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { LockstepError } from '../util/errors.js';
import { silentLog, type DriverLog } from './log.js';
import { signalProcess, waitGone } from '../util/proc.js';
import { isQemuOf, recordedPids, runPaths } from './run-dir.js';

export interface ReapOptions {
  log?: DriverLog;
  /** Pids to leave alone (the caller's own live QEMUs). */
  exclude?: ReadonlySet<number>;
  /** Bound on waiting for each killed QEMU to die. */
  killWaitMs?: number;
}

/** More run directories than this under one root means the root is wrong, not that there are that many VMs. */
const MAX_RUN_DIRS = 10_000;

/** Kills stale QEMUs under `runRoot` and returns their pids. A missing run root means nothing to reap. */
export async function reapStale(runRoot: string, opts: ReapOptions = {}): Promise<number[]> {
  const log = opts.log ?? silentLog;
  const killWaitMs = opts.killWaitMs ?? 5_000;
  let entries: string[];
  try {
    entries = (await readdir(runRoot, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  if (entries.length > MAX_RUN_DIRS) {
    throw new LockstepError('INVALID_ARGUMENT', `${runRoot} has ${entries.length} directories: not a Lockstep run root?`, { runRoot });
  }
  const killed: number[] = [];
  for (const name of entries.sort()) {
    const paths = runPaths(path.join(runRoot, name));
    let stillAlive = false;
    for (const pid of await recordedPids(paths)) {
      if (opts.exclude?.has(pid)) {
        stillAlive = true;
        continue;
      }
      if (!(await isQemuOf(pid, paths))) {
        log.info('recorded pid is not this run directory\'s QEMU (exited, or pid reused): left alone', { runDir: paths.dir, pid });
        continue;
      }
      log.warn('killing a QEMU left by an earlier lockstepd', { runDir: paths.dir, pid });
      signalProcess(pid, 'SIGKILL');
      if (!(await waitGone(pid, killWaitMs))) {
        throw new LockstepError('VM_STOP_FAILED', `stale QEMU pid ${pid} (${paths.dir}) did not die within ${killWaitMs} ms of SIGKILL`, {
          pid,
          runDir: paths.dir,
        });
      }
      killed.push(pid);
    }
    if (!stillAlive) {
      // Its records now describe nothing: remove them so the next start and the next reap see a clean slate.
      await Promise.all([paths.pidFile, paths.instanceRecord, paths.qmpSocket].map((p) => rm(p, { force: true })));
    }
  }
  return killed;
}
