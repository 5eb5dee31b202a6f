// The running policy and every way it changes: one record (API, CLI), a
// batch (learning, expiry, the fleet's watcher), a whole document (bulk
// apply, reload: validated whole, then turned into the changes it makes).
// All of them are PolicyChanges through one path (applyChanges): applied to
// the keyed policy in place, checked where they can matter (with the whole
// document's rules and messages), applied to the dataplane, written to the
// state file, and only then acknowledged. A change that fails at any step
// leaves the running policy, the dataplane and the state as they were.

import type { DeleteCause, EventBus, NewEvent, RefusalReason } from '../api/events.js';
import { checkPolicy, readConfigFile, validatePolicy } from '../config/index.js';
import { configError, nvgreError, type FieldError } from '../errors.js';
import type { PolicyChange } from '../model/change.js';
import { KeyedPolicy, identityOf, policySettings, sameRecord, type Applied } from '../model/keyed.js';
import type { LookupRecord, Policy } from '../model/policy.js';
import {
  RESOURCES,
  matchesFilter,
  matchesKey,
  type AnyRecord,
  type Filter,
  type Resource,
  type Section,
} from '../model/resources.js';
import type { HostDataplane } from './host.js';
import { decideLearning, learnedKey, type LearnedAddress, type LearnedEntry, type Refusal } from './learning.js';
import type { Logger } from './log.js';
import type { JournalEntry, LearnedState, SavedState, StateFile } from './state.js';

/** Settings read once at start; a changed value waits for a restart. */
export const RESTART_SETTINGS = ['api.socket', 'metrics.listen', 'metrics.per_vsid', 'metrics.per_vsid_max', 'state_dir'] as const;

type Counts = { added: number; removed: number; changed: number };

export interface ApplyResult {
  applied: true;
  changes: Record<Section, Counts>;
  restart_required: string[];
}

export interface ReloadStatus {
  successful: boolean;
  timestamp: Date;
  error: string | null;
  /** When the config was last loaded successfully (the start counts). */
  lastSuccess: Date;
}

function setting(p: Policy, name: (typeof RESTART_SETTINGS)[number]): unknown {
  switch (name) {
    case 'api.socket':
      return p.api.socket;
    case 'metrics.listen':
      return p.metrics.listen;
    case 'metrics.per_vsid':
      return p.metrics.per_vsid;
    case 'metrics.per_vsid_max':
      return p.metrics.per_vsid_max;
    case 'state_dir':
      return p.state_dir;
  }
}

/** What a commit is: an operator's change (how it reached the daemon), or learning's own. */
export type Cause = DeleteCause | 'learning' | 'expiry';

const LOOKUP = RESOURCES.find((r) => r.section === 'lookup_records')!;

/** Learning's counters (nvgre_learned_total, nvgre_learning_refused_total, nvgre_learned_expired_total). */
export interface LearningStats {
  /** Records added or changed by learning. */
  learned_total: number;
  expired_total: number;
  refused: Record<RefusalReason, number>;
}

/** What one batch of learning did. */
export interface LearnOutcome {
  learned: LookupRecord[];
  changed: Array<{ record: LookupRecord; previous: LookupRecord }>;
  refreshed: number;
  refused: Refusal[];
}

export interface StoreOptions {
  /** Where learning and deletions of learned records are announced (GET /v1/events). */
  events?: EventBus;
  /** The learned records saved with the policy (state file), to carry on with their clocks. */
  learned?: readonly LearnedState[];
  /** The clock, ms since the epoch. */
  now?: () => number;
  /** Where learning's own lines go (default: the store's logger). */
  learningLog?: Logger;
  /** SHA-256 of the config file the running policy grew from (saved with it: which policy a start runs). */
  configSha256?: string;
}

/** How a commit is told what else changes with the policy. */
interface CommitOptions {
  /** The learned set after the change (default: the current one, as far as the next policy holds it). */
  learned?: ReadonlyMap<string, LearnedEntry>;
  /** Learned keys whose loss is not announced as `deleted` (expiry announces its own). */
  quiet?: ReadonlySet<string>;
  /** SHA-256 of the config file the next policy grew from (a reload); default: unchanged. */
  origin?: string;
  /** The whole next policy, validated (a document's changes): its settings and its order are taken too. */
  document?: Policy;
}

/** What applyChanges did. */
export interface ChangeResult {
  /** The changes as applied (`previous` as found; no-ops left out). */
  changes: PolicyChange[];
  counts: Record<Section, Counts>;
}

const hasCa = (r: LookupRecord) => r.type === 'static' || r.type === 'dynamic';
const sameMapping = (a: { mac: string; provider_address: string }, b: { mac: string; provider_address: string }) =>
  a.mac === b.mac && a.provider_address === b.provider_address;
