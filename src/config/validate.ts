// Validation and normalization of a policy document (the parsed config file,
// or an API body of the same shape).
//
// Every per-record validator comes in two forms through one function:
//   validateLookupRecord(x, path?)          -> LookupRecord, or throws NVGRE_ERR_CONFIG
//   validateLookupRecord(x, path, errors)   -> LookupRecord | undefined, errors appended
// validatePolicy() runs them all, then the cross-record invariants
// (./invariants.ts), and throws one NVGRE_ERR_CONFIG listing every problem.

import { configError, fieldError, formatValue, type ErrorCode, type FieldError } from '../errors.js';
import {
  DEFAULT_API_SOCKET,
  DEFAULT_FLOW_ID,
  DEFAULT_METRICS_LISTEN,
  DEFAULT_PER_VSID,
  DEFAULT_PER_VSID_MAX,
  PER_VSID_MAX_LIMIT,
  defaultMetrics,
  DEFAULT_LEARNING_MAX_PER_VSID,
  DEFAULT_LEARNING_TTL_SECONDS,
  LEARNING_MAX_PER_VSID_LIMIT,
  LEARNING_TTL_SECONDS_MAX,
  LEARNING_TTL_SECONDS_MIN,
  defaultLearning,
  FLOW_ID_MODES,
  HOST_NAME_MAX,
  VSID_MAX,
  VSID_MIN,
  emptyPolicy,
  type ApiSection,
  type CustomerRoute,
  type EncapsulationSection,
  type HostSection,
  type LearningSection,
  type LookupRecord,
  type MetricsSection,
  DEFAULT_NAT_PORT_END,
  DEFAULT_NAT_PORT_START,
  NAT_PROTOCOLS,
  type Nat,
  type NatStaticMapping,
  type UplinkSection,
  type Policy,
  type PolicyStoreSection,
  DEFAULT_POLICY_STORE_PREFIX,
  type ProviderAddress,
  type ProviderRoute,
  type VmAdapter,
} from '../model/policy.js';
import {
  CUSTOMER_ROUTES,
  LOOKUP_RECORDS,
  PROVIDER_ADDRESSES,
  PROVIDER_ROUTES,
  VM_ADAPTERS,
  type AnyRecord,
  type FieldKind,
  type FieldSpec,
  type RecordSpec,
} from '../model/records.js';
import { collectInvariantErrors } from './invariants.js';
import { natProblems } from './nat.js';
import {
  absolutePathProblem,
  interfaceNameProblem,
  isUnspecified,
  labelProblem,
  netnsNameProblem,
  inSubnet,
  parseHostPort,
  parseIp,
  parseMac,
  parsePrefix,
  parseRoutingDomain,
  unicastProblem,
  type Family,
  type IpAddr,
  type IpPrefix,
} from './net.js';
import { joinIndex, joinKey } from './path.js';

type Obj = Record<string, unknown>;
type Errs = FieldError[];

/** Longest VM name accepted (Hyper-V allows 100; leave room). */
export const VM_NAME_MAX = 255;
/** sun_path is 108 bytes including the terminating NUL. */
export const UNIX_SOCKET_PATH_MAX = 107;

// ------------------------------------------------------------------ keys

export const TOP_LEVEL_KEYS = [
  'host',
  'provider_addresses',
  'provider_routes',
  'customer_routes',
  'lookup_records',
  'vm_adapters',
  'encapsulation',
  'learning',
  'state_dir',
  'api',
  'metrics',
  'policy_store',
  'uplink',
  'nat',
  'nat_sync',
] as const;
const HOST_KEYS = ['name'] as const;
const ENCAP_KEYS = ['flow_id'] as const;
const LEARNING_KEYS = ['max_per_vsid', 'ttl_seconds'] as const;
const API_KEYS = ['socket'] as const;
const METRICS_KEYS = ['listen', 'per_vsid', 'per_vsid_max'] as const;
const POLICY_STORE_KEYS = ['etcd'] as const;
const ETCD_KEYS = ['endpoints', 'prefix'] as const;
const UPLINK_KEYS = ['interface', 'addresses', 'gateway'] as const;
const NAT_KEYS = ['name', 'routing_domain', 'vsid', 'internal_address', 'mac', 'external_address', 'port_start', 'port_end', 'static_mappings'] as const;
const STATIC_MAPPING_KEYS = ['protocol', 'external_port', 'internal_address', 'internal_port'] as const;

/** HNV PowerShell parameter names and other likely spellings → our key. */
const KEY_ALIASES: Readonly<Record<string, string>> = {
  virtual_subnet_id: 'vsid',
  virtualsubnetid: 'vsid',
  mac_address: 'mac',
  macaddress: 'mac',
  routing_domain_id: 'routing_domain',
  routingdomainid: 'routing_domain',
  interface_index: 'interface',
  interface_name: 'interface',
  provider_address_prefix_length: 'prefix_length',
  vlan: 'vlan_id',
  vm_network_adapter_name: 'name',
  netns_name: 'netns',
  namespace: 'netns',
};

// ------------------------------------------------------------------ helpers

function isPlainObject(x: unknown): x is Obj {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (isPlainObject(v)) return 'a mapping';
  switch (typeof v) {
    case 'string':
      return 'a string';
    case 'number':
      return Number.isInteger(v) ? 'an integer' : 'a number';
    case 'boolean':
      return 'a boolean';
    default:
      return `a ${typeof v}`;
  }
}

