// Who cuts a VM's large TCP segments (TAP offload, up to 64 KB) into NVGRE
// packets the underlay carries, and that every way delivers the same bytes:
// - by default the segment leaves whole through nvgred's GSO port
//   (native/src/io/gso.rs) and the kernel cuts it only if the path needs it:
//   the lab's host eth1s have no offloads (a NIC without GRE segmentation),
//   so the wire carries MTU-sized NVGRE packets with complete checksums;
// - with offloads on (veth's default, a NIC with GRE segmentation) the
//   packet crosses whole and the receiving host reads it whole;
// - cut by the kernel with checksum offload left on (what veth allows), the
//   packets arrive with their inner checksums to finish;
// - with `--segmentation userspace` nvgred cuts it itself.
// Each moves 100 MB from Contoso1 to Contoso3 (SHA-256 at both ends), and
// the underlay capture shows what crossed.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, metricDelta, scrapeMetrics, tcpTransfer, type Scrape } from '../lab/netns.js';
import { captureDuring, readGre, tsharkCount } from '../lab/pcap.js';
import { setUnderlayOffloads, setUpLab, UNDERLAY_BRIDGE, UNDERLAY_NS, vm, type HostName, type LabSetUp } from '../lab/topology.js';
import { scratchDir } from './helpers/scratch.js';

const MB100 = 100_000_000;
const MB5 = 5_000_000;
/** Longer than a full 1500-byte IP packet in an Ethernet frame. */
const OVERSIZED = 'greater 1515';

function useLab(tag: string, daemonArgs: string[] = []) {
  const lab = new Lab(`nvseg${tag}${process.pid % 1000}-`);
  const out = scratchDir(`segmentation-${tag}`);
  let setup: LabSetUp;
  let windows = 0;
  beforeAll(async () => {
    setup = await setUpLab(lab, { outDir: out, daemonArgs });
  }, 120_000);
  afterAll(async () => {
    const report = await lab.teardown();
    expect(report.errors).toEqual([]);
  });
  const metrics = (host: HostName): Promise<Scrape> => scrapeMetrics(lab.ns(host));
  return {
    lab,
    /** What the daemon on `host` logged about segmentation when it started. */
    segmentation: (host: HostName): string => {
      const line = readFileSync(setup.daemons.find((d) => d.host === host)!.logFile, 'utf8')
        .split('\n')
        .find((l) => l.includes('"packet workers started"'));
      return line ? (JSON.parse(line) as { segmentation: string }).segmentation : '';
    },
    /** Move `bytes` from Contoso1 (Host 1) to Contoso3 (Host 2), capturing the underlay (optionally only `filter`). */
    async transfer(bytes: number, filter?: string) {
      const file = join(out, `window-${windows++}.pcap`);
      const before = { host1: await metrics('host1'), host2: await metrics('host2') };
      const x = await captureDuring(lab, UNDERLAY_NS, UNDERLAY_BRIDGE, file, () => tcpTransfer(lab, 'contoso1', 'contoso3', vm('contoso3').ip, bytes, { timeoutMs: 120_000 }), filter ? { filter } : {});
      const after = { host1: await metrics('host1'), host2: await metrics('host2') };
      const delta = (host: 'host1' | 'host2', name: string) => metricDelta(before[host], after[host], name);
      expect(x.sent.bytes).toBe(bytes);
      expect(x.received.bytes).toBe(bytes);
      expect(x.received.sha256).toBe(x.sent.sha256);
      return {
        file,
        mbitPerS: x.mbitPerS,
        /** Host 1: segments sent whole for the kernel to cut; segments nvgred cut. Host 2: packets received larger than the wire. */
        kernelCut: delta('host1', 'nvgre_underlay_gso_frames_total'),
        nvgredCut: delta('host1', 'nvgre_tso_frames_total'),
        receivedWhole: delta('host2', 'nvgre_underlay_gro_packets_total'),
        drops: delta('host1', 'nvgre_dropped_packets_total') + delta('host2', 'nvgre_dropped_packets_total'),
      };
    },
  };
}

