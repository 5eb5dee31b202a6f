// IPv6 end to end on the reference topology (lab/topology.ts), two variants:
//
// 1. dual stack over the IPv4 underlay: every VM also has an IPv6 CA
//    (VSID 6000 fd00:1::/64, VSID 6001 fd00:2::/64 with MT-GW fd00:2::2,
//    Fabrikam reusing fd00:1::/64 in VSID 7000), IPv6 customer routes and
//    lookup records next to the IPv4 ones: IPv6 CAs over IPv4 PAs;
// 2. the IPv6 underlay: PAs fd00:192:168::x/64, IPv4 and IPv6 CAs both
//    carried in outer IPv6 (next header 47).
//
// Each check captures the underlay bridge for its own window and looks at
// what crossed it (tshark), what the VMs got, and the daemons' counters.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, listLinks, metricDelta, ping, run, scrapeMetrics, type Scrape } from '../lab/netns.js';
import { captureDuring, readGre, tsharkCount, writePcap, type GreFrame } from '../lab/pcap.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_ICMPV6, ethernet, icmpv6, ipv6, neighborSolicitation, nvgre, nvgre6 } from '../lab/packets.js';
import {
  HOSTS,
  PROVIDER_ADDRESSES,
  PROVIDER_ADDRESSES_V6,
  SERVER,
  SERVER_V6,
  UNDERLAY_BRIDGE,
  UNDERLAY_NS,
  VMS,
  hostPaAddrs,
  paOf,
  setUpLab,
  vm,
  vmV6,
  type HostName,
  type LabVariant,
} from '../lab/topology.js';
import { repoRoot } from '../lab/netns.js';
import { scratchDir } from './helpers/scratch.js';

const ND_IN_GRE = 'gre && icmpv6.type >= 133 && icmpv6.type <= 137';

/** One lab of a variant, set up in beforeAll and torn down in afterAll of the enclosing describe. */
function useLab(tag: string, variant: LabVariant) {
  const lab = new Lab(`nv6${tag}${process.pid % 1000}-`);
  const out = scratchDir(`ipv6-${tag}`);
  const windows: string[] = [];
  beforeAll(async () => {
    await setUpLab(lab, { variant, outDir: out });
  }, 120_000);
  afterAll(async () => {
    const report = await lab.teardown();
    expect(report.errors).toEqual([]);
  });
  return {
    lab,
    /** Capture the underlay while `traffic` runs; every GRE packet seen, and the file. */
    async wire(traffic: () => Promise<void>): Promise<{ rows: GreFrame[]; file: string }> {
      const file = join(out, `window-${windows.length}.pcap`);
      windows.push(file);
      await captureDuring(lab, UNDERLAY_NS, UNDERLAY_BRIDGE, file, traffic);
      return { rows: await readGre(file), file };
    },
    metrics: (host: HostName): Promise<Scrape> => scrapeMetrics(lab.ns(host)),
    windows,
    out,
  };
}

/** The VM whose MAC is `mac` (the inner destination of a GRE packet). */
const vmByMac = (mac: string | undefined) => VMS.find((v) => v.mac === mac?.toLowerCase());

/** Every GRE packet is NVGRE toward the VM its inner destination MAC names: that VM's VSID in the key, its host's PA as outer destination. */
function expectKeysMatchDestinations(rows: GreFrame[], variant: LabVariant): void {
  const pas = new Set(HOSTS.map((h) => paOf(h, variant)));
  for (const r of rows) {
    const what = JSON.stringify(r);
    expect(r.greProto, what).toBe(0x6558);
    expect(r.greFlags, what).toBe(0x2000);
    expect(r.outer.family, what).toBe(variant.underlay === 'ipv6' ? 6 : 4);
    expect(pas.has(r.outer.src) && pas.has(r.outer.dst), what).toBe(true);
    const target = vmByMac(r.inner.dstMac);
    expect(target, what).toBeDefined();
    expect(r.vsid, what).toBe(target!.vsid);
    expect(r.outer.dst, what).toBe(paOf(target!.host, variant));
  }
}

/** `ip -6 neigh` entry of `addr` on the VM's TAP: its MAC and whether it is flagged as a router. */
async function neighbour(lab: Lab, role: string, addr: string): Promise<{ mac: string | undefined; router: boolean }> {
  const r = await ipIn(lab.ns(role), ['-6', 'neigh', 'show', addr, 'dev', vm(role).tap], { check: true });
  return { mac: /lladdr (\S+)/.exec(r.stdout)?.[1], router: /\brouter\b/.test(r.stdout) };
}

