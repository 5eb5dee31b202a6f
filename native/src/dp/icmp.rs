//! The ICMP the host itself sends to its VMs, written in place over the
//! frame that caused it: echo replies from a gateway address, and
//! "fragmentation needed" / "packet too big" when a frame would not fit the
//! underlay once encapsulated (NVGRE is never fragmented on the wire; the
//! VM's path MTU discovery adapts instead).

use super::vm::Ingress;
use super::{Action, DropReason, PacketBuf, Snapshot, Via};
use crate::wire::{
    EtherType, EthernetFrame, Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr, Icmpv6Message,
    Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN,
};
use std::net::{IpAddr, Ipv4Addr};

const ETH: usize = EthernetFrame::<&[u8]>::HEADER_LEN;
/// TTL / hop limit of what the host sends itself.
const HOP_LIMIT: u8 = 64;
/// An ICMPv4 error quotes the invoking header and this much of its payload (RFC 792).
const QUOTE_V4: usize = 8;
/// An ICMPv6 error is at most the minimum IPv6 MTU (RFC 4443 §2.4).
const MAX_ERROR_V6: usize = 1280;

/// Answer an ICMP (v4 or v6) echo request to a gateway address, in place.
pub(super) fn echo_reply(from: &Ingress, buf: &mut PacketBuf) -> Action {
    buf.offload = Default::default();
    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    let answered = match eth.ethertype() {
        EtherType::Ipv4 => {
            let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
            let is_request = ip.next_header() == IpProtocol::Icmp
                && ip.frag_offset() == 0
                && !ip.more_frags()
                && Icmpv4Packet::new_checked(ip.payload())
                    .map(|icmp| icmp.msg_type() == Icmpv4Message::EchoRequest && icmp.verify_checksum())
                    .unwrap_or(false);
            if is_request {
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                ip.set_src_addr(dst);
                ip.set_dst_addr(src);
                ip.set_hop_limit(HOP_LIMIT);
                ip.fill_checksum();
                Icmpv4Packet::new_unchecked(ip.payload_mut()).make_echo_reply();
            }
            is_request
        }
        EtherType::Ipv6 => {
            let mut ip = Ipv6Packet::new_unchecked(eth.payload_mut());
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let is_request = ip.next_header() == IpProtocol::Icmpv6
                && Icmpv6Packet::new_checked(ip.payload())
                    .map(|icmp| icmp.msg_type() == Icmpv6Message::EchoRequest && icmp.verify_checksum(&src, &dst))
                    .unwrap_or(false);
            if is_request {
                ip.set_src_addr(dst);
                ip.set_dst_addr(src);
                ip.set_hop_limit(HOP_LIMIT);
                Icmpv6Packet::new_unchecked(ip.payload_mut()).make_echo_reply(&dst, &src);
            }
            is_request
        }
        _ => false,
    };
    if !answered {
        return Action::Drop(DropReason::GatewayUnsupported);
    }
    eth.set_dst_addr(from.info.mac);
    eth.set_src_addr(from.subnet.gateway_mac);
    Action::Deliver { port: from.port, vsid: from.info.vsid, via: Via::EchoReply }
}

/// The frame is too large for the underlay: turn it into an ICMP error for
/// the VM carrying `mtu`, the largest IP packet that fits, from the subnet's
/// gateway address. IPv4 without DF is dropped: a router would fragment it,
/// which nvgred does not do.
pub(super) fn too_big(snap: &Snapshot, from: &Ingress, mtu: u16, buf: &mut PacketBuf) -> Action {
    let eth = EthernetFrame::new_unchecked(buf.frame());
    let reject = Action::Reject { port: from.port, vsid: from.info.vsid, reason: DropReason::MtuExceeded };
    let written = match eth.ethertype() {
        EtherType::Ipv4 => too_big_v4(snap, from, mtu, buf),
        EtherType::Ipv6 => too_big_v6(snap, from, mtu, buf),
        _ => false,
    };
    if !written {
        return Action::Drop(DropReason::MtuExceeded);
    }
    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    eth.set_dst_addr(from.info.mac);
    eth.set_src_addr(from.subnet.gateway_mac);
    reject
}

