// A real nvgred whose policy is in etcd (policy_store): its file carries only
// host-local settings and its PA; the fleet's routes and records and its VM
// adapter come from the store. Local API writes go to the store; /v1/fleet
// and the nvgre_policy_store_* metrics say what runs; with the store down
// forwarding policy stays, a restart without the store still runs it (from
// state_dir), and the store back is resynced.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, metricSum, scrapeMetrics } from '../lab/netns.js';
import { EtcdCluster } from '../lab/etcd.js';
import type { Etcd } from '../src/fleet/etcd.js';
import { packageRoot } from '../src/native.js';
import { createHostEnv, RD1, TestDaemon, type HostEnv } from './helpers/daemon.js';
import { until } from './helpers/until.js';

const nvgrectl = (...args: string[]) => execFileSync(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), '-s', env.socket, ...args], { encoding: 'utf8' });

const J = JSON.stringify;
const ROOT = '/lab/v1/';
let lab: Lab;
let env: HostEnv;
let cluster: EtcdCluster;
let etcd: Etcd;
let daemon: TestDaemon;

const cas = async () => ((await daemon.api.request('GET', '/v1/lookup-records')).body.lookup_records as Array<{ customer_address: string }>).map((r) => r.customer_address).sort();

beforeAll(async () => {
  lab = new Lab(`nvfl${process.pid % 10000}-`);
  env = await createHostEnv(lab, 'nvgred-fleet-lab-');
  cluster = await EtcdCluster.start({ ns: `nvfl-l${process.pid}`, dir: join(env.dir, 'etcd') });
  etcd = cluster.client();
  const rec = (ca: string, mac: string, pa: string) => J({ customer_address: ca, vsid: 6000, mac, provider_address: pa, rule: 'encap', type: 'static' });
  await etcd.txn(
    [],
    [
      { put: { key: `${ROOT}customer_routes/6000/10.0.1.0/24`, value: J({ routing_domain: RD1, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 }) } },
      { put: { key: `${ROOT}lookup_records/6000/10.0.1.101`, value: rec('10.0.1.101', '60:00:60:00:01:01', '192.168.0.22') } },
      { put: { key: `${ROOT}lookup_records/6000/10.0.1.103`, value: rec('10.0.1.103', '60:00:60:00:02:03', '192.168.0.33') } },
      { put: { key: `${ROOT}hosts/host1/vm_adapters/vm1`, value: J({ name: 'vm1', mac: '60:00:60:00:01:01', vsid: 6000, netns: env.vm }) } },
    ],
  );
  const config = `host: { name: host1 }
provider_addresses:
  - { address: 192.168.0.22, prefix_length: 24, interface: eth1 }
policy_store: { etcd: { endpoints: ["${cluster.endpoint(0)}"], prefix: /lab } }
state_dir: ${env.stateDir}
api: { socket: ${env.socket} }
`;
  daemon = new TestDaemon(env, env.writeConfig(config));
  await daemon.start();
}, 120_000);

afterAll(async () => {
  if (daemon?.proc?.running) await daemon.stop();
  etcd?.close();
  await cluster?.stop();
  await lab?.teardown();
  env?.cleanup();
});

describe('nvgred with policy_store', () => {
  it("runs the store's records and its VM adapter; its status and metrics say the revision", async () => {
    await until('the records', async () => (await cas()).length === 2);
    const adapters = (await daemon.api.request('GET', '/v1/vm-adapters')).body.vm_adapters as Array<{ name: string }>;
    expect(adapters.map((a) => a.name)).toEqual(['vm1']);
    const f = await until('the status key', async () => {
      const b = (await daemon.api.request('GET', '/v1/fleet')).body;
      return b.hosts?.length ? b : undefined;
    });
    expect(f).toMatchObject({ host: 'host1', up: true, status: { error: null } });
    expect(f.hosts[0]).toMatchObject({ host: 'host1', revision: f.status.revision });
    expect(nvgrectl('fleet', 'show')).toBe(`store up (this host: host1)\nhost host1 revision ${f.status.revision} applied ${f.hosts[0].applied_at}\n`);
    const m = await scrapeMetrics(env.host);
    expect(metricSum(m, 'nvgre_policy_store_up')).toBe(1);
    expect(metricSum(m, 'nvgre_policy_store_revision')).toBe(f.status.revision);
  });

  it('writes a record made through the local API to the store, and answers once it runs', async () => {
    const body = { customer_address: '10.0.1.104', vsid: 6000, mac: '60:00:60:00:02:04', provider_address: '192.168.0.33' };
    const res = await daemon.api.request('POST', '/v1/lookup-records', body);
    expect(res.status).toBe(201);
    expect(await cas()).toContain('10.0.1.104');
    expect(JSON.parse((await etcd.get(`${ROOT}lookup_records/6000/10.0.1.104`))!.value)).toMatchObject(body);
    const bad = await daemon.api.request('PUT', '/v1/policy', {});
    expect(bad.status).toBe(409);
  });

  it('nvgrectl fleet migrate moves a VM adapter to another host in one transaction', async () => {
    await etcd.txn(
      [],
      [
        { put: { key: `${ROOT}hosts/host2/provider_addresses/192.168.0.33`, value: J({ address: '192.168.0.33', prefix_length: 24, interface: 'eth1', vlan_id: 0 }) } },
        { put: { key: `${ROOT}hosts/host2/vm_adapters/vm3`, value: J({ name: 'vm3', mac: '60:00:60:00:02:03', vsid: 6000, mode: 'attach' }) } },
      ],
    );
    // host1's PA is in its file, which the store does not see: named.
    expect(() => nvgrectl('fleet', 'migrate', 'vm3', 'to', 'host1')).toThrow(/host host1 has no provider address in the store/);
    const out = nvgrectl('fleet', 'migrate', 'vm3', 'to', 'host1', 'pa', '192.168.0.22');
    expect(out).toMatch(/^vm3 moved from host2 to host1 \(pa 192\.168\.0\.22, 1 lookup record\) at revision \d+\n$/);
    await until('vm3 here', async () => ((await daemon.api.request('GET', '/v1/vm-adapters')).body.vm_adapters as Array<{ name: string }>).some((a) => a.name === 'vm3'));
    expect((await daemon.api.request('GET', '/v1/lookup-records/6000/10.0.1.103')).body).toMatchObject({ provider_address: '192.168.0.22' });
    // Back, so the rest runs as before.
    nvgrectl('fleet', 'migrate', 'vm3', 'to', 'host2');
    await until('vm3 gone', async () => !((await daemon.api.request('GET', '/v1/vm-adapters')).body.vm_adapters as Array<{ name: string }>).some((a) => a.name === 'vm3'));
  });

  it('store down: forwarding policy stays, a restart runs it from state_dir; store back: resynced', async () => {
    await cluster.killMember(0);
    await until('down', async () => !(await daemon.api.request('GET', '/v1/fleet')).body.up);
    expect(await cas()).toEqual(['10.0.1.101', '10.0.1.103', '10.0.1.104']);
    await daemon.stop();
    await daemon.start();
    expect(await cas()).toEqual(['10.0.1.101', '10.0.1.103', '10.0.1.104']);
    expect((await daemon.api.request('GET', '/v1/vm-adapters')).body.vm_adapters).toHaveLength(1);
    cluster.startMember(0);
    await cluster.waitHealthy();
    await etcd.delete(`${ROOT}lookup_records/6000/10.0.1.103`);
    await until('resynced', async () => !(await cas()).includes('10.0.1.103'), 30_000);
    expect((await daemon.api.request('GET', '/v1/fleet')).body.up).toBe(true);
  });
});
