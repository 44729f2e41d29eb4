/**
 * The decision core is pure: no I/O, no clock, no randomness, no timers, no Node APIs. Time and randomness
 * arrive as inputs. This test is the lint rule that keeps it so (a reader can see the rule and its reason
 * here, next to the other tests).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../src/util/paths.js';

const FORBIDDEN: [RegExp, string][] = [
  [/\bDate\b/, 'Date (time must be an input)'],
  [/\bMath\.random\b/, 'Math.random (randomness must be an input)'],
  [/\b(setTimeout|setInterval|setImmediate|queueMicrotask)\b/, 'timers (the driver ticks the core)'],
  [/\bperformance\b/, 'performance (time must be an input)'],
  [/\bprocess\./, 'process (no environment, no I/O)'],
  [/from '(node:|fs|net|http|child_process)/, 'Node modules (no I/O)'],
  [/\brequire\(|\bimport\(/, 'dynamic loading'],
  [/\bconsole\./, 'console (events are returned, not printed)'],
];
const ALLOWED_IMPORTS = /^\.\/[a-z-]+\.js$|^\.\.\/util\/assert\.js$/;

test('src/core uses no clock, randomness, timers, I/O or Node modules', () => {
  const dir = path.join(repoRoot(), 'src', 'core');
  const files = readdirSync(dir).filter((f) => f.endsWith('.ts'));
  assert.ok(files.length >= 5);
  const problems: string[] = [];
  for (const file of files) {
    const text = readFileSync(path.join(dir, file), 'utf8');
    // Comments may mention what the code must not use.
    const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    for (const [pattern, what] of FORBIDDEN) if (pattern.test(code)) problems.push(`${file}: ${what}`);
    for (const m of code.matchAll(/from '([^']+)'/g)) if (!ALLOWED_IMPORTS.test(m[1]!)) problems.push(`${file}: imports ${m[1]}`);
  }
  assert.deepEqual(problems, []);
});
