// Encodes a validated policy into the one buffer the packet core reads
// (native/src/dp/policy.rs documents the layout; the two change together).
// One crossing per policy change, whatever the number of records; or a delta
// of the changed records alone (`encodeDelta`).

import { parseIp, type Family } from '../config/net.js';
import type { PolicyChange } from './change.js';
import { isOnLink, splitPrefix, type FlowIdMode, type NatProtocol, type Policy, type ProviderAddress } from './policy.js';
import { CUSTOMER_ROUTES, LOOKUP_RECORDS, PROVIDER_ADDRESSES, VM_ADAPTERS, type AnyRecord, type Column, type RecordSpec } from './records.js';
import { insideRecords } from '../config/nat.js';

const MAGIC = 'NVGP';
const VERSION = 5;
const HEADER_LEN = 32;
const PA_LEN = PROVIDER_ADDRESSES.snapshot.entry;
const ROUTE_LEN = CUSTOMER_ROUTES.snapshot.entry;
const RECORD_LEN = LOOKUP_RECORDS.snapshot.entry;
const PORT_LEN = VM_ADAPTERS.snapshot.entry;
const GATEWAY_LEN = 32;
const UPLINK_ADDRESS_LEN = 8;
const NAT_LEN = 32;
const STATIC_LEN = 16;
const NAT_PROTOCOL: Record<NatProtocol, number> = { tcp: 0, udp: 1 };
const DELTA_MAGIC = 'NVGD';
const DELTA_VERSION = 1;
const DELTA_HEADER_LEN = 16;
const CHANGE_LEN = 4 + 2 * RECORD_LEN;
const ROUTES_UNCHANGED = 0xffffffff;
const OP = { put: 0, replace: 1, delete: 2 } as const;

const FLOW_ID: Record<FlowIdMode, number> = { hash: 0, zero: 1 };

type EntryWriter = (buf: Buffer, off: number, r: AnyRecord, rd?: ReadonlyMap<string, number>) => void;

/** Writes one record's fields into its entry at `off`, as its table's snapshot columns say. */
function entryWriter(spec: RecordSpec): EntryWriter {
  const columns = spec.snapshot.columns as Readonly<Record<string, Column | string>>;
  const cols = spec.fields.flatMap((f) => {
    const c = columns[f.name]!;
    return typeof c === 'string' ? [] : [{ name: f.name, c, values: f.kind.is === 'enum' ? f.kind.values : [] }];
  });
  return (buf, off, r, rd) => {
    for (const { name, c, values } of cols) {
      const v = (r as unknown as Record<string, string & number>)[name]!;
      const at = off + c.at;
      if (c.as === 'u8') buf[at] = v;
      else if (c.as === 'u16') buf.writeUInt16LE(v, at);
      else if (c.as === 'u32') buf.writeUInt32LE(v, at);
      else if (c.as === 'mac') putMac(buf, at, v);
      else if (c.as === 'enum') buf[at] = values.indexOf(v);
      else if (c.as === 'routing_domain') buf.writeUInt32LE(rd!.get(v)!, at);
      else if (c.as === 'ip') {
        const family = putIp(buf, at, v);
        if (c.family !== undefined) buf[off + c.family] = family;
        if (c.onLink !== undefined) buf[off + c.onLink] = isOnLink(v) ? 1 : 0;
      } else if (c.as === 'prefix') {
        const [address, len] = splitPrefix(v);
        buf[off + c.family] = putIp(buf, at, address);
        buf[off + c.length] = len;
      }
    }
  };
}

const putPa = entryWriter(PROVIDER_ADDRESSES);
const putRoute = entryWriter(CUSTOMER_ROUTES);
const putRecord = entryWriter(LOOKUP_RECORDS);
const putPort = entryWriter(VM_ADAPTERS);

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

/** What the core needs of the uplink's interface: `UnderlayInterface` and its MAC (the source of what nvgred sends there; zeros if it is absent). */
export interface UplinkInterface extends UnderlayInterface {
  mac: string;
}

