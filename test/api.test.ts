// The control API (docs/api.md) end to end, against a daemon running in a
// network namespace of its own: every verb on every resource, filters and
// key spellings, bulk apply, reload (API and SIGHUP), config save, next hop
// and status, and the kernel-side effects that can be observed (PA on eth1,
// provider routes, TAPs in the VM namespace).

import { existsSync, lstatSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { Lab, ipIn, ipv4Addrs, nsExec, waitFor } from '../lab/netns.js';
import { loadConfigFile } from '../src/config/index.js';
import { keyPath, query, type ApiClient, type ApiResponse } from './helpers/api.js';
import { RD1, RD2, TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvapi${process.pid % 10000}-`);
let env: HostEnv;
let d: TestDaemon;
let api: ApiClient;
let configText: string;
/** The running policy right after start (GET /v1/policy). */
let base: Record<string, any>;

const RD1_BARE_UPPER = RD1.slice(1, -1).toUpperCase();

beforeAll(async () => {
  env = await createHostEnv(lab, 'nvgred-api-');
  configText = baseConfig(env);
  d = new TestDaemon(env, env.writeConfig(configText));
  await d.start();
  api = d.api;
  base = (await api.get('/v1/policy')).body;
});

afterAll(async () => {
  const report = await lab.teardown();
  env?.cleanup();
  expect(report.errors).toEqual([]);
});

// ---------------------------------------------------------------- helpers

async function generation(): Promise<number> {
  return (await api.status()).generation;
}

/** Run one request that must apply exactly one change (generation + 1). */
async function changeOnce<T>(f: () => Promise<ApiResponse<T>>): Promise<ApiResponse<T>> {
  const g = await generation();
  const r = await f();
  expect(await generation(), `generation after ${r.status} ${r.raw.toString().slice(0, 300)}`).toBe(g + 1);
  return r;
}

/** Run one request that must change nothing (generation and the policy bytes unchanged). */
async function noChange<T>(f: () => Promise<ApiResponse<T>>): Promise<ApiResponse<T>> {
  const g = await generation();
  const before = (await api.get('/v1/policy')).raw;
  const r = await f();
  expect(await generation()).toBe(g);
  expect((await api.get('/v1/policy')).raw.equals(before)).toBe(true);
  return r;
}

function expectError(r: ApiResponse, status: number, code: string, ...mentions: string[]): void {
  expect(r.status, r.raw.toString()).toBe(status);
  expect(r.body.error.code).toBe(code);
  for (const m of mentions) expect(r.body.error.message).toContain(m);
}

/** Back to the policy the daemon started with. */
async function reset(): Promise<void> {
  const r = await api.put('/v1/policy', base);
  expect(r.status, r.raw.toString()).toBe(200);
  expect(r.body.restart_required).toEqual([]);
}

interface Tap {
  ifindex: number;
  ifname: string;
  address: string;
  mtu: number;
}
async function tap(name: string): Promise<Tap | undefined> {
  const r = await ipIn(env.vm, ['-j', 'link', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout) as Tap[])[0];
}

interface KRoute {
  dst: string;
  gateway?: string;
  dev: string;
  metric?: number;
  protocol?: string;
}
async function kernelRoutes(): Promise<KRoute[]> {
  const r = await ipIn(env.host, ['-j', 'route', 'show'], { check: true });
  return JSON.parse(r.stdout || '[]') as KRoute[];
}

const lr = (o: Record<string, unknown>) => ({ rule: 'encap', type: 'static', ...o });

/** A TAP goes once the packet workers let go of it (asynchronously, within milliseconds). */
async function tapGone(name: string): Promise<void> {
  await waitFor(async () => (await tap(name)) === undefined, 3000, { what: `TAP ${name} to go` });
}


// ---------------------------------------------------------------- status

describe('GET /v1/status', () => {
  it('reports the daemon, its counts and its ports as started', async () => {
    const s = await api.status();
    const vm1 = await tap('vm1');
    expect(vm1).toBeDefined();
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(s.host).toBe('apitest');
    expect(s.pid).toBe(d.pid);
    expect(s.uptime_seconds).toBeGreaterThan(0);
    expect(s.config_file).toBe(d.configPath);
    expect(s.state_dir).toBe(env.stateDir);
    expect(s.generation).toBe(0);
    expect(s.counts).toEqual({ provider_addresses: 1, provider_routes: 0, customer_routes: 4, lookup_records: 5, vm_adapters: 1 });
    expect(s.ports).toEqual([
      { name: 'vm1', mode: 'tap', vsid: 6000, mac: '60:00:60:00:01:01', netns: env.vm, ifindex: vm1!.ifindex, mtu: 1458, up: true, error: null },
    ]);
    expect(vm1!.mtu).toBe(1458); // eth1's 1500 less NVGRE's 42
    expect(s.last_reload.successful).toBe(true);
    expect(s.last_reload.error).toBeNull();
    expect(Date.parse(s.last_reload.timestamp)).toBeLessThanOrEqual(Date.now());
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24']);
  });

  it('counts every applied change in generation, one by one, and nothing else', async () => {
    const g0 = await generation();
    const rec = lr({ customer_address: '10.0.1.120', vsid: 6000, mac: '60:00:60:00:01:20', provider_address: '192.168.0.33' });
    expect((await api.post('/v1/lookup-records', rec)).status).toBe(201);
    expect(await generation()).toBe(g0 + 1);
    expect((await api.patch(keyPath('lookup-records', 6000, '10.0.1.120'), { vm_name: 'x' })).status).toBe(200);
    expect(await generation()).toBe(g0 + 2);
    // refused and read-only requests do not count
    expect((await api.post('/v1/lookup-records', rec)).status).toBe(409);
    expect((await api.get('/v1/lookup-records')).status).toBe(200);
    expect((await api.delete('/v1/lookup-records?vsid=4242')).body).toEqual({ deleted: 0 });
    expect(await generation()).toBe(g0 + 2);
    expect((await api.delete(keyPath('lookup-records', 6000, '10.0.1.120'))).status).toBe(200);
    const s = await api.status();
    expect(s.generation).toBe(g0 + 3);
    expect(s.counts.lookup_records).toBe(5);
  });
});

// ---------------------------------------------------------------- provider addresses

describe('/v1/provider-addresses', () => {
  const pa = { address: '192.168.50.1', prefix_length: 24, interface: 'eth1' };

  it('lists, filtered by normalized field values', async () => {
    const all = await api.get('/v1/provider-addresses');
    expect(all.status).toBe(200);
    expect(all.body).toEqual({ provider_addresses: [{ address: '192.168.0.22', prefix_length: 24, interface: 'eth1', vlan_id: 0 }] });
    expect((await api.get(`/v1/provider-addresses${query({ interface: 'eth1' })}`)).body.provider_addresses).toHaveLength(1);
    expect((await api.get(`/v1/provider-addresses${query({ prefix_length: '024' })}`)).body.provider_addresses).toHaveLength(1);
    expect((await api.get(`/v1/provider-addresses${query({ address: '192.168.0.99' })}`)).body).toEqual({ provider_addresses: [] });
  });

  it('creates (201, placed on eth1), refuses a second create (409), gets', async () => {
    const r = await changeOnce(() => api.post('/v1/provider-addresses', pa));
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ ...pa, vlan_id: 0 });
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24', '192.168.50.1/24']);
    expectError(await noChange(() => api.post('/v1/provider-addresses', pa)), 409, 'NVGRE_ERR_EXISTS', '192.168.50.1');
    const g = await api.get(keyPath('provider-addresses', '192.168.50.1'));
    expect(g.status).toBe(200);
    expect(g.body).toEqual({ ...pa, vlan_id: 0 });
    expectError(await api.get(keyPath('provider-addresses', '192.168.50.2')), 404, 'NVGRE_ERR_NOT_FOUND', '192.168.50.2');
  });

  it('changes a field (200; the kernel address follows), 404 when missing, 400 for a key field', async () => {
    const r = await changeOnce(() => api.patch(keyPath('provider-addresses', '192.168.50.1'), { prefix_length: 28 }));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ...pa, prefix_length: 28, vlan_id: 0 });
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24', '192.168.50.1/28']);
    expectError(await noChange(() => api.patch(keyPath('provider-addresses', '192.168.50.9'), { prefix_length: 28 })), 404, 'NVGRE_ERR_NOT_FOUND', '192.168.50.9');
    expectError(
      await noChange(() => api.patch(keyPath('provider-addresses', '192.168.50.1'), { address: '192.168.50.2' })),
      400,
      'NVGRE_ERR_BAD_REQUEST',
      'address',
    );
  });

  it('replaces: 201 when created, 200 when replaced, 400 when the body key is not the path key', async () => {
    const created = await changeOnce(() => api.put(keyPath('provider-addresses', '192.168.51.1'), { address: '192.168.51.1', prefix_length: 27, interface: 'eth1' }));
    expect(created.status).toBe(201);
    expect(await ipv4Addrs(env.host, 'eth1')).toContain('192.168.51.1/27');
    const replaced = await changeOnce(() => api.put(keyPath('provider-addresses', '192.168.51.1'), { address: '192.168.51.1', prefix_length: 28, interface: 'eth1' }));
    expect(replaced.status).toBe(200);
    expect(replaced.body).toEqual({ address: '192.168.51.1', prefix_length: 28, interface: 'eth1', vlan_id: 0 });
    expect(await ipv4Addrs(env.host, 'eth1')).toContain('192.168.51.1/28');
    expectError(
      await noChange(() => api.put(keyPath('provider-addresses', '192.168.51.1'), { address: '192.168.51.2', prefix_length: 28, interface: 'eth1' })),
      400,
      'NVGRE_ERR_BAD_REQUEST',
      '192.168.51.2',
      '192.168.51.1',
    );
  });

  it('a PA on a VLAN lives on a VLAN interface nvgred makes; a change of VLAN moves it; the last PA leaving takes the interface', async () => {
    const tagged = { ...pa, address: '192.168.52.1', vlan_id: 100 };
    expect((await changeOnce(() => api.post('/v1/provider-addresses', tagged))).status).toBe(201);
    // (The VLAN interface is a TAP nvgred serves: the tag on the wire is test/vlan.test.ts's.)
    const vlan = async (name: string) => {
      const r = await ipIn(env.host, ['-j', 'link', 'show', 'dev', name]);
      return r.code === 0 ? (JSON.parse(r.stdout) as Array<{ address: string; flags: string[] }>)[0] : undefined;
    };
    const eth1 = await vlan('eth1');
    expect(await vlan('eth1.100')).toMatchObject({ address: eth1!.address });
    expect((await vlan('eth1.100'))!.flags).toContain('UP');
    expect(await ipv4Addrs(env.host, 'eth1.100')).toEqual(['192.168.52.1/24']);
    expect(await ipv4Addrs(env.host, 'eth1')).not.toContain('192.168.52.1/24');
    const moved = await changeOnce(() => api.patch(keyPath('provider-addresses', '192.168.52.1'), { vlan_id: 200 }));
    expect(moved.status, moved.raw.toString()).toBe(200);
    expect(await ipv4Addrs(env.host, 'eth1.200')).toEqual(['192.168.52.1/24']);
    expect(await vlan('eth1.100'), 'the VLAN no PA uses any more is gone').toBeUndefined();
    expect(await ipv4Addrs(env.host, 'eth1'), 'the other PAs stay where they are').toContain('192.168.0.22/24');
    expect((await changeOnce(() => api.delete(keyPath('provider-addresses', '192.168.52.1')))).status).toBe(200);
    expect(await vlan('eth1.200')).toBeUndefined();
    // A MAC is still refused: nothing would act on it.
    const withMac = { ...pa, address: '192.168.52.1', mac: '02:00:00:00:00:22' };
    const macMsg = `mac: "02:00:00:00:00:22" is refused: a provider address's own MAC is not supported`;
    expectError(await noChange(() => api.post('/v1/provider-addresses', withMac)), 400, 'NVGRE_ERR_CONFIG', macMsg);
    expectError(await noChange(() => api.patch(keyPath('provider-addresses', '192.168.50.1'), { mac: '02:00:00:00:00:22' })), 400, 'NVGRE_ERR_CONFIG', macMsg);
  });

  it('flushes by filter (count) and deletes one (200, gone from eth1; then 404)', async () => {
    const f = await changeOnce(() => api.delete(`/v1/provider-addresses${query({ prefix_length: 28 })}`));
    expect(f.status).toBe(200);
    expect(f.body).toEqual({ deleted: 2 });
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24']);

    await changeOnce(() => api.post('/v1/provider-addresses', pa));
    expect(await ipv4Addrs(env.host, 'eth1')).toContain('192.168.50.1/24');
    const del = await changeOnce(() => api.delete(keyPath('provider-addresses', '192.168.50.1')));
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ deleted: { ...pa, vlan_id: 0 } });
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24']);
    expectError(await noChange(() => api.delete(keyPath('provider-addresses', '192.168.50.1'))), 404, 'NVGRE_ERR_NOT_FOUND');
  });
});

