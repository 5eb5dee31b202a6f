// The lab's QEMU guest on its own (no nvgred): the image built from Debian
// packages (cached), booted under TCG on a TAP in a namespace of the test,
// driven over its serial console. What `make lab` and `make bench` rely on:
// the command channel, the NIC configured from the kernel command line, ping
// and TCP both ways (SHA-256 at both ends), iperf3, a restart, and how the
// TAP behaves (who creates and deletes it, what vnet_hdr lets through). The
// vhost-user netdev is only started: without a backend QEMU must wait.

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ipIn, ipv4Addrs, linkExists, linkStats, listLinks, ping, tcpReceiver, tcpSend, waitFor } from '../lab/netns.js';
import { guestPing, guestTcpListen, guestTcpSend } from '../lab/vm/guest.js';
import { buildImage, type VmImage } from '../lab/vm/image.js';
import { Vm, vmRunDir } from '../lab/vm/qemu.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvq${process.pid % 1000}-`);
const out = scratchDir('vm-guest');
const MB16 = 16_000_000;

let image: VmImage;
let runDir: string;
/** On TAP `tap1`, which QEMU creates (and deletes); vnet_hdr off. */
let g1: Vm;
/** On TAP `tap2`, created persistent by the test before QEMU opens it; vnet_hdr on. */
let g2: Vm;

/** The host side of a TAP: address and up (a TAP QEMU creates is down and bare). */
async function hostSide(ns: string, tap: string, cidr: string): Promise<void> {
  await waitFor(() => linkExists(lab.ns(ns), tap), 15_000, { what: `TAP ${tap} in ${lab.ns(ns)}` });
  if (!(await ipv4Addrs(lab.ns(ns), tap)).includes(cidr)) await lab.addr(ns, tap, cidr);
  await lab.up(ns, tap);
}

async function link(ns: string, tap: string) {
  return (await listLinks(lab.ns(ns))).find((l) => l.ifname === tap);
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  const t0 = Date.now();
  image = await buildImage({ log: (m) => console.log(m) });
  console.log(`guest image ${image.dir} (${image.built ? 'built' : 'cached'}) in ${Date.now() - t0} ms; initrd ${image.initrdBytes} bytes`);
  runDir = vmRunDir(lab);
  await lab.addNamespace('h1');
  await lab.addNamespace('h2');
  await lab.exec(['ip', '-n', lab.ns('h2'), 'tuntap', 'add', 'dev', 'tap2', 'mode', 'tap']);
  await hostSide('h2', 'tap2', '10.0.2.1/24');
  g1 = new Vm(lab, image, { name: 'g1', ns: 'h1', net: { kind: 'tap', ifname: 'tap1' }, mac: '52:54:00:00:01:01', ip: '10.0.1.201/24', gw: '10.0.1.1' }, { logDir: out });
  g2 = new Vm(lab, image, { name: 'g2', ns: 'h2', net: { kind: 'tap', ifname: 'tap2', vnetHdr: true }, mac: '52:54:00:00:02:01', ip: '10.0.2.201/24', gw: '10.0.2.1' }, { logDir: out });
  await Promise.all([g1.start(), g2.start()]);
  await hostSide('h1', 'tap1', '10.0.1.1/24');
  const [b1, b2] = await Promise.all([g1.waitBooted(), g2.waitBooted()]);
  console.log(`booted (two at once): g1 ${b1} ms (guest uptime ${g1.readyUptime} s at /init's ready), g2 ${b2} ms (${g2.readyUptime} s)`);
}, 300_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
  expect(existsSync(runDir)).toBe(false);
}, 60_000);

