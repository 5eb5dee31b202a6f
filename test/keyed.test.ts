// The keyed store's incremental check against the whole-document check: on
// random sequences of changes over a small universe (few VSIDs, domains,
// MACs, addresses, so that records collide often), every change is checked
// both ways and the two must report exactly the same problems (code, path,
// value, message, order). Accepted changes stay; refused ones are undone,
// and the policy must be as it was.

import { describe, expect, it } from 'vitest';
import { checkPolicy } from '../src/config/index.js';
import type { PolicyChange } from '../src/model/change.js';
import { KeyedPolicy } from '../src/model/keyed.js';
import { emptyPolicy, type Policy } from '../src/model/policy.js';
import { RESOURCES, type AnyRecord, type Section } from '../src/model/resources.js';

/** A small seeded PRNG (mulberry32): a failing sequence can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const RDS = ['{12345678-1000-2000-3000-123456780001}', '{12345678-1000-2000-3000-123456780002}'];
const VSIDS = [5001, 5002, 5003];
const MACS = ['60:00:00:00:00:01', '60:00:00:00:00:02', '60:00:00:00:00:03', '60:00:00:00:00:04', '60:00:00:00:00:05'];
const PAS = ['192.168.0.1', '192.168.0.2', '192.168.0.3'];
const PREFIXES = ['10.0.0.0/24', '10.0.1.0/24', '10.1.0.0/16', 'fd00::/64'];
const CAS = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.1.1', '10.0.1.2', 'fd00::1', 'fd00::2'];

function generator(next: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const records: Record<Section, () => AnyRecord> = {
    provider_addresses: () => ({ address: pick(PAS), prefix_length: 24, interface: 'eth1', vlan_id: 0 }),
    provider_routes: () => ({ destination_prefix: pick(['10.200.0.0/16', '10.201.0.0/16']), next_hop: pick(['192.168.0.254', '0.0.0.0']), interface: 'eth1', metric: 0 }),
    customer_routes: () => {
      const destination_prefix = pick(PREFIXES);
      const v6 = destination_prefix.includes(':');
      const next_hop = next() < 0.8 ? (v6 ? '::' : '0.0.0.0') : v6 ? 'fd00::9' : '10.0.0.9';
      return { routing_domain: pick(RDS), vsid: pick(VSIDS), destination_prefix, next_hop, metric: 0 };
    },
    lookup_records: () => {
      const type = pick(['static', 'static', 'static', 'dynamic', 'l2only', 'gateway_wildcard'] as const);
      const unspecified = next() < 0.8 ? '0.0.0.0' : '::';
      return {
        customer_address: type === 'l2only' || type === 'gateway_wildcard' ? unspecified : pick(CAS),
        vsid: pick(VSIDS),
        mac: type === 'gateway_wildcard' && next() < 0.5 ? '00:00:00:00:00:00' : pick(MACS),
        provider_address: pick(PAS),
        rule: 'encap',
        type,
      };
    },
    vm_adapters: () => ({ name: pick(['vm0', 'vm1', 'vm2']), mac: pick(MACS), vsid: pick(VSIDS) }),
  };
  const weights: Array<[Section, number]> = [
    ['provider_addresses', 1],
    ['provider_routes', 1],
    ['customer_routes', 3],
    ['lookup_records', 10],
    ['vm_adapters', 2],
  ];
  const section = (): Section => {
    let x = next() * 17;
    for (const [s, w] of weights) if ((x -= w) < 0) return s;
    return 'lookup_records';
  };
  return { next, pick, records, section };
}

/** One change: mostly puts (new or replacing), some deletes of held records. */
function randomChange(g: ReturnType<typeof generator>, p: Policy): PolicyChange {
  const section = g.section();
  const held = p[section] as AnyRecord[];
  if (held.length && g.next() < 0.3) return { op: 'delete', section, record: g.pick(held) };
  return { op: 'put', section, record: g.records[section]() };
}

const strip = (p: Policy) => JSON.parse(JSON.stringify(p)) as unknown;

