// A tenant cannot take the host down: faults on the reference lab (three
// hosts, eight VMs), each checking that the other VMs keep forwarding and
// nothing of the policy is lost.
// - a storm of malformed frames from a VM (among them a padded ARP request
//   from a jumbo adapter, which once ended the worker, and frames that make
//   a batch's handling panic through a test failpoint);
// - a VM adapter deleted under the daemon (the worker once spun at 100% CPU);
// - the PA removed by someone else; the underlay link down and up (which
//   takes the provider routes with it);
// - a worker that dies anyway: the daemon exits 1 at once.

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, metricDelta, ping, scrapeMetrics, sendFrames, sleep, waitFor, type Scrape } from '../lab/netns.js';
import { arpRequest, ethernet, ipv4, parseMac, tagged } from '../lab/packets.js';
import { configureVms, paOf, setUpLab, vm, type Daemon } from '../lab/topology.js';
import { ApiClient } from './helpers/api.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvf${process.pid % 1000}-`);
const out = scratchDir('faults');
let daemons: Daemon[];
const host1 = () => daemons.find((d) => d.host === 'host1')!;
const api = () => new ApiClient(host1().socket!);

/** A MAC of VSID 7000 behind Host 2 whose address Host 1 learns (flow 4): ARP for unknown CAs of 7000 probes Host 2. */
const L2ONLY_MAC = '70:00:70:00:02:99';
const PROVIDER_ROUTE = '192.168.60.0/24';
const JUMBO = 16000;

beforeAll(async () => {
  ({ daemons } = await setUpLab(lab, {
    outDir: out,
    env: { ...process.env, NVGRED_FAILPOINTS: '1' },
    edit: (host, cfg) => {
      if (host !== 'host1') return;
      const adapters = cfg['vm_adapters'] as Array<Record<string, unknown>>;
      adapters.find((a) => a['name'] === 'fabrikam1')!['mtu'] = JUMBO;
      (cfg['lookup_records'] as unknown[]).push({ customer_address: '0.0.0.0', vsid: 7000, mac: L2ONLY_MAC, provider_address: paOf('host2'), type: 'l2only' });
      cfg['provider_routes'] = [{ destination_prefix: PROVIDER_ROUTE, next_hop: paOf('host2'), interface: 'eth1' }];
    },
  }));
}, 180_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

const metrics = (): Promise<Scrape> => scrapeMetrics(lab.ns('host1'));

/** Host 1's log lines (JSON) that contain every one of `parts`. */
function logLines(...parts: string[]): string[] {
  return readFileSync(host1().logFile, 'utf8')
    .split('\n')
    .filter((l) => parts.every((p) => l.includes(p)));
}

/** Contoso1 (Host 1) pings Contoso3 (Host 2) `count` times, 10 ms apart, while `during` runs: every reply must come. */
async function pingsThrough(count: number, during: () => Promise<unknown>): Promise<void> {
  const [p] = await Promise.all([ping(lab.ns('contoso1'), vm('contoso3').ip, { count, intervalMs: 10, timeoutMs: 2000 }), during()]);
  expect(p.received, `pings contoso1 -> contoso3 during the fault: ${JSON.stringify(p)}`).toBe(count);
}

/** CPU seconds the process has used (utime + stime). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Frames a VM may put on its adapter, valid or not (all from Fabrikam1's own MAC but where the point is the source). */
function malformedFrames(): Buffer[] {
  const me = vm('fabrikam1');
  const other = vm('fabrikam2');
  const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 131 + seed * 17) & 0xff));
  const arp = (target: string, pad: number) => arpRequest(me.mac, me.ip, target, pad);
  const udp = ipv4(me.ip, other.ip, 17, bytes(40, 1));
  const badIhl = Buffer.from(udp);
  badIhl[0] = 0x4f;
  const truncatedIp = ethernet(me.mac, other.mac, 0x0800, udp.subarray(0, 12));
  const vlan = tagged(ethernet(me.mac, other.mac, 0x0800, udp), 5);
  const badArp = Buffer.concat([arp('10.0.1.150', 0).subarray(0, 14 + 4), Buffer.from([7, 4]), bytes(26, 6)]); // hardware address length 7
  const shortArp = arp('10.0.1.150', 0).subarray(0, 14 + 10);
  return [
    bytes(1, 1),
    bytes(13, 2),
    Buffer.concat([parseMac(other.mac), parseMac(me.mac), bytes(48, 3)]),
    ethernet(other.mac, other.mac, 0x0800, udp), // another VM's source MAC
    ethernet(me.mac, '60:00:60:00:01:01', 0x0800, udp), // a MAC of another tenant
    ethernet(me.mac, vm('fabrikam3').mac, 0x0800, badIhl),
    truncatedIp,
    vlan,
    ethernet(me.mac, '01:00:5e:00:00:01', 0x86dd, bytes(60, 4)), // multicast IPv6 garbage
    arp('10.0.1.150', JUMBO - 14 - 28 - 100), // probes Host 2 (L2Only): padded to the jumbo MTU
    badArp,
    shortArp,
    ethernet(me.mac, vm('fabrikam3').mac, 0x0800, ipv4(me.ip, vm('fabrikam3').ip, 6, bytes(1400, 5))),
  ];
}

