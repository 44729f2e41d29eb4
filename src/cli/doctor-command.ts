/** `lockstep doctor`: what this machine has, and what Lockstep will do about each thing. */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { runDoctor } from '../platform/doctor.js';
import { EXIT, table } from './output.js';

export async function doctorCommand(argv: string[]): Promise<number> {
  let json = false;
  try {
    json = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, strict: true }).values.json ?? false;
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\nusage: lockstep doctor [--json]`);
  }
  const report = await runDoctor();
  if (json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(table(['check', 'ok', 'found', 'what lockstep does'], report.checks.map((c) => [c.name, c.ok ? 'yes' : 'NO', c.found, c.consequence])));
    console.log(report.ready ? '\nReady: `npm run demo` brings the lab up.' : '\nNot ready: `npm run setup` installs what is missing.');
  }
  return report.ready ? EXIT.ok : EXIT.failed;
}
