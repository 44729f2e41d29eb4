/**
 * The seeded schedules must reach the paths the safety argument is about, or passing them proves little.
 * In particular, for the quorum rounds asked on suspicion (docs/core.md): grants that arrive while the peer
 * is still heard, leases adopted when the peer is then declared lost, denials, pairs that outlive such a
 * round and move past the server's epoch, fences and takeovers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COVERAGE, runSchedule, type CoverageKey } from '../../src/sim/schedule.js';

const SEEDS = 150;

test(`${SEEDS} seeded schedules reach every path worth covering`, { timeout: 10 * 60_000 }, () => {
  const total = Object.fromEntries(Object.keys(COVERAGE).map((k) => [k, 0])) as Record<CoverageKey, number>;
  const seedsReaching = { ...total };
  for (let seed = 1; seed <= SEEDS; seed++) {
    const r = runSchedule(seed);
    for (const k of Object.keys(total) as CoverageKey[]) {
      total[k] += r.coverage[k];
      if (r.coverage[k] > 0) seedsReaching[k] += 1;
    }
  }
  for (const k of Object.keys(total) as CoverageKey[]) {
    // Every path in a good share of the schedules, not once by luck.
    assert.ok(seedsReaching[k] >= SEEDS / 10, `${k} ("${COVERAGE[k]}") reached in ${seedsReaching[k]} of ${SEEDS} schedules (${total[k]} times)`);
  }
});
