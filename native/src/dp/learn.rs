//! Addresses learned from ARP (packet flow 4). An L2Only lookup record says
//! "this MAC lives behind that PA; its IP is learned". When a VM answers an
//! ARP request that crossed hosts, both hosts learn a Dynamic record (CA,
//! MAC, PA) from the reply:
//! - the replying VM's host, as the reply leaves encapsulated;
//! - the asking VM's host, as the reply arrives, but only if it comes from
//!   the PA that holds the sender MAC's L2Only record: a machine on the
//!   underlay cannot teach a host somebody else's address.
//! The control plane decides the rest (limits, static records win, expiry).

use super::tables::{Location, Snapshot};
use super::{RecordType, Vsid};
use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, MacAddr};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Learned {
    pub vsid: Vsid,
    pub customer_address: IpAddr,
    pub mac: MacAddr,
    pub provider_address: IpAddr,
}

/// The sender (MAC, CA) of an ARP reply frame.
fn arp_reply_sender(frame: &[u8]) -> Option<(MacAddr, IpAddr)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Arp {
        return None;
    }
    match ArpRepr::parse(&ArpPacket::new_unchecked(eth.payload())).ok()? {
        ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_hardware_addr, source_protocol_addr, .. }
            if !source_protocol_addr.is_unspecified() =>
        {
            Some((source_hardware_addr, IpAddr::V4(source_protocol_addr)))
        }
        _ => None,
    }
}

/// Is `mac` a VM of `vsid` whose address is learned (an L2Only record, or
/// one learned before), and where does its record say it lives?
fn learnable_location(snap: &Snapshot, vsid: Vsid, mac: MacAddr) -> Option<Location> {
    let rd = snap.subnet(vsid)?.routing_domain;
    let rec = snap.record_by_mac(rd, mac)?;
    (rec.vsid == vsid && matches!(rec.kind, RecordType::L2Only | RecordType::Dynamic)).then_some(rec.location)
}

/// A frame decapsulated for a local VM of `vsid`, sent from `outer_src`.
pub fn from_underlay(snap: &Snapshot, vsid: Vsid, outer_src: IpAddr, frame: &[u8]) -> Option<Learned> {
    let (mac, ca) = arp_reply_sender(frame)?;
    match learnable_location(snap, vsid, mac)? {
        Location::Remote(t) if snap.tunnel(t).remote == outer_src => {
            Some(Learned { vsid, customer_address: ca, mac, provider_address: outer_src })
        }
        _ => None,
    }
}

/// A frame of a local VM of `vsid`, sent encapsulated from local PA `local_pa`.
pub fn from_vm(snap: &Snapshot, vsid: Vsid, local_pa: IpAddr, frame: &[u8]) -> Option<Learned> {
    let (mac, ca) = arp_reply_sender(frame)?;
    match learnable_location(snap, vsid, mac)? {
        Location::Local => Some(Learned { vsid, customer_address: ca, mac, provider_address: local_pa }),
        Location::Remote(_) => None,
    }
}
