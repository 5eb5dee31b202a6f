// Real QEMU guests (TCG) on nvgred's two VM adapter modes besides a created
// TAP, on two hosts of the reference lab (the gateway host is not started):
// qemu1 on Host 1 through `mode: attach` (QEMU makes the TAP in the host's
// namespace, nvgred adopts it), qemu2 on Host 2 through `mode: vhost_user`
// (QEMU serves the socket, nvgred connects). They talk to each other and to
// namespace VMs through nvgred; each one's QEMU is killed and started again
// (its port down, saying why, then up, and traffic); nvgred is restarted
// under running guests (the TAP adopted again, the vhost-user socket
// reconnected, traffic).

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, linkExists, listLinks, ping, scrapeMetrics, tcpReceiver, tcpSend } from '../lab/netns.js';
import { type Daemon, type HostName, QEMU_VMS, buildTopology, configureVms, qemuVm, startDaemons, stopDaemons, vm, writeVariantConfigs } from '../lab/topology.js';
import { guestPing, guestTcpListen, guestTcpSend } from '../lab/vm/guest.js';
import { buildImage } from '../lab/vm/image.js';
import { GUEST_MTU, portStatus, qemuGuest, waitPort } from '../lab/vm/nvgred.js';
import { type Vm, vmRunDir } from '../lab/vm/qemu.js';
import { scratchDir } from './helpers/scratch.js';

const lab = new Lab(`nvp${process.pid % 1000}-`);
const out = scratchDir('vm-ports');
const HOSTS: HostName[] = ['host1', 'host2'];
const BYTES = 4_000_000;
/** Under TCG on a shared machine a boot takes 3 s to a minute. */
const BOOT_MS = 180_000;
const PORT_MS = 30_000;

const Q1 = qemuVm('qemu1');
const Q2 = qemuVm('qemu2');
let daemons: Daemon[];
let configs: Record<HostName, string>;
let runDir: string;
/** qemu1: attach, on Host 1. */
let g1: Vm;
/** qemu2: vhost_user, on Host 2. */
let g2: Vm;

const socketOf = (host: HostName): string => daemons.find((d) => d.host === host)!.socket!;
const status = (v: typeof Q1) => portStatus(socketOf(v.host), v.adapter);
const waitUp = (v: typeof Q1) => waitPort(socketOf(v.host), v.adapter, true, PORT_MS);
const waitDown = (v: typeof Q1) => waitPort(socketOf(v.host), v.adapter, false, PORT_MS);
const upMetric = async (v: typeof Q1) => (await scrapeMetrics(lab.ns(v.host))).get(`nvgre_vm_adapter_up{adapter="${v.adapter}"}`);

async function start(hosts: HostName[], logDir: string): Promise<Daemon[]> {
  return startDaemons(lab, { hosts, logDir, configs, runDir });
}

/** Ping from a guest; the replies received. */
async function gping(g: Vm, dst: string): Promise<number> {
  return (await guestPing(g, dst, { count: 3, waitS: 3 })).received;
}

beforeAll(async () => {
  await Lab.cleanStale(lab.prefix);
  const image = await buildImage();
  const socketDir = vmRunDir(lab);
  await buildTopology(lab);
  runDir = join(out, 'run');
  configs = writeVariantConfigs(lab.prefix, join(out, 'configs'), { qemuVms: { socketDir } }, { runDir });
  daemons = await start(HOSTS, out);
  await configureVms(lab, { vms: ['contoso1', 'contoso3'] });
  g1 = qemuGuest(lab, image, Q1, socketDir, { logDir: out });
  g2 = qemuGuest(lab, image, Q2, socketDir, { logDir: out });
}, 180_000);

afterAll(async () => {
  const report = await lab.teardown();
  expect(report.errors).toEqual([]);
}, 60_000);

