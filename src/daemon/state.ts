// The running policy on disk, in `state_dir`, so runtime changes survive a
// restart: a whole state (policy.json) and the changes made since, one line
// each in a journal (policy.journal), each fdatasync'ed before the change is
// acknowledged. A small policy (policy.json under WHOLE_BELOW bytes) is
// written whole on every change; a big one only once its journal is as big
// as it. The whole state is written atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync the directory; it names
// its journal (a fresh name each time), so the journal of an older whole
// state is never replayed. A crash leaves the old whole state or the new one,
// and the journal's lines up to the last one written whole: a last line cut
// short is ignored. A saved state that cannot be used (a damaged line before
// the last included) is renamed aside, journal and all, never deleted: it is
// evidence.

import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { validateProviderAddress, validateProviderRoute } from '../config/index.js';
import { configError, nvgreError, type FieldError } from '../errors.js';
import type { PolicyChange } from '../model/change.js';
import { KeyedPolicy } from '../model/keyed.js';
import type { Policy } from '../model/policy.js';
import { RECORD_SPECS } from '../model/records.js';
import type { OwnedKernelObjects } from './host.js';

const FORMAT = 'nvgred-state/1';
/** Below this size policy.json is written whole on every change (as before the journal). */
export const WHOLE_BELOW = 256 * 1024;

/**
 * A lookup record this host learned (packet flow 4), by its key, with what
 * was learned and when the packet core last reported it: learned records
 * expire `learning.ttl_seconds` after `last_seen`, also across a restart.
 */
export interface LearnedState {
  vsid: number;
  customer_address: string;
  mac: string;
  provider_address: string;
  /** ISO 8601. */
  last_seen: string;
}

interface StateDocument {
  format: string;
  saved_at: string;
  policy: unknown;
  /** The provider addresses and routes this daemon placed (removed by it, even after a crash). */
  owned?: OwnedKernelObjects;
  /** Which of the policy's dynamic lookup records this host learned, and when each was last seen (absent before learning existed). */
  learned?: LearnedState[];
  /**
   * SHA-256 of the config file's bytes the policy grew from: the file of the
   * last start that ran the file, or of the last reload. Absent in states
   * saved before nvgred recorded it.
   */
  config_sha256?: string;
  /** The name of the journal whose lines continue this state (absent: none). */
  journal?: string;
}

/** One line of the journal: one applied change and what else moved with it. */
export interface JournalEntry {
  /** The journal's name (its whole state's `journal`). */
  journal?: string;
  /** The records put and deleted, in order. */
  changes: Array<{ op: 'put' | 'delete'; section: PolicyChange['section']; record: unknown }>;
  /** The settings (every section but the record lists), when they changed (a reload). */
  settings?: Record<string, unknown>;
  owned?: OwnedKernelObjects;
  /** The whole learned set, when it changed. */
  learned?: LearnedState[];
  /** The config file's digest, when it changed (a reload). */
  config_sha256?: string;
}

export interface SavedState {
  policy: unknown;
  owned: OwnedKernelObjects;
  learned: LearnedState[];
  /** See StateDocument.config_sha256; undefined: not known. */
  configSha256?: string;
}

/** Temporary files of writeFileAtomic, left behind if the process died mid-write. */
const TEMP = /^\.\d+\.\d+\.tmp$/;

