/**
 * The server side of WebSocket (RFC 6455), as small as the live event stream needs: the opening handshake,
 * a parser of the client's frames with strict limits, a frame writer, and a connection that answers pings,
 * sends its own, bounds what it queues for a slow client and closes with a code and a reason.
 *
 * Written here rather than taken from the `ws` package: the stream only sends text and reads almost nothing,
 * so no extension (compression), no binary messages and no fragmented ones are accepted, and every limit is
 * ours to set and to test. Anything outside that closes the connection with the code RFC 6455 §7.4 names.
 */
import { createHash } from 'node:crypto';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { LockstepError } from '../util/errors.js';

/** The GUID of RFC 6455 §1.3, hashed with the client's key into Sec-WebSocket-Accept. */
const HANDSHAKE_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Close codes (RFC 6455 §7.4.1) this server sends. */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupportedData: 1003,
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
} as const;

const OPCODE = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** A control frame's payload is at most this long (RFC 6455 §5.5). */
const CONTROL_PAYLOAD_MAX = 125;
/** A close reason is cut to what fits in a control frame after the 2-byte code. */
const CLOSE_REASON_BYTES_MAX = CONTROL_PAYLOAD_MAX - 2;

/** Sec-WebSocket-Accept for a client's Sec-WebSocket-Key. */
export function acceptKey(key: string): string {
  return createHash('sha1').update(key + HANDSHAKE_GUID).digest('base64');
}

/**
 * The response head that completes the opening handshake of `req`; a request that is not a valid version-13
 * handshake is the client's error (`INVALID_ARGUMENT`, the header named). Extensions and subprotocols the
 * client offers are not taken: the response names none, so the client knows there are none.
 */
export function handshakeResponse(req: http.IncomingMessage): string {
  const header = (name: string): string => {
    const v = req.headers[name];
    return (Array.isArray(v) ? v.join(',') : (v ?? '')).trim();
  };
  if (req.method !== 'GET') throw new LockstepError('INVALID_ARGUMENT', 'a WebSocket handshake is a GET', { field: 'method' });
  if (header('upgrade').toLowerCase() !== 'websocket') throw new LockstepError('INVALID_ARGUMENT', 'Upgrade must be websocket', { field: 'upgrade' });
  if (!header('connection').toLowerCase().split(/\s*,\s*/).includes('upgrade')) throw new LockstepError('INVALID_ARGUMENT', 'Connection must name upgrade', { field: 'connection' });
  if (header('sec-websocket-version') !== '13') throw new LockstepError('INVALID_ARGUMENT', 'Sec-WebSocket-Version must be 13', { field: 'sec-websocket-version' });
  const key = header('sec-websocket-key');
  // The key is 16 random bytes in base64 (RFC 6455 §4.1): exactly 24 characters ending in "==".
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) throw new LockstepError('INVALID_ARGUMENT', 'Sec-WebSocket-Key must be 16 bytes in base64', { field: 'sec-websocket-key' });
  return ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Accept: ${acceptKey(key)}`, '', ''].join('\r\n');
}

/** One unmasked server frame: FIN set, no extension bits. */
export function encodeFrame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.alloc(2) : n <= 0xffff ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (n < 126) head[1] = n;
  else if (n <= 0xffff) {
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

/** A close frame's payload: the code, then the reason in UTF-8, cut to fit a control frame. */
export function closePayload(code: number, reason: string): Buffer {
  let text = Buffer.from(reason, 'utf8');
  if (text.length > CLOSE_REASON_BYTES_MAX) text = Buffer.from(new TextDecoder().decode(text.subarray(0, CLOSE_REASON_BYTES_MAX)).replace(/\uFFFD+$/, ''), 'utf8');
  const out = Buffer.alloc(2 + text.length);
  out.writeUInt16BE(code, 0);
  text.copy(out, 2);
  return out;
}

export type ClientFrame = { kind: 'text'; text: string } | { kind: 'ping'; payload: Buffer } | { kind: 'pong' } | { kind: 'close'; code: number | null; reason: string };

/** Why the client's bytes end the connection: the close code to send and a reason. */
export class FrameError extends Error {
  constructor(
    readonly closeCode: number,
    message: string,
  ) {
    super(message);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The client's frames from its bytes. Limits: every frame masked (§5.1), no extension bits, text, close,
 * ping and pong only, no fragmentation (a data frame must have FIN), control frames within 125 bytes, a text
 * payload within `payloadBytesMax`, text valid UTF-8. At most one frame's header and payload are held.
 */
export class FrameParser {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly payloadBytesMax: number) {}

  /** The complete frames in what has arrived so far; a `FrameError` for the first broken one. */
  push(chunk: Buffer): ClientFrame[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const frames: ClientFrame[] = [];
    for (;;) {
      const frame = this.next();
      if (frame === null) return frames;
      frames.push(frame);
    }
  }

  private next(): ClientFrame | null {
    const b = this.buffer;
    if (b.length < 2) return null;
    const fin = (b[0]! & 0x80) !== 0;
    if ((b[0]! & 0x70) !== 0) throw new FrameError(CLOSE.protocolError, 'reserved bits set: no extension was agreed');
    const opcode = b[0]! & 0x0f;
    if ((b[1]! & 0x80) === 0) throw new FrameError(CLOSE.protocolError, 'a client frame must be masked');
    const control = opcode >= 0x8;
    if (opcode === OPCODE.binary) throw new FrameError(CLOSE.unsupportedData, 'this stream takes text messages only');
    if (opcode === OPCODE.continuation || (!fin && !control)) throw new FrameError(CLOSE.protocolError, 'fragmented messages are not accepted');
    if (opcode !== OPCODE.text && opcode !== OPCODE.close && opcode !== OPCODE.ping && opcode !== OPCODE.pong) throw new FrameError(CLOSE.protocolError, `unknown opcode ${opcode}`);
    if (control && !fin) throw new FrameError(CLOSE.protocolError, 'a control frame cannot be fragmented');
    let length = b[1]! & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = b.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      const big = b.readBigUInt64BE(2);
      // Refused on the header, before a byte of the payload is held.
      if (big > BigInt(this.payloadBytesMax)) throw new FrameError(CLOSE.messageTooBig, `a message is at most ${this.payloadBytesMax} bytes`);
      length = Number(big);
      offset = 10;
    }
    if (control && length > CONTROL_PAYLOAD_MAX) throw new FrameError(CLOSE.protocolError, `a control frame's payload is at most ${CONTROL_PAYLOAD_MAX} bytes`);
    if (length > this.payloadBytesMax) throw new FrameError(CLOSE.messageTooBig, `a message is at most ${this.payloadBytesMax} bytes`);
    if (b.length < offset + 4 + length) return null;
    const mask = b.subarray(offset, offset + 4);
    const payload = Buffer.from(b.subarray(offset + 4, offset + 4 + length));
    for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
    this.buffer = b.subarray(offset + 4 + length);
    switch (opcode) {
      case OPCODE.text:
        return { kind: 'text', text: decodeUtf8(payload) };
      case OPCODE.ping:
        return { kind: 'ping', payload };
      case OPCODE.pong:
        return { kind: 'pong' };
      default: {
        if (payload.length === 1) throw new FrameError(CLOSE.protocolError, 'a close payload of one byte has no code');
        return { kind: 'close', code: payload.length >= 2 ? payload.readUInt16BE(0) : null, reason: decodeUtf8(payload.subarray(2)) };
      }
    }
  }
}