/** Refused addresses are logged at most this often per VSID and reason (each is counted and announced). */
const REFUSAL_LOG_MS = 60_000;
/** The settings as text (they change rarely: compared whole). */
const settingsOf = (p: Policy): string => JSON.stringify(policySettings(p));

export class PolicyStore {
  private keyed: KeyedPolicy;
  private queue: Promise<unknown> = Promise.resolve();
  /** Increases with every applied change. */
  generation = 0;
  lastReload: ReloadStatus;
  /** The dynamic records of the running policy that this host learned, by (vsid, CA). */
  private learned = new Map<string, LearnedEntry>();
  /** Learned records per VSID (learning.max_per_vsid). */
  private learnedPerVsid = new Map<number, number>();
  /** Last-seen times moved since the state file was last written. */
  private clocksDirty = false;
  readonly learningStats: LearningStats = { learned_total: 0, expired_total: 0, refused: { limit: 0, static_conflict: 0, invalid: 0 } };
  private readonly events: EventBus | undefined;
  private readonly now: () => number;
  private readonly learnLog: Logger;
  private readonly refusalLogged = new Map<string, { at: number; suppressed: number }>();
  /** SHA-256 of the config file the running policy grew from. */
  private origin: string | undefined;
  /** Why the last write of the state file failed; null once one succeeds. */
  private saveError: string | null = null;

  constructor(
    private readonly host: HostDataplane,
    private readonly state: StateFile | undefined,
    /** The policy the daemon started with: its settings are the effective ones. */
    private readonly started: Policy,
    readonly configFile: string,
    private readonly log: Logger,
    /** Told when a reload starts and ends (systemd's RELOADING/READY). */
    private readonly reloadHooks: { start(): void; end(): void } = { start() {}, end() {} },
    opts: StoreOptions = {},
  ) {
    this.keyed = new KeyedPolicy(host.policy);
    this.events = opts.events;
    this.now = opts.now ?? Date.now;
    this.learnLog = opts.learningLog ?? log;
    this.origin = opts.configSha256;
    const now = new Date();
    this.lastReload = { successful: true, timestamp: now, error: null, lastSuccess: now };
    this.setLearned(this.restoreLearned(opts.learned ?? []));
  }

  get policy(): Policy {
    return this.keyed.policy;
  }

  /**
   * Why the running policy could not be written to state_dir the last time
   * it was tried (changes are refused meanwhile); null if it was, or there
   * is no state_dir.
   */
  get stateError(): string | null {
    return this.saveError;
  }

  /** Learned records held (nvgre_learned_records). */
  get learnedCount(): number {
    return this.learned.size;
  }

  /** The learned records with their last-seen times, in policy order. */
  learnedRecords(): Array<{ record: LookupRecord; last_seen: Date }> {
    if (!this.learned.size) return [];
    const out: Array<{ record: LookupRecord; last_seen: Date }> = [];
    for (const r of this.policy.lookup_records) {
      const e = r.type === 'dynamic' ? this.learned.get(learnedKey(r.vsid, r.customer_address)) : undefined;
      if (e) out.push({ record: r, last_seen: new Date(e.lastSeen) });
    }
    return out;
  }

  /** The saved learned records that the (restored) running policy still holds as learned. */
  private restoreLearned(saved: readonly LearnedState[]): Map<string, LearnedEntry> {
    const kept = new Map<string, LearnedEntry>();
    for (const [k, e] of learnedEntries(saved, this.now())) if (this.stillLearned(e)) kept.set(k, e);
    return kept;
  }

  private setLearned(m: Map<string, LearnedEntry>): void {
    this.learned = m;
    this.learnedPerVsid = new Map();
    for (const e of m.values()) this.learnedPerVsid.set(e.vsid, (this.learnedPerVsid.get(e.vsid) ?? 0) + 1);
  }

  /** Is `e` still what the running policy holds at its key (a dynamic record with its MAC and PA)? */
  private stillLearned(e: LearnedEntry): boolean {
    const r = this.keyed.byCa(e.vsid, e.customer_address);
    return r !== undefined && r.type === 'dynamic' && sameMapping(r, e);
  }

  /**
   * Persist the running policy with the learned set `learned`, grown from
   * the config file `origin`: as one journal line (`entry`), or whole.
   */
  private save(learned: ReadonlyMap<string, LearnedEntry>, origin = this.origin, entry?: JournalEntry): void {
    if (!this.state) return;
    const whole = (): SavedState => ({ policy: this.policy, owned: this.host.ownedKernelObjects(), learned: learnedStates(learned), configSha256: origin });
    try {
      if (entry) this.state.record(entry, whole);
      else this.state.save(whole());
    } catch (err) {
      this.saveError = `cannot save the policy to ${this.state.path}: ${(err as Error).message}`;
      throw err;
    }
    this.saveError = null;
  }

