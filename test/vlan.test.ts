// Provider addresses on a VLAN (provider_addresses[].vlan_id): the PA lives
// on a VLAN interface nvgred makes (a TAP it serves, tagging on the parent).
// 1. One host, frames crafted on the other end of its underlay link: NVGRE
//    for the PA is taken tagged with its VLAN and dropped (wrong_vlan)
//    untagged; what it sends and its ARP answers leave tagged; a change of
//    VLAN at run time moves it.
// 2. The reference lab with Host 2's PA on VLAN 100 (the underlay switch's
//    port to it a trunk port): every VM reaches every other, Host 2's frames
//    carry the tag and the others' do not, and a TCP transfer (large
//    segments through the GSO port) arrives whole.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, metricDelta, ping, run, scrapeMetrics, sendFrames, sleep, tcpTransfer } from '../lab/netns.js';
import { arpRequest, ethernet, icmpEcho, ipv4, nvgre, tagged } from '../lab/packets.js';
import { UNDERLAY_NS, paOf, setUpLab, underlayPort, vm } from '../lab/topology.js';
import { keyPath } from './helpers/api.js';
import { TestDaemon, baseConfig, createHostEnv, type HostEnv } from './helpers/daemon.js';
import { scratchDir } from './helpers/scratch.js';

/** Fields of the frames in a capture, one array per frame (the first occurrence: the outer header's). */
async function frames(file: string, filter: string, fields: string[]): Promise<string[][]> {
  const r = await run(['tshark', '-n', '-r', file, '-Y', filter, '-T', 'fields', '-E', 'occurrence=f', ...fields.flatMap((f) => ['-e', f])], { check: true, timeoutMs: 60_000 });
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t'));
}

describe('one host: the VLAN on the wire', () => {
  const lab = new Lab(`nvv${process.pid % 1000}-`);
  let env: HostEnv;
  let d: TestDaemon;
  let eth1Mac: string;
  const PEER_MAC = '02:00:00:00:33:33';

  beforeAll(async () => {
    env = await createHostEnv(lab, 'nvgred-vlan-');
    d = new TestDaemon(env, env.writeConfig(baseConfig(env).replace('interface: eth1 }', 'interface: eth1, vlan_id: 100 }')));
    await d.start();
    await ipIn(env.vm, ['addr', 'add', '10.0.1.101/24', 'dev', 'vm1'], { check: true });
    await ipIn(env.vm, ['link', 'set', 'vm1', 'up'], { check: true });
    eth1Mac = (JSON.parse((await ipIn(env.host, ['-j', 'link', 'show', 'eth1'], { check: true })).stdout) as Array<{ address: string }>)[0]!.address;
  }, 60_000);

  afterAll(async () => {
    const report = await lab.teardown();
    env?.cleanup();
    expect(report.errors).toEqual([]);
  });

  /** An NVGRE ping from Contoso3 (Host 2, 192.168.0.33) to vm1 (Contoso1) as it arrives on eth1: tagged with `vid`, or untagged. */
  function pingFrame(vid: number | undefined, seq: number): Buffer {
    const inner = ethernet('60:00:60:00:02:03', '60:00:60:00:01:01', 0x0800, ipv4('10.0.1.103', '10.0.1.101', 1, icmpEcho(7, seq, Buffer.from('vlan'))));
    const packet = nvgre('192.168.0.33', '192.168.0.22', 6000, 0, inner);
    const frame = ethernet(PEER_MAC, eth1Mac, 0x0800, packet);
    return vid === undefined ? frame : tagged(frame, vid);
  }

  const decapsulated = (before: Map<string, number>, after: Map<string, number>) => metricDelta(before, after, 'nvgre_decap_packets_total');
  const wrongVlan = (before: Map<string, number>, after: Map<string, number>) =>
    metricDelta(before, after, 'nvgre_dropped_packets_total', 'direction="from_underlay"', 'reason="wrong_vlan"');

  it('takes NVGRE tagged with its VLAN, answers tagged, and drops it untagged (counted)', async () => {
    // The reply is sent to 192.168.0.33: nobody answers ARP on this wire, so tell the VLAN interface its MAC.
    await ipIn(env.host, ['neigh', 'replace', '192.168.0.33', 'lladdr', PEER_MAC, 'dev', 'eth1.100', 'nud', 'permanent'], { check: true });
    const file = join(env.dir, 'eth1peer.pcap');
    const cap = await lab.capture(env.host, 'eth1peer', file);
    const before = await scrapeMetrics(env.host);
    await sendFrames(env.host, 'eth1peer', [pingFrame(100, 1)]);
    await sendFrames(env.host, 'eth1peer', [pingFrame(undefined, 2)]);
    await sleep(500);
    const after = await scrapeMetrics(env.host);
    await lab.stop(cap, { signal: 'SIGINT', timeoutMs: 10_000 });
    expect(decapsulated(before, after), 'the tagged ping reached the VM').toBe(1);
    expect(wrongVlan(before, after), 'the untagged one was dropped as wrong_vlan').toBe(1);
    // The VM's echo reply left encapsulated, tagged with the VLAN, VSID 6000 in the key.
    const replies = await frames(file, 'gre && eth.src == ' + eth1Mac, ['vlan.id', 'ip.src', 'ip.dst', 'gre.key']);
    expect(replies.map((r) => r.slice(0, 3))).toEqual([['100', '192.168.0.22', '192.168.0.33']]);
    expect(Number(replies[0]![3]) >>> 8, 'the VSID in the key').toBe(6000);
  });

  it('answers ARP for the PA on its VLAN, tagged', async () => {
    const request = tagged(arpRequest(PEER_MAC, '192.168.0.33', '192.168.0.22'), 100);
    const file = join(env.dir, 'arp.pcap');
    const cap = await lab.capture(env.host, 'eth1peer', file);
    await sendFrames(env.host, 'eth1peer', [request]);
    await sleep(500);
    await lab.stop(cap, { signal: 'SIGINT', timeoutMs: 10_000 });
    const answers = await frames(file, 'arp.opcode == 2', ['vlan.id', 'arp.src.proto_ipv4', 'arp.src.hw_mac']);
    expect(answers).toEqual([['100', '192.168.0.22', eth1Mac]]);
  });

  it('a change of VLAN at run time moves the PA: the new VLAN is taken, the old one no more', async () => {
    const r = await d.api.patch(keyPath('provider-addresses', '192.168.0.22'), { vlan_id: 200 });
    expect(r.status, r.raw.toString()).toBe(200);
    const before = await scrapeMetrics(env.host);
    await sendFrames(env.host, 'eth1peer', [pingFrame(100, 3), pingFrame(200, 4)]);
    await sleep(500);
    const after = await scrapeMetrics(env.host);
    expect(decapsulated(before, after), 'only the VLAN 200 one').toBe(1);
    expect((await ipIn(env.host, ['link', 'show', 'eth1.100'])).code, 'the old VLAN interface is gone').not.toBe(0);
  });
});

