// The nvgred lab: `make lab` runs `node dist/lab/run.js`.
//
// 1. preflight: delete namespaces a crashed run left (this prefix only),
//    check the lab configs against the plan (and nvgred's validator if built);
// 2. topology: namespaces, underlay bridge, MT-GW ↔ server link; capture on
//    the underlay bridge into lab/out/underlay.pcap;
// 3. daemons (skipped with --topology-only): one nvgred per host namespace,
//    wait for "ready", configure the VMs on their TAPs;
// 4. the checks of shared/spec/hnv-dataplane.md, and tenant isolation;
// 5. stop the daemons (exit 0, TAPs and PAs gone), stop the capture, check
//    the NVGRE on the wire with tshark;
// 6. tear everything down; exit non-zero on any failure.
//
// Options: --prefix P (default nvlab-), --out DIR (default lab/out),
// --topology-only, --daemon-argv '["node","dist/src/daemon/main.js"]'
// (or NVGRED_LAB_DAEMON_ARGV), --ready-timeout MS, --verbose.

import { existsSync, mkdirSync } from 'node:fs';
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
  scrapeMetrics,
  waitFor,
  withTimeout,
} from './netns.js';
import { analyzeNvgrePcap, checkDissector, tsharkHints, type PcapReport } from './pcap.js';
import {
  type Daemon,
  HOSTS,
  LAB_VSIDS,
  MTGW_EXTERNAL,
  PROVIDER_ADDRESSES,
  SERVER,
  UNDERLAY_BRIDGE,
  UNDERLAY_IF,
  UNDERLAY_NS,
  VMS,
  type VmSpec,
  buildTopology,
  checkConfigAgainstTopology,
  configPath,
  configureVms,
  defaultOutDir,
  hostPaAddrs,
  loadConfig,
  repoRoot,
  startDaemons,
  stopDaemons,
  validateWithDaemon,
  vm,
} from './topology.js';

// ---------------------------------------------------------------------------
// Arguments

interface Args {
  prefix: string;
  outDir: string;
  topologyOnly: boolean;
  daemonArgv?: string[];
  readyTimeoutMs: number;
  verbose: boolean;
}

const USAGE = `usage: node dist/lab/run.js [--prefix nvlab-] [--out lab/out] [--topology-only]
       [--daemon-argv '["node","dist/src/daemon/main.js"]'] [--ready-timeout 30000] [--verbose]`;

function parseArgs(argv: string[]): Args {
  const a: Args = { prefix: DEFAULT_PREFIX, outDir: defaultOutDir(), topologyOnly: false, readyTimeoutMs: 30_000, verbose: false };
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
  let capture: Capture | undefined;
  let daemons: Daemon[] = [];
  let daemonPhase = false;

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

    // ------------------------------------------------------------ topology
    c.section('topology');
    await c.must('build the namespaces and links', async () => {
      await buildTopology(lab);
      return `${lab.namespaces().length} namespaces: ${lab.namespaces().join(' ')}`;
    });
    await c.must(`capture on ${UNDERLAY_NS}:${UNDERLAY_BRIDGE}`, async () => {
      capture = await lab.capture(UNDERLAY_NS, UNDERLAY_BRIDGE, pcapFile);
      return `dumpcap pid ${capture.pid} -> ${rel(pcapFile)}`;
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
      // ------------------------------------------------------------ daemons
      c.section('daemons');
      daemonPhase = true;
      await c.must('nvgred starts on every host and reports ready', async () => {
        daemons = await startDaemons(lab, {
          daemonArgv: args.daemonArgv,
          logDir: args.outDir,
          readyTimeoutMs: args.readyTimeoutMs,
        });
        return daemons.map((d) => `${d.host} pid ${d.proc.pid} (log ${rel(d.logFile)})`).join(', ');
      }, args.readyTimeoutMs + 30_000);
      await c.check('each host has its PA on eth1', async () => {
        const got = await Promise.all(
          HOSTS.map(async (h) => {
            const want = `${PROVIDER_ADDRESSES[h].address}/${PROVIDER_ADDRESSES[h].prefixLength}`;
            await waitFor(async () => (await hostPaAddrs(lab, h)).includes(want), 5000, { what: `${want} on ${h}:${UNDERLAY_IF}` });
            return `${h} ${want}`;
          }),
        );
        return got.join(', ');
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
      await c.check('PAs are gone from eth1', async () => {
        const left: string[] = [];
        for (const h of HOSTS) {
          const a = await hostPaAddrs(lab, h);
          if (a.length) left.push(`${h}:${UNDERLAY_IF} ${a.join(' ')}`);
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
        const r = await lab.stop(cap, { timeoutMs: 5000 });
        if (r.code !== 0) throw new Error(`dumpcap ${fmtExit(r)}; ${cap.tail(5)}`);
        return rel(pcapFile);
      });
    }
    if (daemonPhase && existsSync(pcapFile)) await checkPcap(c, pcapFile);
    else console.log('no NVGRE traffic expected without daemons');
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
  console.log(`\nlab: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed ? 1 : 0;
}

async function checkPcap(c: Checks, file: string): Promise<void> {
  let rep: PcapReport | undefined;
  await c.check('tshark reads the capture', async () => {
    rep = await analyzeNvgrePcap(file, {
      vsids: LAB_VSIDS,
      providerAddresses: HOSTS.map((h) => PROVIDER_ADDRESSES[h].address),
      vms: VMS.map((v) => ({ name: v.role, mac: v.mac, vsid: v.vsid, pa: PROVIDER_ADDRESSES[v.host].address })),
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
