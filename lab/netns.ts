// Network-namespace lab library: used by the lab runner (lab/run.ts) and by
// vitest integration tests.
//
// Rules this file keeps (the machine's):
// - every command is spawned from an argv array, never through a shell;
// - every wait is bounded in time;
// - every namespace the lab creates starts with the lab's prefix, and every
//   device it creates is created inside one of those namespaces (never in the
//   root namespace, not even transiently);
// - processes are stopped by PID only (the PIDs the lab spawned, or the PIDs
//   `ip netns pids` reports inside the lab's own namespaces);
// - teardown() attempts every step and reports failures instead of throwing.

import { spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, type WriteStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_PREFIX = 'nvlab-';

/** Where `ip netns add` keeps its named namespaces. */
const NETNS_RUN_DIR = '/run/netns';

let root: string | undefined;
/** The repository root: the nearest ancestor of this module with nvgred's package.json. */
export function repoRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'nvgred') return (root = dir);
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('repository root (package.json of nvgred) not found');
    dir = up;
  }
}

// ---------------------------------------------------------------------------
// Commands

export interface RunOptions {
  /** Kill the command (SIGTERM, then SIGKILL 1 s later) after this long. Default 10 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw a CommandError unless the command exits 0 (and did not time out). */
  check?: boolean;
  /** Stop buffering output past this many bytes per stream. Default 32 MiB. */
  maxOutputBytes?: number;
}

export interface RunResult {
  argv: string[];
  /** Exit code; null when killed by a signal; 127 when the program could not be started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

export class CommandError extends Error {
  constructor(readonly result: RunResult) {
    const why = result.timedOut
      ? `timed out after ${result.durationMs} ms`
      : result.signal
        ? `killed by ${result.signal}`
        : `exit code ${result.code}`;
    const err = result.stderr.trim() || result.stdout.trim();
    super(`command failed (${why}): ${fmtArgv(result.argv)}${err ? `\n  ${err.split('\n').slice(-8).join('\n  ')}` : ''}`);
    this.name = 'CommandError';
  }
}

export function fmtArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** C locale so that tool output is parseable. */
function cEnv(env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...(env ?? process.env), LC_ALL: 'C', LANG: 'C' };
}

// Commands run() has in flight, and namespaces being torn down (no new
// command may enter them: closes the race between a probe starting and its
// namespace being deleted under it).
const activeCommands = new Map<ChildProcess, string[]>();
const closedNamespaces = new Set<string>();

/** The namespace an `ip netns exec <ns> ...` or `ip -n <ns> ...` argv enters. */
function targetNamespace(argv: readonly string[]): string | undefined {
  if (argv[0] !== 'ip') return undefined;
  if (argv[1] === 'netns' && argv[2] === 'exec') return argv[3];
  if (argv[1] === '-n') return argv[2];
  return undefined;
}

/** SIGKILL (by PID) every run() command in flight, or only those entering one of `namespaces`. */
export function killCommands(namespaces?: ReadonlySet<string>): number {
  let n = 0;
  for (const [child, argv] of activeCommands) {
    const ns = targetNamespace(argv);
    if (namespaces && (ns === undefined || !namespaces.has(ns))) continue;
    if (child.kill('SIGKILL')) n++;
  }
  return n;
}

/** Run a program from an argv array (no shell), bounded in time. Never rejects unless `check` is set. */
export function run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  if (cmd.length === 0) throw new Error('run: empty argv');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const max = opts.maxOutputBytes ?? 32 * 1024 * 1024;
  const started = Date.now();
  return new Promise<RunResult>((resolve, reject) => {
    let child: ChildProcess;
    const finish = (r: RunResult): void => {
      if (opts.check && (r.code !== 0 || r.timedOut)) reject(new CommandError(r));
      else resolve(r);
    };
    const ns = targetNamespace(cmd);
    if (ns !== undefined && closedNamespaces.has(ns)) {
      finish({ argv: cmd, code: 125, signal: null, stdout: '', stderr: `namespace ${ns} is being torn down`, timedOut: false, durationMs: 0 });
      return;
    }
    try {
      child = spawnChild(cmd[0]!, cmd.slice(1), {
        stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        env: cEnv(opts.env),
        cwd: opts.cwd,
      });
    } catch (e) {
      finish({ argv: cmd, code: 127, signal: null, stdout: '', stderr: String(e), timedOut: false, durationMs: 0 });
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    child.stdout!.on('data', (b: Buffer) => {
      if (outLen < max) out.push(b);
      outLen += b.length;
    });
    child.stderr!.on('data', (b: Buffer) => {
      if (errLen < max) err.push(b);
      errLen += b.length;
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(opts.input);
    }
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 1000);
    }, timeoutMs);
    let spawnError: Error | undefined;
    activeCommands.set(child, cmd);
    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('close', (code, signal) => {
      activeCommands.delete(child);
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      finish({
        argv: cmd,
        code: spawnError && code === null && signal === null ? 127 : code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (spawnError ? String(spawnError) : ''),
        timedOut,
        durationMs: Date.now() - started,
      });
    });
  });
}

/** run() that throws a CommandError unless the command exits 0. */
export function runOk(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(cmd, { ...opts, check: true });
}

/** `ip netns exec <ns> argv...` */
export function nsExec(ns: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(['ip', 'netns', 'exec', ns, ...argv], opts);
}

/** `ip -n <ns> args...` (iproute2 enters the namespace itself). */
export function ipIn(ns: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(['ip', '-n', ns, ...args], opts);
}

// ---------------------------------------------------------------------------
// Small helpers

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** Race a promise against a timer. */
export async function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new TimeoutError(`${what}: timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    if (t) clearTimeout(t);
  }
}

export interface WaitForOptions {
  intervalMs?: number;
  /** What is being waited for, for the timeout message. */
  what?: string;
}

/**
 * Poll `fn` until it returns a truthy value (returned) or `timeoutMs` passes
 * (throws a TimeoutError naming `what` and the last error `fn` threw).
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs: number,
  opts: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const interval = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    const left = deadline - Date.now();
    try {
      const v = await withTimeout(Promise.resolve().then(fn), Math.max(left, 1), opts.what ?? 'condition');
      if (v) return v as NonNullable<T>;
    } catch (e) {
      // A last call cut short by the deadline says less than the error before it.
      if (!(e instanceof TimeoutError && lastErr !== undefined && Date.now() >= deadline)) lastErr = e;
    }
    if (Date.now() >= deadline) {
      const tail = lastErr ? ` (last error: ${lastErr instanceof Error ? lastErr.message : String(lastErr)})` : '';
      throw new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${tail}`);
    }
    await sleep(Math.min(interval, Math.max(deadline - Date.now(), 0)));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function pidComm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** What a process uses, from /proc (its own threads included). */
