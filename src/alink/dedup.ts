/**
 * Drops the second copy of a message that arrived over both paths. Message ids are per sender session (one
 * Alink instance) and grow by one per message; the copies of one message carry the same id.
 *
 * Cheap and conservative: only the last `windowIds` ids of each session are remembered. An id older than
 * that cannot be told apart and is delivered: the core tolerates duplicates (by incarnation and seq), so a
 * rare extra copy is harmless, whereas dropping a message that was not a copy would not be.
 */
export class DuplicateFilter {
  private readonly sessions = new Map<string, { maxId: number; seen: Set<number> }>();

  constructor(
    private readonly windowIds = 1024,
    /** Sessions remembered: the peer's current one and a few before it (a restart makes a new one). */
    private readonly sessionsMax = 4,
  ) {}

  /** True the first time (session, id) is seen, false for a copy. */
  fresh(session: string, id: number): boolean {
    let s = this.sessions.get(session);
    if (s === undefined) {
      s = { maxId: -1, seen: new Set() };
      this.sessions.set(session, s);
      if (this.sessions.size > this.sessionsMax) this.sessions.delete(this.sessions.keys().next().value!);
    }
    if (id <= s.maxId - this.windowIds) return true;
    if (s.seen.has(id)) return false;
    s.seen.add(id);
    if (id > s.maxId) s.maxId = id;
    if (s.seen.size > 2 * this.windowIds) {
      const floor = s.maxId - this.windowIds;
      for (const old of s.seen) if (old <= floor) s.seen.delete(old);
    }
    return true;
  }
}
