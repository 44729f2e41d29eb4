/**
 * A QMP (QEMU Machine Protocol) client over a unix socket.
 *
 * The protocol: QEMU greets with `{"QMP": {...}}`, the client sends `qmp_capabilities`, then commands
 * `{"execute", "arguments", "id"}`; QEMU answers each with `{"return"|"error", "id"}` in order, and sends
 * `{"event", "data", "timestamp"}` at any time in between. One JSON object per line.
 *
 * What this client promises:
 * - several commands may be in flight; answers are matched by `id`, never by order;
 * - every command ends: with its answer, a `QMP_ERROR` carrying QEMU's error class, a `QMP_TIMEOUT`, or the
 *   error that closed the connection (`QMP_DISCONNECTED`, or `QMP_PROTOCOL` when QEMU sent something that is
 *   not QMP). A command that timed out leaves the connection usable: its late answer is recognised and dropped;
 * - anything that is not QMP (invalid JSON, a line longer than `maxLineBytes`, an answer to a command never
 *   sent) closes the connection: a peer that breaks the protocol once cannot be trusted to frame the next
 *   answer right;
 * - `closed` resolves exactly once, with why.
 */
import net from 'node:net';
import { LockstepError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { LineSplitter } from '../util/line-splitter.js';

export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

export interface QmpGreeting {
  version: QmpVersion;
  capabilities: readonly string[];
}

export interface QmpEvent {
  event: string;
  data: Readonly<Record<string, unknown>>;
  /** QEMU's host clock when it emitted the event. */
  timestamp: { seconds: number; microseconds: number };
}

/** Why a connection ended: `client` (close() was called, or connect() gave up), `peer` (QEMU closed it,
 * exited or reset it), `protocol` (QEMU sent something that is not QMP), `socket-error` (any other socket
 * failure, e.g. ENOENT while connecting). */
export type QmpCloseCause = 'client' | 'peer' | 'protocol' | 'socket-error';

export interface QmpClosed {
  cause: QmpCloseCause;
  /** The error every pending command was rejected with. */
  error: LockstepError;
}

export interface QmpConnectOptions {
  /** Bound on connecting, reading the greeting and negotiating capabilities. */
  timeoutMs: number;
  /** Default bound on each command's answer; 30 s covers a loaded 2-core TCG host. */
  commandTimeoutMs?: number;
  /** Longest line accepted from QEMU. The largest real answer (`query-qmp-schema`) is ~200 KB. */
  maxLineBytes?: number;
  /** Subscribed before the greeting, so that no event can slip by between connect() and a later onEvent(). */
  onEvent?: QmpEventListener;
}

export interface ExecuteOptions {
  timeoutMs?: number;
}

export type QmpEventListener = (event: QmpEvent) => void;

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024;
/** More commands than this in flight means a caller is not awaiting them: a bug, not load. */
const MAX_IN_FLIGHT = 256;
/** Listeners beyond this are a leak (e.g. waitForEvent in a loop that never settles). */
const MAX_LISTENERS = 1024;
/** How much of an offending line an error quotes. */
const PREVIEW_CHARS = 200;
const ID_PREFIX = 'ls-';

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: LockstepError) => void;
  timer: NodeJS.Timeout;
}

type State = 'greeting' | 'negotiating' | 'ready' | 'closed';

export class QmpClient {
  private state: State = 'greeting';
  private readonly splitter: LineSplitter;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Set<QmpEventListener>();
  /** Waiters told when the connection ends (a Set, not `closed.then`, so settled waiters leave no trace). */
  private readonly closeWatchers = new Set<(c: QmpClosed) => void>();
  private nextId = 1;
  private greetingValue: QmpGreeting | undefined;
  private readonly greeted: Promise<QmpGreeting>;
  private resolveGreeted!: (g: QmpGreeting) => void;
  private rejectGreeted!: (e: LockstepError) => void;
  private closedInfo: QmpClosed | undefined;
  private resolveClosed!: (c: QmpClosed) => void;
  /** Resolves once, when the connection has ended, with why. Never rejects. */
  readonly closed: Promise<QmpClosed>;

