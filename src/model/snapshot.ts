// Encodes a validated policy into the one buffer the packet core reads
// (native/src/dp/policy.rs documents the layout; the two change together).
// One crossing per policy change, whatever the number of records; or a delta
// of the changed records alone (`encodeDelta`).

import { parseIp, type Family } from '../config/net.js';
import type { PolicyChange } from './change.js';
import {
  isOnLink,
  splitPrefix,
  type CustomerRoute,
  type FlowIdMode,
  type LookupRecord,
  type LookupRule,
  type LookupType,
  type Policy,
  type ProviderAddress,
} from './policy.js';

const MAGIC = 'NVGP';
const VERSION = 4;
const HEADER_LEN = 32;
const PA_LEN = 28;
const ROUTE_LEN = 48;
const RECORD_LEN = 48;
const PORT_LEN = 16;
const DELTA_MAGIC = 'NVGD';
const DELTA_VERSION = 1;
const DELTA_HEADER_LEN = 16;
const CHANGE_LEN = 4 + 2 * RECORD_LEN;
const ROUTES_UNCHANGED = 0xffffffff;
const OP = { put: 0, replace: 1, delete: 2 } as const;

const FLOW_ID: Record<FlowIdMode, number> = { hash: 0, zero: 1 };
const RULE: Record<LookupRule, number> = { encap: 0, none: 1 };
const TYPE: Record<LookupType, number> = { static: 0, dynamic: 1, l2only: 2, gateway_wildcard: 3 };

/** A VM adapter's numeric id in the core, by adapter name. */
export type PortIds = ReadonlyMap<string, number>;

/**
 * The gateway MAC of VSIDs whose `.1` has no lookup record with a local PA:
 * locally administered, unicast, and stable across restarts because it is
 * derived from the host's identity (its name, else its first PA).
 */
