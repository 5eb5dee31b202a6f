// Packet flow 4 end to end, and the control plane of learning, in network
// namespaces: two hosts over an underlay bridge, an attacker on the
// underlay, Contoso1 (static) on Host 1 and "l2vm" on Host 2, whose CA
// 10.0.1.105 has no lookup record anywhere: only L2Only records (its MAC,
// PA 192.168.0.33) on both hosts.
//
//   underlay br0 ── host1:eth1 192.168.0.22   contoso1 10.0.1.101 (TAP contoso1)
//                ── host2:eth1 192.168.0.33   l2vm     10.0.1.105 (TAP l2vm)
//                ── attacker:eth0 192.168.0.99
//
// Host 2 knows Contoso1 by its static record, as every host carries the
// records of every VM: l2vm's reply to it still crosses (it comes from a VM
// whose address is learned).
//
// The attacker injects with lab/netns.ts inject() (ARP frames from
// test/helpers/frames.ts).
//
// Checked: the ARP request crosses as unicast NVGRE to the L2Only PA only,
// the reply comes back, both hosts learn (API, nvgrectl, metrics, the event
// stream); spoofed replies teach nothing; static records win; a flood is
// held to learning.max_per_vsid; records expire without traffic and stay
// while the VM talks; a restart keeps them; nvgrectl deletes them.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, inject, ipIn, metricSum, ping, run, scrapeMetrics, sleep, waitFor, type LabProcess, type Scrape } from '../lab/netns.js';
import { nvgre } from '../lab/packets.js';
import { packageRoot } from '../src/native.js';
import { ApiClient, query } from './helpers/api.js';
import { arpReplyFrame } from './helpers/frames.js';
import { scratchDir } from './helpers/scratch.js';

const root = packageRoot();
const DAEMON = join(root, 'dist/src/daemon/main.js');
const CLI = join(root, 'dist/src/cli/main.js');
const lab = new Lab(`nvl${process.pid % 10000}-`);
const dir = scratchDir('learning');

const RD = '{12345678-1000-2000-3000-123456780001}';
const HOST1_PA = '192.168.0.22';
const HOST2_PA = '192.168.0.33';
/** An L2Only PA of another VSID: it must never see the probe. */
const OTHER_PA = '192.168.0.44';
const ATTACKER = '192.168.0.99';
const C1 = { ip: '10.0.1.101', mac: '60:00:60:00:01:01' };
const L2 = { ip: '10.0.1.105', mac: '60:00:60:00:02:05' };
/** Static on Host 1, behind Host 2's PA; no VM: a MAC whose address is not learnable. */
const C3 = { ip: '10.0.1.103', mac: '60:00:60:00:02:03' };
const VSID = 6000;
const LEARNED = { customer_address: L2.ip, vsid: VSID, mac: L2.mac, provider_address: HOST2_PA, rule: 'encap', type: 'dynamic' };

type HostName = 'host1' | 'host2';

