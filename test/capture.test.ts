// `nvgrectl capture` on the reference topology (lab/topology.ts): the CLI is
// run inside host1's namespace (`ip netns exec`, as an operator would on the
// host) against host1's daemon while VMs ping each other, and the pcap files
// it writes are read back with tshark, stock and with wireshark/nvgre.lua.
// Checked: the vsid filter keeps exactly one tenant's packets; the file is a
// classic pcap (header, link type, records) that tshark decodes to the VMs'
// inner frames; an adapter's TAP in the VM's namespace is captured through the
// re-run inside that namespace, and its frames are byte for byte the inner
// frames seen on the underlay at the same time; the ca filter; the BPF
// filters against crafted GRE headers (C and S bits, IPv4 options, protocol
// type) injected on the underlay; `write -` into `tshark -r -`; usage and
// open errors and their exit statuses. Runs as root.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import cap from 'cap';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, inject, ipIn, nsExec, ping, run, withTimeout, type LabProcess } from '../lab/netns.js';
import { ETHERTYPE_IPV4, GRE_C, GRE_K, GRE_S, IPPROTO_GRE, IPPROTO_ICMP, ethernet, gre, icmpEcho, inetChecksum, ipv4, nvgre } from '../lab/packets.js';
import { buildTopology, configureVms, PROVIDER_ADDRESSES, startDaemons, UNDERLAY_IF, vm, type Daemon } from '../lab/topology.js';
import { adapterFilter, GRE_FILTER, underlayFilter } from '../src/capture/filter.js';
import { DEFAULT_SNAPLEN, LINKTYPE, PCAP_MAGIC } from '../src/capture/pcap.js';
import { EXIT } from '../src/cli/exit.js';
import { packageRoot } from '../src/native.js';
import { readablePackage } from './helpers/readable-package.js';
import { scratchDir } from './helpers/scratch.js';

const ROOT = packageRoot();
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const SCRIPT = join(ROOT, 'wireshark', 'nvgre.lua');

const lab = new Lab(`nvcap${process.pid % 10000}-`);
const out = scratchDir('capture');
let daemons: Daemon[] = [];
let sock1 = '';
let serial = 0;
/**
 * Every cap handle this file opens, referenced until the process exits: in
 * cap 0.2.1 a garbage-collected handle (closed, or whose open() failed) can
 * crash the process (see src/capture/capture.ts).
 */
const capHandles: InstanceType<typeof cap.Cap>[] = [];

const HOST1 = PROVIDER_ADDRESSES.host1.address;
const HOST2 = PROVIDER_ADDRESSES.host2.address;
const c1 = vm('contoso1');
const c2 = vm('contoso2');
const c3 = vm('contoso3');

// ---------------------------------------------------------------------------
// Running the CLI

/** `nvgrectl ARGS` in `ns`, spawned by the lab (killed by PID at teardown); resolves once it is capturing. */
async function startCapture(ns: string, args: string[]): Promise<LabProcess> {
  const p = await lab.spawn(ns, [process.execPath, CLI, ...args], { logFile: join(out, `nvgrectl-${serial++}.log`) });
  await p.waitForLine((l) => l.startsWith('capturing on '), 20_000, { stream: 'stderr', what: '"capturing on" on stderr' });
  return p;
}

/** Wait (bounded) for a capture to exit; its exit code and stderr. */
async function finished(p: LabProcess, timeoutMs = 30_000): Promise<{ code: number | null; stderr: string }> {
  try {
    await withTimeout(p.exited, timeoutMs, `nvgrectl capture (pid ${p.pid})`);
  } finally {
    if (p.running) await lab.stop(p, { signal: 'SIGKILL' });
  }
  await p.logClosed;
  const stderr = p
    .tail(200)
    .split('\n')
    .filter((l) => l.startsWith('[stderr] '))
    .map((l) => l.slice(9))
    .join('\n');
  return { code: p.exitInfo?.code ?? null, stderr };
}

