//! Connection mirroring (hnv-gateway.md): every mapping the active gateway
//! creates, changes or removes, as a fixed 24-byte message for the standby,
//! which [`apply`](super::NatTable::apply)s it. Big-endian, versioned; any
//! input decodes to an event or an error, never a panic.
//!
//! ```text
//!  0 version (1)   1 kind (1 created, 2 changed, 3 removed)
//!  2 IP protocol   3 TCP state bits
//!  4..8   VSID            8..12  inside address
//! 12..14  inside port    14..16  external port
//! 16..20  external address
//! 20..24  seconds left before it expires
//! ```

use super::{shard_of_port, InsideKey, Proto};
use crate::dp::policy::MAX_VSID;
use crate::wire::IpProtocol;
use std::net::Ipv4Addr;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const PROTO: usize = 2;
    pub const TCP: usize = 3;
    pub const VSID: Range<usize> = 4..8;
    pub const INSIDE_ADDR: Range<usize> = 8..12;
    pub const INSIDE_PORT: Range<usize> = 12..14;
    pub const EXTERNAL_PORT: Range<usize> = 14..16;
    pub const EXTERNAL_ADDR: Range<usize> = 16..20;
    pub const REMAINING: Range<usize> = 20..24;
}

/// Bytes of one encoded event.
pub const EVENT_LEN: usize = field::REMAINING.end;
const VERSION: u8 = 1;
use super::table::tcp::ALL as TCP_BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created = 1,
    /// Its expiry or TCP state moved.
    Changed = 2,
    Removed = 3,
}

/// One mapping's change, as the standby hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingEvent {
    pub kind: EventKind,
    pub inside: InsideKey,
    pub external: Ipv4Addr,
    pub external_port: u16,
    /// TCP state bits (0 for UDP and ICMP).
    pub tcp: u8,
    /// Seconds left before it expires, on the active gateway.
    pub remaining: u32,
}

/// Why an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorError {
    Truncated,
    Version(u8),
    Kind(u8),
    Protocol(u8),
    Vsid(u32),
    TcpState(u8),
    /// The event's routing domain has no NAT here.
    NoNat,
    /// The external address or port is not the NAT's here.
    NotThisNat,
}

impl MappingEvent {
    /// The shard, hence the worker, it belongs to.
    pub fn shard(&self) -> usize {
        shard_of_port(self.external_port)
    }

    pub fn encode(&self, out: &mut [u8; EVENT_LEN]) {
        out[field::VERSION] = VERSION;
        out[field::KIND] = self.kind as u8;
        out[field::PROTO] = self.inside.proto.ip().into();
        out[field::TCP] = self.tcp;
        out[field::VSID].copy_from_slice(&self.inside.vsid.to_be_bytes());
        out[field::INSIDE_ADDR].copy_from_slice(&self.inside.addr.octets());
        out[field::INSIDE_PORT].copy_from_slice(&self.inside.port.to_be_bytes());
        out[field::EXTERNAL_PORT].copy_from_slice(&self.external_port.to_be_bytes());
        out[field::EXTERNAL_ADDR].copy_from_slice(&self.external.octets());
        out[field::REMAINING].copy_from_slice(&self.remaining.to_be_bytes());
    }

    /// Decode the event at the start of `buf` (bytes past [`EVENT_LEN`] are
    /// the next event's).
    pub fn decode(buf: &[u8]) -> Result<MappingEvent, MirrorError> {
        let b: &[u8; EVENT_LEN] = buf.get(..EVENT_LEN).and_then(|b| b.try_into().ok()).ok_or(MirrorError::Truncated)?;
        let u16_at = |r: std::ops::Range<usize>| u16::from_be_bytes([b[r.start], b[r.start + 1]]);
        let u32_at = |r: std::ops::Range<usize>| u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]]);
        if b[field::VERSION] != VERSION {
            return Err(MirrorError::Version(b[field::VERSION]));
        }
        let kind = match b[field::KIND] {
            1 => EventKind::Created,
            2 => EventKind::Changed,
            3 => EventKind::Removed,
            k => return Err(MirrorError::Kind(k)),
        };
        let proto = Proto::from_ip(IpProtocol::from(b[field::PROTO])).ok_or(MirrorError::Protocol(b[field::PROTO]))?;
        let tcp = b[field::TCP];
        if tcp & !TCP_BITS != 0 || (proto != Proto::Tcp && tcp != 0) {
            return Err(MirrorError::TcpState(tcp));
        }
        let vsid = u32_at(field::VSID);
        if vsid > MAX_VSID {
            return Err(MirrorError::Vsid(vsid));
        }
        Ok(MappingEvent {
            kind,
            inside: InsideKey {
                vsid,
                proto,
                addr: Ipv4Addr::from(u32_at(field::INSIDE_ADDR)),
                port: u16_at(field::INSIDE_PORT),
            },
            external: Ipv4Addr::from(u32_at(field::EXTERNAL_ADDR)),
            external_port: u16_at(field::EXTERNAL_PORT),
            tcp,
            remaining: u32_at(field::REMAINING),
        })
    }
}
