// make bench, QEMU part: the same two QEMU guests (the lab's image, TCG),
// booted once, joined three ways at once, one NIC per way, each way its own
// customer network (10.9.k.0/24):
//   nvgred-vhost   k=0  VM [vhost-user] host1 (nvgred) —eth1 veth— host2 (nvgred) [vhost-user] VM
//   nvgred-attach  k=1  VM [QEMU's TAP, adopted: mode attach] host1 (nvgred) —eth1— host2 (nvgred) [TAP] VM
//   bridge-vxlan   k=2  VM [QEMU's TAP] host1 [bridge + kernel VXLAN] —eth2 veth— host2 [bridge + kernel VXLAN] [TAP] VM
// The TAPs keep QEMU's default offloads (vnet_hdr on). Each measurement
// runs over the three ways in turn, run after run, so that the load of a
// shared machine falls on all three alike. Measured from inside the guests:
// single-stream TCP (iperf3, median of runs), 64-byte UDP packets/s
// delivered (iperf3 -b 0, median of runs), ping RTT median and p99; nvgred's
// own CPU time (utime + stime of the daemons) per frame it moved (its encap +
// decap counters) and per GB, over the UDP and the TCP runs; how busy the
// guests' QEMUs were during the UDP runs, and where the lost datagrams went.
// The guests are emulated (no KVM): they, not the dataplane, set the
// absolute figures; the ratios between the ways and nvgred's CPU per frame
// are what to read. Prints a table with the ratios to bridge-vxlan and
// writes JSON to bench/out/. Everything lives in `nvvb-` namespaces, torn
// down (QEMU stopped by PID) on every exit path.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, type LabProcess, installSignalTeardown, linkExists, repoRoot, waitFor } from '../lab/netns.js';
import { guestPing } from '../lab/vm/guest.js';
import { buildImage } from '../lab/vm/image.js';
import { GUEST_MTU, waitPort } from '../lab/vm/nvgred.js';
import { Vm, type VmNet, nicScript, vmRunDir } from '../lab/vm/qemu.js';
import {
  BENCH_HOSTS,
  type BenchHost,
  benchCa,
  benchMac,
  benchVsid,
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
  runMain,
} from './common.js';

const PREFIX = 'nvvb-';
const TCP_RUNS = Number(process.env.BENCH_VM_TCP_RUNS ?? 3);
const TCP_SECONDS = Number(process.env.BENCH_VM_TCP_SECONDS ?? 5);
const UDP_RUNS = Number(process.env.BENCH_VM_UDP_RUNS ?? 3);
const UDP_SECONDS = Number(process.env.BENCH_VM_UDP_SECONDS ?? 5);
const PINGS = Number(process.env.BENCH_VM_PINGS ?? 500);
/** Under TCG on a loaded 2-core machine a boot takes 3 s to a minute. */
const BOOT_MS = 180_000;
/** The kernel VXLAN NICs' MTU: a 1500-byte underlay less VXLAN's 50 bytes (nvgred's: GUEST_MTU). */
const VXLAN_MTU = 1450;
/** The kernel VXLAN's underlay: a veth pair of its own. */
const VXLAN_PA = ['192.168.10.1', '192.168.10.2'] as const;

type Mode = 'nvgred-vhost' | 'nvgred-attach' | 'bridge-vxlan';
/** Each way's customer network (k) is its index here. */
const MODES: readonly Mode[] = ['nvgred-vhost', 'nvgred-attach', 'bridge-vxlan'];
const BASE: Mode = 'bridge-vxlan';
const netOf = (m: Mode): number => MODES.indexOf(m);
const mtuOf = (m: Mode): number => (m === BASE ? VXLAN_MTU : GUEST_MTU);