describe('guest image', () => {
  it('comes from the cache the second time, named by its inputs', async () => {
    const again = await buildImage();
    expect(again.built).toBe(false);
    expect(again.key).toBe(image.key);
    expect(again.dir).toBe(image.dir);
    expect(Object.keys(again.packages)).toEqual(expect.arrayContaining(['busybox-static', 'iperf3', 'ethtool']));
    expect(Object.keys(again.packages).some((p) => /^linux-image-.*-cloud-amd64$/.test(p))).toBe(true);
  });

  it('loads the virtio-net modules after what they depend on', () => {
    const at = (m: string) => image.modules.indexOf(m);
    expect(image.modules.at(-1)).toBe('virtio_net');
    for (const [dep, user] of [
      ['virtio_ring', 'virtio'],
      ['virtio', 'virtio_pci'],
      ['virtio_pci_modern_dev', 'virtio_pci'],
      ['failover', 'net_failover'],
      ['net_failover', 'virtio_net'],
    ] as const) {
      expect(at(dep), `${dep} before ${user}`).toBeGreaterThanOrEqual(0);
      expect(at(dep)).toBeLessThan(at(user));
    }
  });
});

describe('command channel', () => {
  it('returns output and exit status, byte for byte', async () => {
    expect(await g1.exec('echo out; echo err >&2; printf "no newline"')).toEqual({ code: 0, output: 'out\nerr\nno newline' });
    expect(await g1.exec('exit 3')).toEqual({ code: 3, output: '' });
    expect((await g1.exec("printf '%s\\n' \"it's \\\"quoted\\\" \\$HOME\"")).output).toBe('it\'s "quoted" $HOME\n');
    // 80 kB of output (the console moves about 20 kB/s under TCG): what arrives hashes as in the guest.
    const big = await g1.execOk('head -c 60000 /dev/urandom | base64 >/tmp/b && sha256sum /tmp/b | cut -d" " -f1 >/tmp/b.sum && cat /tmp/b');
    const sum = (await g1.execOk('cat /tmp/b.sum')).trim();
    expect(big.length).toBeGreaterThan(80_000);
    expect(createHash('sha256').update(big).digest('hex')).toBe(sum);
  });

  it('kills a command at its timeout and keeps serving', async () => {
    const t0 = Date.now();
    expect((await g1.exec('sleep 30', { timeoutMs: 1000 })).code).toBe(137);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(await g1.execOk('echo still here')).toBe('still here\n');
  });

  it('runs a command once however often its line is sent', async () => {
    const before = g1.resent;
    // A line of 1.4 kB takes about 70 ms to cross the serial port (~20 kB/s
    // under TCG): sent again after 10, 30, 70 ms..., copies reach the guest.
    const script = `echo x >>/tmp/once\n#${'-'.repeat(1000)}`;
    expect(await g1.exec(script, { resendAfterMs: 10 })).toEqual({ code: 0, output: '' });
    expect(g1.resent - before).toBeGreaterThan(1);
    expect(await g1.execOk('cat /tmp/once; rm /tmp/once')).toBe('x\n');
  });
});

