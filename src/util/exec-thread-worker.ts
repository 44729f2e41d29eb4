/** The exec thread (see `exec-thread.ts`): runs each request with `run()` and posts the outcome back. */
import { parentPort } from 'node:worker_threads';
import { isLockstepError, describeError } from './errors.js';
import { run } from './exec.js';
import type { ExecReply, ExecRequest } from './exec-thread.js';

if (!parentPort) throw new Error('exec-thread-worker must run as a worker thread');
const port = parentPort;

port.on('message', (req: ExecRequest) => {
  run(req.cmd, req.args, req.opts).then(
    (result) => port.postMessage({ id: req.id, ok: true, result } satisfies ExecReply),
    (e: unknown) => {
      const error = isLockstepError(e)
        ? { code: e.code, message: e.message, fields: JSON.parse(JSON.stringify(e.fields)) as Record<string, unknown> }
        : { code: 'COMMAND_FAILED' as const, message: `${req.cmd}: ${describeError(e)}`, fields: { cmd: req.cmd, args: req.args } };
      port.postMessage({ id: req.id, ok: false, error } satisfies ExecReply);
    },
  );
});
