/**
 * Building the page's elements. Text always goes in as text (`textContent`), never as HTML: names, messages
 * and causes come from the API, and the console must never run what a VM name or an error message holds.
 * Handlers are attached with addEventListener; the CSP forbids inline ones anyway.
 */

export type Child = Node | string | number | null | undefined | false;
export type Attrs = Record<string, string | number | boolean | null | undefined | ((ev: Event) => void)>;

/** An element: attributes (`on…` are handlers; `false`/null/undefined omit the attribute), then children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (value === false || value === null || value === undefined) continue;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el: Element, children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A table: headings and rows of cells; `empty` is said when there are no rows. */
export function table(headings: string[], rows: Child[][], empty: string, attrs: Attrs = {}): HTMLElement {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h(
    'table',
    attrs,
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c))))),
  );
}

/** A state word as a coloured badge: its class says which family the word is in (see style.css). */
export function badge(word: string | null | undefined, family = toneOf(word)): HTMLElement {
  return h('span', { class: `badge ${family}` }, word ?? '—');
}

const GOOD = new Set(['paired', 'ok', 'protected', 'in-sync', 'running', 'up', 'info', 'live', 'completed', 'done']);
const WARN = new Set(['pairing', 'peer-lost', 'syncing', 'degraded', 'downgraded', 'starting', 'failing-over', 'warning', 'maintenance', 'simplex', 'solo', 'reconnecting', 'migrating', 'pending', 'unprotected', 'initializing']);
const BAD = new Set(['refused', 'isolated', 'down', 'failed', 'host-down', 'critical', 'denied', 'closed', 'missing', 'unreadable']);

export function toneOf(word: string | null | undefined): string {
  if (word === null || word === undefined) return 'none';
  if (GOOD.has(word)) return 'good';
  if (WARN.has(word)) return 'warn';
  if (BAD.has(word)) return 'bad';
  return 'none';
}

/** A section with a heading. */
export function section(title: string, ...children: (Child | Child[])[]): HTMLElement {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

/** Definition list of label → value pairs. */
export function facts(pairs: [string, Child][]): HTMLElement {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]): Child[] => [h('dt', {}, k), h('dd', {}, v)]));
}
