// The services' scheduling priority, in real child processes (a nice value is per thread and changes the
// process it is set in): raised to SERVICE_NICE, inherited by what the service starts after, the guest's
// increment putting a child back where the service began; without CAP_SYS_NICE nothing changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { SERVICE_NICE } from '../../src/platform/priority.js';

const moduleUrl = new URL('../../src/platform/priority.js', import.meta.url).href;

/** Runs a service stand-in: raise, then report its own nice, a child's, and a child started with the guest increment. */
function runService(prefix: string[]): { outcome: Record<string, unknown>; own: number; child: number; guest: number } {
  const script = `
    import { raiseServicePriority, guestNiceIncrement } from ${JSON.stringify(moduleUrl)};
    import { getPriority } from 'node:os';
    import { execFileSync } from 'node:child_process';
    const outcome = raiseServicePriority();
    const niceOf = (argv) => Number(execFileSync(argv[0], [...argv.slice(1), 'sh', '-c', 'cut -d" " -f19 /proc/self/stat'], { encoding: 'utf8' }).trim());
    console.log(JSON.stringify({ outcome, own: getPriority(0), child: niceOf(['env']), guest: niceOf(['nice', '-n', String(guestNiceIncrement()), '--']) }));`;
  const argv = [...prefix, process.execPath, '--input-type=module', '-e', script];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as ReturnType<typeof runService>;
}

test('raised from nice 0: the service and what it starts run at SERVICE_NICE, a guest at 0', { skip: process.getuid?.() !== 0 && 'needs root' }, () => {
  const r = runService([]);
  assert.deepEqual(r.outcome, { raised: true, from: 0, to: SERVICE_NICE });
  assert.equal(r.own, SERVICE_NICE);
  assert.equal(r.child, SERVICE_NICE);
  assert.equal(r.guest, 0);
});

test('started at nice 5: guests stay at 5', { skip: process.getuid?.() !== 0 && 'needs root' }, () => {
  const r = runService(['nice', '-n', '5', '--']);
  assert.deepEqual(r.outcome, { raised: true, from: 5, to: SERVICE_NICE });
  assert.equal(r.guest, 5);
});

test('without CAP_SYS_NICE: nothing changes, and the outcome says why; guests are not made nicer', () => {
  const r = runService(['setpriv', '--inh-caps=-sys_nice', '--bounding-set=-sys_nice', '--']);
  assert.equal(r.outcome['raised'], false);
  assert.match(String(r.outcome['why']), /EACCES|permission|not permitted/i);
  assert.equal(r.own, 0);
  assert.equal(r.guest, 0);
});
