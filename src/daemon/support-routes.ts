/**
 * `POST /v1/support/bundle`: this host's support bundle (`support-bundle.ts`) as a `.tar.gz` download.
 * A POST, not a GET: making one is an action an operator takes for a support case, and every action is
 * audited (who asked for the host's logs, and when). Platform managers and administrators: it holds the
 * host's logs and its whole configuration view.
 *
 * The routes are given as a thunk: the bundle is made of the other resource routes' answers, and this route
 * is one of them (`RESOURCE_ROUTES` in api.ts).
 */
import type { Route } from '../api/routes.js';
import type { ApiContext } from './api.js';
import { BUNDLE_VIEWS, makeSupportBundle } from './support-bundle.js';

export function supportRoutes(routes: () => readonly Route<ApiContext>[]): Route<ApiContext>[] {
  return [
    {
      operationId: 'makeSupportBundle',
      method: 'POST',
      path: '/support/bundle',
      tag: 'host',
      summary: "this host's support bundle: its views, recent log and console logs, as a .tar.gz",
      description: `a gzip'd tar archive under one directory named lockstep-support-HOST-TIME: MANIFEST.txt (what is in it, and what could not be read), api/OPERATION.json for ${Object.keys(BUNDLE_VIEWS).join(', ')} (each route's answer, the events the last 1000), lockstepd.log (the daemon's most recent log lines, up to 2 MiB), vms/NAME/console-log.txt (each VM's serial console on this host, its last 256 KiB), system.json (versions of Lockstep, Node, QEMU, the kernel; CPUs, memory, load). No secret is in it. Only this host's: ask the peer for its own`,
      access: 'platform-manager',
      response: { status: 200, description: 'the archive, with Content-Disposition naming its file', contentType: 'application/gzip', schema: { type: 'string', format: 'binary' } },
      handler: async (ctx) => {
        const bundle = await makeSupportBundle(ctx, routes(), ctx.daemonLog());
        return {
          status: 200,
          contentType: 'application/gzip',
          headers: { 'content-disposition': `attachment; filename="${bundle.name}"` },
          body: bundle.data,
        };
      },
    },
  ];
}
