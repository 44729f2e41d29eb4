/**
 * The seeded simulation: random fault schedules (host crash and restart, A-Link loss one or both ways,
 * management partitions, quorum server crash and restart, message delay, reordering and duplication, clock
 * drift, slow persistence, VM crashes) through the real decision core, with safety checkers after every
 * event and a liveness check after the faults heal. LOCKSTEP_SIM_SEEDS sets how many (default 10,000).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeedsInParallel } from '../../src/sim/parallel.js';

const SEEDS = Number(process.env['LOCKSTEP_SIM_SEEDS'] ?? 10_000);

test(`${SEEDS} seeded fault schedules keep every invariant`, { timeout: 30 * 60_000 }, async () => {
  const failures = await runSeedsInParallel(1, SEEDS);
  const report = failures
    .slice(0, 3)
    .map((f) => `seed ${f.seed}: ${f.failure}\n  faults: ${f.faults.join('; ')}\n  replay: npm run sim -- --seed ${f.seed}`)
    .join('\n');
  assert.equal(failures.length, 0, report);
});