function decodeUtf8(payload: Buffer): string {
  try {
    return utf8.decode(payload);
  } catch {
    throw new FrameError(CLOSE.invalidPayload, 'text is not valid UTF-8');
  }
}

export interface WebSocketLimits {
  /** The largest client message accepted. */
  payloadBytesMax: number;
  /** Bytes queued for the client and not yet taken by the kernel beyond which it is cut off (1008). */
  sendQueueBytesMax: number;
  /** After its close frame, how long the server waits for the client's before it drops the connection. */
  closeTimeoutMs: number;
}

/**
 * One accepted connection. `send` queues a text message (false once closing); a client that lets more than
 * `sendQueueBytesMax` pile up is closed with 1008 instead of being buffered for without end. `onClose` runs
 * once, when the socket is gone.
 */
export class WebSocketConnection {
  private readonly parser: FrameParser;
  private closing = false;
  private closed = false;
  private closeTimer: NodeJS.Timeout | null = null;
  /** The client sent a broken frame: the connection is being failed. */
  private failed = false;
  /** Whether anything came from the client since the last heartbeat ping. */
  private heard = true;

  constructor(
    private readonly socket: Duplex,
    private readonly limits: WebSocketLimits,
    private readonly onClose: () => void,
  ) {
    this.parser = new FrameParser(limits.payloadBytesMax);
    socket.on('data', (chunk: Buffer) => {
      // After a broken frame nothing more the client sends can be framed: it is not read.
      if (this.failed) return;
      this.heard = true;
      let frames: ClientFrame[];
      try {
        frames = this.parser.push(chunk);
      } catch (e) {
        if (!(e instanceof FrameError)) throw e;
        // Failing the connection (RFC 6455 §7.1.7): the close frame with the reason, then the TCP connection ends.
        this.failed = true;
        this.close(e.closeCode, e.message);
        socket.end();
        return;
      }
      for (const f of frames) {
        if (f.kind === 'ping') this.write(OPCODE.pong, f.payload);
        else if (f.kind === 'close') {
          // The client's close is answered with its code (§5.5.1); then the connection ends.
          this.close(f.code ?? CLOSE.normal, '');
          socket.end();
          return;
        }
        // Text from the client is read within the limits and otherwise ignored: the stream only sends.
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.closed = true;
      if (this.closeTimer) clearTimeout(this.closeTimer);
      this.onClose();
    });
  }

  /** Queues a text message; false when the connection is closing (the message is dropped). */
  send(text: string): boolean {
    if (this.closing) return false;
    this.write(OPCODE.text, Buffer.from(text, 'utf8'));
    if (this.socket.writableLength > this.limits.sendQueueBytesMax) {
      this.close(CLOSE.policyViolation, `more than ${this.limits.sendQueueBytesMax} bytes queued: the client reads too slowly`);
      return false;
    }
    return true;
  }

  /**
   * The heartbeat: a ping, unless the client was silent since the previous one (no pong, no frame), in which
   * case it is gone or stuck and the connection is dropped.
   */
  heartbeat(): void {
    if (this.closing) return;
    if (!this.heard) {
      this.socket.destroy();
      return;
    }
    this.heard = false;
    this.write(OPCODE.ping, Buffer.alloc(0));
  }

  /** Sends a close frame (once) and drops the connection if the client does not close within the timeout. */
  close(code: number, reason: string): void {
    if (this.closing || this.closed) return;
    this.closing = true;
    this.write(OPCODE.close, closePayload(code, reason));
    this.closeTimer = setTimeout(() => this.socket.destroy(), this.limits.closeTimeoutMs);
    this.closeTimer.unref();
  }

  private write(opcode: number, payload: Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    this.socket.write(encodeFrame(opcode, payload));
  }
}
