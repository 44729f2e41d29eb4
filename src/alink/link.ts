/**
 * One connection on one A-Link path, once its TLS handshake (if any) is done: framing, the hello exchange,
 * ping/pong RTT, liveness, and a bounded send queue. It knows nothing of TLS, dialing or the other path:
 * `alink.ts` owns those and hears from each connection through a `LinkHandler`. Any stream socket works,
 * so the framing and its fuzzing are also tested on plain TCP.
 *
 * Liveness: the peer pings every interval and answers pings at once, so a path that carries nothing for
 * `pathTimeoutMs` is dead (a cut cable closes nothing: only silence tells). A path whose writes make no
 * progress for as long is dead too.
 *
 * Send queue: Node buffers writes without limit, so frames wait in our own queue once the socket holds
 * `writeHighWaterBytes`. The queue is bounded in frames and bytes. A heartbeat replaces any heartbeat still
 * queued (the core ignores a heartbeat older than one it has seen), and when the queue is full the oldest
 * heartbeat goes first, else the oldest frame. Pings and pongs bypass the queue (they are small, one per
 * interval) so a backed-up path still shows its true delay.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { describeError } from '../util/errors.js';
import { encodeFrame, FrameDecoder, parsePayload } from './framing.js';
import { parseLinkFrame, type LinkFrame } from './frames.js';

export type HelloFrame = Extract<LinkFrame, { t: 'hello' }>;

export interface LinkTiming {
  /** How often each side pings on each path (and so the RTT sample rate). */
  pingIntervalMs: number;
  /** Silence (or send stall) after which a path is declared down. */
  pathTimeoutMs: number;
  /** How long a new connection may take to send its hello. */
  helloTimeoutMs: number;
}

export interface LinkLimits {
  maxFrameBytes: number;
  sendQueueFramesMax: number;
  sendQueueBytesMax: number;
  /** Bytes Node may hold for the socket before frames wait in our queue instead. */
  writeHighWaterBytes: number;
}

/** How a connection ended, for the owner to classify (refused, network, protocol) and report. */
export interface LinkClose {
  reason: string;
  /** The connection had completed its hello exchange. */
  wasUp: boolean;
  /** The peer said why in a `bye` frame. */
  byPeer: boolean;
  /** The peer broke the protocol (a broken or invalid frame). */
  protocol: boolean;
  /** The socket error that ended it, if one did. */
  error?: NodeJS.ErrnoException;
}

export interface LinkHandler {
  /** The peer's hello: null accepts it; a string refuses the connection with that reason. */
  hello(link: Link, hello: HelloFrame): string | null;
  up(link: Link): void;
  /** A `msg` frame: its id and its envelope, not yet checked. */
  message(link: Link, id: number, env: unknown): void;
  rtt(link: Link, sampleMs: number): void;
  closed(link: Link, how: LinkClose): void;
}

/** Smoothing of RTT samples, as TCP's SRTT (RFC 6298): one eighth of each new sample. */
const SRTT_GAIN = 1 / 8;
/** Pings remembered while waiting for their pong; older ones count as lost. */
const PINGS_OUTSTANDING_MAX = 16;

interface Queued {
  frame: Buffer;
  heartbeat: boolean;
}

export class Link {
  state: 'hello' | 'up' | 'closed' = 'hello';
  peerHello: HelloFrame | null = null;
  /** Smoothed RTT of this connection, ms (null before the first pong). */
  srttMs: number | null = null;
  /** Frames dropped from the send queue (superseded heartbeats, or the queue full). */
  droppedFrames = 0;
  /** Resolves when the socket is fully closed. */
  readonly done: Promise<void>;

