// The nvgred lab: `make lab` runs `node dist/lab/run.js`.
//
// 1. preflight: delete namespaces a crashed run left (this prefix only),
//    check the lab configs against the plan (and nvgred's validator if
//    built); write each host's whole policy for this run (LAB_VARIANT: Host
//    2's PA on VLAN 100, the QEMU guests' adapters and records) into
//    lab/out/configs/whole;
// 2. topology: namespaces, underlay bridge (its port to Host 2 a trunk port
//    of VLAN 100), MT-GW ↔ server link; capture on the underlay bridge into
//    lab/out/underlay.pcap, and on the ports to Host 1 and Host 2;
// 3. the policy store (skipped with --topology-only, like what follows): a
//    three-member etcd (lab/etcd.ts); each host's file keeps host-local
//    settings, the rest of its policy is written to etcd in one transaction
//    (fleet.md; fleetConfigs() in lab/topology.ts);
// 4. daemons: one nvgred per host namespace, wait for "ready" and for the
//    store's revision, configure the VMs on their TAPs;
// 5. the checks of shared/spec/hnv-dataplane.md, and tenant isolation;
// 6. QEMU guests (skipped with --no-qemu): qemu1 on Host 1 through mode
//    attach, qemu2 on Host 2 through mode vhost_user; pings, TCP, each
//    guest restarted, nvgred restarted under them (lab/vm/);
// 7. the fleet: a VM placed and migrated by one transaction each, traffic
//    following; an etcd member killed, a change still applied everywhere;
//    the store stopped, forwarding going on, also across a daemon restart;
// 8. stop the daemons (exit 0, TAPs and PAs gone), stop the captures, check
//    the NVGRE on the wire with tshark, and the VLAN tag on Host 2's port only;
// 9. tear everything down (etcd included); exit non-zero on any failure.
//
// Options: --prefix P (default nvlab-), --out DIR (default lab/out),
// --topology-only, --no-qemu, --daemon-argv '["node","dist/src/daemon/main.js"]'
// (or NVGRED_LAB_DAEMON_ARGV), --ready-timeout MS, --verbose.

import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import {
  DEFAULT_PREFIX,
  Lab,
  type Capture,
  fmtExit,
  fmtPing,
  installSignalTeardown,
  ipIn,
  isLabNamespace,
  linkExists,
  linkStats,
  listNamespaces,
  metricSum,
  ping,
  run,
  scrapeMetrics,
  tcpReceiver,
  tcpSend,
  waitFor,
  withTimeout,
} from './netns.js';
import { EtcdCluster } from './etcd.js';
import { analyzeNvgrePcap, checkDissector, tsharkHints, type PcapReport } from './pcap.js';
import {
  type Daemon,
  type HostName,
  HOSTS,
  LAB_VSIDS,
  type LabVariant,
  MTGW_EXTERNAL,
  CUSTOMER_ROUTES,
  MIGRANT,
  PROVIDER_ADDRESSES,
  QEMU_VMS,
  type QemuVmSpec,
  SERVER,
  type Tenant,
  UNDERLAY_BRIDGE,
  UNDERLAY_IF,
  UNDERLAY_NS,
  VMS,
  type VmSpec,
  buildTopology,
  checkConfigAgainstTopology,
  configPath,
  configureVm,
  configureVms,
  defaultOutDir,
  fleetConfigs,
  hostPaAddrs,
  loadConfig,
  paInterface,
  qemuVm,
  repoRoot,
  startDaemons,
  stopDaemons,
  underlayPort,
  validateWithDaemon,
  vhostSocket,
  vm,
  writeVariantConfigs,
} from './topology.js';
import { guestPingAll, guestTcpListen, guestTcpSend } from './vm/guest.js';
import { DEFAULT_CACHE_DIR, buildImage, type VmImage } from './vm/image.js';
import { GUEST_MTU, type PortStatus, apiGet, portStatus, qemuGuest, waitPort } from './vm/nvgred.js';
import type { Etcd } from '../src/fleet/etcd.js';
import { MAX_TXN_OPS } from '../src/fleet/writer.js';
import { keyRoot, recordKey } from '../src/fleet/view.js';
import type { AnyRecord } from '../src/model/resources.js';
import { type Vm, vmRunDir } from './vm/qemu.js';

// ---------------------------------------------------------------------------
// Arguments

interface Args {
  prefix: string;
  outDir: string;
  topologyOnly: boolean;
  /** Boot the QEMU guests (default; --no-qemu leaves them out of the configs too). */
  qemu: boolean;
  daemonArgv?: string[];
  readyTimeoutMs: number;
  verbose: boolean;
}

const USAGE = `usage: node dist/lab/run.js [--prefix nvlab-] [--out lab/out] [--topology-only] [--no-qemu]
       [--daemon-argv '["node","dist/src/daemon/main.js"]'] [--ready-timeout 30000] [--verbose]`;

function parseArgs(argv: string[]): Args {
  const a: Args = { prefix: DEFAULT_PREFIX, outDir: defaultOutDir(), topologyOnly: false, qemu: true, readyTimeoutMs: 30_000, verbose: false };
  const env = process.env['NVGRED_LAB_DAEMON_ARGV'];
  if (env) a.daemonArgv = parseArgvJson(env);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${k} needs a value\n${USAGE}`);
      return v;
    };
    if (k === '--prefix') a.prefix = val();
    else if (k === '--out') a.outDir = resolve(val());
    else if (k === '--topology-only') a.topologyOnly = true;
    else if (k === '--no-qemu') a.qemu = false;
    else if (k === '--daemon-argv') a.daemonArgv = parseArgvJson(val());
    else if (k === '--ready-timeout') a.readyTimeoutMs = Number(val());
    else if (k === '--verbose' || k === '-v') a.verbose = true;
    else if (k === '--help' || k === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${k}\n${USAGE}`);
  }
  return a;
}

function parseArgvJson(s: string): string[] {
  const v = JSON.parse(s) as unknown;
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
    throw new Error(`daemon argv must be a JSON array of strings, got ${s}`);
  }
  return v as string[];
}

// ---------------------------------------------------------------------------
// Checks

class Abort extends Error {}

const TEARDOWN_CHECK = 'teardown leaves no namespace or process behind';

interface Result {
  name: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  detail: string;
}

class Checks {
  readonly results: Result[] = [];

  constructor(private readonly lab: Lab) {}

  section(title: string): void {
    console.log(`\n== ${title}`);
  }

  #print(r: Result, ms?: number): void {
    const t = ms === undefined ? '' : ` (${(ms / 1000).toFixed(1)}s)`;
    const detail = r.detail ? `: ${r.detail.split('\n').join('\n        ')}` : '';
    console.log(`${r.status}  ${r.name}${detail}${t}`);
  }

  /** Run a bounded check; fn returns a detail string or throws. */
  async check(name: string, fn: () => Promise<string | void>, timeoutMs = 30_000): Promise<boolean> {
    // Interrupted (signal): the lab is going away; start nothing new.
    if (this.lab.closing && name !== TEARDOWN_CHECK) throw new Abort('interrupted');
    const t0 = Date.now();
    let r: Result;
    try {
      const detail = await withTimeout(fn(), timeoutMs, name);
      r = { name, status: 'PASS', detail: detail ?? '' };
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      r = { name, status: 'FAIL', detail: this.lab.closing ? `interrupted (${msg})` : msg };
    }
    this.results.push(r);
    this.#print(r, Date.now() - t0);
    return r.status === 'PASS';
  }

  /** A check whose failure makes the rest pointless. */
  async must(name: string, fn: () => Promise<string | void>, timeoutMs = 60_000): Promise<void> {
    if (!(await this.check(name, fn, timeoutMs))) throw new Abort(name);
  }

  skip(name: string, why: string): void {
    const r: Result = { name, status: 'SKIP', detail: why };
    this.results.push(r);
    this.#print(r);
  }

  count(s: Result['status']): number {
    return this.results.filter((r) => r.status === s).length;
  }
}

// ---------------------------------------------------------------------------
// Probes

const PING = { count: 3, intervalMs: 200, timeoutMs: 1000 };

async function reach(lab: Lab, from: string, dst: string): Promise<string> {
  const p = await ping(lab.ns(from), dst, PING);
  if (p.received < 1) throw new Error(`no reply (${fmtPing(p)})`);
  return fmtPing(p);
}

