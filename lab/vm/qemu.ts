// QEMU guests for the lab: the image of lab/vm/image.ts booted under TCG,
// with one virtio-net NIC on either a TAP (QEMU opens it by name, creating
// it when missing, in the namespace QEMU runs in) or vhost-user (QEMU is the
// socket's server; the backend connects to it). The serial console, on a
// unix socket, is the command channel (protocol: lab/vm/init.sh).
//
// QEMU runs as a Lab process (lab.spawn: tracked by PID, stopped at
// teardown, and found by Lab.cleanStale in the lab's namespaces after a
// crash), so every exit path of the lab stops it.
//
// Facts of QEMU 7.2 under TCG this relies on (shared/guides/machine-notes.md):
// no KVM; no /dev/vhost-net (taps need vhost=off); vhost-user needs the
// device without MSI-X (vectors=0) and shared guest memory; QEMU blocks in
// its vhost-user netdev setup until a backend connects.

import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, createWriteStream, type WriteStream } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { Lab, TimeoutError, fmtExit, waitFor, withTimeout, type LabProcess, type StopResult } from '../netns.js';
import { ensureDebianPackages, type VmImage } from './image.js';

const QEMU = 'qemu-system-x86_64';
/** Smaller and quicker than SeaBIOS (Debian's qemu-system-data ships it); SeaBIOS when absent. */
const QBOOT = '/usr/share/qemu/qboot.rom';
/** Console sockets and per-VM files; one directory per lab prefix, removed at teardown. */
const RUN_DIR = '/run/nvgred-lab';

export type VmNet =
  /** QEMU opens TAP `ifname` in the VM's namespace (creating it, non-persistent, if it does not exist). */
  | { kind: 'tap'; ifname: string; /** IFF_VNET_HDR: the guest's offloads (TSO, checksum) reach the TAP. Default false. */ vnetHdr?: boolean }
  /** QEMU serves vhost-user on `socket` (server=on); the backend connects. */
  | { kind: 'vhost-user'; socket: string };

export interface VmSpec {
  /** [A-Za-z0-9_]+; names the VM's files. */
  name: string;
  /** Namespace QEMU runs in (role or full name): where a TAP lives. */
  ns: string;
  net: VmNet;
  /** The NIC's MAC (QEMU -device mac=); /init finds the NIC by it. */
  mac: string;
  /** Guest address with prefix length, e.g. 10.0.1.201/24. */
  ip?: string;
  /** Default route. */
  gw?: string;
  mtu?: number;
  /**
   * The MTU QEMU announces to the guest's virtio-net driver (`host_mtu=` on
   * the device; VIRTIO_NET_F_MTU): the driver takes it as its MTU.
   */
  hostMtu?: number;
  /**
   * More NICs, after the first (n1, n2...): the guest's /init configures only
   * the first; these come up bare, found by their MAC (see nicScript()).
   */
  moreNics?: { net: VmNet; mac: string; hostMtu?: number }[];
  /** Guest RAM. Default 256. */
  memMb?: number;
  /** Extra kernel command-line words. */
  append?: string[];
}

export interface ExecResult {
  /** Exit status of the script in the guest (137: killed at its timeout). */
  code: number;
  /** Its stdout and stderr, interleaved as written. */
  output: string;
}

export interface ExecOptions {
  /** Kill the script in the guest after this long (rounded up to seconds). Default 30 s. */
  timeoutMs?: number;
  /** Send the command line again while the guest has not acknowledged it after this long (then twice as long...). Default 3 s. */
  resendAfterMs?: number;
  /** Give up waiting for the report (TimeoutError) after this long. Default: timeoutMs + 10 s. */
  replyWithinMs?: number;
}

