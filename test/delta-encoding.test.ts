// The delta encoding (src/model/snapshot.ts encodeDelta, native
// dp/policy.rs PolicyDelta): which changes a delta carries, and the layout
// the core decodes (test/hitless-deltas.test.ts has the core apply what it writes).

import { describe, expect, it } from 'vitest';
import type { PolicyChange } from '../src/model/change.js';
import { emptyPolicy, type CustomerRoute, type LookupRecord, type Policy } from '../src/model/policy.js';
import { encodeDelta } from '../src/model/snapshot.js';

const route: CustomerRoute = { routing_domain: '{12345678-1000-2000-3000-123456780001}', vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 };
const rec = (ca: string, pa: string): LookupRecord => ({ customer_address: ca, vsid: 6000, mac: '60:00:60:00:01:01', provider_address: pa, rule: 'encap', type: 'static' });

function policy(records: LookupRecord[]): Policy {
  return { ...emptyPolicy(), customer_routes: [route], lookup_records: records };
}

describe('policy deltas', () => {
  it('carry lookup record changes in order, a replace with the record it replaces', () => {
    const a = rec('10.0.1.101', '192.168.0.22');
    const moved = rec('10.0.1.101', '192.168.0.33');
    const changes: PolicyChange[] = [
      { op: 'put', section: 'lookup_records', record: a },
      { op: 'put', section: 'lookup_records', record: moved, previous: a },
      { op: 'delete', section: 'lookup_records', record: moved },
    ];
    const buf = encodeDelta(policy([]), changes)!;
    expect(buf.subarray(0, 4).toString('latin1')).toBe('NVGD');
    expect([buf.readUInt32LE(4), buf.readUInt32LE(8), buf.readUInt32LE(12)]).toEqual([1, 0xffffffff, 3]);
    expect(buf.length).toBe(16 + 3 * 100);
    expect([buf[16], buf[116], buf[216]]).toEqual([0, 1, 2]); // put, replace, delete
    // the replace: the new record's PA, then the previous one's
    expect([...buf.subarray(116 + 4 + 24, 116 + 4 + 28)]).toEqual([192, 168, 0, 33]);
    expect([...buf.subarray(116 + 52 + 24, 116 + 52 + 28)]).toEqual([192, 168, 0, 22]);
  });

  it('carry all customer routes when one changed', () => {
    const buf = encodeDelta(policy([]), [{ op: 'put', section: 'customer_routes', record: route }])!;
    expect(buf.readUInt32LE(8)).toBe(1);
    expect(buf.length).toBe(16 + 48);
  });

  it('are not made for changes only a whole policy carries', () => {
    for (const section of ['provider_addresses', 'provider_routes', 'vm_adapters'] as const) {
      expect(encodeDelta(policy([]), [{ op: 'delete', section, record: {} as never }])).toBeUndefined();
    }
  });
});
