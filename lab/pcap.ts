// Checks of an underlay capture against RFC 7637 and the lab's policy, with tshark.

import { writeFileSync } from 'node:fs';
import { run, fmtArgv, sleep, type Lab } from './netns.js';

export interface NvgreExpectations {
  /** VSIDs allowed in GRE keys. */
  vsids: readonly number[];
  /** Provider addresses: the only allowed outer IPv4 source/destination. */
  providerAddresses: readonly string[];
  /** VMs: an inner destination MAC must be one of them, in the key's VSID, behind the outer destination PA (a VM that migrated: one of its PAs). */
  vms: readonly { name: string; mac: string; vsid: number; pa: string | readonly string[] }[];
}

export interface Violation {
  rule: string;
  /** Frame numbers (first 10). */
  frames: number[];
  count: number;
  example: string;
}

export interface PcapReport {
  file: string;
  /** Frames in the file. */
  frames: number;
  /** Frames carrying GRE. */
  grePackets: number;
  /** GRE packets per VSID of the key. */
  vsids: Map<number, number>;
  /** Distinct FlowID bytes seen. */
  flowIds: Set<number>;
  /** (outer src -> outer dst) pairs with counts. */
  pairs: Map<string, number>;
  /** `gre && arp` matches. */
  arpInGre: number;
  violations: Violation[];
}

const FIELDS = [
  'frame.number',
  'ip.src',
  'ip.dst',
  'gre.flags_and_version',
  'gre.proto',
  'gre.key',
  'eth.dst',
  'eth.type',
  'vlan.id',
  'arp.opcode',
] as const;

