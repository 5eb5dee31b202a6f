// make soak: the reference lab (lab/topology.ts) under everything a tenant
// and an operator do at once, for SOAK_SECONDS (default 600), to show that
// nothing accumulates in the daemons and nothing breaks:
//
// - TCP transfers, SHA-256 compared: contoso1→contoso3, contoso3→contoso2,
//   contoso2→the server behind MT-GW (4 MiB each), fabrikam1→fabrikam3
//   (1 MiB) over a learned record: Fabrikam3 has no static record here, only
//   an L2Only one (its MAC at Host 2's PA), and learning.ttl_seconds is 20;
// - pings every 10 ms (cross-host, to the gateway 10.0.1.1, through MT-GW);
//   iperf3 UDP at 10 Mbit/s in 10 s rounds;
// - malformed frames from Fabrikam2 (~13/s: runts, bad headers, another
//   VM's source MAC, a VLAN tag, broken ARP), which the core must drop and count;
// - lookup-record churn on every host's API every 300 ms (add, replace,
//   change PA, delete, over 20 unused addresses);
// - per host once a minute (staggered): reload by SIGHUP, a VM adapter added
//   in its own namespace, addressed, 100 pings to its gateway, removed, reload
//   by POST /v1/reload; event streams followed for 45 s, then dropped;
// - learning rounds: learned, deleted on both hosts and learned again,
//   expired once Fabrikam1 goes quiet.
//
// Every SOAK_SAMPLE_SECONDS (10) each daemon's RSS, anonymous RSS, V8 heap
// (its metrics), descriptors, threads and CPU are sampled, printed and
// appended to bench/out/soak-<date>.csv; a .json follows at the end. Exit 1
// when a transfer failed or its checksum differed, the API answered 5xx, a
// daemon died or did not exit 0 on SIGTERM, RSS drifted ≥ 5 % after warm-up,
// or descriptors grew. Warm-up: until each daemon's first full collection of
// its V8 heap (--trace-gc's Mark-Compact), before which the heap grows to its
// first limit whatever the code does; SOAK_WARMUP_SECONDS overrides.
// Ctrl-C tears everything down. Lab prefix nvsk-; files in bench/out/soak.

import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { ApiClient, type ApiResponse } from '../src/cli/client.js';
import { SseParser } from '../src/cli/monitor.js';
import {
  Lab,
  type LabProcess,
  type Scrape,
  fdKinds,
  installSignalTeardown,
  ipIn,
  iputilsPing,
  linkExists,
  nsExec,
  ping,
  procUsage,
  scrapeMetrics,
  sendFrames,
  sleep,
  tcpTransfer,
  waitFor,
  withTimeout,
} from '../lab/netns.js';
import { arpRequest, ethernet, ETHERTYPE_IPV4, icmpEcho, IPPROTO_ICMP, ipv4, tagged } from '../lab/packets.js';
import {
  type Daemon,
  type HostName,
  HOSTS,
  PROVIDER_ADDRESSES,
  SERVER,
  configureVm,
  defaultDaemonArgv,
  repoRoot,
  setUpLab,
  stopDaemons,
  vm,
} from '../lab/topology.js';
import { runMain } from './common.js';

const PREFIX = 'nvsk-';
const envNum = (name: string, dflt: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number of seconds, got ${JSON.stringify(v)}`);
  return n;
};
const SECONDS = envNum('SOAK_SECONDS', 600);
const SAMPLE_SECONDS = envNum('SOAK_SAMPLE_SECONDS', 10);
const WARMUP_OVERRIDE = process.env['SOAK_WARMUP_SECONDS'] ? envNum('SOAK_WARMUP_SECONDS', 0) : undefined;
/** Drift of the mean RSS (last 10 % of the run against the minute after warm-up) that fails the soak. */
const MAX_DRIFT = 0.05;
/** Descriptors the floor (the fewest in a window) may gain from the first window to the last. */
const FD_TOLERANCE = 2;
const MiB = 1024 * 1024;

const OUT = join(repoRoot(), 'bench', 'out');
const DIR = join(OUT, 'soak');
const STAMP = new Date().toISOString().replace(/[:.]/g, '-');
const CSV = join(OUT, `soak-${STAMP}.csv`);

const FAB1 = vm('fabrikam1');
const FAB2 = vm('fabrikam2');
const FAB3 = vm('fabrikam3');

// ---------------------------------------------------------------------------
// What happened

interface Counts {
  [k: string]: number;
}
const bump = (c: Counts, k: string, n = 1): void => {
  c[k] = (c[k] ?? 0) + n;
};

const stats = {
  transfers: {} as Record<string, { ok: number; failed: number; mismatched: number; bytes: number }>,
  pings: {} as Record<string, { sent: number; received: number }>,
  udp: { rounds: 0, failed: 0, packets: 0, lost: 0 },
  frames: { sent: 0, errors: 0 },
  churn: { requests: 0, gone: 0 } as Counts,
  reloads: { sighup: 0, api: 0 } as Counts,
  adapters: { added: 0, removed: 0, pingsSent: 0, pingsReceived: 0 },
  streams: { opened: 0, events: {} as Counts },
  learning: { learned: 0, relearned: 0, expired: 0 },
  /** Activity failures: "t=123s activity: message". */
  errors: [] as string[],
  /** 5xx answers of the API. */
  api5xx: [] as string[],
  died: [] as string[],
};

let t0 = Date.now();
let deadline = Infinity;
let stopping = false;
const elapsed = (): number => (Date.now() - t0) / 1000;
const over = (lab: Lab): boolean => stopping || lab.closing || Date.now() >= deadline;
/** Sleep, but not past the end of the run. */
const nap = (ms: number): Promise<void> => sleep(Math.max(0, Math.min(ms, deadline - Date.now())));
const msg = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n').slice(0, 4).join(' | ');

function fail(activity: string, e: unknown): void {
  const line = `t=${elapsed().toFixed(0)}s ${activity}: ${msg(e)}`;
  stats.errors.push(line);
  console.log(`ERROR ${line}`);
}

/** Run `body` over and over until the end of the run; a failure is counted and the loop goes on after a second. */
async function loop(lab: Lab, activity: string, body: () => Promise<void>): Promise<void> {
  while (!over(lab)) {
    try {
      await body();
    } catch (e) {
      if (over(lab)) break;
      fail(activity, e);
      await nap(1000);
    }
  }
}

// ---------------------------------------------------------------------------
// The control API, every 5xx recorded

class HostApi {
  readonly client: ApiClient;
  constructor(
    readonly host: HostName,
    socket: string,
  ) {
    this.client = new ApiClient(socket, 30_000);
  }

  /** One request; throws unless the status is one of `ok`. */
  async req(method: string, path: string, ok: number[], body?: unknown): Promise<ApiResponse> {
    const r = await this.client.request(method, path, body === undefined ? {} : { body });
    if (r.status >= 500) stats.api5xx.push(`t=${elapsed().toFixed(0)}s ${this.host} ${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`);
    if (!ok.includes(r.status)) throw new Error(`${this.host} ${method} ${path}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
    return r;
  }
}

