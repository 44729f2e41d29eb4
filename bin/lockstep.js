#!/usr/bin/env node
// The `lockstep` CLI: a thin shim over the compiled TypeScript, with a clear word when it is not built.
import { existsSync } from 'node:fs';
const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('lockstep: not built yet; run `npm run setup` (installs what is missing, then builds)');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