function config(host: HostName, learning: { max_per_vsid?: number; ttl_seconds?: number } = {}): string {
  const pa = host === 'host1' ? HOST1_PA : HOST2_PA;
  const records =
    host === 'host1'
      ? [
          `{ customer_address: 10.0.1.1, vsid: 6000, mac: "60:00:60:00:01:00", provider_address: ${HOST1_PA} }`,
          `{ customer_address: ${C1.ip}, vsid: 6000, mac: "${C1.mac}", provider_address: ${HOST1_PA}, vm_name: Contoso1 }`,
          `{ customer_address: ${C3.ip}, vsid: 6000, mac: "${C3.mac}", provider_address: ${HOST2_PA}, vm_name: Contoso3 }`,
          `{ customer_address: 0.0.0.0, vsid: 6000, mac: "${L2.mac}", provider_address: ${HOST2_PA}, type: l2only }`,
          `{ customer_address: 0.0.0.0, vsid: 6001, mac: "60:00:60:00:03:05", provider_address: ${OTHER_PA}, type: l2only }`,
        ]
      : [
          `{ customer_address: 10.0.1.1, vsid: 6000, mac: "60:00:60:00:02:00", provider_address: ${HOST2_PA} }`,
          `{ customer_address: ${C1.ip}, vsid: 6000, mac: "${C1.mac}", provider_address: ${HOST1_PA}, vm_name: Contoso1 }`,
          `{ customer_address: 0.0.0.0, vsid: 6000, mac: "${L2.mac}", provider_address: ${HOST2_PA}, type: l2only }`,
        ];
  const adapter = host === 'host1' ? `{ name: contoso1, mac: "${C1.mac}", vsid: 6000, netns: ${lab.ns('contoso1')} }` : `{ name: l2vm, mac: "${L2.mac}", vsid: 6000, netns: ${lab.ns('l2vm')} }`;
  const learn = Object.keys(learning).length ? `learning: ${JSON.stringify(learning)}\n` : '';
  return `host: { name: ${host} }
provider_addresses: [ { address: ${pa}, prefix_length: 24, interface: eth1 } ]
customer_routes:
  - { routing_domain: "${RD}", vsid: 6000, destination_prefix: 10.0.1.0/24, next_hop: 0.0.0.0 }
  - { routing_domain: "${RD}", vsid: 6001, destination_prefix: 10.0.2.0/24, next_hop: 0.0.0.0 }
lookup_records:
${records.map((r) => `  - ${r}`).join('\n')}
vm_adapters: [ ${adapter} ]
${learn}state_dir: ${join(dir, `${host}-state`)}
api: { socket: ${join(dir, `${host}.sock`)} }
metrics: { listen: "127.0.0.1:9470" }
`;
}

const socket = (h: HostName) => join(dir, `${h}.sock`);
const configFile = (h: HostName) => join(dir, `${h}.yaml`);
const api = { host1: new ApiClient(socket('host1')), host2: new ApiClient(socket('host2')) };
const daemons = new Map<HostName, LabProcess>();
let starts = 0;

async function startDaemon(h: HostName): Promise<void> {
  const proc = await lab.spawn(h, [process.execPath, DAEMON, '--config', configFile(h)], { logFile: join(dir, `${h}-${starts++}.log`) });
  await proc.waitForLine((l) => l.includes('"msg":"ready"'), 20_000, { what: 'the ready line' });
  daemons.set(h, proc);
}

async function nvgrectl(h: HostName, ...args: string[]) {
  return run([process.execPath, CLI, '-s', socket(h), ...args], { timeoutMs: 30_000 });
}

