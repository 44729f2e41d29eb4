/**
 * Runs a range of seeds over worker threads (one per core): the seeded simulation is CPU-bound and
 * embarrassingly parallel. Each worker returns its failures; a failing seed replays alone with
 * `npm run sim -- --seed S`.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import os from 'node:os';
import { runSchedule, type ScheduleResult } from './schedule.js';

interface Job {
  from: number;
  count: number;
}

export async function runSeedsInParallel(from: number, count: number, workers = Math.max(1, os.availableParallelism())): Promise<ScheduleResult[]> {
  const per = Math.ceil(count / workers);
  const jobs: Job[] = [];
  for (let start = from; start < from + count; start += per) jobs.push({ from: start, count: Math.min(per, from + count - start) });
  const results = await Promise.all(
    jobs.map(
      (job) =>
        new Promise<ScheduleResult[]>((resolve, reject) => {
          const w = new Worker(new URL(import.meta.url), { workerData: job });
          w.once('message', (failures: ScheduleResult[]) => resolve(failures));
          w.once('error', reject);
          w.once('exit', (code) => {
            if (code !== 0) reject(new Error(`simulation worker for seeds ${job.from}… exited with ${code}`));
          });
        }),
    ),
  );
  return results.flat();
}

if (!isMainThread && parentPort) {
  const job = workerData as Job;
  const failures: ScheduleResult[] = [];
  for (let seed = job.from; seed < job.from + job.count; seed++) {
    const r = runSchedule(seed);
    if (!r.ok) failures.push(r);
  }
  parentPort.postMessage(failures);
}
