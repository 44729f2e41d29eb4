/**
 * The Availability Console's entry: decides between first-run setup, login and the console; builds the
 * shell (header with the host, the live stream's state and the user; the menu; the notice line) and routes
 * `#/page[/param]` to the pages, each of which redraws when the store changes.
 */
import { call, whenSessionLost } from './api.js';
import { badge, fill, h } from './dom.js';
import { LiveStream } from './live.js';
import { reset, store, subscribe } from './store.js';
import type { User } from './types.js';
import { can, setNoticeElement, type MountedPage, type Page } from './ui.js';
import { renderLogin, renderSetup } from './pages/auth.js';
import { dashboardPage } from './pages/dashboard.js';
import { hostsPage } from './pages/hosts.js';
import { vmsPage } from './pages/vms.js';
import { storagePage } from './pages/storage.js';
import { vcdsPage } from './pages/vcds.js';
import { imagesPage } from './pages/images.js';
import { networksPage } from './pages/networks.js';
import { alertsPage } from './pages/alerts.js';
import { timelinePage } from './pages/timeline.js';
import { usersPage } from './pages/users.js';
import { preferencesPage } from './pages/preferences.js';

const PAGES: Page[] = [dashboardPage, hostsPage, vmsPage, storagePage, vcdsPage, imagesPage, networksPage, alertsPage, timelinePage, usersPage, preferencesPage];

const root = document.getElementById('app')!;
let live: LiveStream | null = null;
let mounted: MountedPage | null = null;
let unsubscribe: (() => void) | null = null;

async function boot(note = ''): Promise<void> {
  const setup = await call<{ needed: boolean }>('GET', '/v1/setup');
  if (setup.ok && setup.body.needed) return renderSetup(root, location.hostname, enter);
  const session = await call<{ user: User }>('GET', '/v1/session');
  if (session.ok) return enter(session.body.user);
  renderLogin(root, location.hostname, note, enter);
}

function enter(user: User): void {
  store.user = user;
  live = new LiveStream((why) => leave(`The live stream closed: ${why}. Log in again.`));
  void live.start();
  shell();
}

function leave(note: string): void {
  live?.stop();
  live = null;
  unsubscribe?.();
  unsubscribe = null;
  mounted?.unmount?.();
  mounted = null;
  reset();
  void boot(note);
}

function shell(): void {
  const hostEl = h('span', { class: 'host', id: 'header-host' });
  const connEl = h('span', { id: 'connection' });
  const notice = h('p', { class: 'notice', id: 'notice', hidden: true, role: 'status' });
  setNoticeElement(notice);
  const main = h('main', { id: 'page' });
  const nav = h(
    'nav',
    {},
    PAGES.map((p) => (can(p.needs) ? h('a', { href: `#/${p.name}`, 'data-page': p.name }, p.title) : h('span', { class: 'disabled', 'data-page': p.name, title: `needs the role ${p.needs}` }, p.title))),
  );
  const logout = h('button', { type: 'button', 'data-action': 'logout' }, 'Log out');
  logout.addEventListener('click', () => {
    void call('DELETE', '/v1/session').then(() => leave(''));
  });
  fill(
    root,
    h('header', {}, h('strong', { class: 'brand' }, 'Lockstep'), hostEl, connEl, h('span', { class: 'user', id: 'header-user' }, `${store.user!.name} (${store.user!.role ?? 'no role'})`), logout),
    nav,
    notice,
    main,
  );
  const drawHeader = (): void => {
    const s = store.status;
    hostEl.textContent = s ? `${s.host}${s.core ? ` · ${s.core.state} · epoch ${s.core.epoch}` : ` · ${s.pairing.state}`}` : location.hostname;
    fill(connEl, badge(store.connection), store.connectionNote ? h('small', {}, ` ${store.connectionNote}`) : null);
  };
  const route = (): void => {
    const [, name = 'dashboard', ...rest] = location.hash.replace(/^#/, '').split('/');
    const page = PAGES.find((p) => p.name === name) ?? dashboardPage;
    mounted?.unmount?.();
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('current', a.dataset['page'] === page.name);
    if (!can(page.needs)) {
      fill(main, h('h1', {}, page.title), h('p', { class: 'form-error' }, `This page needs the role ${page.needs}; you have ${store.user?.role ?? 'none'}.`));
      mounted = null;
      return;
    }
    const param = rest.length > 0 ? decodeURIComponent(rest.join('/')) : null;
    mounted = page.mount(main, { param, navigate: (hash) => (location.hash = hash) });
    mounted.update();
    document.title = `${page.title} · Lockstep`;
  };
  window.onhashchange = route;
  unsubscribe = subscribe(() => {
    drawHeader();
    mounted?.update();
  });
  whenSessionLost(() => leave('Your session has ended: log in again.'));
  drawHeader();
  route();
}

void boot();
