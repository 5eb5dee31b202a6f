// NVGRE packets merged on receive. NIC drivers merge consecutive packets of
// a flow (GRO), and the kernel's GRE offload does it for NVGRE too: nvgred's
// underlay socket then reads one packet of up to 64 KB carrying one TCP
// segment far larger than the wire's, with its checksum in partial form. It
// must reach the VM as a large segment the VM's stack accepts (a TSO frame
// with "checksum to finish"), not as an oversized frame with a checksum that
// fails. Host 2's underlay interface merges here as a NIC would
// (enableUnderlayGro); 100 MB cross from Contoso1 to Contoso3, SHA-256 at
// both ends, and the merged packets are counted.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, metricDelta, scrapeMetrics, tcpTransfer } from '../lab/netns.js';
import { enableUnderlayGro, setUpLab, vm } from '../lab/topology.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvr${process.pid % 1000}-`);
const out = scratchDir('gro');
const MB100 = 100_000_000;

beforeAll(async () => {
  await setUpLab(lab, { outDir: out });
  await enableUnderlayGro(lab, 'host2');
}, 120_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
});

describe('GRO on the underlay', () => {
  it('100 MB of TCP arrive intact at a VM whose host receives merged NVGRE packets', async () => {
    const before = await scrapeMetrics(lab.ns('host2'));
    const x = await tcpTransfer(lab, 'contoso1', 'contoso3', vm('contoso3').ip, MB100, { timeoutMs: 120_000 });
    const after = await scrapeMetrics(lab.ns('host2'));
    const merged = metricDelta(before, after, 'nvgre_underlay_gro_packets_total');
    const decap = metricDelta(before, after, 'nvgre_decap_packets_total');
    console.log(`GRO: ${x.received.bytes} bytes in ${x.received.ms.toFixed(0)} ms (${x.mbitPerS.toFixed(0)} Mbit/s); host 2 read ${decap} packets, ${merged} of them merged by the kernel`);
    expect(x.sent.bytes).toBe(MB100);
    expect(x.received.bytes).toBe(MB100);
    expect(x.received.sha256).toBe(x.sent.sha256);
    // The merging did happen (otherwise this tests nothing).
    expect(merged).toBeGreaterThan(100);
  });
});
