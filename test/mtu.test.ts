// The MTU on the reference topology with VM adapters of MTU 1500 (more than
// the tunnel carries once NVGRE is added): a frame too large for the underlay
// is never fragmented on the wire; the host answers the VM with ICMP
// "fragmentation needed" (IPv4, DF set) / "packet too big" (IPv6) carrying
// the usable MTU (1500 - 42 = 1458 over IPv4 PAs, 1500 - 62 = 1438 over IPv6
// PAs), counted as mtu_exceeded, and TCP in the VM adapts (path MTU
// discovery) and still moves 100 MB, verified byte for byte (SHA-256 at both
// ends).

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Lab,
  cachedPathMtu,
  ipIn,
  iputilsPing,
  listLinks,
  metricDelta,
  scrapeMetrics,
  tcpTransfer,
  type Scrape,
  type TcpTransferResult,
} from '../lab/netns.js';
import { captureDuring, readGre, tsharkCount, type GreFrame } from '../lab/pcap.js';
import { UNDERLAY_BRIDGE, UNDERLAY_NS, setUpLab, vm, vmV6, type HostName, type LabVariant } from '../lab/topology.js';
import { scratchDir } from './helpers/scratch.js';

const MB100 = 100_000_000;
/** Anything on the underlay longer than a full 1500-byte IP packet, or an IP fragment of either family. */
const OVERSIZED_OR_FRAGMENT_BPF = 'greater 1515 or (ip and ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6] == 44)';

function useLab(tag: string, variant: LabVariant) {
  const lab = new Lab(`nvm${tag}${process.pid % 1000}-`);
  const out = scratchDir(`mtu-${tag}`);
  let windows = 0;
  beforeAll(async () => {
    await setUpLab(lab, { variant, outDir: out });
  }, 120_000);
  afterAll(async () => {
    const report = await lab.teardown();
    expect(report.errors).toEqual([]);
  });
  return {
    lab,
    async wire(traffic: () => Promise<void>, filter?: string): Promise<{ rows: GreFrame[]; file: string }> {
      const file = join(out, `window-${windows++}.pcap`);
      await captureDuring(lab, UNDERLAY_NS, UNDERLAY_BRIDGE, file, traffic, filter ? { filter } : {});
      return { rows: await readGre(file), file };
    },
    metrics: (host: HostName): Promise<Scrape> => scrapeMetrics(lab.ns(host)),
  };
}

const mtuDrops = (before: Scrape, after: Scrape) =>
  metricDelta(before, after, 'nvgre_dropped_packets_total', 'direction="from_vm"', 'reason="mtu_exceeded"');
const icmpErrors = (before: Scrape, after: Scrape) => metricDelta(before, after, 'nvgre_icmp_errors_sent_total');

/** Send 100 MB over TCP from a VM whose path MTU cache is cold, and check both ends saw the same bytes. */
async function bigTransfer(t: ReturnType<typeof useLab>, from: string, host: HostName, to: string, dst: string, expectMtu: number): Promise<TcpTransferResult> {
  const { lab } = t;
  const v6 = dst.includes(':');
  const srcAddr = v6 ? vmV6(from).ip : vm(from).ip;
  // Both ends cold: a receiver with a cached path MTU toward the sender would advertise a smaller MSS.
  for (const ns of [from, to]) await ipIn(lab.ns(ns), [v6 ? '-6' : '-4', 'route', 'flush', 'cache'], { check: true });
  expect(await cachedPathMtu(lab.ns(from), dst), 'no path MTU cached before the transfer').toBeNull();
  expect(await cachedPathMtu(lab.ns(to), srcAddr), 'no path MTU cached before the transfer').toBeNull();
  const before = await t.metrics(host);
  let x: TcpTransferResult | undefined;
  // Capture only what must not exist: oversized frames and fragments (the data itself would be 100 MB of pcap).
  const { file } = await t.wire(async () => {
    x = await tcpTransfer(lab, from, to, dst, MB100, { timeoutMs: 120_000 });
  }, OVERSIZED_OR_FRAGMENT_BPF);
  const after = await t.metrics(host);
  console.log(
    `TCP ${from} -> ${to} [${dst}]: ${x!.received.bytes} bytes in ${x!.received.ms.toFixed(0)} ms (${x!.mbitPerS.toFixed(0)} Mbit/s), ` +
      `sha256 sent ${x!.sent.sha256}, received ${x!.received.sha256}; path MTU ${await cachedPathMtu(lab.ns(from), dst)}; ` +
      `${mtuDrops(before, after)} frames answered with ICMP (mtu_exceeded)`,
  );
  expect(x!.sent.bytes).toBe(MB100);
  expect(x!.received.bytes).toBe(MB100);
  expect(x!.received.sha256).toBe(x!.sent.sha256);
  // The VM learnt the tunnel's MTU from the host, and only then got through.
  expect(await cachedPathMtu(lab.ns(from), dst)).toBe(expectMtu);
  expect(mtuDrops(before, after)).toBeGreaterThanOrEqual(1);
  expect(icmpErrors(before, after)).toBe(mtuDrops(before, after));
  expect(metricDelta(before, after, 'nvgre_encap_bytes_total')).toBeGreaterThan(MB100);
  expect(await tsharkCount(file, 'frame'), 'oversized frames or fragments on the underlay').toBe(0);
  return x!;
}

