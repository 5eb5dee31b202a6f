// The five record types of a policy, each said once: its fields (kind,
// required or default, refused keys, CLI keyword), the order they are
// checked in and the record's own cross-field rules, its identity, API path
// and noun, etcd key, CLI object and filters, and its columns in the packet
// core's snapshot. The validators (config/validate.ts), the resources
// (resources.ts), the keyed store, the fleet's keys (fleet/view.ts), the CLI
// tables (cli/commands.ts) and the encoding (snapshot.ts) are derived from
// these tables; native/src/dp/policy.rs mirrors the snapshot columns by hand
// (test/records.test.ts holds the two together).
// Document-level rules (between records, between sections) are not here:
// config/invariants.ts.

import { isUnspecified, unicastProblem, type IpAddr } from '../config/net.js';
import type { ErrorCode } from '../errors.js';
import {
  ADAPTER_MODES,
  LOOKUP_RULES,
  LOOKUP_TYPES,
  SOCKET_MODES,
  VSID_MAX,
  VSID_MIN,
  type CustomerRoute,
  type LookupRecord,
  type ProviderAddress,
  type ProviderRoute,
  type VmAdapter,
} from './policy.js';

/** How a field's value is checked and normalized (config/validate.ts gives each kind its meaning). */
export type FieldKind =
  /** An address; `unicast` refuses the unspecified address, `next_hop` allows it (on-link), `any` takes every address. */
  | { is: 'ip'; accept: 'unicast' | 'next_hop' | 'any'; sameFamilyAs?: string }
  | { is: 'prefix' }
  /** `zeroWhen`: the record's field holding this value may have the zero MAC. */
  | { is: 'mac'; zeroWhen?: readonly [field: string, value: string] }
  | { is: 'int'; min: number; max: number; what: string; code?: ErrorCode }
  /** An IPv4 or IPv6 prefix length, by the family of the address in field `of`. */
  | { is: 'prefix_length'; of: string }
  | { is: 'enum'; values: readonly string[] }
  | { is: 'routing_domain' }
  /** Text checked by a named rule: an interface name, a VM name, a namespace name, a Unix socket path. */
  | { is: 'text'; rule: 'ifname' | 'vm_name' | 'netns' | 'socket_path' };

export interface FieldSpec {
  readonly name: string;
  readonly kind: FieldKind;
  /** Required: what the field is (in the "is required" message). */
  readonly required?: string;
  /** Optional with this default; optional without one is absent when not given. */
  readonly default?: string | number;
  /** A key of the contract that would not act: checked, then refused with this reason. Never in a record. */
  readonly refused?: string;
  /** A further rule on the checked address, given the fields checked before it: why it is refused, if it is. */
  readonly check?: (value: IpAddr, get: Get) => string | undefined;
  /** The nvgrectl keyword and its value's placeholder. */
  readonly cli?: readonly [keyword: string, meta: string];
}

/**
 * Where a field sits in its snapshot entry (byte offsets; native/src/dp/policy.rs
 * reads them): an integer, a MAC, an enum as its index in the field's values,
 * a routing domain as its number (not its GUID), a 16-byte address with its
 * family (4 or 6) and on-link flag in bytes of their own when given, a prefix's
 * address, family and length.
 */
export type Column =
  | { as: 'u8' | 'u16' | 'u32' | 'mac' | 'enum' | 'routing_domain'; at: number }
  | { as: 'ip'; at: number; family?: number; onLink?: number }
  | { as: 'prefix'; at: number; family: number; length: number };

/** A field of the record being checked, as checked so far (addresses and prefixes parsed; undefined: absent or refused). */
export type Get = (field: string) => unknown;
/** Reports a problem of one field of the record being checked. */
export type Report = (field: string, value: unknown, code: ErrorCode, reason: string) => void;

export interface RecordSpec<F extends readonly FieldSpec[] = readonly FieldSpec[]> {
  readonly section: string;
  /** One record's field path prefix in errors (`lookup_record.vsid`). */
  readonly singular: string;
  /** One record, in words. */
  readonly noun: string;
  readonly plural: string;
  /** Path under /v1/. */
  readonly path: string;
  /** In the config file's key order, which is the record's key order. */
  readonly fields: F;
  /** The order fields are checked in, when not `fields`' (a field that others depend on first). */
  readonly checkOrder?: readonly F[number]['name'][];
  /** Cross-field rules of the record itself, run after its fields: `get` its checked fields, `given` the raw values. */
  readonly rules?: (get: Get, given: (field: string) => unknown, report: Report) => void;
  /** The fields that identify a record, in API path order; the last `optionalKeys` may be left out of a path. */
  readonly key: readonly F[number]['name'][];
  readonly optionalKeys?: number;
  /** The identity of a record, when not its `key` fields. */
  readonly identity?: (r: Readonly<Record<string, unknown>>) => string[];
  /** Where in etcd (fleet.md): fleet-wide keys, hosts/<host>/ keys; the key's tail after `<section>/`. */
  readonly etcd: { readonly fleet: boolean; readonly host: boolean; readonly key: (r: Readonly<Record<string, unknown>>) => string };
  /** nvgrectl: the object, the field given as its positional word, the filter fields of show and flush (in query order). */
  readonly cli: { readonly object: string; readonly positional: F[number]['name']; readonly filters: readonly F[number]['name'][] };
  /** The snapshot entry: its length, and each field's column or why the core does not get it. */
  readonly snapshot: { readonly entry: number; readonly columns: { readonly [K in F[number]['name']]: Column | string } };
}

