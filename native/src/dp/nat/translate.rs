//! Reading a packet's NAT key and rewriting its addresses and ports in
//! place, checksums patched incrementally (RFC 1624), through the `wire`
//! views. An ICMP error is keyed and rewritten by the packet it quotes.

use super::{shard_of_port, InsideKey, Proto};
use crate::dp::{malformed, DropReason, Vsid};
use crate::wire::checksum;
use crate::wire::{
    Icmpv4Message, Icmpv4Packet, Ipv4Packet, TcpFlags, TcpPacket, UdpPacket, IPV4_HEADER_LEN, TCP_HEADER_LEN,
    UDP_HEADER_LEN,
};
use std::net::Ipv4Addr;

/// ICMP Parameter Problem (RFC 792): an error quoting its packet, which the
/// wire enum knows only as a number.
const PARAMETER_PROBLEM: u8 = 12;
/// The part of a quoted packet's transport header the NAT reads and
/// rewrites: ports (or echo identifier), and for UDP and ICMP the checksum.
const QUOTED_L4: usize = UDP_HEADER_LEN;

/// Which end of a packet the NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Src,
    Dst,
}

/// What the NAT needs of a packet. For an ICMP error, the addresses and
/// ports are those of the packet it quotes, which starts at `quote`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parsed {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Ports; for ICMP echo both are the identifier.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: TcpFlags,
    /// Plain ICMP: the echo's type.
    pub echo: Option<Icmpv4Message>,
    /// An ICMP error: where its quoted IPv4 header starts in the packet.
    pub quote: Option<usize>,
    pub total_len: u16,
    pub ttl: u8,
}

/// Read an IPv4 packet (at the start of `ip`) the NAT may translate.
pub(super) fn parse(ip: &[u8]) -> Result<Parsed, DropReason> {
    let packet = Ipv4Packet::new_checked(ip).map_err(malformed)?;
    if packet.version() != 4 || !packet.verify_checksum() {
        return Err(DropReason::Malformed);
    }
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Err(DropReason::NatFragment);
    }
    let proto = Proto::from_ip(packet.next_header()).ok_or(DropReason::UnsupportedProtocol)?;
    let header_len = usize::from(packet.header_len());
    let (mut p, l4) = (
        Parsed {
            proto,
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            sport: 0,
            dport: 0,
            tcp_flags: TcpFlags::empty(),
            echo: None,
            quote: None,
            total_len: packet.total_len(),
            ttl: packet.hop_limit(),
        },
        packet.payload(),
    );
    match proto {
        Proto::Tcp => {
            let tcp = TcpPacket::new_checked(l4).map_err(malformed)?;
            (p.sport, p.dport, p.tcp_flags) = (tcp.src_port(), tcp.dst_port(), tcp.flags());
        }
        Proto::Udp => {
            let udp = UdpPacket::new_checked(l4).map_err(malformed)?;
            (p.sport, p.dport) = (udp.src_port(), udp.dst_port());
        }
        Proto::Icmp => {
            let icmp = Icmpv4Packet::new_checked(l4).map_err(malformed)?;
            match icmp.msg_type() {
                t @ (Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply) => {
                    (p.sport, p.dport, p.echo) = (icmp.echo_ident(), icmp.echo_ident(), Some(t));
                }
                Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded => quoted(&mut p, icmp.data(), header_len)?,
                Icmpv4Message::Unknown(PARAMETER_PROBLEM) => quoted(&mut p, icmp.data(), header_len)?,
                _ => return Err(DropReason::UnsupportedProtocol),
            }
        }
    }
    Ok(p)
}

/// Fill `p` from the packet an ICMP error quotes (`data`, which starts
/// `header_len + 8` bytes into the packet): its IPv4 header and at least
/// the first 8 bytes of its transport header (RFC 792).
fn quoted(p: &mut Parsed, data: &[u8], header_len: usize) -> Result<(), DropReason> {
    if data.len() < IPV4_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let q = Ipv4Packet::new_unchecked(data);
    let q_len = usize::from(q.header_len());
    if q.version() != 4 || q_len < IPV4_HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    let l4 = data.get(q_len..).filter(|l4| l4.len() >= QUOTED_L4).ok_or(DropReason::Truncated)?;
    if q.more_frags() || q.frag_offset() != 0 {
        return Err(DropReason::NatFragment);
    }
    p.proto = Proto::from_ip(q.next_header()).ok_or(DropReason::UnsupportedProtocol)?;
    (p.src, p.dst) = (q.src_addr(), q.dst_addr());
    // Ports are the first two 16-bit words of TCP and UDP alike.
    let udp = UdpPacket::new_unchecked(l4);
    (p.sport, p.dport) = (udp.src_port(), udp.dst_port());
    if p.proto == Proto::Icmp {
        let echo = Icmpv4Packet::new_unchecked(l4);
        if !matches!(echo.msg_type(), Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply) {
            return Err(DropReason::UnsupportedProtocol); // an error about an error: never translated
        }
        (p.sport, p.dport) = (echo.echo_ident(), echo.echo_ident());
    }
    p.quote = Some(header_len + crate::wire::icmpv4::HEADER_LEN);
    Ok(())
}

/// The key of an outbound packet from `vsid` (for an error: of the inside
/// endpoint its quoted packet was sent to).
pub(super) fn outbound_key(p: &Parsed, vsid: Vsid) -> InsideKey {
    match p.quote {
        None => InsideKey { vsid, proto: p.proto, addr: p.src, port: p.sport },
        Some(_) => InsideKey { vsid, proto: p.proto, addr: p.dst, port: p.dport },
    }
}

