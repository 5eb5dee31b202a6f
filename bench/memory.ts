// make bench-memory: the daemon's resident memory (RSS, the control plane's
// copy of the policy included) idle, with 1,000,000 lookup records loaded,
// and over a sustained run under traffic (BENCH_SOAK_SECONDS, default 300):
// sampled every 10 s, it must not grow. Namespaces only, removed at the end.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIG_RD, bigLookupRecords } from './bigpolicy.js';
import { Lab, installSignalTeardown, nsExec, procUsage, repoRoot, sleep, type LabProcess } from '../lab/netns.js';
import { runMain } from './common.js';

const PREFIX = 'nvm-';
const RECORDS = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const SOAK_SECONDS = Number(process.env.BENCH_SOAK_SECONDS ?? 300);

function rssMiB(pid: number): number {
  return procUsage(pid).rssKiB / 1024;
}

/**
 * A host config: `records` remote VMs in 10.0.0.0/8 beside the two of the
 * test. Written as JSON (valid YAML): the YAML parser's tree of a million
 * records would not fit the heap.
 */
function config(out: string, host: 1 | 2, records: number, netns: string): string {
  const lookup_records = [
    { customer_address: '10.9.0.11', vsid: 6000, mac: '60:00:60:00:09:01', provider_address: '192.168.9.1' },
    { customer_address: '10.9.0.12', vsid: 6000, mac: '60:00:60:00:09:02', provider_address: '192.168.9.2' },
    ...bigLookupRecords(records, new Set(['10.9.0.11', '10.9.0.12'])),
  ];
  const doc = {
    host: { name: `mem-host${host}` },
    provider_addresses: [{ address: `192.168.9.${host}`, prefix_length: 24, interface: 'eth1' }],
    customer_routes: [{ routing_domain: BIG_RD, vsid: 6000, destination_prefix: '10.0.0.0/8', next_hop: '0.0.0.0' }],
    lookup_records,
    vm_adapters: [{ name: 'eth0', mac: `60:00:60:00:09:0${host}`, vsid: 6000, netns }],
    api: { socket: join(out, `mem${host}.sock`) },
  };
  const file = join(out, `mem-host${host}-${records}.json`);
  writeFileSync(file, JSON.stringify(doc));
  return file;
}

async function daemon(lab: Lab, host: 1 | 2, file: string, out: string): Promise<{ proc: LabProcess; seconds: number }> {
  const t0 = Date.now();
  const proc = await lab.spawn(`host${host}`, [process.execPath, join(repoRoot(), 'dist/src/daemon/main.js'), '--config', file], {
    logFile: join(out, `mem-host${host}.log`),
  });
  await proc.waitForLine((l) => l.includes('"msg":"ready"'), 600_000);
  return { proc, seconds: (Date.now() - t0) / 1000 };
}

async function main(): Promise<number> {
  const out = join(repoRoot(), 'bench', 'out');
  mkdirSync(out, { recursive: true });
  await Lab.cleanStale(PREFIX);
  const lab = new Lab(PREFIX);
  const uninstall = installSignalTeardown(lab);
  try {
    for (const n of ['host1', 'host2', 'vm1', 'vm2']) await lab.addNamespace(n);
    await lab.veth('host1', 'eth1', 'host2', 'eth1');
    await lab.up('host1', 'eth1');
    await lab.up('host2', 'eth1');

    // Idle: the same daemon with only the test's two records.
    const idle = await daemon(lab, 1, config(out, 1, 0, lab.ns('vm1')), out);
    await sleep(2000);
    const idleRss = rssMiB(idle.proc.pid);
    await lab.stop(idle.proc);

    const big = await daemon(lab, 1, config(out, 1, RECORDS, lab.ns('vm1')), out);
    await sleep(2000);
    const bigRss = rssMiB(big.proc.pid);
    console.log(`idle: ${idleRss.toFixed(0)} MiB RSS; with ${RECORDS} lookup records: ${bigRss.toFixed(0)} MiB (loaded in ${big.seconds.toFixed(1)} s)`);

    // Soak: traffic between the two VMs for SOAK_SECONDS, RSS of both daemons sampled.
    const peer = await daemon(lab, 2, config(out, 2, 0, lab.ns('vm2')), out);
    await lab.addr('vm1', 'eth0', '10.9.0.11/8');
    await lab.addr('vm2', 'eth0', '10.9.0.12/8');
    await nsExec(lab.ns('vm1'), ['ping', '-c', '3', '-i', '0.2', '10.9.0.12'], { timeoutMs: 10_000 });
    const server = await lab.spawn('vm2', ['iperf3', '-s', '-B', '10.9.0.12']);
    await sleep(300);
    const samples: Array<[number, number, number]> = [];
    const t0 = Date.now();
    while ((Date.now() - t0) / 1000 < SOAK_SECONDS) {
      // Alternate TCP and 64-byte UDP floods, 10 s at a time.
      const udp = samples.length % 2 === 1 ? ['-u', '-l', '64', '-b', '0'] : [];
      await nsExec(lab.ns('vm1'), ['iperf3', '-c', '10.9.0.12', '-t', '10', ...udp], { timeoutMs: 30_000 });
      samples.push([Math.round((Date.now() - t0) / 1000), rssMiB(big.proc.pid), rssMiB(peer.proc.pid)]);
      console.log(`t=${samples.at(-1)![0]}s RSS host1 ${samples.at(-1)![1].toFixed(0)} MiB, host2 ${samples.at(-1)![2].toFixed(0)} MiB`);
    }
    await lab.stop(server);
    // Growth: the last third against the first third (warm-up excluded), per daemon.
    const third = Math.max(1, Math.floor(samples.length / 3));
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const growth = [1, 2].map((k) => avg(samples.slice(-third).map((s) => s[k]!)) - avg(samples.slice(0, third).map((s) => s[k]!)));
    const result = { date: new Date().toISOString(), records: RECORDS, idle_rss_mib: idleRss, loaded_rss_mib: bigRss, load_seconds: big.seconds, soak_seconds: SOAK_SECONDS, samples, growth_mib: growth };
    writeFileSync(join(out, `memory-${result.date.replace(/[:.]/g, '-')}.json`), JSON.stringify(result, null, 2));
    console.log(`\nRSS idle ${idleRss.toFixed(0)} MiB; with ${RECORDS} records ${bigRss.toFixed(0)} MiB; over ${SOAK_SECONDS} s of traffic: host1 ${growth[0]!.toFixed(1)} MiB, host2 ${growth[1]!.toFixed(1)} MiB (last third vs first third)`);
    return 0;
  } finally {
    await lab.teardown();
    uninstall();
  }
}

runMain(main);
