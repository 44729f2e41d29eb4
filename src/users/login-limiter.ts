/**
 * Login rate limiting, per user name and per client address. The `freeFailures`-th failure of a key closes
 * it for `baseLockMs`, and every failure after that for a window twice as long as the one before (up to
 * `maxLockMs`). While a key is closed, attempts are refused without checking the password (429), so a
 * guesser gains nothing by trying harder. A key's failures are forgotten `forgetMs` after its last one, and
 * a successful login clears the user's key (not the address's: one account that works must not reopen an
 * address that is guessing at others; it only takes back its own count).
 *
 * Kept in memory: a restart forgets the counters, which costs an attacker a daemon restart per round, and
 * the map is bounded (`maxKeys`), oldest entries dropped first. Time comes from the injected clock.
 */
export interface LimiterOptions {
  freeFailures: number;
  baseLockMs: number;
  maxLockMs: number;
  forgetMs: number;
  maxKeys: number;
}

export const DEFAULT_LIMITER: LimiterOptions = {
  freeFailures: 5,
  baseLockMs: 1000,
  maxLockMs: 15 * 60_000,
  forgetMs: 15 * 60_000,
  maxKeys: 10_000,
};

export interface Entry {
  failures: number;
  lastFailureMs: number;
  lockedUntilMs: number;
}

export type LimitVerdict = { ok: true } | { ok: false; retryAfterMs: number };

export class LoginLimiter {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly now: () => number,
    private readonly opts: LimiterOptions = DEFAULT_LIMITER,
  ) {}

  /** Whether an attempt under all of `keys` may be checked now; if not, how long until it may. */
  check(keys: readonly string[]): LimitVerdict {
    const now = this.now();
    let wait = 0;
    for (const key of keys) {
      const e = this.live(key, now);
      if (e && e.lockedUntilMs > now) wait = Math.max(wait, e.lockedUntilMs - now);
    }
    return wait > 0 ? { ok: false, retryAfterMs: wait } : { ok: true };
  }

  /** Counts a failed attempt against each of `keys`. */
  failure(keys: readonly string[]): void {
    const now = this.now();
    for (const key of keys) {
      const e = this.live(key, now) ?? { failures: 0, lastFailureMs: now, lockedUntilMs: 0 };
      e.failures += 1;
      e.lastFailureMs = now;
      const over = e.failures - this.opts.freeFailures;
      if (over >= 0) e.lockedUntilMs = now + Math.min(this.opts.maxLockMs, this.opts.baseLockMs * 2 ** Math.min(over, 30));
      this.entries.delete(key); // re-inserted last: the map's order is the eviction order
      this.entries.set(key, e);
    }
    this.bound(now);
  }

  /**
   * Starts an attempt: refused while any key is closed, else counted as a failure right away, so that many
   * attempts sent at once cannot all be checked before the first one's failure is counted. `succeeded` takes
   * the count back.
   */
  begin(keys: readonly string[]): LimitVerdict & { prior?: ReadonlyMap<string, Entry | undefined> } {
    const verdict = this.check(keys);
    if (!verdict.ok) return verdict;
    const now = this.now();
    const prior = new Map(keys.map((k) => [k, this.live(k, now) && { ...this.entries.get(k)! }]));
    this.failure(keys);
    return { ok: true, prior };
  }

  /**
   * The attempt begun with `prior` succeeded: `clear` (the user) starts afresh; `forgive` (the address) loses
   * this attempt's count and the lock it may have set, but keeps the failures before it.
   */
  succeeded(prior: ReadonlyMap<string, Entry | undefined> | undefined, clear: string, forgive: string): void {
    this.entries.delete(clear);
    const e = this.entries.get(forgive);
    if (!e) return;
    const before = prior?.get(forgive);
    e.failures -= 1;
    if (e.failures <= 0) this.entries.delete(forgive);
    else if (before !== undefined && e.failures === before.failures) e.lockedUntilMs = before.lockedUntilMs;
    else if (before === undefined && e.failures < this.opts.freeFailures) e.lockedUntilMs = 0;
  }

  private live(key: string, now: number): Entry | undefined {
    const e = this.entries.get(key);
    if (e && now - e.lastFailureMs >= this.opts.forgetMs && e.lockedUntilMs <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  private bound(now: number): void {
    if (this.entries.size <= this.opts.maxKeys) return;
    for (const key of [...this.entries.keys()]) this.live(key, now);
    for (const key of this.entries.keys()) {
      if (this.entries.size <= this.opts.maxKeys) break;
      this.entries.delete(key);
    }
  }
}

export const userKey = (name: string): string => `user:${name}`;
export const addressKey = (address: string): string => `address:${address}`;