/** Write `data` to `path` atomically and durably. */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o640): void {
  const tmp = join(dirname(path), `.${process.pid}.${Date.now()}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  syncDir(dirname(path));
}

function syncDir(path: string): void {
  const dir = openSync(path, 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

export class StateFile {
  readonly path: string;
  readonly journalPath: string;
  /** The journal the whole state on disk names (undefined: none yet, write whole). */
  private journalName: string | undefined;
  private wholeBytes = 0;
  private journalBytes = 0;

  constructor(readonly dir: string) {
    this.path = join(dir, 'policy.json');
    this.journalPath = join(dir, 'policy.journal');
  }

  /**
   * The saved state, or undefined if none was saved yet. Throws
   * an NvgreError, saying why, if there is one that cannot be read or is
   * not a state document (garbage, truncated, another format, malformed
   * parts); whether its policy still validates is the caller's to check.
   */
  load(): SavedState | undefined {
    this.removeTemporaries();
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw nvgreError('NVGRE_ERR_IO', `cannot read the saved policy ${this.path}: ${(err as Error).message}`);
    }
    let doc: StateDocument;
    try {
      doc = JSON.parse(text) as StateDocument;
    } catch (err) {
      throw nvgreError('NVGRE_ERR_IO', `the saved policy ${this.path} is not valid JSON (${(err as Error).message})`);
    }
    if (doc?.format !== FORMAT) {
      throw nvgreError('NVGRE_ERR_IO', `the saved policy ${this.path} has format ${JSON.stringify(doc?.format)}, expected ${FORMAT}`);
    }
    const bad = shapeProblem(doc);
    if (bad) throw nvgreError('NVGRE_ERR_IO', `the saved policy ${this.path} is damaged: ${bad}`);
    this.wholeBytes = Buffer.byteLength(text);
    this.journalName = doc.journal;
    this.journalBytes = 0;
    if (doc.journal !== undefined) this.replay(doc);
    // What this daemon placed is removed from the kernel once the policy no longer names it: only well-formed entries.
    const owned = doc.owned ?? { provider_addresses: [], provider_routes: [] };
    const errors: FieldError[] = [];
    const pas = owned.provider_addresses.map((pa, i) => validateProviderAddress(pa, `owned.provider_addresses[${i}]`, errors)!);
    // A route is saved with the device it was placed on (its PA's VLAN interface, or its own).
    const routes = owned.provider_routes.map(({ device, ...r }, i) => {
      const route = validateProviderRoute(r, `owned.provider_routes[${i}]`, errors)!;
      return typeof device === 'string' ? { ...route, device } : route;
    });
    if (errors.length) throw configError(errors, { source: this.path, what: 'the saved state' });
    return {
      policy: doc.policy,
      owned: { provider_addresses: pas, provider_routes: routes },
      learned: doc.learned ?? [],
      configSha256: doc.config_sha256,
    };
  }

  /** Bring `doc` up to date with the lines of its journal (a last line cut short by a crash is ignored). */
  private replay(doc: StateDocument): void {
    let text: string;
    try {
      text = readFileSync(this.journalPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw nvgreError('NVGRE_ERR_IO', `cannot read the journal ${this.journalPath}: ${(err as Error).message}`);
    }
    // Whole lines end with a newline: what follows the last one was cut short by a crash.
    const end = text.lastIndexOf('\n') + 1;
    if (end < text.length) {
      try {
        truncateSync(this.journalPath, Buffer.byteLength(text.slice(0, end)));
      } catch {
        // A read-only state_dir takes no changes either: nothing will be appended to the cut line.
      }
    }
    const lines = text.slice(0, end).split('\n').slice(0, -1);
    let keyed: KeyedPolicy | undefined;
    for (let i = 0; i < lines.length; i++) {
      let e: JournalEntry;
      try {
        e = JSON.parse(lines[i]!) as JournalEntry;
        const bad = entryProblem(e);
        if (bad) throw new Error(bad);
      } catch (err) {
        throw nvgreError('NVGRE_ERR_IO', `the journal ${this.journalPath} is damaged at line ${i + 1}: ${(err as Error).message}`);
      }
      if (e.journal !== doc.journal) continue; // an older whole state's line, left by a crash: not this state's
      try {
        keyed ??= new KeyedPolicy(doc.policy as Policy);
        keyed.apply(e.changes as PolicyChange[]);
        keyed.settle();
      } catch (err) {
        throw nvgreError('NVGRE_ERR_IO', `the saved policy ${this.path} with its journal's line ${i + 1} is damaged: ${(err as Error).message}`);
      }
      if (e.settings) keyed.setSettings(e.settings as unknown as Policy);
      if (e.owned) doc.owned = e.owned;
      if (e.learned) doc.learned = e.learned;
      if (e.config_sha256 !== undefined) doc.config_sha256 = e.config_sha256;
    }
    if (keyed) doc.policy = keyed.policy;
    this.journalBytes = Buffer.byteLength(text.slice(0, end));
  }

  /** Write the whole state, with a fresh journal. */
  save(s: SavedState): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const journal = randomBytes(8).toString('hex');
    const doc: StateDocument = {
      format: FORMAT,
      saved_at: new Date().toISOString(),
      policy: s.policy,
      owned: s.owned,
      learned: s.learned,
      ...(s.configSha256 !== undefined ? { config_sha256: s.configSha256 } : {}),
      journal,
    };
    const text = JSON.stringify(doc);
    writeFileAtomic(this.path, text);
    this.wholeBytes = Buffer.byteLength(text);
    this.journalName = journal;
    this.journalBytes = 0;
    // The old journal's lines name the old state: harmless, but its space is reclaimed.
    if (existsSync(this.journalPath)) writeFileAtomic(this.journalPath, '');
  }

  /**
   * Persist one change: a line in the journal, or the whole state (`whole`)
   * when the policy is small, the journal as big as the whole state, or
   * there is no whole state yet to continue.
   */
  record(entry: JournalEntry, whole: () => SavedState): void {
    if (this.journalName === undefined || this.wholeBytes < WHOLE_BELOW || this.journalBytes >= this.wholeBytes) {
      this.save(whole());
      return;
    }
    const line = Buffer.from(JSON.stringify({ journal: this.journalName, ...entry }) + '\n');
    const fd = openSync(this.journalPath, 'a', 0o640);
    try {
      for (let off = 0; off < line.length; ) off += writeSync(fd, line, off);
      fdatasyncSync(fd);
    } catch (err) {
      // Not acknowledged: the line must not stay, half or whole, for the next one to follow.
      try {
        truncateSync(this.journalPath, this.journalBytes);
      } catch {
        // The next load ignores a last line cut short; a whole one is a change that was refused (a crash's worth).
      }
      throw err;
    } finally {
      closeSync(fd);
    }
    if (this.journalBytes === 0) syncDir(this.dir); // the journal may be new: its name must last too
    this.journalBytes += line.length;
  }

  /**
   * Rename the saved state to `policy.json.bad-<time>` (kept for the
   * operator to look at; the next save starts afresh). Returns the new path.
   */
  setAside(now = new Date()): string {
    const suffix = `.bad-${now.toISOString().replace(/:/g, '-')}`;
    const to = `${this.path}${suffix}`;
    renameSync(this.path, to);
    if (existsSync(this.journalPath)) renameSync(this.journalPath, `${this.journalPath}${suffix}`);
    this.journalName = undefined;
    return to;
  }

  /** A write that died half way left only its temporary file: remove it (best effort: the directory may be read-only). */
  private removeTemporaries(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const n of names) {
      if (!TEMP.test(n)) continue;
      try {
        rmSync(join(this.dir, n), { force: true });
      } catch {
        // Harmless where it is: the next save in a writable directory removes it.
      }
    }
  }
}