/** The QEMU command line for a VM (console socket `console`), as an argv. Exported for docs and tests. */
export function qemuArgv(spec: VmSpec, image: Pick<VmImage, 'kernel' | 'initrd'>, console: string): string[] {
  const mem = spec.memMb ?? 256;
  const append = ['console=ttyS0', 'quiet', 'panic=-1', `nvg.mac=${spec.mac}`, `nvg.name=${spec.name}`];
  if (spec.ip) append.push(`nvg.ip=${spec.ip}`);
  if (spec.gw) append.push(`nvg.gw=${spec.gw}`);
  if (spec.mtu) append.push(`nvg.mtu=${spec.mtu}`);
  append.push(...(spec.append ?? []));
  const nics = [{ net: spec.net, mac: spec.mac, hostMtu: spec.hostMtu }, ...(spec.moreNics ?? [])];
  const vhostUser = nics.some((n) => n.net.kind === 'vhost-user');
  const machine = vhostUser ? 'pc,memory-backend=mem' : 'pc';
  const argv = [QEMU, '-name', spec.name, '-accel', 'tcg', '-machine', machine, '-m', `${mem}M`, '-smp', '1'];
  argv.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot');
  if (existsSync(QBOOT)) argv.push('-bios', QBOOT);
  argv.push('-kernel', image.kernel, '-initrd', image.initrd, '-append', append.join(' '));
  argv.push('-chardev', `socket,id=con0,path=${console},server=on,wait=off`, '-serial', 'chardev:con0');
  if (vhostUser) argv.push('-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`);
  for (const [i, n] of nics.entries()) {
    // romfile=: no iPXE option ROM to load (the kernel is booted directly).
    const nic = `virtio-net-pci,netdev=n${i},mac=${n.mac},romfile=${n.hostMtu ? `,host_mtu=${n.hostMtu}` : ''}`;
    if (n.net.kind === 'tap') {
      argv.push('-netdev', `tap,id=n${i},ifname=${n.net.ifname},script=no,downscript=no,vhost=off,vnet_hdr=${n.net.vnetHdr ? 'on' : 'off'}`);
      argv.push('-device', nic);
    } else {
      argv.push('-chardev', `socket,id=vu${i},path=${n.net.socket},server=on,wait=off`);
      argv.push('-netdev', `vhost-user,id=n${i},chardev=vu${i}`);
      argv.push('-device', `${nic},vectors=0`);
    }
  }
  return argv;
}

interface Waiter {
  id: string;
  /** The guest's "begin" for this id was seen. */
  begun: boolean;
  resolve: (r: ExecResult) => void;
  reject: (e: Error) => void;
}

/**
 * One guest. start() boots it (a new QEMU process each time), exec() runs a
 * shell script in it, stop() ends QEMU (the NIC goes away with it: a TAP
 * QEMU created is deleted, a vhost-user backend sees its socket close).
 */
export class Vm {
  readonly spec: VmSpec;
  readonly console: string;
  readonly consoleLog: string;
  #proc: LabProcess | undefined;
  #sock: Socket | undefined;
  #log: WriteStream | undefined;
  #rx = '';
  #waiter: Waiter | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #seq = 0;
  #closed: Error | undefined;
  /** Guest uptime (s) when /init began serving commands, from its ready line; null until seen. */
  readyUptime: number | null = null;
  /** Command lines sent again because the guest did not acknowledge them in time. */
  resent = 0;

  constructor(
    readonly lab: Lab,
    readonly image: VmImage,
    spec: VmSpec,
    opts: { logDir?: string } = {},
  ) {
    if (!/^[A-Za-z0-9_]+$/.test(spec.name)) throw new Error(`bad VM name ${JSON.stringify(spec.name)} ([A-Za-z0-9_]+)`);
    if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(spec.mac)) throw new Error(`VM ${spec.name}: bad mac ${JSON.stringify(spec.mac)} (lower-case aa:bb:cc:dd:ee:ff)`);
    this.spec = { ...spec, ns: lab.ns(spec.ns) };
    const dir = vmRunDir(lab);
    this.console = join(dir, `${spec.name}.console`);
    this.consoleLog = join(opts.logDir ?? dir, `${spec.name}.console.log`);
    mkdirSync(dirname(this.consoleLog), { recursive: true });
  }

  get argv(): string[] {
    return qemuArgv(this.spec, this.image, this.console);
  }

  get running(): boolean {
    return this.#proc?.running ?? false;
  }

  get process(): LabProcess | undefined {
    return this.#proc;
  }

  /**
   * Start QEMU and connect to its console. Does not wait for the guest: with
   * vhost-user, QEMU does not even run the guest before a backend connects
   * (waitBooted() does the waiting).
   */
  async start(): Promise<void> {
    if (this.running) throw new Error(`VM ${this.spec.name} is already running (pid ${this.#proc!.pid})`);
    await ensureDebianPackages(['qemu-system-x86']);
    rmSync(this.console, { force: true });
    for (const n of [this.spec.net, ...(this.spec.moreNics ?? []).map((m) => m.net)]) if (n.kind === 'vhost-user') rmSync(n.socket, { force: true });
    this.#rx = '';
    this.#closed = undefined;
    this.readyUptime = null;
    this.#log = createWriteStream(this.consoleLog, { flags: 'a' });
    this.#log.on('error', () => undefined);
    this.#log.write(`\n==== ${new Date().toISOString()} start: ${this.argv.join(' ')}\n`);
    const proc = await this.lab.spawn(this.spec.ns, this.argv, { logFile: this.consoleLog.replace(/\.console\.log$/, '.qemu.log') });
    this.#proc = proc;
    const exited = proc.exited.then((x) => {
      const e = new Error(`QEMU of VM ${this.spec.name} exited (${fmtExit(x)}); last output:\n${proc.tail(5)}`);
      if (this.#proc === proc) this.#close(e);
      throw e;
    });
    exited.catch(() => undefined);
    const sock = await Promise.race([waitFor(() => tryConnect(this.console), 15_000, { what: `console socket ${this.console}`, intervalMs: 50 }), exited]);
    this.#sock = sock;
    sock.on('data', (b: Buffer) => this.#onData(b));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (this.#sock === sock) this.#close(new Error(`console of VM ${this.spec.name} closed`));
    });
  }

  /**
   * Wait until the guest answers on its console; returns the milliseconds
   * since start(). Probes every second (a probe sent before /init listens is
   * lost or answered late; answers to old probes are ignored).
   */
  async waitBooted(timeoutMs = 120_000): Promise<number> {
    const t0 = Date.now();
    const deadline = t0 + timeoutMs;
    for (;;) {
      if (!this.running) throw this.#closed ?? new Error(`VM ${this.spec.name} is not running`);
      try {
        const r = await this.exec('true', { timeoutMs: 1000, replyWithinMs: 1000 });
        if (r.code === 0) return Date.now() - t0;
      } catch (e) {
        if (!(e instanceof TimeoutError)) throw e;
      }
      if (Date.now() > deadline) throw new TimeoutError(`VM ${this.spec.name}: no answer on its console within ${timeoutMs} ms (log ${this.consoleLog})`);
    }
  }

  /** Run `script` with the guest's sh; never rejects for a non-zero status (execOk does). */
  exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const run = async (): Promise<ExecResult> => {
      if (this.#closed || !this.#sock) throw this.#closed ?? new Error(`VM ${this.spec.name} is not started`);
      const timeoutMs = opts.timeoutMs ?? 30_000;
      const id = `${process.pid}.${++this.#seq}`;
      const result = new Promise<ExecResult>((resolve, reject) => {
        this.#waiter = { id, begun: false, resolve, reject };
      });
      const line = `NVGCMD ${id} ${Math.ceil(timeoutMs / 1000)} ${Buffer.from(script).toString('base64')}\n`;
      const sock = this.#sock;
      sock.write(line);
      // A line the guest never saw (it happens, rarely, after heavy network
      // traffic; cause unknown) would hang the channel: send it again, at
      // doubling intervals (a long line takes a while to cross the serial
      // port), until "begin" comes back. The guest runs an id once.
      let resendMs = opts.resendAfterMs ?? 3000;
      let resend: NodeJS.Timeout;
      const again = (): void => {
        if (this.#waiter?.id !== id || this.#waiter.begun || sock.destroyed) return;
        this.resent++;
        this.#log?.write(`\n==== ${new Date().toISOString()} no begin for ${id} after ${resendMs} ms: sent again\n`);
        sock.write(line);
        resendMs *= 2;
        resend = setTimeout(again, resendMs);
      };
      resend = setTimeout(again, resendMs);
      this.#scan();
      try {
        // The guest kills the script at its timeout: wait a little longer for the report.
        return await withTimeout(result, opts.replyWithinMs ?? timeoutMs + 10_000, `VM ${this.spec.name}: ${script.slice(0, 60)}`);
      } finally {
        clearTimeout(resend);
        if (this.#waiter?.id === id) this.#waiter = undefined;
      }
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  async execOk(script: string, opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(script, opts);
    if (r.code !== 0) throw new Error(`VM ${this.spec.name}: \`${script}\` exited ${r.code}: ${r.output.trim().slice(-800)}`);
    return r.output;
  }

  /** Stop QEMU (SIGTERM, then SIGKILL): for the guest, power pulled. */
  async stop(opts: { signal?: NodeJS.Signals; timeoutMs?: number } = {}): Promise<StopResult | null> {
    const proc = this.#proc;
    if (!proc) return null;
    const r = await this.lab.stop(proc, { signal: opts.signal, timeoutMs: opts.timeoutMs ?? 5000 });
    this.#close(new Error(`VM ${this.spec.name} stopped`));
    return r;
  }

  /** stop() then start() and waitBooted(); the boot's milliseconds. */
  async restart(timeoutMs?: number): Promise<number> {
    await this.stop();
    await this.start();
    return this.waitBooted(timeoutMs);
  }

  #onData(b: Buffer): void {
    this.#log?.write(b);
    this.#rx += b.toString('latin1');
    this.#scan();
  }

  /** Settle the waiting command if its report is complete; drop console text nobody waits for. */
  #scan(): void {
    const ready = /@@nvg ready ([\d.]+)\n/.exec(this.#rx);
    if (ready) this.readyUptime = Number(ready[1]);
    const w = this.#waiter;
    if (!w) {
      this.#rx = this.#rx.slice(this.#rx.lastIndexOf('\n') + 1);
      return;
    }
    const begin = `@@nvg begin ${w.id}\n`;
    const b = this.#rx.indexOf(begin);
    if (b < 0) {
      // Keep a possible partial marker only.
      this.#rx = this.#rx.slice(Math.max(0, this.#rx.lastIndexOf('\n') + 1));
      return;
    }
    w.begun = true;
    const end = new RegExp(`\\n@@nvg end ${w.id.replace('.', '\\.')} (\\d+)\\n`).exec(this.#rx.slice(b + begin.length));
    if (!end) return;
    const output = Buffer.from(this.#rx.slice(b + begin.length, b + begin.length + end.index), 'latin1').toString('utf8');
    this.#rx = this.#rx.slice(b + begin.length + end.index + end[0].length);
    this.#waiter = undefined;
    w.resolve({ code: Number(end[1]), output });
  }

  #close(why: Error): void {
    this.#closed ??= why;
    this.#sock?.destroy();
    this.#sock = undefined;
    this.#log?.end();
    this.#log = undefined;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(why);
  }
}

function tryConnect(path: string): Promise<Socket | null> {
  if (!existsSync(path)) return Promise.resolve(null);
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', () => {
      s.destroy();
      resolve(null);
    });
  });
}

