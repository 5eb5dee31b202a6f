// The five record types of a policy as resources, from their tables
// (records.ts): their API path, their key (what identifies one record), and
// how a key segment or filter value given as text is normalized, so
// `60-00-60-00-01-01` finds `60:00:60:00:01:01`.

import { nvgreError, type FieldError } from '../errors.js';
import { parseIp, parseMac, parsePrefix, parseRoutingDomain, validateRecord, type RecordValidator } from '../config/index.js';
import { RECORD_SPECS, type AnyRecord, type FieldKind, type RecordSpec, type Section } from './records.js';

export type { AnyRecord, Section } from './records.js';

/** A record type's table (model/records.ts), with what is derived from it. */
export interface Resource extends Omit<RecordSpec, 'section' | 'fields' | 'optionalKeys' | 'identity'> {
  section: Section;
  /** Trailing key fields a path may leave out. */
  optionalKeys: number;
  /** Every field a record of this type may have (filters use them). */
  fields: readonly string[];
  validate: RecordValidator<AnyRecord>;
  /** The key that identifies `r` among its kind (see lookup records). */
  identity(r: AnyRecord): string[];
  spec: RecordSpec;
}

export const RESOURCES: readonly Resource[] = RECORD_SPECS.map((spec: RecordSpec) => ({
  ...spec,
  section: spec.section as Section,
  optionalKeys: spec.optionalKeys ?? 0,
  fields: spec.fields.filter((f) => f.refused === undefined).map((f) => f.name),
  validate: validateRecord(spec),
  identity: (spec.identity as unknown as ((r: AnyRecord) => string[]) | undefined) ?? ((r: AnyRecord) => spec.key.map((k) => field(r, k))),
  spec,
}));

export function resourceByPath(path: string): Resource | undefined {
  return RESOURCES.find((r) => r.path === path);
}

export function resourceBySection(section: Section): Resource {
  return RESOURCES.find((r) => r.section === section)!;
}

export function field(r: AnyRecord, name: string): string {
  const v = (r as unknown as Record<string, unknown>)[name];
  return v === undefined ? '' : String(v);
}

/** Every field name's kind (a name means the same in every record type). */
const KINDS = new Map<string, FieldKind>(RECORD_SPECS.flatMap((s) => s.fields.map((f) => [f.name, f.kind] as const)));

/**
 * The normal form of `value` for `name`, as the validator would produce it,
 * so it compares equal with a stored record's field; throws a 400 that names
 * the field and value when it cannot be one.
 */
export function normalizeField(name: string, value: string, where: string): string {
  const bad = (reason: string): never => {
    const detail: FieldError = { code: 'NVGRE_ERR_VALUE', path: name, value, message: `${name}: ${JSON.stringify(value)} ${reason}` };
    throw nvgreError('NVGRE_ERR_BAD_REQUEST', `${where}: ${detail.message}`, { path: name, value, details: [detail] });
  };
  const parsed = (p: { ok: true; value: string | { text: string } } | { ok: false; reason: string }) =>
    p.ok ? (typeof p.value === 'string' ? p.value : p.value.text) : bad(p.reason);
  switch (KINDS.get(name)?.is) {
    case 'int':
    case 'prefix_length':
      if (!/^\d+$/.test(value)) bad('is not a non-negative integer');
      return String(Number(value));
    case 'ip':
      return parsed(parseIp(value));
    case 'prefix':
      return parsed(parsePrefix(value));
    case 'mac':
      return parsed(parseMac(value, true));
    case 'routing_domain':
      return parsed(parseRoutingDomain(value));
  }
  return value;
}

/** Normalize path key segments (all required ones present, none extra). */
export function parseKey(res: Resource, segments: string[]): string[] {
  const min = res.key.length - res.optionalKeys;
  if (segments.length < min || segments.length > res.key.length) {
    throw nvgreError(
      'NVGRE_ERR_BAD_REQUEST',
      `a ${res.noun} is identified by ${res.key.map((k, i) => (i >= min ? `[${k}]` : k)).join('/')}: got ${segments.length} path segments`,
    );
  }
  return segments.map((s, i) => normalizeField(res.key[i]!, s, `${res.noun} key`));
}

/** Does `r` have the (possibly partial) key `key`? */
export function matchesKey(res: Resource, r: AnyRecord, key: string[]): boolean {
  return key.every((v, i) => field(r, res.key[i]!) === v);
}

export type Filter = Array<[field: string, value: string]>;

/** Normalize list/flush filters given as query parameters. */
export function parseFilter(res: Resource, query: URLSearchParams, ignore: readonly string[] = []): Filter {
  const out: Filter = [];
  for (const [name, value] of query) {
    if (ignore.includes(name)) continue;
    if (!res.fields.includes(name)) {
      const message = `${name}=${JSON.stringify(value)}: ${res.noun}s have no field ${JSON.stringify(name)} to filter on (fields: ${res.fields.join(', ')})`;
      throw nvgreError('NVGRE_ERR_BAD_REQUEST', message, {
        path: name,
        value,
        details: [{ code: 'NVGRE_ERR_UNKNOWN_KEY', path: name, value, message }],
      });
    }
    out.push([name, normalizeField(name, value, 'filter')]);
  }
  return out;
}

export function matchesFilter(r: AnyRecord, filter: Filter): boolean {
  return filter.every(([name, value]) => field(r, name) === value);
}
