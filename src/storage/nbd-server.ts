/**
 * A small, strict NBD server on a unix socket, serving one export from a backend of ours: the FT epoch
 * disk (`src/ft/epoch-disk.ts`) is the backend, QEMU's write-blocking mirror the client. The protocol
 * handling is here; what a read, write or flush means is the backend's.
 *
 * What it speaks (the NBD protocol's `doc/proto.md`):
 * - fixed newstyle handshake only (NO_ZEROES understood); options `GO`, `INFO`, `EXPORT_NAME`, `LIST` and
 *   `ABORT`. `STRUCTURED_REPLY` and every other option get `NBD_REP_ERR_UNSUP`, so QEMU uses simple replies
 *   (one header per answer, plus a READ's data), and no TLS (the socket is local; the A-Link's replication
 *   stream carries it between hosts inside its own TLS);
 * - commands READ, WRITE, WRITE_ZEROES (advertised when the backend takes them), FLUSH and DISC. TRIM is
 *   not advertised: QEMU's NBD block node sends no discards unless opened with `discard=unmap`, which the
 *   mirror's node is not (`disk-mirror.ts`), and a discard's content is unspecified anyway.
 *
 * Strictness, because a request stream whose framing is in doubt cannot be read on: a bad magic, a WRITE
 * whose payload is larger than we advertised (we would have to take it in to find the next header), an
 * option longer than any we know, or a handshake that does not finish within its bound closes the
 * connection. A well-framed request we do not take (unknown command, flags we did not advertise, a zero or
 * too long length, a range beyond the export) gets an NBD error and the connection goes on. A write-type
 * request refused that way is reported to the backend (`writeRefused`): the FT disk must then never commit
 * the epoch it belonged to, since the primary's guest may have seen that write succeed. Nothing is applied
 * in part: a WRITE reaches the backend only once its whole payload is in.
 */
import { lstat, rm } from 'node:fs/promises';
import net from 'node:net';
import { silentLog, type DriverLog } from '../qemu/log.js';
import { LockstepError, describeError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import {
  ByteQueue,
  NBD_CLIENT_FLAGS_BYTES,
  NBD_CMD,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_ERR,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_NAME_BYTES_MAX,
  NBD_OPT,
  NBD_OPTION_HEADER_BYTES,
  NBD_REP,
  NBD_REQUEST_BYTES,
  commandName,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeOptionReply,
  encodeServerGreeting,
  encodeServerName,
  encodeSimpleReply,
  isParseError,
  parseClientFlags,
  parseGoData,
  parseOptionHeader,
  parseRequest,
  type NbdRequest,
} from './nbd-protocol.js';

/** What the server serves. Answers are NBD error values (0: success); a backend's promises never reject. */
export interface NbdBackend {
  readonly exportName: string;
  readonly size: number;
  /** Largest READ or WRITE taken (advertised as the maximum block size). */
  readonly maxPayloadBytes: number;
  readonly canWriteZeroes: boolean;
  read(offset: number, length: number): Promise<Buffer | number>;
  write(offset: number, data: Buffer): number | Promise<number>;
  writeZeroes(offset: number, length: number, noHole: boolean): number | Promise<number>;
  flush(): number | Promise<number>;
  /** A well-framed write-type request got an error without reaching `write`/`writeZeroes`. */
  writeRefused(reason: string): void;
  /** A client that sent write-type requests went away without NBD_CMD_DISC. */
  writerLost(reason: string): void;
}

export interface NbdServerOptions {
  /** Clients served at once (QEMU's mirror is one; readers and tools are the others); more are closed at once. */
  connectionsMax?: number;
  /** Bound on a client reaching the transmission phase. */
  handshakeTimeoutMs?: number;
  log?: DriverLog;
}

const CONNECTIONS_MAX = 4;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** The longest option we take: GO/INFO with a maximal name and a few info requests. */
const OPTION_BYTES_MAX = 4 + NBD_NAME_BYTES_MAX + 2 + 2 * 64;
/** A client negotiating longer than this is looping, not negotiating. */
const OPTIONS_PER_HANDSHAKE_MAX = 64;
/** Requests one client may have in flight before we stop reading from it (QEMU keeps at most 16). */
const REQUESTS_IN_FLIGHT_MAX = 32;
/** NBD's minimum and preferred block sizes: we take any byte range; 4 KiB is what a guest's pages are. */
const BLOCK_MINIMUM_BYTES = 1;
const BLOCK_PREFERRED_BYTES = 4096;
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_MAX = 107;

export class NbdServer {
  private readonly connections = new Set<Connection>();
  private closing: Promise<void> | null = null;

  private constructor(
    readonly socketPath: string,
    private readonly server: net.Server,
    private readonly backend: NbdBackend,
    private readonly opts: Required<NbdServerOptions>,
  ) {}

  /**
   * Listens on `socketPath` (a socket nobody answers on is replaced; anything else there is refused).
   * Throws `INVALID_ARGUMENT` (the path) or `NBD_DISCONNECTED` (cannot listen there).
   */
  static async listen(socketPath: string, backend: NbdBackend, options: NbdServerOptions = {}): Promise<NbdServer> {
    if (Buffer.byteLength(socketPath) > UNIX_SOCKET_PATH_MAX) {
      throw new LockstepError('INVALID_ARGUMENT', `NBD server: the socket path ${socketPath} is longer than ${UNIX_SOCKET_PATH_MAX} bytes`, { field: 'socketPath' });
    }
    await claimSocketPath(socketPath);
    const opts: Required<NbdServerOptions> = {
      connectionsMax: options.connectionsMax ?? CONNECTIONS_MAX,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
      log: options.log ?? silentLog,
    };
    const server = net.createServer();
    const s = new NbdServer(socketPath, server, backend, opts);
    server.on('connection', (socket) => s.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new LockstepError('NBD_DISCONNECTED', `cannot serve NBD on ${socketPath}: ${e.message}`, { socketPath }, { cause: e })));
      server.listen(socketPath, resolve);
    });
    server.on('error', (e) => opts.log.warn(`NBD server on ${socketPath}: ${e.message}`, { socketPath }));
    return s;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Stops listening and drops every client (requests in flight get no reply); the socket file is removed. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const c of this.connections) c.destroy();
      await closed;
      await rm(this.socketPath, { force: true });
    })();
    return this.closing;
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => undefined); // the close that follows is what counts
    if (this.closing !== null || this.connections.size >= this.opts.connectionsMax) {
      this.opts.log.warn(`NBD server on ${this.socketPath}: a client refused (${this.closing ? 'closing' : `${this.connections.size} connected already`})`, { socketPath: this.socketPath });
      socket.destroy();
      return;
    }
    const c = new Connection(socket, this.backend, this.opts);
    this.connections.add(c);
    socket.on('close', () => this.connections.delete(c));
  }
}

