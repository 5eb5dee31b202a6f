// `make lab` runs the reference topology from etcd: fleetConfigs() splits
// each host's whole config into the file it runs from (host-local settings
// and policy_store) and the store's keys. Without a store: each host's view
// of those keys (the daemon's FleetView) with its file is its whole policy
// again, and the keys sit where fleet.md puts them.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fleetConfigs, HOSTS, loadConfig, writeVariantConfigs, type LabVariant } from '../lab/topology.js';
import { validatePolicy } from '../src/config/index.js';
import { FleetView, keyRoot } from '../src/fleet/view.js';
import type { Policy } from '../src/model/policy.js';
import { scratchDir } from './helpers/scratch.js';

const dir = scratchDir('lab-fleet-configs');
const STORE = { endpoints: ['unix:///run/x/m0:2379', 'unix:///run/x/m1:2379'], prefix: '/lab' };
const root = keyRoot(STORE.prefix);
const SECTIONS = ['customer_routes', 'lookup_records', 'vm_adapters', 'provider_addresses', 'provider_routes'] as const;
const sorted = (p: Policy, s: (typeof SECTIONS)[number]) => (p[s] as unknown[]).map((r) => JSON.stringify(r)).sort();

const VARIANTS: Record<string, LabVariant> = {
  'make lab (VLAN, QEMU guests)': { vlan: { host: 'host2', id: 100 }, qemuVms: { socketDir: '/run/nvgred-lab/x-vm' } },
  'dual stack': { dualStack: true },
};

describe('fleetConfigs', () => {
  for (const [name, variant] of Object.entries(VARIANTS)) {
    it(`${name}: each host's file and its keys make its whole policy again`, () => {
      const out = join(dir, name.replace(/\W+/g, '-'));
      const whole = writeVariantConfigs('nvt-', join(out, 'whole'), variant);
      const { files, keys } = fleetConfigs(whole, out, STORE);
      for (const host of HOSTS) {
        const file = loadConfig(files[host]);
        expect(Object.keys(file)).not.toContain('customer_routes');
        expect(Object.keys(file)).not.toContain('lookup_records');
        expect(Object.keys(file)).not.toContain('vm_adapters');
        expect(file['policy_store']).toEqual({ etcd: { endpoints: STORE.endpoints, prefix: STORE.prefix } });
        const view = new FleetView(host, validatePolicy(file));
        for (const { key, value } of keys) view.set(key.slice(root.length), value);
        expect([...view.errors]).toEqual([]);
        const want = validatePolicy(loadConfig(whole[host]));
        for (const s of SECTIONS) expect(sorted(view.policy(), s), `${host} ${s}`).toEqual(sorted(want, s));
      }
    });
  }

  it("puts the routes and the records every host has alike fleet-wide, a host's own .1 record and adapters under hosts/<host>/", () => {
    const whole = writeVariantConfigs('nvt-', join(dir, 'where', 'whole'), {});
    const at = new Map(fleetConfigs(whole, join(dir, 'where'), STORE).keys.map((k) => [k.key.slice(root.length), JSON.parse(k.value)]));
    expect([...at.keys()].filter((k) => k.startsWith('customer_routes/'))).toHaveLength(4);
    expect(at.get('lookup_records/6000/10.0.1.103')).toMatchObject({ provider_address: '192.168.0.33' });
    expect(at.has('lookup_records/6000/10.0.1.1')).toBe(false);
    expect(at.get('hosts/host1/lookup_records/6000/10.0.1.1')).toMatchObject({ provider_address: '192.168.0.22', mac: '60:00:60:00:01:00' });
    expect(at.get('hosts/host2/lookup_records/6000/10.0.1.1')).toMatchObject({ provider_address: '192.168.0.33', mac: '60:00:60:00:02:00' });
    expect([...at.keys()].filter((k) => k.startsWith('hosts/host1/vm_adapters/')).sort()).toEqual(['contoso1', 'contoso2', 'fabrikam1', 'fabrikam2'].map((a) => `hosts/host1/vm_adapters/${a}`));
    expect(at.get('hosts/gwhost/vm_adapters/mtgw')).toMatchObject({ netns: 'nvt-mtgw' });
  });

  it('refuses customer routes that differ between hosts', () => {
    const whole = writeVariantConfigs('nvt-', join(dir, 'differ', 'whole'), {}, {
      edit: (host, cfg) => {
        if (host === 'gwhost') (cfg['customer_routes'] as Array<Record<string, unknown>>).pop();
      },
    });
    expect(() => fleetConfigs(whole, join(dir, 'differ'), STORE)).toThrow(/customer route customer_routes\/7000\/10\.0\.1\.0\/24 differs between hosts \(host1, host2\)/);
  });
});