function own(o: Obj, k: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined;
}

function push(errs: Errs, code: ErrorCode, path: string, value: unknown, reason: string): void {
  errs.push(fieldError(code, path, value, reason));
}

/**
 * The path of field `key` of the object at `parent` (`key` '' = `parent`
 * itself). Field paths are only built when a problem is reported: building
 * them for every field of a million records costs more than checking them.
 */
function at(parent: string, key: string): string {
  return key === '' ? parent : joinKey(parent, key);
}

function levenshtein(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return 99;
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

function squash(s: string): string {
  return s
    .replace(/^TranslationMethod/i, '')
    .replace(/[-_\s]/g, '')
    .toLowerCase();
}

/** A "did you mean" hint for a misspelt key or enum value. */
function suggest(given: string, allowed: readonly string[]): string | undefined {
  const snake = given
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[-\s]/g, '_')
    .toLowerCase();
  for (const cand of [snake, KEY_ALIASES[snake], KEY_ALIASES[squash(given)]]) {
    if (cand !== undefined && cand !== given && allowed.includes(cand)) return cand;
  }
  const sq = squash(given);
  const exact = allowed.find((a) => squash(a) === sq);
  if (exact !== undefined) return exact;
  let best: string | undefined;
  let bestD = Math.max(1, Math.min(2, Math.floor(given.length / 3)));
  for (const a of allowed) {
    const d = levenshtein(given.toLowerCase(), a);
    if (d <= bestD) {
      best = a;
      bestD = d - 1;
    }
  }
  return best;
}

/**
 * Check that `x` is a mapping whose keys are all in `keys`; report unknown
 * keys. Returns the mapping (even when it has unknown keys, so its known
 * fields are still checked) or undefined if `x` is not a mapping.
 */
function mapping(x: unknown, path: string, keys: readonly string[], errs: Errs, what: string): Obj | undefined {
  if (!isPlainObject(x)) {
    push(errs, 'NVGRE_ERR_TYPE', path, x, `is ${typeName(x)}, expected ${what} (a mapping)`);
    return undefined;
  }
  for (const k in x) {
    if (!Object.prototype.hasOwnProperty.call(x, k) || keys.includes(k)) continue;
    const p = joinKey(path, k);
    const hint = suggest(k, keys);
    const v = x[k];
    errs.push({
      code: 'NVGRE_ERR_UNKNOWN_KEY',
      path: p,
      value: v,
      message:
        `${p}: unknown key ${JSON.stringify(k)} (value ${formatValue(v, 40)})` +
        (hint ? `; did you mean ${JSON.stringify(hint)}?` : '') +
        `; the keys of ${what} are: ${keys.join(', ')}`,
    });
  }
  return x;
}

/** A required field: absent or null is NVGRE_ERR_REQUIRED. */
function required(o: Obj, k: string, path: string, errs: Errs, what: string): unknown {
  const v = own(o, k);
  if (v === undefined || v === null) {
    const p = joinKey(path, k);
    errs.push({
      code: 'NVGRE_ERR_REQUIRED',
      path: p,
      value: v === null ? null : undefined,
      message: `${p}: ${v === null ? 'is null' : 'is missing'}; ${k} (${what}) is required`,
    });
    return undefined;
  }
  return v;
}

/** An optional field: absent or null means "use the default". */
function optional(o: Obj, k: string): unknown {
  const v = own(o, k);
  return v === null ? undefined : v;
}

function str(v: unknown, parent: string, key: string, errs: Errs, hint = ''): string | undefined {
  if (typeof v === 'string') return v;
  push(errs, 'NVGRE_ERR_TYPE', at(parent, key), v, `is ${typeName(v)}, expected a string${hint}`);
  return undefined;
}

function int(v: unknown, parent: string, key: string, errs: Errs): number | undefined {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'number') push(errs, 'NVGRE_ERR_TYPE', at(parent, key), v, 'is not an integer');
  else push(errs, 'NVGRE_ERR_TYPE', at(parent, key), v, `is ${typeName(v)}, expected an integer`);
  return undefined;
}

function intInRange(
  v: unknown,
  parent: string,
  key: string,
  errs: Errs,
  min: number,
  max: number,
  what: string,
  code: ErrorCode = 'NVGRE_ERR_VALUE',
): number | undefined {
  const n = int(v, parent, key, errs);
  if (n === undefined) return undefined;
  if (n < min || n > max) {
    push(errs, code, at(parent, key), n, `is out of range (${what} is an integer in ${min}..${max})`);
    return undefined;
  }
  return n;
}

function enumValue<T extends string>(v: unknown, parent: string, key: string, errs: Errs, allowed: readonly T[]): T | undefined {
  const s = str(v, parent, key, errs);
  if (s === undefined) return undefined;
  if ((allowed as readonly string[]).includes(s)) return s as T;
  const hint = suggest(s, allowed);
  push(
    errs,
    'NVGRE_ERR_VALUE',
    at(parent, key),
    s,
    `is not one of ${allowed.join(', ')}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`,
  );
  return undefined;
}

type AddrKind = 'unicast' | 'next_hop' | 'any';

