// The reference topology built entirely through nvgrectl: the daemons start
// with no policy at all (only where their API socket and state live), and
// every PA, customer route, lookup record and VM adapter is added with the
// CLI, Host 1 command by command, the other hosts with -batch. Then a VM
// migrates to another host: its lookup record's PA changes, and the very
// next packet goes to the new PA.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ping, run, type LabProcess } from '../lab/netns.js';
import {
  buildTopology,
  configureVms,
  CUSTOMER_ROUTES,
  GATEWAY_RECORDS,
  HOSTS,
  PROVIDER_ADDRESSES,
  ROUTING_DOMAINS,
  UNDERLAY_BRIDGE,
  UNDERLAY_IF,
  UNDERLAY_NS,
  VMS,
  vm,
  type HostName,
} from '../lab/topology.js';
import { packageRoot } from '../src/native.js';
import { scratchDir } from './helpers/scratch.js';

const root = packageRoot();
const DAEMON = join(root, 'dist/src/daemon/main.js');
const CLI = join(root, 'dist/src/cli/main.js');
const lab = new Lab(`nvc${process.pid % 10000}-`);
const dir = scratchDir('cli-topology');
const daemons = new Map<HostName, LabProcess>();
const socket = (h: HostName) => join(dir, `${h}.sock`);

