// The control plane of learning (packet flow 4) without a packet core: the
// decisions (decideLearning), the PolicyStore's learn / expire / delete /
// reload / persist paths, and the Learning driver with a fake core whose
// drainLearned() returns what the test says. The dataplane is a fake that
// records every snapshot it is given.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import { EventBus, type PolicyEvent } from '../src/api/events.js';
import { validatePolicy } from '../src/config/index.js';
import type { HostDataplane } from '../src/daemon/host.js';
import { Learning, decideLearning, learnedKey, type LearnedAddress, type LearnedEntry } from '../src/daemon/learning.js';
import { StateFile } from '../src/daemon/state.js';
import { KeyedPolicy } from '../src/model/keyed.js';
import { PolicyStore } from '../src/daemon/store.js';
import type { LookupRecord, Policy } from '../src/model/policy.js';
import { RESOURCES } from '../src/model/resources.js';
import { FakeHost } from './helpers/fakes.js';
import { scratchDir } from './helpers/scratch.js';

const RD = '{12345678-1000-2000-3000-123456780001}';
const L2MAC = '60:00:60:00:02:05';
const LOOKUP = RESOURCES.find((r) => r.section === 'lookup_records')!;
const silent = pino({ level: 'silent' });
const dir = scratchDir('learning-store');