async function noReach(lab: Lab, from: string, dst: string): Promise<string> {
  const p = await ping(lab.ns(from), dst, PING);
  if (p.received !== 0) throw new Error(`got replies (${fmtPing(p)})`);
  return fmtPing(p);
}

/** Links watched while a probe runs: [label, ns role, ifname]. */
type Watched = [label: string, role: string, ifname: string];
const tapOf = (v: VmSpec): Watched => [v.role, v.role, v.tap];

/**
 * Wait (bounded) until no neighbour entry in these namespaces is being
 * resolved or re-verified (INCOMPLETE, DELAY, PROBE): an idle VM then sends
 * nothing, so its TAP's rx counter only moves for traffic meant for it.
 */
async function settleNeighbours(lab: Lab, roles: string[], timeoutMs = 15_000): Promise<void> {
  await waitFor(
    async () => {
      for (const role of roles) {
        const r = await ipIn(lab.ns(role), ['-j', 'neigh', 'show']);
        const entries = JSON.parse(r.stdout || '[]') as { state?: string[] }[];
        if (entries.some((e) => (e.state ?? []).some((s) => ['INCOMPLETE', 'DELAY', 'PROBE'].includes(s)))) return false;
      }
      return true;
    },
    timeoutMs,
    { what: 'neighbour tables to settle', intervalMs: 250 },
  );
}

/**
 * Run `probe` and report the rx packet deltas of `quiet` links (must be 0)
 * and `busy` links (must be > 0, when given).
 */
async function rxDuring(
  lab: Lab,
  quiet: Watched[],
  busy: Watched[],
  probe: () => Promise<string>,
): Promise<string> {
  await settleNeighbours(lab, [...new Set([...quiet, ...busy].map((w) => w[1]))]);
  const read = async (ws: Watched[]): Promise<number[]> =>
    Promise.all(ws.map(async ([, role, ifname]) => (await linkStats(lab.ns(role), ifname)).rxPackets));
  const q0 = await read(quiet);
  const b0 = await read(busy);
  const probeDetail = await probe();
  const q1 = await read(quiet);
  const b1 = await read(busy);
  const qd = quiet.map((w, i) => `${w[0]} +${q1[i]! - q0[i]!}`);
  const bd = busy.map((w, i) => `${w[0]} +${b1[i]! - b0[i]!}`);
  const leaked = quiet.filter((_, i) => q1[i]! !== q0[i]!);
  const silent = busy.filter((_, i) => b1[i]! === b0[i]!);
  const detail = `${probeDetail}; rx on ${qd.join(', ')}${bd.length ? `; on the targets ${bd.join(', ')}` : ''}`;
  if (leaked.length) throw new Error(`received packets on ${leaked.map((w) => w[0]).join(', ')}: ${detail}`);
  if (silent.length) throw new Error(`targets ${silent.map((w) => w[0]).join(', ')} received nothing: ${detail}`);
  return detail;
}

// ---------------------------------------------------------------------------
// QEMU guests

/** What `make lab` runs: the reference topology with Host 2's PA on VLAN 100 (and the QEMU guests, added in main()). */
const LAB_VARIANT = { vlan: { host: 'host2' as HostName, id: 100 } } as const;
/** The underlay switch's ports whose frames are captured for the VLAN tags: the trunk port and an access port. */
const VLAN_PORTS: readonly HostName[] = ['host2', 'host1'];

function describeVariant(v: LabVariant): string {
  const parts = [v.vlan ? `${v.vlan.host}'s PA on VLAN ${v.vlan.id}` : 'no VLAN'];
  if (v.qemuVms) parts.push(`QEMU guests ${QEMU_VMS.map((q) => `${q.name} (${q.host}, ${q.mode})`).join(', ')}`);
  return parts.join('; ');
}

/** Under TCG on a shared 2-core machine a boot takes 3 s to a minute. */
const BOOT_MS = 180_000;
/** A port follows its VM within a second or two; generous for a loaded machine. */
const PORT_MS = 30_000;
/** Bytes of each TCP transfer with a guest: busybox nc under TCG moves a few MB/s. */
const GUEST_TCP_BYTES = 4_000_000;

interface QemuContext {
  c: Checks;
  lab: Lab;
  args: Args;
  daemons: Daemon[];
  configs: Record<HostName, string>;
  vmDir: string;
  rel: (p: string) => string;
}

/**
 * The QEMU guests (QEMU_VMS) on nvgred: qemu1 on Host 1 through mode attach
 * (QEMU makes the TAP in the host's namespace, nvgred adopts it), qemu2 on
 * Host 2 through mode vhost_user (QEMU serves the socket, nvgred connects).
 * They boot, reach their .1, each other and the namespace VMs, carry TCP;
 * each is restarted (its port down, saying why, then up); nvgred on both
 * hosts is restarted under them. Returns the daemons running at the end.
 */
