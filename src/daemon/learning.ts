// The control plane of learning (packet flow 4). The packet core reports
// candidate Dynamic lookup records (native drainLearned(): the sender of an
// ARP reply that crossed hosts, only from the PA holding the sender MAC's
// record; then, while the VM talks, the source of its frames again: each key
// at most every 10 s per worker: that is the refresh). Here:
//
// - every ~200 ms the candidates are drained and decided in one batch,
//   against the running policy (decideLearning, below):
//     a static (any non-dynamic) record at (vsid, CA) wins: an identical one
//       is nothing to learn, a different one refuses the address
//       (static_conflict);
//     a new address in a VSID that already holds `learning.max_per_vsid`
//       learned records is refused (limit);
//     otherwise the record is added, changed (the VM moved: the core vouched
//       for the new MAC/PA), or, unchanged, only its last-seen time moves;
//   what changes the policy goes through the PolicyStore as ONE commit per
//   batch (validated whole, applied, persisted: PolicyStore.learn);
// - every second, learned records not refreshed for `learning.ttl_seconds`
//   are removed, again in one commit (PolicyStore.expireLearned).
//
// Only records this host learned expire; dynamic records from the config
// file or the API are the operator's. Which records are learned, and when
// each was last seen, is kept by the store and saved with the policy.

import { parseIp, parseMac } from '../config/index.js';
import type { KeyedPolicy } from '../model/keyed.js';
import type { LookupRecord } from '../model/policy.js';
import type { RefusalReason } from '../api/events.js';
import type { Logger } from './log.js';
import type { PolicyStore } from './store.js';

/** What the packet core reports (native LearnedAddress). */
export interface LearnedAddress {
  vsid: number;
  customer_address: string;
  mac: string;
  provider_address: string;
}

/** The part of the packet core learning needs (a fake in tests). */
export interface LearningCore {
  drainLearned(): LearnedAddress[];
}

/** A record this host learned: what it learned and when the core last reported it. */
export interface LearnedEntry {
  vsid: number;
  customer_address: string;
  mac: string;
  provider_address: string;
  /** ms since the epoch. */
  lastSeen: number;
}

/** (vsid, CA) identifies a learned record, as it does every record with a CA. */
export const learnedKey = (vsid: number, ca: string): string => `${vsid}|${ca}`;

export interface Refusal {
  record: LookupRecord;
  reason: RefusalReason;
  existing?: LookupRecord;
  detail?: string;
}

export interface LearningDecision {
  /** Records to add (no `previous`) or to change, at most one per key, in arrival order. */
  upserts: Array<{ record: LookupRecord; previous?: LookupRecord }>;
  /** Keys of learned records reported again unchanged: only their last-seen time moves. */
  refreshed: string[];
  refused: Refusal[];
}

const hasCa = (r: LookupRecord) => r.type === 'static' || r.type === 'dynamic';

/** A candidate as a lookup record in normal form, or why it cannot be one. */
export function candidateRecord(c: LearnedAddress): { record: LookupRecord } | { record: LookupRecord; problem: string } {
  const ca = parseIp(String(c.customer_address));
  const pa = parseIp(String(c.provider_address));
  const mac = parseMac(String(c.mac));
  const record: LookupRecord = {
    customer_address: ca.ok ? ca.value.text : String(c.customer_address),
    vsid: c.vsid,
    mac: mac.ok ? mac.value : String(c.mac),
    provider_address: pa.ok ? pa.value.text : String(c.provider_address),
    rule: 'encap',
    type: 'dynamic',
  };
  if (!ca.ok) return { record, problem: `customer_address: ${ca.reason}` };
  if (!pa.ok) return { record, problem: `provider_address: ${pa.reason}` };
  if (!mac.ok) return { record, problem: `mac: ${mac.reason}` };
  return { record };
}

/**
 * Decide a batch of candidates against the running policy and the records
 * learned so far (`perVsid`: how many per VSID, counted from `learned` if
 * not given). Pure: the caller commits the upserts and keeps the clocks.
 * Looks up only the candidates' keys: the policy is never scanned.
 */
