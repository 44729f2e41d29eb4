/**
 * Real receivers for the notification tests, in the test process and on 127.0.0.1 only: an SMTP server
 * (STARTTLS, AUTH PLAIN/LOGIN, scripted rejections) that records every session, an HTTPS server that
 * answers from a scripted list of statuses and records every request, a test CA for both, Debian's
 * snmptrapd on a loopback port, and a state database whose event log feeds the notifier. Everything is
 * registered with `Cleanup`.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { spawn, spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createCa, issueCert } from '../../src/pki/pki.js';
import { StateDb, type LogEntry } from '../../src/daemon/state-db.js';
import { DEFAULT_RETRY, type NotificationsConfig } from '../../src/notify/receivers.js';
import { Notifier } from '../../src/notify/notifier.js';
import { Cleanup } from '../support/cleanup.js';
export { Cleanup };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function tempDir(cleanup: Cleanup, prefix = 'lockstep-notify-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Polls `cond` every 20 ms until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A test CA and a server certificate for 127.0.0.1 and localhost, as PEM text and files. */
export interface TestPki {
  caFile: string;
  caPem: string;
  certPem: string;
  keyPem: string;
}

export async function testPki(dir: string, name = 'notify test'): Promise<TestPki> {
  const caDir = path.join(dir, `${name.replace(/\W+/g, '-')}-ca`);
  await mkdir(caDir, { recursive: true });
  const ca = await createCa(caDir, `${name} CA`);
  const leaf = await issueCert(ca, caDir, { commonName: `${name} server`, ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  return { caFile: ca.cert, caPem: readFileSync(ca.cert, 'utf8'), certPem: readFileSync(leaf.cert, 'utf8'), keyPem: readFileSync(leaf.key, 'utf8') };
}

/** A port nothing listens on right now (bound, then released). */
export async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  if (kind === 'udp') {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    const port = s.address().port;
    await new Promise<void>((r) => s.close(() => r()));
    return port;
  }
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A state database in `dir` whose log the notifier reads, and a way to append alerts to it as the driver does. */
export function stateDb(cleanup: Cleanup, dir: string): { db: StateDb; file: string } {
  const file = path.join(dir, 'state', 'lockstepd.db');
  const db = StateDb.open(file);
  cleanup.add(() => {
    try {
      db.close();
    } catch {
      /* closed by the test */
    }
  });
  return { db, file };
}

export function logAlert(db: StateDb, severity: LogEntry['severity'], code: string, what: string, host = 'host1'): void {
  db.appendLog([{ wallMs: Date.now(), atMs: 1000, host, kind: 'alert', severity, code, what, cause: 'tick' }]);
}

export function logEvent(db: StateDb, what: string, host = 'host1'): void {
  db.appendLog([{ wallMs: Date.now(), atMs: 1000, host, kind: 'event', severity: null, code: null, what, cause: 'tick' }]);
}

/** A notifications config with fast retries (50 ms doubling to 200 ms) and no receivers; tests add theirs. */
export function notifyConfig(patch: Partial<NotificationsConfig>): NotificationsConfig {
  return { minSeverity: 'info', smtp: null, snmp: null, callHome: null, webhooks: [], retry: { ...DEFAULT_RETRY, initialMs: 50, maxMs: 200 }, ...patch };
}

// ── SMTP ────────────────────────────────────────────────────────────────────────────────────────────────

export interface SmtpSession {
  helo: string | null;
  tls: boolean;
  authUser: string | null;
  authMechanism: string | null;
  from: string | null;
  to: string[];
  /** The DATA as it came on the wire (dot-stuffed, CRLF), and the message after un-stuffing. */
  rawData: string | null;
  message: string | null;
  commands: string[];
}

export interface SmtpServerOptions {
  pki?: TestPki;
  offerStartTls: boolean;
  /** When set, MAIL FROM needs AUTH with these credentials first. */
  auth?: { user: string; password: string; mechanisms: ('PLAIN' | 'LOGIN')[] };
  /** A scripted rejection (changeable while running): the reply given instead of the normal one. */
  reject?: { at: 'MAIL' | 'RCPT' | 'DATA' | 'message'; reply: string; rcpt?: string } | null;
}

/** An SMTP server on 127.0.0.1 that records each session; `port` 0 picks one. */
export class SmtpTestServer {
  readonly sessions: SmtpSession[] = [];
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private queued = 0;

  private constructor(readonly opts: SmtpServerOptions) {
    this.server = net.createServer((sock) => this.session(sock));
  }

  static async start(cleanup: Cleanup, opts: SmtpServerOptions, port = 0): Promise<SmtpTestServer & { port: number }> {
    const s = new SmtpTestServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(port, '127.0.0.1', () => resolve());
    });
    cleanup.add(() => s.close());
    return Object.assign(s, { port: (s.server.address() as net.AddressInfo).port });
  }

  /** Mails accepted (250 after the message). */
  accepted(): SmtpSession[] {
    return this.sessions.filter((s) => s.message !== null);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private session(plain: net.Socket): void {
    this.sockets.add(plain);
    plain.on('close', () => this.sockets.delete(plain));
    plain.on('error', () => undefined);
    const rec: SmtpSession = { helo: null, tls: false, authUser: null, authMechanism: null, from: null, to: [], rawData: null, message: null, commands: [] };
    this.sessions.push(rec);
    let sock: net.Socket = plain;
    let buf = '';
    let mode: 'command' | 'data' | 'login-user' | 'login-pass' = 'command';
    let loginUser = '';
    let data: string[] = [];
    const reply = (text: string): void => void sock.write(`${text}\r\n`);
    const authorized = (): boolean => !this.opts.auth || rec.authUser !== null;
    const checkAuth = (user: string, password: string, mechanism: string): void => {
      if (this.opts.auth && user === this.opts.auth.user && password === this.opts.auth.password) {
        rec.authUser = user;
        rec.authMechanism = mechanism;
        reply('235 2.7.0 Authentication successful');
      } else reply('535 5.7.8 Authentication credentials invalid');
    };
    const rejection = (at: 'MAIL' | 'RCPT' | 'DATA' | 'message', rcpt?: string): string | null => {
      const r = this.opts.reject;
      if (!r || r.at !== at || (r.rcpt !== undefined && r.rcpt !== rcpt)) return null;
      return r.reply;
    };
    const onLine = (line: string): void => {
      if (mode === 'data') {
        if (line === '.') {
          mode = 'command';
          rec.rawData = `${data.join('\r\n')}\r\n`;
          const rej = rejection('message');
          if (rej) return reply(rej);
          rec.message = data.map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n') + '\r\n';
          return reply(`250 2.0.0 Ok: queued as Q${++this.queued}`);
        }
        data.push(line);
        return;
      }
      if (mode === 'login-user') {
        loginUser = Buffer.from(line, 'base64').toString('utf8');
        mode = 'login-pass';
        return reply('334 UGFzc3dvcmQ6');
      }
      if (mode === 'login-pass') {
        mode = 'command';
        return checkAuth(loginUser, Buffer.from(line, 'base64').toString('utf8'), 'LOGIN');
      }
      rec.commands.push(line.startsWith('AUTH PLAIN ') ? 'AUTH PLAIN ***' : line);
      const [verb = '', ...rest] = line.split(' ');
      const arg = rest.join(' ');
      switch (verb.toUpperCase()) {
        case 'EHLO': {
          rec.helo = arg;
          const ext = ['250-test.invalid greets you'];
          if (this.opts.offerStartTls && !rec.tls) ext.push('250-STARTTLS');
          if (this.opts.auth && (rec.tls || !this.opts.offerStartTls)) ext.push(`250-AUTH ${this.opts.auth.mechanisms.join(' ')}`);
          ext.push('250 8BITMIME');
          return void sock.write(`${ext.join('\r\n')}\r\n`);
        }
        case 'HELO':
          rec.helo = arg;
          return reply('250 test.invalid');
        case 'STARTTLS': {
          if (!this.opts.offerStartTls || !this.opts.pki || rec.tls) return reply('502 5.5.1 not offered');
          reply('220 2.0.0 Ready to start TLS');
          sock.removeAllListeners('data');
          const secure = new tls.TLSSocket(sock, { isServer: true, key: this.opts.pki.keyPem, cert: this.opts.pki.certPem });
          secure.on('error', () => undefined);
          this.sockets.add(secure);
          secure.on('secure', () => (rec.tls = true));
          sock = secure;
          buf = '';
          sock.on('data', onData);
          return;
        }
        case 'AUTH': {
          const [mech = '', initial] = arg.split(' ');
          if (!this.opts.auth || !this.opts.auth.mechanisms.includes(mech.toUpperCase() as 'PLAIN')) return reply('504 5.5.4 mechanism not supported');
          if (mech.toUpperCase() === 'PLAIN') {
            const [, user = '', password = ''] = Buffer.from(initial ?? '', 'base64').toString('utf8').split('\0');
            return checkAuth(user, password, 'PLAIN');
          }
          mode = 'login-user';
          return reply('334 VXNlcm5hbWU6');
        }
        case 'MAIL': {
          if (!authorized()) return reply('530 5.7.0 Authentication required');
          const rej = rejection('MAIL');
          if (rej) return reply(rej);
          rec.from = /<(.*)>/.exec(arg)?.[1] ?? null;
          return reply('250 2.1.0 Ok');
        }
        case 'RCPT': {
          const to = /<(.*)>/.exec(arg)?.[1] ?? '';
          const rej = rejection('RCPT', to);
          if (rej) return reply(rej);
          rec.to.push(to);
          return reply('250 2.1.5 Ok');
        }
        case 'DATA': {
          const rej = rejection('DATA');
          if (rej) return reply(rej);
          mode = 'data';
          data = [];
          return reply('354 End data with <CR><LF>.<CR><LF>');
        }
        case 'RSET':
          rec.from = null;
          rec.to = [];
          return reply('250 2.0.0 Ok');
        case 'QUIT':
          reply('221 2.0.0 Bye');
          return void sock.end();
        default:
          return reply('502 5.5.2 Error: command not recognized');
      }
    };
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('utf8');
      for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        onLine(line);
      }
    };
    sock.on('data', onData);
    reply('220 test.invalid ESMTP lockstep-test');
  }
}