/// The external (address, port) an inbound packet is for (for an error:
/// the source of its quoted packet).
pub(super) fn inbound_target(p: &Parsed) -> (Ipv4Addr, u16) {
    match p.quote {
        None => (p.dst, p.dport),
        Some(_) => (p.src, p.sport),
    }
}

/// The shard (see [`super::SHARDS`]) whose worker must translate this
/// packet from a tenant of `vsid`: steer outbound packets by it. `None`:
/// not translatable, any worker drops it alike.
pub fn outbound_shard(ip: &[u8], vsid: Vsid) -> Option<usize> {
    parse(ip).ok().map(|p| outbound_key(&p, vsid).shard())
}

/// The shard whose worker must translate this packet from the uplink: its
/// destination port (an error's quoted source port) names it.
pub fn inbound_shard(ip: &[u8]) -> Option<usize> {
    parse(ip).ok().map(|p| shard_of_port(inbound_target(&p).1))
}

/// Patch a checksum for `old` → `new` (equal length, 16-bit aligned).
fn adjust(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    old.chunks(2)
        .zip(new.chunks(2))
        .fold(sum, |s, (o, n)| checksum::update(s, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([n[0], n[1]])))
}

/// Set the source or destination address of the IPv4 header at the start of
/// `ip` (a whole packet or a quoted header), patching its checksum; returns
/// the old address.
fn set_addr(ip: &mut [u8], side: Side, addr: Ipv4Addr) -> Ipv4Addr {
    let mut packet = Ipv4Packet::new_unchecked(ip);
    let old = match side {
        Side::Src => packet.src_addr(),
        Side::Dst => packet.dst_addr(),
    };
    match side {
        Side::Src => packet.set_src_addr(addr),
        Side::Dst => packet.set_dst_addr(addr),
    }
    let sum = adjust(packet.checksum(), &old.octets(), &addr.octets());
    packet.set_checksum(sum);
    old
}

/// Set the port (or echo identifier) on `side` of the transport header `l4`
/// (whole, or the start of a quoted one), patching its checksum for the
/// new port and, with the pseudo header, for the address change `old_addr`
/// → `addr`. A quoted TCP header may stop before its checksum: then there is
/// none to patch.
fn set_port(l4: &mut [u8], proto: Proto, side: Side, old_addr: Ipv4Addr, addr: Ipv4Addr, port: u16) {
    let (a, b) = (old_addr.octets(), addr.octets());
    match proto {
        Proto::Tcp => {
            let mut tcp = TcpPacket::new_unchecked(&mut l4[..]);
            let old = match side {
                Side::Src => tcp.src_port(),
                Side::Dst => tcp.dst_port(),
            };
            match side {
                Side::Src => tcp.set_src_port(port),
                Side::Dst => tcp.set_dst_port(port),
            }
            if l4.len() >= TCP_HEADER_LEN {
                let mut tcp = TcpPacket::new_unchecked(&mut l4[..]);
                let sum = adjust(adjust(tcp.checksum(), &a, &b), &old.to_be_bytes(), &port.to_be_bytes());
                tcp.set_checksum(sum);
            }
        }
        Proto::Udp => {
            let mut udp = UdpPacket::new_unchecked(l4);
            let old = match side {
                Side::Src => udp.src_port(),
                Side::Dst => udp.dst_port(),
            };
            match side {
                Side::Src => udp.set_src_port(port),
                Side::Dst => udp.set_dst_port(port),
            }
            // 0 is "no checksum" (RFC 768) and stays so; a sum that comes
            // out as 0 is sent as its other form, 0xffff.
            if udp.checksum() != 0 {
                let sum = adjust(adjust(udp.checksum(), &a, &b), &old.to_be_bytes(), &port.to_be_bytes());
                udp.set_checksum(if sum == 0 { 0xffff } else { sum });
            }
        }
        Proto::Icmp => {
            // No pseudo header in ICMPv4: only the identifier counts.
            let mut icmp = Icmpv4Packet::new_unchecked(l4);
            let old = icmp.echo_ident();
            icmp.set_echo_ident(port);
            let sum = adjust(icmp.checksum(), &old.to_be_bytes(), &port.to_be_bytes());
            icmp.set_checksum(sum);
        }
    }
}

/// Translate the parsed packet at the start of `ip`: `side` of the packet
/// (the opposite side of an error's quoted packet) becomes `addr`:`port`,
/// and the TTL is decremented. The caller has made sure the TTL is above 1.
pub(super) fn rewrite(ip: &mut [u8], p: &Parsed, side: Side, addr: Ipv4Addr, port: u16) {
    let old = set_addr(ip, side, addr);
    let header_len = usize::from(Ipv4Packet::new_unchecked(&ip[..]).header_len());
    match p.quote {
        None => set_port(&mut ip[header_len..usize::from(p.total_len)], p.proto, side, old, addr, port),
        Some(at) => {
            let inner = match side {
                Side::Src => Side::Dst,
                Side::Dst => Side::Src,
            };
            let quote = &mut ip[at..usize::from(p.total_len)];
            let q_old = set_addr(quote, inner, addr);
            let q_len = usize::from(Ipv4Packet::new_unchecked(&quote[..]).header_len());
            set_port(&mut quote[q_len..], p.proto, inner, q_old, addr, port);
            // The error's own checksum covers the quote: summed again (an
            // error is short, and every field of the quote may have moved).
            Icmpv4Packet::new_unchecked(&mut ip[header_len..usize::from(p.total_len)]).fill_checksum();
        }
    }
    Ipv4Packet::new_unchecked(ip).decrement_hop_limit();
}
