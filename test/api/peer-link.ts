/**
 * A real peer for the API harness's host1: host2's side of the host reports over a real A-Link on loopback
 * (TLS with the pair CA's certificates, as lockstepd's), host2's networks read from this machine's
 * interfaces as its lockstepd reads its own (loopback as its A-Link and management network, no business
 * interface) and the health components it is given. Pass `peerReports` to `startHarness`; `cut()` closes
 * host2's A-Link, as a peer that goes away.
 */
import type { HealthSnapshot } from '../../src/core/types.js';
import { HostNetworks, type NetworkConfig } from '../../src/daemon/networks.js';
import { PeerReports } from '../../src/daemon/peer-report.js';
import { LOOPBACK, Recorder, loopbackPair, pairCerts } from '../alink/helpers.js';
import type { Cleanup } from '../support/cleanup.js';

export interface PeerLink {
  /** For `startHarness`'s option: host1's asker over the A-Link, answering host2's requests with `networks`. */
  peerReports: (networks: HostNetworks) => PeerReports;
  /** host2's networks, as it reports them. */
  networks: HostNetworks;
  /** Closes host2's A-Link and waits until host1 has seen its path go down. */
  cut(): Promise<void>;
}

export async function startPeerLink(cleanup: Cleanup, health: HealthSnapshot | null): Promise<PeerLink> {
  const certs = await pairCerts('pair-api');
  cleanup.add(() => certs.cleanup());
  const pair = await loopbackPair(certs, ['alink1']);
  cleanup.add(() => pair.close());
  await new Recorder(pair.host1, 'path-up').some(() => true, 5000, 'host1 alink1 up');
  const config: NetworkConfig = {
    alink: [{ name: 'alink1', local: LOOPBACK, peer: LOOPBACK, port: 0 } as NetworkConfig['alink'][number]],
    mgmtInterface: 'lo',
    businessInterface: 'nobiz-host2',
    businessBridge: 'nobiz-host2',
  };
  const networks = new HostNetworks({ host: 'host2', config, alink: () => pair.host2.status(), health: () => null });
  const host2 = new PeerReports({ self: 'host2', peer: 'host1', link: () => pair.host2, own: async () => ({ networks: await networks.list(), health }), log: () => {} });
  cleanup.add(() => host2.close());
  pair.host2.on('daemon-message', (m) => host2.handle(m));
  return {
    networks,
    peerReports: (own) => {
      const host1 = new PeerReports({ self: 'host1', peer: 'host2', link: () => pair.host1, own: async () => ({ networks: await own.list(), health: null }), log: () => {} });
      pair.host1.on('daemon-message', (m) => host1.handle(m));
      pair.host1.on('daemon-invalid', (kind, id, reason) => host1.invalid(kind, id, reason));
      return host1;
    },
    cut: async () => {
      const down = new Recorder(pair.host1, 'path-down');
      await pair.host2.close();
      await down.some(() => true, 5000, 'host1 alink1 down');
    },
  };
}