// ---------------------------------------------------------------------------
// The lab: Fabrikam3 reachable only by learning

/** Fabrikam3's static record out, an L2Only record (its MAC at Host 2's PA) in, on every host; records learned live 20 s. */
function learningEdit(_host: HostName, cfg: Record<string, unknown>): void {
  const records = cfg['lookup_records'] as Record<string, unknown>[];
  cfg['lookup_records'] = [
    ...records.filter((r) => !(r['vsid'] === FAB3.vsid && r['customer_address'] === FAB3.ip)),
    { customer_address: '0.0.0.0', vsid: FAB3.vsid, mac: FAB3.mac, provider_address: PROVIDER_ADDRESSES[FAB3.host].address, type: 'l2only' },
  ];
  cfg['learning'] = { ...((cfg['learning'] as object | undefined) ?? {}), ttl_seconds: 20 };
}

/** The VM adapter each host gets and loses once a minute, in a namespace of its own. */
interface ExtraVm {
  host: HostName;
  ns: string;
  tap: string;
  mac: string;
  vsid: number;
  ip: string;
  gateway: string;
}
const EXTRA: Record<HostName, ExtraVm> = {
  host1: { host: 'host1', ns: 'xhost1', tap: 'soakvm', mac: '60:00:60:00:0e:01', vsid: 6000, ip: '10.0.1.191', gateway: '10.0.1.1' },
  host2: { host: 'host2', ns: 'xhost2', tap: 'soakvm', mac: '60:00:60:00:0e:02', vsid: 6000, ip: '10.0.1.192', gateway: '10.0.1.1' },
  gwhost: { host: 'gwhost', ns: 'xgwhost', tap: 'soakvm', mac: '60:01:60:01:0e:03', vsid: 6001, ip: '10.0.2.193', gateway: '10.0.2.1' },
};

// ---------------------------------------------------------------------------
// Activities

interface Transfer {
  from: string;
  to: string;
  dst: string;
  bytes: number;
  port: number;
}
const TRANSFERS: Transfer[] = [
  { from: 'contoso1', to: 'contoso3', dst: vm('contoso3').ip, bytes: 4 * MiB, port: 5301 },
  { from: 'contoso3', to: 'contoso2', dst: vm('contoso2').ip, bytes: 4 * MiB, port: 5302 },
  { from: 'contoso2', to: SERVER.role, dst: SERVER.ip, bytes: 4 * MiB, port: 5303 },
  { from: 'fabrikam1', to: 'fabrikam3', dst: FAB3.ip, bytes: 1 * MiB, port: 5304 },
];

async function transfer(lab: Lab, t: Transfer): Promise<void> {
  const name = `${t.from}->${t.to}`;
  const s = (stats.transfers[name] ??= { ok: 0, failed: 0, mismatched: 0, bytes: 0 });
  let r;
  try {
    r = await tcpTransfer(lab, t.from, t.to, t.dst, t.bytes, { port: t.port, timeoutMs: 60_000 });
  } catch (e) {
    if (over(lab)) return; // cut short by the end of the run
    s.failed++;
    throw e;
  }
  if (r.sent.sha256 !== r.received.sha256 || r.received.bytes !== t.bytes) {
    s.mismatched++;
    throw new Error(`sent ${r.sent.bytes} bytes (SHA-256 ${r.sent.sha256}), received ${r.received.bytes} (${r.received.sha256})`);
  }
  s.ok++;
  s.bytes += t.bytes;
}

