// Runtime policy changes survive the daemon: a clean restart (SIGTERM, start
// again with the same config) shows every change, and a reload afterwards
// applies the config file instead; a SIGKILL in the middle of a burst of
// acknowledged changes loses none of them, leaves a state_dir the daemon
// starts from, and the restart copes with what the killed daemon left
// behind (its PA on eth1; its TAPs die with their fds). What a start runs:
// an edited config file, an unchanged one, a saved state of an older
// nvgred, a damaged one.

import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, ipv4Addrs, waitFor } from '../lab/netns.js';
import { loadConfigFile } from '../src/config/index.js';
import { ApiConnectionError, keyPath, query, type ApiClient, type ApiResponse } from './helpers/api.js';
import { RD1, TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';

const lab = new Lab(`nvper${process.pid % 10000}-`);
let env: HostEnv;
let d: TestDaemon;
let api: ApiClient;

beforeAll(async () => {
  env = await createHostEnv(lab, 'nvgred-persist-');
  d = new TestDaemon(env, env.writeConfig(baseConfig(env)));
  await d.start();
  api = d.api;
});

afterAll(async () => {
  const report = await lab.teardown();
  env?.cleanup();
  expect(report.errors).toEqual([]);
});

async function tapIndex(name: string): Promise<number | undefined> {
  const r = await ipIn(env.vm, ['-j', 'link', 'show', 'dev', name]);
  return r.code === 0 ? (JSON.parse(r.stdout) as Array<{ ifindex: number }>)[0]!.ifindex : undefined;
}

async function kernelRouteDsts(): Promise<string[]> {
  const r = await ipIn(env.host, ['-j', 'route', 'show'], { check: true });
  return (JSON.parse(r.stdout || '[]') as Array<{ dst: string }>).map((x) => x.dst);
}

function expectStatus(r: ApiResponse, status: number): void {
  expect(r.status, r.raw.toString()).toBe(status);
}

describe('a clean restart (SIGTERM)', () => {
  it('keeps every runtime change; a config-file reload afterwards applies the file instead', async () => {
    // runtime changes of every kind
    expectStatus(await api.post('/v1/lookup-records', { customer_address: '10.0.1.160', vsid: 6000, mac: '60:00:60:00:01:60', provider_address: '192.168.0.33' }), 201);
    expectStatus(await api.patch(keyPath('lookup-records', 6000, '10.0.1.103'), { vm_name: 'Renamed', provider_address: '192.168.0.34' }), 200);
    expectStatus(await api.delete(keyPath('lookup-records', 7000, '10.0.1.101')), 200);
    expectStatus(await api.post('/v1/vm-adapters', { name: 'vm2', mac: '60:00:60:00:01:02', vsid: 6000, netns: env.vm, mtu: 1400 }), 201);
    expectStatus(await api.post('/v1/provider-addresses', { address: '192.168.50.1', prefix_length: 24, interface: 'eth1' }), 201);
    expectStatus(await api.post('/v1/provider-routes', { destination_prefix: '192.168.60.0/24', next_hop: '192.168.0.1', interface: 'eth1' }), 201);
    expectStatus(await api.post('/v1/customer-routes', { routing_domain: RD1, vsid: 6002, destination_prefix: '10.2.0.0/16', next_hop: '0.0.0.0', metric: 3 }), 201);
    const before = (await api.get('/v1/policy')).raw;

    const stopped = await d.stop();
    expect(stopped).toMatchObject({ code: 0, escalated: false });
    // a clean stop removes what the daemon placed
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual([]);
    expect(await tapIndex('vm1')).toBeUndefined();
    expect(await tapIndex('vm2')).toBeUndefined();
    expect(await kernelRouteDsts()).not.toContain('192.168.60.0/24');

    await d.start();
    expect(d.logLines().some((l) => l.msg?.toString().startsWith('restored the saved running policy'))).toBe(true);
    const after = await api.get('/v1/policy');
    expect(after.raw.toString()).toBe(before.toString());
    expect((await api.get(keyPath('lookup-records', 6000, '10.0.1.103'))).body).toMatchObject({ vm_name: 'Renamed', provider_address: '192.168.0.34' });
    expect((await api.get(keyPath('lookup-records', 7000, '10.0.1.101'))).status).toBe(404);
    // and the kernel objects are back
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24', '192.168.50.1/24']);
    expect(await kernelRouteDsts()).toContain('192.168.60.0/24');
    expect(await tapIndex('vm2')).toBeDefined();
    const s = await api.status();
    expect(s.counts).toEqual({ provider_addresses: 2, provider_routes: 1, customer_routes: 5, lookup_records: 5, vm_adapters: 2 });
    expect(s.ports.map((p) => [p.name, p.up, p.mtu])).toEqual([
      ['vm1', true, 1458],
      ['vm2', true, 1400],
    ]);
    expect(s.generation).toBe(0);

    // reload: the config file wins over the restored runtime changes
    const r = await api.post('/v1/reload');
    expectStatus(r, 200);
    expect(r.body.changes).toEqual({
      provider_addresses: { added: 0, removed: 1, changed: 0 },
      provider_routes: { added: 0, removed: 1, changed: 0 },
      customer_routes: { added: 0, removed: 1, changed: 0 },
      lookup_records: { added: 1, removed: 1, changed: 1 },
      vm_adapters: { added: 0, removed: 1, changed: 0 },
    });
    expect(r.body.restart_required).toEqual([]);
    expect((await api.get('/v1/policy')).body).toEqual(await loadConfigFile(d.configPath));
    expect(await ipv4Addrs(env.host, 'eth1')).toEqual(['192.168.0.22/24']);
    expect(await kernelRouteDsts()).not.toContain('192.168.60.0/24');
    await waitFor(async () => (await tapIndex('vm2')) === undefined, 3000, { what: 'TAP vm2 to go' });
    expect(await tapIndex('vm1')).toBeDefined();
  });
});

describe('SIGKILL during a burst of changes', () => {
  const VSID = 6100;
  let n = 0;
  /** The n-th record of the burst (unique CA and MAC across rounds). */
  const record = (i: number) => ({
    customer_address: `10.100.${Math.floor(i / 250)}.${(i % 250) + 2}`, // never the .1 (the gateway)
    vsid: VSID,
    mac: `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    provider_address: '192.168.0.33',
    rule: 'encap',
    type: 'static',
  });
  /** Every record acknowledged so far (all rounds), and every CA ever sent. */
  const allAcked: Array<ReturnType<typeof record>> = [];
  const sent = new Set<string>();
  /** Temp files the test itself put in state_dir. */
  const planted: string[] = [];
  const results: Array<{ round: number; acknowledged: number; survived: number; inFlight: string; killAfterUs: number; tempFiles: string[] }> = [];

  beforeAll(async () => {
    expect((await api.post('/v1/customer-routes', { routing_domain: RD1, vsid: VSID, destination_prefix: '10.100.0.0/16', next_hop: '0.0.0.0' })).status).toBe(201);
  });

  afterAll(() => {
    // the measurements, for the record
    console.log(`SIGKILL rounds:\n${results.map((r) => `  round ${r.round}: ${r.acknowledged} acknowledged, ${r.survived} of them present after restart; in-flight (SIGKILL ${r.killAfterUs} µs after it was sent): ${r.inFlight}; temp files in state_dir: ${r.tempFiles.join(' ') || 'none'}`).join('\n')}`);
  });

  for (const round of [1, 2, 3, 4]) {
    it(`round ${round}: every acknowledged record survives, and the daemon starts again`, async () => {
      expect(d.proc!.running).toBe(true);
      const target = 30 + Math.floor(Math.random() * 220); // kill after this many acks in this round
      const acked: Array<ReturnType<typeof record>> = [];
      const pid = d.pid;
      const vm1Before = await tapIndex('vm1');
      expect(vm1Before).toBeDefined();

      // sequential POSTs, each acknowledged before the next
      while (acked.length < target) {
        const rec = record(n++);
        sent.add(rec.customer_address);
        const r = await api.post('/v1/lookup-records', rec);
        expectStatus(r, 201);
        expect(r.body).toEqual(rec);
        acked.push(rec);
      }
      // one more in flight, and SIGKILL at a random point of it
      const inFlightRec = record(n++);
      sent.add(inFlightRec.customer_address);
      const inFlight = api.post('/v1/lookup-records', inFlightRec).then(
        (r) => r,
        (e: unknown) => e as ApiConnectionError,
      );
      const delayUs = Math.floor(Math.random() * 6000);
      const t0 = process.hrtime.bigint();
      while (Number(process.hrtime.bigint() - t0) / 1000 < delayUs) await new Promise((r) => setImmediate(r));
      process.kill(pid, 'SIGKILL');
      const exit = await d.proc!.exited;
      expect(exit.signal).toBe('SIGKILL');
      const flight = await inFlight;
      let inFlightAcked = false;
      if (flight instanceof ApiConnectionError) {
        expect(flight.code).toMatch(/ECONNRESET|ECONNREFUSED|EPIPE|ENOENT|socket hang up/);
      } else {
        // the answer came before the kill: then it is acknowledged too
        expectStatus(flight, 201);
        inFlightAcked = true;
        acked.push(inFlightRec);
      }
      // nothing answers any more
      await expect(api.get('/v1/status')).rejects.toBeInstanceOf(ApiConnectionError);

      const tempFiles = readdirSync(env.stateDir).filter((f) => f !== 'policy.json' && !planted.includes(f));
      // the state file is whole (valid JSON of the state format)
      const state = JSON.parse(readFileSync(join(env.stateDir, 'policy.json'), 'utf8'));
      expect(state.format).toBe('nvgred-state/1');
      if (round === 3) {
        // a stale temporary file (as a kill between write and rename leaves) must not matter, and goes
        const name = `.${pid}.${Date.now()}.tmp`;
        planted.push(name);
        writeFileSync(join(env.stateDir, name), '{"format": "nvgred-state/1", "policy": {"trunc');
      }
      // what the killed daemon left: its PA is still on eth1, its TAP went with its fd
      expect(await ipv4Addrs(env.host, 'eth1')).toContain('192.168.0.22/24');
      expect(await tapIndex('vm1')).toBeUndefined();

      await d.start();
      expect(d.pid).not.toBe(pid);
      const got = await api.get(`/v1/lookup-records${query({ vsid: VSID })}`);
      expectStatus(got, 200);
      const present = new Map((got.body.lookup_records as Array<ReturnType<typeof record>>).map((r) => [r.customer_address, r]));
      for (const r of acked) allAcked.push(r);
      // every acknowledged record, exactly as acknowledged
      const missing = allAcked.filter((r) => JSON.stringify(present.get(r.customer_address)) !== JSON.stringify(r));
      expect(missing.map((r) => r.customer_address)).toEqual([]);
      // and nothing that was never sent
      expect([...present.keys()].filter((ca) => !sent.has(ca))).toEqual([]);
      const inFlightPresent = present.has(inFlightRec.customer_address);
      if (inFlightAcked) expect(inFlightPresent).toBe(true);
      // the restart re-placed what the policy names
      expect(await ipv4Addrs(env.host, 'eth1')).toContain('192.168.0.22/24');
      const vm1After = await tapIndex('vm1');
      expect(vm1After).toBeDefined();
      expect((await api.status()).ports).toEqual([expect.objectContaining({ name: 'vm1', up: true, ifindex: vm1After })]);
      // a write's leftover temporary file is removed at start
      if (round === 3) expect(readdirSync(env.stateDir)).not.toContain(planted[0]);

      results.push({
        round,
        acknowledged: acked.length,
        survived: acked.filter((r) => JSON.stringify(present.get(r.customer_address)) === JSON.stringify(r)).length,
        inFlight: inFlightAcked ? 'acknowledged, present' : inFlightPresent ? 'not acknowledged, present' : 'not acknowledged, absent',
        killAfterUs: delayUs,
        tempFiles,
      });
    });
  }

  it('a later clean stop still exits 0 and the next start has every record', async () => {
    const count = (await api.get(`/v1/lookup-records${query({ vsid: VSID })}`)).body.lookup_records.length;
    expect(count).toBeGreaterThanOrEqual(allAcked.length);
    const stopped = await d.stop();
    expect(stopped).toMatchObject({ code: 0, escalated: false });
    await d.start();
    expect((await api.get(`/v1/lookup-records${query({ vsid: VSID })}`)).body.lookup_records).toHaveLength(count);
  });

  // After a SIGKILL the restarted daemon finds its own PA already on eth1;
  // the saved state says it placed it, so it still removes it when asked.
  it('after a SIGKILL restart, a PA deleted through the API leaves eth1', async () => {
    expectStatus(await api.post('/v1/provider-addresses', { address: '192.168.50.7', prefix_length: 24, interface: 'eth1' }), 201);
    expect(await ipv4Addrs(env.host, 'eth1')).toContain('192.168.50.7/24');
    await d.kill();
    await d.start();
    expectStatus(await api.delete(keyPath('provider-addresses', '192.168.50.7')), 200);
    expect(await ipv4Addrs(env.host, 'eth1')).not.toContain('192.168.50.7/24');
  });
});

// What a start runs (config.md): the config file, unless the saved running
// policy grew from this very file; a saved state that cannot be used is set
// aside and the file runs.
describe('what a start runs', () => {
  const statePath = () => join(env.stateDir, 'policy.json');
  const saved = () => JSON.parse(readFileSync(statePath(), 'utf8'));
  const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
  const logged = (prefix: string) => d.logLines().find((l) => String(l.msg).startsWith(prefix));
  const fileText = () => readFileSync(d.configPath, 'utf8');
  const addRecord = async (ca: string) => {
    const last = Number(ca.split('.').pop());
    const r = await api.post('/v1/lookup-records', { customer_address: ca, vsid: 6000, mac: `60:00:60:00:05:${last.toString(16).padStart(2, '0')}`, provider_address: '192.168.0.33' });
    expectStatus(r, 201);
  };
  const has = async (ca: string) => (await api.get(keyPath('lookup-records', 6000, ca))).status === 200;
  async function restart(): Promise<void> {
    expect((await d.stop()).code).toBe(0);
    await d.start();
  }

  it('after the config file was edited: runs the file (the runtime changes are replaced), and says why', async () => {
    await addRecord('10.0.1.170');
    const running = (await api.get('/v1/policy')).body.lookup_records as Array<{ vsid: number; customer_address: string }>;
    expect((await d.stop()).code).toBe(0);
    writeFileSync(d.configPath, fileText().replace('vm_name: Contoso3', 'vm_name: Contoso3-edited'));
    await d.start();
    const file = await loadConfigFile(d.configPath);
    expect((await api.get('/v1/policy')).body).toEqual(file);
    const line = logged('running the config file: it changed since the saved running policy grew from it');
    expect(line, 'the log line').toBeDefined();
    expect(line!.level).toBe('info');
    // what was replaced: the runtime records (10.0.1.170 among them), and the record the edit changed
    const inFile = new Set(file.lookup_records.map((r) => `${r.vsid}|${r.customer_address}`));
    const runtimeOnly = running.filter((r) => !inFile.has(`${r.vsid}|${r.customer_address}`));
    expect(runtimeOnly.map((r) => r.customer_address)).toContain('10.0.1.170');
    expect((line!.replaced as Record<string, unknown>).lookup_records).toEqual({ added: 0, removed: runtimeOnly.length, changed: 1 });
    expect(saved().config_sha256).toBe(sha256(d.configPath));
  });

  it('with the config file unchanged: restores the saved runtime changes, and says why', async () => {
    await addRecord('10.0.1.171');
    await restart();
    expect(await has('10.0.1.171')).toBe(true);
    expect(logged('restored the saved running policy: the config file is unchanged since it grew from it')?.level).toBe('info');
  });

  it('a reload makes the reloaded file the one the saved policy grew from', async () => {
    writeFileSync(d.configPath, fileText().replace('vm_name: Contoso3-edited', 'vm_name: Contoso3-reloaded'));
    expectStatus(await api.post('/v1/reload'), 200);
    expect(saved().config_sha256).toBe(sha256(d.configPath));
    await addRecord('10.0.1.172');
    await restart();
    expect(await has('10.0.1.172')).toBe(true);
    expect(logged('restored the saved running policy: the config file is unchanged')).toBeDefined();
  });

  it('a saved state of an older nvgred (no config_sha256): restored, and from then on grown from the present file', async () => {
    expect((await d.stop()).code).toBe(0);
    const { config_sha256: _, ...old } = saved();
    writeFileSync(statePath(), JSON.stringify(old));
    // even an edited file: the runtime changes are not lost on the upgrade (nvgrectl reload applies the file)
    writeFileSync(d.configPath, fileText().replace('vm_name: Contoso3-reloaded', 'vm_name: Contoso3-upgraded'));
    await d.start();
    expect(await has('10.0.1.172')).toBe(true);
    expect(logged('restored the saved running policy: it does not record which config file it grew from')?.level).toBe('warn');
    expect(saved().config_sha256).toBe(sha256(d.configPath));
    await restart();
    expect(await has('10.0.1.172')).toBe(true);
    expect(logged('restored the saved running policy: the config file is unchanged')).toBeDefined();
  });

  it('an edited file keeps the learned records it does not contradict, as a reload does', async () => {
    expect((await d.stop()).code).toBe(0);
    const s = saved();
    const now = new Date().toISOString();
    const dyn = (vsid: number, ca: string, mac: string) => ({ customer_address: ca, vsid, mac, provider_address: '192.168.0.33', rule: 'encap', type: 'dynamic' });
    const learned = [dyn(6000, '10.0.1.180', '60:00:60:00:06:80'), dyn(6200, '10.20.0.5', '60:00:60:00:06:81'), dyn(6000, '10.0.1.181', '60:00:60:00:06:82')];
    s.policy.customer_routes.push({ routing_domain: RD1, vsid: 6200, destination_prefix: '10.20.0.0/16', next_hop: '0.0.0.0', metric: 0 });
    s.policy.lookup_records.push(...learned);
    s.learned = learned.map((r) => ({ vsid: r.vsid, customer_address: r.customer_address, mac: r.mac, provider_address: r.provider_address, last_seen: now }));
    writeFileSync(statePath(), JSON.stringify(s));
    // the edit: the file now has its own record for 10.0.1.181; VSID 6200 (a runtime change) is gone
    writeFileSync(
      d.configPath,
      fileText().replace('lookup_records:\n', 'lookup_records:\n  - { customer_address: 10.0.1.181, vsid: 6000, mac: "60:00:60:00:07:81", provider_address: 192.168.0.11 }\n'),
    );
    await d.start();
    const file = await loadConfigFile(d.configPath);
    expect((await api.get('/v1/policy')).body).toEqual({ ...file, lookup_records: [...file.lookup_records, learned[0]] });
    expect((await api.get('/v1/learned')).body.learned.map((l: { record: unknown }) => l.record)).toEqual([learned[0]]);
    expect(d.logLines().filter((l) => String(l.msg).startsWith('learned lookup record dropped')).map((l) => l.lookup_record)).toEqual([[6200, '10.20.0.5']]);
  });

  const damaged: Array<[string, (good: string) => string | null]> = [
    ['garbage', () => 'garbage\u0000\u00ff not a state'],
    ['truncated', (good) => good.slice(0, Math.floor(good.length / 2))],
    ['empty', () => ''],
    ['of another format', (good) => JSON.stringify({ ...JSON.parse(good), format: 'nvgred-state/9' })],
    [
      'whose policy no longer validates',
      (good) => {
        const s = JSON.parse(good);
        s.policy.lookup_records.push({ customer_address: '10.9.9.9', vsid: 6999, mac: '60:00:60:00:09:09', provider_address: '192.168.0.33', rule: 'encap', type: 'static' });
        return JSON.stringify(s);
      },
    ],
    [
      'whose record of placed kernel objects is malformed',
      (good) => JSON.stringify({ ...JSON.parse(good), owned: { provider_addresses: [{ address: 'nowhere' }], provider_routes: [] } }),
    ],
    ['that is a directory', () => null],
  ];
  for (const [what, damage] of damaged) {
    it(`a saved state ${what}: set aside (renamed, logged) and the config file runs`, async () => {
      await addRecord('10.0.1.190');
      expect((await d.stop()).code).toBe(0);
      const bad = damage(readFileSync(statePath(), 'utf8'));
      rmSync(statePath());
      if (bad === null) mkdirSync(statePath());
      else writeFileSync(statePath(), bad);
      await d.start();
      expect((await api.get('/v1/policy')).body).toEqual(await loadConfigFile(d.configPath));
      const line = logged('the saved running policy cannot be used: set aside, running the config file');
      expect(line, 'the log line').toBeDefined();
      expect(line!.level).toBe('error');
      expect(String(line!.reason)).toContain(statePath());
      const aside = String(line!.set_aside_as);
      expect(aside.startsWith(`${statePath()}.bad-`)).toBe(true);
      if (bad === null) expect(readdirSync(aside)).toEqual([]);
      else expect(readFileSync(aside, 'utf8')).toBe(bad);
      rmSync(aside, { recursive: true });
      // a new state, grown from the file
      expect(saved().config_sha256).toBe(sha256(d.configPath));
      // and changes are saved again
      await addRecord('10.0.1.191');
      await restart();
      expect(await has('10.0.1.191')).toBe(true);
      expectStatus(await api.delete(keyPath('lookup-records', 6000, '10.0.1.191')), 200);
    });
  }
});
