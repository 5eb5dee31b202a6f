// The fleet lab (fleet.md), `node dist/lab/fleet.js` or `make lab-fleet`:
// two hosts whose files carry only host-local settings, a three-member etcd
// cluster (lab/etcd.ts) holding everything else: their PAs, VM adapters, the
// route and the lookup records. Checks: VM1 → VM2 through NVGRE; a VM
// migrates by one transaction (its adapter moves to the other host, its
// record gets that host's PA) and is reached there; a member is killed and
// the fleet keeps applying; the whole store stops and forwarding goes on,
// also across a daemon's restart. Everything is removed at the end.

import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Lab, installSignalTeardown, linkExists, ping, repoRoot, waitFor, type LabProcess } from './netns.js';
import { EtcdCluster } from './etcd.js';
import type { Etcd } from '../src/fleet/etcd.js';

const RD = '{12345678-1000-2000-3000-123456780050}';
const ROOT = '/lab/v1/';
const J = JSON.stringify;
const PA = { host1: '192.168.50.1', host2: '192.168.50.2' } as const;
type Host = keyof typeof PA;
const VMS = {
  vm1: { ca: '10.0.1.11', mac: '60:00:60:00:50:11' },
  vm2: { ca: '10.0.1.12', mac: '60:00:60:00:50:12' },
} as const;

const record = (vm: keyof typeof VMS, host: Host) => ({ customer_address: VMS[vm].ca, vsid: 6000, mac: VMS[vm].mac, provider_address: PA[host], rule: 'encap', type: 'static' });

