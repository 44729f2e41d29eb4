/**
 * `lockstep pref show|get|set` and `lockstep notification list|test`: what is set up for the pair as one
 * host runs it, the setters of what may change while it runs (owner, resync, notifications), and its
 * notification receivers with "send test", over the host's local socket (docs/cli.md). All are one host's:
 * its config file, its receivers, its outbox. A change or a test is audited like every change
 * (`root@<host>`). `notification test` exits 1 when any receiver failed, so a script can check its
 * alerting path.
 *
 * `set owner` and `set resync` change the fields given and keep the others as the host has them (the API
 * takes the whole section: the command reads it first). `set notifications` sends a file in the section's
 * own shape, as `get notifications` prints it, secrets kept by `{"keep": RECEIVER}`.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import type { NotificationTestAnswer, PreferencesView } from '../daemon/preference-routes.js';
import type { NotificationsView } from '../notify/receiver-view.js';
import { SEND_TEST_TIMEOUT_MS } from '../notify/notifier.js';
import { LIVE_SECTIONS, type LiveSection } from '../daemon/config.js';
import { resolveTarget } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { renderNotifications, renderPreferences, renderSetAnswer, renderTestAnswer } from './pref-view.js';
import { EXIT } from './output.js';

export const PREF_USAGE = `lockstep pref — what is set up for the pair, as a host runs it; owner, resync and notifications set live

  lockstep pref show       owner, addresses, quorum servers, clock and NTP, SplitSite limits, resync rate, notifications
  lockstep pref get owner|resync|notifications
                           the section as JSON, as the setter takes it (notifications: secrets as {"keep": RECEIVER})
  lockstep pref set owner [--name TEXT] [--contact TEXT] [--email TEXT] [--phone TEXT] [--site TEXT]
                           the fields given (an empty TEXT clears one), the others kept
  lockstep pref set resync [--max-mibps N|none] [--busy-mibps N|none]
                           the resync's ceiling, and its limit while the guest does I/O (none: no limit)
  lockstep pref set notifications --file FILE
                           the receivers and policy from FILE (JSON, as pref get notifications prints; null: none)

  Each set writes the host's lockstepd.json and applies it at once, no restart; the rest of the
  preferences: edit lockstepd.json and restart lockstepd (docs/api.md#preferences).

lockstep notification — a host's notification receivers (e-Alert, SNMP, Call Home, webhooks)

  lockstep notification list              each receiver, its latest delivery and test
  lockstep notification test [RECEIVER]   a test notification to every receiver, or one (smtp, snmp:HOST:PORT,
                                          call-home, webhook:NAME or webhook:N); exit 1 when one failed

Every verb takes --json (the API's JSON) and --socket PATH or --host host1|host2 as \`lockstep vm\` does;
in the lab, test needs --host (it sends from that host).`;

/** The answer waits for every receiver's outcome, which the daemon bounds; a little more for the way there and back. */
const TEST_ANSWER_MS = SEND_TEST_TIMEOUT_MS + 10_000;
/** Receiver names as the daemon makes them (src/notify/receivers.ts); the daemon says whether one is configured. */
const RECEIVER_NAME = /^(smtp|call-home|webhook:([1-9]\d?|[a-z][a-z0-9-]{0,31})|snmp:[^\s/]{1,290})$/;

/** The sections `pref get|set` take: those the daemon changes while it runs. */
type Section = LiveSection;

const OWNER_FIELDS = ['name', 'contact', 'email', 'phone', 'site'] as const;
type OwnerField = (typeof OWNER_FIELDS)[number];

const SET_OPTIONS = {
  ...Object.fromEntries(OWNER_FIELDS.map((f) => [f, { type: 'string' }])),
  'max-mibps': { type: 'string' },
  'busy-mibps': { type: 'string' },
  file: { type: 'string' },
} as const;

/** The owner's fields to change: a text, or null to clear it (an empty TEXT). */
export type OwnerChange = Partial<Record<OwnerField, string | null>>;
/** The resync's limits to change: MiB/s, or null for no limit. */
export type ResyncChange = Partial<Record<'maxMiBps' | 'busyMiBps', number | null>>;

export type PrefSet = { section: 'owner'; owner: OwnerChange } | { section: 'resync'; resync: ResyncChange } | { section: 'notifications'; file: string };

