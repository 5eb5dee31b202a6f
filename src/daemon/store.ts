// The running policy and every way it changes: one record (API, CLI), a whole
// document (bulk apply, reload). Each change is validated against the whole
// resulting policy, applied to the dataplane as one snapshot, written to the
// state file, and only then acknowledged. A change that fails at any step
// leaves the running policy, the dataplane and the state as they were.

import type { DeleteCause, EventBus, NewEvent, RefusalReason } from '../api/events.js';
import { checkPolicy, readConfigFile, validatePolicy } from '../config/index.js';
import { nvgreError, type FieldError } from '../errors.js';
import type { PolicyChange } from '../model/change.js';
import type { LookupRecord, Policy } from '../model/policy.js';
import {
  RESOURCES,
  resourceBySection,
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
import type { LearnedState, StateFile } from './state.js';

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

const idOf = (res: Resource, r: AnyRecord) => res.identity(r).join('\u0000');

/** What a commit is: an operator's change (how it reached the daemon), or learning's own. */
export type Cause = DeleteCause | 'learning' | 'expiry';

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
}

const hasCa = (r: LookupRecord) => r.type === 'static' || r.type === 'dynamic';
const sameMapping = (a: { mac: string; provider_address: string }, b: { mac: string; provider_address: string }) =>
  a.mac === b.mac && a.provider_address === b.provider_address;
/** Refused addresses are logged at most this often per VSID and reason (each is counted and announced). */
const REFUSAL_LOG_MS = 60_000;

