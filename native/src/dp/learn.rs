//! Addresses learned from ARP (packet flow 4). An L2Only lookup record says
//! "this MAC lives behind that PA; its IP is learned". When a VM answers an
//! ARP request that crossed hosts, both hosts learn a Dynamic record (CA,
//! MAC, PA) from the reply:
//! - the replying VM's host, as the reply leaves encapsulated;
//! - the asking VM's host, as the reply arrives, but only if it comes from
//!   the PA that holds the sender MAC's record: a machine on the underlay
//!   cannot teach a host somebody else's address.
//! Once learned, the asking host answers ARP for the address itself and no
//! more replies cross; the record is then kept alive by the VM's traffic: a
//! frame from a Dynamic record's MAC whose IP source is that record's CA
//! reports the same record again (the worker paces reports per record).
//! The control plane decides the rest (limits, static records win, expiry).

use super::tables::{Location, Snapshot};
use super::{RecordType, Vsid};
use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, MacAddr};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Learned {
    pub vsid: Vsid,
    pub customer_address: IpAddr,
    pub mac: MacAddr,
    pub provider_address: IpAddr,
}

/// The VM a frame of `vsid` teaches or confirms: (its VSID, MAC, CA, where
/// its record says it lives). The sender of an ARP reply whose MAC has an
/// L2Only or Dynamic record; or the IP source of a frame, when that CA's
/// record is Dynamic with the frame's source MAC.
fn sender(snap: &Snapshot, vsid: Vsid, frame: &[u8]) -> Option<(Vsid, MacAddr, IpAddr, Location)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mac = eth.src_addr();
    let rec = snap.record_by_mac(snap.subnet(vsid)?.routing_domain, mac)?;
    let ca = match (eth.ethertype(), rec.kind) {
        (EtherType::Arp, RecordType::L2Only | RecordType::Dynamic) if rec.vsid == vsid => {
            match ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()? {
                ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_hardware_addr, source_protocol_addr, .. }
                    if source_hardware_addr == mac && !source_protocol_addr.is_unspecified() =>
                {
                    return Some((vsid, mac, IpAddr::V4(source_protocol_addr), rec.location));
                }
                _ => return None,
            }
        }
        (EtherType::Ipv4, RecordType::Dynamic) => IpAddr::V4(Ipv4Packet::new_checked(eth.payload()).ok()?.src_addr()),
        (EtherType::Ipv6, RecordType::Dynamic) => IpAddr::V6(Ipv6Packet::new_checked(eth.payload()).ok()?.src_addr()),
        _ => return None,
    };
    let own = snap.record_by_ca(rec.vsid, ca)?;
    (own.kind == RecordType::Dynamic && own.mac == mac).then_some((rec.vsid, mac, ca, rec.location))
}

/// A frame decapsulated for a local VM of `vsid`, sent from `outer_src`.
pub fn from_underlay(snap: &Snapshot, vsid: Vsid, outer_src: IpAddr, frame: &[u8]) -> Option<Learned> {
    match sender(snap, vsid, frame)? {
        (vsid, mac, ca, Location::Remote(t)) if snap.tunnel(t).remote == outer_src => {
            Some(Learned { vsid, customer_address: ca, mac, provider_address: outer_src })
        }
        _ => None,
    }
}

/// A frame of a local VM of `vsid`, sent encapsulated from local PA `local_pa`.
pub fn from_vm(snap: &Snapshot, vsid: Vsid, local_pa: IpAddr, frame: &[u8]) -> Option<Learned> {
    match sender(snap, vsid, frame)? {
        (vsid, mac, ca, Location::Local) => Some(Learned { vsid, customer_address: ca, mac, provider_address: local_pa }),
        _ => None,
    }
}
