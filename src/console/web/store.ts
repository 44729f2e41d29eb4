/**
 * What the console knows, in one place: who is logged in, the host's status and its event log as the live
 * stream keeps them, and the stream's state. Pages read it and are told when it changes; only main.ts and
 * the stream write it.
 */
import type { AuditEntry, LogEntry, Status, User } from './types.js';

/** The event log entries kept in the browser: enough for the timelines of a busy day, bounded. */
export const LOG_KEPT_MAX = 5000;
/** Audit entries received live (the audit page pages older ones from the API). */
export const AUDIT_KEPT_MAX = 500;

export type Connection = 'connecting' | 'live' | 'reconnecting' | 'closed';

export interface Store {
  user: User | null;
  status: Status | null;
  /** The event log, oldest first, ids increasing. */
  log: LogEntry[];
  /** Audit entries that arrived live, newest first. */
  audit: AuditEntry[];
  connection: Connection;
  /** Why the stream last closed, for the header. */
  connectionNote: string;
}

export const store: Store = { user: null, status: null, log: [], audit: [], connection: 'closed', connectionNote: '' };

type Listener = () => void;
const listeners = new Set<Listener>();

export function subscribe(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

let pending = false;
/**
 * Tells the listeners, at most once per animation frame however many messages came. A hidden tab gets no
 * frames: the store keeps taking messages, and the page redraws once when it is looked at again.
 */
export function changed(): void {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    for (const l of [...listeners]) l();
  });
}

/** Adds entries to the log in id order, none twice, keeping the newest `LOG_KEPT_MAX`. */
export function addLog(entries: LogEntry[]): void {
  const last = store.log.at(-1)?.id ?? 0;
  const fresh = entries.filter((e) => e.id > last).sort((a, b) => a.id - b.id);
  if (fresh.length === 0) return;
  store.log.push(...fresh);
  if (store.log.length > LOG_KEPT_MAX) store.log.splice(0, store.log.length - LOG_KEPT_MAX);
  changed();
}

export function addAudit(entry: AuditEntry): void {
  store.audit.unshift(entry);
  if (store.audit.length > AUDIT_KEPT_MAX) store.audit.length = AUDIT_KEPT_MAX;
  changed();
}

export function reset(): void {
  store.user = null;
  store.status = null;
  store.log = [];
  store.audit = [];
  store.connection = 'closed';
  store.connectionNote = '';
  changed();
}
