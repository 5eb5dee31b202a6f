// wireshark/nvgre.lua under the installed tshark: a pcap of NVGRE packets is
// written here (linktype 1, frames built with lab/packets.ts, the file by
// src/capture/pcap.ts, the writer of `nvgrectl capture`), then read back with
// stock tshark (gre.proto / gre.key) and with the Lua dissector (nvgre.vsid,
// nvgre.flowid, the inner frame, display filters). Every check asserts field
// values, so a dissector that fails to load, or loads and decodes wrongly,
// fails the test. (`make lab` runs the dissector over its own underlay
// capture too: lab/pcap.ts checkDissector.)

import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../lab/netns.js';
import { LINKTYPE, PcapWriter } from '../src/capture/pcap.js';
import {
  ETHERTYPE_IPV4,
  ETHERTYPE_TEB,
  GRE_C,
  GRE_K,
  GRE_S,
  IPPROTO_GRE,
  IPPROTO_ICMP,
  ethernet,
  gre,
  icmpEcho,
  inetChecksum,
  ipv4,
  nvgre,
} from '../lab/packets.js';

const SCRIPT = fileURLToPath(new URL('../wireshark/nvgre.lua', import.meta.url));


// ---------------------------------------------------------------------------
// The pcap

/** Write `frames` as a classic pcap (src/capture/pcap.ts, as `nvgrectl capture` does), one second apart. */
function writePcap(file: string, frames: Buffer[]): void {
  const fd = openSync(file, 'w');
  try {
    const w = new PcapWriter(fd, { linkType: LINKTYPE.ETHERNET });
    frames.forEach((frame, i) => w.packet(frame, frame.length, (1_700_000_000 + i) * 1e6));
    w.end();
  } finally {
    closeSync(fd);
  }
}

/** The underlay link: every IPv4 packet is wrapped in this Ethernet header. */
const LINK_SRC = '02:00:00:00:00:22';
const LINK_DST = '02:00:00:00:00:33';
const PA1 = '192.168.0.22';
const PA2 = '192.168.0.33';
const onLink = (ip: Buffer): Buffer => ethernet(LINK_SRC, LINK_DST, ETHERTYPE_IPV4, ip);

interface Inner {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
}

interface Sample {
  what: string;
  frame: Buffer;
  inner: Inner;
  /** What nvgre.vsid / nvgre.flowid must show; undefined: no NVGRE item at all. */
  nvgre?: { vsid: number; flowId: number };
  /** Built with lab/packets.ts nvgre(): one GRE header, key = VSID<<8 | FlowID. */
  plain: boolean;
}

const innerFrame = (i: Inner, seq: number): Buffer =>
  ethernet(i.srcMac, i.dstMac, ETHERTYPE_IPV4, ipv4(i.srcIp, i.dstIp, IPPROTO_ICMP, icmpEcho(0x4242, seq)));

/** GRE with the C bit: the checksum over the GRE header and payload, computed. */
function greWithChecksum(flags: number, key: number, payload: Buffer): Buffer {
  const zero = Buffer.concat([gre({ flags, key }), payload]);
  return Buffer.concat([gre({ flags, key, checksum: inetChecksum(zero) }), payload]);
}

const contoso1: Inner = { srcMac: '60:00:60:00:01:01', dstMac: '60:00:60:00:02:03', srcIp: '10.0.1.101', dstIp: '10.0.1.103' };
const contoso3: Inner = { srcMac: '60:00:60:00:02:03', dstMac: '60:00:60:00:01:01', srcIp: '10.0.1.103', dstIp: '10.0.1.101' };
const mtgw: Inner = { srcMac: '60:01:60:01:03:01', dstMac: '60:01:60:01:00:00', srcIp: '10.0.2.2', dstIp: '10.0.1.101' };
const fabrikam1: Inner = { srcMac: '70:00:70:00:01:01', dstMac: '70:00:70:00:02:03', srcIp: '10.0.1.101', dstIp: '10.0.1.103' };
const fabrikam3: Inner = { srcMac: '70:00:70:00:02:03', dstMac: '70:00:70:00:01:01', srcIp: '10.0.1.103', dstIp: '10.0.1.101' };

