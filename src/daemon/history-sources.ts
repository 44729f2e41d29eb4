/**
 * What lockstepd's history sampler (`src/history/sampler.ts`) reads from the running daemon: the VMs whose
 * QEMU runs here (their pids, from the runner; their cores, memory and disk size, from the pair's records),
 * the storage groups' usage and each volume's allocation (as the storage routes compute them,
 * `volumes.ts`), and the networks the config names: management and business by interface, each A-Link
 * path by its local address (the interface holding that address now, in the daemon's namespace).
 */
import os from 'node:os';
import type { SampledNetwork, SampledVm, SamplerSources, StorageSample } from '../history/sampler.js';
import type { DaemonConfig } from './config.js';
import type { ApiContext } from './api.js';
import { parseVmHardware } from './vm-definition.js';
import { storageGroupStatuses, volumeStatuses, type VolumeContext } from './volumes.js';

const MIB = 1024 * 1024;

/** The parts of the daemon the sources read (the API's context has them; the sampler is made before it). */
export type HistoryDaemon = Pick<ApiContext, 'host' | 'storageGroups' | 'driver' | 'running' | 'health'>;

export function historySources(ctx: HistoryDaemon, config: Pick<DaemonConfig, 'mgmtInterface' | 'businessInterface' | 'alink'>): SamplerSources {
  return {
    storageGroups: ctx.storageGroups.map((g) => g.name),
    networks: networksOf(config),
    vms: () => sampledVms(ctx),
    storage: async (): Promise<StorageSample> => {
      const vc: VolumeContext = { host: ctx.host, storageGroups: ctx.storageGroups, core: ctx.driver()?.view() ?? null, running: ctx.running(), health: ctx.health() };
      const [groups, volumes] = await Promise.all([storageGroupStatuses(vc), volumeStatuses(vc)]);
      return {
        groups: groups.map((g) => ({ name: g.name, usedBytes: g.usedBytes, capacityBytes: g.capacityBytes, error: g.error })),
        volumes: volumes.map((v) => ({ vm: v.vm, allocatedBytes: v.allocatedBytes })),
      };
    },
  };
}

/** The config's networks: management (when configured), business, and each A-Link path. */
export function networksOf(config: Pick<DaemonConfig, 'mgmtInterface' | 'businessInterface' | 'alink'>): SampledNetwork[] {
  const fixed = (name: string, ifname: string): SampledNetwork => ({ name, interface: () => ({ ifname }) });
  return [
    ...(config.mgmtInterface !== null ? [fixed('mgmt', config.mgmtInterface)] : []),
    fixed('business', config.businessInterface),
    ...config.alink.map((p): SampledNetwork => ({ name: p.name, interface: () => interfaceWithAddress(p.local) })),
  ];
}

/** The interface that holds `address` now (getifaddrs: a system call, no file read), or why none does. */
export function interfaceWithAddress(address: string): { ifname: string } | { error: string } {
  for (const [ifname, addresses] of Object.entries(os.networkInterfaces())) {
    if (addresses?.some((a) => a.address === address)) return { ifname };
  }
  return { error: `no interface has the address ${address}` };
}

/** The VMs whose QEMU runs here, with their hardware's sizes (null where the record cannot be read here). */
function sampledVms(ctx: HistoryDaemon): SampledVm[] {
  const records = new Map((ctx.driver()?.view().vms ?? []).map((v) => [v.name, v.hardware]));
  return ctx.running().flatMap((r): SampledVm[] => {
    if (r.pid === null) return [];
    let sizes: Pick<SampledVm, 'vcpus' | 'memoryBytes' | 'diskBytes'> = { vcpus: null, memoryBytes: null, diskBytes: null };
    try {
      const hw = parseVmHardware(records.get(r.name));
      sizes = { vcpus: hw.vcpus, memoryBytes: hw.memoryMiB * MIB, diskBytes: hw.disks.reduce((sum, d) => sum + d.sizeMiB * MIB, 0) };
    } catch {
      // A record this daemon cannot read (from a newer peer, say): its process is still measured, against no ceiling.
    }
    return [{ name: r.name, pid: r.pid, ...sizes }];
  });
}
