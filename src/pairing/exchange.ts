/**
 * The pairing exchange on one TCP connection, both sides: the CA host dials and says hello, the joiner
 * answers with its CSR, the CA host answers with the pair CA and the signed certificate, the joiner
 * confirms. Each side proves the secret before the other gives anything away (messages.ts has the lines,
 * proof.ts the proofs, docs/pairing.md the reasoning).
 *
 * How a connection can end without pairing decides what happens next:
 * - **dropped** (returned as a value): the connection was lost or timed out, or, on the joiner, it was
 *   never the peer's (a stranger, a malformed hello). Another connection may do better, so the caller
 *   tries again until its deadline.
 * - **failed** (thrown, `PAIRING`): the peer proved the wrong secret, refused, or sent something
 *   unusable after it identified itself. Trying again would fail the same way, so both sides stop, each
 *   with the reason; the side that found the problem tells the other in a `fail` line first.
 */
import type net from 'node:net';
import { describeError, LockstepError } from '../util/errors.js';
import { LineSplitter } from '../util/line-splitter.js';
import {
  failMessage,
  formatLine,
  PAIRING_LINE_BYTES_MAX,
  parseExchangeLine,
  type ExchangeMessage,
  type HelloMessage,
} from './messages.js';
import { newNonce, proofMatches, prove, type Transcript } from './proof.js';

/** One connection's whole exchange takes a few openssl runs: far below this. */
export const EXCHANGE_TIMEOUT_MS = 10_000;

/** A connection that ended without pairing but without a reason to give up: why, for the log. */
export interface Dropped {
  dropped: string;
}

export interface CaSideOptions {
  pairId: string;
  /** This host: the CA host, whose id sorts first. */
  self: string;
  /** The joiner. */
  peer: string;
  /** From `derivePairingKey`. */
  key: Buffer;
  /** Epoch ms; the exchange also ends after `EXCHANGE_TIMEOUT_MS`. */
  deadline: number;
  /**
   * Signs the joiner's CSR (it has proven the secret by then) and returns the pair CA certificate and the
   * joiner's certificate to send. Whatever must be durable before the joiner can trust that CA is stored
   * before this returns. Throws when the request cannot be signed.
   */
  issue(csr: string): Promise<{ ca: string; cert: string }>;
}

/** The CA host's side on a connection it dialed. */
export async function runCaSide(socket: net.Socket, o: CaSideOptions): Promise<'paired' | Dropped> {
  const ch = new LineChannel(socket, o.peer, Math.min(o.deadline, Date.now() + EXCHANGE_TIMEOUT_MS));
  try {
    const caNonce = newNonce();
    await ch.send({ v: 1, t: 'hello', pairId: o.pairId, host: o.self, nonce: caNonce });
    const answer = expect(await ch.read(), 'csr', o.peer);
    if (answer.host !== o.peer) return await ch.refuse(`the host that answered is ${answer.host}, not ${o.peer}`);
    const t: Transcript = { pairId: o.pairId, caHost: o.self, joiner: o.peer, caNonce, joinerNonce: answer.nonce, csr: answer.csr };
    if (!proofMatches(o.key, 'joiner-csr', t, answer.proof)) {
      return await ch.refuse(`${o.self} cannot verify ${o.peer}'s proof: the pairing secrets differ (or the exchange is not ${o.peer}'s own)`);
    }
    let issued: { ca: string; cert: string };
    try {
      issued = await o.issue(answer.csr);
    } catch (e) {
      return await ch.refuse(`${o.self} cannot sign ${o.peer}'s certificate request: ${describeError(e)}`, e);
    }
    t.ca = issued.ca;
    t.cert = issued.cert;
    await ch.send({ v: 1, t: 'certs', ca: issued.ca, cert: issued.cert, proof: prove(o.key, 'ca-certs', t) });
    const done = expect(await ch.read(), 'done', o.peer);
    if (!proofMatches(o.key, 'joiner-done', t, done.proof)) throw new LockstepError('PAIRING', `${o.peer}'s confirmation does not prove the pairing secret`, { peer: o.peer });
    return 'paired';
  } catch (e) {
    return droppedOrThrow(e);
  } finally {
    ch.close();
  }
}

export interface JoinerSideOptions {
  pairId: string;
  /** This host: the joiner. */
  self: string;
  /** The CA host. */
  peer: string;
  key: Buffer;
  deadline: number;
  /** This host's CSR (its key stays with the caller). */
  csr: string;
  /**
   * Checks the pair CA certificate and this host's certificate (the CA host has proven the secret by then)
   * and stores them durably with the key; throws when they do not fit.
   */
  accept(m: { ca: string; cert: string }): Promise<void>;
}

