// The policy a host runs from the store's keys (fleet.md): the fleet's
// customer routes and lookup records, plus this host's provider addresses,
// provider routes, VM adapters and host-scoped lookup records, from its
// config file and from hosts/<host>/. For one record identity the config
// file wins over hosts/<host>/, which wins over the fleet-wide key (a
// host-scoped record replaces a fleet record of the same VSID and CA).

import { isNvgreError } from '../errors.js';
import type { Policy } from '../model/policy.js';
import { RESOURCES, resourceBySection, type AnyRecord, type Section } from '../model/resources.js';

/** The keys of one store: `<prefix>/v1/`. */
export function keyRoot(prefix: string): string {
  return `${prefix.replace(/\/+$/, '')}/v1/`;
}

/** Sections a host's own keys hold (hosts/<host>/<section>/...). */
export const HOST_SECTIONS: readonly Section[] = RESOURCES.filter((r) => r.spec.etcd.host).map((r) => r.section);
/** Sections of fleet-wide keys. */
export const FLEET_SECTIONS: readonly Section[] = RESOURCES.filter((r) => r.spec.etcd.fleet).map((r) => r.section);

/** The key (below the root) of `record` in `section`: fleet-wide, or of host `host`. */
export function recordKey(section: Section, record: AnyRecord, host?: string): string {
  const tail = resourceBySection(section).spec.etcd.key(record as unknown as Readonly<Record<string, unknown>>);
  return host === undefined ? `${section}/${tail}` : `hosts/${host}/${section}/${tail}`;
}

export const statusKey = (host: string) => `hosts/${host}/status`;

/** Where a key (below the root) belongs: a record's section and scope, a host's status, or nothing we know. */
export type KeyPlace =
  | { kind: 'record'; section: Section; host?: string }
  | { kind: 'status'; host: string }
  | { kind: 'unknown' };

export function placeOf(rel: string): KeyPlace {
  const parts = rel.split('/');
  if (parts[0] === 'hosts' && parts.length >= 3) {
    const host = parts[1]!;
    if (parts.length === 3 && parts[2] === 'status') return { kind: 'status', host };
    const section = parts[2] as Section;
    if (HOST_SECTIONS.includes(section) && parts.length >= 4) return { kind: 'record', section, host };
    return { kind: 'unknown' };
  }
  const section = parts[0] as Section;
  if (FLEET_SECTIONS.includes(section) && parts.length >= 3) return { kind: 'record', section };
  return { kind: 'unknown' };
}

/** A store value as a record of the key's section, or why it is not one (a bad value, or identity fields that disagree with the key). */
export function parseValue(rel: string, section: Section, host: string | undefined, value: string): { record: AnyRecord } | { error: string } {
  const res = resourceBySection(section);
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch (err) {
    return { error: `${rel}: the value is not JSON (${(err as Error).message})` };
  }
  let record: AnyRecord;
  try {
    record = res.validate(doc, res.singular);
  } catch (err) {
    if (!isNvgreError(err)) throw err;
    return { error: `${rel}: ${err.message}` };
  }
  const expected = recordKey(section, record, host);
  if (expected !== rel) return { error: `${rel}: the ${res.noun}'s own fields put it at ${expected}, not at this key` };
  return { record };
}

/** A record's identity in the policy (its section and resource identity). */
export function identityOf(section: Section, record: AnyRecord): string {
  const res = resourceBySection(section);
  return `${section}\u0000${res.identity(record).join('\u0000')}`;
}

interface Candidates {
  section: Section;
  file?: AnyRecord;
  host?: AnyRecord;
  fleet?: AnyRecord;
}

/**
 * The store's keys as this host sees them, kept up to date key by key, and
 * the policy they make with the config file. `set` tells which record
 * identities a key's change touches, so a change costs work in proportion
 * to it, not to the policy.
 */
