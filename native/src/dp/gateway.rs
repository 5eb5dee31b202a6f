//! The HNV gateway (hnv-gateway.md) in the decision core: what tenants send
//! to a NAT's inside MAC goes through [`NatTable::outbound`] and out of the
//! uplink; what the uplink brings goes through [`NatTable::inbound`] and is
//! encapsulated to the VM by its lookup record, in the tenant's VSID, from
//! the NAT's MAC. The uplink's ARP is answered here for `uplink.addresses`,
//! and the gateway's MAC learned from what it sends.
//!
//! The NAT's state is the caller's ([`NatTable`], one per worker); the
//! gateway's MAC too (learned by one worker, used by all). Pure otherwise:
//! the buffer is rewritten in place and an [`Action`] says where it goes.

use super::nat::{NatIndex, NatTable, NatVerdict, Nats};
use super::policy::{Policy, Uplink};
use super::tables::{Reach, Snapshot};
use super::offload::{self, Gso};
use super::{encapsulate, malformed, Action, Counter, Counters, Direction, DropReason, PacketBuf, Via, Vsid};
use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, MacAddr};
use std::net::{IpAddr, Ipv4Addr};

const ETH: usize = EthernetFrame::<&[u8]>::HEADER_LEN;
/// Dynamic mappings of all NATs together at most (each worker holds its share).
pub const MAX_TOTAL_MAPPINGS: u32 = 1 << 20;
/// Outer IPv4 + GRE + inner Ethernet: what NVGRE adds to a tenant's IP packet.
const NVGRE_V4_OVERHEAD: u16 = 42;
/// The MTU of an interface that did not say.
const DEFAULT_MTU: u16 = 1500;

/// The gateway's part of a snapshot: the uplink and the NATs.
#[derive(Debug, Default)]
pub struct Gateway {
    pub uplink: Option<Uplink>,
    pub nats: Nats,
    /// Each NAT's inside (VSID, MAC), by [`NatIndex`]: tenants send to it
    /// there, and what it sends them comes from that MAC.
    inside: Vec<(Vsid, MacAddr)>,
}

impl Gateway {
    /// The gateway of a validated policy; NAT entries that do not index
    /// (the control plane let something inconsistent through) are not
    /// trusted: no NAT at all.
    pub fn build(policy: &Policy) -> Gateway {
        match Nats::new(policy.nats.iter().map(|g| g.nat.clone()).collect(), MAX_TOTAL_MAPPINGS) {
            Ok(nats) => Gateway { uplink: policy.uplink.clone(), nats, inside: policy.nats.iter().map(|g| (g.vsid, g.mac)).collect() },
            Err(_) => Gateway { uplink: policy.uplink.clone(), ..Gateway::default() },
        }
    }

    /// The NAT whose inside MAC `mac` is in `vsid`.
    pub fn nat_at(&self, vsid: Vsid, mac: MacAddr) -> Option<NatIndex> {
        self.inside.iter().position(|&x| x == (vsid, mac)).map(|i| i as NatIndex)
    }

    /// Whether a NAT's inside address lives in `vsid` (a VSID with no VM here may still take packets).
    pub fn serves(&self, vsid: Vsid) -> bool {
        self.inside.iter().any(|&(v, _)| v == vsid)
    }

    /// Whether `a` is one of the uplink's addresses.
    pub fn owns(&self, a: Ipv4Addr) -> bool {
        self.uplink.as_ref().is_some_and(|u| u.addresses.iter().any(|&(x, _)| x == a))
    }
}

