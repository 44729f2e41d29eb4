/**
 * `lockstep user …`: a host's management API users over its local socket (docs/cli.md). Root on a host is
 * its administrator: the socket serves the same accounts routes as the management API gives to
 * administrators, and every change is audited as `root@<host>`. Users are each host's own (its
 * `users.db`): name the host with `--host` or `--socket`. Passwords never come from the command line.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import { NAME_PATTERN, type UserView } from '../users/user-store.js';
import { resolveTarget } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { readPassword, type PasswordSource } from './password-input.js';
import { EXIT, table } from './output.js';

export const USER_USAGE = `lockstep user — a host's management API users (root on the host is its administrator)

  lockstep user setup NAME [--full-name TEXT] [--password-stdin]   the first administrator
  lockstep user list
  lockstep user add NAME [--group GROUP]… [--full-name TEXT] [--password-stdin]   (default group: read-only)
  lockstep user passwd NAME [--password-stdin]                     a new password; the user's sessions end
  lockstep user remove NAME

The password is typed at the terminal (twice, not shown) or, with --password-stdin, the first line of
stdin; never an argument. Users are each host's own: every verb takes --host host1|host2 or --socket PATH
(default in the lab: the first host that answers) and --json.`;

const NAME = new RegExp(NAME_PATTERN);
/** What `user add` joins without `--group`: the least role, so a new user can look and change nothing. */
export const DEFAULT_GROUP = 'read-only';

export type UserRequest =
  | { verb: 'help'; exit: number }
  | (Common & { verb: 'list' })
  | (Common & { verb: 'remove'; name: string })
  | (Common & { verb: 'passwd'; name: string; passwordStdin: boolean })
  | (Common & { verb: 'setup'; name: string; fullName?: string; passwordStdin: boolean })
  | (Common & { verb: 'add'; name: string; fullName?: string; groups: string[]; passwordStdin: boolean });

/** Parses and checks a `user` command line; every mistake is an `INVALID_ARGUMENT` (or `UNKNOWN_HOST`). */
export function parseUserCommand(argv: readonly string[]): UserRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list': {
      const { values, positionals } = parse(rest, {});
      if (positionals.length !== 0) throw usage('user list');
      return { verb, ...commonOptions(values) };
    }
    case 'remove': {
      const { values, positionals } = parse(rest, {});
      return { verb, name: oneName(positionals, 'user remove NAME'), ...commonOptions(values) };
    }
    case 'passwd': {
      const { values, positionals } = parse(rest, { 'password-stdin': { type: 'boolean' } });
      return { verb, name: oneName(positionals, 'user passwd NAME [--password-stdin]'), passwordStdin: values['password-stdin'] === true, ...commonOptions(values) };
    }
    case 'setup': {
      const { values, positionals } = parse(rest, { 'full-name': { type: 'string' }, 'password-stdin': { type: 'boolean' } });
      const name = oneName(positionals, 'user setup NAME [--full-name TEXT] [--password-stdin]');
      return { verb, name, ...fullName(values['full-name']), passwordStdin: values['password-stdin'] === true, ...commonOptions(values) };
    }
    case 'add': {
      const { values, positionals } = parse(rest, { group: { type: 'string', multiple: true }, 'full-name': { type: 'string' }, 'password-stdin': { type: 'boolean' } });
      const name = oneName(positionals, 'user add NAME [--group GROUP]… [--full-name TEXT] [--password-stdin]');
      const groups = [...new Set(values.group ?? [DEFAULT_GROUP])];
      for (const g of groups) if (!NAME.test(g)) throw new LockstepError('INVALID_ARGUMENT', `group name '${g}' must start with a letter and use a–z, 0–9, '.', '_' and '-', 32 characters at most`);
      return { verb, name, groups, ...fullName(values['full-name']), passwordStdin: values['password-stdin'] === true, ...commonOptions(values) };
    }
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown user command '${verb}'\n\n${USER_USAGE}`);
  }
}

export async function userCommand(argv: string[], password: (src: PasswordSource) => Promise<string> = readPassword): Promise<number> {
  const req = parseUserCommand(argv);
  if (req.verb === 'help') {
    console.log(USER_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  const socket = target.daemon.socket;
  const host = target.daemon.host;
  const userPath = (name: string): string => `/v1/users/${encodeURIComponent(name)}`;
  let answer: UserAnswer;
  switch (req.verb) {
    case 'list':
      answer = { verb: 'list', host, users: await daemonRequest<UserView[]>(socket, 'GET', '/v1/users') };
      break;
    case 'remove':
      answer = { verb: 'removed', host, name: req.name, user: await daemonRequest<null>(socket, 'DELETE', userPath(req.name)) };
      break;
    case 'passwd': {
      // Known before the password is typed: a typo in the name must not cost the typing.
      await daemonRequest<UserView>(socket, 'GET', userPath(req.name));
      const pw = await password({ fromStdin: req.passwordStdin, prompt: `new password for ${req.name} on ${host}` });
      answer = { verb: 'passwd', host, user: await daemonRequest<UserView>(socket, 'PATCH', userPath(req.name), { password: pw }) };
      break;
    }
    case 'setup': {
      const { needed } = await daemonRequest<{ needed: boolean }>(socket, 'GET', '/v1/setup');
      if (!needed) throw new LockstepError('SETUP_DONE', `${host} has its first administrator already: \`lockstep user add\` makes more users`, { host });
      const pw = await password({ fromStdin: req.passwordStdin, prompt: `password for ${req.name} on ${host}` });
      const body = { name: req.name, password: pw, ...(req.fullName !== undefined ? { fullName: req.fullName } : {}) };
      answer = { verb: 'made', host, user: await daemonRequest<UserView>(socket, 'POST', '/v1/setup', body) };
      break;
    }
    case 'add': {
      const pw = await password({ fromStdin: req.passwordStdin, prompt: `password for ${req.name} on ${host}` });
      const body = { name: req.name, password: pw, groups: req.groups, ...(req.fullName !== undefined ? { fullName: req.fullName } : {}) };
      answer = { verb: 'made', host, user: await daemonRequest<UserView>(socket, 'POST', '/v1/users', body) };
      break;
    }
  }
  console.log(renderUserAnswer(req.json, answer));
  return EXIT.ok;
}

