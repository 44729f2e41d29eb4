/**
 * A client for the guest's record service (protocol in docs/guest.md): one request line, one reply line.
 *
 * `recordRequest` makes one connection per request. `RecordConnection` keeps one TCP connection open for many
 * requests, which is what a fault-tolerance test needs: a connection that survives a failover shows the
 * guest carried on where it was, and a lost connection is reported as its own error code.
 *
 * Also a CLI, because the lab runs it inside the client network namespace (with nsenter):
 *   node dist/src/lab/record-client.js [--timeout-ms N] HOST PORT LINE…   (prints one reply per line)
 */
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { pathToFileURL } from 'node:url';
import { LockstepError, describeError } from '../util/errors.js';

export const DEFAULT_RECORD_TIMEOUT_MS = 5_000;
/** Longer than any reply the service sends (its own limit is 512 bytes): more means we are not talking to it. */
const REPLY_MAX_BYTES = 4_096;
/** Requests sent and not yet answered on one connection; the service itself reads one line at a time. */
const PENDING_MAX = 256;

export interface RecordConnectionOptions {
  /** How long `connect` may take. */
  connectTimeoutMs?: number;
  /** How long each request may wait for its reply. */
  requestTimeoutMs?: number;
}

interface Pending {
  line: string;
  resolve: (reply: string) => void;
  reject: (e: LockstepError) => void;
  timer: NodeJS.Timeout;
}

/**
 * One TCP connection to a record service. Requests may be issued concurrently: they are pipelined and the
 * replies, which the service sends in order, are matched to them in order.
 *
 * Errors: `RECORD_CONNECTION_LOST` when the connection cannot be made, closes or fails (every waiting request
 * gets it); `RECORD_TIMEOUT` when a reply is late, which also closes the connection, because a reply that
 * arrived after that would be taken as the answer to the next request; `RECORD_SERVICE` when the service sends
 * something that is not a reply line.
 */
export class RecordConnection {
  private socket: net.Socket | undefined;
  private buffered = '';
  /** Decodes UTF-8 across chunk boundaries, where a multi-byte character may be split. */
  private readonly decoder = new StringDecoder('utf8');
  private readonly pending: Pending[] = [];
  private closedBecause: LockstepError | undefined;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;

  constructor(
    readonly host: string,
    readonly port: number,
    opts: RecordConnectionOptions = {},
  ) {
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_RECORD_TIMEOUT_MS;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_RECORD_TIMEOUT_MS;
  }

