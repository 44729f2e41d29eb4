/**
 * The console's shared controls: buttons that call the API (disabled, with the reason, for a role that may
 * not use them: the API would refuse anyway), the notice line that reports each call's outcome, and the
 * page interface the router mounts.
 */
import { describe, type ApiResult } from './api.js';
import { h, type Attrs } from './dom.js';
import { roleAllows } from './roles.js';
import { store } from './store.js';
import type { Role } from './types.js';

export interface PageContext {
  /** The part of the route after the page's name (`#/vms/web` → `web`), or null. */
  param: string | null;
  navigate(hash: string): void;
}

export interface MountedPage {
  /** Called whenever the store changed (status, log, audit, connection). */
  update(): void;
  unmount?(): void;
}

export interface Page {
  name: string;
  title: string;
  /** The least role that may see the page (others see it disabled in the menu). */
  needs: Role;
  mount(root: HTMLElement, ctx: PageContext): MountedPage;
}

export function can(needs: Role): boolean {
  return roleAllows(store.user?.role ?? null, needs);
}

let noticeEl: HTMLElement | null = null;
export function setNoticeElement(el: HTMLElement): void {
  noticeEl = el;
}

/** Shows the outcome of the last action (replacing the one before). */
export function notify(text: string, tone: 'good' | 'bad'): void {
  if (noticeEl === null) return;
  noticeEl.textContent = text;
  noticeEl.className = `notice ${tone}`;
  noticeEl.hidden = false;
}

/**
 * A button for an API call that needs `needs`: disabled without the role (its title says which role), and
 * while its call runs; the call's outcome goes to the notice line.
 */
export function actionButton(label: string, needs: Role, action: string, run: () => Promise<ApiResult<unknown> | null>, attrs: Attrs = {}): HTMLButtonElement {
  const allowed = can(needs);
  const button = h('button', {
    type: 'button',
    'data-action': action,
    disabled: !allowed,
    title: allowed ? '' : `needs the role ${needs}; you have ${store.user?.role ?? 'none'}`,
    ...attrs,
  }, label);
  button.addEventListener('click', () => {
    button.disabled = true;
    void run()
      .then((r) => {
        if (r === null) return;
        if (r.ok) notify(`${label}: done (${r.status})`, 'good');
        else notify(`${label}: ${describe(r)}`, 'bad');
      })
      .finally(() => {
        button.disabled = !can(needs);
      });
  });
  return button;
}

/** A labelled form field. */
export function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  return h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', {}, hint) : null);
}

/** An input's value, trimmed. */
export function valueOf(form: HTMLFormElement, name: string): string {
  const el = form.elements.namedItem(name);
  return el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement ? el.value.trim() : '';
}
