/**
 * The management API as lockstepd runs it: its user database and audit log in the host's state directory,
 * its certificate (the operator's or a self-signed one, made once), and the HTTPS server on the configured
 * management address. `src/daemon/main.ts` starts it when `managementApi` is configured.
 */
import path from 'node:path';
import type { ApiContext } from '../daemon/api.js';
import type { ManagementApiConfig } from '../daemon/config.js';
import { AuditLog } from '../audit/audit-log.js';
import { UserStore } from '../users/user-store.js';
import { ManagementServer } from './management-server.js';
import { loadManagementTls } from './management-tls.js';

export interface RunningManagementApi {
  port: number;
  selfSigned: boolean;
  close(): Promise<void>;
}

export async function startManagementApi(
  config: { host: string; dataDir: string; managementApi: ManagementApiConfig },
  api: ApiContext,
  log: (line: string) => void,
): Promise<RunningManagementApi> {
  const m = config.managementApi;
  const stateDir = path.join(config.dataDir, 'state');
  const tls = await loadManagementTls({ dataDir: config.dataDir, host: config.host, address: m.address, certFile: m.certFile, keyFile: m.keyFile });
  const users = UserStore.open(path.join(stateDir, 'users.db'), { idleMs: m.sessionIdleMs, maxMs: m.sessionMaxMs });
  let audit: AuditLog | null = null;
  try {
    audit = AuditLog.open(path.join(stateDir, 'audit.db'), config.host, (opts) => api.recentLog(opts));
    const server = await ManagementServer.start({ address: m.address, port: m.port, tls, api, users, audit, sessionMaxMs: m.sessionMaxMs, metricsToken: m.metricsToken, log });
    const opened = audit;
    if (users.userCount() === 0) log('management API: no user yet: make the first administrator with POST /api/v1/setup');
    return {
      port: server.port(),
      selfSigned: tls.selfSigned,
      close: async () => {
        await server.close();
        opened.close();
        users.close();
      },
    };
  } catch (e) {
    audit?.close();
    users.close();
    throw e;
  }
}
