// ARP frames for the learning tests (lab/packets.ts builds Ethernet, IPv4,
// ICMP and NVGRE; ARP is added here).

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