export function decideLearning(
  policy: Pick<KeyedPolicy, 'byCa'>,
  learned: ReadonlyMap<string, LearnedEntry>,
  candidates: readonly LearnedAddress[],
  maxPerVsid: number,
  learnedPerVsid?: ReadonlyMap<number, number>,
): LearningDecision {
  const out: LearningDecision = { upserts: [], refreshed: [], refused: [] };
  if (candidates.length === 0) return out;
  const perVsid = new Map(learnedPerVsid);
  if (!learnedPerVsid) for (const e of learned.values()) perVsid.set(e.vsid, (perVsid.get(e.vsid) ?? 0) + 1);
  /** key → index in out.upserts (a key reported twice in one batch: the later report wins). */
  const pending = new Map<string, number>();
  const refreshed = new Set<string>();

  for (const c of candidates) {
    const cand = candidateRecord(c);
    const rec = cand.record;
    if ('problem' in cand) {
      out.refused.push({ record: rec, reason: 'invalid', detail: cand.problem });
      continue;
    }
    const key = learnedKey(rec.vsid, rec.customer_address);
    const same = (r: LookupRecord) => r.mac === rec.mac && r.provider_address === rec.provider_address;
    const at = pending.get(key);
    if (at !== undefined) {
      const u = out.upserts[at]!;
      if (!same(u.record)) u.record = { ...u.record, mac: rec.mac, provider_address: rec.provider_address };
      continue;
    }
    const found = policy.byCa(rec.vsid, rec.customer_address);
    const existing = found && hasCa(found) ? found : undefined;
    if (existing && existing.type !== 'dynamic') {
      // A static record wins. The same mapping is simply nothing to learn.
      if (!same(existing)) out.refused.push({ record: rec, reason: 'static_conflict', existing });
      continue;
    }
    const mine = learned.get(key);
    if (existing && same(existing)) {
      // Unchanged: a learned record is refreshed; an operator's dynamic record is left alone.
      if (mine && !refreshed.has(key)) {
        refreshed.add(key);
        out.refreshed.push(key);
      }
      continue;
    }
    // New to the learned set: a VSID holds at most maxPerVsid learned records.
    if (!mine) {
      const n = perVsid.get(rec.vsid) ?? 0;
      if (n >= maxPerVsid) {
        out.refused.push({ record: rec, reason: 'limit' });
        continue;
      }
      perVsid.set(rec.vsid, n + 1);
    }
    pending.set(key, out.upserts.length);
    // A changed record keeps its other fields (rule, vm_name): only where the VM is moves.
    out.upserts.push(existing ? { record: { ...existing, mac: rec.mac, provider_address: rec.provider_address }, previous: existing } : { record: rec });
  }
  return out;
}

export interface LearningOptions {
  /** How often the core's candidates are drained. Default 200 ms. */
  drainMs?: number;
  /** How often expired records are looked for. Default 1 s. */
  sweepMs?: number;
  /** How often refreshed last-seen times are saved when nothing else changed. Default 30 s. */
  flushMs?: number;
  /** The clock (ms since the epoch). */
  now?: () => number;
}

/** Drives learning: drains the core, hands batches to the store, expires, saves the clocks. */
export class Learning {
  private timers: NodeJS.Timeout[] = [];
  private draining = false;
  private sweeping = false;
  private readonly now: () => number;

  constructor(
    private readonly core: LearningCore,
    private readonly store: PolicyStore,
    private readonly log: Logger,
    private readonly opts: LearningOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    if (this.timers.length) return;
    this.timers.push(setInterval(() => void this.drain(), this.opts.drainMs ?? 200));
    this.timers.push(setInterval(() => void this.sweep(), this.opts.sweepMs ?? 1000));
    this.timers.push(setInterval(() => void this.flush(), this.opts.flushMs ?? 30_000));
    for (const t of this.timers) t.unref();
  }

  /** Stop the timers and save the last-seen times (the daemon is stopping). */
  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    try {
      this.store.saveLearnedClocks();
    } catch (err) {
      this.log.error({ err }, 'cannot save the learned records\' last-seen times');
    }
  }

  /** One drain: what the core learned since the last, as one batch. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      let batch: LearnedAddress[];
      try {
        batch = this.core.drainLearned();
      } catch (err) {
        this.log.error({ err }, 'cannot drain learned addresses from the packet core');
        return;
      }
      if (batch.length === 0) return;
      await this.store.learn(batch, this.now());
    } catch (err) {
      // Nothing was applied; the core reports the addresses again (each every 10 s while traffic lasts).
      this.log.error({ err }, 'learning: a batch could not be applied');
    } finally {
      this.draining = false;
    }
  }

  /** One expiry pass. */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      await this.store.expireLearned(this.now());
    } catch (err) {
      this.log.error({ err }, 'learning: expired records could not be removed');
    } finally {
      this.sweeping = false;
    }
  }

  async flush(): Promise<void> {
    try {
      await this.store.flushLearnedClocks();
    } catch (err) {
      this.log.error({ err }, 'cannot save the learned records\' last-seen times');
    }
  }
}
