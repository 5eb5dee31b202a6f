// make bench: the two-VM topology built three ways in one run, each measured
// the same way, so the ratios compare like with like on this machine:
//   veth    VM1 —veth— VM2 (the ceiling)
//   vxlan   VM1 —veth— host1 [bridge + VXLAN] —underlay veth— host2 [bridge + VXLAN] —veth— VM2
//   nvgred  VM1 [TAP] host1 (nvgred) —underlay veth— host2 (nvgred) [TAP] VM2
//   nvgred-gro  the same, with the underlay veths cutting nvgred's large
//           segments in software (no TSO) and merging what they receive
//           (GRO, in threaded NAPI mode), as a NIC without GRE segmentation
//           offload but with GRO would
//   nvgred-userspace  nvgred with --segmentation userspace: nvgred cuts them
// Measured: single-stream TCP (iperf3, median of runs), 64-byte UDP packets/s
// delivered and loss (median of runs), round-trip time two ways (a UDP ping-pong between two
// processes, back to back: sockperf; and pings every 2 ms, answered by the
// kernel, with the machine idle in between), median and p99, and the
// machine's CPU time (all processes and the kernel) per gigabyte moved.
// Prints one table with the ratios nvgred/VXLAN and nvgred/veth and writes the
// raw results as JSON. Everything lives in namespaces it creates and removes.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Lab, installSignalTeardown, metricSum, nsExec, repoRoot, scrapeMetrics, sleep } from '../lab/netns.js';

const PREFIX = 'nvb-';
const TCP_RUNS = Number(process.env.BENCH_TCP_RUNS ?? 3);
const TCP_SECONDS = Number(process.env.BENCH_TCP_SECONDS ?? 5);
const UDP_RUNS = Number(process.env.BENCH_UDP_RUNS ?? 3);
const UDP_SECONDS = Number(process.env.BENCH_UDP_SECONDS ?? 5);
const PINGS = Number(process.env.BENCH_PINGS ?? 1000);
const PINGPONG_SECONDS = Number(process.env.BENCH_PINGPONG_SECONDS ?? 5);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 1);
/** More nvgred options, e.g. `--poll-us 3000`. */
const NVGRED_ARGS = (process.env.BENCH_NVGRED_ARGS ?? '').split(/\s+/).filter(Boolean);
const MODES = (process.env.BENCH_MODES ?? 'veth,vxlan,nvgred,nvgred-gro,nvgred-userspace').split(',') as Mode[];

type Mode = 'veth' | 'vxlan' | 'nvgred' | 'nvgred-gro' | 'nvgred-userspace';

interface Result {
  mode: Mode;
  tcp_gbps_runs: number[];
  tcp_gbps: number;
  udp64_pps_runs: number[];
  udp64_pps: number;
  udp64_loss_pct: number;
  /** UDP ping-pong (64 bytes, one in flight, back to back). */
  rtt_us_median: number;
  rtt_us_p99: number;
  /** Pings every 2 ms. */
  ping_us_median: number;
  ping_us_p99: number;
  cpu_seconds_per_gb: number;
  /** nvgred only: the daemons' counters after the run. */
  counters?: Record<string, Record<string, number>>;
}

const VM1 = '10.9.0.11';
const VM2 = '10.9.0.12';
const PA1 = '192.168.9.1';
const PA2 = '192.168.9.2';

/** Total CPU time of the machine so far, in seconds (all CPUs, all modes but idle and iowait). */
function cpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100; // USER_HZ
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function sh(lab: Lab, ns: string, ...argv: string[]) {
  return lab.nsExec(ns, argv, { timeoutMs: 120_000 });
}

