/**
 * The management API as lockstepd runs it: its certificate (the operator's or a self-signed one, made once)
 * and the HTTPS server on the configured management address, over the host's accounts — its user database
 * and audit log in the state directory, which lockstepd opens whether or not the API is configured, since
 * the local socket serves them to root too (`lockstep user`, `lockstep audit`). `src/daemon/main.ts` starts
 * it when `managementApi` is configured.
 */
import path from 'node:path';
import type { ApiContext } from '../daemon/api.js';
import type { ManagementApiConfig } from '../daemon/config.js';
import { AuditLog } from '../audit/audit-log.js';
import { UserStore, DEFAULT_SESSION_IDLE_MS, DEFAULT_SESSION_MAX_MS } from '../users/user-store.js';
import { ManagementServer } from './management-server.js';
import { loadManagementTls } from './management-tls.js';

export interface RunningManagementApi {
  port: number;
  selfSigned: boolean;
  close(): Promise<void>;
}

export interface Accounts {
  users: UserStore;
  audit: AuditLog;
  close(): void;
}

/** Opens `<dataDir>/state/users.db` and `audit.db` (USERS_DB, AUDIT_DB when either cannot be). */
export function openAccounts(config: { host: string; dataDir: string; managementApi: ManagementApiConfig | null }, api: ApiContext): Accounts {
  const stateDir = path.join(config.dataDir, 'state');
  const m = config.managementApi;
  const users = UserStore.open(path.join(stateDir, 'users.db'), { idleMs: m?.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS, maxMs: m?.sessionMaxMs ?? DEFAULT_SESSION_MAX_MS });
  try {
    const audit = AuditLog.open(path.join(stateDir, 'audit.db'), config.host, (opts) => api.recentLog(opts));
    return {
      users,
      audit,
      close: () => {
        audit.close();
        users.close();
      },
    };
  } catch (e) {
    users.close();
    throw e;
  }
}

export async function startManagementApi(
  config: { host: string; dataDir: string; managementApi: ManagementApiConfig },
  api: ApiContext,
  accounts: Accounts,
  log: (line: string) => void,
): Promise<RunningManagementApi> {
  const m = config.managementApi;
  const tls = await loadManagementTls({ dataDir: config.dataDir, host: config.host, address: m.address, certFile: m.certFile, keyFile: m.keyFile });
  const { users, audit } = accounts;
  const server = await ManagementServer.start({ address: m.address, port: m.port, tls, api, users, audit, sessionMaxMs: m.sessionMaxMs, metricsToken: m.metricsToken, log });
  if (users.userCount() === 0) log('management API: no user yet: make the first administrator with `lockstep user setup NAME` on this host, or POST /api/v1/setup');
  return { port: server.port(), selfSigned: tls.selfSigned, close: () => server.close() };
}