describe('NIC and traffic over a TAP', () => {
  it('is configured from the kernel command line', async () => {
    expect((await g1.execOk('cat /sys/class/net/eth0/address')).trim()).toBe('52:54:00:00:01:01');
    expect(await g1.execOk('ip -4 addr show dev eth0')).toContain('inet 10.0.1.201/24');
    expect(await g1.execOk('ip route')).toMatch(/^default via 10\.0\.1\.1 dev eth0/m);
    expect((await g1.execOk('uname -r')).trim()).toBe(image.kernelRelease);
    expect((await g1.execOk('hostname')).trim()).toBe('g1');
    // IPv6 off, as in the lab's namespaces: no DAD, RS or MLD on the link.
    expect(await g1.execOk('ip -6 addr show dev eth0')).toBe('');
  });

  it('pings both ways', async () => {
    const out1 = await guestPing(g1, '10.0.1.1', { count: 3 });
    expect(out1.received).toBe(3);
    const in1 = await ping(lab.ns('h1'), '10.0.1.201', { count: 3 });
    expect(in1.received).toBe(3);
    console.log(`ping rtt: guest -> host ${out1.rttAvgMs} ms, host -> guest ${in1.rttAvgMs?.toFixed(2)} ms`);
  });

  it('carries TCP both ways, the same bytes at both ends', async () => {
    const recv = await tcpReceiver(lab, 'h1', '10.0.1.1', { port: 5201 });
    try {
      const sent = await guestTcpSend(g1, '10.0.1.1', 5201, MB16);
      const got = await recv.result();
      expect(got).toMatchObject({ bytes: MB16, sha256: sent.sha256 });
      console.log(`guest -> namespace: ${MB16} bytes, ${((got.bytes * 8) / got.ms / 1000).toFixed(0)} Mbit/s (busybox nc)`);
    } finally {
      await recv.stop();
    }
    const listener = await guestTcpListen(g1, 5202);
    const sent = await tcpSend(lab.ns('h1'), '10.0.1.201', MB16, { port: 5202 });
    expect(await listener.result()).toEqual({ bytes: MB16, sha256: sent.sha256 });
    console.log(`namespace -> guest: ${MB16} bytes, ${((sent.bytes * 8) / sent.ms / 1000).toFixed(0)} Mbit/s`);
  }, 180_000);

  it('runs iperf3 (TCP, guest -> namespace)', async () => {
    const server = await lab.spawn('h1', ['iperf3', '-s', '-1', '--forceflush', '-B', '10.0.1.1', '-p', '5210']);
    try {
      await server.waitForLine((l) => l.includes('Server listening'), 10_000);
      const r = await g1.execOk('iperf3 -c 10.0.1.1 -p 5210 -t 5 -J', { timeoutMs: 60_000 });
      const j = JSON.parse(r) as { end: { sum_received: { bytes: number; bits_per_second: number } } };
      expect(j.end.sum_received.bytes).toBeGreaterThan(0);
      console.log(`iperf3 TCP guest -> namespace over the TAP, TCG: ${(j.end.sum_received.bits_per_second / 1e6).toFixed(0)} Mbit/s`);
    } finally {
      if (server.running) await lab.stop(server);
    }
  }, 90_000);

  it('vnet_hdr=off: frames of the MTU reach the TAP; vnet_hdr=on: larger ones (the guest\'s TSO)', async () => {
    const BYTES = 4_000_000;
    // What the guest wrote into the TAP (its rx counters) while sending BYTES of TCP.
    const sent = async (vm: Vm, ns: string, tap: string, host: string) => {
      const before = await linkStats(lab.ns(ns), tap);
      const recv = await tcpReceiver(lab, ns, host, { port: 5203 });
      try {
        await guestTcpSend(vm, host, 5203, BYTES);
        await recv.result();
      } finally {
        await recv.stop();
      }
      const after = await linkStats(lab.ns(ns), tap);
      const frames = after.rxPackets - before.rxPackets;
      return { frames, meanBytes: (after.rxBytes - before.rxBytes) / frames };
    };
    expect(await g1.execOk('ethtool -k eth0')).toMatch(/^tcp-segmentation-offload: off/m);
    expect(await g2.execOk('ethtool -k eth0')).toMatch(/^tcp-segmentation-offload: on/m);
    const off = await sent(g1, 'h1', 'tap1', '10.0.1.1');
    const on = await sent(g2, 'h2', 'tap2', '10.0.2.1');
    console.log(`frames the guest wrote into its TAP for ${BYTES} B of TCP: vnet_hdr=off ${off.frames} (mean ${off.meanBytes.toFixed(0)} B), vnet_hdr=on ${on.frames} (mean ${on.meanBytes.toFixed(0)} B)`);
    // At most one MSS (1448 B) per frame: frames of the MTU.
    expect(off.frames).toBeGreaterThanOrEqual(BYTES / 1448);
    expect(off.meanBytes).toBeLessThanOrEqual(1514);
    // A mean over 1514 B: frames larger than the MTU reached the TAP.
    expect(on.meanBytes).toBeGreaterThan(1514);
  }, 180_000);
});