// ---------------------------------------------------------------------------

describe('IPv4 underlay (usable MTU 1458), VM adapters at 1500', () => {
  const t = useLab('a', { dualStack: true, vmMtu: 1500 });
  const { lab } = t;

  it('the VM adapters have the configured MTU 1500', async () => {
    for (const role of ['contoso1', 'contoso2', 'contoso3', 'mtgw', 'fabrikam1']) {
      const link = (await listLinks(lab.ns(role))).find((l) => l.ifname === vm(role).tap);
      expect(link?.mtu, role).toBe(1500);
    }
  });

  it('IPv4: a 1500-byte ping with DF gets "fragmentation needed" (mtu 1458) from the gateway; nothing crosses', async () => {
    const before = await t.metrics('host1');
    let p;
    const { rows } = await t.wire(async () => {
      p = await iputilsPing(lab.ns('contoso1'), vm('contoso3').ip, { size: 1472, pmtudisc: 'do', count: 3 });
    });
    console.log(p!.output.trim());
    expect(p!.received).toBe(0);
    expect(p!.output).toMatch(/From 10\.0\.1\.1 icmp_seq=1 Frag needed and DF set \(mtu = 1458\)/);
    expect(p!.mtus.length).toBeGreaterThanOrEqual(1);
    expect(new Set(p!.mtus)).toEqual(new Set([1458]));
    expect(await cachedPathMtu(lab.ns('contoso1'), vm('contoso3').ip)).toBe(1458);
    expect(rows).toEqual([]);
    const after = await t.metrics('host1');
    expect(mtuDrops(before, after)).toBeGreaterThanOrEqual(1);
    expect(icmpErrors(before, after)).toBe(mtuDrops(before, after));
    expect(metricDelta(before, after, 'nvgre_encap_packets_total')).toBe(0);
  });

  it('IPv6: a 1500-byte ping gets "packet too big" (mtu 1458) from fd00:1::1; nothing crosses', async () => {
    const before = await t.metrics('host1');
    let p;
    const { rows } = await t.wire(async () => {
      p = await iputilsPing(lab.ns('contoso1'), vmV6('contoso3').ip, { size: 1452, pmtudisc: 'do', count: 3 });
    });
    console.log(p!.output.trim());
    expect(p!.received).toBe(0);
    expect(p!.output).toMatch(/From fd00:1::1 icmp_seq=1 Packet too big: mtu=1458/);
    expect(new Set(p!.mtus)).toEqual(new Set([1458]));
    expect(await cachedPathMtu(lab.ns('contoso1'), vmV6('contoso3').ip)).toBe(1458);
    expect(rows).toEqual([]);
    const after = await t.metrics('host1');
    expect(mtuDrops(before, after)).toBeGreaterThanOrEqual(1);
    expect(icmpErrors(before, after)).toBe(mtuDrops(before, after));
  });

  it('routed traffic gets the error too: Contoso3 to MT-GW (VSID 6001) with DF', async () => {
    const before = await t.metrics('host2');
    const p = await iputilsPing(lab.ns('contoso3'), vm('mtgw').ip, { size: 1472, pmtudisc: 'do', count: 2 });
    expect(p.received).toBe(0);
    expect(p.output).toMatch(/Frag needed and DF set \(mtu = 1458\)/);
    const after = await t.metrics('host2');
    expect(mtuDrops(before, after)).toBeGreaterThanOrEqual(1);
  });

  it('the largest packet that fits (1458 bytes, DF) crosses whole in a 1500-byte outer packet; one byte more does not', async () => {
    const src = lab.ns('contoso2');
    const { rows, file } = await t.wire(async () => {
      expect((await iputilsPing(src, vm('contoso3').ip, { size: 1430, pmtudisc: 'do', count: 3 })).received).toBe(3);
      expect((await iputilsPing(src, vmV6('contoso3').ip, { size: 1410, pmtudisc: 'do', count: 3 })).received).toBe(3);
    });
    expect(rows.length).toBe(12);
    for (const r of rows) expect(r.len, JSON.stringify(r)).toBe(1514); // 14 Ethernet + 20 IPv4 + 8 GRE + 14 + 1458
    expect(await tsharkCount(file, 'ip.flags.mf == 1 || ip.frag_offset > 0')).toBe(0);
    const v4 = await iputilsPing(src, vm('contoso3').ip, { size: 1431, pmtudisc: 'do', count: 2 });
    expect([v4.received, new Set(v4.mtus)]).toEqual([0, new Set([1458])]);
    const v6 = await iputilsPing(src, vmV6('contoso3').ip, { size: 1411, pmtudisc: 'do', count: 2 });
    expect([v6.received, new Set(v6.mtus)]).toEqual([0, new Set([1458])]);
  });

  it('IPv4 without DF is dropped and counted, with no ICMP error (NVGRE is never fragmented)', async () => {
    const before = await t.metrics('host1');
    const { rows } = await t.wire(async () => {
      const p = await iputilsPing(lab.ns('fabrikam1'), vm('fabrikam3').ip, { size: 1472, pmtudisc: 'dont', count: 3 });
      expect([p.received, p.errors, p.mtus]).toEqual([0, 0, []]);
    });
    expect(rows).toEqual([]);
    expect(await cachedPathMtu(lab.ns('fabrikam1'), vm('fabrikam3').ip)).toBeNull();
    const after = await t.metrics('host1');
    expect(mtuDrops(before, after)).toBe(3);
    expect(icmpErrors(before, after)).toBe(0);
  });

  it('TCP over IPv4 adapts to 1458 and moves 100 MB, the same bytes at both ends', async () => {
    await bigTransfer(t, 'contoso2', 'host1', 'contoso3', vm('contoso3').ip, 1458);
  }, 180_000);

  it('TCP over IPv6, routed across VSIDs and hosts (Contoso3 to MT-GW), adapts to 1458 and moves 100 MB', async () => {
    await bigTransfer(t, 'contoso3', 'host2', 'mtgw', vmV6('mtgw').ip, 1458);
  }, 180_000);
});