export type PrefRequest =
  | { verb: 'help'; exit: number }
  | (Common & { noun: 'pref'; verb: 'show' })
  | (Common & { noun: 'pref'; verb: 'get'; section: Section })
  | (Common & { noun: 'pref'; verb: 'set' } & PrefSet)
  | (Common & { noun: 'notification'; verb: 'list' })
  | (Common & { noun: 'notification'; verb: 'test'; receiver: string | null });

export function parsePrefCommand(noun: 'pref' | 'notification', argv: readonly string[]): PrefRequest {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === 'help' || verb === '--help') return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
  if (noun === 'pref' && verb === 'set') return parseSet(rest);
  const { values, positionals } = parse(rest);
  if (noun === 'pref') {
    if (verb === 'get') {
      const section = positionals[0];
      if (positionals.length !== 1 || !isSection(section)) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep pref get owner|resync|notifications [--socket PATH | --host NAME]');
      return { noun, verb, section, ...commonOptions(values) };
    }
    if (verb !== 'show') throw new LockstepError('INVALID_ARGUMENT', `unknown pref command '${verb}'\n\n${PREF_USAGE}`);
    if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep pref show [--json] [--socket PATH | --host NAME]');
    return { noun, verb, ...commonOptions(values) };
  }
  if (verb === 'list') {
    if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep notification list [--json] [--socket PATH | --host NAME]');
    return { noun, verb, ...commonOptions(values) };
  }
  if (verb !== 'test') throw new LockstepError('INVALID_ARGUMENT', `unknown notification command '${verb}'\n\n${PREF_USAGE}`);
  if (positionals.length > 1) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep notification test [RECEIVER] [--json] [--socket PATH | --host NAME]');
  const receiver = positionals[0] ?? null;
  if (receiver !== null && !RECEIVER_NAME.test(receiver)) {
    throw new LockstepError('INVALID_ARGUMENT', `'${receiver}' is not a receiver's name: smtp, snmp:HOST:PORT, call-home, webhook:NAME or webhook:N (\`lockstep notification list\` shows them)`, { receiver });
  }
  return { noun, verb, receiver, ...commonOptions(values) };
}

function parseSet(argv: readonly string[]): PrefRequest {
  const [section, ...rest] = argv;
  if (!isSection(section)) throw new LockstepError('INVALID_ARGUMENT', `usage: lockstep pref set owner|resync|notifications OPTIONS (${section === undefined ? 'no section given' : `'${section}' is not one`})\n\n${PREF_USAGE}`);
  const { values, positionals } = parse(rest, SET_OPTIONS);
  if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', `lockstep pref set ${section} takes options only (got '${positionals[0]}')`);
  const common = commonOptions(values);
  const given = (names: readonly string[]): string[] => names.filter((n) => typeof values[n as keyof typeof values] === 'string');
  const others = (mine: readonly string[]): void => {
    const wrong = given(Object.keys(SET_OPTIONS).filter((n) => !mine.includes(n)));
    if (wrong.length > 0) throw new LockstepError('INVALID_ARGUMENT', `lockstep pref set ${section} does not take --${wrong.join(', --')}`);
  };
  const text = (n: string): string => values[n as keyof typeof values] as string;
  switch (section) {
    case 'owner': {
      others(OWNER_FIELDS);
      const fields = given(OWNER_FIELDS) as OwnerField[];
      if (fields.length === 0) throw new LockstepError('INVALID_ARGUMENT', 'lockstep pref set owner needs at least one of --name, --contact, --email, --phone, --site');
      if (fields.includes('name') && text('name') === '') throw new LockstepError('INVALID_ARGUMENT', "--name cannot be cleared: an owner has a name (set the others to '' to clear them)");
      return { noun: 'pref', verb: 'set', section, owner: Object.fromEntries(fields.map((f) => [f, text(f) === '' ? null : text(f)])), ...common };
    }
    case 'resync': {
      others(['max-mibps', 'busy-mibps']);
      const resync: ResyncChange = {};
      if (given(['max-mibps']).length > 0) resync.maxMiBps = mibps(text('max-mibps'), '--max-mibps');
      if (given(['busy-mibps']).length > 0) resync.busyMiBps = mibps(text('busy-mibps'), '--busy-mibps');
      if (Object.keys(resync).length === 0) throw new LockstepError('INVALID_ARGUMENT', 'lockstep pref set resync needs --max-mibps N|none, --busy-mibps N|none or both');
      return { noun: 'pref', verb: 'set', section, resync, ...common };
    }
    case 'notifications': {
      others(['file']);
      if (given(['file']).length === 0) throw new LockstepError('INVALID_ARGUMENT', 'lockstep pref set notifications needs --file FILE (JSON: `lockstep pref get notifications` prints the section in that form)');
      return { noun: 'pref', verb: 'set', section, file: text('file'), ...common };
    }
  }
}

