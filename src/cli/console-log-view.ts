/**
 * How `lockstep vm console-log` shows a `GET /v1/vms/NAME/console-log` answer: one line saying whose log it
 * is, from which host, of which instance and how much of it, then the guest's text as the daemon cleaned it.
 * `--json` passes the answer through untouched. Pure.
 */
import { formatBytes } from './vm-view.js';

/** The daemon's answer (docs/api.md#console-log). */
export interface ConsoleLog {
  vm: string;
  host: string;
  here: boolean;
  running: boolean;
  size: number;
  bytes: number;
  truncated: boolean;
  text: string;
}

export function renderConsoleLog(log: ConsoleLog): string {
  if (!log.here) return `VM ${log.vm}: no console log on this host (${log.host}): the host that runs it has it`;
  const instance = log.running ? 'running here' : 'its last run here, not running here now';
  const amount = log.truncated ? `the last ${formatBytes(log.bytes)} of ${formatBytes(log.size)}, earlier lines left out` : `all ${formatBytes(log.size)}`;
  const header = `console log of VM ${log.vm} on ${log.host} (${instance}): ${amount}`;
  // The line printed adds a newline of its own: a log's final one would show as an empty line.
  return log.text === '' ? header : `${header}\n${log.text.replace(/\n$/, '')}`;
}
