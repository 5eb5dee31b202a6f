//! Zero-copy views over packet buffers, in the style of smoltcp's `wire`.
//!
//! Each format has a `Packet<T: AsRef<[u8]>>` view whose getters never panic
//! once `check_len()` has succeeded, and a `Repr` holding only valid values:
//! `Repr::parse` rejects what the format forbids and `Repr::emit` writes it
//! back. Unknown protocol numbers parse into `Unknown(x)`: whether to drop is
//! policy, decided by the core, not by the parser.

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Declares a C-like enum over `$ty` plus an `Unknown($ty)` catch-all, with
/// lossless conversions both ways. Build values with `From`, never with
/// `Unknown(known_value)`, or equality with the named variant breaks.
macro_rules! enum_with_unknown {
    (
        $(#[$enum_attr:meta])*
        pub enum $name:ident($ty:ty) {
            $($(#[$variant_attr:meta])* $variant:ident = $value:expr),+ $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$variant_attr])* $variant,)+
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline]
            fn from(value: $ty) -> Self {
                match value {
                    $($value => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline]
            fn from(value: $name) -> Self {
                match value {
                    $($name::$variant => $value,)+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod pcap;
pub mod tcp;
pub mod udp;

pub use self::arp::{ArpOperation, ArpPacket, ArpRepr};
pub use self::ethernet::{
    EtherType, EthernetFrame, EthernetRepr, HEADER_LEN as ETHERNET_HEADER_LEN,
};
pub use self::gre::{
    GrePacket, NvgreError, NvgreRepr, HEADER_LEN as GRE_HEADER_LEN, VSID_MAX, VSID_MIN,
};
pub use self::icmpv4::{
    DstUnreachable as Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr,
};
pub use self::icmpv6::{Icmpv6Message, Icmpv6Packet, Icmpv6Repr};
pub use self::ipv4::{Ipv4Packet, Ipv4Repr, HEADER_LEN as IPV4_HEADER_LEN};
pub use self::ipv6::{Ipv6Packet, Ipv6Repr, HEADER_LEN as IPV6_HEADER_LEN};
pub use self::ndisc::{multicast_mac, solicited_node_multicast, NdiscRepr, NeighborFlags};
pub use self::pcap::{LinkType, PcapWriter};
pub use self::tcp::{TcpFlags, TcpPacket, HEADER_LEN as TCP_HEADER_LEN};
pub use self::udp::{UdpPacket, UdpRepr, HEADER_LEN as UDP_HEADER_LEN};

/// Field offsets are written as ranges into the buffer.
mod field {
    pub type Field = core::ops::Range<usize>;
    pub type Rest = core::ops::RangeFrom<usize>;
}

// Big-endian accessors shared by every format. Callers pass a `field` range
// slice, so a wrong length is a bug in this module, not an input problem.
#[inline]
fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn read_ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[inline]
fn read_ipv6(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(b);
    Ipv6Addr::from(octets)
}

#[inline]
fn write_u16(b: &mut [u8], value: u16) {
    b.copy_from_slice(&value.to_be_bytes());
}

#[inline]
fn write_u32(b: &mut [u8], value: u32) {
    b.copy_from_slice(&value.to_be_bytes());
}

/// Sets byte `at` of `buf`, whose Internet checksum covers `buf` from offset
/// 0 and is stored in `checksum`, patching that checksum (RFC 1624) instead of
/// summing everything again: the router's per-packet TTL and ICMP type edits.
#[inline]
fn set_u8_checksummed(buf: &mut [u8], at: usize, value: u8, checksum: field::Field) {
    let start = at & !1;
    let word = start..start + 2;
    let old = read_u16(&buf[word.clone()]);
    buf[at] = value;
    let new = read_u16(&buf[word]);
    let sum = checksum::update(read_u16(&buf[checksum.clone()]), old, new);
    write_u16(&mut buf[checksum], sum);
}

/// Why a buffer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header or a length field says.
    Truncated,
    /// The contents violate the format (bad version, checksum, lengths...).
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::Malformed => "malformed",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// An Ethernet (EUI-48) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Builds an address from a 6-byte slice, e.g. an ARP or Ethernet field.
    ///
    /// # Panics
    /// If `data.len() != 6`; callers slice fixed-size fields, so that is a bug.
    #[inline]
    pub fn from_bytes(data: &[u8]) -> MacAddr {
        let mut bytes = [0; 6];
        bytes.copy_from_slice(data);
        MacAddr(bytes)
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The I/G bit: group (multicast, including broadcast) address.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The U/L bit: locally administered rather than vendor assigned.
    #[inline]
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Accepts `60:00:60:00:01:01`, `60-00-60-00-01-01` (one separator kind
    /// throughout) and `600060000101`, hex digits in either case.
    fn from_str(s: &str) -> Result<MacAddr> {
        let s = s.as_bytes();
        // Distance between the starts of two octets: 3 with separators, 2 bare.
        let stride = match s.len() {
            17 if s[2] == b':' || s[2] == b'-' => 3,
            12 => 2,
            _ => return Err(Error::Malformed),
        };
        let hex = |c: u8| (c as char).to_digit(16).ok_or(Error::Malformed);
        let mut mac = [0u8; 6];
        for (i, octet) in mac.iter_mut().enumerate() {
            let at = i * stride;
            if stride == 3 && i > 0 && s[at - 1] != s[2] {
                return Err(Error::Malformed);
            }
            *octet = (hex(s[at])? << 4 | hex(s[at + 1])?) as u8;
        }
        Ok(MacAddr(mac))
    }
}

enum_with_unknown! {
    /// IP protocol / IPv6 next header numbers the core knows about.
    pub enum IpProtocol(u8) {
        Icmp = 1,
        Tcp = 6,
        Udp = 17,
        Gre = 47,
        Icmpv6 = 58,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn mac_parse_formats() {
        let want = MacAddr([0x60, 0x00, 0x60, 0x00, 0x01, 0x01]);
        for s in ["60:00:60:00:01:01", "60-00-60-00-01-01", "600060000101"] {
            assert_eq!(s.parse::<MacAddr>(), Ok(want), "{s}");
        }
        assert_eq!(
            "AA:bb:Cc:dD:0e:F0".parse(),
            Ok(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0x0e, 0xf0]))
        );
    }

    #[test]
    fn mac_parse_rejects() {
        for s in [
            "",
            "60:00:60:00:01",
            "60:00:60:00:01:01:",
            "60:00:60:00:01:011",
            "60:00-60:00:01:01",
            "60.00.60.00.01.01",
            "6:0:60:00:01:01:1",
            "60:00:60:00:01:0g",
            "60006000010",
            "6000600001011",
            "60000060000101x",
            "+0:00:60:00:01:01",
            "+00060000101",
            "60:00:60:00:01:é",
        ] {
            assert_eq!(s.parse::<MacAddr>(), Err(Error::Malformed), "{s:?}");
        }
    }

    #[test]
    fn mac_display_roundtrip() {
        let mac = MacAddr([0x60, 0x00, 0x60, 0x00, 0x01, 0x0a]);
        assert_eq!(mac.to_string(), "60:00:60:00:01:0a");
        assert_eq!(format!("{mac:?}"), "60:00:60:00:01:0a");
        assert_eq!(mac.to_string().parse(), Ok(mac));
    }

    #[test]
    fn mac_bits() {
        let local = MacAddr::from_bytes(&[0x62, 0, 0, 0, 0, 1]);
        assert!(local.is_local() && local.is_unicast() && !local.is_multicast());
        let vendor = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);
        assert!(!vendor.is_local() && vendor.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mcast.is_multicast() && !mcast.is_unicast() && !mcast.is_broadcast());
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert_eq!(MacAddr::default().as_bytes(), &[0; 6]);
    }

    #[test]
    #[should_panic]
    fn mac_from_bytes_wrong_len() {
        MacAddr::from_bytes(&[0; 5]);
    }

    // Feeds arbitrary bytes to every view and repr: once check_len succeeds,
    // every getter must work, and parse must never panic.
    fn exercise(bytes: &[u8]) {
        let eth = EthernetFrame::new_unchecked(bytes);
        if eth.check_len().is_ok() {
            let _ = (
                eth.dst_addr(),
                eth.src_addr(),
                eth.ethertype(),
                eth.payload(),
            );
        }
        let _ = EthernetRepr::parse(&eth);

        let arp = ArpPacket::new_unchecked(bytes);
        if arp.check_len().is_ok() {
            let _ = (arp.hardware_type(), arp.protocol_type(), arp.operation());
            let _ = (arp.source_hardware_addr(), arp.source_protocol_addr());
            let _ = (arp.target_hardware_addr(), arp.target_protocol_addr());
        }
        let _ = ArpRepr::parse(&arp);

        let ip = Ipv4Packet::new_unchecked(bytes);
        if ip.check_len().is_ok() {
            let _ = (
                ip.version(),
                ip.dscp(),
                ip.ecn(),
                ip.ident(),
                ip.dont_frag(),
                ip.more_frags(),
            );
            let _ = (
                ip.frag_offset(),
                ip.hop_limit(),
                ip.next_header(),
                ip.checksum(),
            );
            let _ = (
                ip.src_addr(),
                ip.dst_addr(),
                ip.verify_checksum(),
                ip.payload(),
            );
        }
        let _ = Ipv4Repr::parse(&ip);

        let ip6 = Ipv6Packet::new_unchecked(bytes);
        if ip6.check_len().is_ok() {
            let _ = (
                ip6.version(),
                ip6.traffic_class(),
                ip6.flow_label(),
                ip6.next_header(),
            );
            let _ = (
                ip6.hop_limit(),
                ip6.src_addr(),
                ip6.dst_addr(),
                ip6.payload(),
            );
        }
        let _ = Ipv6Repr::parse(&ip6);

        let icmp = Icmpv4Packet::new_unchecked(bytes);
        if icmp.check_len().is_ok() {
            let _ = (
                icmp.msg_type(),
                icmp.msg_code(),
                icmp.checksum(),
                icmp.echo_ident(),
            );
            let _ = (icmp.echo_seq_no(), icmp.data(), icmp.verify_checksum());
            let _ = icmp.next_hop_mtu();
        }
        let _ = Icmpv4Repr::parse(&icmp);

        let (a, b) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let icmp6 = Icmpv6Packet::new_unchecked(bytes);
        if icmp6.check_len().is_ok() {
            let _ = (icmp6.msg_type(), icmp6.msg_code(), icmp6.checksum());
            let _ = (icmp6.echo_ident(), icmp6.echo_seq_no(), icmp6.mtu());
            let _ = (icmp6.data(), icmp6.verify_checksum(&a, &b));
            if matches!(
                icmp6.msg_type(),
                Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert
            ) {
                let _ = (
                    icmp6.target_addr(),
                    icmp6.neighbor_flags(),
                    icmp6.ndisc_options(),
                );
            }
        }
        let _ = NdiscRepr::parse(&icmp6);
        // Parse with the checksum that makes these bytes pass, so the
        // per-type checks run rather than stopping at the checksum.
        if bytes.len() >= 8 {
            let mut fixed = bytes.to_vec();
            Icmpv6Packet::new_unchecked(&mut fixed[..]).fill_checksum(&a, &b);
            let _ = Icmpv6Repr::parse(&a, &b, &Icmpv6Packet::new_unchecked(&fixed[..]));
            let mut fixed = bytes.to_vec();
            Icmpv4Packet::new_unchecked(&mut fixed[..]).fill_checksum();
            let _ = Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&fixed[..]));
        }

        let tcp = TcpPacket::new_unchecked(bytes);
        if tcp.check_len().is_ok() {
            let _ = (
                tcp.src_port(),
                tcp.dst_port(),
                tcp.seq_number(),
                tcp.ack_number(),
            );
            let _ = (
                tcp.header_len(),
                tcp.reserved(),
                tcp.flags(),
                tcp.window_len(),
            );
            let _ = (
                tcp.checksum(),
                tcp.urgent_at(),
                tcp.options(),
                tcp.payload(),
            );
            let _ = (tcp.fin(), tcp.syn(), tcp.rst(), tcp.psh());
            let _ = (
                tcp.ack(),
                tcp.urg(),
                tcp.ece(),
                tcp.cwr(),
                tcp.segment_len(),
            );
            let v4 = Ipv4Addr::LOCALHOST;
            let _ = (
                tcp.verify_checksum_v4(&v4, &v4),
                tcp.verify_checksum_v6(&a, &b),
            );
        }

        let udp = UdpPacket::new_unchecked(bytes);
        if udp.check_len().is_ok() {
            let _ = (udp.src_port(), udp.dst_port(), udp.len(), udp.checksum());
            let v4 = Ipv4Addr::LOCALHOST;
            let _ = (udp.payload(), udp.verify_checksum_v4(&v4, &v4));
            let _ = udp.verify_checksum_v6(&a, &b);
        }
        let _ = UdpRepr::parse(&udp);

        let gre = GrePacket::new_unchecked(bytes);
        if gre.check_len().is_ok() {
            let _ = (
                gre.checksum_present(),
                gre.key_present(),
                gre.seq_present(),
                gre.reserved0(),
            );
            let _ = (
                gre.version(),
                gre.protocol_type(),
                gre.key(),
                gre.vsid(),
                gre.flow_id(),
                gre.payload(),
            );
        }
        let _ = NvgreRepr::parse(&gre);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        };
        let mut buf = [0u8; 96];
        for round in 0..20_000 {
            buf.fill_with(&mut next);
            // Small length fields make the interesting (almost valid) cases likely.
            if round % 2 == 0 {
                buf[0] = 0x40 | (buf[0] & 0x0f); // IPv4 version, any IHL
                buf[2] = 0;
                buf[4] = 0; // IPv6 payload length high byte
            }
            let len = usize::from(next()) % (buf.len() + 1);
            exercise(&buf[..len]);
        }
        for fill in [0x00, 0xff] {
            for len in 0..=buf.len() {
                exercise(&[fill; 96][..len]);
            }
        }
    }

    #[test]
    fn ip_protocol_roundtrip() {
        for (n, p) in [
            (1, IpProtocol::Icmp),
            (6, IpProtocol::Tcp),
            (17, IpProtocol::Udp),
            (47, IpProtocol::Gre),
            (58, IpProtocol::Icmpv6),
            (132, IpProtocol::Unknown(132)),
        ] {
            assert_eq!(IpProtocol::from(n), p);
            assert_eq!(u8::from(p), n);
        }
    }
}
