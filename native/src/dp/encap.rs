//! NVGRE encapsulation: the outer header written into the headroom.

use super::{Action, DropReason, FlowIdMode, PacketBuf, Tunnel, Vsid};
use crate::wire::{
    EtherType, EthernetFrame, GrePacket, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NvgreRepr,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};
use std::net::IpAddr;

/// Outer TTL / hop limit (Windows' default).
const OUTER_TTL: u8 = 64;

/// Wrap the frame in outer IPv4 or IPv6 (the tunnel's family) + GRE toward
/// the tunnel's PA, key = `vsid` (the destination VSID) and the FlowID.
pub fn encapsulate(
    buf: &mut PacketBuf,
    tunnel: &Tunnel,
    vsid: Vsid,
    flow_id: FlowIdMode,
    routed: bool,
) -> Action {
    let (flow, dscp) = inner_flow(buf.frame());
    let nvgre = NvgreRepr {
        vsid,
        flow_id: match flow_id {
            FlowIdMode::Hash => flow,
            FlowIdMode::Zero => 0,
        },
    };
    let payload_len = nvgre.buffer_len() + buf.len();
    let ip_len = outer_header_len(tunnel.remote) - nvgre.buffer_len();
    let Some(hdr) = buf.prepend(ip_len + nvgre.buffer_len()) else {
        return Action::Drop(DropReason::Truncated);
    };
    let (ip_hdr, gre_hdr) = hdr.split_at_mut(ip_len);
    match (tunnel.local, tunnel.remote) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Gre,
            payload_len,
            hop_limit: OUTER_TTL,
            dscp,
            ecn: 0,
            dont_frag: true,
        }
        .emit(&mut Ipv4Packet::new_unchecked(ip_hdr)),
        (IpAddr::V6(src), IpAddr::V6(dst)) => Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Gre,
            payload_len,
            hop_limit: OUTER_TTL,
            traffic_class: dscp << 2,
        }
        .emit(&mut Ipv6Packet::new_unchecked(ip_hdr)),
        _ => return Action::Drop(DropReason::NoProviderAddress),
    }
    nvgre.emit(&mut GrePacket::new_unchecked(gre_hdr));
    Action::Encap { pa: tunnel.remote, vsid, routed }
}

/// Bytes the outer header adds in front of the frame for a PA of this family.
pub fn outer_header_len(pa: IpAddr) -> usize {
    let ip = if pa.is_ipv4() { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN };
    ip + NvgreRepr::HEADER_LEN
}

/// The inner flow's 8-bit FlowID (one flow, one value: addresses, protocol and
/// ports) and its DSCP, copied to the outer header.
fn inner_flow(frame: &[u8]) -> (u8, u8) {
    let eth = EthernetFrame::new_unchecked(frame);
    let mut h = FlowHash::default();
    match eth.ethertype() {
        EtherType::Ipv4 => {
            if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
                h.add(&ip.src_addr().octets());
                h.add(&ip.dst_addr().octets());
                let proto = ip.next_header();
                h.add(&[u8::from(proto)]);
                if !ip.more_frags() && ip.frag_offset() == 0 {
                    h.add_ports(proto, ip.payload());
                }
                return (h.fold(), ip.dscp());
            }
        }
        EtherType::Ipv6 => {
            if let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) {
                h.add(&ip.src_addr().octets());
                h.add(&ip.dst_addr().octets());
                let proto = ip.next_header();
                h.add(&[u8::from(proto)]);
                h.add_ports(proto, ip.payload());
                return (h.fold(), ip.traffic_class() >> 2);
            }
        }
        _ => {}
    }
    h.add(&frame[..12.min(frame.len())]);
    (h.fold(), 0)
}

/// FNV-1a over the flow's fields: cheap, and every field moves every bit.
struct FlowHash(u32);

impl Default for FlowHash {
    fn default() -> Self {
        FlowHash(0x811c_9dc5)
    }
}

impl FlowHash {
    #[inline]
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }

    #[inline]
    fn add_ports(&mut self, proto: IpProtocol, l4: &[u8]) {
        if matches!(proto, IpProtocol::Tcp | IpProtocol::Udp) && l4.len() >= 4 {
            self.add(&l4[..4]);
        }
    }

    #[inline]
    fn fold(&self) -> u8 {
        let x = self.0;
        (x ^ (x >> 8) ^ (x >> 16) ^ (x >> 24)) as u8
    }
}
