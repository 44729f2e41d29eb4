/**
 * `npm run sim -- --seeds N [--from S] [--seed S] [--verbose]`: runs seeded fault schedules through the real
 * decision core. A failing seed prints its faults and log and replays exactly with `--seed S`.
 */
import { parseArgs } from 'node:util';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { runSchedule } from './schedule.js';
import { runScenarioFile } from './scenario.js';

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { seeds: { type: 'string' }, from: { type: 'string' }, seed: { type: 'string' }, verbose: { type: 'boolean' }, scenario: { type: 'string' } },
    strict: true,
  });
  if (values.scenario !== undefined) {
    const r = await runScenarioFile(values.scenario.endsWith('.txt') ? values.scenario : `${values.scenario}/script.txt`);
    console.log(r.log);
    for (const f of r.failures) console.log(`FAILED: ${f}`);
    return r.failures.length === 0 ? 0 : 1;
  }
  const seeds = values.seed !== undefined ? [Number(values.seed)] : range(Number(values.from ?? 1), Number(values.seeds ?? 1000));
  const started = Date.now();
  let failed = 0;
  let ran = 0;
  for (const seed of seeds) {
    ran++;
    const r = runSchedule(seed);
    if (!r.ok) {
      failed++;
      console.log(`seed ${seed}: ${r.failure}\nfaults:\n  ${r.faults.join('\n  ')}`);
      if (values.verbose || seeds.length === 1) console.log(r.log);
      if (failed >= 5) break;
    } else if (values.verbose) {
      console.log(`seed ${seed}: ok (${r.faults.length - 1} faults)`);
    }
  }
  const what = ran < seeds.length ? `stopped after ${failed} failures, ${ran} schedules` : `${ran} schedules`;
  console.log(`${what} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`${ran - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

function range(from: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => from + i);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) process.exitCode = await main(process.argv.slice(2));