/** Build one mode's topology; VM1 and VM2 end up with VM1/VM2 addresses. */
async function build(lab: Lab, mode: Mode, out: string): Promise<void> {
  await lab.addNamespace('vm1');
  await lab.addNamespace('vm2');
  if (mode === 'veth') {
    await lab.veth('vm1', 'eth0', 'vm2', 'eth0');
    await lab.addr('vm1', 'eth0', `${VM1}/24`);
    await lab.addr('vm2', 'eth0', `${VM2}/24`);
    await lab.up('vm1', 'eth0');
    await lab.up('vm2', 'eth0');
    return;
  }
  await lab.addNamespace('host1');
  await lab.addNamespace('host2');
  await lab.veth('host1', 'eth1', 'host2', 'eth1');
  await lab.up('host1', 'eth1');
  await lab.up('host2', 'eth1');
  if (mode === 'nvgred-gro') {
    // veth merges only in NAPI mode, and only what its peer could not have sent as one (TSO off).
    for (const h of ['host1', 'host2']) {
      await sh(lab, h, 'sh', '-ec', 'ethtool -K eth1 tso off gso off gro off; ethtool -K eth1 gro on; echo 1 > /sys/class/net/eth1/threaded');
    }
  }
  if (mode === 'vxlan') {
    for (const [h, vm, local, remote] of [
      ['host1', 'vm1', PA1, PA2],
      ['host2', 'vm2', PA2, PA1],
    ] as const) {
      await lab.addr(h, 'eth1', `${local}/24`);
      await lab.veth(vm, 'eth0', h, 'tovm');
      await sh(lab, h, 'ip', 'link', 'add', 'vxlan0', 'type', 'vxlan', 'id', '6000', 'local', local, 'remote', remote, 'dstport', '4789', 'dev', 'eth1');
      await lab.bridge(h, 'br0', ['vxlan0', 'tovm']);
      await lab.up(h, 'vxlan0');
      await lab.up(h, 'tovm');
      await sh(lab, vm, 'ip', 'link', 'set', 'eth0', 'mtu', '1450');
      await lab.addr(vm, 'eth0', `${vm === 'vm1' ? VM1 : VM2}/24`);
      await lab.up(vm, 'eth0');
    }
    return;
  }
  // nvgred: each host's daemon creates its VM's TAP in the VM's namespace.
  const rd = '{12345678-1000-2000-3000-123456780009}';
  const macs = ['60:00:60:00:09:01', '60:00:60:00:09:02'];
  for (const [i, h] of (['host1', 'host2'] as const).entries()) {
    const config = join(out, `${h}.yaml`);
    writeFileSync(
      config,
      [
        `host: { name: bench-${h} }`,
        `provider_addresses: [{ address: ${[PA1, PA2][i]}, prefix_length: 24, interface: eth1 }]`,
        `customer_routes: [{ routing_domain: "${rd}", vsid: 6000, destination_prefix: 10.9.0.0/24, next_hop: 0.0.0.0 }]`,
        'lookup_records:',
        `  - { customer_address: ${VM1}, vsid: 6000, mac: "${macs[0]}", provider_address: ${PA1} }`,
        `  - { customer_address: ${VM2}, vsid: 6000, mac: "${macs[1]}", provider_address: ${PA2} }`,
        `vm_adapters: [{ name: eth0, mac: "${macs[i]}", vsid: 6000, netns: ${lab.ns(`vm${i + 1}`)} }]`,
        `api: { socket: ${join(out, `${h}.sock`)} }`,
        '',
      ].join('\n'),
    );
    // As the systemd unit runs it (Nice=-10).
    const daemon = await lab.spawn(h, ['nice', '-n', '-10', process.execPath, join(repoRoot(), 'dist/src/daemon/main.js'), '--config', config, '--workers', String(WORKERS), ...(mode === 'nvgred-userspace' ? ['--segmentation', 'userspace'] : []), ...NVGRED_ARGS], {
      logFile: join(out, `${h}.log`),
    });
    await daemon.waitForLine((l) => l.includes('"msg":"ready"'), 30_000);
  }
  for (const [vm, addr] of [
    ['vm1', VM1],
    ['vm2', VM2],
  ] as const) {
    await lab.addr(vm, 'eth0', `${addr}/24`);
  }
}

