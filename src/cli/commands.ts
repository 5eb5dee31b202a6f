// nvgrectl's objects and commands: each turns its words into one API request
// (records in exactly the config file's shape, key segments percent-encoded)
// and prints the answer. The grammar tables here also produce the help text.

import { stringify as yamlStringify } from 'yaml';
import { loadConfigFile, parseIp } from '../config/index.js';
import { interfaceNameProblem, isUnspecified } from '../config/net.js';
import { isNvgreError } from '../errors.js';
import { matchWord, parseKeywords, isHelpWord, type GrammarSpec, type KeywordSpec, type ParsedArgs } from './args.js';
import { captureAdapter, captureUnderlay, IN_NETNS_KEYWORD, type CaptureArgs } from './capture.js';
import { errorLines, type ApiClient, type ApiResponse } from './client.js';
import { CliError, EXIT, EXIT_CODE_TABLE, exitCodeForErrorCode, usageError } from './exit.js';
import { writeFileAtomic } from './files.js';
import { countNoun, formatApplyResult, formatNextHop, formatStatus, RECORD_FORMATTERS } from './format.js';
import { CUSTOMER_ROUTES, LOOKUP_RECORDS, PROVIDER_ADDRESSES, PROVIDER_ROUTES, VM_ADAPTERS, type RecordSpec, type Section } from '../model/records.js';
import { monitor, MONITOR_EVENTS } from './monitor.js';

export interface OutStream {
  write(chunk: string): unknown;
}

/** Where a run reads and writes: the process's streams, or a test's buffers. */
export interface CliIo {
  stdout: OutStream;
  stderr: OutStream;
  /** For `-batch -` (default process.stdin). */
  stdin?: AsyncIterable<unknown>;
  /** For $NVGRED_SOCKET (default process.env). */
  env?: Record<string, string | undefined>;
}

export interface Ctx {
  /** -j: print the API's JSON. */
  json: boolean;
  /** -p: indent it. */
  pretty: boolean;
  client: ApiClient;
  io: CliIo;
}

/** Thrown by a command's argument parser when `help` is asked for. */
export class HelpRequest extends Error {
  constructor() {
    super('help');
  }
}

interface Command {
  /** The words after `nvgrectl OBJECT COMMAND`, for the usage line. */
  args: string;
  about: string;
  run(ctx: Ctx, words: readonly string[], hint: string): Promise<void>;
}

interface ObjectDef {
  about: string;
  /** Commands; an object without them is itself the command (status, reload). */
  commands?: Readonly<Record<string, Command>>;
  /** What `nvgrectl OBJECT` alone does. */
  defaultCommand?: string;
  /** For objects without commands. */
  run?: Command;
  where?: readonly string[];
  notes?: readonly string[];
}

// ---------------------------------------------------------------- output