function samples(): Sample[] {
  const out: Sample[] = [];
  const plain = (vsid: number, flowId: number, inner: Inner, outer: [string, string] = [PA1, PA2]): void => {
    out.push({
      what: `NVGRE VSID ${vsid} FlowID ${flowId}`,
      frame: onLink(nvgre(outer[0], outer[1], vsid, flowId, innerFrame(inner, out.length + 1))),
      inner,
      nvgre: { vsid, flowId },
      plain: true,
    });
  };
  plain(6000, 0, contoso1);
  plain(6000, 1, contoso3, [PA2, PA1]);
  plain(6001, 0xab, mtgw);
  plain(7000, 0xff, fabrikam1);
  plain(7000, 0, fabrikam3, [PA2, PA1]);
  plain(6000, 0xff, contoso1);
  plain(6001, 1, mtgw, [PA2, PA1]);
  plain(7000, 0xab, fabrikam1);

  // The C bit: a checksum word before the key (RFC 7637 forbids it; the key must still be found).
  out.push({
    what: 'GRE C|K (checksum word before the key), VSID 6000 FlowID 0x10',
    frame: onLink(ipv4(PA1, PA2, IPPROTO_GRE, greWithChecksum(GRE_C | GRE_K, (6000 << 8) | 0x10, innerFrame(contoso1, 100)))),
    inner: contoso1,
    nvgre: { vsid: 6000, flowId: 0x10 },
    plain: false,
  });
  // The S bit: a sequence number after the key.
  out.push({
    what: 'GRE K|S (sequence number after the key), VSID 7000 FlowID 1',
    frame: onLink(ipv4(PA1, PA2, IPPROTO_GRE, Buffer.concat([gre({ flags: GRE_K | GRE_S, key: (7000 << 8) | 1, seq: 42 }), innerFrame(fabrikam1, 101)]))),
    inner: fabrikam1,
    nvgre: { vsid: 7000, flowId: 1 },
    plain: false,
  });
  // 0x6558 without a key is plain Ethernet over GRE, not NVGRE.
  out.push({
    what: 'GRE 0x6558 without a key (gretap): no nvgre item, Ethernet still decoded',
    frame: onLink(ipv4(PA1, PA2, IPPROTO_GRE, Buffer.concat([gre({ flags: 0 }), innerFrame(contoso3, 102)]))),
    inner: contoso3,
    plain: false,
  });
  // GRE in GRE: the outer key (which looks like VSID 6000) must never be taken for the inner one.
  const outerKeyed = (payload: Buffer): Buffer =>
    onLink(ipv4('172.16.0.1', '172.16.0.2', IPPROTO_GRE, Buffer.concat([gre({ protocol: ETHERTYPE_IPV4, key: 0x00177000 }), payload])));
  out.push({
    what: 'keyed GRE (key 0x00177000) carrying keyless GRE 0x6558: no nvgre item',
    frame: outerKeyed(ipv4(PA1, PA2, IPPROTO_GRE, Buffer.concat([gre({ flags: 0, protocol: ETHERTYPE_TEB }), innerFrame(fabrikam3, 103)]))),
    inner: fabrikam3,
    plain: false,
  });
  out.push({
    what: 'keyed GRE (key 0x00177000) carrying NVGRE VSID 7000 FlowID 0xab: the inner key',
    frame: outerKeyed(nvgre(PA1, PA2, 7000, 0xab, innerFrame(fabrikam1, 104))),
    inner: fabrikam1,
    nvgre: { vsid: 7000, flowId: 0xab },
    plain: false,
  });
  return out;
}

// ---------------------------------------------------------------------------
// tshark

let work = '';

/**
 * Run tshark with a private HOME (no personal preferences or plugins); `script`
 * adds -X lua_script:. A `-G report` must come first: it is kept in front.
 */