interface Result {
  mode: Mode;
  guest_mtu: number;
  tcp_mbps_runs: number[];
  tcp_mbps: number;
  udp64_pps_runs: number[];
  udp64_pps: number;
  udp64_loss_pct: number;
  /** Datagrams the sending guest's iperf3 sent per second (delivered + lost). */
  udp64_sent_pps: number;
  udp64_lost: number;
  /** Of those lost, how many the receiving guest's kernel dropped for a full socket buffer (its iperf3 did not keep up), over all UDP runs. */
  udp64_guest_rcvbuf_drops: number;
  ping_us_median: number;
  ping_us_p99: number;
  pings_answered: number;
  /** nvgred only: the daemons' CPU time per frame encapsulated or decapsulated, over the UDP runs and over the TCP runs (large frames: TSO). */
  nvgred_us_per_frame_udp?: number;
  nvgred_us_per_frame_tcp?: number;
  /** nvgred only: the daemons' CPU seconds per gigabyte of TCP received (frame sizes differ with TSO: this compares like with like). */
  nvgred_cpu_s_per_gb_tcp?: number;
  /** CPU use of each guest's QEMU during the UDP runs, % of one core: at 100 the guest is the bottleneck. */
  qemu_cpu_pct_udp: number[];
}

interface Setup {
  guests: [Vm, Vm];
  daemons: { host: BenchHost; proc: LabProcess }[];
}

/** The TAP QEMU makes for a way's NIC of guest `i`. */
const tapOf = (m: Mode, i: number): string => `g${i + 1}${m === BASE ? 'x' : 'a'}`;

/** The two hosts, both underlays, nvgred on each, the two guests (booted) with a NIC on each way. */
async function build(lab: Lab, out: string): Promise<Setup> {
  const image = await buildImage({ log: (m) => console.log(m) });
  for (const h of BENCH_HOSTS) await lab.addNamespace(h);
  for (const dev of ['eth1', 'eth2']) {
    await lab.veth('host1', dev, 'host2', dev);
    for (const h of BENCH_HOSTS) await lab.up(h, dev);
  }
  const vmDir = vmRunDir(lab);
  const vhost = (i: number) => join(vmDir, `g${i + 1}v.vhost.sock`);
  // nvgred first: the attach adapter waits for its TAP, the vhost-user one connects to QEMU's socket once it is there.
  const daemons: Setup['daemons'] = [];
  const sockets: string[] = [];
  for (const [i, h] of BENCH_HOSTS.entries()) {
    const { file, socket } = writeBenchConfig(out, i as 0 | 1, [
      { name: `g${i + 1}v`, mode: 'vhost_user', socket: vhost(i) },
      { name: tapOf('nvgred-attach', i), mode: 'attach' },
    ]);
    sockets.push(socket);
    daemons.push({ host: h, proc: await startBenchDaemon(lab, h, file, [], join(out, `${h}.log`)) });
  }
  const guests = ([0, 1] as const).map((i) => {
    const k = netOf('nvgred-vhost');
    const tap = (m: Mode): { net: VmNet; mac: string; hostMtu: number } => ({ net: { kind: 'tap', ifname: tapOf(m, i), vnetHdr: true }, mac: benchMac(netOf(m), i), hostMtu: mtuOf(m) });
    return new Vm(
      lab,
      image,
      { name: `g${i + 1}`, ns: BENCH_HOSTS[i], net: { kind: 'vhost-user', socket: vhost(i) }, mac: benchMac(k, i), ip: `${benchCa(k, i)}/24`, hostMtu: GUEST_MTU, moreNics: [tap('nvgred-attach'), tap(BASE)] },
      { logDir: join(out, 'vms') },
    ) as Vm;
  }) as [Vm, Vm];
  await Promise.all(guests.map((g) => g.start()));
  for (const [i, h] of BENCH_HOSTS.entries()) {
    const tap = tapOf(BASE, i);
    await waitFor(() => linkExists(lab.ns(h), tap), 15_000, { what: `QEMU's TAP ${h}:${tap}` });
    await lab.addr(h, 'eth2', `${VXLAN_PA[i]}/24`);
    await lab.nsExec(h, ['ip', 'link', 'add', 'vxlan0', 'type', 'vxlan', 'id', String(benchVsid(netOf(BASE))), 'local', VXLAN_PA[i], 'remote', VXLAN_PA[1 - i]!, 'dstport', '4789', 'dev', 'eth2'], { check: true });
    await lab.bridge(h, 'br0', ['vxlan0', tap]);
  }
  await Promise.all(guests.map((g) => g.waitBooted(BOOT_MS)));
  for (const [i, s] of sockets.entries()) for (const a of [`g${i + 1}v`, tapOf('nvgred-attach', i)]) await waitPort(s, a, true, BOOT_MS);
  for (const [i, g] of guests.entries()) {
    for (const m of ['nvgred-attach', BASE] as const) await g.execOk(nicScript(benchMac(netOf(m), i), `${benchCa(netOf(m), i)}/24`, mtuOf(m)));
  }
  return { guests, daemons };
}

