/**
 * The management API's OpenAPI 3.1 document, made from the route table: each route's path, method, role
 * (`x-lockstep-access`), parameter, query and body schemas (the very objects that validate requests), its
 * answer, and the errors it can give with their codes. Nothing here is written by hand per endpoint.
 */
import { ERROR_CODES, type ErrorCode } from '../util/errors.js';
import { HTTP_STATUS_OF, type Route } from './routes.js';
import { SESSION_COOKIE } from './management-routes.js';
import type { Schema } from './schema.js';

export const OPENAPI_PREFIX = '/api';

/** The errors a route can answer with, by status: its own, and those of the checks every route goes through. */
export function errorCodesOf(route: Route<unknown>): ErrorCode[] {
  const codes = new Set<ErrorCode>(route.errors ?? []);
  if (route.params || route.query || route.body) codes.add('INVALID_ARGUMENT');
  if (route.bodyError) codes.add(route.bodyError);
  if (route.body || route.upload) {
    codes.add('UNSUPPORTED_MEDIA_TYPE');
    codes.add('PAYLOAD_TOO_LARGE');
  }
  // An upload without a Content-Length is refused.
  if (route.upload) codes.add('INVALID_ARGUMENT');
  if (route.access !== 'public') codes.add('NOT_AUTHENTICATED');
  if (route.access !== 'public' && route.access !== 'session') codes.add('FORBIDDEN');
  return [...codes];
}

export function openApiDocument(routes: readonly Route<unknown>[], info: { title: string; version: string }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = route.root ? route.path : OPENAPI_PREFIX + route.path;
    const parameters = [
      ...Object.entries(route.params ?? {}).map(([name, schema]) => ({ name, in: 'path', required: true, schema })),
      ...Object.entries(route.query?.properties ?? {}).map(([name, schema]) => ({ name, in: 'query', required: (route.query?.required ?? []).includes(name), schema })),
    ];
    const responses: Record<string, unknown> = {
      [String(route.response.status)]: {
        description: route.response.description,
        ...(route.response.schema ? { content: { [route.response.contentType ?? 'application/json']: { schema: route.response.schema } } } : {}),
      },
    };
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of errorCodesOf(route)) {
      const status = HTTP_STATUS_OF[code] ?? 500;
      byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
    }
    for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      responses[String(status)] = {
        description: codes.map((c) => `${c}: ${ERROR_CODES[c]}`).join('; '),
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
      };
    }
    (paths[path] ??= {})[route.method.toLowerCase()] = {
      operationId: route.operationId,
      tags: [route.tag],
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      'x-lockstep-access': route.access,
      security: route.access === 'public' ? [] : [{ sessionCookie: [] }, { bearer: [] }, ...(route.metricsToken ? [{ metricsToken: [] }] : [])],
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: route.body } } } } : {}),
      ...(route.upload
        ? {
            requestBody: {
              required: true,
              description: `${route.upload.description}; with a Content-Length, at most ${route.upload.bytesMax} bytes`,
              content: { [route.upload.contentType]: { schema: { type: 'string', format: 'binary', maxLength: route.upload.bytesMax } } },
            },
          }
        : {}),
      responses,
    };
  }
  const error: Schema = {
    type: 'object',
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message', 'fields'],
        properties: {
          code: { type: 'string', enum: Object.keys(ERROR_CODES), description: 'stable: test this, not the message (docs/errors.md)' },
          message: { type: 'string' },
          fields: { type: 'object', description: 'typed details; `field` names the input that was refused' },
        },
      },
    },
  };
  return {
    openapi: '3.1.0',
    info: {
      ...info,
      description:
        "lockstepd's management API. Log in with POST /api/v1/session; send the token as `Authorization: Bearer TOKEN` or let a browser send the session cookie. Each operation's `x-lockstep-access` is what it needs: public, session (any user), or the least role (read-only < platform-manager < administrator).",
    },
    servers: [{ url: '/' }],
    tags: [...new Set(routes.map((r) => r.tag))].map((name) => ({ name })),
    paths,
    components: {
      securitySchemes: {
        sessionCookie: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE },
        bearer: { type: 'http', scheme: 'bearer' },
        metricsToken: { type: 'http', scheme: 'bearer', description: 'managementApi.metricsToken from the daemon config: accepted by /metrics only' },
      },
      schemas: { Error: error },
    },
  };
}
