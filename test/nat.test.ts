// The HNV gateway (shared/spec/hnv-gateway.md) in network namespaces: the
// reference lab, with the gateway host running a NAT per routing domain
// instead of the MT-GW VM, and an uplink (gwhost:eth2) to an "internet"
// namespace that routes 131.107.10.0/24 and holds a server (203.0.113.80).
// Contoso and Fabrikam have VMs with the same CA (10.0.1.103 on host 2,
// 10.0.1.101 on host 1); both tenants route 0.0.0.0/0 via the NAT's inside
// address 10.0.2.2, whose lookup record on the tenant hosts names the NAT's
// MAC and the gateway host's PA.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, metricDelta, metricSum, nsExec, ping, run, scrapeMetrics, tcpReceiver, tcpSend, type Scrape } from '../lab/netns.js';
import { captureDuring } from '../lab/pcap.js';
import { buildTopology, configureVms, PROVIDER_ADDRESSES, ROUTING_DOMAINS, startDaemons, VMS, vm, writeVariantConfigs, type Daemon, type HostName } from '../lab/topology.js';
import { packageRoot } from '../src/native.js';
import { apiRequest } from './helpers/api.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvnt-${process.pid % 1000}-`);
const out = scratchDir('nat');
let daemons: Daemon[] = [];

const GW = PROVIDER_ADDRESSES.gwhost.address;
const INET = 'inet';
const EXTERNAL = '131.107.10.12';
const ROUTER = '131.107.10.1';
const SERVER = '203.0.113.80';
const CONTOSO_NAT_MAC = '60:01:60:01:03:01';
const FABRIKAM_NAT_MAC = '70:01:70:01:03:01';
const CLI = join(packageRoot(), 'dist/src/cli/main.js');

/** Fabrikam gets what Contoso has: a NAT subnet (VSID 7001) and a default route to its NAT. */
function gatewayEdit(host: HostName, cfg: Record<string, unknown>): void {
  const routes = cfg['customer_routes'] as object[];
  const records = cfg['lookup_records'] as object[];
  routes.push(
    { routing_domain: ROUTING_DOMAINS.fabrikam, vsid: 7001, destination_prefix: '10.0.2.0/24', next_hop: '0.0.0.0', metric: 0 },
    { routing_domain: ROUTING_DOMAINS.fabrikam, vsid: 7001, destination_prefix: '0.0.0.0/0', next_hop: '10.0.2.2', metric: 0 },
  );
  records.push({ customer_address: '10.0.2.2', vsid: 7001, mac: FABRIKAM_NAT_MAC, provider_address: GW, rule: 'encap', type: 'static' });
  if (host !== 'gwhost') return;
  // The NAT takes MT-GW's place (its address and MAC): no VM there any more.
  cfg['vm_adapters'] = [];
  cfg['uplink'] = { interface: 'eth2', addresses: [`${EXTERNAL}/24`], gateway: ROUTER };
  const nat = (name: string, rd: string, vsid: number, mac: string) => ({ name, routing_domain: rd, vsid, internal_address: '10.0.2.2', mac, external_address: EXTERNAL });
  cfg['nat'] = [
    {
      ...nat('Contoso', ROUTING_DOMAINS.contoso, 6001, CONTOSO_NAT_MAC),
      // Contoso3 serves on :443 (its port 8443) to the outside.
      static_mappings: [{ protocol: 'tcp', external_port: 443, internal_address: vm('contoso3').ip, internal_port: 8443 }],
    },
    nat('Fabrikam', ROUTING_DOMAINS.fabrikam, 7001, FABRIKAM_NAT_MAC),
  ];
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab);
  // The internet: a router on the uplink's subnet, with a server behind it.
  await lab.addNamespace(INET);
  await lab.veth('gwhost', 'eth2', INET, 'eth0');
  await lab.addr(INET, 'eth0', `${ROUTER}/24`);
  await lab.addr(INET, 'lo', `${SERVER}/32`);
  await lab.up(INET, 'eth0');
  await lab.up(INET, 'lo');
  // The server's own address is the source of what it sends to the uplink's subnet.
  await nsExec(lab.ns(INET), ['ip', 'route', 'replace', '131.107.10.0/24', 'dev', 'eth0', 'src', SERVER], { check: true });
  // (The internet's side keeps veth's offloads: large segments and checksums left to finish reach the uplink.)
  const runDir = join(out, 'run');
  const configs = writeVariantConfigs(lab.prefix, join(out, 'configs'), {}, { runDir, edit: gatewayEdit });
  daemons = await startDaemons(lab, { logDir: out, configs, runDir });
  await configureVms(lab, { vms: VMS.filter((v) => v.role !== 'mtgw').map((v) => v.role) });
}, 180_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

const metrics = (): Promise<Scrape> => scrapeMetrics(lab.ns('gwhost'));
const gwSocket = () => daemons.find((d) => d.host === 'gwhost')!.socket!;

/** One TCP connection from a VM to the server; returns the address:port the server saw it from. */
async function connectOut(role: string, port: number): Promise<string> {
  const recv = await tcpReceiver(lab, INET, SERVER, { port, timeoutMs: 30_000 });
  try {
    const sent = await tcpSend(lab.ns(role), SERVER, 1_000_000, { port, timeoutMs: 30_000 });
    const got = await recv.result();
    expect(got.sha256).toBe(sent.sha256);
    return got.peer;
  } finally {
    await recv.stop();
  }
}

