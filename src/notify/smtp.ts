/**
 * A small SMTP client (RFC 5321) on node's net and tls, enough to hand an e-Alert to the site's mail relay:
 * EHLO (HELO for an old server), STARTTLS (RFC 3207) when offered or required, AUTH PLAIN or LOGIN
 * (RFC 4954), MAIL FROM, RCPT TO each recipient, DATA with the message dot-stuffed, QUIT.
 *
 * Every outcome is a value (`DeliveryOutcome`) naming the step and quoting the server's reply. The rules:
 * - `starttls: 'required'`: no STARTTLS offered is a failure; `'opportunistic'`: STARTTLS when offered;
 *   `'off'`: never. When TLS is used the server's certificate is verified (the configured CA, else the
 *   system's); a failed handshake is a failure, never a fall-back to clear text, since a downgrade on failure
 *   is exactly what an attacker on the path would provoke.
 * - The password never goes in clear text unless the operator said `starttls: 'off'`.
 * - Every recipient must be accepted: a partly accepted mail is abandoned (RSET), since a retry of it would
 *   send a second copy to those who got the first.
 * - Data the server sends after its reply to STARTTLS, before the handshake, is a failure (it would be
 *   read as if it had come over TLS: the STARTTLS command injection of CVE-2011-0411).
 * Time is bounded per reply and for the whole session.
 */
import net from 'node:net';
import tls from 'node:tls';
import { delivered, failed, type DeliveryOutcome } from './outcome.js';
import { dotStuff } from './mail.js';

export interface SmtpOptions {
  host: string;
  port: number;
  starttls: 'required' | 'opportunistic' | 'off';
  /** AUTH, when the relay wants it: the user and the password (read from the configured file by the caller). */
  auth?: { user: string; password: string } | null;
  /** PEM CA certificate(s) that sign the server's certificate; default: the system's CAs. */
  ca?: string | null;
  /** The name this host gives in EHLO. */
  heloName: string;
  /** The TLS server name to verify; default the host (when it is a name, not an address). */
  servername?: string;
  replyTimeoutMs?: number;
  sessionTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface SmtpEnvelope {
  from: string;
  to: readonly string[];
}

/** RFC 5321 §4.5.3.2: 5 min for most replies; a relay answering slower than this is as good as down for an alert. */
export const SMTP_REPLY_TIMEOUT_MS = 30_000;
export const SMTP_SESSION_TIMEOUT_MS = 120_000;
/** A reply longer than this (all its lines) is not a mail server talking. */
const REPLY_BYTES_MAX = 64 * 1024;

interface Reply {
  code: number;
  text: string;
}

class SmtpFailure extends Error {
  constructor(
    readonly step: string,
    message: string,
    readonly reply: string | null = null,
  ) {
    super(message);
  }
}

/** Sends `message` (RFC 5322 text, CRLF or LF line endings) to every recipient of `envelope`. */
export async function sendMail(opts: SmtpOptions, envelope: SmtpEnvelope, message: string): Promise<DeliveryOutcome> {
  const session = new Session(opts);
  try {
    const accepted = await session.run(envelope, message);
    return delivered(accepted);
  } catch (e) {
    if (e instanceof SmtpFailure) return failed(e.step, e.message, e.reply);
    return failed(session.step, (e as Error).message);
  } finally {
    session.close();
  }
}

class Session {
  step = 'connect';
  private socket: net.Socket;
  private buf = '';
  private waiter: { resolve: () => void } | null = null;
  private closedWith: Error | null = null;
  private readonly replyTimeoutMs: number;
  private readonly deadline: number;
  private readonly onAbort = (): void => this.fail(new Error('aborted: lockstepd is stopping'));

