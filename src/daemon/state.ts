// The running policy on disk, in `state_dir`, so runtime changes survive a
// restart. Written whole and atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync the directory. A crash at
// any point leaves the old file or the new one, never a mix.

import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { nvgreError } from '../errors.js';
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
}

export interface SavedState {
  policy: unknown;
  owned: OwnedKernelObjects;
  learned: LearnedState[];
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

  /** The saved state, or undefined if none was saved yet. */
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
      throw nvgreError('NVGRE_ERR_IO', `the saved policy ${this.path} is not valid JSON (${(err as Error).message}); move it away to start from the config file`);
    }
    if (doc?.format !== FORMAT) {
      throw nvgreError('NVGRE_ERR_IO', `the saved policy ${this.path} has format ${JSON.stringify(doc?.format)}, expected ${FORMAT}`);
    }
    return {
      policy: doc.policy,
      owned: doc.owned ?? { provider_addresses: [], provider_routes: [] },
      learned: Array.isArray(doc.learned) ? doc.learned : [],
    };
  }

  save(policy: unknown, owned: OwnedKernelObjects, learned: LearnedState[] = []): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o750 });
    const doc: StateDocument = { format: FORMAT, saved_at: new Date().toISOString(), policy, owned, learned };
    writeFileAtomic(this.path, JSON.stringify(doc));
  }

  /** A write that died half way left only its temporary file: remove it. */
  private removeTemporaries(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const n of names) if (TEMP.test(n)) rmSync(join(this.dir, n), { force: true });
  }
}