async function tshark(args: string[]): Promise<string> {
  const argv = ['tshark', '-n', ...args];
  const r = await run(argv, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${fmtArgv(argv)} failed (code ${r.code}): ${r.stderr.trim().slice(-500)}`);
  return r.stdout;
}

/** The commands a user can run to look at the capture. */
export function tsharkHints(file: string): string[] {
  return [
    `tshark -r ${file} -Y gre`,
    `tshark -r ${file} -Y gre -O gre`,
    `tshark -r ${file} -Y gre -T fields -E occurrence=a -e ip.src -e ip.dst -e gre.key -e eth.dst`,
  ];
}

/**
 * Read `file` through the Wireshark dissector `script` (wireshark/nvgre.lua):
 * every NVGRE packet (GRE protocol 0x6558 with a key) must decode to the
 * VSID and FlowID of its key, and no other frame as NVGRE. Returns how many
 * NVGRE packets it decoded; throws naming the frames it got wrong.
 */
export async function checkDissector(file: string, script: string): Promise<number> {
  const out = await tshark([
    '-X', `lua_script:${script}`, '-r', file, '-T', 'fields', '-E', 'separator=\t', '-E', 'occurrence=l',
    '-e', 'frame.number', '-e', 'gre.proto', '-e', 'gre.key', '-e', 'nvgre.vsid', '-e', 'nvgre.flowid',
  ]);
  let decoded = 0;
  const wrong: string[] = [];
  for (const line of out.split('\n').filter(Boolean)) {
    const [frame, proto, key, vsid, flowId] = line.split('\t');
    const expected = proto === '0x6558' && key ? [String(Number(key) >>> 8), String(Number(key) & 0xff)] : ['', ''];
    if (expected[0]) decoded++;
    if (vsid !== expected[0] || flowId !== expected[1]) wrong.push(`frame ${frame}: nvgre.vsid ${vsid || '-'} flowid ${flowId || '-'}, key ${key || '-'}`);
  }
  if (wrong.length) throw new Error(`${wrong.length} frames decoded wrongly, e.g. ${wrong.slice(0, 3).join('; ')}`);
  return decoded;
}

/**
 * Read every GRE packet of `file` and check: protocol type 0x6558; flags
 * C=0 K=1 S=0, version 0 (0x2000); key = VSID<<8 | FlowID with VSID in
 * `exp.vsids`; outer IPs are PAs; the inner frame is untagged Ethernet with
 * an IPv4 packet between 10.x addresses (no ARP); its destination MAC is a
 * VM of the key's VSID living behind the outer destination PA.
 */
export async function analyzeNvgrePcap(file: string, exp: NvgreExpectations): Promise<PcapReport> {
  const frames = (await tshark(['-r', file, '-T', 'fields', '-e', 'frame.number'])).split('\n').filter(Boolean).length;
  const out = await tshark([
    '-r', file, '-Y', 'gre', '-T', 'fields',
    '-E', 'separator=\t', '-E', 'occurrence=a', '-E', 'aggregator=,',
    ...FIELDS.flatMap((f) => ['-e', f]),
  ]);
  const arpInGre = (await tshark(['-r', file, '-Y', 'gre && arp', '-T', 'fields', '-e', 'frame.number'])).split('\n').filter(Boolean).length;

  const vsidSet = new Set(exp.vsids);
  const paSet = new Set(exp.providerAddresses);
  const byMac = new Map(exp.vms.map((v) => [v.mac.toLowerCase(), v]));
  const report: PcapReport = {
    file,
    frames,
    grePackets: 0,
    vsids: new Map(),
    flowIds: new Set(),
    pairs: new Map(),
    arpInGre,
    violations: [],
  };
  const viol = new Map<string, Violation>();
  const bad = (rule: string, frame: number, example: string): void => {
    let v = viol.get(rule);
    if (!v) viol.set(rule, (v = { rule, frames: [], count: 0, example }));
    v.count++;
    if (v.frames.length < 10) v.frames.push(frame);
  };

  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    const cols = line.split('\t');
    const f = (name: (typeof FIELDS)[number]): string[] => {
      const c = cols[FIELDS.indexOf(name)] ?? '';
      return c ? c.split(',') : [];
    };
    const frame = Number(f('frame.number')[0]);
    report.grePackets++;
    const [osrc, isrc] = f('ip.src');
    const [odst, idst] = f('ip.dst');
    const flags = Number(f('gre.flags_and_version')[0]);
    const proto = Number(f('gre.proto')[0]);
    const keyText = f('gre.key')[0];
    const [, innerDst] = f('eth.dst');

    if (proto !== 0x6558) bad('GRE protocol type is 0x6558', frame, `proto ${f('gre.proto')[0]}`);
    if (flags !== 0x2000) bad('GRE flags C=0 K=1 S=0, version 0', frame, `flags_and_version ${f('gre.flags_and_version')[0]}`);
    if (!osrc || !odst || !paSet.has(osrc) || !paSet.has(odst)) bad('outer addresses are PAs', frame, `${osrc} -> ${odst}`);
    report.pairs.set(`${osrc} -> ${odst}`, (report.pairs.get(`${osrc} -> ${odst}`) ?? 0) + 1);

    let vsid: number | undefined;
    if (keyText === undefined) {
      bad('GRE key present', frame, 'no key');
    } else {
      const key = Number(keyText) >>> 0;
      vsid = key >>> 8;
      report.vsids.set(vsid, (report.vsids.get(vsid) ?? 0) + 1);
      report.flowIds.add(key & 0xff);
      if (!vsidSet.has(vsid)) bad(`key VSID in {${[...vsidSet].join(', ')}}`, frame, `key ${keyText} = VSID ${vsid}`);
    }
    if (f('vlan.id').length) bad('inner frame untagged (no 802.1Q)', frame, `vlan ${f('vlan.id').join(',')}`);
    if (f('arp.opcode').length) bad('no ARP inside GRE', frame, `arp opcode ${f('arp.opcode')[0]}`);
    if (!isrc || !idst) {
      bad('inner packet is IPv4', frame, `inner ethertype ${f('eth.type').slice(1).join(',') || 'none'}`);
    } else if (!isrc.startsWith('10.') || !idst.startsWith('10.')) {
      bad('inner IPs are customer addresses (10.x)', frame, `${isrc} -> ${idst}`);
    }
    const target = innerDst ? byMac.get(innerDst.toLowerCase()) : undefined;
    if (!target) {
      bad('inner destination MAC is a VM', frame, `eth.dst ${innerDst ?? 'none'}`);
    } else if (vsid !== undefined && (target.vsid !== vsid || ![target.pa].flat().includes(odst ?? ''))) {
      bad('key VSID and outer destination are the destination VM\'s', frame, `to ${target.name} (VSID ${target.vsid}, PA ${target.pa}) with VSID ${vsid} to ${odst}`);
    }
  }
  report.violations = [...viol.values()];
  return report;
}

// ---------------------------------------------------------------------------
// Any family: outer IPv4 or IPv6, inner IPv4, IPv6 or ARP.

export interface GreFrame {
  frame: number;
  /** Bytes on the wire (the outer Ethernet frame, no FCS). */
  len: number;
  /** tshark's frame.protocols, e.g. `eth:ethertype:ipv6:gre:eth:ethertype:ip:icmp:data`. */
  protocols: string;
  outer: { family: 4 | 6; src: string; dst: string };
  /** The first GRE word (flags and version) and the protocol type. */
  greFlags: number;
  greProto: number;
  /** The 32-bit key, or undefined without one. */
  key: number | undefined;
  vsid: number | undefined;
  flowId: number | undefined;
  inner: {
    srcMac: string | undefined;
    dstMac: string | undefined;
    /** 4, 6, or undefined (ARP, other). */
    family: 4 | 6 | undefined;
    src: string | undefined;
    dst: string | undefined;
    arp: boolean;
    /** ICMP type of the inner packet (v4), ICMPv6 type (v6). */
    icmpType: number | undefined;
    icmpv6Type: number | undefined;
  };
}

const GRE_FIELDS = [
  'frame.number',
  'frame.len',
  'frame.protocols',
  'ip.src',
  'ip.dst',
  'ipv6.src',
  'ipv6.dst',
  'gre.flags_and_version',
  'gre.proto',
  'gre.key',
  'eth.src',
  'eth.dst',
  'icmp.type',
  'icmpv6.type',
  'arp.opcode',
] as const;

/**
 * Frames of `file` matching a display filter (e.g. `gre && icmpv6.type >= 133 && icmpv6.type <= 137`);
 * with `checksums`, tshark verifies IPv4, TCP and UDP checksums (for `tcp.checksum.status` and the like).
 */
export async function tsharkCount(file: string, filter: string, opts: { checksums?: boolean } = {}): Promise<number> {
  const prefs = opts.checksums ? ['ip', 'tcp', 'udp'].flatMap((p) => ['-o', `${p}.check_checksum:TRUE`]) : [];
  return (await tshark(['-r', file, ...prefs, '-Y', filter, '-T', 'fields', '-e', 'frame.number'])).split('\n').filter(Boolean).length;
}

/**
 * Every GRE packet of `file` (or those matching `filter`, which should
 * include `gre`), outer and inner headers told apart by their position in
 * the frame, whatever the families.
 */
export async function readGre(file: string, filter = 'gre'): Promise<GreFrame[]> {
  const out = await tshark([
    '-r', file, '-Y', filter, '-T', 'fields',
    '-E', 'separator=\t', '-E', 'occurrence=a', '-E', 'aggregator=,',
    ...GRE_FIELDS.flatMap((f) => ['-e', f]),
  ]);
  const num = (x: string | undefined): number | undefined => (x === undefined || x === '' ? undefined : Number(x));
  const rows: GreFrame[] = [];
  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    const cols = line.split('\t');
    const f = (name: (typeof GRE_FIELDS)[number]): string[] => {
      const c = cols[GRE_FIELDS.indexOf(name)] ?? '';
      return c ? c.split(',') : [];
    };
    const protocols = f('frame.protocols').join(',');
    const layers = protocols.split(':');
    const greAt = layers.indexOf('gre');
    const outerFamily: 4 | 6 = layers.slice(0, greAt).includes('ipv6') ? 6 : 4;
    const innerLayers = layers.slice(greAt + 1);
    const innerNet = innerLayers.find((l) => l === 'ip' || l === 'ipv6' || l === 'arp');
    const innerFamily = innerNet === 'ip' ? 4 : innerNet === 'ipv6' ? 6 : undefined;
    const v4src = f('ip.src');
    const v4dst = f('ip.dst');
    const v6src = f('ipv6.src');
    const v6dst = f('ipv6.dst');
    // The outer header is the first of its family; the inner is the next of its own.
    const outer = outerFamily === 4 ? { src: v4src[0]!, dst: v4dst[0]! } : { src: v6src[0]!, dst: v6dst[0]! };
    const innerIdx = innerFamily === outerFamily ? 1 : 0;
    const innerSrc = innerFamily === 4 ? v4src[innerIdx] : innerFamily === 6 ? v6src[innerIdx] : undefined;
    const innerDst = innerFamily === 4 ? v4dst[innerIdx] : innerFamily === 6 ? v6dst[innerIdx] : undefined;
    const key = num(f('gre.key')[0]);
    rows.push({
      frame: Number(f('frame.number')[0]),
      len: Number(f('frame.len')[0]),
      protocols,
      outer: { family: outerFamily, ...outer },
      greFlags: Number(f('gre.flags_and_version')[0]),
      greProto: Number(f('gre.proto')[0]),
      key: key === undefined ? undefined : key >>> 0,
      vsid: key === undefined ? undefined : (key >>> 0) >>> 8,
      flowId: key === undefined ? undefined : key & 0xff,
      inner: {
        // The first Ethernet header is the underlay's, the second the VM's.
        srcMac: f('eth.src')[1],
        dstMac: f('eth.dst')[1],
        family: innerFamily,
        src: innerSrc,
        dst: innerDst,
        arp: f('arp.opcode').length > 0,
        icmpType: num(f('icmp.type')[0]),
        icmpv6Type: num(f('icmpv6.type')[0]),
      },
    });
  }
  return rows;
}

/**
 * Capture `ifname` in namespace `ns` into `file` while `traffic` runs (the
 * capture starts first, and stops `settleMs` after the traffic, default
 * 500 ms, so the last replies land). Returns what `traffic` returned.
 */
export async function captureDuring<T>(lab: Lab, ns: string, ifname: string, file: string, traffic: () => Promise<T>, opts: { filter?: string; settleMs?: number } = {}): Promise<T> {
  const cap = await lab.capture(ns, ifname, file, opts.filter ? { filter: opts.filter } : {});
  try {
    const r = await traffic();
    await sleep(opts.settleMs ?? 500);
    return r;
  } finally {
    await lab.stop(cap);
  }
}

/** Write Ethernet frames as a classic pcap file (microsecond timestamps, one second apart), e.g. to check a display filter. */
export function writePcap(file: string, frames: readonly Buffer[]): void {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(262_144, 16);
  header.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  const records = frames.flatMap((f, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(1_700_000_000 + i, 0);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    return [r, f];
  });
  writeFileSync(file, Buffer.concat([header, ...records]));
}