type Phase = 'flags' | 'option-header' | 'option-data' | 'request' | 'payload' | 'done';

/** One client, from the greeting to its close: a state machine over the bytes it sends. */
class Connection {
  private readonly rx = new ByteQueue();
  private phase: Phase = 'flags';
  private noZeroes = false;
  private options = 0;
  private option: { option: number; length: number } | null = null;
  private request: NbdRequest | null = null;
  private inFlight = 0;
  private paused = false;
  private wrote = false;
  private disconnecting = false;
  private readonly handshakeTimer: NodeJS.Timeout;
  private readonly transmissionFlags: number;

  constructor(
    private readonly socket: net.Socket,
    private readonly backend: NbdBackend,
    private readonly opts: Required<NbdServerOptions>,
  ) {
    this.transmissionFlags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | (backend.canWriteZeroes ? NBD_FLAG_SEND_WRITE_ZEROES : 0);
    this.handshakeTimer = setTimeout(() => this.drop(`no handshake within ${opts.handshakeTimeoutMs} ms`), opts.handshakeTimeoutMs);
    socket.on('data', (b: Buffer) => {
      this.rx.push(b);
      this.parse();
    });
    socket.on('close', () => {
      clearTimeout(this.handshakeTimer);
      this.phase = 'done';
      this.rx.clear();
      if (this.wrote && !this.disconnecting) this.backend.writerLost('a client that wrote went away without NBD_CMD_DISC');
    });
    socket.write(encodeServerGreeting());
  }

  destroy(): void {
    this.phase = 'done';
    this.socket.destroy();
  }

  /** Closes a connection that broke the protocol; logged, since QEMU never does. */
  private drop(reason: string): void {
    if (this.phase === 'done') return;
    this.opts.log.warn(`NBD client dropped: ${reason}`, { export: this.backend.exportName });
    this.destroy();
  }