/// Carry out [`Action::Nat`]: the buffer holds the inner frame a tenant of
/// `vsid` sent to a NAT's MAC. Translated, it becomes a frame for the
/// uplink (to `gateway_mac`, the uplink's gateway); too big, an ICMP error
/// encapsulated back to the sender. `now`: seconds of a monotonic clock.
///
/// `dir`: where it came from (NVGRE, or a VM of this host), for counting.
#[allow(clippy::too_many_arguments)]
pub fn nat_outbound(snap: &Snapshot, table: &mut NatTable, dir: Direction, vsid: Vsid, buf: &mut PacketBuf, now: u32, gateway_mac: Option<MacAddr>, counters: &Counters) -> Action {
    let gw = snap.hnv_gateway();
    let (Some(uplink), Some(subnet)) = (&gw.uplink, snap.subnet(vsid)) else {
        return Action::Drop(DropReason::NoRoute);
    };
    let rd = subnet.routing_domain;
    let Some(n) = gw.nats.of_routing_domain(rd) else {
        return Action::Drop(DropReason::NoRoute);
    };
    match EthernetFrame::new_checked(buf.frame()) {
        Ok(eth) if eth.ethertype() == EtherType::Ipv4 => {}
        Ok(_) => return Action::Drop(DropReason::UnsupportedProtocol),
        Err(e) => return Action::Drop(malformed(e)),
    }
    // Covered by a customer route that does not lead to the NAT itself: inside.
    let internal = IpAddr::V4(gw.nats.entries()[usize::from(n)].internal_address);
    let inside = |dst: Ipv4Addr| snap.route(rd, IpAddr::V4(dst)).is_some_and(|r| r.next_hop != Some(internal));
    let mtu = if uplink.mtu == 0 { DEFAULT_MTU } else { uplink.mtu };
    let mtu = match prepare(buf, mtu) {
        Ok(mtu) => mtu,
        Err(reason) => return Action::Drop(reason),
    };
    match table.outbound(&gw.nats, rd, vsid, &mut buf.frame_mut()[ETH..], mtu, now, inside, counters) {
        NatVerdict::Uplink { .. } => {
            let Some(next) = gateway_mac else { return Action::Drop(DropReason::UplinkUnresolved) };
            let len = ip_len(buf);
            buf.truncate(ETH + len);
            translated(buf);
            let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
            eth.set_dst_addr(next);
            eth.set_src_addr(uplink.mac);
            Action::Uplink
        }
        NatVerdict::Reject { len, reason } => {
            counters.count_drop(dir, reason);
            counters.inc(Counter::IcmpErrors, 1);
            buf.offload = Default::default();
            to_tenant(snap, gw, n, vsid, buf, len)
        }
        NatVerdict::Tenant { .. } => Action::Drop(DropReason::InternalError),
        NatVerdict::Drop(reason) => Action::Drop(reason),
    }
}

/// A frame read from the uplink: ARP answered (for the uplink's addresses)
/// or learned from (the gateway's MAC goes to `gateway_mac`), IPv4 to an
/// external address translated back to its tenant by [`NatTable::inbound`].
/// Anything else on the external network is not ours: [`Action::Consumed`].
pub fn on_uplink_frame(snap: &Snapshot, table: &mut NatTable, buf: &mut PacketBuf, now: u32, gateway_mac: &mut Option<MacAddr>, counters: &Counters) -> Action {
    let gw = snap.hnv_gateway();
    let Some(uplink) = &gw.uplink else { return Action::Consumed };
    let eth = match EthernetFrame::new_checked(buf.frame()) {
        Ok(eth) => eth,
        Err(e) => return Action::Drop(malformed(e)),
    };
    let (dst, src) = (eth.dst_addr(), eth.src_addr());
    match eth.ethertype() {
        EtherType::Arp => arp(gw, uplink, buf, gateway_mac),
        EtherType::Ipv4 if dst == uplink.mac => {
            let Some(to) = buf.frame().get(ETH + 16..ETH + 20).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3])) else {
                return Action::Drop(DropReason::Truncated);
            };
            if !gw.owns(to) {
                return Action::Drop(DropReason::UnknownDestination);
            }
            // The largest IP packet a tenant gets once encapsulated.
            let pa_mtu = snap.provider_addresses.iter().map(|p| if p.mtu == 0 { DEFAULT_MTU } else { p.mtu }).min().unwrap_or(DEFAULT_MTU);
            let mtu = match prepare(buf, pa_mtu.saturating_sub(NVGRE_V4_OVERHEAD)) {
                Ok(mtu) => mtu,
                Err(reason) => return Action::Drop(reason),
            };
            match table.inbound(&gw.nats, &mut buf.frame_mut()[ETH..], mtu, now, counters) {
                NatVerdict::Tenant { nat, vsid } => {
                    let len = ip_len(buf);
                    buf.truncate(ETH + len);
                    translated(buf);
                    to_tenant(snap, gw, nat, vsid, buf, len)
                }
                NatVerdict::Reject { len, reason } => {
                    counters.count_drop(Direction::FromUplink, reason);
                    counters.inc(Counter::IcmpErrors, 1);
                    buf.offload = Default::default();
                    buf.truncate(ETH + len);
                    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
                    eth.set_dst_addr(src);
                    eth.set_src_addr(uplink.mac);
                    Action::Uplink
                }
                NatVerdict::Uplink { .. } => Action::Drop(DropReason::InternalError),
                NatVerdict::Drop(reason) => Action::Drop(reason),
            }
        }
        _ => Action::Consumed,
    }
}

