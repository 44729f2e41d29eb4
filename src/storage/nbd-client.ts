/**
 * A small NBD client over a unix socket: the FT epoch disk applies committed writes through it into the
 * backup's copy, served by qemu-nbd (`copy-export.ts`), which keeps Lockstep out of the image format (the
 * copy is qcow2; qemu-nbd reads and writes it as QEMU does).
 *
 * What it promises:
 * - `connect` does the fixed newstyle handshake with `NBD_OPT_GO` (no structured replies, no TLS: the
 *   socket is local) and resolves once requests can be sent; the export's size, flags and the server's
 *   largest request are kept;
 * - several requests may be in flight (at most `REQUESTS_IN_FLIGHT_MAX`; more wait here, in order); replies
 *   are matched by handle, never by order. NBD gives no ordering between requests in flight: a caller that
 *   needs one write applied before another overlapping one waits for the first;
 * - every request ends: with its result, `NBD_REQUEST_FAILED` (the server's error, `fields.errno`), or the
 *   error that closed the connection. A reply the protocol does not allow (bad magic, a handle never sent, a
 *   structured reply) or a request unanswered past its bound closes the connection: with simple replies a
 *   stream whose framing is in doubt cannot be read on, and a missing reply cannot be waited out forever;
 * - `closed` resolves exactly once, never rejects.
 */
import net from 'node:net';
import { LockstepError, describeError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import {
  ByteQueue,
  NBD_CMD,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_GREETING_BYTES,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT,
  NBD_OPTION_REPLY_HEADER_BYTES,
  NBD_REP,
  NBD_SIMPLE_REPLY_BYTES,
  commandName,
  encodeClientFlags,
  encodeGoData,
  encodeOption,
  encodeRequest,
  isParseError,
  parseInfoReply,
  parseOptionReplyHeader,
  parseServerGreeting,
  parseSimpleReply,
  type OptionReplyHeader,
} from './nbd-protocol.js';

export interface NbdClientOptions {
  /** Bound on connecting and the whole handshake. */
  connectTimeoutMs?: number;
  /** Bound on each request's reply; past it the connection is closed (NBD_DISCONNECTED, `fields.reason: 'timeout'`). */
  requestTimeoutMs?: number;
}

export interface NbdClosed {
  /** `client`: close() was called; `peer`: the server closed or reset it; `protocol`: it broke the protocol; `timeout`: a request went unanswered. */
  cause: 'client' | 'peer' | 'protocol' | 'timeout';
  error: LockstepError;
}

const CONNECT_TIMEOUT_MS = 10_000;
/** A write-through qcow2 write on a loaded 2-core machine takes milliseconds; 30 s means the server is stuck. */
const REQUEST_TIMEOUT_MS = 30_000;
/** qemu-nbd reads at most 16 requests of one client at a time; more in flight only queue in its socket. */
export const REQUESTS_IN_FLIGHT_MAX = 16;
/** Requests waiting for a free slot: more than this means a caller is not bounding itself (a bug). */
const REQUESTS_QUEUED_MAX = 4096;
/** QEMU's own bound on one NBD request (NBD_MAX_BUFFER_SIZE), used when the server states none. */
export const NBD_PAYLOAD_BYTES_DEFAULT_MAX = 32 * 1024 * 1024;
/** Option replies we read are an export info or an error text: a few bytes. Longer is not a server we know. */
const OPTION_REPLY_BYTES_MAX = 64 * 1024;
/** Options our handshake waits for replies to: GO's infos, then its ACK; a server that sends more is looping. */
const OPTION_REPLIES_MAX = 32;

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** Bytes of data that follow a successful reply (READ only). */
  readBytes: number;
  resolve: (data: Buffer) => void;
  reject: (e: LockstepError) => void;
  timer: NodeJS.Timeout;
}

interface Queued {
  header: Buffer;
  payload: Buffer | null;
  pending: Omit<Pending, 'timer'>;
}

export class NbdClient {
  /** The export's size in bytes. */
  readonly size: number;
  /** Largest READ or WRITE the server takes. */
  readonly maxPayloadBytes: number;
  readonly canWriteZeroes: boolean;
  readonly canFlush: boolean;
  readonly closed: Promise<NbdClosed>;
  private settleClosed!: (c: NbdClosed) => void;
  private closedValue: NbdClosed | null = null;
  private readonly pending = new Map<bigint, Pending>();
  private readonly queued: Queued[] = [];
  private readonly rx = new ByteQueue();
  /** The reply whose READ data we are waiting for. */
  private readingData: { handle: bigint; pending: Pending } | null = null;
  private nextHandle = 1n;
  private readonly requestTimeoutMs: number;
  private readonly where: string;

