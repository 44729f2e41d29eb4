/**
 * Hardware sensors: the parse of hwmon channels and thermal zones with their limits and states, and the read
 * of a directory laid out as sysfs is (real files, the kernel's units); then `GET /v1/host/sensors` on the
 * management API from such a directory, and from this machine's own /sys, whatever it holds.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseHwmon, parseThermalZone, readSensors, sensorState } from '../../src/health/sensors.js';
import { SENSOR_ROUTES } from '../../src/daemon/sensor-routes.js';
import { validate } from '../../src/api/schema.js';
import { managementOpenApi } from '../../src/api/management-server.js';
import { Cleanup } from '../support/cleanup.js';
import { ADMIN, startHarness } from '../api/harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const files = (o: Record<string, string>) => new Map(Object.entries(o));

test('hwmon channels: units scaled from sysfs, labels, limits, states; channels without a reading are left out', () => {
  const r = parseHwmon('hwmon3', files({
    name: 'nct6775\n',
    temp2_input: '81000\n', temp2_max: '80000', temp2_crit: '100000', temp2_label: 'CPUTIN',
    temp1_input: '42500', temp1_label: 'SYSTIN\n',
    fan1_input: '0', fan1_min: '300', fan1_label: 'CPU Fan',
    fan2_input: '1200', fan2_min: '0',
    in0_input: '1104', in0_min: '1000', in0_max: '1200',
    in1_input: 'garbage',
  }));
  assert.deepEqual(
    r.map((s) => [s.id, s.chip, s.label, s.kind, s.value, s.min, s.max, s.critical, s.state]),
    [
      ['hwmon3/temp1', 'nct6775', 'SYSTIN', 'temperature', 42.5, null, null, null, 'ok'],
      ['hwmon3/temp2', 'nct6775', 'CPUTIN', 'temperature', 81, null, 80, 100, 'warning'],
      ['hwmon3/fan1', 'nct6775', 'CPU Fan', 'fan', 0, 300, null, null, 'warning'],
      ['hwmon3/fan2', 'nct6775', 'fan2', 'fan', 1200, 0, null, null, 'ok'],
      ['hwmon3/in0', 'nct6775', 'in0', 'voltage', 1.104, 1, 1.2, null, 'ok'],
    ],
  );
  assert.equal(sensorState('temperature', 100, { min: null, max: 80, critical: 100 }), 'critical', 'at the critical limit');
  assert.equal(sensorState('voltage', 1.3, { min: 1, max: 1.2, critical: null }), 'warning');
  assert.equal(sensorState('voltage', 0.9, { min: 1, max: 1.2, critical: null }), 'warning');
  assert.equal(parseHwmon('hwmon0', files({ temp1_input: '30000' }))[0]!.chip, 'hwmon0', 'no name file: the directory');
});

test('a thermal zone: its temperature with its hot and critical trip points', () => {
  const z = parseThermalZone('thermal_zone0', files({ type: 'x86_pkg_temp\n', temp: '97000', trip_point_0_type: 'passive', trip_point_0_temp: '90000', trip_point_1_type: 'critical', trip_point_1_temp: '105000', trip_point_2_type: 'hot', trip_point_2_temp: '95000' }));
  assert.deepEqual(z, { chip: 'x86_pkg_temp', id: 'thermal_zone0', label: 'x86_pkg_temp', kind: 'temperature', value: 97, min: null, max: 95, critical: 105, state: 'warning' });
  assert.equal(parseThermalZone('thermal_zone1', files({ type: 'acpitz', temp: '' })), null, 'no reading: no sensor');
});

async function fakeSysfs(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'lockstep-sysfs-'));
  cleanup.add(() => rm(root, { recursive: true, force: true }));
  const write = async (rel: string, text: string) => {
    await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
    await writeFile(path.join(root, rel), text);
  };
  await write('class/hwmon/hwmon10/name', 'coretemp\n');
  await write('class/hwmon/hwmon10/temp1_input', '55000\n');
  await write('class/hwmon/hwmon10/temp1_crit', '100000\n');
  await write('class/hwmon/hwmon10/temp1_label', 'Package id 0\n');
  await write('class/hwmon/hwmon2/name', 'acpi_fan\n');
  await write('class/hwmon/hwmon2/fan1_input', '2400\n');
  await write('class/hwmon/hwmon2/uevent', 'not a sensor\n');
  await write('class/thermal/thermal_zone0/type', 'acpitz\n');
  await write('class/thermal/thermal_zone0/temp', '27800\n');
  await write('class/thermal/cooling_device0/type', 'Processor\n');
  return root;
}

test('read from a directory laid out as sysfs: chips in natural order, then thermal zones; none at all is said', async () => {
  const root = await fakeSysfs();
  const view = await readSensors(root);
  assert.equal(view.note, null);
  assert.deepEqual(view.sensors.map((s) => [s.id, s.label, s.value, s.state]), [
    ['hwmon2/fan1', 'fan1', 2400, 'ok'],
    ['hwmon10/temp1', 'Package id 0', 55, 'ok'],
    ['thermal_zone0', 'acpitz', 27.8, 'ok'],
  ]);
  const empty = await mkdtemp(path.join(os.tmpdir(), 'lockstep-sysfs-empty-'));
  cleanup.add(() => rm(empty, { recursive: true, force: true }));
  const none = await readSensors(empty);
  assert.deepEqual(none.sensors, []);
  assert.match(none.note!, /no hardware sensors on this host/);
});

test('GET /v1/host/sensors on the management API: a read-only user reads them, as documented; this machine’s own too', async () => {
  const root = await fakeSysfs();
  const h = await startHarness(cleanup, { withDriver: false, sysfsRoot: root });
  assert.equal((await h.request('POST', '/api/v1/setup', { body: ADMIN })).status, 201);
  const admin = await h.login(ADMIN.name, ADMIN.password);
  assert.equal((await h.request('POST', '/api/v1/users', { token: admin, body: { name: 'rita', password: 'rita-password-1', groups: ['read-only'] } })).status, 201);
  const reader = await h.login('rita', 'rita-password-1');
  const r = await h.request('GET', '/api/v1/host/sensors', { token: reader });
  assert.equal(r.status, 200);
  const schema = SENSOR_ROUTES[0]!.response.schema!;
  validate(schema, r.body, 'INVALID_ARGUMENT');
  assert.equal(r.body.host, 'host1');
  assert.deepEqual(r.body.sensors.map((s: { id: string }) => s.id), ['hwmon2/fan1', 'hwmon10/temp1', 'thermal_zone0']);
  assert.equal((await h.request('GET', '/api/v1/host/sensors')).status, 401);
  const doc = managementOpenApi() as { paths: Record<string, Record<string, { 'x-lockstep-access': string }>> };
  assert.equal(doc.paths['/api/v1/host/sensors']?.['get']?.['x-lockstep-access'], 'read-only');

  // This machine's /sys: whatever it has, the answer has the documented shape, and an empty list has its note.
  const real = await readSensors();
  validate(schema, { host: 'host1', ...real }, 'INVALID_ARGUMENT');
  assert.ok(real.sensors.length > 0 || real.note !== null);
});
