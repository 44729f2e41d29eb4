/**
 * Each lab host's disk: an ext4 file system in an image file, loop-mounted as the host's data directory
 * (its VM disks, state, certificates, logs). It makes two faults honest:
 * - `power`: the host's disk is unmounted, so nothing can quietly read a dead host's files;
 * - `disk`: the file system is shut down (`xfs_io -x -c 'shutdown -f'`, the FS_IOC_SHUTDOWN ioctl that
 *   xfstests uses to simulate a dying disk): every read and write on it fails with EIO, as on a failed disk.
 * Repair is what a host does after a disk is fixed: unmount, check, mount again with its data.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { LockstepError } from '../util/errors.js';
import { run } from '../util/exec.js';

export async function createHostDisk(image: string, sizeMiB: number): Promise<void> {
  await rm(image, { force: true });
  await run('truncate', ['-s', `${sizeMiB}M`, image]);
  await run('mkfs.ext4', ['-q', '-F', '-L', 'lockstep-host', image]);
}

export async function isMounted(mountpoint: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  // Field 5 is the mount point, with spaces and backslashes escaped as octal.
  return info.split('\n').some((line) => unescapeMountPath(line.split(' ')[4] ?? '') === mountpoint);
}

/**
 * Makes `dir` a shared mount point, so that mounting and unmounting a host disk beneath it reaches every
 * mount namespace copied from this one (a tool that runs programs with `ip netns exec` makes such copies).
 * Without it, a namespace created earlier would keep a powered-off host's file system alive and readable.
 */
export async function ensureSharedMount(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (!(await isMounted(dir))) await run('mount', ['--bind', dir, dir]);
  await run('mount', ['--make-shared', dir]);
}

export async function mountHostDisk(image: string, mountpoint: string): Promise<void> {
  await mkdir(mountpoint, { recursive: true });
  if (await isMounted(mountpoint)) return;
  await run('mount', ['-o', 'loop', image, mountpoint]);
}

/** Unmounts; a lazy unmount when something still holds it (it is detached now and released when freed). */
export async function unmountHostDisk(mountpoint: string): Promise<void> {
  if (!(await isMounted(mountpoint))) return;
  const r = await run('umount', [mountpoint], { allowFailure: true });
  if (r.code !== 0) await run('umount', ['-l', mountpoint]);
}

export async function shutdownHostDisk(mountpoint: string): Promise<void> {
  await run('xfs_io', ['-x', '-c', 'shutdown -f', mountpoint]);
}

/** After a `disk` fault: unmount, replay and check the file system, mount it again. */
export async function repairHostDisk(image: string, mountpoint: string): Promise<void> {
  await unmountHostDisk(mountpoint);
  // e2fsck exits 1 or 2 when it fixed something: that is success here.
  const r = await run('e2fsck', ['-f', '-y', image], { allowFailure: true });
  if (r.code > 2) {
    throw new LockstepError('COMMAND_FAILED', `e2fsck ${image} failed (exit ${r.code}): ${r.stderr || r.stdout}`, { image, exitCode: r.code });
  }
  await mountHostDisk(image, mountpoint);
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
