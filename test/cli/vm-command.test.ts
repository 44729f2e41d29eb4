/**
 * `lockstep vm`'s pure parts: parsing and checking every verb's arguments, how a fixed API answer is shown
 * (the table, `show`, `--json` passing the answer through), the migration progress line, where a migration
 * is sent given the hosts' answers, when it counts as done, and the lab's choice of a free guest slot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LockstepError } from '../../src/util/errors.js';
import { parseVmCommand, renderAnswer, type VmRequest } from '../../src/cli/vm-command.js';
import { renderProgress, renderVmShow, vmRows, type VmView } from '../../src/cli/vm-view.js';
import { migrationStep, routeMigration, type HostAnswer } from '../../src/cli/vm-migrate.js';
import { freeGuestSlot } from '../../src/cli/vm-lab.js';

const SIZES = ['--memory', '96', '--vcpus', '1', '--disk', '16'];

test('each verb parses into its request', () => {
  const cases: [string[], VmRequest][] = [
    [['list'], { verb: 'list', json: false, where: {} }],
    [['list', '--json', '--host', 'host2'], { verb: 'list', json: true, where: { host: 'host2' } }],
    [['show', 'demo', '--socket', '/run/l.sock'], { verb: 'show', name: 'demo', json: false, where: { socket: '/run/l.sock' } }],
    [['start', 'demo'], { verb: 'start', name: 'demo', json: false, where: {} }],
    [['stop', 'demo', '--json'], { verb: 'stop', name: 'demo', json: true, where: {} }],
    [['restart', 'demo', '--host', 'host2'], { verb: 'restart', name: 'demo', json: false, where: { host: 'host2' } }],
    [['remove', 'demo'], { verb: 'remove', name: 'demo', json: false, where: {} }],
    [['protect', 'demo', '--level', 'none'], { verb: 'protect', name: 'demo', level: 'none', json: false, where: {} }],
    [['migrate', 'demo'], { verb: 'migrate', name: 'demo', wait: true, json: false, where: {} }],
    [['migrate', 'demo', '--no-wait'], { verb: 'migrate', name: 'demo', wait: false, json: false, where: {} }],
    [['cd', 'insert', 'demo', 'debian-12.5', '--json'], { verb: 'cd-insert', name: 'demo', vcd: 'debian-12.5', json: true, where: {} }],
    [['cd', 'eject', 'demo', '--host', 'host2'], { verb: 'cd-eject', name: 'demo', json: false, where: { host: 'host2' } }],
    [
      ['create', 'web', ...SIZES],
      { verb: 'create', name: 'web', memoryMiB: 96, vcpus: 1, disks: [{ sizeMiB: 16, storageGroup: 'default', format: 'qcow2' }], protection: 'ha', desired: 'running', cdDrive: false, guest: { nics: [{}] }, json: false, where: {} },
    ],
    [
      ['create', 'web', ...SIZES, '--protection', 'none', '--stopped', '--cd-drive', '--mac', '52:54:00:AA:BB:CC', '--address', '10.10.3.70', '--storage-group', 'fast', '--disk-format', 'raw'],
      {
        verb: 'create',
        name: 'web',
        memoryMiB: 96,
        vcpus: 1,
        disks: [{ sizeMiB: 16, storageGroup: 'fast', format: 'raw' }],
        protection: 'none',
        desired: 'stopped',
        cdDrive: true,
        guest: { nics: [{ mac: '52:54:00:aa:bb:cc', address: '10.10.3.70' }] },
        json: false,
        where: {},
      },
    ],
    [
      ['create', 'web', ...SIZES, '--socket', '/s', '--mac', '52:54:00:00:00:01', '--address', '192.0.2.5', '--kernel', '/k', '--initrd', '/i', '--cmdline', 'console=ttyS0'],
      {
        verb: 'create',
        name: 'web',
        memoryMiB: 96,
        vcpus: 1,
        disks: [{ sizeMiB: 16, storageGroup: 'default', format: 'qcow2' }],
        protection: 'ha',
        desired: 'running',
        cdDrive: false,
        guest: { nics: [{ mac: '52:54:00:00:00:01', address: '192.0.2.5' }], kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' },
        json: false,
        where: { socket: '/s' },
      },
    ],
    [
      ['create', 'web', ...SIZES, '--socket', '/s', '--mac', '52:54:00:00:00:01', '--address', '192.0.2.5', '--mac', '52:54:00:00:00:02', '--address', '192.0.2.6', '--kernel', '/k', '--initrd', '/i', '--cmdline', 'x'],
      {
        verb: 'create',
        name: 'web',
        memoryMiB: 96,
        vcpus: 1,
        disks: [{ sizeMiB: 16, storageGroup: 'default', format: 'qcow2' }],
        protection: 'ha',
        desired: 'running',
        cdDrive: false,
        guest: { nics: [{ mac: '52:54:00:00:00:01', address: '192.0.2.5' }, { mac: '52:54:00:00:00:02', address: '192.0.2.6' }], kernel: '/k', initrd: '/i', cmdline: 'x' },
        json: false,
        where: { socket: '/s' },
      },
    ],
    [
      // In the lab: three NICs, the second's address given, the rest the lab's.
      ['create', 'web', ...SIZES, '--nics', '3', '--address', '10.10.3.70', '--address', '10.10.3.71'],
      { verb: 'create', name: 'web', memoryMiB: 96, vcpus: 1, disks: [{ sizeMiB: 16, storageGroup: 'default', format: 'qcow2' }], protection: 'ha', desired: 'running', cdDrive: false, guest: { nics: [{ address: '10.10.3.70' }, { address: '10.10.3.71' }, {}] }, json: false, where: {} },
    ],
    [
      // Three disks: the first in --storage-group as --disk-format, the others saying where and what they are.
      ['create', 'db', '--memory', '96', '--vcpus', '1', '--disk', '16', '--disk', '32,group=fast', '--disk', '8,format=qcow2,group=slow', '--storage-group', 'main', '--disk-format', 'raw'],
      {
        verb: 'create',
        name: 'db',
        memoryMiB: 96,
        vcpus: 1,
        disks: [
          { sizeMiB: 16, storageGroup: 'main', format: 'raw' },
          { sizeMiB: 32, storageGroup: 'fast', format: 'raw' },
          { sizeMiB: 8, storageGroup: 'slow', format: 'qcow2' },
        ],
        protection: 'ha',
        desired: 'running',
        cdDrive: false,
        guest: { nics: [{}] },
        json: false,
        where: {},
      },
    ],
    [['help'], { verb: 'help', exit: 0 }],
    [[], { verb: 'help', exit: 2 }],
  ];
  for (const [argv, want] of cases) assert.deepEqual(parseVmCommand(argv), want, `vm ${argv.join(' ')}`);
});

test('a relative kernel path is made absolute (the daemon has its own working directory)', () => {
  const req = parseVmCommand(['create', 'web', ...SIZES, '--kernel', 'k/bzImage', '--initrd', 'i.gz']);
  assert.ok(req.verb === 'create');
  assert.equal(req.guest.kernel, `${process.cwd()}/k/bzImage`);
  assert.equal(req.guest.initrd, `${process.cwd()}/i.gz`);
});

test("every verb's bad input is refused with a usage error naming what is wrong", () => {
  const cases: [string[], string, RegExp][] = [
    [['frobnicate'], 'INVALID_ARGUMENT', /unknown vm command 'frobnicate'/],
    [['list', 'extra'], 'INVALID_ARGUMENT', /usage: lockstep vm list/],
    [['list', '--bogus'], 'INVALID_ARGUMENT', /Unknown option '--bogus'/],
    [['show'], 'INVALID_ARGUMENT', /usage: lockstep vm show NAME/],
    [['show', 'a', 'b'], 'INVALID_ARGUMENT', /usage: lockstep vm show NAME/],
    [['show', 'Bad_Name'], 'INVALID_ARGUMENT', /VM name 'Bad_Name'/],
    [['start'], 'INVALID_ARGUMENT', /usage: lockstep vm start NAME/],
    [['stop', '9lives'], 'INVALID_ARGUMENT', /VM name '9lives'/],
    [['remove'], 'INVALID_ARGUMENT', /usage: lockstep vm remove NAME/],
    [['protect', 'demo'], 'INVALID_ARGUMENT', /usage: lockstep vm protect NAME --level/],
    [['protect', 'demo', '--level', 'gold'], 'INVALID_ARGUMENT', /--level must be one of none, ha, ft \(got 'gold'\)/],
    [['protect', '--level', 'ha'], 'INVALID_ARGUMENT', /usage: lockstep vm protect/],
    [['migrate'], 'INVALID_ARGUMENT', /usage: lockstep vm migrate NAME/],
    [['migrate', 'demo', '--wait'], 'INVALID_ARGUMENT', /Unknown option '--wait'/],
    [['create'], 'INVALID_ARGUMENT', /usage: lockstep vm create NAME/],
    [['create', 'web'], 'INVALID_ARGUMENT', /needs --memory, --vcpus, --disk/],
    [['create', 'web', '--memory', '96', '--vcpus', '1'], 'INVALID_ARGUMENT', /needs --disk/],
    [['create', 'web', '--memory', 'lots', '--vcpus', '1', '--disk', '16'], 'INVALID_ARGUMENT', /--memory must be a whole number from 64/],
    [['create', 'web', '--memory', '32', '--vcpus', '1', '--disk', '16'], 'INVALID_ARGUMENT', /--memory must be a whole number from 64/],
    [['create', 'web', '--memory', '96', '--vcpus', '1.5', '--disk', '16'], 'INVALID_ARGUMENT', /--vcpus must be a whole number/],
    [['create', 'web', '--memory', '96', '--vcpus', '0', '--disk', '16'], 'INVALID_ARGUMENT', /--vcpus must be a whole number from 1 to 64/],
    [['create', 'web', '--memory', '96', '--vcpus', '1', '--disk=-4'], 'INVALID_ARGUMENT', /--disk must be a whole number/],
    [['create', 'web', ...SIZES, '--protection', 'gold'], 'INVALID_ARGUMENT', /--protection must be one of none, ha, ft/],
    [['create', 'web', ...SIZES, '--mac', '01:00:5e:00:00:01'], 'INVALID_ARGUMENT', /--mac must be a unicast MAC/],
    [['create', 'web', ...SIZES, '--mac', 'nonsense'], 'INVALID_ARGUMENT', /--mac must be a unicast MAC/],
    [['create', 'web', ...SIZES, '--address', '10.10.3.256'], 'INVALID_ARGUMENT', /--address must be an IPv4 address/],
    [['create', 'web', ...SIZES, '--kernel', '/k'], 'INVALID_ARGUMENT', /--kernel and --initrd go together/],
    [['create', 'web', ...SIZES, '--cmdline', ''], 'INVALID_ARGUMENT', /--cmdline must not be empty/],
    [['create', 'web', ...SIZES, '--storage-group', 'Fast!'], 'INVALID_ARGUMENT', /--storage-group must start with a letter/],
    [['create', 'web', ...SIZES, '--disk-format', 'vmdk'], 'INVALID_ARGUMENT', /--disk-format must be one of qcow2, raw \(got 'vmdk'\)/],
    [['create', 'web', ...SIZES, '--disk', '8,format=vmdk'], 'INVALID_ARGUMENT', /--disk format= must be one of qcow2, raw \(got 'vmdk'\)/],
    [['create', 'web', ...SIZES, '--disk', '8,group=Fast!'], 'INVALID_ARGUMENT', /--disk group= must start with a letter/],
    [['create', 'web', ...SIZES, '--disk', '8,cache=none'], 'INVALID_ARGUMENT', /--disk 8,cache=none: a disk is its size, then group=NAME, format=qcow2\|raw and from=ID \(got 'cache=none'\)/],
    [['create', 'web', ...SIZES, '--disk', 'big'], 'INVALID_ARGUMENT', /--disk must be a whole number/],
    [['create', 'web', ...SIZES, ...['1', '2', '3', '4'].flatMap((n) => ['--disk', n])], 'INVALID_ARGUMENT', /at most 4 disks/],
    [['create', 'web', ...SIZES, '--socket', '/s', '--mac', '52:54:00:00:00:01'], 'INVALID_ARGUMENT', /with --socket vm create needs --address, --kernel, --initrd, --cmdline: only the lab/],
    [['create', 'web', ...SIZES, '--nics', '5'], 'INVALID_ARGUMENT', /--nics must be a whole number from 1 to 4/],
    [['create', 'web', ...SIZES, '--nics', '0'], 'INVALID_ARGUMENT', /--nics must be a whole number from 1 to 4/],
    [['create', 'web', ...SIZES, '--nics', '1', '--mac', '52:54:00:00:00:01', '--mac', '52:54:00:00:00:02'], 'INVALID_ARGUMENT', /--nics 1, but 2 --mac and 0 --address/],
    [['create', 'web', ...SIZES, ...['1', '2', '3', '4', '5'].flatMap((i) => ['--address', `10.0.0.${i}`])], 'INVALID_ARGUMENT', /at most 4 NICs/],
    [['create', 'web', ...SIZES, '--mac', '52:54:00:00:00:01', '--mac', '52:54:00:00:00:01'], 'INVALID_ARGUMENT', /--mac 52:54:00:00:00:01 is given twice/],
    [['create', 'web', ...SIZES, '--address', '10.0.0.1', '--address', '10.0.0.1'], 'INVALID_ARGUMENT', /--address 10.0.0.1 is given twice/],
    [
      ['create', 'web', ...SIZES, '--socket', '/s', '--mac', '52:54:00:00:00:01', '--mac', '52:54:00:00:00:02', '--address', '192.0.2.5', '--kernel', '/k', '--initrd', '/i', '--cmdline', 'x'],
      'INVALID_ARGUMENT',
      /with --socket vm create needs --address: only the lab/,
    ],
    [['cd'], 'INVALID_ARGUMENT', /usage: lockstep vm cd insert NAME VCD \| vm cd eject NAME/],
    [['cd', 'insert', 'demo'], 'INVALID_ARGUMENT', /usage: lockstep vm cd insert NAME VCD/],
    [['cd', 'insert', 'demo', 'Debian'], 'INVALID_ARGUMENT', /virtual CD name 'Debian'/],
    [['cd', 'eject'], 'INVALID_ARGUMENT', /usage: lockstep vm cd eject NAME/],
    [['list', '--socket', '/s', '--host', 'host1'], 'INVALID_ARGUMENT', /--socket and --host exclude each other/],
    [['show', 'demo', '--host', 'host3'], 'UNKNOWN_HOST', /no lab host named 'host3'/],
  ];
  for (const [argv, code, message] of cases) {
    assert.throws(
      () => parseVmCommand(argv),
      (e: unknown) => e instanceof LockstepError && e.code === code && message.test(e.message),
      `vm ${argv.join(' ')}`,
    );
  }
});

/** A fixed answer as lockstepd gives it: demo runs on host1 with its mirror in sync; web is stopped. */
const DEMO: VmView = {
  name: 'demo',
  owner: 'host1',
  protection: 'ha',
  desired: 'running',
  state: 'protected',
  hardware: {
    vcpus: 1,
    memoryMiB: 96,
    guest: { kernel: '/cache/bzImage', initrd: '/cache/initrd.gz', cmdline: 'console=ttyS0 lockstep.ip=10.10.3.50/24' },
    diskMiB: 16,
    nic: { mac: '52:54:00:4c:53:32', address: '10.10.3.50' },
  },
  local: {
    instance: 3,
    state: 'running',
    pid: 4242,
    startedAt: '2025-01-01T00:00:00.000Z',
    mirror: {
      stream: 's7',
      mode: 'full',
      state: 'ready',
      copiedBytes: 16 * 1024 * 1024,
      totalBytes: 16 * 1024 * 1024,
      lastSync: { mode: 'full', copiedBytes: 16 * 1024 * 1024, pauseMs: 1.25, durationMs: 812.4, at: '2025-01-01T00:00:01.000Z' },
    },
  },
  lastExit: null,
};
const WEB: VmView = { ...DEMO, name: 'web', desired: 'stopped', state: 'stopped', local: null, lastExit: null };
const DEMO_FROM_HOST2: VmView = { ...DEMO, local: null };

