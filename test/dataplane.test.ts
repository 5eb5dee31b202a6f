// The dataplane end to end on the reference topology (lab/topology.ts): three
// hosts running nvgred over an underlay bridge, VMs as namespaces. Each test
// captures the underlay for its own window and checks what crossed it, what
// the VMs received, and the daemons' counters.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Lab,
  inject,
  ipIn,
  linkStats,
  nsExec,
  ping,
  run,
  metricSum,
  scrapeMetrics,
  type Scrape,
} from '../lab/netns.js';
import { ETHERTYPE_IPV4, ethernet, gre, icmpEcho, ipv4, nvgre, IPPROTO_GRE, IPPROTO_ICMP } from '../lab/packets.js';
import { buildTopology, configureVms, startDaemons, UNDERLAY_BRIDGE, UNDERLAY_NS, vm, type Daemon } from '../lab/topology.js';
import { readFileSync } from 'node:fs';
import { apiRequest } from './helpers/api.js';
import { packageRoot } from '../src/native.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvt${process.pid % 10000}-`);
const out = scratchDir('dataplane');
let daemons: Daemon[] = [];
let captures = 0;

const HOST1 = '192.168.0.22';
const HOST2 = '192.168.0.33';
const GW = '192.168.0.11';
const ATTACKER = '192.168.0.99';

interface GreRow {
  src: string;
  dst: string;
  vsid: number;
  flowId: number;
  innerSrcMac: string;
  innerDstMac: string;
  innerIp: [string, string] | undefined;
  arp: boolean;
}

/** Capture the underlay while `traffic` runs; return every GRE packet seen. */
async function onTheWire(traffic: () => Promise<void>): Promise<GreRow[]> {
  const file = join(out, `window-${captures++}.pcap`);
  const cap = await lab.capture(UNDERLAY_NS, UNDERLAY_BRIDGE, file);
  await traffic();
  // dumpcap writes what the kernel hands it a little later: let the last replies land.
  await new Promise((r) => setTimeout(r, 500));
  await lab.stop(cap);
  const fields = ['ip.src', 'ip.dst', 'gre.key', 'eth.src', 'eth.dst', 'arp.opcode'];
  const r = await run(
    ['tshark', '-n', '-r', file, '-Y', 'gre', '-T', 'fields', '-E', 'separator=|', '-E', 'aggregator=;', ...fields.flatMap((f) => ['-e', f])],
    { check: true, timeoutMs: 30_000 },
  );
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [ipSrc, ipDst, key, ethSrc, ethDst, arp] = line.split('|').map((c) => c.split(';'));
      const k = Number(key![0]) >>> 0;
      return {
        src: ipSrc![0]!,
        dst: ipDst![0]!,
        vsid: k >>> 8,
        flowId: k & 0xff,
        // The first occurrence is the underlay's Ethernet header, the second the VM's.
        innerSrcMac: ethSrc![1]!,
        innerDstMac: ethDst![1]!,
        innerIp: ipSrc!.length > 1 ? [ipSrc![1]!, ipDst![1]!] : undefined,
        arp: arp![0] !== '',
      };
    });
}

async function metrics(host: string): Promise<Scrape> {
  return scrapeMetrics(lab.ns(host));
}

const drops = (m: Scrape, direction: string, reason: string) =>
  m.get(`nvgre_dropped_packets_total{direction="${direction}",reason="${reason}"}`) ?? NaN;
/** How much a metric (all its series, or those with `labels`) grew between two scrapes. */
const grew = (before: Scrape, after: Scrape, name: string, ...labels: string[]) =>
  metricSum(after, name, ...labels) - metricSum(before, name, ...labels);

