/**
 * The management API's roles, from least to most: what a user may do is the highest role of the groups it
 * belongs to (a user has no role of its own; see docs/api.md).
 *
 *   read-only         reads everything but users and groups: status, VMs, events, the audit log
 *   platform-manager  also changes the platform: VMs, protection, maintenance, takeover, repair
 *   administrator     also manages users and groups
 */
export const ROLES = ['read-only', 'platform-manager', 'administrator'] as const;
export type Role = (typeof ROLES)[number];

/** The groups every user database starts with, one per role; they cannot be removed or change role. */
export const BUILTIN_GROUPS: readonly { name: string; role: Role; description: string }[] = [
  { name: 'administrators', role: 'administrator', description: 'manage users and groups, and everything platform managers do' },
  { name: 'platform-managers', role: 'platform-manager', description: 'manage VMs and hosts' },
  { name: 'read-only', role: 'read-only', description: 'see everything but users and groups' },
];

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}

/** Whether a user with role `has` may do what needs `needs`. */
export function roleAllows(has: Role | null, needs: Role): boolean {
  return has !== null && ROLES.indexOf(has) >= ROLES.indexOf(needs);
}

/** The highest of `roles`, or null for none (a user in no group may log in and do nothing). */
export function highestRole(roles: readonly Role[]): Role | null {
  let best: Role | null = null;
  for (const r of roles) if (best === null || ROLES.indexOf(r) > ROLES.indexOf(best)) best = r;
  return best;
}