describe('keyed policy: incremental check = whole-document check', () => {
  it('agrees exactly on random change sequences, and undo restores the policy', () => {
    let accepted = 0;
    let refused = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const g = generator(rng(seed));
      const keyed = new KeyedPolicy(emptyPolicy());
      for (let step = 0; step < 250; step++) {
        const before = strip(keyed.policy);
        const batch = Array.from({ length: 1 + Math.floor(g.next() * 3) }, () => randomChange(g, keyed.policy));
        const applied = keyed.apply(batch);
        const incremental = keyed.check(applied);
        const whole = checkPolicy(keyed.policy).errors;
        expect(incremental, `seed ${seed} step ${step}: ${JSON.stringify(batch)}`).toEqual(whole);
        if (incremental.length) {
          refused++;
          applied.undo();
          expect(strip(keyed.policy), `seed ${seed} step ${step}: undo`).toEqual(before);
        } else {
          accepted++;
          keyed.settle();
        }
      }
    }
    console.log(`accepted ${accepted}, refused ${refused}`);
    expect(accepted).toBeGreaterThan(1000);
    expect(refused).toBeGreaterThan(1000);
  });

  it('keeps insertion order; a replaced record keeps its place, a deleted one is gone', () => {
    const keyed = new KeyedPolicy(emptyPolicy());
    const rec = (ca: string, mac: string) => ({ customer_address: ca, vsid: 5001, mac, provider_address: '192.168.0.1', rule: 'encap', type: 'static' }) as AnyRecord;
    keyed.apply([0, 1, 2].map((i) => ({ op: 'put', section: 'lookup_records', record: rec(`10.0.0.${i + 2}`, MACS[i]!) })));
    keyed.apply([
      { op: 'put', section: 'lookup_records', record: rec('10.0.0.2', MACS[4]!) },
      { op: 'delete', section: 'lookup_records', record: rec('10.0.0.3', MACS[1]!) },
    ]);
    expect(keyed.policy.lookup_records.map((r) => [r.customer_address, r.mac])).toEqual([
      ['10.0.0.2', MACS[4]],
      ['10.0.0.4', MACS[2]],
    ]);
    expect(RESOURCES.length).toBe(5);
  });

  it("a document's lookup records are those of when it was made: whole (policy), or kept once read, an error if first read after a change, back after an undo (lazyPolicy)", () => {
    const keyed = new KeyedPolicy(emptyPolicy());
    const rec = (ca: string) => ({ customer_address: ca, vsid: 5001, mac: MACS[0]!, provider_address: '192.168.0.1', rule: 'encap', type: 'static' }) as AnyRecord;
    const cas = (p: Policy) => p.lookup_records.map((r) => r.customer_address);
    keyed.apply([{ op: 'put', section: 'lookup_records', record: rec('10.0.0.2') }]);
    const read = keyed.lazyPolicy;
    expect(cas(read)).toEqual(['10.0.0.2']);
    keyed.apply([{ op: 'put', section: 'lookup_records', record: rec('10.0.0.3') }]);
    const whole = keyed.policy;
    keyed.apply([{ op: 'delete', section: 'lookup_records', record: rec('10.0.0.3') }]);
    keyed.apply([{ op: 'put', section: 'lookup_records', record: rec('10.0.0.3') }]);
    const unread = keyed.lazyPolicy;
    const change = keyed.apply([{ op: 'put', section: 'lookup_records', record: rec('10.0.0.4') }]);
    expect(cas(read)).toEqual(['10.0.0.2']);
    expect(cas(whole)).toEqual(['10.0.0.2', '10.0.0.3']);
    expect(() => unread.lookup_records).toThrow(/after the policy changed/);
    expect(cas(keyed.policy)).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.4']);
    change.undo();
    expect(cas(unread)).toEqual(['10.0.0.2', '10.0.0.3']);
    expect(JSON.parse(JSON.stringify(keyed.policy)).lookup_records).toHaveLength(2);
    expect(structuredClone(keyed.policy).lookup_records).toHaveLength(2);
  });
});
