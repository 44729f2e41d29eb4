/**
 * `lockstep network list`: the pair's networks (the A-Link paths, the management and the business network
 * of each host) through lockstepd's local API (docs/cli.md). The asked host answers for both: its own, and
 * the peer's as the peer reports them over the A-Link. `--host` (or `--socket`) names the host asked; in
 * the lab with none named, when the peer's view is unavailable the other host is asked for its own directly.
 */
import { parseArgs } from 'node:util';
import { LockstepError } from '../util/errors.js';
import { daemonRequest } from '../daemon/api-client.js';
import type { NetworkStatus } from '../daemon/networks.js';
import type { PairNetworks } from '../daemon/network-routes.js';
import { askOtherLabHosts, resolveTarget, type Target } from './daemon-target.js';
import { commonOptions, WHERE_OPTIONS, type Common } from './vm-command.js';
import { renderNetworkTable } from './network-view.js';
import { EXIT } from './output.js';

export const NETWORK_USAGE = `lockstep network — the pair's networks: each host's A-Link paths, management, business

  lockstep network list     interface, state, speed, MAC, MTU, bandwidth in use, an A-Link path's round trip

The asked host answers for both hosts: its own networks and the peer's, which the peer reports over the
A-Link (or why they are unavailable). Takes --json (the asked host's answer: {host, networks, peer}) and
--socket PATH or --host host1|host2 as \`lockstep vm\` does. In the lab with no host named, a peer whose
view is unavailable is asked for its own networks directly.`;

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

/**
 * The asked host's answer; `direct`: in the lab, the peer's own networks asked of it directly because its
 * section was unavailable (null: not asked, or it did not answer).
 */
export interface NetworkAnswer {
  pair: PairNetworks;
  direct: NetworkStatus[] | null;
}

export function renderNetworkAnswer(json: boolean, a: NetworkAnswer): string {
  return json ? JSON.stringify(a.pair, null, 2) : renderNetworkTable(a.pair, a.direct);
}

async function carryOut(target: Target): Promise<NetworkAnswer> {
  const pair = await daemonRequest<PairNetworks>(target.daemon.socket, 'GET', '/v1/networks');
  if (pair.peer.state === 'available') return { pair, direct: null };
  const others = await askOtherLabHosts<PairNetworks>(target, '/v1/networks');
  const direct = others.find((o) => o.host === pair.peer.host);
  return { pair, direct: direct ? direct.body.networks : null };
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: WHERE_OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `${(e as Error).message}\n\n${NETWORK_USAGE}`);
  }
}
