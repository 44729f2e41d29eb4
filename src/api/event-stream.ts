/**
 * The live event stream: `GET /api/v1/events/stream` upgraded to a WebSocket, so that a console updates
 * without polling. Each client gets JSON text messages:
 *
 *   {"type":"status","status":{…}}  this host's status as GET /v1/status answers it: first on connect, then
 *                                   whenever it differs, checked every `statusIntervalMs` (500 ms);
 *   {"type":"log","entry":{…}}      each new entry of the core's event log, as GET /v1/events shows it;
 *   {"type":"audit","entry":{…}}    each new user action of the audit log, as GET /v1/audit shows it;
 *   {"type":"gap","after":A,"before":B}  on resume, entries after A and before B were too many to replay:
 *                                   page them with GET /v1/events?before=B.
 *
 * Who: any session with at least read-only, the role that reads both logs over REST too. The stream does
 * not renew its session (a forgotten tab must not keep a session alive): it is closed (1008) when the
 * session ends — logout, password change, user deleted, checked after every changing call — or expires or
 * loses its role (checked with each heartbeat).
 *
 * Limits: `clientsMax` clients; a client that lets `sendQueueBytesMax` pile up is cut off (1008) rather
 * than buffered for; a resume replays at most `replayMax` entries; a heartbeat ping every `pingIntervalMs`,
 * and a client silent for a whole interval is dropped.
 */
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { LockstepError, describeError } from '../util/errors.js';
import { statusBody, type ApiContext } from '../daemon/api.js';
import type { AuditEntry } from '../audit/audit-log.js';
import { roleAllows, type Role } from '../users/roles.js';
import type { UserStore } from '../users/user-store.js';
import { CLOSE, WebSocketConnection, handshakeResponse, type WebSocketLimits } from './websocket.js';

export interface StreamLimits extends WebSocketLimits {
  clientsMax: number;
  pingIntervalMs: number;
  statusIntervalMs: number;
  replayMax: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  payloadBytesMax: 64 * 1024,
  sendQueueBytesMax: 1024 * 1024,
  closeTimeoutMs: 5000,
  clientsMax: 64,
  pingIntervalMs: 15_000,
  statusIntervalMs: 500,
  replayMax: 1000,
};

/** New log entries are read in pages of this many for the fan-out. */
const FANOUT_PAGE = 500;

interface Client {
  ws: WebSocketConnection;
  tokenHash: string;
  /** The newest log id this client has been sent (or had no need of). */
  lastLogId: number;
}

