// The fleet's watcher and writer against a real etcd (Debian's 3.4, a
// member of our own in namespace nvfl-t<pid>, stopped on every exit path):
// start from the store, deltas, refused revisions and their recovery, bad
// values, the store unreachable (forwarding policy kept) and the resync
// after it with the history compacted meanwhile, the status key's lease,
// compare-and-swap writes through the local API's writer, and a VM's
// migration in one transaction. The dataplane is a fake that keeps every
// snapshot it is given.

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { validatePolicy } from '../src/config/index.js';
import type { HostDataplane } from '../src/daemon/host.js';
import { PolicyStore } from '../src/daemon/store.js';
import { CompactedError, Etcd } from '../src/fleet/etcd.js';
import { FleetSource, type HostStatus } from '../src/fleet/source.js';
import { FleetWriter } from '../src/fleet/writer.js';
import { FleetLearning } from '../src/fleet/learning.js';
import { EventBus } from '../src/api/events.js';
import type { Policy } from '../src/model/policy.js';
import { RESOURCES } from '../src/model/resources.js';
import { EtcdCluster } from '../lab/etcd.js';
import { FakeHost } from './helpers/fakes.js';
import { scratchDir } from './helpers/scratch.js';
import { until } from './helpers/until.js';

const RD = '{12345678-1000-2000-3000-123456780001}';
const LOOKUP = RESOURCES.find((r) => r.section === 'lookup_records')!;
const silent = pino({ level: process.env.FLEET_LOG ?? 'silent' });
const dir = scratchDir('fleet-store');
const J = JSON.stringify;

const route = (vsid: number, prefix: string) => ({ routing_domain: RD, vsid, destination_prefix: prefix, next_hop: '0.0.0.0', metric: 0 });
const rec = (ca: string, pa: string, mac: string, vsid = 6000) => ({ customer_address: ca, vsid, mac, provider_address: pa, rule: 'encap', type: 'static' });
const pa = (address: string) => ({ address, prefix_length: 24, interface: 'eth1', vlan_id: 0 });
const adapter = (name: string, mac: string) => ({ name, mac, vsid: 6000 });

/** A Unix-socket proxy to the member: closing it is the store becoming unreachable for the watcher alone. */
class Proxy {
  private server: Server | undefined;
  private conns = new Set<Socket>();
  constructor(
    readonly path: string,
    private readonly to: string,
  ) {}
  open(): Promise<void> {
    this.server = createServer((c) => {
      const up = createConnection(this.to);
      this.conns.add(c).add(up);
      c.pipe(up).pipe(c);
      const end = () => {
        c.destroy();
        up.destroy();
      };
      c.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
    });
    return new Promise((r) => this.server!.listen(this.path, r));
  }
  close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    return new Promise((r) => this.server!.close(() => r()));
  }
}

let cluster: EtcdCluster;
let etcd: Etcd;
let proxy: Proxy;
beforeAll(async () => {
  cluster = await EtcdCluster.start({ ns: `nvfl-t${process.pid}`, dir: join(dir, 'etcd') });
  etcd = cluster.client();
  proxy = new Proxy(join(dir, 'proxy.sock'), cluster.endpoint(0).slice('unix://'.length));
  await proxy.open();
}, 60_000);
afterAll(async () => {
  etcd?.close();
  await proxy?.close();
  await cluster?.stop();
});

let n = 0;
const running: FleetSource[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.stop();
});

interface Rig {
  root: string;
  store: PolicyStore;
  host: FakeHost;
  source: FleetSource;
  writer: FleetWriter;
  registry: Registry;
  status(): Promise<HostStatus | undefined>;
}