export class FleetView {
  /** Per store key (below the root): the identity its value gave. */
  private readonly keys = new Map<string, string>();
  /** Keys whose value is not a valid record, and why. */
  readonly errors = new Map<string, string>();
  private readonly byId = new Map<string, Candidates>();
  /** Every host's status value, by host. */
  readonly statuses = new Map<string, string>();

  constructor(
    readonly host: string,
    private file: Policy,
  ) {
    this.addFile(file);
  }

  private addFile(file: Policy): string[] {
    const ids: string[] = [];
    for (const section of HOST_SECTIONS) {
      for (const r of file[section] as AnyRecord[]) {
        const id = identityOf(section, r);
        this.candidates(id, section).file = r;
        ids.push(id);
      }
    }
    return ids;
  }

  /** A new config file (a reload): its host-local records replace the old file's. Returns the identities touched. */
  setFile(file: Policy): string[] {
    const ids: string[] = [];
    for (const section of HOST_SECTIONS) {
      for (const r of this.file[section] as AnyRecord[]) {
        const id = identityOf(section, r);
        const c = this.byId.get(id);
        if (c) delete c.file;
        ids.push(id);
      }
    }
    this.file = file;
    return [...ids, ...this.addFile(file)];
  }

  get settings(): Policy {
    return this.file;
  }

  private candidates(id: string, section: Section): Candidates {
    let c = this.byId.get(id);
    if (!c) {
      c = { section };
      this.byId.set(id, c);
    }
    return c;
  }

  /**
   * Key `rel` (below the root) now holds `value` (undefined: deleted).
   * Returns the record identities whose desired record may have changed.
   */
  set(rel: string, value: string | undefined): string[] {
    const place = placeOf(rel);
    if (place.kind === 'status') {
      if (value === undefined) this.statuses.delete(place.host);
      else this.statuses.set(place.host, value);
      return [];
    }
    if (place.kind !== 'record' || (place.host !== undefined && place.host !== this.host)) return [];
    const scope = place.host === undefined ? 'fleet' : 'host';
    const touched: string[] = [];
    const old = this.keys.get(rel);
    if (old !== undefined) {
      const c = this.byId.get(old)!;
      delete c[scope];
      this.keys.delete(rel);
      touched.push(old);
    }
    this.errors.delete(rel);
    if (value === undefined) return touched;
    const parsed = parseValue(rel, place.section, place.host, value);
    if ('error' in parsed) {
      this.errors.set(rel, parsed.error);
      return touched;
    }
    const id = identityOf(place.section, parsed.record);
    this.candidates(id, place.section)[scope] = parsed.record;
    this.keys.set(rel, id);
    if (id !== old) touched.push(id);
    return touched;
  }

  /** The record this host runs for identity `id` (file, then hosts/<me>/, then fleet), if any. */
  desired(id: string): { section: Section; record: AnyRecord } | undefined {
    const c = this.byId.get(id);
    if (!c) return undefined;
    const record = c.file ?? c.host ?? c.fleet;
    if (!record) {
      this.byId.delete(id);
      return undefined;
    }
    return { section: c.section, record };
  }

  /** Where the record this host runs for `id` comes from. */
  origin(id: string): 'file' | 'host' | 'fleet' | undefined {
    const c = this.byId.get(id);
    return c?.file ? 'file' : c?.host ? 'host' : c?.fleet ? 'fleet' : undefined;
  }

  /** Every identity the view holds a record for. */
  ids(): IterableIterator<string> {
    return this.byId.keys();
  }

  /** The whole policy this host runs: the config file's settings and the records of the view. */
  policy(): Policy {
    const p: Policy = { ...this.file };
    for (const res of RESOURCES) (p as unknown as Record<Section, AnyRecord[]>)[res.section] = [];
    for (const id of [...this.byId.keys()]) {
      const d = this.desired(id);
      if (d) (p[d.section] as AnyRecord[]).push(d.record);
    }
    return p;
  }
}