  private constructor(
    private readonly socket: net.Socket,
    readonly socketPath: string,
    private readonly commandTimeoutMs: number,
    maxLineBytes: number,
  ) {
    this.splitter = new LineSplitter(maxLineBytes);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.greeted = new Promise((resolve, reject) => {
      this.resolveGreeted = resolve;
      this.rejectGreeted = reject;
    });
    // connect() awaits `greeted`; when it fails early the rejection is reported there, not as unhandled.
    this.greeted.catch(() => {});
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.fail('peer', disconnected(socketPath, 'QEMU closed the QMP connection')));
    socket.on('close', () => this.fail('peer', disconnected(socketPath, 'the QMP connection closed')));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      // A reset or broken pipe is QEMU going away with data in flight (kill -9): the peer ended it.
      const peerGone = e.code === 'ECONNRESET' || e.code === 'EPIPE';
      this.fail(peerGone ? 'peer' : 'socket-error', socketError(socketPath, e));
    });
  }

  /**
   * Connects, reads the greeting and negotiates capabilities. Throws `QMP_DISCONNECTED` when nothing listens
   * at `socketPath` (fields.errno says ENOENT or ECONNREFUSED, so callers can retry while QEMU starts),
   * `QMP_TIMEOUT` when QEMU does not greet in time (QEMU serves one QMP client per socket: a second one
   * waits, ungreeted, until the first leaves), `QMP_PROTOCOL` when what it sends is not QMP.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions): Promise<QmpClient> {
    assert(opts.timeoutMs > 0, 'QMP connect timeout must be positive');
    const socket = net.createConnection({ path: socketPath });
    const client = new QmpClient(
      socket,
      socketPath,
      opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
    );
    if (opts.onEvent) client.onEvent(opts.onEvent);
    const startedMs = Date.now();
    const timer = setTimeout(() => {
      client.fail(
        'client',
        new LockstepError('QMP_TIMEOUT', `QEMU did not complete the QMP handshake on ${socketPath} within ${opts.timeoutMs} ms`, {
          socketPath,
          timeoutMs: opts.timeoutMs,
        }),
      );
    }, opts.timeoutMs);
    try {
      await client.greeted;
      const remainingMs = Math.max(1, opts.timeoutMs - (Date.now() - startedMs));
      await client.send('qmp_capabilities', undefined, remainingMs);
      // QEMU may have gone in the same chunk as its answer: never mark a closed connection ready.
      if (client.closedInfo) throw client.closedInfo.error;
      client.state = 'ready';
      return client;
    } catch (e) {
      client.fail('client', disconnected(socketPath, 'QMP connect failed'));
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** What QEMU said about itself when we connected. */
  get greeting(): QmpGreeting {
    assert(this.greetingValue, 'greeting read before connect() finished');
    return this.greetingValue;
  }

  get version(): QmpVersion {
    return this.greeting.version;
  }

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  /**
   * Runs a QMP command and resolves with its `return` value. `T` is what the caller knows QEMU returns for
   * this command; it is not checked here.
   */
  execute<T = unknown>(command: string, args?: Readonly<Record<string, unknown>>, opts: ExecuteOptions = {}): Promise<T> {
    if (this.state !== 'ready') {
      return Promise.reject(this.closedInfo?.error ?? disconnected(this.socketPath, 'QMP is not connected'));
    }
    return this.send(command, args, opts.timeoutMs ?? this.commandTimeoutMs) as Promise<T>;
  }

  /**
   * Calls `listener` for every event until the returned function is called. A listener that throws is a
   * bug: the error is rethrown outside the socket's data path so that framing state stays consistent.
   */
  onEvent(listener: QmpEventListener): () => void {
    assert(this.listeners.size < MAX_LISTENERS, `more than ${MAX_LISTENERS} QMP event listeners: a leak`);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolves with the next event named `name` (for which `predicate` holds), or rejects with `QMP_TIMEOUT`
   * after `timeoutMs`, or with the closing error if the connection ends first. Start waiting *before* the
   * command that causes the event: events are not replayed.
   */
  waitForEvent(name: string, predicate: ((e: QmpEvent) => boolean) | undefined, timeoutMs: number): Promise<QmpEvent> {
    if (this.closedInfo) return Promise.reject(this.closedInfo.error);
    return new Promise<QmpEvent>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.closeWatchers.delete(onClose);
      };
      const onClose = (c: QmpClosed): void => {
        finish();
        reject(c.error);
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new LockstepError('QMP_TIMEOUT', `no QMP event ${name} within ${timeoutMs} ms`, {
            event: name,
            timeoutMs,
            socketPath: this.socketPath,
          }),
        );
      }, timeoutMs);
      const unsubscribe = this.onEvent((e) => {
        if (e.event !== name) return;
        let matches: boolean;
        try {
          matches = predicate ? predicate(e) : true;
        } catch (err) {
          finish();
          reject(err);
          return;
        }
        if (!matches) return;
        finish();
        resolve(e);
      });
      this.closeWatchers.add(onClose);
    });
  }

  /** Closes the connection; pending commands reject with `QMP_DISCONNECTED`. Resolves once it is closed. */
  async close(): Promise<QmpClosed> {
    this.fail('client', disconnected(this.socketPath, 'QMP connection closed by Lockstep'));
    return this.closed;
  }

  private send(command: string, args: Readonly<Record<string, unknown>> | undefined, timeoutMs: number): Promise<unknown> {
    assert(this.pending.size < MAX_IN_FLIGHT, `more than ${MAX_IN_FLIGHT} QMP commands in flight: callers must await them`);
    assert(timeoutMs > 0, 'QMP command timeout must be positive');
    if (this.state === 'closed') {
      return Promise.reject(this.closedInfo?.error ?? disconnected(this.socketPath, 'QMP is not connected'));
    }
    const id = `${ID_PREFIX}${this.nextId++}`;
    const request: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) request['arguments'] = args;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // The answer may still come; it is then recognised as late (its id is below nextId) and dropped.
        this.pending.delete(id);
        reject(
          new LockstepError('QMP_TIMEOUT', `QEMU did not answer ${command} within ${timeoutMs} ms`, {
            command,
            timeoutMs,
            socketPath: this.socketPath,
          }),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      this.socket.write(JSON.stringify(request) + '\n');
    });
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    const { lines, overflow } = this.splitter.push(chunk);
    for (const line of lines) {
      this.onLine(line);
      if (this.closedInfo) return; // that line broke the protocol: ignore the rest
    }
    if (overflow) {
      this.fail(
        'protocol',
        protocolError(this.socketPath, `QEMU sent a line longer than ${this.splitter.maxLineBytes} bytes`, {
          maxLineBytes: this.splitter.maxLineBytes,
        }),
      );
    }
  }

  private onLine(raw: Buffer): void {
    const text = raw.toString('utf8').replace(/\r$/, '');
    if (text.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      this.fail('protocol', protocolError(this.socketPath, 'QEMU sent invalid JSON', { line: preview(text) }));
      return;
    }
    if (!isRecord(message)) {
      this.fail('protocol', protocolError(this.socketPath, 'QEMU sent JSON that is not an object', { line: preview(text) }));
      return;
    }
    if ('event' in message) {
      // Also before the greeting: a client that connects while QEMU starts its guest can be sent the
      // RESUME of that start before the greeting (QEMU queues the greeting on the connect event, but
      // broadcasts the event at once). It is a well-formed event, not a broken protocol.
      this.onEventMessage(message, text);
    } else if (this.state === 'greeting') {
      this.onGreeting(message, text);
    } else if ('return' in message || 'error' in message) {
      this.onAnswer(message, text);
    } else {
      this.fail('protocol', protocolError(this.socketPath, 'QEMU sent an object that is not a QMP message', { line: preview(text) }));
    }
  }

  private onGreeting(message: Record<string, unknown>, text: string): void {
    const qmp = message['QMP'];
    const version = isRecord(qmp) ? qmp['version'] : undefined;
    const qemu = isRecord(version) ? version['qemu'] : undefined;
    const capabilities = isRecord(qmp) ? qmp['capabilities'] : undefined;
    if (
      !isRecord(qmp) ||
      !isRecord(version) ||
      !isRecord(qemu) ||
      typeof qemu['major'] !== 'number' ||
      typeof qemu['minor'] !== 'number' ||
      typeof qemu['micro'] !== 'number' ||
      !Array.isArray(capabilities) ||
      !capabilities.every((c): c is string => typeof c === 'string')
    ) {
      this.fail('protocol', protocolError(this.socketPath, 'QEMU did not start with a QMP greeting', { line: preview(text) }));
      return;
    }
    this.greetingValue = {
      version: {
        qemu: { major: qemu['major'], minor: qemu['minor'], micro: qemu['micro'] },
        package: typeof version['package'] === 'string' ? version['package'] : '',
      },
      capabilities,
    };
    this.state = 'negotiating';
    this.resolveGreeted(this.greetingValue);
  }

  private onEventMessage(message: Record<string, unknown>, text: string): void {
    const name = message['event'];
    const data = message['data'] ?? {};
    const ts = message['timestamp'];
    if (
      typeof name !== 'string' ||
      !isRecord(data) ||
      !isRecord(ts) ||
      typeof ts['seconds'] !== 'number' ||
      typeof ts['microseconds'] !== 'number'
    ) {
      this.fail('protocol', protocolError(this.socketPath, 'QEMU sent a malformed event', { line: preview(text) }));
      return;
    }
    const event: QmpEvent = { event: name, data, timestamp: { seconds: ts['seconds'], microseconds: ts['microseconds'] } };
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (e) {
        // A listener's bug must not corrupt framing; surface it where it crashes the process.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  private onAnswer(message: Record<string, unknown>, text: string): void {
    const id = message['id'];
    const entry = typeof id === 'string' ? this.pending.get(id) : undefined;
    if (!entry) {
      if (typeof id === 'string' && isLateId(id, this.nextId)) return; // the answer to a command that timed out
      this.fail('protocol', protocolError(this.socketPath, 'QEMU answered a command that was not sent', { line: preview(text) }));
      return;
    }
    this.pending.delete(id as string);
    clearTimeout(entry.timer);
    if ('error' in message) {
      const err = message['error'];
      const errorClass = isRecord(err) && typeof err['class'] === 'string' ? err['class'] : 'Unknown';
      const desc = isRecord(err) && typeof err['desc'] === 'string' ? err['desc'] : preview(text);
      entry.reject(new LockstepError('QMP_ERROR', `QMP ${entry.command} failed: ${desc} (${errorClass})`, { command: entry.command, errorClass, desc }));
    } else {
      entry.resolve(message['return']);
    }
  }

  /** Ends the connection once; later calls are ignored, so the first reason is the one reported. */
  private fail(cause: QmpCloseCause, error: LockstepError): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closedInfo = { cause, error };
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(error);
    }
    this.pending.clear();
    this.rejectGreeted(error);
    this.socket.destroy();
    for (const watcher of [...this.closeWatchers]) watcher(this.closedInfo);
    this.closeWatchers.clear();
    this.resolveClosed(this.closedInfo);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isLateId(id: string, nextId: number): boolean {
  if (!id.startsWith(ID_PREFIX)) return false;
  const n = Number(id.slice(ID_PREFIX.length));
  return Number.isInteger(n) && n >= 1 && n < nextId;
}

function preview(text: string): string {
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}… (${text.length} chars)` : text;
}

function disconnected(socketPath: string, message: string): LockstepError {
  return new LockstepError('QMP_DISCONNECTED', `${message} (${socketPath})`, { socketPath });
}

function protocolError(socketPath: string, message: string, fields: Record<string, unknown>): LockstepError {
  return new LockstepError('QMP_PROTOCOL', `${message} on ${socketPath}; connection closed`, { socketPath, ...fields });
}

function socketError(socketPath: string, e: NodeJS.ErrnoException): LockstepError {
  const why =
    e.code === 'ENOENT'
      ? 'no QMP socket (is QEMU running?)'
      : e.code === 'ECONNREFUSED'
        ? 'nothing listens on the QMP socket'
        : e.code === 'ECONNRESET' || e.code === 'EPIPE'
          ? `QEMU dropped the QMP connection (${e.code})`
          : `QMP socket error: ${e.message}`;
  return new LockstepError('QMP_DISCONNECTED', `${why} (${socketPath})`, { socketPath, errno: e.code }, { cause: e });
}
