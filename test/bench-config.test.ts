// The configs the benchmarks give nvgred (bench/common.ts writeBenchConfig):
// each adapter kind bench/run.ts and bench/vms.ts use, and a PA on a VLAN,
// load as nvgred loads them, with what the benchmark meant.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PA1, PA2, VM1, VM2, VM_MACS, VSID, benchCa, benchMac, benchVsid, processCpuSeconds, writeBenchConfig } from '../bench/common.js';
import { loadConfigText } from '../src/config/index.js';
import { scratchDir } from './helpers/scratch.js';

const out = scratchDir('bench-config');
const load = (file: string) => loadConfigText(readFileSync(file, 'utf8'), file);

describe('bench configs', () => {
  it('a created TAP in the VM namespace (bench/run.ts), untagged', () => {
    const { file, socket } = writeBenchConfig(out, 0, [{ name: 'eth0', netns: 'nvb-vm1' }]);
    const p = load(file);
    expect(p.provider_addresses).toMatchObject([{ address: PA1, prefix_length: 24, interface: 'eth1', vlan_id: 0 }]);
    expect(p.vm_adapters).toMatchObject([{ name: 'eth0', netns: 'nvb-vm1', mac: VM_MACS[0], vsid: VSID }]);
    expect(p.vm_adapters[0]!.mode ?? 'tap').toBe('tap');
    expect(p.lookup_records.map((r) => [r.customer_address, r.provider_address])).toEqual([
      [VM1, PA1],
      [VM2, PA2],
    ]);
    expect(p.api?.socket).toBe(socket);
  });

  it('the PA on a VLAN (nvgred-vlan)', () => {
    const p = load(writeBenchConfig(out, 1, [{ name: 'eth0', netns: 'nvb-vm2' }], { vlan: 100 }).file);
    expect(p.provider_addresses).toMatchObject([{ address: PA2, interface: 'eth1', vlan_id: 100 }]);
  });

  it("QEMU's vhost-user socket and QEMU's TAP adopted (bench/vms.ts), each VM's on a customer network of its own", () => {
    const p = load(writeBenchConfig(out, 1, [{ name: 'g2v', mode: 'vhost_user', socket: '/run/x/g2v.vhost.sock' }, { name: 'g2a', mode: 'attach' }]).file);
    expect(p.vm_adapters).toMatchObject([
      { name: 'g2v', mode: 'vhost_user', socket: '/run/x/g2v.vhost.sock', mac: benchMac(0, 1), vsid: benchVsid(0) },
      { name: 'g2a', mode: 'attach', mac: benchMac(1, 1), vsid: benchVsid(1) },
    ]);
    expect(p.customer_routes.map((r) => [r.vsid, r.destination_prefix])).toEqual([
      [6000, '10.9.0.0/24'],
      [6001, '10.9.1.0/24'],
    ]);
    expect(p.lookup_records.map((r) => [r.customer_address, r.vsid, r.mac, r.provider_address])).toEqual([
      [VM1, 6000, VM_MACS[0], PA1],
      [VM2, 6000, VM_MACS[1], PA2],
      [benchCa(1, 0), 6001, benchMac(1, 0), PA1],
      [benchCa(1, 1), 6001, benchMac(1, 1), PA2],
    ]);
    expect(new Set([...VM_MACS, benchMac(1, 0), benchMac(1, 1)]).size).toBe(4);
  });
});

describe('processCpuSeconds', () => {
  it("reads this process's user + system time as getrusage counts it", () => {
    const used = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    };
    const start = used();
    let x = 0;
    while (used() - start < 0.2) x += Math.sqrt(x + 1); // some CPU time, however loaded the machine
    const [rusage, stat] = [used(), processCpuSeconds(process.pid)];
    expect(x).toBeGreaterThan(0);
    // /proc counts in 10 ms ticks.
    expect(Math.abs(stat - rusage)).toBeLessThan(0.05);
  });
});
