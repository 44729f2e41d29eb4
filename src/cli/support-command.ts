/**
 * `lockstep support bundle`: a host's support bundle (docs/api.md#support-bundle) saved as the `.tar.gz` the
 * daemon names, over its local socket. One host's: its logs and views; in the lab the host must be named.
 * Making one is audited (`root@<host>`). The file is never overwritten, and a cut-off download leaves nothing.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonDownload } from '../daemon/api-client.js';
import { resolveTarget } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { EXIT } from './output.js';

export const SUPPORT_USAGE = `lockstep support — what a support case needs from a host

  lockstep support bundle [--output DIR|FILE]   the host's support bundle (.tar.gz: its status, VMs, volumes,
                                                networks, sensors, preferences, notifications, event log, daemon
                                                log, VMs' console logs, versions; no secret), into DIR (default:
                                                here) under the name the host gives it, or as FILE

Takes --json (the file's path and size) and --socket PATH or --host host1|host2 as \`lockstep vm\` does; in
the lab, --host is needed (each host makes its own).`;

/** A bundle is made in memory from bounded parts: seconds, more on a loaded host. */
const BUNDLE_IDLE_MS = 120_000;

export type SupportRequest = { verb: 'help'; exit: number } | (Common & { verb: 'bundle'; output: string | null });

export function parseSupportCommand(argv: readonly string[]): SupportRequest {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === 'help' || verb === '--help') return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
  if (verb !== 'bundle') throw new LockstepError('INVALID_ARGUMENT', `unknown support command '${verb}'\n\n${SUPPORT_USAGE}`);
  let parsed;
  try {
    parsed = parseArgs({ args: [...rest], options: { ...WHERE_OPTIONS, output: { type: 'string', short: 'o' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${SUPPORT_USAGE}`);
  }
  if (parsed.positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep support bundle [--output DIR|FILE] [--json] [--socket PATH | --host NAME]');
  return { verb, output: parsed.values.output ?? null, ...commonOptions(parsed.values) };
}

export async function supportCommand(argv: string[]): Promise<number> {
  const req = parseSupportCommand(argv);
  if (req.verb === 'help') {
    console.log(SUPPORT_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  // Each host's bundle is its own: in the lab, taking whichever answered first would be a guess.
  if (target.kind === 'lab' && target.anyHost) throw new LockstepError('INVALID_ARGUMENT', 'lockstep support bundle is one host\'s: name it with --host host1|host2');
  const output = path.resolve(req.output ?? '.');
  // A file given is checked before the daemon makes anything; into a directory, under the name it gives.
  const intoDirectory = await stat(output).then((s) => s.isDirectory(), () => false);
  let file = output;
  const named = async (suggested: string | null): Promise<string> => {
    file = path.join(output, plainFileName(suggested));
    return file;
  };
  const bytes = await daemonDownload(target.daemon.socket, '/v1/support/bundle', intoDirectory ? named : output, { method: 'POST', idleMs: BUNDLE_IDLE_MS });
  console.log(req.json ? JSON.stringify({ host: target.daemon.host, file, bytes }, null, 2) : `${file} (${bytes} bytes): ${target.daemon.host}'s support bundle`);
  return EXIT.ok;
}

/** The daemon's name for the bundle, if it is a plain file name: whatever the header says, it lands in the directory asked for. */
function plainFileName(suggested: string | null): string {
  if (suggested === null || !/^[\w.-]{1,200}$/.test(suggested) || suggested.startsWith('.')) {
    throw new LockstepError('DAEMON_ERROR', `lockstepd named no usable file for its support bundle (${JSON.stringify(suggested)}): give --output FILE`);
  }
  return suggested;
}