const PINGS: { from: string; dst: string; what: string }[] = [
  { from: 'contoso1', dst: vm('contoso3').ip, what: 'contoso1->contoso3 (cross-host)' },
  { from: 'contoso3', dst: vm('contoso3').gateway, what: 'contoso3->10.0.1.1 (gateway)' },
  { from: 'contoso1', dst: SERVER.ip, what: 'contoso1->server (through MT-GW)' },
];

/** iputils ping (a C program keeps a 10 ms interval on a loaded machine better than the probe's timers), 2 s a round (its timeout, 10 s beyond, holds). */
async function pingRound(lab: Lab, p: (typeof PINGS)[number]): Promise<void> {
  const left = Math.floor((deadline - Date.now() - 2000) / 10);
  if (left < 10) return nap(1000);
  const r = await iputilsPing(lab.ns(p.from), p.dst, { count: Math.min(200, left), intervalMs: 10, waitS: 1 });
  const s = (stats.pings[p.what] ??= { sent: 0, received: 0 });
  s.sent += r.transmitted;
  s.received += r.received;
}

const UDP_PORT = 5401;
async function udpRound(lab: Lab): Promise<void> {
  const seconds = Math.min(10, Math.floor((deadline - Date.now()) / 1000) - 2);
  if (seconds < 2) return nap(1000);
  const r = await nsExec(lab.ns('contoso2'), ['iperf3', '-c', vm('contoso3').ip, '-p', String(UDP_PORT), '-u', '-b', '10M', '-t', String(seconds), '-J'], {
    timeoutMs: seconds * 1000 + 20_000,
  });
  stats.udp.rounds++;
  let sum: { packets?: number; lost_packets?: number } | undefined;
  try {
    sum = (JSON.parse(r.stdout) as { end?: { sum?: { packets?: number; lost_packets?: number } } }).end?.sum;
  } catch {
    /* below */
  }
  if (r.code !== 0 || !sum || sum.packets === undefined) {
    stats.udp.failed++;
    throw new Error(`iperf3 UDP round failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-300)}`);
  }
  stats.udp.packets += sum.packets;
  stats.udp.lost += sum.lost_packets ?? 0;
}

/**
 * What a broken or hostile Fabrikam2 puts on its adapter, each frame a drop
 * the core must count: runts, bad IPv4 headers, another VM's source MAC (in
 * Ethernet and in ARP), an 802.1Q tag, broken ARP, traffic the gateway does
 * not answer, an unknown EtherType. `gw` is the MAC the host answers for
 * 10.0.1.1 in Fabrikam.
 */
function malformedFrames(gw: string): Buffer[] {
  const me = FAB2.mac;
  const echo = icmpEcho(0x5eed, 1, Buffer.alloc(16));
  const good = ipv4(FAB2.ip, FAB2.gateway, IPPROTO_ICMP, echo);
  const badVersion = Buffer.from(good);
  badVersion[0] = 0x65;
  const badIhl = Buffer.from(good);
  badIhl[0] = 0x43;
  const badLength = Buffer.from(good);
  badLength.writeUInt16BE(1400, 2);
  const arp = arpRequest(me, FAB2.ip, FAB2.gateway);
  const arpBadHlen = Buffer.from(arp);
  arpBadHlen[14 + 4] = 8;
  return [
    ethernet(me, gw, ETHERTYPE_IPV4, Buffer.alloc(0)), // a bare Ethernet header (the kernel sends nothing shorter)
    ethernet(me, gw, ETHERTYPE_IPV4, Buffer.alloc(6)), // an IPv4 header of 6 bytes
    ethernet(me, gw, ETHERTYPE_IPV4, badVersion),
    ethernet(me, gw, ETHERTYPE_IPV4, badIhl),
    ethernet(me, gw, ETHERTYPE_IPV4, badLength),
    ethernet(FAB1.mac, gw, ETHERTYPE_IPV4, good), // Fabrikam1's source MAC
    arpRequest(FAB1.mac, FAB2.ip, FAB2.gateway), // ... in ARP
    tagged(ethernet(me, gw, ETHERTYPE_IPV4, good), 100),
    tagged(arp, 7),
    arp.subarray(0, 14 + 20), // ARP cut short
    arpBadHlen,
    ethernet(me, gw, ETHERTYPE_IPV4, ipv4(FAB2.ip, FAB2.gateway, 17, Buffer.alloc(16))), // UDP to the gateway
    ethernet(me, gw, 0x88b5, Buffer.alloc(46)), // a local experimental EtherType
  ];
}

/** The list 5 times every 5 s (~13 frames/s): a probe a second would cost more CPU than the daemons on a loaded machine. */
async function framesRound(lab: Lab, frames: Buffer[]): Promise<void> {
  const start = Date.now();
  const r = await sendFrames(lab.ns(FAB2.role), FAB2.tap, frames, { count: 5 });
  stats.frames.sent += r.sent;
  stats.frames.errors += r.errors;
  await nap(5000 - (Date.now() - start));
}