async function qemuGuests(x: QemuContext): Promise<Daemon[]> {
  const { c, lab } = x;
  let daemons = x.daemons;
  c.section(`QEMU guests (TCG): ${QEMU_VMS.map((v) => `${v.name} on ${v.host} through mode ${v.mode}`).join(', ')}`);
  const t0 = Date.now();
  const socketOf = (h: HostName): string => daemons.find((d) => d.host === h)!.socket!;
  const status = (v: QemuVmSpec) => portStatus(socketOf(v.host), v.adapter);
  const upMetric = async (v: QemuVmSpec) => (await scrapeMetrics(lab.ns(v.host))).get(`nvgre_vm_adapter_up{adapter="${v.adapter}"}`);
  const fmtStatus = (s: PortStatus) => `${s.name} ${s.mode} ${s.up ? 'up' : 'down'}${s.error ? ` ("${s.error}")` : ''}`;

  let image: VmImage | undefined;
  const built = await c.check(`guest image (Debian cloud kernel + busybox initramfs, cached in ${process.env['NVGRED_VM_CACHE'] ?? DEFAULT_CACHE_DIR})`, async () => {
    const t = Date.now();
    image = await buildImage();
    return `${image.built ? 'built' : 'cached'}: ${image.dir} (${Date.now() - t} ms)`;
  }, 900_000);
  if (!built || !image) {
    c.skip('the QEMU guest checks', 'no guest image');
    return daemons;
  }
  const img = image;
  const guests = new Map(QEMU_VMS.map((v) => [v.name, qemuGuest(lab, img, v, x.vmDir, { logDir: x.args.outDir })]));
  const g = (v: QemuVmSpec): Vm => guests.get(v.name)!;
  const [q1, q2] = [qemuVm('qemu1'), qemuVm('qemu2')];

  await c.check('before the guests run, their ports are down and say why (status API, nvgre_vm_adapter_up 0)', async () => {
    const s = await Promise.all(QEMU_VMS.map(status));
    const m = await Promise.all(QEMU_VMS.map(upMetric));
    if (s.some((p) => p.up || !p.error) || m.some((v) => v !== 0)) throw new Error(`${s.map(fmtStatus).join('; ')}; metric ${m.join(', ')}`);
    return s.map(fmtStatus).join('; ');
  });
  const booted = await c.check('the guests boot (QEMU waits for nvgred on the vhost-user socket) and their ports come up', async () => {
    await Promise.all(QEMU_VMS.map((v) => g(v).start()));
    const ms = await Promise.all(QEMU_VMS.map((v) => g(v).waitBooted(BOOT_MS)));
    await Promise.all(QEMU_VMS.map((v) => waitPort(socketOf(v.host), v.adapter, true, PORT_MS)));
    const m = await Promise.all(QEMU_VMS.map(upMetric));
    if (m.some((v) => v !== 1)) throw new Error(`nvgre_vm_adapter_up ${m.join(', ')}`);
    const mtu = (await status(q2)).mtu;
    if (mtu !== GUEST_MTU) throw new Error(`${q2.name}'s port says the guest was told MTU ${mtu}, not ${GUEST_MTU}`);
    return `${QEMU_VMS.map((v, i) => `${v.name} booted in ${(ms[i]! / 1000).toFixed(1)} s`).join(', ')}; nvgre_vm_adapter_up 1; ${q2.name} told MTU ${mtu}`;
  }, BOOT_MS + 60_000);
  if (!booted) {
    c.skip('the other QEMU guest checks', 'the guests did not come up');
    return daemons;
  }

  // Pings from each guest, all at once (a console round trip under TCG costs more than a ping), one check each.
  const targets = (v: QemuVmSpec): Array<[string, string]> => {
    const other = QEMU_VMS.find((o) => o !== v)!;
    return [
      [`its gateway ${v.gateway}`, v.gateway],
      [`${other.name} ${other.ip} (${v.mode} -> ${other.mode}, across hosts)`, other.ip],
      ...['contoso1', 'contoso2', 'contoso3'].map((r): [string, string] => [`${r} ${vm(r).ip} (${vm(r).host === v.host ? 'same host' : 'across hosts'})`, vm(r).ip]),
      [`MT-GW ${vm('mtgw').ip} (VSID 6000 -> 6001)`, vm('mtgw').ip],
      [`physical server ${SERVER.ip} (via MT-GW)`, SERVER.ip],
    ];
  };
  const pingChecks = async (v: QemuVmSpec, list: Array<[string, string]>, note = ''): Promise<void> => {
    const batch = guestPingAll(g(v), list.map(([, ip]) => ip), { count: 3, waitS: 3 }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    for (const [label, ip] of list) {
      await c.check(`${v.name} -> ${label}${note}`, async () => {
        const r = await batch;
        if (r instanceof Error) throw r;
        const p = r.get(ip)!;
        const got = `${p.received}/${p.transmitted}${p.rttAvgMs !== null ? `, avg ${p.rttAvgMs} ms` : ''}`;
        if (p.received < 1) throw new Error(`no reply (${got})`);
        return got;
      }, 60_000);
    }
  };
  for (const v of QEMU_VMS) await pingChecks(v, targets(v));
  await c.check(`contoso1 -> ${q2.name} ${q2.ip} (namespace VM -> vhost-user guest, across hosts)`, () => reach(lab, 'contoso1', q2.ip));
  await c.check(`contoso3 -> ${q1.name} ${q1.ip} (namespace VM -> attached guest, across hosts)`, () => reach(lab, 'contoso3', q1.ip));
  await c.check(`contoso2 -> ${q1.name} ${q1.ip} (same host)`, () => reach(lab, 'contoso2', q1.ip));
  await c.check(`server -> ${q2.name} ${q2.ip} (back through MT-GW)`, () => reach(lab, SERVER.role, q2.ip));
  await c.check(`fabrikam1 cannot reach ${q1.ip} (${q1.name} is Contoso's)`, () => noReach(lab, 'fabrikam1', q1.ip));

  const guestToGuest = async (from: QemuVmSpec, to: QemuVmSpec, port: number): Promise<string> => {
    const t = Date.now();
    const listener = await guestTcpListen(g(to), port);
    const sent = await guestTcpSend(g(from), to.ip, port, GUEST_TCP_BYTES);
    const got = await listener.result();
    if (got.bytes !== sent.bytes || got.sha256 !== sent.sha256) throw new Error(`sent ${sent.bytes} B ${sent.sha256}, received ${got.bytes} B ${got.sha256}`);
    return `${got.bytes} B, sha256 ${got.sha256.slice(0, 16)}… at both ends (${((Date.now() - t) / 1000).toFixed(1)} s)`;
  };
  const TCP = `${GUEST_TCP_BYTES / 1e6} MB, SHA-256 at both ends`;
  await c.check(`TCP ${q1.name} -> ${q2.name} (attach -> vhost_user), ${TCP}`, () => guestToGuest(q1, q2, 5301), 180_000);
  await c.check(`TCP contoso3 -> ${q1.name} (namespace VM -> attached guest), ${TCP}`, async () => {
    const listener = await guestTcpListen(g(q1), 5302);
    const sent = await tcpSend(lab.ns('contoso3'), q1.ip, GUEST_TCP_BYTES, { port: 5302 });
    const got = await listener.result();
    if (got.bytes !== sent.bytes || got.sha256 !== sent.sha256) throw new Error(`sent ${sent.bytes} B ${sent.sha256}, received ${got.bytes} B ${got.sha256}`);
    return `${got.bytes} B, ${((sent.bytes * 8) / sent.ms / 1000).toFixed(0)} Mbit/s`;
  }, 180_000);
  await c.check(`TCP ${q2.name} -> contoso1 (vhost-user guest -> namespace VM), ${TCP}`, async () => {
    const recv = await tcpReceiver(lab, 'contoso1', vm('contoso1').ip, { port: 5303 });
    try {
      const sent = await guestTcpSend(g(q2), vm('contoso1').ip, 5303, GUEST_TCP_BYTES);
      const got = await recv.result();
      if (got.bytes !== sent.bytes || got.sha256 !== sent.sha256) throw new Error(`sent ${sent.bytes} B ${sent.sha256}, received ${got.bytes} B ${got.sha256}`);
      return `${got.bytes} B, ${((got.bytes * 8) / got.ms / 1000).toFixed(0)} Mbit/s`;
    } finally {
      await recv.stop();
    }
  }, 180_000);

  // Each guest restarted: power pulled (SIGTERM to QEMU), its port down while it is away, then back.
  for (const v of QEMU_VMS) {
    const other = QEMU_VMS.find((o) => o !== v)!;
    await c.check(`${v.name} (${v.mode}) stopped: its port is down, saying why; nvgre_vm_adapter_up 0`, async () => {
      await g(v).stop();
      const s = await waitPort(socketOf(v.host), v.adapter, false, PORT_MS);
      const m = await upMetric(v);
      if (m !== 0 || !s.error) throw new Error(`${fmtStatus(s)}; metric ${m}`);
      const tap = v.mode === 'attach' ? `; TAP ${v.adapter} ${(await linkExists(lab.ns(v.host), v.adapter)) ? 'still there' : 'gone with QEMU'}` : '';
      return `${fmtStatus(s)}${tap}`;
    }, 60_000);
    await c.check(`${v.name} started again: its port comes up; ${v.name} -> ${other.name} and back`, async () => {
      const ms = await g(v).restart(BOOT_MS);
      await waitPort(socketOf(v.host), v.adapter, true, PORT_MS);
      const there = (await guestPingAll(g(v), [other.ip], { count: 3, waitS: 3 })).get(other.ip)!;
      if (there.received < 1) throw new Error(`${v.name} -> ${other.name}: ${there.received}/${there.transmitted}`);
      const back = (await guestPingAll(g(other), [v.ip], { count: 3, waitS: 3 })).get(v.ip)!;
      if (back.received < 1) throw new Error(`${other.name} -> ${v.name}: ${back.received}/${back.transmitted}`);
      return `booted in ${(ms / 1000).toFixed(1)} s; pings ${there.received}/3 there, ${back.received}/3 back`;
    }, BOOT_MS + 60_000);
  }

  // nvgred restarted under the running guests.
  const guestHosts = [...new Set(QEMU_VMS.map((v) => v.host))];
  const restarted = await c.check(`nvgred on ${guestHosts.join(' and ')} restarted under the running guests (exit 0 on SIGTERM, ready again)`, async () => {
    const stops = await stopDaemons(lab, daemons.filter((d) => guestHosts.includes(d.host)), { timeoutMs: 10_000 });
    const bad = stops.filter((s) => !s.ok);
    if (bad.length) throw new Error(bad.map((s) => `${s.host}: ${fmtExit(s)}`).join(', '));
    const dead = QEMU_VMS.filter((v) => !g(v).running);
    if (dead.length) throw new Error(`QEMU of ${dead.map((v) => v.name).join(', ')} exited with nvgred`);
    const taps = QEMU_VMS.filter((v) => v.mode === 'attach');
    for (const v of taps) if (!(await linkExists(lab.ns(v.host), v.adapter))) throw new Error(`nvgred deleted ${v.host}:${v.adapter} as it stopped`);
    const again = await startDaemons(lab, {
      daemonArgv: x.args.daemonArgv,
      logDir: join(x.args.outDir, 'restarted'),
      readyTimeoutMs: x.args.readyTimeoutMs,
      configs: x.configs,
      hosts: guestHosts,
    });
    daemons = [...daemons.filter((d) => !guestHosts.includes(d.host)), ...again];
    // The namespace VMs' TAPs went with nvgred: configure the new ones.
    await configureVms(lab, { vms: VMS.filter((v) => guestHosts.includes(v.host)).map((v) => v.role) });
    return `${again.map((d) => `${d.host} pid ${d.proc.pid} (log ${x.rel(d.logFile)})`).join(', ')}; ${taps.map((v) => v.adapter).join(', ')} kept`;
  }, x.args.readyTimeoutMs + 60_000);
  if (restarted) {
    await c.check(`${q1.name}'s TAP adopted again, ${q2.name}'s socket connected again (nvgred is the client): both ports up`, async () => {
      const s = await Promise.all(QEMU_VMS.map((v) => waitPort(socketOf(v.host), v.adapter, true, PORT_MS)));
      return s.map(fmtStatus).join('; ');
    }, PORT_MS + 10_000);
    for (const v of QEMU_VMS) {
      const other = QEMU_VMS.find((o) => o !== v)!;
      await pingChecks(v, [[`${other.name} ${other.ip}`, other.ip], [`contoso1 ${vm('contoso1').ip}`, vm('contoso1').ip], [`contoso3 ${vm('contoso3').ip}`, vm('contoso3').ip]], ' after the restart');
    }
    await c.check(`TCP ${q2.name} -> ${q1.name} after the restart (vhost_user -> attach), ${TCP}`, () => guestToGuest(q2, q1, 5304), 180_000);
  } else {
    c.skip('traffic after the restart', 'nvgred did not restart');
  }

  await c.check("the guests stop; the attached guest's TAP goes with its QEMU; both ports down", async () => {
    for (const v of QEMU_VMS) await g(v).stop();
    for (const v of QEMU_VMS.filter((q) => q.mode === 'attach')) {
      await waitFor(async () => !(await linkExists(lab.ns(v.host), v.adapter)), 5000, { what: `${v.host}:${v.adapter} gone` });
    }
    const s = await Promise.all(QEMU_VMS.map((v) => waitPort(socketOf(v.host), v.adapter, false, PORT_MS)));
    const sockets = QEMU_VMS.filter((v) => v.mode === 'vhost_user').map((v) => `${v.name}'s socket ${existsSync(vhostSocket(x.vmDir, v)) ? 'left' : 'removed'} by QEMU`);
    return [...s.map(fmtStatus), ...sockets].join('; ');
  }, 60_000);
  const took = (Date.now() - t0) / 1000;
  console.log(`QEMU guests: ${took.toFixed(0)} s`);
  qemuSeconds = took;
  return daemons;
}

// ---------------------------------------------------------------------------
// The fleet (fleet.md): the policy in etcd

/** The store's members, their namespace (prefix + this) and the key prefix. */
const ETCD_MEMBERS = 3;
const ETCD_NS = 'etcd';
const STORE_PREFIX = '/nvgred';
const CLI = join(repoRoot(), 'dist', 'src', 'cli', 'main.js');

interface FleetStatus {
  up: boolean;
  status: { revision: number; error: string | null };
}

/** Every daemon runs store revision `revision` or a later one, refusing none (bounded). */
async function fleetApplied(daemons: readonly Daemon[], revision: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    async () => {
      for (const d of daemons) {
        const f = await apiGet<FleetStatus>(d.socket!, '/v1/fleet');
        if (f.status.error) throw new Error(`${d.host}: ${f.status.error}`);
        if (f.status.revision < revision) return false;
      }
      return true;
    },
    timeoutMs,
    { what: `every host at store revision ${revision}`, intervalMs: 200 },
  );
}