/** What a verb got from the daemon: its answer (a removal's is `null`) and the host that gave it. */
export type UserAnswer =
  | { verb: 'list'; host: string; users: UserView[] }
  | { verb: 'made' | 'passwd'; host: string; user: UserView }
  | { verb: 'removed'; host: string; name: string; user: null };

/** The daemon's JSON untouched with `--json`, else a table or a line. */
export function renderUserAnswer(json: boolean, a: UserAnswer): string {
  if (json) return JSON.stringify(a.verb === 'list' ? a.users : a.user, null, 2);
  switch (a.verb) {
    case 'list':
      if (a.users.length === 0) return `${a.host} has no users yet (\`lockstep user setup NAME --host ${a.host}\` makes the first administrator)`;
      return table(
        ['user', 'full name', 'groups', 'role', 'created', 'password changed'],
        a.users.map((u) => [u.name, u.fullName || '-', u.groups.join(',') || '-', u.role ?? 'none', shortTime(u.createdAt), shortTime(u.passwordChangedAt)]),
      );
    case 'made':
      return `user ${a.user.name} made on ${a.host}: groups ${a.user.groups.join(', ') || 'none'}, role ${a.user.role ?? 'none'}`;
    case 'passwd':
      return `password of ${a.user.name} changed on ${a.host}; its sessions ended`;
    case 'removed':
      return `user ${a.name} removed from ${a.host}`;
  }
}

/** An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC): what a table has room for. */
export function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, '');
}

type Options = Parameters<typeof parseArgs>[0] extends infer C ? (C extends { options?: infer O } ? NonNullable<O> : never) : never;

function parse<O extends Options>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { ...WHERE_OPTIONS, ...options }, strict: true, allowPositionals: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${USER_USAGE}`);
  }
}

function oneName(positionals: string[], form: string): string {
  if (positionals.length !== 1) throw usage(form);
  const name = positionals[0]!;
  if (!NAME.test(name)) throw new LockstepError('INVALID_ARGUMENT', `user name '${name}' must start with a letter and use a–z, 0–9, '.', '_' and '-', 32 characters at most`, { user: name });
  return name;
}

function fullName(v: string | undefined): { fullName?: string } {
  return v === undefined ? {} : { fullName: v };
}

function usage(form: string): LockstepError {
  return new LockstepError('INVALID_ARGUMENT', `usage: lockstep ${form}`);
}