const vsid = { name: 'vsid', kind: { is: 'int', min: VSID_MIN, max: VSID_MAX, what: 'a VSID', code: 'NVGRE_ERR_VSID_RANGE' }, required: 'the virtual subnet ID', cli: ['vsid', 'N'] } as const;
const metric = { name: 'metric', kind: { is: 'int', min: 0, max: 4294967295, what: 'a metric' }, default: 0, cli: ['metric', 'M'] } as const;
const underlayInterface = { name: 'interface', kind: { is: 'text', rule: 'ifname' }, required: 'the underlay interface', cli: ['dev', 'IFNAME'] } as const;
const nextHop = { name: 'next_hop', kind: { is: 'ip', accept: 'next_hop', sameFamilyAs: 'destination_prefix' }, required: 'the next hop, 0.0.0.0 or :: for on-link', cli: ['via', 'NEXTHOP'] } as const;
const vmName = { name: 'vm_name', kind: { is: 'text', rule: 'vm_name' }, cli: ['vm', 'NAME'] } as const;
/** A field as key text ('' when absent: a partial key). */
const text = (r: Readonly<Record<string, unknown>>, name: string): string => (r[name] === undefined ? '' : String(r[name]));
const keyOf = (...names: string[]) => (r: Readonly<Record<string, unknown>>) => names.map((n) => text(r, n)).join('/');

export const PROVIDER_ADDRESSES = {
  section: 'provider_addresses',
  singular: 'provider_address',
  noun: 'provider address',
  plural: 'provider addresses',
  path: 'provider-addresses',
  fields: [
    { name: 'address', kind: { is: 'ip', accept: 'unicast' }, required: 'the provider address' },
    { name: 'prefix_length', kind: { is: 'prefix_length', of: 'address' }, required: 'the PA subnet prefix length' },
    underlayInterface,
    // 0: untagged; else the PA lives on that VLAN of `interface`.
    { name: 'vlan_id', kind: { is: 'int', min: 0, max: 4094, what: 'a VLAN ID' }, default: 0, cli: ['vlan', 'N'] },
    // A key of the contract that does not act is refused, not ignored.
    { name: 'mac', kind: { is: 'mac' }, refused: "a provider address's own MAC is not supported (NVGRE packets leave with the MAC of its interface)" },
  ],
  key: ['address'],
  etcd: { fleet: false, host: true, key: keyOf('address') },
  cli: { object: 'pa', positional: 'address', filters: ['interface'] },
  snapshot: {
    // mtu u16 at 2 and ifindex u32 at 20 are its interface's (encodePolicy).
    entry: 28,
    columns: {
      address: { as: 'ip', at: 4, family: 0 },
      prefix_length: { as: 'u8', at: 1 },
      interface: 'the core gets its MTU and ifindex instead',
      vlan_id: { as: 'u16', at: 24 },
      mac: 'refused',
    },
  },
} as const satisfies RecordSpec;

export const PROVIDER_ROUTES = {
  section: 'provider_routes',
  singular: 'provider_route',
  noun: 'provider route',
  plural: 'provider routes',
  path: 'provider-routes',
  fields: [
    { name: 'destination_prefix', kind: { is: 'prefix' }, required: 'the destination PA prefix' },
    nextHop,
    underlayInterface,
    metric,
  ],
  key: ['destination_prefix', 'interface', 'next_hop'],
  // Known wrinkle: the etcd key holds the prefix alone, though the identity
  // also has the interface and next hop (two routes to one prefix cannot
  // both be in the store).
  etcd: { fleet: false, host: true, key: keyOf('destination_prefix') },
  cli: { object: 'proute', positional: 'destination_prefix', filters: ['interface'] },
  // Provider routes are the kernel's (the daemon installs them), not the core's.
  snapshot: {
    entry: 0,
    columns: { destination_prefix: 'kernel route', next_hop: 'kernel route', interface: 'kernel route', metric: 'kernel route' },
  },
} as const satisfies RecordSpec;