describe('restart', () => {
  it('a TAP QEMU created goes with it and comes back bare', async () => {
    await g1.stop();
    expect(await linkExists(lab.ns('h1'), 'tap1')).toBe(false);
    expect((await ping(lab.ns('h1'), '10.0.1.201', { count: 1 })).received).toBe(0);
    await g1.start();
    await waitFor(() => linkExists(lab.ns('h1'), 'tap1'), 15_000, { what: 'tap1 again' });
    const l = await link('h1', 'tap1');
    expect(l?.flags).not.toContain('UP'); // QEMU (script=no) leaves it down
    expect(await ipv4Addrs(lab.ns('h1'), 'tap1')).toEqual([]);
    await hostSide('h1', 'tap1', '10.0.1.1/24');
    console.log(`g1 rebooted in ${await g1.waitBooted()} ms`);
    expect((await guestPing(g1, '10.0.1.1')).received).toBeGreaterThan(0);
    expect((await ping(lab.ns('h1'), '10.0.1.201')).received).toBeGreaterThan(0);
  }, 180_000);

  it('a persistent TAP stays, without carrier, and carries traffic again after the boot', async () => {
    await g2.stop();
    // LOWER_UP goes at once; NO-CARRIER follows when the kernel's link watch runs (up to a second).
    expect((await link('h2', 'tap2'))?.flags).not.toContain('LOWER_UP');
    await waitFor(async () => (await link('h2', 'tap2'))?.flags.includes('NO-CARRIER'), 5000, { what: 'NO-CARRIER on tap2' });
    expect((await link('h2', 'tap2'))?.flags).toContain('UP');
    expect(await ipv4Addrs(lab.ns('h2'), 'tap2')).toEqual(['10.0.2.1/24']);
    await g2.start();
    await waitFor(async () => (await link('h2', 'tap2'))?.flags.includes('LOWER_UP'), 15_000, { what: 'carrier on tap2' });
    console.log(`g2 rebooted in ${await g2.waitBooted()} ms`);
    expect((await ping(lab.ns('h2'), '10.0.2.201')).received).toBeGreaterThan(0);
    const tun = (await ipIn(lab.ns('h2'), ['-d', 'link', 'show', 'tap2'])).stdout;
    expect(tun).toMatch(/persist on/);
    expect(tun).toMatch(/vnet_hdr on/); // QEMU sets it on a TAP it did not create, too
  }, 180_000);
});

describe('vhost-user netdev without a backend', () => {
  it('QEMU listens on the socket and runs no guest until a backend speaks', async () => {
    const sock = join(runDir, 'vu.sock');
    const vu = new Vm(lab, image, { name: 'vu', ns: 'h1', net: { kind: 'vhost-user', socket: sock }, mac: '52:54:00:00:03:01', ip: '10.0.1.203/24' }, { logDir: out });
    expect(vu.argv.join(' ')).toContain('-device virtio-net-pci,netdev=n0,mac=52:54:00:00:03:01,romfile=,vectors=0');
    await vu.start();
    try {
      await vu.process!.waitForLine((l) => l.includes('waiting for connection'), 15_000);
      await expect(vu.waitBooted(5000)).rejects.toThrow(/no answer/);
      // The first message a backend gets: VHOST_USER_GET_FEATURES (1), version 1 in the flags.
      const header = await new Promise<Buffer>((resolve, reject) => {
        const s = connect(sock);
        s.once('error', reject);
        s.once('data', (b: Buffer) => {
          s.destroy();
          resolve(b);
        });
      });
      expect(header.readUInt32LE(0)).toBe(1);
      expect(header.readUInt32LE(4) & 0x3).toBe(1);
      // A backend that goes away before answering: QEMU waits for the next one.
      await vu.process!.waitForLine((l) => l.includes('vhost_backend_init failed'), 10_000);
      expect(vu.running).toBe(true);
    } finally {
      await vu.stop();
    }
  }, 90_000);
});
