/**
 * The lab's append load (`src/lab/append-load.ts`: one append in flight, every answer logged in the same
 * JSON lines) with short timeouts, for timing an outage. The lab's load waits 3 s for a connection and for
 * each reply, which is right for a test that checks every acknowledged record but quantizes "when did the
 * guest answer again" to 3 s steps: an append lost with its host waits out the whole timeout, and while the
 * VM boots elsewhere each connect attempt waits the whole timeout too. Here a connect is given up after
 * `CONNECT_TIMEOUT_MS` and retried at once, so the first acknowledged append after a failover is seen within
 * about that.
 *
 *   node dist/bench/probe-load.js --out FILE [--reconnect] [--prefix P] HOST PORT   (runs until SIGTERM)
 */
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import type { LoadEvent } from '../src/lab/append-load.js';
import { RecordConnection } from '../src/lab/record-client.js';
import { describeError } from '../src/util/errors.js';
import { sleep } from '../src/util/proc.js';

const CONNECT_TIMEOUT_MS = 250;
const REQUEST_TIMEOUT_MS = 1000;
const RECONNECT_PAUSE_MS = 20;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { out: { type: 'string' }, reconnect: { type: 'boolean' }, prefix: { type: 'string' } } });
  const [host, portText] = positionals;
  const out = values.out;
  if (!out || host === undefined || !portText) {
    process.stderr.write('usage: probe-load --out FILE [--reconnect] [--prefix P] HOST PORT\n');
    return 2;
  }
  let stop = false;
  process.once('SIGTERM', () => (stop = true));
  process.once('SIGINT', () => (stop = true));
  const note = (e: LoadEvent): void => appendFileSync(out, `${JSON.stringify(e)}\n`);
  const prefix = values.prefix ?? 'probe';
  let n = 0;
  while (!stop) {
    const conn = new RecordConnection(host, Number(portText), { connectTimeoutMs: CONNECT_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS });
    try {
      await conn.connect();
      note({ t: 'connected', atMs: Date.now() });
      while (!stop) {
        const text = `${prefix}-${++n}`;
        const sentAt = performance.now();
        try {
          const reply = await conn.request(`append ${text}`);
          const m = /^ok (\d+)$/.exec(reply);
          if (!m) throw new Error(`unexpected reply '${reply}' to an append`);
          note({ t: 'ack', atMs: Date.now(), seq: Number(m[1]), text, latencyMs: performance.now() - sentAt });
        } catch (e) {
          note({ t: 'failed', atMs: Date.now(), text, error: describeError(e) });
          throw e;
        }
      }
    } catch (e) {
      if (!values.reconnect) {
        note({ t: 'ended', atMs: Date.now(), why: `connection lost: ${describeError(e)}` });
        return 0;
      }
      await sleep(RECONNECT_PAUSE_MS);
    } finally {
      conn.close();
    }
  }
  note({ t: 'ended', atMs: Date.now(), why: 'stopped' });
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