/** The joiner's side on a connection it accepted. */
export async function runJoinerSide(socket: net.Socket, o: JoinerSideOptions): Promise<'paired' | Dropped> {
  const ch = new LineChannel(socket, o.peer, Math.min(o.deadline, Date.now() + EXCHANGE_TIMEOUT_MS));
  try {
    let hello: HelloMessage;
    try {
      hello = expect(await ch.read(), 'hello', o.peer);
    } catch (e) {
      // Whoever this is has not said it is the peer: nothing to give up for.
      return { dropped: `no valid hello: ${describeError(e)}` };
    }
    if (hello.pairId !== o.pairId || hello.host !== o.peer) {
      const who = `${hello.host} of pair ${hello.pairId}`;
      await ch.sendQuietly(failMessage(`this is ${o.self} of pair ${o.pairId}, pairing with ${o.peer}, not with ${who}`));
      return { dropped: `a hello from ${who}` };
    }
    const joinerNonce = newNonce();
    const t: Transcript = { pairId: o.pairId, caHost: o.peer, joiner: o.self, caNonce: hello.nonce, joinerNonce, csr: o.csr };
    await ch.send({ v: 1, t: 'csr', host: o.self, nonce: joinerNonce, csr: o.csr, proof: prove(o.key, 'joiner-csr', t) });
    const certs = expect(await ch.read(), 'certs', o.peer);
    t.ca = certs.ca;
    t.cert = certs.cert;
    if (!proofMatches(o.key, 'ca-certs', t, certs.proof)) {
      return await ch.refuse(`${o.self} cannot verify ${o.peer}'s proof: the pairing secrets differ (or the exchange is not ${o.peer}'s own)`);
    }
    try {
      await o.accept({ ca: certs.ca, cert: certs.cert });
    } catch (e) {
      return await ch.refuse(`${o.self} cannot use the certificates ${o.peer} sent: ${describeError(e)}`, e);
    }
    // Stored: this host is paired whether or not `done` arrives (docs/pairing.md, the last round trip).
    await ch.sendQuietly({ v: 1, t: 'done', proof: prove(o.key, 'joiner-done', t) });
    return 'paired';
  } catch (e) {
    return droppedOrThrow(e);
  } finally {
    ch.close();
  }
}

/** The message if it is of type `t`; a `fail` from the peer ends the pairing, any other type is invalid. */
function expect<T extends ExchangeMessage['t']>(m: ExchangeMessage, t: T, peer: string): Extract<ExchangeMessage, { t: T }> {
  if (m.t === 'fail') throw new LockstepError('PAIRING', `${peer} refused the pairing: ${m.reason}`, { peer, reason: m.reason });
  if (m.t !== t) throw new LockstepError('INVALID_MESSAGE', `pairing message: t is ${JSON.stringify(m.t)} where ${JSON.stringify(t)} was due`, { field: 't' });
  return m as Extract<ExchangeMessage, { t: T }>;
}

function droppedOrThrow(e: unknown): Dropped {
  if (e instanceof LockstepError && e.fields['connectionLost'] === true) return { dropped: e.message };
  if (e instanceof LockstepError && e.code === 'PAIRING') throw e;
  // Malformed input from a peer that has identified itself: the peer sent something unusable.
  throw new LockstepError('PAIRING', `the pairing exchange failed: ${describeError(e)}`, {}, { cause: e });
}

/**
 * JSON lines over one socket, each read bounded by the line limit and the exchange's deadline. A lost
 * connection, a timeout and an overlong line end the channel; reads then throw.
 */
class LineChannel {
  private readonly lines: Buffer[] = [];
  private failure: LockstepError | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly socket: net.Socket,
    private readonly peer: string,
    private readonly deadline: number,
  ) {
    const splitter = new LineSplitter(PAIRING_LINE_BYTES_MAX);
    socket.on('data', (chunk: Buffer) => {
      if (this.failure) return;
      const r = splitter.push(chunk);
      this.lines.push(...r.lines);
      if (r.overflow) {
        this.fail(new LockstepError('INVALID_MESSAGE', `pairing message: line is longer than ${PAIRING_LINE_BYTES_MAX} bytes`, { field: 'line' }));
        socket.destroy();
      }
      this.wakeUp();
    });
    socket.on('error', (e) => this.fail(lost(peer, `failed: ${e.message}`, e)));
    socket.on('close', () => this.fail(lost(peer, 'closed')));
  }

  /** The next line, parsed; throws `INVALID_MESSAGE` for a malformed one, or why the channel ended. */
  async read(): Promise<ExchangeMessage> {
    for (;;) {
      const line = this.lines.shift();
      if (line !== undefined) return parseExchangeLine(line);
      if (this.failure) throw this.failure;
      const left = this.deadline - Date.now();
      if (left <= 0) throw lost(this.peer, 'timed out');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /** Resolves once the line is handed to the kernel, so a `fail` is on its way before we give up. */
  send(m: ExchangeMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(formatLine(m), (e) => (e ? reject(lost(this.peer, `failed: ${e.message}`, e)) : resolve()));
    });
  }

  /** For a last line: the connection ends anyway, a lost one changes nothing. */
  async sendQuietly(m: ExchangeMessage): Promise<void> {
    await this.send(m).catch(() => {});
  }

  /** Tells the peer why, then fails the pairing with the same reason. */
  async refuse(reason: string, cause?: unknown): Promise<never> {
    await this.sendQuietly(failMessage(reason));
    throw new LockstepError('PAIRING', reason, { peer: this.peer }, cause === undefined ? {} : { cause });
  }

  /** Half-closes (the peer reads what we wrote) and destroys the socket soon after either way. */
  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private fail(e: LockstepError): void {
    this.failure ??= e;
    this.wakeUp();
  }

  private wakeUp(): void {
    this.wake?.();
  }
}

function lost(peer: string, why: string, cause?: unknown): LockstepError {
  return new LockstepError('PAIRING', `the pairing connection with ${peer} ${why}`, { peer, connectionLost: true }, cause === undefined ? {} : { cause });
}