function ipValue(v: unknown, parent: string, key: string, errs: Errs, kind: AddrKind): IpAddr | undefined {
  const s = str(v, parent, key, errs);
  if (s === undefined) return undefined;
  const a = parseIp(s);
  if (!a.ok) {
    push(errs, 'NVGRE_ERR_ADDRESS', at(parent, key), s, a.reason);
    return undefined;
  }
  if (kind === 'any' || (kind === 'next_hop' && isUnspecified(a.value))) return a.value;
  const problem = unicastProblem(a.value);
  if (problem) {
    push(errs, 'NVGRE_ERR_ADDRESS', at(parent, key), s, kind === 'next_hop' ? `${problem} (use ${a.value.family === 4 ? '0.0.0.0' : '::'} for on-link)` : problem);
    return undefined;
  }
  return a.value;
}

function prefixValue(v: unknown, parent: string, key: string, errs: Errs): IpPrefix | undefined {
  const s = str(v, parent, key, errs);
  if (s === undefined) return undefined;
  const p = parsePrefix(s);
  if (!p.ok) {
    push(errs, p.hostBits ? 'NVGRE_ERR_PREFIX_HOST_BITS' : 'NVGRE_ERR_PREFIX', at(parent, key), s, p.reason);
    return undefined;
  }
  return p.value;
}

function macValue(v: unknown, parent: string, key: string, errs: Errs, allowZero = false): string | undefined {
  const s = str(
    v,
    parent,
    key,
    errs,
    typeof v === 'number' ? ` (quote MACs in YAML, e.g. mac: "600060000101": unquoted digits are a number)` : '',
  );
  if (s === undefined) return undefined;
  const m = parseMac(s, allowZero);
  if (!m.ok) {
    push(errs, 'NVGRE_ERR_MAC', at(parent, key), s, m.reason);
    return undefined;
  }
  return m.value;
}

function routingDomainValue(v: unknown, parent: string, key: string, errs: Errs): string | undefined {
  const s = str(
    v,
    parent,
    key,
    errs,
    isPlainObject(v) ? ' (quote the GUID in YAML: unquoted {...} is a flow mapping)' : '',
  );
  if (s === undefined) return undefined;
  const r = parseRoutingDomain(s);
  if (!r.ok) {
    push(errs, 'NVGRE_ERR_ROUTING_DOMAIN', at(parent, key), s, r.reason);
    return undefined;
  }
  return r.value;
}

function checked(v: unknown, parent: string, key: string, errs: Errs, problem: (s: string) => string | undefined): string | undefined {
  const s = str(v, parent, key, errs);
  if (s === undefined) return undefined;
  const p = problem(s);
  if (p) {
    push(errs, 'NVGRE_ERR_VALUE', at(parent, key), s, p);
    return undefined;
  }
  return s;
}

// ------------------------------------------------------------------ validators

/** A validator usable stand-alone (throws) or inside a larger document (collects). */
export interface RecordValidator<T> {
  /** Returns the normalized value or throws NvgreError NVGRE_ERR_CONFIG listing every problem. */
  (x: unknown, path?: string): T;
  /** Appends problems to `errors`; returns the normalized value, or undefined if there were any. */
  (x: unknown, path: string, errors: FieldError[]): T | undefined;
}

function validator<T>(what: string, fn: (x: unknown, path: string, errs: Errs) => T | undefined): RecordValidator<T> {
  return ((x: unknown, path = '', errors?: FieldError[]) => {
    if (errors) return fn(x, path, errors);
    const errs: Errs = [];
    const v = fn(x, path, errs);
    if (errs.length > 0 || v === undefined) throw configError(errs, { what });
    return v;
  }) as RecordValidator<T>;
}

function hostSection(x: unknown, path: string, errs: Errs): HostSection | undefined {
  if (x === undefined || x === null) return {};
  const n0 = errs.length;
  const o = mapping(x, path, HOST_KEYS, errs, 'host');
  if (!o) return undefined;
  const out: HostSection = {};
  const name = optional(o, 'name');
  if (name !== undefined) {
    const s = checked(name, path, 'name', errs, (v) => labelProblem(v, HOST_NAME_MAX));
    if (s !== undefined) out.name = s;
  }
  return errs.length > n0 ? undefined : out;
}

const TEXT_RULES: Readonly<Record<Extract<FieldKind, { is: 'text' }>['rule'], (s: string) => string | undefined>> = {
  ifname: interfaceNameProblem,
  vm_name: (s) => labelProblem(s, VM_NAME_MAX),
  netns: netnsNameProblem,
  socket_path: unixSocketPathProblem,
};