export class EventStream {
  private readonly clients = new Set<Client>();
  /** The newest log id the fan-out has read. */
  private newestRead: number;
  private lastStatus: string | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly api: ApiContext,
    private readonly users: UserStore,
    private readonly now: () => number,
    private readonly limits: StreamLimits,
    private readonly log: (line: string) => void,
  ) {
    this.newestRead = this.newestLogId();
    this.unsubscribe = api.onLogged(() => this.logged());
  }

  clientCount(): number {
    return this.clients.size;
  }

  /**
   * Completes the handshake of an authenticated caller and starts its stream: the status, then (with
   * `after`) the log entries it missed, then everything new. Refused before the handshake when full
   * (`TOO_MANY_STREAMS`) or not a valid handshake (`INVALID_ARGUMENT`).
   */
  accept(req: http.IncomingMessage, socket: Duplex, head: Buffer, session: { tokenHash: string }, after: number | undefined): void {
    if (this.clients.size >= this.limits.clientsMax) {
      throw new LockstepError('TOO_MANY_STREAMS', `the event stream serves at most ${this.limits.clientsMax} clients at once`, { limit: this.limits.clientsMax });
    }
    socket.write(handshakeResponse(req));
    // The HTTP server's request timeouts no longer apply: the heartbeat watches the connection now.
    (socket as Duplex & { setTimeout?(ms: number): void }).setTimeout?.(0);
    if (head.length > 0) socket.unshift(head);
    const newest = this.newestLogId();
    const client: Client = {
      tokenHash: session.tokenHash,
      // An `after` beyond the newest entry (a log from before a reinstall, say) resumes from the newest.
      lastLogId: Math.min(after ?? newest, newest),
      ws: new WebSocketConnection(socket, this.limits, () => {
        this.clients.delete(client);
        if (this.clients.size === 0) this.stopTimers();
      }),
    };
    this.clients.add(client);
    this.startTimers();
    this.sendStatus(client);
    if (after !== undefined) this.replay(client, after);
  }

  /** New entries are in the event log: each client gets those it has not had. Never throws (the driver calls it). */
  logged(): void {
    try {
      if (this.clients.size === 0) {
        this.newestRead = this.newestLogId();
        return;
      }
      for (;;) {
        const page = this.api.logAfter(this.newestRead, FANOUT_PAGE);
        for (const entry of page) {
          const text = JSON.stringify({ type: 'log', entry });
          for (const c of this.clients) {
            if (entry.id <= c.lastLogId) continue;
            c.lastLogId = entry.id;
            c.ws.send(text);
          }
          this.newestRead = entry.id;
        }
        if (page.length < FANOUT_PAGE) return;
      }
    } catch (e) {
      this.log(`event stream: reading the event log failed: ${describeError(e)}`);
    }
  }

  /** A user action was audited: every client gets it (read-only may read the audit log). */
  audited(entry: AuditEntry): void {
    if (this.clients.size === 0) return;
    const text = JSON.stringify({ type: 'audit', entry });
    for (const c of this.clients) c.ws.send(text);
  }

  /** Closes the streams whose session has ended, expired or lost the read-only role. */
  recheckSessions(): void {
    for (const c of this.clients) {
      const s = this.users.sessionByHash(c.tokenHash);
      if (s === null) c.ws.close(CLOSE.policyViolation, 'the session has ended: log in again');
      else if (Date.parse(s.expiresAt) <= this.now()) c.ws.close(CLOSE.policyViolation, 'the session has expired: log in again');
      else if (!roleAllows(s.role as Role | null, 'read-only')) c.ws.close(CLOSE.policyViolation, `the role of ${s.user} no longer allows reading events`);
    }
  }

  /** Closes every stream (1001) and stops listening to the log. */
  close(): void {
    this.unsubscribe();
    this.stopTimers();
    for (const c of this.clients) c.ws.close(CLOSE.goingAway, 'lockstepd is stopping');
  }

  private replay(client: Client, after: number): void {
    // The newest replayMax entries after `after`, oldest first; older ones missed are announced as a gap.
    const entries = this.api.recentLog({ limit: this.limits.replayMax }).filter((e) => e.id > after).reverse();
    const first = entries[0];
    if (first !== undefined && entries.length === this.limits.replayMax && first.id > after + 1) {
      client.ws.send(JSON.stringify({ type: 'gap', after, before: first.id }));
    }
    for (const entry of entries) {
      if (!client.ws.send(JSON.stringify({ type: 'log', entry }))) return;
    }
    client.lastLogId = entries.at(-1)?.id ?? client.lastLogId;
  }

  private sendStatus(client: Client): void {
    const text = this.statusText();
    if (text === null) return;
    if (text !== this.lastStatus) {
      // Changed since the last check: everyone gets it now.
      this.lastStatus = text;
      for (const c of this.clients) c.ws.send(text);
    } else client.ws.send(text);
  }

  private checkStatus(): void {
    const text = this.statusText();
    if (text === null || text === this.lastStatus) return;
    this.lastStatus = text;
    for (const c of this.clients) c.ws.send(text);
  }

  private statusText(): string | null {
    try {
      return JSON.stringify({ type: 'status', status: statusBody(this.api) });
    } catch (e) {
      this.log(`event stream: the status could not be read: ${describeError(e)}`);
      return null;
    }
  }

  private newestLogId(): number {
    return this.api.recentLog({ limit: 1 })[0]?.id ?? 0;
  }

  private startTimers(): void {
    if (this.statusTimer !== null) return;
    this.statusTimer = setInterval(() => this.checkStatus(), this.limits.statusIntervalMs);
    this.pingTimer = setInterval(() => {
      for (const c of this.clients) c.ws.heartbeat();
      this.recheckSessions();
    }, this.limits.pingIntervalMs);
  }

  private stopTimers(): void {
    if (this.statusTimer !== null) clearInterval(this.statusTimer);
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.statusTimer = null;
    this.pingTimer = null;
    this.lastStatus = null;
  }
}