  private readonly decoder: FrameDecoder;
  private readonly timer: NodeJS.Timeout;
  private readonly helloDeadline: number;
  private lastHeardAt: number;
  private stalledSince: number | null = null;
  private queue: Queued[] = [];
  private queueBytes = 0;
  private pingSeq = 0;
  private readonly pings = new Map<number, number>();
  private socketError: NodeJS.ErrnoException | undefined;
  private endTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly socket: Socket,
    readonly pathName: string,
    hello: HelloFrame,
    private readonly timing: LinkTiming,
    private readonly limits: LinkLimits,
    private readonly handler: LinkHandler,
  ) {
    this.decoder = new FrameDecoder(limits.maxFrameBytes);
    const now = performance.now();
    this.lastHeardAt = now;
    this.helloDeadline = now + timing.helloTimeoutMs;
    this.done = new Promise((resolve) => {
      if (socket.destroyed) resolve();
      else socket.once('close', () => resolve());
    });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.socketError ??= e;
      this.close(`socket error: ${e.message}`, false);
    });
    socket.on('close', () => {
      if (this.endTimer) clearTimeout(this.endTimer);
      this.close(this.socketError ? `socket error: ${this.socketError.message}` : 'connection closed', false);
    });
    this.timer = setInterval(() => this.tick(), timing.pingIntervalMs);
    this.writeNow(encodeFrame(hello, limits.maxFrameBytes));
  }

  /** Hands a `msg` frame to this connection; false when it is not up. */
  sendMessage(frame: Buffer, heartbeat: boolean): boolean {
    if (this.state !== 'up') return false;
    if (this.queue.length === 0 && this.socket.writableLength < this.limits.writeHighWaterBytes) {
      this.writeNow(frame);
      return true;
    }
    this.enqueue({ frame, heartbeat });
    this.stalledSince ??= performance.now();
    return true;
  }

  /** Frames waiting in this connection's queue. */
  get queuedFrames(): number {
    return this.queue.length;
  }

  /**
   * Ends the connection: with `notifyPeer`, a `bye` frame tells the peer why (when the peer is silent it
   * would not hear it, and the socket is destroyed at once).
   */
  close(reason: string, notifyPeer: boolean, extra: Partial<Pick<LinkClose, 'byPeer' | 'protocol'>> = {}): void {
    if (this.state === 'closed') return;
    const wasUp = this.state === 'up';
    this.state = 'closed';
    clearInterval(this.timer);
    this.queue = [];
    this.queueBytes = 0;
    if (notifyPeer && this.socket.writable) {
      this.socket.end(encodeFrame({ t: 'bye', reason }, this.limits.maxFrameBytes));
      // A peer that never finishes the close must not hold the socket open.
      this.endTimer = setTimeout(() => this.socket.destroy(), Math.min(1000, this.timing.pathTimeoutMs));
    } else {
      this.socket.destroy();
    }
    const how: LinkClose = { reason, wasUp, byPeer: extra.byPeer ?? false, protocol: extra.protocol ?? false };
    if (this.socketError) how.error = this.socketError;
    this.handler.closed(this, how);
  }

  private writeNow(frame: Buffer): void {
    if (this.socket.writable) this.socket.write(frame);
  }

  private enqueue(item: Queued): void {
    if (item.heartbeat) {
      const before = this.queue.length;
      this.queue = this.queue.filter((q) => !q.heartbeat);
      this.droppedFrames += before - this.queue.length;
      this.queueBytes = this.queue.reduce((n, q) => n + q.frame.length, 0);
    }
    this.queue.push(item);
    this.queueBytes += item.frame.length;
    while (this.queue.length > 1 && (this.queue.length > this.limits.sendQueueFramesMax || this.queueBytes > this.limits.sendQueueBytesMax)) {
      const i = Math.max(0, this.queue.findIndex((q) => q.heartbeat));
      const [gone] = this.queue.splice(i, 1);
      this.queueBytes -= gone!.frame.length;
      this.droppedFrames++;
    }
  }

  /** The socket's buffer emptied: that is progress, so the stall clock starts again. */
  private onDrain(): void {
    if (this.state !== 'up') return;
    this.stalledSince = null;
    this.flush();
  }

  private flush(): void {
    while (this.queue.length > 0 && this.socket.writableLength < this.limits.writeHighWaterBytes) {
      const item = this.queue.shift()!;
      this.queueBytes -= item.frame.length;
      this.writeNow(item.frame);
    }
    if (this.queue.length === 0) this.stalledSince = null;
    else this.stalledSince ??= performance.now();
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastHeardAt = performance.now();
    const { frames, error } = this.decoder.push(chunk);
    for (const payload of frames) {
      if (this.isClosed()) return; // a frame before this one ended the connection
      let frame: LinkFrame;
      try {
        frame = parseLinkFrame(parsePayload(payload));
      } catch (e) {
        this.close(`invalid frame from the peer: ${describeError(e)}`, true, { protocol: true });
        return;
      }
      this.onFrame(frame);
    }
    if (error !== null && !this.isClosed()) this.close(`broken frame from the peer: ${error}`, true, { protocol: true });
  }

  /** A method, not a field test, so that TypeScript does not narrow `state` across handler calls. */
  private isClosed(): boolean {
    return this.state === 'closed';
  }

  private onFrame(frame: LinkFrame): void {
    switch (frame.t) {
      case 'hello': {
        if (this.state !== 'hello') return this.close('a second hello from the peer', true, { protocol: true });
        const refusal = this.handler.hello(this, frame);
        if (this.isClosed()) return; // the handler closed us
        if (refusal !== null) return this.close(refusal, true);
        this.peerHello = frame;
        this.state = 'up';
        this.handler.up(this);
        return;
      }
      case 'msg':
        if (this.state !== 'up') return this.close('a message before the hello', true, { protocol: true });
        this.handler.message(this, frame.id, frame.env);
        return;
      case 'ping':
        if (this.state !== 'up') return this.close('a ping before the hello', true, { protocol: true });
        this.writeNow(encodeFrame({ t: 'pong', n: frame.n }, this.limits.maxFrameBytes));
        return;
      case 'pong': {
        const sentAt = this.pings.get(frame.n);
        if (sentAt === undefined) return; // late (forgotten) or never sent: no sample
        this.pings.delete(frame.n);
        const sampleMs = performance.now() - sentAt;
        this.srttMs = this.srttMs === null ? sampleMs : this.srttMs + SRTT_GAIN * (sampleMs - this.srttMs);
        this.handler.rtt(this, sampleMs);
        return;
      }
      case 'bye':
        return this.close(`the peer closed the connection: ${frame.reason}`, false, { byPeer: true });
    }
  }

  private tick(): void {
    if (this.state === 'closed') return;
    const now = performance.now();
    if (this.state === 'hello') {
      if (now > this.helloDeadline) this.close(`no hello from the peer within ${this.timing.helloTimeoutMs} ms`, true);
      return;
    }
    const silentMs = now - this.lastHeardAt;
    if (silentMs > this.timing.pathTimeoutMs) {
      return this.close(`nothing heard from the peer for ${Math.round(silentMs)} ms`, false);
    }
    if (this.stalledSince !== null && now - this.stalledSince > this.timing.pathTimeoutMs) {
      return this.close(`sending stalled for ${Math.round(now - this.stalledSince)} ms`, false);
    }
    this.flush();
    if (this.socket.writableLength < this.limits.writeHighWaterBytes) {
      const n = ++this.pingSeq;
      this.pings.set(n, now);
      if (this.pings.size > PINGS_OUTSTANDING_MAX) this.pings.delete(this.pings.keys().next().value!);
      this.writeNow(encodeFrame({ t: 'ping', n }, this.limits.maxFrameBytes));
    }
  }
}