// ---------------------------------------------------------------- provider routes

describe('/v1/provider-routes', () => {
  const route = { destination_prefix: '192.168.60.0/24', next_hop: '192.168.0.1', interface: 'eth1' };
  const key = () => keyPath('provider-routes', '192.168.60.0/24', 'eth1', '192.168.0.1');
  const ours = async () => (await kernelRoutes()).filter((r) => r.dst.startsWith('192.168.6'));

  it('creates (201, in the kernel table), 409 on a second create, gets by a percent-encoded key', async () => {
    expect(key()).toBe('/v1/provider-routes/192.168.60.0%2F24/eth1/192.168.0.1');
    const r = await changeOnce(() => api.post('/v1/provider-routes', route));
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ ...route, metric: 0 });
    expect(await ours()).toEqual([expect.objectContaining({ dst: '192.168.60.0/24', gateway: '192.168.0.1', dev: 'eth1' })]);
    expectError(await noChange(() => api.post('/v1/provider-routes', route)), 409, 'NVGRE_ERR_EXISTS');
    const g = await api.get(key());
    expect(g.status).toBe(200);
    expect(g.body).toEqual({ ...route, metric: 0 });
    expect((await api.get(`/v1/provider-routes${query({ next_hop: '192.168.0.1' })}`)).body.provider_routes).toHaveLength(1);
    expect((await api.get(`/v1/provider-routes${query({ destination_prefix: '192.168.60.0/24' })}`)).body.provider_routes).toHaveLength(1);
    expect((await api.get(`/v1/provider-routes${query({ next_hop: '192.168.0.2' })}`)).body.provider_routes).toHaveLength(0);
    expectError(await api.get(keyPath('provider-routes', '192.168.60.0/24', 'eth1', '192.168.0.2')), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('changes the metric (the kernel route follows), refuses a key field (400) and a missing route (404)', async () => {
    const r = await changeOnce(() => api.patch(key(), { metric: 100 }));
    expect(r.status).toBe(200);
    expect(r.body.metric).toBe(100);
    expect(await ours()).toEqual([expect.objectContaining({ dst: '192.168.60.0/24', gateway: '192.168.0.1', metric: 100 })]);
    expectError(await noChange(() => api.patch(key(), { destination_prefix: '192.168.61.0/24' })), 400, 'NVGRE_ERR_BAD_REQUEST', 'destination_prefix');
    expectError(await noChange(() => api.patch(keyPath('provider-routes', '192.168.99.0/24', 'eth1', '192.168.0.1'), { metric: 1 })), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('replaces (201 / 200 / 400 on a key mismatch)', async () => {
    const onLink = { destination_prefix: '192.168.61.0/24', next_hop: '0.0.0.0', interface: 'eth1' };
    const k = keyPath('provider-routes', '192.168.61.0/24', 'eth1', '0.0.0.0');
    const c = await changeOnce(() => api.put(k, onLink));
    expect(c.status).toBe(201);
    const kr = (await ours()).find((r) => r.dst === '192.168.61.0/24');
    expect(kr).toMatchObject({ dev: 'eth1' });
    expect(kr?.gateway).toBeUndefined();
    const rep = await changeOnce(() => api.put(k, { ...onLink, metric: 5 }));
    expect(rep.status).toBe(200);
    expect((await ours()).find((r) => r.dst === '192.168.61.0/24')?.metric).toBe(5);
    expectError(await noChange(() => api.put(k, { ...onLink, destination_prefix: '192.168.62.0/24' })), 400, 'NVGRE_ERR_BAD_REQUEST', '192.168.62.0/24');
  });

  it('deletes (200, gone from the kernel; then 404) and flushes by filter', async () => {
    const del = await changeOnce(() => api.delete(key()));
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ deleted: { ...route, metric: 100 } });
    expect((await ours()).map((r) => r.dst)).toEqual(['192.168.61.0/24']);
    expectError(await noChange(() => api.delete(key())), 404, 'NVGRE_ERR_NOT_FOUND');
    const f = await changeOnce(() => api.delete(`/v1/provider-routes${query({ interface: 'eth1' })}`));
    expect(f.body).toEqual({ deleted: 1 });
    expect(await ours()).toEqual([]);
    expect((await api.status()).counts.provider_routes).toBe(0);
  });
});

// ---------------------------------------------------------------- customer routes

describe('/v1/customer-routes', () => {
  const cr = { routing_domain: RD1, vsid: 6002, destination_prefix: '10.2.0.0/16', next_hop: '0.0.0.0' };
  const k = (rd: string) => keyPath('customer-routes', rd, 6002, '10.2.0.0/16');

  it('lists with a routing domain in any spelling, and by VSID', async () => {
    const a = await api.get(`/v1/customer-routes${query({ routing_domain: RD1_BARE_UPPER })}`);
    expect(a.status).toBe(200);
    expect(a.body.customer_routes.map((r: any) => `${r.vsid} ${r.destination_prefix}`)).toEqual(['6000 10.0.1.0/24', '6001 10.0.2.0/24', '6001 0.0.0.0/0']);
    expect((await api.get(`/v1/customer-routes${query({ vsid: 7000 })}`)).body.customer_routes).toEqual([
      { routing_domain: RD2, vsid: 7000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 },
    ]);
  });

  it('creates (201; the next hop now uses it), 409 on a second create, gets with braces encoded or bare', async () => {
    // before: 10.2.0.5 leaves through VSID 6001's default route
    const before = await api.get(`/v1/next-hop${query({ vsid: 6000, destination: '10.2.0.5' })}`);
    expect(before.body.customer_route.destination_prefix).toBe('0.0.0.0/0');
    const r = await changeOnce(() => api.post('/v1/customer-routes', { ...cr, routing_domain: RD1_BARE_UPPER }));
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ ...cr, metric: 0 });
    const after = await api.get(`/v1/next-hop${query({ vsid: 6000, destination: '10.2.0.5' })}`);
    expect(after.body).toMatchObject({ action: 'drop', drop_reason: 'no_lookup_record' });
    expectError(await noChange(() => api.post('/v1/customer-routes', cr)), 409, 'NVGRE_ERR_EXISTS');
    expect(k(RD1)).toContain('%7B12345678-1000-2000-3000-123456780001%7D/6002/10.2.0.0%2F16');
    for (const rd of [RD1, RD1_BARE_UPPER]) {
      const g = await api.get(k(rd));
      expect(g.status, rd).toBe(200);
      expect(g.body).toEqual({ ...cr, metric: 0 });
    }
    expectError(await api.get(keyPath('customer-routes', RD2, 6002, '10.2.0.0/16')), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('changes (200; 400 for a key field; 404 when missing) and replaces (200 / 201 / 400)', async () => {
    const c = await changeOnce(() => api.patch(k(RD1), { metric: 5 }));
    expect(c.status).toBe(200);
    expect(c.body.metric).toBe(5);
    expectError(await noChange(() => api.patch(k(RD1), { vsid: 6000 })), 400, 'NVGRE_ERR_BAD_REQUEST', 'vsid');
    expectError(await noChange(() => api.patch(keyPath('customer-routes', RD1, 6002, '10.3.0.0/16'), { metric: 1 })), 404, 'NVGRE_ERR_NOT_FOUND');
    const rep = await changeOnce(() => api.put(k(RD1), { ...cr, metric: 9 }));
    expect(rep.status).toBe(200);
    expect(rep.body.metric).toBe(9);
    const k2 = keyPath('customer-routes', RD1, 6002, '10.3.0.0/16');
    const created = await changeOnce(() => api.put(k2, { ...cr, destination_prefix: '10.3.0.0/16' }));
    expect(created.status).toBe(201);
    expectError(await noChange(() => api.put(k2, { ...cr, destination_prefix: '10.4.0.0/16' })), 400, 'NVGRE_ERR_BAD_REQUEST');
  });

  it('refuses to delete the last route of a VSID that still has records (400), deletes (200, then 404), flushes', async () => {
    const r = await noChange(() => api.delete(keyPath('customer-routes', RD2, 7000, '10.0.1.0/24')));
    expectError(r, 400, 'NVGRE_ERR_CONFIG', '7000');
    expect(r.body.error.details.map((x: any) => x.code)).toContain('NVGRE_ERR_VSID_UNBOUND');

    const del = await changeOnce(() => api.delete(k(RD1)));
    expect(del.status).toBe(200);
    expect(del.body.deleted).toEqual({ ...cr, metric: 9 });
    expectError(await noChange(() => api.delete(k(RD1))), 404, 'NVGRE_ERR_NOT_FOUND');
    await changeOnce(() => api.post('/v1/customer-routes', cr));
    const f = await changeOnce(() => api.delete(`/v1/customer-routes${query({ vsid: 6002 })}`));
    expect(f.body).toEqual({ deleted: 2 });
    expect((await api.status()).counts.customer_routes).toBe(4);
  });
});

// ---------------------------------------------------------------- lookup records

describe('/v1/lookup-records', () => {
  const cas = (r: ApiResponse) => (r.body.lookup_records as any[]).map((x) => `${x.vsid} ${x.customer_address}`);

  it('lists filtered by vsid, provider_address, customer_address and mac in any spelling', async () => {
    expect(cas(await api.get(`/v1/lookup-records${query({ vsid: 6000 })}`))).toEqual(['6000 10.0.1.1', '6000 10.0.1.101', '6000 10.0.1.103']);
    expect(cas(await api.get(`/v1/lookup-records${query({ provider_address: '192.168.0.33' })}`))).toEqual(['6000 10.0.1.103', '7000 10.0.1.101']);
    expect(cas(await api.get(`/v1/lookup-records${query({ customer_address: '10.0.1.101' })}`))).toEqual(['6000 10.0.1.101', '7000 10.0.1.101']);
    for (const mac of ['600060000101', '60-00-60-00-01-01', '60:00:60:00:01:01', '60-00-60-00-01-01'.toUpperCase()]) {
      expect(cas(await api.get(`/v1/lookup-records${query({ mac })}`)), mac).toEqual(['6000 10.0.1.101']);
    }
    expect(cas(await api.get(`/v1/lookup-records${query({ vsid: 6000, provider_address: '192.168.0.22' })}`))).toEqual(['6000 10.0.1.1', '6000 10.0.1.101']);
    expect(cas(await api.get(`/v1/lookup-records${query({ vm_name: 'MT-GW' })}`))).toEqual(['6001 10.0.2.2']);
    expect((await api.get(`/v1/lookup-records${query({ vsid: 6000, mac: '70:00:70:00:01:01' })}`)).body).toEqual({ lookup_records: [] });
  });

  it('creates (201, normalized, defaults filled in), 409 on a second create, gets by key in any spelling', async () => {
    const r = await changeOnce(() =>
      api.post('/v1/lookup-records', { customer_address: '10.0.1.104', vsid: 6000, mac: '60-00-60-00-02-04', provider_address: '192.168.0.33' }),
    );
    expect(r.status).toBe(201);
    expect(r.body).toEqual(lr({ customer_address: '10.0.1.104', vsid: 6000, mac: '60:00:60:00:02:04', provider_address: '192.168.0.33' }));
    expectError(await noChange(() => api.post('/v1/lookup-records', r.body)), 409, 'NVGRE_ERR_EXISTS', '10.0.1.104');
    const g = await api.get(keyPath('lookup-records', 6000, '10.0.1.104'));
    expect(g.status).toBe(200);
    expect(g.body).toEqual(r.body);
    // with the optional mac segment, in another spelling
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.104', '600060000204'))).body).toEqual(r.body);
    expectError(await api.get(keyPath('lookup-records', 6000, '10.0.1.104', '600060000299')), 404, 'NVGRE_ERR_NOT_FOUND');
    expectError(await api.get(keyPath('lookup-records', 7000, '10.0.1.104')), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('normalizes IPv6 customer addresses in bodies, keys and filters', async () => {
    await changeOnce(() => api.post('/v1/customer-routes', { routing_domain: RD1, vsid: 6003, destination_prefix: 'FD00:63:0::/64', next_hop: '::' }));
    const r = await changeOnce(() =>
      api.post('/v1/lookup-records', { customer_address: 'FD00:63:0:0:0:0:0:5', vsid: 6003, mac: '60:00:60:00:63:05', provider_address: '192.168.0.33' }),
    );
    expect(r.status).toBe(201);
    expect(r.body.customer_address).toBe('fd00:63::5');
    expect((await api.get(keyPath('lookup-records', 6003, 'fd00:63:0::0:5'))).body).toEqual(r.body);
    expect(cas(await api.get(`/v1/lookup-records${query({ customer_address: 'FD00:0063::5' })}`))).toEqual(['6003 fd00:63::5']);
    const nh = await api.get(`/v1/next-hop${query({ vsid: 6003, destination: 'fd00:63::5' })}`);
    expect(nh.body).toMatchObject({ action: 'encap', provider_address: '192.168.0.33', encap_vsid: 6003 });
  });

  it('replaces: 201 when created, 200 when replaced, 400 when the body key is not the path key', async () => {
    const k = keyPath('lookup-records', 6000, '10.0.1.105');
    const rec = lr({ customer_address: '10.0.1.105', vsid: 6000, mac: '60:00:60:00:02:05', provider_address: '192.168.0.33' });
    const c = await changeOnce(() => api.put(k, rec));
    expect(c.status).toBe(201);
    expect(c.body).toEqual(rec);
    const rep = await changeOnce(() => api.put(k, { ...rec, provider_address: '192.168.0.44' }));
    expect(rep.status).toBe(200);
    expect(rep.body.provider_address).toBe('192.168.0.44');
    expect((await api.get(k)).body.provider_address).toBe('192.168.0.44');
    const mismatch = await noChange(() => api.put(keyPath('lookup-records', 6000, '10.0.1.106'), rec));
    expectError(mismatch, 400, 'NVGRE_ERR_BAD_REQUEST', '10.0.1.105', '10.0.1.106');
    const otherVsid = await noChange(() => api.put(keyPath('lookup-records', 7000, '10.0.1.105'), rec));
    expectError(otherVsid, 400, 'NVGRE_ERR_BAD_REQUEST');
  });

  it('changes non-key fields (200), 404 when missing, 400 when the body names a key field', async () => {
    const k = keyPath('lookup-records', 6000, '10.0.1.105');
    const r = await changeOnce(() => api.patch(k, { vm_name: 'Contoso5', rule: 'none' }));
    expect(r.status).toBe(200);
    expect(r.body).toEqual(lr({ customer_address: '10.0.1.105', vsid: 6000, mac: '60:00:60:00:02:05', provider_address: '192.168.0.44', vm_name: 'Contoso5', rule: 'none' }));
    const nh = await api.get(`/v1/next-hop${query({ vsid: 6000, destination: '10.0.1.105' })}`);
    expect(nh.body).toMatchObject({ action: 'drop', drop_reason: 'translation_none' });
    expectError(await noChange(() => api.patch(keyPath('lookup-records', 6000, '10.0.1.199'), { vm_name: 'x' })), 404, 'NVGRE_ERR_NOT_FOUND', '10.0.1.199');
    expectError(await noChange(() => api.patch(k, { customer_address: '10.0.1.106' })), 400, 'NVGRE_ERR_BAD_REQUEST', 'customer_address');
    expectError(await noChange(() => api.patch(k, { vsid: 6001 })), 400, 'NVGRE_ERR_BAD_REQUEST', 'vsid');
  });

  it('deletes one (200 with the record; then 404)', async () => {
    const k = keyPath('lookup-records', 6000, '10.0.1.105');
    const before = (await api.get(k)).body;
    const r = await changeOnce(() => api.delete(k));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ deleted: before });
    expectError(await api.get(k), 404, 'NVGRE_ERR_NOT_FOUND');
    expectError(await noChange(() => api.delete(k)), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('needs the mac segment for L2Only records (CA 0.0.0.0) once two exist (409 without it)', async () => {
    const l2 = (mac: string) => ({ customer_address: '0.0.0.0', vsid: 6000, mac, provider_address: '192.168.0.33', type: 'l2only' });
    const a = await changeOnce(() => api.post('/v1/lookup-records', l2('60:00:60:00:03:01')));
    expect(a.status).toBe(201);
    const noMac = keyPath('lookup-records', 6000, '0.0.0.0');
    // one: the short key finds it
    expect((await api.get(noMac)).body).toEqual(lr(l2('60:00:60:00:03:01')));
    expect((await changeOnce(() => api.post('/v1/lookup-records', l2('60-00-60-00-03-02')))).status).toBe(201);
    // the same MAC again is the same record
    expectError(await noChange(() => api.post('/v1/lookup-records', l2('600060000302'))), 409, 'NVGRE_ERR_EXISTS');

    expectError(await api.get(noMac), 409, 'NVGRE_ERR_CONFLICT', 'mac');
    expectError(await noChange(() => api.delete(noMac)), 409, 'NVGRE_ERR_CONFLICT', 'mac');
    expectError(await noChange(() => api.patch(noMac, { vm_name: 'x' })), 409, 'NVGRE_ERR_CONFLICT');

    const withMac = keyPath('lookup-records', 6000, '0.0.0.0', '60-00-60-00-03-02');
    expect((await api.get(withMac)).body.mac).toBe('60:00:60:00:03:02');
    const p = await changeOnce(() => api.patch(withMac, { vm_name: 'L2b' }));
    expect(p.body).toEqual(lr({ ...l2('60:00:60:00:03:02'), vm_name: 'L2b' }));
    expect((await api.get(keyPath('lookup-records', 6000, '0.0.0.0', '600060000301'))).body.vm_name).toBeUndefined();
    const rep = await changeOnce(() => api.put(withMac, { ...l2('60:00:60:00:03:02'), vm_name: 'L2c' }));
    expect(rep.status).toBe(200);
    const del = await changeOnce(() => api.delete(withMac));
    expect(del.body.deleted).toEqual(lr({ ...l2('60:00:60:00:03:02'), vm_name: 'L2c' }));
    // one left: the short key is unambiguous again
    expect((await api.get(noMac)).body.mac).toBe('60:00:60:00:03:01');
  });

  it('flushes by filter (count), and refuses a flush without a filter unless ?all=true', async () => {
    for (const [ca, mac] of [
      ['10.0.1.110', '60:00:60:00:02:10'],
      ['10.0.1.111', '60:00:60:00:02:11'],
      ['10.0.1.112', '60:00:60:00:02:12'],
    ]) {
      await changeOnce(() => api.post('/v1/lookup-records', { customer_address: ca, vsid: 6000, mac, provider_address: '192.168.0.55' }));
    }
    const f = await changeOnce(() => api.delete(`/v1/lookup-records${query({ provider_address: '192.168.0.55', vsid: 6000 })}`));
    expect(f.status).toBe(200);
    expect(f.body).toEqual({ deleted: 3 });
    expect((await api.get(`/v1/lookup-records${query({ provider_address: '192.168.0.55' })}`)).body.lookup_records).toEqual([]);

    const total = (await api.status()).counts.lookup_records;
    expect(total).toBeGreaterThan(5);
    expectError(await noChange(() => api.delete('/v1/lookup-records')), 400, 'NVGRE_ERR_BAD_REQUEST', 'all=true');
    expectError(await noChange(() => api.delete('/v1/lookup-records?all=false')), 400, 'NVGRE_ERR_BAD_REQUEST', 'all=true');
    expectError(await noChange(() => api.delete('/v1/lookup-records?all=1')), 400, 'NVGRE_ERR_BAD_REQUEST');
    const all = await changeOnce(() => api.delete('/v1/lookup-records?all=true'));
    expect(all.body).toEqual({ deleted: total });
    expect((await api.get('/v1/lookup-records')).body).toEqual({ lookup_records: [] });
    await reset();
    expect((await api.status()).counts.lookup_records).toBe(5);
  });
});

// ---------------------------------------------------------------- VM adapters

describe('/v1/vm-adapters', () => {
  let vm1Index: number;
  const vm2 = () => ({ name: 'vm2', mac: '60:00:60:00:01:02', vsid: 6000, netns: env.vm });
  const portsOf = async () => (await api.status()).ports.map((p) => `${p.name}:${p.ifindex}:${p.up}`);

  beforeAll(async () => {
    vm1Index = (await tap('vm1'))!.ifindex;
  });

  it('lists filtered by mac in another spelling and by vsid', async () => {
    expect((await api.get(`/v1/vm-adapters${query({ mac: '600060000101' })}`)).body).toEqual({
      vm_adapters: [{ name: 'vm1', vm_name: 'Contoso1', mac: '60:00:60:00:01:01', vsid: 6000, netns: env.vm }],
    });
    expect((await api.get(`/v1/vm-adapters${query({ vsid: 7000 })}`)).body).toEqual({ vm_adapters: [] });
  });

  it('creates (201: a TAP in the VM namespace, the other TAP untouched), 409 on a second create', async () => {
    const r = await changeOnce(() => api.post('/v1/vm-adapters', { ...vm2(), mac: '60-00-60-00-01-02' }));
    expect(r.status).toBe(201);
    expect(r.body).toEqual(vm2());
    const t = await tap('vm2');
    expect(t).toMatchObject({ ifname: 'vm2', address: '60:00:60:00:01:02', mtu: 1458 });
    expect((await tap('vm1'))!.ifindex).toBe(vm1Index);
    expect(await portsOf()).toEqual([`vm1:${vm1Index}:true`, `vm2:${t!.ifindex}:true`]);
    expectError(await noChange(() => api.post('/v1/vm-adapters', vm2())), 409, 'NVGRE_ERR_EXISTS', 'vm2');
    expect((await api.get(keyPath('vm-adapters', 'vm2'))).body).toEqual(vm2());
    expectError(await api.get(keyPath('vm-adapters', 'vm9')), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('changes (200: vm_name keeps the TAP as it is), 400 for the name, 404 when missing', async () => {
    const before = (await tap('vm2'))!.ifindex;
    const a = await changeOnce(() => api.patch(keyPath('vm-adapters', 'vm2'), { vm_name: 'Contoso2' }));
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ name: 'vm2', vm_name: 'Contoso2', mac: '60:00:60:00:01:02', vsid: 6000, netns: env.vm });
    expect((await api.get(keyPath('vm-adapters', 'vm2'))).body).toEqual(a.body);
    expect((await tap('vm2'))!.ifindex).toBe(before);
    expect((await tap('vm1'))!.ifindex).toBe(vm1Index);
    expectError(await noChange(() => api.patch(keyPath('vm-adapters', 'vm2'), { name: 'vm3' })), 400, 'NVGRE_ERR_BAD_REQUEST', 'name');
    expectError(await noChange(() => api.patch(keyPath('vm-adapters', 'vm9'), { mtu: 1400 })), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('replaces (201 creates a TAP / 200 / 400 on a key mismatch)', async () => {
    const vm3 = { name: 'vm3', mac: '60:00:60:00:01:03', vsid: 6000, netns: env.vm };
    const c = await changeOnce(() => api.put(keyPath('vm-adapters', 'vm3'), vm3));
    expect(c.status).toBe(201);
    const idx = (await tap('vm3'))!.ifindex;
    const rep = await changeOnce(() => api.put(keyPath('vm-adapters', 'vm3'), { ...vm3, vm_name: 'Contoso3x' }));
    expect(rep.status).toBe(200);
    expect((await tap('vm3'))!.ifindex).toBe(idx);
    expectError(await noChange(() => api.put(keyPath('vm-adapters', 'vm3'), { ...vm3, name: 'vm4' })), 400, 'NVGRE_ERR_BAD_REQUEST', 'vm4');
  });

  it('deletes (200: its TAP goes, the others stay as they were; then 404) and flushes by filter', async () => {
    const vm3Index = (await tap('vm3'))!.ifindex;
    const r = await changeOnce(() => api.delete(keyPath('vm-adapters', 'vm2')));
    expect(r.status).toBe(200);
    expect(r.body.deleted).toMatchObject({ name: 'vm2', vm_name: 'Contoso2', mac: '60:00:60:00:01:02' });
    await tapGone('vm2');
    expect((await tap('vm1'))!.ifindex).toBe(vm1Index);
    expect((await tap('vm3'))!.ifindex).toBe(vm3Index);
    expectError(await noChange(() => api.delete(keyPath('vm-adapters', 'vm2'))), 404, 'NVGRE_ERR_NOT_FOUND');

    await changeOnce(() => api.post('/v1/vm-adapters', { name: 'fab1', mac: '70:00:70:00:01:01', vsid: 7000, netns: env.vm }));
    expect(await tap('fab1')).toBeDefined();
    const f = await changeOnce(() => api.delete(`/v1/vm-adapters${query({ vsid: 7000 })}`));
    expect(f.body).toEqual({ deleted: 1 });
    await tapGone('fab1');
    await changeOnce(() => api.delete(keyPath('vm-adapters', 'vm3')));
    await tapGone('vm3');
    expect((await tap('vm1'))!.ifindex).toBe(vm1Index);
    expect(await portsOf()).toEqual([`vm1:${vm1Index}:true`]);
  });

  // A change that recreates a TAP under the same name (mtu, mac or netns)
  // must not race the packet workers still holding the old TAP: removing a
  // port returns only once every worker has let it go. (It once failed with
  // EBUSY in up to ~40% of such changes.)
  describe('changes that recreate a TAP in place (mtu)', () => {
    const k = () => keyPath('vm-adapters', 'vm7');
    beforeAll(async () => {
      expect((await api.post('/v1/vm-adapters', { name: 'vm7', mac: '60:00:60:00:01:07', vsid: 6000, netns: env.vm })).status).toBe(201);
    });
    afterAll(async () => {
      expect((await api.delete(k())).status).toBe(200);
      await tapGone('vm7');
      expect((await tap('vm1'))!.ifindex).toBe(vm1Index);
    });

    it('all apply: 1500 mtu changes in a row, each 200 with the TAP recreated at the new MTU', async () => {
      let last = (await tap('vm7'))!.ifindex;
      for (let i = 0; i < 1500; i++) {
        const mtu = i % 2 ? 1400 : 1380;
        const r = await api.patch(k(), { mtu });
        expect(r.status, `change ${i + 1}: ${r.raw.toString()}`).toBe(200);
        if (i % 50 === 49) {
          const t = (await tap('vm7'))!;
          expect([t.mtu, t.ifindex === last]).toEqual([mtu, false]);
          last = t.ifindex;
        }
      }
    });
  });
});

// ---------------------------------------------------------------- next hop

describe('GET /v1/next-hop', () => {
  const nh = async (vsid: number, destination: string) => {
    const r = await api.get(`/v1/next-hop${query({ vsid, destination })}`);
    expect(r.status, r.raw.toString()).toBe(200);
    return r.body;
  };
  const route6000 = { routing_domain: RD1, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 };

  it('encap to a remote VM in the same VSID', async () => {
    expect(await nh(6000, '10.0.1.103')).toEqual({
      vsid: 6000,
      destination: '10.0.1.103',
      routing_domain: RD1,
      action: 'encap',
      customer_route: route6000,
      lookup_record: lr({ customer_address: '10.0.1.103', vsid: 6000, mac: '60:00:60:00:02:03', provider_address: '192.168.0.33', vm_name: 'Contoso3' }),
      provider_address: '192.168.0.33',
      local_provider_address: '192.168.0.22',
      encap_vsid: 6000,
    });
  });

  it('encap through another VSID of the routing domain (the default route via the gateway VM)', async () => {
    expect(await nh(6000, '10.1.3.100')).toEqual({
      vsid: 6000,
      destination: '10.1.3.100',
      routing_domain: RD1,
      action: 'encap',
      customer_route: { routing_domain: RD1, vsid: 6001, destination_prefix: '0.0.0.0/0', next_hop: '10.0.2.2', metric: 0 },
      lookup_record: lr({ customer_address: '10.0.2.2', vsid: 6001, mac: '60:01:60:01:03:01', provider_address: '192.168.0.11', vm_name: 'MT-GW' }),
      provider_address: '192.168.0.11',
      local_provider_address: '192.168.0.22',
      encap_vsid: 6001,
    });
  });

  it('deliver to a local VM adapter', async () => {
    expect(await nh(6000, '10.0.1.101')).toEqual({
      vsid: 6000,
      destination: '10.0.1.101',
      routing_domain: RD1,
      action: 'deliver',
      customer_route: route6000,
      lookup_record: lr({ customer_address: '10.0.1.101', vsid: 6000, mac: '60:00:60:00:01:01', provider_address: '192.168.0.22', vm_name: 'Contoso1' }),
      provider_address: null,
      local_provider_address: null,
      encap_vsid: null,
    });
  });

  it('gateway for the .1 of a customer subnet (with or without a record for it)', async () => {
    for (const [vsid, dst] of [
      [6000, '10.0.1.1'],
      [6001, '10.0.2.1'],
      [7000, '10.0.1.1'],
    ] as const) {
      expect(await nh(vsid, dst), `${vsid} ${dst}`).toMatchObject({ vsid, destination: dst, action: 'gateway', encap_vsid: null });
    }
    expect((await nh(7000, '10.0.1.1')).routing_domain).toBe(RD2);
  });

  it('drop no_route: no customer route covers the destination', async () => {
    expect(await nh(7000, '10.9.9.9')).toEqual({
      vsid: 7000,
      destination: '10.9.9.9',
      routing_domain: RD2,
      action: 'drop',
      drop_reason: 'no_route',
      customer_route: null,
      lookup_record: null,
      provider_address: null,
      local_provider_address: null,
      encap_vsid: null,
    });
  });

  it('drop no_lookup_record: routed, but no record for the CA', async () => {
    const r = await nh(6000, '10.0.1.77');
    expect(r).toMatchObject({
      vsid: 6000,
      destination: '10.0.1.77',
      routing_domain: RD1,
      action: 'drop',
      drop_reason: 'no_lookup_record',
      lookup_record: null,
      provider_address: null,
      local_provider_address: null,
      encap_vsid: null,
    });
    // The route matched; only its target has no record.
    expect(r.customer_route).toEqual({ routing_domain: RD1, vsid: 6000, destination_prefix: '10.0.1.0/24', next_hop: '0.0.0.0', metric: 0 });
  });

  it('drop unknown_vsid, and 400 without vsid or destination', async () => {
    expect(await nh(9999, '10.0.1.1')).toMatchObject({ action: 'drop', drop_reason: 'unknown_vsid', routing_domain: null });
    expectError(await api.get('/v1/next-hop?vsid=6000'), 400, 'NVGRE_ERR_BAD_REQUEST', 'destination');
    expectError(await api.get('/v1/next-hop?destination=10.0.1.1'), 400, 'NVGRE_ERR_BAD_REQUEST', 'vsid');
    expectError(await api.get('/v1/next-hop?vsid=6000&destination=10.0.1.300'), 400, 'NVGRE_ERR_BAD_REQUEST', '10.0.1.300');
  });
});

// ---------------------------------------------------------------- whole policy

describe('GET and PUT /v1/policy', () => {
  it('GET returns the running policy as JSON, and as YAML when asked', async () => {
    await reset();
    const j = await api.get('/v1/policy');
    expect(j.headers['content-type']).toBe('application/json');
    expect(j.body).toEqual(base);
    expect(j.body.api).toEqual({ socket: env.socket });
    const y = await api.get('/v1/policy', { accept: 'application/yaml' });
    expect(y.status).toBe(200);
    expect(y.headers['content-type']).toBe('application/yaml');
    expect(parseYaml(y.raw.toString())).toEqual(base);
  });

  it('applies a JSON document as one change and counts what changed per section', async () => {
    const doc = structuredClone(base);
    doc.lookup_records = doc.lookup_records.filter((r: any) => r.customer_address !== '10.0.1.103'); // removed
    doc.lookup_records.find((r: any) => r.vsid === 7000).provider_address = '192.168.0.44'; // changed
    doc.lookup_records.push({ customer_address: '10.0.1.130', vsid: 6000, mac: '60-00-60-00-01-30', provider_address: '192.168.0.33' }); // added
    doc.provider_routes = [{ destination_prefix: '192.168.70.0/24', next_hop: '192.168.0.1', interface: 'eth1' }]; // added
    doc.host = { name: 'bulk' };
    const r = await changeOnce(() => api.put('/v1/policy', doc));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      applied: true,
      changes: {
        provider_addresses: { added: 0, removed: 0, changed: 0 },
        provider_routes: { added: 1, removed: 0, changed: 0 },
        customer_routes: { added: 0, removed: 0, changed: 0 },
        lookup_records: { added: 1, removed: 1, changed: 1 },
        vm_adapters: { added: 0, removed: 0, changed: 0 },
      },
      restart_required: [],
    });
    const now = (await api.get('/v1/policy')).body;
    expect(now.host).toEqual({ name: 'bulk' });
    expect(now.lookup_records.find((x: any) => x.customer_address === '10.0.1.130')).toEqual(
      lr({ customer_address: '10.0.1.130', vsid: 6000, mac: '60:00:60:00:01:30', provider_address: '192.168.0.33' }),
    );
    expect((await kernelRoutes()).some((k) => k.dst === '192.168.70.0/24' && k.gateway === '192.168.0.1')).toBe(true);
    expect((await api.status()).host).toBe('bulk');
  });

  it('applies a YAML document (Content-Type: application/yaml)', async () => {
    const r = await changeOnce(() => api.put('/v1/policy', toYaml(base), { 'content-type': 'application/yaml' }));
    expect(r.status, r.raw.toString()).toBe(200);
    expect(r.body.changes.lookup_records).toEqual({ added: 1, removed: 1, changed: 1 });
    expect(r.body.changes.provider_routes).toEqual({ added: 0, removed: 1, changed: 0 });
    expect(r.body.restart_required).toEqual([]);
    expect((await api.get('/v1/policy')).body).toEqual(base);
    expect((await kernelRoutes()).some((k) => k.dst === '192.168.70.0/24')).toBe(false);
  });

  it('lists api.socket, metrics.listen and state_dir in restart_required, and does not apply them', async () => {
    const other = {
      ...structuredClone(base),
      api: { socket: join(env.dir, 'other.sock') },
      metrics: { listen: '127.0.0.1:9471' },
      state_dir: join(env.dir, 'other-state'),
    };
    const stateBefore = readFileSync(join(env.stateDir, 'policy.json'));
    const r = await changeOnce(() => api.put('/v1/policy', other));
    expect(r.status).toBe(200);
    expect([...r.body.restart_required].sort()).toEqual(['api.socket', 'metrics.listen', 'state_dir']);
    // not applied: same socket, same metrics listener, same state directory
    expect(existsSync(join(env.dir, 'other.sock'))).toBe(false);
    expect(existsSync(join(env.dir, 'other-state'))).toBe(false);
    const ss = await nsExec(env.host, ['ss', '-ltnH'], { check: true });
    expect(ss.stdout).toContain('127.0.0.1:9470');
    expect(ss.stdout).not.toContain('127.0.0.1:9471');
    const s = await api.status();
    expect(s.state_dir).toBe(env.stateDir);
    // the change itself was persisted, in the old state_dir
    expect(readFileSync(join(env.stateDir, 'policy.json')).equals(stateBefore)).toBe(false);
    // one setting alone
    const one = await api.put('/v1/policy', { ...structuredClone(base), metrics: { ...base.metrics, listen: '127.0.0.1:9471' } });
    expect(one.body.restart_required).toEqual(['metrics.listen']);
    const cap = await api.put('/v1/policy', { ...structuredClone(base), metrics: { ...base.metrics, per_vsid_max: 8 } });
    expect(cap.body.restart_required).toEqual(['metrics.per_vsid_max']);
    await reset();
  });
});

// ---------------------------------------------------------------- log levels

describe('GET and PUT /v1/log', () => {
  afterAll(async () => {
    await api.put('/v1/log', { level: 'info' });
  });
  const infoLines = () => d.logLines().filter((l) => l.level === 'info' && l.component === 'policy').length;

  it('reports the levels, and changes one component or all at run time (no policy change)', async () => {
    const g = await api.get('/v1/log');
    expect(g.status).toBe(200);
    expect(g.body.level).toBe('info');
    expect(g.body.components).toMatchObject({ api: 'info', policy: 'info', dataplane: 'info' });
    const one = await noChange(() => api.put('/v1/log', { level: 'debug', component: 'api' }));
    expect(one.status).toBe(200);
    expect(one.body.components.api).toBe('debug');
    expect(one.body.components.policy).toBe('info');
    expect(one.body.level).toBe('info');
    expect((await api.get('/v1/log')).body).toEqual(one.body);

    // all to warn: a change no longer logs its info line
    const all = await noChange(() => api.put('/v1/log', { level: 'warn' }));
    expect(new Set([all.body.level, ...Object.values(all.body.components)])).toEqual(new Set(['warn']));
    const n0 = infoLines();
    const rec = { customer_address: '10.0.1.180', vsid: 6000, mac: '60:00:60:00:01:80', provider_address: '192.168.0.33' };
    expect((await api.post('/v1/lookup-records', rec)).status).toBe(201);
    await new Promise((r) => setTimeout(r, 200));
    expect(infoLines()).toBe(n0);
    // back to info: it does again (the level change itself is logged too)
    await api.put('/v1/log', { level: 'info' });
    expect((await api.delete(keyPath('lookup-records', 6000, '10.0.1.180'))).status).toBe(200);
    await waitFor(() => d.logLines().some((l) => l.msg === 'lookup record deleted'), 2000, { what: 'the info line of the delete' });
  });

  it('refuses a bad level (400), an unknown component (404), a component that is not a string (400), DELETE (405)', async () => {
    expectError(await noChange(() => api.put('/v1/log', { level: 'loud' })), 400, 'NVGRE_ERR_VALUE', '"loud"');
    expectError(await noChange(() => api.put('/v1/log', {})), 400, 'NVGRE_ERR_VALUE', 'level');
    expectError(await noChange(() => api.put('/v1/log', { level: 'debug', component: 'nowhere' })), 404, 'NVGRE_ERR_NOT_FOUND', '"nowhere"');
    expectError(await noChange(() => api.put('/v1/log', { level: 'debug', component: 5 })), 400, 'NVGRE_ERR_BAD_REQUEST', 'component');
    expectError(await api.delete('/v1/log'), 405, 'NVGRE_ERR_METHOD', 'DELETE');
    expect((await api.get('/v1/log')).body.level).toBe('info');
  });
});

// ---------------------------------------------------------------- reload

describe('POST /v1/reload and SIGHUP', () => {
  afterAll(async () => {
    env.writeConfig(configText);
    await api.post('/v1/reload');
  });

  const withRecord = (ca: string, mac: string, hostName: string) =>
    baseConfig(env, { hostName }).replace(
      'lookup_records:\n',
      `lookup_records:\n  - { customer_address: ${ca}, vsid: 6000, mac: "${mac}", provider_address: 192.168.0.33 }\n`,
    );

  it('re-reads the edited config file and applies the difference', async () => {
    await reset();
    const before = await api.status();
    env.writeConfig(withRecord('10.0.1.140', '60:00:60:00:01:40', 'reloaded'));
    const r = await changeOnce(() => api.post('/v1/reload'));
    expect(r.status, r.raw.toString()).toBe(200);
    expect(r.body.changes.lookup_records).toEqual({ added: 1, removed: 0, changed: 0 });
    expect(r.body.changes.vm_adapters).toEqual({ added: 0, removed: 0, changed: 0 });
    expect(r.body.restart_required).toEqual([]);
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.140'))).status).toBe(200);
    const s = await api.status();
    expect(s.host).toBe('reloaded');
    expect(s.last_reload.successful).toBe(true);
    expect(s.last_reload.error).toBeNull();
    expect(Date.parse(s.last_reload.timestamp)).toBeGreaterThan(Date.parse(before.last_reload.timestamp));
  });

  it('refuses a bad file with 400 and details, and changes nothing', async () => {
    const bad = withRecord('10.0.1.141', '60:00:60:00:01:41', 'broken').replace('vsid: 7000, mac: "70:00:70:00:01:01"', 'vsid: 4095, mac: "70:00:70:00:01:01"');
    env.writeConfig(bad);
    const r = await noChange(() => api.post('/v1/reload'));
    expectError(r, 400, 'NVGRE_ERR_CONFIG', '4095');
    const det = r.body.error.details.find((x: any) => x.code === 'NVGRE_ERR_VSID_RANGE');
    expect(det).toMatchObject({ path: 'lookup_records[5].vsid', value: 4095 });
    expect(det.line).toBe(bad.split('\n').findIndex((l) => l.includes('vsid: 4095')) + 1);
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.141'))).status).toBe(404);
    const s = await api.status();
    expect(s.host).toBe('reloaded');
    expect(s.last_reload.successful).toBe(false);
    expect(s.last_reload.error).toContain('4095');

    env.writeConfig('lookup_records: [ {\n');
    expectError(await noChange(() => api.post('/v1/reload')), 400, 'NVGRE_ERR_YAML');
  });

  it('reloads on SIGHUP to the daemon PID', async () => {
    const g = await generation();
    env.writeConfig(withRecord('10.0.1.142', '60:00:60:00:01:42', 'hup'));
    d.signal('SIGHUP');
    await waitFor(async () => (await api.status()).host === 'hup', 10_000, { what: 'the SIGHUP reload' });
    const s = await api.status();
    expect(s.generation).toBe(g + 1);
    expect(s.last_reload).toMatchObject({ successful: true, error: null });
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.142'))).status).toBe(200);
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.140'))).status).toBe(404);
    // a bad file on SIGHUP: nothing changes, the daemon keeps running
    env.writeConfig('host: { name: 5 }\n');
    const before = (await api.get('/v1/policy')).raw;
    d.signal('SIGHUP');
    await waitFor(async () => (await api.status()).last_reload.successful === false, 10_000, { what: 'the failed SIGHUP reload' });
    expect((await api.get('/v1/policy')).raw.equals(before)).toBe(true);
    expect(await generation()).toBe(g + 1);
    expect(d.proc!.running).toBe(true);
  });
});

// ---------------------------------------------------------------- config save

describe('POST /v1/config/save', () => {
  afterAll(() => {
    env.writeConfig(configText);
  });

  it('writes the running policy to a given path; the file loads back to exactly that policy', async () => {
    await reset();
    await changeOnce(() => api.post('/v1/lookup-records', { customer_address: '10.0.1.150', vsid: 6000, mac: '60:00:60:00:01:50', provider_address: '192.168.0.33', vm_name: 'Saved' }));
    await changeOnce(() => api.post('/v1/vm-adapters', { name: 'vm5', mac: '60:00:60:00:01:05', vsid: 6000, netns: env.vm, mtu: 1400 }));
    const path = join(env.dir, 'saved.yaml');
    const r = await noChange(() => api.post('/v1/config/save', { path }));
    expect(r.status, r.raw.toString()).toBe(200);
    expect(r.body).toEqual({ path });
    expect(statSync(path).mode & 0o777).toBe(0o640);
    const running = (await api.get('/v1/policy')).body;
    expect(await loadConfigFile(path)).toEqual(running);
    expect(readFileSync(path, 'utf8')).toMatch(/^# nvgred policy, saved /);
  });

  it('without a path overwrites the daemon config file; a reload afterwards changes nothing', async () => {
    const r = await noChange(() => api.post('/v1/config/save', {}));
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ path: d.configPath });
    const running = (await api.get('/v1/policy')).body;
    expect(await loadConfigFile(d.configPath)).toEqual(running);
    const rl = await api.post('/v1/reload');
    expect(rl.status).toBe(200);
    for (const c of Object.values(rl.body.changes)) expect(c).toEqual({ added: 0, removed: 0, changed: 0 });
    expect((await api.get('/v1/policy')).body).toEqual(running);
  });

  it('refuses a relative path (400) and writes nothing', async () => {
    const r = await api.post('/v1/config/save', { path: 'relative.yaml' });
    expectError(r, 400, 'NVGRE_ERR_BAD_REQUEST', 'relative.yaml');
    expect(existsSync(join(env.dir, 'relative.yaml'))).toBe(false);
    await reset();
  });

  describe('writes only into the config file\'s directory', () => {
    const elsewhere = scratchDir('api-save');

    it('refuses any other directory (400, naming the path and the directory) and writes nothing there', async () => {
      const state = readFileSync(join(env.stateDir, 'policy.json'));
      for (const path of [join(elsewhere, 'x.yaml'), join(env.stateDir, 'policy.json'), join(env.dir, '..', 'x.yaml'), '/x.yaml', `${env.dir}/`]) {
        const r = await noChange(() => api.post('/v1/config/save', { path }));
        expectError(r, 400, 'NVGRE_ERR_BAD_REQUEST', JSON.stringify(path), `config file's directory ${env.dir}`);
      }
      expect(readdirSync(elsewhere)).toEqual([]);
      expect(readFileSync(join(env.stateDir, 'policy.json')).equals(state)).toBe(true);
      expect(existsSync(join(env.dir, '..', 'x.yaml'))).toBe(false);
    });

    it('does not follow a symbolic link out of it: neither a linked directory nor a linked file', async () => {
      symlinkSync(elsewhere, join(env.dir, 'out'));
      writeFileSync(join(elsewhere, 'target.yaml'), 'kept\n');
      symlinkSync(join(elsewhere, 'target.yaml'), join(env.dir, 'link.yaml'));
      try {
        const viaDir = await noChange(() => api.post('/v1/config/save', { path: join(env.dir, 'out', 'x.yaml') }));
        expectError(viaDir, 400, 'NVGRE_ERR_BAD_REQUEST', "config file's directory");
        const viaFile = await noChange(() => api.post('/v1/config/save', { path: join(env.dir, 'link.yaml') }));
        expectError(viaFile, 400, 'NVGRE_ERR_BAD_REQUEST', 'link.yaml', 'is a symbolic link');
        expect(readdirSync(elsewhere)).toEqual(['target.yaml']);
        expect(readFileSync(join(elsewhere, 'target.yaml'), 'utf8')).toBe('kept\n');
        expect(lstatSync(join(env.dir, 'link.yaml')).isSymbolicLink()).toBe(true);
      } finally {
        rmSync(join(env.dir, 'out'));
        rmSync(join(env.dir, 'link.yaml'));
        rmSync(join(elsewhere, 'target.yaml'));
      }
    });

    it('replaces only a regular file: not the API socket, not a directory', async () => {
      const sock = await noChange(() => api.post('/v1/config/save', { path: env.socket }));
      expectError(sock, 400, 'NVGRE_ERR_BAD_REQUEST', 'is a socket');
      expect(lstatSync(env.socket).isSocket()).toBe(true);
      const dir = await noChange(() => api.post('/v1/config/save', { path: env.stateDir }));
      expectError(dir, 400, 'NVGRE_ERR_BAD_REQUEST', 'is a directory');
      expect(lstatSync(env.stateDir).isDirectory()).toBe(true);
    });

    it('a path that leads back into it is fine', async () => {
      const path = join(env.stateDir, '..', 'again.yaml');
      const r = await noChange(() => api.post('/v1/config/save', { path }));
      expect(r.status, r.raw.toString()).toBe(200);
      expect(await loadConfigFile(join(env.dir, 'again.yaml'))).toEqual((await api.get('/v1/policy')).body);
    });
  });
});

// ---------------------------------------------------------------- learning and the event stream

describe('learning settings, GET /v1/learned, GET /v1/events', () => {
  /** Open the event stream; resolves with the response once its head and first bytes are in. */
  function openStream(path = '/v1/events', headers: Record<string, string> = {}) {
    return new Promise<{ status: number; headers: Record<string, unknown>; text: () => string; close: () => void; ended: Promise<void> }>((resolve, reject) => {
      import('node:http').then(({ request }) => {
        const req = request({ socketPath: env.socket, path, headers, agent: false }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          const ended = new Promise<void>((r) => res.on('close', () => r()));
          res.on('data', (t: string) => {
            const first = text === '';
            text += t;
            if (first) resolve({ status: res.statusCode!, headers: res.headers, text: () => text, close: () => req.destroy(), ended });
          });
        });
        req.on('error', reject);
        req.end();
      }, reject);
    });
  }

  it('learning is part of the policy: defaults filled in, changed by a bulk apply without a restart', async () => {
    expect(base.learning).toEqual({ max_per_vsid: 1024, ttl_seconds: 300 });
    const r = await changeOnce(() => api.put('/v1/policy', { ...structuredClone(base), learning: { max_per_vsid: 8, ttl_seconds: 60 } }));
    expect(r.status).toBe(200);
    expect(r.body.restart_required).toEqual([]);
    expect((await api.get('/v1/policy')).body.learning).toEqual({ max_per_vsid: 8, ttl_seconds: 60 });
    const bad = await noChange(() => api.put('/v1/policy', { ...structuredClone(base), learning: { max_per_vsid: -1, ttl: 5 } }));
    expectError(bad, 400, 'NVGRE_ERR_CONFIG');
    expect(bad.body.error.details.map((x: { path: string }) => x.path).sort()).toEqual(['learning.max_per_vsid', 'learning.ttl']);
    await reset();
  });

  it('GET /v1/learned: which dynamic records this host learned (none here: a dynamic record from the API is the operator\'s)', async () => {
    const rec = { customer_address: '10.0.1.190', vsid: 6000, mac: '60:00:60:00:01:90', provider_address: '192.168.0.33', type: 'dynamic' };
    expect((await api.post('/v1/lookup-records', rec)).status).toBe(201);
    expect((await api.get(`/v1/lookup-records${query({ type: 'dynamic' })}`)).body.lookup_records).toHaveLength(1);
    expect((await api.get('/v1/learned')).body).toEqual({ learned: [] });
    expectError(await api.post('/v1/learned', {}), 405, 'NVGRE_ERR_METHOD');
    expectError(await api.get('/v1/learned?vsid=6000'), 400, 'NVGRE_ERR_BAD_REQUEST');
    expect((await api.delete(keyPath('lookup-records', 6000, '10.0.1.190'))).status).toBe(200);
  });

  it('GET /v1/events is a text/event-stream that stays open; other methods 405, query parameters 400; followers come and go', async () => {
    const s = await openStream();
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(s.text().startsWith(': nvgred events\n')).toBe(true);
    // the API keeps serving while streams are open
    const many = await Promise.all(Array.from({ length: 20 }, () => openStream('/v1/events/')));
    expect((await api.get('/v1/status')).status).toBe(200);
    for (const m of many) m.close();
    s.close();
    await Promise.all([s.ended, ...many.map((m) => m.ended)]);
    expectError(await api.post('/v1/events', {}), 405, 'NVGRE_ERR_METHOD', 'POST');
    expectError(await api.delete('/v1/events'), 405, 'NVGRE_ERR_METHOD');
    expectError(await api.get('/v1/events?type=learned'), 400, 'NVGRE_ERR_BAD_REQUEST');
    expectError(await api.get('/v1/events/learned'), 404, 'NVGRE_ERR_NOT_FOUND');
  });

  it('a daemon stopping ends the streams (SIGTERM exits 0 with a follower connected)', async () => {
    const s = await openStream();
    const stopped = await d.stop();
    expect(stopped).toMatchObject({ code: 0, escalated: false });
    await s.ended;
    await d.start();
    expect((await api.get('/v1/policy')).body).toEqual(base);
  });
});