  /** Opens the connection; resolves once TCP is connected. */
  connect(): Promise<void> {
    if (this.socket) return Promise.reject(this.lost('connect was called twice'));
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port });
      this.socket = socket;
      const timer = setTimeout(() => {
        const e = this.error('RECORD_TIMEOUT', `no connection within ${this.connectTimeoutMs} ms`);
        this.shutDown(e);
        reject(e);
      }, this.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.setNoDelay(true);
        resolve();
      });
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      socket.on('error', (e) => {
        clearTimeout(timer);
        const lost = this.lost(describeError(e), e);
        this.shutDown(lost);
        reject(lost);
      });
      socket.on('close', () => {
        clearTimeout(timer);
        const lost = this.lost('the service closed the connection');
        this.shutDown(lost);
        reject(lost);
      });
    });
  }

  /** Sends one request line (without its newline) and resolves with the reply line. */
  request(line: string): Promise<string> {
    if (line.includes('\n')) {
      return Promise.reject(new LockstepError('INVALID_ARGUMENT', 'a record request is one line: it cannot contain a newline', { line }));
    }
    if (this.closedBecause) return Promise.reject(this.closedBecause);
    if (!this.socket || this.socket.connecting) return Promise.reject(this.lost('request before connect() resolved'));
    if (this.pending.length >= PENDING_MAX) {
      return Promise.reject(this.error('RECORD_SERVICE', `more than ${PENDING_MAX} requests waiting for replies`));
    }
    const socket = this.socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.shutDown(this.error('RECORD_TIMEOUT', `no reply to '${line}' within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this.pending.push({ line, resolve, reject, timer });
      socket.write(line + '\n');
    });
  }

  /** Closes the connection; requests still waiting fail with `RECORD_CONNECTION_LOST`. */
  close(): void {
    this.shutDown(this.lost('closed by the client'));
  }

  /** Whether the connection can still carry requests. */
  get isOpen(): boolean {
    return this.socket !== undefined && this.closedBecause === undefined;
  }

  private onData(chunk: Buffer): void {
    this.buffered += this.decoder.write(chunk);
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const reply = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const waiting = this.pending.shift();
      if (!waiting) {
        // The service only speaks when spoken to, except to refuse a connection over its client limit.
        this.shutDown(this.error('RECORD_SERVICE', `unexpected line from the service: '${reply}'`));
        return;
      }
      clearTimeout(waiting.timer);
      waiting.resolve(reply);
    }
    if (this.buffered.length > REPLY_MAX_BYTES) {
      this.shutDown(this.error('RECORD_SERVICE', `a reply longer than ${REPLY_MAX_BYTES} bytes: not a record service`));
    }
  }

  /** Ends the connection once, failing every waiting request with `reason`. */
  private shutDown(reason: LockstepError): void {
    if (this.closedBecause) return;
    this.closedBecause = reason;
    this.socket?.destroy();
    for (const waiting of this.pending.splice(0)) {
      clearTimeout(waiting.timer);
      waiting.reject(reason);
    }
  }

  private lost(why: string, cause?: unknown): LockstepError {
    return this.error('RECORD_CONNECTION_LOST', why, cause);
  }

  private error(code: 'RECORD_CONNECTION_LOST' | 'RECORD_TIMEOUT' | 'RECORD_SERVICE', why: string, cause?: unknown): LockstepError {
    return new LockstepError(
      code,
      `record service at ${this.host}:${this.port}: ${why}`,
      { host: this.host, port: this.port, waiting: this.pending.length },
      { cause },
    );
  }
}

/** One connection, one request line, one reply line. */
export async function recordRequest(host: string, port: number, line: string, timeoutMs = DEFAULT_RECORD_TIMEOUT_MS): Promise<string> {
  const conn = new RecordConnection(host, port, { connectTimeoutMs: timeoutMs, requestTimeoutMs: timeoutMs });
  try {
    await conn.connect();
    return await conn.request(line);
  } finally {
    conn.close();
  }
}

/* ------------------------------------------------------------------ CLI */

interface CliArgs {
  host: string;
  port: number;
  lines: string[];
  timeoutMs: number;
}

function parseCliArgs(argv: readonly string[]): CliArgs {
  const args = [...argv];
  let timeoutMs = DEFAULT_RECORD_TIMEOUT_MS;
  if (args[0] === '--timeout-ms') {
    timeoutMs = Number(args[1]);
    args.splice(0, 2);
  }
  const [host, portText, ...lines] = args;
  const port = Number(portText);
  if (host === undefined || !Number.isInteger(port) || port < 1 || port > 65535 || lines.length === 0 || !(timeoutMs > 0)) {
    throw new LockstepError('INVALID_ARGUMENT', 'usage: record-client [--timeout-ms N] HOST PORT LINE…', { argv });
  }
  return { host, port, lines, timeoutMs };
}

/** Sends each line over one connection and prints each reply; exit status 0 even for `error …` replies. */
async function cli(argv: readonly string[]): Promise<number> {
  try {
    const args = parseCliArgs(argv);
    const conn = new RecordConnection(args.host, args.port, { connectTimeoutMs: args.timeoutMs, requestTimeoutMs: args.timeoutMs });
    await conn.connect();
    try {
      for (const line of args.lines) process.stdout.write((await conn.request(line)) + '\n');
    } finally {
      conn.close();
    }
    return 0;
  } catch (e) {
    process.stderr.write(`record-client: ${describeError(e)}\n`);
    return 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await cli(process.argv.slice(2));
}