export const CUSTOMER_ROUTES = {
  section: 'customer_routes',
  singular: 'customer_route',
  noun: 'customer route',
  plural: 'customer routes',
  path: 'customer-routes',
  fields: [
    { name: 'routing_domain', kind: { is: 'routing_domain' }, required: 'the routing domain GUID', cli: ['rdid', 'GUID'] },
    vsid,
    { name: 'destination_prefix', kind: { is: 'prefix' }, required: 'the customer prefix' },
    nextHop,
    metric,
  ],
  key: ['routing_domain', 'vsid', 'destination_prefix'],
  etcd: { fleet: true, host: false, key: keyOf('vsid', 'destination_prefix') },
  cli: { object: 'route', positional: 'destination_prefix', filters: ['routing_domain', 'vsid'] },
  snapshot: {
    entry: 48,
    columns: {
      routing_domain: { as: 'routing_domain', at: 0 },
      vsid: { as: 'u32', at: 4 },
      destination_prefix: { as: 'prefix', at: 16, family: 8, length: 9 },
      next_hop: { as: 'ip', at: 32, onLink: 10 },
      metric: { as: 'u32', at: 12 },
    },
  },
} as const satisfies RecordSpec;

/** A lookup record's CA, by its type: L2Only and gateway wildcard records have none (0.0.0.0 or ::), the others a unicast one. */
function caProblem(ca: IpAddr, type: unknown): string | undefined {
  if (type === undefined) return undefined;
  if (type === 'l2only' || type === 'gateway_wildcard') {
    const why = type === 'l2only' ? 'the IP is learned at run time' : 'it matches any CA';
    return isUnspecified(ca) ? undefined : `is not allowed in a ${type} record: its customer_address is 0.0.0.0 or :: (${why})`;
  }
  const problem = unicastProblem(ca);
  return problem && problem + (isUnspecified(ca) ? ` (only l2only and gateway_wildcard records have no CA)` : '');
}

export const LOOKUP_RECORDS = {
  section: 'lookup_records',
  singular: 'lookup_record',
  noun: 'lookup record',
  plural: 'lookup records',
  path: 'lookup-records',
  fields: [
    { name: 'customer_address', kind: { is: 'ip', accept: 'any' }, required: 'the CA', check: (ca, get) => caProblem(ca, get('type')), cli: ['ca', 'CA'] },
    vsid,
    { name: 'mac', kind: { is: 'mac', zeroWhen: ['type', 'gateway_wildcard'] }, required: "the VM's MAC", cli: ['mac', 'MAC'] },
    { name: 'provider_address', kind: { is: 'ip', accept: 'unicast' }, required: 'the PA of the host where the VM lives', cli: ['pa', 'PA'] },
    { name: 'rule', kind: { is: 'enum', values: LOOKUP_RULES }, default: 'encap', cli: ['rule', 'RULE'] },
    { name: 'type', kind: { is: 'enum', values: LOOKUP_TYPES }, default: 'static', cli: ['type', 'TYPE'] },
    vmName,
  ],
  // The type decides what the CA and the MAC may be.
  checkOrder: ['type', 'rule', 'customer_address', 'vsid', 'mac', 'provider_address', 'vm_name'],
  key: ['vsid', 'customer_address', 'mac'],
  optionalKeys: 1,
  // (vsid, CA) is unique, but every L2Only record has CA 0.0.0.0: its MAC tells them apart.
  identity: (r) => {
    const k = [text(r, 'vsid'), text(r, 'customer_address')];
    return k[1] === '0.0.0.0' || k[1] === '::' ? [...k, text(r, 'mac')] : k;
  },
  // Known wrinkle: an L2Only record's key has no address family (its CA,
  // 0.0.0.0 or ::, is not in it).
  etcd: {
    fleet: true,
    host: true,
    key: (r) => (r.type === 'l2only' ? `${r.vsid}/l2only/${r.mac}` : r.type === 'gateway_wildcard' ? `${r.vsid}/gateway_wildcard/${r.customer_address}` : `${r.vsid}/${r.customer_address}`),
  },
  cli: { object: 'lookup', positional: 'customer_address', filters: ['vsid', 'customer_address', 'mac', 'provider_address', 'type'] },
  snapshot: {
    entry: 48,
    columns: {
      vsid: { as: 'u32', at: 0 },
      customer_address: { as: 'ip', at: 8, family: 4 },
      provider_address: { as: 'ip', at: 24, family: 5 },
      rule: { as: 'enum', at: 6 },
      type: { as: 'enum', at: 7 },
      mac: { as: 'mac', at: 40 },
      vm_name: "the operator's, not the core's",
    },
  },
} as const satisfies RecordSpec;