/// ARP on the uplink: a request for one of its addresses is answered (the
/// buffer holds the reply); what the gateway says, request or reply, gives
/// its MAC.
fn arp(gw: &Gateway, uplink: &Uplink, buf: &mut PacketBuf, gateway_mac: &mut Option<MacAddr>) -> Action {
    let eth = EthernetFrame::new_unchecked(buf.frame());
    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } =
        match ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(repr) => repr,
            Err(e) => return Action::Drop(malformed(e)),
        };
    if source_protocol_addr == uplink.gateway && source_hardware_addr.is_unicast() {
        *gateway_mac = Some(source_hardware_addr);
    }
    if operation != ArpOperation::Request || !gw.owns(target_protocol_addr) {
        return Action::Consumed;
    }
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: uplink.mac,
        source_protocol_addr: target_protocol_addr,
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    emit_arp(buf, source_hardware_addr, uplink.mac, &reply);
    Action::Uplink
}

/// Write an ARP frame into the buffer (which then holds only it).
fn emit_arp(buf: &mut PacketBuf, dst: MacAddr, src: MacAddr, arp: &ArpRepr) {
    buf.offload = Default::default();
    buf.set_len(ETH + arp.buffer_len());
    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    EthernetRepr { src_addr: src, dst_addr: dst, ethertype: EtherType::Arp }.emit(&mut eth);
    arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
}

/// Fill the buffer with an ARP request for the uplink's gateway (from its
/// first address); false without an uplink that has one.
pub fn gateway_arp_request(snap: &Snapshot, buf: &mut PacketBuf) -> bool {
    let Some(uplink) = &snap.hnv_gateway().uplink else { return false };
    let Some(&(from, _)) = uplink.addresses.first() else { return false };
    let request = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: uplink.mac,
        source_protocol_addr: from,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: uplink.gateway,
    };
    buf.reset();
    emit_arp(buf, MacAddr::BROADCAST, uplink.mac, &request);
    true
}

/// Ready the frame for the NAT, which patches checksums: a checksum a VM or
/// a virtual link left to finish is finished (the frame then has no
/// offload). A large TCP segment (a VM's, or merged on receive) keeps its
/// offload, to be cut once translated: the NAT then checks the size of its
/// segments against `mtu`, not its own. Returns the MTU the NAT checks the
/// packet against.
fn prepare(buf: &mut PacketBuf, mtu: u16) -> Result<u16, DropReason> {
    let off = buf.offload.validated(buf.frame()).ok_or(DropReason::Malformed)?;
    match off.gso {
        Gso::None => {
            buf.offload = Default::default();
            if let Some((start, at)) = off.csum {
                offload::complete_checksum(buf.frame_mut(), usize::from(start), usize::from(at));
            }
            Ok(mtu)
        }
        Gso::Tcp4 => {
            buf.offload = off;
            let segment = usize::from(off.hdr_len) - ETH + usize::from(off.gso_size);
            // Segments that fit pass; else the whole is too big, and the sender hears the MTU.
            Ok(if segment <= usize::from(mtu) { u16::MAX } else { mtu })
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// After translation: a large segment's checksum back in the partial form
/// its segmentation expects (the NAT patched it as a whole one).
fn translated(buf: &mut PacketBuf) {
    if buf.offload.gso != Gso::None {
        offload::set_partial_checksum(buf.frame_mut());
    }
}

/// The IPv4 total length of the packet after the buffer's Ethernet header
/// (parsed and checked by the NAT before): the frame without its padding.
fn ip_len(buf: &PacketBuf) -> usize {
    let f = buf.frame();
    usize::from(u16::from_be_bytes([f[ETH + 2], f[ETH + 3]])).min(f.len() - ETH)
}

/// The buffer holds Ethernet + an IPv4 packet of `len` bytes for a tenant
/// of `vsid`: addressed to its VM (by the lookup record of its destination)
/// from NAT `n`'s MAC, encapsulated to the VM's PA in `vsid`, or delivered
/// to a VM of this host.
fn to_tenant(snap: &Snapshot, gw: &Gateway, n: NatIndex, vsid: Vsid, buf: &mut PacketBuf, len: usize) -> Action {
    let f = &buf.frame()[ETH..];
    let dst = Ipv4Addr::new(f[16], f[17], f[18], f[19]);
    let Some(rec) = snap.record_by_ca(vsid, IpAddr::V4(dst)).copied() else {
        return Action::Drop(DropReason::NoLookupRecord);
    };
    let nat_mac = gw.inside[usize::from(n)].1;
    buf.truncate(ETH + len);
    let mut eth = EthernetFrame::new_unchecked(buf.frame_mut());
    eth.set_dst_addr(rec.mac);
    eth.set_src_addr(nat_mac);
    eth.set_ethertype(EtherType::Ipv4);
    match snap.reach(&rec) {
        Ok(Reach::Tunnel(t)) => encapsulate(buf, t, vsid, snap.flow_id, false),
        Ok(Reach::Port(port)) => Action::Deliver { port, vsid, via: Via::Routed },
        Err(reason) => Action::Drop(reason),
    }
}
