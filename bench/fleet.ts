// make bench-fleet: the fleet's policy in etcd at scale. BENCH_RECORDS
// lookup records (default 1,000,000) in one etcd member (its own namespace),
// BENCH_HOSTS nvgred daemons (default 4; each its own namespace, its file only
// host-local), then:
//   - sync from empty: each daemon started with an empty state_dir until its
//     status key says the store's revision;
//   - commit→applied on every host: BENCH_CHANGES record changes (default 50),
//     one at a time, from the transaction's answer to each host's status key
//     carrying its revision (watched on etcd): p50/p99 per host and over all;
//   - the same for BENCH_MIGRATIONS migrations (default 10), one transaction each;
//   - the daemons' RSS;
//   - one record change through host 1's local API (written to etcd, answered
//     once applied): the time to its answer;
//   - one host syncing from empty while the others run (host 1 stopped, its
//     state_dir emptied, started again).
// With each phase: the daemons' CPU time and the load average (a shared machine).
// BENCH_OTHER_DAEMON runs the last host from another build (before/after in one run).
// Namespaces and etcd are removed at the end, also on a signal.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { Lab, installSignalTeardown, repoRoot, type LabProcess } from '../lab/netns.js';
import { EtcdCluster } from '../lab/etcd.js';
import { Etcd, type TxnOp } from '../src/fleet/etcd.js';
import { runMain } from './common.js';

