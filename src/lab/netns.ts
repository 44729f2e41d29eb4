/** Network namespaces, veths and bridges through iproute2: the lab's wiring, one small verb each. */
import { run, runIn } from '../util/exec.js';
import { waitGone } from '../util/proc.js';

export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['-json', 'netns', 'list']);
  if (stdout.trim() === '') return [];
  return (JSON.parse(stdout) as { name: string }[]).map((n) => n.name);
}

export async function namespaceExists(ns: string): Promise<boolean> {
  return (await listNamespaces()).includes(ns);
}

/** Creates the namespace (if missing) with its loopback up. */
export async function ensureNamespace(ns: string): Promise<void> {
  if (!(await namespaceExists(ns))) await run('ip', ['netns', 'add', ns]);
  await runIn(ns, 'ip', ['link', 'set', 'lo', 'up']);
}

export async function deleteNamespace(ns: string): Promise<void> {
  await run('ip', ['netns', 'delete', ns], { allowFailure: true });
}

export async function linkExists(ns: string, ifname: string): Promise<boolean> {
  const r = await runIn(ns, 'ip', ['link', 'show', 'dev', ifname], { allowFailure: true });
  return r.code === 0;
}

/** A veth pair whose two ends live in two namespaces; skipped when the first end exists already. */
export async function ensureVeth(nsA: string, ifA: string, nsB: string, ifB: string): Promise<void> {
  if (await linkExists(nsA, ifA)) return;
  await run('ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
}

export async function ensureBridge(ns: string, bridge: string): Promise<void> {
  if (!(await linkExists(ns, bridge))) {
    // No STP and no forwarding delay: the lab's switches forward from the first frame.
    await runIn(ns, 'ip', ['link', 'add', bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  }
  await runIn(ns, 'ip', ['link', 'set', bridge, 'up']);
}

export async function setMaster(ns: string, ifname: string, bridge: string | null): Promise<void> {
  await runIn(ns, 'ip', ['link', 'set', ifname, ...(bridge === null ? ['nomaster'] : ['master', bridge])]);
}

export async function setLinkUp(ns: string, ifname: string, up: boolean): Promise<void> {
  await runIn(ns, 'ip', ['link', 'set', ifname, up ? 'up' : 'down']);
}

export async function ensureAddress(ns: string, ifname: string, cidr: string): Promise<void> {
  const { stdout } = await runIn(ns, 'ip', ['-json', 'addr', 'show', 'dev', ifname]);
  const have = (JSON.parse(stdout) as { addr_info?: { local: string; prefixlen: number }[] }[]).flatMap((l) => l.addr_info ?? []);
  if (have.some((a) => `${a.local}/${a.prefixlen}` === cidr)) return;
  await runIn(ns, 'ip', ['addr', 'add', cidr, 'dev', ifname]);
}

/** Interface name → whether it is administratively up and has carrier. */
export async function linkStatus(ns: string): Promise<Map<string, { up: boolean; carrier: boolean }>> {
  const { stdout } = await runIn(ns, 'ip', ['-json', 'link', 'show']);
  const links = JSON.parse(stdout) as { ifname: string; flags: string[] }[];
  return new Map(links.map((l) => [l.ifname, { up: l.flags.includes('UP'), carrier: l.flags.includes('LOWER_UP') }]));
}

/** Pids of every process whose network namespace is `ns`. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns], { allowFailure: true });
  if (r.code !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => s !== '')
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** Kills every process in the namespace at once (SIGKILL): a power loss, as far as software can tell. */
export async function killNamespace(ns: string): Promise<number[]> {
  const pids = await namespacePids(ns);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* exited on its own meanwhile */
    }
  }
  for (const pid of pids) await waitGone(pid, 5000);
  return pids;
}