/** host1, with its PA in its file, watching prefix /t<n> through the proxy. */
function rig(learning?: object, events?: EventBus): Rig {
  const prefix = `/t${++n}`;
  const file = validatePolicy({ host: { name: 'host1' }, provider_addresses: [pa('192.168.0.22')], policy_store: { etcd: { endpoints: ['unix:///x'], prefix } }, ...(learning ? { learning } : {}) });
  const host = new FakeHost(file);
  const store = new PolicyStore(host as unknown as HostDataplane, undefined, file, join(dir, 'x.yaml'), silent, undefined, events ? { events } : {});
  const registry = new Registry();
  const source = new FleetSource({ etcd: new Etcd([`unix://${proxy.path}`], { timeoutMs: 2000 }), prefix, host: 'host1', file, store, log: silent, version: 'test', registry });
  running.push(source);
  const root = `${prefix}/v1/`;
  return {
    root,
    store,
    host,
    source,
    registry,
    writer: new FleetWriter(source, store),
    async status() {
      const kv = await etcd.get(`${root}hosts/host1/status`);
      return kv && (JSON.parse(kv.value) as HostStatus);
    },
  };
}

/** The fleet of the tests: VSID 6000's route, host2's VM contoso2 with its record, host1's VM contoso1 with its record. */
async function seed(root: string): Promise<number> {
  const { revision } = await etcd.txn(
    [],
    [
      { put: { key: `${root}customer_routes/6000/10.0.1.0/24`, value: J(route(6000, '10.0.1.0/24')) } },
      { put: { key: `${root}lookup_records/6000/10.0.1.101`, value: J(rec('10.0.1.101', '192.168.0.22', '60:00:60:00:01:01')) } },
      { put: { key: `${root}lookup_records/6000/10.0.1.102`, value: J(rec('10.0.1.102', '192.168.0.33', '60:00:60:00:01:02')) } },
      { put: { key: `${root}hosts/host1/vm_adapters/contoso1`, value: J(adapter('contoso1', '60:00:60:00:01:01')) } },
      { put: { key: `${root}hosts/host2/vm_adapters/contoso2`, value: J(adapter('contoso2', '60:00:60:00:01:02')) } },
      { put: { key: `${root}hosts/host2/provider_addresses/192.168.0.33`, value: J(pa('192.168.0.33')) } },
    ],
  );
  return revision;
}

const cas = (p: Policy) => p.lookup_records.map((r) => r.customer_address).sort();