/** Namespaces' prefix (BENCH_PREFIX: one per engineer on a shared machine). */
const PREFIX = process.env.BENCH_PREFIX ?? 'nvfl-bench-';
/** Extra node options for the daemons (BENCH_DAEMON_NODE_ARGS, say `--cpu-prof --cpu-prof-dir=/tmp/x`). */
const DAEMON_NODE_ARGS = (process.env.BENCH_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** Another build's dist/src/daemon/main.js for the last host (BENCH_OTHER_DAEMON): before and after in one run. */
const OTHER_DAEMON = process.env.BENCH_OTHER_DAEMON;
const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const HOSTS = Number(process.env.BENCH_HOSTS ?? 4);
const CHANGES = Number(process.env.BENCH_CHANGES ?? 50);
const MIGRATIONS = Number(process.env.BENCH_MIGRATIONS ?? 10);
const RD = '{12345678-1000-2000-3000-123456780009}';
const ROOT = '/bench/v1/';
const J = JSON.stringify;

/** CPU seconds (user + system) a process used so far. */
const cpuSeconds = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const hex = (n: number) => (n & 255).toString(16).padStart(2, '0');
const ca = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const pa = (h: number) => `192.168.9.${h}`;
const record = (i: number, h: number) => ({ customer_address: ca(i), vsid: 6000, mac: `62:${hex(i >> 24)}:${hex(i >> 16)}:${hex(i >> 8)}:${hex(i)}:01`, provider_address: pa(h), rule: 'encap', type: 'static' });
/** Record i lives on host 1 + i % HOSTS (CAs from 10.0.1.0: none is a subnet's .1). */
const index = (k: number) => 256 + k;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}
const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(0)} ms, p99 ${pct(xs, 99).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms (n=${xs.length})`;

/** Put `ops` in transactions of 128, `parallel` at a time. */
async function putAll(etcd: Etcd, ops: () => Iterable<TxnOp>, parallel = 4): Promise<number> {
  let batch: TxnOp[] = [];
  const inflight = new Set<Promise<unknown>>();
  let last = 0;
  const send = async (b: TxnOp[]) => {
    const p = etcd.txn([], b).then((r) => (last = Math.max(last, r.revision)));
    inflight.add(p);
    p.finally(() => inflight.delete(p));
    if (inflight.size >= parallel) await Promise.race(inflight);
  };
  for (const op of ops()) {
    batch.push(op);
    if (batch.length === 128) {
      await send(batch);
      batch = [];
    }
  }
  if (batch.length) await send(batch);
  await Promise.all(inflight);
  return last;
}

/** Each host's status revision, as the store's watch reports it; `reached(h, rev)` resolves when host h's status carries rev or later. */
class Statuses {
  private rev = new Map<string, number>();
  private waiters: Array<{ host: string; rev: number; resolve(t: number): void }> = [];
  constructor(etcd: Etcd, from: number) {
    const w = etcd.watchPrefix(`${ROOT}hosts/`, from, (b) => {
      const t = performance.now();
      for (const e of b.events) {
        const m = /hosts\/([^/]+)\/status$/.exec(e.kv.key);
        if (!m) continue;
        if (e.type === 'put') this.rev.set(m[1]!, (JSON.parse(e.kv.value) as { revision: number }).revision);
        else this.rev.delete(m[1]!); // its daemon stopped
      }
      this.waiters = this.waiters.filter((x) => ((this.rev.get(x.host) ?? 0) >= x.rev ? (x.resolve(t), false) : true));
    });
    w.done.catch(() => undefined);
    this.cancel = () => w.cancel();
  }
  cancel: () => void;
  reached(host: string, rev: number): Promise<number> {
    if ((this.rev.get(host) ?? 0) >= rev) return Promise.resolve(performance.now());
    return new Promise((resolve) => this.waiters.push({ host, rev, resolve }));
  }
}

function apiCall(socket: string, method: string, path: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const data = J(body);
    const req = request({ socketPath: socket, method, path, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function main(): Promise<number> {
  const out = join(repoRoot(), 'bench', 'out', 'fleet');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await Lab.cleanStale(PREFIX);
  const lab = new Lab(PREFIX);
  const uninstall = installSignalTeardown(lab);
  let cluster: EtcdCluster | undefined;
  const result: Record<string, unknown> = { date: new Date().toISOString(), records: RECORDS, hosts: HOSTS };
  try {
    cluster = await EtcdCluster.start({ ns: `${PREFIX}etcd${process.pid}`, dir: join(out, 'etcd'), quotaBytes: 8 * 1024 ** 3 });
    // Long timeouts: a loaded 2-core machine; a transaction that times out may still have been applied.
    const etcd = new Etcd(cluster.endpoints, { timeoutMs: 60_000 });
    let t = performance.now();
    const fill = await putAll(etcd, function* () {
      yield { put: { key: `${ROOT}customer_routes/6000/10.0.0.0/8`, value: J({ routing_domain: RD, vsid: 6000, destination_prefix: '10.0.0.0/8', next_hop: '0.0.0.0', metric: 0 }) } };
      for (let h = 1; h <= HOSTS; h++) {
        yield { put: { key: `${ROOT}hosts/host${h}/vm_adapters/vm${h}`, value: J({ name: `vm${h}`, mac: `60:00:60:00:09:${hex(h)}`, vsid: 6000, mode: 'attach' }) } };
        yield { put: { key: `${ROOT}hosts/host${h}/provider_addresses/${pa(h)}`, value: J({ address: pa(h), prefix_length: 24, interface: 'eth1', vlan_id: 0 }) } };
      }
      for (let k = 0; k < RECORDS; k++) {
        const r = record(index(k), 1 + (k % HOSTS));
        yield { put: { key: `${ROOT}lookup_records/6000/${r.customer_address}`, value: J(r) } };
      }
    });
    result.fill_seconds = (performance.now() - t) / 1000;
    console.log(`etcd: ${RECORDS} lookup records written in ${(result.fill_seconds as number).toFixed(1)} s (revision ${fill})`);

    // The hosts: a namespace each with eth1 (a veth to a bridge-less peer in the same namespace).
    const daemons: Array<{ proc: LabProcess; socket: string }> = [];
    const spawnDaemon = (h: number) =>
      lab.spawn(`h${h}`, [process.execPath, '--max-old-space-size=8192', ...DAEMON_NODE_ARGS, h === HOSTS && OTHER_DAEMON ? OTHER_DAEMON : join(repoRoot(), 'dist/src/daemon/main.js'), '--config', join(out, `host${h}`, 'nvgred.yaml')], {
        logFile: join(out, `host${h}`, `nvgred-${Date.now()}.log`),
      });
    const statuses = new Statuses(etcd, fill + 1);
    t = performance.now();
    const synced: Array<Promise<number>> = [];
    for (let h = 1; h <= HOSTS; h++) {
      await lab.addNamespace(`h${h}`);
      await lab.veth(`h${h}`, 'eth1', `h${h}`, 'eth1peer');
      await lab.up(`h${h}`, 'eth1');
      await lab.up(`h${h}`, 'eth1peer');
      const dir = join(out, `host${h}`);
      mkdirSync(dir, { recursive: true });
      const socket = join(dir, 'api.sock');
      const config = join(dir, 'nvgred.yaml');
      writeFileSync(
        config,
        J({
          host: { name: `host${h}` },
          policy_store: { etcd: { endpoints: cluster.endpoints, prefix: '/bench' } },
          state_dir: join(dir, 'state'),
          api: { socket },
          metrics: { listen: '127.0.0.1:9470' },
        }),
      );
      daemons.push({ proc: await spawnDaemon(h), socket });
      synced.push(statuses.reached(`host${h}`, fill));
    }
    const syncMs = (await Promise.all(synced)).map((x) => x - t);
    result.sync_from_empty_ms = syncMs;
    const cpu = () => daemons.map((d) => cpuSeconds(d.proc.pid));
    const syncCpu = cpu();
    result.sync_cpu_seconds = syncCpu;
    result.sync_load = load();
    console.log(`sync from empty (${HOSTS} daemons started together, to each status at revision ${fill}): ${syncMs.map((x) => (x / 1000).toFixed(1)).join(', ')} s; daemon CPU ${syncCpu.map((x) => x.toFixed(1)).join(', ')} s; load ${result.sync_load}`);
    result.rss_mib = daemons.map((d) => rssMiB(d.proc.pid));
    console.log(`daemon RSS: ${(result.rss_mib as number[]).map((x) => x.toFixed(0)).join(', ')} MiB`);

    // Record changes, one at a time: commit → applied on every host.
    const perHost: number[][] = Array.from({ length: HOSTS }, () => []);
    let cpu0 = cpu();
    const w0 = performance.now();
    for (let c = 0; c < CHANGES; c++) {
      const r = record(index(c * 7919 % RECORDS), 1 + ((c + 1) % HOSTS));
      const t0 = performance.now();
      const { revision } = await etcd.txn([], [{ put: { key: `${ROOT}lookup_records/6000/${r.customer_address}`, value: J(r) } }]);
      const t1 = performance.now();
      const ts = await Promise.all(daemons.map((_, h) => statuses.reached(`host${h + 1}`, revision)));
      ts.forEach((x, h) => perHost[h]!.push(x - (t0 + t1) / 2));
    }
    const all = perHost.flat();
    result.change_ms = { all: [pct(all, 50), pct(all, 99)], per_host: perHost.map((xs) => [pct(xs, 50), pct(xs, 99)]) };
    const perChangeCpu = (c0: number[], n: number) => cpu().map((x, h) => ((x - c0[h]!) / n) * 1000);
    result.change_cpu_ms_per_host = perChangeCpu(cpu0, CHANGES);
    result.change_wall_s = (performance.now() - w0) / 1000;
    result.change_load = load();
    if (OTHER_DAEMON) perHost.forEach((xs, h) => console.log(`  host${h + 1}${h + 1 === HOSTS ? ` (${OTHER_DAEMON})` : ''}: ${fmt(xs)}`));
    console.log(`one record change, commit → applied on every host: ${fmt(all)}; daemon CPU per change ${(result.change_cpu_ms_per_host as number[]).map((x) => x.toFixed(1)).join(', ')} ms; ${(result.change_wall_s as number).toFixed(1)} s in all; load ${result.change_load}`);

    // Migrations: vm1..vmN moves to the next host with its record, one transaction each.
    const mig: number[] = [];
    cpu0 = cpu();
    for (let m = 0; m < MIGRATIONS; m++) {
      const from = 1 + (m % HOSTS);
      const to = 1 + ((m + 1) % HOSTS);
      const name = `mig${m}`;
      const r = { customer_address: `10.255.0.${10 + m}`, vsid: 6000, mac: `60:00:60:00:0a:${hex(m)}`, provider_address: pa(from), rule: 'encap', type: 'static' };
      const setup = await etcd.txn([], [
        { put: { key: `${ROOT}hosts/host${from}/vm_adapters/${name}`, value: J({ name, mac: r.mac, vsid: 6000, mode: 'attach' }) } },
        { put: { key: `${ROOT}lookup_records/6000/${r.customer_address}`, value: J(r) } },
      ]);
      await Promise.all(daemons.map((_, h) => statuses.reached(`host${h + 1}`, setup.revision)));
      const t0 = performance.now();
      const { revision } = await etcd.txn([], [
        { delete: { key: `${ROOT}hosts/host${from}/vm_adapters/${name}` } },
        { put: { key: `${ROOT}hosts/host${to}/vm_adapters/${name}`, value: J({ name, mac: r.mac, vsid: 6000, mode: 'attach' }) } },
        { put: { key: `${ROOT}lookup_records/6000/${r.customer_address}`, value: J({ ...r, provider_address: pa(to) }) } },
      ]);
      const t1 = performance.now();
      for (const x of await Promise.all(daemons.map((_, h) => statuses.reached(`host${h + 1}`, revision)))) mig.push(x - (t0 + t1) / 2);
    }
    result.migration_ms = [pct(mig, 50), pct(mig, 99)];
    result.migration_cpu_ms_per_host = perChangeCpu(cpu0, 2 * MIGRATIONS);
    console.log(`migration (one transaction), commit → applied on every host: ${fmt(mig)}; daemon CPU per transaction ${(result.migration_cpu_ms_per_host as number[]).map((x) => x.toFixed(1)).join(', ')} ms`);

    // One record change through host 1's local API: written to etcd, answered once host 1 applied it.
    const r = record(index(3), 2);
    const t0 = performance.now();
    const status = await apiCall(daemons[0]!.socket, 'PUT', `/v1/lookup-records/6000/${r.customer_address}`, r);
    result.api_change_ms = performance.now() - t0;
    console.log(`one record change through host1's API (PUT, ${status}): ${(result.api_change_ms as number).toFixed(0)} ms to its answer`);
    // One host syncing from empty while the others run: host 1 stopped, its state_dir emptied, started again.
    await lab.stop(daemons[0]!.proc, { timeoutMs: 30_000 });
    rmSync(join(out, 'host1', 'state'), { recursive: true, force: true });
    const { revision: now } = await etcd.txn([], []);
    const l0 = load();
    const t2 = performance.now();
    daemons[0]!.proc = await spawnDaemon(1);
    result.resync_one_ms = (await statuses.reached('host1', now)) - t2;
    result.resync_one_cpu_seconds = cpuSeconds(daemons[0]!.proc.pid);
    console.log(`one host syncing from empty (the others running): ${((result.resync_one_ms as number) / 1000).toFixed(1)} s; its CPU ${(result.resync_one_cpu_seconds as number).toFixed(1)} s; load before ${l0}, after ${load()}`);
    result.rss_after_mib = daemons.map((d) => rssMiB(d.proc.pid));
    console.log(`daemon RSS after: ${(result.rss_after_mib as number[]).map((x) => x.toFixed(0)).join(', ')} MiB; load ${load()}`);
    statuses.cancel();
    // Stopped by SIGTERM (a daemon run with --cpu-prof writes its profile on a clean exit).
    for (const d of daemons) await lab.stop(d.proc, { timeoutMs: 30_000 });
    etcd.close();
    writeFileSync(join(repoRoot(), 'bench', 'out', `fleet-${String(result.date).replace(/[:.]/g, '-')}.json`), JSON.stringify(result, null, 2));
    return 0;
  } finally {
    await lab.teardown();
    await cluster?.stop();
    uninstall();
  }
}

runMain(main);
