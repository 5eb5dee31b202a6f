//! NVGRE packets from the underlay: strict RFC 7637 parsing, then the checks
//! that keep a tenant's network closed to the underlay (the VSID has local
//! VMs, the inner source belongs to the sending PA, the inner destination is a
//! local VM of that VSID), then delivery.

use super::tables::{Location, Snapshot};
use super::{malformed, Action, DropReason, PacketBuf, Via};
use crate::wire::{EthernetFrame, GrePacket, IpProtocol, Ipv4Packet, NvgreError, NvgreRepr};
use std::net::IpAddr;

/// Decide what to do with a packet received on the underlay. The buffer holds
/// the outer IP header onwards (what a raw IP socket reads).
pub fn on_underlay_packet(snap: &Snapshot, buf: &mut PacketBuf) -> Action {
    let frame = buf.frame();
    let Some(&first) = frame.first() else {
        return Action::Drop(DropReason::Truncated);
    };
    if first >> 4 != 4 {
        return Action::Drop(DropReason::UnsupportedProtocol);
    }
    let ip = match Ipv4Packet::new_checked(frame) {
        Ok(ip) => ip,
        Err(e) => return Action::Drop(malformed(e)),
    };
    if ip.next_header() != IpProtocol::Gre {
        return Action::Drop(DropReason::UnsupportedProtocol);
    }
    let outer_src = IpAddr::V4(ip.src_addr());
    if !snap.is_local_pa(IpAddr::V4(ip.dst_addr())) {
        return Action::Drop(DropReason::NotProviderAddress);
    }
    let outer_len = ip.header_len() as usize;
    let payload = ip.payload();

    let gre = GrePacket::new_unchecked(payload);
    let nvgre = match NvgreRepr::parse(&gre) {
        Ok(r) => r,
        Err(NvgreError::Truncated) => return Action::Drop(DropReason::Truncated),
        Err(NvgreError::Flags) => return Action::Drop(DropReason::GreFlags),
        Err(NvgreError::Version) => return Action::Drop(DropReason::GreVersion),
        Err(NvgreError::Protocol) => return Action::Drop(DropReason::GreProtocol),
    };
    // The FlowID is the sender's business (RFC 7637 §3.1): ignored here.
    let vsid = nvgre.vsid;
    let Some(subnet) = snap.subnet(vsid).filter(|s| !s.ports.is_empty()) else {
        return Action::Drop(DropReason::UnknownVsid);
    };
    let inner = gre.payload();
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
    let from_sender = match src.location {
        Location::Remote(t) => snap.tunnel(t).remote == outer_src,
        Location::Local => false,
    };
    if !from_sender {
        return Action::Drop(DropReason::SpoofedSource);
    }
    let Some(port) = snap.port_by_mac(vsid, eth.dst_addr()) else {
        return Action::Drop(DropReason::UnknownDestination);
    };

    let routed = src.vsid != vsid;
    let inner_offset = outer_len + nvgre.buffer_len();
    let inner_len = inner.len();
    buf.narrow(inner_offset, inner_len);
    if routed {
        // The sender routed it; the VM sees it come from its own gateway.
        EthernetFrame::new_unchecked(buf.frame_mut()).set_src_addr(subnet.gateway_mac);
    }
    Action::Deliver { port, vsid, via: Via::Decapsulated }
}