/** What is wrong with the parts of a state document other than its policy (the policy is validated as a policy). */
function shapeProblem(doc: StateDocument): string | undefined {
  const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(doc.policy)) return 'policy is not an object';
  if (doc.owned !== undefined && !(isObject(doc.owned) && Array.isArray(doc.owned.provider_addresses) && Array.isArray(doc.owned.provider_routes))) {
    return 'owned is not { provider_addresses: [...], provider_routes: [...] }';
  }
  if (doc.learned !== undefined && !Array.isArray(doc.learned)) return 'learned is not a list';
  if (doc.config_sha256 !== undefined && !(typeof doc.config_sha256 === 'string' && /^[0-9a-f]{64}$/.test(doc.config_sha256))) {
    return `config_sha256 ${JSON.stringify(doc.config_sha256)} is not a SHA-256 in hex`;
  }
  if (doc.journal !== undefined && typeof doc.journal !== 'string') return 'journal is not a name';
  return undefined;
}

/** What is wrong with the shape of a journal line (its records are validated with the policy they make). */
function entryProblem(e: JournalEntry): string | undefined {
  if (typeof e !== 'object' || e === null || !Array.isArray(e.changes)) return 'not { changes: [...] }';
  const sections = new Set<string>(RECORD_SPECS.map((r) => r.section));
  for (const c of e.changes) {
    if (typeof c !== 'object' || c === null || (c.op !== 'put' && c.op !== 'delete') || !sections.has(c.section) || typeof c.record !== 'object' || c.record === null) {
      return `a change is not { op: put|delete, section, record }: ${JSON.stringify(c).slice(0, 200)}`;
    }
  }
  return shapeProblem({ format: FORMAT, saved_at: '', policy: {}, owned: e.owned, learned: e.learned, config_sha256: e.config_sha256 });
}
