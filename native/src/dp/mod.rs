//! The decision core: a frame from a VM port or an NVGRE packet from the
//! underlay goes in, an [`Action`] comes out. No I/O, no clocks, no locks:
//! everything here is testable with byte arrays and benchmarkable without
//! devices. The frame is rewritten in place in its [`PacketBuf`] (ARP and
//! echo replies, MAC rewrite, TTL, outer header in the headroom).

mod buf;
mod counters;
mod drop;
mod encap;
mod policy;
mod tables;
pub mod testkit;
#[cfg(test)]
mod tests;
mod underlay;
mod vm;

pub use buf::PacketBuf;
pub use counters::{Counter, Counters, VsidSlots, VSID_COUNTERS};
pub use drop::{Direction, DropReason};
pub use policy::{
    CustomerRoute, DecodeError, FlowIdMode, LookupRecord, Policy, Port, PortId, ProviderAddress, RecordType,
    RoutingDomain, Rule, Vsid,
};
pub use tables::{FxMap, Location, NextHop, Reach, Record, Route, Snapshot, Tunnel};
pub use underlay::{on_underlay_gre, on_underlay_packet};
pub use vm::on_vm_frame;

use std::net::IpAddr;

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
    /// The buffer now holds outer IP + GRE + the frame: send it to `pa`.
    Encap { pa: IpAddr, vsid: Vsid, routed: bool },
    Drop(DropReason),
}
