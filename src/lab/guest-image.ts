/**
 * The lab guest: Debian's cloud kernel plus a busybox initramfs whose /init runs the record service (see
 * docs/guest.md). Built from Debian packages on first use and cached by the hash of everything that goes into
 * it, so every lab VM and test boots the same bytes and a change to any input gives a new image.
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { LockstepError, describeError } from '../util/errors.js';
import { run } from '../util/exec.js';
import { cacheDir, repoRoot } from '../util/paths.js';

/** Bump when the builder's own logic changes what it produces (the module list, the layout, flags …). */
export const GUEST_BUILDER_VERSION = 1;

/** The TCP port the record service listens on inside the guest. */
export const RECORD_SERVICE_PORT = 7070;

/** The serial-console line prefix printed once the record service accepts connections. */
export const GUEST_READY_MARKER = `lockstep-guest: record service ready on ${RECORD_SERVICE_PORT}`;

/**
 * The virtio modules the guest needs, in load order: the .deb has no modules.dep, so each module's
 * dependencies come before it (measured on this kernel; see lab-facts.md).
 */
export const GUEST_MODULE_ORDER: readonly string[] = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
];

/** The metapackage that always depends on Debian's current cloud kernel. */
const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
const BUSYBOX_PATH = '/bin/busybox';
const APT_UPDATE_TIMEOUT_MS = 5 * 60_000;
const DOWNLOAD_TIMEOUT_MS = 10 * 60_000;
const HASH_HEX_CHARS = 20;

export interface GuestImage {
  /** Absolute path of the kernel (bzImage) inside the cache. */
  kernel: string;
  /** Absolute path of the gzipped newc initramfs inside the cache. */
  initrd: string;
  /** The content hash that names the image's cache directory. */
  hash: string;
  /** The kernel package as `name=version`, e.g. `linux-image-6.1.0-56-cloud-amd64=6.1.192-2`. */
  kernelPackage: string;
}

export interface KernelPackage {
  name: string;
  version: string;
}

/** Everything the image is made from: the cache key. */
export interface GuestImageInputs {
  builderVersion: number;
  initScript: string;
  recordServiceSource: string;
  kernelPackage: KernelPackage;
  busyboxVersion: string;
}

export interface EnsureGuestImageOptions {
  log?: (line: string) => void;
}

type Log = (line: string) => void;

/* ------------------------------------------------------------------ inputs and hash */

/** The content hash of an image's inputs. Pure, so tests can show that each input changes it. */
export function guestImageHash(inputs: GuestImageInputs): string {
  // A fixed field order and explicit lengths: no two different input sets can serialize to the same bytes.
  const fields: [string, string][] = [
    ['builderVersion', String(inputs.builderVersion)],
    ['initScript', inputs.initScript],
    ['recordServiceSource', inputs.recordServiceSource],
    ['kernelPackage', `${inputs.kernelPackage.name}=${inputs.kernelPackage.version}`],
    ['busyboxVersion', inputs.busyboxVersion],
  ];
  const h = createHash('sha256');
  for (const [name, value] of fields) h.update(`${name}:${Buffer.byteLength(value)}:${value}\n`);
  return h.digest('hex').slice(0, HASH_HEX_CHARS);
}

/** Where the guest's sources live in the repository. */
export function guestSourcePaths(): { initScript: string; recordServiceSource: string } {
  const dir = path.join(repoRoot(), 'src', 'lab', 'guest');
  return { initScript: path.join(dir, 'init'), recordServiceSource: path.join(dir, 'record-service.c') };
}

/** Reads the sources and asks apt and dpkg which kernel and busybox the image would be built from. */
export async function resolveGuestImageInputs(log: Log = () => {}): Promise<GuestImageInputs> {
  const src = guestSourcePaths();
  const [initScript, recordServiceSource, kernelPackage, busyboxVersion] = await Promise.all([
    readSource(src.initScript),
    readSource(src.recordServiceSource),
    resolveKernelPackage(log),
    installedBusyboxVersion(),
  ]);
  return { builderVersion: GUEST_BUILDER_VERSION, initScript, recordServiceSource, kernelPackage, busyboxVersion };
}

async function readSource(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new LockstepError('GUEST_IMAGE', `cannot read the guest source ${file}: ${describeError(e)}`, { file }, { cause: e });
  }
}

/**
 * Finds the versioned kernel package the cloud metapackage depends on in apt's current candidate, e.g.
 * `Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)`. Exported for tests.
 */
