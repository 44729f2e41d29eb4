/**
 * The host's hardware sensors as its kernel reports them in sysfs: temperatures, fan speeds and voltages of
 * the hwmon drivers (`/sys/class/hwmon/hwmonN`), and the thermal zones (`/sys/class/thermal/thermal_zoneN`)
 * with their critical trip point. Each reading carries the limits its driver gives and a state from them.
 *
 * What is read is the kernel's own account: no lm-sensors configuration, no IPMI. A machine without such
 * drivers (a virtual machine, a container's host that hides them) has no sensors, and the answer says so
 * rather than inventing one. Hardware is not namespaced: in the lab every host reads the one machine's.
 *
 * Units as sysfs has them (Documentation/hwmon/sysfs-interface.rst): temperatures in m°C, voltages in mV,
 * fans in RPM. The parse is pure; only `readSensors` touches the file system.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export type SensorKind = 'temperature' | 'fan' | 'voltage';
export type SensorState = 'ok' | 'warning' | 'critical';

export interface SensorReading {
  /** The hwmon chip's name (`coretemp`, `nct6775` …) or the thermal zone's type (`x86_pkg_temp` …). */
  chip: string;
  /** Where it was read: `hwmon2/temp1`, `thermal_zone0`. */
  id: string;
  /** The driver's label (`Package id 0`, `CPU Fan`), else the id's last part. */
  label: string;
  kind: SensorKind;
  /** °C, RPM or V. */
  value: number;
  /** The limits the driver gives (null: none): above `max` is a warning, above `critical` critical; for a fan or a voltage, `min` too. */
  min: number | null;
  max: number | null;
  critical: number | null;
  state: SensorState;
}

export interface SensorsView {
  sensors: SensorReading[];
  /** Why the list is empty, or what could not be read; null when every sensor was read. */
  note: string | null;
}

const UNIT_SCALE: Readonly<Record<SensorKind, number>> = { temperature: 1000, fan: 1, voltage: 1000 };
const PREFIX: Readonly<Record<string, SensorKind>> = { temp: 'temperature', fan: 'fan', in: 'voltage' };
/** Temperatures first, then fans, then voltages: the order an operator scans them in. */
const CHANNEL_ORDER: Readonly<Record<string, number>> = { temp: 0, fan: 1, in: 2 };

/** The files of one hwmon directory, by name (`temp1_input` → its text). */
export type SysfsFiles = ReadonlyMap<string, string>;

/** The readings of one hwmon chip, in channel order. */
export function parseHwmon(dirName: string, files: SysfsFiles): SensorReading[] {
  const chip = files.get('name')?.trim() || dirName;
  const channels = [...files.keys()]
    .map((f) => /^(temp|fan|in)(\d+)_input$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => CHANNEL_ORDER[a[1]!]! - CHANNEL_ORDER[b[1]!]! || Number(a[2]) - Number(b[2]));
  const out: SensorReading[] = [];
  for (const [, prefix, n] of channels) {
    const kind = PREFIX[prefix!]!;
    const scaled = (suffix: string): number | null => number(files.get(`${prefix}${n}_${suffix}`), UNIT_SCALE[kind]);
    const value = scaled('input');
    if (value === null) continue; // a channel whose driver reports no reading now (sysfs gives an error or junk)
    const limits = { min: kind === 'temperature' ? null : scaled('min'), max: scaled('max'), critical: scaled('crit') };
    const id = `${dirName}/${prefix}${n}`;
    out.push({ chip, id, label: files.get(`${prefix}${n}_label`)?.trim() || `${prefix}${n}`, kind, value, ...limits, state: sensorState(kind, value, limits) });
  }
  return out;
}

/** A thermal zone: its temperature and its critical trip point, if it has one. */
export function parseThermalZone(dirName: string, files: SysfsFiles): SensorReading | null {
  const value = number(files.get('temp'), 1000);
  if (value === null) return null;
  let critical: number | null = null;
  let hot: number | null = null;
  for (const [f, text] of files) {
    const m = /^trip_point_(\d+)_type$/.exec(f);
    if (!m) continue;
    const t = number(files.get(`trip_point_${m[1]}_temp`), 1000);
    if (text.trim() === 'critical') critical = t;
    else if (text.trim() === 'hot') hot = t;
  }
  const type = files.get('type')?.trim() || dirName;
  const limits = { min: null, max: hot, critical };
  return { chip: type, id: dirName, label: type, kind: 'temperature', value, ...limits, state: sensorState('temperature', value, limits) };
}

/** Critical past the critical limit; a warning past the maximum, or below a fan's or voltage's minimum. */
export function sensorState(kind: SensorKind, value: number, l: { min: number | null; max: number | null; critical: number | null }): SensorState {
  if (l.critical !== null && value >= l.critical) return 'critical';
  if (l.max !== null && value > l.max) return 'warning';
  // A fan that stopped shows 0 RPM: below its minimum. A minimum of 0 is "no minimum".
  if (kind !== 'temperature' && l.min !== null && l.min > 0 && value < l.min) return 'warning';
  return 'ok';
}

function number(text: string | undefined, scale: number): number | null {
  if (text === undefined) return null;
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) return null;
  return Number(t) / scale;
}

/** Reads every hwmon chip and thermal zone under `sysfsRoot` (`/sys`; a test gives a directory laid out like it). */
export async function readSensors(sysfsRoot = '/sys'): Promise<SensorsView> {
  const problems: string[] = [];
  const sensors: SensorReading[] = [];
  for (const [cls, parse] of [
    ['hwmon', (d: string, f: SysfsFiles) => parseHwmon(d, f)],
    ['thermal', (d: string, f: SysfsFiles) => (d.startsWith('thermal_zone') ? [parseThermalZone(d, f)].filter((r): r is SensorReading => r !== null) : [])],
  ] as const) {
    const dir = path.join(sysfsRoot, 'class', cls);
    let entries: string[];
    try {
      entries = (await readdir(dir)).sort(naturalOrder);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`cannot read ${dir}: ${(e as Error).message}`);
      continue;
    }
    for (const entry of entries) {
      try {
        sensors.push(...parse(entry, await readFiles(path.join(dir, entry))));
      } catch (e) {
        problems.push(`cannot read ${path.join(dir, entry)}: ${(e as Error).message}`);
      }
    }
  }
  const note = problems.length > 0 ? problems.join('; ') : sensors.length === 0 ? 'the kernel reports no hardware sensors on this host (no hwmon drivers or thermal zones: a virtual machine has none)' : null;
  return { sensors, note };
}

/** The small text files of one sysfs directory; a file the driver refuses to read (EIO, ENODATA) is left out. */
async function readFiles(dir: string): Promise<SysfsFiles> {
  const files = new Map<string, string>();
  for (const name of await readdir(dir)) {
    if (!/^(name|type|temp|(temp|fan|in)\d+_(input|label|min|max|crit)|trip_point_\d+_(type|temp))$/.test(name)) continue;
    try {
      files.set(name, await readFile(path.join(dir, name), 'utf8'));
    } catch {
      // A sensor that cannot be read now is absent from this reading, not an error of the others.
    }
  }
  return files;
}

function naturalOrder(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}