  /**
   * The learned set after `applied` (already in the keyed policy):
   * `candidates` less the entries whose key the changes left without their
   * dynamic record (an operator who rewrites the record takes it over).
   * `lost`: entries of the current set whose mapping is gone altogether
   * (deleted, or replaced by another), with the record as it was.
   */
  private reconcile(
    applied: readonly PolicyChange[],
    candidates: ReadonlyMap<string, LearnedEntry>,
    quiet: ReadonlySet<string> = new Set(),
  ): { kept: Map<string, LearnedEntry>; lost: Array<{ entry: LearnedEntry; record: LookupRecord }> } {
    const kept = new Map(candidates);
    const lost: Array<{ entry: LearnedEntry; record: LookupRecord }> = [];
    if (!kept.size && !this.learned.size) return { kept, lost };
    const seen = new Set<string>();
    for (const c of applied) {
      if (c.section !== 'lookup_records') continue;
      // The first change at a key holds the record as it was before them all.
      const old = (c.op === 'delete' ? c.record : c.previous) as LookupRecord | undefined;
      const r = c.record as LookupRecord;
      if (!hasCa(r)) continue;
      const k = learnedKey(r.vsid, r.customer_address);
      if (seen.has(k)) continue;
      seen.add(k);
      const e = kept.get(k);
      if (e && !this.stillLearned(e)) kept.delete(k);
      const mine = this.learned.get(k);
      if (!mine || kept.has(k) || quiet.has(k) || !old || old.type !== 'dynamic') continue;
      const now = this.keyed.byCa(mine.vsid, mine.customer_address);
      if (!now || !sameMapping(now, mine)) lost.push({ entry: mine, record: old });
    }
    return { kept, lost };
  }

  private emit(ev: NewEvent): void {
    this.events?.emit(ev);
  }