  constructor(private readonly opts: SmtpOptions) {
    this.replyTimeoutMs = opts.replyTimeoutMs ?? SMTP_REPLY_TIMEOUT_MS;
    this.deadline = Date.now() + (opts.sessionTimeoutMs ?? SMTP_SESSION_TIMEOUT_MS);
    this.socket = net.connect({ host: opts.host, port: opts.port });
    this.listen(this.socket);
    opts.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  async run(envelope: SmtpEnvelope, message: string): Promise<string> {
    if (this.opts.signal?.aborted) throw new SmtpFailure('connect', 'aborted: lockstepd is stopping');
    await this.connected();
    this.step = 'greeting';
    this.expect(await this.reply(), [220], 'the server did not greet with 220');
    let ext = await this.hello();
    if (ext.has('STARTTLS') && this.opts.starttls !== 'off') {
      await this.startTls();
      ext = await this.hello();
    } else if (this.opts.starttls === 'required') {
      throw new SmtpFailure('STARTTLS', 'the server does not offer STARTTLS, and the config requires it (starttls: required)');
    }
    if (this.opts.auth) await this.authenticate(ext, this.opts.auth);

    this.step = 'MAIL FROM';
    this.expect(await this.command(`MAIL FROM:<${envelope.from}>`), [250], 'the sender was refused');
    for (const rcpt of envelope.to) {
      this.step = `RCPT TO <${rcpt}>`;
      const r = await this.command(`RCPT TO:<${rcpt}>`);
      if (r.code !== 250 && r.code !== 251) {
        await this.command('RSET').catch(() => undefined);
        throw new SmtpFailure(this.step, 'the recipient was refused (the mail is not sent to anyone, so that a retry sends no second copy)', r.text);
      }
    }
    this.step = 'DATA';
    this.expect(await this.command('DATA'), [354], 'the server would not take the message');
    this.step = 'message';
    const accepted = this.expect(await this.send(dotStuff(message)), [250], 'the server refused the message');
    this.step = 'QUIT';
    // The mail is accepted: QUIT is a courtesy, and its answer (or its absence) changes nothing.
    await this.command('QUIT', Math.min(this.replyTimeoutMs, 2000)).catch(() => undefined);
    return accepted.text;
  }

  close(): void {
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    this.socket.destroy();
  }

  /** EHLO, or HELO when the server does not know EHLO; the extensions it offers, upper-case keywords with their parameters. */
  private async hello(): Promise<Map<string, string>> {
    this.step = 'EHLO';
    const r = await this.command(`EHLO ${this.opts.heloName}`);
    if (r.code === 250) {
      const ext = new Map<string, string>();
      for (const line of r.text.split('\n').slice(1)) {
        const [keyword, ...params] = line.slice(4).trim().split(/\s+/);
        if (keyword) ext.set(keyword.toUpperCase(), params.join(' ').toUpperCase());
      }
      return ext;
    }
    this.step = 'HELO';
    this.expect(await this.command(`HELO ${this.opts.heloName}`), [250], 'the server refused both EHLO and HELO');
    return new Map();
  }

  private async startTls(): Promise<void> {
    this.step = 'STARTTLS';
    this.expect(await this.command('STARTTLS'), [220], 'the server refused STARTTLS');
    if (this.buf !== '') throw new SmtpFailure('STARTTLS', 'the server sent data after its STARTTLS reply, before the TLS handshake (refused: it could be injected)');
    this.step = 'TLS handshake';
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('end');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    const servername = this.opts.servername ?? (net.isIP(this.opts.host) ? undefined : this.opts.host);
    const secure = tls.connect({
      socket: plain,
      ...(servername ? { servername } : {}),
      ...(this.opts.ca ? { ca: this.opts.ca } : {}),
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
    });
    this.socket = secure;
    this.listen(secure);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no TLS handshake within ${this.replyTimeoutMs} ms`)), this.remaining(this.replyTimeoutMs));
      secure.once('secureConnect', () => {
        clearTimeout(timer);
        resolve();
      });
      secure.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    }).catch((e: Error) => {
      throw new SmtpFailure('TLS handshake', `TLS with ${this.opts.host}:${this.opts.port} failed: ${e.message}`);
    });
  }

  private async authenticate(ext: Map<string, string>, auth: { user: string; password: string }): Promise<void> {
    this.step = 'AUTH';
    if (!(this.socket instanceof tls.TLSSocket) && this.opts.starttls !== 'off') {
      throw new SmtpFailure('AUTH', 'the session is not encrypted (the server offered no STARTTLS): the password is not sent in clear text unless starttls is off');
    }
    const mechanisms = (ext.get('AUTH') ?? '').split(/\s+/).filter((m) => m !== '');
    const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
    if (mechanisms.includes('PLAIN')) {
      this.step = 'AUTH PLAIN';
      this.expect(await this.command(`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.password}`)}`), [235], 'authentication failed');
    } else if (mechanisms.includes('LOGIN')) {
      this.step = 'AUTH LOGIN';
      this.expect(await this.command('AUTH LOGIN'), [334], 'the server refused AUTH LOGIN');
      this.expect(await this.command(b64(auth.user)), [334], 'the server refused the user name');
      this.expect(await this.command(b64(auth.password)), [235], 'authentication failed');
    } else {
      throw new SmtpFailure('AUTH', `the server offers no AUTH mechanism Lockstep speaks (PLAIN, LOGIN); it offers: ${mechanisms.join(' ') || 'none'}`);
    }
  }

  private expect(r: Reply, codes: readonly number[], why: string): Reply {
    if (!codes.includes(r.code)) throw new SmtpFailure(this.step, `${why}: expected ${codes.join(' or ')}, got ${r.code}`, r.text);
    return r;
  }

  /** One command line and its reply. Errors quote the reply, never the command (it may carry credentials). */
  private async command(line: string, timeoutMs?: number): Promise<Reply> {
    return this.send(`${line}\r\n`, timeoutMs);
  }

  private async send(data: string, timeoutMs?: number): Promise<Reply> {
    if (this.closedWith) throw this.closedWith;
    this.socket.write(data);
    return this.reply(timeoutMs);
  }

  /** The next complete reply (its lines joined by LF), within the reply timeout and the session's deadline. */
  private async reply(timeoutMs = this.replyTimeoutMs): Promise<Reply> {
    const limit = this.remaining(timeoutMs);
    const timer = setTimeout(() => this.fail(new Error(`no reply within ${limit} ms`)), limit);
    try {
      for (;;) {
        const r = this.parseReply();
        if (r) return r;
        if (this.closedWith) throw this.closedWith;
        await new Promise<void>((resolve) => (this.waiter = { resolve }));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Takes one complete reply off the buffer, if there is one. */
  private parseReply(): Reply | null {
    const lines: string[] = [];
    let at = 0;
    for (;;) {
      const nl = this.buf.indexOf('\n', at);
      if (nl < 0) return null;
      const line = this.buf.slice(at, nl).replace(/\r$/, '');
      at = nl + 1;
      const m = /^(\d{3})([ -]|$)/.exec(line);
      if (!m) throw new SmtpFailure(this.step, 'the server sent a line that is not an SMTP reply', line);
      lines.push(line);
      if (m[2] !== '-') {
        this.buf = this.buf.slice(at);
        return { code: Number(m[1]), text: lines.join('\n') };
      }
    }
  }

  private listen(sock: net.Socket): void {
    sock.on('data', (chunk: Buffer) => {
      this.buf += chunk.toString('latin1');
      if (this.buf.length > REPLY_BYTES_MAX) this.fail(new Error(`the server's reply exceeds ${REPLY_BYTES_MAX} bytes`));
      this.wake();
    });
    sock.on('error', (e) => this.fail(e));
    sock.on('end', () => this.fail(new Error('the server closed the connection')));
    sock.on('close', () => this.fail(new Error('the connection closed')));
  }

  private connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closedWith) return reject(this.closedWith);
      const timer = setTimeout(() => this.fail(new Error(`no connection within ${this.replyTimeoutMs} ms`)), this.remaining(this.replyTimeoutMs));
      const done = (e?: Error): void => {
        clearTimeout(timer);
        this.onFail = null;
        if (e) reject(new SmtpFailure('connect', `cannot connect to ${this.opts.host}:${this.opts.port}: ${e.message}`));
        else resolve();
      };
      this.socket.once('connect', () => done());
      this.onFail = (e) => done(e);
    });
  }

  private onFail: ((e: Error) => void) | null = null;

  private fail(e: Error): void {
    this.closedWith ??= e;
    const f = this.onFail;
    this.onFail = null;
    f?.(this.closedWith);
    this.wake();
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.resolve();
  }

  private remaining(ms: number): number {
    return Math.max(1, Math.min(ms, this.deadline - Date.now()));
  }
}
