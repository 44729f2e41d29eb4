/**
 * The live event stream (`/api/v1/events/stream`, docs/api.md): status, event log and audit entries into the
 * store. It resumes where it left off (`after=` the last log id), so a reconnect misses nothing; a gap the
 * server reports is filled from `GET /v1/events`. Reconnects back off from 1 s to 15 s; a close for the
 * session's end (1008) sends the console to its login page instead.
 */
import { call } from './api.js';
import { addAudit, addLog, changed, LOG_KEPT_MAX, store } from './store.js';
import type { AuditEntry, LogEntry, Status } from './types.js';

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 15_000;
/** The first load: the newest entries of the event log (the API's page limit). */
const FIRST_LOAD = 1000;

export class LiveStream {
  private ws: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private backoffMs = BACKOFF_MIN_MS;
  private stopped = false;

  constructor(private readonly sessionEnded: (why: string) => void) {}

  /** Loads the recent log, then streams from its newest entry on. */
  async start(): Promise<void> {
    this.stopped = false;
    const first = await call<LogEntry[]>('GET', `/v1/events?limit=${FIRST_LOAD}`);
    if (first.ok) addLog(first.body);
    if (!this.stopped) this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close(1000, 'logged out');
    this.ws = null;
    store.connection = 'closed';
    changed();
  }

  private connect(): void {
    const after = store.log.at(-1)?.id;
    const url = `wss://${location.host}/api/v1/events/stream${after !== undefined ? `?after=${after}` : ''}`;
    store.connection = store.connection === 'live' || store.connection === 'reconnecting' ? 'reconnecting' : 'connecting';
    changed();
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.backoffMs = BACKOFF_MIN_MS;
      store.connection = 'live';
      store.connectionNote = '';
      changed();
    });
    ws.addEventListener('message', (m) => this.take(String(m.data)));
    ws.addEventListener('close', (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (ev.code === 1008) {
        // The server ends a stream whose session ended, expired or lost its role: log in again.
        store.connection = 'closed';
        store.connectionNote = ev.reason;
        changed();
        this.sessionEnded(ev.reason || 'the session ended');
        return;
      }
      store.connection = 'reconnecting';
      store.connectionNote = ev.reason || `closed (${ev.code})`;
      changed();
      this.timer = setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
    });
  }

  private take(text: string): void {
    let msg: { type?: string; status?: Status; entry?: unknown; after?: number; before?: number };
    try {
      msg = JSON.parse(text);
    } catch {
      return; // The server sends JSON only; anything else is not ours to act on.
    }
    switch (msg.type) {
      case 'status':
        store.status = msg.status ?? null;
        changed();
        break;
      case 'log':
        addLog([msg.entry as LogEntry]);
        break;
      case 'audit':
        addAudit(msg.entry as AuditEntry);
        break;
      case 'gap':
        void this.fillGap(msg.before ?? 0);
        break;
    }
  }

  /** The entries the server did not replay (more than it replays at once): the newest page before `before`. */
  private async fillGap(before: number): Promise<void> {
    const r = await call<LogEntry[]>('GET', `/v1/events?limit=${FIRST_LOAD}&before=${before}`);
    if (!r.ok) return;
    // addLog keeps ids increasing, so older entries are merged by rebuilding the buffer.
    const byId = new Map(store.log.map((e) => [e.id, e]));
    for (const e of r.body) byId.set(e.id, e);
    store.log = [...byId.values()].sort((a, b) => a.id - b.id).slice(-LOG_KEPT_MAX);
    changed();
  }
}
