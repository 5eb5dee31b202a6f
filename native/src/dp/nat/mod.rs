//! The HNV gateway's multi-tenant NAT (hnv-gateway.md), as pure decisions:
//! an IPv4 packet goes in, is translated in place, and a [`NatVerdict`] says
//! where it goes. No I/O, no clock (the caller passes `now` in seconds of a
//! monotonic clock), no locks.
//!
//! Layout, after VPP's `nat44-ed`: the NAT entries ([`Nats`], one per
//! routing domain, shared read-only by every worker) and one [`NatTable`] per
//! worker holding the mappings that worker owns. Ownership is by shard: an
//! inside endpoint (VSID, protocol, address, port) hashes to one of
//! [`SHARDS`] shards, and its external port is always allocated so that
//! `port % SHARDS` is that same shard. Outbound packets are steered to a
//! worker by [`outbound_shard`], the replies by [`inbound_shard`] (their
//! destination port names the shard), so both directions of a mapping meet
//! in the worker that owns it, whatever the number of workers, on the
//! active gateway and on its standby alike.
//!
//! Behaviour (RFC 4787, RFC 5382): endpoint-independent mapping (one
//! external port per inside endpoint, whoever it talks to) and
//! endpoint-independent filtering (a mapping takes replies from any remote
//! endpoint; a packet no mapping takes is dropped, `nat_no_mapping`); ports
//! are not preserved; idle timeouts by protocol and TCP state
//! ([`Timeouts`]); a limit per NAT and in total.

mod mirror;
mod table;
#[cfg(test)]
mod tests;
mod translate;

pub use mirror::{EventKind, MappingEvent, MirrorError, EVENT_LEN};
pub use table::{MappingView, NatTable};
pub use translate::{inbound_shard, outbound_shard};

use super::{FxMap, RoutingDomain, Vsid};
use crate::wire::IpProtocol;
use std::net::Ipv4Addr;

/// Index of a NAT in its [`Nats`].
pub type NatIndex = u16;

/// Shards of the inside endpoints and of the external ports.
pub const SHARDS: usize = 64;

/// The protocols the NAT translates; ICMP by its echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

    pub fn from_ip(p: IpProtocol) -> Option<Proto> {
        match p {
            IpProtocol::Tcp => Some(Proto::Tcp),
            IpProtocol::Udp => Some(Proto::Udp),
            IpProtocol::Icmp => Some(Proto::Icmp),
            _ => None,
        }
    }

    pub fn ip(self) -> IpProtocol {
        match self {
            Proto::Tcp => IpProtocol::Tcp,
            Proto::Udp => IpProtocol::Udp,
            Proto::Icmp => IpProtocol::Icmp,
        }
    }

    /// The label value (`nvgrectl nat show`, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// Idle timeouts in seconds (RFC 5382 REQ-5, RFC 4787 REQ-5, RFC 5508 REQ-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: u32,
    /// Before both sides were seen, and after both FINs or an RST.
    pub tcp_transitory: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { tcp_established: 2 * 3600 + 4 * 60, tcp_transitory: 4 * 60, udp: 5 * 60, icmp: 60 }
    }
}

impl Timeouts {
    /// The longest: a timer wheel must span it.
    pub fn longest(&self) -> u32 {
        self.tcp_established.max(self.tcp_transitory).max(self.udp).max(self.icmp)
    }
}

/// An inside endpoint: the key of a mapping. The VSID keeps tenants with the
/// same CA and port apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InsideKey {
    pub vsid: Vsid,
    pub proto: Proto,
    pub addr: Ipv4Addr,
    /// The source port, or the ICMP echo identifier.
    pub port: u16,
}

impl InsideKey {
    /// Its shard: a fixed mix of its fields (the same on every gateway of a
    /// pair, so a mirrored mapping's port still names its shard).
    pub fn shard(&self) -> usize {
        let a = u64::from(u32::from(self.addr)) << 32 | u64::from(self.vsid) << 8 | self.proto as u64;
        let h = (a ^ u64::from(self.port) << 40).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 58) as usize // the top 6 bits: SHARDS = 64
    }
}

impl InsideKey {
    /// A 64-bit digest of its 74 bits, the key of the table that finds its
    /// mapping (which compares the whole key): mixed, so tenants cannot line
    /// theirs up with another's.
    pub(crate) fn hash64(&self) -> u64 {
        let a = u64::from(u32::from(self.addr)) << 32 | u64::from(self.vsid) << 8 | self.proto as u64;
        let h = mix(a) ^ u64::from(self.port).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // u64::MAX marks an empty slot in the table.
        if h == u64::MAX { h - 1 } else { h }
    }
}

/// MurmurHash3's 64-bit finalizer.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The shard an external port belongs to.
#[inline]
pub fn shard_of_port(port: u16) -> usize {
    usize::from(port) % SHARDS
}

/// The worker (of `workers`) that owns a shard.
#[inline]
pub fn worker_of_shard(shard: usize, workers: usize) -> usize {
    shard % workers.max(1)
}

/// `Add-NetNatStaticMapping`: a port of the external address open to an
/// inside endpoint permanently, from any remote endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticMapping {
    pub proto: Proto,
    pub external_port: u16,
    /// The VSID of `internal_address` (the control plane resolves it from the
    /// routing domain's lookup records).
    pub vsid: Vsid,
    pub internal_address: Ipv4Addr,
    pub internal_port: u16,
}