describe('the reference lab with Host 2 on VLAN 100', () => {
  const lab = new Lab(`nvvl${process.pid % 1000}-`);
  const out = scratchDir('vlan-lab');

  beforeAll(async () => {
    await setUpLab(lab, { outDir: out, variant: { vlan: { host: 'host2', id: 100 } } });
  }, 180_000);

  afterAll(async () => {
    const report = await lab.teardown();
    expect(report.errors).toEqual([]);
  });

  it('every VM reaches the others; the tag is on Host 2\'s frames only; TCP arrives whole', async () => {
    const tagged = join(out, 'to-host2.pcap');
    const untagged = join(out, 'to-host1.pcap');
    const caps = [
      await lab.capture(lab.ns(UNDERLAY_NS), underlayPort('host2'), tagged, { filter: 'not arp', snaplen: 128 }),
      await lab.capture(lab.ns(UNDERLAY_NS), underlayPort('host1'), untagged, { filter: 'not arp', snaplen: 128 }),
    ];
    const pairs: Array<[string, string]> = [
      ['contoso1', 'contoso3'],
      ['contoso3', 'contoso1'],
      ['fabrikam1', 'fabrikam3'],
      ['contoso3', 'mtgw'],
    ];
    for (const [from, to] of pairs) expect((await ping(lab.ns(from), vm(to).ip, { count: 3 })).received, `${from} -> ${to}`).toBe(3);
    expect((await ping(lab.ns('contoso3'), '10.0.1.1', { count: 3 })).received, 'contoso3 -> its .1').toBe(3);
    const x = await tcpTransfer(lab, 'contoso1', 'contoso3', vm('contoso3').ip, 20_000_000, { timeoutMs: 120_000 });
    expect(x.received.sha256).toBe(x.sent.sha256);
    for (const c of caps) await lab.stop(c, { signal: 'SIGINT', timeoutMs: 10_000 });
    const host2 = await frames(tagged, 'gre', ['vlan.id', 'ip.src', 'ip.dst']);
    const host1 = await frames(untagged, 'gre', ['vlan.id', 'ip.src', 'ip.dst']);
    console.log(`VLAN lab: ${host2.length} NVGRE frames on Host 2's port, ${host1.length} on Host 1's; TCP ${x.mbitPerS.toFixed(0)} Mbit/s`);
    expect(host2.length).toBeGreaterThan(1000);
    expect(host2.every(([vid]) => vid === '100'), 'every NVGRE frame to or from Host 2 is tagged 100').toBe(true);
    expect(host2.some(([, src]) => src === paOf('host2')) && host2.some(([, , dst]) => dst === paOf('host2'))).toBe(true);
    expect(host1.length).toBeGreaterThan(1000);
    expect(host1.every(([vid]) => vid === ''), 'none on Host 1\'s').toBe(true);
  }, 240_000);
});