const flushNeighbours = (lab: Lab, roles: string[]) => Promise.all(roles.map((r) => ipIn(lab.ns(r), ['neigh', 'flush', 'all'], { check: true })));

// ---------------------------------------------------------------------------

describe('the capture checks themselves (a synthetic pcap: they can fail)', () => {
  const synthetic = scratchDir('ipv6-synthetic');
  it('the ND-inside-GRE filter catches a solicitation in NVGRE over either family, not one on the underlay itself; readGre tells outer from inner', async () => {
    const c1 = vm('contoso1');
    const [a, b] = ['02:00:00:00:00:22', '02:00:00:00:00:33'];
    const ns = neighborSolicitation(c1.mac, vmV6('contoso1').ip, vmV6('contoso3').ip);
    const echo = ethernet(c1.mac, vm('contoso3').mac, ETHERTYPE_IPV6, ipv6(vmV6('contoso1').ip, vmV6('contoso3').ip, IPPROTO_ICMPV6, icmpv6(vmV6('contoso1').ip, vmV6('contoso3').ip, 128, 0, Buffer.from([0, 1, 0, 1]))));
    const [pa4a, pa4b, pa6a, pa6b] = [PROVIDER_ADDRESSES.host1.address, PROVIDER_ADDRESSES.host2.address, PROVIDER_ADDRESSES_V6.host1.address, PROVIDER_ADDRESSES_V6.host2.address];
    const file = join(synthetic, 'synthetic.pcap');
    writePcap(file, [
      ethernet(a, b, ETHERTYPE_IPV4, nvgre(pa4a, pa4b, 6000, 1, ns)),
      ethernet(a, b, ETHERTYPE_IPV6, nvgre6(pa6a, pa6b, 6000, 2, ns)),
      ethernet(a, b, ETHERTYPE_IPV6, nvgre6(pa6a, pa6b, 6001, 3, echo)),
      // The underlay's own ND (PA resolution): not NVGRE.
      neighborSolicitation(a, pa6a, pa6b),
    ]);
    expect(await tsharkCount(file, ND_IN_GRE)).toBe(2);
    expect(await tsharkCount(file, 'icmpv6.type == 135')).toBe(3);
    const rows = await readGre(file);
    expect(rows.map((r) => [r.outer.family, r.outer.src, r.outer.dst, r.vsid, r.flowId, r.inner.family, r.inner.src, r.inner.icmpv6Type])).toEqual([
      [4, pa4a, pa4b, 6000, 1, 6, vmV6('contoso1').ip, 135],
      [6, pa6a, pa6b, 6000, 2, 6, vmV6('contoso1').ip, 135],
      [6, pa6a, pa6b, 6001, 3, 6, vmV6('contoso1').ip, 128],
    ]);
    expect(rows.every((r) => r.greProto === 0x6558 && r.greFlags === 0x2000 && r.inner.srcMac === c1.mac)).toBe(true);
  });
});

// ---------------------------------------------------------------------------

