/**
 * `lockstep vcd`: parsing, how answers are rendered (a table for people, the API's JSON with --json), and a
 * file that is no ISO refused before anything is sent (the daemon's test is test/api/vcds-api.test.ts).
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LockstepError } from '../../src/util/errors.js';
import { parseVcdCommand, renderVcdAnswer, vcdCommand, type VcdRequest, type VcdView } from '../../src/cli/vcd-command.js';
import { Cleanup } from '../support/cleanup.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

test('each verb parses into its request', () => {
  const cases: [string[], VcdRequest][] = [
    [['list'], { verb: 'list', json: false, where: {} }],
    [['list', '--json', '--host', 'host2'], { verb: 'list', json: true, where: { host: 'host2' } }],
    [['create', 'debian-12.5', '/isos/d.iso'], { verb: 'create', name: 'debian-12.5', file: '/isos/d.iso', storageGroup: null, json: false, where: {} }],
    [['create', 'tools', 't.iso', '--storage-group', 'fast', '--socket', '/run/l.sock'], { verb: 'create', name: 'tools', file: 't.iso', storageGroup: 'fast', json: false, where: { socket: '/run/l.sock' } }],
    [['delete', 'tools', '--json'], { verb: 'delete', name: 'tools', json: true, where: {} }],
    [[], { verb: 'help', exit: 2 }],
    [['help'], { verb: 'help', exit: 0 }],
  ];
  for (const [args, want] of cases) assert.deepEqual(parseVcdCommand(args), want, args.join(' '));
});

test('bad input is a usage error naming what is wrong', () => {
  const cases: [string[], RegExp][] = [
    [['insert'], /unknown vcd command 'insert'/],
    [['create', 'tools'], /usage: lockstep vcd create NAME ISO-FILE/],
    [['delete'], /usage: lockstep vcd delete NAME/],
    [['list', 'extra'], /usage: lockstep vcd list/],
    [['delete', 'Tools'], /virtual CD name 'Tools'/],
    [['create', '../x', 'x.iso'], /virtual CD name '..\/x'/],
    [['list', '--storage-group', 'fast'], /Unknown option '--storage-group'/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseVcdCommand(args), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT' && message.test(e.message), args.join(' '));
  }
});

const tools: VcdView = { name: 'tools', host: 'host1', storageGroup: 'default', bytes: 3 * 1024 * 1024, sha256: 'ab'.repeat(32), created: '2026-01-02T03:04:05.000Z' };

test('answers render as a table, one line, or the JSON untouched', () => {
  const table = renderVcdAnswer(false, { verb: 'list', host: 'host1', vcds: [tools] });
  assert.match(table, /^NAME\s+HOST\s+STORAGE GROUP\s+SIZE\s+SHA256\s+CREATED\n/);
  assert.match(table, /tools\s+host1\s+default\s+3(\.0)? MiB\s+abababababab\s+2026-01-02T03:04:05.000Z/);
  assert.equal(renderVcdAnswer(false, { verb: 'list', host: 'host2', vcds: [] }), 'host2 holds no virtual CDs');
  assert.deepEqual(JSON.parse(renderVcdAnswer(true, { verb: 'list', host: 'host1', vcds: [tools] })), [tools]);
  assert.match(renderVcdAnswer(false, { verb: 'create', vcd: tools }), /^virtual CD tools stored on host1 in storage group default: .*, sha256 (ab){32}$/);
  assert.deepEqual(JSON.parse(renderVcdAnswer(true, { verb: 'create', vcd: tools })), tools);
  assert.equal(renderVcdAnswer(false, { verb: 'delete', host: 'host1', name: 'tools' }), 'virtual CD tools deleted from host1');
});

test('a file that is no ISO image is refused before the daemon is asked', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lockstep-vcd-cli-'));
  cleanup.add(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'disk.img');
  await writeFile(file, Buffer.alloc(64 * 1024, 0xab));
  // No daemon at that socket: the refusal must come first.
  await assert.rejects(vcdCommand(['create', 'disk', file, '--socket', path.join(dir, 'none.sock')]), (e) => e instanceof LockstepError && e.code === 'VCD_NOT_ISO' && /no ISO 9660 signature/.test(e.message));
  await assert.rejects(vcdCommand(['create', 'disk', path.join(dir, 'missing.iso'), '--socket', path.join(dir, 'none.sock')]), (e) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT' && /cannot read/.test(e.message));
});