async function fleetStatuses(daemons: readonly Daemon[]): Promise<string[]> {
  return Promise.all(
    daemons.map(async (d) => {
      const f = await apiGet<FleetStatus>(d.socket!, '/v1/fleet');
      return `${d.host} ${f.up ? 'up' : 'store unreachable'}, revision ${f.status.revision}`;
    }),
  );
}

interface FleetContext {
  c: Checks;
  lab: Lab;
  args: Args;
  daemons: Daemon[];
  configs: Record<HostName, string>;
  cluster: EtcdCluster;
  etcd: Etcd;
  rel: (p: string) => string;
}

/**
 * The fleet beyond the reference checks: a VM (MIGRANT) placed on a host by
 * one transaction, migrated to another by `nvgrectl fleet migrate` (one
 * transaction) with its traffic following; an etcd member killed and a
 * change still applied on every host; the whole store stopped and
 * forwarding going on, also across a restart of a daemon (from its
 * state_dir). Returns the daemons running at the end.
 */
async function fleetChecks(x: FleetContext): Promise<Daemon[]> {
  const { c, lab, cluster, etcd } = x;
  let daemons = x.daemons;
  const m = MIGRANT;
  const pa = (h: HostName) => PROVIDER_ADDRESSES[h].address;
  const socketOf = (h: HostName): string => daemons.find((d) => d.host === h)!.socket!;
  const root = keyRoot(STORE_PREFIX);
  const put = (key: string, record: object) => ({ put: { key: root + key, value: JSON.stringify(record) } });
  const record = (h: HostName) => ({ customer_address: m.ip, vsid: m.vsid, mac: m.mac, provider_address: pa(h), rule: 'encap', type: 'static', vm_name: m.vmName });
  const recordPath = `/v1/lookup-records/${m.vsid}/${m.ip}`;
  const adapterNames = async (h: HostName) => (await apiGet<{ vm_adapters: Array<{ name: string }> }>(socketOf(h), '/v1/vm-adapters')).vm_adapters.map((a) => a.name);
  c.section(`the fleet: ${m.role} placed on ${m.from}, migrated to ${m.to}; an etcd member killed; the store stopped`);
  const t0 = Date.now();

  const placed = await c.check(`${m.role} ${m.ip} placed on ${m.from} by one transaction (its adapter, mode attach, under hosts/${m.from}/; its record fleet-wide): its port up; contoso1 (across hosts) and contoso3 (same host) reach it`, async () => {
    await lab.addNamespace(m.role);
    await lab.veth(m.from, m.adapter, m.role, m.ifname);
    await configureVm(lab, { ns: m.role, tap: m.ifname, host: m.from, mac: m.mac, ip: m.ip, prefixLength: m.prefixLength, gateway: m.gateway });
    const adapter = { name: m.adapter, vm_name: m.vmName, mode: 'attach', mac: m.mac, vsid: m.vsid };
    const rec = record(m.from);
    const { succeeded, revision } = await etcd.txn([], [put(recordKey('vm_adapters', adapter as AnyRecord, m.from), adapter), put(recordKey('lookup_records', rec as AnyRecord), rec)]);
    if (!succeeded) throw new Error('the transaction failed');
    await fleetApplied(daemons, revision);
    await waitPort(socketOf(m.from), m.adapter, true, PORT_MS);
    return `revision ${revision}; contoso1: ${await reach(lab, 'contoso1', m.ip)}; contoso3: ${await reach(lab, 'contoso3', m.ip)}`;
  });
  if (placed) {
    const migrated = await c.check(`nvgrectl fleet migrate ${m.adapter} to ${m.to}: one transaction moves its adapter to hosts/${m.to}/ and gives its record ${pa(m.to)}; every host runs it, ${m.from} lets the port go`, async () => {
      const r = await run([process.execPath, CLI, '-s', socketOf(m.to), 'fleet', 'migrate', m.adapter, 'to', m.to, 'pa', pa(m.to)], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`nvgrectl exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
      const revision = Number(/at revision (\d+)/.exec(r.stdout)?.[1]);
      if (!revision) throw new Error(`no revision in ${JSON.stringify(r.stdout)}`);
      await fleetApplied(daemons, revision);
      for (const h of HOSTS) {
        const got = (await apiGet<{ provider_address: string }>(socketOf(h), recordPath)).provider_address;
        if (got !== pa(m.to)) throw new Error(`${h}'s record of ${m.ip} names ${got}`);
      }
      if ((await adapterNames(m.from)).includes(m.adapter)) throw new Error(`${m.from} still has ${m.adapter}`);
      if (!(await adapterNames(m.to)).includes(m.adapter)) throw new Error(`${m.to} has no ${m.adapter}`);
      return `${r.stdout.trim()}; every host's record of ${m.ip} names ${pa(m.to)}`;
    });
    if (migrated) {
      await c.check(`the VM's NIC moves with it (its veth end from ${m.from}'s namespace to ${m.to}'s), ${m.to} adopts it; traffic follows: contoso3 -> ${m.role} across hosts, contoso1 -> ${m.role} on one host`, async () => {
        await lab.exec(['ip', '-n', lab.ns(m.from), 'link', 'set', m.adapter, 'netns', lab.ns(m.to)]);
        // A migrated VM forgets its neighbours (its gateway's MAC is the new host's).
        await lab.nsExec(m.role, ['ip', 'neigh', 'flush', 'all']);
        const s = await waitPort(socketOf(m.to), m.adapter, true, PORT_MS);
        return `${m.to}: ${s.name} ${s.mode} up; contoso3: ${await reach(lab, 'contoso3', m.ip)}; contoso1: ${await reach(lab, 'contoso1', m.ip)}; ${m.role} -> contoso3: ${await reach(lab, m.role, vm('contoso3').ip)}`;
      });
    }
  } else c.skip(`${m.role}'s migration`, `${m.role} was not placed`);

  const extra = { customer_address: '10.0.1.199', vsid: 6000, mac: '60:00:60:00:02:99', provider_address: pa('host2'), rule: 'encap', type: 'static' };
  const extraPath = `/v1/lookup-records/${extra.vsid}/${extra.customer_address}`;
  await c.check(`an etcd member killed (${cluster.names[0]}): a new record (${extra.customer_address}) still reaches every host`, async () => {
    await cluster.killMember(0);
    const revision = await etcd.put(root + recordKey('lookup_records', extra as AnyRecord), JSON.stringify(extra));
    await fleetApplied(daemons, revision);
    for (const h of HOSTS) await apiGet(socketOf(h), extraPath);
    return `revision ${revision}, written through ${cluster.names.slice(1).join(' and ')}; ${(await fleetStatuses(daemons)).join(', ')}`;
  }, 60_000);

  const flows: Array<[string, string]> = [
    ['contoso1', vm('contoso3').ip],
    ['contoso3', m.ip],
    ['contoso2', SERVER.ip],
  ];
  const forwards = async () => (await Promise.all(flows.map(async ([from, dst]) => `${from} -> ${dst}: ${await reach(lab, from, dst)}`))).join('; ');
  const stopped = await c.check('the whole store stopped: every host says so (nvgre_policy_store_up 0) and forwarding goes on', async () => {
    await cluster.stop();
    await waitFor(async () => (await Promise.all(daemons.map((d) => apiGet<FleetStatus>(d.socket!, '/v1/fleet')))).every((f) => !f.up), 30_000, { what: 'every host to see the store gone', intervalMs: 250 });
    const up = await Promise.all(HOSTS.map(async (h) => metricSum(await scrapeMetrics(lab.ns(h)), 'nvgre_policy_store_up')));
    if (up.some((v) => v !== 0)) throw new Error(`nvgre_policy_store_up ${up.join(', ')}`);
    return await forwards();
  }, 60_000);
  if (stopped) {
    await c.check(`nvgred on ${m.to} restarted without the store: ready from its state_dir; it forwards (its TAPs made again, ${m.adapter} adopted again, ${extra.customer_address} kept)`, async () => {
      const [s] = await stopDaemons(lab, daemons.filter((d) => d.host === m.to), { timeoutMs: 10_000 });
      if (!s?.ok) throw new Error(`${m.to}: ${s ? fmtExit(s) : 'not running'}`);
      const again = await startDaemons(lab, {
        daemonArgv: x.args.daemonArgv,
        logDir: join(x.args.outDir, 'restarted-without-store'),
        readyTimeoutMs: x.args.readyTimeoutMs,
        configs: x.configs,
        hosts: [m.to],
        keepState: true,
      });
      daemons = [...daemons.filter((d) => d.host !== m.to), ...again];
      await configureVms(lab, { vms: VMS.filter((v) => v.host === m.to).map((v) => v.role) });
      await waitPort(socketOf(m.to), m.adapter, true, PORT_MS);
      await apiGet(socketOf(m.to), extraPath);
      const f = await apiGet<FleetStatus>(socketOf(m.to), '/v1/fleet');
      if (f.up) throw new Error('the store is up?');
      return `${again.map((d) => `pid ${d.proc.pid} (log ${x.rel(d.logFile)})`).join('')}, revision ${f.status.revision}; ${await forwards()}; contoso3 -> contoso1: ${await reach(lab, 'contoso3', vm('contoso1').ip)}`;
    }, x.args.readyTimeoutMs + 60_000);
  } else c.skip('a restart without the store', 'the store did not stop cleanly');
  fleetSeconds = (Date.now() - t0) / 1000;
  console.log(`fleet: ${fleetSeconds.toFixed(0)} s`);
  return daemons;
}

