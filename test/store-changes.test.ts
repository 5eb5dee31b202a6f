// PolicyStore.applyChanges, the one mutation path (the fleet's watcher calls
// it too): all or nothing, refused with the errors the whole document's
// validation gives (the API's), each record normalized and valid on its own;
// what is accepted reaches the dataplane and the state file. And a document
// that reorders the records runs in its order.

import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { checkPolicy, validatePolicy } from '../src/config/index.js';
import type { HostDataplane } from '../src/daemon/host.js';
import { StateFile } from '../src/daemon/state.js';
import { PolicyStore } from '../src/daemon/store.js';
import type { PolicyChange } from '../src/model/change.js';
import type { LookupRecord, Policy } from '../src/model/policy.js';
import { FakeHost } from './helpers/fakes.js';
import { scratchDir } from './helpers/scratch.js';

const RD = '{12345678-1000-2000-3000-123456780001}';
const dir = scratchDir('store-changes');
let n = 0;

const base = {
  provider_addresses: [{ address: '192.168.0.22', prefix_length: 24, interface: 'eth1' }],
  customer_routes: [
    { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' },
    { routing_domain: RD, vsid: 6001, destination_prefix: '10.0.2.0/24', next_hop: '0.0.0.0' },
  ],
  lookup_records: [
    { customer_address: '10.0.1.5', vsid: 6000, mac: '60:00:00:00:00:05', provider_address: '192.168.0.30' },
    { customer_address: '10.0.1.6', vsid: 6000, mac: '60:00:00:00:00:06', provider_address: '192.168.0.30' },
  ],
};

function rig() {
  const policy = validatePolicy(base);
  const host = new FakeHost(policy);
  const state = new StateFile(join(dir, `state-${n++}`));
  const store = new PolicyStore(host as unknown as HostDataplane, state, policy, '/nonexistent', pino({ level: 'silent' }));
  store.saveState();
  return { store, applied: host.applied, state };
}

const rec = (ca: string, mac: string, vsid = 6000): LookupRecord => ({ customer_address: ca, vsid, mac, provider_address: '192.168.0.30', rule: 'encap', type: 'static' });
const put = (record: LookupRecord): PolicyChange => ({ op: 'put', section: 'lookup_records', record });

describe('PolicyStore.applyChanges', () => {
  it('applies a batch as one change: dataplane once, state saved, counted', async () => {
    const r = rig();
    const out = await r.store.applyChanges([put(rec('10.0.1.7', '60:00:00:00:00:07')), { op: 'delete', section: 'lookup_records', record: r.store.policy.lookup_records[0]! }], 'fleet');
    expect(out.counts.lookup_records).toEqual({ added: 1, removed: 1, changed: 0 });
    expect(r.applied.length).toBe(1);
    expect(r.store.policy.lookup_records.map((x) => x.customer_address)).toEqual(['10.0.1.6', '10.0.1.7']);
    expect((new StateFile(r.state.dir).load()!.policy as Policy).lookup_records).toEqual(r.store.policy.lookup_records);
  });

  it("all or nothing: one conflicting record refuses the batch with the whole document's errors", async () => {
    const r = rig();
    const before = JSON.stringify(r.store.policy);
    // The same MAC in another VSID of the routing domain.
    const batch = [put(rec('10.0.1.7', '60:00:00:00:00:07')), put(rec('10.0.2.9', '60:00:00:00:00:05', 6001))];
    const whole = checkPolicy({ ...base, lookup_records: [...base.lookup_records, ...batch.map((c) => c.record)] }).errors;
    expect(whole.length).toBe(1);
    await expect(r.store.applyChanges(batch, 'fleet')).rejects.toMatchObject({ code: 'NVGRE_ERR_CONFIG', details: whole });
    expect(JSON.stringify(r.store.policy)).toBe(before);
    expect(r.applied.length).toBe(0);
  });

  it('normalizes each record, and refuses one that is not valid on its own as the API does', async () => {
    const r = rig();
    await r.store.applyChanges([put({ ...rec('10.0.1.8', '60-00-00-00-00-08') })], 'fleet');
    expect(r.store.policy.lookup_records.at(-1)!.mac).toBe('60:00:00:00:00:08');
    await expect(r.store.applyChanges([put({ ...rec('10.0.1.9', 'nope') })], 'fleet')).rejects.toMatchObject({
      code: 'NVGRE_ERR_CONFIG',
      details: [expect.objectContaining({ path: 'lookup_record.mac' })],
    });
  });

  it('a document that reorders the records runs in its order', async () => {
    const r = rig();
    const reversed = { ...base, lookup_records: [...base.lookup_records].reverse() };
    const out = await r.store.applyDocument(reversed);
    expect(out.changes.lookup_records).toEqual({ added: 0, removed: 0, changed: 0 });
    expect(r.store.policy.lookup_records.map((x) => x.customer_address)).toEqual(['10.0.1.6', '10.0.1.5']);
    expect((new StateFile(r.state.dir).load()!.policy as Policy).lookup_records.map((x) => x.customer_address)).toEqual(['10.0.1.6', '10.0.1.5']);
  });
});
