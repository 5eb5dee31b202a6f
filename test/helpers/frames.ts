// ARP frames for the learning tests (lab/packets.ts builds Ethernet, IPv4,
// ICMP and NVGRE; ARP is added here so that lab/ stays as it is), and two
// senders run inside a namespace with python3 (an apt package the Makefile
// installs): whole IPv4 packets through a raw socket (an attacker on the
// underlay), and Ethernet frames on an interface (a VM on its adapter).

import { nsExec } from '../../lab/netns.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ethernet, parseIpv4, parseMac } from '../../lab/packets.js';

export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

/** An Ethernet/IPv4 ARP packet (28 bytes). */
export function arp(op: number, senderMac: string, senderIp: string, targetMac: string, targetIp: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16BE(1, 0); // Ethernet
  b.writeUInt16BE(ETHERTYPE_IPV4, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(op, 6);
  return Buffer.concat([b, parseMac(senderMac), parseIpv4(senderIp), parseMac(targetMac), parseIpv4(targetIp)]);
}

/** An ARP reply frame from (mac, ip) to (targetMac, targetIp), unicast to targetMac. */
export function arpReplyFrame(mac: string, ip: string, targetMac: string, targetIp: string): Buffer {
  return ethernet(mac, targetMac, ETHERTYPE_ARP, arp(ARP_REPLY, mac, ip, targetMac, targetIp));
}

/**
 * A python3 program (run it inside a VM's namespace) that sends `frame` on
 * interface `ifname` through an AF_PACKET socket `count` times, `intervalS`
 * apart: a VM sending unsolicited ARP replies, as it would answer its peer's
 * probes.
 */
export function sendFramesScript(ifname: string, frame: Buffer, count: number, intervalS: number): string {
  return [
    'import socket, time',
    `s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)`,
    `s.bind((${JSON.stringify(ifname)}, 0))`,
    `f = bytes.fromhex(${JSON.stringify(frame.toString('hex'))})`,
    `for i in range(${count}):`,
    '    s.send(f)',
    `    time.sleep(${intervalS})`,
    'print("sent", flush=True)',
  ].join('\n');
}

/**
 * Send complete IPv4 packets (lab/packets.ts nvgre(), outer header included)
 * from namespace `ns` to `dst` through a raw IPPROTO_RAW socket (the kernel
 * routes them by `dst`; header included as given), the list `count` times.
 * The same job as lab/netns.ts inject(), without its probe.
 */
export async function injectPackets(ns: string, dst: string, packets: Buffer[], count = 1): Promise<{ sent: number }> {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)',
    `pkts = [bytes.fromhex(h) for h in sys.stdin.read().split()]`,
    'n = 0',
    `for _ in range(${count}):`,
    '    for p in pkts:',
    `        s.sendto(p, (${JSON.stringify(dst)}, 0))`,
    '        n += 1',
    'print(n, flush=True)',
  ].join('\n');
  const r = await nsExec(ns, ['python3', '-c', script], { input: packets.map((p) => p.toString('hex')).join('\n'), timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`injectPackets in ${ns}: exit ${r.code}: ${r.stderr.trim().slice(-400)}`);
  return { sent: Number(r.stdout.trim()) };
}