describe('dual stack over the IPv4 underlay: IPv6 CAs in NVGRE over IPv4 PAs', () => {
  const variant: LabVariant = { dualStack: true };
  const t = useLab('a', variant);
  const { lab } = t;
  const HOST1 = PROVIDER_ADDRESSES.host1.address;
  const HOST2 = PROVIDER_ADDRESSES.host2.address;
  const GW = PROVIDER_ADDRESSES.gwhost.address;

  it('VM adapters default to the underlay MTU less 42 (1458)', async () => {
    for (const role of ['contoso1', 'contoso3', 'mtgw']) {
      const link = (await listLinks(lab.ns(role))).find((l) => l.ifname === vm(role).tap);
      expect(link?.mtu, role).toBe(1458);
    }
  });

  it('same VSID, same host: Neighbor Discovery between the VMs and the pings stay on the host', async () => {
    await flushNeighbours(lab, ['contoso1', 'contoso2']);
    const before = await t.metrics('host1');
    let p;
    const { rows } = await t.wire(async () => {
      p = await ping(lab.ns('contoso1'), vmV6('contoso2').ip, { count: 5 });
    });
    expect(p!.received).toBe(5);
    expect(rows).toEqual([]);
    // Contoso2 answered the solicitation itself: its own MAC, not a router.
    expect(await neighbour(lab, 'contoso1', vmV6('contoso2').ip)).toEqual({ mac: vm('contoso2').mac, router: false });
    const after = await t.metrics('host1');
    expect(metricDelta(before, after, 'nvgre_local_switched_packets_total')).toBeGreaterThanOrEqual(10);
    expect(metricDelta(before, after, 'nvgre_encap_packets_total')).toBe(0);
  });

  it('the gateway address (prefix + 1) answers Neighbor Solicitations and echo on every host; ND never crosses', async () => {
    const askers: Array<[string, HostName, string | undefined]> = [
      // VM, its host, the MAC the host answers with (its gateway record's; else its own locally administered one)
      ['contoso1', 'host1', '60:00:60:00:01:00'],
      ['contoso3', 'host2', '60:00:60:00:02:00'],
      ['fabrikam1', 'host1', undefined],
      ['mtgw', 'gwhost', undefined],
    ];
    await flushNeighbours(lab, askers.map(([r]) => r));
    const before = await Promise.all(HOSTS.map(t.metrics));
    const { rows, file } = await t.wire(async () => {
      for (const [role] of askers) {
        const p = await ping(lab.ns(role), vmV6(role).gateway, { count: 2 });
        expect(p.received, `${role} -> ${vmV6(role).gateway}`).toBe(2);
      }
    });
    expect(rows).toEqual([]);
    expect(await tsharkCount(file, 'icmpv6')).toBe(0);
    for (const [role, , mac] of askers) {
      const n = await neighbour(lab, role, vmV6(role).gateway);
      expect(n.router, `${role}: NA for the gateway has the router flag`).toBe(true);
      if (mac) expect(n.mac, role).toBe(mac);
      else expect(n.mac, role).toMatch(/^[0-9a-f]([26ae]):/); // locally administered, unicast
    }
    const after = await Promise.all(HOSTS.map(t.metrics));
    HOSTS.forEach((h, i) => {
      const asked = askers.filter(([, host]) => host === h).length;
      expect(metricDelta(before[i]!, after[i]!, 'nvgre_nd_replies_total'), h).toBeGreaterThanOrEqual(asked);
      expect(metricDelta(before[i]!, after[i]!, 'nvgre_icmp_echo_replies_total'), h).toBe(2 * asked);
    });
  });

  it('same VSID across hosts: NVGRE between the two IPv4 PAs, key 6000, inner IPv6; the host answers ND from the record', async () => {
    await flushNeighbours(lab, ['contoso1', 'contoso3']);
    const before = await Promise.all([t.metrics('host1'), t.metrics('host2')]);
    let p;
    const { rows } = await t.wire(async () => {
      p = await ping(lab.ns('contoso1'), vmV6('contoso3').ip, { count: 5 });
    });
    expect(p!.received).toBe(5);
    expect(rows.length).toBe(10);
    for (const r of rows) {
      expect([r.outer.src, r.outer.dst].sort()).toEqual([HOST1, HOST2]);
      expect(r.outer.family).toBe(4);
      expect(r.vsid).toBe(6000);
      expect(r.inner.family).toBe(6);
      expect([r.inner.src, r.inner.dst].sort()).toEqual([vmV6('contoso1').ip, vmV6('contoso3').ip].sort());
      expect([r.inner.icmpv6Type]).toEqual([r.outer.src === HOST1 ? 128 : 129]);
    }
    expectKeysMatchDestinations(rows, variant);
    // Each VM learnt the other's MAC from its own host, from the lookup record.
    expect(await neighbour(lab, 'contoso1', vmV6('contoso3').ip)).toEqual({ mac: vm('contoso3').mac, router: false });
    expect(await neighbour(lab, 'contoso3', vmV6('contoso1').ip)).toEqual({ mac: vm('contoso1').mac, router: false });
    const after = await Promise.all([t.metrics('host1'), t.metrics('host2')]);
    expect(metricDelta(before[0], after[0], 'nvgre_nd_replies_total')).toBeGreaterThanOrEqual(1);
    expect(metricDelta(before[1], after[1], 'nvgre_nd_replies_total')).toBeGreaterThanOrEqual(1);
    expect(metricDelta(before[0], after[0], 'nvgre_encap_packets_total', 'vsid="6000"')).toBe(5);
    expect(metricDelta(before[0], after[0], 'nvgre_decap_packets_total', 'vsid="6000"')).toBe(5);
    // 118-byte frames: 14 Ethernet + 40 IPv6 + 8 ICMPv6 + 56 data.
    expect(metricDelta(before[0], after[0], 'nvgre_encap_bytes_total', 'vsid="6000"')).toBe(5 * 118);
  });

  it('across VSIDs and hosts: routed to MT-GW in VSID 6001, replies routed back into VSID 6000', async () => {
    const before = await t.metrics('host1');
    let p;
    const { rows } = await t.wire(async () => {
      p = await ping(lab.ns('contoso1'), vmV6('mtgw').ip, { count: 3 });
    });
    expect(p!.received).toBe(3);
    const there = rows.filter((r) => r.outer.src === HOST1 && r.outer.dst === GW);
    const back = rows.filter((r) => r.outer.src === GW && r.outer.dst === HOST1);
    expect(there.length).toBe(3);
    expect(back.length).toBe(3);
    for (const r of there) expect([r.vsid, r.inner.dstMac, r.inner.dst]).toEqual([6001, vm('mtgw').mac, vmV6('mtgw').ip]);
    for (const r of back) expect([r.vsid, r.inner.dstMac, r.inner.dst]).toEqual([6000, vm('contoso1').mac, vmV6('contoso1').ip]);
    expectKeysMatchDestinations(rows, variant);
    const after = await t.metrics('host1');
    expect(metricDelta(before, after, 'nvgre_routed_packets_total')).toBeGreaterThanOrEqual(3);
    expect(metricDelta(before, after, 'nvgre_encap_packets_total', 'vsid="6001"')).toBe(3);
  });

  it('through MT-GW to the server: the ::/0 route via fd00:2::2', async () => {
    let p;
    const { rows } = await t.wire(async () => {
      p = await ping(lab.ns('contoso3'), SERVER_V6.ip, { count: 3 });
    });
    expect(p!.received).toBe(3);
    const there = rows.filter((r) => r.outer.src === HOST2 && r.outer.dst === GW);
    expect(there.length).toBe(3);
    for (const r of there) expect([r.vsid, r.inner.dstMac, r.inner.dst]).toEqual([6001, vm('mtgw').mac, SERVER_V6.ip]);
    expectKeysMatchDestinations(rows, variant);
  });

  it('IPv4 keeps working beside IPv6 (same adapters, same records)', async () => {
    expect((await ping(lab.ns('contoso1'), vm('contoso3').ip, { count: 2 })).received).toBe(2);
    expect((await ping(lab.ns('contoso3'), SERVER.ip, { count: 2 })).received).toBe(2);
    expect((await ping(lab.ns('contoso1'), vm('contoso1').gateway, { count: 2 })).received).toBe(2);
  });

  it('Fabrikam, with the same IPv6 addresses in VSID 7000, exchanges no packet with Contoso', async () => {
    const contoso = ['contoso1', 'contoso2', 'contoso3', 'mtgw'];
    const watched = [...contoso, 'fabrikam3'];
    const before = await t.metrics('host1');
    const caps = await Promise.all(watched.map((r) => lab.capture(r, vm(r).tap, join(t.out, `vm-${r}.pcap`), { filter: 'icmp6' })));
    let rows: GreFrame[];
    try {
      ({ rows } = await t.wire(async () => {
        expect((await ping(lab.ns('fabrikam1'), vmV6('fabrikam3').ip, { count: 4 })).received).toBe(4);
        expect((await ping(lab.ns('fabrikam1'), vmV6('fabrikam2').ip, { count: 4 })).received).toBe(4);
        expect((await ping(lab.ns('fabrikam1'), vmV6('mtgw').ip, { count: 2 })).received).toBe(0);
        expect((await ping(lab.ns('fabrikam1'), SERVER_V6.ip, { count: 2 })).received).toBe(0);
      }));
    } finally {
      for (const c of caps) await lab.stop(c);
    }
    const echoes = await Promise.all(caps.map((c) => tsharkCount(c.file, 'icmpv6.type == 128')));
    expect(Object.fromEntries(watched.map((r, i) => [r, echoes[i]]))).toEqual({ contoso1: 0, contoso2: 0, contoso3: 0, mtgw: 0, fabrikam3: 4 });
    const fabrikamMacs = new Set(['fabrikam1', 'fabrikam2', 'fabrikam3'].map((r) => vm(r).mac));
    expect(rows.length).toBe(8);
    for (const r of rows) {
      expect(r.vsid, JSON.stringify(r)).toBe(7000);
      expect(fabrikamMacs.has(r.inner.srcMac!) && fabrikamMacs.has(r.inner.dstMac!), JSON.stringify(r)).toBe(true);
    }
    // Fabrikam has no route to fd00:2::/64 or beyond: dropped at its own host.
    const after = await t.metrics('host1');
    expect(metricDelta(before, after, 'nvgre_dropped_packets_total', 'direction="from_vm"', 'reason="no_route"')).toBe(4);
  });

  it('no Neighbor Discovery (ICMPv6 133-137) inside GRE, in any window, cold caches included', async () => {
    const roles = ['contoso1', 'contoso2', 'contoso3', 'mtgw', 'fabrikam1', 'fabrikam3'];
    await flushNeighbours(lab, roles);
    const before = await Promise.all(HOSTS.map(t.metrics));
    const { file } = await t.wire(async () => {
      for (const [src, dst] of [
        ['contoso1', vmV6('contoso3').ip],
        ['contoso3', vmV6('contoso2').ip],
        ['contoso2', vmV6('mtgw').ip],
        ['mtgw', vmV6('contoso3').ip],
        ['fabrikam3', vmV6('fabrikam1').ip],
        ['contoso3', SERVER_V6.ip],
      ] as const) {
        expect((await ping(lab.ns(src), dst, { count: 2 })).received, `${src} -> ${dst}`).toBe(2);
      }
    });
    // The filter is not vacuous: echo requests did cross inside GRE.
    expect(await tsharkCount(file, 'gre && icmpv6.type == 128')).toBeGreaterThanOrEqual(12);
    for (const w of t.windows) expect(await tsharkCount(w, ND_IN_GRE), w).toBe(0);
    expect(await tsharkCount(file, 'gre && arp')).toBe(0);
    const after = await Promise.all(HOSTS.map(t.metrics));
    HOSTS.forEach((h, i) => expect(metricDelta(before[i]!, after[i]!, 'nvgre_nd_replies_total'), h).toBeGreaterThanOrEqual(1));
  });
});

