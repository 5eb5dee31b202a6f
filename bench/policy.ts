// make bench-policy: what one change costs with a big policy (BENCH_RECORDS
// lookup records, default 1,000,000). A daemon in a namespace of its own;
// through the local API, BENCH_OPS times each: add one record, change it,
// delete it: wall time (client), the daemon's CPU time, bytes written to
// state_dir; then a reload with the file unchanged, and with one record
// changed. In this process, with a dataplane that takes every policy
// without work (the control plane alone: the store, its checks, the state
// file): the same one-record changes, learning 1,000 addresses as one
// batch, and expiring them. Run from another build's dist to compare (the
// lead's "before"): node <other>/dist/bench/policy.js.

import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { ApiClient } from '../src/cli/client.js';
import { validatePolicy } from '../src/config/index.js';
import type { HostDataplane } from '../src/daemon/host.js';
import { StateFile } from '../src/daemon/state.js';
import { PolicyStore } from '../src/daemon/store.js';
import type { Policy } from '../src/model/policy.js';
import { resourceByPath } from '../src/model/resources.js';
import { Lab, installSignalTeardown, repoRoot, sleep, type LabProcess } from '../lab/netns.js';
import { BIG_RD, BIG_VSID, bigLookupRecords } from './bigpolicy.js';
import { runMain } from './common.js';

const PREFIX = 'nvp-';
const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const OPS = Number(process.env.BENCH_OPS ?? 20);
/** BENCH_DAEMON=0: the in-process part only. */
const DAEMON = process.env.BENCH_DAEMON !== '0';
const TICK_S = 0.01; // CLK_TCK 100

interface Sample {
  wall_ms: number;
  cpu_ms: number;
  bytes: number;
}

/** What is written to a state dir: a rewritten policy.json counts whole, the journal by its growth. */
class StateBytes {
  private json = { mtime: 0, size: 0 };
  private journal = 0;
  constructor(private readonly dir: string) {
    this.take();
  }
  private take(): number {
    const j = existsSync(join(this.dir, 'policy.json')) ? statSync(join(this.dir, 'policy.json')) : undefined;
    const jr = existsSync(join(this.dir, 'policy.journal')) ? statSync(join(this.dir, 'policy.journal')).size : 0;
    let bytes = 0;
    if (j && (j.mtimeMs !== this.json.mtime || j.size !== this.json.size)) bytes += j.size;
    bytes += Math.max(0, jr - this.journal);
    this.json = { mtime: j?.mtimeMs ?? 0, size: j?.size ?? 0 };
    this.journal = jr;
    return bytes;
  }
  /** Bytes written since the last call. */
  delta(): number {
    return this.take();
  }
}

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_S * 1000;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
function summary(name: string, xs: Sample[]): Record<string, number | string> {
  const row = {
    op: name,
    n: xs.length,
    wall_p50_ms: pct(xs.map((x) => x.wall_ms), 50),
    wall_p99_ms: pct(xs.map((x) => x.wall_ms), 99),
    cpu_p50_ms: pct(xs.map((x) => x.cpu_ms), 50),
    cpu_p99_ms: pct(xs.map((x) => x.cpu_ms), 99),
    bytes_p50: pct(xs.map((x) => x.bytes), 50),
    bytes_p99: pct(xs.map((x) => x.bytes), 99),
  };
  console.log(
    `${name.padEnd(22)} n=${row.n}  wall p50 ${row.wall_p50_ms.toFixed(1)} ms p99 ${row.wall_p99_ms.toFixed(1)} ms  cpu p50 ${row.cpu_p50_ms.toFixed(0)} ms p99 ${row.cpu_p99_ms.toFixed(0)} ms  written p50 ${row.bytes_p50} B p99 ${row.bytes_p99} B`,
  );
  return row;
}

function configDoc(out: string, stateDir: string, changed = false): Record<string, unknown> {
  const lookup_records = bigLookupRecords(RECORDS);
  if (changed) lookup_records[5] = { ...lookup_records[5], provider_address: '192.168.9.99' };
  return {
    host: { name: 'policy-bench' },
    provider_addresses: [{ address: '192.168.9.1', prefix_length: 24, interface: 'eth1' }],
    customer_routes: [{ routing_domain: BIG_RD, vsid: BIG_VSID, destination_prefix: '10.0.0.0/8', next_hop: '0.0.0.0' }],
    lookup_records,
    state_dir: stateDir,
    api: { socket: join(out, 'policy-bench.sock') },
  };
}

