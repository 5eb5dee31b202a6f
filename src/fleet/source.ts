// The fleet's watcher (fleet.md): at start, and after every watch that
// breaks or is compacted away, read every key at one revision R, apply the
// difference from what runs, watch from R + 1. Changes arrive in revision
// order and go to the policy store as deltas (only the records whose keys
// changed). A revision whose result does not validate is refused: the last
// valid policy keeps running, the host's status key, log and metrics say
// why, and the next revision whose result is valid is applied. While the
// store is unreachable forwarding goes on with what runs (saved in
// state_dir by the policy store); the watcher retries and resyncs.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { readConfigFile } from '../config/index.js';
import { isNvgreError } from '../errors.js';
import type { PolicyChange } from '../model/change.js';
import { sameRecord } from '../model/keyed.js';
import type { Policy } from '../model/policy.js';
import { RESOURCES, type AnyRecord, type Section } from '../model/resources.js';
import type { Logger } from '../daemon/log.js';
import type { PolicyStore } from '../daemon/store.js';
import { CompactedError, type Etcd, type WatchBatch } from './etcd.js';
import { FleetView, identityOf, keyRoot, placeOf, statusKey } from './view.js';

/** A host's status key's value (fleet.md). */
export interface HostStatus {
  revision: number;
  applied_at: string | null;
  error: string | null;
  version: string;
}

/** The status key's lease (fleet.md): gone 10 s after its daemon. */
export const STATUS_TTL_SECONDS = 10;
const KEEPALIVE_MS = 3000;
/** Renewals in a row without an answer after which the store is taken for silent. */
const SILENT_AFTER = 2;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;

export interface FleetSourceOptions {
  etcd: Etcd;
  prefix: string;
  host: string;
  /** The config file's policy: its settings and host-local records. */
  file: Policy;
  store: PolicyStore;
  log: Logger;
  version: string;
  /** Where the nvgre_policy_store_* metrics go. */
  registry?: Registry;
}

interface Pending {
  revision: number;
  received: number;
  events: Array<{ rel: string; value: string | undefined }>;
}

export class FleetSource {
  readonly root: string;
  private view: FleetView;
  /** What this host runs, by record identity (rebuilt from the store's policy when something else changed it). */
  private applied = new Map<string, { section: Section; record: AnyRecord }>();
  private appliedGeneration = -1;
  /** Identities whose desired record may differ from the applied one. */
  private dirty = new Set<string>();
  private pending: Pending[] = [];
  private draining: Promise<void> | undefined;
  private watch: { cancel(): void } | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private keepalive: NodeJS.Timeout | undefined;
  private lease = '0';
  /** Renewals of the status lease in a row that got no answer. */
  private unanswered = 0;
  /** The status key does not say what runs (its last write failed). */
  private statusStale = false;
  private statusWrites: Promise<void> = Promise.resolve();
  private waiters: Array<{ revision: number; resolve(): void; reject(e: Error): void }> = [];
  /** The store revision whose state this host runs (0: none yet). */
  revision = 0;
  appliedAt: Date | null = null;
  /** Why the last revision was refused; null once one is applied. */
  error: string | null = null;
  /** The revision last seen from the store (applied or refused). */
  seen = 0;
  up = false;
  rejected = 0;
  private readonly applySeconds: Histogram | undefined;

  constructor(private readonly o: FleetSourceOptions) {
    this.root = keyRoot(o.prefix);
    this.view = new FleetView(o.host, o.file);
    const r = o.registry;
    if (r) {
      const self = this;
      new Gauge({ name: 'nvgre_policy_store_up', help: 'Whether the policy store (etcd) is reachable and watched.', registers: [r], collect() { this.set(self.up ? 1 : 0); } });
      new Gauge({ name: 'nvgre_policy_store_revision', help: 'The policy store revision whose state this host runs.', registers: [r], collect() { this.set(self.revision); } });
      new Counter({
        name: 'nvgre_policy_store_rejected_revisions_total',
        help: "Store revisions not applied because they would make this host's policy invalid.",
        registers: [r],
        collect() {
          this.reset();
          this.inc(self.rejected);
        },
      });
      this.applySeconds = new Histogram({
        name: 'nvgre_policy_store_apply_seconds',
        help: "Time from a revision's arrival from the store (its watch event; etcd does not send commit times) to its application on this host.",
        buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        registers: [r],
      });
    }
  }

  private get log(): Logger {
    return this.o.log;
  }