describe('the watcher', () => {
  it("starts from every key at one revision: the fleet's records and its own, not another host's; its status says the revision", async () => {
    const r = rig();
    const rev = await seed(r.root);
    r.source.start();
    const st = await until('the status key', async () => (await r.status())?.revision === rev && r.status());
    expect(st).toMatchObject({ revision: rev, error: null, version: 'test' });
    expect(cas(r.store.policy)).toEqual(['10.0.1.101', '10.0.1.102']);
    expect(r.store.policy.vm_adapters.map((a) => a.name)).toEqual(['contoso1']);
    expect(r.store.policy.provider_addresses.map((a) => a.address)).toEqual(['192.168.0.22']);
    expect(r.source.up).toBe(true);
  });

  it('applies each change as a delta, in order; the status follows the revision', async () => {
    const r = rig();
    await seed(r.root);
    r.source.start();
    await until('synced', () => r.source.revision > 0);
    const before = r.host.applied.length;
    const put = await etcd.put(`${r.root}lookup_records/6000/10.0.1.103`, J(rec('10.0.1.103', '192.168.0.33', '60:00:60:00:01:03')));
    await until('the put applied', () => r.source.revision >= put);
    expect(cas(r.store.policy)).toEqual(['10.0.1.101', '10.0.1.102', '10.0.1.103']);
    const del = await etcd.delete(`${r.root}lookup_records/6000/10.0.1.102`);
    await until('the delete applied', () => r.source.revision >= del);
    expect(cas(r.store.policy)).toEqual(['10.0.1.101', '10.0.1.103']);
    expect(r.host.applied.length - before).toBe(2);
    await until('the status', async () => (await r.status())?.revision === del);
    // A status write that landed late (after a newer one) is put right at the next renewal.
    await etcd.put(`${r.root}hosts/host1/status`, J({ ...(await r.status()), revision: 1 }));
    await until('the status put right', async () => (await r.status())?.revision === del, 10_000);
    // Another host's keys change nothing here.
    const other = await etcd.put(`${r.root}hosts/host2/vm_adapters/contoso9`, J(adapter('contoso9', '60:00:60:00:01:09')));
    await until('seen', () => r.source.revision >= other);
    expect(r.host.applied.length - before).toBe(2);
  });

  it('refuses a revision that makes its policy invalid, keeps the last valid one, says why, and applies the next valid revision', async () => {
    const r = rig();
    const rev = await seed(r.root);
    r.source.start();
    await until('synced', () => r.source.revision >= rev);
    const good = structuredClone(r.store.policy);
    // VSID 7000 has no customer route: no routing domain.
    const bad = await etcd.put(`${r.root}lookup_records/7000/10.0.7.5`, J(rec('10.0.7.5', '192.168.0.33', '60:00:60:00:07:05', 7000)));
    const st = await until('the refusal in the status', async () => {
      const s = await r.status();
      return s?.error ? s : undefined;
    });
    expect(st.revision).toBe(rev);
    expect(st.error).toMatch(new RegExp(`^revision ${bad}: .*7000`, 's'));
    expect(r.store.policy).toEqual(good);
    expect(await r.registry.getSingleMetricAsString('nvgre_policy_store_rejected_revisions_total')).toMatch(/ 1$/m);
    await expect(r.source.waitApplied(bad)).rejects.toThrow(/7000/);
    // The route comes: the result is valid again.
    const fix = await etcd.put(`${r.root}customer_routes/7000/10.0.7.0/24`, J(route(7000, '10.0.7.0/24')));
    await until('applied', () => r.source.revision >= fix);
    expect(r.source.error).toBeNull();
    expect(cas(r.store.policy)).toContain('10.0.7.5');
    expect((await r.status())?.error ?? null).toBeNull();
  });

  it('refuses a bad value, and a value whose identity disagrees with its key, until the key is fixed', async () => {
    const r = rig();
    const rev = await seed(r.root);
    r.source.start();
    await until('synced', () => r.source.revision >= rev);
    await etcd.put(`${r.root}lookup_records/6000/10.0.1.104`, '{"customer_address": "10.0.1.104"');
    await until('refused', () => r.source.error);
    expect(r.source.error).toMatch(/not JSON/);
    const wrong = await etcd.put(`${r.root}lookup_records/6000/10.0.1.104`, J(rec('10.0.1.105', '192.168.0.33', '60:00:60:00:01:05')));
    await until('refused again', () => r.source.seen >= wrong);
    expect(r.source.error).toMatch(/put it at lookup_records\/6000\/10\.0\.1\.105/);
    const ok = await etcd.put(`${r.root}lookup_records/6000/10.0.1.104`, J(rec('10.0.1.104', '192.168.0.33', '60:00:60:00:01:04')));
    await until('applied', () => r.source.revision >= ok);
    expect(cas(r.store.policy)).toContain('10.0.1.104');
  });

  it('store unreachable: keeps what runs; back: resyncs at one revision, also when the history it missed is compacted', async () => {
    const r = rig();
    const rev = await seed(r.root);
    r.source.start();
    await until('synced', () => r.source.revision >= rev);
    await proxy.close();
    await until('down', () => !r.source.up);
    const kept = cas(r.store.policy);
    expect(kept).toEqual(['10.0.1.101', '10.0.1.102']);
    await expect(r.writer.create(LOOKUP, rec('10.0.1.110', '192.168.0.33', '60:00:60:00:01:10'))).rejects.toMatchObject({ code: 'NVGRE_ERR_UNAVAILABLE' });
    // Meanwhile: a put, a delete, and the history compacted past them.
    await etcd.put(`${r.root}lookup_records/6000/10.0.1.106`, J(rec('10.0.1.106', '192.168.0.33', '60:00:60:00:01:06')));
    const last = await etcd.delete(`${r.root}lookup_records/6000/10.0.1.101`);
    await etcd.compact(last);
    expect(cas(r.store.policy)).toEqual(kept);
    await proxy.open();
    await until('resynced', () => r.source.up && r.source.revision >= last);
    expect(cas(r.store.policy)).toEqual(['10.0.1.102', '10.0.1.106']);
  });

  it('its status key lives on a lease: gone when the watcher stops', async () => {
    const r = rig();
    await seed(r.root);
    r.source.start();
    await until('the status key', () => r.status());
    expect((await etcd.get(`${r.root}hosts/host1/status`))!.lease).not.toBe('0');
    await r.source.stop();
    expect(await etcd.get(`${r.root}hosts/host1/status`)).toBeUndefined();
  });
});

