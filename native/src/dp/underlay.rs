//! NVGRE packets from the underlay: strict RFC 7637 parsing, then the checks
//! that keep a tenant's network closed to the underlay (it came in on the
//! destination PA's VLAN, the VSID has local
//! VMs, the inner source belongs to the sending PA, the inner destination is a
//! local VM of that VSID), then delivery.

use super::tables::{Location, Snapshot};
use super::{malformed, offload, outer_header_len, Action, DropReason, PacketBuf, Via};
use crate::wire::{
    ArpOperation, ArpPacket, EtherType, EthernetFrame, GrePacket, IpProtocol, Ipv4Packet, NvgreError, NvgreRepr,
};
use std::net::IpAddr;
use std::ops::Range;

/// Decide what to do with a packet from the IPv4 underlay socket: the
/// buffer holds the outer IPv4 header onwards; it came in on interface
/// `ifindex` (0: not known).
pub fn on_underlay_packet(snap: &Snapshot, ifindex: u32, buf: &mut PacketBuf) -> Action {
    let ip = match Ipv4Packet::new_checked(buf.frame()) {
        Ok(ip) => ip,
        Err(e) => return Action::Drop(malformed(e)),
    };
    if ip.version() != 4 {
        return Action::Drop(DropReason::Malformed);
    }
    if ip.next_header() != IpProtocol::Gre {
        return Action::Drop(DropReason::UnsupportedProtocol);
    }
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    let gre = ip.header_len() as usize..ip.header_len() as usize + ip.payload().len();
    nvgre(snap, src, dst, ifindex, buf, gre)
}

/// Decide what to do with a GRE packet from the IPv6 underlay socket (which
/// reads the payload only; the addresses and the interface it came in on
/// come with it): the buffer holds the GRE header onwards.
pub fn on_underlay_gre(snap: &Snapshot, outer_src: IpAddr, outer_dst: IpAddr, ifindex: u32, buf: &mut PacketBuf) -> Action {
    let all = 0..buf.len();
    nvgre(snap, outer_src, outer_dst, ifindex, buf, all)
}

/// The NVGRE checks and delivery, for the GRE packet at `gre` in the buffer.
/// The buffer is narrowed to the inner frame only when it is delivered.
fn nvgre(snap: &Snapshot, outer_src: IpAddr, outer_dst: IpAddr, ifindex: u32, buf: &mut PacketBuf, gre: Range<usize>) -> Action {
    if !snap.is_local_pa(outer_dst) {
        return Action::Drop(DropReason::NotProviderAddress);
    }
    if !snap.arrived_on_its_vlan(outer_dst, ifindex) {
        return Action::Drop(DropReason::WrongVlan);
    }
    let packet = GrePacket::new_unchecked(&buf.frame()[gre.clone()]);
    let nvgre = match NvgreRepr::parse(&packet) {
        Ok(r) => r,
        Err(NvgreError::Truncated) => return Action::Drop(DropReason::Truncated),
        Err(NvgreError::Flags) => return Action::Drop(DropReason::GreFlags),
        Err(NvgreError::Version) => return Action::Drop(DropReason::GreVersion),
        Err(NvgreError::Protocol) => return Action::Drop(DropReason::GreProtocol),
    };
    // The FlowID is the sender's business (RFC 7637 §3.1): ignored here.
    let vsid = nvgre.vsid;
    let Some(subnet) = snap.subnet(vsid).filter(|s| !s.ports.is_empty() || snap.hnv_gateway().serves(vsid)) else {
        return Action::Drop(DropReason::UnknownVsid);
    };
    let inner = packet.payload();
    let eth = match EthernetFrame::new_checked(inner) {
        Ok(eth) => eth,
        Err(e) => return Action::Drop(malformed(e)),
    };
    if eth.ethertype().is_vlan_tag() {
        return Action::Drop(DropReason::VlanTagged);
    }
    let Some(src) = snap.record_by_mac(subnet.routing_domain, eth.src_addr()) else {
        return Action::Drop(DropReason::SpoofedSource);
    };
    let tunnel = match src.location {
        Location::Remote(t) if snap.tunnel(t).remote == outer_src => snap.tunnel(t),
        _ => return Action::Drop(DropReason::SpoofedSource),
    };
    let inner_len = inner.len();
    let inner_at = gre.start + nvgre.buffer_len();
    // Longer than the wire carries, or with its checksum left to finish.
    let wire_frame = match tunnel.mtu {
        0 => usize::MAX,
        mtu => (mtu as usize).saturating_sub(outer_header_len(outer_src)),
    };
    if snap.hnv_gateway().nat_at(vsid, eth.dst_addr()).is_some() {
        // For the NAT, keyed by the sender's VSID (its replies go back there).
        let from = src.vsid;
        buf.narrow(inner_at, inner_len);
        if let Some(o) = offload::received(buf.frame_mut(), wire_frame) {
            buf.offload = o;
        }
        return Action::Nat { vsid: from };
    }
    let Some(port) = snap.port_by_mac(vsid, eth.dst_addr()) else {
        // Flow 4: another host asks the VMs of this VSID for an address it
        // has no record of. Only ARP requests; other broadcasts stay home.
        if eth.dst_addr().is_broadcast() && is_arp_request(&eth) {
            buf.narrow(inner_at, inner_len);
            return Action::Flood { vsid, except: None };
        }
        return Action::Drop(DropReason::UnknownDestination);
    };

    let routed = src.vsid != vsid;
    buf.narrow(inner_at, inner_len);
    if let Some(o) = offload::received(buf.frame_mut(), wire_frame) {
        buf.offload = o;
    }
    if routed {
        // The sender routed it; the VM sees it come from its own gateway.
        EthernetFrame::new_unchecked(buf.frame_mut()).set_src_addr(subnet.gateway_mac);
    }
    Action::Deliver { port, vsid, via: Via::Decapsulated }
}

fn is_arp_request(eth: &EthernetFrame<&[u8]>) -> bool {
    eth.ethertype() == EtherType::Arp
        && ArpPacket::new_checked(eth.payload()).is_ok_and(|arp| arp.operation() == ArpOperation::Request)
}
