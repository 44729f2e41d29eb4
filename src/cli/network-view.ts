/**
 * How `lockstep network list` shows lockstepd's `GET /v1/networks` answer: one row per network of each host
 * of the pair, the asked host's first, with its interface, state, speed, MAC, MTU, the bandwidth in use and
 * an A-Link path's round trip; a note when the peer's are not shown, and why. The answer is the daemon's
 * own type; `--json` passes it through untouched. Pure.
 */
import type { NetworkStatus } from '../daemon/networks.js';
import type { PairNetworks } from '../daemon/network-routes.js';
import { table } from './output.js';
import { formatBytes } from './vm-view.js';

/** `direct`: the peer's own networks asked of it directly (the lab) since its section was unavailable. */
export function renderNetworkTable(pair: PairNetworks, direct: readonly NetworkStatus[] | null = null): string {
  const peer = pair.peer;
  const notes: string[] = [];
  let networks: readonly NetworkStatus[] = pair.networks;
  if (peer.state === 'available') networks = [...networks, ...peer.networks];
  else if (direct !== null) {
    networks = [...networks, ...direct];
    notes.push(`${peer.host}'s networks asked of ${peer.host} directly: ${pair.host} could not get them (${peer.reason})`);
  } else notes.push(`${peer.host}'s networks are not shown: ${peer.reason}`);
  if (networks.length === 0) return ['no networks', ...notes].join('\n');
  const rows = networks.map((n) => [
    n.host,
    n.name,
    n.role,
    n.interface === null ? '-' : n.bridge === null ? n.interface : `${n.interface} (bridge ${n.bridge})`,
    n.state,
    n.speedMbps === null ? (n.state === 'up' || n.state === 'down' ? 'unknown' : '-') : `${n.speedMbps} Mb/s`,
    n.mac ?? '-',
    n.mtu === null ? '-' : String(n.mtu),
    rate(n.bandwidth.rxBytesPerSec),
    rate(n.bandwidth.txBytesPerSec),
    roundTrip(n),
    n.state === 'up' ? '-' : n.detail,
  ]);
  return [table(['host', 'network', 'role', 'interface', 'state', 'speed', 'mac', 'mtu', 'rx', 'tx', 'round trip', 'detail'], rows), ...notes].join('\n');
}

function rate(bytesPerSec: number | null): string {
  return bytesPerSec === null ? '-' : `${formatBytes(bytesPerSec)}/s`;
}

/** An A-Link path's smoothed round trip; whether the A-Link has the path at all, when it does not. */
function roundTrip(n: NetworkStatus): string {
  if (n.alink === null) return '';
  if (n.alink.connected === null) return 'not paired';
  if (!n.alink.connected) return 'not connected';
  return n.alink.rttMs === null ? 'not measured' : `${n.alink.rttMs.toFixed(2)} ms`;
}