/** A field's value checked as its kind says, in the form later fields' rules read (addresses and prefixes parsed). */
function fieldValue(f: FieldSpec, v: unknown, path: string, errs: Errs, get: (field: string) => unknown): unknown {
  const k = f.kind;
  switch (k.is) {
    case 'ip': {
      const a = ipValue(v, path, f.name, errs, k.accept);
      const other = k.sameFamilyAs === undefined ? undefined : (get(k.sameFamilyAs) as IpPrefix | undefined);
      if (a && other && a.family !== other.family) {
        const why = `is IPv${a.family} but ${k.sameFamilyAs} ${other.text} is IPv${other.family}; they must be the same family`;
        push(errs, 'NVGRE_ERR_FAMILY', at(path, f.name), a.text, why);
      }
      return a;
    }
    case 'prefix':
      return prefixValue(v, path, f.name, errs);
    case 'mac':
      return macValue(v, path, f.name, errs, k.zeroWhen !== undefined && get(k.zeroWhen[0]) === k.zeroWhen[1]);
    case 'int':
      return intInRange(v, path, f.name, errs, k.min, k.max, k.what, k.code);
    case 'prefix_length': {
      const fam: Family = (get(k.of) as IpAddr | undefined)?.family ?? 6;
      return intInRange(v, path, f.name, errs, 1, fam === 4 ? 32 : 128, `an IPv${fam} prefix length`, 'NVGRE_ERR_PREFIX');
    }
    case 'enum':
      return enumValue(v, path, f.name, errs, k.values);
    case 'routing_domain':
      return routingDomainValue(v, path, f.name, errs);
    case 'text':
      return checked(v, path, f.name, errs, TEXT_RULES[k.rule]);
  }
}

/**
 * The validator of one record type, from its table (model/records.ts): its
 * keys, then each field in check order (required, default, kind, refused,
 * the field's own check), then the record's cross-field rules; the record
 * has the table's key order, optional fields without a default only when given.
 */
function recordValidator<T extends AnyRecord>(spec: RecordSpec): (x: unknown, path: string, errs: Errs) => T | undefined {
  const keys = spec.fields.map((f) => f.name);
  // Every field's facts in one shape, read by position (a million records are checked at a time).
  const steps = (spec.checkOrder ?? keys).map((name) => {
    const f = spec.fields[keys.indexOf(name)]!;
    return { f, at: keys.indexOf(name), required: f.required, def: f.default, refused: f.refused, check: f.check };
  });
  // Addresses and prefixes are checked as parsed values; the record holds their normal text.
  const rich = spec.fields.map((f) => f.kind.is === 'ip' || f.kind.is === 'prefix');
  const what = `a ${spec.noun}`;
  // The checked fields of the record being validated (validation is synchronous: one at a time).
  let vals: unknown[] = [];
  const get = (field: string): unknown => vals[keys.indexOf(field)];
  return (x, path, errs) => {
    const n0 = errs.length;
    const o = mapping(x, path, keys, errs, what);
    if (!o) return undefined;
    vals = new Array<unknown>(keys.length);
    for (const s of steps) {
      const v = s.required !== undefined ? required(o, s.f.name, path, errs, s.required) : optional(o, s.f.name);
      if (v === undefined) {
        vals[s.at] = s.def;
        continue;
      }
      const value = fieldValue(s.f, v, path, errs, get);
      if (value === undefined) continue;
      if (s.refused !== undefined) {
        push(errs, 'NVGRE_ERR_VALUE', at(path, s.f.name), v, `is refused: ${s.refused}`);
        continue;
      }
      const problem = s.check?.(value as IpAddr, get);
      if (problem) push(errs, 'NVGRE_ERR_ADDRESS', at(path, s.f.name), (value as IpAddr).text, problem);
      else vals[s.at] = value;
    }
    spec.rules?.(get, (k) => optional(o, k), (k, v, code, reason) => push(errs, code, at(path, k), v, reason));
    if (errs.length > n0) return undefined;
    const out: Obj = {};
    for (let i = 0; i < keys.length; i++) {
      const v = vals[i];
      if (v !== undefined) out[keys[i]!] = rich[i] ? (v as IpAddr | IpPrefix).text : v;
    }
    return out as unknown as T;
  };
}

/** A path a Unix socket can be bound to or reached at. */
function unixSocketPathProblem(s: string): string | undefined {
  const p = absolutePathProblem(s);
  if (p) return p;
  return Buffer.byteLength(s) > UNIX_SOCKET_PATH_MAX ? `is too long for a Unix socket path (at most ${UNIX_SOCKET_PATH_MAX} bytes)` : undefined;
}

function encapsulationSection(x: unknown, path: string, errs: Errs): EncapsulationSection | undefined {
  if (x === undefined || x === null) return { flow_id: DEFAULT_FLOW_ID };
  const n0 = errs.length;
  const o = mapping(x, path, ENCAP_KEYS, errs, 'encapsulation');
  if (!o) return undefined;
  const fv = optional(o, 'flow_id');
  const flow_id = fv === undefined ? DEFAULT_FLOW_ID : enumValue(fv, path, 'flow_id', errs, FLOW_ID_MODES);
  return errs.length > n0 ? undefined : { flow_id: flow_id! };
}

function learningSection(x: unknown, path: string, errs: Errs): LearningSection | undefined {
  if (x === undefined || x === null) return defaultLearning();
  const n0 = errs.length;
  const o = mapping(x, path, LEARNING_KEYS, errs, 'learning');
  if (!o) return undefined;
  const mv = optional(o, 'max_per_vsid');
  const max =
    mv === undefined
      ? DEFAULT_LEARNING_MAX_PER_VSID
      : intInRange(mv, path, 'max_per_vsid', errs, 0, LEARNING_MAX_PER_VSID_LIMIT, 'max_per_vsid (learned records per VSID; 0 turns learning off)');
  const tv = optional(o, 'ttl_seconds');
  const ttl =
    tv === undefined
      ? DEFAULT_LEARNING_TTL_SECONDS
      : intInRange(tv, path, 'ttl_seconds', errs, LEARNING_TTL_SECONDS_MIN, LEARNING_TTL_SECONDS_MAX, 'ttl_seconds');
  return errs.length > n0 ? undefined : { max_per_vsid: max!, ttl_seconds: ttl! };
}