async function tshark(args: string[], script: boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [first, rest] = args[0] === '-G' ? [args.slice(0, 2), args.slice(2)] : [['-n'], args];
  const argv = ['tshark', ...first, ...(script ? ['-X', `lua_script:${SCRIPT}`] : []), ...rest];
  const r = await run(argv, { timeoutMs: 60_000, env: { ...process.env, HOME: work } });
  if (r.timedOut) throw new Error(`${argv.join(' ')} timed out`);
  if (/Lua: Error/i.test(r.stderr)) {
    throw new Error(
      `tshark reported a Lua error (if nvgre.lua is also installed in the global plugin folder, ` +
        `the -X copy cannot register a second "nvgre"):\n${r.stderr.trim()}`,
    );
  }
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

type Row = Record<string, string[]>;

/** `-T fields` with every occurrence: frame number → field → values (outer first). */
async function fields(file: string, names: string[], script: boolean, filter?: string): Promise<Map<number, Row>> {
  const all = ['frame.number', ...names];
  const r = await tshark(
    [
      '-r', file,
      ...(filter ? ['-Y', filter] : []),
      '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,',
      ...all.flatMap((f) => ['-e', f]),
    ],
    script,
  );
  if (r.code !== 0) throw new Error(`tshark failed (code ${r.code}): ${r.stderr.trim()}`);
  const rows = new Map<number, Row>();
  for (const line of r.stdout.split('\n')) {
    if (!line.trim()) continue;
    const cols = line.split('\t');
    const row: Row = {};
    all.forEach((name, i) => (row[name] = cols[i] ? cols[i]!.split(',') : []));
    rows.set(Number(row['frame.number']![0]), row);
  }
  return rows;
}

const last = (v: string[] | undefined): string | undefined => (v && v.length ? v[v.length - 1] : undefined);
const INNER_FIELDS = ['eth.src', 'eth.dst', 'ip.src', 'ip.dst'];

// ---------------------------------------------------------------------------

describe('wireshark/nvgre.lua under tshark', () => {
  const sample = samples();
  let pcap = '';

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'nvgre-dissector-'));
    pcap = join(work, 'nvgre.pcap');
    writePcap(pcap, sample.map((s) => s.frame));
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('loads: protocol nvgre with nvgre.vsid (FT_UINT32) and nvgre.flowid (FT_UINT8), even as root', async () => {
    const r = await tshark(['-G', 'fields'], true);
    expect(r.code).toBe(0);
    const rows = r.stdout.split('\n').map((l) => l.split('\t'));
    expect(rows.find((c) => c[0] === 'P' && c[2] === 'nvgre')).toBeDefined();
    expect(rows.find((c) => c[0] === 'F' && c[2] === 'nvgre.vsid')?.[3]).toBe('FT_UINT32');
    expect(rows.find((c) => c[0] === 'F' && c[2] === 'nvgre.flowid')?.[3]).toBe('FT_UINT8');
  });

  it('stock tshark: gre.proto is 0x6558 and gre.key is VSID<<8 | FlowID, and it knows no nvgre fields', async () => {
    const rows = await fields(pcap, ['gre.proto', 'gre.key'], false);
    expect(rows.size).toBe(sample.length);
    sample.forEach((s, i) => {
      if (!s.plain) return;
      const row = rows.get(i + 1)!;
      expect(row['gre.proto'], s.what).toEqual(['0x6558']);
      expect(row['gre.key']!.map((k) => Number(k)), s.what).toEqual([s.nvgre!.vsid * 256 + s.nvgre!.flowId]);
    });
    // The control: without the script these names do not exist.
    const r = await tshark(['-r', pcap, '-Y', 'nvgre.vsid == 6000'], false);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/nvgre\.vsid/);
  });

  it('with the dissector: nvgre.vsid and nvgre.flowid as written; the inner Ethernet/IPv4 decode as sent', async () => {
    const rows = await fields(pcap, ['nvgre.vsid', 'nvgre.flowid', 'gre.key', ...INNER_FIELDS], true);
    expect(rows.size).toBe(sample.length);
    sample.forEach((s, i) => {
      const row = rows.get(i + 1)!;
      const got = {
        vsid: row['nvgre.vsid']!.map(Number),
        flowId: row['nvgre.flowid']!.map(Number),
        srcMac: last(row['eth.src']),
        dstMac: last(row['eth.dst']),
        srcIp: last(row['ip.src']),
        dstIp: last(row['ip.dst']),
      };
      expect(got, `frame ${i + 1}: ${s.what}`).toEqual({
        vsid: s.nvgre ? [s.nvgre.vsid] : [],
        flowId: s.nvgre ? [s.nvgre.flowId] : [],
        ...s.inner,
      });
      // The Ethernet layer under NVGRE is the inner frame, not a copy of the link's.
      expect(row['eth.src']!.length, s.what).toBe(2);
    });
  });

  it('display filters: nvgre.vsid == 6000 selects exactly the VSID 6000 packets; nvgre.flowid == 1 and == 0xff', async () => {
    const frames = async (filter: string): Promise<number[]> => [...(await fields(pcap, [], true, filter)).keys()];
    const want = (p: (n: { vsid: number; flowId: number }) => boolean): number[] =>
      sample.flatMap((s, i) => (s.nvgre && p(s.nvgre) ? [i + 1] : []));
    for (const vsid of [6000, 6001, 7000]) {
      const expected = want((n) => n.vsid === vsid);
      expect(expected.length).toBeGreaterThan(0);
      expect(await frames(`nvgre.vsid == ${vsid}`), `nvgre.vsid == ${vsid}`).toEqual(expected);
    }
    expect(await frames('nvgre.flowid == 1')).toEqual(want((n) => n.flowId === 1));
    expect(await frames('nvgre.flowid == 0xff')).toEqual(want((n) => n.flowId === 0xff));
    expect(await frames('nvgre')).toEqual(want(() => true));
    expect(await frames('nvgre.vsid == 6000 && nvgre.flowid == 0xff')).toEqual(want((n) => n.vsid === 6000 && n.flowId === 0xff));
  });

  it('Info column: the inner packet\'s summary plus [NVGRE VSID n FlowID m]', async () => {
    const r = await tshark(['-r', pcap, '-T', 'fields', '-e', '_ws.col.Info'], true);
    expect(r.code).toBe(0);
    const info = r.stdout.split('\n').filter(Boolean);
    expect(info).toHaveLength(sample.length);
    sample.forEach((s, i) => {
      expect(info[i], s.what).toMatch(/Echo \(ping\) request/);
      if (s.nvgre) expect(info[i], s.what).toContain(`[NVGRE VSID ${s.nvgre.vsid} FlowID ${s.nvgre.flowId}]`);
      else expect(info[i], s.what).not.toContain('NVGRE');
    });
  });
});
