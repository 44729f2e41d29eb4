/**
 * How the management server serves the console, without a browser: the page and its modules with the
 * console's CSP (the API keeps its own, which allows nothing), only the files of the fixed table (no path
 * reaches the disk), GET only; every module the page loads imports only modules that are served (a browser
 * would fail on any other), and none imports Node's; an unbuilt console is an error value, and the API
 * works on without it. The browser's copy of the roles' order equals the API's.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Cleanup } from '../support/cleanup.js';
import { startHarness } from '../api/harness.js';
import { CONSOLE_CSP, consoleReply, loadConsoleAssets } from '../../src/console/console-assets.js';
import { ROLES as API_ROLES } from '../../src/users/roles.js';
import { ROLES as CONSOLE_ROLES } from '../../src/console/web/roles.js';
import { isLockstepError } from '../../src/util/errors.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('the page, its style and its modules are served with the console CSP; the API keeps its own', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  const page = await h.request('GET', '/');
  assert.equal(page.status, 200);
  assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(page.headers['content-security-policy'], CONSOLE_CSP);
  assert.match(CONSOLE_CSP, /^default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';/);
  assert.equal(page.headers['x-frame-options'], 'DENY');
  assert.equal(page.headers['x-content-type-options'], 'nosniff');
  assert.match(page.text, /<script type="module" src="\/console\/main.js"><\/script>/);
  assert.doesNotMatch(page.text, /<script>|\son[a-z]+=|\sstyle=/, 'nothing inline: the CSP would refuse it');
  const script = await h.request('GET', '/console/main.js');
  assert.deepEqual([script.status, script.headers['content-type']], [200, 'text/javascript; charset=utf-8']);
  assert.equal((await h.request('GET', '/console/style.css')).headers['content-type'], 'text/css; charset=utf-8');
  assert.equal((await h.request('GET', '/console/icon.svg')).headers['content-type'], 'image/svg+xml');
  const api = await h.request('GET', '/api/v1/setup');
  assert.equal(api.headers['content-security-policy'], "default-src 'none'; frame-ancestors 'none'");
});

test('only the table’s files, only with GET; the console is never audited', async () => {
  const h = await startHarness(cleanup, { withDriver: false });
  for (const p of ['/console/nope.js', '/console/', '/console/../src/util/paths.js', '/console/%2e%2e/package.json', '/console/main.js.map', '/index.html', '/console/pages']) {
    const r = await h.request('GET', p);
    assert.equal(r.status, 404, `${p}: ${r.text}`);
    assert.equal(r.body.error.code, 'UNKNOWN_ENDPOINT', p);
  }
  const post = await h.request('POST', '/', { body: {} });
  assert.deepEqual([post.status, post.body.error.code, post.headers['allow']], [405, 'METHOD_NOT_ALLOWED', 'GET']);
  assert.deepEqual(h.audit.query({ limit: 10, kind: 'user' }).entries, [], 'a console request is no API action');
});

test('every module imports only served modules, none of Node’s', async () => {
  const assets = await loadConsoleAssets();
  assert.ok(assets.ok, assets.ok ? '' : assets.error.message);
  const served = new Set(assets.files.keys());
  const scripts = [...assets.files.entries()].filter(([p]) => p.endsWith('.js'));
  assert.ok(scripts.length >= 10, `${scripts.length} modules`);
  for (const [p, file] of scripts) {
    for (const m of file.body.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]/gm)) {
      const spec = (m[1] ?? m[2])!;
      assert.ok(spec.startsWith('./') || spec.startsWith('../'), `${p} imports ${spec}: only relative modules are served`);
      const target = new URL(spec, `https://host${p}`).pathname;
      assert.ok(served.has(target), `${p} imports ${spec} (${target}), which is not served`);
    }
    assert.doesNotMatch(file.body, /from ['"]node:/, `${p} imports Node`);
  }
});

test('an unbuilt console is an error value: 503 CONSOLE_UNAVAILABLE at /, with the reason', async () => {
  const empty = await mkdtemp(path.join(os.tmpdir(), 'lockstep-console-empty-'));
  cleanup.add(() => rm(empty, { recursive: true, force: true }));
  const assets = await loadConsoleAssets({ staticDir: empty, scriptDir: empty });
  assert.equal(assets.ok, false);
  assert.throws(() => consoleReply(assets, 'GET', '/'), (e: unknown) => isLockstepError(e) && e.code === 'CONSOLE_UNAVAILABLE' && /index\.html/.test(e.message));
});

test("the console's order of roles is the API's", () => {
  assert.deepEqual([...CONSOLE_ROLES], [...API_ROLES]);
});
