/**
 * Runs the benches (all, or those named on the command line), prints each one's table and writes its
 * results to `bench/results/<name>.json`. `npm run bench [-- NAME…]`.
 *
 * Benches are not tests: they measure this machine, and their figures are for choosing mechanisms and
 * noticing regressions by eye, not for asserting.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../src/util/paths.js';
import { plotLatency } from './plot.js';
import { formatTable, type BenchModule } from './result.js';

/** Every bench, by name; loaded only when it runs. */
const BENCHES: Readonly<Record<string, () => Promise<BenchModule>>> = {
  migration: () => import('./migration.js'),
  'ha-writes': () => import('./ha-writes.js'),
  'ha-failover': () => import('./ha-failover.js'),
  'ha-resync': () => import('./ha-resync.js'),
  'ft-epoch-disk': () => import('./ft-epoch-disk.js'),
  'ft-output-commit': () => import('./ft-output-commit.js'),
  'ft-epoch': () => import('./ft-epoch.js'),
  'ft-pair': () => import('./ft-pair.js'),
};

async function main(names: string[]): Promise<number> {
  const unknown = names.filter((n) => !(n in BENCHES));
  if (unknown.length > 0) {
    console.error(`unknown bench ${unknown.join(', ')}; there are: ${Object.keys(BENCHES).join(', ')}`);
    return 2;
  }
  const resultsDir = path.join(repoRoot(), 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  const chosen = names.length > 0 ? names : Object.keys(BENCHES);
  const failed: string[] = [];
  for (const name of chosen) {
    const startedAt = new Date();
    // Other work on the machine moves the figures; the load says how much there was.
    const loadAverage = os.loadavg();
    let result;
    try {
      result = await (await BENCHES[name]!()).run();
    } catch (e) {
      // One bench failing (the lab it measures misbehaving) does not cost the others' figures.
      console.error(`\nbench ${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      failed.push(name);
      continue;
    }
    const seconds = (Date.now() - startedAt.getTime()) / 1000;
    const load = loadAverage.map((l) => l.toFixed(1)).join(' ');
    console.log(`\n${result.title} (${seconds.toFixed(0)} s, load average at start ${load})\n\n${formatTable(result.columns, result.rows)}\n`);
    for (const note of result.notes) console.log(`- ${note}`);
    const machine = {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? null,
      memoryMiB: Math.round(os.totalmem() / 2 ** 20),
      kernel: os.release(),
      node: process.version,
      loadAverageAtStart: loadAverage,
    };
    const file = path.join(resultsDir, `${result.name}.json`);
    await writeFile(file, JSON.stringify({ ...result, startedAt: startedAt.toISOString(), seconds, machine }, null, 2) + '\n');
    console.log(`\nwritten to ${path.relative(process.cwd(), file)}`);
  }
  // The chart in docs/performance.md is drawn from the results it shows.
  if (chosen.includes('ha-writes') && !failed.includes('ha-writes')) console.log(`drawn ${path.relative(process.cwd(), await plotLatency())}`);
  if (failed.length > 0) console.error(`failed: ${failed.join(', ')} (their results files were not rewritten)`);
  return failed.length > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
