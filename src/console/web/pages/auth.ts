/**
 * Before the console: the first-run setup (while the host has no administrator: `POST /v1/setup`, then
 * logged in as that user) and the login page. Both are plain forms; errors are the API's, shown as they come.
 */
import { call, describe } from '../api.js';
import { h, fill } from '../dom.js';
import { field, valueOf } from '../ui.js';
import type { User } from '../types.js';

type LoggedIn = (user: User) => void;

/** The length the API asks of a password (docs/api.md); checked here only to say it before the round trip. */
const PASSWORD_MIN = 10;

function errorLine(): HTMLElement {
  return h('p', { class: 'form-error', role: 'alert', hidden: true });
}

function showError(el: HTMLElement, text: string): void {
  el.textContent = text;
  el.hidden = false;
}

async function login(name: string, password: string): Promise<{ ok: true; user: User } | { ok: false; text: string }> {
  const r = await call<{ user: User }>('POST', '/v1/session', { name, password });
  return r.ok ? { ok: true, user: r.body.user } : { ok: false, text: describe(r) };
}

export function renderSetup(root: HTMLElement, host: string, done: LoggedIn): void {
  const error = errorLine();
  const form = h(
    'form',
    { class: 'auth', id: 'setup-form' },
    h('h1', {}, 'First-run setup'),
    h('p', {}, `${host} has no user yet. Make its first administrator: there is no default account.`),
    field('User name', h('input', { name: 'name', required: true, autocomplete: 'username', pattern: '[a-z][a-z0-9._\\-]{0,31}' }), 'lowercase letters, digits, . _ -'),
    field('Full name', h('input', { name: 'fullName', autocomplete: 'name' })),
    field('Password', h('input', { name: 'password', type: 'password', required: true, minlength: PASSWORD_MIN, autocomplete: 'new-password' }), `at least ${PASSWORD_MIN} characters`),
    field('Password again', h('input', { name: 'again', type: 'password', required: true, autocomplete: 'new-password' })),
    error,
    h('button', { type: 'submit' }, 'Create the administrator'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = valueOf(form, 'name');
    const password = (form.elements.namedItem('password') as HTMLInputElement).value;
    if (password !== (form.elements.namedItem('again') as HTMLInputElement).value) return showError(error, 'The two passwords differ.');
    const fullName = valueOf(form, 'fullName');
    void (async () => {
      const r = await call<User>('POST', '/v1/setup', { name, password, ...(fullName ? { fullName } : {}) });
      if (!r.ok) return showError(error, describe(r));
      const l = await login(name, password);
      if (!l.ok) return showError(error, l.text);
      done(l.user);
    })();
  });
  fill(root, form);
}

export function renderLogin(root: HTMLElement, host: string, note: string, done: LoggedIn): void {
  const error = errorLine();
  if (note) showError(error, note);
  const form = h(
    'form',
    { class: 'auth', id: 'login-form' },
    h('h1', {}, 'Log in'),
    h('p', {}, `Lockstep Availability Console on ${host}`),
    field('User name', h('input', { name: 'name', required: true, autocomplete: 'username' })),
    field('Password', h('input', { name: 'password', type: 'password', required: true, autocomplete: 'current-password' })),
    error,
    h('button', { type: 'submit' }, 'Log in'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void login(valueOf(form, 'name'), (form.elements.namedItem('password') as HTMLInputElement).value).then((l) => (l.ok ? done(l.user) : showError(error, l.text)));
  });
  fill(root, form);
}
