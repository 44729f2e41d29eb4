// The fencing watchdog runs on its own thread: it must kill the processes it was given at the fence time
// even while the main thread is stuck (as behind a slow fsync), and a later arm must move the time.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { Watchdog, coreNow } from '../../src/daemon/watchdog.js';
import { isAlive } from '../../src/util/proc.js';

const children: ChildProcess[] = [];
const watchdogs: Watchdog[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const w of watchdogs.splice(0)) await w.close();
});

function sleeper(): ChildProcess {
  const c = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(c);
  return c;
}

function blockMainThread(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // Busy: no timer of this thread can run.
  }
}

test('fires at fenceAt while the main thread is blocked, and reports what it killed', async () => {
  const victim = sleeper();
  const fired: number[][] = [];
  const w = new Watchdog((pids) => fired.push(pids));
  watchdogs.push(w);
  w.setPids([victim.pid!]);
  w.arm(coreNow() + 200);
  blockMainThread(800);
  assert.equal(await isAlive(victim.pid!), false, 'killed although the main thread never yielded');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(fired, [[victim.pid!]]);
  assert.equal(w.expired(coreNow()), true);
});

test('a later arm moves the fence; null disarms', async () => {
  const victim = sleeper();
  const w = new Watchdog(() => {});
  watchdogs.push(w);
  w.setPids([victim.pid!]);
  // The first fence is far enough away that a starved worker thread (a loaded machine) still reads the
  // second arm before it: waiting past it then shows the fence moved.
  w.arm(coreNow() + 1500);
  w.arm(coreNow() + 60_000);
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await isAlive(victim.pid!), true, 'the re-armed fence is a minute away');
  assert.equal(w.expired(coreNow()), false);
  w.arm(null);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(await isAlive(victim.pid!), true);
  w.arm(coreNow() - 1);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(await isAlive(victim.pid!), false, 'a fence already past fires at once');
});
