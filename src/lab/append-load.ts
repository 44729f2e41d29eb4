/**
 * A client that appends records to a guest's record service without pause and writes down every answer:
 * the load of the lab's failover tests and benchmarks. Each acknowledged append (`ok SEQ`) is a record the
 * guest promised is durable; after a failover, a migration or a resync, every one of them must still be
 * there with the same text (`checkAcknowledged`).
 *
 * One request is in flight at a time, so the answers say exactly when the service stopped and started
 * answering. With `reconnect`, a lost connection is opened again (an HA failover restarts the guest); without
 * it, the first lost connection ends the run (a live migration must keep the connection open).
 *
 * Run as a program in the lab's client namespace: `node append-load.js --out FILE [--reconnect]
 * [--prefix P] [--pause-ms N] [--timeout-ms N] HOST PORT`; it runs until SIGTERM and writes one JSON line
 * per event to FILE. `--timeout-ms` bounds each request (default 3 s): an FT failover is a pause of the
 * connection, not its end, and takes longer than that.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { RecordConnection } from './record-client.js';
import { LockstepError, describeError } from '../util/errors.js';
import { sleep } from '../util/proc.js';

/** One line of the load's log: `atMs` is wall-clock time (comparable with the fault's time in the test). */
export type LoadEvent =
  | { t: 'connected'; atMs: number }
  | { t: 'ack'; atMs: number; seq: number; text: string; latencyMs: number }
  | { t: 'failed'; atMs: number; text: string; error: string }
  | { t: 'ended'; atMs: number; why: string };

const DEFAULT_REQUEST_TIMEOUT_MS = 3000;
const RECONNECT_PAUSE_MS = 50;

export interface LoadOptions {
  host: string;
  port: number;
  out: string;
  reconnect: boolean;
  prefix: string;
  pauseMs: number;
  /** Bound on connecting and on each request (default 3 s). */
  requestTimeoutMs?: number;
  stopped: () => boolean;
}

export async function runLoad(o: LoadOptions): Promise<void> {
  const note = (e: LoadEvent): void => appendFileSync(o.out, `${JSON.stringify(e)}\n`);
  let n = 0;
  while (!o.stopped()) {
    const timeoutMs = o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    const conn = new RecordConnection(o.host, o.port, { connectTimeoutMs: timeoutMs, requestTimeoutMs: timeoutMs });
    try {
      await conn.connect();
      note({ t: 'connected', atMs: Date.now() });
      while (!o.stopped()) {
        const text = `${o.prefix}-${++n}`;
        const sentAt = performance.now();
        try {
          const reply = await conn.request(`append ${text}`);
          const m = /^ok (\d+)$/.exec(reply);
          if (!m) throw new LockstepError('RECORD_SERVICE', `unexpected reply '${reply}' to an append`);
          note({ t: 'ack', atMs: Date.now(), seq: Number(m[1]), text, latencyMs: performance.now() - sentAt });
        } catch (e) {
          note({ t: 'failed', atMs: Date.now(), text, error: describeError(e) });
          throw e;
        }
        if (o.pauseMs > 0) await sleep(o.pauseMs);
      }
    } catch (e) {
      if (!o.reconnect) {
        note({ t: 'ended', atMs: Date.now(), why: `connection lost: ${describeError(e)}` });
        return;
      }
      await sleep(RECONNECT_PAUSE_MS);
    } finally {
      conn.close();
    }
  }
  note({ t: 'ended', atMs: Date.now(), why: 'stopped' });
}

export function readLoadLog(file: string): LoadEvent[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as LoadEvent);
}

/** What a load's log says about an outage: the longest gap between two acknowledged appends around `faultAtMs`. */
export function outageAfter(events: readonly LoadEvent[], faultAtMs: number): { lastAckBeforeMs: number | null; firstAckAfterMs: number | null } {
  const acks = events.filter((e): e is Extract<LoadEvent, { t: 'ack' }> => e.t === 'ack');
  const before = acks.filter((a) => a.atMs <= faultAtMs).at(-1);
  const after = acks.find((a) => a.atMs > faultAtMs);
  return { lastAckBeforeMs: before ? faultAtMs - before.atMs : null, firstAckAfterMs: after ? after.atMs - faultAtMs : null };
}

/**
 * Checks every acknowledged append against the service: `get(seq)` must return the same text. Returns the
 * problems (empty: every acknowledged record is there, unchanged). Two acks with one seq and different texts
 * are reported too: the service handed a seq out twice (a lost write and a reused slot).
 */
export async function checkAcknowledged(events: readonly LoadEvent[], get: (seq: number) => Promise<string>): Promise<string[]> {
  const problems: string[] = [];
  const bySeq = new Map<number, string>();
  for (const e of events) {
    if (e.t !== 'ack') continue;
    const earlier = bySeq.get(e.seq);
    if (earlier !== undefined && earlier !== e.text) problems.push(`seq ${e.seq} was acknowledged for '${earlier}' and again for '${e.text}'`);
    bySeq.set(e.seq, e.text);
  }
  for (const [seq, text] of bySeq) {
    const reply = await get(seq);
    if (reply !== `record ${seq} ${text}`) problems.push(`seq ${seq}: acknowledged '${text}', the service now says '${reply}'`);
  }
  return problems;
}

async function cli(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { out: { type: 'string' }, reconnect: { type: 'boolean' }, prefix: { type: 'string' }, 'pause-ms': { type: 'string' }, 'timeout-ms': { type: 'string' } },
    });
    const [host, portText] = positionals;
    const port = Number(portText);
    const pauseMs = Number(values['pause-ms'] ?? '0');
    const requestTimeoutMs = Number(values['timeout-ms'] ?? String(DEFAULT_REQUEST_TIMEOUT_MS));
    if (!values.out || host === undefined || !Number.isInteger(port) || port < 1 || port > 65535 || !(pauseMs >= 0) || !Number.isInteger(requestTimeoutMs) || requestTimeoutMs < 100) {
      throw new LockstepError('INVALID_ARGUMENT', 'usage: append-load --out FILE [--reconnect] [--prefix P] [--pause-ms N] [--timeout-ms N ≥ 100] HOST PORT');
    }
    let stop = false;
    process.once('SIGTERM', () => (stop = true));
    process.once('SIGINT', () => (stop = true));
    await runLoad({ host, port, out: values.out, reconnect: values.reconnect ?? false, prefix: values.prefix ?? 'load', pauseMs, requestTimeoutMs, stopped: () => stop });
    return 0;
  } catch (e) {
    process.stderr.write(`append-load: ${describeError(e)}\n`);
    return 2;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await cli(process.argv.slice(2));
}