async function nvgrectl(host: HostName, ...args: string[]) {
  const r = await run([process.execPath, CLI, '-s', socket(host), ...args], { timeoutMs: 30_000 });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

async function ok(host: HostName, ...args: string[]): Promise<string> {
  const r = await nvgrectl(host, ...args);
  expect(r.code, `nvgrectl ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** The nvgrectl commands that make `host` its part of the reference topology. */
function commandsFor(host: HostName): string[][] {
  const pa = PROVIDER_ADDRESSES[host];
  const cmds: string[][] = [['pa', 'add', `${pa.address}/${pa.prefixLength}`, 'dev', UNDERLAY_IF]];
  for (const r of CUSTOMER_ROUTES) {
    cmds.push(['route', 'add', r.prefix, 'vsid', String(r.vsid), 'rdid', ROUTING_DOMAINS[r.tenant], 'via', r.nextHop]);
  }
  for (const v of VMS) {
    cmds.push(['lookup', 'add', v.ip, 'vsid', String(v.vsid), 'mac', v.mac, 'pa', PROVIDER_ADDRESSES[v.host].address, 'vm', v.vmName]);
  }
  const gw = GATEWAY_RECORDS[host];
  if (gw) cmds.push(['lookup', 'add', gw.ip, 'vsid', String(gw.vsid), 'mac', gw.mac, 'pa', pa.address]);
  for (const v of VMS.filter((x) => x.host === host)) {
    cmds.push(['adapter', 'add', v.tap, 'mac', v.mac, 'vsid', String(v.vsid), 'netns', lab.ns(v.role), 'vm', v.vmName]);
  }
  return cmds;
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  await buildTopology(lab);
  for (const host of HOSTS) {
    const config = join(dir, `${host}.yaml`);
    writeFileSync(config, `host: { name: ${host} }\napi: { socket: ${socket(host)} }\nstate_dir: ${join(dir, `${host}-state`)}\n`);
    const proc = await lab.spawn(host, [process.execPath, DAEMON, '--config', config], { logFile: join(dir, `${host}.log`) });
    await proc.waitForLine((l) => l.includes('"msg":"ready"'), 20_000);
    daemons.set(host, proc);
  }
}, 120_000);

afterAll(async () => {
  expect((await lab.teardown()).errors).toEqual([]);
});

describe('the reference topology built with nvgrectl', () => {
  it('starts from an empty policy', async () => {
    const status = JSON.parse(await ok('host1', '-j', 'status'));
    expect(status.counts).toEqual({ provider_addresses: 0, provider_routes: 0, customer_routes: 0, lookup_records: 0, vm_adapters: 0 });
  });

  it('takes Host 1 command by command, and Hosts 2 and the gateway host by -batch', async () => {
    for (const cmd of commandsFor('host1')) await ok('host1', ...cmd);
    for (const host of ['host2', 'gwhost'] as const) {
      const file = join(dir, `${host}.batch`);
      writeFileSync(file, `# ${host}\n${commandsFor(host).map((c) => c.map((w) => (/[{}]/.test(w) ? `'${w}'` : w)).join(' ')).join('\n')}\n`);
      await ok(host, '-batch', file);
    }
    for (const host of HOSTS) {
      const status = JSON.parse(await ok(host, '-j', 'status'));
      expect(status.counts.lookup_records).toBe(VMS.length + (GATEWAY_RECORDS[host] ? 1 : 0));
      expect(status.counts.customer_routes).toBe(CUSTOMER_ROUTES.length);
      expect(status.ports.every((p: { up: boolean }) => p.up)).toBe(true);
    }
    const shown = await ok('host1', 'lookup', 'show', 'vsid', '6000', 'pa', '192.168.0.33');
    expect(shown.trim()).toBe('10.0.1.103 vsid 6000 mac 60:00:60:00:02:03 pa 192.168.0.33 rule encap type static vm Contoso3');
    await configureVms(lab);
  });

  it('answers route get like Select-NetVirtualizationNextHop', async () => {
    expect((await ok('host1', 'route', 'get', '10.1.3.100', 'vsid', '6000')).trim()).toMatch(
      /^10\.1\.3\.100 vsid 6000 via 10\.0\.2\.2 vsid 6001 mac 60:01:60:01:03:01 pa 192\.168\.0\.11 encap/,
    );
    const drop = JSON.parse(await ok('host1', '-j', 'route', 'get', '10.0.1.200', 'vsid', '6000'));
    expect(drop).toMatchObject({ action: 'drop', drop_reason: 'no_lookup_record' });
  });

  it('carries every ping of the spec, and keeps the tenants apart', async () => {
    const reach = async (from: string, to: string) => (await ping(lab.ns(from), to, { count: 3 })).received;
    for (const v of VMS) expect(await reach(v.role, v.gateway), `${v.role} -> ${v.gateway}`).toBeGreaterThan(0);
    expect(await reach('contoso1', vm('contoso2').ip)).toBeGreaterThan(0);
    expect(await reach('contoso1', vm('contoso3').ip)).toBeGreaterThan(0);
    expect(await reach('contoso3', vm('mtgw').ip)).toBeGreaterThan(0);
    expect(await reach('contoso1', '10.1.3.100')).toBeGreaterThan(0);
    expect(await reach('server', vm('contoso1').ip)).toBeGreaterThan(0);
    expect(await reach('fabrikam1', vm('fabrikam3').ip)).toBeGreaterThan(0);
    expect(await reach('fabrikam1', '10.1.3.100')).toBe(0);
  });

  it('migrates Contoso3 from Host 2 to the gateway host: the next packet goes to the new PA', async () => {
    const c3 = vm('contoso3');
    // The VM moves: its adapter goes from Host 2 to the gateway host, same namespace, same MAC.
    await ok('host2', 'adapter', 'del', c3.tap);
    await ok('gwhost', 'adapter', 'add', c3.tap, 'mac', c3.mac, 'vsid', '6000', 'netns', lab.ns('contoso3'));
    await configureVms(lab, { vms: ['contoso3'] });
    // Policy follows: every host's lookup record now names the gateway host's PA.
    const capture = await lab.capture(UNDERLAY_NS, UNDERLAY_BRIDGE, join(dir, 'migration.pcap'));
    for (const host of ['gwhost', 'host2'] as const) await ok(host, 'lookup', 'change', c3.ip, 'vsid', '6000', 'pa', '192.168.0.11');
    await ok('host1', 'lookup', 'change', c3.ip, 'vsid', '6000', 'pa', '192.168.0.11');
    // The first packet after the change on Host 1 is acknowledged already goes to the new PA.
    const p = await ping(lab.ns('contoso1'), c3.ip, { count: 5 });
    await new Promise((r) => setTimeout(r, 300));
    await lab.stop(capture);
    expect(p.received).toBe(5);
    const r = await run(['tshark', '-n', '-r', join(dir, 'migration.pcap'), '-Y', `gre && ip.src == 192.168.0.22 && eth.dst == ${c3.mac}`, '-T', 'fields', '-e', 'ip.dst'], {
      check: true,
    });
    const dsts = r.stdout.split('\n').filter(Boolean).map((l) => l.split(',')[0]);
    expect(dsts.length).toBe(5);
    expect(new Set(dsts)).toEqual(new Set(['192.168.0.11']));
    expect((await ok('host1', 'route', 'get', c3.ip, 'vsid', '6000')).trim()).toContain('pa 192.168.0.11');
  });

  it('keeps the policy built through the CLI across a restart, and saves it as a config file', async () => {
    const before = await ok('host1', '-j', 'config', 'show');
    const proc = daemons.get('host1')!;
    expect((await lab.stop(proc)).code).toBe(0);
    const again = await lab.spawn('host1', [process.execPath, DAEMON, '--config', join(dir, 'host1.yaml')]);
    await again.waitForLine((l) => l.includes('"msg":"ready"'), 20_000);
    daemons.set('host1', again);
    expect(await ok('host1', '-j', 'config', 'show')).toBe(before);
    const saved = join(dir, 'host1-saved.yaml');
    await ok('host1', 'config', 'save', saved);
    expect((await nvgrectl('host1', 'config', 'check', saved)).code).toBe(0);
  });
});