export async function runFleetLab(prefix: string, outDir: string): Promise<{ passed: number; failed: string[] }> {
  const out = join(outDir, 'fleet');
  mkdirSync(out, { recursive: true });
  await Lab.cleanStale(prefix);
  const lab = new Lab(prefix);
  const uninstall = installSignalTeardown(lab);
  let cluster: EtcdCluster | undefined;
  let passed = 0;
  const failed: string[] = [];
  const check = async (what: string, fn: () => Promise<string | void>) => {
    try {
      const detail = await fn();
      passed++;
      console.log(`  ok   ${what}${detail ? `: ${detail}` : ''}`);
    } catch (err) {
      failed.push(what);
      console.log(`  FAIL ${what}: ${(err as Error).message}`);
    }
  };
  try {
    cluster = await EtcdCluster.start({ ns: `${prefix}etcd`, dir: join(out, 'etcd'), members: 3 });
    const etcd: Etcd = cluster.client();
    for (const n of ['host1', 'host2', 'vm1', 'vm2', 'vm2m']) await lab.addNamespace(n);
    await lab.veth('host1', 'eth1', 'host2', 'eth1');
    await lab.up('host1', 'eth1');
    await lab.up('host2', 'eth1');
    const adapter = (vm: keyof typeof VMS, netns: string) => J({ name: vm, mac: VMS[vm].mac, vsid: 6000, netns });
    await etcd.txn(
      [],
      [
        { put: { key: `${ROOT}customer_routes/6000/10.0.1.0/24`, value: J({ routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 }) } },
        ...(['host1', 'host2'] as const).map((h) => ({ put: { key: `${ROOT}hosts/${h}/provider_addresses/${PA[h]}`, value: J({ address: PA[h], prefix_length: 24, interface: 'eth1', vlan_id: 0 }) } })),
        { put: { key: `${ROOT}hosts/host1/vm_adapters/vm1`, value: adapter('vm1', lab.ns('vm1')) } },
        { put: { key: `${ROOT}hosts/host2/vm_adapters/vm2`, value: adapter('vm2', lab.ns('vm2')) } },
        { put: { key: `${ROOT}lookup_records/6000/${VMS.vm1.ca}`, value: J(record('vm1', 'host1')) } },
        { put: { key: `${ROOT}lookup_records/6000/${VMS.vm2.ca}`, value: J(record('vm2', 'host2')) } },
      ],
    );
    const daemons = new Map<Host, LabProcess>();
    const start = async (h: Host) => {
      const config = join(out, `${h}.yaml`);
      // Host-local settings only: everything else is the store's.
      writeFileSync(config, J({ host: { name: h }, policy_store: { etcd: { endpoints: cluster!.endpoints, prefix: '/lab' } }, state_dir: join(out, `${h}.state`), api: { socket: join(out, `${h}.sock`) } }));
      const p = await lab.spawn(h, [process.execPath, join(repoRoot(), 'dist/src/daemon/main.js'), '--config', config], { logFile: join(out, `${h}.log`) });
      await p.waitForLine((l) => l.includes('"msg":"ready"'), 30_000, { what: `${h} ready` });
      daemons.set(h, p);
    };
    const vmUp = async (vm: keyof typeof VMS, ns: string) => {
      await waitFor(() => linkExists(lab.ns(ns), vm), 20_000, { what: `${vm} in ${ns}` });
      await lab.addr(ns, vm, `${VMS[vm].ca}/24`);
      await lab.up(ns, vm);
    };
    const reach = async (from: string, dst: string) => {
      const r = await waitFor(async () => {
        const p = await ping(lab.ns(from), dst, { count: 3 });
        return p.received > 0 ? p : undefined;
      }, 20_000, { what: `ping ${from} → ${dst}` });
      return `${r.received}/${r.transmitted} replies`;
    };

    await check('two daemons whose files hold only host-local settings get their PAs, adapters and records from etcd', async () => {
      await start('host1');
      await start('host2');
      await vmUp('vm1', 'vm1');
      await vmUp('vm2', 'vm2');
    });
    await check('VM1 (host1) → VM2 (host2) through NVGRE', () => reach('vm1', VMS.vm2.ca));

    await check('VM2 migrates to host1 in one transaction; host2 removes its adapter; VM1 reaches it on host1', async () => {
      const { succeeded, revision } = await etcd.txn(
        [],
        [
          { delete: { key: `${ROOT}hosts/host2/vm_adapters/vm2` } },
          { put: { key: `${ROOT}hosts/host1/vm_adapters/vm2`, value: adapter('vm2', lab.ns('vm2m')) } },
          { put: { key: `${ROOT}lookup_records/6000/${VMS.vm2.ca}`, value: J(record('vm2', 'host1')) } },
        ],
      );
      if (!succeeded) throw new Error('the transaction failed');
      await waitFor(async () => !(await linkExists(lab.ns('vm2'), 'vm2')), 20_000, { what: "host2's vm2 gone" });
      await vmUp('vm2', 'vm2m');
      return `revision ${revision}; ${await reach('vm1', VMS.vm2.ca)}`;
    });

    await check('a member killed: the fleet keeps applying (a new record reaches both hosts)', async () => {
      await cluster!.killMember(0);
      await etcd.put(`${ROOT}lookup_records/6000/10.0.1.99`, J({ customer_address: '10.0.1.99', vsid: 6000, mac: '60:00:60:00:50:99', provider_address: PA.host2, rule: 'encap', type: 'static' }));
      for (const h of ['host1', 'host2'] as const) {
        await waitFor(async () => (await getStatus(join(out, `${h}.sock`), '/v1/lookup-records/6000/10.0.1.99')) === 200, 20_000, { what: `10.0.1.99 on ${h}` });
      }
      return 'members m1, m2 serve';
    });

    await check('the whole store stopped: forwarding goes on, also across a restart of host1', async () => {
      await cluster!.stop();
      await reach('vm1', VMS.vm2.ca);
      const p = daemons.get('host1')!;
      await lab.stop(p);
      await start('host1');
      await vmUp('vm1', 'vm1');
      await vmUp('vm2', 'vm2m');
      return await reach('vm1', VMS.vm2.ca);
    });
    etcd.close();
    return { passed, failed };
  } finally {
    await lab.teardown();
    await cluster?.stop();
    uninstall();
  }
}

/** GET `path` on a daemon's API socket: its HTTP status (0: no answer). */
function getStatus(socket: string, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runFleetLab('nvfl-lab-', join(repoRoot(), 'lab', 'out')).then(
    (r) => {
      console.log(`fleet lab: ${r.passed} checks passed, ${r.failed.length} failed`);
      process.exit(r.failed.length ? 1 : 0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