describe('QEMU guests on attach and vhost_user ports', () => {
  it('are down before the guests run, saying why', async () => {
    expect(QEMU_VMS.map((v) => v.mode)).toEqual(['attach', 'vhost_user']);
    const s1 = await status(Q1);
    expect(s1).toMatchObject({ mode: 'attach', up: false });
    expect(s1.error).toMatch(/waiting for the interface qemu1/);
    const s2 = await status(Q2);
    expect(s2).toMatchObject({ mode: 'vhost_user', up: false });
    // The client finds no socket yet: QEMU is not running.
    expect(s2.error).toMatch(/connecting to .*qemu2\.vhost\.sock/);
    expect(await upMetric(Q1)).toBe(0);
    expect(await upMetric(Q2)).toBe(0);
  });

  it('come up once the guests boot; the vhost-user guest took the MTU QEMU announced', async () => {
    const t0 = Date.now();
    await Promise.all([g1.start(), g2.start()]);
    const [b1, b2] = await Promise.all([g1.waitBooted(BOOT_MS), g2.waitBooted(BOOT_MS)]);
    console.log(`booted: qemu1 (attach) ${b1} ms, qemu2 (vhost-user) ${b2} ms`);
    await Promise.all([waitUp(Q1), waitUp(Q2)]);
    console.log(`both ports up ${Date.now() - t0} ms after the start`);
    expect((await status(Q2)).mtu).toBe(GUEST_MTU);
    for (const g of [g1, g2]) {
      expect((await g.execOk('cat /sys/class/net/eth0/mtu')).trim()).toBe(String(GUEST_MTU));
      // Both send large TCP segments to nvgred (vnet_hdr on the TAP; TSO negotiated over vhost-user).
      expect(await g.execOk('ethtool -k eth0')).toMatch(/^tcp-segmentation-offload: on/m);
    }
    expect(await upMetric(Q1)).toBe(1);
    expect(await upMetric(Q2)).toBe(1);
  }, BOOT_MS + 60_000);

  it('reach their .1, each other and namespace VMs on both hosts, and are reached', async () => {
    expect(await gping(g1, Q1.gateway), 'qemu1 -> .1').toBe(3);
    expect(await gping(g2, Q2.gateway), 'qemu2 -> .1').toBe(3);
    expect(await gping(g1, Q2.ip), 'qemu1 -> qemu2').toBe(3);
    expect(await gping(g2, Q1.ip), 'qemu2 -> qemu1').toBe(3);
    expect(await gping(g1, vm('contoso3').ip), 'qemu1 -> contoso3 (Host 2)').toBe(3);
    expect(await gping(g2, vm('contoso1').ip), 'qemu2 -> contoso1 (Host 1)').toBe(3);
    expect((await ping(lab.ns('contoso1'), Q2.ip, { count: 3 })).received, 'contoso1 -> qemu2').toBe(3);
    expect((await ping(lab.ns('contoso3'), Q1.ip, { count: 3 })).received, 'contoso3 -> qemu1').toBe(3);
  }, 120_000);

  it('carry TCP guest to guest and guest to namespace VM, the same bytes at both ends', async () => {
    const listener = await guestTcpListen(g2, 5301);
    const sent = await guestTcpSend(g1, Q2.ip, 5301, BYTES);
    expect(await listener.result()).toEqual(sent);
    expect(sent.bytes).toBe(BYTES);
    const recv = await tcpReceiver(lab, 'contoso1', vm('contoso1').ip, { port: 5302 });
    try {
      const fromG2 = await guestTcpSend(g2, vm('contoso1').ip, 5302, BYTES);
      expect(await recv.result()).toMatchObject({ bytes: BYTES, sha256: fromG2.sha256 });
    } finally {
      await recv.stop();
    }
    const toG1 = await guestTcpListen(g1, 5303);
    const fromNs = await tcpSend(lab.ns('contoso3'), Q1.ip, BYTES, { port: 5303 });
    expect(await toG1.result()).toEqual({ bytes: BYTES, sha256: fromNs.sha256 });
  }, 300_000);

  it("attach: the guest's QEMU killed, the port is down (the TAP went with QEMU); started again, up and carrying", async () => {
    await g1.stop({ signal: 'SIGKILL' });
    const down = await waitDown(Q1);
    expect(down.error).toMatch(/waiting for the interface qemu1/);
    expect(await linkExists(lab.ns(Q1.host), Q1.adapter)).toBe(false);
    expect(await upMetric(Q1)).toBe(0);
    await g1.start();
    await g1.waitBooted(BOOT_MS);
    await waitUp(Q1);
    expect(await gping(g1, Q2.ip)).toBe(3);
    expect((await ping(lab.ns('contoso3'), Q1.ip, { count: 3 })).received).toBe(3);
  }, BOOT_MS + 60_000);

  it('vhost_user: the guest\'s QEMU killed, the port is down; started again, nvgred connects, up and carrying', async () => {
    await g2.stop({ signal: 'SIGKILL' });
    const down = await waitDown(Q2);
    expect(down.error).toMatch(/front-end closed the connection|connecting to/);
    expect(await upMetric(Q2)).toBe(0);
    // QEMU runs no guest until a backend connects: a boot is nvgred's reconnection.
    await g2.start();
    await g2.waitBooted(BOOT_MS);
    await waitUp(Q2);
    expect(await gping(g2, Q1.ip)).toBe(3);
    expect((await ping(lab.ns('contoso1'), Q2.ip, { count: 3 })).received).toBe(3);
  }, BOOT_MS + 60_000);

  it('nvgred restarted under running guests: the TAP is adopted again, the socket reconnected, traffic resumes', async () => {
    const stops = await stopDaemons(lab, daemons);
    for (const s of stops) expect(s.ok, `nvgred on ${s.host} exits 0`).toBe(true);
    expect(g1.running && g2.running).toBe(true);
    // nvgred never deletes an attached interface.
    expect(await linkExists(lab.ns(Q1.host), Q1.adapter)).toBe(true);
    daemons = await start(HOSTS, join(out, 'restart'));
    await configureVms(lab, { vms: ['contoso1', 'contoso3'] }); // their TAPs went with nvgred
    await Promise.all([waitUp(Q1), waitUp(Q2)]);
    expect(await gping(g1, Q2.ip)).toBe(3);
    expect(await gping(g2, vm('contoso1').ip)).toBe(3);
    const listener = await guestTcpListen(g1, 5304);
    const sent = await guestTcpSend(g2, Q1.ip, 5304, BYTES);
    expect(await listener.result()).toEqual(sent);
  }, 240_000);

  it('attach: a guest started while nvgred is down (its TAP down, as QEMU makes it) is adopted when nvgred starts', async () => {
    const host1 = daemons.filter((d) => d.host === 'host1');
    for (const s of await stopDaemons(lab, host1)) expect(s.ok).toBe(true);
    await g1.restart(BOOT_MS);
    const tap = (await listLinks(lab.ns(Q1.host))).find((l) => l.ifname === Q1.adapter);
    expect(tap?.flags).not.toContain('UP');
    daemons = [...daemons.filter((d) => d.host !== 'host1'), ...(await start(['host1'], join(out, 'restart-host1')))];
    await configureVms(lab, { vms: ['contoso1'] });
    await waitUp(Q1);
    expect(await gping(g1, Q2.ip)).toBe(3);
    expect(await gping(g1, vm('contoso1').ip)).toBe(3);
  }, BOOT_MS + 60_000);
});