/** How long the QEMU part and the fleet's took, for the summary. */
let qemuSeconds: number | undefined;
let fleetSeconds: number | undefined;

// ---------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const lab = new Lab(args.prefix, { log: args.verbose ? (m) => console.log(`   . ${m}`) : undefined });
  const uninstall = installSignalTeardown(lab);
  const c = new Checks(lab);
  const rel = (p: string): string => {
    const r = relative(process.cwd(), p);
    return r.startsWith('..') ? p : r;
  };
  mkdirSync(args.outDir, { recursive: true });
  const pcapFile = join(args.outDir, 'underlay.pcap');
  const portPcaps = Object.fromEntries(VLAN_PORTS.map((h) => [h, join(args.outDir, `underlay-${underlayPort(h)}.pcap`)])) as Record<HostName, string>;
  let capture: Capture | undefined;
  const portCaptures: Capture[] = [];
  let daemons: Daemon[] = [];
  let daemonPhase = false;
  let qemuPhase = false;
  // The QEMU guests' files (console and vhost-user sockets), removed at teardown.
  const vmDir = args.qemu ? vmRunDir(lab) : undefined;
  const variant: LabVariant = { ...LAB_VARIANT, ...(vmDir ? { qemuVms: { socketDir: vmDir } } : {}) };
  // The whole policy of each host (the plan's); the files the hosts run from (host-local settings only) are `configs`.
  let whole: Record<HostName, string> | undefined;
  let configs: Record<HostName, string> | undefined;
  let cluster: EtcdCluster | undefined;
  let etcd: Etcd | undefined;
  let storeRevision = 0;

  const started = Date.now();
  console.log(`nvgred lab: prefix ${args.prefix}, output in ${rel(args.outDir)}`);
  try {
    // ------------------------------------------------------------ preflight
    c.section('preflight');
    const stale = await Lab.cleanStale(args.prefix);
    if (stale.length) console.log(`removed namespaces left by an earlier run: ${stale.join(' ')}`);
    await c.check('lab configs match the topology plan', async () => {
      const problems = HOSTS.flatMap((h) => checkConfigAgainstTopology(h, loadConfig(configPath(h)), DEFAULT_PREFIX).map((p) => `${h}: ${p}`));
      if (problems.length) throw new Error(problems.join('\n'));
      return HOSTS.map((h) => rel(configPath(h))).join(', ');
    });
    const validation = await validateWithDaemon(HOSTS.map(configPath));
    if (!validation.available) {
      c.skip("nvgred's validator accepts the lab configs", 'dist/src/config/index.js (validatePolicy) not built');
    } else {
      await c.check("nvgred's validator accepts the lab configs", async () => {
        const bad = validation.results.filter((r) => r.error !== null);
        if (bad.length) throw new Error(bad.map((r) => `${rel(r.file)}: ${r.error}`).join('\n'));
        return `${validation.results.length} files`;
      });
    }
    await c.must(`the configs of this run: ${describeVariant(variant)}`, async () => {
      whole = writeVariantConfigs(args.prefix, join(args.outDir, 'configs', 'whole'), variant);
      const v = await validateWithDaemon(HOSTS.map((h) => whole![h]));
      const bad = v.results.filter((r) => r.error !== null);
      if (bad.length) throw new Error(bad.map((r) => `${rel(r.file)}: ${r.error}`).join('\n'));
      return `each host's whole policy: ${HOSTS.map((h) => rel(whole![h])).join(', ')}${v.available ? ", accepted by nvgred's validator" : ''}`;
    });

    // ------------------------------------------------------------ topology
    c.section('topology');
    await c.must('build the namespaces and links', async () => {
      await buildTopology(lab, variant);
      const trunk = variant.vlan ? `; ${UNDERLAY_NS}:${underlayPort(variant.vlan.host)} a trunk port of VLAN ${variant.vlan.id}` : '';
      return `${lab.namespaces().length} namespaces: ${lab.namespaces().join(' ')}${trunk}`;
    });
    await c.must(`capture on ${UNDERLAY_NS}:${UNDERLAY_BRIDGE}`, async () => {
      capture = await lab.capture(UNDERLAY_NS, UNDERLAY_BRIDGE, pcapFile);
      return `dumpcap pid ${capture.pid} -> ${rel(pcapFile)}`;
    });
    await c.must(`capture on ${UNDERLAY_NS}:${VLAN_PORTS.map(underlayPort).join(', ')} (the VLAN tags, headers only)`, async () => {
      for (const h of VLAN_PORTS) portCaptures.push(await lab.capture(UNDERLAY_NS, underlayPort(h), portPcaps[h], { snaplen: 128 }));
      return VLAN_PORTS.map((h) => rel(portPcaps[h])).join(', ');
    });
    await c.check(`server reaches MT-GW's external NIC ${MTGW_EXTERNAL.ip}`, () => reach(lab, SERVER.role, MTGW_EXTERNAL.ip));
    await c.check(`host ${UNDERLAY_IF}s are up without addresses before nvgred`, async () => {
      for (const h of HOSTS) {
        const a = await hostPaAddrs(lab, h);
        if (a.length) throw new Error(`${h}:${UNDERLAY_IF} has ${a.join(' ')}`);
      }
      return HOSTS.join(', ');
    });

    if (args.topologyOnly) {
      c.section('daemons');
      console.log('skipped (--topology-only)');
    } else {
      // ------------------------------------------------------------ policy store
      c.section('policy store (fleet.md): etcd');
      await c.must(`a ${ETCD_MEMBERS}-member etcd cluster (Debian's etcd-server) in namespace ${args.prefix}${ETCD_NS}, clients through Unix sockets`, async () => {
        const dir = join(args.outDir, 'etcd');
        rmSync(dir, { recursive: true, force: true }); // an earlier run's data would be this run's policy
        const cl = await EtcdCluster.start({ ns: `${args.prefix}${ETCD_NS}`, dir, members: ETCD_MEMBERS });
        cluster = cl;
        const client = cl.client();
        etcd = client;
        lab.defer(`stop etcd (${args.prefix}${ETCD_NS})`, async () => {
          client.close();
          await cl.stop();
        });
        return `members ${cl.names.join(', ')}, data and logs in ${rel(dir)}`;
      });
      await c.must("the hosts' files keep host-local settings only; routes, lookup records, VM adapters go to etcd in one transaction", async () => {
        const split = fleetConfigs(whole!, join(args.outDir, 'configs'), { endpoints: cluster!.endpoints, prefix: STORE_PREFIX });
        configs = split.files;
        const v = await validateWithDaemon(HOSTS.map((h) => configs![h]));
        const bad = v.results.filter((r) => r.error !== null);
        if (bad.length) throw new Error(bad.map((r) => `${rel(r.file)}: ${r.error}`).join('\n'));
        if (split.keys.length > MAX_TXN_OPS) throw new Error(`${split.keys.length} keys: more than one transaction holds (${MAX_TXN_OPS})`);
        const { succeeded, revision } = await etcd!.txn([], split.keys.map(({ key, value }) => ({ put: { key, value } })));
        if (!succeeded) throw new Error('the transaction failed');
        storeRevision = revision;
        const root = keyRoot(STORE_PREFIX);
        const under = (p: string) => split.keys.filter((k) => k.key.startsWith(root + p)).length;
        const kept = Object.keys(loadConfig(configs.host1)).join(', ');
        return `${split.keys.length} keys at revision ${revision}: ${under('customer_routes/')} customer_routes/, ${under('lookup_records/')} lookup_records/, ${HOSTS.map((h) => `${under(`hosts/${h}/`)} hosts/${h}/`).join(', ')}; ${rel(configs.host1)} keeps ${kept}`;
      });

      // ------------------------------------------------------------ daemons
      c.section('daemons');
      daemonPhase = true;
      await c.must('nvgred starts on every host and reports ready', async () => {
        daemons = await startDaemons(lab, {
          daemonArgv: args.daemonArgv,
          logDir: args.outDir,
          readyTimeoutMs: args.readyTimeoutMs,
          configs,
        });
        return daemons.map((d) => `${d.host} pid ${d.proc.pid} (log ${rel(d.logFile)})`).join(', ');
      }, args.readyTimeoutMs + 30_000);
      await c.check(`each host has its PA on ${UNDERLAY_IF} (Host 2 on VLAN ${LAB_VARIANT.vlan.id}: on ${paInterface('host2', variant)})`, async () => {
        const got = await Promise.all(
          HOSTS.map(async (h) => {
            const want = `${PROVIDER_ADDRESSES[h].address}/${PROVIDER_ADDRESSES[h].prefixLength}`;
            await waitFor(async () => (await hostPaAddrs(lab, h, 4, variant)).includes(want), 5000, { what: `${want} on ${h}:${paInterface(h, variant)}` });
            return `${h}:${paInterface(h, variant)} ${want}`;
          }),
        );
        return got.join(', ');
      });
      await c.must(`every host runs the store's revision ${storeRevision} (its status: GET /v1/fleet)`, async () => {
        await fleetApplied(daemons, storeRevision);
        return (await fleetStatuses(daemons)).join(', ');
      });
      await c.must('VM TAPs appear in their namespaces and get configured', async () => {
        const notes = await configureVms(lab);
        return [`${VMS.length} VMs`, ...notes].join('; ');
      });

      // ------------------------------------------------------------ reachability
      c.section('Contoso reachability');
      for (const v of VMS.filter((x) => x.tenant === 'contoso')) {
        await c.check(`${v.role} -> its gateway ${v.gateway}`, () => reach(lab, v.role, v.gateway));
      }
      await c.check('contoso1 -> contoso2 (same host, same VSID)', () => reach(lab, 'contoso1', vm('contoso2').ip));
      await c.check('contoso2 -> contoso1 (same host, same VSID)', () => reach(lab, 'contoso2', vm('contoso1').ip));
      await c.check('contoso1 -> contoso3 (across hosts)', () => reach(lab, 'contoso1', vm('contoso3').ip));
      await c.check('contoso3 -> contoso2 (across hosts)', () => reach(lab, 'contoso3', vm('contoso2').ip));
      for (const r of ['contoso1', 'contoso2', 'contoso3']) {
        await c.check(`${r} -> MT-GW ${vm('mtgw').ip} (VSID 6000 -> 6001)`, () => reach(lab, r, vm('mtgw').ip));
      }
      for (const r of ['contoso1', 'contoso2', 'contoso3']) {
        await c.check(`${r} -> physical server ${SERVER.ip} (via MT-GW)`, () => reach(lab, r, SERVER.ip));
      }
      await c.check(`server -> contoso1 ${vm('contoso1').ip} (back through MT-GW)`, () => reach(lab, SERVER.role, vm('contoso1').ip));

      c.section('Fabrikam reachability (same addresses, VSID 7000)');
      await c.check(`fabrikam1 -> its gateway ${vm('fabrikam1').gateway}`, () => reach(lab, 'fabrikam1', vm('fabrikam1').gateway));
      await c.check('fabrikam1 -> fabrikam2 (same host)', () => reach(lab, 'fabrikam1', vm('fabrikam2').ip));
      await c.check('fabrikam1 -> fabrikam3 (across hosts)', () => reach(lab, 'fabrikam1', vm('fabrikam3').ip));

      // ------------------------------------------------------------ isolation
      c.section('isolation between routing domains');
      const contoso = VMS.filter((v) => v.tenant === 'contoso').map(tapOf);
      const fabrikam = VMS.filter((v) => v.tenant === 'fabrikam').map(tapOf);
      const mtgwTap = tapOf(vm('mtgw'));
      const serverNic: Watched = ['server', SERVER.role, SERVER.ifname];
      await c.check(`fabrikam1 cannot reach MT-GW ${vm('mtgw').ip}`, () =>
        rxDuring(lab, [mtgwTap, serverNic], [], () => noReach(lab, 'fabrikam1', vm('mtgw').ip)),
      );
      await c.check(`fabrikam1 cannot reach the server ${SERVER.ip}`, () =>
        rxDuring(lab, [mtgwTap, serverNic], [], () => noReach(lab, 'fabrikam1', SERVER.ip)),
      );
      await c.check('fabrikam1 pinging 10.0.1.103 and 10.0.1.102 reaches Fabrikam VMs only (Contoso TAPs rx 0)', () =>
        rxDuring(lab, contoso, [tapOf(vm('fabrikam3')), tapOf(vm('fabrikam2'))], async () => {
          const a = await reach(lab, 'fabrikam1', '10.0.1.103');
          const b = await reach(lab, 'fabrikam1', '10.0.1.102');
          return `.103: ${a}; .102: ${b}`;
        }),
      );
      await c.check('contoso1 pinging 10.0.1.103 and 10.0.1.102 reaches Contoso VMs only (Fabrikam TAPs rx 0)', () =>
        rxDuring(lab, fabrikam, [tapOf(vm('contoso3')), tapOf(vm('contoso2'))], async () => {
          const a = await reach(lab, 'contoso1', '10.0.1.103');
          const b = await reach(lab, 'contoso1', '10.0.1.102');
          return `.103: ${a}; .102: ${b}`;
        }),
      );

      // ------------------------------------------------------------ metrics
      c.section('metrics (Prometheus /metrics in each host namespace)');
      await c.check('10 pings contoso1 -> contoso3: +10 encapsulated and +10 decapsulated in VSID 6000 on Host 1 and Host 2', async () => {
        await reach(lab, 'contoso1', vm('contoso3').ip); // neighbour entries warm: no ARP in the window
        const hosts = ['host1', 'host2'] as const;
        const before = await Promise.all(hosts.map((h) => scrapeMetrics(lab.ns(h))));
        const p = await ping(lab.ns('contoso1'), vm('contoso3').ip, { count: 10, intervalMs: 50, timeoutMs: 1000 });
        if (p.received !== 10) throw new Error(`ping: ${fmtPing(p)}`);
        const after = await Promise.all(hosts.map((h) => scrapeMetrics(lab.ns(h))));
        const lines = hosts.map((h, i) => {
          const d = (name: string) => metricSum(after[i]!, name, 'vsid="6000"') - metricSum(before[i]!, name, 'vsid="6000"');
          const encap = d('nvgre_encap_packets_total');
          const decap = d('nvgre_decap_packets_total');
          if (encap !== 10 || decap !== 10) throw new Error(`${h}: encap +${encap}, decap +${decap} in VSID 6000`);
          return `${h}: encap +${encap}, decap +${decap}`;
        });
        return lines.join('; ');
      });
      await c.check('every drop reason is a series, zeros included; none counted from the underlay in this run', async () => {
        const m = await scrapeMetrics(lab.ns('host1'));
        const series = [...m.keys()].filter((k) => k.startsWith('nvgre_dropped_packets_total{'));
        const underlay = metricSum(m, 'nvgre_dropped_packets_total', 'direction="from_underlay"');
        if (series.length < 2 * 20) throw new Error(`only ${series.length} drop series`);
        if (underlay !== 0) throw new Error(`${underlay} packets dropped from the underlay`);
        const nonzero = series.filter((k) => m.get(k)! > 0).map((k) => `${/reason="(\w+)"/.exec(k)![1]}=${m.get(k)}`);
        return `${series.length} series; from VMs: ${nonzero.join(', ') || 'none'}`;
      });

      // ------------------------------------------------------------ QEMU guests
      if (!vmDir) {
        c.section('QEMU guests');
        console.log('skipped (--no-qemu)');
      } else {
        qemuPhase = true;
        daemons = await qemuGuests({ c, lab, args, daemons, configs: configs!, vmDir, rel });
      }

      // ------------------------------------------------------------ the fleet
      daemons = await fleetChecks({ c, lab, args, daemons, configs: configs!, cluster: cluster!, etcd: etcd!, rel });

      // ------------------------------------------------------------ shutdown
      c.section('shutdown');
      const stops = await stopDaemons(lab, daemons, { timeoutMs: 10_000 });
      for (const s of stops) {
        await c.check(`nvgred on ${s.host} exits 0 on SIGTERM`, async () => {
          const how = `${fmtExit(s)}${s.escalated ? ' after SIGKILL (ignored SIGTERM for 10 s)' : ''}`;
          if (!s.ok) {
            const d = daemons.find((x) => x.host === s.host);
            throw new Error(`${how}; log tail:\n${d?.proc.tail(15) ?? ''}`);
          }
          return how;
        });
      }
      await c.check('TAPs are gone from the VM namespaces', async () => {
        await waitFor(
          async () => {
            for (const v of VMS) if (await linkExists(lab.ns(v.role), v.tap)) return false;
            return true;
          },
          5000,
          { what: 'TAP removal' },
        ).catch(async () => {
          const left: string[] = [];
          for (const v of VMS) if (await linkExists(lab.ns(v.role), v.tap)) left.push(`${v.role}:${v.tap}`);
          throw new Error(`still present: ${left.join(' ')}`);
        });
        return `${VMS.length} TAPs removed`;
      });
      await c.check(`PAs are gone from ${UNDERLAY_IF} (and ${paInterface('host2', variant)})`, async () => {
        const left: string[] = [];
        for (const h of HOSTS) {
          const a = await hostPaAddrs(lab, h, 4, variant);
          if (a.length) left.push(`${h}:${paInterface(h, variant)} ${a.join(' ')}`);
        }
        if (left.length) throw new Error(`still assigned: ${left.join(', ')}`);
        return HOSTS.join(', ');
      });
    }

    // ------------------------------------------------------------ capture
    c.section('underlay capture');
    const cap = capture as Capture | undefined;
    if (cap) {
      await c.check('dumpcap stops and flushes', async () => {
        for (const p of [cap, ...portCaptures]) {
          const r = await lab.stop(p, { timeoutMs: 5000 });
          if (r.code !== 0) throw new Error(`dumpcap ${fmtExit(r)}; ${p.tail(5)}`);
        }
        return [pcapFile, ...VLAN_PORTS.map((h) => portPcaps[h])].map(rel).join(', ');
      });
    }
    if (daemonPhase && existsSync(pcapFile)) {
      await checkPcap(c, pcapFile, qemuPhase);
      if (portCaptures.length) await checkVlanTags(c, portPcaps);
    } else console.log('no NVGRE traffic expected without daemons');
  } catch (e) {
    if (!(e instanceof Abort)) {
      c.results.push({ name: 'lab run', status: 'FAIL', detail: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      console.log(`FAIL  lab run: ${e instanceof Error ? e.message : String(e)}`);
    }
    console.log('aborted: the remaining checks were not run');
  } finally {
    c.section('teardown');
    const report = await lab.teardown();
    for (const a of report.actions) if (args.verbose) console.log(`   . ${a}`);
    await c.check(TEARDOWN_CHECK, async () => {
      const left = (await listNamespaces()).filter((n) => isLabNamespace(args.prefix, n));
      const errs = [...report.errors, ...(left.length ? [`namespaces left: ${left.join(' ')}`] : [])];
      if (vmDir && existsSync(vmDir)) errs.push(`${vmDir} (the guests' sockets) is still there`);
      if (errs.length) throw new Error(errs.join('\n'));
      return `${lab.namespaces().length} namespaces deleted, ${lab.processes().length} processes stopped`;
    });
    uninstall();
  }

  if (existsSync(pcapFile)) {
    console.log(`\nunderlay capture: ${rel(pcapFile)}; look at it with:`);
    for (const h of tsharkHints(rel(pcapFile))) console.log(`  ${h}`);
  }
  if (daemons.length) console.log(`daemon logs: ${daemons.map((d) => rel(d.logFile)).join(' ')}`);
  const passed = c.count('PASS');
  const failed = c.count('FAIL');
  const skipped = c.count('SKIP');
  const parts = [qemuSeconds !== undefined ? `the QEMU guests took ${qemuSeconds.toFixed(0)} s` : '', fleetSeconds !== undefined ? `the fleet's checks ${fleetSeconds.toFixed(0)} s` : ''].filter(Boolean);
  const took = parts.length ? ` (${parts.join(', ')})` : '';
  console.log(`\nlab: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}, in ${((Date.now() - started) / 1000).toFixed(0)} s${took}`);
  return failed ? 1 : 0;
}

async function checkPcap(c: Checks, file: string, withQemu: boolean): Promise<void> {
  let rep: PcapReport | undefined;
  const guests = withQemu ? QEMU_VMS : [];
  await c.check('tshark reads the capture', async () => {
    rep = await analyzeNvgrePcap(file, {
      vsids: LAB_VSIDS,
      providerAddresses: HOSTS.map((h) => PROVIDER_ADDRESSES[h].address),
      vms: [
        ...VMS.map((v) => ({ name: v.role, mac: v.mac, vsid: v.vsid, pa: PROVIDER_ADDRESSES[v.host].address })),
        ...guests.map((v) => ({ name: v.name, mac: v.mac, vsid: v.vsid, pa: PROVIDER_ADDRESSES[v.host].address })),
        // The migrated VM: behind one host's PA, then the other's.
        { name: MIGRANT.role, mac: MIGRANT.mac, vsid: MIGRANT.vsid, pa: [MIGRANT.from, MIGRANT.to].map((h) => PROVIDER_ADDRESSES[h].address) },
      ],
    });
    return `${rep.frames} frames, ${rep.grePackets} GRE`;
  });
  const r = rep;
  if (!r) return;
  const rules = (names: string[]): string[] =>
    r.violations.filter((v) => names.some((n) => v.rule.startsWith(n))).map((v) => `${v.rule}: ${v.count} packets (frames ${v.frames.join(',')}; e.g. ${v.example})`);
  const verdict = (problems: string[], ok: string): string => {
    if (problems.length) throw new Error(problems.join('\n'));
    return ok;
  };
  await c.check('the underlay carried NVGRE', async () => {
    if (!r.grePackets) throw new Error('no GRE packet in the capture');
    return [...r.pairs].map(([p, n]) => `${p}: ${n}`).join(', ');
  });
  await c.check('every GRE header: protocol 0x6558, key present, C=0 S=0, version 0', async () =>
    verdict(rules(['GRE protocol', 'GRE flags', 'GRE key present']), `${r.grePackets} packets`),
  );
  await c.check(`keys are VSID<<8|FlowID with VSID in {${LAB_VSIDS.join(', ')}}`, async () =>
    verdict(rules(['key VSID in']), `${[...r.vsids].map(([v, n]) => `VSID ${v}: ${n}`).join(', ')}; FlowIDs seen: ${r.flowIds.size}`),
  );
  await c.check(`all of VSIDs ${LAB_VSIDS.join(', ')} crossed the underlay`, async () => {
    const missing = LAB_VSIDS.filter((v) => !r.vsids.has(v));
    if (missing.length) throw new Error(`never seen: ${missing.join(', ')}`);
    return 'yes';
  });
  await c.check('outer addresses are PAs; inner frames are VM frames (untagged, IPv4 10.x, to a VM of the key VSID behind the outer PA)', async () =>
    verdict(rules(['outer addresses', 'inner', "key VSID and outer"]), `${r.grePackets} packets`),
  );
  await c.check("no ARP inside GRE (tshark -Y 'gre && arp' is empty)", async () => {
    if (r.arpInGre) throw new Error(`${r.arpInGre} packets`);
    return 'none';
  });
  await c.check('wireshark/nvgre.lua decodes every NVGRE packet to its key\'s VSID and FlowID', async () => {
    const n = await checkDissector(file, join(repoRoot(), 'wireshark', 'nvgre.lua'));
    if (n !== r.grePackets) throw new Error(`decoded ${n} of ${r.grePackets} GRE packets`);
    return `${n} packets`;
  });
  for (const v of guests) {
    const vsids = tenantVsids(v.tenant);
    await c.check(`NVGRE to ${v.name} (${v.mode}): VSID ${v.vsid}, outer destination ${PROVIDER_ADDRESSES[v.host].address}; from it: VSID in {${vsids.join(', ')}}, outer source ${PROVIDER_ADDRESSES[v.host].address}`, () => guestOnTheWire(file, v));
  }
}

/** tshark fields of the frames matching `filter`, one array per frame (`occurrence`: f = outer header, l = inner). */
async function tsharkFields(file: string, filter: string, fields: string[], occurrence: 'f' | 'l'): Promise<string[][]> {
  const argv = ['tshark', '-n', '-r', file, '-Y', filter, '-T', 'fields', '-E', `occurrence=${occurrence}`, ...fields.flatMap((f) => ['-e', f])];
  const r = await run(argv, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`tshark failed (code ${r.code}): ${r.stderr.trim().slice(-300)}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t'));
}

/** The VSIDs of a tenant's routing domain. */
const tenantVsids = (t: Tenant): number[] => [...new Set(CUSTOMER_ROUTES.filter((r) => r.tenant === t).map((r) => r.vsid))];

/**
 * The guest's frames on the underlay: every NVGRE packet whose inner frame
 * is to its MAC carries its VSID and its host's PA as the outer
 * destination; every one from its MAC its host's PA as the outer source
 * and the destination's VSID, one of its routing domain's; some went each way.
 */
async function guestOnTheWire(file: string, v: QemuVmSpec): Promise<string> {
  const pa = PROVIDER_ADDRESSES[v.host].address;
  const domain = tenantVsids(v.tenant);
  const filter = `gre && eth.addr == ${v.mac}`;
  const outer = await tsharkFields(file, filter, ['frame.number', 'ip.src', 'ip.dst', 'gre.key'], 'f');
  const inner = await tsharkFields(file, filter, ['eth.src', 'eth.dst'], 'l');
  if (outer.length !== inner.length) throw new Error(`tshark gave ${outer.length} outer and ${inner.length} inner rows`);
  let to = 0;
  let from = 0;
  const bad: string[] = [];
  outer.forEach(([frame, src, dst, key], i) => {
    const [isrc, idst] = inner[i]!;
    const vsid = Number(key) >>> 8;
    const wrong = (idst === v.mac && (vsid !== v.vsid || dst !== pa)) || (isrc === v.mac && (!domain.includes(vsid) || src !== pa));
    if (wrong) bad.push(`frame ${frame}: ${src} -> ${dst} VSID ${vsid}, inner ${isrc} -> ${idst}`);
    if (idst === v.mac) to++;
    if (isrc === v.mac) from++;
  });
  if (bad.length) throw new Error(`${bad.length} packets: ${bad.slice(0, 3).join('; ')}`);
  if (!to || !from) throw new Error(`${to} packets to it, ${from} from it`);
  return `${to} packets to it, ${from} from it`;
}

/**
 * Host 2's PA is on VLAN 100 and the underlay switch's port to it a trunk
 * port: every frame on that port carries the tag (the outer header's), none
 * on Host 1's; NVGRE crossed both.
 */
async function checkVlanTags(c: Checks, files: Record<HostName, string>): Promise<void> {
  const { host, id } = LAB_VARIANT.vlan;
  for (const h of VLAN_PORTS) {
    const tagged = h === host;
    const what = tagged ? `every frame on ${underlayPort(h)} carries VLAN ${id}` : `no frame on ${underlayPort(h)} carries a VLAN tag`;
    await c.check(`${what} (outer 802.1Q header; NVGRE included)`, async () => {
      const rows = await tsharkFields(files[h], 'frame', ['frame.number', 'vlan.id', 'gre.key'], 'f');
      const wrong = rows.filter(([, vid]) => (tagged ? vid !== String(id) : vid !== ''));
      if (wrong.length) throw new Error(`${wrong.length} of ${rows.length} frames, e.g. ${wrong.slice(0, 3).map(([f, vid]) => `frame ${f} vlan ${vid || 'none'}`).join(', ')}`);
      const gre = rows.filter(([, , key]) => key !== '').length;
      if (!gre) throw new Error(`${rows.length} frames, no NVGRE among them`);
      return `${rows.length} frames, ${gre} NVGRE`;
    });
  }
}

const isEntry = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isEntry) {
  process.chdir(repoRoot());
  main().then(
    (code) => {
      process.exitCode = code;
      setTimeout(() => process.exit(code), 2000).unref();
    },
    (e) => {
      console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
      process.exit(2);
    },
  );
}
