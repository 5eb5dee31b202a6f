// make bench, QEMU part: the same two QEMU guests (the lab's image, TCG)
// joined three ways in one run, each measured the same way:
//   bridge-vxlan   VM1 [TAP] host1 [bridge + kernel VXLAN] —underlay veth— host2 [bridge + kernel VXLAN] [TAP] VM2
//   nvgred-vhost   VM1 [vhost-user] host1 (nvgred) —underlay veth— host2 (nvgred) [vhost-user] VM2
//   nvgred-attach  VM1 [QEMU's TAP, adopted: mode attach] host1 (nvgred) —underlay veth— host2 (nvgred) [TAP] VM2
// The TAPs keep QEMU's default offloads (vnet_hdr on) in both TAP modes.
// Measured from inside the guests: single-stream TCP (iperf3, median of
// runs), 64-byte UDP packets/s delivered (iperf3 -b 0, median of runs), ping
// RTT median and p99; and nvgred's own CPU time (utime + stime of the
// daemons) per frame it moved (its encap + decap counters), over the TCP runs
// and over the UDP runs; and how busy the guests' QEMUs were during the UDP
// runs. The guests are emulated (no KVM): they, not the dataplane, set the
// absolute figures; the ratios between the three ways and nvgred's CPU per
// frame are what to read. Prints a table with the ratios to bridge-vxlan and
// writes JSON to bench/out/. Everything lives in `nvvb-` namespaces, torn
// down (QEMU stopped by PID) on every exit path.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, type LabProcess, installSignalTeardown, linkExists, repoRoot, waitFor } from '../lab/netns.js';
import type { HostName, QemuVmSpec } from '../lab/topology.js';
import { vhostSocket } from '../lab/topology.js';
import { guestPing } from '../lab/vm/guest.js';
import { buildImage, type VmImage } from '../lab/vm/image.js';
import { GUEST_MTU, qemuGuest, waitPort } from '../lab/vm/nvgred.js';
import { Vm, vmRunDir } from '../lab/vm/qemu.js';
import {
  type AdapterYaml,
  BENCH_HOSTS,
  type BenchHost,
  PA1,
  PA2,
  VM1,
  VM2,
  VM_MACS,
  VSID,
  daemonCounters,
  formatTable,
  loadAverage,
  machineDescription,
  median,
  nvgredCpuPerFrame,
  percentile,
  processCpuSeconds,
  ratio,
  startBenchDaemon,
  writeBenchConfig,
  writeResults,
} from './common.js';

const PREFIX = 'nvvb-';
const TCP_RUNS = Number(process.env.BENCH_VM_TCP_RUNS ?? 3);
const TCP_SECONDS = Number(process.env.BENCH_VM_TCP_SECONDS ?? 5);
const UDP_RUNS = Number(process.env.BENCH_VM_UDP_RUNS ?? 3);
const UDP_SECONDS = Number(process.env.BENCH_VM_UDP_SECONDS ?? 5);
const PINGS = Number(process.env.BENCH_VM_PINGS ?? 500);
const MODES = (process.env.BENCH_VM_MODES ?? 'bridge-vxlan,nvgred-vhost,nvgred-attach').split(',') as Mode[];
/** Under TCG on a loaded 2-core machine a boot takes 3 s to a minute. */
const BOOT_MS = 180_000;
/** The kernel VXLAN guests' MTU: a 1500-byte underlay less VXLAN's 50 bytes (nvgred's: GUEST_MTU). */
const VXLAN_MTU = 1450;

type Mode = 'bridge-vxlan' | 'nvgred-vhost' | 'nvgred-attach';
const BASE: Mode = 'bridge-vxlan';

interface Result {
  mode: Mode;
  guest_mtu: number;
  /** From the start of the mode's setup until both guests answer (QEMU with vhost-user runs its guest only once nvgred has connected). */
  up_s: number;
  tcp_mbps_runs: number[];
  tcp_mbps: number;
  udp64_pps_runs: number[];
  udp64_pps: number;
  udp64_loss_pct: number;
  /** Datagrams the sending guest's iperf3 sent per second (delivered + lost). */
  udp64_sent_pps: number;
  /** Of those lost, how many the receiving guest's kernel dropped for a full socket buffer (its iperf3 did not keep up), over all UDP runs. */
  udp64_guest_rcvbuf_drops: number;
  udp64_lost: number;
  ping_us_median: number;
  ping_us_p99: number;
  pings_answered: number;
  /** nvgred only: the daemons' CPU time per frame encapsulated or decapsulated, over the TCP runs (large frames: TSO) and over the UDP runs. */
  nvgred_us_per_frame_tcp?: number;
  nvgred_us_per_frame_udp?: number;
  nvgred_frames_udp?: number;
  /** nvgred only: the daemons' CPU seconds per gigabyte of TCP received (frame sizes differ with TSO: this compares like with like). */
  nvgred_cpu_s_per_gb_tcp?: number;
  /** CPU use of each guest's QEMU during the UDP runs, % of one core: at 100 the guest is the bottleneck. */
  qemu_cpu_pct_udp: number[];
  counters?: Record<string, Record<string, number>>;
}

