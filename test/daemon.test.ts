// The daemon's life cycle in a namespace of its own: a bad config is refused
// whole (the error names the field and value, nothing is placed), a failure
// part way through start is rolled back, and a clean stop removes the PA and
// every TAP.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipv4Addrs, linkExists, run } from '../lab/netns.js';
import { packageRoot } from '../src/native.js';
import { scratchDir } from './helpers/scratch.js';

const DAEMON = join(packageRoot(), 'dist', 'src', 'daemon', 'main.js');
const lab = new Lab(`nvd${process.pid % 10000}-`);
const dir = scratchDir('daemon');
let host: string;
let vm: string;

const RD = '{12345678-1000-2000-3000-123456780001}';
const good = () => `
host: { name: t }
provider_addresses:
  - { address: 192.168.0.22, prefix_length: 24, interface: eth1 }
customer_routes:
  - { routing_domain: "${RD}", vsid: 6000, destination_prefix: 10.0.1.0/24, next_hop: 0.0.0.0 }
lookup_records:
  - { customer_address: 10.0.1.101, vsid: 6000, mac: "60:00:60:00:01:01", provider_address: 192.168.0.22 }
vm_adapters:
  - { name: vm1, vm_name: Vm1, mac: "60:00:60:00:01:01", vsid: 6000, netns: ${vm} }
api: { socket: ${dir}/api.sock }
`;

function configFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Run the daemon to completion in the host namespace (it must exit by itself). */
async function runDaemon(config: string, args: string[] = []) {
  const r = await run(['ip', 'netns', 'exec', host, process.execPath, DAEMON, '--config', config, ...args], { timeoutMs: 20_000 });
  const lines = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code: r.code, lines, stderr: r.stderr };
}

async function nothingPlaced(): Promise<void> {
  expect(await ipv4Addrs(host, 'eth1')).toEqual([]);
  expect(await linkExists(vm, 'vm1')).toBe(false);
  expect(await linkExists(host, 'nvgso0'), 'the GSO port').toBe(false);
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  host = await lab.addNamespace('host');
  vm = await lab.addNamespace('vm');
  await lab.veth('host', 'eth1', 'host', 'eth1peer');
  await lab.up('host', 'eth1');
  await lab.up('host', 'eth1peer');
});

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

describe('nvgred --config', () => {
  const bad: Array<[string, string, string, string]> = [
    ['reserved VSID', good().replace('vsid: 6000, destination', 'vsid: 4095, destination'), 'customer_routes[0].vsid', '4095'],
    ['multicast MAC', good().replace('mac: "60:00:60:00:01:01", vsid', 'mac: "61:00:60:00:01:01", vsid'), 'vm_adapters[0].mac', '61:00:60:00:01:01'],
    ['host bits in a prefix', good().replace('10.0.1.0/24', '10.0.1.7/24'), 'customer_routes[0].destination_prefix', '10.0.1.7/24'],
    ['provider address VLAN out of range', good().replace('interface: eth1 }', 'interface: eth1, vlan_id: 4095 }'), 'provider_addresses[0].vlan_id', '4095'],
    ['unknown key', good().replace('host: { name: t }', 'host: { name: t, colour: blue }'), 'host.colour', 'colour'],
    ['VSID without a routing domain', good().replace('provider_address: 192.168.0.22 }', 'provider_address: 192.168.0.22 }\n  - { customer_address: 10.0.1.9, vsid: 6009, mac: "60:00:60:00:01:09", provider_address: 192.168.0.33 }'), 'lookup_records[1].vsid', '6009'],
  ];
  for (const [what, text, path, value] of bad) {
    it(`refuses a config with a ${what}, naming the field, and places nothing`, async () => {
      const r = await runDaemon(configFile(`${what.replace(/\W/g, '_')}.yaml`, text));
      expect(r.code).toBe(2);
      const fatal = r.lines.find((l) => l.level === 'fatal');
      expect(fatal, r.stderr).toBeDefined();
      const errors = fatal!.errors as Array<{ path: string; message: string; code: string }>;
      const e = errors.find((x) => x.path === path);
      expect(e, JSON.stringify(errors)).toBeDefined();
      expect(e!.message).toContain(value);
      expect(e!.code).toMatch(/^NVGRE_ERR_/);
      await nothingPlaced();
    });
  }

  for (const [option, value] of [
    ['--segmentation', 'hardware'],
    ['--poll-us', 'soon'],
    ['--poll-us', '2000000'],
    ['--workers', '0'],
  ]) {
    it(`refuses ${option} ${value} with a usage error naming it, and places nothing`, async () => {
      const r = await runDaemon(configFile('good.yaml', good()), [option!, value!]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`bad ${option} ${value}`);
      await nothingPlaced();
    });
  }

  it('rolls back what it placed when start fails part way', async () => {
    // The PA goes on first; the TAP's namespace does not exist, so the port fails.
    const r = await runDaemon(configFile('missing-ns.yaml', good().replace(`netns: ${vm}`, `netns: ${lab.prefix}nowhere`)));
    expect(r.code).toBe(1);
    expect(JSON.stringify(r.lines.find((l) => l.level === 'fatal'))).toContain('nowhere');
    await nothingPlaced();
  });

  it('starts, places the PA, the TAP and its GSO port, and removes them on SIGTERM', async () => {
    const proc = await lab.spawn('host', [process.execPath, DAEMON, '--config', configFile('good.yaml', good())]);
    await proc.waitForLine((l) => l.includes('"msg":"ready"'), 15_000);
    expect(await ipv4Addrs(host, 'eth1')).toEqual(['192.168.0.22/24']);
    expect(await linkExists(vm, 'vm1')).toBe(true);
    expect(await linkExists(host, 'nvgso0')).toBe(true);
    const up = proc.tail(400).split('\n').find((l) => l.includes('"msg":"vm adapter up"'));
    expect(JSON.parse(up!), 'the VM name labels its adapter in the log').toMatchObject({ adapter: 'vm1', vm: 'Vm1' });
    const stopped = await lab.stop(proc, { timeoutMs: 5000 });
    expect(stopped.code).toBe(0);
    expect(stopped.escalated).toBe(false);
    await nothingPlaced();
  });
});