  private parse(): void {
    for (;;) {
      switch (this.phase) {
        case 'flags': {
          if (this.rx.length < NBD_CLIENT_FLAGS_BYTES) return;
          const flags = parseClientFlags(this.rx.take(NBD_CLIENT_FLAGS_BYTES));
          if (isParseError(flags)) return this.drop(flags.reason);
          this.noZeroes = flags.noZeroes;
          this.phase = 'option-header';
          break;
        }
        case 'option-header': {
          if (this.rx.length < NBD_OPTION_HEADER_BYTES) return;
          const header = parseOptionHeader(this.rx.take(NBD_OPTION_HEADER_BYTES));
          if (isParseError(header)) return this.drop(header.reason);
          if (header.length > OPTION_BYTES_MAX) return this.drop(`option ${header.option} of ${header.length} bytes`);
          if (++this.options > OPTIONS_PER_HANDSHAKE_MAX) return this.drop(`more than ${OPTIONS_PER_HANDSHAKE_MAX} options`);
          this.option = header;
          this.phase = 'option-data';
          break;
        }
        case 'option-data': {
          const o = this.option!;
          if (this.rx.length < o.length) return;
          this.onOption(o.option, this.rx.take(o.length));
          break;
        }
        case 'request': {
          if (this.rx.length < NBD_REQUEST_BYTES) return;
          const r = parseRequest(this.rx.take(NBD_REQUEST_BYTES));
          if (isParseError(r)) return this.drop(r.reason);
          if (r.type === NBD_CMD.WRITE) {
            if (r.length > this.backend.maxPayloadBytes) return this.drop(`a WRITE of ${r.length} bytes (at most ${this.backend.maxPayloadBytes} advertised)`);
            this.request = r;
            this.phase = 'payload';
          } else {
            this.onRequest(r, null);
          }
          break;
        }
        case 'payload': {
          const r = this.request!;
          if (this.rx.length < r.length) return;
          this.request = null;
          this.phase = 'request';
          this.onRequest(r, this.rx.take(r.length));
          break;
        }
        case 'done':
          return;
      }
      if (this.paused) return;
    }
  }

  private onOption(option: number, data: Buffer): void {
    this.phase = 'option-header';
    const reply = (type: number, body?: Buffer): void => {
      this.socket.write(encodeOptionReply(option, type, body));
    };
    switch (option) {
      case NBD_OPT.EXPORT_NAME:
        // No error reply exists for this option: an unknown name ends the connection, as the spec says.
        if (data.toString('utf8') !== this.backend.exportName) return this.drop(`NBD_OPT_EXPORT_NAME of an unknown export`);
        this.socket.write(encodeExportNameReply(this.backend.size, this.transmissionFlags, this.noZeroes));
        return this.startTransmission();
      case NBD_OPT.ABORT:
        reply(NBD_REP.ACK);
        this.phase = 'done';
        this.socket.end();
        return;
      case NBD_OPT.LIST:
        if (data.length !== 0) return reply(NBD_REP.ERR_INVALID);
        reply(NBD_REP.SERVER, encodeServerName(this.backend.exportName));
        return reply(NBD_REP.ACK);
      case NBD_OPT.INFO:
      case NBD_OPT.GO: {
        const go = parseGoData(data);
        if (isParseError(go)) return reply(NBD_REP.ERR_INVALID, Buffer.from(go.reason, 'utf8'));
        if (go.name !== this.backend.exportName) return reply(NBD_REP.ERR_UNKNOWN);
        reply(NBD_REP.INFO, encodeInfoExport(this.backend.size, this.transmissionFlags));
        // Sent whether asked or not (allowed with a minimum of 1): QEMU then never sends a request longer than we take.
        reply(NBD_REP.INFO, encodeInfoBlockSize({ minimum: BLOCK_MINIMUM_BYTES, preferred: BLOCK_PREFERRED_BYTES, maximum: this.backend.maxPayloadBytes }));
        reply(NBD_REP.ACK);
        if (option === NBD_OPT.GO) this.startTransmission();
        return;
      }
      default:
        // STRUCTURED_REPLY (so that QEMU uses simple replies), STARTTLS, meta contexts, anything unknown.
        return reply(NBD_REP.ERR_UNSUP);
    }
  }

  private startTransmission(): void {
    clearTimeout(this.handshakeTimer);
    this.phase = 'request';
  }