const runDirs = new WeakMap<Lab, string>();

/** `/run/nvgred-lab/<prefix>vm/`: created on first use, removed (with what is left in it) at teardown. */
export function vmRunDir(lab: Lab): string {
  let dir = runDirs.get(lab);
  if (dir) return dir;
  dir = join(RUN_DIR, `${lab.prefix}vm`);
  rmSync(dir, { recursive: true, force: true }); // an earlier run's, killed before its teardown
  const madeParent = !existsSync(RUN_DIR);
  mkdirSync(dir, { recursive: true });
  runDirs.set(lab, dir);
  const d = dir;
  lab.defer(`remove ${d}`, () => {
    rmSync(d, { recursive: true, force: true });
    if (madeParent && existsSync(RUN_DIR) && readdirSync(RUN_DIR).length === 0) rmdirSync(RUN_DIR);
  });
  return dir;
}

/**
 * A guest shell script that configures the NIC with MAC `mac` (one of
 * VmSpec.moreNics): MTU, up, address `ip` (with prefix length).
 */
export function nicScript(mac: string, ip: string, mtu?: number): string {
  return [
    'nic=',
    `for d in /sys/class/net/*; do [ "$(cat "$d/address")" = ${mac} ] && nic=\${d##*/}; done`,
    `[ -n "$nic" ] || { echo "no NIC with MAC ${mac}"; exit 1; }`,
    ...(mtu ? [`ip link set "$nic" mtu ${mtu}`] : []),
    'ip link set "$nic" up',
    `ip addr add ${ip} dev "$nic"`,
  ].join('\n');
}
