/**
 * `/v1/snapshots`, `/v1/vms/{name}/snapshots` and `/v1/images`: this host's snapshots and imported images
 * (src/daemon/snapshots.ts, docs/snapshots.md). Taking a snapshot answers once it is ready (or failed); an
 * image is uploaded as the raw body of `POST /v1/images`, streamed to its storage group after the group's
 * room is checked as for a VCD; a snapshot's image is downloaded from `GET /v1/snapshots/{id}/image`.
 * Only this host's: the peer holds its own.
 */
import { LockstepError } from '../util/errors.js';
import type { Route } from '../api/routes.js';
import type { Schema } from '../api/schema.js';
import { DEFAULT_STORAGE_GROUP, storageGroupOf } from '../storage/storage-group.js';
import type { ApiContext } from './api.js';
import { groupRoom, volumeContext } from './volumes.js';
import { DESCRIPTION_CHARS_MAX, IMAGE_BYTES_MAX } from './snapshots.js';
import { DISKS_PER_VM_MAX, diskAt, parseVmHardware } from './vm-definition.js';

export const SNAPSHOT_ID_PATTERN = '^(snap|img)-[0-9a-f]{12}$';

export const SNAPSHOT_SCHEMA: Schema = {
  type: 'object',
  required: ['id', 'kind', 'vm', 'disk', 'host', 'storageGroup', 'file', 'format', 'created', 'virtualBytes', 'state', 'description', 'error', 'path', 'fileBytes'],
  properties: {
    id: { type: 'string', description: 'snap-… for a snapshot, img-… for an imported image' },
    kind: { type: 'string', enum: ['snapshot', 'image'] },
    vm: { type: ['string', 'null'], description: 'the VM it was taken of (null: an imported image)' },
    disk: { type: ['integer', 'null'], minimum: 0, description: "which of the VM's disks, its index in the VM's hardware (0: vda; null: an imported image)" },
    host: { type: 'string', description: 'the host that holds it: snapshots and images are not copied to the peer' },
    storageGroup: { type: 'string' },
    file: { type: 'string', description: "its file's name in the group's snapshots/ directory" },
    format: { type: 'string', enum: ['qcow2', 'raw'], description: 'a snapshot is always qcow2; an image keeps the format it was uploaded in' },
    created: { type: 'string', format: 'date-time', description: "its point in time (a live snapshot: its backup job's start)" },
    createdMs: { type: 'integer' },
    virtualBytes: { type: 'integer', description: "the disk's size as a guest sees it" },
    state: { type: 'string', enum: ['creating', 'ready', 'failed'], description: 'only a ready one has a file' },
    description: { type: 'string' },
    error: { type: ['string', 'null'], description: 'why it failed' },
    path: { type: ['string', 'null'], description: 'its file on this host (null unless ready)' },
    fileBytes: { type: ['integer', 'null'], description: 'what its file takes on disk' },
  },
};

const ID_PARAMS = { id: { type: 'string', pattern: SNAPSHOT_ID_PATTERN, description: 'the snapshot or image' } } as const;
const VM_PARAMS = { name: { type: 'string', minLength: 1, maxLength: 64, description: "the VM's name" } } as const;
const DESCRIPTION: Schema = { type: 'string', maxLength: DESCRIPTION_CHARS_MAX, description: 'free text' };