export function defaultGatewayMac(policy: Policy): string {
  const seed = policy.host.name ?? policy.provider_addresses[0]?.address ?? 'nvgred';
  let h = 0x811c9dc5;
  const bytes = [0x02];
  for (let round = 0; bytes.length < 6; round++) {
    for (const c of Buffer.from(`${round}:${seed}`)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
    bytes.push(h & 0xff, (h >>> 8) & 0xff);
  }
  return bytes.slice(0, 6).map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Routing domain GUID → the small number the core uses, in sorted order. */
export function routingDomainIndex(policy: Policy): Map<string, number> {
  const ids = [...new Set(policy.customer_routes.map((r) => r.routing_domain))].sort();
  return new Map(ids.map((id, i) => [id, i]));
}

/** One hex digit's value (0-9, a-f, A-F). */
const hexDigit = (c: number) => (c <= 57 ? c - 48 : (c | 32) - 87);

/** A canonical MAC (six pairs of hex digits and colons, as validated) into 6 bytes: without a string per byte (a million records per snapshot). */
function putMac(buf: Buffer, off: number, mac: string): void {
  for (let i = 0; i < 6; i++) buf[off + i] = (hexDigit(mac.charCodeAt(i * 3)) << 4) | hexDigit(mac.charCodeAt(i * 3 + 1));
}

/** Write a (validated, canonical) address into its 16-byte slot; returns its family. */
function putIp(buf: Buffer, off: number, text: string): Family {
  const parsed = parseIp(text);
  if (!parsed.ok) throw new Error(`unvalidated address in policy: ${text}`);
  const a = parsed.value;
  if (a.family === 4) buf.writeUInt32BE(a.n, off);
  else a.g.forEach((g, i) => buf.writeUInt16BE(g, off + i * 2));
  return a.family;
}

/** What the core needs of an underlay interface: its MTU (the largest outer packet it sends) and ifindex (0 if unknown). */
export interface UnderlayInterface {
  mtu: number;
  ifindex: number;
}

/** `ports`: the core's id of each VM adapter that has a device; `underlay`: the interface a PA lives on (its VLAN's, on a VLAN). */
export function encodePolicy(policy: Policy, ports: PortIds, underlay: (pa: ProviderAddress) => UnderlayInterface): Buffer {
  const rd = routingDomainIndex(policy);
  const adapters = policy.vm_adapters.filter((a) => ports.has(a.name));
  const buf = Buffer.alloc(
    HEADER_LEN +
      policy.provider_addresses.length * PA_LEN +
      policy.customer_routes.length * ROUTE_LEN +
      policy.lookup_records.length * RECORD_LEN +
      adapters.length * PORT_LEN,
  );
  buf.write(MAGIC, 0, 'latin1');
  buf.writeUInt32LE(VERSION, 4);
  buf[8] = FLOW_ID[policy.encapsulation.flow_id];
  putMac(buf, 10, defaultGatewayMac(policy));
  buf.writeUInt32LE(policy.provider_addresses.length, 16);
  buf.writeUInt32LE(policy.customer_routes.length, 20);
  buf.writeUInt32LE(policy.lookup_records.length, 24);
  buf.writeUInt32LE(adapters.length, 28);

  let off = HEADER_LEN;
  for (const pa of policy.provider_addresses) {
    buf[off] = putIp(buf, off + 4, pa.address);
    buf[off + 1] = pa.prefix_length;
    const { mtu, ifindex } = underlay(pa);
    buf.writeUInt16LE(Math.min(mtu, 0xffff), off + 2);
    buf.writeUInt32LE(ifindex, off + 20);
    buf.writeUInt16LE(pa.vlan_id, off + 24);
    off += PA_LEN;
  }
  for (const r of policy.customer_routes) {
    putRoute(buf, off, r, rd);
    off += ROUTE_LEN;
  }
  for (const r of policy.lookup_records) {
    putRecord(buf, off, r);
    off += RECORD_LEN;
  }
  for (const a of adapters) {
    buf.writeUInt32LE(ports.get(a.name)!, off);
    buf.writeUInt32LE(a.vsid, off + 4);
    putMac(buf, off + 8, a.mac);
    off += PORT_LEN;
  }
  return buf;
}

function putRoute(buf: Buffer, off: number, r: CustomerRoute, rd: ReadonlyMap<string, number>): void {
  const [prefix, len] = splitPrefix(r.destination_prefix);
  buf.writeUInt32LE(rd.get(r.routing_domain)!, off);
  buf.writeUInt32LE(r.vsid, off + 4);
  buf[off + 8] = putIp(buf, off + 16, prefix);
  buf[off + 9] = len;
  buf[off + 10] = isOnLink(r.next_hop) ? 1 : 0;
  buf.writeUInt32LE(r.metric, off + 12);
  putIp(buf, off + 32, r.next_hop);
}

function putRecord(buf: Buffer, off: number, r: LookupRecord): void {
  buf.writeUInt32LE(r.vsid, off);
  buf[off + 4] = putIp(buf, off + 8, r.customer_address);
  buf[off + 5] = putIp(buf, off + 24, r.provider_address);
  buf[off + 6] = RULE[r.rule];
  buf[off + 7] = TYPE[r.type];
  putMac(buf, off + 40, r.mac);
}

/** The sections a delta carries; a change to any other needs the whole policy. */
const DELTA_SECTIONS = new Set(['lookup_records', 'customer_routes']);

/**
 * The delta that takes the packet core from the policy before `changes` to
 * `next`, or undefined when they touch what only a whole policy carries
 * (provider addresses, VM adapters, ...). Customer routes, when changed, go
 * whole (they are few); lookup records go one by one, in order.
 */
export function encodeDelta(next: Policy, changes: readonly PolicyChange[]): Buffer | undefined {
  if (!changes.every((c) => DELTA_SECTIONS.has(c.section))) return undefined;
  const routes = changes.some((c) => c.section === 'customer_routes') ? next.customer_routes : undefined;
  const records = changes.filter((c) => c.section === 'lookup_records');
  const buf = Buffer.alloc(DELTA_HEADER_LEN + (routes?.length ?? 0) * ROUTE_LEN + records.length * CHANGE_LEN);
  buf.write(DELTA_MAGIC, 0, 'latin1');
  buf.writeUInt32LE(DELTA_VERSION, 4);
  buf.writeUInt32LE(routes?.length ?? ROUTES_UNCHANGED, 8);
  buf.writeUInt32LE(records.length, 12);
  let off = DELTA_HEADER_LEN;
  if (routes) {
    const rd = routingDomainIndex(next);
    for (const r of routes) {
      putRoute(buf, off, r, rd);
      off += ROUTE_LEN;
    }
  }
  for (const c of records) {
    const previous = c.op === 'put' ? c.previous : undefined;
    buf[off] = c.op === 'delete' ? OP.delete : previous ? OP.replace : OP.put;
    putRecord(buf, off + 4, c.record as LookupRecord);
    if (previous) putRecord(buf, off + 4 + RECORD_LEN, previous as LookupRecord);
    off += CHANGE_LEN;
  }
  return buf;
}
