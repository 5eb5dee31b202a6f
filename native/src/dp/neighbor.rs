//! The host's ARP and Neighbor Discovery responders. A VM asking for its
//! subnet's gateway, or for a CA that lives behind another PA, is answered
//! here from the policy: neighbor resolution never crosses the underlay,
//! except flow 4 (L2Only records): an ARP request for a CA the host has no
//! record of is also sent, as unicast NVGRE, to each PA holding an L2Only
//! record of the VSID, and the replies travel back the same way.

use super::tables::{Location, Snapshot};
use super::vm::{switch, Ingress};
use super::{malformed, Action, DropReason, PacketBuf, RecordType, Via};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv6Packet, Ipv6Repr, MacAddr, NdiscRepr, NeighborFlags,
};
use std::net::{IpAddr, Ipv6Addr};

const ETH: usize = EthernetFrame::<&[u8]>::HEADER_LEN;
/// ND messages are only valid with hop limit 255: they never crossed a router (RFC 4861 §7.1).
const ND_HOP_LIMIT: u8 = 255;

/// The MAC that answers for `target` in the VM's VSID, and whether it is the
/// router's: the gateway address, or a CA whose lookup record is remote.
fn answer(snap: &Snapshot, from: &Ingress, target: IpAddr) -> Option<(MacAddr, bool)> {
    if snap.gateway(from.subnet.routing_domain, target) == Some(from.info.vsid) {
        return Some((from.subnet.gateway_mac, true));
    }
    snap.record_by_ca(from.info.vsid, target)
        .filter(|r| matches!(r.location, Location::Remote(_)))
        .map(|r| (r.mac, false))
}

/// Is `mac` a VM of the VSID whose address is learned (flow 4), at `here`
/// (local) or behind another PA? ARP between such a VM and a remote VM crosses.
fn learnable(snap: &Snapshot, from: &Ingress, mac: MacAddr, here: bool) -> bool {
    snap.record_by_mac(from.subnet.routing_domain, mac).is_some_and(|r| {
        r.vsid == from.info.vsid
            && matches!(r.kind, RecordType::L2Only | RecordType::Dynamic)
            && (r.location == Location::Local) == here
    })
}

/// A remote VM of the VSID, by any record: the asker of a probe this VM answers.
fn remote(snap: &Snapshot, from: &Ingress, mac: MacAddr) -> bool {
    snap.record_by_mac(from.subnet.routing_domain, mac)
        .is_some_and(|r| r.vsid == from.info.vsid && matches!(r.location, Location::Remote(_)))
}

/// ARP from a VM.
pub(super) fn arp(snap: &Snapshot, from: &Ingress, buf: &mut PacketBuf) -> Action {
    let vsid = from.info.vsid;
    let eth = EthernetFrame::new_unchecked(buf.frame());
    let dst = eth.dst_addr();
    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } =
        match ArpRepr::parse(&ArpPacket::new_unchecked(eth.payload())) {
            Ok(repr) => repr,
            Err(e) => return Action::Drop(malformed(e)),
        };
    if source_hardware_addr != from.info.mac {
        return Action::Drop(DropReason::SpoofedSource);
    }
    if operation == ArpOperation::Request {
        let target = IpAddr::V4(target_protocol_addr);
        if let Some((mac, _)) = answer(snap, from, target) {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: mac,
                source_protocol_addr: target_protocol_addr,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            buf.offload = Default::default();
            buf.set_len(ETH + reply.buffer_len());
            let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
            eth.set_dst_addr(source_hardware_addr);
            eth.set_src_addr(mac);
            reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
            return Action::Deliver { port: from.port, vsid, via: Via::ArpReply };
        }
        if dst.is_multicast() && snap.record_by_ca(vsid, target).is_none() && snap.has_l2only(vsid) {
            // What crosses is the request, not whatever padding the VM added
            // (a jumbo adapter may pad it to 64 KB): one copy per L2Only PA.
            buf.truncate(ETH + ArpRepr::ETHERNET_IPV4_LEN);
            return Action::Probe { vsid, except: from.port };
        }
    }
    if dst.is_multicast() {
        return Action::Flood { vsid, except: Some(from.port) };
    }
    // Unicast ARP crosses only where flow 4 needs it: to a VM whose address
    // is learned; to a remote VM from one of ours whose address is learned;
    // or as a reply to a remote asker (a probe this host delivered),
    // whatever records this host has of its own VM (hosts' policies differ
    // while a change spreads), unless it claims an address this host knows
    // as another VM's.
    let claims_own = || snap.record_by_ca(vsid, IpAddr::V4(source_protocol_addr)).is_none_or(|r| r.mac == from.info.mac);
    let crosses = learnable(snap, from, dst, false)
        || (remote(snap, from, dst)
            && (learnable(snap, from, from.info.mac, true) || (operation == ArpOperation::Reply && claims_own())));
    if snap.port_by_mac(vsid, dst).is_some() || crosses {
        return switch(snap, from, dst, buf);
    }
    Action::Drop(DropReason::ArpSuppressed)
}

