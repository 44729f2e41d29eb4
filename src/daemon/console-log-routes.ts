/**
 * A VM's console log as an API route (`GET /vms/{name}/console-log`): what its guest wrote on its serial
 * console (ttyS0), from its QEMU's serial log on this host (`src/qemu/console-log.ts`), the current
 * instance's while it runs here, else the last one's until the next start here truncates it. Part of the
 * resource table (`RESOURCE_ROUTES` in `api.ts`), so served on the local socket and the management API alike.
 *
 * Only this host's: the log is a file of the host whose QEMU wrote it, and the peer's is not replicated.
 */
import { LockstepError } from '../util/errors.js';
import type { Route } from '../api/routes.js';
import { readConsoleLog } from '../qemu/console-log.js';
import type { ApiContext } from './api.js';

/** What a caller gets without asking: a screenful or two of a boot, small enough to poll by hand. */
export const CONSOLE_LOG_BYTES_DEFAULT = 64 * 1024;
/** The most one answer holds: the tail is read into memory, and answered as one JSON string. */
export const CONSOLE_LOG_BYTES_MAX = 1024 * 1024;

export const CONSOLE_LOG_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'getVmConsoleLog',
    method: 'GET',
    path: '/vms/{name}/console-log',
    tag: 'vms',
    summary: "what the VM's guest wrote on its serial console, on this host",
    description:
      "the last bytes of its QEMU's serial log (ttyS0) here: the instance running here, or the last one that ran here (kept until the next start here). Decoded as UTF-8 (invalid sequences replaced), from a line start when truncated, without escape sequences or control characters but newline and tab. here false: it has no log on this host, never having run here (the host that runs it has one)",
    access: 'read-only',
    params: { name: { type: 'string', minLength: 1, maxLength: 64, description: "the VM's name" } },
    query: {
      type: 'object',
      additionalProperties: false,
      properties: {
        bytes: { type: 'integer', minimum: 1, maximum: CONSOLE_LOG_BYTES_MAX, default: CONSOLE_LOG_BYTES_DEFAULT, description: 'at most this many of the log\'s last bytes' },
      },
    },
    response: {
      status: 200,
      description: 'the console log',
      schema: {
        type: 'object',
        required: ['vm', 'host', 'here', 'running', 'size', 'bytes', 'truncated', 'text'],
        properties: {
          vm: { type: 'string' },
          host: { type: 'string', description: 'the host that answered: the log is its own' },
          here: { type: 'boolean', description: 'whether this host has a console log of the VM' },
          running: { type: 'boolean', description: "whether a QEMU of the VM runs here now (its log is the current instance's); false: the last instance's" },
          size: { type: 'integer', minimum: 0, description: "the log's size in bytes" },
          bytes: { type: 'integer', minimum: 0, description: "how many of the log's last bytes the text is made of" },
          truncated: { type: 'boolean', description: "whether the text leaves out the log's beginning" },
          text: { type: 'string' },
        },
      },
    },
    errors: ['UNKNOWN_VM', 'CONSOLE_LOG_UNREADABLE'],
    handler: async (ctx, { params, query }) => {
      const name = params['name']!;
      // Only a VM the pair knows: its name is then a checked one, safe to make a path of.
      if (!(ctx.driver()?.view().vms.some((v) => v.name === name) ?? false)) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}'`, { vm: name });
      const { bytes = CONSOLE_LOG_BYTES_DEFAULT } = query as { bytes?: number };
      const running = ctx.running().some((r) => r.name === name);
      const tail = await readConsoleLog(ctx.consoleLogFile(name), bytes);
      const log = tail ?? { size: 0, bytes: 0, truncated: false, text: '' };
      return { status: 200, body: { vm: name, host: ctx.host, here: tail !== null, running, ...log } };
    },
  },
];
