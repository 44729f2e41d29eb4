#!/usr/bin/env node
// `lockstep-quorum`, the quorum server on a third machine: a thin shim over the compiled TypeScript.
import { existsSync } from 'node:fs';
const entry = new URL('../dist/src/quorum/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('lockstep-quorum: not built yet; run `npm run setup` (installs what is missing, then builds)');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
