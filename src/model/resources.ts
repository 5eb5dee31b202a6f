// The five record types of a policy as resources: their API path, their key
// (what identifies one record), and how a key segment or filter value given
// as text is normalized, so `60-00-60-00-01-01` finds `60:00:60:00:01:01`.

import { nvgreError, type FieldError } from '../errors.js';
import {
  parseIp,
  parseMac,
  parsePrefix,
  parseRoutingDomain,
  validateCustomerRoute,
  validateLookupRecord,
  validateProviderAddress,
  validateProviderRoute,
  validateVmAdapter,
  type RecordValidator,
} from '../config/index.js';
import type { Policy } from './policy.js';

export type Section = 'provider_addresses' | 'provider_routes' | 'customer_routes' | 'lookup_records' | 'vm_adapters';
export type AnyRecord = Policy[Section][number];

export interface Resource {
  section: Section;
  /** Path under /v1/. */
  path: string;
  /** One record, in words (errors). */
  noun: string;
  /** One record's field path prefix in errors (`lookup_record.vsid`). */
  singular: string;
  /** Key fields, in path order. Trailing `optionalKeys` of them may be left out. */
  key: readonly string[];
  optionalKeys: number;
  /** Every field a record of this type may have (filters use them). */
  fields: readonly string[];
  validate: RecordValidator<AnyRecord>;
  /** The key that identifies `r` among its kind (see lookup records). */
  identity(r: AnyRecord): string[];
}

const UNSPECIFIED = new Set(['0.0.0.0', '::']);

export const RESOURCES: readonly Resource[] = [
  {
    section: 'provider_addresses',
    singular: 'provider_address',
    path: 'provider-addresses',
    noun: 'provider address',
    key: ['address'],
    optionalKeys: 0,
    fields: ['address', 'prefix_length', 'interface', 'vlan_id'],
    validate: validateProviderAddress as RecordValidator<AnyRecord>,
    identity: (r) => [field(r, 'address')],
  },
  {
    section: 'provider_routes',
    singular: 'provider_route',
    path: 'provider-routes',
    noun: 'provider route',
    key: ['destination_prefix', 'interface', 'next_hop'],
    optionalKeys: 0,
    fields: ['destination_prefix', 'next_hop', 'interface', 'metric'],
    validate: validateProviderRoute as RecordValidator<AnyRecord>,
    identity: (r) => [field(r, 'destination_prefix'), field(r, 'interface'), field(r, 'next_hop')],
  },
  {
    section: 'customer_routes',
    singular: 'customer_route',
    path: 'customer-routes',
    noun: 'customer route',
    key: ['routing_domain', 'vsid', 'destination_prefix'],
    optionalKeys: 0,
    fields: ['routing_domain', 'vsid', 'destination_prefix', 'next_hop', 'metric'],
    validate: validateCustomerRoute as RecordValidator<AnyRecord>,
    identity: (r) => [field(r, 'routing_domain'), field(r, 'vsid'), field(r, 'destination_prefix')],
  },
  {
    section: 'lookup_records',
    singular: 'lookup_record',
    path: 'lookup-records',
    noun: 'lookup record',
    key: ['vsid', 'customer_address', 'mac'],
    optionalKeys: 1,
    fields: ['customer_address', 'vsid', 'mac', 'provider_address', 'rule', 'type', 'vm_name'],
    validate: validateLookupRecord as RecordValidator<AnyRecord>,
    // (vsid, CA) is unique, but every L2Only record has CA 0.0.0.0: its MAC tells them apart.
    identity: (r) => {
      const k = [field(r, 'vsid'), field(r, 'customer_address')];
      return UNSPECIFIED.has(k[1]!) ? [...k, field(r, 'mac')] : k;
    },
  },
  {
    section: 'vm_adapters',
    singular: 'vm_adapter',
    path: 'vm-adapters',
    noun: 'VM adapter',
    key: ['name'],
    optionalKeys: 0,
    fields: ['name', 'mode', 'vm_name', 'mac', 'vsid', 'netns', 'mtu', 'socket', 'socket_mode'],
    validate: validateVmAdapter as RecordValidator<AnyRecord>,
    identity: (r) => [field(r, 'name')],
  },
];

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

const INTEGER_FIELDS = new Set(['vsid', 'metric', 'vlan_id', 'mtu', 'prefix_length']);
const IP_FIELDS = new Set(['address', 'customer_address', 'provider_address', 'next_hop']);

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
  if (INTEGER_FIELDS.has(name)) {
    if (!/^\d+$/.test(value)) bad('is not a non-negative integer');
    return String(Number(value));
  }
  if (IP_FIELDS.has(name)) {
    const p = parseIp(value);
    return p.ok ? p.value.text : bad(p.reason);
  }
  if (name === 'destination_prefix') {
    const p = parsePrefix(value);
    return p.ok ? p.value.text : bad(p.reason);
  }
  if (name === 'mac') {
    const p = parseMac(value, true);
    return p.ok ? p.value : bad(p.reason);
  }
  if (name === 'routing_domain') {
    const p = parseRoutingDomain(value);
    return p.ok ? p.value : bad(p.reason);
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
