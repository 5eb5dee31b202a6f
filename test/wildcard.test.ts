// Gateway wildcard lookup records (HNV GatewayWildcard): on Host 1 a record
// `customer_address: 0.0.0.0` (and one `::`) in VSID 6001 with MT-GW's MAC
// and the gateway host's PA catches every destination routed into VSID 6001
// that has no exact record, and sends it to MT-GW. Host 2 has no wildcard:
// the same destinations are dropped there (no_lookup_record), the control.
// Dual stack over the IPv4 underlay (lab/topology.ts).

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, metricDelta, ping, scrapeMetrics, type Scrape } from '../lab/netns.js';
import { captureDuring, readGre, tsharkCount, type GreFrame } from '../lab/pcap.js';
import { PROVIDER_ADDRESSES, SERVER, SERVER_V6, UNDERLAY_BRIDGE, UNDERLAY_NS, setUpLab, vm, vmV6, type Daemon, type HostName } from '../lab/topology.js';
import { apiRequest } from './helpers/api.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvw${process.pid % 1000}-`);
const out = scratchDir('wildcard');
let daemons: Daemon[] = [];
let windows = 0;

const HOST1 = PROVIDER_ADDRESSES.host1.address;
const HOST2 = PROVIDER_ADDRESSES.host2.address;
const GW = PROVIDER_ADDRESSES.gwhost.address;
const MTGW = vm('mtgw');
/** Addresses in VSID 6001's subnets that no lookup record names; MT-GW answers them. */
const UNKNOWN_V4 = '10.0.2.77';
const UNKNOWN_V6 = 'fd00:2::77';

const wildcard = (ca: string) => ({ customer_address: ca, vsid: 6001, mac: MTGW.mac, provider_address: GW, rule: 'encap', type: 'gateway_wildcard' });