async function rx(role: string): Promise<number> {
  return (await linkStats(lab.ns(role), vm(role).tap)).rxPackets;
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab);
  // An attacker on the underlay: any machine that can reach the PAs.
  await lab.addNamespace('attacker');
  await lab.veth(UNDERLAY_NS, 'to-attacker', 'attacker', 'eth0');
  await ipIn(lab.ns(UNDERLAY_NS), ['link', 'set', 'to-attacker', 'master', UNDERLAY_BRIDGE]);
  await lab.up(UNDERLAY_NS, 'to-attacker');
  await lab.addr('attacker', 'eth0', `${ATTACKER}/24`);
  await lab.up('attacker', 'eth0');
  daemons = await startDaemons(lab, { logDir: out });
  await configureVms(lab);
}, 120_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

describe('packet flows on the reference topology', () => {
  it('flow 1: same VSID, same host is switched locally, never encapsulated', async () => {
    const before = await metrics('host1');
    let p;
    const wire = await onTheWire(async () => {
      p = await ping(lab.ns('contoso1'), vm('contoso2').ip, { count: 5 });
    });
    expect(p!.received).toBe(5);
    expect(wire).toEqual([]);
    const after = await metrics('host1');
    expect(grew(before, after, 'nvgre_local_switched_packets_total')).toBeGreaterThanOrEqual(10);
    expect(grew(before, after, 'nvgre_encap_packets_total')).toBe(0);
  });

  it('flow 3: same VSID across hosts is NVGRE between the two PAs, key = VSID', async () => {
    const before = await metrics('host1');
    let p;
    const wire = await onTheWire(async () => {
      p = await ping(lab.ns('contoso1'), vm('contoso3').ip, { count: 5 });
    });
    expect(p!.received).toBe(5);
    const icmp = wire.filter((r) => r.innerIp);
    expect(icmp.length).toBeGreaterThanOrEqual(10);
    for (const r of icmp) {
      expect([r.src, r.dst].sort()).toEqual([HOST1, HOST2]);
      expect(r.vsid).toBe(6000);
      expect(r.innerIp!.sort()).toEqual([vm('contoso1').ip, vm('contoso3').ip].sort());
      expect([r.innerSrcMac, r.innerDstMac].sort()).toEqual([vm('contoso1').mac, vm('contoso3').mac].sort());
    }
    // One flow, one FlowID per direction.
    expect(new Set(icmp.filter((r) => r.src === HOST1).map((r) => r.flowId)).size).toBe(1);
    const after = await metrics('host1');
    // N pings: N encapsulated and N decapsulated, all in VSID 6000.
    expect(grew(before, after, 'nvgre_encap_packets_total')).toBe(5);
    expect(grew(before, after, 'nvgre_decap_packets_total')).toBe(5);
    expect(grew(before, after, 'nvgre_encap_packets_total', 'vsid="6000"')).toBe(5);
    expect(grew(before, after, 'nvgre_decap_packets_total', 'vsid="6000"')).toBe(5);
    // 98-byte echo frames (14 Ethernet + 20 IP + 8 ICMP + 56 data), counted without the outer header.
    expect(grew(before, after, 'nvgre_encap_bytes_total', 'vsid="6000"')).toBe(5 * 98);
  });

  it('flows 5 and 6: routed to MT-GW in VSID 6001, replies come back in VSID 6000', async () => {
    let p;
    const wire = await onTheWire(async () => {
      p = await ping(lab.ns('contoso3'), '10.1.3.100', { count: 3 });
    });
    expect(p!.received).toBe(3);
    const there = wire.filter((r) => r.src === HOST2 && r.dst === GW);
    const back = wire.filter((r) => r.src === GW && r.dst === HOST2);
    expect(there.length).toBe(3);
    expect(back.length).toBe(3);
    for (const r of there) {
      expect(r.vsid).toBe(6001);
      expect(r.innerDstMac).toBe(vm('mtgw').mac);
    }
    for (const r of back) {
      expect(r.vsid).toBe(6000);
      expect(r.innerDstMac).toBe(vm('contoso3').mac);
    }
  });

  it('flow 7 and ARP: the gateway and remote CAs are answered on the host, no ARP crosses the underlay', async () => {
    const roles = ['contoso1', 'contoso3', 'fabrikam1'];
    const before = await Promise.all(['host1', 'host2'].map(metrics));
    for (const r of roles) await ipIn(lab.ns(r), ['neigh', 'flush', 'all']);
    const wire = await onTheWire(async () => {
      for (const r of roles) {
        expect((await ping(lab.ns(r), '10.0.1.1', { count: 2 })).received).toBe(2);
        await ipIn(lab.ns(r), ['neigh', 'flush', 'all']);
        expect((await ping(lab.ns(r), r === 'contoso3' ? vm('contoso1').ip : vm(r === 'contoso1' ? 'contoso3' : 'fabrikam3').ip, { count: 2 })).received).toBe(2);
      }
    });
    expect(wire.filter((r) => r.arp)).toEqual([]);
    const after = await Promise.all(['host1', 'host2'].map(metrics));
    for (const i of [0, 1]) {
      expect(after[i]!.get('nvgre_arp_replies_total')! - before[i]!.get('nvgre_arp_replies_total')!).toBeGreaterThanOrEqual(2);
      expect(after[i]!.get('nvgre_icmp_echo_replies_total')! - before[i]!.get('nvgre_icmp_echo_replies_total')!).toBeGreaterThanOrEqual(2);
    }
  });

  it('tenants with overlapping CAs exchange zero packets', async () => {
    const contoso = ['contoso1', 'contoso2', 'contoso3', 'mtgw'];
    const before = await Promise.all(contoso.map(rx));
    const fabrikam3Before = await rx('fabrikam3');
    const wire = await onTheWire(async () => {
      expect((await ping(lab.ns('fabrikam1'), '10.0.1.103', { count: 4 })).received).toBe(4);
      expect((await ping(lab.ns('fabrikam1'), '10.0.1.102', { count: 4 })).received).toBe(4);
      expect((await ping(lab.ns('fabrikam1'), '10.0.2.2', { count: 2 })).received).toBe(0);
      expect((await ping(lab.ns('fabrikam1'), '10.1.3.100', { count: 2 })).received).toBe(0);
    });
    expect(await Promise.all(contoso.map(rx))).toEqual(before);
    expect((await rx('fabrikam3')) - fabrikam3Before).toBeGreaterThanOrEqual(4);
    const fabrikamMacs = new Set(['fabrikam1', 'fabrikam2', 'fabrikam3'].map((r) => vm(r).mac));
    expect(wire.length).toBeGreaterThanOrEqual(8);
    for (const r of wire) {
      expect(r.vsid, JSON.stringify(r)).toBe(7000);
      expect(fabrikamMacs.has(r.innerSrcMac) && fabrikamMacs.has(r.innerDstMac), JSON.stringify(r)).toBe(true);
    }
  });

  it('a VM sending with another MAC is dropped as spoofed_source', async () => {
    const ns = lab.ns('contoso1');
    const tap = vm('contoso1').tap;
    const before = await metrics('host1');
    const c2 = await rx('contoso2');
    await ipIn(ns, ['link', 'set', tap, 'address', '60:00:60:00:01:77']);
    // A static neighbour: the echo requests themselves go out, not just ARP.
    await ipIn(ns, ['neigh', 'replace', vm('contoso2').ip, 'lladdr', vm('contoso2').mac, 'dev', tap, 'nud', 'permanent']);
    try {
      expect((await ping(ns, vm('contoso2').ip, { count: 3 })).received).toBe(0);
    } finally {
      await ipIn(ns, ['link', 'set', tap, 'address', vm('contoso1').mac]);
      await ipIn(ns, ['neigh', 'del', vm('contoso2').ip, 'dev', tap]);
    }
    const after = await metrics('host1');
    expect(drops(after, 'from_vm', 'spoofed_source') - drops(before, 'from_vm', 'spoofed_source')).toBeGreaterThanOrEqual(3);
    expect(await rx('contoso2')).toBe(c2);
  });
});