export interface ProcUsage {
  /** Resident memory (VmRSS). */
  rssKiB: number;
  /** Its anonymous part (RssAnon): the heaps, not the mapped files. */
  anonKiB: number;
  threads: number;
  /** Open file descriptors. */
  fds: number;
  /** User + system CPU time since it started. */
  cpuSeconds: number;
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on every Linux port nvgred runs on). */
const USER_HZ = 100;

/** A process's memory, threads, descriptors and CPU time (throws if it is gone). */
export function procUsage(pid: number): ProcUsage {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  // The fields after the command name, which may hold spaces and parentheses.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15; `rest` starts at field 3.
  const ticks = Number(rest[11]) + Number(rest[12]);
  return {
    rssKiB: field('VmRSS'),
    anonKiB: field('RssAnon'),
    threads: field('Threads'),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    cpuSeconds: ticks / USER_HZ,
  };
}

/**
 * A process's open descriptors by kind: `socket`, `pipe`, `anon_inode:<what>`
 * (eventfd, epoll, ...), a device path (`/dev/net/tun`), or `file`.
 */
export function fdKinds(pid: number): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed while we looked
    }
    const kind = /^(socket|pipe):/.exec(target)?.[1] ?? (target.startsWith('anon_inode:') ? target.replace(/^anon_inode:\[?([^\]]*)\]?$/, 'anon_inode:$1') : target.startsWith('/dev/') ? target : 'file');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

/** Names of all named network namespaces (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const r = await run(['ip', '-j', 'netns', 'list']);
  if (r.code === 0) {
    const txt = r.stdout.trim();
    if (!txt) return [];
    try {
      return (JSON.parse(txt) as { name: string }[]).map((n) => n.name);
    } catch {
      /* fall through */
    }
  }
  try {
    return readdirSync(NETNS_RUN_DIR);
  } catch {
    return [];
  }
}

export function namespaceExists(ns: string): boolean {
  return existsSync(`${NETNS_RUN_DIR}/${ns}`);
}

/** PIDs of the processes inside a named namespace (`ip netns pids`). */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', ns], { timeoutMs: 5000 });
  if (r.code !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid);
}

/**
 * SIGTERM the given PIDs, wait up to `graceMs`, SIGKILL the survivors, wait
 * again. Returns the PIDs that still live at the end.
 */
