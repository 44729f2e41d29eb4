/**
 * The client side of the FT output-commit bench (`ft-output-commit.ts`), run inside the bench's network
 * namespace: `node ft-output-client.js HOST PORT latency|connect|bulk COUNT` prints one JSON line.
 *
 * - `latency`: COUNT sequential `last` requests on one open connection: each reply's round trip (ms);
 * - `connect`: COUNT times a new connection and one `last`: connect + request round trip (ms);
 * - `bulk`: COUNT `get 1` requests pipelined 8 deep on one connection: reply bytes per second.
 */
import { RecordConnection } from '../src/lab/record-client.js';

/** 8 replies of ~410 bytes fit the record service's 4 KiB reply backlog. 200 deep stalled the connection
 * here even with the NIC straight on its tap (no gate): a question for the record service, not this bench. */
const PIPELINE_DEPTH = 8;
const TIMEOUT_MS = 30_000;

async function main(): Promise<void> {
  const [host, portText, what, countText] = process.argv.slice(2);
  const port = Number(portText);
  const count = Number(countText);
  if (host === undefined || !Number.isInteger(port) || !Number.isInteger(count) || count <= 0) throw new Error('usage: ft-output-client HOST PORT latency|connect|bulk COUNT');
  const opts = { connectTimeoutMs: TIMEOUT_MS, requestTimeoutMs: TIMEOUT_MS };
  if (what === 'connect') {
    const ms: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      const c = new RecordConnection(host, port, opts);
      await c.connect();
      await c.request('last');
      ms.push(performance.now() - started);
      c.close();
    }
    console.log(JSON.stringify({ ms }));
    return;
  }
  const c = new RecordConnection(host, port, opts);
  await c.connect();
  await c.request('last');
  if (what === 'latency') {
    const ms: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await c.request('last');
      ms.push(performance.now() - started);
    }
    console.log(JSON.stringify({ ms }));
  } else if (what === 'bulk') {
    let bytes = 0;
    let sent = 0;
    let sample = '';
    const started = performance.now();
    const one = async (): Promise<void> => {
      while (sent < count) {
        sent++;
        const reply = await c.request('get 1');
        sample = reply.slice(0, 40);
        bytes += Buffer.byteLength(reply) + 1;
      }
    };
    await Promise.all(Array.from({ length: PIPELINE_DEPTH }, one));
    const seconds = (performance.now() - started) / 1000;
    console.log(JSON.stringify({ bytes, seconds, mbPerS: bytes / 1e6 / seconds, sample }));
  } else {
    throw new Error(`unknown measurement ${what}`);
  }
  c.close();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