describe('a storm of malformed frames from a VM', () => {
  it('is dropped and counted, a batch that panics is dropped, and every other VM keeps forwarding', async () => {
    const before = await metrics();
    const beforeHost2 = await scrapeMetrics(lab.ns('host2'));
    let sent = 0;
    const me = vm('fabrikam1');
    const marked = ethernet(me.mac, vm('fabrikam2').mac, 0x0800, ipv4(me.ip, vm('fabrikam2').ip, 17, Buffer.from('........nvgred-failpoint-panic')));
    await pingsThrough(500, async () => {
      sent += (await sendFrames(lab.ns('fabrikam1'), 'fabrikam1', malformedFrames(), { seconds: 5 })).sent;
      // Then batches whose handling panics (a test failpoint), among valid frames.
      sent += (await sendFrames(lab.ns('fabrikam1'), 'fabrikam1', [marked, ...malformedFrames().slice(-1)], { seconds: 1 })).sent;
    });
    const after = await metrics();
    const afterHost2 = await scrapeMetrics(lab.ns('host2'));
    const drops = (reason: string) => metricDelta(before, after, 'nvgre_dropped_packets_total', 'direction="from_vm"', `reason="${reason}"`);
    console.log(
      `storm: ${sent} frames sent in 6 s; read ${metricDelta(before, after, 'nvgre_vm_rx_packets_total')}; drops: ` +
        ['truncated', 'malformed', 'spoofed_source', 'vlan_tagged', 'unknown_destination', 'internal_error'].map((r) => `${r} ${drops(r)}`).join(', ') +
        `; panics ${metricDelta(before, after, 'nvgre_worker_panics_total')}; probes ${metricDelta(before, after, 'nvgre_arp_probes_total')}`,
    );
    expect(sent).toBeGreaterThan(10_000);
    // (Frames shorter than an Ethernet header never reach the daemon: the kernel refuses them.)
    for (const reason of ['truncated', 'malformed', 'spoofed_source', 'vlan_tagged', 'unknown_destination']) expect(drops(reason), reason).toBeGreaterThan(0);
    // The padded request crossed as the request alone, and Host 2 flooded it to its Fabrikam VM.
    expect(metricDelta(before, after, 'nvgre_arp_probes_total')).toBeGreaterThan(0);
    expect(metricDelta(beforeHost2, afterHost2, 'nvgre_flooded_packets_total')).toBeGreaterThan(0);
    // The failpoint's batches panicked: each was dropped and counted, and the worker went on.
    expect(metricDelta(before, after, 'nvgre_worker_panics_total')).toBeGreaterThan(0);
    expect(drops('internal_error')).toBeGreaterThanOrEqual(metricDelta(before, after, 'nvgre_worker_panics_total'));
    const logged = logLines('packet worker recovered from a panic');
    expect(logged.some((l) => l.includes("failpoint: a batch's handling panics"))).toBe(true);
    expect(logged.length, 'panics are logged rate-limited').toBeLessThan(20);
    // Fabrikam1 itself still forwards once the storm is over.
    expect((await ping(lab.ns('fabrikam1'), vm('fabrikam3').ip, { count: 3 })).received).toBe(3);
    expect(host1().proc.exitInfo).toBeNull();
  }, 60_000);
});