/// One NAT entry (`New-NetNat`, the `nat` list of config.md) as the core
/// needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat {
    pub name: String,
    pub routing_domain: RoutingDomain,
    /// Its inside address: the source of the ICMP errors it sends tenants.
    pub internal_address: Ipv4Addr,
    pub external_address: Ipv4Addr,
    pub port_start: u16,
    pub port_end: u16,
    pub static_mappings: Vec<StaticMapping>,
    /// Dynamic mappings at most (each worker holds its share, see [`NatTable`]).
    pub max_mappings: u32,
    pub timeouts: Timeouts,
}

/// Dynamic mappings a NAT holds at most unless told otherwise: every port of
/// the range for each protocol.
pub const DEFAULT_MAX_MAPPINGS: u32 = 3 * 65536;

/// Why a set of NAT entries was refused (the field and value named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatError(pub String);

/// Where a static mapping's external port leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StaticTarget {
    pub nat: NatIndex,
    pub inside: InsideKey,
}

/// Every NAT entry of the gateway, with the indexes the packet path needs.
/// Immutable once built: a change builds new `Nats` and every worker's table
/// [`reconcile`](NatTable::reconcile)s with it.
#[derive(Debug, Default)]
pub struct Nats {
    entries: Vec<Nat>,
    by_routing_domain: FxMap<RoutingDomain, NatIndex>,
    /// (external address, protocol, external port) → inside endpoint.
    static_in: FxMap<(Ipv4Addr, Proto, u16), StaticTarget>,
    /// Inside endpoint → (NAT, external port).
    static_out: FxMap<InsideKey, (NatIndex, u16)>,
    max_total: u32,
}

impl Nats {
    /// Index `entries`; `max_total` bounds the dynamic mappings of all of them.
    pub fn new(entries: Vec<Nat>, max_total: u32) -> Result<Nats, NatError> {
        let mut nats = Nats { max_total, ..Nats::default() };
        if entries.len() > usize::from(NatIndex::MAX) {
            return Err(NatError(format!("nat: {} entries, at most {}", entries.len(), NatIndex::MAX)));
        }
        for (i, n) in entries.iter().enumerate() {
            let at = |field: &str| format!("nat[{i}] ({}).{field}", n.name);
            if n.port_start == 0 || n.port_start > n.port_end {
                return Err(NatError(format!(
                    "{}: {}..{} is not a range of ports 1..65535",
                    at("port_start"),
                    n.port_start,
                    n.port_end
                )));
            }
            if let Some(j) = nats.by_routing_domain.insert(n.routing_domain, i as NatIndex) {
                return Err(NatError(format!("{}: {} already has nat[{j}]", at("routing_domain"), n.routing_domain)));
            }
            if entries[..i].iter().any(|o| o.name == n.name) {
                return Err(NatError(format!("{}: {:?} is not unique", at("name"), n.name)));
            }
            for (k, s) in n.static_mappings.iter().enumerate() {
                let target = StaticTarget {
                    nat: i as NatIndex,
                    inside: InsideKey { vsid: s.vsid, proto: s.proto, addr: s.internal_address, port: s.internal_port },
                };
                let field = at(&format!("static_mappings[{k}]"));
                if s.external_port == 0 || s.internal_port == 0 {
                    return Err(NatError(format!("{field}: port 0")));
                }
                if nats.static_in.insert((n.external_address, s.proto, s.external_port), target).is_some() {
                    return Err(NatError(format!(
                        "{field}.external_port: {} {}:{} is mapped twice",
                        s.proto.name(),
                        n.external_address,
                        s.external_port
                    )));
                }
                if nats.static_out.insert(target.inside, (i as NatIndex, s.external_port)).is_some() {
                    return Err(NatError(format!(
                        "{field}.internal_address: {} {}:{} is mapped twice",
                        s.proto.name(),
                        s.internal_address,
                        s.internal_port
                    )));
                }
            }
        }
        nats.entries = entries;
        Ok(nats)
    }

    pub fn entries(&self) -> &[Nat] {
        &self.entries
    }

    pub fn get(&self, nat: NatIndex) -> Option<&Nat> {
        self.entries.get(usize::from(nat))
    }

    pub fn of_routing_domain(&self, rd: RoutingDomain) -> Option<NatIndex> {
        self.by_routing_domain.get(&rd).copied()
    }

    pub fn index_of(&self, name: &str) -> Option<NatIndex> {
        self.entries.iter().position(|n| n.name == name).map(|i| i as NatIndex)
    }

    pub fn max_total(&self) -> u32 {
        self.max_total
    }

    /// Whether `addr` is one of the NATs' external addresses.
    pub fn is_external(&self, addr: Ipv4Addr) -> bool {
        self.entries.iter().any(|n| n.external_address == addr)
    }

    pub(crate) fn static_in(&self, addr: Ipv4Addr, proto: Proto, port: u16) -> Option<StaticTarget> {
        self.static_in.get(&(addr, proto, port)).copied()
    }

    pub(crate) fn static_out(&self, key: &InsideKey) -> Option<(NatIndex, u16)> {
        self.static_out.get(key).copied()
    }
}

/// What to do with the packet after the NAT decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatVerdict {
    /// Translated outbound: send it out of the uplink toward its destination.
    Uplink { nat: NatIndex },
    /// Translated inbound: encapsulate it to its destination (now the inside
    /// address) in `vsid`, with the NAT's MAC as the inner source.
    Tenant { nat: NatIndex, vsid: Vsid },
    /// Too big for the way on (`mtu`) with DF set: the buffer now holds the
    /// first `len` bytes of an ICMP "fragmentation needed" for the sender,
    /// to send back the way the packet came. Counted under `reason`.
    Reject { len: usize, reason: super::DropReason },
    Drop(super::DropReason),
}
