// `nvgrectl capture underlay|adapter …`: what the command does once its words
// are parsed (the grammar and help are in commands.ts). Finds the interface
// (from the daemon's policy unless given), builds the filter
// (src/capture/filter.ts), and runs the capture here, or, for a VM adapter
// whose TAP lives in another network namespace, re-runs the same command
// inside that namespace (libpcap opens devices of the current namespace
// only) and passes its exit status on.

import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CaptureError, adapterFilter, runCapture, underlayFilter, type PcapStream } from '../capture/index.js';
import { parseIp } from '../config/net.js';
import { packageRoot } from '../native.js';
import { CliError, EXIT, type ExitCode, usageError } from './exit.js';
import type { Ctx } from './commands.js';

export interface CaptureArgs {
  /** `adapter NAME`; undefined for the underlay. */
  adapter: string | undefined;
  dev: string | undefined;
  vsid: number | undefined;
  ca: string | undefined;
  count: number | undefined;
  /** The duration as given (seconds, decimals allowed). */
  duration: string | undefined;
  /** FILE, or `-` for standard output. */
  write: string;
  /** Internal: already inside this network namespace (the re-run); no lookup, no re-run. */
  inNetns: string | undefined;
}

/** The keyword that marks the re-run inside the adapter's namespace (not in the help). */
export const IN_NETNS_KEYWORD = 'in-netns';

/** Longest duration setTimeout can wait (2^31-1 ms). */
const MAX_DURATION_S = 2_147_483;

function isTty(s: unknown): boolean {
  return (s as { isTTY?: boolean } | undefined)?.isTTY === true;
}

/** The namespace's file: a name under /run/netns, or an absolute path (as the daemon accepts). */
function netnsPath(ns: string): string {
  return ns.startsWith('/') ? ns : join('/run/netns', ns);
}

/** Whether we are in network namespace `ns`. Throws a CliError when it does not exist. */
function inNetns(ns: string, what: string): boolean {
  let theirs;
  try {
    theirs = statSync(netnsPath(ns));
  } catch {
    throw new CliError(EXIT.NOT_FOUND, `network namespace ${ns}${what} does not exist (no ${netnsPath(ns)})`);
  }
  const mine = statSync('/proc/self/ns/net');
  return mine.ino === theirs.ino && mine.dev === theirs.dev;
}

/** This CLI's entry point (dist/src/cli/main.js), also when this module runs from the TypeScript sources. */
function cliMain(): string {
  const here = join(dirname(fileURLToPath(import.meta.url)), 'main.js');
  return existsSync(here) ? here : join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
}

/** Check the words' values; throws usage errors. Returns the duration in ms. */
function validate(ctx: Ctx, a: CaptureArgs, hint: string): number | undefined {
  if (a.count !== undefined && a.count < 1) throw usageError('"count" must be at least 1', hint);
  let durationMs: number | undefined;
  if (a.duration !== undefined) {
    if (!/^[0-9]+(\.[0-9]+)?$/.test(a.duration)) throw usageError(`"duration" needs a number of seconds, not "${a.duration}"`, hint);
    const s = Number(a.duration);
    if (s <= 0) throw usageError('"duration" must be more than 0 seconds', hint);
    if (s > MAX_DURATION_S) throw usageError(`"duration" must be at most ${MAX_DURATION_S} seconds`, hint);
    durationMs = Math.max(1, Math.round(s * 1000));
  }
  if (a.count === undefined && durationMs === undefined && !isTty(ctx.io.stdin ?? process.stdin)) {
    throw usageError('"count N" or "duration SECONDS" is needed (without a terminal on stdin nothing would stop the capture but a signal)', hint);
  }
  if (a.vsid !== undefined && a.vsid > 0xffffff) throw usageError(`VSID ${a.vsid} is out of range (0..16777215)`, hint);
  if (a.ca !== undefined) {
    const p = parseIp(a.ca);
    if (!p.ok) throw usageError(`CA "${a.ca}" ${p.reason}`, hint);
  }
  if (a.write === '-' && isTty(ctx.io.stdout)) {
    throw usageError('refusing to write a pcap to a terminal: redirect or pipe standard output, or give "write FILE"', hint);
  }
  if (a.write === '') throw usageError('"write" needs a file name, or "-" for standard output', hint);
  return durationMs;
}

