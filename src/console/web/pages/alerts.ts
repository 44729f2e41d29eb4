/**
 * Alerts and the audit log. Alerts are the core's (the event log's `alert` entries), live, filtered by
 * severity and text in the browser, older ones paged from `GET /v1/events?kind=alert`. The audit log is the
 * API's (`GET /v1/audit`: users' actions merged with the core's events and alerts), filtered and searched
 * by the server, paged with its `next`; a new user action re-runs the query.
 */
import { call, describe } from '../api.js';
import { badge, fill, h, section, table } from '../dom.js';
import { time } from '../format.js';
import { store } from '../store.js';
import type { AuditEntry, LogEntry } from '../types.js';
import { field, type Page } from '../ui.js';

const ALERT_PAGE = 100;
const AUDIT_PAGE = 50;

export const alertsPage: Page = {
  name: 'alerts',
  title: 'Alerts & audit',
  needs: 'read-only',
  mount(root) {
    // ── alerts ──
    let older: LogEntry[] = [];
    const severity = h('select', { name: 'severity' }, ['any', 'critical', 'warning', 'info'].map((s) => h('option', { value: s }, s)));
    const search = h('input', { name: 'alert-search', type: 'search', placeholder: 'code, VM, host, words…' });
    const alertsEl = h('div', {});
    const olderButton = h('button', { type: 'button', 'data-action': 'older-alerts' }, 'Older alerts');
    const drawAlerts = (): void => {
      const sev = severity.value;
      const text = search.value.trim().toLowerCase();
      const live = store.log.filter((e) => e.kind === 'alert');
      const seen = new Set(live.map((e) => e.id));
      const all = [...older.filter((e) => !seen.has(e.id)), ...live].sort((a, b) => b.id - a.id);
      const shown = all.filter((a) => (sev === 'any' || a.severity === sev) && (text === '' || `${a.code} ${a.what} ${a.host} ${a.cause}`.toLowerCase().includes(text)));
      fill(alertsEl, table(['when', 'host', 'severity', 'code', 'what', 'cause'], shown.map((a) => [time(a.wallMs), a.host, badge(a.severity), a.code ?? '', a.what, a.cause]), 'No alerts match.', { id: 'alerts' }));
    };
    severity.addEventListener('change', drawAlerts);
    search.addEventListener('input', drawAlerts);
    olderButton.addEventListener('click', () => {
      const oldest = Math.min(...store.log.filter((e) => e.kind === 'alert').map((e) => e.id), ...older.map((e) => e.id));
      const before = Number.isFinite(oldest) ? `&before=${oldest}` : '';
      void call<LogEntry[]>('GET', `/v1/events?kind=alert&limit=${ALERT_PAGE}${before}`).then((r) => {
        if (!r.ok) return fill(alertsEl, h('p', { class: 'form-error' }, describe(r)));
        older = [...older, ...r.body];
        if (r.body.length < ALERT_PAGE) olderButton.disabled = true;
        drawAlerts();
      });
    });

    // ── audit ──
    const auditForm = h(
      'form',
      { id: 'audit-filter', class: 'filters' },
      field('Kind', h('select', { name: 'kind' }, h('option', { value: '' }, 'all'), h('option', { value: 'user' }, 'user actions'), h('option', { value: 'event' }, 'core events'), h('option', { value: 'alert' }, 'alerts'))),
      field('User', h('input', { name: 'user', placeholder: 'name, or root@host' })),
      field('Search', h('input', { name: 'text', type: 'search', placeholder: 'anywhere in the entry' })),
      h('button', { type: 'submit', 'data-action': 'audit-search' }, 'Search'),
    );
    const auditEl = h('div', {});
    const auditMore = h('button', { type: 'button', 'data-action': 'older-audit', disabled: true }, 'Older entries');
    let entries: AuditEntry[] = [];
    let next: string | null = null;
    const query = (before: string | null): string => {
      const q = new URLSearchParams({ limit: String(AUDIT_PAGE) });
      for (const k of ['kind', 'user', 'text']) {
        const v = (auditForm.elements.namedItem(k) as HTMLInputElement).value.trim();
        if (v !== '') q.set(k, v);
      }
      if (before !== null) q.set('before', before);
      return `/v1/audit?${q}`;
    };
    const runAudit = async (before: string | null): Promise<void> => {
      const r = await call<{ entries: AuditEntry[]; next: string | null }>('GET', query(before));
      if (!r.ok) return fill(auditEl, h('p', { class: 'form-error' }, describe(r)));
      entries = before === null ? r.body.entries : [...entries, ...r.body.entries];
      next = r.body.next;
      auditMore.disabled = next === null;
      fill(
        auditEl,
        table(
          ['when', 'kind', 'host', 'who', 'from', 'what', 'target', 'result'],
          entries.map((e) => [time(e.at), e.kind, e.host, e.user ?? '—', e.client ?? '—', e.kind === 'user' ? `${e.operation} (${e.method} ${e.path})` : (e.message ?? ''), e.target ?? '', e.kind === 'user' ? badge(e.result === 'ok' ? 'ok' : e.result === 'denied' ? 'denied' : 'failed', e.result === 'ok' ? 'good' : 'bad') : badge(e.severity ?? e.kind)]),
          'No entries match.',
          { id: 'audit' },
        ),
      );
    };
    auditForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void runAudit(null);
    });
    auditMore.addEventListener('click', () => void runAudit(next));
    void runAudit(null);

    fill(
      root,
      h('h1', {}, 'Alerts and audit log'),
      section('Alerts', h('div', { class: 'filters' }, field('Severity', severity), field('Search', search)), alertsEl, olderButton),
      section('Audit log', auditForm, auditEl, auditMore),
    );
    let auditSeen = store.audit[0]?.id;
    return {
      update: () => {
        drawAlerts();
        // A new user action: the first page again (with the filters as they are), unless older pages are open.
        if (store.audit[0]?.id !== auditSeen && entries.length <= AUDIT_PAGE) {
          auditSeen = store.audit[0]?.id;
          void runAudit(null);
        }
      },
    };
  },
};