function apiSection(x: unknown, path: string, errs: Errs): ApiSection | undefined {
  if (x === undefined || x === null) return { socket: DEFAULT_API_SOCKET };
  const n0 = errs.length;
  const o = mapping(x, path, API_KEYS, errs, 'api');
  if (!o) return undefined;
  const sv = optional(o, 'socket');
  const socket = sv === undefined ? DEFAULT_API_SOCKET : checked(sv, path, 'socket', errs, unixSocketPathProblem);
  return errs.length > n0 ? undefined : { socket: socket! };
}

function metricsSection(x: unknown, path: string, errs: Errs): MetricsSection | undefined {
  if (x === undefined || x === null) return defaultMetrics();
  const n0 = errs.length;
  const o = mapping(x, path, METRICS_KEYS, errs, 'metrics');
  if (!o) return undefined;
  const lv = optional(o, 'listen');
  let listen: string | undefined = DEFAULT_METRICS_LISTEN;
  if (lv !== undefined) {
    const p = joinKey(path, 'listen');
    const s = str(lv, path, 'listen', errs, typeof lv === 'number' ? ' (host:port, e.g. 127.0.0.1:9470)' : '');
    if (s !== undefined) {
      const hp = parseHostPort(s);
      if (hp.ok) listen = hp.value;
      else push(errs, 'NVGRE_ERR_VALUE', p, s, hp.reason);
    }
  }
  const pv = optional(o, 'per_vsid');
  let perVsid = DEFAULT_PER_VSID;
  if (pv !== undefined) {
    if (typeof pv === 'boolean') perVsid = pv;
    else push(errs, 'NVGRE_ERR_TYPE', joinKey(path, 'per_vsid'), pv, `is ${typeName(pv)}, expected true or false`);
  }
  const mv = optional(o, 'per_vsid_max');
  const perVsidMax = mv === undefined ? DEFAULT_PER_VSID_MAX : intInRange(mv, path, 'per_vsid_max', errs, 0, PER_VSID_MAX_LIMIT, 'per_vsid_max');
  return errs.length > n0 ? undefined : { listen, per_vsid: perVsid, per_vsid_max: perVsidMax! };
}

/** An etcd member's client URL: http://host:port, or unix:///path of its socket (the JSON gateway; TLS is not supported). */
function endpointProblem(s: string): string | undefined {
  if (s.startsWith('unix://')) return absolutePathProblem(s.slice('unix://'.length));
  const m = /^http:\/\/([^/]+?)\/?$/.exec(s);
  if (!m) return s.startsWith('https:') ? 'is https: TLS to etcd is not supported (use http://host:port)' : 'is not http://host:port';
  const hp = parseHostPort(m[1]!);
  return hp.ok ? undefined : hp.reason;
}

function policyStoreSection(x: unknown, path: string, errs: Errs): PolicyStoreSection | undefined {
  const n0 = errs.length;
  const o = mapping(x, path, POLICY_STORE_KEYS, errs, 'policy_store');
  if (!o) return undefined;
  const ev = required(o, 'etcd', path, errs, 'the etcd cluster');
  if (ev === undefined) return undefined;
  const ep = joinKey(path, 'etcd');
  const e = mapping(ev, ep, ETCD_KEYS, errs, 'policy_store.etcd');
  if (!e) return undefined;
  const endpoints: string[] = [];
  const lv = required(e, 'endpoints', ep, errs, "the etcd members' client URLs");
  if (lv !== undefined) {
    const lp = joinKey(ep, 'endpoints');
    if (!Array.isArray(lv) || lv.length === 0) push(errs, 'NVGRE_ERR_TYPE', lp, lv, 'expected a non-empty list of http://host:port or unix:///path');
    else lv.forEach((u, i) => {
      const s = checked(u, joinIndex(lp, i), '', errs, endpointProblem);
      if (s !== undefined) endpoints.push(s.replace(/\/$/, ''));
    });
  }
  const pv = optional(e, 'prefix');
  const prefix =
    pv === undefined
      ? DEFAULT_POLICY_STORE_PREFIX
      : checked(pv, ep, 'prefix', errs, (s) => (!/^\/[\x21-\x7e]*[^/]$/.test(s) ? 'is not a key prefix: it starts with "/", does not end with one, and has no spaces or control characters' : undefined));
  return errs.length > n0 ? undefined : { etcd: { endpoints, prefix: prefix! } };
}

/** An IPv4 unicast address (the NAT translates IPv4 only). */
function ipv4Value(v: unknown, parent: string, key: string, errs: Errs): IpAddr | undefined {
  const a = ipValue(v, parent, key, errs, 'unicast');
  if (a && a.family !== 4) {
    push(errs, 'NVGRE_ERR_FAMILY', at(parent, key), a.text, 'is IPv6; the HNV gateway and its NAT are IPv4 only');
    return undefined;
  }
  return a;
}

function portValue(v: unknown, parent: string, key: string, errs: Errs): number | undefined {
  return intInRange(v, parent, key, errs, 1, 65535, 'a port');
}