// ---------------------------------------------------------------------------

describe('the IPv6 underlay: IPv4 and IPv6 CAs in NVGRE over IPv6 PAs', () => {
  const variant: LabVariant = { dualStack: true, underlay: 'ipv6' };
  const t = useLab('b', variant);
  const { lab } = t;
  const HOST1 = PROVIDER_ADDRESSES_V6.host1.address;
  const HOST2 = PROVIDER_ADDRESSES_V6.host2.address;
  const GW = PROVIDER_ADDRESSES_V6.gwhost.address;
  let mixed: { rows: GreFrame[]; file: string };

  it('each daemon puts its IPv6 PA on eth1 (no IPv4 PA); VM adapters default to the underlay MTU less 62 (1438)', async () => {
    for (const h of HOSTS) {
      expect(await hostPaAddrs(lab, h, 6), h).toEqual([`${PROVIDER_ADDRESSES_V6[h].address}/64`]);
      expect(await hostPaAddrs(lab, h, 4), h).toEqual([]);
    }
    for (const role of ['contoso1', 'contoso3', 'mtgw']) {
      const link = (await listLinks(lab.ns(role))).find((l) => l.ifname === vm(role).tap);
      expect(link?.mtu, role).toBe(1438);
    }
  });

  it('IPv6 and IPv4 CAs: within the VSID, to the gateway, across VSIDs and hosts, and through MT-GW', async () => {
    await flushNeighbours(lab, ['contoso1', 'contoso3', 'mtgw']);
    const before = await Promise.all([t.metrics('host1'), t.metrics('host2')]);
    const pings: Array<[string, string, number]> = [
      ['contoso1', vmV6('contoso2').ip, 0],
      ['contoso1', vmV6('contoso1').gateway, 0],
      ['contoso1', vmV6('contoso3').ip, 6],
      ['contoso1', vmV6('mtgw').ip, 6],
      ['contoso3', SERVER_V6.ip, 6],
      ['contoso1', vm('contoso2').ip, 0],
      ['contoso1', vm('contoso1').gateway, 0],
      ['contoso1', vm('contoso3').ip, 6],
      ['contoso3', vm('mtgw').ip, 6],
      ['contoso3', SERVER.ip, 6],
    ];
    mixed = await t.wire(async () => {
      for (const [src, dst] of pings) expect((await ping(lab.ns(src), dst, { count: 3 })).received, `${src} -> ${dst}`).toBe(3);
    });
    const { rows, file } = mixed;
    expect(rows.length).toBe(pings.reduce((n, [, , g]) => n + g, 0));
    expectKeysMatchDestinations(rows, variant);
    // Both inner families ride outer IPv6; nothing is NVGRE over outer IPv4.
    expect(rows.filter((r) => r.inner.family === 6).length).toBe(18);
    expect(rows.filter((r) => r.inner.family === 4).length).toBe(18);
    expect(await tsharkCount(file, 'ip.proto == 47')).toBe(0);
    const pairs = new Set(rows.map((r) => `${r.outer.src} ${r.outer.dst} ${r.vsid}`));
    expect([...pairs].sort()).toEqual(
      [`${HOST1} ${HOST2} 6000`, `${HOST2} ${HOST1} 6000`, `${HOST1} ${GW} 6001`, `${GW} ${HOST1} 6000`, `${HOST2} ${GW} 6001`, `${GW} ${HOST2} 6000`].sort(),
    );
    const after = await Promise.all([t.metrics('host1'), t.metrics('host2')]);
    expect(metricDelta(before[0], after[0], 'nvgre_nd_replies_total')).toBeGreaterThanOrEqual(2);
    expect(metricDelta(before[0], after[0], 'nvgre_encap_packets_total')).toBe(9);
    // Host 2 sends Contoso3's replies (6) and its requests to MT-GW and the server (9).
    expect(metricDelta(before[1], after[1], 'nvgre_encap_packets_total')).toBe(15);
  });

  it('tshark decodes the capture as GRE 0x6558 (K bit, key = VSID << 8 | FlowID) inside IPv6, the inner Ethernet frame under it', async () => {
    const { file, rows } = mixed;
    const fields = ['ipv6.nxt', 'gre.flags_and_version', 'gre.proto', 'gre.key', 'eth.type', 'frame.protocols'];
    const r = await run(['tshark', '-n', '-r', file, '-Y', 'gre', '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=f', ...fields.flatMap((f) => ['-e', f])], {
      check: true,
      timeoutMs: 30_000,
    });
    const lines = r.stdout.split('\n').filter(Boolean);
    expect(lines.length).toBe(rows.length);
    const keys = new Map<number, number>();
    for (const line of lines) {
      const [nxt, flags, proto, key, outerType, protocols] = line.split('|');
      expect([Number(nxt), Number(flags), Number(proto), Number(outerType)], line).toEqual([47, 0x2000, 0x6558, 0x86dd]);
      expect(protocols, line).toMatch(/^eth:ethertype:ipv6:gre:eth:ethertype:(ipv6:icmpv6|ip:icmp)/);
      const vsid = (Number(key) >>> 0) >>> 8;
      keys.set(vsid, (keys.get(vsid) ?? 0) + 1);
    }
    expect([...keys.keys()].sort()).toEqual([6000, 6001]);
    // The project's dissector names the VSID in the key, over IPv6 too.
    const lua = join(repoRoot(), 'wireshark', 'nvgre.lua');
    for (const [vsid, n] of keys) {
      const d = await run(['tshark', '-n', '-X', `lua_script:${lua}`, '-r', file, '-Y', `nvgre.vsid == ${vsid} && ipv6.nxt == 47`, '-T', 'fields', '-e', 'nvgre.vsid'], {
        check: true,
        timeoutMs: 30_000,
      });
      const got = d.stdout.split('\n').filter(Boolean);
      expect(got.length, `nvgre.vsid == ${vsid}`).toBe(n);
    }
  });

  it('Fabrikam stays in VSID 7000 over the IPv6 underlay, both families', async () => {
    const { rows } = await t.wire(async () => {
      expect((await ping(lab.ns('fabrikam1'), vmV6('fabrikam3').ip, { count: 2 })).received).toBe(2);
      expect((await ping(lab.ns('fabrikam1'), vm('fabrikam3').ip, { count: 2 })).received).toBe(2);
      expect((await ping(lab.ns('fabrikam1'), vmV6('mtgw').ip, { count: 2 })).received).toBe(0);
    });
    expect(rows.length).toBe(8);
    for (const r of rows) expect([r.vsid, r.outer.family], JSON.stringify(r)).toEqual([7000, 6]);
    expectKeysMatchDestinations(rows, variant);
  });

  it('no Neighbor Discovery inside GRE (the underlay resolves PAs with its own ND, outside GRE)', async () => {
    for (const w of t.windows) expect(await tsharkCount(w, ND_IN_GRE), w).toBe(0);
    for (const w of t.windows) expect(await tsharkCount(w, 'gre && arp'), w).toBe(0);
  });
});