export async function killPids(pids: number[], graceMs = 2000): Promise<number[]> {
  const targets = pids.filter((p) => p > 1 && p !== process.pid);
  for (const p of targets) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const alive = (): number[] => targets.filter(pidAlive);
  const deadline = Date.now() + graceMs;
  while (alive().length && Date.now() < deadline) await sleep(50);
  for (const p of alive()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const d2 = Date.now() + 2000;
  while (alive().length && Date.now() < d2) await sleep(50);
  return alive();
}

/**
 * True when `name` is a namespace a lab with this exact prefix would create:
 * the prefix followed by a dash-free role name. So cleaning `nvlab-` never
 * touches a test lab's `nvlab-t1-host1`.
 */
export function isLabNamespace(prefix: string, name: string): boolean {
  return name.startsWith(prefix) && /^[A-Za-z0-9_]+$/.test(name.slice(prefix.length));
}

// ---------------------------------------------------------------------------
// Link state

export interface LinkStats {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  rxDropped: number;
  txDropped: number;
}

/** rx/tx counters of a link (`ip -s -j link show`). For a TAP, rx = frames its owner wrote into it. */
export async function linkStats(ns: string, ifname: string): Promise<LinkStats> {
  const r = await ipIn(ns, ['-s', '-j', 'link', 'show', 'dev', ifname], { check: true });
  const j = JSON.parse(r.stdout) as {
    stats64?: { rx: Record<string, number>; tx: Record<string, number> };
    stats?: { rx: Record<string, number>; tx: Record<string, number> };
  }[];
  const s = j[0]?.stats64 ?? j[0]?.stats;
  if (!s) throw new Error(`no statistics for ${ns}:${ifname}`);
  return {
    rxPackets: s.rx['packets'] ?? 0,
    txPackets: s.tx['packets'] ?? 0,
    rxBytes: s.rx['bytes'] ?? 0,
    txBytes: s.tx['bytes'] ?? 0,
    rxDropped: s.rx['dropped'] ?? 0,
    txDropped: s.tx['dropped'] ?? 0,
  };
}

export interface LinkInfo {
  ifname: string;
  operstate: string;
  flags: string[];
  address?: string;
  mtu?: number;
}

/** Links of a namespace (`ip -j link show`). */
export async function listLinks(ns: string): Promise<LinkInfo[]> {
  const r = await ipIn(ns, ['-j', 'link', 'show'], { check: true });
  return (JSON.parse(r.stdout || '[]') as LinkInfo[]).map((l) => ({
    ifname: l.ifname,
    operstate: l.operstate,
    flags: l.flags ?? [],
    address: l.address,
    mtu: l.mtu,
  }));
}

export async function linkExists(ns: string, ifname: string): Promise<boolean> {
  const r = await ipIn(ns, ['link', 'show', 'dev', ifname]);
  return r.code === 0;
}

/** IPv4 addresses (`a.b.c.d/len`) on an interface; [] when it has none or does not exist. */
export async function ipv4Addrs(ns: string, ifname: string): Promise<string[]> {
  const r = await ipIn(ns, ['-j', '-4', 'addr', 'show', 'dev', ifname]);
  if (r.code !== 0) return [];
  const j = JSON.parse(r.stdout || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
  return (j[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`);
}

/** Global IPv6 addresses (`addr/len`) on an interface; [] when it has none or does not exist. */
export async function ipv6Addrs(ns: string, ifname: string): Promise<string[]> {
  const r = await ipIn(ns, ['-j', '-6', 'addr', 'show', 'dev', ifname]);
  if (r.code !== 0) return [];
  const j = JSON.parse(r.stdout || '[]') as { addr_info?: { local?: string; prefixlen?: number; scope?: string }[] }[];
  // (iproute2 may list lifetime-only entries without `local`.)
  return (j[0]?.addr_info ?? []).filter((a) => a.local && a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`);
}

/**
 * The path MTU the kernel of `ns` has cached toward `dst` (`ip route get`
 * shows `mtu N` once an ICMP "fragmentation needed" / "packet too big" was
 * accepted), or null when none is cached.
 */
export async function cachedPathMtu(ns: string, dst: string): Promise<number | null> {
  const r = await ipIn(ns, ['route', 'get', dst], { check: true });
  const m = /\bmtu (\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : null;
}

// ---------------------------------------------------------------------------
// Probes: ping (ICMP echo) and inject (raw GRE), implemented by lab/probe.ts
// with the raw-socket addon so that the lab needs no iputils. dist/lab/probe.js
// runs inside the namespace (`ip netns exec`), opens a raw socket and prints
// one JSON line. ping sends `count` echo requests `intervalMs` apart and waits
// `timeoutMs` after the last one (like `ping -c count -i interval -W timeout`).

export interface PingOptions {
  count?: number;
  intervalMs?: number;
  /** How long to wait for replies after the last request (ping -W). */
  timeoutMs?: number;
  /** ICMP payload bytes (ping -s). Default 56. */
  size?: number;
}

export interface PingResult {
  ns: string;
  dst: string;
  transmitted: number;
  received: number;
  /** Mean round-trip time of the replies, or null without replies. */
  rttAvgMs: number | null;
  /** ICMP errors (unreachable, time exceeded) about our requests, and send errors. */
  errors: number;
  notes: string[];
}

interface ProbeOutput {
  fatal?: string;
  [field: string]: unknown;
}

/** Run `dist/lab/probe.js <args>` inside `ns`; its JSON result (which may be a `fatal`). Throws if it printed none. */
async function runProbe(ns: string, args: string[], timeoutMs: number, what: string): Promise<ProbeOutput> {
  const probe = join(repoRoot(), 'dist', 'lab', 'probe.js');
  if (!existsSync(probe)) throw new Error(`${what}: ${probe} is missing: run make build`);
  const r = await nsExec(ns, [process.execPath, probe, ...args], { timeoutMs });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    const j: unknown = JSON.parse(line);
    if (j !== null && typeof j === 'object' && !Array.isArray(j)) return j as ProbeOutput;
  } catch {
    /* reported below */
  }
  throw new Error(`${what}: probe failed (${r.timedOut ? 'timed out' : `exit ${r.code}`}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
}

/**
 * Send ICMP echo requests from namespace `ns` to `dst` and count the replies.
 * Throws if the probe itself could not run (so a broken tool never passes
 * for "unreachable" in an isolation check).
 */
export async function ping(ns: string, dst: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 3;
  const intervalMs = opts.intervalMs ?? 200;
  const timeoutMs = opts.timeoutMs ?? 1000;
  const size = opts.size ?? 56;
  const what = `ping ${ns} -> ${dst}`;
  const args = ['ping', dst, '--count', String(count), '--interval', String(intervalMs), '--wait', String(timeoutMs), '--size', String(size)];
  const j = (await runProbe(ns, args, count * intervalMs + timeoutMs + 10_000, what)) as ProbeOutput & {
    transmitted?: number;
    received?: number;
    rttAvgMs?: number | null;
    errors?: number;
    notes?: string[];
  };
  if (j.fatal !== undefined) throw new Error(`${what}: ${j.fatal}`);
  return {
    ns,
    dst,
    transmitted: j.transmitted ?? 0,
    received: j.received ?? 0,
    rttAvgMs: j.rttAvgMs ?? null,
    errors: j.errors ?? 0,
    notes: j.notes ?? [],
  };
}

export interface InjectOptions {
  /** Send the whole list this many times. Default 1. */
  count?: number;
  /** Between two sends. Default 0. */
  intervalMs?: number;
}

export interface InjectResult {
  sent: number;
  /** Failed sends (and socket errors). */
  errors: number;
  notes: string[];
}

/**
 * Send complete IPv4 packets (header included, e.g. lab/packets.ts's nvgre())
 * from namespace `ns` to `dst` through a raw GRE socket with IP_HDRINCL: the
 * kernel routes them by `dst` and rewrites the IP checksum and total length
 * (and a 0.0.0.0 source); the list is sent `count` times, `intervalMs` between
 * sends. Throws if the probe could not run or open its socket.
 */
export async function inject(ns: string, dst: string, packets: Buffer[], opts: InjectOptions = {}): Promise<InjectResult> {
  const count = opts.count ?? 1;
  const intervalMs = opts.intervalMs ?? 0;
  const what = `inject ${ns} -> ${dst}`;
  if (!packets.length) throw new Error(`${what}: no packets`);
  const args = ['inject', dst, ...packets.flatMap((p) => ['--hex', p.toString('hex')]), '--count', String(count), '--interval', String(intervalMs)];
  const j = (await runProbe(ns, args, count * packets.length * intervalMs + 10_000, what)) as ProbeOutput & Partial<InjectResult>;
  if (j.fatal !== undefined) throw new Error(`${what}: ${j.fatal}`);
  return { sent: j.sent ?? 0, errors: j.errors ?? 0, notes: j.notes ?? [] };
}

/**
 * Send Ethernet frames (any bytes at all: what a VM can put on its adapter)
 * on interface `ifname` of namespace `ns`: the list `count` times, or over
 * and over for `seconds`. Throws if the probe could not run or open the interface.
 */
export async function sendFrames(ns: string, ifname: string, frames: Buffer[], opts: { count?: number; seconds?: number } = {}): Promise<InjectResult> {
  const what = `frames ${ns}/${ifname}`;
  const args = ['frames', ifname, ...frames.flatMap((f) => ['--hex', f.toString('hex')]), '--count', String(opts.count ?? 1), '--seconds', String(opts.seconds ?? 0)];
  const j = (await runProbe(ns, args, (opts.seconds ?? 0) * 1000 + 30_000, what)) as ProbeOutput & Partial<InjectResult>;
  if (j.fatal !== undefined) throw new Error(`${what}: ${j.fatal}`);
  return { sent: j.sent ?? 0, errors: j.errors ?? 0, notes: j.notes ?? [] };
}

/** One Prometheus scrape: series (`name{labels}` as exposed) → value. */
export type Scrape = Map<string, number>;

/** Parse the Prometheus text format (comments skipped; labels kept as written). */
export function parsePrometheus(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

/** The sum of every series of metric `name` whose labels include `labels` (e.g. `vsid="6000"`). */
export function metricSum(scrape: Scrape, name: string, ...labels: string[]): number {
  let total = 0;
  for (const [series, value] of scrape) {
    const brace = series.indexOf('{');
    if ((brace < 0 ? series : series.slice(0, brace)) !== name) continue;
    if (labels.every((l) => series.includes(l))) total += value;
  }
  return total;
}

/** How much a metric (all its series, or those whose labels include `labels`) grew between two scrapes. */
export function metricDelta(before: Scrape, after: Scrape, name: string, ...labels: string[]): number {
  return metricSum(after, name, ...labels) - metricSum(before, name, ...labels);
}

/**
 * GET `http://<listen>/metrics` from inside namespace `ns` and parse it.
 * `curl`: with curl instead of the probe (a node process): far cheaper on a
 * loaded machine, for scrapes every few seconds.
 */
export async function scrapeMetrics(ns: string, listen = '127.0.0.1:9470', opts: { curl?: boolean } = {}): Promise<Scrape> {
  const url = `http://${listen}/metrics`;
  if (opts.curl) {
    const r = await nsExec(ns, ['curl', '-sSf', '--max-time', '10', url], { timeoutMs: 15_000 });
    if (r.code !== 0) throw new Error(`scrape ${ns} ${url}: curl exit ${r.code}: ${r.stderr.trim()}`);
    return parsePrometheus(r.stdout);
  }
  const j = (await runProbe(ns, ['get', url], 15_000, `scrape ${ns} ${url}`)) as ProbeOutput & { status?: number; body?: string };
  if (j.fatal !== undefined || j.status !== 200) throw new Error(`scrape ${ns} ${url}: ${j.fatal ?? `HTTP ${j.status}`}`);
  return parsePrometheus(j.body ?? '');
}

export function fmtPing(p: PingResult): string {
  const rtt = p.rttAvgMs === null ? '' : `, rtt avg ${p.rttAvgMs.toFixed(2)} ms`;
  const errs = p.errors ? `, ${p.errors} errors${p.notes.length ? ` (${p.notes.join('; ')})` : ''}` : '';
  return `${p.transmitted} sent, ${p.received} received${rtt}${errs}`;
}

// ---------------------------------------------------------------------------
// iputils ping: what a VM's user sees, including the ICMP errors about its
// packets ("Frag needed and DF set (mtu = 1458)", "Packet too big: mtu=1458",
// "local error: message too long, mtu=1458" once the path MTU is cached).

export interface IputilsPingOptions {
  count?: number;
  /** Between requests. Default 200 ms. */
  intervalMs?: number;
  /** ping -W: seconds to wait for each reply. Default 1. */
  waitS?: number;
  /** ICMP payload bytes (ping -s). Default 56. */
  size?: number;
  /** ping -M: `do` sets DF (IPv4) / forbids local fragmentation (IPv6); `dont` clears DF. Default: ping's. */
  pmtudisc?: 'do' | 'dont' | 'want' | 'probe';
}

export interface IputilsPingResult {
  ns: string;
  dst: string;
  /** ping's exit code (0: a reply; 1: none; 2: other error). */
  code: number | null;
  transmitted: number;
  received: number;
  /** The "+N errors" of ping's summary. */
  errors: number;
  /** Every `mtu = N` / `mtu=N` / `mtu: N` ping printed (ICMP errors and local EMSGSIZE), in order. */
  mtus: number[];
  /** Lines about errors (ICMP errors received, local errors). */
  errorLines: string[];
  output: string;
}

/** Run iputils `ping -n` inside `ns` and parse its report. Throws if ping could not run at all. */
export async function iputilsPing(ns: string, dst: string, opts: IputilsPingOptions = {}): Promise<IputilsPingResult> {
  const count = opts.count ?? 3;
  const argv = ['ping', '-n', '-c', String(count), '-i', String((opts.intervalMs ?? 200) / 1000), '-W', String(opts.waitS ?? 1), '-s', String(opts.size ?? 56)];
  if (opts.pmtudisc) argv.push('-M', opts.pmtudisc);
  argv.push(dst);
  const r = await nsExec(ns, argv, { timeoutMs: count * (opts.intervalMs ?? 200) + (opts.waitS ?? 1) * 1000 + 10_000 });
  const output = `${r.stdout}${r.stderr}`;
  const summary = /(\d+) packets transmitted, (\d+) received(?:, \+(\d+) errors)?/.exec(output);
  if (!summary) throw new Error(`ping ${ns} -> ${dst}: no summary (exit ${r.code}): ${output.trim().slice(-500)}`);
  const lines = output.split('\n');
  return {
    ns,
    dst,
    code: r.code,
    transmitted: Number(summary[1]),
    received: Number(summary[2]),
    errors: Number(summary[3] ?? 0),
    mtus: [...output.matchAll(/mtu ?[=:] ?(\d+)/g)].map((m) => Number(m[1])),
    errorLines: lines.filter((l) => /^From |local error|too big|Frag needed|Unreachable|exceeded/i.test(l)),
    output,
  };
}

// ---------------------------------------------------------------------------
// TCP transfers between namespaces, verified end to end (dist/lab/probe.js
// tcp-recv / tcp-send: random bytes, SHA-256 on both sides).

export interface TcpTransferOptions {
  port?: number;
  /** Give up after this long. Default 120 s. */
  timeoutMs?: number;
}

export interface TcpEnd {
  bytes: number;
  sha256: string;
  /** Sender: connect to close; receiver: first byte to end of stream. */
  ms: number;
}

export interface TcpTransferResult {
  sent: TcpEnd & { local: string };
  received: TcpEnd & { peer: string };
  /** Receiver's bytes over its time, in Mbit/s. */
  mbitPerS: number;
}

function probePath(what: string): string {
  const probe = join(repoRoot(), 'dist', 'lab', 'probe.js');
  if (!existsSync(probe)) throw new Error(`${what}: ${probe} is missing: run make build`);
  return probe;
}

export interface TcpReceiver {
  /** What the receiver counted and hashed once its one connection ended; throws if it failed or timed out. */
  result(): Promise<TcpEnd & { peer: string }>;
  /** Stop the receiver if it still runs. */
  stop(): Promise<void>;
}

/**
 * A receiver of one TCP stream (`probe.js tcp-recv`, a lab process) on
 * `dst:port` in namespace `to`, listening when this resolves. It gives up
 * after `timeoutMs` (default 120 s).
 */
export async function tcpReceiver(lab: Lab, to: string, dst: string, opts: TcpTransferOptions = {}): Promise<TcpReceiver> {
  const port = opts.port ?? 5201;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const what = `tcp receiver in ${lab.ns(to)} [${dst}]:${port}`;
  const recv = await lab.spawn(to, [process.execPath, probePath(what), 'tcp-recv', dst, '--port', String(port), '--wait', String(timeoutMs)]);
  const stop = async (): Promise<void> => {
    if (recv.running) await lab.stop(recv, { timeoutMs: 1000 });
  };
  try {
    await recv.waitForLine((l) => l.includes('"listening"'), 10_000, { what: `${what}: listening` });
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    stop,
    async result() {
      await withTimeout(recv.exited, timeoutMs + 15_000, `${what}: exit`);
      const line = recv
        .tail(5)
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop();
      const received = line ? (JSON.parse(line) as ProbeOutput) : { fatal: 'no result line' };
      if (received.fatal !== undefined) throw new Error(`${what}: ${received.fatal}`);
      return received as unknown as TcpEnd & { peer: string };
    },
  };
}

/** Send `bytes` random bytes over one TCP connection from namespace `ns` to dst:port (`probe.js tcp-send`). */
export async function tcpSend(ns: string, dst: string, bytes: number, opts: TcpTransferOptions = {}): Promise<TcpEnd & { local: string }> {
  const port = opts.port ?? 5201;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const what = `tcp sender in ${ns} -> [${dst}]:${port}`;
  probePath(what);
  const sender = await runProbe(ns, ['tcp-send', dst, '--port', String(port), '--bytes', String(bytes), '--wait', String(timeoutMs)], timeoutMs + 10_000, what);
  if (sender.fatal !== undefined) throw new Error(`${what}: ${sender.fatal}`);
  return sender as unknown as TcpEnd & { local: string };
}

/**
 * Send `bytes` random bytes over one TCP connection from namespace `from` to
 * `dst` (an address of namespace `to`) and return what each end counted and
 * hashed. The receiver is a lab process (stopped at teardown if it hangs).
 * Throws when either end fails or times out.
 */
export async function tcpTransfer(lab: Lab, from: string, to: string, dst: string, bytes: number, opts: TcpTransferOptions = {}): Promise<TcpTransferResult> {
  const recv = await tcpReceiver(lab, to, dst, opts);
  try {
    const sent = await tcpSend(lab.ns(from), dst, bytes, opts);
    const r = await recv.result();
    return { sent, received: r, mbitPerS: r.ms > 0 ? (r.bytes * 8) / (r.ms * 1000) : 0 };
  } finally {
    await recv.stop();
  }
}

// ---------------------------------------------------------------------------
// Processes

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StopResult extends ExitInfo {
  /** SIGKILL was needed (the process outlived the stop timeout). */
  escalated: boolean;
  /** Still alive even after SIGKILL (should not happen). */
  stillRunning: boolean;
}

type LineListener = (line: string, stream: 'stdout' | 'stderr') => void;

/** A child process spawned inside a namespace, tracked by PID. */
export class LabProcess {
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | null = null;
  /** Resolves once the log file is flushed and closed (immediately without one). */
  readonly logClosed: Promise<void>;
  #tail: string[] = [];
  #partial = { stdout: '', stderr: '' };
  #listeners = new Set<LineListener>();

  constructor(
    readonly ns: string,
    readonly argv: string[],
    readonly child: ChildProcess,
    readonly logFile: string | undefined,
    log: WriteStream | undefined,
  ) {
    this.pid = child.pid!;
    const onData = (stream: 'stdout' | 'stderr') => (b: Buffer) => {
      log?.write(b);
      const text = this.#partial[stream] + b.toString('utf8');
      const lines = text.split('\n');
      this.#partial[stream] = lines.pop() ?? '';
      for (const l of lines) this.#line(l, stream);
    };
    child.stdout?.on('data', onData('stdout'));
    child.stderr?.on('data', onData('stderr'));
    child.on('error', () => undefined);
    const flush = (): void => {
      for (const s of ['stdout', 'stderr'] as const) {
        if (this.#partial[s]) this.#line(this.#partial[s], s);
        this.#partial[s] = '';
      }
    };
    // 'exit' (not 'close'): a grandchild holding the pipes must not hide the exit.
    this.exited = new Promise<ExitInfo>((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
    });
    log?.on('error', () => undefined);
    this.logClosed = new Promise<void>((resolve) => {
      child.on('close', () => {
        flush();
        if (!log) return resolve();
        log.on('close', () => resolve());
        log.end();
      });
    });
  }

  get running(): boolean {
    return this.exitInfo === null && this.child.exitCode === null && this.child.signalCode === null;
  }

  #line(line: string, stream: 'stdout' | 'stderr'): void {
    this.#tail.push(stream === 'stderr' ? `[stderr] ${line}` : line);
    if (this.#tail.length > 2000) this.#tail.splice(0, this.#tail.length - 2000);
    for (const l of this.#listeners) l(line, stream);
  }

  /** The last `n` lines of output (stderr lines marked). */
  tail(n = 40): string {
    return this.#tail.slice(-n).join('\n');
  }

  onLine(fn: LineListener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Resolve with the first output line (already seen or future) matching
   * `pred`; reject if the process exits first or after `timeoutMs`, with the
   * output tail in the message.
   */
  waitForLine(
    pred: (line: string) => boolean,
    timeoutMs: number,
    opts: { stream?: 'stdout' | 'stderr' | 'any'; what?: string } = {},
  ): Promise<string> {
    const stream = opts.stream ?? 'any';
    const what = opts.what ?? 'output line';
    const seen = this.#tail.find((l) => {
      const isErr = l.startsWith('[stderr] ');
      if (stream === 'stdout' && isErr) return false;
      if (stream === 'stderr' && !isErr) return false;
      return pred(isErr ? l.slice(9) : l);
    });
    if (seen !== undefined) return Promise.resolve(seen.startsWith('[stderr] ') ? seen.slice(9) : seen);
    return new Promise<string>((resolve, reject) => {
      let done = false;
      const cleanup = (): void => {
        done = true;
        off();
        clearTimeout(t);
      };
      const off = this.onLine((line, s) => {
        if (done || (stream !== 'any' && s !== stream) || !pred(line)) return;
        cleanup();
        resolve(line);
      });
      const t = setTimeout(() => {
        if (done) return;
        cleanup();
        reject(new TimeoutError(`${this.describe()}: no ${what} within ${timeoutMs} ms; last output:\n${this.tail(30)}`));
      }, timeoutMs);
      void this.exited.then((x) => {
        if (done) return;
        cleanup();
        reject(new Error(`${this.describe()} exited (${fmtExit(x)}) before printing ${what}; last output:\n${this.tail(30)}`));
      });
    });
  }

  describe(): string {
    return `pid ${this.pid} in ${this.ns} (${fmtArgv(this.argv).slice(0, 120)})`;
  }
}

export function fmtExit(x: ExitInfo): string {
  return x.signal ? `signal ${x.signal}` : `code ${x.code}`;
}

export interface SpawnOptions {
  /** stdout and stderr are both appended to this file (truncated first). */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface StopOptions {
  /** First signal. Default SIGTERM. */
  signal?: NodeJS.Signals;
  /** Wait this long for the exit before SIGKILL. Default 5 s. */
  timeoutMs?: number;
}

export interface Capture extends LabProcess {
  /** The pcap file being written. */
  readonly file: string;
}

export interface TeardownReport {
  ok: boolean;
  /** Everything that went wrong; teardown went on regardless. */
  errors: string[];
  /** What was done, for the log. */
  actions: string[];
}

export interface LabOptions {
  /** Progress messages (default: silent). */
  log?: (msg: string) => void;
  /** Disable IPv6 in every namespace created (default true: keeps links quiet). */
  disableIpv6?: boolean;
  /** Timeout of each setup command. Default 10 s. */
  commandTimeoutMs?: number;
}

export class LabClosedError extends Error {
  constructor() {
    super('lab is tearing down');
    this.name = 'LabClosedError';
  }
}

/**
 * A set of namespaces, links and processes, all torn down together.
 *
 * Namespace arguments may be given as a role (`host1`) or as the full name
 * (`nvlab-host1`): a name that does not start with the prefix gets it.
 */
export class Lab {
  readonly prefix: string;
  #namespaces: string[] = [];
  #procs: LabProcess[] = [];
  #deferred: { label: string; fn: () => unknown }[] = [];
  #pending = new Set<Promise<unknown>>();
  #closing = false;
  #teardown: Promise<TeardownReport> | undefined;
  readonly #log: (msg: string) => void;
  readonly #disableIpv6: boolean;
  readonly #timeout: number;

  constructor(prefix: string = DEFAULT_PREFIX, opts: LabOptions = {}) {
    if (!/^[A-Za-z0-9_-]{1,24}$/.test(prefix)) throw new Error(`bad lab prefix ${JSON.stringify(prefix)}`);
    this.prefix = prefix;
    this.#log = opts.log ?? (() => undefined);
    this.#disableIpv6 = opts.disableIpv6 ?? true;
    this.#timeout = opts.commandTimeoutMs ?? 10_000;
  }

  /** Full namespace name for a role (idempotent on full names). */
  ns(name: string): string {
    return name.startsWith(this.prefix) ? name : this.prefix + name;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /** Namespaces created so far, in creation order. */
  namespaces(): string[] {
    return [...this.#namespaces];
  }

  /** Processes spawned so far (running or not). */
  processes(): LabProcess[] {
    return [...this.#procs];
  }

  /** Track an operation so that teardown waits for it before deleting things. */
  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    const done = (): void => {
      this.#pending.delete(p);
    };
    p.then(done, done);
    return p;
  }

  #guard(): void {
    if (this.#closing) throw new LabClosedError();
  }

  /** Run a setup command (tracked; throws on failure). */
  exec(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    this.#guard();
    return this.#track(run(argv, { timeoutMs: this.#timeout, check: true, ...opts }));
  }

  /** `ip netns exec <ns> argv` (tracked; throws on failure unless check: false). */
  nsExec(ns: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec(['ip', 'netns', 'exec', this.ns(ns), ...argv], opts);
  }

  #ip(ns: string, args: string[]): Promise<RunResult> {
    return this.exec(['ip', '-n', this.ns(ns), ...args]);
  }

  /** Create a namespace (loopback up, IPv6 off unless disabled in options). Returns its full name. */
  async addNamespace(name: string): Promise<string> {
    this.#guard();
    const full = this.ns(name);
    if (!isLabNamespace(this.prefix, full)) {
      throw new Error(`namespace role ${JSON.stringify(name)} must be [A-Za-z0-9_]+ after the prefix ${this.prefix}`);
    }
    if (namespaceExists(full)) throw new Error(`namespace ${full} already exists (left by an earlier run? Lab.cleanStale('${this.prefix}'))`);
    await this.exec(['ip', 'netns', 'add', full]);
    this.#namespaces.push(full);
    this.#log(`netns ${full}`);
    await this.#ip(full, ['link', 'set', 'lo', 'up']);
    if (this.#disableIpv6) {
      // Best effort: a kernel without IPv6 has no such keys.
      await this.nsExec(full, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], {
        check: false,
      });
    }
    return full;
  }

  /** A veth pair with one end in each namespace, created in place (never in the root namespace). Both ends stay down. */
  async veth(nsA: string, ifA: string, nsB: string, ifB: string): Promise<void> {
    checkIfname(ifA);
    checkIfname(ifB);
    await this.#ip(nsA, ['link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', this.ns(nsB)]);
    this.#log(`veth ${this.ns(nsA)}:${ifA} <-> ${this.ns(nsB)}:${ifB}`);
  }

  /** A bridge (no STP, no forwarding delay) with the given ports; bridge and ports up. */
  async bridge(ns: string, name: string, ports: string[]): Promise<void> {
    checkIfname(name);
    await this.#ip(ns, ['link', 'add', name, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0']);
    for (const p of ports) {
      await this.#ip(ns, ['link', 'set', p, 'master', name]);
      await this.up(ns, p);
    }
    await this.up(ns, name);
    this.#log(`bridge ${this.ns(ns)}:${name} [${ports.join(' ')}]`);
  }

  async addr(ns: string, ifname: string, cidr: string): Promise<void> {
    await this.#ip(ns, ['addr', 'add', cidr, 'dev', ifname]);
  }

  async up(ns: string, ifname: string): Promise<void> {
    await this.#ip(ns, ['link', 'set', ifname, 'up']);
  }

  /** `ip route add <dst> [via <via>] [dev <dev>] [metric <m>]` in a namespace. */
  async route(ns: string, dst: string, opts: { via?: string; dev?: string; metric?: number } = {}): Promise<void> {
    const args = ['route', 'add', dst];
    if (opts.via) args.push('via', opts.via);
    if (opts.dev) args.push('dev', opts.dev);
    if (opts.metric !== undefined) args.push('metric', String(opts.metric));
    await this.#ip(ns, args);
  }

  async sysctl(ns: string, key: string, value: string | number): Promise<void> {
    await this.nsExec(ns, ['sysctl', '-qw', `${key}=${value}`]);
  }

  /**
   * Turn IPv6 on for these interfaces (and loopback) of a namespace created
   * with IPv6 off, quietly: no duplicate address detection (addresses are
   * usable at once), no router solicitations, no router advertisements
   * accepted. Other interfaces keep it off.
   */
  async enableIpv6(ns: string, ifnames: readonly string[]): Promise<void> {
    for (const i of ifnames) checkIfname(i);
    const keys: string[] = [];
    for (const i of ifnames) {
      keys.push(`net.ipv6.conf.${i}.accept_dad=0`, `net.ipv6.conf.${i}.accept_ra=0`, `net.ipv6.conf.${i}.router_solicitations=0`);
    }
    keys.push('net.ipv6.conf.lo.disable_ipv6=0', ...ifnames.map((i) => `net.ipv6.conf.${i}.disable_ipv6=0`));
    await this.nsExec(ns, ['sysctl', '-qw', ...keys]);
  }

  /**
   * Start `argv` inside `ns` (through `ip netns exec`, which execs it: the
   * PID is the program's). It runs in its own process group so a terminal's
   * Ctrl-C reaches only the lab, which then stops it in order.
   */
  async spawn(ns: string, argv: string[], opts: SpawnOptions = {}): Promise<LabProcess> {
    this.#guard();
    const full = this.ns(ns);
    if (closedNamespaces.has(full)) throw new LabClosedError();
    let log: WriteStream | undefined;
    if (opts.logFile) {
      mkdirSync(dirname(opts.logFile), { recursive: true });
      log = createWriteStream(opts.logFile, { flags: 'w' });
      await new Promise<void>((resolve, reject) => {
        log!.once('open', () => resolve());
        log!.once('error', reject);
      });
    }
    const child = spawnChild('ip', ['netns', 'exec', full, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          child.once('spawn', () => resolve());
          child.once('error', reject);
        }),
        5000,
        `spawn ${argv[0]}`,
      );
    } catch (e) {
      log?.end();
      throw e;
    }
    const p = new LabProcess(full, argv, child, opts.logFile, log);
    this.#procs.push(p);
    this.#log(`spawned pid ${p.pid} in ${full}: ${fmtArgv(argv)}`);
    if (this.#closing) {
      // Teardown began while we were spawning: do not leak it.
      await this.stop(p, { timeoutMs: 2000 });
      throw new LabClosedError();
    }
    return p;
  }

  /** Signal (default SIGTERM), wait up to timeoutMs, then SIGKILL. Never throws. */
  async stop(proc: LabProcess, opts: StopOptions = {}): Promise<StopResult> {
    const signal = opts.signal ?? 'SIGTERM';
    const timeoutMs = opts.timeoutMs ?? 5000;
    const waitExit = async (ms: number): Promise<ExitInfo | null> => {
      try {
        return await withTimeout(proc.exited, ms, 'exit');
      } catch {
        return null;
      }
    };
    if (proc.running) {
      // ChildProcess.kill signals by PID and is a no-op once the child was reaped.
      proc.child.kill(signal);
    }
    let x = await waitExit(timeoutMs);
    let escalated = false;
    if (!x) {
      escalated = true;
      this.#log(`pid ${proc.pid} ignored ${signal} for ${timeoutMs} ms: SIGKILL`);
      proc.child.kill('SIGKILL');
      x = await waitExit(3000);
    }
    await withTimeout(proc.logClosed, 2000, 'log close').catch(() => undefined);
    return { code: x?.code ?? null, signal: x?.signal ?? null, escalated, stillRunning: x === null };
  }

  /**
   * dumpcap on `ifname` in `ns`, writing classic pcap to `file`. Resolves
   * once dumpcap has opened the interface and written the file header.
   * Stop it with lab.stop(capture): SIGTERM makes dumpcap flush and close.
   * The interface is captured in promiscuous mode, which on a Linux bridge
   * makes every bridged frame visible on the bridge device.
   */
  async capture(ns: string, ifname: string, file: string, opts: { filter?: string; snaplen?: number; readyTimeoutMs?: number } = {}): Promise<Capture> {
    mkdirSync(dirname(file), { recursive: true });
    const argv = ['dumpcap', '-i', ifname, '-P', '-w', file];
    if (opts.filter) argv.push('-f', opts.filter);
    if (opts.snaplen) argv.push('-s', String(opts.snaplen));
    const proc = await this.spawn(ns, argv, { logFile: `${file}.log` });
    const timeout = opts.readyTimeoutMs ?? 10_000;
    await proc.waitForLine((l) => l.includes('Capturing on'), timeout, { what: '"Capturing on"' });
    await waitFor(() => existsSync(file) && statSync(file).size >= 24, timeout, { what: `pcap header in ${file}` });
    return Object.assign(proc, { file }) as Capture;
  }

  /** Register a cleanup step run by teardown (last registered, first run), after processes stop. */
  defer(label: string, fn: () => unknown): void {
    this.#deferred.push({ label, fn });
  }

  /**
   * Tear everything down: wait for in-flight setup commands, stop tracked
   * processes (newest first; SIGTERM, SIGKILL after 3 s), kill by PID any
   * process still inside the lab's namespaces, run deferred steps, delete the
   * namespaces newest first (their veths, bridges and TAPs go with them),
   * and verify they are gone. Idempotent (a second call returns the same
   * report); never throws.
   */
  teardown(): Promise<TeardownReport> {
    this.#closing = true;
    this.#teardown ??= this.#doTeardown();
    return this.#teardown;
  }

  async #doTeardown(): Promise<TeardownReport> {
    const errors: string[] = [];
    const actions: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await withTimeout(fn(), 30_000, what);
      } catch (e) {
        errors.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    const mine = new Set(this.#namespaces);
    for (const ns of mine) closedNamespaces.add(ns);
    const killed = killCommands(mine);
    if (killed) actions.push(`killed ${killed} command(s) running in the lab's namespaces`);
    await step('wait for in-flight commands', () =>
      withTimeout(Promise.allSettled([...this.#pending]), 15_000, 'in-flight commands'),
    );
    for (const p of [...this.#procs].reverse()) {
      if (!p.running) continue;
      await step(`stop ${p.describe()}`, async () => {
        const r = await this.stop(p, { timeoutMs: 3000 });
        actions.push(`stopped pid ${p.pid} (${fmtExit(r)}${r.escalated ? ', SIGKILL' : ''})`);
        if (r.stillRunning) throw new Error('still running after SIGKILL');
      });
    }
    for (const ns of [...this.#namespaces].reverse()) {
      await step(`processes left in ${ns}`, async () => {
        if (!namespaceExists(ns)) return;
        const pids = await namespacePids(ns);
        if (!pids.length) return;
        actions.push(`killing ${pids.map((p) => `${p}(${pidComm(p)})`).join(' ')} left in ${ns}`);
        const left = await killPids(pids);
        if (left.length) throw new Error(`pids ${left.join(' ')} survive SIGKILL`);
      });
    }
    for (const d of [...this.#deferred].reverse()) {
      await step(d.label, async () => {
        await d.fn();
        actions.push(d.label);
      });
    }
    this.#deferred = [];
    for (const ns of [...this.#namespaces].reverse()) {
      await step(`delete ${ns}`, async () => {
        if (!namespaceExists(ns)) return;
        const r = await run(['ip', 'netns', 'del', ns], { timeoutMs: 10_000 });
        if (r.code !== 0 && namespaceExists(ns)) throw new CommandError(r);
        actions.push(`deleted ${ns}`);
      });
    }
    const left = this.#namespaces.filter(namespaceExists);
    if (left.length) errors.push(`namespaces still present: ${left.join(' ')}`);
    // Gone (or reported): a later lab may reuse the names.
    for (const ns of mine) closedNamespaces.delete(ns);
    const running = this.#procs.filter((p) => p.running);
    if (running.length) errors.push(`processes still running: ${running.map((p) => p.pid).join(' ')}`);
    return { ok: errors.length === 0, errors, actions };
  }

  /**
   * Delete the namespaces an earlier (crashed) run with exactly this prefix
   * left behind (prefix + a dash-free role name), after killing by PID the
   * processes inside them. Returns the names deleted.
   */
  static async cleanStale(prefix: string = DEFAULT_PREFIX, opts: { log?: (msg: string) => void } = {}): Promise<string[]> {
    const log = opts.log ?? (() => undefined);
    const stale = (await listNamespaces()).filter((n) => isLabNamespace(prefix, n));
    const deleted: string[] = [];
    for (const ns of stale) {
      const pids = await namespacePids(ns);
      if (pids.length) {
        log(`stale ${ns}: killing ${pids.map((p) => `${p}(${pidComm(p)})`).join(' ')}`);
        await killPids(pids);
      }
    }
    // Leaf namespaces (VMs) were created last; order does not matter for deletion.
    for (const ns of stale) {
      const r = await run(['ip', 'netns', 'del', ns], { timeoutMs: 10_000 });
      if (r.code === 0 || !namespaceExists(ns)) {
        deleted.push(ns);
        log(`deleted stale ${ns}`);
      } else {
        log(`could not delete stale ${ns}: ${r.stderr.trim()}`);
      }
    }
    return deleted;
  }
}

function checkIfname(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new Error(`bad interface name ${JSON.stringify(name)} (1-15 chars)`);
}

// ---------------------------------------------------------------------------
// Signals

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

/**
 * On SIGINT/SIGTERM/SIGHUP, an uncaught exception or an unhandled rejection:
 * tear the lab down (bounded by `timeoutMs`), print what went wrong, and exit
 * non-zero (128+signal, or 1). A second signal during teardown is reported
 * and ignored (teardown is bounded). Returns a function that removes the
 * handlers.
 */
export function installSignalTeardown(
  lab: Lab,
  opts: { log?: (msg: string) => void; timeoutMs?: number } = {},
): () => void {
  const log = opts.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  let busy = false;
  const bail = (why: string, code: number): void => {
    if (busy) {
      log(`lab: ${why} during teardown; still tearing down (bounded)`);
      return;
    }
    busy = true;
    log(`lab: ${why}: tearing down`);
    const hard = setTimeout(() => {
      log('lab: teardown did not finish in time; exiting');
      killCommands();
      process.exit(code);
    }, opts.timeoutMs ?? 90_000);
    const exit = (): void => {
      killCommands(); // our own children still in flight: do not orphan them
      process.exit(code);
    };
    void lab.teardown().then(
      (r) => {
        for (const e of r.errors) log(`lab: teardown: ${e}`);
        log(`lab: teardown ${r.ok ? 'complete' : 'finished with errors'}`);
        clearTimeout(hard);
        exit();
      },
      (e) => {
        log(`lab: teardown threw: ${String(e)}`);
        exit();
      },
    );
  };
  const onSignal = (sig: NodeJS.Signals): void => bail(`received ${sig}`, SIGNAL_EXIT[sig] ?? 1);
  const onError = (e: unknown): void => {
    log(`lab: uncaught error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    bail('uncaught error', 1);
  };
  const sigs: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of sigs) process.on(s, onSignal);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  return () => {
    for (const s of sigs) process.off(s, onSignal);
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  };
}
