//! Frames from a VM adapter: the virtual switch, the ARP responder, the
//! distributed router and the gateway's echo responder (packet flows 1, 2,
//! 3, 5, 6 and 7 of the spec).
//!
//! Order of decisions: source check (anti-spoofing, no VLAN tags) → ARP →
//! broadcast/multicast flood → frames to the gateway MAC are routed →
//! everything else is switched within the VSID, locally or through a tunnel.

use super::encap::encapsulate;
use super::tables::{Location, NextHop, PortInfo, Reach, Record, Snapshot, Subnet};
use super::{malformed, Action, DropReason, PacketBuf, PortId, Via};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, Icmpv4Message, Icmpv4Packet, IpProtocol,
    Ipv4Packet, Ipv4Repr, MacAddr,
};
use std::net::IpAddr;

/// Decide what to do with a frame read from VM port `port`.
pub fn on_vm_frame(snap: &Snapshot, port: PortId, buf: &mut PacketBuf) -> Action {
    let Some(&p) = snap.port(port) else {
        return Action::Drop(DropReason::PortGone);
    };
    let Some(subnet) = snap.subnet(p.vsid) else {
        return Action::Drop(DropReason::PortGone);
    };
    let eth = match EthernetFrame::new_checked(buf.frame()) {
        Ok(eth) => eth,
        Err(e) => return Action::Drop(malformed(e)),
    };
    if eth.src_addr() != p.mac {
        return Action::Drop(DropReason::SpoofedSource);
    }
    let ethertype = eth.ethertype();
    if ethertype.is_vlan_tag() {
        return Action::Drop(DropReason::VlanTagged);
    }
    let dst = eth.dst_addr();
    if ethertype == EtherType::Arp {
        return arp(snap, port, &p, subnet, buf);
    }
    if dst.is_multicast() {
        return Action::Flood { vsid: p.vsid, except: Some(port) };
    }
    if dst == subnet.gateway_mac {
        return route(snap, port, &p, subnet, buf);
    }
    switch(snap, &p, subnet, dst, buf)
}

/// Unicast within the VSID: to a local port, or encapsulated to the PA the
/// destination MAC's lookup record names.
fn switch(snap: &Snapshot, p: &PortInfo, subnet: &Subnet, dst: MacAddr, buf: &mut PacketBuf) -> Action {
    if let Some(to) = snap.port_by_mac(p.vsid, dst) {
        return Action::Deliver { port: to, vsid: p.vsid, via: Via::Switched };
    }
    let Some(rec) = snap.record_by_mac(subnet.routing_domain, dst) else {
        return Action::Drop(DropReason::UnknownDestination);
    };
    if rec.vsid != p.vsid {
        return Action::Drop(DropReason::VsidMismatch);
    }
    to_record(snap, rec, buf, false)
}

/// Send to the VM a lookup record names: a local port, or its PA.
fn to_record(snap: &Snapshot, rec: &Record, buf: &mut PacketBuf, routed: bool) -> Action {
    match snap.reach(rec) {
        Ok(Reach::Port(port)) => Action::Deliver { port, vsid: rec.vsid, via: if routed { Via::Routed } else { Via::Switched } },
        Ok(Reach::Tunnel(tunnel)) => encapsulate(buf, tunnel, rec.vsid, snap.flow_id, routed),
        Err(reason) => Action::Drop(reason),
    }
}