function doc(extra: { learning?: object; records?: object[]; routes?: object[] } = {}): Record<string, unknown> {
  return {
    host: { name: 'unit' },
    provider_addresses: [{ address: '192.168.0.22', prefix_length: 24, interface: 'eth1' }],
    customer_routes: [
      { routing_domain: RD, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0' },
      { routing_domain: RD, vsid: 6002, destination_prefix: '10.0.3.0/24', next_hop: '0.0.0.0' },
      ...(extra.routes ?? []),
    ],
    lookup_records: [
      { customer_address: '10.0.1.1', vsid: 6000, mac: '60:00:60:00:01:00', provider_address: '192.168.0.22' },
      { customer_address: '10.0.1.101', vsid: 6000, mac: '60:00:60:00:01:01', provider_address: '192.168.0.22', vm_name: 'Contoso1' },
      { customer_address: '10.0.1.103', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33', vm_name: 'Contoso3' },
      { customer_address: '0.0.0.0', vsid: 6000, mac: L2MAC, provider_address: '192.168.0.33', type: 'l2only' },
      { customer_address: '0.0.0.0', vsid: 6000, mac: '60:00:60:00:03:05', provider_address: '192.168.0.11', type: 'l2only' },
      { customer_address: '0.0.0.0', vsid: 6002, mac: '60:00:60:00:04:05', provider_address: '192.168.0.33', type: 'l2only' },
      ...(extra.records ?? []),
    ],
    vm_adapters: [{ name: 'contoso1', mac: '60:00:60:00:01:01', vsid: 6000 }],
    ...(extra.learning ? { learning: extra.learning } : {}),
  };
}

const cand = (ca: string, mac = L2MAC, pa = '192.168.0.33', vsid = 6000): LearnedAddress => ({ vsid, customer_address: ca, mac, provider_address: pa });
const dyn = (ca: string, mac = L2MAC, pa = '192.168.0.33', vsid = 6000): LookupRecord => ({ customer_address: ca, vsid, mac, provider_address: pa, rule: 'encap', type: 'dynamic' });

interface Rig {
  store: PolicyStore;
  host: FakeHost;
  events: PolicyEvent[];
  clock: { t: number };
  state: StateFile;
  configFile: string;
}

let n = 0;
function rig(d: Record<string, unknown> = doc(), opts: { state?: StateFile; learned?: ReturnType<StateFile['load']>; t0?: number } = {}): Rig {
  const policy = validatePolicy(d);
  const host = new FakeHost(policy);
  const bus = new EventBus();
  const events: PolicyEvent[] = [];
  bus.subscribe((e) => events.push(e.data));
  const clock = { t: opts.t0 ?? Date.parse('2026-11-21T12:00:00Z') };
  const state = opts.state ?? new StateFile(join(dir, `state-${n++}`));
  const configFile = join(dir, `config-${n++}.yaml`);
  writeFileSync(configFile, JSON.stringify(d));
  const store = new PolicyStore(host as unknown as HostDataplane, state, policy, configFile, silent, undefined, {
    events: bus,
    now: () => clock.t,
    learned: opts.learned?.learned ?? [],
  });
  store.saveState();
  return { store, host, events, clock, state, configFile };
}

const dynamics = (p: Policy) => p.lookup_records.filter((r) => r.type === 'dynamic');

// ---------------------------------------------------------------- decisions

describe('decideLearning', () => {
  const policy = validatePolicy(doc({ records: [{ customer_address: '10.0.1.150', vsid: 6000, mac: '60:00:60:00:03:05', provider_address: '192.168.0.11', type: 'dynamic' }] }));
  const none = new Map<string, LearnedEntry>();

  it('learns a new address as a dynamic encap record', () => {
    const d = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.105')], 10);
    expect(d).toEqual({ upserts: [{ record: dyn('10.0.1.105') }], refreshed: [], refused: [] });
  });

  it('a static record wins: the same mapping is nothing to learn, another is refused (static_conflict)', () => {
    const same = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.103', '60:00:60:00:02:03')], 10);
    expect(same).toEqual({ upserts: [], refreshed: [], refused: [] });
    const other = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.103')], 10);
    expect(other.upserts).toEqual([]);
    expect(other.refused).toEqual([{ record: dyn('10.0.1.103'), reason: 'static_conflict', existing: policy.lookup_records[2] }]);
  });

  it('refuses a new address once the VSID holds max_per_vsid learned records, counting per VSID', () => {
    const learned = new Map<string, LearnedEntry>([
      [learnedKey(6000, '10.0.1.90'), { vsid: 6000, customer_address: '10.0.1.90', mac: L2MAC, provider_address: '192.168.0.33', lastSeen: 0 }],
    ]);
    const d = decideLearning(new KeyedPolicy(policy), learned, [cand('10.0.1.105'), cand('10.0.1.106'), cand('10.0.3.5', '60:00:60:00:04:05', '192.168.0.33', 6002)], 2);
    expect(d.upserts.map((u) => u.record.customer_address)).toEqual(['10.0.1.105', '10.0.3.5']);
    expect(d.refused).toEqual([{ record: dyn('10.0.1.106'), reason: 'limit' }]);
    // max_per_vsid 0: learning is off
    expect(decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.105')], 0).refused[0]!.reason).toBe('limit');
  });

  it('refreshes a learned record reported unchanged, changes one whose MAC or PA moved', () => {
    const p = validatePolicy({ ...doc(), lookup_records: [...(doc().lookup_records as object[]), dyn('10.0.1.105')] });
    const learned = new Map([[learnedKey(6000, '10.0.1.105'), { vsid: 6000, customer_address: '10.0.1.105', mac: L2MAC, provider_address: '192.168.0.33', lastSeen: 0 }]]);
    expect(decideLearning(new KeyedPolicy(p), learned, [cand('10.0.1.105'), cand('10.0.1.105')], 1)).toEqual({ upserts: [], refreshed: ['6000|10.0.1.105'], refused: [] });
    const moved = decideLearning(new KeyedPolicy(p), learned, [cand('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11')], 1);
    expect(moved.upserts).toEqual([{ record: dyn('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11'), previous: dyn('10.0.1.105') }]);
    expect(moved.refused).toEqual([]); // a change is not a new record: the limit (1, reached) does not apply
  });

  it("leaves an operator's identical dynamic record alone; takes over a different one (within the limit)", () => {
    expect(decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.150', '60:00:60:00:03:05', '192.168.0.11')], 10)).toEqual({ upserts: [], refreshed: [], refused: [] });
    const d = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.150')], 10);
    expect(d.upserts).toEqual([{ record: dyn('10.0.1.150'), previous: policy.lookup_records[6] }]);
    expect(decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.150')], 0).refused[0]!.reason).toBe('limit');
  });

  it('one key twice in a batch is one record (the later report wins); bad candidates are invalid', () => {
    const d = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.105'), cand('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11')], 10);
    expect(d.upserts).toEqual([{ record: dyn('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11') }]);
    const bad = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.300'), cand('10.0.1.5', 'ff:ff:ff:ff:ff:ff')], 10);
    expect(bad.refused.map((r) => [r.reason, r.detail])).toEqual([
      ['invalid', expect.stringContaining('customer_address')],
      ['invalid', expect.stringContaining('mac')],
    ]);
  });

  it('normalizes what the core reports (case, IPv6 text)', () => {
    const d = decideLearning(new KeyedPolicy(policy), none, [cand('10.0.1.105', '60:00:60:00:02:05'.toUpperCase())], 10);
    expect(d.upserts[0]!.record.mac).toBe(L2MAC);
  });
});

// ---------------------------------------------------------------- the store

describe('PolicyStore.learn', () => {
  let r: Rig;
  beforeEach(() => {
    r = rig();
  });

  it('adds a batch as ONE commit of dynamic encap records, announced and counted', async () => {
    const gen = r.store.generation;
    const out = await r.store.learn([cand('10.0.1.105'), cand('10.0.1.106'), cand('10.0.3.7', '60:00:60:00:04:05', '192.168.0.33', 6002)]);
    expect(out.learned.map((x) => x.customer_address)).toEqual(['10.0.1.105', '10.0.1.106', '10.0.3.7']);
    expect(r.store.generation).toBe(gen + 1);
    expect(r.host.applied).toHaveLength(1);
    expect(dynamics(r.store.policy)).toEqual([dyn('10.0.1.105'), dyn('10.0.1.106'), dyn('10.0.3.7', '60:00:60:00:04:05', '192.168.0.33', 6002)]);
    expect(r.store.learnedCount).toBe(3);
    expect(r.store.learningStats).toMatchObject({ learned_total: 3, expired_total: 0, refused: { limit: 0, static_conflict: 0, invalid: 0 } });
    expect(r.events.map((e) => [e.event, e.record.customer_address])).toEqual([
      ['learned', '10.0.1.105'],
      ['learned', '10.0.1.106'],
      ['learned', '10.0.3.7'],
    ]);
    expect(r.events[0]!.record).toEqual(dyn('10.0.1.105'));
    expect(Date.parse(r.events[0]!.time)).not.toBeNaN();
    // listed like any record, and by type
    expect(r.store.list(LOOKUP, [['type', 'dynamic']])).toHaveLength(3);
  });

  it('a refresh moves only the last-seen time: no commit, no event', async () => {
    await r.store.learn([cand('10.0.1.105')]);
    const gen = r.store.generation;
    r.clock.t += 5000;
    const out = await r.store.learn([cand('10.0.1.105')]);
    expect(out).toMatchObject({ learned: [], changed: [], refreshed: 1, refused: [] });
    expect(r.store.generation).toBe(gen);
    expect(r.events).toHaveLength(1);
    expect(r.store.learnedRecords()[0]!.last_seen.getTime()).toBe(r.clock.t);
  });

  it('a VM that moved (new MAC/PA, vouched for by the core) changes the record: changed event with the previous one', async () => {
    await r.store.learn([cand('10.0.1.105')]);
    const out = await r.store.learn([cand('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11')]);
    expect(out.changed).toEqual([{ record: dyn('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11'), previous: dyn('10.0.1.105') }]);
    expect(r.events.at(-1)).toMatchObject({ event: 'changed', record: { provider_address: '192.168.0.11' }, previous: { provider_address: '192.168.0.33' } });
    expect(r.store.learningStats.learned_total).toBe(2);
    expect(dynamics(r.store.policy)).toEqual([dyn('10.0.1.105', '60:00:60:00:03:05', '192.168.0.11')]);
  });

  it('never overrides a static record; refusals are counted and announced with their reason', async () => {
    const before = JSON.stringify(r.store.policy);
    const out = await r.store.learn([cand('10.0.1.103'), cand('10.0.1.101')]);
    expect(out.refused.map((f) => f.reason)).toEqual(['static_conflict', 'static_conflict']);
    expect(JSON.stringify(r.store.policy)).toBe(before);
    expect(r.store.learningStats.refused.static_conflict).toBe(2);
    expect(r.events.map((e) => [e.event, e.reason, e.existing?.type])).toEqual([
      ['refused', 'static_conflict', 'static'],
      ['refused', 'static_conflict', 'static'],
    ]);
    // the identical static mapping is not a refusal
    await r.store.learn([cand('10.0.1.103', '60:00:60:00:02:03')]);
    expect(r.store.learningStats.refused.static_conflict).toBe(2);
  });

  it('holds at most max_per_vsid learned records per VSID, under a flood', async () => {
    const small = rig(doc({ learning: { max_per_vsid: 5 } }));
    const flood = Array.from({ length: 200 }, (_, i) => cand(`10.0.1.${i + 2}`)).filter((c) => !['10.0.1.101', '10.0.1.103'].includes(c.customer_address));
    for (let i = 0; i < flood.length; i += 50) await small.store.learn(flood.slice(i, i + 50));
    expect(small.store.learnedCount).toBe(5);
    expect(dynamics(small.store.policy)).toHaveLength(5);
    expect(small.store.learningStats.refused.limit).toBe(flood.length - 5);
    expect(small.host.applied).toHaveLength(1); // the five went in with the first batch
    // a refresh of a held one and a record of another VSID still go in
    await small.store.learn([cand('10.0.1.2'), cand('10.0.3.9', '60:00:60:00:04:05', '192.168.0.33', 6002)]);
    expect(small.store.learnedCount).toBe(6);
  });

  it('an address the policy cannot take (the subnet gateway, broadcast) is refused as invalid; the rest of the batch goes in', async () => {
    const out = await r.store.learn([cand('10.0.1.105'), cand('10.0.3.1', '60:00:60:00:04:05', '192.168.0.33', 6002), cand('255.255.255.255'), cand('10.0.1.106')]);
    expect(out.learned.map((x) => x.customer_address)).toEqual(['10.0.1.105', '10.0.1.106']);
    expect(out.refused.map((f) => [f.record.customer_address, f.reason])).toEqual([
      ['10.0.3.1', 'invalid'],
      ['255.255.255.255', 'invalid'],
    ]);
    expect(out.refused[0]!.detail).toMatch(/default gateway/);
    expect(r.store.learningStats.refused.invalid).toBe(2);
    expect(r.host.applied).toHaveLength(1);
  });

  it('two addresses that conflict with each other: the first goes in', async () => {
    // one MAC at two PAs in one routing domain: the validator refuses the second
    const out = await r.store.learn([cand('10.0.1.105', '60:00:60:00:06:06', '192.168.0.33'), cand('10.0.1.106', '60:00:60:00:06:06', '192.168.0.11')]);
    expect(out.learned.map((x) => x.customer_address)).toEqual(['10.0.1.105']);
    expect(out.refused.map((f) => [f.record.customer_address, f.reason])).toEqual([['10.0.1.106', 'invalid']]);
  });
});

describe('expiry', () => {
  it('removes learned records not refreshed for ttl_seconds, in one commit; refreshed ones and operator records stay', async () => {
    const r = rig(doc({ learning: { ttl_seconds: 3 }, records: [{ customer_address: '10.0.1.150', vsid: 6000, mac: '60:00:60:00:03:05', provider_address: '192.168.0.11', type: 'dynamic' }] }));
    await r.store.learn([cand('10.0.1.105'), cand('10.0.1.106'), cand('10.0.1.107')]);
    r.clock.t += 2000;
    await r.store.learn([cand('10.0.1.107')]); // refreshed
    expect(await r.store.expireLearned()).toEqual([]);
    r.clock.t += 1000; // 3 s after learning: .105 and .106 go
    const gen = r.store.generation;
    const gone = await r.store.expireLearned();
    expect(gone.map((x) => x.customer_address)).toEqual(['10.0.1.105', '10.0.1.106']);
    expect(r.store.generation).toBe(gen + 1);
    expect(dynamics(r.store.policy).map((x) => x.customer_address)).toEqual(['10.0.1.150', '10.0.1.107']);
    expect(r.store.learningStats.expired_total).toBe(2);
    expect(r.events.filter((e) => e.event === 'expired').map((e) => [e.record.customer_address, e.last_seen])).toEqual([
      ['10.0.1.105', '2026-11-21T12:00:00.000Z'],
      ['10.0.1.106', '2026-11-21T12:00:00.000Z'],
    ]);
    expect(r.events.some((e) => e.event === 'deleted')).toBe(false);
    r.clock.t += 100_000;
    expect((await r.store.expireLearned()).map((x) => x.customer_address)).toEqual(['10.0.1.107']);
    // the operator's dynamic record never expires
    expect(dynamics(r.store.policy).map((x) => x.customer_address)).toEqual(['10.0.1.150']);
  });
});

describe('deletion and changes through the API', () => {
  it('deleting a learned record removes it and announces it (cause api); traffic may teach it again', async () => {
    const r = rig();
    await r.store.learn([cand('10.0.1.105')]);
    await r.store.remove(LOOKUP, ['6000', '10.0.1.105']);
    expect(r.store.learnedCount).toBe(0);
    expect(r.events.at(-1)).toMatchObject({ event: 'deleted', cause: 'api', record: dyn('10.0.1.105') });
    await r.store.learn([cand('10.0.1.105')]);
    expect(r.events.at(-1)).toMatchObject({ event: 'learned' });
    expect(r.store.learnedCount).toBe(1);
    // flush by type: each learned one is announced
    await r.store.learn([cand('10.0.1.106')]);
    expect(await r.store.flush(LOOKUP, [['type', 'dynamic']])).toBe(2);
    expect(r.events.slice(-2).map((e) => [e.event, e.record.customer_address, e.cause])).toEqual([
      ['deleted', '10.0.1.105', 'api'],
      ['deleted', '10.0.1.106', 'api'],
    ]);
  });

  it('an operator rewriting a learned record takes it over: it no longer expires; a vm_name alone does not', async () => {
    const r = rig(doc({ learning: { ttl_seconds: 1 } }));
    await r.store.learn([cand('10.0.1.105'), cand('10.0.1.106')]);
    await r.store.change(LOOKUP, ['6000', '10.0.1.105'], { provider_address: '192.168.0.11', mac: '60:00:60:00:03:05' });
    await r.store.change(LOOKUP, ['6000', '10.0.1.106'], { vm_name: 'Named' });
    expect(r.events.filter((e) => e.event === 'deleted').map((e) => e.record.customer_address)).toEqual(['10.0.1.105']);
    r.clock.t += 5000;
    expect((await r.store.expireLearned()).map((x) => [x.customer_address, x.vm_name])).toEqual([['10.0.1.106', 'Named']]);
    expect(dynamics(r.store.policy).map((x) => x.customer_address)).toEqual(['10.0.1.105']);
  });

  it('a bulk apply keeps the learned records it carries unchanged, and deletes (announces) those it leaves out', async () => {
    const r = rig();
    await r.store.learn([cand('10.0.1.105'), cand('10.0.1.106')]);
    const p = structuredClone(r.store.policy);
    p.lookup_records = p.lookup_records.filter((x) => x.customer_address !== '10.0.1.106');
    await r.store.applyDocument(p);
    expect(r.store.learnedCount).toBe(1);
    expect(r.events.at(-1)).toMatchObject({ event: 'deleted', cause: 'policy', record: { customer_address: '10.0.1.106' } });
  });
});

describe('reload', () => {
  it('keeps the learned records the file does not contradict; a file record at the same address wins', async () => {
    const r = rig();
    await r.store.learn([cand('10.0.1.105'), cand('10.0.1.106'), cand('10.0.3.7', '60:00:60:00:04:05', '192.168.0.33', 6002), cand('10.0.1.108')]);
    // the file now: a static record for .106 (another VM), the identical mapping for .108, and no VSID 6002
    const file = doc({ records: [
      { customer_address: '10.0.1.106', vsid: 6000, mac: '60:00:60:00:01:06', provider_address: '192.168.0.22' },
      { customer_address: '10.0.1.108', vsid: 6000, mac: L2MAC, provider_address: '192.168.0.33', type: 'dynamic' },
    ] });
    (file.customer_routes as object[]).splice(1, 1);
    (file.lookup_records as Array<{ vsid: number }>).splice(5, 1);
    writeFileSync(r.configFile, JSON.stringify(file));
    const res = await r.store.reload();
    expect(res.applied).toBe(true);
    const recs = r.store.policy.lookup_records;
    expect(recs.find((x) => x.customer_address === '10.0.1.105')).toEqual(dyn('10.0.1.105'));
    expect(recs.find((x) => x.customer_address === '10.0.1.106')!.type).toBe('static');
    expect(recs.some((x) => x.vsid === 6002)).toBe(false);
    // only .105 is still learned; .108 is the file's now
    expect(r.store.learnedRecords().map((x) => x.record.customer_address)).toEqual(['10.0.1.105']);
    expect(r.events.filter((e) => e.event === 'deleted').map((e) => [e.record.customer_address, e.cause])).toEqual([
      ['10.0.1.106', 'reload'],
      ['10.0.3.7', 'reload'],
    ]);
    // learning settings change with a reload
    writeFileSync(r.configFile, JSON.stringify({ ...file, learning: { max_per_vsid: 1, ttl_seconds: 9 } }));
    await r.store.reload();
    expect(r.store.policy.learning).toEqual({ max_per_vsid: 1, ttl_seconds: 9 });
    expect((await r.store.learn([cand('10.0.1.109')])).refused[0]!.reason).toBe('limit');
  });
});

describe('persistence', () => {
  it('the state file keeps which records were learned and their clocks; a new store carries on with them', async () => {
    const state = new StateFile(join(dir, 'persist'));
    const d = doc({ learning: { ttl_seconds: 60 } });
    const r = rig(d, { state });
    await r.store.learn([cand('10.0.1.105')]);
    r.clock.t += 30_000;
    await r.store.learn([cand('10.0.1.106')]);
    const saved = JSON.parse(readFileSync(state.path, 'utf8'));
    expect(saved.learned).toEqual([
      { vsid: 6000, customer_address: '10.0.1.105', mac: L2MAC, provider_address: '192.168.0.33', last_seen: '2026-11-21T12:00:00.000Z' },
      { vsid: 6000, customer_address: '10.0.1.106', mac: L2MAC, provider_address: '192.168.0.33', last_seen: '2026-11-21T12:00:30.000Z' },
    ]);
    // a refresh alone is saved by saveLearnedClocks (the driver's flush, and at stop)
    r.clock.t += 10_000;
    await r.store.learn([cand('10.0.1.106')]);
    r.store.saveLearnedClocks();
    expect(JSON.parse(readFileSync(state.path, 'utf8')).learned[1].last_seen).toBe('2026-11-21T12:00:40.000Z');

    // "restart": the saved policy and learned set
    const loaded = state.load()!;
    const again = rig({ ...(loaded.policy as object) }, { state, learned: loaded, t0: r.clock.t });
    expect(again.store.learnedCount).toBe(2);
    again.clock.t = Date.parse('2026-11-21T12:01:00Z'); // 60 s after .105 was last seen
    expect((await again.store.expireLearned()).map((x) => x.customer_address)).toEqual(['10.0.1.105']);
    again.clock.t = Date.parse('2026-11-21T12:01:40Z');
    expect((await again.store.expireLearned()).map((x) => x.customer_address)).toEqual(['10.0.1.106']);
  });

  it('a saved learned entry whose record is gone (or was rewritten) is not restored', () => {
    const state = new StateFile(join(dir, 'persist2'));
    const r = rig(doc({ records: [dyn('10.0.1.105')] }), {
      state,
      learned: {
        policy: {},
        owned: { provider_addresses: [], provider_routes: [] },
        learned: [
          { vsid: 6000, customer_address: '10.0.1.105', mac: L2MAC, provider_address: '192.168.0.33', last_seen: '2026-11-21T11:00:00.000Z' },
          { vsid: 6000, customer_address: '10.0.1.106', mac: L2MAC, provider_address: '192.168.0.33', last_seen: '2026-11-21T11:00:00.000Z' },
          { vsid: 6000, customer_address: '10.0.1.103', mac: L2MAC, provider_address: '192.168.0.33', last_seen: '2026-11-21T11:00:00.000Z' },
        ],
      },
    });
    expect(r.store.learnedRecords().map((x) => x.record.customer_address)).toEqual(['10.0.1.105']);
  });
});

describe('the Learning driver with a fake core', () => {
  it('drains the core, applies each drain as one batch, expires on its sweep', async () => {
    const r = rig(doc({ learning: { ttl_seconds: 2 } }));
    const queue: LearnedAddress[][] = [[cand('10.0.1.105'), cand('10.0.1.106')], [], [cand('10.0.1.103')]];
    let drains = 0;
    const core = {
      drainLearned() {
        drains++;
        return queue.shift() ?? [];
      },
    };
    const learning = new Learning(core, r.store, silent, { now: () => r.clock.t });
    await learning.drain();
    await learning.drain();
    await learning.drain();
    expect(drains).toBe(3);
    expect(r.host.applied).toHaveLength(1);
    expect(r.events.map((e) => e.event)).toEqual(['learned', 'learned', 'refused']);
    r.clock.t += 2000;
    await learning.sweep();
    expect(r.store.learnedCount).toBe(0);
    expect(r.events.slice(-2).map((e) => e.event)).toEqual(['expired', 'expired']);
  });

  it('runs on its timers and stops cleanly (a throwing core is logged, not fatal)', async () => {
    const r = rig();
    let calls = 0;
    const core = {
      drainLearned(): LearnedAddress[] {
        calls++;
        if (calls === 1) throw new Error('boom');
        return calls === 2 ? [cand('10.0.1.105')] : [];
      },
    };
    const learning = new Learning(core, r.store, silent, { drainMs: 10, sweepMs: 10, flushMs: 10 });
    learning.start();
    for (let i = 0; i < 100 && r.store.learnedCount === 0; i++) await new Promise((res) => setTimeout(res, 10));
    learning.stop();
    expect(r.store.learnedCount).toBe(1);
    const after = calls;
    await new Promise((res) => setTimeout(res, 50));
    expect(calls).toBe(after);
  });
});