/** Record churn on one host: every 300 ms one request over 20 unused addresses (add, replace, change PA, delete, in turn). */
async function churn(lab: Lab, api: HostApi): Promise<void> {
  const present = new Array<boolean>(20).fill(false);
  let k = 0;
  await loop(lab, `churn ${api.host}`, async () => {
    const i = k % 20;
    const step = Math.floor(k / 20) % 4;
    k++;
    const ca = `10.0.1.${200 + i}`;
    const path = `/v1/lookup-records/6000/${ca}`;
    const record = (pa: string) => ({ customer_address: ca, vsid: 6000, mac: `60:00:60:00:0c:${(0x10 + i).toString(16)}`, provider_address: pa });
    stats.churn['requests']!++;
    // A reload (the config file has none of these) may have taken the record: 404 then says so.
    if (step === 0 || step === 1 || !present[i]) {
      await api.req('PUT', path, [200, 201], record(step === 1 ? '192.168.0.78' : '192.168.0.77'));
      bump(stats.churn, step === 1 && present[i] ? 'replaced' : 'added');
      present[i] = true;
    } else if (step === 2) {
      const r = await api.req('PATCH', path, [200, 404], { provider_address: '192.168.0.79' });
      bump(stats.churn, r.status === 200 ? 'pa_changed' : 'gone');
      present[i] = r.status === 200;
    } else {
      const r = await api.req('DELETE', path, [200, 404]);
      bump(stats.churn, r.status === 200 ? 'deleted' : 'gone');
      present[i] = false;
    }
    await nap(300);
  });
}

/** Resolve with the next line `proc` prints that matches (not one printed before). */
function nextLine(proc: LabProcess, pred: (l: string) => boolean, timeoutMs: number, what: string): Promise<string> {
  let off: () => void = () => undefined;
  const p = new Promise<string>((resolve) => {
    off = proc.onLine((l) => {
      if (pred(l)) resolve(l);
    });
  });
  return withTimeout(p, timeoutMs, what).finally(() => off());
}

/** Once a minute per host: SIGHUP reload, an adapter added, used and removed, POST /v1/reload. */
async function hostRound(lab: Lab, d: Daemon, api: HostApi): Promise<void> {
  const x = EXTRA[d.host];
  const logMsg = (l: string): string | undefined => {
    try {
      return (JSON.parse(l) as { msg?: string }).msg;
    } catch {
      return undefined;
    }
  };
  const reloaded = nextLine(d.proc, (l) => ['policy applied', 'reload failed: the running policy is unchanged'].includes(logMsg(l) ?? ''), 30_000, `${d.host}: SIGHUP reload's log line`);
  process.kill(d.proc.pid, 'SIGHUP');
  const line = await reloaded;
  if (logMsg(line) !== 'policy applied') throw new Error(`${d.host}: SIGHUP reload failed: ${line}`);
  stats.reloads['sighup']!++;

  const pa = PROVIDER_ADDRESSES[d.host].address;
  await api.req('POST', '/v1/vm-adapters', [201], { name: x.tap, mac: x.mac, vsid: x.vsid, netns: lab.ns(x.ns) });
  stats.adapters.added++;
  await api.req('PUT', `/v1/lookup-records/${x.vsid}/${x.ip}`, [200, 201], { customer_address: x.ip, vsid: x.vsid, mac: x.mac, provider_address: pa });
  try {
    await configureVm(lab, { ns: x.ns, tap: x.tap, host: d.host, mac: x.mac, ip: x.ip, prefixLength: 24, gateway: x.gateway });
    const p = await iputilsPing(lab.ns(x.ns), x.gateway, { count: 100, intervalMs: 10, waitS: 1 });
    stats.adapters.pingsSent += p.transmitted;
    stats.adapters.pingsReceived += p.received;
  } finally {
    await api.req('DELETE', `/v1/vm-adapters/${x.tap}`, [200]);
    await api.req('DELETE', `/v1/lookup-records/${x.vsid}/${x.ip}`, [200]);
  }
  await waitFor(async () => !(await linkExists(lab.ns(x.ns), x.tap)), 10_000, { what: `${x.tap} gone from ${lab.ns(x.ns)}` });
  stats.adapters.removed++;
  await api.req('POST', '/v1/reload', [200]);
  stats.reloads['api']!++;
}

/** Follow a host's event stream for 45 s, then drop it. */
async function streamRound(api: HostApi): Promise<void> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), Math.max(0, Math.min(45_000, deadline - Date.now())));
  const parser = new SseParser();
  stats.streams.opened++;
  try {
    const how = await api.client.follow(
      '/v1/events',
      (text) => {
        for (const e of parser.push(text)) bump(stats.streams.events, e.event);
      },
      { signal: ac.signal, idleTimeoutMs: 60_000 },
    );
    if (how === 'ended' && Date.now() < deadline && !stopping) throw new Error(`${api.host}: the daemon ended the event stream`);
  } finally {
    clearTimeout(t);
  }
}

/** Fabrikam1's traffic to Fabrikam3 pauses while this is set (a learning round wants it quiet). */
let fabrikamQuiet = false;
let fabrikamIdle: Promise<void> = Promise.resolve();

async function learnedOn(api: HostApi): Promise<boolean> {
  const r = await api.req('GET', `/v1/lookup-records?type=dynamic&vsid=${FAB3.vsid}&customer_address=${FAB3.ip}`, [200]);
  return ((r.json as { lookup_records?: unknown[] }).lookup_records ?? []).length > 0;
}