test('vm list: the table shows each VM from the host that runs it', () => {
  const table = renderAnswer(false, {
    verb: 'list',
    views: [
      { host: 'host2', vms: [DEMO_FROM_HOST2, WEB] },
      { host: 'host1', vms: [DEMO, WEB] },
    ],
  });
  assert.equal(
    table,
    [
      'VM    OWNER  RUNNING ON  PROTECTION  DESIRED  STATE      MIRROR',
      'demo  host1  host1       ha          running  protected  ready/full',
      'web   host1  -           ha          stopped  stopped    -',
    ].join('\n'),
  );
});

test('vm list from one host: a running VM runs on its owner; a syncing mirror shows its share', () => {
  const syncing: VmView = { ...DEMO, state: 'syncing', local: { ...DEMO.local!, mirror: { ...DEMO.local!.mirror!, state: 'syncing', copiedBytes: 4 << 20 } } };
  const starting: VmView = { ...WEB, name: 'zed', desired: 'running', state: 'starting', owner: 'host2', local: { state: 'starting', pid: null } };
  const rows = vmRows([{ host: 'host1', vms: [syncing, starting, { ...DEMO_FROM_HOST2, name: 'other', owner: 'host2' }] }]);
  assert.deepEqual(
    rows.map((r) => [r.vm.name, r.runningOn]),
    [
      ['demo', 'host1'],
      ['other', 'host2'],
      ['zed', 'host1'],
    ],
  );
  const table = renderAnswer(false, { verb: 'list', views: [{ host: 'host1', vms: [syncing, starting] }] });
  assert.match(table, /^demo +host1 +host1 +ha +running +syncing +syncing\/full 25%$/m);
  assert.match(table, /^zed +host2 +host1 \(starting\) +ha +running +starting +-$/m);
  assert.equal(renderAnswer(false, { verb: 'list', views: [{ host: 'host1', vms: [] }] }), 'no VMs (`lockstep vm create NAME …` defines one)');
});

