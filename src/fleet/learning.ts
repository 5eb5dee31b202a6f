// Learning (packet flow 4) with the policy in the store (fleet.md): a record
// this host learns is written at lookup_records/<vsid>/<customer_address>,
// type dynamic, on a lease of learning.ttl_seconds; the lease is renewed
// only while the packet core keeps reporting the address (its last-seen
// time moves), so a VM that goes quiet is forgotten by every host when the
// lease runs out. A static record in the store is never overwritten: the
// write compares the key's mod revision with the one read.

import type { EventBus, PolicyEvent } from '../api/events.js';
import type { Logger } from '../daemon/log.js';
import type { PolicyStore } from '../daemon/store.js';
import type { LookupRecord } from '../model/policy.js';
import type { FleetSource } from './source.js';
import { recordKey } from './view.js';

interface Held {
  lease: string;
  /** The last-seen time (ms) the lease was last renewed for. */
  renewedFor: number;
}

export class FleetLearning {
  private readonly held = new Map<string, Held>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly source: FleetSource,
    private readonly store: PolicyStore,
    private readonly events: EventBus,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.unsubscribe = this.events.subscribe((e) => this.onEvent(e.data));
    // A third of the TTL: a refreshed record's lease never runs out between renewals.
    const every = Math.max(1000, (this.store.policy.learning.ttl_seconds * 1000) / 3);
    this.timer = setInterval(() => this.queue(() => this.renew()), every);
  }

  stop(): void {
    clearInterval(this.timer);
    this.unsubscribe?.();
  }

  /** One store operation at a time, in event order. */
  private queue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err) => this.log.warn({ err: (err as Error).message }, 'cannot write a learned record to the policy store'));
  }

  /** Settled once every write queued so far is done (tests). */
  idle(): Promise<void> {
    return this.chain;
  }

  private key(r: LookupRecord): string {
    return this.source.root + recordKey('lookup_records', r);
  }

  private onEvent(e: PolicyEvent): void {
    if (e.event === 'learned' || e.event === 'changed') this.queue(() => this.publish(e.record));
    else if (e.event === 'expired' || (e.event === 'deleted' && e.cause !== 'fleet')) this.queue(() => this.withdraw(e.record));
  }

  private async publish(r: LookupRecord): Promise<void> {
    const etcd = this.source.etcd;
    const key = this.key(r);
    const cur = await etcd.get(key);
    if (cur) {
      let type: unknown;
      try {
        type = (JSON.parse(cur.value) as { type?: unknown }).type;
      } catch {
        type = undefined;
      }
      if (type !== 'dynamic') {
        this.log.info({ key, type }, 'learned record not written to the policy store: a record that is not dynamic holds its key');
        return;
      }
      if (cur.value === JSON.stringify(r) && this.held.has(key)) return;
    }
    const ttl = this.store.policy.learning.ttl_seconds;
    const lease = await etcd.leaseGrant(ttl);
    const { succeeded } = await etcd.txn([{ key, modRevision: cur?.modRevision ?? 0 }], [{ put: { key, value: JSON.stringify(r), lease } }]);
    if (!succeeded) {
      await etcd.leaseRevoke(lease);
      this.log.info({ key }, 'learned record not written to the policy store: its key changed meanwhile');
      return;
    }
    const old = this.held.get(key);
    this.held.set(key, { lease, renewedFor: Date.now() });
    if (old) await etcd.leaseRevoke(old.lease);
  }

  private async withdraw(r: LookupRecord): Promise<void> {
    const key = this.key(r);
    const h = this.held.get(key);
    if (!h) return;
    this.held.delete(key);
    // Only what this lease holds goes: a key another host wrote since is its own.
    await this.source.etcd.leaseRevoke(h.lease);
  }

  /** Renew the leases of the records whose last-seen time moved since their last renewal. */
  private async renew(): Promise<void> {
    if (!this.held.size || !this.source.up) return;
    for (const { record, last_seen } of this.store.learnedRecords()) {
      const key = this.key(record);
      const h = this.held.get(key);
      if (!h || last_seen.getTime() <= h.renewedFor) continue;
      if (await this.source.etcd.leaseKeepAlive(h.lease)) h.renewedFor = last_seen.getTime();
      else {
        this.held.delete(key);
        await this.publish(record); // the lease ran out while the address was still seen: write it again
      }
    }
  }
}
