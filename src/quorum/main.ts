/**
 * `lockstep-quorum`: the quorum server on a third machine. Three verbs:
 *
 *   init    the server's own CA and certificate (once)
 *   enroll  trust a pair's CA for that pair (once per pair)
 *   serve   grant epochs, one line of log per decision
 *
 * Exit codes: 0 done, 1 could not be carried out, 2 the command itself was wrong.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { fingerprint } from '../pki/pki.js';
import { describePriority, raiseServicePriority } from '../platform/priority.js';
import { describeError, isLockstepError, LockstepError, type ErrorCode } from '../util/errors.js';
import { QUORUM_SERVER_DEFAULTS, QuorumServer } from './server.js';
import { enrollPair, initServerState, loadServerIdentity } from './state.js';

export const QUORUM_USAGE = `usage:
  lockstep-quorum init   --state DIR --name NAME --ip ADDR [--ip ADDR…] [--dns NAME…]
      make the server's CA and certificate (NAME: [a-z0-9][a-z0-9-]{0,62}; ADDR: what hosts connect to).
      Give the printed CA certificate to the pairs' hosts.
  lockstep-quorum enroll --state DIR --pair ID --ca FILE
      serve pair ID: hosts with certificates signed by the pair CA in FILE may ask for it.
  lockstep-quorum serve  --state DIR --listen ADDR:PORT [--lease-ms N]
      grant epochs (lease ${QUORUM_SERVER_DEFAULTS.leaseMs} ms unless given; the hosts must use the same).
      SIGHUP reloads enrolled pairs (also done every ${QUORUM_SERVER_DEFAULTS.reloadIntervalMs / 1000} s); SIGTERM stops.`;

const USAGE_CODES: readonly ErrorCode[] = ['INVALID_ARGUMENT', 'INVALID_CERTIFICATE'];

export async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  try {
    switch (verb) {
      case 'init':
        return await init(rest);
      case 'enroll':
        return await enroll(rest);
      case 'serve':
        return await serve(rest);
      case 'help':
      case '--help':
      case '-h':
        console.log(QUORUM_USAGE);
        return 0;
      case undefined:
        console.error(QUORUM_USAGE);
        return 2;
      default:
        throw new LockstepError('INVALID_ARGUMENT', `unknown command '${verb}'`);
    }
  } catch (e) {
    if (isLockstepError(e)) {
      const usage = USAGE_CODES.includes(e.code);
      console.error(`lockstep-quorum: ${e.code}: ${e.message}${usage ? `\n${QUORUM_USAGE}` : ''}`);
      return usage ? 2 : 1;
    }
    console.error(`lockstep-quorum: internal error (a bug — please report it): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}

async function init(argv: string[]): Promise<number> {
  const v = options(argv, { state: { type: 'string' }, name: { type: 'string' }, ip: { type: 'string', multiple: true }, dns: { type: 'string', multiple: true } });
  const state = required(v.state, '--state DIR');
  const name = required(v.name, '--name NAME');
  const ips = (v.ip as string[] | undefined) ?? [];
  if (ips.length === 0) throw new LockstepError('INVALID_ARGUMENT', '--ip ADDR is required (the address hosts connect to; it goes into the certificate)');
  const id = await initServerState(state, name, ips, (v.dns as string[] | undefined) ?? []);
  console.log(`initialized quorum server ${name} in ${state}`);
  console.log(`server CA certificate (configure the hosts with it): ${id.ca}`);
  console.log(`server CA sha256: ${await fingerprint(id.ca)}`);
  return 0;
}

async function enroll(argv: string[]): Promise<number> {
  const v = options(argv, { state: { type: 'string' }, pair: { type: 'string' }, ca: { type: 'string' } });
  const state = required(v.state, '--state DIR');
  const pair = required(v.pair, '--pair ID');
  const caFile = required(v.ca, '--ca FILE');
  let pem: string;
  try {
    pem = await readFile(caFile, 'utf8');
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', `cannot read ${caFile}: ${describeError(e)}`, { file: caFile }, { cause: e });
  }
  const r = await enrollPair(state, pair, pem);
  const what = { new: 'enrolled', same: 'already enrolled with this CA:', replaced: 'CA replaced (record kept) for' }[r.outcome];
  console.log(`${what} pair ${pair} (CA sha256 ${r.fingerprint})`);
  return 0;
}

async function serve(argv: string[]): Promise<number> {
  // First: the threads started from here on inherit it. A grant answered late is a fence on the pair.
  const priority = raiseServicePriority();
  const v = options(argv, { state: { type: 'string' }, listen: { type: 'string' }, 'lease-ms': { type: 'string' } });
  const state = required(v.state, '--state DIR');
  const { host, port } = parseListen(required(v.listen, '--listen ADDR:PORT'));
  let leaseMs: number = QUORUM_SERVER_DEFAULTS.leaseMs;
  if (v['lease-ms'] !== undefined) {
    leaseMs = Number(v['lease-ms']);
    if (!/^\d+$/.test(String(v['lease-ms'])) || !Number.isSafeInteger(leaseMs) || leaseMs < 1) {
      throw new LockstepError('INVALID_ARGUMENT', `--lease-ms ${String(v['lease-ms'])} is not a positive integer`);
    }
  }
  const { name } = await loadServerIdentity(state);
  const log = (line: string): void => console.log(`${new Date().toISOString()} ${name} ${line}`);
  const server = await QuorumServer.start({ stateDir: state, host, port, leaseMs, log });
  log(`listening on ${host.includes(':') ? `[${host}]` : host}:${server.port} (lease ${leaseMs} ms, ${server.pairStatus().length} pairs, pid ${process.pid})`);
  log(describePriority(priority));
  const onHup = (): void => {
    log('SIGHUP: reloading enrolled pairs');
    server.reload().catch((e: unknown) => log(`reload failed: ${describeError(e)}`));
  };
  process.on('SIGHUP', onHup);
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log(`${signal}: stopping`);
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  process.off('SIGHUP', onHup);
  await server.close();
  log('stopped');
  return 0;
}

type OptionSpec = Record<string, { type: 'string'; multiple?: boolean }>;

function options(argv: string[], spec: OptionSpec): Record<string, string | string[] | undefined> {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: true });
    if (positionals.length > 0) throw new Error(`unexpected argument '${positionals[0]}'`);
    return values as Record<string, string | string[] | undefined>;
  } catch (e) {
    throw new LockstepError('INVALID_ARGUMENT', describeError(e), {}, { cause: e });
  }
}

function required(v: string | string[] | undefined, what: string): string {
  if (typeof v !== 'string' || v === '') throw new LockstepError('INVALID_ARGUMENT', `${what} is required`);
  return v;
}

/** `127.0.0.1:7400`, `[::1]:7400`, `0.0.0.0:7400`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([0-9.]+):(\d{1,5})$/.exec(text);
  const host = m?.[1];
  const port = Number(m?.[2]);
  if (!m || !host || isIP(host) === 0 || !Number.isInteger(port) || port > 65535) {
    throw new LockstepError('INVALID_ARGUMENT', `--listen ${JSON.stringify(text)} is not ADDR:PORT (an IP address and a port, e.g. 0.0.0.0:7400)`);
  }
  return { host, port };
}
