//! Frames from a VM adapter: the virtual switch and the distributed router
//! (packet flows 1, 2, 3, 5 and 6 of the spec); the ARP and Neighbor
//! Discovery responders live in `neighbor`, the host's ICMP in `icmp`.
//!
//! Order of decisions: the guest's offload header checked → source check (anti-spoofing, no VLAN tags) → ARP and
//! ND (answered here when the host can) → broadcast/multicast flood → frames
//! to the gateway MAC are routed → everything else is switched within the
//! VSID, locally or through a tunnel (no larger than the underlay's MTU).

use super::encap::{encapsulate, outer_header_len};
use super::tables::{Location, NextHop, PortInfo, Reach, Record, Snapshot, Subnet};
use super::{icmp, malformed, neighbor, Action, DropReason, PacketBuf, PortId, Via};
use crate::wire::{EtherType, EthernetFrame, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, MacAddr};
use std::cell::Cell;
use std::net::IpAddr;

/// Where a frame came from: the port, what the policy says about it, and its subnet.
pub(super) struct Ingress<'a> {
    pub port: PortId,
    pub info: PortInfo,
    pub subnet: &'a Subnet,
    /// The last destination MAC looked up for this port in this batch, and
    /// its record: a stream's frames reuse it (the VPP way).
    pub last: &'a LastLookup,
}

pub(super) type LastLookup = Cell<Option<(MacAddr, Record)>>;

/// Decide what to do with a frame read from VM port `port`.
pub fn on_vm_frame(snap: &Snapshot, port: PortId, buf: &mut PacketBuf) -> Action {
    decide(snap, port, buf, &Cell::new(None))
}

/// `on_vm_frame` sharing one last-lookup cache over a batch from one port.
pub(super) fn decide(snap: &Snapshot, port: PortId, buf: &mut PacketBuf, last: &LastLookup) -> Action {
    let Some(&info) = snap.port(port) else {
        return Action::Drop(DropReason::PortGone);
    };
    let Some(subnet) = snap.subnet(info.vsid) else {
        return Action::Drop(DropReason::PortGone);
    };
    let from = Ingress { port, info, subnet, last };
    // The guest wrote the virtio-net header: nothing may act on it unchecked.
    match buf.offload.validated(buf.frame()) {
        Some(off) => buf.offload = off,
        None => return Action::Drop(DropReason::Malformed),
    }
    let eth = match EthernetFrame::new_checked(buf.frame()) {
        Ok(eth) => eth,
        Err(e) => return Action::Drop(malformed(e)),
    };
    if eth.src_addr() != info.mac {
        return Action::Drop(DropReason::SpoofedSource);
    }
    let ethertype = eth.ethertype();
    if ethertype.is_vlan_tag() {
        return Action::Drop(DropReason::VlanTagged);
    }
    let dst = eth.dst_addr();
    match ethertype {
        EtherType::Arp => return neighbor::arp(snap, &from, buf),
        EtherType::Ipv6 => {
            if let Some(action) = neighbor::ndisc(snap, &from, buf) {
                return action;
            }
        }
        _ => {}
    }
    if dst.is_multicast() {
        return Action::Flood { vsid: info.vsid, except: Some(port) };
    }
    if dst == subnet.gateway_mac {
        return route(snap, &from, buf);
    }
    switch(snap, &from, dst, buf)
}

/// Unicast within the VSID: to a local port, or encapsulated to the PA the
/// destination MAC's lookup record names.
pub(super) fn switch(snap: &Snapshot, from: &Ingress, dst: MacAddr, buf: &mut PacketBuf) -> Action {
    let vsid = from.info.vsid;
    if let Some(to) = snap.port_by_mac(vsid, dst) {
        return Action::Deliver { port: to, vsid, via: Via::Switched };
    }
    let rec = match from.last.get() {
        Some((mac, rec)) if mac == dst => rec,
        _ => {
            let Some(&rec) = snap.record_by_mac(from.subnet.routing_domain, dst) else {
                return Action::Drop(DropReason::UnknownDestination);
            };
            from.last.set(Some((dst, rec)));
            rec
        }
    };
    if rec.vsid != vsid {
        return Action::Drop(DropReason::VsidMismatch);
    }
    to_record(snap, from, &rec, buf, false)
}

