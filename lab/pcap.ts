// Checks of an underlay capture against RFC 7637 and the lab's policy, with tshark.

import { run, fmtArgv } from './netns.js';

export interface NvgreExpectations {
  /** VSIDs allowed in GRE keys. */
  vsids: readonly number[];
  /** Provider addresses: the only allowed outer IPv4 source/destination. */
  providerAddresses: readonly string[];
  /** VMs: an inner destination MAC must be one of them, in the key's VSID, behind the outer destination PA. */
  vms: readonly { name: string; mac: string; vsid: number; pa: string }[];
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
    } else if (vsid !== undefined && (target.vsid !== vsid || target.pa !== odst)) {
      bad('key VSID and outer destination are the destination VM\'s', frame, `to ${target.name} (VSID ${target.vsid}, PA ${target.pa}) with VSID ${vsid} to ${odst}`);
    }
  }
  report.violations = [...viol.values()];
  return report;
}