async function iperf(lab: Lab, args: string[], seconds: number): Promise<any> {
  const server = await lab.spawn('vm2', ['iperf3', '-s', '-1', '-B', VM2]);
  await sleep(300);
  const r = await nsExec(lab.ns('vm1'), ['iperf3', '-c', VM2, '-J', '-t', String(seconds), ...args], { timeoutMs: (seconds + 30) * 1000 });
  await lab.stop(server, { timeoutMs: 3000 });
  const j = JSON.parse(r.stdout || '{}');
  if (j.error) throw new Error(`iperf3 ${args.join(' ')}: ${j.error}`);
  return j;
}

async function measure(lab: Lab, mode: Mode): Promise<Result> {
  // Warm up neighbour caches and the flow.
  await nsExec(lab.ns('vm1'), ['ping', '-c', '3', '-i', '0.2', '-W', '1', VM2], { timeoutMs: 10_000 });

  const runs: number[] = [];
  let cpu = 0;
  let bytes = 0;
  for (let i = 0; i < TCP_RUNS; i++) {
    const c0 = cpuSeconds();
    const j = await iperf(lab, [], TCP_SECONDS);
    cpu += cpuSeconds() - c0;
    bytes += j.end.sum_received.bytes;
    runs.push(j.end.sum_received.bits_per_second / 1e9);
  }

  // UDP shares two CPUs between a sender that never waits and everything else: noisy, so a median too.
  const udp: { pps: number; loss: number }[] = [];
  for (let i = 0; i < UDP_RUNS; i++) {
    const sum = (await iperf(lab, ['-u', '-l', '64', '-b', '0'], UDP_SECONDS)).end.sum;
    udp.push({ pps: (sum.packets - sum.lost_packets) / sum.seconds, loss: sum.lost_percent });
  }
  const udpRuns = udp.map((u) => u.pps);

  const pp = await pingPong(lab);

  const p = await nsExec(lab.ns('vm1'), ['ping', '-c', String(PINGS), '-i', '0.002', '-W', '1', VM2], { timeoutMs: PINGS * 10 + 20_000 });
  const rtts = [...p.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000);
  if (rtts.length < PINGS * 0.9) throw new Error(`${mode}: only ${rtts.length} of ${PINGS} pings answered`);

  return {
    mode,
    tcp_gbps_runs: runs,
    tcp_gbps: median(runs),
    udp64_pps_runs: udpRuns,
    udp64_pps: median(udpRuns),
    udp64_loss_pct: median(udp.map((u) => u.loss)),
    rtt_us_median: pp.median,
    rtt_us_p99: pp.p99,
    ping_us_median: median(rtts),
    ping_us_p99: percentile(rtts, 99),
    cpu_seconds_per_gb: cpu / (bytes / 1e9),
  };
}

/** Round trips of a 64-byte UDP ping-pong between a process in each VM (sockperf: one message in flight, the next sent when the answer arrives). */
async function pingPong(lab: Lab): Promise<{ median: number; p99: number }> {
  const server = await lab.spawn('vm2', ['sockperf', 'server', '-i', VM2]);
  try {
    await sleep(300);
    const r = await nsExec(lab.ns('vm1'), ['sockperf', 'ping-pong', '-i', VM2, '-m', '64', '-t', String(PINGPONG_SECONDS), '--full-rtt'], {
      timeoutMs: (PINGPONG_SECONDS + 20) * 1000,
    });
    const at = (p: string) => Number(new RegExp(`percentile ${p} =\\s*([\\d.]+)`).exec(r.stdout + r.stderr)?.[1]);
    const out = { median: at('50.000'), p99: at('99.000') };
    if (!(out.median > 0 && out.p99 > 0)) throw new Error(`sockperf ping-pong: no percentiles in its output: ${(r.stdout + r.stderr).slice(-500)}`);
    return out;
  } finally {
    await lab.stop(server, { timeoutMs: 3000 });
  }
}

