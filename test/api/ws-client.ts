/**
 * A minimal WebSocket client for the tests, written against RFC 6455 rather than the server's module (a bug
 * shared by both would go unseen): the handshake over TLS, masked frames of any shape (including broken
 * ones, on purpose), and the server's frames parsed as they come.
 */
import tls from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';

export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export interface Refusal {
  status: number;
  headers: Record<string, string>;
  body: any;
}

/** No step of a test may wait longer than this: it fails rather than hangs. */
const WAIT_MAX_MS = 20_000;

export class WsClient {
  private buffer = Buffer.alloc(0);
  private readonly frames: ServerFrame[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;

  constructor(readonly socket: tls.TLSSocket, rest: Buffer) {
    socket.on('data', (chunk: Buffer) => this.take(chunk));
    socket.on('close', () => {
      this.ended = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
    if (rest.length > 0) this.take(rest);
  }

  private take(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) break;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if ((b[1]! & 0x80) !== 0) throw new Error('the server sent a masked frame');
      if (b.length < off + len) break;
      this.frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload: Buffer.from(b.subarray(off, off + len)) });
      this.buffer = b.subarray(off + len);
    }
    this.waiter?.();
  }

  /** The next frame from the server; null once the connection has closed with none left. */
  async next(): Promise<ServerFrame | null> {
    const deadline = Date.now() + WAIT_MAX_MS;
    while (this.frames.length === 0) {
      if (this.ended) return null;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no frame from the server within ${WAIT_MAX_MS} ms`)), Math.max(0, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = null;
          resolve();
        };
      });
    }
    return this.frames.shift()!;
  }

  /** The next text message whose JSON `pred` accepts (others, pings and pongs are passed over). */
  async message(pred: (m: any) => boolean = () => true): Promise<any> {
    for (;;) {
      const f = await this.next();
      if (f === null) throw new Error('the connection closed before the message came');
      if (f.opcode === 0x8) throw new Error(`the server closed the connection: ${closeOf(f).code} ${closeOf(f).reason}`);
      if (f.opcode !== 0x1) continue;
      const m = JSON.parse(f.payload.toString('utf8'));
      if (pred(m)) return m;
    }
  }

  /** Reads until the server's close frame: its code and reason, and the text messages before it. */
  async closed(): Promise<{ code: number | null; reason: string; messages: any[] }> {
    const messages: any[] = [];
    for (;;) {
      const f = await this.next();
      if (f === null) throw new Error('the connection ended without a close frame');
      if (f.opcode === 0x1) messages.push(JSON.parse(f.payload.toString('utf8')));
      if (f.opcode === 0x8) return { ...closeOf(f), messages };
    }
  }

  /** Waits for the TCP connection to end. */
  async gone(): Promise<void> {
    while ((await this.next()) !== null);
  }

  /** Sends a frame; by default a masked, final one with its true length. */
  send(opcode: number, payload: Buffer | string, opts: { mask?: boolean; fin?: boolean; rsv?: number } = {}): void {
    const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
    const mask = opts.mask ?? true;
    const n = data.length;
    const head = n < 126 ? Buffer.alloc(2) : n <= 0xffff ? Buffer.alloc(4) : Buffer.alloc(10);
    head[0] = ((opts.fin ?? true) ? 0x80 : 0) | ((opts.rsv ?? 0) << 4) | opcode;
    if (n < 126) head[1] = n;
    else if (n <= 0xffff) {
      head[1] = 126;
      head.writeUInt16BE(n, 2);
    } else {
      head[1] = 127;
      head.writeBigUInt64BE(BigInt(n), 2);
    }
    if (!mask) {
      this.socket.write(Buffer.concat([head, data]));
      return;
    }
    head[1]! |= 0x80;
    const key = randomBytes(4);
    const masked = Buffer.from(data);
    for (let i = 0; i < masked.length; i++) masked[i]! ^= key[i & 3]!;
    this.socket.write(Buffer.concat([head, key, masked]));
  }

  /** Writes raw bytes (a frame header that lies about its length, say). */
  raw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  close(code = 1000): void {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(code, 0);
    this.send(0x8, p);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function closeOf(f: ServerFrame): { code: number | null; reason: string } {
  return { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString('utf8') };
}

/**
 * Opens `path` on the management server with a WebSocket handshake: the client when the server switched
 * protocols (its Sec-WebSocket-Accept checked), else the HTTP refusal.
 */
export function connectWs(port: number, ca: Buffer, path: string, headers: Record<string, string> = {}, opts: { version?: string } = {}): Promise<WsClient | Refusal> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const socket = tls.connect({ host: '127.0.0.1', port, ca });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no handshake answer within ${WAIT_MAX_MS} ms`));
    }, WAIT_MAX_MS);
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = got.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine!)?.[1]);
      const hs: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        hs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const rest = got.subarray(end + 4);
      if (status === 101) {
        socket.off('data', onData);
        clearTimeout(timer);
        const expected = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        if (hs['sec-websocket-accept'] !== expected) reject(new Error(`wrong Sec-WebSocket-Accept ${hs['sec-websocket-accept']}`));
        else resolve(new WsClient(socket, rest));
        return;
      }
      const length = Number(hs['content-length'] ?? 0);
      if (rest.length < length) return;
      socket.off('data', onData);
      clearTimeout(timer);
      socket.destroy();
      resolve({ status, headers: hs, body: JSON.parse(rest.subarray(0, length).toString('utf8')) });
    };
    socket.on('data', onData);
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.once('secureConnect', () => {
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: ${opts.version ?? '13'}\r\n${extra}\r\n`);
    });
  });
}

export function isClient(c: WsClient | Refusal): c is WsClient {
  return c instanceof WsClient;
}
