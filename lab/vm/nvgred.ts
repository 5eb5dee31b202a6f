// The lab's QEMU guests (QEMU_VMS in lab/topology.ts) on nvgred: each one's
// QEMU as `make lab` and test/vm-ports.test.ts run it, and what the daemon's
// status API says about its adapter.
//
// attach: QEMU runs in the host's namespace and makes the TAP named as the
// adapter there (`-netdev tap,ifname=…,script=no,downscript=no,vhost=off`);
// nvgred adopts it, sets it up and deletes it never (QEMU does, as it exits).
// vhost_user: QEMU serves the socket (`server=on`) and waits, before it runs
// the guest, for nvgred to connect (nvgred is the client and reconnects).

import { request } from 'node:http';
import { type Lab, waitFor } from '../netns.js';
import { type QemuVmSpec, vhostSocket } from '../topology.js';
import type { VmImage } from './image.js';
import { Vm } from './qemu.js';

/** The guests' MTU: a 1500-byte IPv4 underlay less NVGRE's 42 bytes. */
export const GUEST_MTU = 1458;

/**
 * The Vm of a planned QEMU guest (not started). Its MTU comes from QEMU
 * (`host_mtu`), whatever the mode. The attach guest keeps QEMU's default
 * offloads (`vnet_hdr=on`: its TSO segments and partial checksums reach
 * nvgred's packet sockets whole).
 */
export function qemuGuest(lab: Lab, image: VmImage, v: QemuVmSpec, socketDir: string, opts: { logDir?: string } = {}): Vm {
  const net = v.mode === 'attach' ? { kind: 'tap' as const, ifname: v.adapter, vnetHdr: true } : { kind: 'vhost-user' as const, socket: vhostSocket(socketDir, v) };
  return new Vm(lab, image, { name: v.name, ns: v.host, net, mac: v.mac, ip: `${v.ip}/${v.prefixLength}`, gw: v.gateway, hostMtu: GUEST_MTU }, opts);
}

/** One port of `GET /v1/status` (docs/api.md). */
export interface PortStatus {
  name: string;
  mode: string;
  up: boolean;
  error: string | null;
  mtu: number | null;
  ifindex: number | null;
}

/** GET `path` of the control API on its Unix socket; the parsed JSON body (throws on a status other than 200). */
export function apiGet<T>(socket: string, path: string, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`GET ${path} on ${socket}: ${res.statusCode} ${text.slice(0, 300)}`));
        else {
          try {
            resolve(JSON.parse(text) as T);
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} on ${socket}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The adapter's port as the daemon's status reports it. */
export async function portStatus(socket: string, adapter: string): Promise<PortStatus> {
  const s = await apiGet<{ ports: PortStatus[] }>(socket, '/v1/status');
  const p = s.ports.find((x) => x.name === adapter);
  if (!p) throw new Error(`no port ${adapter} in the status of ${socket}`);
  return p;
}

/** Wait until the adapter's port is up (or down); its status then. */
export async function waitPort(socket: string, adapter: string, up: boolean, timeoutMs: number): Promise<PortStatus> {
  return waitFor(
    async () => {
      const s = await portStatus(socket, adapter);
      if (s.up !== up) throw new Error(`${adapter}: up ${s.up}, error ${JSON.stringify(s.error)}`);
      return s;
    },
    timeoutMs,
    { what: `port ${adapter} ${up ? 'up' : 'down'}`, intervalMs: 200 },
  );
}