export const VM_ADAPTERS = {
  section: 'vm_adapters',
  singular: 'vm_adapter',
  noun: 'VM adapter',
  plural: 'VM adapters',
  path: 'vm-adapters',
  fields: [
    { name: 'name', kind: { is: 'text', rule: 'ifname' }, required: 'the interface name', cli: ['name', 'NAME'] },
    // Absent: tap.
    { name: 'mode', kind: { is: 'enum', values: ADAPTER_MODES }, cli: ['mode', ADAPTER_MODES.join('|')] },
    vmName,
    { name: 'mac', kind: { is: 'mac' }, required: "the VM adapter's MAC", cli: ['mac', 'MAC'] },
    vsid,
    { name: 'netns', kind: { is: 'text', rule: 'netns' }, cli: ['netns', 'NS'] },
    { name: 'mtu', kind: { is: 'int', min: 68, max: 65535, what: 'an MTU' }, cli: ['mtu', 'N'] },
    { name: 'socket', kind: { is: 'text', rule: 'socket_path' }, cli: ['socket', 'PATH'] },
    { name: 'socket_mode', kind: { is: 'enum', values: SOCKET_MODES }, cli: ['socket_mode', SOCKET_MODES.join('|')] },
  ],
  // What each mode takes: a key that would not act is refused.
  rules: (get, given, report) => {
    const m = (get('mode') as string | undefined) ?? 'tap';
    const notFor = (key: string, v: unknown, why: string) => {
      if (v !== undefined) report(key, v, 'NVGRE_ERR_VALUE', `is not taken by mode ${m}: ${why}`);
    };
    if (m === 'attach') notFor('netns', get('netns'), "an attached interface is adopted in the daemon's own namespace");
    if (m === 'vhost_user') {
      notFor('netns', get('netns'), 'a vhost-user device has no interface');
      notFor('mtu', get('mtu'), "a vhost-user guest's MTU is its own");
      if (given('socket') === undefined) report('socket', undefined, 'NVGRE_ERR_REQUIRED', "is missing; a vhost_user adapter needs its vhost-user socket's path");
    } else {
      notFor('socket', given('socket'), 'only a vhost_user adapter has a socket');
      notFor('socket_mode', given('socket_mode'), 'only a vhost_user adapter has a socket');
    }
  },
  key: ['name'],
  etcd: { fleet: false, host: true, key: keyOf('name') },
  cli: { object: 'adapter', positional: 'name', filters: ['vsid'] },
  snapshot: {
    // id u32 at 0: the core's number of the adapter's device; adapters without one are left out (encodePolicy).
    entry: 16,
    columns: {
      name: 'the core gets its port id instead', vm_name: "the operator's, not the core's", mac: { as: 'mac', at: 8 }, vsid: { as: 'u32', at: 4 },
      mode: 'the device backend', netns: 'the device backend', mtu: 'the device backend', socket: 'the device backend', socket_mode: 'the device backend',
    },
  },
} as const satisfies RecordSpec;

/** In the policy document's order. */
export const RECORD_SPECS = [PROVIDER_ADDRESSES, PROVIDER_ROUTES, CUSTOMER_ROUTES, LOOKUP_RECORDS, VM_ADAPTERS] as const;

export type Section = (typeof RECORD_SPECS)[number]['section'];
export type AnyRecord = ProviderAddress | ProviderRoute | CustomerRoute | LookupRecord | VmAdapter;

// ---------------------------------------------------------------- the interfaces agree with the tables

type Field<S extends RecordSpec> = Exclude<S['fields'][number], { refused: string }>;
/** Keys a record always has (required, or with a default), and the keys it may have. */
type Always<S extends RecordSpec> = Extract<Field<S>, { required: string } | { default: unknown }>['name'];
type Maybe<S extends RecordSpec> = Exclude<Field<S>['name'], Always<S>>;
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
type OptionalKeys<T> = Exclude<keyof T, RequiredKeys<T>>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** true when the interface `T` has exactly the table's fields, required and optional alike; else false. */
export type Matches<T, S extends RecordSpec> = Same<RequiredKeys<T>, Always<S>> extends true ? Same<OptionalKeys<T>, Maybe<S>> : false;

// A field added to (or taken from) one side only fails to compile here.
true satisfies Matches<ProviderAddress, typeof PROVIDER_ADDRESSES>;
true satisfies Matches<ProviderRoute, typeof PROVIDER_ROUTES>;
true satisfies Matches<CustomerRoute, typeof CUSTOMER_ROUTES>;
true satisfies Matches<LookupRecord, typeof LOOKUP_RECORDS>;
true satisfies Matches<VmAdapter, typeof VM_ADAPTERS>;
