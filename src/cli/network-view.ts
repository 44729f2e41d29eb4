/**
 * How `lockstep network list` shows lockstepd's `GET /v1/networks` answers: one row per network of each host
 * asked, with its interface, state, speed, MAC, MTU, the bandwidth in use and an A-Link path's round trip.
 * The answers are the daemon's own type; `--json` passes them through untouched. Pure.
 */
import type { NetworkStatus } from '../daemon/networks.js';
import { table } from './output.js';
import { formatBytes } from './vm-view.js';

export function renderNetworkTable(networks: readonly NetworkStatus[], silent: readonly string[] = []): string {
  const notes = silent.map((h) => `${h} did not answer: its networks are not shown`);
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