fn too_big_v4(snap: &Snapshot, from: &Ingress, mtu: u16, buf: &mut PacketBuf) -> bool {
    let src = match snap.gateway_address(from.info.vsid, true) {
        Some(IpAddr::V4(gw)) => Some(gw),
        _ => None,
    };
    let Some(len) = frag_needed_v4(&mut buf.frame_mut()[ETH..], src, mtu) else { return false };
    buf.offload = Default::default();
    buf.set_len(ETH + len);
    true
}

/// Replace the IPv4 packet at the start of `ip` by the ICMP "fragmentation
/// needed" error for its sender, carrying `mtu`, from `src` (else from the
/// packet's destination); returns the error's length. `None`, leaving `ip`
/// alone, when the packet is malformed or lacks DF (a router would
/// fragment it, which nvgred does not do). The error is shorter than any
/// packet too big for an MTU of 68 or more, so it always fits in place.
pub(super) fn frag_needed_v4(ip: &mut [u8], src: Option<Ipv4Addr>, mtu: u16) -> Option<usize> {
    let packet = Ipv4Packet::new_unchecked(&ip[..]);
    let header = Ipv4Repr::parse(&packet).ok()?;
    if !header.dont_frag {
        return None;
    }
    let mut quote = [0u8; QUOTE_V4];
    let n = packet.payload().len().min(QUOTE_V4);
    quote[..n].copy_from_slice(&packet.payload()[..n]);
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::FragRequired,
        next_hop_mtu: mtu,
        header: Ipv4Repr { payload_len: n, ..header },
        data: &quote[..n],
    };
    let reply = Ipv4Repr {
        src_addr: src.unwrap_or(header.dst_addr),
        dst_addr: header.src_addr,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: HOP_LIMIT,
        dscp: 0,
        ecn: 0,
        dont_frag: false,
    };
    let len = reply.buffer_len() + icmp.buffer_len();
    let mut packet = Ipv4Packet::new_unchecked(ip.get_mut(..len)?);
    reply.emit(&mut packet);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(packet.payload_mut()));
    Some(len)
}

fn too_big_v6(snap: &Snapshot, from: &Ingress, mtu: u16, buf: &mut PacketBuf) -> bool {
    let frame = buf.frame();
    let Ok(header) = Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&frame[ETH..])) else { return false };
    let src = match snap.gateway_address(from.info.vsid, false) {
        Some(IpAddr::V6(gw)) => gw,
        _ => header.dst_addr,
    };
    // Quote as much of the invoking packet as fits, moved up behind the new
    // headers: the error may be longer than a short invoking frame.
    let new_headers = IPV6_HEADER_LEN + 8;
    let quoted = (frame.len() - ETH).min(MAX_ERROR_V6 - new_headers);
    let len = ETH + new_headers + quoted;
    if len > buf.capacity() {
        return false;
    }
    buf.set_len(len.max(buf.len()));
    buf.frame_mut().copy_within(ETH..ETH + quoted, ETH + new_headers);
    let reply = Ipv6Repr {
        src_addr: src,
        dst_addr: header.src_addr,
        next_header: IpProtocol::Icmpv6,
        payload_len: 8 + quoted,
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
    };
    buf.offload = Default::default();
    buf.set_len(len);
    let mut packet = Ipv6Packet::new_unchecked(&mut buf.frame_mut()[ETH..]);
    reply.emit(&mut packet);
    let mut icmp = Icmpv6Packet::new_unchecked(packet.payload_mut());
    icmp.set_msg_type(Icmpv6Message::PacketTooBig);
    icmp.set_msg_code(0);
    icmp.set_mtu(u32::from(mtu));
    icmp.fill_checksum(&src, &header.src_addr);
    true
}