  private onRequest(r: NbdRequest, payload: Buffer | null): void {
    const isWrite = r.type === NBD_CMD.WRITE || r.type === NBD_CMD.WRITE_ZEROES || r.type === NBD_CMD.TRIM;
    if (isWrite) this.wrote = true;
    const refuse = (error: number, why: string): void => {
      if (isWrite) this.backend.writeRefused(`${commandName(r.type)} at ${r.offset}+${r.length} refused: ${why}`);
      this.reply(r.handle, error, null);
    };
    const inRange = r.offset + r.length <= this.backend.size;
    switch (r.type) {
      case NBD_CMD.READ:
        if (r.flags !== 0) return refuse(NBD_ERR.EINVAL, `flags 0x${r.flags.toString(16)}`);
        if (r.length === 0 || r.length > this.backend.maxPayloadBytes) return refuse(NBD_ERR.EINVAL, `length ${r.length}`);
        if (!inRange) return refuse(NBD_ERR.EINVAL, 'beyond the end of the export');
        return this.track(r.handle, this.backend.read(r.offset, r.length));
      case NBD_CMD.WRITE:
        assert(payload !== null && payload.length === r.length, 'a WRITE without its payload');
        if (r.flags !== 0) return refuse(NBD_ERR.EINVAL, `flags 0x${r.flags.toString(16)}`);
        if (r.length === 0) return refuse(NBD_ERR.EINVAL, 'length 0');
        if (!inRange) return refuse(NBD_ERR.ENOSPC, 'beyond the end of the export');
        return this.track(r.handle, this.backend.write(r.offset, payload));
      case NBD_CMD.WRITE_ZEROES:
        if (!this.backend.canWriteZeroes) return refuse(NBD_ERR.EINVAL, 'not advertised');
        if ((r.flags & ~NBD_CMD_FLAG_NO_HOLE) !== 0) return refuse(NBD_ERR.EINVAL, `flags 0x${r.flags.toString(16)}`);
        if (r.length === 0) return refuse(NBD_ERR.EINVAL, 'length 0');
        if (!inRange) return refuse(NBD_ERR.ENOSPC, 'beyond the end of the export');
        return this.track(r.handle, this.backend.writeZeroes(r.offset, r.length, (r.flags & NBD_CMD_FLAG_NO_HOLE) !== 0));
      case NBD_CMD.FLUSH:
        if (r.flags !== 0 || r.offset !== 0 || r.length !== 0) return refuse(NBD_ERR.EINVAL, 'a FLUSH with flags, offset or length');
        return this.track(r.handle, this.backend.flush());
      case NBD_CMD.DISC:
        // Requests in flight are still answered; then the connection ends (ours to close, the spec says).
        this.disconnecting = true;
        this.phase = 'done';
        if (this.inFlight === 0) this.socket.end();
        return;
      default:
        return refuse(NBD_ERR.EINVAL, 'not a command this server advertised');
    }
  }

  /** Answers when the backend has; stops reading from a client with too many requests in flight. */
  private track(handle: bigint, answer: Promise<Buffer | number> | number): void {
    if (typeof answer === 'number') return this.reply(handle, answer, null);
    this.inFlight++;
    if (this.inFlight >= REQUESTS_IN_FLIGHT_MAX && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
    void answer.then((a) => {
      this.inFlight--;
      if (typeof a === 'number') this.reply(handle, a, null);
      else this.reply(handle, 0, a);
      if (this.disconnecting && this.inFlight === 0) this.socket.end();
      if (this.paused && this.inFlight < REQUESTS_IN_FLIGHT_MAX) {
        this.paused = false;
        this.socket.resume();
        this.parse();
      }
    });
  }

  private reply(handle: bigint, error: number, data: Buffer | null): void {
    if (this.socket.destroyed) return;
    this.socket.write(encodeSimpleReply(error, handle));
    if (data !== null) this.socket.write(data);
  }
}

/** Makes `socketPath` free to listen on: refuses a path that is not a socket or where a server answers; removes a dead socket. */
async function claimSocketPath(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(socketPath)).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new LockstepError('NBD_DISCONNECTED', `cannot check the socket path ${socketPath}: ${describeError(e)}`, { socketPath }, { cause: e });
  }
  if (!isSocket) throw new LockstepError('NBD_DISCONNECTED', `will not serve NBD on ${socketPath}: something that is not a socket is there`, { socketPath });
  const answers = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (answers) throw new LockstepError('NBD_DISCONNECTED', `will not serve NBD on ${socketPath}: a server is listening there already`, { socketPath });
  await rm(socketPath, { force: true });
}