describe('packets injected on the underlay', () => {
  const c1 = vm('contoso1');
  const c3 = vm('contoso3');
  const frame = (src: string, dst: string, ethertype = ETHERTYPE_IPV4) =>
    ethernet(src, dst, ethertype, ipv4(c3.ip, c1.ip, IPPROTO_ICMP, icmpEcho(0x4242, 1, Buffer.alloc(16))));
  const good = frame(c3.mac, c1.mac);
  /** Outer IPv4 + a GRE header built field by field + inner frame. */
  const raw = (src: string, greHeader: Buffer, inner: Buffer) => ipv4(src, HOST1, IPPROTO_GRE, Buffer.concat([greHeader, inner]));
  const key = 6000 << 8;

  const cases: Array<[string, Buffer, string]> = [
    ['the C bit', raw(HOST2, gre({ flags: 0xa000, key }), good), 'gre_flags'],
    ['the S bit', raw(HOST2, gre({ flags: 0x3000, key }), good), 'gre_flags'],
    ['no K bit', raw(HOST2, gre({ flags: 0x0000 }), good), 'gre_flags'],
    ['GRE version 1', raw(HOST2, gre({ key, version: 1 }), good), 'gre_version'],
    ['protocol 0x0800', raw(HOST2, gre({ key, protocol: 0x0800 }), good), 'gre_protocol'],
    ['a truncated GRE header', ipv4(HOST2, HOST1, IPPROTO_GRE, Buffer.from([0x20, 0x00, 0x65])), 'truncated'],
    ['a truncated inner frame', nvgre(HOST2, HOST1, 6000, 0, good.subarray(0, 9)), 'truncated'],
    ['an inner 802.1Q tag', nvgre(HOST2, HOST1, 6000, 0, frame(c3.mac, c1.mac, 0x8100)), 'vlan_tagged'],
    ['a VSID with no local port', nvgre(HOST2, HOST1, 6001, 0, good), 'unknown_vsid'],
    ['an unknown VSID', nvgre(HOST2, HOST1, 9999, 0, good), 'unknown_vsid'],
    ["Contoso3's MAC from the attacker's address", nvgre(ATTACKER, HOST1, 6000, 0, good), 'spoofed_source'],
    ["Contoso3's MAC into Fabrikam's VSID", nvgre(HOST2, HOST1, 7000, 0, frame(c3.mac, vm('fabrikam1').mac)), 'spoofed_source'],
    ['a destination that is no local VM of the VSID', nvgre(HOST2, HOST1, 6000, 0, frame(c3.mac, vm('fabrikam1').mac)), 'unknown_destination'],
  ];

  for (const [what, pkt, reason] of cases) {
    it(`drops and counts ${what} as ${reason}`, async () => {
      const before = await metrics('host1');
      const vmsBefore = await Promise.all(['contoso1', 'contoso2', 'fabrikam1'].map(rx));
      const sent = await inject(lab.ns('attacker'), HOST1, [pkt], { count: 3 });
      expect(sent).toMatchObject({ sent: 3, errors: 0 });
      // Counters are read in bulk per scrape; the packets are in flight briefly.
      let after = await metrics('host1');
      for (let i = 0; i < 100 && drops(after, 'from_underlay', reason) - drops(before, 'from_underlay', reason) < 3; i++) {
        await new Promise((r) => setTimeout(r, 50));
        after = await metrics('host1');
      }
      expect(drops(after, 'from_underlay', reason) - drops(before, 'from_underlay', reason)).toBe(3);
      expect(grew(before, after, 'nvgre_decap_packets_total')).toBe(0);
      expect(await Promise.all(['contoso1', 'contoso2', 'fabrikam1'].map(rx))).toEqual(vmsBefore);
    });
  }

  it('delivers a well-formed packet from the right PA (the control case)', async () => {
    // Contoso1 answers the echo requests; a static neighbour keeps its ARP out of the count.
    const ns = lab.ns('contoso1');
    await ipIn(ns, ['neigh', 'replace', c3.ip, 'lladdr', c3.mac, 'dev', c1.tap, 'nud', 'permanent']);
    try {
      const before = await metrics('host1');
      const rxBefore = await rx('contoso1');
      await inject(lab.ns('attacker'), HOST1, [nvgre(HOST2, HOST1, 6000, 0x5a, good)], { count: 3 });
      await new Promise((r) => setTimeout(r, 200));
      const after = await metrics('host1');
      expect(grew(before, after, 'nvgre_decap_packets_total', 'vsid="6000"')).toBe(3);
      expect((await rx('contoso1')) - rxBefore).toBe(3);
    } finally {
      await ipIn(ns, ['neigh', 'del', c3.ip, 'dev', c1.tap]);
    }
  });
});