/** Capture here, print the summary, map failures to exit statuses. */
async function captureHere(
  ctx: Ctx,
  a: CaptureArgs,
  device: string,
  label: string,
  filter: string,
  durationMs: number | undefined,
  notFoundDetails: string[] = [],
): Promise<void> {
  const shown = filter === '' ? 'none' : filter;
  const output =
    a.write === '-'
      ? { stream: ctx.io.stdout as unknown as PcapStream & Partial<NodeJS.EventEmitter> }
      : { file: resolve(a.write) };
  const stops = [a.count !== undefined ? `${a.count} packet${a.count === 1 ? '' : 's'}` : '', a.duration !== undefined ? `${a.duration} s` : '', 'Ctrl-C']
    .filter(Boolean)
    .join(', ');
  try {
    const r = await runCapture({
      device,
      filter,
      count: a.count,
      durationMs,
      output,
      onStart: (info) => {
        ctx.io.stderr.write(`capturing on ${label} (filter: ${shown}), link type ${info.linkType}, until ${stops}\n`);
      },
    });
    ctx.io.stderr.write(`captured ${r.packets} packet${r.packets === 1 ? '' : 's'} on ${label} (filter: ${shown})\n`);
  } catch (e) {
    if (!(e instanceof CaptureError)) throw e;
    if (e.result) ctx.io.stderr.write(`captured ${e.result.packets} packets on ${label} (filter: ${shown}) before the failure\n`);
    switch (e.kind) {
      case 'no-such-device':
        throw new CliError(EXIT.NOT_FOUND, e.message, { details: notFoundDetails });
      case 'permission':
        throw new CliError(EXIT.INVALID, e.message);
      default:
        throw new CliError(EXIT.INTERNAL, e.message);
    }
  }
}

/** `capture underlay …` */
export async function captureUnderlay(ctx: Ctx, a: CaptureArgs, hint: string): Promise<void> {
  const durationMs = validate(ctx, a, hint);
  const filter = underlayFilter({ vsid: a.vsid, ca: a.ca });
  if (a.dev !== undefined) return captureHere(ctx, a, a.dev, a.dev, filter, durationMs);

  let policy: unknown;
  try {
    policy = (await ctx.client.call('GET', '/v1/policy')).json;
  } catch (e) {
    if (e instanceof CliError && e.exitCode === EXIT.UNREACHABLE) {
      throw new CliError(EXIT.UNREACHABLE, e.message, {
        details: ['the underlay interface is that of the daemon\'s provider addresses: without the daemon, give it with "dev IFNAME"'],
      });
    }
    throw e;
  }
  const pas = (policy as { provider_addresses?: unknown } | undefined)?.provider_addresses;
  if (!Array.isArray(pas)) throw new CliError(EXIT.INTERNAL, 'unexpected answer from nvgred to GET /v1/policy: no provider_addresses');
  const ifaces = [...new Set(pas.map((p) => (p as { interface?: unknown }).interface).filter((x): x is string => typeof x === 'string'))];
  if (ifaces.length === 0) {
    throw new CliError(EXIT.NOT_FOUND, 'the daemon has no provider addresses: give the underlay interface with "dev IFNAME"');
  }
  if (ifaces.length > 1) {
    throw new CliError(EXIT.INVALID, `the daemon's provider addresses are on several interfaces (${ifaces.join(', ')}): give one with "dev IFNAME" (or "dev any")`);
  }
  const dev = ifaces[0]!;
  return captureHere(ctx, a, dev, dev, filter, durationMs, [
    `${dev} is the interface of the daemon's provider addresses: run nvgrectl in the daemon's network namespace, or give "dev IFNAME"`,
  ]);
}

