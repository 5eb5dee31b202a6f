// The running policy and every way it changes: one record (API, CLI), a whole
// document (bulk apply, reload). Each change is validated against the whole
// resulting policy, applied to the dataplane as one snapshot, written to the
// state file, and only then acknowledged. A change that fails at any step
// leaves the running policy, the dataplane and the state as they were.

import { loadConfigFile, validatePolicy } from '../config/index.js';
import { nvgreError } from '../errors.js';
import type { Policy } from '../model/policy.js';
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
import type { Logger } from './log.js';
import type { StateFile } from './state.js';

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

export class PolicyStore {
  private running: Policy;
  private queue: Promise<unknown> = Promise.resolve();
  /** Increases with every applied change. */
  generation = 0;
  lastReload: ReloadStatus;

  constructor(
    private readonly host: HostDataplane,
    private readonly state: StateFile | undefined,
    /** The policy the daemon started with: its settings are the effective ones. */
    private readonly started: Policy,
    readonly configFile: string,
    private readonly log: Logger,
    /** Told when a reload starts and ends (systemd's RELOADING/READY). */
    private readonly reloadHooks: { start(): void; end(): void } = { start() {}, end() {} },
  ) {
    this.running = host.policy;
    const now = new Date();
    this.lastReload = { successful: true, timestamp: now, error: null, lastSuccess: now };
  }

  get policy(): Policy {
    return this.running;
  }

  /** Run changes one at a time, in arrival order. */
  private exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Validate the whole next policy, apply it, persist it; or change nothing. */
  private commit(nextDoc: unknown): Policy {
    const next = validatePolicy(nextDoc);
    const prev = this.running;
    if (JSON.stringify(next) === JSON.stringify(prev)) return prev; // nothing to do, nothing to count
    this.host.apply(next);
    try {
      this.state?.save(next, this.host.ownedKernelObjects());
    } catch (err) {
      this.host.apply(prev);
      throw nvgreError('NVGRE_ERR_IO', `cannot save the policy to ${this.state!.path}: ${(err as Error).message}; the change was not applied`);
    }
    this.running = next;
    this.generation++;
    return next;
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

  /** Bulk apply: the document replaces the running policy as one transaction. */
  applyDocument(doc: unknown): Promise<ApplyResult> {
    return this.exclusive(() => this.applyNow(doc));
  }

  private applyNow(doc: unknown): ApplyResult {
    const prev = this.running;
    const next = this.commit(doc);
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
        const doc = await loadConfigFile(this.configFile);
        const result = this.applyNow(doc);
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

/** What changed between two policies, per section, by record identity. */
function diff(prev: Policy, next: Policy): Record<Section, Counts> {
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
