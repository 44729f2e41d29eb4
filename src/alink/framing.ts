/**
 * A-Link framing: each frame is a 4-byte big-endian payload length, then that many bytes of UTF-8 JSON.
 *
 * The decoder checks the length as soon as the 4 header bytes arrive, before buffering the payload, so a
 * peer cannot make this host hold more than one frame limit of its data. A broken frame (a zero or
 * oversized length, bytes that are not UTF-8, text that is not JSON) is reported as a reason, and the
 * decoder stops: after a bad length the stream cannot be resynchronised, so the connection must close.
 * Frames decoded before the broken one are still handed over; nothing after it is.
 */
import { LockstepError } from '../util/errors.js';

export const FRAME_HEADER_BYTES = 4;
/** The default largest payload: the largest valid peer message (1024 VMs) is about a third of it. */
export const FRAME_BYTES_MAX_DEFAULT = 1024 * 1024;

/** Encodes one value as a frame; throws `INVALID_MESSAGE` when it is larger than `maxBytes`. */
export function encodeFrame(value: unknown, maxBytes: number = FRAME_BYTES_MAX_DEFAULT): Buffer {
  const json = JSON.stringify(value);
  if (json === undefined) throw new LockstepError('INVALID_MESSAGE', 'A-Link frame: the value has no JSON form', { field: 'frame' });
  const payloadBytes = Buffer.byteLength(json, 'utf8');
  if (payloadBytes > maxBytes) {
    throw new LockstepError('INVALID_MESSAGE', `A-Link frame: ${payloadBytes} bytes exceeds the limit of ${maxBytes}`, {
      field: 'frame',
      bytes: payloadBytes,
      maxBytes,
    });
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadBytes);
  frame.writeUInt32BE(payloadBytes, 0);
  frame.write(json, FRAME_HEADER_BYTES, 'utf8');
  return frame;
}

export interface DecodeResult {
  /** Complete payloads, in order (raw bytes: `parsePayload` turns each into a value). */
  frames: Buffer[];
  /** Why the stream is broken, or null. Once set, the decoder accepts nothing more. */
  error: string | null;
}

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The current frame's payload length, once its header has been read. */
  private need: number | null = null;
  private broken: string | null = null;

  constructor(private readonly maxBytes: number = FRAME_BYTES_MAX_DEFAULT) {}

  /** Bytes held waiting for the rest of a frame: never more than one header plus `maxBytes`. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): DecodeResult {
    if (this.broken !== null) return { frames: [], error: this.broken };
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Buffer[] = [];
    for (;;) {
      if (this.need === null) {
        if (this.buffered < FRAME_HEADER_BYTES) break;
        const length = this.take(FRAME_HEADER_BYTES).readUInt32BE(0);
        if (length === 0 || length > this.maxBytes) {
          this.broken = length === 0 ? 'empty frame' : `frame of ${length} bytes exceeds the limit of ${this.maxBytes}`;
          this.chunks = [];
          this.buffered = 0;
          return { frames, error: this.broken };
        }
        this.need = length;
      }
      if (this.buffered < this.need) break;
      frames.push(this.take(this.need));
      this.need = null;
    }
    return { frames, error: null };
  }

  /** Removes and returns the first `n` buffered bytes (n ≤ buffered). */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const part = Math.min(c.length, n - at);
        c.copy(out, at, 0, part);
        at += part;
        if (part === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(part);
      }
    }
    this.buffered -= n;
    return out;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A frame's payload as a value; throws `INVALID_MESSAGE` for bytes that are not UTF-8 JSON. */
export function parsePayload(payload: Buffer): unknown {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch (e) {
    throw new LockstepError('INVALID_MESSAGE', 'A-Link frame: payload is not UTF-8', { field: 'frame' }, { cause: e });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new LockstepError('INVALID_MESSAGE', `A-Link frame: payload is not JSON (${(e as Error).message})`, { field: 'frame' }, { cause: e });
  }
}