function uplinkSection(x: unknown, path: string, errs: Errs): UplinkSection | undefined {
  const n0 = errs.length;
  const o = mapping(x, path, UPLINK_KEYS, errs, 'uplink');
  if (!o) return undefined;
  const iv = required(o, 'interface', path, errs, 'the external interface');
  const iface = iv === undefined ? undefined : checked(iv, path, 'interface', errs, interfaceNameProblem);
  const addresses: string[] = [];
  const av = required(o, 'addresses', path, errs, 'the addresses nvgred owns on the external network');
  if (av !== undefined) {
    const ap = joinKey(path, 'addresses');
    if (!Array.isArray(av) || av.length === 0) push(errs, 'NVGRE_ERR_TYPE', ap, av, 'expected a non-empty list of address/prefix_length (e.g. 131.107.10.12/24)');
    else av.forEach((a, i) => {
      const p = joinIndex(ap, i);
      const s = str(a, p, '', errs);
      if (s === undefined) return;
      const slash = s.indexOf('/');
      const len = slash < 0 ? NaN : Number(s.slice(slash + 1));
      if (slash < 0 || !/^[0-9]{1,2}$/.test(s.slice(slash + 1)) || len < 1 || len > 32) {
        push(errs, 'NVGRE_ERR_PREFIX', p, s, 'is not address/prefix_length with a length in 1..32 (e.g. 131.107.10.12/24)');
        return;
      }
      const addr = ipv4Value(s.slice(0, slash), p, '', errs);
      if (addr === undefined) return;
      const text = `${addr.text}/${len}`;
      if (addresses.some((b) => b.split('/')[0] === addr.text)) push(errs, 'NVGRE_ERR_DUPLICATE', p, s, 'is listed twice');
      else addresses.push(text);
    });
  }
  const gv = required(o, 'gateway', path, errs, 'the next hop for external destinations');
  const gateway = gv === undefined ? undefined : ipv4Value(gv, path, 'gateway', errs);
  if (gateway && addresses.length && !addresses.some((a) => inSubnet(a.split('/')[0]!, Number(a.split('/')[1]), gateway.text))) {
    push(errs, 'NVGRE_ERR_ADDRESS', at(path, 'gateway'), gateway.text, `is in the subnet of none of uplink.addresses (${addresses.join(', ')}): nvgred could not reach it`);
  }
  if (gateway && addresses.some((a) => a.split('/')[0] === gateway.text)) {
    push(errs, 'NVGRE_ERR_ADDRESS', at(path, 'gateway'), gateway.text, 'is one of uplink.addresses; the gateway is another host');
  }
  if (errs.length > n0) return undefined;
  return { interface: iface!, addresses, gateway: gateway!.text };
}

function staticMapping(x: unknown, path: string, errs: Errs): NatStaticMapping | undefined {
  const n0 = errs.length;
  const o = mapping(x, path, STATIC_MAPPING_KEYS, errs, 'a static mapping');
  if (!o) return undefined;
  const pv = required(o, 'protocol', path, errs, 'tcp or udp');
  const protocol = pv === undefined ? undefined : enumValue(pv, path, 'protocol', errs, NAT_PROTOCOLS);
  const ev = required(o, 'external_port', path, errs, 'the port of external_address');
  const external_port = ev === undefined ? undefined : portValue(ev, path, 'external_port', errs);
  const av = required(o, 'internal_address', path, errs, 'the inside address (a CA of the routing domain)');
  const internal_address = av === undefined ? undefined : ipv4Value(av, path, 'internal_address', errs);
  const iv = required(o, 'internal_port', path, errs, 'the port of internal_address');
  const internal_port = iv === undefined ? undefined : portValue(iv, path, 'internal_port', errs);
  if (errs.length > n0) return undefined;
  return { protocol: protocol!, external_port: external_port!, internal_address: internal_address!.text, internal_port: internal_port! };
}

function natEntry(x: unknown, path: string, errs: Errs): Nat | undefined {
  const n0 = errs.length;
  const o = mapping(x, path, NAT_KEYS, errs, 'a NAT');
  if (!o) return undefined;
  const nv = required(o, 'name', path, errs, 'the NAT name');
  const name = nv === undefined ? undefined : checked(nv, path, 'name', errs, (s) => labelProblem(s, HOST_NAME_MAX));
  const rv = required(o, 'routing_domain', path, errs, 'the routing domain GUID');
  const routing_domain = rv === undefined ? undefined : routingDomainValue(rv, path, 'routing_domain', errs);
  const vv = required(o, 'vsid', path, errs, "the VSID of the NAT's inside address");
  const vsid = vv === undefined ? undefined : intInRange(vv, path, 'vsid', errs, VSID_MIN, VSID_MAX, 'a VSID', 'NVGRE_ERR_VSID_RANGE');
  const iv = required(o, 'internal_address', path, errs, 'the inside address tenants route to');
  const internal_address = iv === undefined ? undefined : ipv4Value(iv, path, 'internal_address', errs);
  const mv = required(o, 'mac', path, errs, "the NAT's MAC");
  const mac = mv === undefined ? undefined : macValue(mv, path, 'mac', errs);
  const ev = required(o, 'external_address', path, errs, 'one of uplink.addresses');
  const external_address = ev === undefined ? undefined : ipv4Value(ev, path, 'external_address', errs);
  const sv = optional(o, 'port_start');
  const port_start = sv === undefined ? DEFAULT_NAT_PORT_START : portValue(sv, path, 'port_start', errs);
  const endv = optional(o, 'port_end');
  const port_end = endv === undefined ? DEFAULT_NAT_PORT_END : portValue(endv, path, 'port_end', errs);
  if (port_start !== undefined && port_end !== undefined && port_start > port_end) {
    push(errs, 'NVGRE_ERR_VALUE', at(path, 'port_end'), port_end, `is below port_start ${port_start}: not a range of ports`);
  }
  const static_mappings = list(optional(o, 'static_mappings'), joinKey(path, 'static_mappings'), errs, staticMapping);
  if (errs.length > n0) return undefined;
  return {
    name: name!,
    routing_domain: routing_domain!,
    vsid: vsid!,
    internal_address: internal_address!.text,
    mac: mac!,
    external_address: external_address!.text,
    port_start: port_start!,
    port_end: port_end!,
    static_mappings: static_mappings as NatStaticMapping[],
  };
}

