/**
 * The lab's management API, its pure parts: each host's config turns it on at the host's management address
 * (and lockstepd accepts that config), and `lab up`/`lab status` print each host's URL with its first-run step.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { labHostConfig } from '../../src/lab/host-config.js';
import { parseDaemonConfig } from '../../src/daemon/config.js';
import { managementUrl } from '../../src/lab/topology.js';
import { renderManagement } from '../../src/cli/lab-command.js';
import type { LabStatus } from '../../src/lab/lab.js';

test("each lab host's lockstepd serves the management API on its management address", () => {
  for (const [host, address] of [['host1', '10.10.0.11'], ['host2', '10.10.0.12']] as const) {
    const raw = labHostConfig({
      host,
      labName: 't1',
      dataDir: `/lab/hosts/${host}`,
      apiSocket: `/lab/hosts/${host}/run/lockstepd.sock`,
      accel: 'tcg',
      pairSecret: 'a-pairing-secret-long-enough',
      quorumCaFile: (q) => `/lab/hosts/${host}/quorum/${q}-ca.crt`,
      quorumServers: ['quorum1', 'quorum2'],
    });
    const config = parseDaemonConfig(raw);
    assert.deepEqual(
      { address: config.managementApi?.address, port: config.managementApi?.port, certFile: config.managementApi?.certFile, keyFile: config.managementApi?.keyFile },
      { address, port: 7443, certFile: null, keyFile: null },
      'no certificate given: lockstepd makes a self-signed one',
    );
    assert.equal(managementUrl(host), `https://${address}:7443`);
  }
});

test("the status shows each host's API, its console and whether its first administrator is still to be made", () => {
  const host = (name: 'host1' | 'host2', setupNeeded: boolean | null) => ({ name, management: { url: managementUrl(name), setupNeeded } });
  const text = renderManagement({ hosts: [host('host1', true), host('host2', null)] } as unknown as LabStatus);
  const [head, h1, h2, note] = text.split('\n');
  assert.deepEqual([head, h1, h2].map((l) => l!.split(/\s{2,}/)), [
    ['MANAGEMENT API', 'URL', 'USERS'],
    ['host1', 'https://10.10.0.11:7443/api/v1', 'first run: npx lockstep user setup admin --host host1'],
    ['host2', 'https://10.10.0.12:7443/api/v1', 'no answer'],
  ]);
  assert.match(note!, /lab client -- curl -k https:\/\/10\.10\.0\.11:7443\/api\/openapi\.json/);
  assert.match(text.split('\n')[4]!, /^Availability Console: https:\/\/10\.10\.0\.11:7443\/ and https:\/\/10\.10\.0\.12:7443\/ /);
  assert.match(renderManagement({ hosts: [host('host1', false)] } as unknown as LabStatus), /host1 .* set up \(log in\)/);
});