describe('the HNV gateway', () => {
  it('takes two tenants with the same address to the server, which sees only the external address', async () => {
    const before = await metrics();
    const peers = [await connectOut('contoso3', 8001), await connectOut('fabrikam3', 8002), await connectOut('contoso1', 8003), await connectOut('fabrikam1', 8004)];
    const hosts = peers.map((p) => p.replace(/^::ffff:/, '').replace(/:\d+$/, ''));
    expect(hosts).toEqual([EXTERNAL, EXTERNAL, EXTERNAL, EXTERNAL]);
    const after = await metrics();
    expect(metricDelta(before, after, 'nvgre_nat_mappings_created_total')).toBe(4);
    expect(metricDelta(before, after, 'nvgre_nat_translated_packets_total', 'direction="outbound"')).toBeGreaterThan(10);
    expect(metricDelta(before, after, 'nvgre_nat_translated_packets_total', 'direction="inbound"')).toBeGreaterThan(10);
    const mappings = (nat: string, protocol: string) => metricSum(after, 'nvgre_nat_mappings', `nat="${nat}"`, `protocol="${protocol}"`);
    expect([mappings('Contoso', 'tcp'), mappings('Fabrikam', 'tcp')]).toEqual([2, 2]);
    const status = await apiRequest(gwSocket())('GET', '/v1/status');
    expect((status.body as { uplink?: unknown }).uplink).toMatchObject({ interface: 'eth2', nats: 2, up: true, error: null });
    // ping crosses too (ICMP echo by its identifier)
    expect((await ping(lab.ns('contoso3'), SERVER, { count: 2 })).received).toBe(2);
    expect((await ping(lab.ns('fabrikam3'), SERVER, { count: 2 })).received).toBe(2);
  });

  it('lists the mappings with nvgrectl nat show and GET /v1/nat', async () => {
    const r = await run([process.execPath, CLI, '-s', gwSocket(), 'nat', 'show', 'name', 'Fabrikam', 'protocol', 'tcp'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(2);
    for (const l of lines) expect(l).toMatch(new RegExp(`^nat Fabrikam tcp vsid 7000 src 10\\.0\\.1\\.10[13]:\\d+ external ${EXTERNAL.replace(/\./g, '\\.')}:\\d+ expires \\d+s (established|transitory)$`));
    const res = await apiRequest(gwSocket())('GET', '/v1/nat?protocol=icmp');
    expect(res.status).toBe(200);
    const icmp = (res.body as { mappings: Array<{ nat: string; vsid: number }> }).mappings;
    expect(icmp.map((m) => `${m.nat}/${m.vsid}`).sort()).toEqual(['Contoso/6000', 'Fabrikam/7000']);
    const bad = await apiRequest(gwSocket())('GET', '/v1/nat?name=Nobody');
    expect(bad.status).toBe(404);
  });

  it('lets the server connect in through a static mapping to a tenant VM, which sees the server', async () => {
    const recv = await tcpReceiver(lab, 'contoso3', vm('contoso3').ip, { port: 8443, timeoutMs: 30_000 });
    try {
      // Enough for large segments (the server's TSO) and a path MTU lowered by the NAT's ICMP error.
      const sent = await tcpSend(lab.ns(INET), EXTERNAL, 3_000_000, { port: 443, timeoutMs: 30_000 });
      const got = await recv.result();
      expect([got.bytes, got.sha256]).toEqual([3_000_000, sent.sha256]);
      expect(got.peer.replace(/^::ffff:/, '').replace(/:\d+$/, '')).toBe(SERVER);
    } finally {
      await recv.stop();
    }
  });

  it('refuses to start with several packet workers (the hand-off of NAT flows between workers is not built)', async () => {
    const gw = daemons.find((d) => d.host === 'gwhost')!;
    const r = await nsExec(lab.ns('gwhost'), [process.execPath, join(packageRoot(), 'dist/src/daemon/main.js'), '--config', gw.configFile, '--workers', '2'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stdout + r.stderr).toMatch(/uplink: .*--workers 1/);
  });

  it('drops unsolicited inbound, counts it, and never delivers it to a VM', async () => {
    const before = await metrics();
    const file = join(out, 'unsolicited.pcap');
    let failed: { code: number | null } | undefined;
    await captureDuring(lab, 'contoso3', 'contoso3', file, async () => {
      // A port no mapping holds: the connection attempt goes unanswered.
      failed = await tcpSend(lab.ns(INET), EXTERNAL, 100, { port: 4444, timeoutMs: 3000 }).then(
        () => ({ code: 0 }),
        () => ({ code: 1 }),
      );
    });
    expect(failed!.code).toBe(1);
    const after = await metrics();
    expect(metricDelta(before, after, 'nvgre_dropped_packets_total', 'direction="from_uplink"', 'reason="nat_no_mapping"')).toBeGreaterThan(0);
    const seen = await run(['tshark', '-r', file, '-Y', 'tcp.port == 4444', '-T', 'fields', '-e', 'frame.number'], { timeoutMs: 30_000 });
    expect(seen.stdout.trim()).toBe('');
  });
});