/** `capture adapter NAME …` */
export async function captureAdapter(ctx: Ctx, a: CaptureArgs, hint: string): Promise<void> {
  const name = a.adapter!;
  const durationMs = validate(ctx, a, hint);
  const filter = adapterFilter({ ca: a.ca });

  if (a.inNetns !== undefined) {
    // The re-run: we were started inside the adapter's namespace.
    if (!inNetns(a.inNetns, '')) throw new CliError(EXIT.INTERNAL, `"${IN_NETNS_KEYWORD} ${a.inNetns}" given, but this process is not in that network namespace`);
    try {
      return await captureHere(ctx, a, name, `${name} in netns ${a.inNetns}`, filter, durationMs);
    } finally {
      // A Ctrl-C reaches us from the terminal and again from the parent, which passes signals on:
      // the late copy must not kill this process between the end of the capture and its exit.
      for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, () => undefined);
    }
  }

  const res = await ctx.client.call('GET', `/v1/vm-adapters/${encodeURIComponent(name)}`);
  const rec = res.json as { name?: unknown; netns?: unknown } | undefined;
  if (!rec || typeof rec !== 'object') throw new CliError(EXIT.INTERNAL, `unexpected answer from nvgred to GET /v1/vm-adapters/${name}`);
  const ns = typeof rec.netns === 'string' && rec.netns !== '' ? rec.netns : undefined;
  if (ns === undefined || inNetns(ns, ` (of adapter ${name})`)) {
    return captureHere(ctx, a, name, ns === undefined ? name : `${name} in netns ${ns}`, filter, durationMs);
  }
  return rerunInNetns(ctx, a, name, ns);
}

/**
 * Run `nvgrectl capture adapter NAME … in-netns NS` inside NS (`ip netns exec`
 * for a name, `nsenter --net=` for a path): needs root. Its stdin, stdout and
 * stderr are ours; SIGINT/SIGTERM/SIGHUP are passed on; its exit status
 * becomes ours.
 */
async function rerunInNetns(ctx: Ctx, a: CaptureArgs, name: string, ns: string): Promise<void> {
  if (typeof process.geteuid === 'function' && process.geteuid() !== 0) {
    throw new CliError(
      EXIT.INVALID,
      `adapter ${name} is in network namespace ${ns}: capturing it needs root (nvgrectl re-runs itself there with "ip netns exec")`,
    );
  }
  const words = ['capture', 'adapter', 'name', name];
  if (a.ca !== undefined) words.push('ca', a.ca);
  if (a.count !== undefined) words.push('count', String(a.count));
  if (a.duration !== undefined) words.push('duration', a.duration);
  words.push('write', a.write === '-' ? '-' : resolve(a.write), IN_NETNS_KEYWORD, ns);
  const node = [process.execPath, cliMain(), ...words];
  const argv = ns.startsWith('/') ? ['nsenter', `--net=${ns}`, '--', ...node] : ['ip', 'netns', 'exec', ns, ...node];

  const ownOut = ctx.io.stdout === process.stdout;
  const ownErr = ctx.io.stderr === process.stderr;
  const ownIn = ctx.io.stdin === undefined || ctx.io.stdin === process.stdin;
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: [ownIn ? 'inherit' : 'ignore', ownOut ? 'inherit' : 'pipe', ownErr ? 'inherit' : 'pipe'],
  });
  child.stdout?.on('data', (b: Buffer) => (ctx.io.stdout as unknown as PcapStream).write(b));
  child.stderr?.on('data', (b: Buffer) => ctx.io.stderr.write(b.toString('utf8')));
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  // The child stops itself on these (flushing its file); we wait for it.
  const forward = (s: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill(s);
  };
  for (const s of signals) process.on(s, forward);
  let exit: { code: number | null; signal: NodeJS.Signals | null; error?: Error };
  try {
    exit = await new Promise((resolveExit) => {
      child.once('error', (error) => resolveExit({ code: null, signal: null, error }));
      child.once('close', (code, signal) => resolveExit({ code, signal }));
    });
  } finally {
    for (const s of signals) process.off(s, forward);
  }
  if (exit.error) throw new CliError(EXIT.INTERNAL, `cannot run ${argv[0]} to enter network namespace ${ns}: ${exit.error.message}`);
  if (exit.code === 0) return;
  const known = Object.values(EXIT) as number[];
  if (exit.code !== null && known.includes(exit.code)) {
    throw new CliError(exit.code as ExitCode, `capture in network namespace ${ns} failed`, { quiet: true });
  }
  throw new CliError(
    EXIT.INTERNAL,
    `capture in network namespace ${ns} failed (${exit.signal ? `killed by ${exit.signal}` : `${argv[0]} exited with ${exit.code}`})`,
  );
}
