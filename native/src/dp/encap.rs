//! NVGRE encapsulation: the outer header written into the headroom.

use super::{Action, DropReason, FlowIdMode, PacketBuf, Tunnel, Vsid};
use crate::wire::{
    checksum, EtherType, EthernetFrame, GrePacket, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NvgreRepr,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};
use std::net::IpAddr;

/// Outer TTL / hop limit (Windows' default).
const OUTER_TTL: u8 = 64;

/// The outer IP + GRE header toward one PA, built once when the tables are
/// (the OVS/VPP way): per packet it is copied into the headroom and only the
/// length, DSCP, key and (IPv4) checksum are patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    bytes: [u8; IPV6_HEADER_LEN + NvgreRepr::HEADER_LEN],
    len: u8,
}

impl Template {
    /// The header from `local` to `remote` (one family), for an empty frame
    /// with DSCP 0, key 0; `None` if the families differ.
    pub fn new(local: IpAddr, remote: IpAddr) -> Option<Template> {
        let mut t = Template { bytes: [0; IPV6_HEADER_LEN + NvgreRepr::HEADER_LEN], len: outer_header_len(remote) as u8 };
        let gre = NvgreRepr { vsid: 0, flow_id: 0 };
        let (ip, rest) = t.bytes.split_at_mut(t.len as usize - gre.buffer_len());
        match (local, remote) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Gre,
                payload_len: gre.buffer_len(),
                hop_limit: OUTER_TTL,
                dscp: 0,
                ecn: 0,
                dont_frag: true,
            }
            .emit(&mut Ipv4Packet::new_unchecked(ip)),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Gre,
                payload_len: gre.buffer_len(),
                hop_limit: OUTER_TTL,
                traffic_class: 0,
            }
            .emit(&mut Ipv6Packet::new_unchecked(ip)),
            _ => return None,
        }
        gre.emit(&mut GrePacket::new_unchecked(&mut rest[..gre.buffer_len()]));
        Some(t)
    }
}

/// Wrap the frame in the tunnel's outer IPv4 or IPv6 + GRE header, key =
/// `vsid` (the destination VSID) and the FlowID, DSCP copied from the inner
/// packet.
pub fn encapsulate(buf: &mut PacketBuf, tunnel: &Tunnel, vsid: Vsid, flow_id: FlowIdMode, routed: bool) -> Action {
    let Some(template) = &tunnel.template else {
        return Action::Drop(DropReason::NoProviderAddress);
    };
    let (flow, dscp) = inner_flow(buf.frame());
    let key = NvgreRepr {
        vsid,
        flow_id: match flow_id {
            FlowIdMode::Hash => flow,
            FlowIdMode::Zero => 0,
        },
    }
    .key();
    let inner_len = buf.len();
    let len = template.len as usize;
    let Some(hdr) = buf.prepend(len) else {
        return Action::Drop(DropReason::Truncated);
    };
    hdr.copy_from_slice(&template.bytes[..len]);
    let ip_len = len - NvgreRepr::HEADER_LEN;
    // A large TCP segment may not fit one IP packet's length field: it is
    // cut before it leaves (`offload::segment` writes each segment's
    // lengths), and what the field says until then does not matter.
    let fit = |len: usize| len.min(u16::MAX as usize) as u16;
    if tunnel.remote.is_ipv4() {
        let mut ip = Ipv4Packet::new_unchecked(&mut hdr[..ip_len]);
        let (len0, tos0) = (ip.total_len(), u16::from_be_bytes([0x45, 0]));
        ip.set_total_len(fit(len0 as usize + inner_len));
        ip.set_dscp(dscp);
        let sum = checksum::update(ip.checksum(), len0, ip.total_len());
        ip.set_checksum(checksum::update(sum, tos0, u16::from_be_bytes([0x45, dscp << 2])));
    } else {
        let mut ip = Ipv6Packet::new_unchecked(&mut hdr[..ip_len]);
        ip.set_payload_len(fit(NvgreRepr::HEADER_LEN + inner_len));
        ip.set_traffic_class(dscp << 2);
    }
    GrePacket::new_unchecked(&mut hdr[ip_len..]).set_key(key);
    Action::Encap { pa: tunnel.remote, vsid, routed }
}

/// Bytes the outer header adds in front of the frame for a PA of this family.
pub fn outer_header_len(pa: IpAddr) -> usize {
    let ip = if pa.is_ipv4() { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN };
    ip + NvgreRepr::HEADER_LEN
}

/// The inner flow's 8-bit FlowID and its DSCP (copied to the outer header).
fn inner_flow(frame: &[u8]) -> (u8, u8) {
    let eth = EthernetFrame::new_unchecked(frame);
    match eth.ethertype() {
        EtherType::Ipv4 => {
            if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
                let proto = ip.next_header();
                let mut x = word(&ip.src_addr().octets()) ^ word(&ip.dst_addr().octets()) ^ u8::from(proto) as u32;
                if !ip.more_frags() && ip.frag_offset() == 0 {
                    x ^= ports(proto, ip.payload());
                }
                return (mix(x), ip.dscp());
            }
        }
        EtherType::Ipv6 => {
            if let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) {
                let proto = ip.next_header();
                let mut x = u8::from(proto) as u32 ^ ports(proto, ip.payload());
                for addr in [ip.src_addr().octets(), ip.dst_addr().octets()] {
                    x = addr.chunks(4).fold(x, |x, w| x ^ word(w));
                }
                return (mix(x), ip.traffic_class() >> 2);
            }
        }
        _ => {}
    }
    (mac_flow(frame), 0)
}

/// The FlowID of a frame from a VM: one flow, one value, the same both ways
/// (a symmetric hash of the IP addresses, the protocol and the TCP/UDP
/// ports; no ports for IPv4 fragments; the MACs for frames that are not
/// IP). The TAP steering program (`io::steering`) computes the same value
/// in the kernel to pick the frame's queue, and the underlay steers by it:
/// both directions of a flow meet on one worker.
pub fn flow_id(frame: &[u8]) -> u8 {
    if frame.len() < 14 {
        return mac_flow(frame);
    }
    inner_flow(frame).0
}

fn mac_flow(frame: &[u8]) -> u8 {
    let Some(m) = frame.get(..12) else { return 0 };
    let half = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]) as u32;
    mix(word(&m[0..4]) ^ word(&m[6..10]) ^ half(&m[4..6]) ^ half(&m[10..12]))
}

#[inline]
fn word(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Source port ^ destination port (symmetric), for TCP and UDP.
#[inline]
fn ports(proto: IpProtocol, l4: &[u8]) -> u32 {
    match l4 {
        [a, b, c, d, ..] if matches!(proto, IpProtocol::Tcp | IpProtocol::Udp) => u16::from_be_bytes([*a, *b]) as u32 ^ u16::from_be_bytes([*c, *d]) as u32,
        _ => 0,
    }
}

/// Multiplicative hashing: the top byte of x times 2^32/φ moves with every bit of x.
#[inline]
fn mix(x: u32) -> u8 {
    (x.wrapping_mul(FLOW_MIX) >> 24) as u8
}

/// ⌊2^32/φ⌋, odd.
pub const FLOW_MIX: u32 = 0x9e37_79b1;