describe('logs', () => {
  it('reports injected drops once per source and reason, rate-limited, never per packet', async () => {
    const log = daemons.find((d) => d.host === 'host1')!.logFile;
    const events = () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l.includes('"component":"packets"'))
        .map((l) => JSON.parse(l) as { reason: string; provider_address?: string; suppressed: number });
    const c3 = vm('contoso3');
    const spoof = nvgre('192.168.0.98', HOST1, 6000, 0, ethernet(c3.mac, vm('contoso1').mac, ETHERTYPE_IPV4, ipv4(c3.ip, vm('contoso1').ip, IPPROTO_ICMP, icmpEcho(1, 1))));
    const before = events().length;
    await inject(lab.ns('attacker'), HOST1, [spoof], { count: 200 });
    await new Promise((r) => setTimeout(r, 2500)); // the daemon drains events every second
    const fresh = events().slice(before).filter((e) => e.provider_address === '192.168.0.98');
    expect(fresh).toEqual([expect.objectContaining({ reason: 'spoofed_source', direction: 'from_underlay', suppressed: 0 })]);
  });

  it('changes the log level at run time', async () => {
    const socket = daemons.find((d) => d.host === 'host1')!.socket!;
    const put = (body: object) => apiRequest(socket)('PUT', '/v1/log', body);
    expect((await put({ level: 'debug', component: 'api' })).body).toMatchObject({ level: 'info', components: { api: 'debug' } });
    expect((await put({ level: 'warn' })).body).toMatchObject({ level: 'warn', components: { api: 'warn', packets: 'warn' } });
    expect((await put({ level: 'loud' })).status).toBe(400);
    expect((await put({ level: 'info' })).status).toBe(200);
    // The same through nvgrectl.
    const cli = (...args: string[]) => run([process.execPath, join(packageRoot(), 'dist/src/cli/main.js'), '-s', socket, 'log', ...args]);
    expect((await cli('level', 'debug', 'component', 'policy')).code).toBe(0);
    expect((await cli('show')).stdout).toContain('component policy level debug');
    const bad = await cli('level', 'loud');
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/^Error: .*"loud"/);
  });
});

describe('shutdown', () => {
  it('every daemon exits 0 and removes its PA and TAPs', async () => {
    for (const d of daemons) {
      const stopped = await lab.stop(d.proc, { timeoutMs: 10_000 });
      expect(stopped.code).toBe(0);
      const addrs = await nsExec(d.ns, ['ip', '-j', 'addr', 'show', 'dev', 'eth1'], { check: true });
      expect(addrs.stdout).not.toContain('192.168.0.');
    }
    for (const role of ['contoso1', 'contoso2', 'contoso3', 'mtgw', 'fabrikam1', 'fabrikam2', 'fabrikam3']) {
      const links = await ipIn(lab.ns(role), ['-j', 'link', 'show']);
      expect(links.stdout).not.toContain(`"${vm(role).tap}"`);
    }
  });
});
