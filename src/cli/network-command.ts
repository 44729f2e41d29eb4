/**
 * `lockstep network list`: each host's networks (the A-Link paths, the management and the business network)
 * through lockstepd's local API (docs/cli.md). A host's interfaces are its own, and its lockstepd answers
 * only for them: `--host` (or `--socket`) names the host; in the lab with none named, both hosts are asked.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import type { NetworkStatus } from '../daemon/networks.js';
import { askOtherLabHosts, resolveTarget, type Target } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { renderNetworkTable } from './network-view.js';
import { EXIT } from './output.js';

export const NETWORK_USAGE = `lockstep network — each host's networks: A-Link paths, management, business

  lockstep network list     interface, state, speed, MAC, MTU, bandwidth in use, an A-Link path's round trip

Takes --json (the API's JSON: every asked host's networks, each naming its host) and --socket PATH or
--host host1|host2 as \`lockstep vm\` does. In the lab with no host named, both hosts are asked.`;

export type NetworkRequest = { verb: 'help'; exit: number } | (Common & { verb: 'list' });

export function parseNetworkCommand(argv: readonly string[]): NetworkRequest {
  const [verb, ...rest] = argv;
  switch (verb) {
    case undefined:
    case 'help':
    case '--help':
      return { verb: 'help', exit: verb === undefined ? EXIT.usage : EXIT.ok };
    case 'list': {
      const { values, positionals } = parse(rest);
      if (positionals.length !== 0) throw new LockstepError('INVALID_ARGUMENT', 'usage: lockstep network list [--json] [--host NAME | --socket PATH]');
      return { verb, ...commonOptions(values) };
    }
    default:
      throw new LockstepError('INVALID_ARGUMENT', `unknown network command '${verb}'\n\n${NETWORK_USAGE}`);
  }
}

export async function networkCommand(argv: string[]): Promise<number> {
  const req = parseNetworkCommand(argv);
  if (req.verb === 'help') {
    console.log(NETWORK_USAGE);
    return req.exit;
  }
  console.log(renderNetworkAnswer(req.json, await carryOut(await resolveTarget(req.where))));
  return EXIT.ok;
}

/** Every asked host's networks, the asked daemon's first; `silent`: lab hosts asked that did not answer. */
export interface NetworkAnswer {
  networks: NetworkStatus[];
  silent: string[];
}

export function renderNetworkAnswer(json: boolean, a: NetworkAnswer): string {
  return json ? JSON.stringify(a.networks, null, 2) : renderNetworkTable(a.networks, a.silent);
}

async function carryOut(target: Target): Promise<NetworkAnswer> {
  const first = await daemonRequest<NetworkStatus[]>(target.daemon.socket, 'GET', '/v1/networks');
  const others = await askOtherLabHosts<NetworkStatus[]>(target, '/v1/networks');
  const asked = target.kind === 'lab' && target.anyHost ? target.pair.map((d) => d.host).filter((h) => h !== target.daemon.host) : [];
  return { networks: [...first, ...others.flatMap((o) => o.body)], silent: asked.filter((h) => !others.some((o) => o.host === h)) };
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: WHERE_OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${NETWORK_USAGE}`);
  }
}
