// What the benchmarks share (bench/run.ts: namespace VMs; bench/vms.ts: QEMU
// guests): the two VMs' and hosts' addresses, nvgred's config and process
// for one host, statistics, CPU time, and the table and JSON they print.

import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { type Lab, type LabProcess, metricSum, repoRoot, scrapeMetrics } from '../lab/netns.js';

/** VM `i`'s (0 or 1) address on the benchmarks' customer network `k` (10.9.k.0/24, VSID 6000 + k). */
export const benchCa = (k: number, i: number): string => `10.9.${k}.${11 + i}`;
/** VM `i`'s MAC on network `k`. */
export const benchMac = (k: number, i: number): string => `60:00:60:00:${(9 + k).toString(16).padStart(2, '0')}:0${i + 1}`;
export const benchVsid = (k: number): number => 6000 + k;
export const VM1 = benchCa(0, 0);
export const VM2 = benchCa(0, 1);
export const PA1 = '192.168.9.1';
export const PA2 = '192.168.9.2';
export const VSID = benchVsid(0);
export const VM_MACS = [benchMac(0, 0), benchMac(0, 1)] as const;
export const BENCH_HOSTS = ['host1', 'host2'] as const;
export type BenchHost = (typeof BENCH_HOSTS)[number];

/** A VM adapter of a bench host's config, as YAML flow-mapping entries (`name: eth0, netns: …`). */
export type AdapterYaml = Record<string, string>;

/**
 * nvgred's config for bench host `i` (0 or 1): its PA on eth1 (on VLAN
 * `vlan` if given) and, for each of `adapters` (k = 0, 1...), customer
 * network k: both VMs' records at their hosts' PAs and this host's VM's
 * adapter (the keys besides mac and vsid). Written to `<out>/<host>.yaml`;
 * returns the file and the API socket.
 */
export function writeBenchConfig(out: string, i: 0 | 1, adapters: AdapterYaml[], opts: { vlan?: number } = {}): { file: string; socket: string } {
  const h = BENCH_HOSTS[i];
  const file = join(out, `${h}.yaml`);
  const socket = join(out, `${h}.sock`);
  const rd = '{12345678-1000-2000-3000-123456780009}';
  const flow = (o: Record<string, string | number>) => `{ ${Object.entries(o).map(([k, v]) => `${k}: ${typeof v === 'number' ? v : JSON.stringify(v)}`).join(', ')} }`;
  const nets = adapters.map((_, k) => k);
  writeFileSync(
    file,
    [
      `host: { name: bench-${h} }`,
      `provider_addresses: [${flow({ address: [PA1, PA2][i]!, prefix_length: 24, interface: 'eth1', ...(opts.vlan !== undefined ? { vlan_id: opts.vlan } : {}) })}]`,
      'customer_routes:',
      ...nets.map((k) => `  - { routing_domain: "${rd}", vsid: ${benchVsid(k)}, destination_prefix: 10.9.${k}.0/24, next_hop: 0.0.0.0 }`),
      'lookup_records:',
      ...nets.flatMap((k) => [0, 1].map((v) => `  - { customer_address: ${benchCa(k, v)}, vsid: ${benchVsid(k)}, mac: "${benchMac(k, v)}", provider_address: ${[PA1, PA2][v]} }`)),
      'vm_adapters:',
      ...adapters.map((a, k) => `  - ${flow({ ...a, mac: benchMac(k, i), vsid: benchVsid(k) })}`),
      `api: { socket: ${socket} }`,
      '',
    ].join('\n'),
  );
  return { file, socket };
}

/** nvgred on a bench host as the systemd unit runs it (Nice=-10), ready when this resolves. */
export async function startBenchDaemon(lab: Lab, host: BenchHost, config: string, args: readonly string[], logFile: string): Promise<LabProcess> {
  const daemon = await lab.spawn(host, ['nice', '-n', '-10', process.execPath, join(repoRoot(), 'dist/src/daemon/main.js'), '--config', config, ...args], { logFile });
  await daemon.waitForLine((l) => l.includes('"msg":"ready"'), 30_000);
  return daemon;
}

/** Total CPU time of the machine so far, in seconds (all CPUs, all modes but idle and iowait). */
export function cpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100; // USER_HZ
}

/** CPU time (utime + stime, all threads) of process `pid` so far, in seconds. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)", which may hold spaces: state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

/** Frames nvgred moved on one host: encapsulated from its VM plus decapsulated to it. */
export async function nvgredFrames(lab: Lab, host: BenchHost): Promise<number> {
  const m = await scrapeMetrics(lab.ns(host));
  return metricSum(m, 'nvgre_encap_packets_total') + metricSum(m, 'nvgre_decap_packets_total');
}

/**
 * The daemons' CPU time per frame they moved while `work` ran (µs): the
 * utime + stime of their processes, over their encap + decap counters.
 */
export async function nvgredCpuPerFrame<T>(lab: Lab, daemons: readonly { host: BenchHost; proc: LabProcess }[], work: () => Promise<T>): Promise<{ result: T; us_per_frame: number; frames: number; cpu_s: number }> {
  const cpu = () => daemons.reduce((s, d) => s + processCpuSeconds(d.proc.pid), 0);
  const frames = async () => (await Promise.all(daemons.map((d) => nvgredFrames(lab, d.host)))).reduce((a, b) => a + b, 0);
  const [c0, f0] = [cpu(), await frames()];
  const result = await work();
  const [c1, f1] = [cpu(), await frames()];
  const n = f1 - f0;
  return { result, us_per_frame: n > 0 ? ((c1 - c0) / n) * 1e6 : NaN, frames: n, cpu_s: c1 - c0 };
}

/** What the daemons counted: how much offload and merging the run used, and any drops. */
export async function daemonCounters(lab: Lab): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const h of BENCH_HOSTS) {
    const m = await scrapeMetrics(lab.ns(h));
    const c: Record<string, number> = {};
    for (const name of ['nvgre_encap_packets_total', 'nvgre_decap_packets_total', 'nvgre_tso_frames_total', 'nvgre_coalesced_packets_total', 'nvgre_underlay_gro_packets_total']) {
      c[name] = metricSum(m, name);
    }
    for (const [series, v] of m) if (series.startsWith('nvgre_dropped_packets_total{') && v > 0) c[series] = v;
    out[h] = c;
  }
  console.log(`nvgred counters: ${JSON.stringify(out)}`);
  return out;
}

/** Rows of cells as aligned text: the first column left, the others right. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

/** `a/b` to two decimals, or an empty cell when either is missing. */
export function ratio(a: number | undefined, b: number | undefined): string {
  return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? (a / b).toFixed(2) : '';
}

/** The 1, 5 and 15 minute load averages, as /proc/loadavg has them: other users of the machine skew the figures. */
export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

export function machineDescription(): string {
  return `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Linux ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, load average ${loadAverage()}`;
}

/** Write `<out>/<name>-<date>.json`; its path. */
export function writeResults(out: string, name: string, date: string, data: object): string {
  const file = join(out, `${name}-${date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2));
  return file;
}

/** Run a benchmark's `main` and exit with its code (1 with the error if it throws). */
export function runMain(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