  private constructor(
    private readonly socket: net.Socket,
    info: { size: number; flags: number; maxPayloadBytes: number },
    rest: Buffer,
    private readonly socketPath: string,
    readonly exportName: string,
    opts: NbdClientOptions,
  ) {
    this.size = info.size;
    this.maxPayloadBytes = info.maxPayloadBytes;
    this.canWriteZeroes = (info.flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0;
    this.canFlush = (info.flags & NBD_FLAG_SEND_FLUSH) !== 0;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.where = `export ${exportName} at ${socketPath}`;
    this.closed = new Promise((resolve) => (this.settleClosed = resolve));
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('error', (e) => this.end('peer', this.disconnected(`the connection to ${this.where} failed: ${e.message}`, 'peer', e)));
    socket.on('close', () => this.end('peer', this.disconnected(`${this.where} closed the connection`, 'peer')));
    this.onData(rest);
  }

  /**
   * Connects and negotiates the export. Throws `NBD_DISCONNECTED` (nothing listens: `fields.errno`; closed
   * or silent during the handshake), `NBD_PROTOCOL` (not a fixed newstyle server, an option reply we cannot
   * read, the export refused or unknown: `fields.reply`).
   */
  static async connect(socketPath: string, exportName: string, opts: NbdClientOptions = {}): Promise<NbdClient> {
    const timeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const socket = net.connect(socketPath);
    const fields = { socketPath, exportName };
    const reader = new HandshakeReader(socket);
    const timer = setTimeout(() => reader.fail(new LockstepError('NBD_DISCONNECTED', `no NBD handshake from ${socketPath} within ${timeoutMs} ms`, { ...fields, reason: 'timeout' })), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', (e: NodeJS.ErrnoException) =>
          reject(new LockstepError('NBD_DISCONNECTED', `cannot connect to the NBD server at ${socketPath}: ${e.message}`, { ...fields, errno: e.code }, { cause: e })),
        );
      });
      const greeting = parseServerGreeting(await reader.bytes(NBD_GREETING_BYTES));
      if (isParseError(greeting)) throw protocolError(`${socketPath} is not an NBD server we can use: ${greeting.reason}`, fields);
      socket.write(encodeClientFlags(greeting.noZeroes));
      socket.write(encodeOption(NBD_OPT.GO, encodeGoData(exportName, [NBD_INFO_BLOCK_SIZE])));
      let size: number | null = null;
      let flags = 0;
      let maxPayloadBytes = NBD_PAYLOAD_BYTES_DEFAULT_MAX;
      for (let replies = 0; ; replies++) {
        if (replies === OPTION_REPLIES_MAX) throw protocolError(`${socketPath} sent more than ${OPTION_REPLIES_MAX} replies to NBD_OPT_GO`, fields);
        const header = parseOptionReplyHeader(await reader.bytes(NBD_OPTION_REPLY_HEADER_BYTES));
        if (isParseError(header)) throw protocolError(`${socketPath}: ${header.reason}`, fields);
        checkReplyHeader(header, socketPath, fields);
        const data = await reader.bytes(header.length);
        if (header.type >= NBD_REP.ERR_UNSUP) {
          const text = data.toString('utf8').slice(0, 200);
          throw protocolError(`${socketPath} refused export ${exportName}: ${replyName(header.type)}${text ? ` (${text})` : ''}`, { ...fields, reply: replyName(header.type) });
        }
        if (header.type === NBD_REP.ACK) break;
        if (header.type !== NBD_REP.INFO) throw protocolError(`${socketPath} answered NBD_OPT_GO with reply type ${header.type}`, fields);
        const info = parseInfoReply(data);
        if (isParseError(info)) throw protocolError(`${socketPath}: ${info.reason}`, fields);
        if (info.kind === 'export') {
          size = info.size;
          flags = info.flags;
        } else if (info.kind === 'block-size' && info.maximum > 0) {
          maxPayloadBytes = Math.min(maxPayloadBytes, info.maximum);
        }
      }
      if (size === null) throw protocolError(`${socketPath} acknowledged NBD_OPT_GO without describing the export`, fields);
      if ((flags & NBD_FLAG_READ_ONLY) !== 0) throw protocolError(`${socketPath} serves export ${exportName} read-only`, fields);
      clearTimeout(timer);
      return new NbdClient(socket, { size, flags, maxPayloadBytes }, reader.release(), socketPath, exportName, opts);
    } catch (e) {
      clearTimeout(timer);
      socket.destroy();
      throw e;
    }
  }

  /** Reads `length` bytes at `offset` (within the export, at most `maxPayloadBytes`). */
  read(offset: number, length: number): Promise<Buffer> {
    return this.request(NBD_CMD.READ, 0, offset, length, null);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await this.request(NBD_CMD.WRITE, 0, offset, data.length, data);
  }

  /** Zeroes a range; `noHole` asks the server to allocate it (the client's NBD_CMD_FLAG_NO_HOLE, passed on). */
  async writeZeroes(offset: number, length: number, noHole: boolean): Promise<void> {
    assert(this.canWriteZeroes, `writeZeroes on ${this.where}, which does not take NBD_CMD_WRITE_ZEROES`);
    await this.request(NBD_CMD.WRITE_ZEROES, noHole ? NBD_CMD_FLAG_NO_HOLE : 0, offset, length, null);
  }

  /** Every write the server has replied to is on stable storage when this resolves. */
  async flush(): Promise<void> {
    if (!this.canFlush) return;
    await this.request(NBD_CMD.FLUSH, 0, 0, 0, null);
  }

  /** Sends NBD_CMD_DISC and closes; requests still in flight reject. Idempotent. */
  async close(): Promise<void> {
    if (this.closedValue === null) {
      if (this.socket.writable) this.socket.write(encodeRequest({ flags: 0, type: NBD_CMD.DISC, handle: 0n, offset: 0, length: 0 }));
      this.end('client', this.disconnected(`the connection to ${this.where} was closed`, 'client'));
    }
    await this.closed;
  }

  private request(type: number, flags: number, offset: number, length: number, payload: Buffer | null): Promise<Buffer> {
    const name = commandName(type);
    // Requests are built by Lockstep's own code from sizes it checked: a bad one is a bug.
    assert(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0, `${name} at ${offset}+${length}`);
    assert(offset + length <= this.size, `${name} at ${offset}+${length} beyond the export's ${this.size} bytes`);
    assert(type === NBD_CMD.WRITE_ZEROES || length <= this.maxPayloadBytes, `${name} of ${length} bytes beyond the server's ${this.maxPayloadBytes}`);
    if (this.closedValue !== null) return Promise.reject(this.closedValue.error);
    assert(this.queued.length < REQUESTS_QUEUED_MAX, `more than ${REQUESTS_QUEUED_MAX} NBD requests queued on ${this.where}`);
    const handle = this.nextHandle++;
    return new Promise<Buffer>((resolve, reject) => {
      this.queued.push({
        header: encodeRequest({ flags, type, handle, offset, length }),
        payload,
        pending: { type, offset, length, readBytes: type === NBD_CMD.READ ? length : 0, resolve, reject },
      });
      this.pump();
    });
  }

  /** Sends queued requests while fewer than the bound are in flight. */
  private pump(): void {
    while (this.closedValue === null && this.pending.size < REQUESTS_IN_FLIGHT_MAX && this.queued.length > 0) {
      const q = this.queued.shift()!;
      const handle = q.header.readBigUInt64BE(8);
      const timer = setTimeout(() => {
        this.end('timeout', this.disconnected(`${this.where} did not answer ${commandName(q.pending.type)} at ${q.pending.offset} within ${this.requestTimeoutMs} ms`, 'timeout'));
      }, this.requestTimeoutMs);
      this.pending.set(handle, { ...q.pending, timer });
      this.socket.write(q.header);
      if (q.payload !== null) this.socket.write(q.payload);
    }
  }

  private onData(b: Buffer): void {
    this.rx.push(b);
    while (this.closedValue === null) {
      if (this.readingData !== null) {
        const { handle, pending } = this.readingData;
        if (this.rx.length < pending.readBytes) return;
        this.readingData = null;
        this.settle(handle, pending, this.rx.take(pending.readBytes));
        continue;
      }
      if (this.rx.length < NBD_SIMPLE_REPLY_BYTES) return;
      const reply = parseSimpleReply(this.rx.take(NBD_SIMPLE_REPLY_BYTES));
      if (isParseError(reply)) return this.end('protocol', protocolError(`${this.where} broke the NBD protocol: ${reply.reason}`, { socketPath: this.socketPath }));
      const pending = this.pending.get(reply.handle);
      if (pending === undefined) return this.end('protocol', protocolError(`${this.where} answered handle ${reply.handle}, which is not in flight`, { socketPath: this.socketPath }));
      if (reply.error !== 0) {
        this.pending.delete(reply.handle);
        clearTimeout(pending.timer);
        const name = commandName(pending.type);
        pending.reject(
          new LockstepError('NBD_REQUEST_FAILED', `${this.where} failed ${name} at ${pending.offset}+${pending.length}: ${errnoName(reply.error)}`, {
            socketPath: this.socketPath,
            command: name,
            offset: pending.offset,
            length: pending.length,
            errno: reply.error,
          }),
        );
        this.pump();
        continue;
      }
      if (pending.readBytes > 0) this.readingData = { handle: reply.handle, pending };
      else this.settle(reply.handle, pending, Buffer.alloc(0));
    }
  }

  private settle(handle: bigint, pending: Pending, data: Buffer): void {
    this.pending.delete(handle);
    clearTimeout(pending.timer);
    pending.resolve(data);
    this.pump();
  }

  private end(cause: NbdClosed['cause'], error: LockstepError): void {
    if (this.closedValue !== null) return;
    this.closedValue = { cause, error };
    this.socket.destroy();
    this.rx.clear();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    for (const q of this.queued.splice(0)) q.pending.reject(error);
    this.settleClosed(this.closedValue);
  }

  private disconnected(message: string, reason: NbdClosed['cause'], cause?: unknown): LockstepError {
    return new LockstepError('NBD_DISCONNECTED', message, { socketPath: this.socketPath, exportName: this.exportName, reason }, cause === undefined ? undefined : { cause });
  }
}

