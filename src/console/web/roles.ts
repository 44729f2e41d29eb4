/**
 * What a role may do, as the API decides it (src/users/roles.ts; a test keeps the two orders equal). The
 * console uses it only to disable what would be refused: the API checks every call itself.
 */
import type { Role } from './types.js';

export const ROLES: readonly Role[] = ['read-only', 'platform-manager', 'administrator'];

export function roleAllows(has: Role | null, needs: Role): boolean {
  return has !== null && ROLES.indexOf(has) >= ROLES.indexOf(needs);
}
