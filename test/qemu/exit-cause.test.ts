// Why a QEMU ended, one row per situation the supervisor can meet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exitCause, type ExitFacts, type VmExitCause } from '../../src/qemu/exit-cause.js';

const base: ExitFacts = { stoppedBySupervisor: false, killedAsHung: false, shutdown: undefined, code: 0, signal: null };
const rows: [string, Partial<ExitFacts>, VmExitCause][] = [
  ['guest powered off', { shutdown: { reason: 'guest-shutdown', guest: true } }, 'guest-shutdown'],
  ['QMP quit', { shutdown: { reason: 'host-qmp-quit', guest: false } }, 'quit'],
  ['SIGTERM, handled by QEMU', { shutdown: { reason: 'host-signal', guest: false } }, 'killed'],
  ['kill -9', { code: null, signal: 'SIGKILL' }, 'killed'],
  ['QEMU segfault', { code: null, signal: 'SIGSEGV' }, 'crashed'],
  ['QEMU assertion', { code: null, signal: 'SIGABRT' }, 'crashed'],
  ['QEMU fatal error', { code: 1 }, 'crashed'],
  ['guest panic with panic=shutdown', { shutdown: { reason: 'guest-panic', guest: true } }, 'crashed'],
  ['guest reset under -no-reboot', { shutdown: { reason: 'guest-reset', guest: true } }, 'guest-shutdown'],
  ['exit 0 with no event', {}, 'quit'],
  ['the supervisor was stopping it, whatever happened', { stoppedBySupervisor: true, code: null, signal: 'SIGKILL' }, 'stopped-by-supervisor'],
  ['killed because its guest stopped beating', { killedAsHung: true, code: null, signal: 'SIGKILL' }, 'guest-hung'],
];
for (const [name, facts, cause] of rows) {
  test(`${name} → ${cause}`, () => assert.equal(exitCause({ ...base, ...facts }), cause));
}
