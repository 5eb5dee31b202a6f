// One nvgred daemon in network namespaces of its own, for the API tests:
// a host namespace with `eth1` (a veth whose peer `eth1peer` is in the same
// namespace; both up), a VM namespace for the TAPs, and a temp directory with
// the config file, the API socket and state_dir.
//
//   const lab = new Lab(`nvapi${process.pid % 10000}-`);
//   const env = await createHostEnv(lab, 'nvgred-api-');
//   const d = new TestDaemon(lab, env, env.writeConfig(baseConfig(env)));
//   await d.start();  ... d.api.request(...) ...
//   await d.stop();  (or d.kill(): SIGKILL by PID)
//   afterAll: await lab.teardown(); env.cleanup();

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, type LabProcess, type StopResult } from '../../lab/netns.js';
import { packageRoot } from '../../src/native.js';
import { ApiClient } from './api.js';

export const DAEMON = join(packageRoot(), 'dist', 'src', 'daemon', 'main.js');

export const RD1 = '{12345678-1000-2000-3000-123456780001}';
export const RD2 = '{12345678-1000-2000-3000-123456780002}';

export interface HostEnv {
  lab: Lab;
  /** Full name of the host namespace (eth1 lives here; the daemon runs here). */
  host: string;
  /** Full name of the VM namespace (the TAPs are moved here). */
  vm: string;
  /** The temp directory (mode 0755): config files, socket, state. */
  dir: string;
  socket: string;
  stateDir: string;
  /** Write `text` as `dir/name` (default nvgred.yaml); returns the path. */
  writeConfig(text: string, name?: string): string;
  /** Remove the temp directory. */
  cleanup(): void;
}

/** Create the host and VM namespaces (after removing stale ones of this prefix) and a temp dir. */
export async function createHostEnv(lab: Lab, tmpPrefix: string): Promise<HostEnv> {
  await Lab.cleanStale(lab.prefix);
  const host = await lab.addNamespace('host');
  const vm = await lab.addNamespace('vm');
  await lab.veth('host', 'eth1', 'host', 'eth1peer');
  await lab.up('host', 'eth1');
  await lab.up('host', 'eth1peer');
  const dir = mkdtempSync(join(tmpdir(), tmpPrefix));
  // Traversable by anyone: access to the socket is then decided by the
  // socket's own mode (see api-permissions.test.ts).
  chmodSync(dir, 0o755);
  return {
    lab,
    host,
    vm,
    dir,
    socket: join(dir, 'api.sock'),
    stateDir: join(dir, 'state'),
    writeConfig(text: string, name = 'nvgred.yaml') {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The tests' standard policy: Contoso (RD1: VSID 6000 10.0.1.0/24, VSID
 * 6001 10.0.2.0/24 + default route via the gateway VM 10.0.2.2) and Fabrikam
 * (RD2: VSID 7000 10.0.1.0/24 only), PA 192.168.0.22/24 on eth1, one local
 * VM adapter `vm1` (10.0.1.101) in the VM namespace. `extra` is appended
 * verbatim (more top-level sections).
 */
export function baseConfig(env: HostEnv, opts: { hostName?: string; extra?: string } = {}): string {
  return `host: { name: ${opts.hostName ?? 'apitest'} }
provider_addresses:
  - { address: 192.168.0.22, prefix_length: 24, interface: eth1 }
customer_routes:
  - { routing_domain: "${RD1}", vsid: 6000, destination_prefix: 10.0.1.0/24, next_hop: 0.0.0.0 }
  - { routing_domain: "${RD1}", vsid: 6001, destination_prefix: 10.0.2.0/24, next_hop: 0.0.0.0 }
  - { routing_domain: "${RD1}", vsid: 6001, destination_prefix: 0.0.0.0/0, next_hop: 10.0.2.2 }
  - { routing_domain: "${RD2}", vsid: 7000, destination_prefix: 10.0.1.0/24, next_hop: 0.0.0.0 }
lookup_records:
  - { customer_address: 10.0.1.1, vsid: 6000, mac: "60:00:60:00:01:00", provider_address: 192.168.0.22 }
  - { customer_address: 10.0.1.101, vsid: 6000, mac: "60:00:60:00:01:01", provider_address: 192.168.0.22, vm_name: Contoso1 }
  - { customer_address: 10.0.1.103, vsid: 6000, mac: "60:00:60:00:02:03", provider_address: 192.168.0.33, vm_name: Contoso3 }
  - { customer_address: 10.0.2.2, vsid: 6001, mac: "60:01:60:01:03:01", provider_address: 192.168.0.11, vm_name: MT-GW }
  - { customer_address: 10.0.1.101, vsid: 7000, mac: "70:00:70:00:01:01", provider_address: 192.168.0.33, vm_name: Fabrikam1 }
vm_adapters:
  - { name: vm1, vm_name: Contoso1, mac: "60:00:60:00:01:01", vsid: 6000, netns: ${env.vm} }
${opts.extra ?? ''}
state_dir: ${env.stateDir}
api: { socket: ${env.socket} }
metrics: { listen: "127.0.0.1:9470" }
`;
}

/** One daemon process (restartable: start() again after stop() or kill()). */
export class TestDaemon {
  readonly api: ApiClient;
  proc: LabProcess | undefined;
  /** Every daemon process started, oldest first. */
  readonly history: LabProcess[] = [];

  constructor(
    readonly env: HostEnv,
    public configPath: string,
    readonly args: string[] = [],
    /** Run the daemon through this command line (each must exec the next: the PID stays the daemon's), e.g. nsenter into a mount namespace, or ['env', 'X=1', 'prlimit', '--nofile=256']. */
    readonly wrapper: string[] = [],
  ) {
    this.api = new ApiClient(env.socket);
  }

  get pid(): number {
    if (!this.proc) throw new Error('daemon not started');
    return this.proc.pid;
  }

  /** Start the daemon and wait for its `ready` line. */
  async start(timeoutMs = 20_000): Promise<LabProcess> {
    if (this.proc?.running) throw new Error(`daemon already running (pid ${this.proc.pid})`);
    const n = this.history.length;
    const proc = await this.env.lab.spawn(this.env.host, [...this.wrapper, process.execPath, DAEMON, '--config', this.configPath, ...this.args], {
      logFile: join(this.env.dir, `daemon-${n}.log`),
    });
    this.proc = proc;
    this.history.push(proc);
    await proc.waitForLine((l) => l.includes('"msg":"ready"'), timeoutMs, { what: 'the ready line' });
    return proc;
  }

  /** SIGTERM and wait (the daemon removes what it placed). */
  async stop(): Promise<StopResult> {
    if (!this.proc) throw new Error('daemon not started');
    return this.env.lab.stop(this.proc, { timeoutMs: 8000 });
  }

  /** SIGKILL by PID, and wait until it is gone. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p) throw new Error('daemon not started');
    process.kill(p.pid, 'SIGKILL');
    await p.exited;
  }

  /** Send a signal by PID (e.g. SIGHUP). */
  signal(sig: NodeJS.Signals): void {
    process.kill(this.pid, sig);
  }

  /** Output lines of the current process parsed as JSON log records. */
  logLines(): Array<Record<string, unknown>> {
    if (!this.proc) return [];
    return this.proc
      .tail(2000)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  }
}