test('--json passes the API answer through untouched', () => {
  assert.deepEqual(JSON.parse(renderAnswer(true, { verb: 'list', views: [{ host: 'host1', vms: [DEMO, WEB] }, { host: 'host2', vms: [] }] })), [DEMO, WEB]);
  assert.deepEqual(JSON.parse(renderAnswer(true, { verb: 'show', host: 'host1', vm: DEMO })), DEMO);
  assert.deepEqual(JSON.parse(renderAnswer(true, { verb: 'change', headline: 'VM demo: desired stopped', vm: WEB })), WEB);
  assert.equal(renderAnswer(true, { verb: 'change', headline: 'VM demo removed', vm: null }), 'null');
});

test('vm show: hardware, the local QEMU, the mirror and its last sync, the last exit', () => {
  assert.equal(
    renderVmShow('host1', DEMO),
    [
      'vm          demo',
      'owner       host1',
      'protection  ha',
      'desired     running',
      'state       protected: running with the peer ready to take over at the requested level',
      'hardware    1 vCPU, 96 MiB memory',
      'disk        vda 16 MiB',
      'nic         52:54:00:4c:53:32 10.10.3.50',
      'kernel      /cache/bzImage',
      'initrd      /cache/initrd.gz',
      'cmdline     console=ttyS0 lockstep.ip=10.10.3.50/24',
      'qemu        on host1, pid 4242, running, instance 3, since 2025-01-01T00:00:00.000Z',
      'mirror      ready, full, 16.0 MiB of 16.0 MiB copied (100%), stream s7',
      'last sync   full, 16.0 MiB copied, in 812 ms, guest paused 1.3 ms, at 2025-01-01T00:00:01.000Z',
      'last exit   none',
    ].join('\n'),
  );
  const exited: VmView = {
    ...WEB,
    lastExit: { instance: 2, at: '2025-01-01T00:05:00.000Z', cause: 'killed', code: null, signal: 'SIGKILL', shutdownReason: null, stderrTail: 'qemu: starting\nqemu: terminating on signal 9\n', expected: false },
  };
  const shown = renderVmShow('host2', exited);
  assert.match(shown, /^qemu +not running on host2$/m);
  assert.doesNotMatch(shown, /^mirror/m);
  assert.match(shown, /^last exit +killed \(signal SIGKILL\), unexpected, instance 2, at 2025-01-01T00:05:00.000Z, stderr: qemu: terminating on signal 9$/m);
  const migrating: VmView = { ...DEMO, local: { ...DEMO.local!, migration: { phase: 'active', transferredBytes: 48 << 20, totalBytes: 96 << 20 } } };
  assert.match(renderVmShow('host1', migrating), /^migration +\[#{10}\.{10}\]  50%  active  48\.0 MiB of 96\.0 MiB$/m);
  const resyncing: VmView = {
    ...DEMO,
    local: { ...DEMO.local!, mirror: { ...DEMO.local!.mirror!, state: 'syncing', mode: 'incremental', copiedBytes: 4 << 20, limitBytesPerSec: 64 << 20, guestBusy: true } },
  };
  // A record with several NICs has no legacy `nic`: a line per NIC, in the guest's order.
  const { nic: _legacy, ...noLegacy } = DEMO.hardware!;
  const twoNics: VmView = { ...DEMO, hardware: { ...noLegacy, nics: [{ mac: '52:54:00:4c:53:32', address: '10.10.3.50' }, { mac: '52:54:00:4c:53:40', address: '10.10.3.60' }] } };
  assert.match(renderVmShow('host1', twoNics), /^hardware .*\ndisk .*\nnic +52:54:00:4c:53:32 10\.10\.3\.50\nnic +52:54:00:4c:53:40 10\.10\.3\.60\nkernel /m);
  // A record with several disks has no legacy diskMiB: a line per disk, in the guest's order.
  const { diskMiB: _size, ...oneDiskless } = noLegacy;
  const twoDisks: VmView = { ...DEMO, hardware: { ...oneDiskless, disks: [{ sizeMiB: 16, storageGroup: 'default', format: 'qcow2' }, { sizeMiB: 64, storageGroup: 'fast', format: 'raw' }] } };
  assert.match(renderVmShow('host1', twoDisks), /^hardware +1 vCPU, 96 MiB memory\ndisk +vda 16 MiB qcow2 in default\ndisk +vdb 64 MiB raw in fast\nnic /m);
  const withCd: VmView = { ...DEMO, hardware: { ...DEMO.hardware, cdrom: { medium: { vcd: 'debian-12.5', sha256: 'f'.repeat(64) } } } };
  assert.match(renderVmShow('host1', withCd), /^cd +debian-12\.5 \(sha256 ffffffffffff\)\nqemu /m);
  assert.match(renderVmShow('host1', { ...DEMO, hardware: { ...DEMO.hardware, cdrom: { medium: null } } }), /^cd +empty$/m);
  assert.match(renderVmShow('host1', resyncing), /^mirror +syncing, incremental, 4\.0 MiB of 16\.0 MiB copied \(25%\), at most 64\.0 MiB\/s \(yielding to guest I\/O\), stream s7$/m);
});

test('the progress line shows what the daemon gave, and a bar when the share is known', () => {
  const MiB = 1 << 20;
  assert.equal(
    renderProgress({ phase: 'active', transferredBytes: 24 * MiB, remainingBytes: 72 * MiB, totalBytes: 96 * MiB, mbps: 812.6, etaMs: 700 }, 20),
    '[#####...............]  25%  active  24.0 MiB of 96.0 MiB  72.0 MiB left  813 Mbit/s  eta 0.7 s',
  );
  // Only remaining and total: the share is what is no longer remaining.
  assert.equal(renderProgress({ remainingBytes: 24 * MiB, totalBytes: 96 * MiB }, 4), '[###.]  75%  migrating  72.0 MiB of 96.0 MiB  24.0 MiB left');
  assert.equal(renderProgress({ phase: 'setup' }), 'setup');
  assert.equal(renderProgress({ phase: 'active', transferredBytes: 3 * MiB, mbps: 2.25 }), 'active  3.0 MiB sent  2.3 Mbit/s');
  assert.equal(renderProgress({ phase: 'completed', transferredBytes: 100, totalBytes: 100, downtimeMs: 31.6 }, 2), '[##] 100%  completed  100 B of 100 B  downtime 32 ms');
  assert.equal(renderProgress({ phase: 'active', transferredBytes: 500, totalBytes: 0 }), 'active  500 B of 0 B', 'no bar for an unknown total');
  assert.equal(renderProgress(null), 'migrating: waiting for the first figures');
  // The daemon's view before QEMU's first report: every figure null, as JSON carries it.
  assert.equal(
    renderProgress({ phase: 'migrating', transferredBytes: null, remainingBytes: null, totalBytes: null, mbps: null, etaMs: null }),
    'migrating',
  );
  assert.equal(renderProgress({ phase: 'migrating', transferredBytes: 2 * MiB, remainingBytes: null, totalBytes: 8 * MiB, mbps: null, etaMs: null }, 4), '[#...]  25%  migrating  2.0 MiB of 8.0 MiB');
});

const answer = (host: string, vm: VmView | null, error?: LockstepError): HostAnswer =>
  vm ? { host, peer: host === 'host1' ? 'host2' : 'host1', vm } : { host, peer: host === 'host1' ? 'host2' : 'host1', error: error! };

test('a migration goes to the owner, as the owner says, and to its peer', () => {
  const onHost2: VmView = { ...DEMO, owner: 'host2' };
  assert.deepEqual(routeMigration('demo', [answer('host1', DEMO), answer('host2', DEMO_FROM_HOST2)]), { owner: 'host1', target: 'host2' });
  assert.deepEqual(routeMigration('demo', [answer('host1', onHost2), answer('host2', onHost2)]), { owner: 'host2', target: 'host1' });
  const down = new LockstepError('DAEMON_UNREACHABLE', 'lockstepd at /x did not answer: connect ENOENT');
  assert.deepEqual(routeMigration('demo', [answer('host1', null, down), answer('host2', onHost2)]), { owner: 'host2', target: 'host1' }, 'the owner alone is enough');
});

test('a migration is refused before it is sent when the owner cannot be asked or is unclear', () => {
  const onHost2: VmView = { ...DEMO, owner: 'host2' };
  const down = new LockstepError('DAEMON_UNREACHABLE', 'lockstepd at /x did not answer: connect ENOENT');
  const unknown = new LockstepError('UNKNOWN_VM', "no VM named 'demo'");
  const refuses = (answers: HostAnswer[], code: string, message: RegExp): void =>
    assert.throws(() => routeMigration('demo', answers), (e: unknown) => e instanceof LockstepError && e.code === code && message.test(e.message));
  refuses([answer('host1', onHost2), answer('host2', null, down)], 'DAEMON_UNREACHABLE', /owned by host2, whose lockstepd cannot be asked/);
  refuses([answer('host1', onHost2)], 'INVALID_ARGUMENT', /owned by host2, and the lockstepd asked is host1's: .*--socket/);
  refuses([answer('host1', null, unknown), answer('host2', null, down)], 'UNKNOWN_VM', /no VM named 'demo'/);
  refuses([answer('host1', null, down), answer('host2', null, down)], 'DAEMON_UNREACHABLE', /did not answer/);
  refuses([answer('host1', onHost2), answer('host2', DEMO_FROM_HOST2)], 'COMMAND_REFUSED', /do not agree yet on who owns VM demo \(host1 says host2, host2 says host1\)/);
  refuses([{ host: 'host1', peer: null, vm: DEMO }], 'NOT_PAIRED', /host1 is not paired/);
});

test('a migration is done once the target owns the VM and runs it; a failed phase ends it', () => {
  const moving: VmView = { ...DEMO, local: { ...DEMO.local!, migration: { phase: 'active', transferredBytes: 10, totalBytes: 100, downtimeMs: 12 } } };
  const incoming: VmView = { ...DEMO, local: { state: 'starting', pid: 77 } };
  assert.deepEqual(migrationStep(moving, incoming, 'host2'), { kind: 'moving', migration: moving.local!.migration });
  // The pair has recorded host2 as the owner, but host2's QEMU does not run yet.
  assert.deepEqual(migrationStep({ ...moving, owner: 'host2' }, { ...incoming, owner: 'host2' }, 'host2').kind, 'moving');
  const arrived: VmView = { ...DEMO, owner: 'host2', local: { state: 'running', pid: 77, migration: { phase: 'completed', downtimeMs: 41 } } };
  assert.deepEqual(migrationStep({ ...DEMO_FROM_HOST2, owner: 'host2' }, arrived, 'host2'), { kind: 'done', downtimeMs: 41, multifd: null });
  assert.deepEqual(migrationStep({ ...DEMO_FROM_HOST2, owner: 'host2' }, { ...arrived, local: { state: 'running' } }, 'host2'), { kind: 'done', downtimeMs: null, multifd: null });
  // The source's own view fills in what the target's lacks: its downtime and the connections it used.
  const sourceDone: VmView = { ...DEMO_FROM_HOST2, owner: 'host2', local: { ...DEMO.local!, migration: { phase: 'completed', downtimeMs: 57, multifd: 2 } } };
  assert.deepEqual(migrationStep(sourceDone, { ...arrived, local: { state: 'running' } }, 'host2'), { kind: 'done', downtimeMs: 57, multifd: 2 });
  // Without the target's answer, the source's view of the core's state decides.
  assert.deepEqual(migrationStep({ ...DEMO_FROM_HOST2, owner: 'host2', state: 'protected' }, null, 'host2'), { kind: 'done', downtimeMs: null, multifd: null });
  assert.equal(migrationStep({ ...DEMO_FROM_HOST2, owner: 'host2', state: 'starting' }, null, 'host2').kind, 'moving');
  const failed: VmView = { ...DEMO, local: { ...DEMO.local!, migration: { phase: 'failed', error: 'the peer left' } } };
  assert.deepEqual(migrationStep(failed, incoming, 'host2'), { kind: 'failed', error: 'the peer left' });
  assert.deepEqual(migrationStep({ ...DEMO, local: { migration: { phase: 'failed' } } }, null, 'host2'), { kind: 'failed', error: 'the daemon gave no reason' });
  assert.deepEqual(migrationStep(null, null, 'host2'), { kind: 'moving', migration: null });
});

test("the lab's free guest slot skips every address and MAC in use", () => {
  assert.equal(freeGuestSlot([]), 0);
  assert.equal(freeGuestSlot([{ address: '10.10.3.50' }, { mac: '52:54:00:4C:53:33' }]), 2, 'an address or a MAC alone takes its slot');
  assert.equal(freeGuestSlot([{ address: '10.10.3.51', mac: '52:54:00:4c:53:33' }]), 0);
  const all = Array.from({ length: 50 }, (_, i) => ({ address: `10.10.3.${50 + i}` }));
  assert.throws(() => freeGuestSlot(all), (e: unknown) => e instanceof LockstepError && e.code === 'INVALID_ARGUMENT' && /give --mac and --address/.test(e.message));
});
