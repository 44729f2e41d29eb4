/**
 * What the driver asks the kernel about processes and programs: where a program is, what a pid is running
 * now (pids are recycled, so a pid alone never justifies a kill), and waiting for a process to be gone.
 */
import { access, constants, readFile } from 'node:fs/promises';
import path from 'node:path';

/** The absolute path `name` resolves to through PATH (or `name` itself if it has a slash), if executable. */
export async function findProgram(name: string, searchPath: string = process.env['PATH'] ?? ''): Promise<string | undefined> {
  const candidates = name.includes('/') ? [name] : searchPath.split(':').filter((d) => d !== '').map((d) => path.join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return path.resolve(c);
    } catch {
      /* not here: try the next directory */
    }
  }
  return undefined;
}

/** The argv of process `pid`, or null if there is no such process (or it is a zombie, whose cmdline is empty). */
export async function readCmdline(pid: number): Promise<string[] | null> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`);
    if (raw.length === 0) return null;
    const parts = raw.toString('utf8').split('\0');
    if (parts[parts.length - 1] === '') parts.pop();
    return parts;
  } catch {
    return null;
  }
}

export type ProcState = 'alive' | 'zombie' | 'gone';

/** `alive` means present and not a zombie. A zombie has exited: only its parent's wait() is missing, and it holds no resources a VM needs. */
export async function processState(pid: number): Promise<ProcState> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the command name, which is in parentheses and may itself contain ') '.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X' ? 'zombie' : 'alive';
  } catch {
    return 'gone';
  }
}

/** Polls until `pid` is gone or a zombie; false if it still runs after `timeoutMs`. */
export async function waitGone(pid: number, timeoutMs: number, pollMs = 25): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await processState(pid)) !== 'alive') return true;
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Sends `signal` to `pid`; false if the process no longer exists. */
export function signalProcess(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

export async function isAlive(pid: number): Promise<boolean> {
  return (await processState(pid)) === 'alive';
}