function stateDir(x: unknown, path: string, errs: Errs): string | undefined {
  return checked(x, path, '', errs, (s) => absolutePathProblem(s));
}

export const validateHost = validator('host', hostSection);
/** The validator of a record type's table. */
export const validateRecord = <T extends AnyRecord>(spec: RecordSpec): RecordValidator<T> => validator(spec.noun, recordValidator<T>(spec));
export const validateProviderAddress = validateRecord<ProviderAddress>(PROVIDER_ADDRESSES);
export const validateProviderRoute = validateRecord<ProviderRoute>(PROVIDER_ROUTES);
export const validateCustomerRoute = validateRecord<CustomerRoute>(CUSTOMER_ROUTES);
export const validateLookupRecord = validateRecord<LookupRecord>(LOOKUP_RECORDS);
export const validateVmAdapter = validateRecord<VmAdapter>(VM_ADAPTERS);
export const validateEncapsulation = validator('encapsulation', encapsulationSection);
export const validateLearning = validator('learning', learningSection);
export const validateApi = validator('api', apiSection);
export const validateMetrics = validator('metrics', metricsSection);
export const validateStateDir = validator('state_dir', stateDir);
export const validatePolicyStore = validator('policy_store', policyStoreSection);
export const validateUplink = validator('uplink', uplinkSection);
export const validateNat = validator('NAT', natEntry);

// ------------------------------------------------------------------ the whole document

function list<T>(
  x: unknown,
  path: string,
  errs: Errs,
  item: (x: unknown, path: string, errs: Errs) => T | undefined,
): (T | undefined)[] {
  if (x === undefined || x === null) return [];
  if (!Array.isArray(x)) {
    push(errs, 'NVGRE_ERR_TYPE', path, x, `is ${typeName(x)}, expected a list`);
    return [];
  }
  const out = new Array<T | undefined>(x.length);
  for (let i = 0; i < x.length; i++) out[i] = item(x[i], joinIndex(path, i), errs);
  return out;
}

const SECTION_RANK = new Map<string, number>(TOP_LEVEL_KEYS.map((k, i) => [k, i]));
const PATH_HEAD_RE = /^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?/;

/** Sort errors into document order: section, then record index (stable). */
export function sortFieldErrors(errs: FieldError[]): FieldError[] {
  const keyed = errs.map((e, i) => {
    const m = PATH_HEAD_RE.exec(e.path);
    const rank = e.path === '' ? -1 : m ? (SECTION_RANK.get(m[1]!) ?? -1) : -1;
    const idx = m?.[2] !== undefined ? Number(m[2]) : -1;
    return { e, rank, idx, i };
  });
  keyed.sort((a, b) => a.rank - b.rank || a.idx - b.idx || a.i - b.i);
  return keyed.map((k) => k.e);
}

export interface ValidateOptions {
  /** Shown at the start of the aggregate message (e.g. the file name). */
  source?: string;
}