export function parseKernelDepends(aptCacheShow: string): KernelPackage | undefined {
  const depends = /^Depends:\s*(.*)$/m.exec(aptCacheShow)?.[1];
  if (depends === undefined) return undefined;
  for (const alternative of depends.split(/[,|]/)) {
    const m = /^\s*(linux-image-[A-Za-z0-9.+-]+-cloud-amd64)\s*\(\s*=\s*([^)\s]+)\s*\)/.exec(alternative);
    if (m?.[1] !== undefined && m[2] !== undefined) return { name: m[1], version: m[2] };
  }
  return undefined;
}

async function kernelCandidate(): Promise<KernelPackage | undefined> {
  const r = await run('apt-cache', ['show', '--no-all-versions', KERNEL_METAPACKAGE], { allowFailure: true });
  return r.code === 0 ? parseKernelDepends(r.stdout) : undefined;
}

/** Asks apt for the kernel; without package lists (a fresh machine) runs `apt-get update` once and asks again. */
async function resolveKernelPackage(log: Log): Promise<KernelPackage> {
  const first = await kernelCandidate();
  if (first) return first;
  log(`guest image: apt has no candidate for ${KERNEL_METAPACKAGE}; running apt-get update`);
  try {
    await run('apt-get', ['update', '-qq'], { timeoutMs: APT_UPDATE_TIMEOUT_MS });
  } catch (e) {
    throw new LockstepError(
      'GUEST_IMAGE',
      `apt has no package lists and 'apt-get update' failed (it needs root and a Debian mirror): ${describeError(e)}`,
      { package: KERNEL_METAPACKAGE },
      { cause: e },
    );
  }
  const second = await kernelCandidate();
  if (second) return second;
  throw new LockstepError(
    'GUEST_IMAGE',
    `apt knows no installable ${KERNEL_METAPACKAGE} even after 'apt-get update': is the Debian main component configured?`,
    { package: KERNEL_METAPACKAGE },
  );
}

async function installedBusyboxVersion(): Promise<string> {
  const r = await run('dpkg-query', ['-W', '-f=${Version}', BUSYBOX_PACKAGE], { allowFailure: true });
  const version = r.stdout.trim();
  if (r.code !== 0 || version === '') {
    throw new LockstepError(
      'MISSING_PREREQUISITE',
      `the guest image needs the Debian package '${BUSYBOX_PACKAGE}' (a static busybox): install it or run \`npm run setup\``,
      { package: BUSYBOX_PACKAGE },
    );
  }
  return version;
}

/* ------------------------------------------------------------------ the cache */

const inFlight = new Map<string, Promise<GuestImage>>();

/**
 * Returns the guest image for the current inputs, building it first if the cache does not have it. Throws
 * `GUEST_IMAGE` when a build step fails and `MISSING_PREREQUISITE` when a build tool is not installed.
 */
export async function ensureGuestImage(opts: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  const log = opts.log ?? (() => {});
  const inputs = await resolveGuestImageInputs(log);
  const hash = guestImageHash(inputs);
  // Two callers in one process (parallel tests, the lab starting several VMs) share one build.
  let pending = inFlight.get(hash);
  if (!pending) {
    pending = cachedOrBuilt(inputs, hash, log);
    inFlight.set(hash, pending);
    pending.catch(() => inFlight.delete(hash));
  }
  return pending;
}

function imageAt(dir: string, hash: string, kernel: KernelPackage): GuestImage {
  return {
    kernel: path.join(dir, 'vmlinuz'),
    initrd: path.join(dir, 'initrd.img'),
    hash,
    kernelPackage: `${kernel.name}=${kernel.version}`,
  };
}

async function isComplete(image: GuestImage): Promise<boolean> {
  try {
    await Promise.all([fs.access(image.kernel, fsConstants.R_OK), fs.access(image.initrd, fsConstants.R_OK)]);
    return true;
  } catch {
    return false;
  }
}