/// ARP from a VM. Requests for `.1` and for remote CAs are answered here, so
/// ARP never crosses the underlay; requests for local VMs reach them.
fn arp(snap: &Snapshot, port: PortId, p: &PortInfo, subnet: &Subnet, buf: &mut PacketBuf) -> Action {
    let eth = EthernetFrame::new_unchecked(buf.frame());
    let dst = eth.dst_addr();
    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } =
        match ArpRepr::parse(&ArpPacket::new_unchecked(eth.payload())) {
            Ok(repr) => repr,
            Err(e) => return Action::Drop(malformed(e)),
        };
    if source_hardware_addr != p.mac {
        return Action::Drop(DropReason::SpoofedSource);
    }
    if operation == ArpOperation::Request {
        let target = IpAddr::V4(target_protocol_addr);
        let answer = if snap.gateway(subnet.routing_domain, target) == Some(p.vsid) {
            Some(subnet.gateway_mac)
        } else {
            snap.record_by_ca(p.vsid, target)
                .filter(|r| matches!(r.location, Location::Remote(_)))
                .map(|r| r.mac)
        };
        if let Some(mac) = answer {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: mac,
                source_protocol_addr: target_protocol_addr,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let len = EthernetFrame::<&[u8]>::HEADER_LEN + reply.buffer_len();
            buf.truncate(len);
            let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
            eth.set_dst_addr(source_hardware_addr);
            eth.set_src_addr(mac);
            reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
            return Action::Deliver { port, vsid: p.vsid, via: Via::ArpReply };
        }
    }
    if dst.is_multicast() {
        return Action::Flood { vsid: p.vsid, except: Some(port) };
    }
    match snap.port_by_mac(p.vsid, dst) {
        Some(to) => Action::Deliver { port: to, vsid: p.vsid, via: Via::Switched },
        None => Action::Drop(DropReason::ArpSuppressed),
    }
}

/// The distributed router: a frame sent to the gateway MAC. Echo requests to a
/// gateway address are answered; everything else is routed by the routing
/// domain's customer routes to the destination's (or next hop's) lookup record.
fn route(snap: &Snapshot, port: PortId, p: &PortInfo, subnet: &Subnet, buf: &mut PacketBuf) -> Action {
    let rd = subnet.routing_domain;
    let eth = EthernetFrame::new_unchecked(buf.frame());
    if eth.ethertype() != EtherType::Ipv4 {
        return Action::Drop(DropReason::UnsupportedProtocol);
    }
    let ip = Ipv4Packet::new_unchecked(eth.payload());
    if let Err(e) = Ipv4Repr::parse(&ip) {
        return Action::Drop(malformed(e));
    }
    let rec = match snap.next_hop(rd, IpAddr::V4(ip.dst_addr())) {
        Ok(NextHop::Gateway) => return echo_reply(port, p, subnet, buf),
        Ok(NextHop::Vm { record, .. }) => record,
        Err(reason) => return Action::Drop(reason),
    };
    if ip.hop_limit() <= 1 {
        return Action::Drop(DropReason::TtlExceeded);
    }

    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    Ipv4Packet::new_unchecked(eth.payload_mut()).decrement_hop_limit();
    eth.set_dst_addr(rec.mac);
    if rec.location == Location::Local {
        // Delivered here: the frame comes from the destination VSID's gateway.
        // Sent to another host, the VM's own MAC stays, so that host can check
        // it against the sender's PA; it rewrites the source on delivery.
        if let Some(dst_subnet) = snap.subnet(rec.vsid) {
            eth.set_src_addr(dst_subnet.gateway_mac);
        }
    }
    to_record(snap, rec, buf, true)
}

/// Answer an ICMP echo request to a gateway address in place.
fn echo_reply(port: PortId, p: &PortInfo, subnet: &Subnet, buf: &mut PacketBuf) -> Action {
    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    let is_echo_request = ip.next_header() == IpProtocol::Icmp
        && ip.frag_offset() == 0
        && !ip.more_frags()
        && Icmpv4Packet::new_checked(ip.payload())
            .map(|icmp| icmp.msg_type() == Icmpv4Message::EchoRequest && icmp.verify_checksum())
            .unwrap_or(false);
    if !is_echo_request {
        return Action::Drop(DropReason::GatewayUnsupported);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_hop_limit(64);
    ip.fill_checksum();
    Icmpv4Packet::new_unchecked(ip.payload_mut()).make_echo_reply();
    eth.set_dst_addr(p.mac);
    eth.set_src_addr(subnet.gateway_mac);
    Action::Deliver { port, vsid: p.vsid, via: Via::EchoReply }
}