// ---------------------------------------------------------------------------

describe('IPv6 underlay (usable MTU 1438), VM adapters at 1500', () => {
  const t = useLab('b', { dualStack: true, underlay: 'ipv6', vmMtu: 1500 });
  const { lab } = t;

  it('a 1500-byte packet with DF gets the error with mtu 1438, both families', async () => {
    const before = await t.metrics('host1');
    const v4 = await iputilsPing(lab.ns('contoso1'), vm('contoso3').ip, { size: 1472, pmtudisc: 'do', count: 2 });
    expect(v4.received).toBe(0);
    expect(v4.output).toMatch(/From 10\.0\.1\.1 icmp_seq=1 Frag needed and DF set \(mtu = 1438\)/);
    const v6 = await iputilsPing(lab.ns('contoso1'), vmV6('contoso3').ip, { size: 1452, pmtudisc: 'do', count: 2 });
    expect(v6.received).toBe(0);
    expect(v6.output).toMatch(/From fd00:1::1 icmp_seq=1 Packet too big: mtu=1438/);
    expect(await cachedPathMtu(lab.ns('contoso1'), vm('contoso3').ip)).toBe(1438);
    expect(await cachedPathMtu(lab.ns('contoso1'), vmV6('contoso3').ip)).toBe(1438);
    const after = await t.metrics('host1');
    expect(mtuDrops(before, after)).toBeGreaterThanOrEqual(2);
    expect(icmpErrors(before, after)).toBe(mtuDrops(before, after));
  });

  it('the largest packet that fits (1438 bytes) crosses in a 1500-byte outer IPv6 packet, unfragmented', async () => {
    const src = lab.ns('contoso2');
    const { rows, file } = await t.wire(async () => {
      expect((await iputilsPing(src, vm('contoso3').ip, { size: 1410, pmtudisc: 'do', count: 3 })).received).toBe(3);
      expect((await iputilsPing(src, vmV6('contoso3').ip, { size: 1390, pmtudisc: 'do', count: 3 })).received).toBe(3);
    });
    expect(rows.length).toBe(12);
    for (const r of rows) expect([r.outer.family, r.len], JSON.stringify(r)).toEqual([6, 1514]); // 14 + 40 IPv6 + 8 GRE + 14 + 1438
    expect(await tsharkCount(file, 'ipv6.nxt == 44 || ipv6.fragment')).toBe(0);
    const v4 = await iputilsPing(src, vm('contoso3').ip, { size: 1411, pmtudisc: 'do', count: 2 });
    expect([v4.received, new Set(v4.mtus)]).toEqual([0, new Set([1438])]);
  });

  it('TCP (IPv4 CAs over IPv6 PAs) adapts to 1438 and moves 100 MB, the same bytes at both ends', async () => {
    await bigTransfer(t, 'contoso3', 'host2', 'contoso1', vm('contoso1').ip, 1438);
  }, 180_000);
});
