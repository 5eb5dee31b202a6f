// Byte builders for the packets the lab and the tests inject (pure
// TypeScript: no addon). MAC addresses are "aa:bb:cc:dd:ee:ff" strings, IPv4
// addresses dotted quads, IPv6 addresses any text form node:net accepts.
// Every builder validates its arguments and throws.

import { isIPv6 } from 'node:net';

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
/** Transparent Ethernet Bridging: the GRE protocol type of NVGRE. */
export const ETHERTYPE_TEB = 0x6558;
export const IPPROTO_ICMP = 1;
export const IPPROTO_GRE = 47;
export const IPPROTO_ICMPV6 = 58;

/** GRE flag bits of the first 16-bit word (RFC 2784, RFC 2890). */
export const GRE_C = 0x8000;
export const GRE_K = 0x2000;
export const GRE_S = 0x1000;

function checkUint(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${name} must be an integer in 0..${max}, got ${v}`);
}

export function parseMac(mac: string): Buffer {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new Error(`bad MAC address ${JSON.stringify(mac)}`);
  return Buffer.from(mac.replace(/:/g, ''), 'hex');
}

export function parseIpv4(addr: string): Buffer {
  const parts = addr.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255)) {
    throw new Error(`bad IPv4 address ${JSON.stringify(addr)}`);
  }
  return Buffer.from(parts.map(Number));
}

/** The Internet checksum (RFC 1071) of `data`: write it big-endian into a zeroed checksum field. */
export function inetChecksum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An Ethernet II frame (no FCS, no padding): dst MAC, src MAC, EtherType, payload. */
export function ethernet(src: string, dst: string, ethertype: number, payload: Buffer): Buffer {
  checkUint('ethertype', ethertype, 0xffff);
  const type = Buffer.alloc(2);
  type.writeUInt16BE(ethertype);
  return Buffer.concat([parseMac(dst), parseMac(src), type, payload]);
}

export interface Ipv4Options {
  /** Default 64. */
  ttl?: number;
  /** DiffServ code point (upper 6 bits of the TOS byte). Default 0. */
  dscp?: number;
  /** Don't Fragment. Default true. */
  df?: boolean;
  /** Identification. Default 0. */
  id?: number;
}

/** An IPv4 packet: a 20-byte header (no options) with its checksum, then `payload`. */
export function ipv4(src: string, dst: string, proto: number, payload: Buffer, opts: Ipv4Options = {}): Buffer {
  const { ttl = 64, dscp = 0, df = true, id = 0 } = opts;
  checkUint('proto', proto, 0xff);
  checkUint('ttl', ttl, 0xff);
  checkUint('dscp', dscp, 0x3f);
  checkUint('id', id, 0xffff);
  const total = 20 + payload.length;
  if (total > 0xffff) throw new RangeError(`IPv4 packet of ${total} bytes exceeds 65535`);
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h[1] = dscp << 2;
  h.writeUInt16BE(total, 2);
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(df ? 0x4000 : 0, 6);
  h[8] = ttl;
  h[9] = proto;
  parseIpv4(src).copy(h, 12);
  parseIpv4(dst).copy(h, 16);
  h.writeUInt16BE(inetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

/** An Ethernet/IPv4 ARP request from `srcMac`/`srcIp` for `target`, broadcast; `pad` zero bytes after it. */
export function arpRequest(srcMac: string, srcIp: string, target: string, pad = 0): Buffer {
  const a = Buffer.alloc(28 + pad);
  a.writeUInt16BE(1, 0); // Ethernet
  a.writeUInt16BE(0x0800, 2); // IPv4
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(1, 6); // request
  parseMac(srcMac).copy(a, 8);
  parseIpv4(srcIp).copy(a, 14);
  parseIpv4(target).copy(a, 24);
  return ethernet(srcMac, 'ff:ff:ff:ff:ff:ff', 0x0806, a);
}

/** `frame` with an 802.1Q tag of VLAN `vid` after its MACs. */
export function tagged(frame: Buffer, vid: number): Buffer {
  checkUint('vid', vid, 4095);
  return Buffer.concat([frame.subarray(0, 12), Buffer.from([0x81, 0x00, vid >> 8, vid & 0xff]), frame.subarray(12)]);
}

/** An ICMP echo request (type 8, code 0) with its checksum. `data` defaults to none. */
export function icmpEcho(ident: number, seq: number, data: Buffer = Buffer.alloc(0)): Buffer {
  checkUint('ident', ident, 0xffff);
  checkUint('seq', seq, 0xffff);
  const b = Buffer.concat([Buffer.alloc(8), data]);
  b[0] = 8;
  b.writeUInt16BE(ident, 4);
  b.writeUInt16BE(seq, 6);
  b.writeUInt16BE(inetChecksum(b), 2);
  return b;
}

export interface GreOptions {
  /** The key (K bit): default 0 when `flags` has GRE_K. Giving a key without GRE_K throws. */
  key?: number;
  /** Protocol type. Default 0x6558 (Transparent Ethernet Bridging). */
  protocol?: number;
  /** The flag bits of the first word (GRE_C | GRE_K | GRE_S ...; the low 3 bits are `version`'s). Default GRE_K. */
  flags?: number;
  /** Version, the low 3 bits of the first word. Default 0. */
  version?: number;
  /** Checksum field when `flags` has GRE_C (written as given, not computed). Default 0. */
  checksum?: number;
  /** Sequence number when `flags` has GRE_S. Default 0. */
  seq?: number;
}

/**
 * A raw GRE header: the word `flags | version`, the protocol type, then the
 * optional fields in order, each present iff its bit is set in `flags`:
 * checksum + reserved (C), key (K), sequence number (S). Any flags and
 * version can be given, to build headers a receiver must reject.
 */
export function gre(opts: GreOptions = {}): Buffer {
  const { key, protocol = ETHERTYPE_TEB, flags = GRE_K, version = 0, checksum = 0, seq = 0 } = opts;
  checkUint('flags', flags, 0xffff);
  if (flags & 7) throw new RangeError(`gre: the low 3 bits of flags (0x${flags.toString(16)}) are the version: use the version option`);
  checkUint('version', version, 7);
  checkUint('protocol', protocol, 0xffff);
  if (key !== undefined && !(flags & GRE_K)) throw new Error('gre: a key was given but flags lack the K bit (0x2000)');
  const h = Buffer.alloc(4);
  h.writeUInt16BE(flags | version, 0);
  h.writeUInt16BE(protocol, 2);
  const parts = [h];
  const field = (name: string, v: number, bytes: 2 | 4): void => {
    checkUint(name, v, bytes === 2 ? 0xffff : 0xffffffff);
    const b = Buffer.alloc(4);
    if (bytes === 2) b.writeUInt16BE(v, 0);
    else b.writeUInt32BE(v, 0);
    parts.push(b);
  };
  if (flags & GRE_C) field('checksum', checksum, 2);
  if (flags & GRE_K) field('key', key ?? 0, 4);
  if (flags & GRE_S) field('seq', seq, 4);
  return Buffer.concat(parts);
}

/**
 * An NVGRE packet (RFC 7637): outer IPv4 (protocol 47) + GRE (K bit only,
 * version 0, protocol 0x6558, key = VSID << 8 | FlowID) + the inner Ethernet frame.
 */
export function nvgre(outerSrc: string, outerDst: string, vsid: number, flowId: number, inner: Buffer): Buffer {
  checkUint('vsid', vsid, 0xffffff);
  checkUint('flowId', flowId, 0xff);
  return ipv4(outerSrc, outerDst, IPPROTO_GRE, Buffer.concat([gre({ key: vsid * 256 + flowId }), inner]));
}

// ---------------------------------------------------------------------------
// IPv6

/** The 16 bytes of an IPv6 address. */
export function parseIpv6(addr: string): Buffer {
  if (!isIPv6(addr) || addr.includes('%')) throw new Error(`bad IPv6 address ${JSON.stringify(addr)}`);
  let text = addr;
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two groups.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const b = parseIpv4(quad[1]!);
    text = text.slice(0, -quad[1]!.length) + `${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const groups = (s: string | undefined): string[] => (s ? s.split(':') : []);
  const h = groups(head);
  const t = groups(tail);
  const all = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export interface Ipv6Options {
  /** Default 64. */
  hopLimit?: number;
  /** Traffic class. Default 0. */
  trafficClass?: number;
  /** Flow label. Default 0. */
  flowLabel?: number;
}

/** An IPv6 packet: the 40-byte fixed header (no extension headers), then `payload`. */
export function ipv6(src: string, dst: string, nextHeader: number, payload: Buffer, opts: Ipv6Options = {}): Buffer {
  const { hopLimit = 64, trafficClass = 0, flowLabel = 0 } = opts;
  checkUint('nextHeader', nextHeader, 0xff);
  checkUint('hopLimit', hopLimit, 0xff);
  checkUint('trafficClass', trafficClass, 0xff);
  checkUint('flowLabel', flowLabel, 0xfffff);
  if (payload.length > 0xffff) throw new RangeError(`IPv6 payload of ${payload.length} bytes exceeds 65535`);
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | (trafficClass << 20) | flowLabel) >>> 0, 0);
  h.writeUInt16BE(payload.length, 4);
  h[6] = nextHeader;
  h[7] = hopLimit;
  parseIpv6(src).copy(h, 8);
  parseIpv6(dst).copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** An ICMPv6 message (type, code, the rest of the message after the checksum) with its checksum over the IPv6 pseudo header. */
export function icmpv6(src: string, dst: string, type: number, code: number, body: Buffer): Buffer {
  checkUint('type', type, 0xff);
  checkUint('code', code, 0xff);
  const m = Buffer.concat([Buffer.from([type, code, 0, 0]), body]);
  const pseudo = Buffer.alloc(40);
  parseIpv6(src).copy(pseudo, 0);
  parseIpv6(dst).copy(pseudo, 16);
  pseudo.writeUInt32BE(m.length, 32);
  pseudo[39] = IPPROTO_ICMPV6;
  m.writeUInt16BE(inetChecksum(Buffer.concat([pseudo, m])), 2);
  return m;
}

/**
 * A Neighbor Solicitation for `target` from `src` (MAC `srcMac`), as a VM
 * sends it: to the solicited-node multicast group, hop limit 255, with the
 * source link-layer address option. Returns the whole Ethernet frame.
 */
export function neighborSolicitation(srcMac: string, src: string, target: string): Buffer {
  const t = parseIpv6(target);
  const group = `ff02::1:ff${t[13]!.toString(16).padStart(2, '0')}:${t.readUInt16BE(14).toString(16)}`;
  const groupMac = `33:33:ff:${[t[13]!, t[14]!, t[15]!].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
  const body = Buffer.concat([Buffer.alloc(4), t, Buffer.from([1, 1]), parseMac(srcMac)]);
  return ethernet(srcMac, groupMac, ETHERTYPE_IPV6, ipv6(src, group, IPPROTO_ICMPV6, icmpv6(src, group, 135, 0, body), { hopLimit: 255 }));
}

/** An NVGRE packet over IPv6 (next header 47): outer IPv6 + GRE (K bit, 0x6558, key = VSID << 8 | FlowID) + the inner Ethernet frame. */
export function nvgre6(outerSrc: string, outerDst: string, vsid: number, flowId: number, inner: Buffer): Buffer {
  checkUint('vsid', vsid, 0xffffff);
  checkUint('flowId', flowId, 0xff);
  return ipv6(outerSrc, outerDst, IPPROTO_GRE, Buffer.concat([gre({ key: vsid * 256 + flowId }), inner]));
}
