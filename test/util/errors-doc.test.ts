import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ERROR_CODES } from '../../src/util/errors.js';
import { repoRoot } from '../../src/util/paths.js';

test('docs/errors.md documents exactly the codes in the catalogue', () => {
  const doc = readFileSync(path.join(repoRoot(), 'docs', 'errors.md'), 'utf8');
  const documented = [...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
  assert.deepEqual([...documented].sort(), Object.keys(ERROR_CODES).sort());
});