async function ok(h: HostName, ...args: string[]): Promise<string> {
  const r = await nvgrectl(h, ...args);
  expect(r.code, `nvgrectl ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

const metrics = (h: HostName): Promise<Scrape> => scrapeMetrics(lab.ns(h));
const refused = (m: Scrape, reason: string) => m.get(`nvgre_learning_refused_total{reason="${reason}"}`) ?? NaN;
const dropped = (m: Scrape, reason: string) => m.get(`nvgre_dropped_packets_total{direction="from_underlay",reason="${reason}"}`) ?? NaN;

async function dynamicRecords(h: HostName): Promise<Array<Record<string, unknown>>> {
  const r = await api[h].get(`/v1/lookup-records${query({ type: 'dynamic' })}`);
  expect(r.status).toBe(200);
  return r.body.lookup_records;
}

// ---------------------------------------------------------------- the event streams, followed with nvgrectl monitor

interface Event {
  event: string;
  time: string;
  record: Record<string, unknown>;
  reason?: string;
  cause?: string;
  last_seen?: string;
}

/** `nvgrectl -j monitor` on one host, every event kept. */
class Follower {
  readonly events: Event[] = [];
  readonly lines: string[] = [];
  proc!: LabProcess;

  constructor(
    readonly host: HostName,
    readonly json = true,
  ) {}

  async start(): Promise<this> {
    const argv = [process.execPath, CLI, '-s', socket(this.host), ...(this.json ? ['-j'] : []), 'monitor'];
    this.proc = await lab.spawn(this.host, argv, { logFile: join(dir, `monitor-${this.host}-${this.json ? 'j' : 't'}-${starts++}.log`) });
    this.proc.onLine((line, stream) => {
      if (stream !== 'stdout') return;
      this.lines.push(line);
      if (this.json) this.events.push(JSON.parse(line) as Event);
    });
    // the stream is open once the daemon counts the subscriber; give it a moment
    await sleep(300);
    return this;
  }

  count(pred: (e: Event) => boolean): number {
    return this.events.filter(pred).length;
  }

  async waitFor(pred: (e: Event) => boolean, timeoutMs = 5000, after = 0): Promise<Event> {
    let hit: Event | undefined;
    await waitFor(() => (hit = this.events.slice(after).find(pred)) !== undefined, timeoutMs, {
      what: `an event on ${this.host}; got ${JSON.stringify(this.events.slice(after).map((e) => [e.event, e.record.customer_address, e.reason]))}`,
      intervalMs: 50,
    });
    return hit!;
  }
}

/** Once its host's daemon made the TAP: the VM's address, up. */
async function configureVm(vm: 'contoso1' | 'l2vm'): Promise<void> {
  await waitFor(async () => (await ipIn(lab.ns(vm), ['link', 'show', vm])).code === 0, 10_000, { what: `TAP ${vm}` });
  await lab.addr(vm, vm, `${vm === 'contoso1' ? C1.ip : L2.ip}/24`);
  await lab.up(vm, vm);
}

const followers = new Map<HostName, Follower>();
/** Events seen, for the summary. */
const seen: string[] = [];
const measured: string[] = [];

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await lab.addNamespace('underlay');
  for (const h of ['host1', 'host2'] as const) {
    await lab.addNamespace(h);
    await lab.veth(h, 'eth1', 'underlay', `to-${h}`);
    await lab.up(h, 'eth1');
  }
  await lab.addNamespace('attacker');
  await lab.veth('underlay', 'to-attacker', 'attacker', 'eth0');
  await lab.bridge('underlay', 'br0', ['to-host1', 'to-host2', 'to-attacker']);
  await lab.addr('attacker', 'eth0', `${ATTACKER}/24`);
  await lab.up('attacker', 'eth0');
  await lab.addNamespace('contoso1');
  await lab.addNamespace('l2vm');
  for (const h of ['host1', 'host2'] as const) {
    writeFileSync(configFile(h), config(h));
    await startDaemon(h);
  }
  await configureVm('contoso1');
  await configureVm('l2vm');
  for (const h of ['host1', 'host2'] as const) followers.set(h, await new Follower(h).start());
}, 120_000);

afterAll(async () => {
  for (const [h, f] of followers) {
    const counts = new Map<string, number>();
    for (const e of f.events) counts.set(`${e.event}${e.reason ? `(${e.reason})` : ''}`, (counts.get(`${e.event}${e.reason ? `(${e.reason})` : ''}`) ?? 0) + 1);
    seen.push(`${h} (since its last start): ${[...counts].map(([k, v]) => `${v} ${k}`).join(', ')}; first: ${f.lines.slice(0, 3).join(' | ')}`);
  }
  console.log(`learning, measured:\n  ${measured.join('\n  ')}\nevents seen (nvgrectl -j monitor):\n  ${seen.join('\n  ')}`);
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

interface ArpRow {
  src: string;
  dst: string;
  vsid: number;
  op: number;
  senderIp: string;
  targetIp: string;
  innerDst: string;
}

async function arpOnTheWire(file: string): Promise<ArpRow[]> {
  const fields = ['ip.src', 'ip.dst', 'gre.key', 'arp.opcode', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4', 'eth.dst'];
  const r = await run(['tshark', '-n', '-r', file, '-Y', 'gre && arp', '-T', 'fields', '-E', 'separator=|', '-E', 'aggregator=;', ...fields.flatMap((f) => ['-e', f])], {
    check: true,
    timeoutMs: 30_000,
  });
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [src, dst, key, op, sip, tip, edst] = line.split('|').map((c) => c.split(';'));
      return { src: src![0]!, dst: dst![0]!, vsid: (Number(key![0]) >>> 0) >>> 8, op: Number(op![0]), senderIp: sip![0]!, targetIp: tip![0]!, innerDst: edst![1]! };
    });
}

// ---------------------------------------------------------------- flow 4

describe('packet flow 4: L2Only learning', () => {
  it('the ARP request crosses as unicast NVGRE to the L2Only PA, the reply comes back, pings flow, both hosts learn', async () => {
    const pcap = join(dir, 'flow4.pcap');
    const cap = await lab.capture('underlay', 'br0', pcap);
    const t0 = performance.now();
    // One ARP exchange: the first ping may be lost (it is not, in practice).
    let first = await ping(lab.ns('contoso1'), L2.ip, { count: 1, timeoutMs: 2000 });
    let tries = 1;
    while (first.received === 0 && tries < 3) {
      first = await ping(lab.ns('contoso1'), L2.ip, { count: 1, timeoutMs: 2000 });
      tries++;
    }
    const firstSuccessMs = performance.now() - t0;
    const p = await ping(lab.ns('contoso1'), L2.ip, { count: 5 });
    expect(p.received).toBe(5);
    await sleep(500);
    await lab.stop(cap);
    measured.push(`first ping to 10.0.1.105 answered after ${firstSuccessMs.toFixed(0)} ms (${tries} ping(s); rtt of the one that made it, ARP exchange included: ${first.rttAvgMs?.toFixed(2)} ms; then 5/5 at ${p.rttAvgMs?.toFixed(2)} ms)`);

    // On the wire: the request only to the L2Only PA of VSID 6000, the reply back; nothing to .44 (an L2Only PA of VSID 6001).
    const arps = await arpOnTheWire(pcap);
    const requests = arps.filter((a) => a.op === 1);
    const replies = arps.filter((a) => a.op === 2);
    expect(requests.length).toBeGreaterThanOrEqual(1);
    expect(replies.length).toBeGreaterThanOrEqual(1);
    for (const a of requests) expect(a).toMatchObject({ src: HOST1_PA, dst: HOST2_PA, vsid: VSID, senderIp: C1.ip, targetIp: L2.ip, innerDst: 'ff:ff:ff:ff:ff:ff' });
    for (const a of replies) expect(a).toMatchObject({ src: HOST2_PA, dst: HOST1_PA, vsid: VSID, senderIp: L2.ip, targetIp: C1.ip, innerDst: C1.mac });
    expect(arps.filter((a) => a.dst === OTHER_PA || a.src === OTHER_PA)).toEqual([]);
    expect(arps.every((a) => [a.src, a.dst].sort().join() === [HOST1_PA, HOST2_PA].join())).toBe(true);

    // Both hosts learned (CA, MAC) at Host 2's PA: Host 1 from the reply that came from the L2Only PA, Host 2 as the reply left.
    for (const h of ['host1', 'host2'] as const) {
      await waitFor(async () => (await dynamicRecords(h)).length > 0, 3000, { what: `a learned record on ${h}` });
      expect(await dynamicRecords(h)).toEqual([LEARNED]);
      expect((await ok(h, 'lookup', 'show', 'type', 'dynamic')).trim()).toBe('10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 rule encap type dynamic');
      const m = await metrics(h);
      expect(m.get('nvgre_learned_records')).toBe(1);
      expect(m.get('nvgre_learned_total')).toBe(1);
      expect(refused(m, 'limit')).toBe(0);
      expect(refused(m, 'static_conflict')).toBe(0);
      const ev = await followers.get(h)!.waitFor((e) => e.event === 'learned');
      expect(ev.record).toEqual(LEARNED);
    }
    // Host 2's PA is its own: the record names the local PA.
    expect((await api.host2.get('/v1/provider-addresses')).body.provider_addresses[0].address).toBe(HOST2_PA);
    expect((await metrics('host1')).get('nvgre_arp_probes_total')).toBeGreaterThanOrEqual(1);
    // which dynamic records are learned, and when they expire
    const learned = (await api.host1.get('/v1/learned')).body.learned;
    expect(learned).toEqual([{ record: LEARNED, last_seen: expect.any(String), expires_at: expect.any(String) }]);
    expect(Date.parse(learned[0].expires_at) - Date.parse(learned[0].last_seen)).toBe(300_000);
    // route get now resolves it like any record
    expect((await ok('host1', 'route', 'get', L2.ip, 'vsid', '6000')).trim()).toBe('10.0.1.105 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33 encap');
  });

  it('the event stream is text/event-stream; nvgrectl monitor prints one line per event', async () => {
    const text = await new Follower('host1', false).start();
    const r = await new Promise<{ status: number; type: string; head: string }>((resolve, reject) => {
      import('node:http').then(({ request }) => {
        const req = request({ socketPath: socket('host1'), path: '/v1/events' }, (res) => {
          res.setEncoding('utf8');
          res.once('data', (t: string) => {
            resolve({ status: res.statusCode!, type: String(res.headers['content-type']), head: t });
            req.destroy();
          });
        });
        req.on('error', reject);
        req.end();
      }, reject);
    });
    expect(r).toMatchObject({ status: 200, type: 'text/event-stream; charset=utf-8' });
    expect(r.head.startsWith(': nvgred events\n')).toBe(true);
    // an event for the text follower: the control case of the next test (a reply from the right PA teaches)
    const reply = nvgre(HOST2_PA, HOST1_PA, VSID, 0, arpReplyFrame(L2.mac, '10.0.1.170', C1.mac, C1.ip));
    await inject(lab.ns('attacker'), HOST1_PA, [reply]);
    await waitFor(() => text.lines.length > 0, 5000, { what: 'a line from nvgrectl monitor' });
    expect(text.lines[0]).toBe('learned 10.0.1.170 vsid 6000 mac 60:00:60:00:02:05 pa 192.168.0.33');
    // SIGINT ends it, exit 0
    const stopped = await lab.stop(text.proc, { signal: 'SIGINT', timeoutMs: 5000 });
    expect(stopped).toMatchObject({ code: 0, escalated: false });
    // the control record goes again (announced as deleted by the API)
    const n = followers.get('host1')!.events.length;
    expect((await api.host1.delete(`/v1/lookup-records/6000/10.0.1.170`)).status).toBe(200);
    expect(await followers.get('host1')!.waitFor((e) => e.event === 'deleted', 3000, n)).toMatchObject({ cause: 'api', record: { customer_address: '10.0.1.170' } });
  });
});

// ---------------------------------------------------------------- spoofing

describe('learning does not open a spoofing hole', () => {
  it('a reply for the L2Only MAC from another PA (the attacker, .99) teaches nothing: the core drops it as spoofed_source', async () => {
    const f = followers.get('host1')!;
    const before = await metrics('host1');
    const n = f.events.length;
    const spoof = nvgre(ATTACKER, HOST1_PA, VSID, 0, arpReplyFrame(L2.mac, '10.0.1.180', C1.mac, C1.ip));
    expect(await inject(lab.ns('attacker'), HOST1_PA, [spoof], { count: 3 })).toMatchObject({ sent: 3, errors: 0 });
    await waitFor(async () => dropped(await metrics('host1'), 'spoofed_source') - dropped(before, 'spoofed_source') >= 3, 3000, { what: '3 spoofed_source drops' });
    await sleep(1000); // five drains
    const after = await metrics('host1');
    expect(dropped(after, 'spoofed_source') - dropped(before, 'spoofed_source')).toBe(3);
    expect(after.get('nvgre_learned_total')).toBe(before.get('nvgre_learned_total'));
    expect(after.get('nvgre_learned_records')).toBe(1);
    expect(f.events.slice(n)).toEqual([]);
    expect((await api.host1.get('/v1/lookup-records/6000/10.0.1.180')).status).toBe(404);
  });

  it("a reply from the right PA for a MAC whose record is static teaches nothing (it is delivered); a static record's address is refused", async () => {
    const f = followers.get('host1')!;
    const before = await metrics('host1');
    const n = f.events.length;
    const c3reply = nvgre(HOST2_PA, HOST1_PA, VSID, 0, arpReplyFrame(C3.mac, '10.0.1.181', C1.mac, C1.ip));
    await inject(lab.ns('attacker'), HOST1_PA, [c3reply], { count: 3 });
    await waitFor(async () => metricSum(await metrics('host1'), 'nvgre_decap_packets_total') - metricSum(before, 'nvgre_decap_packets_total') >= 3, 3000, {
      what: 'the 3 replies delivered',
    });
    await sleep(1000);
    const mid = await metrics('host1');
    expect(mid.get('nvgre_learned_total')).toBe(before.get('nvgre_learned_total'));
    expect(f.events.slice(n)).toEqual([]);
    expect((await api.host1.get('/v1/lookup-records/6000/10.0.1.181')).status).toBe(404);

    // The L2Only MAC claiming Contoso3's address (static): the core reports it, the control plane refuses it.
    const claim = nvgre(HOST2_PA, HOST1_PA, VSID, 0, arpReplyFrame(L2.mac, C3.ip, C1.mac, C1.ip));
    await inject(lab.ns('attacker'), HOST1_PA, [claim]);
    const ev = await f.waitFor((e) => e.event === 'refused', 5000, n);
    expect(ev).toMatchObject({ reason: 'static_conflict', record: { customer_address: C3.ip, mac: L2.mac, type: 'dynamic' }, existing: { mac: C3.mac, type: 'static' } });
    const after = await metrics('host1');
    expect(refused(after, 'static_conflict') - refused(before, 'static_conflict')).toBe(1);
    expect((await api.host1.get(`/v1/lookup-records/6000/${C3.ip}`)).body).toMatchObject({ mac: C3.mac, type: 'static' });
    expect(after.get('nvgre_learned_records')).toBe(1);
  });
});

// ---------------------------------------------------------------- persistence, deletion

describe('learned records and the operator', () => {
  it('survive a restart of Host 1 (SIGTERM, start) with their clocks', async () => {
    const f = followers.get('host1')!;
    const before = (await api.host1.get('/v1/learned')).body.learned;
    expect(before.map((l: { record: { customer_address: string } }) => l.record.customer_address)).toEqual([L2.ip]);
    const stopped = await lab.stop(daemons.get('host1')!, { timeoutMs: 10_000 });
    expect(stopped.code).toBe(0);
    // the stream's follower is told: the daemon ended the stream
    expect((await f.proc.exited).code).toBe(1);
    expect(f.proc.tail()).toContain('Error: nvgred ended the event stream');
    const state = JSON.parse(readFileSync(join(dir, 'host1-state', 'policy.json'), 'utf8'));
    expect(state.learned).toEqual([{ vsid: VSID, customer_address: L2.ip, mac: L2.mac, provider_address: HOST2_PA, last_seen: before[0].last_seen }]);
    await startDaemon('host1');
    await configureVm('contoso1'); // its TAP went with the daemon, and came back bare
    expect(await dynamicRecords('host1')).toEqual([LEARNED]);
    expect((await api.host1.get('/v1/learned')).body.learned).toEqual(before);
    expect((await metrics('host1')).get('nvgre_learned_records')).toBe(1);
    followers.set('host1', await new Follower('host1').start());
  });

  it('nvgrectl lookup del removes a learned record and the stream says deleted; traffic teaches it again', async () => {
    const f = followers.get('host1')!;
    expect(await ok('host1', 'lookup', 'del', L2.ip, 'vsid', '6000')).toBe('');
    expect(await f.waitFor((e) => e.event === 'deleted')).toMatchObject({ cause: 'api', record: LEARNED });
    expect(await dynamicRecords('host1')).toEqual([]);
    expect((await metrics('host1')).get('nvgre_learned_records')).toBe(0);
    // Contoso1 forgets the address and asks again: the probe crosses, the reply teaches.
    await ipIn(lab.ns('contoso1'), ['neigh', 'flush', 'all']);
    const n = f.events.length;
    expect((await ping(lab.ns('contoso1'), L2.ip, { count: 3 })).received).toBeGreaterThanOrEqual(2);
    expect(await f.waitFor((e) => e.event === 'learned', 3000, n)).toMatchObject({ record: LEARNED });
    expect(await dynamicRecords('host1')).toEqual([LEARNED]);
  });
});

// ---------------------------------------------------------------- expiry

async function reload(h: HostName, learning: { max_per_vsid?: number; ttl_seconds?: number }): Promise<string> {
  writeFileSync(configFile(h), config(h, learning));
  return ok(h, 'reload');
}

describe('expiry', () => {
  it('a learned record not refreshed for ttl_seconds (3) disappears, with an expired event; the reload kept it', async () => {
    const f = followers.get('host1')!;
    const n = f.events.length;
    const before = await metrics('host1');
    const out = await reload('host1', { ttl_seconds: 3 });
    expect(out).toBe('no changes\n'); // the learned record is kept; learning settings are not records
    expect(await dynamicRecords('host1')).toEqual([LEARNED]);
    const lastSeen = Date.parse((await api.host1.get('/v1/learned')).body.learned[0].last_seen);
    const ev = await f.waitFor((e) => e.event === 'expired', 8000, n);
    const lag = Date.parse(ev.time) - lastSeen;
    measured.push(`ttl_seconds 3: expired ${(lag / 1000).toFixed(2)} s after it was last seen (sweep every 1 s)`);
    expect(lag).toBeGreaterThanOrEqual(3000);
    expect(lag).toBeLessThan(5000);
    expect(ev).toMatchObject({ record: LEARNED, last_seen: new Date(lastSeen).toISOString() });
    expect(await dynamicRecords('host1')).toEqual([]);
    const after = await metrics('host1');
    expect(after.get('nvgre_learned_expired_total')! - before.get('nvgre_learned_expired_total')!).toBe(1);
    expect(after.get('nvgre_learned_records')).toBe(0);
    // Host 2's own copy lives by its own TTL (300 s)
    expect(await dynamicRecords('host2')).toContainEqual(LEARNED);
  });

  it("while the VM talks (pings every 0.5 s) it stays past several TTLs; when it stops, it goes", async () => {
    // The core reports a live address at most every 10 s (per record and worker): the TTL must exceed that.
    await reload('host1', { ttl_seconds: 15 });
    const f = followers.get('host1')!;
    const n = f.events.length;
    // Contoso1 forgets l2vm's MAC, so its next ping asks again: the probe crosses and the reply
    // teaches. The core reports an address at most every 10 s, and it reported this one just
    // before it expired (the previous test): the probe waits out that window.
    const expired = f.events.filter((e) => e.event === 'expired').at(-1)!;
    await sleep(Math.max(0, Date.parse(expired.last_seen!) + 10_500 - Date.now()));
    await ipIn(lab.ns('contoso1'), ['neigh', 'flush', 'all']);
    const pings = ping(lab.ns('contoso1'), L2.ip, { count: 90, intervalMs: 500 });
    let done = false;
    void pings.finally(() => (done = true));
    const learned = await f.waitFor((e) => e.event === 'learned', 5000, n);
    expect(learned.record).toEqual(LEARNED);
    // From now on no ARP crosses (Host 1 answers for the learned address): only the echo replies
    // from l2vm's MAC and CA, out of Host 2's PA, report the record again.
    const t0 = Date.now();
    while (!done) {
      expect(await dynamicRecords('host1')).toEqual([LEARNED]);
      await sleep(1000);
    }
    const p = await pings;
    expect(p.received).toBeGreaterThanOrEqual(88);
    const stoppedAt = Date.now();
    expect(stoppedAt - t0).toBeGreaterThan(2 * 15_000);
    expect(f.events.slice(n).filter((e) => e.event === 'expired')).toEqual([]);
    const ev = await f.waitFor((e) => e.event === 'expired', 20_000, n);
    measured.push(
      `ttl_seconds 15 with pings every 0.5 s: kept for ${((stoppedAt - t0) / 1000).toFixed(0)} s (> 2 TTLs; refreshed by the core every ~10 s), ` +
        `expired ${((Date.parse(ev.time) - stoppedAt) / 1000).toFixed(1)} s after the pings stopped`,
    );
    expect(await dynamicRecords('host1')).toEqual([]);
  }, 150_000);
});

// ---------------------------------------------------------------- bounded

describe('a VM cannot exhaust memory by claiming addresses', () => {
  it('with learning.max_per_vsid 5, 400 replies for made-up addresses leave exactly 5 learned records; refusals are counted', async () => {
    await reload('host1', { max_per_vsid: 5 });
    const f = followers.get('host1')!;
    const before = await metrics('host1');
    const statics = (await api.host1.status()).counts.lookup_records;
    const skip = new Set([1, 101, 103, 105, 255]);
    const cas = Array.from({ length: 254 }, (_, i) => i + 1).filter((x) => !skip.has(x)).slice(0, 200).map((x) => `10.0.1.${x}`);
    const packets = cas.map((ca) => nvgre(HOST2_PA, HOST1_PA, VSID, 0, arpReplyFrame(L2.mac, ca, C1.mac, C1.ip)));
    const n = f.events.length;
    expect(await inject(lab.ns('attacker'), HOST1_PA, packets)).toMatchObject({ sent: 200, errors: 0 });
    await sleep(1500);
    expect(await inject(lab.ns('attacker'), HOST1_PA, packets)).toMatchObject({ sent: 200, errors: 0 });
    await waitFor(async () => (await metrics('host1')).get('nvgre_learning_refused_total{reason="limit"}')! - refused(before, 'limit') >= 100, 5000, {
      what: 'refusals',
    });
    await sleep(500);
    const learned = await dynamicRecords('host1');
    expect(learned).toHaveLength(5);
    expect(learned.every((r) => r.mac === L2.mac && r.provider_address === HOST2_PA && r.vsid === VSID)).toBe(true);
    const after = await metrics('host1');
    expect(after.get('nvgre_learned_records')).toBe(5);
    const limitRefusals = refused(after, 'limit') - refused(before, 'limit');
    expect(limitRefusals).toBeGreaterThanOrEqual(100);
    expect(after.get('nvgre_lookup_records')).toBe(statics + 5);
    expect(f.count((e) => e.event === 'learned') - f.events.slice(0, n).filter((e) => e.event === 'learned').length).toBe(5);
    expect(f.events.slice(n).filter((e) => e.event === 'refused' && e.reason === 'limit').length).toBe(limitRefusals);
    measured.push(
      `flood of 2 x 200 replies, max_per_vsid 5: 5 learned, ${limitRefusals} refused (limit), ${after.get('nvgre_lookup_records')} lookup records; ` +
        `the core passed ${after.get('nvgre_learned_total')! - before.get('nvgre_learned_total')! + limitRefusals} candidates (paced at 100/s)`,
    );
    // the daemon is healthy: it answers, and traffic still flows (10.0.1.105 itself cannot be learned now: refused, but the L2Only MAC carries it)
    expect((await api.host1.status()).counts.lookup_records).toBe(statics + 5);
    await ipIn(lab.ns('contoso1'), ['neigh', 'flush', 'all']);
    expect((await ping(lab.ns('contoso1'), L2.ip, { count: 3 })).received).toBeGreaterThanOrEqual(2);
    expect(await f.waitFor((e) => e.event === 'refused' && e.record.customer_address === L2.ip, 3000, n)).toMatchObject({ reason: 'limit' });
    expect(await dynamicRecords('host1')).toHaveLength(5);
  });

  it('the followers stop on SIGINT (exit 0)', async () => {
    for (const f of followers.values()) {
      const r = await lab.stop(f.proc, { signal: 'SIGINT', timeoutMs: 5000 });
      expect(r).toMatchObject({ code: 0, escalated: false });
    }
  });
});