  /** Start watching (in the background: the daemon is ready with what it runs, store or no store). */
  start(): void {
    this.loop = this.run();
    this.keepalive = setInterval(() => void this.renewStatus(), KEEPALIVE_MS);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.keepalive);
    this.watch?.cancel();
    await this.loop;
    await this.draining;
    for (const w of this.waiters.splice(0)) w.reject(new Error('the daemon is stopping'));
    if (this.lease !== '0') await this.o.etcd.leaseRevoke(this.lease).catch(() => undefined);
  }

  /** SIGHUP: the config file again (its host-local records; settings wait for a restart, as without a store). */
  async reloadFile(path: string): Promise<void> {
    try {
      const { policy } = await readConfigFile(path);
      if (policy.customer_routes.length) throw new Error("customer_routes: a host whose policy is in policy_store has none in its file (they are the fleet's, in etcd)");
      await this.setFile(policy);
      this.log.info({ config: path }, 'config file reloaded');
    } catch (err) {
      this.log.error({ err: (err as Error).message, config: path }, 'reload failed: the running policy is unchanged');
      throw err;
    }
  }

  /** A new config file: its host-local records, applied with the store's. */
  async setFile(file: Policy): Promise<void> {
    for (const id of this.view.setFile(file)) this.dirty.add(id);
    await this.enqueue({ revision: this.seen, received: Date.now(), events: [] });
  }

  /** Resolves once this host has applied revision `revision` or a later one; rejects if it refused one at or after it. */
  waitApplied(revision: number): Promise<void> {
    if (this.revision >= revision) return Promise.resolve();
    if (this.error && this.seen >= revision) return Promise.reject(new Error(this.error));
    return new Promise((resolve, reject) => this.waiters.push({ revision, resolve, reject }));
  }

  private settleWaiters(): void {
    this.waiters = this.waiters.filter((w) => {
      if (this.revision >= w.revision) w.resolve();
      else if (this.error && this.seen >= w.revision) w.reject(new Error(this.error));
      else return true;
      return false;
    });
  }

  private async run(): Promise<void> {
    let delay = RETRY_MIN_MS;
    while (!this.stopped) {
      try {
        const from = await this.sync();
        delay = RETRY_MIN_MS;
        if (this.stopped) return; // stop() came while reading: no watch to cancel yet
        await this.watchFrom(from);
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof CompactedError) {
          this.log.warn({ compact_revision: err.compactRevision }, 'the store compacted the revisions being watched: reading everything again');
          continue;
        }
        if (this.up) this.log.error({ err: (err as Error).message }, 'the policy store is unreachable: forwarding goes on with the policy this host runs; retrying');
        this.up = false;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  /** Read every key at one revision, make the view of it, apply the difference from what runs. Returns where to watch from. */
  private async sync(): Promise<number> {
    const { revision, kvs } = await this.o.etcd.rangePrefix(this.root);
    await this.draining; // an apply under way finishes against the old view
    const view = new FleetView(this.o.host, this.view.settings);
    for (const kv of kvs) view.set(kv.key.slice(this.root.length), kv.value);
    this.view = view;
    this.pending = [];
    this.refreshApplied(true);
    for (const id of this.applied.keys()) this.dirty.add(id);
    for (const id of view.ids()) this.dirty.add(id);
    if (!this.up) this.log.info({ revision, keys: kvs.length }, 'the policy store is reachable: synchronized');
    this.up = true;
    await this.enqueue({ revision, received: Date.now(), events: [] });
    return revision + 1;
  }

  private watchFrom(start: number): Promise<void> {
    const w = this.o.etcd.watchPrefix(this.root, start, (b) => this.onBatch(b));
    this.watch = w;
    return w.done;
  }

  private onBatch(b: WatchBatch): void {
    const received = Date.now();
    // Whole revisions, in order; a revision that touches only status keys changes no host's policy.
    let cur: Pending | undefined;
    for (const e of b.events) {
      const rel = e.kv.key.slice(this.root.length);
      if (cur?.revision !== e.kv.modRevision) {
        cur = { revision: e.kv.modRevision, received, events: [] };
        this.pending.push(cur);
      }
      cur.events.push({ rel, value: e.type === 'put' ? e.kv.value : undefined });
    }
    void this.enqueue();
  }

  /** Apply what is pending (one apply at a time; what arrives meanwhile is applied together next). */
  private enqueue(extra?: Pending): Promise<void> {
    if (extra) this.pending.push(extra);
    const next = (this.draining ?? Promise.resolve()).then(() => this.drain());
    this.draining = next.catch((err) => this.log.error({ err }, 'applying the policy store revisions failed'));
    return next;
  }

  private async drain(): Promise<void> {
    if (!this.pending.length) return;
    const batch = this.pending;
    this.pending = [];
    let relevant = false;
    for (const p of batch) {
      for (const e of p.events) {
        if (placeOf(e.rel).kind === 'record') relevant = true;
        for (const id of this.view.set(e.rel, e.value)) this.dirty.add(id);
      }
      if (!p.events.length) relevant = true; // a resync or a new file
    }
    const last = batch[batch.length - 1]!;
    if (!relevant) return;
    await this.applyDirty(last.revision, batch[0]!.received);
  }

  /** The applied map from the store's policy, when something other than this watcher changed it (or `force`). */
  private refreshApplied(force = false): void {
    if (!force && this.appliedGeneration === this.o.store.generation) return;
    const m = new Map<string, { section: Section; record: AnyRecord }>();
    const p = this.o.store.policy;
    for (const res of RESOURCES) for (const r of p[res.section] as AnyRecord[]) m.set(identityOf(res.section, r), { section: res.section, record: r });
    this.applied = m;
    this.appliedGeneration = this.o.store.generation;
  }

  private async applyDirty(revision: number, received: number): Promise<void> {
    this.seen = Math.max(this.seen, revision);
    if (this.view.errors.size) {
      const [key, why] = this.view.errors.entries().next().value as [string, string];
      await this.refuse(revision, this.view.errors.size > 1 ? `${why} (and ${this.view.errors.size - 1} more bad values)` : why, key);
      return;
    }
    this.refreshApplied();
    const changes: PolicyChange[] = [];
    /** Per change, its identity and what runs after it. */
    const after: Array<[string, { section: Section; record: AnyRecord } | undefined]> = [];
    for (const id of this.dirty) {
      const d = this.view.desired(id);
      const cur = this.applied.get(id);
      if (d) {
        if (cur && sameRecord(cur.record, d.record)) continue;
        changes.push(cur ? { op: 'put', section: d.section, record: d.record, previous: cur.record } : { op: 'put', section: d.section, record: d.record });
        after.push([id, d]);
      } else if (cur) {
        changes.push({ op: 'delete', section: cur.section, record: cur.record });
        after.push([id, undefined]);
      }
    }
    if (changes.length) {
      try {
        await this.o.store.applyChanges(changes, 'fleet', { validated: true });
      } catch (err) {
        if (!isNvgreError(err)) throw err;
        await this.refuse(revision, err.message);
        return;
      }
      for (const [id, v] of after) {
        if (v) this.applied.set(id, v);
        else this.applied.delete(id);
      }
      this.appliedGeneration = this.o.store.generation;
      this.log.info({ revision, changes: changes.length }, 'policy store revision applied');
    }
    this.dirty.clear();
    this.revision = revision;
    this.appliedAt = new Date();
    if (this.error) this.log.info({ revision }, 'policy store revision applied: the policy is valid again');
    this.error = null;
    this.applySeconds?.observe((Date.now() - received) / 1000);
    this.settleWaiters();
    await this.writeStatus();
  }

  private async refuse(revision: number, why: string, key?: string): Promise<void> {
    this.error = `revision ${revision}: ${why}`;
    this.rejected++;
    this.log.error({ revision, running_revision: this.revision, key, reason: why }, `policy store revision refused: it would make this host's policy invalid; revision ${this.revision} keeps running`);
    this.settleWaiters();
    await this.writeStatus();
  }

  status(): HostStatus {
    return { revision: this.revision, applied_at: this.appliedAt?.toISOString() ?? null, error: this.error, version: this.o.version };
  }

  /**
   * Put the status key on the lease (a new lease if the old one is gone); a
   * write that fails is tried again at the next renewal. One write at a
   * time, each of the status as it is when it runs: a slow write cannot land
   * after a newer one.
   */
  private writeStatus(): Promise<void> {
    const next = this.statusWrites.then(() => this.putStatus());
    this.statusWrites = next;
    return next;
  }

  private async putStatus(): Promise<void> {
    try {
      this.statusStale = true;
      if (this.lease === '0') this.lease = await this.o.etcd.leaseGrant(STATUS_TTL_SECONDS);
      await this.o.etcd.put(this.root + statusKey(this.o.host), JSON.stringify(this.status()), this.lease);
      this.statusStale = false;
    } catch (err) {
      if (/lease not found/i.test((err as Error).message)) {
        this.lease = '0';
        return this.putStatus();
      }
      this.log.warn({ err: (err as Error).message }, 'cannot write this host status to the policy store');
    }
  }

  /** Keep the status lease alive; a lost lease is replaced and a status key that does not say what runs written again; a store that does not answer is resynced. */
  private async renewStatus(): Promise<void> {
    if (this.stopped || !this.up) return;
    try {
      if (this.lease === '0' || !(await this.o.etcd.leaseKeepAlive(this.lease))) {
        this.lease = '0';
        await this.writeStatus();
      } else if (this.statusStale || this.view.statuses.get(this.o.host) !== JSON.stringify(this.status())) {
        // The watch shows the key as the store holds it: a write that timed out but landed late, or one lost, is put right.
        await this.writeStatus();
      }
      this.unanswered = 0;
    } catch (err) {
      // One renewal unanswered is a busy store or host (a million records resynced cost far more than
      // waiting); twice in a row, the watch may not notice a member that went silent: start over (resync) on another.
      if (++this.unanswered < SILENT_AFTER) return;
      this.unanswered = 0;
      this.log.warn({ err: (err as Error).message }, 'the policy store does not answer: resynchronizing');
      this.up = false;
      this.watch?.cancel();
    }
  }

  /** Every host's status value as this host last read it (fleet show). */
  statuses(): Map<string, string> {
    return this.view.statuses;
  }

  /** Where the record this host runs for `section`'s `record` comes from (file, hosts/<me>/, fleet-wide). */
  origin(section: Section, record: AnyRecord): 'file' | 'host' | 'fleet' | undefined {
    return this.view.origin(identityOf(section, record));
  }

  get host(): string {
    return this.o.host;
  }

  get etcd(): Etcd {
    return this.o.etcd;
  }
}