/** Headers of an RFC 5322 message, unfolded, names lower-cased; and the body. */
export function parseMessage(message: string): { headers: Map<string, string>; body: string } {
  const at = message.indexOf('\r\n\r\n');
  const head = message.slice(0, at).replace(/\r\n[ \t]/g, ' ');
  const headers = new Map<string, string>();
  for (const line of head.split('\r\n')) {
    const i = line.indexOf(':');
    headers.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
  }
  return { headers, body: message.slice(at + 4) };
}

// ── HTTPS ───────────────────────────────────────────────────────────────────────────────────────────────

export interface HttpRequestRecord {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  status: number;
}

/** An HTTPS server on 127.0.0.1 that answers each POST with the next status of `statuses` (the last one repeats). */
export class HttpsTestServer {
  readonly requests: HttpRequestRecord[] = [];
  private readonly server: https.Server;

  private constructor(pki: TestPki, readonly statuses: number[]) {
    this.server = https.createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const status = this.statuses.length > 1 ? this.statuses.shift()! : this.statuses[0] ?? 200;
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          body = Buffer.concat(chunks).toString('utf8');
        }
        this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, status });
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(status >= 200 && status < 300 ? 'accepted' : 'receiver is unwell');
      });
    });
  }

  static async start(cleanup: Cleanup, pki: TestPki, statuses: number[] = [200]): Promise<HttpsTestServer & { port: number; url: (p: string) => string }> {
    const s = new HttpsTestServer(pki, statuses);
    await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', () => r()));
    cleanup.add(() => new Promise<void>((r) => { s.server.closeAllConnections(); s.server.close(() => r()); }));
    const port = (s.server.address() as net.AddressInfo).port;
    return Object.assign(s, { port, url: (p: string) => `https://127.0.0.1:${port}${p}` });
  }

  /** Requests the server accepted (a 2xx answer). */
  accepted(): HttpRequestRecord[] {
    return this.requests.filter((r) => r.status >= 200 && r.status < 300);
  }
}