export class PolicyStore {
  private running: Policy;
  private queue: Promise<unknown> = Promise.resolve();
  /** Increases with every applied change. */
  generation = 0;
  lastReload: ReloadStatus;
  /** The dynamic records of the running policy that this host learned, by (vsid, CA). */
  private learned = new Map<string, LearnedEntry>();
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
    this.running = host.policy;
    this.events = opts.events;
    this.now = opts.now ?? Date.now;
    this.learnLog = opts.learningLog ?? log;
    this.origin = opts.configSha256;
    const now = new Date();
    this.lastReload = { successful: true, timestamp: now, error: null, lastSuccess: now };
    this.learned = this.restoreLearned(opts.learned ?? []);
  }

  get policy(): Policy {
    return this.running;
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
    for (const r of this.running.lookup_records) {
      const e = r.type === 'dynamic' ? this.learned.get(learnedKey(r.vsid, r.customer_address)) : undefined;
      if (e) out.push({ record: r, last_seen: new Date(e.lastSeen) });
    }
    return out;
  }

  /** The saved learned records that the (restored) running policy still holds as learned. */
  private restoreLearned(saved: readonly LearnedState[]): Map<string, LearnedEntry> {
    if (!saved.length) return new Map();
    return this.reconcile(this.running, learnedEntries(saved, this.now())).kept;
  }

  /** Write the state file: `policy` with the learned set `learned`, grown from the config file `origin`. */
  private save(policy: Policy, learned: ReadonlyMap<string, LearnedEntry>, origin = this.origin): void {
    if (!this.state) return;
    try {
      this.state.save({ policy, owned: this.host.ownedKernelObjects(), learned: learnedStates(learned), configSha256: origin });
    } catch (err) {
      this.saveError = `cannot save the policy to ${this.state.path}: ${(err as Error).message}`;
      throw err;
    }
    this.saveError = null;
  }

  /**
   * The learned entries that `next` still holds as learned: a dynamic record
   * at the same key with the same MAC and PA (an operator who rewrites the
   * record takes it over). `lost`: entries of the current set whose mapping
   * is gone from `next` altogether (deleted, or replaced by another).
   */
  private reconcile(
    next: Policy,
    candidates: ReadonlyMap<string, LearnedEntry>,
    quiet: ReadonlySet<string> = new Set(),
  ): { kept: Map<string, LearnedEntry>; lost: LearnedEntry[] } {
    const kept = new Map<string, LearnedEntry>();
    if (!candidates.size && !this.learned.size) return { kept, lost: [] };
    const byKey = new Map<string, LookupRecord>();
    for (const r of next.lookup_records) if (hasCa(r)) byKey.set(learnedKey(r.vsid, r.customer_address), r);
    for (const [k, e] of candidates) {
      const r = byKey.get(k);
      if (r && r.type === 'dynamic' && sameMapping(r, e)) kept.set(k, e);
    }
    const lost: LearnedEntry[] = [];
    for (const [k, e] of this.learned) {
      if (kept.has(k) || quiet.has(k)) continue;
      const r = byKey.get(k);
      if (!r || !sameMapping(r, e)) lost.push(e);
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
   * Validate the whole next policy, apply it, persist it (with the learned
   * records it still holds); or change nothing. `learnedNext` replaces the
   * learned set (learning, expiry, reload); otherwise the current set is
   * kept as far as `next` still holds it. Learned records whose mapping the
   * change removes are announced as `deleted` (not those in `quiet`).
   */
  private commit(nextDoc: unknown, cause: Cause = 'api', o: CommitOptions = {}): Policy {
    const next = validatePolicy(nextDoc);
    const prev = this.running;
    const { kept, lost } = this.reconcile(next, o.learned ?? this.learned, o.quiet);
    const origin = o.origin ?? this.origin;
    const samePolicy = JSON.stringify(next) === JSON.stringify(prev);
    const sameLearned = kept.size === this.learned.size && [...kept].every(([k, e]) => this.learned.get(k) === e);
    if (samePolicy && sameLearned && origin === this.origin) return prev; // nothing to do, nothing to count
    if (!samePolicy) this.host.apply(next);
    try {
      this.save(next, kept, origin);
    } catch (err) {
      if (!samePolicy) this.host.apply(prev);
      throw nvgreError('NVGRE_ERR_IO', `${this.saveError}; the change was not applied`);
    }
    this.running = next;
    this.learned = kept;
    this.origin = origin;
    this.clocksDirty = false;
    if (!samePolicy) this.generation++;
    if (lost.length) this.announceLost(prev, lost, cause);
    return next;
  }

  private announceLost(prev: Policy, lost: LearnedEntry[], cause: Cause): void {
    const keys = new Map(lost.map((e) => [learnedKey(e.vsid, e.customer_address), e]));
    for (const r of prev.lookup_records) {
      const e = r.type === 'dynamic' ? keys.get(learnedKey(r.vsid, r.customer_address)) : undefined;
      if (!e) continue;
      const why = cause === 'learning' || cause === 'expiry' ? 'api' : cause;
      this.learnLog.info({ lookup_record: [r.vsid, r.customer_address], mac: r.mac, pa: r.provider_address, cause: why }, 'learned lookup record deleted');
      this.emit({ event: 'deleted', record: r, cause: why });
    }
  }

  private records(res: Resource): AnyRecord[] {
    return this.running[res.section] as AnyRecord[];
  }

  private withSection(res: Resource, records: AnyRecord[]): Policy {
    return { ...this.running, [res.section]: records };
  }

  list(res: Resource, filter: Filter): AnyRecord[] {
    return this.records(res).filter((r) => matchesFilter(r, filter));
  }

  /** The one record with this key (404 if none, 409 if the key is ambiguous). */
  get(res: Resource, key: string[]): AnyRecord {
    const found = this.records(res).filter((r) => matchesKey(res, r, key));
    if (found.length === 0) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no ${res.noun} ${key.join(' ')}`);
    if (found.length > 1) {
      throw nvgreError('NVGRE_ERR_CONFLICT', `${found.length} ${res.noun}s match ${key.join(' ')}: give the ${res.key.slice(key.length).join(' and ')} too`);
    }
    return found[0]!;
  }

  create(res: Resource, body: unknown): Promise<AnyRecord> {
    return this.exclusive(() => {
      const rec = res.validate(body, res.singular);
      const id = idOf(res, rec);
      if (this.records(res).some((r) => idOf(res, r) === id)) {
        throw nvgreError('NVGRE_ERR_EXISTS', `${res.noun} ${res.identity(rec).join(' ')} exists (replace it, or change it)`);
      }
      this.commit(this.withSection(res, [...this.records(res), rec]));
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
      const id = idOf(res, rec);
      const cur = this.records(res);
      const i = cur.findIndex((r) => idOf(res, r) === id);
      const next = i < 0 ? [...cur, rec] : cur.map((r, j) => (j === i ? rec : r));
      this.commit(this.withSection(res, next));
      this.log.info({ [res.section]: res.identity(rec) }, `${res.noun} ${i < 0 ? 'added' : 'replaced'}`);
      return { record: rec, created: i < 0 };
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
      this.commit(this.withSection(res, this.records(res).map((r) => (r === old ? rec : r))));
      this.log.info({ [res.section]: res.identity(rec) }, `${res.noun} changed`);
      return rec;
    });
  }

  remove(res: Resource, key: string[]): Promise<AnyRecord> {
    return this.exclusive(() => {
      const old = this.get(res, key);
      this.commit(this.withSection(res, this.records(res).filter((r) => r !== old)));
      this.log.info({ [res.section]: res.identity(old) }, `${res.noun} deleted`);
      return old;
    });
  }

  /** Delete every record matching `filter`; returns how many. */
  flush(res: Resource, filter: Filter): Promise<number> {
    return this.exclusive(() => {
      const keep = this.records(res).filter((r) => !matchesFilter(r, filter));
      const n = this.records(res).length - keep.length;
      if (n > 0) this.commit(this.withSection(res, keep));
      this.log.info({ section: res.section, deleted: n }, `${res.noun}s flushed`);
      return n;
    });
  }

  /**
   * Apply `changes` as ONE commit, all or nothing: each put adds its record
   * or replaces the one of the same identity, each delete removes the record
   * of its record's identity (NVGRE_ERR_NOT_FOUND if there is none). The
   * whole result is validated like any change.
   */
  applyChanges(changes: readonly PolicyChange[], cause: Cause): Promise<Policy> {
    return this.exclusive(() => this.commit(withChanges(this.running, changes), cause));
  }

  /**
   * Bulk apply: the document replaces the running policy as one transaction
   * (learned records it leaves out are deleted; those it keeps unchanged stay
   * learned).
   */
  applyDocument(doc: unknown): Promise<ApplyResult> {
    return this.exclusive(() => this.applyNow(doc, 'policy'));
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
      const d = decideLearning(this.running, this.learned, batch, this.running.learning.max_per_vsid);
      const refused = [...d.refused];
      for (const k of d.refreshed) {
        const e = this.learned.get(k);
        if (e && now > e.lastSeen) {
          e.lastSeen = now;
          this.clocksDirty = true;
        }
      }
      let upserts = d.upserts;
      const learnedWith = (some: typeof upserts) => {
        const m = new Map(this.learned);
        for (const { record: r } of some) {
          m.set(learnedKey(r.vsid, r.customer_address), { vsid: r.vsid, customer_address: r.customer_address, mac: r.mac, provider_address: r.provider_address, lastSeen: now });
        }
        return m;
      };
      if (upserts.length) {
        try {
          // The common case: the whole batch fits (validated once, by the commit).
          this.commit(this.withUpserts(upserts), 'learning', { learned: learnedWith(upserts) });
        } catch (err) {
          if ((err as { code?: string }).code !== 'NVGRE_ERR_CONFIG') throw err;
          const { fits, invalid } = fitting(upserts, (some) => this.withUpserts(some));
          for (const [u, detail] of invalid) refused.push({ record: u.record, reason: 'invalid', detail });
          upserts = fits;
          if (upserts.length) this.commit(this.withUpserts(upserts), 'learning', { learned: learnedWith(upserts) });
        }
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

  /** The running policy with `upserts` added or replacing the records of their keys. */
  private withUpserts(upserts: ReadonlyArray<{ record: LookupRecord; previous?: LookupRecord }>): Policy {
    const replace = new Map<LookupRecord, LookupRecord>();
    const add: LookupRecord[] = [];
    for (const u of upserts) {
      if (u.previous) replace.set(u.previous, u.record);
      else add.push(u.record);
    }
    const records = replace.size ? this.running.lookup_records.map((r) => replace.get(r) ?? r) : this.running.lookup_records;
    return { ...this.running, lookup_records: add.length ? [...records, ...add] : records };
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
        ? `VSID ${r.vsid} holds learning.max_per_vsid (${this.running.learning.max_per_vsid}) learned records`
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
      const ttlMs = this.running.learning.ttl_seconds * 1000;
      const gone = new Map([...this.learned].filter(([, e]) => now - e.lastSeen >= ttlMs));
      if (!gone.size) return [];
      const expired: LookupRecord[] = [];
      const keep = this.running.lookup_records.filter((r) => {
        if (r.type !== 'dynamic' || !gone.has(learnedKey(r.vsid, r.customer_address))) return true;
        expired.push(r);
        return false;
      });
      const learnedNext = new Map(this.learned);
      for (const k of gone.keys()) learnedNext.delete(k);
      this.commit({ ...this.running, lookup_records: keep }, 'expiry', { learned: learnedNext, quiet: new Set(gone.keys()) });
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
    this.save(this.running, this.learned);
    this.clocksDirty = false;
  }

  /** saveLearnedClocks, in turn with the changes. */
  flushLearnedClocks(): Promise<void> {
    return this.exclusive(() => this.saveLearnedClocks());
  }

  /** Write the state file now (at start: the policy the daemon runs, with what it learned before). */
  saveState(): void {
    this.save(this.running, this.learned);
    this.clocksDirty = false;
  }

  private applyNow(doc: unknown, cause: DeleteCause = 'policy', o: CommitOptions = {}): ApplyResult {
    const prev = this.running;
    const next = this.commit(doc, cause, o);
    const restart = RESTART_SETTINGS.filter((s) => setting(next, s) !== setting(this.started, s));
    if (restart.length) this.log.warn({ settings: restart }, 'changed settings take effect at the next start');
    const result: ApplyResult = { applied: true, changes: diff(prev, next), restart_required: [...restart] };
    this.log.info({ changes: result.changes }, 'policy applied');
    return result;
  }

  /** Re-read the config file and apply it; a bad file changes nothing. */
  reload(): Promise<ApplyResult> {
    return this.exclusive(async () => {
      this.reloadHooks.start();
      try {
        const file = await readConfigFile(this.configFile);
        const { doc, learned } = keepLearned(this.running, this.learned, file.policy, this.learnLog, 'reload');
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
 * `policy` with `changes` made (each put adds its record or replaces the one
 * of the same identity; each delete removes the record of its record's
 * identity, NVGRE_ERR_NOT_FOUND if there is none); not validated.
 */
export function withChanges(policy: Policy, changes: readonly PolicyChange[]): Policy {
  const next: Policy = { ...policy };
  const touched = new Map<Section, Map<string, AnyRecord>>();
  for (const c of changes) {
    const res = resourceBySection(c.section);
    let recs = touched.get(c.section);
    if (!recs) {
      recs = new Map((policy[c.section] as AnyRecord[]).map((r) => [idOf(res, r), r]));
      touched.set(c.section, recs);
    }
    const id = idOf(res, c.record);
    if (c.op === 'put') recs.set(id, c.record);
    else if (!recs.delete(id)) throw nvgreError('NVGRE_ERR_NOT_FOUND', `no ${res.noun} ${res.identity(c.record).join(' ')}`);
  }
  for (const [section, recs] of touched) (next as unknown as Record<Section, AnyRecord[]>)[section] = [...recs.values()];
  return next;
}

/**
 * Split `items` into those that together make a valid policy (`build`
 * makes the document) and those that cannot be part of one, with the
 * validator's reason.
 */
function fitting<T>(items: readonly T[], build: (some: readonly T[]) => Policy): { fits: T[]; invalid: Array<[T, string]> } {
  const invalid: Array<[T, string]> = [];
  let fits = [...items];
  for (;;) {
    if (!fits.length) return { fits, invalid };
    const { errors } = checkPolicy(build(fits));
    if (!errors.length) return { fits, invalid };
    // Whatever fails on its own is out; if each fits alone, the last of a conflicting set goes.
    const alone = fits.map((it) => [it, checkPolicy(build([it])).errors] as const);
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
  const { fits, invalid } = fitting(extra, build);
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

/** What changed between two policies, per section, by record identity. */
export function diff(prev: Policy, next: Policy): Record<Section, Counts> {
  const out = {} as Record<Section, Counts>;
  for (const res of RESOURCES) {
    const before = new Map((prev[res.section] as AnyRecord[]).map((r) => [idOf(res, r), JSON.stringify(r)]));
    const counts: Counts = { added: 0, removed: 0, changed: 0 };
    const seen = new Set<string>();
    for (const r of next[res.section] as AnyRecord[]) {
      const id = idOf(res, r);
      seen.add(id);
      const old = before.get(id);
      if (old === undefined) counts.added++;
      else if (old !== JSON.stringify(r)) counts.changed++;
    }
    for (const id of before.keys()) if (!seen.has(id)) counts.removed++;
    out[res.section] = counts;
  }
  return out;
}