  /** Run changes one at a time, in arrival order. */
  private exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Apply `changes` as one transaction: all of them, or none (refused with
   * the whole document's errors, NVGRE_ERR_CONFIG, as the API's bulk apply
   * would be; a delete of a record not held: NVGRE_ERR_NOT_FOUND). The one
   * mutation path of the policy: the API's record
   * operations, learning, expiry, a document's changes, and the fleet's
   * watcher (`cause` 'fleet').
   */
  applyChanges(changes: readonly PolicyChange[], cause: Cause, o: { validated?: boolean } = {}): Promise<ChangeResult> {
    return this.exclusive(() => {
      // Each record in its normal form, valid on its own (refused as the API refuses a body;
      // `o.validated`: the caller's records are so already, the fleet's view parsed them);
      // a delete names a record held (or put earlier in the batch).
      const put = new Set<string>();
      const deletes = changes.some((c) => c.op === 'delete');
      const normal = changes.map((c): PolicyChange => {
        const res = RESOURCES.find((r) => r.section === c.section);
        if (!res) throw nvgreError('NVGRE_ERR_BAD_REQUEST', `a change names no section of records: ${JSON.stringify(c.section)}`);
        const record = o.validated ? c.record : res.validate(c.record, res.singular);
        if (!deletes) return o.validated ? c : ({ ...c, record } as PolicyChange);
        const id = `${res.section}\u0000${identityOf(res, record)}`;
        if (c.op === 'put') put.add(id);
        else if (!put.has(id) && !this.keyed.current(res.section, record)) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no ${res.noun} ${res.identity(record).join(' ')}`);
        return { ...c, record } as PolicyChange;
      });
      const applied = this.commit(normal, cause);
      return { changes: applied, counts: countChanges(applied) };
    });
  }

  /**
   * Apply `changes` to the keyed policy, check them (a document: validated
   * already), apply the result to the dataplane, persist it (with the
   * learned records it still holds); or change nothing. `o.learned`
   * replaces the learned set (learning, expiry, reload); otherwise the
   * current set is kept as far as the policy still holds it. Learned records
   * whose mapping the change removes are announced as `deleted` (not those
   * in `o.quiet`). Returns the changes as applied.
   */
  private commit(changes: readonly PolicyChange[], cause: Cause, o: CommitOptions = {}): PolicyChange[] {
    const prevKeyed = this.keyed;
    const prevPolicy = prevKeyed.lazyPolicy;
    const doc = o.document;
    const settingsChanged = doc !== undefined && settingsOf(doc) !== settingsOf(prevPolicy);
    let applied: Applied = this.keyed.apply(changes);
    if (doc) {
      if (settingsChanged) this.keyed.setSettings(doc);
      if (!sameOrder(this.keyed.policy, doc)) {
        // The document orders its records otherwise: it becomes the running policy as it is.
        applied.undo();
        const changed = applied.changes;
        this.keyed = new KeyedPolicy(doc);
        applied = { changes: changed, undo: () => (this.keyed = prevKeyed) };
      }
    } else {
      const errors = this.keyed.check(applied);
      if (errors.length) {
        applied.undo();
        throw configError(errors);
      }
    }
    const undo = () => {
      applied.undo();
      if (settingsChanged) this.keyed.setSettings(prevPolicy);
    };
    const { kept, lost } = this.reconcile(applied.changes, o.learned ?? this.learned, o.quiet);
    const origin = o.origin ?? this.origin;
    const rebuilt = this.keyed !== prevKeyed;
    const samePolicy = !applied.changes.length && !settingsChanged && !rebuilt;
    const sameLearned = kept.size === this.learned.size && [...kept].every(([k, e]) => this.learned.get(k) === e);
    if (samePolicy && sameLearned && origin === this.origin) return []; // nothing to do, nothing to count
    if (!samePolicy) {
      try {
        // The packet core takes the changes as a delta; a rebuilt policy (a reordering document) goes whole.
        // The lookup records listed only if the core needs the whole policy (a delta never reads them).
        this.host.apply(this.keyed.lazyPolicy, rebuilt ? undefined : applied.changes);
      } catch (err) {
        undo();
        throw err;
      }
    }
    const entry: JournalEntry = {
      changes: applied.changes.map(({ op, section, record }) => ({ op, section, record })),
      ...(settingsChanged ? { settings: policySettings(this.policy) as unknown as Record<string, unknown> } : {}),
      ...(applied.changes.some((c) => c.section === 'provider_addresses' || c.section === 'provider_routes') ? { owned: this.host.ownedKernelObjects() } : {}),
      ...(sameLearned ? {} : { learned: learnedStates(kept) }),
      ...(origin !== this.origin && origin !== undefined ? { config_sha256: origin } : {}),
    };
    try {
      // A document that orders its records otherwise is written whole.
      this.save(kept, origin, rebuilt ? undefined : entry);
    } catch (err) {
      undo();
      if (!samePolicy) this.host.apply(prevPolicy);
      throw nvgreError('NVGRE_ERR_IO', `${this.saveError}; the change was not applied`);
    }
    this.keyed.settle();
    this.setLearned(kept);
    this.origin = origin;
    this.clocksDirty = false;
    if (!samePolicy) this.generation++;
    for (const { record: r } of lost) {
      const why = cause === 'learning' || cause === 'expiry' ? 'api' : cause;
      this.learnLog.info({ lookup_record: [r.vsid, r.customer_address], mac: r.mac, pa: r.provider_address, cause: why }, 'learned lookup record deleted');
      this.emit({ event: 'deleted', record: r, cause: why });
    }
    return applied.changes;
  }

  /** The records of `res` whose (possibly partial) key is `key`. */
  private matching(res: Resource, key: string[]): AnyRecord[] {
    // A key naming the whole identity finds its record directly; a partial one (l2only records without their MAC) is looked for.
    const probe = Object.fromEntries(res.key.map((k, i) => [k, key[i]])) as unknown as AnyRecord;
    const identity = res.identity(probe);
    if (identity.every((v) => v !== '')) {
      const r = this.keyed.get(res.section, identity);
      return r && matchesKey(res, r, key) ? [r] : [];
    }
    return (this.policy[res.section] as AnyRecord[]).filter((r) => matchesKey(res, r, key));
  }

  /** Whether a record has this key (a whole identity: found directly, whatever the policy's size). */
  has(res: Resource, key: string[]): boolean {
    return this.matching(res, key).length > 0;
  }

  list(res: Resource, filter: Filter): AnyRecord[] {
    return (this.policy[res.section] as AnyRecord[]).filter((r) => matchesFilter(r, filter));
  }

  /** The one record with this key (404 if none, 409 if the key is ambiguous). */
  get(res: Resource, key: string[]): AnyRecord {
    const found = this.matching(res, key);
    if (found.length === 0) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no ${res.noun} ${key.join(' ')}`);
    if (found.length > 1) {
      throw nvgreError('NVGRE_ERR_CONFLICT', `${found.length} ${res.noun}s match ${key.join(' ')}: give the ${res.key.slice(key.length).join(' and ')} too`);
    }
    return found[0]!;
  }

  create(res: Resource, body: unknown): Promise<AnyRecord> {
    return this.exclusive(() => {
      const rec = res.validate(body, res.singular);
      if (this.keyed.current(res.section, rec)) {
        throw nvgreError('NVGRE_ERR_EXISTS', `${res.noun} ${res.identity(rec).join(' ')} exists (replace it, or change it)`);
      }
      this.commit([{ op: 'put', section: res.section, record: rec }], 'api');
      this.log.info({ [res.section]: res.identity(rec) }, `${res.noun} added`);
      return rec;
    });
  }

  /** Upsert; `created` tells which it was. */
  replace(res: Resource, key: string[], body: unknown): Promise<{ record: AnyRecord; created: boolean }> {
    return this.exclusive(() => {
      const rec = res.validate(body, res.singular);
      if (!matchesKey(res, rec, key)) {
        throw nvgreError('NVGRE_ERR_BAD_REQUEST', `the body's key ${res.identity(rec).join(' ')} is not the path's ${key.join(' ')}`);
      }
      const created = !this.keyed.current(res.section, rec);
      this.commit([{ op: 'put', section: res.section, record: rec }], 'api');
      this.log.info({ [res.section]: res.identity(rec) }, `${res.noun} ${created ? 'added' : 'replaced'}`);
      return { record: rec, created };
    });
  }

  change(res: Resource, key: string[], patch: unknown): Promise<AnyRecord> {
    return this.exclusive(() => {
      if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
        throw nvgreError('NVGRE_ERR_BAD_REQUEST', `a change is an object of the ${res.noun}'s fields to set`);
      }
      const keyFields = res.key.slice(0, res.key.length - res.optionalKeys);
      const touched = Object.keys(patch).filter((k) => keyFields.includes(k));
      if (touched.length) {
        throw nvgreError('NVGRE_ERR_BAD_REQUEST', `${touched.join(', ')} identify the ${res.noun} and cannot be changed: delete it and add a new one`);
      }
      const old = this.get(res, key);
      const rec = res.validate({ ...old, ...patch }, res.singular);
      // A change of identity (an l2only record's MAC) is a delete and an add: the record moves to the end.
      const changes: PolicyChange[] =
        identityOf(res, rec) === identityOf(res, old)
          ? [{ op: 'put', section: res.section, record: rec, previous: old }]
          : [
              { op: 'delete', section: res.section, record: old },
              { op: 'put', section: res.section, record: rec },
            ];
      this.commit(changes, 'api');
      this.log.info({ [res.section]: res.identity(rec) }, `${res.noun} changed`);
      return rec;
    });
  }

  remove(res: Resource, key: string[]): Promise<AnyRecord> {
    return this.exclusive(() => {
      const old = this.get(res, key);
      this.commit([{ op: 'delete', section: res.section, record: old }], 'api');
      this.log.info({ [res.section]: res.identity(old) }, `${res.noun} deleted`);
      return old;
    });
  }

  /** Delete every record matching `filter`; returns how many. */
  flush(res: Resource, filter: Filter): Promise<number> {
    return this.exclusive(() => {
      const gone = this.list(res, filter);
      if (gone.length) this.commit(gone.map((record) => ({ op: 'delete', section: res.section, record })), 'api');
      this.log.info({ section: res.section, deleted: gone.length }, `${res.noun}s flushed`);
      return gone.length;
    });
  }

  /** What applying `changes` would make wrong with the running policy, as the whole-document check says it (nothing changes). */
  problemsWith(changes: readonly PolicyChange[]): FieldError[] {
    const applied = this.keyed.apply(changes);
    try {
      return this.keyed.check(applied);
    } finally {
      applied.undo();
    }
  }

  /**
   * Bulk apply: the document replaces the running policy as one transaction
   * (learned records it leaves out are deleted; those it keeps unchanged stay
   * learned).
   */
  applyDocument(doc: unknown): Promise<ApplyResult> {
    return this.exclusive(() => this.applyNow(validatePolicy(doc), 'policy'));
  }

  // ---------------------------------------------------------------- learning

  /**
   * Decide one batch of addresses the packet core learned (see
   * learning.ts) and apply what changes the policy as ONE commit. An
   * address that would make the policy invalid (say a VM claiming its
   * subnet's gateway address) is refused as `invalid`; the rest still go in.
   */
  learn(batch: readonly LearnedAddress[], now = this.now()): Promise<LearnOutcome> {
    return this.exclusive(() => {
      const d = decideLearning(this.keyed, this.learned, batch, this.policy.learning.max_per_vsid, this.learnedPerVsid);
      const refused = [...d.refused];
      for (const k of d.refreshed) {
        const e = this.learned.get(k);
        if (e && now > e.lastSeen) {
          e.lastSeen = now;
          this.clocksDirty = true;
        }
      }
      // Each record valid on its own first (what the core reports is not trusted).
      const invalid = new Map<(typeof d.upserts)[number], string>();
      for (const u of d.upserts) {
        const errors: FieldError[] = [];
        LOOKUP.validate(u.record, LOOKUP.singular, errors);
        if (errors.length) invalid.set(u, summary(errors));
      }
      let upserts = d.upserts.filter((u) => !invalid.has(u));
      const learnedWith = (some: typeof upserts) => {
        const m = new Map(this.learned);
        for (const { record: r } of some) {
          m.set(learnedKey(r.vsid, r.customer_address), { vsid: r.vsid, customer_address: r.customer_address, mac: r.mac, provider_address: r.provider_address, lastSeen: now });
        }
        return m;
      };
      const changesOf = (some: readonly { record: LookupRecord; previous?: LookupRecord }[]): PolicyChange[] =>
        some.map((u) => ({ op: 'put', section: 'lookup_records', record: u.record, ...(u.previous ? { previous: u.previous } : {}) }));
      if (upserts.length) {
        try {
          // The common case: the whole batch fits (checked once, by the commit).
          this.commit(changesOf(upserts), 'learning', { learned: learnedWith(upserts) });
        } catch (err) {
          if ((err as { code?: string }).code !== 'NVGRE_ERR_CONFIG') throw err;
          const { fits, invalid: misfits } = fitting(upserts, (some) => this.problems(changesOf(some)));
          for (const [u, detail] of misfits) invalid.set(u, detail);
          upserts = fits;
          if (upserts.length) this.commit(changesOf(upserts), 'learning', { learned: learnedWith(upserts) });
        }
      }
      // Refused in the batch's order.
      for (const u of d.upserts) {
        const detail = invalid.get(u);
        if (detail !== undefined) refused.push({ record: u.record, reason: 'invalid', detail });
      }
      const out: LearnOutcome = { learned: [], changed: [], refreshed: d.refreshed.length, refused };
      for (const u of upserts) {
        const r = u.record;
        this.learningStats.learned_total++;
        if (u.previous) {
          out.changed.push({ record: r, previous: u.previous });
          this.learnLog.info({ lookup_record: [r.vsid, r.customer_address], mac: r.mac, pa: r.provider_address, was: { mac: u.previous.mac, pa: u.previous.provider_address } }, 'learned lookup record changed');
          this.emit({ event: 'changed', record: r, previous: u.previous });
        } else {
          out.learned.push(r);
          this.learnLog.info({ lookup_record: [r.vsid, r.customer_address], mac: r.mac, pa: r.provider_address }, 'lookup record learned');
          this.emit({ event: 'learned', record: r });
        }
      }
      for (const f of refused) {
        this.learningStats.refused[f.reason]++;
        this.logRefusal(f, now);
        this.emit({
          event: 'refused',
          record: f.record,
          reason: f.reason,
          ...(f.existing ? { existing: f.existing } : {}),
          ...(f.detail !== undefined ? { detail: f.detail } : {}),
        });
      }
      return out;
    });
  }

  /** What the running policy's check would say of `changes` (nothing is changed). */
  private problems(changes: readonly PolicyChange[]): FieldError[] {
    const applied = this.keyed.apply(changes);
    try {
      return this.keyed.check(applied);
    } finally {
      applied.undo();
    }
  }

  private logRefusal(f: Refusal, now: number): void {
    const r = f.record;
    const key = `${r.vsid}|${f.reason}`;
    const seen = this.refusalLogged.get(key);
    if (seen && now - seen.at < REFUSAL_LOG_MS) {
      seen.suppressed++;
      return;
    }
    if (this.refusalLogged.size > 4096) this.refusalLogged.clear();
    this.refusalLogged.set(key, { at: now, suppressed: 0 });
    const why =
      f.reason === 'limit'
        ? `VSID ${r.vsid} holds learning.max_per_vsid (${this.policy.learning.max_per_vsid}) learned records`
        : f.reason === 'static_conflict'
          ? 'a static record holds the address'
          : (f.detail ?? 'invalid');
    this.learnLog.warn(
      { lookup_record: [r.vsid, r.customer_address], mac: r.mac, pa: r.provider_address, reason: f.reason, suppressed: seen?.suppressed ?? 0 },
      `learning refused an address: ${why}`,
    );
  }

  /** Remove the learned records not refreshed for learning.ttl_seconds, in one commit. */
  expireLearned(now = this.now()): Promise<LookupRecord[]> {
    return this.exclusive(() => {
      if (!this.learned.size) return [];
      const ttlMs = this.policy.learning.ttl_seconds * 1000;
      const gone = new Map([...this.learned].filter(([, e]) => now - e.lastSeen >= ttlMs));
      if (!gone.size) return [];
      const expired: LookupRecord[] = [];
      for (const e of gone.values()) {
        const r = this.keyed.byCa(e.vsid, e.customer_address);
        if (r && r.type === 'dynamic') expired.push(r);
      }
      const learnedNext = new Map(this.learned);
      for (const k of gone.keys()) learnedNext.delete(k);
      this.commit(
        expired.map((record) => ({ op: 'delete', section: 'lookup_records', record })),
        'expiry',
        { learned: learnedNext, quiet: new Set(gone.keys()) },
      );
      for (const r of expired) {
        const e = gone.get(learnedKey(r.vsid, r.customer_address))!;
        const last_seen = new Date(e.lastSeen).toISOString();
        this.learningStats.expired_total++;
        this.learnLog.info({ lookup_record: [r.vsid, r.customer_address], mac: r.mac, pa: r.provider_address, last_seen }, 'learned lookup record expired');
        this.emit({ event: 'expired', record: r, last_seen });
      }
      return expired;
    });
  }

  /** Save the learned records' last-seen times if they moved since the last write (the daemon is stopping). */
  saveLearnedClocks(): void {
    if (!this.clocksDirty || !this.state) return;
    this.save(this.learned, this.origin, { changes: [], learned: learnedStates(this.learned) });
    this.clocksDirty = false;
  }

  /** saveLearnedClocks, in turn with the changes. */
  flushLearnedClocks(): Promise<void> {
    return this.exclusive(() => this.saveLearnedClocks());
  }

  /** Write the state file now (at start: the policy the daemon runs, with what it learned before). */
  saveState(): void {
    this.save(this.learned);
    this.clocksDirty = false;
  }

  /** Make the validated document `next` the running policy: by the changes it makes, in its order. */
  private applyNow(next: Policy, cause: DeleteCause = 'policy', o: CommitOptions = {}): ApplyResult {
    const applied = this.commit(documentChanges(this.policy, next), cause, { ...o, document: next });
    const restart = RESTART_SETTINGS.filter((s) => setting(next, s) !== setting(this.started, s));
    if (restart.length) this.log.warn({ settings: restart }, 'changed settings take effect at the next start');
    const result: ApplyResult = { applied: true, changes: countChanges(applied), restart_required: [...restart] };
    this.log.info({ changes: result.changes }, 'policy applied');
    return result;
  }

  /** Re-read the config file and apply it; a bad file changes nothing. */
  reload(): Promise<ApplyResult> {
    return this.exclusive(async () => {
      this.reloadHooks.start();
      try {
        const file = await readConfigFile(this.configFile);
        const { doc, learned } = keepLearned(this.policy, this.learned, file.policy, this.learnLog, 'reload');
        const result = this.applyNow(doc, 'reload', { learned, origin: file.sha256 });
        this.host.repair(); // VM adapters whose device failed are made again, even if nothing changed
        const now = new Date();
        this.lastReload = { successful: true, timestamp: now, error: null, lastSuccess: now };
        return result;
      } catch (err) {
        this.lastReload = { ...this.lastReload, successful: false, timestamp: new Date(), error: (err as Error).message };
        this.log.error({ err }, 'reload failed: the running policy is unchanged');
        throw err;
      } finally {
        this.reloadHooks.end();
      }
    });
  }
}

/**
 * Split `items` into those that together make a valid policy (`problems`
 * says what is wrong with a policy holding some of them) and those that
 * cannot be part of one, with the validator's reason.
 */
function fitting<T>(items: readonly T[], problems: (some: readonly T[]) => FieldError[]): { fits: T[]; invalid: Array<[T, string]> } {
  const invalid: Array<[T, string]> = [];
  let fits = [...items];
  for (;;) {
    if (!fits.length) return { fits, invalid };
    const errors = problems(fits);
    if (!errors.length) return { fits, invalid };
    // Whatever fails on its own is out; if each fits alone, the last of a conflicting set goes.
    const alone = fits.map((it) => [it, problems([it])] as const);
    const bad = alone.filter(([, errs]) => errs.length > 0);
    if (bad.length) {
      for (const [it, errs] of bad) invalid.push([it, summary(errs)]);
      fits = fits.filter((it) => !bad.some(([b]) => b === it));
    } else {
      invalid.push([fits[fits.length - 1]!, summary(errors)]);
      fits = fits.slice(0, -1);
    }
  }
}

/**
 * The learned entries of saved LearnedStates, by key (malformed ones are
 * skipped; a last-seen time in the future, or none, is `now`).
 */
export function learnedEntries(saved: readonly LearnedState[], now: number): Map<string, LearnedEntry> {
  const m = new Map<string, LearnedEntry>();
  for (const s of saved) {
    if (!s || typeof s !== 'object' || typeof s.vsid !== 'number' || typeof s.customer_address !== 'string') continue;
    const t = Date.parse(String(s.last_seen));
    m.set(learnedKey(s.vsid, s.customer_address), {
      vsid: s.vsid,
      customer_address: s.customer_address,
      mac: String(s.mac),
      provider_address: String(s.provider_address),
      lastSeen: Number.isFinite(t) ? Math.min(t, now) : now,
    });
  }
  return m;
}

/** Learned entries as saved in the state file. */
export function learnedStates(m: ReadonlyMap<string, LearnedEntry>): LearnedState[] {
  return [...m.values()].map((e) => ({
    vsid: e.vsid,
    customer_address: e.customer_address,
    mac: e.mac,
    provider_address: e.provider_address,
    last_seen: new Date(e.lastSeen).toISOString(),
  }));
}

/**
 * The config file's policy with the learned records of `running` it does
 * not contradict, for a reload (or a start that runs a changed file): a
 * record the file has at the same (vsid, CA) wins (the file owns it from
 * then on); a learned record that no longer fits the file's policy (its
 * VSID gone, its MAC now elsewhere) is dropped, and logged.
 */
export function keepLearned(
  running: Policy,
  learned: ReadonlyMap<string, LearnedEntry>,
  file: Policy,
  log: Logger,
  by: 'reload' | 'start',
): { doc: Policy; learned: Map<string, LearnedEntry> } {
  const kept = new Map<string, LearnedEntry>();
  if (!learned.size) return { doc: file, learned: kept };
  const inFile = new Set<string>();
  for (const r of file.lookup_records) if (hasCa(r)) inFile.add(learnedKey(r.vsid, r.customer_address));
  const extra: LookupRecord[] = [];
  for (const r of running.lookup_records) {
    if (r.type !== 'dynamic') continue;
    const k = learnedKey(r.vsid, r.customer_address);
    const e = learned.get(k);
    if (!e || !sameMapping(r, e) || inFile.has(k)) continue;
    extra.push(r);
  }
  const build = (some: readonly LookupRecord[]): Policy => ({ ...file, lookup_records: [...file.lookup_records, ...some] });
  const { fits, invalid } = fitting(extra, (some) => checkPolicy(build(some)).errors);
  const msg = by === 'reload' ? 'learned lookup record dropped by the reload' : 'learned lookup record dropped: the changed config file does not fit it';
  for (const [r, why] of invalid) log.info({ lookup_record: [r.vsid, r.customer_address], reason: why }, msg);
  for (const r of fits) {
    const k = learnedKey(r.vsid, r.customer_address);
    kept.set(k, learned.get(k)!);
  }
  return { doc: build(fits), learned: kept };
}

/** The first problems of a failed validation, for a refusal's `detail`. */
function summary(errors: FieldError[]): string {
  return errors.slice(0, 3).map((x) => x.message).join('; ') + (errors.length > 3 ? `; and ${errors.length - 3} more` : '');
}

/** How many records `changes` added, removed and changed, per section. */
export function countChanges(changes: readonly PolicyChange[]): Record<Section, Counts> {
  const out = Object.fromEntries(RESOURCES.map((r) => [r.section, { added: 0, removed: 0, changed: 0 }])) as Record<Section, Counts>;
  for (const c of changes) {
    const n = out[c.section];
    if (c.op === 'delete') n.removed++;
    else if (c.previous) n.changed++;
    else n.added++;
  }
  return out;
}

/**
 * The changes that make `prev` into `next`, by record identity: what `next`
 * deletes or changes, in `prev`'s order, then what it adds, in its own.
 */
export function documentChanges(prev: Policy, next: Policy): PolicyChange[] {
  const out: PolicyChange[] = [];
  for (const res of RESOURCES) {
    const section = res.section;
    const after = new Map((next[section] as AnyRecord[]).map((r) => [identityOf(res, r), r]));
    const held = new Set<string>();
    for (const old of prev[section] as AnyRecord[]) {
      const id = identityOf(res, old);
      held.add(id);
      const r = after.get(id);
      if (!r) out.push({ op: 'delete', section, record: old });
      else if (!sameRecord(old, r)) out.push({ op: 'put', section, record: r, previous: old });
    }
    for (const [id, r] of after) if (!held.has(id)) out.push({ op: 'put', section, record: r });
  }
  return out;
}

/** Do two policies hold their records in the same order (by identity)? */
function sameOrder(a: Policy, b: Policy): boolean {
  for (const res of RESOURCES) {
    const x = a[res.section] as AnyRecord[];
    const y = b[res.section] as AnyRecord[];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i] && identityOf(res, x[i]!) !== identityOf(res, y[i]!)) return false;
  }
  return true;
}