describe('the client', () => {
  it('reads a prefix page by page: every key once, in order, at one revision, however the keys are spread', async () => {
    const k = `/pages${process.pid}/`;
    const keys = [
      ...Array.from({ length: 300 }, (_, i) => `a/${String(i).padStart(4, '0')}`), // dense
      'b', // alone, far from the rest
      ...Array.from({ length: 120 }, (_, i) => `m/${'x'.repeat(70)}/${i}`), // alike in their first 64 bytes
      ...Array.from({ length: 200 }, (_, i) => `z/${i}`),
      '\u00ff\u00ff', // at the end of the byte range
    ];
    let written = 0;
    for (let i = 0; i < keys.length; i += 128) written = (await etcd.txn([], keys.slice(i, i + 128).map((key) => ({ put: { key: k + key, value: key } })))).revision;
    await etcd.put(`${k}a/0000`, 'later'); // after the revision read: not seen
    const paged = new Etcd(cluster.endpoints, { pageKeys: 25 });
    const { revision, kvs } = await paged.rangePrefix(k, written);
    paged.close();
    expect(revision).toBe(written);
    const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect(kvs.map((kv) => kv.key.slice(k.length))).toEqual(sorted);
    expect(kvs.every((kv) => kv.value === kv.key.slice(k.length))).toBe(true);
  });

  it('a watch from a compacted revision ends in CompactedError', async () => {
    const k = `/c${process.pid}/`;
    const first = await etcd.put(`${k}a`, '1');
    const last = await etcd.put(`${k}a`, '2');
    await etcd.compact(last);
    const w = etcd.watchPrefix(k, first, () => undefined);
    await expect(w.done).rejects.toBeInstanceOf(CompactedError);
  });

  it('a transaction compares mod revisions: a key changed since it was read is not overwritten', async () => {
    const key = `/cas${process.pid}`;
    const r1 = await etcd.put(key, 'a');
    await etcd.put(key, 'b');
    expect((await etcd.txn([{ key, modRevision: r1 }], [{ put: { key, value: 'c' } }])).succeeded).toBe(false);
    expect((await etcd.get(key))!.value).toBe('b');
  });
});

describe('the writer (local API)', () => {
  it('writes a record to the store by compare-and-swap and answers once this host applied it; refuses invalid ones unwritten', async () => {
    const r = rig();
    const rev = await seed(r.root);
    r.source.start();
    await until('synced', () => r.source.revision >= rev);
    const body = rec('10.0.1.120', '192.168.0.33', '60:00:60:00:01:20');
    await r.writer.create(LOOKUP, body);
    // Acknowledged: this host runs it already.
    expect(cas(r.store.policy)).toContain('10.0.1.120');
    expect(JSON.parse((await etcd.get(`${r.root}lookup_records/6000/10.0.1.120`))!.value)).toEqual(body);
    await expect(r.writer.create(LOOKUP, body)).rejects.toMatchObject({ code: 'NVGRE_ERR_EXISTS' });
    await expect(r.writer.create(LOOKUP, rec('10.0.9.1', '192.168.0.33', '60:00:60:00:09:01', 9000))).rejects.toMatchObject({ code: 'NVGRE_ERR_CONFIG' });
    expect(await etcd.get(`${r.root}lookup_records/9000/10.0.9.1`)).toBeUndefined();
    const changed = await r.writer.change(LOOKUP, ['6000', '10.0.1.120'], { provider_address: '192.168.0.44' });
    expect(changed).toMatchObject({ provider_address: '192.168.0.44' });
    expect(r.store.get(LOOKUP, ['6000', '10.0.1.120'])).toMatchObject({ provider_address: '192.168.0.44' });
    await r.writer.remove(LOOKUP, ['6000', '10.0.1.120']);
    expect(cas(r.store.policy)).not.toContain('10.0.1.120');
    expect(await etcd.get(`${r.root}lookup_records/6000/10.0.1.120`)).toBeUndefined();
    // The file's records stay the file's.
    const PA = RESOURCES.find((x) => x.section === 'provider_addresses')!;
    await expect(r.writer.remove(PA, ['192.168.0.22'])).rejects.toMatchObject({ code: 'NVGRE_ERR_CONFLICT' });
  });

  it("migrates a VM in one transaction: its adapter key to the new host, its records to the new host's PA", async () => {
    const r = rig();
    const rev = await seed(r.root);
    await etcd.put(`${r.root}hosts/host1/provider_addresses/192.168.0.22`, J(pa('192.168.0.22')));
    r.source.start();
    await until('synced', () => r.source.revision > rev);
    expect(r.store.policy.vm_adapters.map((a) => a.name)).toEqual(['contoso1']);
    const m = await r.writer.migrate({ vm_adapter: 'contoso2', to: 'host1' });
    expect(m).toMatchObject({ vm_adapter: 'contoso2', from: 'host2', to: 'host1', provider_address: '192.168.0.22', lookup_records: 1 });
    await until('applied', () => r.source.revision >= m.revision);
    expect(r.store.policy.vm_adapters.map((a) => a.name).sort()).toEqual(['contoso1', 'contoso2']);
    expect(r.store.get(LOOKUP, ['6000', '10.0.1.102'])).toMatchObject({ provider_address: '192.168.0.22' });
    // One revision: both keys carry it.
    expect((await etcd.get(`${r.root}hosts/host1/vm_adapters/contoso2`))!.modRevision).toBe(m.revision);
    expect((await etcd.get(`${r.root}lookup_records/6000/10.0.1.102`))!.modRevision).toBe(m.revision);
    expect(await etcd.get(`${r.root}hosts/host2/vm_adapters/contoso2`)).toBeUndefined();
    expect(r.writer.show().hosts.map((h) => h.host)).toEqual(['host1']);
  });
});