/// Send to the VM a lookup record names: a local port, or its PA. A frame
/// the underlay cannot carry whole is answered with an ICMP error instead:
/// NVGRE packets are never fragmented on the wire.
fn to_record(snap: &Snapshot, from: &Ingress, rec: &Record, buf: &mut PacketBuf, routed: bool) -> Action {
    match snap.reach(rec) {
        Ok(Reach::Port(port)) => Action::Deliver { port, vsid: rec.vsid, via: if routed { Via::Routed } else { Via::Switched } },
        Ok(Reach::Tunnel(tunnel)) => {
            let outer = outer_header_len(tunnel.remote);
            // A large TCP segment (offload) is checked by the segments it becomes.
            if buf.offload.wire_len(buf.len()) + outer > tunnel.mtu as usize {
                // The largest inner IP packet: the underlay MTU less the outer headers and the inner Ethernet header.
                let mtu = (tunnel.mtu as usize).saturating_sub(outer + EthernetFrame::<&[u8]>::HEADER_LEN);
                return icmp::too_big(snap, from, mtu as u16, buf);
            }
            encapsulate(buf, tunnel, rec.vsid, snap.flow_id, routed)
        }
        Err(reason) => Action::Drop(reason),
    }
}

/// The distributed router: a frame sent to the gateway MAC. Echo requests to a
/// gateway address are answered; everything else is routed by the routing
/// domain's customer routes to the destination's (or next hop's) lookup record.
fn route(snap: &Snapshot, from: &Ingress, buf: &mut PacketBuf) -> Action {
    let eth = EthernetFrame::new_unchecked(buf.frame());
    let (dst, hop_limit) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_unchecked(eth.payload());
            if let Err(e) = Ipv4Repr::parse(&ip) {
                return Action::Drop(malformed(e));
            }
            (IpAddr::V4(ip.dst_addr()), ip.hop_limit())
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_unchecked(eth.payload());
            if let Err(e) = Ipv6Repr::parse(&ip) {
                return Action::Drop(malformed(e));
            }
            (IpAddr::V6(ip.dst_addr()), ip.hop_limit())
        }
        _ => return Action::Drop(DropReason::UnsupportedProtocol),
    };
    let rec = match snap.next_hop(from.subnet.routing_domain, dst) {
        Ok(NextHop::Gateway) => return icmp::echo_reply(from, buf),
        Ok(NextHop::Vm { record, .. }) => record,
        Err(reason) => return Action::Drop(reason),
    };
    if hop_limit <= 1 {
        return Action::Drop(DropReason::TtlExceeded);
    }

    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    match dst {
        IpAddr::V4(_) => Ipv4Packet::new_unchecked(eth.payload_mut()).decrement_hop_limit(),
        IpAddr::V6(_) => {
            let mut ip = Ipv6Packet::new_unchecked(eth.payload_mut());
            ip.set_hop_limit(hop_limit - 1);
        }
    }
    eth.set_dst_addr(rec.mac);
    if rec.location == Location::Local && snap.hnv_gateway().nat_at(rec.vsid, rec.mac).is_some() {
        // To this gateway host's NAT, keyed by the sender's VSID.
        return Action::Nat { vsid: from.info.vsid };
    }
    if rec.location == Location::Local {
        // Delivered here: the frame comes from the destination VSID's gateway.
        // Sent to another host, the VM's own MAC stays, so that host can check
        // it against the sender's PA; it rewrites the source on delivery.
        if let Some(dst_subnet) = snap.subnet(rec.vsid) {
            eth.set_src_addr(dst_subnet.gateway_mac);
        }
    }
    to_record(snap, from, rec, buf, true)
}