/**
 * `ports`: the core's id of each VM adapter that has a device; `underlay`:
 * the interface a PA lives on (its VLAN's, on a VLAN); `uplink`: the uplink's
 * interface, by name.
 */
export function encodePolicy(
  policy: Policy,
  ports: PortIds,
  underlay: (pa: ProviderAddress) => UnderlayInterface,
  uplink: (ifname: string) => UplinkInterface = () => ({ mtu: 0, ifindex: 0, mac: '00:00:00:00:00:00' }),
): Buffer {
  const rd = routingDomainIndex(policy);
  const adapters = policy.vm_adapters.filter((a) => ports.has(a.name));
  const nats = policy.nat ?? [];
  const statics = nats.reduce((n, x) => n + x.static_mappings.length, 0);
  const addresses = policy.uplink?.addresses ?? [];
  const buf = Buffer.alloc(
    HEADER_LEN +
      policy.provider_addresses.length * PA_LEN +
      policy.customer_routes.length * ROUTE_LEN +
      policy.lookup_records.length * RECORD_LEN +
      adapters.length * PORT_LEN +
      GATEWAY_LEN +
      addresses.length * UPLINK_ADDRESS_LEN +
      nats.length * NAT_LEN +
      statics * STATIC_LEN,
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
    putPa(buf, off, pa);
    const { mtu, ifindex } = underlay(pa);
    buf.writeUInt16LE(Math.min(mtu, 0xffff), off + 2);
    buf.writeUInt32LE(ifindex, off + 20);
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
    putPort(buf, off, a);
    off += PORT_LEN;
  }
  // The HNV gateway: its uplink, then each NAT, then their static mappings.
  if (policy.uplink) {
    const u = uplink(policy.uplink.interface);
    buf.writeUInt32LE(u.ifindex, off);
    buf.writeUInt16LE(Math.min(u.mtu, 0xffff), off + 4);
    buf[off + 6] = 1;
    putMac(buf, off + 8, u.mac);
    putIp(buf, off + 16, policy.uplink.gateway);
  }
  buf.writeUInt32LE(addresses.length, off + 20);
  buf.writeUInt32LE(nats.length, off + 24);
  buf.writeUInt32LE(statics, off + 28);
  off += GATEWAY_LEN;
  for (const a of addresses) {
    const [addr, len] = splitPrefix(a);
    putIp(buf, off, addr);
    buf[off + 4] = len;
    off += UPLINK_ADDRESS_LEN;
  }
  for (const n of nats) {
    buf.writeUInt32LE(rd.get(n.routing_domain)!, off);
    buf.writeUInt32LE(n.vsid, off + 4);
    putIp(buf, off + 8, n.internal_address);
    putIp(buf, off + 12, n.external_address);
    putMac(buf, off + 16, n.mac);
    buf.writeUInt16LE(n.port_start, off + 22);
    buf.writeUInt16LE(n.port_end, off + 24);
    buf.writeUInt16LE(n.static_mappings.length, off + 26);
    off += NAT_LEN;
  }
  for (const n of nats) {
    for (const m of n.static_mappings) {
      // Validated: exactly one record of the routing domain holds the inside address.
      const vsid = insideRecords(policy, n.routing_domain, m.internal_address)[0]!.vsid;
      buf[off] = NAT_PROTOCOL[m.protocol];
      buf.writeUInt16LE(m.external_port, off + 2);
      buf.writeUInt32LE(vsid, off + 4);
      putIp(buf, off + 8, m.internal_address);
      buf.writeUInt16LE(m.internal_port, off + 12);
      off += STATIC_LEN;
    }
  }
  return buf;
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
    putRecord(buf, off + 4, c.record);
    if (previous) putRecord(buf, off + 4 + RECORD_LEN, previous);
    off += CHANGE_LEN;
  }
  return buf;
}