interface Setup {
  guests: Vm[];
  daemons: { host: BenchHost; proc: LabProcess }[];
}

/** The guest on bench host `i`, as the lab plans a QEMU guest on nvgred. */
function guestSpec(i: 0 | 1, mode: QemuVmSpec['mode']): QemuVmSpec {
  const name = `g${i + 1}`;
  return { name, vmName: `Bench${name}`, adapter: name, mode, host: BENCH_HOSTS[i] as HostName, tenant: 'contoso', vsid: VSID, ip: [VM1, VM2][i]!, prefixLength: 24, mac: VM_MACS[i], gateway: '10.9.0.1' };
}

/** The two hosts, their underlay, the two guests (booted) joined the mode's way. */
async function build(lab: Lab, mode: Mode, image: VmImage, out: string): Promise<Setup> {
  for (const h of BENCH_HOSTS) await lab.addNamespace(h);
  await lab.veth('host1', 'eth1', 'host2', 'eth1');
  for (const h of BENCH_HOSTS) await lab.up(h, 'eth1');
  const vmDir = vmRunDir(lab);
  const logDir = join(out, 'vms');
  const daemons: Setup['daemons'] = [];
  let guests: Vm[];
  if (mode === 'bridge-vxlan') {
    guests = ([0, 1] as const).map((i) => {
      const s = guestSpec(i, 'attach');
      return new Vm(lab, image, { name: s.name, ns: s.host, net: { kind: 'tap', ifname: s.adapter, vnetHdr: true }, mac: s.mac, ip: `${s.ip}/24`, hostMtu: VXLAN_MTU }, { logDir });
    });
    await Promise.all(guests.map((g) => g.start()));
    for (const [i, h] of BENCH_HOSTS.entries()) {
      const [local, remote] = i === 0 ? [PA1, PA2] : [PA2, PA1];
      const tap = guests[i]!.spec.net.kind === 'tap' ? guests[i]!.spec.net.ifname : '';
      await waitFor(() => linkExists(lab.ns(h), tap), 15_000, { what: `QEMU's TAP ${h}:${tap}` });
      await lab.addr(h, 'eth1', `${local}/24`);
      await lab.nsExec(h, ['ip', 'link', 'add', 'vxlan0', 'type', 'vxlan', 'id', String(VSID), 'local', local, 'remote', remote, 'dstport', '4789', 'dev', 'eth1'], { check: true });
      await lab.bridge(h, 'br0', ['vxlan0', tap]);
    }
  } else {
    const specs = ([0, 1] as const).map((i) => guestSpec(i, mode === 'nvgred-vhost' ? 'vhost_user' : 'attach'));
    guests = specs.map((s) => qemuGuest(lab, image, s, vmDir, { logDir }));
    // nvgred first: an attach adapter waits for its TAP, a vhost-user one connects to QEMU's socket once it is there.
    const sockets: string[] = [];
    for (const [i, h] of BENCH_HOSTS.entries()) {
      const s = specs[i]!;
      const adapter: AdapterYaml = { name: s.adapter, mode: s.mode, ...(s.mode === 'vhost_user' ? { socket: vhostSocket(vmDir, s) } : {}) };
      const { file, socket } = writeBenchConfig(out, i as 0 | 1, adapter);
      sockets.push(socket);
      daemons.push({ host: h, proc: await startBenchDaemon(lab, h, file, [], join(out, `${h}.log`)) });
    }
    await Promise.all(guests.map((g) => g.start()));
    await Promise.all(specs.map((s, i) => waitPort(sockets[i]!, s.adapter, true, BOOT_MS)));
  }
  return { guests, daemons };
}

/** iperf3 in guest 1 against the server in guest 2; its JSON report. */
async function guestIperf(g1: Vm, args: string, seconds: number): Promise<any> {
  // -i 0: no interval reports (the console carries the JSON).
  const out = await g1.execOk(`iperf3 -c ${VM2} -J -i 0 -t ${seconds} ${args}`, { timeoutMs: (seconds + 60) * 1000 });
  const j = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1));
  if (j.error) throw new Error(`iperf3 ${args}: ${j.error}`);
  return j;
}