/** What the daemons counted: how much offload and merging the run used, and any drops. */
async function daemonCounters(lab: Lab): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const h of ['host1', 'host2']) {
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

function table(results: Result[]): string {
  const by = new Map(results.map((r) => [r.mode, r]));
  const rows: string[][] = [['', 'TCP Gbit/s', 'UDP-64 kpps', 'UDP loss %', 'RTT med µs', 'RTT p99 µs', 'ping med µs', 'ping p99 µs', 'CPU s/GB']];
  const fmt = (r: Result) => [
    r.mode,
    r.tcp_gbps.toFixed(2),
    (r.udp64_pps / 1000).toFixed(0),
    r.udp64_loss_pct.toFixed(1),
    r.rtt_us_median.toFixed(0),
    r.rtt_us_p99.toFixed(0),
    r.ping_us_median.toFixed(0),
    r.ping_us_p99.toFixed(0),
    r.cpu_seconds_per_gb.toFixed(2),
  ];
  for (const r of results) rows.push(fmt(r));
  // Every nvgred variant against VXLAN; nvgred itself against veth too.
  for (const n of results.filter((r) => r.mode.startsWith('nvgred'))) {
    for (const base of n.mode === 'nvgred' ? (['vxlan', 'veth'] as const) : (['vxlan'] as const)) {
      const b = by.get(base);
      if (!b) continue;
      rows.push([
        `${n.mode}/${base}`,
        (n.tcp_gbps / b.tcp_gbps).toFixed(2),
        (n.udp64_pps / b.udp64_pps).toFixed(2),
        '',
        (n.rtt_us_median / b.rtt_us_median).toFixed(2),
        (n.rtt_us_p99 / b.rtt_us_p99).toFixed(2),
        (n.ping_us_median / b.ping_us_median).toFixed(2),
        (n.ping_us_p99 / b.ping_us_p99).toFixed(2),
        (n.cpu_seconds_per_gb / b.cpu_seconds_per_gb).toFixed(2),
      ]);
    }
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

async function main(): Promise<number> {
  const out = join(repoRoot(), 'bench', 'out');
  mkdirSync(out, { recursive: true });
  await Lab.cleanStale(PREFIX);
  const results: Result[] = [];
  for (const mode of MODES) {
    const lab = new Lab(PREFIX);
    const uninstall = installSignalTeardown(lab);
    try {
      await build(lab, mode, out);
      const r = await measure(lab, mode);
      if (mode.startsWith('nvgred')) r.counters = await daemonCounters(lab);
      console.log(
        `${mode}: TCP ${r.tcp_gbps.toFixed(2)} Gbit/s (runs ${r.tcp_gbps_runs.map((x) => x.toFixed(2)).join(', ')}), UDP-64 ${(r.udp64_pps / 1000).toFixed(0)} kpps (runs ${r.udp64_pps_runs.map((x) => (x / 1000).toFixed(0)).join(", ")}; ${r.udp64_loss_pct.toFixed(1)}% lost), ` +
          `RTT ${r.rtt_us_median.toFixed(0)}/${r.rtt_us_p99.toFixed(0)} µs (ping ${r.ping_us_median.toFixed(0)}/${r.ping_us_p99.toFixed(0)} µs)`,
      );
      results.push(r);
    } finally {
      const report = await lab.teardown();
      uninstall();
      if (!report.ok) console.error(`teardown: ${report.errors.join('; ')}`);
    }
  }
  const stamp = new Date().toISOString();
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Linux ${readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}`;
  console.log(`\n${stamp}, ${machine}, nvgred workers: ${WORKERS}${NVGRED_ARGS.length ? `, options: ${NVGRED_ARGS.join(' ')}` : ''}\n\n${table(results)}`);
  const file = join(out, `bench-${stamp.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ date: stamp, machine, workers: WORKERS, nvgred_args: NVGRED_ARGS, results }, null, 2));
  console.log(`\nraw results: ${file}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
