/**
 * The management API's users, groups and sessions, in a SQLite file of their own in the host's state
 * directory (`<dataDir>/state/users.db`), apart from the core's state database: losing or resetting it never
 * touches what the pair decides on.
 *
 * ```
 * groups    name, role, description; the three built-in groups (one per role) always exist
 * users     name, full name, scrypt password hash, when made and when the password last changed
 * members   user ∈ group (a user's role is the highest of its groups': src/users/roles.ts)
 * sessions  SHA-256 of the session token (the token itself is never stored), user, client, created, last seen
 * ```
 *
 * Rules kept here, in one transaction with the change: the first administrator is made only while no user
 * exists (`SETUP_DONE` after); a change that would leave no administrator is refused (`LAST_ADMINISTRATOR`); a password set by an administrator ends that user's sessions, a user's own new
 * password ends the user's other sessions; a deleted user's sessions go with it. Sessions end after
 * `idleMs` without a request and `maxMs` after login, whichever comes first; time is the injected clock.
 */
import { createHash, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { LockstepError } from '../util/errors.js';
import { openSqlite } from '../util/sqlite.js';
import { BUILTIN_GROUPS, highestRole, isRole, type Role } from './roles.js';
import { dummyHash, hashPassword, verifyPassword } from './passwords.js';

/** User and group names: what the API and the audit log show; lowercase, no spaces, at most 32. */
export const NAME_PATTERN = '^[a-z][a-z0-9._-]{0,31}$';
export const PASSWORD_LENGTH_MIN = 10;
/** scrypt hashes any length; a limit keeps a request from making it work on megabytes. */
export const PASSWORD_LENGTH_MAX = 256;
export const FULL_NAME_LENGTH_MAX = 128;
/** A user's oldest sessions beyond this many are ended at the next login. */
export const SESSIONS_PER_USER_MAX = 32;

export const DEFAULT_SESSION_IDLE_MS = 30 * 60_000;
export const DEFAULT_SESSION_MAX_MS = 12 * 3600_000;

export interface UserView {
  name: string;
  fullName: string;
  groups: string[];
  /** The highest role of the user's groups; null: in no group, the user can log in and do nothing. */
  role: Role | null;
  createdAt: string;
  passwordChangedAt: string;
}

export interface GroupView {
  name: string;
  role: Role;
  description: string;
  builtin: boolean;
  members: string[];
}

export interface SessionView {
  user: string;
  role: Role | null;
  client: string;
  createdAt: string;
  lastSeenAt: string;
  /** When the session ends if it stays idle from now (capped by its absolute end). */
  expiresAt: string;
}

export type SessionLookup = { ok: true; session: SessionView; tokenHash: string } | { ok: false; why: 'unknown' | 'expired' };

export interface UserStoreOptions {
  now?: () => number;
  idleMs?: number;
  maxMs?: number;
}

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE groups (
    name        TEXT NOT NULL PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('read-only', 'platform-manager', 'administrator')),
    description TEXT NOT NULL,
    builtin     INTEGER NOT NULL CHECK (builtin IN (0, 1))
  ) STRICT;
  CREATE TABLE users (
    name                TEXT NOT NULL PRIMARY KEY,
    full_name           TEXT NOT NULL,
    password            TEXT NOT NULL,
    created_ms          INTEGER NOT NULL,
    password_changed_ms INTEGER NOT NULL
  ) STRICT;
  CREATE TABLE members (
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    grp  TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    PRIMARY KEY (user, grp)
  ) STRICT;
  CREATE TABLE sessions (
    token_hash   TEXT NOT NULL PRIMARY KEY,
    user         TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    client       TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX sessions_user ON sessions (user, created_ms);
  `,
];

type Row = Record<string, unknown>;

export class UserStore {
  private readonly now: () => number;
  private readonly idleMs: number;
  private readonly maxMs: number;

  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
    opts: UserStoreOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.idleMs = opts.idleMs ?? DEFAULT_SESSION_IDLE_MS;
    this.maxMs = opts.maxMs ?? DEFAULT_SESSION_MAX_MS;
  }

  static open(file: string, opts: UserStoreOptions = {}): UserStore {
    const db = openSqlite(file, { what: 'user database', code: 'USERS_DB', migrations: MIGRATIONS, synchronous: 'FULL', foreignKeys: true });
    try {
      const insert = db.prepare('INSERT OR IGNORE INTO groups (name, role, description, builtin) VALUES (?, ?, ?, 1)');
      db.transaction(() => {
        for (const g of BUILTIN_GROUPS) insert.run(g.name, g.role, g.description);
      }).immediate();
    } catch (e) {
      db.close();
      throw new LockstepError('USERS_DB', `cannot set up the built-in groups in ${file}: ${(e as Error).message}`, { file }, { cause: e });
    }
    return new UserStore(db, file, opts);
  }

  close(): void {
    this.db.close();
  }

  userCount(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n;
  }

  /** The first administrator, while no user exists (`SETUP_DONE` afterwards). */
  async setup(user: { name: string; password: string; fullName?: string }): Promise<UserView> {
    // Refused before hashing as well: anyone may call setup, and a hash costs CPU.
    if (this.userCount() > 0) throw new LockstepError('SETUP_DONE', 'the first administrator exists already: log in and manage users', {});
    const hash = await hashPassword(user.password);
    this.write(() => {
      if (this.userCount() > 0) throw new LockstepError('SETUP_DONE', 'the first administrator exists already: log in and manage users', {});
      this.insertUser(user.name, user.fullName ?? '', hash, ['administrators']);
    });
    return this.user(user.name);
  }

  listUsers(): UserView[] {
    return (this.db.prepare('SELECT name FROM users ORDER BY name').all() as Row[]).map((r) => this.user(String(r['name'])));
  }

  user(name: string): UserView {
    const r = this.db.prepare('SELECT * FROM users WHERE name = ?').get(name) as Row | undefined;
    if (!r) throw new LockstepError('UNKNOWN_USER', `no user named '${name}'`, { user: name });
    const groups = this.groupsOf(name);
    return {
      name,
      fullName: String(r['full_name']),
      groups: groups.map((g) => g.name),
      role: highestRole(groups.map((g) => g.role)),
      createdAt: iso(r['created_ms']),
      passwordChangedAt: iso(r['password_changed_ms']),
    };
  }

  async createUser(user: { name: string; password: string; fullName?: string; groups?: string[] }): Promise<UserView> {
    const hash = await hashPassword(user.password);
    this.write(() => {
      if (this.exists('users', user.name)) throw new LockstepError('USER_EXISTS', `a user named '${user.name}' exists already`, { user: user.name });
      this.insertUser(user.name, user.fullName ?? '', hash, user.groups ?? []);
    });
    return this.user(user.name);
  }

  /** An administrator's change to a user; a new password ends the user's sessions. */
  async updateUser(name: string, change: { fullName?: string; groups?: string[]; password?: string }): Promise<UserView> {
    const hash = change.password === undefined ? null : await hashPassword(change.password);
    this.write(() => {
      this.user(name);
      if (change.fullName !== undefined) this.db.prepare('UPDATE users SET full_name = ? WHERE name = ?').run(change.fullName, name);
      if (change.groups !== undefined) {
        this.db.prepare('DELETE FROM members WHERE user = ?').run(name);
        this.addMemberships(name, change.groups);
      }
      if (hash !== null) {
        this.db.prepare('UPDATE users SET password = ?, password_changed_ms = ? WHERE name = ?').run(hash, this.now(), name);
        this.db.prepare('DELETE FROM sessions WHERE user = ?').run(name);
      }
    });
    return this.user(name);
  }

  deleteUser(name: string): void {
    this.write(() => {
      if (this.db.prepare('DELETE FROM users WHERE name = ?').run(name).changes === 0) throw new LockstepError('UNKNOWN_USER', `no user named '${name}'`, { user: name });
    });
  }

  /** A user's own password change: the current password proves it is them; their other sessions end. */
  async changeOwnPassword(name: string, current: string, next: string, keepTokenHash: string | null): Promise<boolean> {
    const r = this.db.prepare('SELECT password FROM users WHERE name = ?').get(name) as Row | undefined;
    if (!r || !(await verifyPassword(current, String(r['password'])))) return false;
    const hash = await hashPassword(next);
    this.write(() => {
      this.db.prepare('UPDATE users SET password = ?, password_changed_ms = ? WHERE name = ?').run(hash, this.now(), name);
      this.db.prepare('DELETE FROM sessions WHERE user = ? AND token_hash IS NOT ?').run(name, keepTokenHash);
    });
    return true;
  }

  listGroups(): GroupView[] {
    return (this.db.prepare('SELECT name FROM groups ORDER BY name').all() as Row[]).map((r) => this.group(String(r['name'])));
  }

  group(name: string): GroupView {
    const r = this.db.prepare('SELECT * FROM groups WHERE name = ?').get(name) as Row | undefined;
    if (!r) throw new LockstepError('UNKNOWN_GROUP', `no group named '${name}'`, { group: name });
    const members = (this.db.prepare('SELECT user FROM members WHERE grp = ? ORDER BY user').all(name) as Row[]).map((m) => String(m['user']));
    return { name, role: roleOf(r['role']), description: String(r['description']), builtin: r['builtin'] === 1, members };
  }

  createGroup(group: { name: string; role: Role; description?: string }): GroupView {
    this.write(() => {
      if (this.exists('groups', group.name)) throw new LockstepError('GROUP_EXISTS', `a group named '${group.name}' exists already`, { group: group.name });
      this.db.prepare('INSERT INTO groups (name, role, description, builtin) VALUES (?, ?, ?, 0)').run(group.name, group.role, group.description ?? '');
    });
    return this.group(group.name);
  }

  updateGroup(name: string, change: { role?: Role; description?: string }): GroupView {
    this.write(() => {
      const g = this.group(name);
      if (change.role !== undefined && change.role !== g.role) {
        if (g.builtin) throw new LockstepError('BUILTIN_GROUP', `'${name}' is a built-in group: its role stays ${g.role}`, { group: name });
        this.db.prepare('UPDATE groups SET role = ? WHERE name = ?').run(change.role, name);
      }
      if (change.description !== undefined) this.db.prepare('UPDATE groups SET description = ? WHERE name = ?').run(change.description, name);
    });
    return this.group(name);
  }

  deleteGroup(name: string): void {
    this.write(() => {
      if (this.group(name).builtin) throw new LockstepError('BUILTIN_GROUP', `'${name}' is a built-in group and cannot be deleted`, { group: name });
      this.db.prepare('DELETE FROM groups WHERE name = ?').run(name);
    });
  }

  /** The user if `password` is theirs, else null; as slow for an unknown name as for a wrong password. */
  async authenticate(name: string, password: string): Promise<UserView | null> {
    const r = this.db.prepare('SELECT password FROM users WHERE name = ?').get(name) as Row | undefined;
    const ok = await verifyPassword(password, r ? String(r['password']) : await dummyHash());
    return ok && r ? this.user(name) : null;
  }

  /** A new session for `user`; the token is returned once and only its hash is kept. */
  createSession(user: string, client: string): { token: string; session: SessionView } {
    const token = randomBytes(32).toString('base64url');
    const now = this.now();
    this.write(() => {
      this.db.prepare('DELETE FROM sessions WHERE last_seen_ms <= ? OR created_ms <= ?').run(now - this.idleMs, now - this.maxMs);
      this.db.prepare('INSERT INTO sessions (token_hash, user, client, created_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?)').run(tokenHash(token), user, client, now, now);
      const extra = this.db.prepare('SELECT token_hash FROM sessions WHERE user = ? ORDER BY created_ms DESC, rowid DESC LIMIT -1 OFFSET ?').all(user, SESSIONS_PER_USER_MAX) as Row[];
      for (const s of extra) this.db.prepare('DELETE FROM sessions WHERE token_hash = ?').run(s['token_hash']);
    });
    const found = this.session(token);
    if (!found.ok) throw new LockstepError('USERS_DB', 'a session just made cannot be found', {});
    return { token, session: found.session };
  }

  /** The session of `token`, renewed (its idle time starts again); an expired one is ended here. */
  session(token: string): SessionLookup {
    const hash = tokenHash(token);
    const r = this.db.prepare('SELECT * FROM sessions WHERE token_hash = ?').get(hash) as Row | undefined;
    if (!r) return { ok: false, why: 'unknown' };
    const now = this.now();
    const created = Number(r['created_ms']);
    if (now - Number(r['last_seen_ms']) >= this.idleMs || now - created >= this.maxMs) {
      this.db.prepare('DELETE FROM sessions WHERE token_hash = ?').run(hash);
      return { ok: false, why: 'expired' };
    }
    this.db.prepare('UPDATE sessions SET last_seen_ms = ? WHERE token_hash = ?').run(now, hash);
    return { ok: true, tokenHash: hash, session: this.viewOf({ ...r, last_seen_ms: now }) };
  }

  private viewOf(r: Row): SessionView {
    const user = String(r['user']);
    const created = Number(r['created_ms']);
    const lastSeen = Number(r['last_seen_ms']);
    return {
      user,
      role: highestRole(this.groupsOf(user).map((g) => g.role)),
      client: String(r['client']),
      createdAt: iso(created),
      lastSeenAt: iso(lastSeen),
      expiresAt: iso(Math.min(lastSeen + this.idleMs, created + this.maxMs)),
    };
  }

  /** A session by its token's hash, as it stands (not renewed); null when it has ended. */
  sessionByHash(hash: string): SessionView | null {
    const r = this.db.prepare('SELECT * FROM sessions WHERE token_hash = ?').get(hash) as Row | undefined;
    return r ? this.viewOf(r) : null;
  }

  endSession(tokenHashValue: string): void {
    this.db.prepare('DELETE FROM sessions WHERE token_hash = ?').run(tokenHashValue);
  }

  private groupsOf(user: string): { name: string; role: Role }[] {
    return (this.db.prepare('SELECT g.name, g.role FROM members m JOIN groups g ON g.name = m.grp WHERE m.user = ? ORDER BY g.name').all(user) as Row[]).map((g) => ({
      name: String(g['name']),
      role: roleOf(g['role']),
    }));
  }

  private insertUser(name: string, fullName: string, hash: string, groups: string[]): void {
    const now = this.now();
    this.db.prepare('INSERT INTO users (name, full_name, password, created_ms, password_changed_ms) VALUES (?, ?, ?, ?, ?)').run(name, fullName, hash, now, now);
    this.addMemberships(name, groups);
  }

  private addMemberships(user: string, groups: string[]): void {
    for (const g of new Set(groups)) {
      if (!this.exists('groups', g)) throw new LockstepError('UNKNOWN_GROUP', `no group named '${g}'`, { group: g });
      this.db.prepare('INSERT INTO members (user, grp) VALUES (?, ?)').run(user, g);
    }
  }

  private exists(table: 'users' | 'groups', name: string): boolean {
    return this.db.prepare(`SELECT 1 FROM ${table} WHERE name = ?`).get(name) !== undefined;
  }

  /**
   * Runs `change` in one transaction, refused as a whole if it takes away the last administrator (deleting
   * the last user too: that would open first-run setup to anyone on the management network).
   */
  private write(change: () => void): void {
    this.db.transaction(() => {
      const before = this.administratorCount();
      change();
      if (before > 0 && this.administratorCount() === 0) {
        throw new LockstepError('LAST_ADMINISTRATOR', 'this would leave no administrator: make another one first', {});
      }
    })();
  }

  private administratorCount(): number {
    return (this.db.prepare(`SELECT count(DISTINCT m.user) AS n FROM members m JOIN groups g ON g.name = m.grp WHERE g.role = 'administrator'`).get() as { n: number }).n;
  }
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function iso(ms: unknown): string {
  return new Date(Number(ms)).toISOString();
}

function roleOf(v: unknown): Role {
  if (!isRole(v)) throw new LockstepError('USERS_DB', `the user database holds an unknown role ${JSON.stringify(v)}`, {});
  return v;
}
