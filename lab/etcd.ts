// etcd members for tests, the lab and the fleet benchmark: Debian 12's etcd
// 3.4 (`etcd-server`), run in a network namespace of their own, each with a
// data directory of its own; never the system's etcd. Members talk to each
// other over the namespace's loopback; clients reach them through a Unix
// socket in `dir` (`unix:///…`), which crosses namespaces without a route.
// Every member is killed by PID and the namespace deleted by stop(), also
// when the process exits without calling it.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd } from '../src/fleet/etcd.js';

export interface EtcdClusterOptions {
  /** The namespace to create (must not exist). */
  ns: string;
  /** Where data directories, sockets and logs go. */
  dir: string;
  /** Members: 1 or 3 (default 1). */
  members?: number;
  /** --quota-backend-bytes (default etcd's 2 GiB). */
  quotaBytes?: number;
}

const live = new Set<EtcdCluster>();
process.on('exit', () => {
  for (const c of live) c.stopSync();
});

export class EtcdCluster {
  private procs: Array<ChildProcess | undefined> = [];
  readonly names: string[];
  private stopped = false;

  private constructor(private readonly o: Required<EtcdClusterOptions>) {
    this.names = Array.from({ length: o.members }, (_, i) => `m${i}`);
  }

  static async start(opts: EtcdClusterOptions): Promise<EtcdCluster> {
    const c = new EtcdCluster({ members: 1, quotaBytes: 0, ...opts });
    mkdirSync(opts.dir, { recursive: true });
    const add = spawnSync('ip', ['netns', 'add', opts.ns]);
    if (add.status !== 0) throw new Error(`ip netns add ${opts.ns}: ${add.stderr}`);
    live.add(c);
    spawnSync('ip', ['-n', opts.ns, 'link', 'set', 'lo', 'up']);
    try {
      for (let i = 0; i < c.o.members; i++) c.startMember(i);
      await c.waitHealthy();
    } catch (err) {
      c.stopSync();
      throw err;
    }
    return c;
  }

  /** The clients' URL of member `i`. */
  endpoint(i: number): string {
    return `unix://${join(this.o.dir, `${this.names[i]}:2379`)}`;
  }

  get endpoints(): string[] {
    return this.names.map((_, i) => this.endpoint(i));
  }

  client(): Etcd {
    return new Etcd(this.endpoints, { timeoutMs: 3000 });
  }

  /** Start member `i` (again, after kill: same data directory). */
  startMember(i: number): void {
    const name = this.names[i]!;
    const peer = (j: number) => `http://127.0.0.1:${2380 + 2 * j}`;
    // A killed member leaves its socket behind: it could not listen on it again.
    rmSync(join(this.o.dir, `${name}:2379`), { force: true });
    const log = openSync(join(this.o.dir, `${name}.log`), 'a');
    const args = [
      'netns', 'exec', this.o.ns, 'etcd',
      '--name', name,
      '--data-dir', join(this.o.dir, `${name}.data`),
      // A socket named host:port, made in the working directory.
      '--listen-client-urls', `unix://${name}:2379`,
      '--advertise-client-urls', `unix://${name}:2379`,
      '--listen-peer-urls', peer(i),
      '--initial-advertise-peer-urls', peer(i),
      '--initial-cluster', this.names.map((n, j) => `${n}=${peer(j)}`).join(','),
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', this.o.ns,
      ...(this.o.quotaBytes ? ['--quota-backend-bytes', String(this.o.quotaBytes)] : []),
    ];
    const p = spawn('ip', args, { cwd: this.o.dir, stdio: ['ignore', log, log] });
    closeSync(log);
    this.procs[i] = p;
  }

  /** SIGKILL member `i` (it stays down until startMember). */
  async killMember(i: number): Promise<void> {
    const p = this.procs[i];
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
    this.procs[i] = undefined;
  }

  /** Every running member answers a read. */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < this.o.members; i++) {
      if (!this.procs[i]) continue;
      const one = new Etcd([this.endpoint(i)], { timeoutMs: 1000 });
      try {
        for (;;) {
          try {
            await one.rangePrefix('/health-check/');
            break;
          } catch (err) {
            if (Date.now() > deadline) throw new Error(`etcd member ${this.names[i]} not healthy within ${timeoutMs} ms: ${(err as Error).message} (log: ${join(this.o.dir, `${this.names[i]}.log`)})`);
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      } finally {
        one.close();
      }
    }
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.procs.length; i++) await this.killMember(i);
    this.stopSync();
  }

  /** Kill every member by PID, delete the namespace (synchronous: also on process exit). */
  stopSync(): void {
    if (this.stopped) return;
    for (const p of this.procs) {
      if (p?.pid && p.exitCode === null) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    spawnSync('ip', ['netns', 'del', this.o.ns]);
    this.stopped = true;
    live.delete(this);
  }
}