/**
 * One learning round on Host 1 and Host 2: Fabrikam3 learned when Fabrikam1
 * asks for it (ARP: only a reply teaches; traffic then keeps the record
 * alive); deleted on both and learned again when Fabrikam1 asks anew (after
 * 11 s: the core reports an address at most every 10 s); expired once
 * Fabrikam1 is quiet for the TTL (20 s).
 */
async function learningRound(lab: Lab, apis: HostApi[]): Promise<void> {
  const both = async (): Promise<boolean> => (await Promise.all(apis.map(learnedOn))).every(Boolean);
  const none = async (): Promise<boolean> => !(await Promise.all(apis.map(learnedOn))).some(Boolean);
  const ask = async (): Promise<void> => {
    await ipIn(lab.ns(FAB1.role), ['neigh', 'flush', 'all']);
    await ping(lab.ns(FAB1.role), FAB3.ip, { count: 3, intervalMs: 200 });
  };
  fabrikamQuiet = false;
  if (!(await both())) await ask();
  await waitFor(both, 10_000, { what: 'Fabrikam3 learned on host1 and host2', intervalMs: 250 });
  stats.learning.learned++;
  await nap(30_000); // the TCP transfers use it
  if (over(lab)) return;

  fabrikamQuiet = true;
  await fabrikamIdle;
  for (const api of apis) await api.req('DELETE', `/v1/lookup-records/${FAB3.vsid}/${FAB3.ip}`, [200, 404]);
  await nap(11_000);
  if (over(lab)) return;
  await ask();
  await waitFor(both, 10_000, { what: 'Fabrikam3 learned again on host1 and host2', intervalMs: 250 });
  stats.learning.relearned++;
  await waitFor(none, 40_000, { what: 'Fabrikam3 expired on host1 and host2 (TTL 20 s, Fabrikam1 quiet)', intervalMs: 500 });
  stats.learning.expired++;
  fabrikamQuiet = false;
}

// ---------------------------------------------------------------------------
// Sampling

interface Sample {
  t: number;
  host: HostName;
  rssMiB: number;
  anonMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  /** Memory outside the V8 heap that V8 knows of (Buffers, the addon's external allocations): prom-client's nodejs_external_memory_bytes. */
  externalMiB: number;
  fds: number;
  threads: number;
  cpuSeconds: number;
  /** CPU since the previous sample, % of one core. */
  cpuPct: number;
}

const samples: Sample[] = [];
/** Every full collection of a daemon's V8 heap during the run: what was live after it is the JS heap's real size. */
const fullGcs: { t: number; host: HostName; beforeMB: number; afterMB: number; committedMB: number }[] = [];
const CSV_HEADER = 't_s,host,rss_mib,anon_mib,heap_used_mib,heap_total_mib,external_mib,fds,threads,cpu_s,cpu_pct\n';

async function sample(lab: Lab, daemons: Daemon[]): Promise<void> {
  const t = Math.round(elapsed());
  // /proc at the tick; the heaps (a scrape each, in parallel) follow.
  const usage = daemons.map((d) => {
    try {
      return d.proc.running ? procUsage(d.proc.pid) : undefined;
    } catch {
      return undefined; // it just exited: reported as died
    }
  });
  const heaps = await Promise.all(
    daemons.map((d, i) =>
      usage[i]
        ? scrapeMetrics(lab.ns(d.host), undefined, { curl: true }).catch((e) => {
            if (!over(lab)) fail(`metrics ${d.host}`, e);
            return undefined;
          })
        : undefined,
    ),
  );
  const row: string[] = [];
  for (const [i, d] of daemons.entries()) {
    const u = usage[i];
    if (!u) continue;
    const heap: Scrape | undefined = heaps[i];
    const prev = samples.filter((s) => s.host === d.host).at(-1);
    const s: Sample = {
      t,
      host: d.host,
      rssMiB: u.rssKiB / 1024,
      anonMiB: u.anonKiB / 1024,
      heapUsedMiB: (heap?.get('nodejs_heap_size_used_bytes') ?? NaN) / MiB,
      heapTotalMiB: (heap?.get('nodejs_heap_size_total_bytes') ?? NaN) / MiB,
      externalMiB: (heap?.get('nodejs_external_memory_bytes') ?? NaN) / MiB,
      fds: u.fds,
      threads: u.threads,
      cpuSeconds: u.cpuSeconds,
      cpuPct: prev && t > prev.t ? (100 * (u.cpuSeconds - prev.cpuSeconds)) / (t - prev.t) : 0,
    };
    samples.push(s);
    appendFileSync(CSV, `${[s.t, s.host, s.rssMiB.toFixed(2), s.anonMiB.toFixed(2), s.heapUsedMiB.toFixed(2), s.heapTotalMiB.toFixed(2), s.externalMiB.toFixed(2), s.fds, s.threads, s.cpuSeconds.toFixed(2), s.cpuPct.toFixed(1)].join(',')}\n`);
    row.push(`${d.host} ${s.rssMiB.toFixed(1)}/${s.anonMiB.toFixed(1)} heap ${s.heapUsedMiB.toFixed(1)}/${s.heapTotalMiB.toFixed(1)} ext ${s.externalMiB.toFixed(1)} fd ${s.fds} thr ${s.threads} cpu ${s.cpuPct.toFixed(0)}%`);
  }
  console.log(`t=${String(t).padStart(4)}s  ${row.join('  |  ')}`);
}

