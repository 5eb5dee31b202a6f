// --workers 2 on the reference topology: two worker threads per daemon,
// each with its own queue of every multi-queue TAP and its own underlay
// socket (packets steered to it by FlowID). What must hold: every byte of
// parallel TCP flows arrives (SHA-256 at both ends), no flow is reordered
// on its way (a flow stays on one worker: tshark finds no out-of-order
// segment at the receiving VM), and the flows do spread over both workers
// (nvgre_worker_received_packets_total).

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, metricSum, nsExec, run, scrapeMetrics, tcpTransfer, type Scrape } from '../lab/netns.js';
import { setUpLab, vm, type HostName } from '../lab/topology.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvw${process.pid % 1000}-`);
const out = scratchDir('workers');
const FLOWS = 4;
const BYTES = 20_000_000;

const perWorker = (m: Scrape, worker: number) => metricSum(m, 'nvgre_worker_received_packets_total', `worker="${worker}"`);
const metrics = (h: HostName) => scrapeMetrics(lab.ns(h));

beforeAll(async () => {
  await setUpLab(lab, { outDir: out, daemonArgs: ['--workers', '2'] });
}, 120_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

describe('two workers per daemon', () => {
  it('every VM adapter is a multi-queue TAP with one queue per worker', async () => {
    for (const role of ['contoso1', 'contoso3']) {
      const r = await ipIn(lab.ns(role), ['-d', 'link', 'show', vm(role).tap], { check: true });
      expect(r.stdout, role).toMatch(/multi_queue numqueues 2 /);
    }
  });

  it(`${FLOWS} parallel TCP flows across hosts: every byte arrives, none out of order at the receiving VM`, async () => {
    const from = 'contoso1';
    const to = 'contoso3';
    const file = join(out, 'contoso3-tap.pcap');
    const cap = await lab.capture(lab.ns(to), vm(to).tap, file, { filter: 'tcp', snaplen: 128 });
    const results = await Promise.all(
      Array.from({ length: FLOWS }, (_, i) => tcpTransfer(lab, from, to, vm(to).ip, BYTES, { port: 5301 + i, timeoutMs: 120_000 })),
    );
    await lab.stop(cap, { signal: 'SIGINT', timeoutMs: 10_000 });
    for (const x of results) {
      expect(x.sent.bytes).toBe(BYTES);
      expect(x.received.bytes).toBe(BYTES);
      expect(x.received.sha256).toBe(x.sent.sha256);
    }
    const tshark = async (filter: string) =>
      (await run(['tshark', '-n', '-r', file, '-Y', filter, '-T', 'fields', '-e', 'frame.number'], { check: true, timeoutMs: 60_000 })).stdout.split('\n').filter(Boolean).length;
    const segments = await tshark(`tcp.len > 0 && tcp.dstport >= 5301 && tcp.dstport < ${5301 + FLOWS}`);
    const outOfOrder = await tshark('tcp.analysis.out_of_order');
    console.log(`${FLOWS} x ${BYTES} bytes with --workers 2: ${segments} data segments at contoso3's adapter, ${outOfOrder} out of order; ${results.map((x) => `${x.mbitPerS.toFixed(0)}`).join(' + ')} Mbit/s`);
    expect(segments).toBeGreaterThan(FLOWS * 10);
    expect(outOfOrder).toBe(0);
  });

  it('sixteen flows spread over both workers of both hosts', async () => {
    const before = { host1: await metrics('host1'), host2: await metrics('host2') };
    const server = await lab.spawn('contoso3', ['iperf3', '-s', '-1', '-B', vm('contoso3').ip]);
    await new Promise((r) => setTimeout(r, 500));
    await nsExec(lab.ns('contoso1'), ['iperf3', '-c', vm('contoso3').ip, '-P', '16', '-t', '3', '-l', '16K'], { check: true, timeoutMs: 30_000 });
    await lab.stop(server, { timeoutMs: 5000 });
    const spread: string[] = [];
    for (const h of ['host1', 'host2'] as const) {
      const after = await metrics(h);
      const got = [0, 1].map((w) => perWorker(after, w) - perWorker(before[h], w));
      spread.push(`${h}: worker 0 ${got[0]}, worker 1 ${got[1]}`);
      for (const n of got) expect(n, `${h}: ${spread.at(-1)}`).toBeGreaterThan(100);
    }
    console.log(`16 iperf3 flows, packets read per worker: ${spread.join('; ')}`);
  });
});
