// Capture filters (pcap-filter(7) syntax, compiled by libpcap into BPF) for
// `nvgrectl capture`. Pure functions: the text only.
//
// Underlay. NVGRE is GRE (IP protocol 47) with a key: after the outer IP
// header, GRE's base header is 4 bytes (flags+version 2, protocol type 2);
// with K set and C clear the key follows at +4 (a checksum word would come
// first with C set). The key is VSID << 8 | FlowID. The inner frame starts
// after the 8-byte header (RFC 7637 forbids S, so no sequence number):
//
//   outer IPv4 (ihl*4 bytes) | GRE flags(2) proto(2) key(4) | inner Ethernet (14) | inner IP
//   GRE at G = (ip[0] & 0xf) << 2 over IPv4, at 40 over IPv6 (next header 47 directly)
//   flags  G+0  (C = 0x8000, K = 0x2000, S = 0x1000)
//   proto  G+2  (0x6558 = Transparent Ethernet Bridging)
//   key    G+4  (VSID = key >> 8)
//   inner ethertype G+20; inner IPv4 source G+34, destination G+38;
//   inner IPv6 source G+30..G+45, destination G+46..G+61
//
// Non-first IPv4 fragments carry no GRE header: excluded whenever header
// fields are tested.

import { parseIp, type IpAddr } from '../config/net.js';

export const VSID_MAX = 0xffffff;
export const IPPROTO_GRE = 47;
export const ETHERTYPE_TEB = 0x6558;

/** Every GRE packet, over IPv4 or IPv6: the underlay filter without vsid or ca. */
export const GRE_FILTER = 'ip proto 47 or ip6 proto 47';

export interface UnderlayFilterOptions {
  /** Only packets whose GRE key's upper 24 bits are this VSID (K set, C clear). */
  vsid?: number;
  /** Only NVGRE packets whose inner IPv4/IPv6 source or destination is this address. */
  ca?: string;
}

const hex = (n: number, digits: number): string => `0x${(n >>> 0).toString(16).padStart(digits, '0')}`;

/** A parsed CA, or an Error naming what is wrong with it. */
function caAddr(ca: string): IpAddr {
  const p = parseIp(ca);
  if (!p.ok) throw new RangeError(`"${ca}" ${p.reason}`);
  return p.value;
}

/** The address as 32-bit words (1 for IPv4, 4 for IPv6). */
function words(a: IpAddr): number[] {
  if (a.family === 4) return [a.n];
  const out: number[] = [];
  for (let i = 0; i < 8; i += 2) out.push(a.g[i]! * 0x10000 + a.g[i + 1]!);
  return out;
}

/** Tests on the GRE header and what follows, for GRE at `base` of the `acc` (ip / ip6) header. */
function greTests(acc: 'ip' | 'ip6', base: number | string, o: UnderlayFilterOptions, ca: IpAddr | undefined): string[] {
  const at = (off: number, size: 1 | 2 | 4): string => {
    const where = typeof base === 'number' ? String(base + off) : off === 0 ? base : `${base} + ${off}`;
    return `${acc}[${where}:${size}]`;
  };
  const t: string[] = [];
  // K set, C clear: the key is at +4. With a CA, S clear too: the inner frame is at +8.
  t.push(ca ? `${at(0, 2)} & 0xb000 = 0x2000` : `${at(0, 2)} & 0xa000 = 0x2000`);
  if (o.vsid !== undefined) t.push(`${at(4, 4)} >> 8 = ${o.vsid}`);
  if (ca) {
    t.push(`${at(2, 2)} = ${hex(ETHERTYPE_TEB, 4)}`);
    const w = words(ca);
    const [ethertype, src, dst] = ca.family === 4 ? [0x0800, 34, 38] : [0x86dd, 30, 46];
    t.push(`${at(20, 2)} = ${hex(ethertype, 4)}`);
    const eq = (off: number): string => w.map((x, i) => `${at(off + 4 * i, 4)} = ${hex(x, 8)}`).join(' and ');
    t.push(w.length === 1 ? `(${eq(src)} or ${eq(dst)})` : `((${eq(src)}) or (${eq(dst)}))`);
  }
  return t;
}

/**
 * The underlay capture filter: all GRE (IPv4 protocol 47 or IPv6 next header
 * 47), or, with `vsid` and/or `ca`, the NVGRE packets that match them, over
 * IPv4 (any header length) or IPv6 (GRE directly after the fixed header).
 * Throws a RangeError for a VSID out of 0..0xFFFFFF or an invalid CA.
 */
export function underlayFilter(o: UnderlayFilterOptions = {}): string {
  if (o.vsid !== undefined && (!Number.isInteger(o.vsid) || o.vsid < 0 || o.vsid > VSID_MAX)) {
    throw new RangeError(`VSID ${o.vsid} is out of range (0..${VSID_MAX})`);
  }
  const ca = o.ca === undefined ? undefined : caAddr(o.ca);
  if (o.vsid === undefined && ca === undefined) return GRE_FILTER;
  const v4 = ['ip proto 47', 'ip[6:2] & 0x1fff = 0', ...greTests('ip', '((ip[0] & 0xf) << 2)', o, ca)];
  const v6 = ['ip6', 'ip6[6] = 47', ...greTests('ip6', 40, o, ca)];
  return `(${v4.join(' and ')}) or (${v6.join(' and ')})`;
}

/**
 * The VM adapter capture filter: everything (''), or with `ca` the frames to
 * or from that address (`host CA`: IPv4, ARP and RARP for an IPv4 CA; IPv6
 * for an IPv6 one). Throws a RangeError for an invalid CA.
 */
export function adapterFilter(o: { ca?: string } = {}): string {
  if (o.ca === undefined) return '';
  return `host ${caAddr(o.ca).text}`;
}