/// Neighbor Discovery from a VM: `Some(action)` when the host handles it
/// (answers a solicitation, drops a spoofed or stray message), `None` for
/// IPv6 that is not ND, or ND the switch carries on (multicast within the
/// VSID, unicast to a local VM).
pub(super) fn ndisc(snap: &Snapshot, from: &Ingress, buf: &mut PacketBuf) -> Option<Action> {
    let eth = EthernetFrame::new_unchecked(buf.frame());
    let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let is_nd = matches!(
        icmp.msg_type(),
        Icmpv6Message::RouterSolicit
            | Icmpv6Message::RouterAdvert
            | Icmpv6Message::NeighborSolicit
            | Icmpv6Message::NeighborAdvert
            | Icmpv6Message::Redirect
    );
    if !is_nd {
        return None;
    }
    if ip.hop_limit() != ND_HOP_LIMIT {
        return Some(Action::Drop(DropReason::Malformed));
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let nd = match icmp.msg_type() {
        Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert => match Icmpv6Repr::parse(&src, &dst, &icmp) {
            Ok(Icmpv6Repr::Ndisc(nd)) => Some(nd),
            Ok(_) => None,
            Err(e) => return Some(Action::Drop(malformed(e))),
        },
        _ => None,
    };
    match nd {
        Some(NdiscRepr::NeighborSolicit { lladdr: Some(mac), .. } | NdiscRepr::NeighborAdvert { lladdr: Some(mac), .. })
            if mac != from.info.mac =>
        {
            return Some(Action::Drop(DropReason::SpoofedSource));
        }
        Some(NdiscRepr::NeighborSolicit { target_addr, .. }) => {
            if let Some((mac, router)) = answer(snap, from, IpAddr::V6(target_addr)) {
                return Some(advertise(from, buf, src, target_addr, mac, router));
            }
        }
        _ => {}
    }
    let dst_mac = eth.dst_addr();
    if dst_mac.is_multicast() || snap.port_by_mac(from.info.vsid, dst_mac).is_some() {
        return None;
    }
    Some(Action::Drop(DropReason::NdSuppressed))
}

/// Turn a Neighbor Solicitation from `asker` into the Advertisement of
/// `target` at `mac`, in place.
fn advertise(from: &Ingress, buf: &mut PacketBuf, asker: Ipv6Addr, target: Ipv6Addr, mac: MacAddr, router: bool) -> Action {
    // A solicitation from :: (duplicate address detection) is answered to all nodes.
    let (dst, mut flags) =
        if asker.is_unspecified() { (ALL_NODES, NeighborFlags::OVERRIDE) } else { (asker, NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE) };
    if router {
        flags |= NeighborFlags::ROUTER;
    }
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr: target, lladdr: Some(mac) });
    let ip = Ipv6Repr {
        src_addr: target,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: na.buffer_len(),
        hop_limit: ND_HOP_LIMIT,
        traffic_class: 0,
    };
    buf.offload = Default::default();
    buf.set_len(ETH + ip.buffer_len() + na.buffer_len());
    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    eth.set_dst_addr(from.info.mac);
    eth.set_src_addr(mac);
    eth.set_ethertype(EtherType::Ipv6);
    let mut packet = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip.emit(&mut packet);
    na.emit(&target, &dst, &mut Icmpv6Packet::new_unchecked(packet.payload_mut()));
    Action::Deliver { port: from.port, vsid: from.info.vsid, via: Via::NeighborAdvert }
}

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