async function cachedOrBuilt(inputs: GuestImageInputs, hash: string, log: Log): Promise<GuestImage> {
  const root = path.join(cacheDir(), 'guest');
  const finalDir = path.join(root, hash);
  const image = imageAt(finalDir, hash, inputs.kernelPackage);
  if (await isComplete(image)) return image;

  await fs.mkdir(root, { recursive: true });
  await removeAbandonedBuilds(root);
  // Everything is built under a temporary directory and renamed into place in one step, so an interrupted
  // build never leaves something at `<hash>/` that looks like an image.
  const work = await fs.mkdtemp(path.join(root, `.tmp-${hash}-${process.pid}-`));
  const started = Date.now();
  try {
    log(`guest image: building ${hash} (${image.kernelPackage}, busybox ${inputs.busyboxVersion})`);
    const staged = path.join(work, 'image');
    await buildImage(inputs, work, staged, log);
    await writeManifest(staged, inputs, hash, Date.now() - started);
    await publish(staged, finalDir);
    log(`guest image: built ${hash} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  return image;
}

/** Renames the staged image into place; if another process won the race, its identical image is kept. */
async function publish(staged: string, finalDir: string): Promise<void> {
  try {
    await fs.rename(staged, finalDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'ENOTEMPTY') {
      throw new LockstepError('GUEST_IMAGE', `cannot move the guest image into ${finalDir}: ${describeError(e)}`, { finalDir }, { cause: e });
    }
  }
}

/** Removes temporary build directories left by builder processes that no longer run (killed mid-build). */
async function removeAbandonedBuilds(root: string): Promise<void> {
  for (const name of await fs.readdir(root)) {
    const m = /^\.tmp-[0-9a-f]+-(\d+)-/.exec(name);
    if (m?.[1] !== undefined && !processAlive(Number(m[1]))) {
      await fs.rm(path.join(root, name), { recursive: true, force: true });
    }
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function writeManifest(staged: string, inputs: GuestImageInputs, hash: string, buildMs: number): Promise<void> {
  const manifest = {
    hash,
    builderVersion: inputs.builderVersion,
    kernelPackage: inputs.kernelPackage,
    busyboxVersion: inputs.busyboxVersion,
    modules: GUEST_MODULE_ORDER,
    builtAt: new Date().toISOString(),
    buildMs,
  };
  await fs.writeFile(path.join(staged, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

/* ------------------------------------------------------------------ the build */

/** Builds `staged/vmlinuz` and `staged/initrd.img`, using `work` for downloads and the initramfs tree. */
async function buildImage(inputs: GuestImageInputs, work: string, staged: string, log: Log): Promise<void> {
  const tree = path.join(work, 'initramfs');
  await fs.mkdir(staged);
  await makeTree(tree);
  const kernelRoot = await fetchKernel(inputs.kernelPackage, work, log);
  const kver = await kernelRelease(kernelRoot);
  await copyFile(path.join(kernelRoot, 'boot', `vmlinuz-${kver}`), path.join(staged, 'vmlinuz'), 0o644);
  await installModules(path.join(kernelRoot, 'lib', 'modules', kver), path.join(tree, 'lib', 'modules'), log);
  await installBusybox(path.join(tree, 'bin', 'busybox'));
  await compileRecordService(guestSourcePaths().recordServiceSource, path.join(tree, 'bin', 'record-service'), log);
  await fs.writeFile(path.join(tree, 'init'), inputs.initScript, { mode: 0o755 });
  await fs.chmod(path.join(tree, 'init'), 0o755);
  await packInitramfs(tree, work, path.join(staged, 'initrd.img'));
}

async function makeTree(tree: string): Promise<void> {
  for (const dir of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'lib/modules', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root']) {
    await fs.mkdir(path.join(tree, dir), { recursive: true });
  }
}

async function copyFile(from: string, to: string, mode: number): Promise<void> {
  try {
    await fs.copyFile(from, to);
    await fs.chmod(to, mode);
  } catch (e) {
    throw new LockstepError('GUEST_IMAGE', `cannot copy ${from} into the guest image: ${describeError(e)}`, { from, to }, { cause: e });
  }
}

/**
 * Downloads the kernel .deb with `apt-get download` (never installing it on this machine) and unpacks it
 * with `dpkg-deb -x`. Returns the unpacked root.
 */
async function fetchKernel(pkg: KernelPackage, work: string, log: Log): Promise<string> {
  const debDir = path.join(work, 'deb');
  const unpacked = path.join(work, 'kernel');
  await fs.mkdir(debDir);
  log(`guest image: downloading ${pkg.name}=${pkg.version}`);
  // apt downloads as the unprivileged _apt user, which cannot write into root's cache directory; as root we
  // say so explicitly instead of letting apt fall back with a warning.
  const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
  await run('apt-get', ['download', '-q', ...sandbox, `${pkg.name}=${pkg.version}`], {
    cwd: debDir,
    timeoutMs: DOWNLOAD_TIMEOUT_MS,
  });
  const debs = (await fs.readdir(debDir)).filter((f) => f.endsWith('.deb'));
  if (debs.length !== 1 || debs[0] === undefined) {
    throw new LockstepError('GUEST_IMAGE', `apt-get download of ${pkg.name} left ${debs.length} .deb files`, { debs });
  }
  await run('dpkg-deb', ['-x', path.join(debDir, debs[0]), unpacked]);
  return unpacked;
}

/** The kernel release (`6.1.0-56-cloud-amd64`) from the one `boot/vmlinuz-*` in the unpacked package. */
async function kernelRelease(kernelRoot: string): Promise<string> {
  const kernels = (await fs.readdir(path.join(kernelRoot, 'boot'))).filter((f) => f.startsWith('vmlinuz-'));
  const only = kernels[0];
  if (kernels.length !== 1 || only === undefined) {
    throw new LockstepError('GUEST_IMAGE', `expected one boot/vmlinuz-* in the kernel package, found ${kernels.length}`, { kernels });
  }
  return only.slice('vmlinuz-'.length);
}

/** How each compression suffix a Debian module may carry is undone in place (the tool drops the suffix). */
const DECOMPRESS: Readonly<Record<string, readonly string[]>> = {
  '.ko': [],
  '.ko.xz': ['xz', '-d', '-q'],
  '.ko.zst': ['zstd', '-d', '-q', '--rm'],
  '.ko.gz': ['gzip', '-d', '-q'],
};

/**
 * Copies the virtio modules into the initramfs as plain `.ko` files and writes their load order. busybox's
 * insmod loads uncompressed modules only, so a compressed one (Debian 12's kernel ships them uncompressed
 * today; later kernels may not) is decompressed here, and every result is checked to be an ELF object.
 */
async function installModules(moduleRoot: string, dest: string, log: Log): Promise<void> {
  const found = await indexModules(moduleRoot);
  const suffixes = new Set<string>();
  for (const name of GUEST_MODULE_ORDER) {
    const source = found.get(name);
    if (!source) {
      throw new LockstepError('GUEST_IMAGE', `the kernel package has no module ${name} under ${moduleRoot}`, { module: name });
    }
    suffixes.add(source.suffix);
    const copied = path.join(dest, `${name}${source.suffix}`);
    await copyFile(source.file, copied, 0o644);
    const [tool, ...args] = DECOMPRESS[source.suffix] ?? [];
    if (tool !== undefined) await run(tool, [...args, copied]);
    await assertElf(path.join(dest, `${name}.ko`), `module ${name}`);
  }
  await fs.writeFile(path.join(dest, 'order'), GUEST_MODULE_ORDER.join('\n') + '\n');
  log(`guest image: ${GUEST_MODULE_ORDER.length} modules (shipped as ${[...suffixes].join(', ')}, stored as .ko)`);
}

/** Maps each module name under `moduleRoot` to its file and compression suffix. */
async function indexModules(moduleRoot: string): Promise<Map<string, { file: string; suffix: string }>> {
  const found = new Map<string, { file: string; suffix: string }>();
  const entries = await fs.readdir(moduleRoot, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    const m = /^(.+?)(\.ko(?:\.xz|\.zst|\.gz)?)$/.exec(entry.name);
    if (!entry.isFile() || m?.[1] === undefined || m[2] === undefined) continue;
    found.set(m[1], { file: path.join(entry.parentPath, entry.name), suffix: m[2] });
  }
  return found;
}

/** busybox from busybox-static: it must be static, for the initramfs has no libc. */
async function installBusybox(dest: string): Promise<void> {
  await copyFile(BUSYBOX_PATH, dest, 0o755);
  await assertStaticElf(dest, BUSYBOX_PATH);
}

async function compileRecordService(source: string, dest: string, log: Log): Promise<void> {
  const r = await run('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-o', dest, source]);
  if (r.stderr.trim() !== '') log(`guest image: gcc warnings for ${source}:\n${r.stderr.trim()}`);
  await assertStaticElf(dest, 'the record service');
}

/** Packs the tree as a newc cpio archive owned by root, gzipped (the kernel's RD_GZIP). */
async function packInitramfs(tree: string, work: string, dest: string): Promise<void> {
  const archive = path.join(work, 'initramfs.cpio');
  const list = await listTree(tree);
  await run('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--quiet', '-O', archive], { cwd: tree, input: list.join('\n') + '\n' });
  const packed = await promisify(gzip)(await fs.readFile(archive), { level: 9 });
  await fs.writeFile(dest, packed, { mode: 0o644 });
}

/** Every path in the tree, relative and sorted, so a directory always comes before what is inside it. */
async function listTree(tree: string): Promise<string[]> {
  const entries = await fs.readdir(tree, { recursive: true });
  return entries.map((e) => e.toString()).sort();
}

/* ------------------------------------------------------------------ ELF checks */

async function assertElf(file: string, what: string): Promise<Buffer> {
  const bytes = await fs.readFile(file);
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46) {
    throw new LockstepError('GUEST_IMAGE', `${what} (${file}) is not an ELF file`, { file });
  }
  return bytes;
}

/** A dynamically linked program has a PT_INTERP program header naming its loader; a static one has none. */
async function assertStaticElf(file: string, what: string): Promise<void> {
  const bytes = await assertElf(file, what);
  const PT_INTERP = 3;
  const phoff = Number(bytes.readBigUInt64LE(0x20));
  const phentsize = bytes.readUInt16LE(0x36);
  const phnum = bytes.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > bytes.length) break;
    if (bytes.readUInt32LE(at) === PT_INTERP) {
      throw new LockstepError('GUEST_IMAGE', `${what} (${file}) is dynamically linked; the initramfs has no libc`, { file });
    }
  }
}

/* ------------------------------------------------------------------ boot settings and disks */

export interface GuestNetworkOptions {
  /** The guest's address with its prefix length, e.g. `10.10.3.50/24`. */
  ip: string;
  /** The default route's gateway, e.g. `10.10.3.1`; none when omitted. */
  gateway?: string;
  hostname: string;
  /**
   * The guest's other NICs, each found by its MAC (`lockstep.nic=MAC@ADDR/N`): the guest's names for them
   * (eth1 …) follow the order its kernel probed them in, which nothing promises. `ip` is the first NIC's, eth0.
   */
  moreNics?: { mac: string; ip: string }[];
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * The kernel command line for a lab guest: serial console, quiet, a panic resets the VM at once (panic=-1)
 * rather than hanging it, and the settings the guest's /init reads (`lockstep.ip`, `lockstep.gw`, a
 * `lockstep.nic` per further NIC, `lockstep.hostname`). Throws `INVALID_ARGUMENT` for a malformed address,
 * MAC or name.
 */
export function guestKernelCmdline(opts: GuestNetworkOptions): string {
  checkCidr(opts.ip);
  for (const nic of opts.moreNics ?? []) {
    checkCidr(nic.ip);
    if (!GUEST_MAC.test(nic.mac)) throw new LockstepError('INVALID_ARGUMENT', `guest NIC MAC must be like 52:54:00:12:34:56 in lower case, not '${nic.mac}'`, { mac: nic.mac });
  }
  if (opts.gateway !== undefined && !IPV4.test(opts.gateway)) {
    throw new LockstepError('INVALID_ARGUMENT', `guest gateway must be an IPv4 address, not '${opts.gateway}'`, { gateway: opts.gateway });
  }
  if (!HOSTNAME.test(opts.hostname)) {
    throw new LockstepError('INVALID_ARGUMENT', `guest hostname must be letters, digits and inner dashes, not '${opts.hostname}'`, { hostname: opts.hostname });
  }
  const parts = ['console=ttyS0', 'quiet', 'panic=-1', `lockstep.ip=${opts.ip}`];
  if (opts.gateway !== undefined) parts.push(`lockstep.gw=${opts.gateway}`);
  for (const nic of opts.moreNics ?? []) parts.push(`lockstep.nic=${nic.mac}@${nic.ip}`);
  parts.push(`lockstep.hostname=${opts.hostname}`);
  return parts.join(' ');
}

const GUEST_MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function checkCidr(ip: string): void {
  const [addr, prefix, ...rest] = ip.split('/');
  const prefixLen = Number(prefix);
  if (addr === undefined || !IPV4.test(addr) || rest.length > 0 || !/^\d{1,2}$/.test(prefix ?? '') || prefixLen > 32) {
    throw new LockstepError('INVALID_ARGUMENT', `guest ip must be an IPv4 address with a prefix length (10.10.3.50/24), not '${ip}'`, { ip });
  }
}