/** Validate every problem of a document; returns the raw error list and the policy when clean. */
export function checkPolicy(doc: unknown): { policy?: Policy; errors: FieldError[] } {
  if (doc === undefined || doc === null) return { policy: emptyPolicy(), errors: [] };
  const errs: Errs = [];
  const root = mapping(doc, '', TOP_LEVEL_KEYS, errs, 'the config document');
  if (!root) return { errors: errs };

  const host = hostSection(optional(root, 'host'), 'host', errs);
  const provider_addresses = list(optional(root, 'provider_addresses'), 'provider_addresses', errs, validateProviderAddress);
  const provider_routes = list(optional(root, 'provider_routes'), 'provider_routes', errs, validateProviderRoute);
  const rawRoutes = optional(root, 'customer_routes');
  const customer_routes = list(rawRoutes, 'customer_routes', errs, validateCustomerRoute);
  const lookup_records = list(optional(root, 'lookup_records'), 'lookup_records', errs, validateLookupRecord);
  const vm_adapters = list(optional(root, 'vm_adapters'), 'vm_adapters', errs, validateVmAdapter);
  const encapsulation = encapsulationSection(optional(root, 'encapsulation'), 'encapsulation', errs);
  const learning = learningSection(optional(root, 'learning'), 'learning', errs);
  const sdv = optional(root, 'state_dir');
  const state_dir = sdv === undefined ? undefined : stateDir(sdv, 'state_dir', errs);
  const api = apiSection(optional(root, 'api'), 'api', errs);
  const metrics = metricsSection(optional(root, 'metrics'), 'metrics', errs);
  const psv = optional(root, 'policy_store');
  const policy_store = psv === undefined ? undefined : policyStoreSection(psv, 'policy_store', errs);
  if (policy_store && host && host.name === undefined) {
    push(errs, 'NVGRE_ERR_REQUIRED', 'host.name', undefined, "is missing; a host whose policy is in policy_store needs a name (its keys are hosts/<name>/)");
  }

  // A customer route rejected for another field still names its VSID: treat
  // that VSID as bound so its records don't each report NVGRE_ERR_VSID_UNBOUND.
  // If its routing domain is valid too, it still counts for the
  // one-routing-domain-per-VSID rule.
  const alsoBound = new Set<number>();
  const partialRoutes = new Map<number, { vsid: number; routing_domain: string }>();
  if (Array.isArray(rawRoutes)) {
    for (let i = 0; i < rawRoutes.length; i++) {
      if (customer_routes[i] !== undefined) continue;
      const r: unknown = rawRoutes[i];
      if (!isPlainObject(r)) continue;
      const v = own(r, 'vsid');
      if (typeof v !== 'number' || !Number.isInteger(v)) continue;
      alsoBound.add(v);
      const rd = own(r, 'routing_domain');
      const parsed = typeof rd === 'string' ? parseRoutingDomain(rd) : undefined;
      if (parsed?.ok && v >= VSID_MIN && v <= VSID_MAX) partialRoutes.set(i, { vsid: v, routing_domain: parsed.value });
    }
  }
  // Likewise a provider address rejected for another field (say its MAC)
  // still makes its address local, for the default-gateway record check.
  const alsoLocal = new Set<string>();
  const rawPAs = optional(root, 'provider_addresses');
  if (Array.isArray(rawPAs)) {
    for (let i = 0; i < rawPAs.length; i++) {
      if (provider_addresses[i] !== undefined) continue;
      const r: unknown = rawPAs[i];
      const v = isPlainObject(r) ? own(r, 'address') : undefined;
      const a = typeof v === 'string' ? parseIp(v) : undefined;
      if (a?.ok) alsoLocal.add(a.value.text);
    }
  }
  const upv = optional(root, 'uplink');
  const uplink = upv === undefined ? undefined : uplinkSection(upv, 'uplink', errs);
  const natv = optional(root, 'nat');
  const nat = list(natv, 'nat', errs, natEntry);
  if (optional(root, 'nat_sync') !== undefined) {
    // A key accepted must act: mirroring to a standby is not built yet.
    push(errs, 'NVGRE_ERR_VALUE', 'nat_sync', own(root, 'nat_sync'), 'is not supported yet: connection mirroring to a standby gateway is not implemented; remove nat_sync (a lone gateway needs none)');
  }
  const invariantErrors = collectInvariantErrors(
    { provider_addresses, provider_routes, customer_routes, lookup_records, vm_adapters },
    { alsoBound, alsoLocal, partialRoutes },
  );
  for (const e of invariantErrors) errs.push(e);
  if (errs.length === 0 && (uplink || nat.length)) {
    for (const e of natProblems({
      uplink,
      nat: nat as Nat[],
      customer_routes: customer_routes as CustomerRoute[],
      provider_addresses: provider_addresses as ProviderAddress[],
      lookup_records: lookup_records as LookupRecord[],
      vm_adapters: vm_adapters as VmAdapter[],
    })) errs.push(e);
  }
  if (errs.length > 0) return { errors: sortFieldErrors(errs) };
  const gateway = { ...(uplink ? { uplink } : {}), ...(nat.length ? { nat: nat as Nat[] } : {}) };

  const policy: Policy = {
    host: host!,
    provider_addresses: provider_addresses as ProviderAddress[],
    provider_routes: provider_routes as ProviderRoute[],
    customer_routes: customer_routes as CustomerRoute[],
    lookup_records: lookup_records as LookupRecord[],
    vm_adapters: vm_adapters as VmAdapter[],
    encapsulation: encapsulation!,
    learning: learning!,
    api: api!,
    metrics: metrics!,
  };
  if (state_dir !== undefined) {
    // keep the config file's key order
    const { api: a, metrics: m, ...rest } = policy;
    return { policy: { ...rest, state_dir, api: a, metrics: m, ...(policy_store ? { policy_store } : {}), ...gateway }, errors: [] };
  }
  return { policy: { ...policy, ...(policy_store ? { policy_store } : {}), ...gateway }, errors: [] };
}

/**
 * Validate and normalize a whole policy document (the parsed config file, or
 * an API body of the same shape). `null`/`undefined` (an empty file) is the
 * empty policy. Throws one NvgreError NVGRE_ERR_CONFIG whose `details` lists
 * every problem found; never returns a partial policy.
 */
export function validatePolicy(doc: unknown, opts: ValidateOptions = {}): Policy {
  const { policy, errors } = checkPolicy(doc);
  if (!policy || errors.length > 0) throw configError(errors, opts.source !== undefined ? { source: opts.source } : {});
  return policy;
}