describe('learning', () => {
  it('writes a learned record as dynamic on a lease of learning.ttl_seconds; unrefreshed, it leaves the store and this host', async () => {
    const events = new EventBus();
    const r = rig({ ttl_seconds: 2 }, events);
    const rev = await seed(r.root);
    const l2 = await etcd.put(`${r.root}lookup_records/6000/l2only/60:00:60:00:02:05`, J({ ...rec('0.0.0.0', '192.168.0.33', '60:00:60:00:02:05'), type: 'l2only' }));
    r.source.start();
    await until('synced', () => r.source.revision >= Math.max(rev, l2));
    const learning = new FleetLearning(r.source, r.store, events, silent);
    learning.start();
    try {
      const out = await r.store.learn([{ vsid: 6000, customer_address: '10.0.1.105', mac: '60:00:60:00:02:05', provider_address: '192.168.0.33' }]);
      expect(out.learned).toHaveLength(1);
      await learning.idle();
      const kv = (await etcd.get(`${r.root}lookup_records/6000/10.0.1.105`))!;
      expect(JSON.parse(kv.value)).toMatchObject({ type: 'dynamic', provider_address: '192.168.0.33' });
      expect(kv.lease).not.toBe('0');
      // Nothing refreshes it: the lease runs out, the key goes, and this host drops the record.
      await until('the key gone', async () => !(await etcd.get(`${r.root}lookup_records/6000/10.0.1.105`)), 15_000);
      await until('dropped here', () => !cas(r.store.policy).includes('10.0.1.105'));
    } finally {
      learning.stop();
    }
  });

  it('never overwrites a static record in the store', async () => {
    const events = new EventBus();
    const r = rig(undefined, events);
    const key = `${r.root}lookup_records/6000/10.0.1.107`;
    await etcd.put(key, J(rec('10.0.1.107', '192.168.0.44', '60:00:60:00:01:07')));
    r.source.start();
    const learning = new FleetLearning(r.source, r.store, events, silent);
    learning.start();
    try {
      // As if this host had learned it before the static record reached it.
      events.emit({ event: 'learned', record: { ...rec('10.0.1.107', '192.168.0.33', '60:00:60:00:02:05'), type: 'dynamic' } as never });
      await learning.idle();
      expect(JSON.parse((await etcd.get(key))!.value)).toMatchObject({ type: 'static', provider_address: '192.168.0.44' });
    } finally {
      learning.stop();
    }
  });
});
