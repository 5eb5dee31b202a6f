// The record tables (src/model/records.ts) against what is not derived from
// them: the TypeScript interfaces (at compile time) and the packet core's
// decoder (native/src/dp/policy.rs, a hand mirror of the snapshot columns).

import { describe, expect, it } from 'vitest';
import type { InspectedPolicy } from '../native/index.js';
import { native } from '../src/native.js';
import { emptyPolicy, isOnLink, type LookupRecord, type Policy } from '../src/model/policy.js';
import { LOOKUP_RECORDS, RECORD_SPECS, type Column, type Matches, type Section } from '../src/model/records.js';
import { resourceBySection } from '../src/model/resources.js';
import { encodePolicy, routingDomainIndex } from '../src/model/snapshot.js';
import { recordKey } from '../src/fleet/view.js';

// The check fails on a field the table lacks, a field it has that the
// interface lacks, and a field required on one side only (tsc -p
// tsconfig.test.json reports an unused @ts-expect-error if it does not).
// @ts-expect-error an interface field the table does not have
true satisfies Matches<LookupRecord & { extra: string }, typeof LOOKUP_RECORDS>;
// @ts-expect-error a table field the interface does not have
true satisfies Matches<Omit<LookupRecord, 'mac'>, typeof LOOKUP_RECORDS>;
// @ts-expect-error a required field made optional
true satisfies Matches<Omit<LookupRecord, 'vsid'> & { vsid?: number }, typeof LOOKUP_RECORDS>;
// @ts-expect-error an optional field made required
true satisfies Matches<LookupRecord & { vm_name: string }, typeof LOOKUP_RECORDS>;

const RD1 = '{12345678-1000-2000-3000-123456780001}';
const RD2 = '{12345678-1000-2000-3000-123456780002}';

/** Records with every field, every enum value and both families (the encoder does not validate: invariants do not matter here). */
function everyField(): Policy {
  const rules = ['encap', 'none'] as const;
  const types = ['static', 'dynamic', 'l2only', 'gateway_wildcard'] as const;
  return {
    ...emptyPolicy(),
    provider_addresses: [
      { address: '192.168.0.10', prefix_length: 24, interface: 'eth0', vlan_id: 7 },
      { address: 'fd00::a', prefix_length: 64, interface: 'eth1', vlan_id: 4094 },
    ],
    customer_routes: [
      { routing_domain: RD2, vsid: 6000, destination_prefix: '10.1.0.0/16', next_hop: '0.0.0.0', metric: 5 },
      { routing_domain: RD1, vsid: 7000, destination_prefix: 'fd00:1::/64', next_hop: 'fd00:1::1', metric: 4294967295 },
      { routing_domain: RD1, vsid: 16777214, destination_prefix: '0.0.0.0/0', next_hop: '10.9.0.1', metric: 0 },
    ],
    lookup_records: types.flatMap((type, i) =>
      rules.map((rule, j) => ({
        customer_address: type === 'l2only' || type === 'gateway_wildcard' ? (j ? '::' : '0.0.0.0') : j ? `fd00:1::${i + 1}` : `10.1.0.${i + 1}`,
        vsid: 6000 + i,
        mac: type === 'gateway_wildcard' ? '00:00:00:00:00:00' : `60:00:60:00:0${i}:0${j}`,
        provider_address: j ? 'fd00::a' : '192.168.0.10',
        rule,
        type,
        vm_name: 'vm1',
      })),
    ),
    vm_adapters: [
      { name: 'tap0', mac: '02:00:00:00:00:01', vsid: 6000, mtu: 9000 },
      { name: 'vu1', mode: 'vhost_user', mac: '02:00:00:00:00:02', vsid: 16777214, socket: '/run/vu1.sock', socket_mode: 'server' },
    ],
  };
}