/** `nvgrectl ARGS` in `ns` (or here, with ns undefined), run to completion, stdin not a terminal. */
async function nvgrectl(ns: string | undefined, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const argv = [process.execPath, CLI, ...args];
  const r = ns === undefined ? await run(argv, { timeoutMs: 30_000 }) : await nsExec(ns, argv, { timeoutMs: 30_000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

// ---------------------------------------------------------------------------
// Reading the files

interface PcapRecord {
  sec: number;
  usec: number;
  orig: number;
  data: Buffer;
}

/** A classic little-endian microsecond pcap, parsed strictly (every byte accounted for). */
function readPcap(file: string): { snaplen: number; linkType: number; records: PcapRecord[] } {
  const b = readFileSync(file);
  expect(b.length, `${file}: global header`).toBeGreaterThanOrEqual(24);
  expect(b.readUInt32LE(0), 'magic').toBe(PCAP_MAGIC);
  expect([b.readUInt16LE(4), b.readUInt16LE(6)], 'version').toEqual([2, 4]);
  const records: PcapRecord[] = [];
  let at = 24;
  while (at < b.length) {
    expect(b.length - at, `${file}: record header at ${at}`).toBeGreaterThanOrEqual(16);
    const incl = b.readUInt32LE(at + 8);
    expect(b.length - at - 16, `${file}: record data at ${at}`).toBeGreaterThanOrEqual(incl);
    records.push({ sec: b.readUInt32LE(at), usec: b.readUInt32LE(at + 4), orig: b.readUInt32LE(at + 12), data: b.subarray(at + 16, at + 16 + incl) });
    at += 16 + incl;
  }
  return { snaplen: b.readUInt32LE(16), linkType: b.readUInt32LE(20), records };
}

/** The inner Ethernet frame of an NVGRE packet captured on the underlay (Ethernet + IPv4 + 8-byte GRE). */
function innerFrame(underlayFrame: Buffer): Buffer {
  const ihl = (underlayFrame[14]! & 0xf) * 4;
  return underlayFrame.subarray(14 + ihl + 8);
}

type Row = Record<string, string[]>;

/** tshark -T fields (every occurrence, outer first), with a private HOME; `script` loads nvgre.lua. */
async function fields(file: string, names: string[], opts: { script?: boolean; filter?: string } = {}): Promise<Row[]> {
  const argv = [
    'tshark', '-n', ...(opts.script ? ['-X', `lua_script:${SCRIPT}`] : []), '-r', file,
    ...(opts.filter ? ['-Y', opts.filter] : []),
    '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,',
    ...['frame.number', ...names].flatMap((f) => ['-e', f]),
  ];
  const r = await run(argv, { timeoutMs: 60_000, env: { ...process.env, HOME: out } });
  if (r.code !== 0 || /Lua: Error/i.test(r.stderr)) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((line) => {
      const cols = line.split('\t');
      const row: Row = {};
      ['frame.number', ...names].forEach((n, i) => (row[n] = cols[i] ? cols[i]!.split(',') : []));
      return row;
    });
}

const keyOf = (row: Row): number => Number(row['gre.key']![0]) >>> 0;
const sorted = (...xs: (string | undefined)[]): (string | undefined)[] => [...xs].sort();

/** Contoso1 ↔ Contoso3 ICMP with a permanent neighbour entry, so no ARP reaches contoso1's TAP. */
async function withStaticNeighbour<T>(fn: () => Promise<T>): Promise<T> {
  const ns = lab.ns('contoso1');
  await ipIn(ns, ['neigh', 'replace', c3.ip, 'lladdr', c3.mac, 'dev', c1.tap, 'nud', 'permanent']);
  try {
    return await fn();
  } finally {
    await ipIn(ns, ['neigh', 'del', c3.ip, 'dev', c1.tap]);
  }
}

// ---------------------------------------------------------------------------

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab);
  daemons = await startDaemons(lab, { logDir: out });
  await configureVms(lab);
  const d = daemons.find((x) => x.host === 'host1');
  if (!d?.socket) throw new Error('host1 daemon has no API socket in its config');
  sock1 = d.socket;
}, 120_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

describe('capture filters (src/capture/filter.ts)', () => {
  const CA_V4 = '10.0.1.102';

  it('builds the documented pcap-filter text', () => {
    expect(underlayFilter()).toBe(GRE_FILTER);
    expect(GRE_FILTER).toBe('ip proto 47 or ip6 proto 47');
    expect(underlayFilter({ vsid: 6000 })).toBe(
      '(ip proto 47 and ip[6:2] & 0x1fff = 0 and ip[((ip[0] & 0xf) << 2):2] & 0xa000 = 0x2000 and ip[((ip[0] & 0xf) << 2) + 4:4] >> 8 = 6000)' +
        ' or (ip6 and ip6[6] = 47 and ip6[40:2] & 0xa000 = 0x2000 and ip6[44:4] >> 8 = 6000)',
    );
    const ca = underlayFilter({ ca: CA_V4 });
    const G = '((ip[0] & 0xf) << 2)';
    for (const part of [
      `ip[${G}:2] & 0xb000 = 0x2000`,
      `ip[${G} + 2:2] = 0x6558`,
      `ip[${G} + 20:2] = 0x0800`,
      `(ip[${G} + 34:4] = 0x0a000166 or ip[${G} + 38:4] = 0x0a000166)`,
      'ip6[42:2] = 0x6558',
      '(ip6[74:4] = 0x0a000166 or ip6[78:4] = 0x0a000166)',
    ]) {
      expect(ca).toContain(part);
    }
    expect(ca).not.toContain('>> 8');
    const v6 = underlayFilter({ vsid: 7000, ca: '2001:db8::1:2' });
    expect(v6).toContain('>> 8 = 7000');
    expect(v6).toContain(`ip[${G} + 20:2] = 0x86dd`);
    expect(v6).toContain(
      `((ip[${G} + 30:4] = 0x20010db8 and ip[${G} + 34:4] = 0x00000000 and ip[${G} + 38:4] = 0x00000000 and ip[${G} + 42:4] = 0x00010002)`,
    );
    expect(adapterFilter()).toBe('');
    expect(adapterFilter({ ca: CA_V4 })).toBe(`host ${CA_V4}`);
    expect(adapterFilter({ ca: '2001:DB8:0::1' })).toBe('host 2001:db8::1');
    expect(() => underlayFilter({ vsid: 0x1000000 })).toThrow(RangeError);
    expect(() => underlayFilter({ ca: '10.1' })).toThrow(/not a valid IP address/);
    expect(() => adapterFilter({ ca: 'contoso1' })).toThrow(/not a valid IP address/);
  });

  it('every filter compiles in libpcap (opened on lo)', () => {
    const filters = [
      underlayFilter(),
      underlayFilter({ vsid: 6000 }),
      underlayFilter({ vsid: 0xffffff }),
      underlayFilter({ ca: CA_V4 }),
      underlayFilter({ ca: 'fd00::1' }),
      underlayFilter({ vsid: 6000, ca: CA_V4 }),
      underlayFilter({ vsid: 7000, ca: '2001:db8::1:2' }),
      adapterFilter({ ca: CA_V4 }),
      adapterFilter({ ca: 'fd00::1' }),
    ];
    const handles = capHandles;
    const before = handles.length;
    const buf = Buffer.alloc(65536);
    for (const f of filters) {
      const c = new cap.Cap();
      handles.push(c);
      expect(() => c.open('lo', f, 1 << 20, buf), f).not.toThrow();
      c.close();
    }
    // The control: libpcap does reject a bad filter there.
    const bad = new cap.Cap();
    handles.push(bad);
    expect(() => bad.open('lo', 'ip[((ip[0] & 0xf) << 2) + 4:4] >> = 6000', 1 << 20, buf)).toThrow(/syntax error|parse/);
    expect(handles.length - before).toBe(filters.length + 1);
  });
});

describe('nvgrectl capture on the lab', () => {
  it('underlay vsid 6000 count 6: exactly 6 NVGRE packets of VSID 6000 while VSIDs 6000 and 7000 both cross', async () => {
    const file = join(out, 'underlay-vsid6000.pcap');
    const all = join(out, 'underlay-all.pcap');
    const capture = await startCapture('host1', ['-s', sock1, 'capture', 'underlay', 'vsid', '6000', 'count', '6', 'write', file]);
    // The control: everything GRE on the same interface in the same window.
    const control = await startCapture('host1', ['-s', sock1, 'capture', 'underlay', 'duration', '2.5', 'write', all]);
    const pings = Promise.all([
      ping(lab.ns('contoso1'), c3.ip, { count: 15, intervalMs: 100 }),
      ping(lab.ns('fabrikam1'), vm('fabrikam3').ip, { count: 15, intervalMs: 100 }),
    ]);
    const r = await finished(capture);
    const rc = await finished(control);
    const [pc, pf] = await pings;
    expect(pc.received).toBeGreaterThan(0);
    expect(pf.received).toBeGreaterThan(0);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`captured 6 packets on ${UNDERLAY_IF} (filter: ${underlayFilter({ vsid: 6000 })})`);
    expect(rc.code, rc.stderr).toBe(0);
    expect(rc.stderr).toMatch(new RegExp(`captured \\d+ packets on ${UNDERLAY_IF} \\(filter: ip proto 47 or ip6 proto 47\\)`));

    // The file: classic pcap, Ethernet, snaplen 262144, 6 records with whole frames and sane timestamps.
    const pcap = readPcap(file);
    expect(pcap.linkType).toBe(LINKTYPE.ETHERNET);
    expect(pcap.snaplen).toBe(DEFAULT_SNAPLEN);
    expect(pcap.records).toHaveLength(6);
    const now = Date.now() / 1000;
    for (const rec of pcap.records) {
      expect(rec.orig).toBe(rec.data.length);
      expect(rec.usec).toBeLessThan(1_000_000);
      expect(Math.abs(rec.sec - now)).toBeLessThan(120);
    }

    // Stock tshark: GRE 0x6558, key >> 8 = 6000, inner IPv4 ICMP between the VMs' CAs.
    const plain = await fields(file, ['gre.proto', 'gre.key', 'ip.src', 'ip.dst', 'ip.proto', 'icmp.type']);
    expect(plain).toHaveLength(6);
    for (const row of plain) {
      expect(row['gre.proto']).toEqual(['0x6558']);
      expect(keyOf(row) >>> 8).toBe(6000);
      expect(sorted(row['ip.src']![0], row['ip.dst']![0])).toEqual(sorted(HOST1, HOST2));
      expect(sorted(row['ip.src']![1], row['ip.dst']![1])).toEqual(sorted(c1.ip, c3.ip));
      expect(row['ip.proto']).toEqual([String(IPPROTO_GRE), String(IPPROTO_ICMP)]);
      expect(['0', '8']).toContain(row['icmp.type']![0]);
    }
    expect(plain.filter((r) => r['ip.src']![1] === c1.ip && r['icmp.type']![0] === '8').length).toBeGreaterThan(0);

    // With the dissector: nvgre.vsid / nvgre.flowid from the key; display filters.
    const dis = await fields(file, ['nvgre.vsid', 'nvgre.flowid', 'gre.key', 'eth.src', 'eth.dst'], { script: true });
    expect(dis).toHaveLength(6);
    for (const row of dis) {
      expect(row['nvgre.vsid']).toEqual(['6000']);
      expect(row['nvgre.flowid']).toEqual([String(keyOf(row) & 0xff)]);
      expect(sorted(row['eth.src']![1], row['eth.dst']![1])).toEqual(sorted(c1.mac, c3.mac));
    }
    expect(await fields(file, [], { script: true, filter: 'nvgre.vsid == 6000' })).toHaveLength(6);
    expect(await fields(file, [], { script: true, filter: 'nvgre.vsid == 7000' })).toHaveLength(0);

    // The control saw both tenants: the vsid filter excluded VSID 7000, it was not absent.
    const ctl = await fields(all, ['nvgre.vsid'], { script: true });
    const vsids = new Set(ctl.map((r) => r['nvgre.vsid']![0]));
    expect(vsids).toEqual(new Set(['6000', '7000']));
  });

  it('adapter contoso1 count 4 (TAP in the VM namespace): the VMs\' frames, byte for byte the inner frames on the underlay', async () => {
    const fa = join(out, 'adapter-contoso1.pcap');
    const fu = join(out, 'underlay-with-adapter.pcap');
    await withStaticNeighbour(async () => {
      const [ca, cu] = await Promise.all([
        startCapture('host1', ['-s', sock1, 'capture', 'adapter', c1.tap, 'count', '4', 'write', fa]),
        startCapture('host1', ['-s', sock1, 'capture', 'underlay', 'vsid', '6000', 'count', '8', 'write', fu]),
      ]);
      const pinging = ping(lab.ns('contoso1'), c3.ip, { count: 12, intervalMs: 100 });
      const [ra, ru] = await Promise.all([finished(ca), finished(cu)]);
      expect((await pinging).received).toBeGreaterThan(0);
      expect(ra.code, ra.stderr).toBe(0);
      expect(ru.code, ru.stderr).toBe(0);
      // The re-run inside the namespace did the capture.
      expect(ra.stderr).toContain(`capturing on ${c1.tap} in netns ${lab.ns('contoso1')} (filter: none), link type ETHERNET`);
      expect(ra.stderr).toContain(`captured 4 packets on ${c1.tap} in netns ${lab.ns('contoso1')} (filter: none)`);
    });

    const adapter = readPcap(fa);
    expect(adapter.linkType).toBe(LINKTYPE.ETHERNET);
    expect(adapter.records).toHaveLength(4);
    const rows = await fields(fa, ['eth.src', 'eth.dst', 'eth.type', 'ip.src', 'ip.dst', 'icmp.type', 'icmp.ident', 'icmp.seq']);
    expect(rows).toHaveLength(4);
    for (const row of rows) {
      expect(row['eth.type']).toEqual(['0x0800']);
      expect(sorted(row['eth.src']![0], row['eth.dst']![0])).toEqual(sorted(c1.mac, c3.mac));
      expect(sorted(row['ip.src']![0], row['ip.dst']![0])).toEqual(sorted(c1.ip, c3.ip));
      expect(['0', '8']).toContain(row['icmp.type']![0]);
    }
    // Requests leave contoso1, replies come back to it.
    expect(rows.some((r) => r['icmp.type']![0] === '8' && r['eth.src']![0] === c1.mac)).toBe(true);
    expect(rows.some((r) => r['icmp.type']![0] === '0' && r['eth.dst']![0] === c1.mac)).toBe(true);

    // The same ICMP messages (type, id, seq) on the underlay, decoded as sent.
    const under = await fields(fu, ['nvgre.vsid', 'icmp.type', 'icmp.ident', 'icmp.seq'], { script: true });
    expect(under).toHaveLength(8);
    const seen = new Set(under.map((r) => `${r['icmp.type']![0]}/${r['icmp.ident']![0]}/${r['icmp.seq']![0]}`));
    for (const row of rows) expect(seen, JSON.stringify(row)).toContain(`${row['icmp.type']![0]}/${row['icmp.ident']![0]}/${row['icmp.seq']![0]}`);
    // Byte for byte: every adapter frame is the inner frame of one underlay packet.
    const inner = readPcap(fu).records.map((r) => innerFrame(r.data).toString('hex'));
    for (const rec of adapter.records) expect(inner).toContain(rec.data.toString('hex'));
  });

  it('underlay ca 10.0.1.102: only NVGRE whose inner IPs include that CA (both tenants); with vsid 7000 only Fabrikam\'s', async () => {
    const fca = join(out, 'underlay-ca.pcap');
    const fboth = join(out, 'underlay-ca-vsid7000.pcap');
    const fall = join(out, 'underlay-ca-control.pcap');
    const [cca, cboth, call] = await Promise.all([
      startCapture('host1', ['-s', sock1, 'capture', 'underlay', 'ca', c2.ip, 'count', '8', 'write', fca]),
      startCapture('host1', ['-s', sock1, 'capture', 'underlay', 'vsid', '7000', 'ca', c2.ip, 'count', '4', 'write', fboth]),
      startCapture('host1', ['-s', sock1, 'capture', 'underlay', 'duration', '2.5', 'write', fall]),
    ]);
    const pings = Promise.all([
      ping(lab.ns('contoso3'), c2.ip, { count: 15, intervalMs: 100 }), // matches (VSID 6000)
      ping(lab.ns('fabrikam3'), vm('fabrikam2').ip, { count: 15, intervalMs: 100 }), // matches (VSID 7000)
      ping(lab.ns('contoso1'), c3.ip, { count: 15, intervalMs: 100 }), // does not
      ping(lab.ns('fabrikam1'), vm('fabrikam3').ip, { count: 15, intervalMs: 100 }), // does not
    ]);
    const results = await Promise.all([finished(cca), finished(cboth), finished(call)]);
    for (const p of await pings) expect(p.received, `${p.ns} -> ${p.dst}`).toBeGreaterThan(0);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    expect(results[0]!.stderr).toContain(`captured 8 packets on ${UNDERLAY_IF} (filter: ${underlayFilter({ ca: c2.ip })})`);

    const inner = (row: Row): string[] => [row['ip.src']![1]!, row['ip.dst']![1]!];
    const ca = await fields(fca, ['nvgre.vsid', 'ip.src', 'ip.dst'], { script: true });
    expect(ca).toHaveLength(8);
    for (const row of ca) expect(inner(row)).toContain(c2.ip);
    const both = await fields(fboth, ['nvgre.vsid', 'ip.src', 'ip.dst'], { script: true });
    expect(both).toHaveLength(4);
    for (const row of both) {
      expect(row['nvgre.vsid']).toEqual(['7000']);
      expect(inner(row)).toContain(c2.ip);
    }
    // The control: traffic without that CA did cross in the same window, in both tenants.
    const ctl = await fields(fall, ['nvgre.vsid', 'ip.src', 'ip.dst'], { script: true });
    const others = ctl.filter((r) => !inner(r).includes(c2.ip));
    expect(new Set(others.map((r) => r['nvgre.vsid']![0]))).toEqual(new Set(['6000', '7000']));
    expect(new Set(ctl.filter((r) => inner(r).includes(c2.ip)).map((r) => r['nvgre.vsid']![0]))).toEqual(new Set(['6000', '7000']));
  });

  it('the BPF filters on crafted GRE headers injected on the underlay (C and S bits, IPv4 options, protocol type)', async () => {
    // Inner frames Contoso3 -> Contoso1 addressed to a MAC no VM has: host1 drops them, nobody answers.
    const innerTo = (src: string, dst: string, seq: number): Buffer =>
      ethernet(c3.mac, '60:00:60:00:01:99', ETHERTYPE_IPV4, ipv4(src, dst, IPPROTO_ICMP, icmpEcho(0x4343, seq)));
    const key = (flowId: number, vsid = 6000): number => vsid * 256 + flowId;
    const raw = (greHeader: Buffer, inner: Buffer): Buffer => ipv4(HOST2, HOST1, IPPROTO_GRE, Buffer.concat([greHeader, inner]));
    /** The same packet with 4 bytes of IPv4 options (NOP NOP NOP EOL): ihl 6. */
    const withOptions = (pkt: Buffer): Buffer => {
      const h = Buffer.concat([pkt.subarray(0, 20), Buffer.from([1, 1, 1, 0])]);
      h[0] = 0x46;
      h.writeUInt16BE(pkt.length + 4, 2);
      h.writeUInt16BE(0, 10);
      h.writeUInt16BE(inetChecksum(h), 10);
      return Buffer.concat([h, pkt.subarray(20)]);
    };
    const cases: { flowId: number; what: string; pkt: Buffer; vsid: boolean; ca: boolean }[] = [
      { flowId: 0x11, what: 'plain NVGRE, VSID 6000', pkt: nvgre(HOST2, HOST1, 6000, 0x11, innerTo(c3.ip, c1.ip, 1)), vsid: true, ca: true },
      { flowId: 0x12, what: 'C bit (key at +8)', pkt: raw(gre({ flags: GRE_C | GRE_K, key: key(0x12) }), innerTo(c3.ip, c1.ip, 2)), vsid: false, ca: false },
      { flowId: 0x13, what: 'S bit (key at +4, inner at +12)', pkt: raw(gre({ flags: GRE_K | GRE_S, key: key(0x13), seq: 7 }), innerTo(c3.ip, c1.ip, 3)), vsid: true, ca: false },
      { flowId: 0x14, what: 'VSID 6001', pkt: nvgre(HOST2, HOST1, 6001, 0x14, innerTo(c3.ip, c1.ip, 4)), vsid: false, ca: true },
      { flowId: 0x15, what: 'protocol 0x0800', pkt: raw(gre({ key: key(0x15), protocol: ETHERTYPE_IPV4 }), innerTo(c3.ip, c1.ip, 5)), vsid: true, ca: false },
      { flowId: 0x16, what: 'other inner IPs', pkt: nvgre(HOST2, HOST1, 6000, 0x16, innerTo(c3.ip, c2.ip, 6)), vsid: true, ca: false },
      { flowId: 0x17, what: 'outer IPv4 options (ihl 6)', pkt: withOptions(nvgre(HOST2, HOST1, 6000, 0x17, innerTo(c3.ip, c1.ip, 7))), vsid: true, ca: true },
      { flowId: 0x18, what: 'VSID 7000, the CA as inner destination', pkt: nvgre(HOST2, HOST1, 7000, 0x18, innerTo(c2.ip, c1.ip, 8)), vsid: false, ca: true },
      { flowId: 0x19, what: 'the CA as inner source only', pkt: nvgre(HOST2, HOST1, 6000, 0x19, innerTo(c1.ip, c3.ip, 9)), vsid: true, ca: true },
    ];
    const fv = join(out, 'crafted-vsid.pcap');
    const fc = join(out, 'crafted-ca.pcap');
    const [cv, cc] = await Promise.all([
      startCapture('host1', ['capture', 'underlay', 'dev', UNDERLAY_IF, 'vsid', '6000', 'duration', '3', 'write', fv]),
      startCapture('host1', ['capture', 'underlay', 'dev', UNDERLAY_IF, 'ca', c1.ip, 'duration', '3', 'write', fc]),
    ]);
    const sent = await inject(lab.ns('host2'), HOST1, cases.map((c) => c.pkt), { intervalMs: 20 });
    expect(sent).toMatchObject({ sent: cases.length, errors: 0 });
    for (const r of await Promise.all([finished(cv), finished(cc)])) expect(r.code, r.stderr).toBe(0);

    const flowIds = async (file: string): Promise<number[]> =>
      (await fields(file, ['gre.key'])).map((r) => keyOf(r) & 0xff).sort((a, b) => a - b);
    const want = (pick: (c: (typeof cases)[number]) => boolean): number[] => cases.filter(pick).map((c) => c.flowId);
    expect(await flowIds(fv), 'vsid 6000').toEqual(want((c) => c.vsid));
    expect(await flowIds(fc), `ca ${c1.ip}`).toEqual(want((c) => c.ca));
  });

  it('write -: the pcap streams to stdout (nvgrectl capture … write - | tshark -r -)', async () => {
    // A real pipe, as a shell makes it (tshark -r - refuses a socket, which Node's 'pipe' stdio is).
    const q = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;
    const producer = ['ip', 'netns', 'exec', lab.ns('host1'), process.execPath, CLI, '-s', sock1, 'capture', 'underlay', 'vsid', '6000', 'count', '4', 'write', '-'];
    const consumer = ['tshark', '-n', '-X', `lua_script:${SCRIPT}`, '-r', '-', '-T', 'fields', '-e', 'nvgre.vsid', '-e', 'icmp.type'];
    const sh = spawn('sh', ['-c', `${producer.map(q).join(' ')} | ${consumer.map(q).join(' ')}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HOME: out },
    });
    let err = '';
    let text = '';
    sh.stdout.on('data', (b: Buffer) => (text += b.toString()));
    sh.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = new Promise<number | null>((r) => sh.once('close', (c) => r(c)));
    try {
      await withTimeout(
        (async () => {
          while (!err.includes('capturing on')) await new Promise((r) => setTimeout(r, 50));
        })(),
        20_000,
        'capturing on',
      );
      await ping(lab.ns('contoso1'), c3.ip, { count: 8, intervalMs: 100 });
      expect(await withTimeout(code, 30_000, 'pipeline exit'), err).toBe(0);
    } finally {
      // By PID, if a wait above failed: the shell's children, then the shell.
      if (sh.exitCode === null && sh.signalCode === null) {
        const kids = (await run(['pgrep', '-P', String(sh.pid)])).stdout.split('\n').filter(Boolean).map(Number);
        for (const pid of kids) process.kill(pid, 'SIGKILL');
        sh.kill('SIGKILL');
      }
    }
    expect(err).toContain(`captured 4 packets on ${UNDERLAY_IF}`);
    const lines = text.split('\n').filter(Boolean);
    expect(lines).toHaveLength(4);
    for (const l of lines) expect(l).toMatch(/^6000\t(0|8)$/);
  });

  it('SIGINT stops a capture without count or duration, when stdin is a terminal: the file is complete', async () => {
    // `script` gives the CLI a terminal on stdin (interactive use); SIGINT as from Ctrl-C.
    const file = join(out, 'sigint.pcap');
    const cmd = `exec ${process.execPath} ${CLI} -s ${sock1} capture underlay vsid 6000 write ${file}`;
    const p = await lab.spawn('host1', ['script', '-qfec', cmd, '/dev/null'], { logFile: join(out, 'sigint.log') });
    await p.waitForLine((l) => l.includes('capturing on '), 20_000, { what: '"capturing on"' });
    await ping(lab.ns('contoso1'), c3.ip, { count: 3, intervalMs: 100 });
    // script runs the CLI as its child: signal that one (by PID, found in host1's namespace).
    const pids = (await nsExec(lab.ns('host1'), ['pgrep', '-P', String(p.pid)])).stdout.split('\n').filter(Boolean).map(Number);
    expect(pids.length).toBe(1);
    process.kill(pids[0]!, 'SIGINT');
    await withTimeout(p.exited, 15_000, 'capture exit after SIGINT');
    await p.logClosed;
    expect(p.exitInfo?.code, p.tail()).toBe(0);
    const n = readPcap(file).records.length;
    expect(n).toBeGreaterThanOrEqual(6);
    expect(p.tail()).toContain(`captured ${n} packets on eth1`);
  });
});

describe('usage and open errors', () => {
  const F = (): string => join(out, `never-${serial++}.pcap`);

  it('usage errors exit 2 and name the problem', async () => {
    const cases: [string[], RegExp][] = [
      [['capture', 'underlay', 'write', F()], /"count N" or "duration SECONDS" is needed/],
      [['capture', 'adapter', c1.tap, 'write', F()], /"count N" or "duration SECONDS" is needed/],
      [['capture', 'underlay', 'count', '1', 'frobnicate', '1', 'write', F()], /unknown keyword "frobnicate"/],
      [['capture', 'underlay', 'count', '1'], /missing "write FILE"/],
      [['capture', 'adapter', 'count', '1', 'write', F()], /missing NAME/],
      [['capture', 'adapter', c1.tap, 'vsid', '6000', 'count', '1', 'write', F()], /unknown keyword "vsid"/],
      [['capture', 'underlay', 'count', '0', 'write', F()], /"count" must be at least 1/],
      [['capture', 'underlay', 'count', 'x', 'write', F()], /"count" needs a number/],
      [['capture', 'underlay', 'duration', '1s', 'write', F()], /"duration" needs a number of seconds/],
      [['capture', 'underlay', 'vsid', '16777216', 'count', '1', 'write', F()], /out of range/],
      [['capture', 'underlay', 'ca', '10.1', 'count', '1', 'write', F()], /CA "10.1" is not a valid IP address/],
      [['capture', 'frob'], /command "frob" is unknown/],
    ];
    for (const [args, msg] of cases) {
      const r = await nvgrectl(lab.ns('host1'), ['-s', sock1, ...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(EXIT.USAGE);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).toMatch(/Try "nvgrectl capture( \w+)? help"/);
    }
  });

  it('a device that does not exist: exit 5 with a clear message, no file', async () => {
    const file = F();
    const r = await nvgrectl(lab.ns('host1'), ['capture', 'underlay', 'dev', 'nosuchdev0', 'count', '1', 'write', file]);
    expect(r.code).toBe(EXIT.NOT_FOUND);
    expect(r.stderr).toBe('Error: cannot capture on nosuchdev0: no such device in this network namespace\n');
    expect(existsSync(file)).toBe(false);
    // The daemon's PA interface, looked up from a namespace where it does not exist: says where to run.
    const here = await nvgrectl(undefined, ['-s', sock1, 'capture', 'underlay', 'count', '1', 'write', file]);
    if (here.code !== 0) {
      // (unless the root namespace happens to have an eth1)
      expect(here.code).toBe(EXIT.NOT_FOUND);
      expect(here.stderr).toContain("eth1 is the interface of the daemon's provider addresses: run nvgrectl in the daemon's network namespace");
    }
  });

  it('an adapter the daemon does not know: exit 5; an unreachable daemon without dev: exit 3 and a hint to give dev', async () => {
    const r = await nvgrectl(lab.ns('host1'), ['-s', sock1, 'capture', 'adapter', 'nosuchtap', 'count', '1', 'write', F()]);
    expect(r.code, r.stderr).toBe(EXIT.NOT_FOUND);
    const u = await nvgrectl(lab.ns('host1'), ['-s', join(out, 'no.sock'), 'capture', 'underlay', 'count', '1', 'write', F()]);
    expect(u.code).toBe(EXIT.UNREACHABLE);
    expect(u.stderr).toMatch(/cannot reach nvgred/);
    expect(u.stderr).toContain('give it with "dev IFNAME"');
  });

  it('an output file that cannot be written: exit 1', async () => {
    const r = await nvgrectl(lab.ns('host1'), ['capture', 'underlay', 'dev', 'lo', 'count', '1', 'write', join(out, 'no-such-dir', 'x.pcap')]);
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.stderr).toMatch(/cannot write .*x\.pcap: no such file or directory/);
  });

  // A copy the user nobody can read, wherever the repository is cloned.
  const pkg = readablePackage();
  it('without the privileges to capture: exit 4, permission denied', async () => {
    const cli = join(pkg, 'dist', 'src', 'cli', 'main.js');
    const r = await run(
      ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, cli, 'capture', 'underlay', 'dev', 'lo', 'count', '1', 'write', '/nonexistent/x.pcap'],
      { timeoutMs: 30_000 },
    );
    expect(r.code, r.stderr).toBe(EXIT.INVALID);
    expect(r.stderr).toMatch(/cannot capture on lo: permission denied .*run as root/);
  });
});
