/**
 * `/v1/vcds`: this host's virtual CDs (src/storage/vcd.ts). An upload is `PUT` of the raw image, streamed to
 * its storage group (an upload route: no JSON, its own size limit), after the group's room is checked as for
 * a new volume: no VCD takes space a thin volume was promised. Only this host's: the peer holds its own.
 */
import { LockstepError } from '../util/errors.js';
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import { DEFAULT_STORAGE_GROUP, storageGroupOf } from '../storage/storage-group.js';
import { VCD_BYTES_MAX, VCD_NAME_PATTERN } from '../storage/vcd.js';
import type { ApiContext } from './api.js';
import { groupRoom, volumeContext } from './volumes.js';
import { vmsHolding } from './cdrom.js';

const VCD_SCHEMA: Schema = {
  type: 'object',
  required: ['name', 'host', 'storageGroup', 'bytes', 'sha256', 'created', 'path'],
  properties: {
    name: { type: 'string' },
    host: { type: 'string', description: 'the host that holds it: VCDs are not copied to the peer' },
    storageGroup: { type: 'string' },
    bytes: { type: 'integer' },
    sha256: { type: 'string', description: 'of the image as received, hex: a VM inserts it by name and this' },
    created: { type: 'string', format: 'date-time', description: 'when its upload completed' },
    path: { type: 'string', description: "the image's file on this host" },
  },
};

const VCD_NAME_PARAMS = {
  name: { type: 'string', pattern: VCD_NAME_PATTERN, description: 'the VCD: lowercase letters, digits, ., _ and -, starting with a letter, 64 at most' },
} as const;

export const VCD_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'listVcds',
    method: 'GET',
    path: '/vcds',
    tag: 'storage',
    summary: "this host's virtual CDs",
    access: 'read-only',
    response: { status: 200, description: 'the VCDs, by name', schema: { type: 'array', items: VCD_SCHEMA } },
    handler: async (ctx) => ({ status: 200, body: await ctx.vcds.list() }),
  },
  {
    operationId: 'getVcd',
    method: 'GET',
    path: '/vcds/{name}',
    tag: 'storage',
    summary: 'one virtual CD of this host',
    access: 'read-only',
    params: VCD_NAME_PARAMS,
    response: { status: 200, description: 'the VCD', schema: VCD_SCHEMA },
    errors: ['UNKNOWN_VCD'],
    handler: async (ctx, { params }) => ({ status: 200, body: await ctx.vcds.get(params['name']!) }),
  },
  {
    operationId: 'uploadVcd',
    method: 'PUT',
    path: '/vcds/{name}',
    tag: 'storage',
    summary: 'upload a virtual CD (an ISO image) to this host',
    description:
      "the image is the raw body, streamed to the storage group (default: default) and hashed on the way; refused before it is stored when the name is taken, the size is over the limit or exceeds the group's room, and as soon as its head shows it is no ISO 9660 image",
    access: 'platform-manager',
    params: VCD_NAME_PARAMS,
    query: {
      type: 'object',
      additionalProperties: false,
      properties: { storageGroup: { type: 'string', pattern: '^[a-z][a-z0-9-]{0,30}$', description: `the storage group of this host to keep it in (default: ${DEFAULT_STORAGE_GROUP})` } },
    },
    upload: { contentType: 'application/octet-stream', bytesMax: VCD_BYTES_MAX, description: 'the ISO 9660 image' },
    response: { status: 201, description: 'the VCD as stored', schema: VCD_SCHEMA },
    errors: ['VCD_EXISTS', 'VCD_NOT_ISO', 'VCD_UPLOAD', 'STORAGE_GROUP_FULL', 'UNKNOWN_STORAGE_GROUP'],
    handler: async (ctx, { params, query, upload }) => {
      const groupName = (query as { storageGroup?: string }).storageGroup ?? DEFAULT_STORAGE_GROUP;
      const group = storageGroupOf(ctx.storageGroups, groupName, ctx.host);
      const room = await groupRoom(volumeContext(ctx), group);
      if ('error' in room) throw new LockstepError('STORAGE_GROUP_FULL', `cannot tell whether virtual CD '${params['name']}' fits in storage group '${group.name}': ${room.error}`, { vcd: params['name'], storageGroup: group.name });
      return { status: 201, body: await ctx.vcds.receive(params['name']!, group.name, upload!, room.availableBytes) };
    },
  },
  {
    operationId: 'deleteVcd',
    method: 'DELETE',
    path: '/vcds/{name}',
    tag: 'storage',
    summary: 'delete a virtual CD of this host',
    access: 'platform-manager',
    params: VCD_NAME_PARAMS,
    response: { status: 204, description: 'deleted' },
    description: "refused (VCD_IN_USE) while a VM's CD drive holds it: eject it first",
    errors: ['UNKNOWN_VCD', 'VCD_IN_USE'],
    handler: async (ctx, { params }) => {
      const vcd = await ctx.vcds.get(params['name']!);
      const holders = vmsHolding(ctx.driver()?.view().vms ?? [], { vcd: vcd.name, sha256: vcd.sha256 });
      if (holders.length > 0) {
        throw new LockstepError('VCD_IN_USE', `virtual CD '${vcd.name}' is in the CD drive of ${holders.map((v) => `VM ${v}`).join(', ')}: eject it first (lockstep vm cd eject)`, { vcd: vcd.name, vms: holders });
      }
      await ctx.vcds.remove(vcd.name);
      return { status: 204, body: null };
    },
  },
];