/** iperf3 in guest 1 against the server in guest 2 over way `m`; its JSON report. */
async function guestIperf(g1: Vm, m: Mode, args: string, seconds: number): Promise<any> {
  // -i 0: no interval reports (the console carries the JSON).
  const out = await g1.execOk(`iperf3 -c ${benchCa(netOf(m), 1)} -J -i 0 -t ${seconds} ${args}`, { timeoutMs: (seconds + 60) * 1000 });
  const j = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1));
  if (j.error) throw new Error(`iperf3 ${m} ${args}: ${j.error}`);
  return j;
}

/** Sums over the runs of one way. */
interface Acc {
  tcp: { mbps: number; bytes: number }[];
  tcpCpu: number;
  tcpFrames: number;
  udp: { pps: number; sent: number; lost: number; loss: number }[];
  udpCpu: number;
  udpFrames: number;
  udpSeconds: number;
  qemuCpu: number[];
  rcvbuf: number;
}

async function measure(lab: Lab, s: Setup): Promise<Result[]> {
  const [g1, g2] = s.guests;
  for (const m of MODES) {
    const warm = await guestPing(g1, benchCa(netOf(m), 1), { count: 3, waitS: 2 });
    if (warm.received < 1) throw new Error(`${m}: ${g1.spec.name} cannot reach ${benchCa(netOf(m), 1)}: ${warm.output.trim().slice(-300)}`);
  }
  await g2.execOk(`iperf3 -s -D --logfile /tmp/iperf3.log; i=0; until netstat -ltn | grep -q ':5201 '; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done`);
  const acc = new Map<Mode, Acc>(MODES.map((m) => [m, { tcp: [], tcpCpu: 0, tcpFrames: 0, udp: [], udpCpu: 0, udpFrames: 0, udpSeconds: 0, qemuCpu: [0, 0], rcvbuf: 0 }]));
  const a = (m: Mode) => acc.get(m)!;
  const nvgred = (m: Mode) => (m === BASE ? [] : s.daemons);

  for (let r = 0; r < TCP_RUNS; r++) {
    for (const m of MODES) {
      const t = await nvgredCpuPerFrame(lab, nvgred(m), async () => (await guestIperf(g1, m, '', TCP_SECONDS)).end.sum_received);
      a(m).tcp.push({ mbps: t.result.bits_per_second / 1e6, bytes: t.result.bytes });
      a(m).tcpCpu += t.cpu_s;
      a(m).tcpFrames += t.frames;
    }
  }

  // The receiving guest's UDP counters (/proc/net/snmp): where the lost datagrams went.
  const rcvbufErrors = async (): Promise<number> => {
    const [head, vals] = (await g2.execOk('grep ^Udp: /proc/net/snmp')).trim().split('\n').map((l) => l.trim().split(/\s+/));
    return Number(vals![head!.indexOf('RcvbufErrors')]);
  };
  const qemuPids = s.guests.map((g) => g.process!.pid);
  for (let r = 0; r < UDP_RUNS; r++) {
    for (const m of MODES) {
      const r0 = await rcvbufErrors();
      const q0 = qemuPids.map(processCpuSeconds);
      const t0 = Date.now();
      const u = await nvgredCpuPerFrame(lab, nvgred(m), async () => (await guestIperf(g1, m, '-u -l 64 -b 0', UDP_SECONDS)).end.sum);
      a(m).udpSeconds += (Date.now() - t0) / 1000;
      qemuPids.forEach((p, i) => (a(m).qemuCpu[i]! += processCpuSeconds(p) - q0[i]!));
      a(m).rcvbuf += (await rcvbufErrors()) - r0;
      const sum = u.result;
      a(m).udp.push({ pps: (sum.packets - sum.lost_packets) / sum.seconds, sent: sum.packets / sum.seconds, lost: sum.lost_packets, loss: sum.lost_percent });
      a(m).udpCpu += u.cpu_s;
      a(m).udpFrames += u.frames;
    }
  }

  const results: Result[] = [];
  for (const m of MODES) {
    // busybox ping: one line per reply; only the times cross the console.
    const p = await g1.execOk(`ping -c ${PINGS} -i 0.01 -W 1 ${benchCa(netOf(m), 1)} | sed -n 's/.*time=\\([0-9.]*\\) ms.*/\\1/p'`, { timeoutMs: PINGS * 50 + 30_000 });
    const rtts = p.split('\n').filter(Boolean).map((x) => Number(x) * 1000);
    if (rtts.length < PINGS * 0.9) throw new Error(`${m}: only ${rtts.length} of ${PINGS} pings answered`);
    const x = a(m);
    const tcpBytes = x.tcp.reduce((n, t) => n + t.bytes, 0);
    results.push({
      mode: m,
      guest_mtu: mtuOf(m),
      tcp_mbps_runs: x.tcp.map((t) => t.mbps),
      tcp_mbps: median(x.tcp.map((t) => t.mbps)),
      udp64_pps_runs: x.udp.map((u) => u.pps),
      udp64_pps: median(x.udp.map((u) => u.pps)),
      udp64_loss_pct: median(x.udp.map((u) => u.loss)),
      udp64_sent_pps: median(x.udp.map((u) => u.sent)),
      udp64_lost: x.udp.reduce((n, u) => n + u.lost, 0),
      udp64_guest_rcvbuf_drops: x.rcvbuf,
      ping_us_median: median(rtts),
      ping_us_p99: percentile(rtts, 99),
      pings_answered: rtts.length,
      ...(m !== BASE
        ? { nvgred_us_per_frame_udp: (x.udpCpu / x.udpFrames) * 1e6, nvgred_us_per_frame_tcp: (x.tcpCpu / x.tcpFrames) * 1e6, nvgred_cpu_s_per_gb_tcp: x.tcpCpu / (tcpBytes / 1e9) }
        : {}),
      qemu_cpu_pct_udp: x.qemuCpu.map((c) => (c / x.udpSeconds) * 100),
    });
  }
  return results;
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
    const x = by.get(a)!;
    const y = by.get(b)!;
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
  const loadStart = loadAverage();
  const t0 = Date.now();
  const lab = new Lab(PREFIX);
  const uninstall = installSignalTeardown(lab);
  let results: Result[];
  try {
    const s = await build(lab, out);
    console.log(`guests up, a NIC on each way, ${((Date.now() - t0) / 1000).toFixed(1)} s after the start`);
    results = await measure(lab, s);
    const counters = await daemonCounters(lab);
    for (const r of results) {
      console.log(
        `${r.mode}: TCP ${r.tcp_mbps.toFixed(0)} Mbit/s (runs ${r.tcp_mbps_runs.map((x) => x.toFixed(0)).join(', ')}), UDP-64 ${r.udp64_pps.toFixed(0)} pps (runs ${r.udp64_pps_runs.map((x) => x.toFixed(0)).join(', ')}; ` +
          `sent ${r.udp64_sent_pps.toFixed(0)} pps, ${r.udp64_loss_pct.toFixed(1)}% lost, ${r.udp64_guest_rcvbuf_drops} of ${r.udp64_lost} in the receiving guest's socket buffer), ` +
          `ping ${r.ping_us_median.toFixed(0)}/${r.ping_us_p99.toFixed(0)} µs, QEMU ${r.qemu_cpu_pct_udp.map((x) => x.toFixed(0)).join('/')}% CPU in the UDP runs`,
      );
    }
    const stamp = new Date().toISOString();
    const machine = machineDescription();
    console.log(`\n${stamp}, ${machine} (${loadStart} at the start), QEMU guests (TCG, 1 vCPU), ${((Date.now() - t0) / 1000).toFixed(0)} s\n\n${table(results)}`);
    const file = writeResults(out, 'bench-vms', stamp, { date: stamp, machine, load_average_start: loadStart, results, counters });
    console.log(`\nraw results: ${file}`);
  } finally {
    const report = await lab.teardown();
    uninstall();
    if (!report.ok) console.error(`teardown: ${report.errors.join('; ')}`);
  }
  return 0;
}

runMain(main);