describe('segmentation by the kernel (the default)', () => {
  const t = useLab('k');

  it('is what the daemons use on this kernel', () => {
    expect(t.segmentation('host1')).toMatch(/^kernel \(through nvgso\d+\)$/);
  });

  it('a NIC without GRE offload: the wire carries MTU-sized NVGRE packets with valid inner checksums', async () => {
    const r = await t.transfer(MB5);
    const rows = await readGre(r.file);
    const data = rows.filter((f) => f.outer.src === '192.168.0.22' && f.len > 1000);
    const checked = await tsharkCount(r.file, 'gre && tcp.len > 0', { checksums: true });
    const bad = await tsharkCount(r.file, 'gre && (tcp.checksum.status != 1 || ip.checksum.status == 0)', { checksums: true });
    console.log(`kernel-cut: ${r.kernelCut} segments sent whole, ${r.nvgredCut} cut by nvgred; ${data.length} data packets on the wire, largest ${Math.max(...rows.map((f) => f.len))} bytes; ${checked} TCP data packets checked, ${bad} bad checksums`);
    expect(r.kernelCut).toBeGreaterThan(10);
    expect(r.nvgredCut).toBe(0);
    expect(r.drops).toBe(0);
    expect(data.length).toBeGreaterThan(MB5 / 1500);
    expect(rows.every((f) => f.len <= 1514), 'every packet fits a 1500-byte wire').toBe(true);
    expect(data.every((f) => f.vsid === 6000 && f.greProto === 0x6558 && f.outer.dst === '192.168.0.33')).toBe(true);
    expect(checked).toBeGreaterThan(MB5 / 1500);
    expect(bad, 'inner TCP and IP checksums tshark finds bad').toBe(0);
  });

  it('moves 100 MB intact', async () => {
    const r = await t.transfer(MB100, OVERSIZED);
    console.log(`kernel-cut, 100 MB: ${r.mbitPerS.toFixed(0)} Mbit/s, ${r.kernelCut} segments sent whole`);
    expect(r.kernelCut).toBeGreaterThan(100);
    expect(await tsharkCount(r.file, 'frame')).toBe(0);
  });

  it('a NIC with GRE offload (offloads on all the way): packets cross whole and arrive whole', async () => {
    await setUnderlayOffloads(t.lab, 'host1', 'on');
    try {
      const r = await t.transfer(MB100, OVERSIZED);
      const whole = await readGre(r.file);
      console.log(`offloads on, 100 MB: ${r.mbitPerS.toFixed(0)} Mbit/s; ${r.kernelCut} segments sent whole, ${r.receivedWhole} received whole; largest on the wire ${Math.max(...whole.map((f) => f.len))} bytes`);
      expect(r.kernelCut).toBeGreaterThan(100);
      expect(r.receivedWhole).toBeGreaterThan(100);
      expect(whole.length).toBeGreaterThan(100);
      expect(whole.every((f) => f.vsid === 6000 && f.greProto === 0x6558)).toBe(true);
    } finally {
      await setUnderlayOffloads(t.lab, 'host1', 'off');
    }
  });

  it('cut by the kernel with inner checksums left partial (checksum offload on a virtual link): they arrive and go up to finish', async () => {
    await setUnderlayOffloads(t.lab, 'host1', 'checksum');
    try {
      const r = await t.transfer(MB5);
      const partial = await tsharkCount(r.file, 'gre && tcp.len > 0 && tcp.checksum.status == 0', { checksums: true });
      console.log(`checksum offload on, 5 MB: ${r.kernelCut} segments sent whole; ${partial} TCP data packets on the wire with a partial checksum`);
      expect(r.kernelCut).toBeGreaterThan(10);
      expect(partial, 'the case this test is about happened').toBeGreaterThan(100);
      expect(r.drops).toBe(0);
    } finally {
      await setUnderlayOffloads(t.lab, 'host1', 'off');
    }
  });
});

describe('segmentation by nvgred (--segmentation userspace)', () => {
  const t = useLab('u', ['--segmentation', 'userspace']);

  it('is what the daemons use', () => {
    expect(t.segmentation('host1')).toBe('userspace');
  });

  it('moves 100 MB intact in MTU-sized packets nvgred cut', async () => {
    const r = await t.transfer(MB100, OVERSIZED);
    console.log(`nvgred-cut, 100 MB: ${r.mbitPerS.toFixed(0)} Mbit/s, ${r.nvgredCut} segments cut by nvgred`);
    expect(r.nvgredCut).toBeGreaterThan(100);
    expect(r.kernelCut).toBe(0);
    expect(r.drops).toBe(0);
    expect(await tsharkCount(r.file, 'frame')).toBe(0);
  });
});
