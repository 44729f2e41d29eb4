/**
 * Every folder under test/scenarios/ is a story: README.md (intent), script.txt (faults in simulated time,
 * see src/sim/scenario.ts) and expected.log (the golden log of what the cores decided and when). The log
 * must match exactly, every `expect` line must hold and no safety checker may fire.
 * `UPDATE_GOLDEN=1 node scripts/run-tests.js scenarios` rewrites the golden logs: review the diff.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../src/util/paths.js';
import { runScenarioFile } from '../../src/sim/scenario.js';

const dir = path.join(repoRoot(), 'test', 'scenarios');
const scenarios = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();

test('there are scenarios, each with a README and a script', () => {
  assert.ok(scenarios.length >= 15, `only ${scenarios.length} scenarios`);
  for (const s of scenarios) {
    assert.ok(existsSync(path.join(dir, s, 'README.md')), `${s}/README.md`);
    assert.ok(existsSync(path.join(dir, s, 'script.txt')), `${s}/script.txt`);
  }
});

for (const name of scenarios) {
  test(`scenario ${name}`, async () => {
    const result = await runScenarioFile(path.join(dir, name, 'script.txt'));
    const golden = path.join(dir, name, 'expected.log');
    if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(golden, result.log);
    assert.deepEqual(result.failures, []);
    assert.equal(result.log, readFileSync(golden, 'utf8'), `${name}: the log differs from expected.log`);
  });
}