async function daemonPart(out: string, results: Record<string, unknown>): Promise<void> {
  const lab = new Lab(PREFIX);
  const uninstall = installSignalTeardown(lab);
  let proc: LabProcess | undefined;
  try {
    await lab.addNamespace('host1');
    await lab.addNamespace('host2');
    await lab.veth('host1', 'eth1', 'host2', 'eth1');
    await lab.up('host1', 'eth1');
    const stateDir = join(out, 'policy-bench-state');
    rmSync(stateDir, { recursive: true, force: true });
    const file = join(out, `policy-bench-${RECORDS}.json`);
    writeFileSync(file, JSON.stringify(configDoc(out, stateDir)));
    const t0 = Date.now();
    proc = await lab.spawn('host1', [process.execPath, join(repoRoot(), 'dist/src/daemon/main.js'), '--config', file], { logFile: join(out, 'policy-bench.log') });
    await proc.waitForLine((l) => l.includes('"msg":"ready"'), 1_200_000);
    results.start_seconds = (Date.now() - t0) / 1000;
    console.log(`daemon ready with ${RECORDS} lookup records in ${(results.start_seconds as number).toFixed(1)} s`);
    await sleep(2000);
    results.rss_mib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))![1]) / 1024;
    const api = new ApiClient(join(out, 'policy-bench.sock'), 1_200_000);
    const bytes = new StateBytes(stateDir);
    const pid = proc.pid;
    const one = async (method: string, path: string, body?: unknown): Promise<Sample> => {
      bytes.delta();
      const c0 = cpuMs(pid);
      const w0 = performance.now();
      const res = await api.request(method, path, body === undefined ? {} : { body });
      const wall_ms = performance.now() - w0;
      if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.text}`);
      return { wall_ms, cpu_ms: cpuMs(pid) - c0, bytes: bytes.delta() };
    };
    const add: Sample[] = [];
    const change: Sample[] = [];
    const del: Sample[] = [];
    for (let i = 0; i < OPS; i++) {
      const ca = `10.250.${i >> 8}.${(i & 255) + 1}`;
      const path = `/v1/lookup-records/${BIG_VSID}/${ca}`;
      add.push(await one('POST', '/v1/lookup-records', { customer_address: ca, vsid: BIG_VSID, mac: `64:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, provider_address: '192.168.9.77' }));
      change.push(await one('PATCH', path, { provider_address: '192.168.9.78' }));
      del.push(await one('DELETE', path));
    }
    results.add = summary('add one record', add);
    results.change = summary('change one record', change);
    results.delete = summary('delete one record', del);
    results.reload_unchanged = summary('reload, file unchanged', [await one('POST', '/v1/reload')]);
    writeFileSync(file, JSON.stringify(configDoc(out, stateDir, true)));
    results.reload_one_changed = summary('reload, one changed', [await one('POST', '/v1/reload')]);
  } finally {
    if (proc) await lab.stop(proc);
    await lab.teardown();
    uninstall();
  }
}

async function controlPlanePart(out: string, results: Record<string, unknown>): Promise<void> {
  const policy = validatePolicy(configDoc(out, join(out, 'unused')));
  let running: Policy = policy;
  const host = {
    get policy() {
      return running;
    },
    apply(next: Policy) {
      running = next;
    },
    ownedKernelObjects: () => ({ provider_addresses: [], provider_routes: [] }),
    repair() {},
  } as unknown as HostDataplane;
  const dir = join(out, 'policy-bench-learning');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const state = new StateFile(dir);
  const silent = pino({ level: 'silent' });
  const store = new PolicyStore(host, state, policy, '/nonexistent', silent);
  store.saveState();
  const bytes = new StateBytes(dir);
  const now = Date.now();
  const batch = Array.from({ length: 1000 }, (_, i) => ({
    vsid: BIG_VSID,
    customer_address: `10.251.${i >> 8}.${(i & 255) + 1}`,
    mac: `66:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    provider_address: '192.168.9.80',
  }));
  const timed = async (fn: () => Promise<unknown>): Promise<Sample> => {
    bytes.delta();
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    await fn();
    const c = process.cpuUsage(c0);
    return { wall_ms: performance.now() - w0, cpu_ms: (c.user + c.system) / 1000, bytes: bytes.delta() };
  };
  const lookups = resourceByPath('lookup-records')!;
  const add: Sample[] = [];
  const change: Sample[] = [];
  const del: Sample[] = [];
  for (let i = 0; i < OPS; i++) {
    const ca = `10.250.${i >> 8}.${(i & 255) + 1}`;
    const key = [String(BIG_VSID), ca];
    const mac = `64:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
    add.push(await timed(() => store.create(lookups, { customer_address: ca, vsid: BIG_VSID, mac, provider_address: '192.168.9.77' })));
    change.push(await timed(() => store.change(lookups, key, { provider_address: '192.168.9.78' })));
    del.push(await timed(() => store.remove(lookups, key)));
  }
  results.store_add = summary('store: add one', add);
  results.store_change = summary('store: change one', change);
  results.store_delete = summary('store: delete one', del);
  results.learn_1000 = summary('learn 1,000 (1 batch)', [await timed(() => store.learn(batch, now))]);
  results.expire_1000 = summary('expire 1,000', [await timed(() => store.expireLearned(now + policy.learning.ttl_seconds * 1000 + 1))]);
}

async function main(): Promise<number> {
  const out = join(repoRoot(), 'bench', 'out');
  mkdirSync(out, { recursive: true });
  await Lab.cleanStale(PREFIX);
  const results: Record<string, unknown> = { date: new Date().toISOString(), build: repoRoot(), records: RECORDS, ops: OPS };
  if (DAEMON) await daemonPart(out, results);
  await controlPlanePart(out, results);
  const to = join(out, `policy-${String(results.date).replace(/[:.]/g, '-')}.json`);
  writeFileSync(to, JSON.stringify(results, null, 2));
  console.log(`\n${to}`);
  return 0;
}

runMain(main);
