/**
 * `lockstep status` and `lockstep host …`: the pair's hosts through lockstepd's local API (docs/cli.md).
 * A host's state, health and maintenance are its own, so each is asked of the host it concerns: `--host`
 * (or `--socket`) names it; in the lab with none named, `status` and `host list` ask both hosts. `host
 * health` is the exception: the asked host answers for both, the peer's components as the peer reports
 * them over the A-Link.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import { askOtherLabHosts, resolveTarget, type Target } from './daemon-target.js';
import { commonOptions, HISTORY_OPTIONS, historyOptions, historyQuery, WHERE_OPTIONS, type Common, type HistoryOptions } from './vm-command.js';
import { renderHostShow, renderHostTable, renderPairHealth, renderSensors, renderStatus, type HostSensors, type HostStatus } from './host-view.js';
import type { PairHealth } from '../daemon/sensor-routes.js';
import { renderHostHistory, type HostHistory } from './history-view.js';
import { EXIT } from './output.js';

export const HOST_USAGE = `lockstep status — the pair at a glance: each host's state, epoch, authority, health and A-Link, the VMs

lockstep host — one host of the pair

  lockstep host list
  lockstep host show
  lockstep host health                 each health component of both hosts: the asked host's, and the peer's
                                       as the peer reports them over the A-Link (or why they are unavailable)
  lockstep host sensors                the host's hardware sensors: temperatures, fans, voltages, with limits
  lockstep host history [--last DURATION] [--series cpu,memory,storage,network]
                                       the host's CPU, memory, storage and network over the last DURATION
                                       (10m by default; 90s, 1h …): now, min, avg, max, limit, a sparkline
  lockstep host maintenance on|off     on: the host's protected VMs move to its peer (live migration)
  lockstep host repaired               clears a down verdict (predictive failure) and its fault history
  lockstep host force-takeover         the operator asserts the peer is dead (refused while it is heard)

Every verb takes --json (the API's JSON) and --socket PATH or --host host1|host2 as \`lockstep vm\` does:
show and the actions concern the host asked (in the lab, --host is needed for them); health answers for
both hosts from either.`;

export type HostAction = 'maintenance-on' | 'maintenance-off' | 'repaired' | 'force-takeover';

export type HostRequest =
  | { verb: 'help'; exit: number }
  | (Common & { verb: 'status' | 'list' | 'show' | 'health' | 'sensors' })
  | (Common & HistoryOptions & { verb: 'history' })
  | (Common & { verb: 'action'; action: HostAction });

/** `lockstep status ARGS` is `host`'s `status` verb. */
export function parseStatusCommand(argv: readonly string[]): HostRequest {
  const { values, positionals } = parse(argv);
  if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep status [--json] [--socket PATH | --host NAME]');
  return { verb: 'status', ...commonOptions(values) };
}

export function parseHostCommand(argv: readonly string[]): HostRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list':
    case 'show':
    case 'health':
    case 'sensors': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', `usage: lockstep host ${verb} [--host NAME | --socket PATH]`);
      return { verb, ...commonOptions(values) };
    }
    case 'history': {
      const { values, positionals } = parse(rest, HISTORY_OPTIONS);
      if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep host history [--last DURATION] [--series LIST] [--host NAME | --socket PATH]');
      return { verb, ...historyOptions(values), ...commonOptions(values) };
    }
    case 'maintenance': {
      const { values, positionals } = parse(rest);
      const [onOff] = positionals;
      if (positionals.length !== 1 || (onOff !== 'on' && onOff !== 'off')) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep host maintenance on|off [--host NAME | --socket PATH]');
      return { verb: 'action', action: onOff === 'on' ? 'maintenance-on' : 'maintenance-off', ...commonOptions(values) };
    }
    case 'repaired':
    case 'force-takeover': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', `usage: lockstep host ${verb} [--host NAME | --socket PATH]`);
      return { verb: 'action', action: verb, ...commonOptions(values) };
    }
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown host command '${verb}'\n\n${HOST_USAGE}`);
  }
}

export async function hostCommand(req: HostRequest): Promise<number> {
  if (req.verb === 'help') {
    console.log(HOST_USAGE);
    return req.exit;
  }
  const target = await resolveTarget(req.where);
  if (req.verb === 'action' && target.kind === 'lab' && target.anyHost) {
    // A host's maintenance or verdict is that host's: acting on whichever answered first would be a guess.
    throw new LockstepError('INVALID_ARGUMENT', `lockstep host ${actionWords(req.action)} concerns one host: name it with --host host1|host2`);
  }
  console.log(await carryOut(target, req));
  return EXIT.ok;
}

async function carryOut(target: Target, req: Exclude<HostRequest, { verb: 'help' }>): Promise<string> {
  const socket = target.daemon.socket;
  if (req.verb === 'action') {
    const [path, body] = ACTIONS[req.action];
    const view = await daemonRequest<unknown>(socket, 'POST', path, body);
    if (req.json) return JSON.stringify(view, null, 2);
    const s = await daemonRequest<HostStatus>(socket, 'GET', '/v1/status');
    return `${target.daemon.host}: ${DONE[req.action]}\n\n${renderHostShow(s)}`;
  }
  if (req.verb === 'health') {
    const health = await daemonRequest<PairHealth>(socket, 'GET', '/v1/host/health');
    return req.json ? JSON.stringify(health, null, 2) : renderPairHealth(health);
  }
  if (req.verb === 'sensors') {
    const sensors = await daemonRequest<HostSensors>(socket, 'GET', '/v1/host/sensors');
    return req.json ? JSON.stringify(sensors, null, 2) : renderSensors(sensors);
  }
  if (req.verb === 'history') {
    const nowMs = Date.now();
    const history = await daemonRequest<HostHistory>(socket, 'GET', `/v1/host/history${historyQuery(req, nowMs)}`);
    return req.json ? JSON.stringify(history, null, 2) : renderHostHistory(history, { lastMs: req.lastMs, nowMs });
  }
  const first = await daemonRequest<HostStatus>(socket, 'GET', '/v1/status');
  if (req.verb === 'show') return req.json ? JSON.stringify(first, null, 2) : renderHostShow(first);
  const answers = [first, ...(await askOtherLabHosts<HostStatus>(target, '/v1/status')).map((a) => a.body)];
  if (req.json) return JSON.stringify(req.verb === 'status' ? first : answers, null, 2);
  return req.verb === 'status' ? renderStatus(answers) : renderHostTable(answers);
}

const ACTIONS: Readonly<Record<HostAction, [string, unknown]>> = {
  'maintenance-on': ['/v1/host/maintenance', { on: true }],
  'maintenance-off': ['/v1/host/maintenance', { on: false }],
  repaired: ['/v1/host/repaired', undefined],
  'force-takeover': ['/v1/host/force-takeover', undefined],
};

const DONE: Readonly<Record<HostAction, string>> = {
  'maintenance-on': 'maintenance on: its protected VMs move to the peer',
  'maintenance-off': 'maintenance off',
  repaired: 'marked repaired: the down verdict and fault history are cleared',
  'force-takeover': 'takeover forced: the peer is treated as dead',
};

function actionWords(a: HostAction): string {
  return a.startsWith('maintenance') ? 'maintenance' : a;
}

/** Parses a verb's options with the daemon-choosing ones every verb takes. */
function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: readonly string[], options: O = {} as O) {
  try {
    return parseArgs({ args: [...argv], options: { ...WHERE_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${HOST_USAGE}`);
  }
}