async function measure(lab: Lab, mode: Mode, s: Setup, upS: number): Promise<Result> {
  const [g1, g2] = s.guests as [Vm, Vm];
  const warm = await guestPing(g1, VM2, { count: 3, waitS: 2 });
  if (warm.received < 1) throw new Error(`${mode}: ${g1.spec.name} cannot reach ${VM2}: ${warm.output.trim().slice(-300)}`);
  await g2.execOk(`iperf3 -s -D -B ${VM2} --logfile /tmp/iperf3.log; i=0; until netstat -ltn | grep -q ':5201 '; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done`);

  const tcp = await nvgredCpuPerFrame(lab, s.daemons, async () => {
    const runs: { mbps: number; bytes: number }[] = [];
    for (let i = 0; i < TCP_RUNS; i++) {
      const r = (await guestIperf(g1, '', TCP_SECONDS)).end.sum_received;
      runs.push({ mbps: r.bits_per_second / 1e6, bytes: r.bytes });
    }
    return runs;
  });

  // The receiving guest's UDP counters (/proc/net/snmp): where the lost datagrams went.
  const rcvbufErrors = async (): Promise<number> => {
    const [head, vals] = (await g2.execOk('grep ^Udp: /proc/net/snmp')).trim().split('\n').map((l) => l.trim().split(/\s+/));
    return Number(vals![head!.indexOf('RcvbufErrors')]);
  };
  const r0 = await rcvbufErrors();
  const qemuPids = s.guests.map((g) => g.process!.pid);
  const q0 = qemuPids.map(processCpuSeconds);
  const t0 = Date.now();
  const udp = await nvgredCpuPerFrame(lab, s.daemons, async () => {
    const runs: { pps: number; sent: number; lost: number; loss: number }[] = [];
    for (let i = 0; i < UDP_RUNS; i++) {
      const sum = (await guestIperf(g1, '-u -l 64 -b 0', UDP_SECONDS)).end.sum;
      runs.push({ pps: (sum.packets - sum.lost_packets) / sum.seconds, sent: sum.packets / sum.seconds, lost: sum.lost_packets, loss: sum.lost_percent });
    }
    return runs;
  });
  const wall = (Date.now() - t0) / 1000;
  const qemuPct = qemuPids.map((p, i) => ((processCpuSeconds(p) - q0[i]!) / wall) * 100);
  const rcvbufDrops = (await rcvbufErrors()) - r0;

  // busybox ping: one line per reply; only the times cross the console.
  const p = await g1.execOk(`ping -c ${PINGS} -i 0.01 -W 1 ${VM2} | sed -n 's/.*time=\\([0-9.]*\\) ms.*/\\1/p'`, { timeoutMs: PINGS * 50 + 30_000 });
  const rtts = p.split('\n').filter(Boolean).map((x) => Number(x) * 1000);
  if (rtts.length < PINGS * 0.9) throw new Error(`${mode}: only ${rtts.length} of ${PINGS} pings answered`);

  const tcpRuns = tcp.result.map((r) => r.mbps);
  const tcpBytes = tcp.result.reduce((a, r) => a + r.bytes, 0);
  const udpRuns = udp.result.map((u) => u.pps);
  const nvgred = s.daemons.length > 0;
  return {
    mode,
    guest_mtu: mode === BASE ? VXLAN_MTU : GUEST_MTU,
    up_s: upS,
    tcp_mbps_runs: tcpRuns,
    tcp_mbps: median(tcpRuns),
    udp64_pps_runs: udpRuns,
    udp64_pps: median(udpRuns),
    udp64_loss_pct: median(udp.result.map((u) => u.loss)),
    udp64_sent_pps: median(udp.result.map((u) => u.sent)),
    udp64_guest_rcvbuf_drops: rcvbufDrops,
    udp64_lost: udp.result.reduce((a, u) => a + u.lost, 0),
    ping_us_median: median(rtts),
    ping_us_p99: percentile(rtts, 99),
    pings_answered: rtts.length,
    ...(nvgred
      ? { nvgred_us_per_frame_tcp: tcp.us_per_frame, nvgred_us_per_frame_udp: udp.us_per_frame, nvgred_frames_udp: udp.frames, nvgred_cpu_s_per_gb_tcp: tcp.cpu_s / (tcpBytes / 1e9) }
      : {}),
    qemu_cpu_pct_udp: qemuPct,
  };
}

