// The running policy on disk, in `state_dir`, so runtime changes survive a
// restart. Written whole and atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync the directory. A crash at
// any point leaves the old file or the new one, never a mix. A saved state
// that cannot be used is renamed aside, never deleted: it is evidence.

import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { validateProviderAddress, validateProviderRoute } from '../config/index.js';
import { configError, nvgreError, type FieldError } from '../errors.js';
import type { OwnedKernelObjects } from './host.js';

const FORMAT = 'nvgred-state/1';

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
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

export class StateFile {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, 'policy.json');
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

  save(s: SavedState): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const doc: StateDocument = {
      format: FORMAT,
      saved_at: new Date().toISOString(),
      policy: s.policy,
      owned: s.owned,
      learned: s.learned,
      ...(s.configSha256 !== undefined ? { config_sha256: s.configSha256 } : {}),
    };
    writeFileAtomic(this.path, JSON.stringify(doc));
  }

  /**
   * Rename the saved state to `policy.json.bad-<time>` (kept for the
   * operator to look at; the next save starts afresh). Returns the new path.
   */
  setAside(now = new Date()): string {
    const to = `${this.path}.bad-${now.toISOString().replace(/:/g, '-')}`;
    renameSync(this.path, to);
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
  return undefined;
}
