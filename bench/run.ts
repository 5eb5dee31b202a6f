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
//   nvgred-vlan  nvgred with both hosts' PAs on VLAN 100 (tagged on the
//           underlay veth; nvgred's own VLAN interface, a TAP it serves,
//           since these kernels have no 802.1Q): the pair nvgred-vlan/nvgred
// Measured: single-stream TCP (iperf3, median of runs), 64-byte UDP packets/s
// delivered and loss (median of runs), round-trip time two ways (a UDP ping-pong between two
// processes, back to back: sockperf; and pings every 2 ms, answered by the
// kernel, with the machine idle in between), median and p99, and the
// machine's CPU time (all processes and the kernel) per gigabyte moved; for
// nvgred, the daemons' own CPU time per frame they moved in the UDP runs.
// Prints one table with the ratios nvgred/VXLAN and nvgred/veth (and
// nvgred-vlan/nvgred) and writes the raw results as JSON. Everything lives
// in namespaces it creates and removes. bench/vms.ts does the same with QEMU
// guests.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, type LabProcess, installSignalTeardown, nsExec, repoRoot, sleep } from '../lab/netns.js';
import {
  BENCH_HOSTS,
  PA1,
  PA2,
  VM1,
  VM2,
  cpuSeconds,
  daemonCounters,
  formatTable,
  machineDescription,
  median,
  nvgredCpuPerFrame,
  percentile,
  ratio,
  startBenchDaemon,
  writeBenchConfig,
  writeResults,
  runMain,
} from './common.js';

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
const MODES = (process.env.BENCH_MODES ?? 'veth,vxlan,nvgred,nvgred-gro,nvgred-userspace,nvgred-vlan').split(',') as Mode[];
/** nvgred-vlan's VLAN. */
const VLAN = 100;

type Mode = 'veth' | 'vxlan' | 'nvgred' | 'nvgred-gro' | 'nvgred-userspace' | 'nvgred-vlan';

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
  /** nvgred only: the daemons' CPU time (utime + stime) per frame they encapsulated or decapsulated, in the UDP runs. */
  nvgred_us_per_frame?: number;
  /** nvgred only: the daemons' counters after the run. */
  counters?: Record<string, Record<string, number>>;
}

async function sh(lab: Lab, ns: string, ...argv: string[]) {
  return lab.nsExec(ns, argv, { timeoutMs: 120_000 });
}

type Daemons = { host: (typeof BENCH_HOSTS)[number]; proc: LabProcess }[];