function table(results: Result[]): string {
  const rows: string[][] = [['', 'TCP Mbit/s', 'UDP-64 pps', 'UDP loss %', 'ping med µs', 'ping p99 µs', 'nvgred µs/frame UDP', 'nvgred µs/frame TCP', 'nvgred s/GB TCP', 'QEMU CPU % UDP']];
  const f = (x: number | undefined, d: number) => (x === undefined || !Number.isFinite(x) ? '' : x.toFixed(d));
  for (const r of results) {
    rows.push([
      r.mode,
      f(r.tcp_mbps, 0),
      f(r.udp64_pps, 0),
      f(r.udp64_loss_pct, 1),
      f(r.ping_us_median, 0),
      f(r.ping_us_p99, 0),
      f(r.nvgred_us_per_frame_udp, 2),
      f(r.nvgred_us_per_frame_tcp, 2),
      f(r.nvgred_cpu_s_per_gb_tcp, 2),
      r.qemu_cpu_pct_udp.map((x) => x.toFixed(0)).join('/'),
    ]);
  }
  const by = new Map(results.map((r) => [r.mode, r]));
  const pairs: [Mode, Mode][] = [
    ['nvgred-vhost', BASE],
    ['nvgred-attach', BASE],
    ['nvgred-vhost', 'nvgred-attach'],
  ];
  for (const [a, b] of pairs) {
    const x = by.get(a);
    const y = by.get(b);
    if (!x || !y) continue;
    rows.push([
      `${a}/${b}`,
      ratio(x.tcp_mbps, y.tcp_mbps),
      ratio(x.udp64_pps, y.udp64_pps),
      '',
      ratio(x.ping_us_median, y.ping_us_median),
      ratio(x.ping_us_p99, y.ping_us_p99),
      ratio(x.nvgred_us_per_frame_udp, y.nvgred_us_per_frame_udp),
      ratio(x.nvgred_us_per_frame_tcp, y.nvgred_us_per_frame_tcp),
      ratio(x.nvgred_cpu_s_per_gb_tcp, y.nvgred_cpu_s_per_gb_tcp),
      '',
    ]);
  }
  return formatTable(rows);
}

async function main(): Promise<number> {
  const out = join(repoRoot(), 'bench', 'out');
  mkdirSync(out, { recursive: true });
  await Lab.cleanStale(PREFIX);
  const image = await buildImage({ log: (m) => console.log(m) });
  const t0 = Date.now();
  const loadStart = loadAverage();
  const results: Result[] = [];
  for (const mode of MODES) {
    const lab = new Lab(PREFIX);
    const uninstall = installSignalTeardown(lab);
    try {
      const tb = Date.now();
      const s = await build(lab, mode, image, out);
      await Promise.all(s.guests.map((g) => g.waitBooted(BOOT_MS)));
      const upS = (Date.now() - tb) / 1000;
      console.log(`${mode}: guests up ${upS.toFixed(1)} s after the start`);
      const r = await measure(lab, mode, s, upS);
      if (s.daemons.length) r.counters = await daemonCounters(lab);
      console.log(
        `${mode}: TCP ${r.tcp_mbps.toFixed(0)} Mbit/s (runs ${r.tcp_mbps_runs.map((x) => x.toFixed(0)).join(', ')}), UDP-64 ${r.udp64_pps.toFixed(0)} pps (runs ${r.udp64_pps_runs.map((x) => x.toFixed(0)).join(', ')}; ${r.udp64_loss_pct.toFixed(1)}% lost, ${r.udp64_guest_rcvbuf_drops} of ${r.udp64_lost} in the receiving guest's socket buffer), ` +
          `ping ${r.ping_us_median.toFixed(0)}/${r.ping_us_p99.toFixed(0)} µs` +
          (r.nvgred_us_per_frame_udp !== undefined ? `, nvgred ${r.nvgred_us_per_frame_tcp!.toFixed(2)} (TCP) / ${r.nvgred_us_per_frame_udp.toFixed(2)} (UDP) µs CPU/frame` : '') +
          `, QEMU ${r.qemu_cpu_pct_udp.map((x) => x.toFixed(0)).join('/')}% CPU in the UDP runs`,
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
  console.log(`\n${stamp}, ${machine} (${loadStart} at the start), QEMU guests (TCG, 1 vCPU), ${((Date.now() - t0) / 1000).toFixed(0)} s\n\n${table(results)}`);
  const file = writeResults(out, 'bench-vms', stamp, { date: stamp, machine, load_average_start: loadStart, image: image.key, results });
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
