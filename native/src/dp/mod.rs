//! The decision core: a frame from a VM port or an NVGRE packet from the
//! underlay goes in, an [`Action`] comes out. No I/O, no clocks, no locks:
//! everything here is testable with byte arrays and benchmarkable without
//! devices. The frame is rewritten in place in its [`PacketBuf`] (ARP and
//! echo replies, MAC rewrite, TTL, outer header in the headroom).

mod buf;
mod counters;
mod delta;
mod drop;
mod encap;
pub mod gateway;
mod icmp;
mod index;
pub mod learn;
mod policy;
mod neighbor;
pub mod nat;
pub mod offload;
mod pipeline;
mod tables;
pub mod testkit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v6;
#[cfg(test)]
mod tests_bounds;
#[cfg(test)]
mod tests_delta;
#[cfg(test)]
mod tests_gateway;
mod underlay;
mod vm;

pub use buf::PacketBuf;
pub use counters::{Counter, Counters, VsidSlots, VSID_COUNTERS};
pub use learn::Learned;
pub use drop::{Direction, DropReason};
pub use delta::{Refused, MERGE_AT};
pub use policy::{
    CustomerRoute, DecodeError, FlowIdMode, GatewayNat, LookupRecord, Uplink, Policy, PolicyDelta, Port, PortId, ProviderAddress, RecordChange,
    RecordType, RoutingDomain, Rule, Vsid,
};
pub use encap::{encapsulate, flow_id, outer_header_len, FLOW_MIX};
pub use pipeline::{Batch, Effects, Outgoing, Pipeline, EXTRA_POOL, MAX_KERNEL_SEGMENTED};
pub use tables::{FxMap, Location, NextHop, Reach, Record, Route, Snapshot, Tunnel, TunnelId};
pub use underlay::{on_underlay_gre, on_underlay_packet};
pub use vm::on_vm_frame;

use std::net::IpAddr;

/// Decide a batch of frames from one VM port. The frames' table slots are
/// prefetched first, so the cache misses of a large table overlap instead of
/// adding up.
pub fn on_vm_frames(snap: &Snapshot, port: PortId, bufs: &mut [PacketBuf], out: &mut Vec<Action>) {
    if let Some(subnet) = snap.port(port).and_then(|p| snap.subnet(p.vsid)) {
        for b in bufs.iter() {
            if let Some(dst) = b.frame().get(..6).map(crate::wire::MacAddr::from_bytes) {
                if dst.is_unicast() && dst != subnet.gateway_mac {
                    snap.prefetch_mac(subnet.routing_domain, dst);
                }
            }
        }
    }
    let last = std::cell::Cell::new(None);
    out.extend(bufs.iter_mut().map(|b| vm::decide(snap, port, b, &last)));
}

/// Decide a batch of packets from the IPv4 underlay (packet `i` came in on
/// interface `arrived[i]`, 0: not known), prefetching the lookup of each
/// inner source (the anti-spoofing check) first.
pub fn on_underlay_packets(snap: &Snapshot, bufs: &mut [PacketBuf], arrived: &[u32], out: &mut Vec<Action>) {
    for b in bufs.iter() {
        let f = b.frame();
        let ihl = (f.first().copied().unwrap_or(0) & 0x0f) as usize * 4;
        // GRE key after the 4-byte base header, then the inner Ethernet source.
        let (Some(key), Some(src)) = (f.get(ihl + 4..ihl + 8), f.get(ihl + 8 + 6..ihl + 8 + 12)) else { continue };
        let vsid = u32::from_be_bytes(key.try_into().unwrap()) >> 8;
        if let Some(subnet) = snap.subnet(vsid) {
            snap.prefetch_mac(subnet.routing_domain, crate::wire::MacAddr::from_bytes(src));
        }
    }
    out.extend(bufs.iter_mut().enumerate().map(|(i, b)| on_underlay_packet(snap, arrived.get(i).copied().unwrap_or(0), b)));
}

/// A header that failed to parse, as the drop reason it is counted under.
fn malformed(e: crate::wire::Error) -> DropReason {
    match e {
        crate::wire::Error::Truncated => DropReason::Truncated,
        crate::wire::Error::Malformed => DropReason::Malformed,
    }
}

/// How a frame delivered to a local port got there (for counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Switched within its VSID on this host.
    Switched,
    /// Routed by the host's distributed router from another VSID of the domain.
    Routed,
    /// The host's answer to an ARP request (for `.1` or a remote CA).
    ArpReply,
    /// The host's answer to an ICMP echo request to a gateway address.
    EchoReply,
    /// The host's Neighbor Advertisement (for the gateway address or a remote CA).
    NeighborAdvert,
    /// Decapsulated from the underlay.
    Decapsulated,
}

/// What to do with the frame now in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the frame to a local VM port of `vsid`.
    Deliver { port: PortId, vsid: Vsid, via: Via },
    /// Write the frame to every local port of `vsid` but `except` (the
    /// port it came from): broadcast and multicast stay on the host.
    Flood { vsid: Vsid, except: Option<PortId> },
    /// An ARP request for a CA the host has no record of (flow 4): flood it
    /// like `Flood`, and send an encapsulated copy to the PA of each L2Only
    /// record of the VSID (`Snapshot::l2only_tunnels`).
    Probe { vsid: Vsid, except: PortId },
    /// The frame was dropped for `reason`, and the buffer now holds the ICMP
    /// error telling port `port` why (too big for the underlay).
    Reject { port: PortId, vsid: Vsid, reason: DropReason },
    /// The buffer now holds outer IP + GRE + the frame: send it to `pa`.
    Encap { pa: IpAddr, vsid: Vsid, routed: bool },
    /// The buffer holds the frame a tenant of `vsid` sent to a NAT's MAC:
    /// for [`gateway::nat_outbound`], with the worker's NAT table.
    Nat { vsid: Vsid },
    /// The buffer holds an Ethernet frame for the HNV gateway's uplink.
    Uplink,
    /// Nothing to send and nothing wrong: the uplink's traffic that is not
    /// ours, or ARP the host learned from.
    Consumed,
    Drop(DropReason),
}