export const SNAPSHOT_ROUTES: readonly Route<ApiContext>[] = [
  {
    operationId: 'listSnapshots',
    method: 'GET',
    path: '/snapshots',
    tag: 'storage',
    summary: "this host's snapshots and imported images",
    access: 'read-only',
    query: { type: 'object', additionalProperties: false, properties: { vm: { type: 'string', maxLength: 64, description: "only this VM's snapshots" } } },
    response: { status: 200, description: 'oldest first', schema: { type: 'array', items: SNAPSHOT_SCHEMA } },
    handler: async (ctx, { query }) => ({ status: 200, body: await ctx.snapshots.list((query as { vm?: string }).vm) }),
  },
  {
    operationId: 'getSnapshot',
    method: 'GET',
    path: '/snapshots/{id}',
    tag: 'storage',
    summary: 'one snapshot or image of this host',
    access: 'read-only',
    params: ID_PARAMS,
    response: { status: 200, description: 'the snapshot', schema: SNAPSHOT_SCHEMA },
    errors: ['UNKNOWN_SNAPSHOT'],
    handler: async (ctx, { params }) => ({ status: 200, body: await ctx.snapshots.get(params['id']!) }),
  },
  {
    operationId: 'exportSnapshot',
    method: 'GET',
    path: '/snapshots/{id}/image',
    tag: 'storage',
    summary: "download a snapshot's or image's file",
    description: 'the file as it is, streamed: qcow2 for a snapshot, the uploaded format for an image; only a ready one',
    access: 'read-only',
    params: ID_PARAMS,
    response: { status: 200, description: 'the image file', contentType: 'application/octet-stream' },
    errors: ['UNKNOWN_SNAPSHOT'],
    handler: async (ctx, { params }) => {
      const { snapshot, path, bytes } = await ctx.snapshots.readyFile(params['id']!);
      return {
        status: 200,
        body: null,
        contentType: 'application/octet-stream',
        file: { path, bytes },
        headers: { 'content-disposition': `attachment; filename="${snapshot.file}"` },
      };
    },
  },
  {
    operationId: 'takeSnapshot',
    method: 'POST',
    path: '/vms/{name}/snapshots',
    tag: 'storage',
    summary: "take a snapshot of one of a VM's volumes on this host",
    description:
      'a running VM: on the host it runs on, live and crash-consistent, without pausing it (a qcow2 volume under HA mirroring is refused: docs/snapshots.md); a stopped VM: on a host whose copy of its volume is current. Answers when the snapshot is ready; a failed one is kept as failed, without a file. `disk` picks the volume (its index; 0, the first, when absent)',
    access: 'platform-manager',
    params: VM_PARAMS,
    body: { type: 'object', additionalProperties: false, properties: { description: DESCRIPTION, disk: { type: 'integer', minimum: 0, maximum: DISKS_PER_VM_MAX - 1, description: "the disk's index in the VM's hardware (default 0)" } } },
    response: { status: 201, description: 'the snapshot, ready', schema: SNAPSHOT_SCHEMA },
    errors: ['UNKNOWN_VM', 'SNAPSHOT_REFUSED', 'SNAPSHOT_FAILED', 'STORAGE_GROUP_FULL', 'UNKNOWN_STORAGE_GROUP', 'VM_NOT_RUNNING', 'INVALID_ARGUMENT'],
    handler: async (ctx, { params, body }) => {
      const name = params['name']!;
      const vm = ctx.driver()?.view().vms.find((v) => v.name === name);
      if (!vm) throw new LockstepError('UNKNOWN_VM', `no VM named '${name}'`, { vm: name });
      const { description = '', disk = 0 } = (body as { description?: string; disk?: number } | undefined) ?? {};
      const group = storageGroupOf(ctx.storageGroups, diskAt(name, parseVmHardware(vm.hardware), disk).storageGroup, ctx.host);
      const room = await groupRoom(volumeContext(ctx), group);
      if ('error' in room) throw new LockstepError('STORAGE_GROUP_FULL', `cannot tell whether a snapshot of VM ${name} fits in storage group '${group.name}': ${room.error}`, { vm: name, storageGroup: group.name });
      return { status: 201, body: await ctx.snapshots.take(name, disk, description, room.availableBytes) };
    },
  },
  {
    operationId: 'importImage',
    method: 'POST',
    path: '/images',
    tag: 'storage',
    summary: 'import a disk image (qcow2 or raw) to this host, to make VMs from',
    description:
      "the image is the raw body, streamed to the storage group's snapshots/ directory, then read by qemu-img: refused (IMAGE_INVALID) unless it is qcow2 or raw without a backing or data file, and before a byte is stored when it is over the limit or the group's room",
    access: 'platform-manager',
    query: {
      type: 'object',
      additionalProperties: false,
      properties: {
        storageGroup: { type: 'string', pattern: '^[a-z][a-z0-9-]{0,30}$', description: `the storage group of this host to keep it in (default: ${DEFAULT_STORAGE_GROUP})` },
        description: DESCRIPTION,
      },
    },
    upload: { contentType: 'application/octet-stream', bytesMax: IMAGE_BYTES_MAX, description: 'the qcow2 or raw image' },
    response: { status: 201, description: 'the image as stored', schema: SNAPSHOT_SCHEMA },
    errors: ['IMAGE_INVALID', 'STORAGE_GROUP_FULL', 'UNKNOWN_STORAGE_GROUP'],
    handler: async (ctx, { query, upload }) => {
      const q = query as { storageGroup?: string; description?: string };
      const group = storageGroupOf(ctx.storageGroups, q.storageGroup ?? DEFAULT_STORAGE_GROUP, ctx.host);
      const room = await groupRoom(volumeContext(ctx), group);
      if ('error' in room) throw new LockstepError('STORAGE_GROUP_FULL', `cannot tell whether the image fits in storage group '${group.name}': ${room.error}`, { storageGroup: group.name });
      return { status: 201, body: await ctx.snapshots.receive(upload!, group.name, q.description ?? '', room.availableBytes) };
    },
  },
  {
    operationId: 'deleteSnapshot',
    method: 'DELETE',
    path: '/snapshots/{id}',
    tag: 'storage',
    summary: 'delete a snapshot or image of this host',
    description: 'refused (SNAPSHOT_IN_USE) while a VM made from it has not made its volume yet, or while it is being taken',
    access: 'platform-manager',
    params: ID_PARAMS,
    response: { status: 204, description: 'deleted' },
    errors: ['UNKNOWN_SNAPSHOT', 'SNAPSHOT_IN_USE'],
    handler: async (ctx, { params }) => {
      await ctx.snapshots.remove(params['id']!);
      return { status: 204, body: null };
    },
  },
];