/** Build one mode's topology; VM1 and VM2 end up with VM1/VM2 addresses. The nvgred daemons, if any. */
async function build(lab: Lab, mode: Mode, out: string): Promise<Daemons> {
  await lab.addNamespace('vm1');
  await lab.addNamespace('vm2');
  if (mode === 'veth') {
    await lab.veth('vm1', 'eth0', 'vm2', 'eth0');
    await lab.addr('vm1', 'eth0', `${VM1}/24`);
    await lab.addr('vm2', 'eth0', `${VM2}/24`);
    await lab.up('vm1', 'eth0');
    await lab.up('vm2', 'eth0');
    return [];
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
    return [];
  }
  // nvgred: each host's daemon creates its VM's TAP in the VM's namespace.
  const daemons: Daemons = [];
  for (const [i, h] of BENCH_HOSTS.entries()) {
    const { file } = writeBenchConfig(out, i as 0 | 1, [{ name: 'eth0', netns: lab.ns(`vm${i + 1}`) }], mode === 'nvgred-vlan' ? { vlan: VLAN } : {});
    const args = ['--workers', String(WORKERS), ...(mode === 'nvgred-userspace' ? ['--segmentation', 'userspace'] : []), ...NVGRED_ARGS];
    daemons.push({ host: h, proc: await startBenchDaemon(lab, h, file, args, join(out, `${h}.log`)) });
  }
  for (const [vm, addr] of [
    ['vm1', VM1],
    ['vm2', VM2],
  ] as const) {
    await lab.addr(vm, 'eth0', `${addr}/24`);
  }
  return daemons;
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

async function measure(lab: Lab, mode: Mode, daemons: Daemons): Promise<Result> {
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
  const perFrame = await nvgredCpuPerFrame(lab, daemons, async () => {
    for (let i = 0; i < UDP_RUNS; i++) {
      const sum = (await iperf(lab, ['-u', '-l', '64', '-b', '0'], UDP_SECONDS)).end.sum;
      udp.push({ pps: (sum.packets - sum.lost_packets) / sum.seconds, loss: sum.lost_percent });
    }
  });
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
    ...(daemons.length ? { nvgred_us_per_frame: perFrame.us_per_frame } : {}),
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

function table(results: Result[]): string {
  const by = new Map(results.map((r) => [r.mode, r]));
  const rows: string[][] = [['', 'TCP Gbit/s', 'UDP-64 kpps', 'UDP loss %', 'RTT med µs', 'RTT p99 µs', 'ping med µs', 'ping p99 µs', 'CPU s/GB', 'nvgred µs/frame']];
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
    r.nvgred_us_per_frame?.toFixed(2) ?? '',
  ];
  for (const r of results) rows.push(fmt(r));
  // Every nvgred variant against VXLAN; nvgred itself against veth too; the VLAN one against nvgred untagged.
  const bases = (m: Mode): Mode[] => (m === 'nvgred' ? ['vxlan', 'veth'] : m === 'nvgred-vlan' ? ['nvgred', 'vxlan'] : ['vxlan']);
  for (const n of results.filter((r) => r.mode.startsWith('nvgred'))) {
    for (const base of bases(n.mode)) {
      const b = by.get(base);
      if (!b) continue;
      rows.push([
        `${n.mode}/${base}`,
        ratio(n.tcp_gbps, b.tcp_gbps),
        ratio(n.udp64_pps, b.udp64_pps),
        '',
        ratio(n.rtt_us_median, b.rtt_us_median),
        ratio(n.rtt_us_p99, b.rtt_us_p99),
        ratio(n.ping_us_median, b.ping_us_median),
        ratio(n.ping_us_p99, b.ping_us_p99),
        ratio(n.cpu_seconds_per_gb, b.cpu_seconds_per_gb),
        ratio(n.nvgred_us_per_frame, b.nvgred_us_per_frame),
      ]);
    }
  }
  return formatTable(rows);
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
      const daemons = await build(lab, mode, out);
      const r = await measure(lab, mode, daemons);
      if (mode.startsWith('nvgred')) r.counters = await daemonCounters(lab);
      console.log(
        `${mode}: TCP ${r.tcp_gbps.toFixed(2)} Gbit/s (runs ${r.tcp_gbps_runs.map((x) => x.toFixed(2)).join(', ')}), UDP-64 ${(r.udp64_pps / 1000).toFixed(0)} kpps (runs ${r.udp64_pps_runs.map((x) => (x / 1000).toFixed(0)).join(", ")}; ${r.udp64_loss_pct.toFixed(1)}% lost), ` +
          `RTT ${r.rtt_us_median.toFixed(0)}/${r.rtt_us_p99.toFixed(0)} µs (ping ${r.ping_us_median.toFixed(0)}/${r.ping_us_p99.toFixed(0)} µs)` +
          (r.nvgred_us_per_frame !== undefined ? `, nvgred ${r.nvgred_us_per_frame.toFixed(2)} µs CPU/frame` : ''),
      );
      results.push(r);
    } finally {
      const report = await lab.teardown();
      uninstall();
      if (!report.ok) console.error(`teardown: ${report.errors.join('; ')}`);
    }
  }
  const stamp = new Date().toISOString();
  const machine = machineDescription();
  console.log(`\n${stamp}, ${machine}, nvgred workers: ${WORKERS}${NVGRED_ARGS.length ? `, options: ${NVGRED_ARGS.join(' ')}` : ''}\n\n${table(results)}`);
  const file = writeResults(out, 'bench', stamp, { date: stamp, machine, workers: WORKERS, nvgred_args: NVGRED_ARGS, results });
  console.log(`\nraw results: ${file}`);
  return 0;
}

runMain(main);
