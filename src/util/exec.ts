/**
 * Running external programs (ip, qemu-img, apt-get …) with errors that say what failed and, when a program
 * is missing, which Debian package provides it.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { LockstepError } from './errors.js';

/** The Debian package that provides each external program Lockstep runs. */
export const PACKAGE_OF: Readonly<Record<string, string>> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-img': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  ip: 'iproute2',
  nft: 'nftables',
  busybox: 'busybox-static',
  cpio: 'cpio',
  gcc: 'gcc',
  'apt-get': 'apt',
  'dpkg-deb': 'dpkg',
  'mkfs.ext4': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  xfs_io: 'xfsprogs',
  losetup: 'mount',
  mount: 'mount',
  umount: 'mount',
  ping: 'iputils-ping',
  nsenter: 'util-linux',
  unshare: 'util-linux',
  setpriv: 'util-linux',
  truncate: 'coreutils',
  openssl: 'openssl',
};

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface RunOptions {
  /** Input written to the program's standard input. */
  input?: string | Buffer;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Do not throw on a non-zero exit: return the code instead. */
  allowFailure?: boolean;
  /** Kill the program after this long. */
  timeoutMs?: number;
}

/** Runs `cmd args…` to completion and returns its output; throws `COMMAND_FAILED` or `MISSING_PREREQUISITE`. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] };
    const child = spawn(cmd, args, spawnOpts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT') reject(missingProgram(cmd, e));
      else reject(new LockstepError('COMMAND_FAILED', `${cmd}: ${e.message}`, { cmd, args }, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const result = {
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code: code ?? (signal ? 128 : 1),
      };
      if (result.code !== 0 && !opts.allowFailure) {
        const detail = result.stderr.trim() || result.stdout.trim() || (signal ? `killed by ${signal}` : '');
        reject(
          new LockstepError('COMMAND_FAILED', `${[cmd, ...args].join(' ')} failed (exit ${result.code}): ${detail}`, {
            cmd,
            args,
            exitCode: result.code,
            stderr: result.stderr,
          }),
        );
      } else {
        resolve(result);
      }
    });
    child.stdin!.on('error', () => {
      /* the program may exit before reading its input; its exit status tells the story */
    });
    child.stdin!.end(opts.input ?? '');
  });
}

export function missingProgram(cmd: string, cause?: unknown): LockstepError {
  const pkg = PACKAGE_OF[cmd];
  const hint = pkg ? `install the Debian package '${pkg}' (or run \`npm run setup\`)` : 'install it (or run `npm run setup`)';
  return new LockstepError('MISSING_PREREQUISITE', `'${cmd}' is not installed: ${hint}`, { cmd, package: pkg }, { cause });
}

/**
 * The command line that runs `cmd args…` inside a named network namespace: `nsenter --net=/run/netns/NS`.
 * Not `ip netns exec`: that also makes a private mount namespace (remounting `/` as a slave, which fails
 * where `/` is not a mount point, and gives every such process its own copy of the mount table, keeping
 * unmounted file systems alive). nsenter execs the program in place, so the pid is the program's own.
 */
export function inNetns(netns: string, cmd: string, args: readonly string[] = []): [string, string[]] {
  return ['nsenter', [`--net=/run/netns/${netns}`, '--', cmd, ...args]];
}

/** Runs a program inside a network namespace. */
export function runIn(netns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [c, a] = inNetns(netns, cmd, args);
  return run(c, a, opts);
}