// ── SNMP ─────────────────────────────────────────────────────────────────────────────────────────────────

/** snmptrapd on 127.0.0.1:port, logging numeric OIDs to stdout, accepting only `community` (default `public`). */
export async function startSnmptrapd(cleanup: Cleanup, dir: string, community = 'public'): Promise<{ port: number; output: () => string }> {
  const which = spawnSync('sh', ['-c', 'command -v snmptrapd']);
  assert.equal(which.status, 0, 'snmptrapd is not installed: run scripts/setup.sh (Debian package snmptrapd)');
  const conf = path.join(dir, 'snmptrapd.conf');
  await writeFile(conf, `authCommunity log ${community}\n`);
  const port = await freePort('udp');
  const child = spawn('snmptrapd', ['-f', '-Lo', '-n', '-C', '-c', conf, '-On', '-M', '/nonexistent', '-m', '', `udp:127.0.0.1:${port}`], {
    env: { ...process.env, SNMP_PERSISTENT_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });
  await waitFor(`snmptrapd to start (output so far: ${out})`, () => /NET-SNMP version/.test(out) || child.exitCode !== null, 10_000);
  assert.equal(child.exitCode, null, `snmptrapd exited: ${out}`);
  return { port, output: () => out };
}

/** The varbinds snmptrapd logged for the trap that carries `uid`, as OID → printed value. */
export function varbindsOf(output: string, uid: string): Map<string, string> {
  const line = output.split('\n').find((l) => l.includes(`"${uid}"`));
  assert.ok(line, `no trap with id ${uid} in snmptrapd's log:\n${output}`);
  const m = new Map<string, string>();
  for (const part of line.split('\t')) {
    const at = part.indexOf(' = ');
    if (at > 0) m.set(part.slice(0, at).trim().replace(/^.*\]:\s*/, ''), part.slice(at + 3).trim());
  }
  return m;
}

// ── the notifier ────────────────────────────────────────────────────────────────────────────────────────

/** A notifier on `db`'s log with its outbox in `dir`, its log lines collected; stopped by cleanup. */
export function startNotifier(cleanup: Cleanup, dir: string, db: StateDb, config: NotificationsConfig, host = 'host1'): { notifier: Notifier; lines: string[] } {
  const lines: string[] = [];
  const notifier = new Notifier({ config, pair: 'lab', host, outboxFile: path.join(dir, 'state', 'notify.db'), source: db, log: (l) => lines.push(l) });
  cleanup.add(() => notifier.stop());
  notifier.start();
  return { notifier, lines };
}