function write(ctx: Ctx, text: string): void {
  if (text === '') return;
  ctx.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function writeLines(ctx: Ctx, lines: readonly string[]): void {
  const CHUNK = 4096;
  for (let i = 0; i < lines.length; i += CHUNK) ctx.io.stdout.write(`${lines.slice(i, i + CHUNK).join('\n')}\n`);
}

function jsonText(ctx: Ctx, v: unknown): string {
  return ctx.pretty ? JSON.stringify(v, null, 2) : JSON.stringify(v);
}

/** With -j: print the answer's JSON exactly (re-serialized on one line, or indented with -p). */
function printJson(ctx: Ctx, res: ApiResponse): void {
  if (res.json !== undefined) write(ctx, jsonText(ctx, res.json));
  else write(ctx, res.text);
}

function unexpected(what: string, res: ApiResponse): CliError {
  const t = res.text.length > 200 ? `${res.text.slice(0, 199)}…` : res.text;
  return new CliError(EXIT.INTERNAL, `unexpected answer from nvgred to ${what}: ${t}`);
}

// ---------------------------------------------------------------- requests

/** `/v1/<resource>/<seg>/<seg>…`, each key segment percent-encoded. */
export function itemPath(resource: string, key: readonly (string | number)[]): string {
  return `/v1/${resource}/${key.map((k) => encodeURIComponent(String(k))).join('/')}`;
}

/** `/v1/<resource>?field=value&…`, values percent-encoded. */
export function listPath(resource: string, query: readonly (readonly [string, string | number])[]): string {
  const q = query.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`).join('&');
  return `/v1/${resource}${q ? `?${q}` : ''}`;
}

/** A mutation: silent on success unless -j. */
async function mutate(ctx: Ctx, method: string, path: string, body?: unknown): Promise<void> {
  const res = await ctx.client.call(method, path, body === undefined ? {} : { body });
  if (ctx.json) printJson(ctx, res);
}

async function show(ctx: Ctx, resource: string, section: Section, query: [string, string | number][]): Promise<void> {
  const res = await ctx.client.call('GET', listPath(resource, query));
  if (ctx.json) return printJson(ctx, res);
  const list = (res.json as Record<string, unknown> | undefined)?.[section];
  if (!Array.isArray(list)) throw unexpected(`GET /v1/${resource}`, res);
  const fmt = RECORD_FORMATTERS[section];
  writeLines(
    ctx,
    list.map((r) => fmt((r ?? {}) as Record<string, unknown>)),
  );
}

async function flush(ctx: Ctx, resource: string, section: Section, query: [string, string | number][], all: boolean, hint: string): Promise<void> {
  if (all && query.length > 0) throw usageError('"all" cannot be combined with filters', hint);
  if (!all && query.length === 0) throw usageError('flush needs a filter, or "all" to delete every entry', hint);
  const res = await ctx.client.call('DELETE', listPath(resource, all ? [['all', 'true']] : query));
  if (ctx.json) return printJson(ctx, res);
  const n = (res.json as { deleted?: unknown } | undefined)?.deleted;
  if (typeof n !== 'number') throw unexpected(`DELETE /v1/${resource}`, res);
  write(ctx, `Deleted ${countNoun(n, section)}`);
}

// ---------------------------------------------------------------- grammar helpers

const str = (field: string, meta: string): KeywordSpec & { meta: string } => ({ field, kind: 'string', meta });
const int = (field: string, meta: string): KeywordSpec & { meta: string } => ({ field, kind: 'int', meta });
type Keywords = Readonly<Record<string, KeywordSpec & { meta: string }>>;

/** The keywords of a record type's fields `names` (default: all but its positional word), from its table. */
function recordKeywords(spec: RecordSpec, names: readonly string[] = spec.fields.map((f) => f.name).filter((n) => n !== spec.cli.positional)): Keywords {
  const out: Record<string, KeywordSpec & { meta: string }> = {};
  for (const n of names) {
    const f = spec.fields.find((x) => x.name === n)!;
    if (f.cli) out[f.cli[0]] = { field: n, kind: f.kind.is === 'int' ? 'int' : 'string', meta: f.cli[1] };
  }
  return out;
}

/** The keywords of the fields that identify a record (but its positional word), in the table's order. */
const keyKeywords = (spec: RecordSpec): Keywords => recordKeywords(spec, spec.fields.map((f) => f.name).filter((n) => n !== spec.cli.positional && spec.key.includes(n)));

/**
 * A record type's `flush` and `show`: its filter keywords (table order: the
 * query's), in the usage line as `usage` (default: that order).
 */
function listCommands(spec: RecordSpec, flushAbout: string, showAbout: string, usage?: string): Record<'flush' | 'show', Command> {
  const kws = recordKeywords(spec, spec.cli.filters);
  const words = Object.entries(kws).map(([k, { meta }]) => `[ ${k} ${meta} ]`);
  const showArgs = usage ?? words.join(' ');
  const section = spec.section as Section;
  return {
    flush: {
      args: `{ ${words.length === 1 ? showArgs.slice(2, -2) : showArgs} | all }`,
      about: flushAbout,
      run: async (ctx, w, hint) => {
        const p = parse(w, { keywords: kws, flags: ['all'] }, hint);
        return flush(ctx, spec.path, section, filters(p, kws), p.flags.has('all'), hint);
      },
    },
    show: {
      args: showArgs,
      about: showAbout,
      run: async (ctx, w, hint) => show(ctx, spec.path, section, filters(parse(w, { keywords: kws }, hint), kws)),
    },
  };
}

/** `META := { a | b }` of the enum fields whose placeholder names the values rather than listing them. */
function enumWhere(spec: RecordSpec): string[] {
  return spec.fields.flatMap((f) =>
    f.kind.is === 'enum' && f.cli && f.cli[1] !== f.kind.values.join('|') ? [`${f.cli[1]} := { ${f.kind.values.join(' | ')} }`] : [],
  );
}

/** The `nvgrectl OBJECT positional-keyword` of a record type, if its positional word has one. */
const positionalKeyword = (spec: RecordSpec): { positionalKeyword?: string } => {
  const cli = spec.fields.find((f) => f.name === spec.cli.positional)?.cli;
  return cli ? { positionalKeyword: cli[0] } : {};
};

function parse(words: readonly string[], spec: GrammarSpec, hint: string): ParsedArgs {
  const p = parseKeywords(words, spec, hint);
  if (p.help) throw new HelpRequest();
  return p;
}

function needPositional(p: ParsedArgs, name: string, hint: string): string {
  if (p.positional === undefined) throw usageError(`missing ${name}`, hint);
  return p.positional;
}

function needKeywords(p: ParsedArgs, kws: Keywords, names: readonly string[], hint: string): void {
  for (const k of names) if (!p.values.has(k)) throw usageError(`missing "${k} ${kws[k]!.meta}"`, hint);
}

/** The given keywords' values as record fields, in the keyword table's (= config's) order. */
function fields(p: ParsedArgs, kws: Keywords, skip: readonly string[] = []): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, spec] of Object.entries(kws)) {
    if (skip.includes(k)) continue;
    const v = p.values.get(k);
    if (v !== undefined) out[spec.field] = v;
  }
  return out;
}

/** Filters as query pairs, in the keyword table's order. */
function filters(p: ParsedArgs, kws: Keywords): [string, string | number][] {
  const out: [string, string | number][] = [];
  for (const [k, spec] of Object.entries(kws)) {
    const v = p.values.get(k);
    if (v !== undefined) out.push([spec.field, v]);
  }
  return out;
}

function nothingToChange(body: Record<string, unknown>, hint: string): void {
  if (Object.keys(body).length === 0) throw usageError('nothing to change', hint);
}

/**
 * A command on one record: the positional word, then `make` builds the key
 * and the body from the words (refusing a bad positional word first), then
 * the required keywords are checked (and a change must change something).
 * POST goes to the collection, the others to the record's key.
 */
function recordCommand(
  spec: RecordSpec,
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  grammar: { positional: string; positionalKeyword?: string },
  kws: Keywords,
  need: readonly string[],
  make: (p: ParsedArgs, word: string, hint: string) => { key: readonly (string | number)[]; body?: Record<string, unknown> },
): Command['run'] {
  return async (ctx, words, hint) => {
    const p = parse(words, { ...grammar, keywords: kws }, hint);
    const { key, body } = make(p, needPositional(p, grammar.positional, hint), hint);
    needKeywords(p, kws, need, hint);
    if (method === 'PATCH') nothingToChange(body!, hint);
    return mutate(ctx, method, method === 'POST' ? `/v1/${spec.path}` : itemPath(spec.path, key), body);
  };
}

/** The on-link next hop of a prefix's family. */
function onLink(prefixOrAddr: string): string {
  return prefixOrAddr.includes(':') ? '::' : '0.0.0.0';
}

function isUnspecifiedAddress(text: string): boolean {
  const p = parseIp(text);
  return p.ok && isUnspecified(p.value);
}

/** `ADDR/LEN` → [ADDR, LEN]; LEN must be a number. */
function splitAddrLen(s: string, requireLen: boolean, hint: string): [string, number | undefined] {
  const slash = s.lastIndexOf('/');
  if (slash < 0) {
    if (requireLen) throw usageError(`"${s}": ADDR/LEN expected (the PA with its prefix length)`, hint);
    return [s, undefined];
  }
  const len = s.slice(slash + 1);
  if (!/^[0-9]+$/.test(len)) throw usageError(`"${s}": the prefix length "${len}" is not a number`, hint);
  return [s.slice(0, slash), Number(len)];
}

// ---------------------------------------------------------------- lookup records

const LOOKUP_KW = recordKeywords(LOOKUP_RECORDS);
const LOOKUP_POSITIONAL = { positional: 'CA', ...positionalKeyword(LOOKUP_RECORDS) };

const lookupSet = (method: 'POST' | 'PUT') =>
  recordCommand(LOOKUP_RECORDS, method, LOOKUP_POSITIONAL, LOOKUP_KW, ['vsid', 'mac', 'pa'], (p, ca) => ({
    body: { customer_address: ca, ...fields(p, LOOKUP_KW) },
    // (vsid, CA) identifies a record, except for CA 0.0.0.0/:: (L2Only), where the MAC does too.
    key: isUnspecifiedAddress(ca) ? [p.values.get('vsid')!, ca, p.values.get('mac')!] : [p.values.get('vsid')!, ca],
  }));

const LOOKUP: ObjectDef = {
  about: 'lookup records: CA -> MAC, PA (New/Get/Set/Remove-NetVirtualizationLookupRecord)',
  defaultCommand: 'show',
  where: enumWhere(LOOKUP_RECORDS),
  notes: [
    'A record is identified by vsid and CA; records with CA 0.0.0.0 or :: (L2Only) also by',
    'their MAC: for those, "mac MAC" is part of the key (in change, del and replace).',
  ],
  commands: {
    add: {
      args: 'CA vsid N mac MAC pa PA [ rule RULE ] [ type TYPE ] [ vm NAME ]',
      about: 'create a record (fails if it exists)',
      run: lookupSet('POST'),
    },
    replace: {
      args: 'CA vsid N mac MAC pa PA [ rule RULE ] [ type TYPE ] [ vm NAME ]',
      about: 'create or overwrite a record',
      run: lookupSet('PUT'),
    },
    change: {
      args: 'CA vsid N [ mac MAC ] [ pa PA ] [ rule RULE ] [ type TYPE ] [ vm NAME ]',
      about: 'change fields of an existing record (mac is a new value, or the key when CA is 0.0.0.0/::)',
      run: recordCommand(LOOKUP_RECORDS, 'PATCH', LOOKUP_POSITIONAL, LOOKUP_KW, ['vsid'], (p, ca) => {
        const macIsKey = isUnspecifiedAddress(ca) && p.values.has('mac');
        const key = [p.values.get('vsid')!, ca, ...(macIsKey ? [p.values.get('mac')!] : [])];
        return { key, body: fields(p, LOOKUP_KW, macIsKey ? ['vsid', 'mac'] : ['vsid']) };
      }),
    },
    del: {
      args: 'CA vsid N [ mac MAC ]',
      about: 'delete a record',
      run: recordCommand(LOOKUP_RECORDS, 'DELETE', LOOKUP_POSITIONAL, keyKeywords(LOOKUP_RECORDS), ['vsid'], (p, ca) => ({
        key: [p.values.get('vsid')!, ca, ...(p.values.has('mac') ? [p.values.get('mac')!] : [])],
      })),
    },
    ...listCommands(LOOKUP_RECORDS, 'delete every record that matches the filters, or all', 'list records (Get-NetVirtualizationLookupRecord)'),
  },
};

// ---------------------------------------------------------------- customer routes

const ROUTE_KW = recordKeywords(CUSTOMER_ROUTES);
const ROUTE_KEY_KW = keyKeywords(CUSTOMER_ROUTES);

const routeSet = (method: 'POST' | 'PUT') =>
  recordCommand(CUSTOMER_ROUTES, method, { positional: 'PREFIX' }, ROUTE_KW, ['vsid', 'rdid'], (p, prefix) => {
    const [routing_domain, vsid] = [p.values.get('rdid')!, p.values.get('vsid')!];
    const record = { routing_domain, vsid, destination_prefix: prefix, next_hop: p.values.get('via') ?? onLink(prefix), ...fields(p, { metric: ROUTE_KW.metric! }) };
    return { body: record, key: [routing_domain, vsid, prefix] };
  });

const ROUTE: ObjectDef = {
  about: 'customer routes, per routing domain and VSID (…-NetVirtualizationCustomerRoute)',
  defaultCommand: 'show',
  where: ['GUID := the routing domain, {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx} (braces optional)'],
  notes: [
    'Without "via" a route is on-link (next hop 0.0.0.0, or :: for IPv6).',
    '"route get" resolves what a packet from VSID N to CA would do (Select-NetVirtualizationNextHop).',
  ],
  commands: {
    add: {
      args: 'PREFIX vsid N rdid GUID [ via NEXTHOP ] [ metric M ]',
      about: 'create a route (fails if it exists)',
      run: routeSet('POST'),
    },
    replace: {
      args: 'PREFIX vsid N rdid GUID [ via NEXTHOP ] [ metric M ]',
      about: 'create or overwrite a route',
      run: routeSet('PUT'),
    },
    change: {
      args: 'PREFIX vsid N rdid GUID [ via NEXTHOP ] [ metric M ]',
      about: 'change the next hop or metric of an existing route',
      run: recordCommand(CUSTOMER_ROUTES, 'PATCH', { positional: 'PREFIX' }, ROUTE_KW, ['vsid', 'rdid'], (p, prefix) => ({ key: [p.values.get('rdid')!, p.values.get('vsid')!, prefix], body: fields(p, ROUTE_KW, ['rdid', 'vsid']) })),
    },
    del: {
      args: 'PREFIX vsid N rdid GUID',
      about: 'delete a route',
      run: recordCommand(CUSTOMER_ROUTES, 'DELETE', { positional: 'PREFIX' }, ROUTE_KEY_KW, ['vsid', 'rdid'], (p, prefix) => ({ key: [p.values.get('rdid')!, p.values.get('vsid')!, prefix] })),
    },
    ...listCommands(CUSTOMER_ROUTES, 'delete every route that matches the filters, or all', 'list routes', '[ vsid N ] [ rdid GUID ]'),
    get: {
      args: 'CA vsid N',
      about: 'resolve the next hop of a packet from VSID N to CA',
      run: async (ctx, words, hint) => {
        const kws: Keywords = { vsid: ROUTE_KW.vsid! };
        const p = parse(words, { positional: 'CA', positionalKeyword: 'to', keywords: kws }, hint);
        const ca = needPositional(p, 'CA', hint);
        needKeywords(p, kws, ['vsid'], hint);
        const res = await ctx.client.call('GET', listPath('next-hop', [['vsid', p.values.get('vsid')!], ['destination', ca]]));
        if (ctx.json) return printJson(ctx, res);
        if (!res.json || typeof res.json !== 'object') throw unexpected('GET /v1/next-hop', res);
        write(ctx, formatNextHop(res.json as Record<string, unknown>));
      },
    },
  },
};

// ---------------------------------------------------------------- provider addresses

const PA_KW = recordKeywords(PROVIDER_ADDRESSES);

const paSet = (method: 'POST' | 'PUT') =>
  recordCommand(PROVIDER_ADDRESSES, method, { positional: 'ADDR/LEN' }, PA_KW, ['dev'], (p, word, hint) => {
    const [address, len] = splitAddrLen(word, true, hint);
    return { body: { address, prefix_length: len!, ...fields(p, PA_KW) }, key: [address] };
  });

const PA: ObjectDef = {
  about: 'provider addresses of this host (…-NetVirtualizationProviderAddress)',
  defaultCommand: 'show',
  notes: ['"vlan 0" is untagged (the default); "vlan N" (1..4094) puts the PA on that VLAN of the interface: its NVGRE leaves tagged, and is taken only from that VLAN.'],
  commands: {
    add: {
      args: 'ADDR/LEN dev IFNAME [ vlan N ]',
      about: 'create a provider address (fails if it exists)',
      run: paSet('POST'),
    },
    replace: {
      args: 'ADDR/LEN dev IFNAME [ vlan N ]',
      about: 'create or overwrite a provider address',
      run: paSet('PUT'),
    },
    change: {
      args: 'ADDR[/LEN] [ dev IFNAME ] [ vlan N ]',
      about: 'change an existing provider address (a /LEN changes its prefix length)',
      run: recordCommand(PROVIDER_ADDRESSES, 'PATCH', { positional: 'ADDR' }, PA_KW, [], (p, word, hint) => {
        const [address, len] = splitAddrLen(word, false, hint);
        return { key: [address], body: { ...(len === undefined ? {} : { prefix_length: len }), ...fields(p, PA_KW) } };
      }),
    },
    del: {
      args: 'ADDR',
      about: 'delete a provider address',
      run: recordCommand(PROVIDER_ADDRESSES, 'DELETE', { positional: 'ADDR' }, {}, [], (_p, word, hint) => ({ key: [splitAddrLen(word, false, hint)[0]] })),
    },
    ...listCommands(PROVIDER_ADDRESSES, 'delete the provider addresses of an interface, or all', 'list provider addresses'),
  },
};

// ---------------------------------------------------------------- provider routes

const PROUTE_KW = recordKeywords(PROVIDER_ROUTES);
const PROUTE_KEY_KW = keyKeywords(PROVIDER_ROUTES);

function prouteKey(p: ParsedArgs, prefix: string): (string | number)[] {
  return [prefix, p.values.get('dev')!, p.values.get('via') ?? onLink(prefix)];
}

const prouteSet = (method: 'POST' | 'PUT') =>
  recordCommand(PROVIDER_ROUTES, method, { positional: 'PREFIX' }, PROUTE_KW, ['dev'], (p, prefix) => ({
    body: { destination_prefix: prefix, next_hop: p.values.get('via') ?? onLink(prefix), interface: p.values.get('dev')!, ...fields(p, { metric: PROUTE_KW.metric! }) },
    key: prouteKey(p, prefix),
  }));

const PROUTE: ObjectDef = {
  about: 'provider (underlay) routes (…-NetVirtualizationProviderRoute)',
  defaultCommand: 'show',
  notes: [
    'Without "via" a route is on-link (next hop 0.0.0.0, or :: for IPv6).',
    'A provider route is identified by PREFIX, dev and via: change can only change its metric.',
  ],
  commands: {
    add: {
      args: 'PREFIX [ via NEXTHOP ] dev IFNAME [ metric M ]',
      about: 'create a provider route (fails if it exists)',
      run: prouteSet('POST'),
    },
    replace: {
      args: 'PREFIX [ via NEXTHOP ] dev IFNAME [ metric M ]',
      about: 'create or overwrite a provider route',
      run: prouteSet('PUT'),
    },
    change: {
      args: 'PREFIX [ via NEXTHOP ] dev IFNAME metric M',
      about: 'change the metric of an existing provider route',
      run: recordCommand(PROVIDER_ROUTES, 'PATCH', { positional: 'PREFIX' }, PROUTE_KW, ['dev'], (p, prefix) => ({ key: prouteKey(p, prefix), body: fields(p, PROUTE_KW, ['via', 'dev']) })),
    },
    del: {
      args: 'PREFIX dev IFNAME [ via NEXTHOP ]',
      about: 'delete a provider route',
      run: recordCommand(PROVIDER_ROUTES, 'DELETE', { positional: 'PREFIX' }, PROUTE_KEY_KW, ['dev'], (p, prefix) => ({ key: prouteKey(p, prefix) })),
    },
    ...listCommands(PROVIDER_ROUTES, 'delete the provider routes of an interface, or all', 'list provider routes'),
  },
};

// ---------------------------------------------------------------- VM adapters

const ADAPTER_KW = recordKeywords(VM_ADAPTERS);
const ADAPTER_POSITIONAL = { positional: 'NAME', ...positionalKeyword(VM_ADAPTERS) };

const adapterSet = (method: 'POST' | 'PUT') =>
  recordCommand(VM_ADAPTERS, method, ADAPTER_POSITIONAL, ADAPTER_KW, ['mac', 'vsid'], (p, name) => ({ body: { name, ...fields(p, ADAPTER_KW) }, key: [name] }));

const ADAPTER: ObjectDef = {
  about: "VM network adapters (Set-VMNetworkAdapter -VirtualSubnetId): a TAP nvgred creates, a VM's interface it adopts, or a vhost-user device it serves",
  defaultCommand: 'show',
  notes: [
    'NAME is the interface name (at most 15 bytes); "name NAME" spells it out when it looks like a keyword.',
    'mode tap (the default): nvgred creates the TAP NAME (in netns NS). mode attach: nvgred adopts the interface NAME that',
    "QEMU or libvirt made for the VM (it is down until it exists). mode vhost_user: nvgred serves the VM's virtio-net device",
    'on the vhost-user socket PATH (socket_mode client, the default: QEMU listens, nvgred connects; server: nvgred listens).',
  ],
  commands: {
    add: {
      args: 'NAME mac MAC vsid N [ mode attach | mode vhost_user socket PATH [ socket_mode server ] ] [ netns NS ] [ mtu N ] [ vm NAME ]',
      about: 'create an adapter (fails if it exists)',
      run: adapterSet('POST'),
    },
    replace: {
      args: 'NAME mac MAC vsid N [ mode attach | mode vhost_user socket PATH [ socket_mode server ] ] [ netns NS ] [ mtu N ] [ vm NAME ]',
      about: 'create or overwrite an adapter',
      run: adapterSet('PUT'),
    },
    change: {
      args: 'NAME [ vsid N ] [ mac MAC ] [ mode M ] [ socket PATH ] [ socket_mode M ] [ netns NS ] [ mtu N ] [ vm NAME ]',
      about: 'change an existing adapter',
      run: recordCommand(VM_ADAPTERS, 'PATCH', ADAPTER_POSITIONAL, ADAPTER_KW, [], (p, name) => ({ key: [name], body: fields(p, ADAPTER_KW) })),
    },
    del: {
      args: 'NAME',
      about: 'delete an adapter (a TAP nvgred created goes away; an adopted interface stays)',
      run: recordCommand(VM_ADAPTERS, 'DELETE', ADAPTER_POSITIONAL, {}, [], (_p, name) => ({ key: [name] })),
    },
    ...listCommands(VM_ADAPTERS, 'delete the adapters of a VSID, or all', 'list adapters'),
  },
};

// ---------------------------------------------------------------- nat

const NAT_FILTER_KW: Keywords = { name: str('name', 'NAME'), protocol: str('protocol', '{ tcp | udp | icmp }') };

const NAT: ObjectDef = {
  about: "the HNV gateway's NAT mappings (like conntrack -L)",
  notes: ['Each line: NAT, protocol, inside endpoint (VSID, address:port; ICMP: echo identifier), external', 'endpoint, seconds before it expires, and for TCP whether the connection is established.'],
  commands: {
    show: {
      args: '[ name NAME ] [ protocol { tcp | udp | icmp } ]',
      about: 'list the live mappings',
      run: async (ctx, words, hint) => {
        const p = parse(words, { keywords: NAT_FILTER_KW }, hint);
        const res = await ctx.client.call('GET', listPath('nat', filters(p, NAT_FILTER_KW)));
        if (ctx.json) return printJson(ctx, res);
        const list = (res.json as { mappings?: unknown } | undefined)?.mappings;
        if (!Array.isArray(list)) throw unexpected('GET /v1/nat', res);
        writeLines(
          ctx,
          list.map((m: Record<string, unknown>) =>
            [
              `nat ${m.nat}`,
              `${m.protocol}`,
              `vsid ${m.vsid}`,
              `src ${m.internal_address}:${m.internal_port}`,
              `external ${m.external_address}:${m.external_port}`,
              `expires ${m.expires_in}s`,
              ...(m.established === undefined ? [] : [m.established ? 'established' : 'transitory']),
            ].join(' '),
          ),
        );
      },
    },
  },
  defaultCommand: 'show',
};

// ---------------------------------------------------------------- status, reload, config

const STATUS: ObjectDef = {
  about: 'the daemon\'s state: version, policy generation, record counts, ports, last reload',
  run: {
    args: '',
    about: 'show the daemon\'s state',
    run: async (ctx, words, hint) => {
      parse(words, { keywords: {} }, hint);
      const res = await ctx.client.call('GET', '/v1/status');
      if (ctx.json) return printJson(ctx, res);
      if (!res.json || typeof res.json !== 'object') throw unexpected('GET /v1/status', res);
      write(ctx, formatStatus(res.json as Record<string, unknown>));
    },
  },
};

const RELOAD: ObjectDef = {
  about: 'make the daemon re-read its config file: validate all, diff, apply atomically',
  notes: [
    'Prints what changed per section and the settings that need a restart. A file with errors',
    'changes nothing: the errors are printed and the exit status is 4.',
  ],
  run: {
    args: '',
    about: 'reload the config file',
    run: async (ctx, words, hint) => {
      parse(words, { keywords: {} }, hint);
      const res = await ctx.client.call('POST', '/v1/reload', { body: {} });
      if (ctx.json) return printJson(ctx, res);
      if (!res.json || typeof res.json !== 'object') throw unexpected('POST /v1/reload', res);
      write(ctx, formatApplyResult(res.json as Record<string, unknown>));
    },
  },
};

function isJsonType(res: ApiResponse): boolean {
  return /\bjson\b/i.test(String(res.headers['content-type'] ?? ''));
}

/** The policy as YAML text: asked for as YAML; converted here if the daemon answered JSON. */
async function policyYaml(ctx: Ctx): Promise<string> {
  const res = await ctx.client.call('GET', '/v1/policy', { accept: 'application/yaml' });
  if (isJsonType(res)) {
    if (res.json === undefined) throw unexpected('GET /v1/policy', res);
    return yamlStringify(res.json);
  }
  return res.text.endsWith('\n') || res.text === '' ? res.text : `${res.text}\n`;
}

const CONFIG: ObjectDef = {
  about: 'the policy as a config file: check a file, save or show the running policy',
  notes: [
    '"config check" validates a file locally (no daemon needed) and prints "FILE: ok" or each error.',
    '"config save" without FILE makes the daemon rewrite its own config file (a change: root or the',
    'daemon\'s user); with FILE nvgrectl writes the running policy to FILE atomically, with your own',
    'permissions; "-" writes it to stdout.',
  ],
  commands: {
    check: {
      args: 'FILE',
      about: 'validate a config file locally',
      run: async (ctx, words, hint) => {
        const p = parse(words, { positional: 'FILE', keywords: {} }, hint);
        const file = needPositional(p, 'FILE', hint);
        try {
          await loadConfigFile(file);
        } catch (e) {
          if (!isNvgreError(e)) throw e;
          const { message, details } = errorLines(e.message, e.details);
          throw new CliError(exitCodeForErrorCode(e.code), message, { details });
        }
        write(ctx, `${file}: ok`);
      },
    },
    save: {
      args: '[ FILE | - ]',
      about: 'save the running policy (by default over the daemon\'s config file)',
      run: async (ctx, words, hint) => {
        const p = parse(words, { positional: 'FILE', keywords: {} }, hint);
        const file = p.positional;
        if (file === undefined) return mutate(ctx, 'POST', '/v1/config/save', {});
        const text = await policyYaml(ctx);
        if (file === '-') return write(ctx, text);
        await writeFileAtomic(file, text);
      },
    },
    show: {
      args: '',
      about: 'print the running policy (YAML; JSON with -j)',
      run: async (ctx, words, hint) => {
        parse(words, { keywords: {} }, hint);
        if (ctx.json) return printJson(ctx, await ctx.client.call('GET', '/v1/policy'));
        ctx.io.stdout.write(await policyYaml(ctx));
      },
    },
  },
  defaultCommand: 'show',
};

// ---------------------------------------------------------------- log

const LOG: ObjectDef = {
  about: 'the daemon\'s log levels, changed at run time',
  where: ['LEVEL := { fatal | error | warn | info | debug | trace | silent }'],
  commands: {
    show: {
      args: '',
      about: 'show the level of every component',
      run: async (ctx, words, hint) => {
        parse(words, { keywords: {} }, hint);
        const res = await ctx.client.call('GET', '/v1/log');
        if (ctx.json) return printJson(ctx, res);
        const levels = res.json as { level?: string; components?: Record<string, string> } | undefined;
        if (!levels?.components) throw unexpected('GET /v1/log', res);
        write(ctx, [`level ${levels.level}`, ...Object.entries(levels.components).map(([c, l]) => `component ${c} level ${l}`)].join('\n'));
      },
    },
    level: {
      args: 'LEVEL [ component NAME ]',
      about: 'set the level of every component, or of one',
      run: async (ctx, words, hint) => {
        const p = parse(words, { positional: 'LEVEL', keywords: { component: str('component', 'NAME') } }, hint);
        const level = needPositional(p, 'LEVEL', hint);
        const component = p.values.get('component');
        await mutate(ctx, 'PUT', '/v1/log', { level, ...(component !== undefined ? { component } : {}) });
      },
    },
  },
  defaultCommand: 'show',
};

// ---------------------------------------------------------------- monitor

const MONITOR: ObjectDef = {
  about: 'follow the daemon\'s events: records learned, changed, expired, deleted, refused (like ip monitor)',
  where: [`EVENT := { ${MONITOR_EVENTS.join(' | ')} | all }`],
  notes: [
    'Prints one line per event until Ctrl-C (SIGINT) or SIGTERM, or "count N" events:',
    '  learned 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33',
    '  changed 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.11 was mac 60:00:60:00:02:05 pa 192.168.0.33',
    '  refused limit 10.0.1.150 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33',
    '  expired 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 last_seen 2026-11-21T12:00:00.000Z',
    '  deleted 10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 by api',
    'With -j each event is its JSON on one line ("event", "time", "record", and "previous", "reason",',
    '"existing", "detail", "cause" or "last_seen" as the event has them). The stream is GET /v1/events.',
    'Refusal reasons: limit (the VSID holds learning.max_per_vsid learned records), static_conflict (a',
    'static record holds the address), invalid (the policy would not validate with it).',
    'Exit status 1 when the daemon ends the stream (it stops), 3 when it cannot be reached.',
  ],
  run: {
    args: '[ EVENT ... ] [ count N ]',
    about: 'print the daemon\'s events as they happen',
    run: async (ctx, words, hint) => {
      const p = parse(words, { keywords: { count: int('count', 'N') }, flags: [...MONITOR_EVENTS, 'all'] }, hint);
      const count = p.values.get('count') as number | undefined;
      if (count !== undefined && count < 1) throw usageError('"count" must be at least 1', hint);
      const events = p.flags.has('all') ? new Set<string>() : new Set<string>(p.flags);
      await monitor(ctx, { events, count });
    },
  },
};

// ---------------------------------------------------------------- capture

const CAPTURE_KW: Keywords = {
  dev: str('dev', 'IFNAME'),
  vsid: int('vsid', 'N'),
  ca: str('ca', 'CA'),
  count: int('count', 'N'),
  duration: str('duration', 'SECONDS'),
  write: str('write', 'FILE'),
};
const CAPTURE_ADAPTER_KW: Keywords = {
  ca: CAPTURE_KW.ca!,
  count: CAPTURE_KW.count!,
  duration: CAPTURE_KW.duration!,
  write: CAPTURE_KW.write!,
  // Internal: the re-run inside the adapter's network namespace (not in the help).
  [IN_NETNS_KEYWORD]: str('in_netns', 'NS'),
};

function captureArgs(p: ParsedArgs, adapter: string | undefined, hint: string): CaptureArgs {
  if (!p.values.has('write')) throw usageError('missing "write FILE" (or "write -" for standard output)', hint);
  const dev = p.values.get('dev') as string | undefined;
  if (dev !== undefined) {
    const why = dev === 'any' ? undefined : interfaceNameProblem(dev);
    if (why) throw usageError(`dev "${dev}" ${why}`, hint);
  }
  if (adapter !== undefined) {
    const why = interfaceNameProblem(adapter);
    if (why) throw usageError(`adapter NAME "${adapter}" ${why}`, hint);
  }
  return {
    adapter,
    dev,
    vsid: p.values.get('vsid') as number | undefined,
    ca: p.values.get('ca') as string | undefined,
    count: p.values.get('count') as number | undefined,
    duration: p.values.get('duration') as string | undefined,
    write: p.values.get('write') as string,
    inNetns: p.values.get(IN_NETNS_KEYWORD) as string | undefined,
  };
}

const CAPTURE: ObjectDef = {
  about: 'capture NVGRE packets on the underlay, or a VM adapter\'s frames, into a pcap file',
  where: [
    'FILE := a pcap file to write (created or truncated), or "-" for standard output',
    'SECONDS := a duration in seconds (decimals allowed, e.g. 0.5)',
  ],
  notes: [
    'A capture stops after "count N" packets, after "duration SECONDS", or on Ctrl-C (SIGINT) or SIGTERM,',
    'whichever comes first. count or duration is required unless stdin is a terminal.',
    '"underlay": every GRE packet (IPv4 protocol 47, IPv6 next header 47) on dev, by default on the',
    'interface of the daemon\'s provider addresses (from its policy: run nvgrectl in the daemon\'s network',
    'namespace). "vsid N": the GRE key\'s upper 24 bits are N (flags K set, C clear). "ca CA": NVGRE whose',
    'inner IPv4 or IPv6 source or destination is CA. Both may be combined.',
    '"adapter": the frames of one VM adapter\'s TAP ("ca CA": to or from CA, ARP included). A TAP in another',
    'network namespace (the adapter\'s netns) is captured by re-running the command inside it with',
    '"ip netns exec": that needs root.',
    'Capturing needs root (or CAP_NET_RAW and CAP_NET_ADMIN). The file is classic pcap with the device\'s',
    'link type, snaplen 262144 (libpcap via the cap package captures at most 65535 bytes of a packet),',
    'timestamps taken as packets arrive; it is flushed as packets arrive and fsynced at the end.',
    'stderr gets "capturing on DEV (filter: ...)" and at the end "captured N packets on DEV (filter: ...)".',
    'Decode NVGRE with the dissector: tshark -r FILE -X lua_script:nvgre.lua -Y "nvgre.vsid == 6000"',
    '(nvgre.lua: wireshark/ in the sources, share/nvgred/wireshark/ when installed); live:',
    '"nvgrectl capture underlay vsid 6000 count 20 write - | tshark -r -".',
  ],
  commands: {
    underlay: {
      args: '[ dev IFNAME ] [ vsid N ] [ ca CA ] [ count N ] [ duration SECONDS ] write { FILE | - }',
      about: 'NVGRE (GRE) packets on the underlay interface',
      run: async (ctx, words, hint) => {
        const p = parse(words, { keywords: CAPTURE_KW }, hint);
        return captureUnderlay(ctx, captureArgs(p, undefined, hint), hint);
      },
    },
    adapter: {
      args: 'NAME [ ca CA ] [ count N ] [ duration SECONDS ] write { FILE | - }',
      about: 'the frames of one VM adapter (its TAP device, in its network namespace)',
      run: async (ctx, words, hint) => {
        const p = parse(words, { positional: 'NAME', positionalKeyword: 'name', keywords: CAPTURE_ADAPTER_KW }, hint);
        const name = needPositional(p, 'NAME', hint);
        return captureAdapter(ctx, captureArgs(p, name, hint), hint);
      },
    },
  },
};

// ---------------------------------------------------------------- fleet

const FLEET: ObjectDef = {
  about: "the fleet's policy store (policy_store): which host runs which revision; a VM's migration",
  notes: [
    '"fleet show" lists every host whose daemon has a status key in the store: the store revision it',
    'runs, when it applied it, and why it refused a later one (if it did).',
    '"fleet migrate" moves VM adapter VM to HOST in one etcd transaction: its adapter key moves to',
    "hosts/HOST/ and its lookup records get HOST's provider address (pa ADDRESS, default its first).",
  ],
  commands: {
    show: {
      args: '',
      about: 'every host of the fleet and the revision it runs',
      run: async (ctx, words, hint) => {
        parse(words, { keywords: {} }, hint);
        const res = await ctx.client.call('GET', '/v1/fleet');
        if (ctx.json) return printJson(ctx, res);
        const f = res.json as { host?: string; up?: boolean; hosts?: Array<{ host: string; revision?: number; applied_at?: string | null; error?: string | null }> } | undefined;
        if (!f?.hosts) throw unexpected('GET /v1/fleet', res);
        writeLines(ctx, [
          `store ${f.up ? 'up' : 'unreachable'} (this host: ${f.host})`,
          ...f.hosts.map((h) => `host ${h.host} revision ${h.revision ?? '-'} applied ${h.applied_at ?? '-'}${h.error ? ` refused: ${h.error}` : ''}`),
        ]);
      },
    },
    migrate: {
      args: 'VM to HOST [ pa ADDRESS ]',
      about: 'move a VM adapter and its lookup records to another host, in one transaction',
      run: async (ctx, words, hint) => {
        const kws: Keywords = { to: str('to', 'HOST'), pa: str('pa', 'ADDRESS') };
        const p = parse(words, { positional: 'VM', keywords: kws }, hint);
        const vm = needPositional(p, 'VM', hint);
        needKeywords(p, kws, ['to'], hint);
        const pa = p.values.get('pa') as string | undefined;
        const res = await ctx.client.call('POST', '/v1/fleet/migrate', { body: { vm_adapter: vm, to: p.values.get('to'), ...(pa !== undefined ? { provider_address: pa } : {}) } });
        if (ctx.json) return printJson(ctx, res);
        const m = res.json as { from: string; to: string; provider_address: string; lookup_records: number; revision: number };
        write(ctx, `${vm} moved from ${m.from} to ${m.to} (pa ${m.provider_address}, ${countNoun(m.lookup_records, 'lookup_records')}) at revision ${m.revision}`);
      },
    },
  },
  defaultCommand: 'show',
};

export const OBJECTS: Readonly<Record<string, ObjectDef>> = {
  [LOOKUP_RECORDS.cli.object]: LOOKUP,
  [CUSTOMER_ROUTES.cli.object]: ROUTE,
  [PROVIDER_ADDRESSES.cli.object]: PA,
  [PROVIDER_ROUTES.cli.object]: PROUTE,
  [VM_ADAPTERS.cli.object]: ADAPTER,
  status: STATUS,
  reload: RELOAD,
  config: CONFIG,
  capture: CAPTURE,
  log: LOG,
  monitor: MONITOR,
  fleet: FLEET,
  nat: NAT,
};

/** Command words that are not prefixes of the command's name. */
const COMMAND_ALIASES: Readonly<Record<string, string>> = { delete: 'del', list: 'show', ls: 'show', lst: 'show' };

// ---------------------------------------------------------------- help

const PROG = 'nvgrectl';

function usageLines(lines: readonly string[]): string {
  return lines.map((l, i) => `${i === 0 ? 'Usage: ' : '       '}${l}`).join('\n');
}

/** Usage lines of the commands of an object, `add` and `replace` folded when alike. */
function objectUsage(name: string, obj: ObjectDef, only?: string): string[] {
  if (!obj.commands) return [`${PROG} ${name}${obj.run!.args ? ` ${obj.run!.args}` : ''}`];
  const out: string[] = [];
  const cmds = Object.entries(obj.commands).filter(([c]) => only === undefined || c === only);
  for (let i = 0; i < cmds.length; i++) {
    const [c, def] = cmds[i]!;
    const next = cmds[i + 1];
    if (next && next[1].args === def.args && c === 'add' && next[0] === 'replace') {
      out.push(`${PROG} ${name} { add | replace } ${def.args}`);
      i++;
    } else {
      out.push(`${PROG} ${name} ${c}${def.args ? ` ${def.args}` : ''}`);
    }
  }
  return out;
}

export function objectHelp(name: string): string {
  const obj = OBJECTS[name]!;
  const parts = [usageLines(objectUsage(name, obj))];
  if (obj.where?.length) parts.push(obj.where.map((w, i) => `${i === 0 ? 'where  ' : '       '}${w}`).join('\n'));
  parts.push(`${name}: ${obj.about}`);
  if (obj.commands) {
    const w = Math.max(...Object.keys(obj.commands).map((c) => c.length));
    parts.push(Object.entries(obj.commands).map(([c, d]) => `  ${c.padEnd(w)}  ${d.about}`).join('\n'));
  }
  if (obj.notes?.length) parts.push(obj.notes.join('\n'));
  return `${parts.join('\n\n')}\n`;
}

export function commandHelp(name: string, cmd: string): string {
  const obj = OBJECTS[name]!;
  const def = obj.commands![cmd]!;
  const parts = [usageLines(objectUsage(name, obj, cmd))];
  if (obj.where?.length) parts.push(obj.where.map((w, i) => `${i === 0 ? 'where  ' : '       '}${w}`).join('\n'));
  parts.push(`${name} ${cmd}: ${def.about}`);
  if (obj.notes?.length) parts.push(obj.notes.join('\n'));
  return `${parts.join('\n\n')}\n`;
}

export function exitCodeHelp(): string {
  return `Exit status:\n${EXIT_CODE_TABLE.map(([c, m]) => `  ${c}  ${m}`).join('\n')}\n`;
}

export function mainHelp(): string {
  const names = Object.keys(OBJECTS);
  const w = Math.max(...names.map((n) => n.length));
  return `Usage: ${PROG} [ OPTIONS ] OBJECT { COMMAND | help }
       ${PROG} [ OPTIONS ] -batch FILE
       ${PROG} help
where  OBJECT := { ${names.join(' | ')} }
       OPTIONS := { -j[son] | -p[retty] | -s[ocket] PATH | -b[atch] FILE | -h[elp] | -V[ersion] }

Objects:
${names.map((n) => `  ${n.padEnd(w)}  ${OBJECTS[n]!.about}`).join('\n')}

Commands: add (fails if the entry exists), replace (creates or overwrites), change
(fails if missing), del, flush (what matches the filters, or all), show, route get;
capture underlay / capture adapter write a pcap file; monitor follows the daemon's events.
Objects and commands may be abbreviated to a unique prefix ("ro s" = "route show").
"${PROG} OBJECT help" and "${PROG} OBJECT COMMAND help" describe each one.

Options:
  -j, -json         print the API's JSON (one line), the config file's shape
  -p, -pretty       indent the JSON (implies -j)
  -s, -socket PATH  the daemon's control socket (default $NVGRED_SOCKET, else /run/nvgred/nvgred.sock)
  -b, -batch FILE   run one command per line of FILE ("-": stdin); blank lines and # comments
                    are skipped; stops at the first failure ("Error: line N: ...")
  -h, -help         this text
  -V, -version      print the version

Errors go to stderr as "Error: ...".

${exitCodeHelp()}`;
}

// ---------------------------------------------------------------- dispatch

function printOut(ctx: Ctx, text: string): void {
  ctx.io.stdout.write(text);
}

/** Run one command line (without global options): OBJECT [COMMAND] [ARGS…]. */
export async function dispatch(ctx: Ctx, words: readonly string[]): Promise<void> {
  if (words.length === 0) throw usageError('missing OBJECT', `${PROG} help`);
  const first = words[0]!;
  if (isHelpWord(first)) return printOut(ctx, mainHelp());
  const name = matchWord(first, [...Object.keys(OBJECTS), 'help'], 'object', `${PROG} help`);
  if (name === 'help') return printOut(ctx, mainHelp());
  const obj = OBJECTS[name]!;
  if (!obj.commands) {
    try {
      return await obj.run!.run(ctx, words.slice(1), `${PROG} ${name} help`);
    } catch (e) {
      if (e instanceof HelpRequest) return printOut(ctx, objectHelp(name));
      throw e;
    }
  }
  const objHint = `${PROG} ${name} help`;
  const cmdWord = words[1] ?? obj.defaultCommand;
  if (cmdWord === undefined) throw usageError(`missing ${name} command`, objHint);
  if (isHelpWord(cmdWord)) return printOut(ctx, objectHelp(name));
  const cmd = matchWord(cmdWord, [...Object.keys(obj.commands), 'help'], `command`, objHint, COMMAND_ALIASES);
  if (cmd === 'help') return printOut(ctx, objectHelp(name));
  try {
    await obj.commands[cmd]!.run(ctx, words.slice(2), `${PROG} ${name} ${cmd} help`);
  } catch (e) {
    if (e instanceof HelpRequest) return printOut(ctx, commandHelp(name, cmd));
    throw e;
  }
}
