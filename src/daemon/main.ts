/**
 * `lockstepd`: the Availability Services of one host. For now it supervises the host's VMs (defined over
 * its API, started at boot when they should run) and serves its local API; the pair, the A-Link and the
 * decision core join it in the next steps.
 */
import { parseArgs } from 'node:util';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { describeError, isLockstepError } from '../util/errors.js';
import { loadDaemonConfig } from './config.js';
import { HostVms } from './host-vms.js';
import { startApiServer } from './api.js';

export async function main(argv: string[]): Promise<number> {
  let configFile: string;
  try {
    const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true });
    if (!values.config) throw new Error('--config FILE is required');
    configFile = values.config;
  } catch (e) {
    console.error(`lockstepd: ${describeError(e)}\nusage: lockstepd --config FILE`);
    return 2;
  }
  try {
    const config = await loadDaemonConfig(configFile);
    const log = (line: string): void => console.log(`${new Date().toISOString()} ${config.host} ${line}`);
    await mkdir(path.dirname(config.apiSocket), { recursive: true });
    const vms = new HostVms(config, log);
    const startedAt = new Date().toISOString();
    log(`lockstepd starting (pid ${process.pid}, data ${config.dataDir})`);
    await vms.boot();
    const server = await startApiServer(config.apiSocket, { host: config.host, startedAt, vms }, log);
    log(`API listening on ${config.apiSocket}`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string): void => {
        log(`${signal}: stopping VMs gracefully`);
        void vms.shutdown().finally(() => server.close(() => resolve()));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    log('lockstepd stopped');
    return 0;
  } catch (e) {
    console.error(`lockstepd: ${isLockstepError(e) ? `${e.code}: ` : ''}${describeError(e)}`);
    return 1;
  }
}