beforeAll(async () => {
  ({ daemons } = await setUpLab(lab, {
    variant: { dualStack: true },
    outDir: out,
    edit: (host, cfg) => {
      if (host === 'host1') (cfg['lookup_records'] as object[]).push(wildcard('0.0.0.0'), wildcard('::'));
    },
  }));
  await ipIn(lab.ns('mtgw'), ['addr', 'add', `${UNKNOWN_V4}/32`, 'dev', MTGW.tap], { check: true });
  await ipIn(lab.ns('mtgw'), ['-6', 'addr', 'add', `${UNKNOWN_V6}/128`, 'dev', MTGW.tap, 'nodad'], { check: true });
}, 120_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

const metrics = (host: HostName): Promise<Scrape> => scrapeMetrics(lab.ns(host));
const api = (host: HostName) => apiRequest(daemons.find((d) => d.host === host)!.socket!);

/** Capture the underlay and MT-GW's adapter while `traffic` runs: the GRE packets, and the echo requests MT-GW received, by destination. */
async function observe(traffic: () => Promise<void>): Promise<{ rows: GreFrame[]; atMtgw: (dst: string) => Promise<number> }> {
  const n = windows++;
  const mtgwFile = join(out, `mtgw-${n}.pcap`);
  const underlayFile = join(out, `underlay-${n}.pcap`);
  const cap = await lab.capture('mtgw', MTGW.tap, mtgwFile, { filter: 'icmp or icmp6' });
  try {
    await captureDuring(lab, UNDERLAY_NS, UNDERLAY_BRIDGE, underlayFile, traffic);
  } finally {
    await lab.stop(cap);
  }
  return {
    rows: await readGre(underlayFile),
    atMtgw: (dst) => tsharkCount(mtgwFile, dst.includes(':') ? `icmpv6.type == 128 && ipv6.dst == ${dst}` : `icmp.type == 8 && ip.dst == ${dst}`),
  };
}

/** GRE rows Host 1 -> gateway host (to MT-GW, VSID 6001) and back (to Contoso1, VSID 6000). */
function expectThroughMtgw(rows: GreFrame[], dst: string, n: number): void {
  const there = rows.filter((r) => r.outer.src === HOST1 && r.outer.dst === GW);
  const back = rows.filter((r) => r.outer.src === GW && r.outer.dst === HOST1);
  expect(there.length).toBe(n);
  expect(back.length).toBe(n);
  for (const r of there) expect([r.vsid, r.inner.dstMac, r.inner.dst], JSON.stringify(r)).toEqual([6001, MTGW.mac, dst]);
  for (const r of back) expect([r.vsid, r.inner.srcMac, r.inner.dstMac], JSON.stringify(r)).toEqual([6000, MTGW.mac, vm('contoso1').mac]);
}

describe('gateway wildcard records', () => {
  for (const dst of [UNKNOWN_V4, UNKNOWN_V6]) {
    it(`a destination routed into VSID 6001 without a record (${dst}) goes to MT-GW through the wildcard`, async () => {
      const before = await metrics('host1');
      let p;
      const seen = await observe(async () => {
        p = await ping(lab.ns('contoso1'), dst, { count: 3 });
      });
      expect(p!.received).toBe(3);
      expect(await seen.atMtgw(dst)).toBe(3);
      expectThroughMtgw(seen.rows, dst, 3);
      const after = await metrics('host1');
      expect(metricDelta(before, after, 'nvgre_encap_packets_total', 'vsid="6001"')).toBe(3);
      expect(metricDelta(before, after, 'nvgre_dropped_packets_total', 'reason="no_lookup_record"')).toBe(0);
    });
  }

  it('a host without a wildcard record drops the same destinations as no_lookup_record (Host 2, the control)', async () => {
    const before = await metrics('host2');
    const seen = await observe(async () => {
      for (const dst of [UNKNOWN_V4, UNKNOWN_V6]) expect((await ping(lab.ns('contoso3'), dst, { count: 2 })).received).toBe(0);
    });
    expect(await seen.atMtgw(UNKNOWN_V4)).toBe(0);
    expect(await seen.atMtgw(UNKNOWN_V6)).toBe(0);
    expect(seen.rows.filter((r) => r.outer.src === HOST2)).toEqual([]);
    const after = await metrics('host2');
    expect(metricDelta(before, after, 'nvgre_dropped_packets_total', 'direction="from_vm"', 'reason="no_lookup_record"')).toBe(4);
  });

  it("with MT-GW's own records removed, the default routes' next hop (0.0.0.0/0 and ::/0 via MT-GW) resolves through the wildcard", async () => {
    for (const ca of [MTGW.ip, vmV6('mtgw').ip]) {
      const del = await api('host1')('DELETE', `/v1/lookup-records/6001/${encodeURIComponent(ca)}`);
      expect(del.status, JSON.stringify(del.body)).toBe(200);
    }
    const hop = await api('host1')('GET', `/v1/next-hop?vsid=6000&destination=${SERVER.ip}`);
    expect(hop.body).toMatchObject({
      action: 'encap',
      provider_address: GW,
      encap_vsid: 6001,
      lookup_record: { type: 'gateway_wildcard', customer_address: '0.0.0.0', vsid: 6001 },
    });
    const hop6 = await api('host1')('GET', `/v1/next-hop?vsid=6000&destination=${encodeURIComponent(SERVER_V6.ip)}`);
    expect(hop6.body).toMatchObject({ action: 'encap', provider_address: GW, lookup_record: { type: 'gateway_wildcard', customer_address: '::' } });
    for (const dst of [SERVER.ip, SERVER_V6.ip, MTGW.ip, vmV6('mtgw').ip]) {
      const before = await metrics('host1');
      let p;
      const seen = await observe(async () => {
        p = await ping(lab.ns('contoso1'), dst, { count: 3 });
      });
      expect(p!.received, dst).toBe(3);
      expectThroughMtgw(seen.rows, dst, 3);
      const after = await metrics('host1');
      expect(metricDelta(before, after, 'nvgre_encap_packets_total', 'vsid="6001"'), dst).toBe(3);
    }
  });
});
