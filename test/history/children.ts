/** The history tests' processes: real ones, so that what /proc says of them is the kernel's. */
import { spawn } from 'node:child_process';
import type { Cleanup } from '../support/cleanup.js';

export interface Child {
  pid: number;
  /** SIGKILL, resolved once it has exited and been reaped (its /proc directory is gone). */
  kill(): Promise<void>;
}

/** A child that holds `holdMiB` of touched memory and, with `spin`, keeps one core busy; killed at the end of the test. */
export async function childProcess(cleanup: Cleanup, opts: { holdMiB: number; spin: boolean }): Promise<Child> {
  const script = `const held = Buffer.alloc(${opts.holdMiB} * 1024 * 1024, 1); process.stdout.write('ready\\n'); ${opts.spin ? 'for (;;) held[0]++;' : 'setInterval(() => held[0]++, 1000);'}`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  cleanup.add(kill);
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.stdout.once('data', () => resolve());
  });
  return { pid: child.pid!, kill };
}