/** `N` MiB/s or `none`; the daemon checks the range, as it checks the config file's. */
function mibps(v: string, option: string): number | null {
  if (v === 'none') return null;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new LockstepError('INVALID_ARGUMENT', `${option} must be a number of MiB/s or none (got '${v}')`);
  return n;
}

function isSection(v: string | undefined): v is Section {
  return (LIVE_SECTIONS as readonly (string | undefined)[]).includes(v);
}

export async function prefCommand(noun: 'pref' | 'notification', argv: string[]): Promise<number> {
  const req = parsePrefCommand(noun, argv);
  if (req.verb === 'help') {
    console.log(PREF_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  const { socket, host } = target.daemon;
  switch (req.verb) {
    case 'show': {
      const p = await daemonRequest<PreferencesView>(socket, 'GET', '/v1/preferences');
      console.log(req.json ? JSON.stringify(p, null, 2) : renderPreferences(p));
      return EXIT.ok;
    }
    case 'get': {
      const p = await daemonRequest<PreferencesView>(socket, 'GET', '/v1/preferences');
      console.log(JSON.stringify(sectionOf(p, req.section), null, 2));
      return EXIT.ok;
    }
    case 'set': {
      const p = await daemonRequest<PreferencesView>(socket, 'PUT', `/v1/preferences/${req.section}`, await setterBody(socket, req));
      console.log(req.json ? JSON.stringify(p, null, 2) : renderSetAnswer(p, req.section));
      return EXIT.ok;
    }
    case 'list': {
      const n = await daemonRequest<NotificationsView>(socket, 'GET', '/v1/notifications');
      console.log(req.json ? JSON.stringify(n, null, 2) : renderNotifications(host, n));
      return EXIT.ok;
    }
    case 'test': {
      // A test goes out from one host: in the lab, sending it from whichever answered first would be a guess.
      if (target.kind === 'lab' && target.anyHost) throw new LockstepError('INVALID_ARGUMENT', 'lockstep notification test sends from one host: name it with --host host1|host2');
      const path = req.receiver === null ? '/v1/notifications/test' : `/v1/notifications/${encodeURIComponent(req.receiver)}/test`;
      const answer = await daemonRequest<NotificationTestAnswer>(socket, 'POST', path, undefined, TEST_ANSWER_MS);
      console.log(req.json ? JSON.stringify(answer, null, 2) : renderTestAnswer(answer));
      return answer.failed === 0 ? EXIT.ok : EXIT.failed;
    }
  }
}

/** The section as the setter takes it back: what `get` prints and `set` starts from. */
function sectionOf(p: PreferencesView, section: Section): unknown {
  switch (section) {
    case 'owner':
      return p.owner;
    case 'resync':
      return p.resync;
    case 'notifications':
      return p.notificationsConfig;
  }
}

/** The whole section to PUT: the host's current one with the fields given changed, or the file's. */
async function setterBody(socket: string, req: PrefSet): Promise<unknown> {
  if (req.section === 'notifications') return readJsonFile(req.file);
  const current = await daemonRequest<PreferencesView>(socket, 'GET', '/v1/preferences');
  if (req.section === 'resync') return { ...current.resync, ...req.resync };
  const owner = { ...(current.owner ?? {}), ...req.owner };
  // Cleared fields are left out: the section the file gets has only what is given.
  return Object.fromEntries(Object.entries(owner).filter(([, v]) => v !== null));
}

async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `cannot read ${file}: ${(e as Error).message}`, { file });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    // Where, not what: the parser's message quotes the text around the error, which may be a secret.
    const where = /at position \d+( \(line \d+ column \d+\))?/.exec((e as Error).message)?.[0];
    throw new LockstepError('INVALID_ARGUMENT', `${file} is not valid JSON${where === undefined ? '' : ` (${where})`}`, { file });
  }
}

function parse(argv: readonly string[], options: Partial<typeof SET_OPTIONS> = {}) {
  try {
    return parseArgs({ args: [...argv], options: { ...WHERE_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${PREF_USAGE}`);
  }
}
