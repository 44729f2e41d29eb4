/**
 * The user database on a real SQLite file: scrypt hashes, setup once, roles from groups, the last
 * administrator, built-in groups, and sessions that end idle, at their absolute limit, with a password
 * change or with their user; time from an injected clock.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { UserStore, tokenHash } from '../../src/users/user-store.js';
import { hashPassword, verifyPassword } from '../../src/users/passwords.js';
import { highestRole, roleAllows } from '../../src/users/roles.js';
import { isLockstepError } from '../../src/util/errors.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

async function open(opts: { idleMs?: number; maxMs?: number } = {}): Promise<{ store: UserStore; clock: { t: number }; file: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-users-test-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const clock = { t: 1_700_000_000_000 };
  const file = path.join(dir, 'state', 'users.db');
  const store = UserStore.open(file, { now: () => clock.t, ...opts });
  cleanup.add(() => store.close());
  return { store, clock, file };
}

const code = (c: string) => (e: unknown) => isLockstepError(e) && e.code === c;

test('passwords: scrypt with a random salt; the stored form verifies only its password', async () => {
  const a = await hashPassword('same password');
  const b = await hashPassword('same password');
  assert.match(a, /^scrypt\$16384\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b, 'a fresh salt each time');
  assert.equal(await verifyPassword('same password', a), true);
  assert.equal(await verifyPassword('same passwore', a), false);
  for (const junk of ['', 'plain', 'scrypt$1$1$1$x$y', 'scrypt$9999999$8$1$AAAA$AAAA', a.slice(0, -2)]) assert.equal(await verifyPassword('x', junk), false, junk);
});

test('roles order read-only < platform-manager < administrator; a user has the highest of its groups', () => {
  assert.equal(highestRole([]), null);
  assert.equal(highestRole(['read-only', 'administrator', 'platform-manager']), 'administrator');
  assert.ok(roleAllows('administrator', 'read-only') && roleAllows('platform-manager', 'platform-manager'));
  assert.ok(!roleAllows('read-only', 'platform-manager') && !roleAllows(null, 'read-only'));
});

test('setup makes one administrator, once; the passwords are stored hashed', async () => {
  const { store, file } = await open();
  assert.equal(store.userCount(), 0);
  assert.deepEqual(store.listGroups().map((g) => [g.name, g.role, g.builtin]), [
    ['administrators', 'administrator', true],
    ['platform-managers', 'platform-manager', true],
    ['read-only', 'read-only', true],
  ]);
  const both = await Promise.allSettled([store.setup({ name: 'ann', password: 'ann-password' }), store.setup({ name: 'bob', password: 'bob-password' })]);
  assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected'], 'two setups at once: one wins');
  const loser = both.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.ok(code('SETUP_DONE')(loser.reason));
  const winner = both[0]!.status === 'fulfilled' ? 'ann' : 'bob';
  assert.deepEqual(store.listUsers().map((u) => [u.name, u.role]), [[winner, 'administrator']]);
  await assert.rejects(store.setup({ name: 'eve', password: 'eve-password' }), code('SETUP_DONE'));
  if (winner === 'bob') return; // the rest reads ann's account
  const raw = new Database(file, { readonly: true });
  cleanup.add(() => raw.close());
  const stored = raw.prepare('SELECT password FROM users').get() as { password: string };
  assert.ok(stored.password.startsWith('scrypt$') && !stored.password.includes('ann-password'));
  assert.equal((await store.authenticate('ann', 'ann-password'))?.name, 'ann');
  assert.equal(await store.authenticate('ann', 'wrong'), null);
  assert.equal(await store.authenticate('nobody', 'ann-password'), null);
});

test('no change may take the last administrator away; built-in groups keep their role', async () => {
  const { store } = await open();
  await store.setup({ name: 'ann', password: 'ann-password' });
  assert.throws(() => store.deleteUser('ann'), code('LAST_ADMINISTRATOR'));
  await assert.rejects(store.updateUser('ann', { groups: [] }), code('LAST_ADMINISTRATOR'));
  assert.throws(() => store.deleteGroup('administrators'), code('BUILTIN_GROUP'));
  assert.throws(() => store.updateGroup('read-only', { role: 'administrator' }), code('BUILTIN_GROUP'));
  store.createGroup({ name: 'ops', role: 'administrator' });
  await store.createUser({ name: 'cat', password: 'cat-password', groups: ['ops'] });
  await store.updateUser('ann', { groups: ['read-only'] });
  assert.throws(() => store.updateGroup('ops', { role: 'read-only' }), code('LAST_ADMINISTRATOR'));
  assert.throws(() => store.deleteGroup('ops'), code('LAST_ADMINISTRATOR'));
  assert.equal(store.user('cat').role, 'administrator');
  assert.equal(store.user('ann').role, 'read-only');
  await assert.rejects(store.createUser({ name: 'cat', password: 'cat-password' }), code('USER_EXISTS'));
  await assert.rejects(store.createUser({ name: 'dan', password: 'dan-password', groups: ['nope'] }), code('UNKNOWN_GROUP'));
  assert.throws(() => store.user('dan'), code('UNKNOWN_USER'), 'a refused create leaves nothing behind');
});

test('sessions: only the token hash is kept; they end idle, at the absolute limit, on logout, with the user', async () => {
  const { store, clock, file } = await open({ idleMs: 1000, maxMs: 5000 });
  await store.setup({ name: 'ann', password: 'ann-password' });
  const { token, session } = store.createSession('ann', '192.0.2.1');
  assert.equal(session.role, 'administrator');
  const raw = new Database(file, { readonly: true });
  cleanup.add(() => raw.close());
  assert.deepEqual(raw.prepare('SELECT token_hash FROM sessions').all(), [{ token_hash: tokenHash(token) }]);
  assert.equal(store.session('not a token').ok, false);
  for (let i = 0; i < 5; i++) {
    clock.t += 999;
    assert.equal(store.session(token).ok, true, `renewed at ${i}`);
  }
  clock.t += 10;
  assert.deepEqual(store.session(token), { ok: false, why: 'expired' }, 'past the absolute limit however busy');
  const idle = store.createSession('ann', '192.0.2.1').token;
  clock.t += 1000;
  assert.deepEqual(store.session(idle), { ok: false, why: 'expired' });
  assert.deepEqual(store.session(idle), { ok: false, why: 'unknown' }, 'an expired session is gone');
  const a = store.createSession('ann', 'x');
  store.endSession(tokenHash(a.token));
  assert.equal(store.session(a.token).ok, false);
  store.createGroup({ name: 'ops', role: 'administrator' });
  await store.createUser({ name: 'cat', password: 'cat-password', groups: ['ops'] });
  const c = store.createSession('cat', 'x');
  store.deleteUser('cat');
  assert.equal(store.session(c.token).ok, false);
});

test("a user's own password change ends the other sessions; a wrong current password changes nothing", async () => {
  const { store } = await open();
  await store.setup({ name: 'ann', password: 'ann-password' });
  const keep = store.createSession('ann', 'x');
  const other = store.createSession('ann', 'y');
  assert.equal(await store.changeOwnPassword('ann', 'wrong', 'new-password', tokenHash(keep.token)), false);
  assert.equal(store.session(other.token).ok, true);
  assert.equal(await store.changeOwnPassword('ann', 'ann-password', 'new-password', tokenHash(keep.token)), true);
  assert.equal(store.session(keep.token).ok, true);
  assert.equal(store.session(other.token).ok, false);
  assert.equal(await store.authenticate('ann', 'ann-password'), null);
  assert.ok(await store.authenticate('ann', 'new-password'));
});

test('a user has at most 32 sessions: the oldest go first', async () => {
  const { store, clock } = await open();
  await store.setup({ name: 'ann', password: 'ann-password' });
  const tokens: string[] = [];
  for (let i = 0; i < 34; i++) {
    clock.t += 1;
    tokens.push(store.createSession('ann', 'x').token);
  }
  assert.deepEqual(tokens.map((t) => store.session(t).ok).indexOf(true), 2);
});

test('a database from a newer version is refused', async () => {
  const { store, file } = await open();
  store.close();
  const raw = new Database(file);
  raw.pragma('user_version = 99');
  raw.close();
  assert.throws(() => UserStore.open(file), code('USERS_DB'));
});