// ---------------------------------------------------------------------------
// Verdicts

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(2)} %`;

interface DaemonVerdict {
  host: HostName;
  warmupS: number;
  warmupHow: string;
  firstFullGcS: number | null;
  rssBaselineMiB: number;
  rssLastMiB: number;
  drift: number;
  rssMinute1MiB: number;
  driftVsMinute1: number;
  fds: { first: number; last: number; max: number; floorFirst: number; floorLast: number; kinds: Record<string, number> };
  threads: { first: number; last: number; max: number };
  cpuMeanPct: number;
  failures: string[];
}

function verdict(host: HostName, mine: Sample[], fullGcS: number | null, kinds: Record<string, number>): DaemonVerdict {
  const end = mine.at(-1)!.t;
  const failures: string[] = [];
  const inRange = (a: number, b: number): Sample[] => mine.filter((s) => s.t >= a && s.t < b);
  const last = mine.filter((s) => s.t >= 0.9 * end);
  let warmupS: number;
  let warmupHow: string;
  if (WARMUP_OVERRIDE !== undefined) {
    warmupS = WARMUP_OVERRIDE;
    warmupHow = 'SOAK_WARMUP_SECONDS';
  } else if (fullGcS !== null && fullGcS + 60 <= 0.9 * end) {
    warmupS = fullGcS;
    warmupHow = 'its first full collection (Mark-Compact)';
  } else {
    warmupS = 60;
    warmupHow = end < 140 ? 'the run is too short for a drift figure: it needs the minute after warm-up and its last 10 % apart (≥ 140 s)' : fullGcS === null ? 'no full collection during the run: fell back to 60 s' : `its first full collection came too late (${fullGcS.toFixed(0)} s): fell back to 60 s`;
  }
  const base = inRange(warmupS, warmupS + 60);
  const baseline = mean((base.length ? base : mine.slice(0, 1)).map((s) => s.rssMiB));
  const lastMean = mean(last.map((s) => s.rssMiB));
  const m1 = inRange(60, 120);
  const minute1 = mean((m1.length ? m1 : mine.slice(0, 1)).map((s) => s.rssMiB));
  const drift = lastMean / baseline - 1;
  if (drift >= MAX_DRIFT) failures.push(`${host}: RSS drift ${pct(drift)} ≥ ${pct(MAX_DRIFT)} (mean of the last 10 %, ${lastMean.toFixed(1)} MiB, against the minute after warm-up, ${baseline.toFixed(1)} MiB)`);
  // Descriptors come and go with connections: compare the floors, the fewest seen in a window.
  const window = Math.min(60, end / 4);
  const floorFirst = Math.min(...inRange(0, window).map((s) => s.fds));
  const floorLast = Math.min(...mine.filter((s) => s.t >= end - window).map((s) => s.fds));
  if (floorLast > floorFirst + FD_TOLERANCE) failures.push(`${host}: descriptors grew: the floor of the last ${window.toFixed(0)} s is ${floorLast}, of the first ${floorFirst} (tolerance ${FD_TOLERANCE})`);
  return {
    host,
    warmupS,
    warmupHow,
    firstFullGcS: fullGcS,
    rssBaselineMiB: baseline,
    rssLastMiB: lastMean,
    drift,
    rssMinute1MiB: minute1,
    driftVsMinute1: lastMean / minute1 - 1,
    fds: { first: mine[0]!.fds, last: mine.at(-1)!.fds, max: Math.max(...mine.map((s) => s.fds)), floorFirst, floorLast, kinds },
    threads: { first: mine[0]!.threads, last: mine.at(-1)!.threads, max: Math.max(...mine.map((s) => s.threads)) },
    cpuMeanPct: mean(mine.slice(1).map((s) => s.cpuPct)),
    failures,
  };
}

/** RSS (MiB) per minute and host: the mean of the minute's samples. */
function minuteTable(daemons: Daemon[]): string {
  const minutes = Math.ceil((samples.at(-1)?.t ?? 0) / 60) + 1;
  const lines = [`minute  ${daemons.map((d) => d.host.padStart(16)).join('')}   (RSS MiB, anonymous MiB)`];
  for (let m = 0; m < minutes; m++) {
    const cells = daemons.map((d) => {
      const xs = samples.filter((s) => s.host === d.host && Math.floor(s.t / 60) === m);
      return xs.length ? `${mean(xs.map((s) => s.rssMiB)).toFixed(1)} (${mean(xs.map((s) => s.anonMiB)).toFixed(1)})`.padStart(16) : ''.padStart(16);
    });
    if (cells.some((c) => c.trim())) lines.push(`${String(m).padStart(6)}  ${cells.join('')}`);
  }
  return lines.join('\n');
}

/** from_vm drops on Host 1 between two scrapes, by reason. */
function fromVmDrops(before: Scrape, after: Scrape): Counts {
  const out: Counts = {};
  for (const [series, v] of after) {
    const m = /^nvgre_dropped_packets_total\{.*direction="from_vm".*reason="([a-z_]+)"/.exec(series);
    if (!m) continue;
    const d = v - (before.get(series) ?? 0);
    if (d) bump(out, m[1]!, d);
  }
  return out;
}

// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  mkdirSync(DIR, { recursive: true });
  const lab = new Lab(PREFIX);
  installSignalTeardown(lab);
  console.log(`soak: ${SECONDS} s, samples every ${SAMPLE_SECONDS} s; lab ${PREFIX}, files in ${DIR}`);

  // --trace-gc: the daemons' full collections mark the end of their warm-up.
  const [node, ...script] = defaultDaemonArgv();
  const { daemons } = await setUpLab(lab, { outDir: DIR, edit: learningEdit, daemonArgv: [node!, '--trace-gc', ...script] });
  for (const x of Object.values(EXTRA)) await lab.addNamespace(x.ns);
  const apis = new Map(daemons.map((d) => [d.host, new HostApi(d.host, d.socket!)]));
  const api = (h: HostName): HostApi => apis.get(h)!;
  const fullGc = new Map<HostName, number>();
  for (const d of daemons) {
    d.proc.onLine((l) => {
      if (deadline === Infinity) return;
      // "...: Mark-Compact 13.7 (15.2) -> 9.5 (15.2) MB, ...": the heap in use before -> after (committed in parentheses).
      const m = /: Mark-Compact(?: \(reduce\))? ([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/.exec(l);
      if (!m) return;
      if (!fullGc.has(d.host)) fullGc.set(d.host, elapsed());
      fullGcs.push({ t: Math.round(elapsed()), host: d.host, beforeMB: Number(m[1]), afterMB: Number(m[3]), committedMB: Number(m[4]) });
    });
    void d.proc.exited.then((x) => {
      if (!stopping && !lab.closing) {
        stats.died.push(`${d.host} (pid ${d.proc.pid}) exited (${x.signal ?? `code ${x.code}`}) at t=${elapsed().toFixed(0)}s; log ${d.logFile}`);
        console.log(`ERROR ${stats.died.at(-1)}`);
      }
    });
  }
  // The MAC Fabrikam2's host answers for its gateway: the malformed frames go there.
  await ping(lab.ns(FAB2.role), FAB2.gateway, { count: 2 });
  const neigh = await ipIn(lab.ns(FAB2.role), ['-j', 'neigh', 'show', FAB2.gateway], { check: true });
  const gwMac = (JSON.parse(neigh.stdout) as { lladdr?: string }[])[0]?.lladdr;
  if (!gwMac) throw new Error(`Fabrikam2 has no neighbour entry for its gateway ${FAB2.gateway}`);
  const frames = malformedFrames(gwMac);
  const udpServer = await lab.spawn('contoso3', ['iperf3', '-s', '-B', vm('contoso3').ip, '-p', String(UDP_PORT)], { logFile: join(DIR, 'iperf3-server.log') });
  await sleep(300);
  const dropsBefore = await scrapeMetrics(lab.ns(FAB2.host));

  writeFileSync(CSV, CSV_HEADER);
  t0 = Date.now();
  deadline = t0 + SECONDS * 1000;
  console.log(`lab up; soaking until ${new Date(deadline).toISOString()}; samples: RSS/anonymous MiB, V8 heap used/total MiB, external MiB, descriptors, threads, CPU of one core`);

  const activities: Promise<void>[] = [];
  for (const t of TRANSFERS) {
    const fabrikam = t.from === FAB1.role;
    activities.push(
      loop(lab, `transfer ${t.from}->${t.to}`, async () => {
        if (fabrikam && fabrikamQuiet) return nap(500);
        const run = transfer(lab, t);
        if (fabrikam) fabrikamIdle = run.then(() => undefined, () => undefined);
        await run;
      }),
    );
  }
  for (const p of PINGS) activities.push(loop(lab, `ping ${p.what}`, () => pingRound(lab, p)));
  activities.push(loop(lab, 'iperf3 UDP', () => udpRound(lab)));
  activities.push(loop(lab, 'malformed frames', () => framesRound(lab, frames)));
  for (const d of daemons) {
    activities.push(churn(lab, api(d.host)));
    activities.push(loop(lab, `event stream ${d.host}`, () => streamRound(api(d.host))));
  }
  HOSTS.forEach((h, i) => {
    const d = daemons.find((x) => x.host === h)!;
    activities.push(
      (async () => {
        await nap(10_000 + i * 20_000);
        let next = Date.now();
        await loop(lab, `host round ${h}`, async () => {
          next += 60_000;
          await hostRound(lab, d, api(h));
          await nap(next - Date.now());
        });
      })(),
    );
  });
  activities.push(loop(lab, 'learning', () => learningRound(lab, [api('host1'), api('host2')])));

  while (!over(lab)) {
    await nap(SAMPLE_SECONDS * 1000 - ((Date.now() - t0) % (SAMPLE_SECONDS * 1000)));
    if (lab.closing) break;
    await sample(lab, daemons);
  }
  stopping = true;
  console.log('stopping the activities');
  await withTimeout(Promise.allSettled(activities), 120_000, 'activities ending').catch((e) => fail('end', e));
  const dropsAfter = await scrapeMetrics(lab.ns(FAB2.host));
  const kinds = new Map(daemons.map((d) => [d.host, d.proc.running ? fdKinds(d.proc.pid) : {}]));
  await lab.stop(udpServer, { timeoutMs: 2000 });
  const stops = await stopDaemons(lab, daemons);
  const report = await lab.teardown();

  // ---- report
  const failures: string[] = [];
  const verdicts = daemons.filter((d) => samples.some((s) => s.host === d.host)).map((d) => verdict(d.host, samples.filter((s) => s.host === d.host), fullGc.get(d.host) ?? null, kinds.get(d.host) ?? {}));
  console.log(`\n== RSS per minute\n${minuteTable(daemons)}`);
  console.log('\n== Daemons');
  for (const v of verdicts) {
    console.log(
      `${v.host}: warm-up ${v.warmupS.toFixed(0)} s (${v.warmupHow}); RSS ${v.rssBaselineMiB.toFixed(1)} -> ${v.rssLastMiB.toFixed(1)} MiB: drift ${pct(v.drift)} after warm-up, ${pct(v.driftVsMinute1)} against minute 1-2 (${v.rssMinute1MiB.toFixed(1)} MiB)` +
        `\n  full collections (t: live MB after, committed MB): ${fullGcs.filter((g) => g.host === v.host).map((g) => `${g.t}s ${g.afterMB} (${g.committedMB})`).join(', ') || 'none'}` +
        `\n  descriptors first/last/max ${v.fds.first}/${v.fds.last}/${v.fds.max} (floor ${v.fds.floorFirst} -> ${v.fds.floorLast}; at the end ${JSON.stringify(v.fds.kinds)}); threads ${v.threads.first}/${v.threads.last}/${v.threads.max}; CPU ${v.cpuMeanPct.toFixed(0)} % of a core`,
    );
    failures.push(...v.failures);
  }
  const drops = fromVmDrops(dropsBefore, dropsAfter);
  const dropTotal = Object.values(drops).reduce((a, b) => a + b, 0);
  console.log('\n== Activities');
  for (const [name, t] of Object.entries(stats.transfers)) {
    console.log(`transfer ${name}: ${t.ok} verified (${(t.bytes / MiB).toFixed(0)} MiB), ${t.failed} failed, ${t.mismatched} checksum mismatches`);
    if (t.failed || t.mismatched) failures.push(`transfer ${name}: ${t.failed} failed, ${t.mismatched} checksum mismatches`);
  }
  for (const [what, p] of Object.entries(stats.pings)) console.log(`ping ${what}: ${p.sent - p.received} lost of ${p.sent}`);
  console.log(`iperf3 UDP 10 Mbit/s: ${stats.udp.rounds} rounds (${stats.udp.failed} failed), ${stats.udp.lost} lost of ${stats.udp.packets} (${((100 * stats.udp.lost) / Math.max(1, stats.udp.packets)).toFixed(2)} %)`);
  console.log(`malformed frames from Fabrikam2: ${stats.frames.sent} sent (${stats.frames.errors} send errors); Host 1 counted ${dropTotal} from_vm drops: ${JSON.stringify(drops)}`);
  console.log(`record churn: ${JSON.stringify(stats.churn)}`);
  console.log(`reloads: ${stats.reloads['sighup']} by SIGHUP, ${stats.reloads['api']} by POST /v1/reload; adapters ${stats.adapters.added} added, ${stats.adapters.removed} removed, gateway pings ${stats.adapters.pingsSent - stats.adapters.pingsReceived} lost of ${stats.adapters.pingsSent}`);
  console.log(`event streams: ${stats.streams.opened} followed for 45 s; events ${JSON.stringify(stats.streams.events)}`);
  console.log(`learning rounds: ${stats.learning.learned} learned, ${stats.learning.relearned} deleted on both hosts and learned again, ${stats.learning.expired} expired`);
  console.log(`activity errors: ${stats.errors.length}${stats.errors.length ? `\n  ${stats.errors.slice(0, 30).join('\n  ')}` : ''}`);

  if (stats.api5xx.length) failures.push(`the API answered 5xx ${stats.api5xx.length} times: ${stats.api5xx.slice(0, 5).join('; ')}`);
  failures.push(...stats.died.map((d) => `daemon died: ${d}`));
  for (const s of stops) if (!s.ok) failures.push(`${s.host} did not exit 0 on SIGTERM (${s.signal ?? `code ${s.code}`}${s.escalated ? ', SIGKILL needed' : ''})`);
  if (!report.ok) failures.push(`teardown: ${report.errors.join('; ')}`);

  const json = CSV.replace(/\.csv$/, '.json');
  writeFileSync(json, JSON.stringify({ date: new Date(t0).toISOString(), seconds: SECONDS, sample_seconds: SAMPLE_SECONDS, verdicts, full_collections: fullGcs, stats, from_vm_drops: drops, stops, failures, samples }, null, 2));
  console.log(`\nsamples: ${CSV}\nsummary: ${json}`);
  if (failures.length) {
    console.log(`\nFAIL\n  ${failures.join('\n  ')}`);
    return 1;
  }
  console.log('\nPASS: no transfer failed, no 5xx, every daemon lived and exited 0, RSS drift < 5 % after warm-up, descriptors did not grow');
  return 0;
}

runMain(main);