/** Reads a handshake of known-size messages from a socket before the client takes it over. */
class HandshakeReader {
  private readonly q = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: LockstepError) => void } | null = null;
  private failure: LockstepError | null = null;
  private readonly onData = (b: Buffer): void => {
    this.q.push(b);
    this.check();
  };

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('close', () => this.fail(new LockstepError('NBD_DISCONNECTED', 'the NBD server closed the connection during the handshake', { reason: 'peer' })));
    socket.on('error', (e) => this.fail(new LockstepError('NBD_DISCONNECTED', `the NBD handshake failed: ${describeError(e)}`, { reason: 'peer' }, { cause: e })));
  }

  bytes(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.check();
    });
  }

  fail(e: LockstepError): void {
    this.failure ??= e;
    this.check();
  }

  /** Stops reading and hands over what arrived after the handshake (a server may not send any, but may). */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.removeAllListeners('close');
    this.socket.removeAllListeners('error');
    return this.q.take(this.q.length);
  }

  private check(): void {
    const w = this.waiter;
    if (w === null) return;
    if (this.q.length >= w.n) {
      this.waiter = null;
      w.resolve(this.q.take(w.n));
    } else if (this.failure !== null) {
      this.waiter = null;
      w.reject(this.failure);
    }
  }
}

function checkReplyHeader(h: OptionReplyHeader, socketPath: string, fields: Record<string, unknown>): void {
  if (h.option !== NBD_OPT.GO) throw protocolError(`${socketPath} answered option ${h.option} when NBD_OPT_GO was asked`, fields);
  if (h.length > OPTION_REPLY_BYTES_MAX) throw protocolError(`${socketPath} announced an option reply of ${h.length} bytes`, fields);
}

function protocolError(message: string, fields: Record<string, unknown>): LockstepError {
  return new LockstepError('NBD_PROTOCOL', message, fields);
}

function replyName(type: number): string {
  return Object.entries(NBD_REP).find(([, v]) => v === type)?.[0] ?? `reply ${type}`;
}

const ERRNO_NAMES: Readonly<Record<number, string>> = { 1: 'EPERM', 5: 'EIO', 12: 'ENOMEM', 22: 'EINVAL', 28: 'ENOSPC', 75: 'EOVERFLOW', 95: 'ENOTSUP', 108: 'ESHUTDOWN' };

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `error ${errno}`;
}