describe('a VM adapter deleted under the daemon', () => {
  it('is reported down, costs no CPU, leaves the others forwarding, and a reload makes it again', async () => {
    const { pid } = host1().proc;
    const before = await metrics();
    await ipIn(lab.ns('fabrikam2'), ['link', 'del', 'fabrikam2'], { check: true });
    const status = await waitFor(
      async () => {
        const s = await api().get('/v1/status');
        const port = (s.body as { ports: Array<{ name: string; up: boolean; error: string | null }> }).ports.find((p) => p.name === 'fabrikam2');
        return port && !port.up ? port : undefined;
      },
      5000,
      { what: 'fabrikam2 reported down', intervalMs: 100 },
    );
    expect(status.error).toMatch(/reading from fabrikam2/);
    const cpu0 = cpuSeconds(pid);
    await pingsThrough(200, () => sleep(3000));
    const cpu = cpuSeconds(pid) - cpu0;
    console.log(`adapter deleted: the daemon used ${cpu.toFixed(2)} s of CPU in ~3 s of pings (a spinning worker uses ~3)`);
    expect(cpu).toBeLessThan(1);
    const after = await metrics();
    expect(after.get('nvgre_vm_adapter_up{adapter="fabrikam2"}')).toBe(0);
    expect(metricDelta(before, after, 'nvgre_vm_adapter_errors_total')).toBe(1);
    expect(logLines('vm adapter down', '"adapter":"fabrikam2"')).toHaveLength(1);

    expect((await api().post('/v1/reload')).status).toBe(200);
    await configureVms(lab, { vms: ['fabrikam2'] });
    expect((await ping(lab.ns('fabrikam2'), vm('fabrikam1').ip, { count: 3 })).received).toBe(3);
    expect((await metrics()).get('nvgre_vm_adapter_up{adapter="fabrikam2"}')).toBe(1);
  }, 60_000);
});

async function host1Has(what: 'address' | 'route'): Promise<boolean> {
  const r = await ipIn(lab.ns('host1'), what === 'address' ? ['-4', 'addr', 'show', 'dev', 'eth1'] : ['route', 'show', PROVIDER_ROUTE], { check: true });
  return what === 'address' ? r.stdout.includes(`${paOf('host1')}/24`) : r.stdout.includes('via');
}

describe('kernel objects taken from under the daemon', () => {
  it('a PA removed by someone else is put back, and traffic to it resumes', async () => {
    await ipIn(lab.ns('host1'), ['addr', 'del', `${paOf('host1')}/24`, 'dev', 'eth1'], { check: true });
    await waitFor(() => host1Has('address'), 5000, { what: 'the PA restored', intervalMs: 100 });
    await waitFor(async () => (await ping(lab.ns('contoso3'), vm('contoso1').ip, { count: 1, timeoutMs: 500 })).received === 1, 10_000, { what: 'contoso3 -> contoso1 again' });
    expect(logLines('provider address was removed by someone else: restored').length).toBeGreaterThan(0);
  }, 30_000);

  it('the underlay link down and up: provider routes come back and forwarding resumes', async () => {
    expect(await host1Has('route')).toBe(true);
    await ipIn(lab.ns('host1'), ['link', 'set', 'eth1', 'down'], { check: true });
    await waitFor(async () => !(await host1Has('route')), 5000, { what: 'the kernel removed the provider route' });
    await sleep(1000);
    await ipIn(lab.ns('host1'), ['link', 'set', 'eth1', 'up'], { check: true });
    await waitFor(() => host1Has('route'), 5000, { what: 'the provider route restored', intervalMs: 100 });
    await waitFor(async () => (await ping(lab.ns('contoso1'), vm('contoso3').ip, { count: 1, timeoutMs: 500 })).received === 1, 10_000, { what: 'contoso1 -> contoso3 again' });
    await pingsThrough(100, () => sleep(0));
    expect(logLines('provider route was removed: restored').length).toBeGreaterThan(0);
  }, 30_000);
});

describe('a worker that dies anyway', () => {
  it('makes the daemon exit 1 at once, for systemd to restart it', async () => {
    const me = vm('fabrikam1');
    const die = ethernet(me.mac, vm('fabrikam2').mac, 0x0800, ipv4(me.ip, vm('fabrikam2').ip, 17, Buffer.from('........nvgred-failpoint-die')));
    const t0 = Date.now();
    await sendFrames(lab.ns('fabrikam1'), 'fabrikam1', [die]);
    const exit = await host1().proc.exited;
    console.log(`worker died: the daemon exited ${exit.code} ${Date.now() - t0} ms after the frame`);
    expect(exit.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(logLines('packet worker died', 'failpoint: the worker dies')).toHaveLength(1);
    // It removed what it placed on its way out.
    expect(await host1Has('address')).toBe(false);
  }, 30_000);
});
