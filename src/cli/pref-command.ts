/**
 * `lockstep pref show` and `lockstep notification list|test`: what is set up for the pair as one host runs
 * it, and its notification receivers with "send test", over the host's local socket (docs/cli.md). Both are
 * one host's: its config, its receivers, its outbox. A test is audited like every change (`root@<host>`).
 * `notification test` exits 1 when any receiver failed, so a script can check its alerting path.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import type { NotificationTestAnswer, PreferencesView } from '../daemon/preference-routes.js';
import type { NotificationsView } from '../notify/receiver-view.js';
import { SEND_TEST_TIMEOUT_MS } from '../notify/notifier.js';
import { resolveTarget } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { renderNotifications, renderPreferences, renderTestAnswer } from './pref-view.js';
import { EXIT } from './output.js';

export const PREF_USAGE = `lockstep pref — what is set up for the pair, as a host runs it (read-only: edit the config, restart lockstepd)

  lockstep pref show       owner, addresses, quorum servers, clock and NTP, SplitSite limits, resync rate, notifications

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

export type PrefRequest =
  | { verb: 'help'; exit: number }
  | (Common & { noun: 'pref'; verb: 'show' })
  | (Common & { noun: 'notification'; verb: 'list' })
  | (Common & { noun: 'notification'; verb: 'test'; receiver: string | null });

export function parsePrefCommand(noun: 'pref' | 'notification', argv: readonly string[]): PrefRequest {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === 'help' || verb === '--help') return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
  const { values, positionals } = parse(rest);
  if (noun === 'pref') {
    if (verb !== 'show') throw new LockstepError('INVALID_ARGUMENT', `unknown pref command '${verb}' (preferences are read-only: edit lockstepd's config and restart it)\n\n${PREF_USAGE}`);
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

function parse(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: WHERE_OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${PREF_USAGE}`);
  }
}