/** Where each section's entries are in the decoded policy, the decoder's names where they differ, and what the core gets that is not a record field. */
const DECODED: Partial<Record<Section, { list: keyof InspectedPolicy; names?: Record<string, string>; extra: string[] }>> = {
  provider_addresses: { list: 'provider_addresses', names: { prefix_length: 'prefix_len' }, extra: ['mtu', 'ifindex'] },
  customer_routes: { list: 'customer_routes', names: { destination_prefix: 'prefix' }, extra: [] },
  lookup_records: { list: 'lookup_records', names: { type: 'kind' }, extra: [] },
  vm_adapters: { list: 'ports', extra: ['id'] },
};

describe('record tables', () => {
  it('every field of every record type encoded in TypeScript decodes in the core as it was', () => {
    const policy = everyField();
    const ports = new Map(policy.vm_adapters.map((a, i) => [a.name, i + 1]));
    const decoded = native().inspectPolicy(encodePolicy(policy, ports, (pa) => ({ mtu: 1500 + pa.vlan_id, ifindex: pa.prefix_length })));
    const rd = routingDomainIndex(policy);
    let compared = 0;
    for (const spec of RECORD_SPECS) {
      const where = DECODED[spec.section];
      const columns = spec.snapshot.columns as Readonly<Record<string, Column | string>>;
      if (!where) {
        // Not in the snapshot at all: no field has a column.
        expect(Object.values(columns).every((c) => typeof c === 'string'), spec.section).toBe(true);
        continue;
      }
      const records = policy[spec.section] as unknown as Record<string, unknown>[];
      const entries = decoded[where.list] as unknown as Record<string, unknown>[];
      expect(entries.length, spec.section).toBe(records.length);
      records.forEach((r, i) => {
        const d = entries[i]!;
        const seen = [...where.extra];
        for (const f of spec.fields) {
          const c = columns[f.name]!;
          if (typeof c === 'string') continue;
          const name = where.names?.[f.name] ?? f.name;
          const v = r[f.name];
          const at = `${spec.section}[${i}].${f.name}`;
          seen.push(name);
          if (c.as === 'prefix') {
            seen.push(`${name}_len`);
            expect(`${d[name]}/${d[`${name}_len`]}`, at).toBe(v);
          } else if (c.as === 'routing_domain') expect(d[name], at).toBe(rd.get(v as string));
          else if (c.as === 'ip' && c.onLink !== undefined) expect(d[name], at).toBe(isOnLink(v as string) ? undefined : v);
          else expect(d[name], at).toBe(v);
          compared++;
        }
        // Nothing the core decodes is left out of the tables.
        expect(Object.keys(d).sort(), `${spec.section}[${i}]`).toEqual(seen.sort());
      });
    }
    expect(compared).toBeGreaterThan(60);
    expect(decoded.provider_addresses.map((p) => [p.mtu, p.ifindex])).toEqual([[1507, 24], [5594, 64]]);
    expect(decoded.ports.map((p) => p.id)).toEqual([1, 2]);
  });

  it('keeps the known wrinkles of the etcd keys', () => {
    // A provider route's key holds its prefix alone, though its identity has its interface and next hop too.
    const pr = resourceBySection('provider_routes');
    const a = { destination_prefix: '192.168.1.0/24', next_hop: '0.0.0.0', interface: 'eth0', metric: 0 };
    const b = { ...a, interface: 'eth1', next_hop: '192.168.0.1' };
    expect(recordKey('provider_routes', a, 'h1')).toBe(recordKey('provider_routes', b, 'h1'));
    expect(pr.identity(a)).not.toEqual(pr.identity(b));
    // An L2Only record's key has no address family.
    const l2 = (customer_address: string): LookupRecord => ({ customer_address, vsid: 6000, mac: '60:00:60:00:03:01', provider_address: '192.168.0.1', rule: 'encap', type: 'l2only' });
    expect(recordKey('lookup_records', l2('0.0.0.0'))).toBe('lookup_records/6000/l2only/60:00:60:00:03:01');
    expect(recordKey('lookup_records', l2('::'))).toBe(recordKey('lookup_records', l2('0.0.0.0')));
  });
});
