/**
 * The fencing watchdog's thread (see `watchdog.ts`). It has its own event loop, so a main thread blocked on a
 * slow disk write or a long step still gets its VMs killed on time. It only kills: it never starts anything.
 */
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import type { WatchdogOrder } from './watchdog.js';

if (!parentPort) throw new Error('watchdog-worker must run as a worker thread');
const port = parentPort;

let timer: NodeJS.Timeout | null = null;
let pids: number[] = [];

function fire(): void {
  timer = null;
  const killed: number[] = [];
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // Gone already: nothing to fence.
    }
  }
  if (killed.length > 0) port.postMessage({ fired: killed });
}

port.on('message', (order: WatchdogOrder) => {
  pids = order.pids;
  if (timer) clearTimeout(timer);
  timer = null;
  if (order.fenceAtWallMs === null) return;
  // Both threads measure on performance.timeOrigin + now(): the same monotonic base, free of wall-clock steps.
  const delay = order.fenceAtWallMs - (performance.timeOrigin + performance.now());
  if (delay <= 0) fire();
  else timer = setTimeout(fire, delay);
});
