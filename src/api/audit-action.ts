/**
 * What the audit log keeps of one changing call, the same for both of lockstepd's servers: the management
 * API names the session's user, the local socket names root on the host (`root@<host>`, docs/daemon.md).
 * The request body is never kept (it may hold a password); only the name it gives, as the target.
 */
import type { AuditResult, UserAction } from '../audit/audit-log.js';
import type { Reply, Route } from './routes.js';

export interface Caller {
  wallMs: number;
  /** Who acted (null: a call without a session). */
  user: string | null;
  /** The client's address, or `local` for the unix socket. */
  client: string;
  method: string;
  path: string;
}

/** The audit entry of a call to `route` that ended with `reply`; `params` are its raw path parameters. */
export function auditedAction(route: Route<never>, params: Record<string, string>, body: unknown, reply: Reply, caller: Caller): UserAction {
  const error = (reply.body as { error?: { code?: string; message?: string } } | null)?.error;
  const result: AuditResult = reply.status < 400 ? 'ok' : reply.status === 401 || reply.status === 403 || reply.status === 429 ? 'denied' : 'failed';
  const bodyName = typeof body === 'object' && body !== null && typeof (body as { name?: unknown }).name === 'string' ? (body as { name: string }).name : null;
  // One's own password change names no one in its path or body: its target is the caller.
  const target = params['name'] ?? params['id'] ?? route.auditTarget ?? bodyName ?? (route.operationId === 'changeOwnPassword' ? caller.user : null);
  return {
    wallMs: caller.wallMs,
    user: caller.user,
    client: caller.client,
    operation: route.operationId,
    method: caller.method,
    path: caller.path,
    target,
    result,
    status: reply.status,
    code: error?.code ?? null,
    message: error?.message ?? null,
  };
}
