//! IPv6 Neighbor Discovery (RFC 4861), the part a router on an Ethernet
//! segment needs to resolve and answer for addresses: Neighbor Solicitation
//! and Neighbor Advertisement with their link-layer address options.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |  Type (135/136)  |   Code 0  |           Checksum            |
//! |R|S|O|                     Reserved (NS: all 32 bits)           |
//! |                    Target Address (128 bits)                   |
//! |   Options: Type  |  Length (units of 8 bytes) |  Value ...     |
//! ```
//!
//! Messages are ICMPv6: the view is [`Icmpv6Packet`], extended here with
//! the ND accessors, and the checksum is [`Icmpv6Repr`](super::Icmpv6Repr)'s
//! business. RFC 4861 §7.1 also requires checks on the enclosing IPv6 header
//! that this module cannot see; the caller makes them: hop limit 255 (so the
//! message cannot have crossed a router), and for NS from the unspecified
//! address (DAD) a solicited-node destination and no source link-layer
//! address option; for NA to a multicast destination, Solicited clear.

use core::ops::{BitOr, BitOrAssign};
use std::net::Ipv6Addr;

use super::icmpv6::{Icmpv6Message, Icmpv6Packet};
use super::{read_ipv6, Error, MacAddr, Result};

mod field {
    use crate::wire::field::*;

    /// NA flags R, S, O in the top bits; the rest of the word is reserved.
    pub const FLAGS: usize = 4;
    pub const RESERVED: Field = 4..8;
    pub const TARGET: Field = 8..24;
    pub const OPTIONS: Rest = TARGET.end..;

    // Within one option.
    pub const OPT_TYPE: usize = 0;
    pub const OPT_LEN: usize = 1;
    pub const OPT_LLADDR: Field = 2..8;
}

/// Length of the fixed part of NS and NA: ICMPv6 header and target address.
pub const HEADER_LEN: usize = field::OPTIONS.start;

/// Option types (RFC 4861 §4.6).
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// Options are sized in units of 8 bytes.
const OPT_UNIT: usize = 8;
/// A link-layer address option for Ethernet is one unit (RFC 2464 §6).
const LLADDR_OPT_LEN: usize = field::OPT_LLADDR.end;

const FLAGS_MASK: u8 = 0xe0;

/// The Router, Solicited and Override flags of a Neighbor Advertisement
/// (RFC 4861 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeighborFlags(u8);

impl NeighborFlags {
    /// The sender is a router.
    pub const ROUTER: NeighborFlags = NeighborFlags(0x80);
    /// Sent in response to a Neighbor Solicitation.
    pub const SOLICITED: NeighborFlags = NeighborFlags(0x40);
    /// Overrides an existing cache entry.
    pub const OVERRIDE: NeighborFlags = NeighborFlags(0x20);

    #[inline]
    pub const fn empty() -> NeighborFlags {
        NeighborFlags(0)
    }

    /// The flags as they sit in the first byte after the checksum.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Keeps R, S and O of `bits`, dropping the reserved bits.
    #[inline]
    pub const fn from_bits_truncate(bits: u8) -> NeighborFlags {
        NeighborFlags(bits & FLAGS_MASK)
    }

    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: NeighborFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for NeighborFlags {
    type Output = NeighborFlags;

    #[inline]
    fn bitor(self, rhs: NeighborFlags) -> NeighborFlags {
        NeighborFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for NeighborFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: NeighborFlags) {
        self.0 |= rhs.0;
    }
}

/// Neighbor Discovery accessors. [`Icmpv6Packet::check_len`] guarantees the
/// target address for NS and NA; on other message types these may panic.
impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::TARGET])
    }

    /// NA's R, S and O flags (NS has none: its reserved bits read as flags).
    #[inline]
    pub fn neighbor_flags(&self) -> NeighborFlags {
        NeighborFlags::from_bits_truncate(self.buffer.as_ref()[field::FLAGS])
    }

    /// The options after the target address, unparsed.
    #[inline]
    pub fn ndisc_options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    #[inline]
    pub fn set_target_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&value.octets());
    }

    /// Sets R, S and O, leaving the reserved bits alone.
    #[inline]
    pub fn set_neighbor_flags(&mut self, value: NeighborFlags) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !FLAGS_MASK) | value.bits();
    }

    /// Zeroes the 32 bits after the checksum: NS's reserved field, NA's flags
    /// and reserved bits.
    #[inline]
    pub fn clear_ndisc_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }

    #[inline]
    pub fn ndisc_options_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::OPTIONS]
    }
}

/// A validated Neighbor Solicitation or Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdiscRepr {
    NeighborSolicit {
        target_addr: Ipv6Addr,
        /// The Source Link-Layer Address option; absent in DAD probes.
        lladdr: Option<MacAddr>,
    },
    NeighborAdvert {
        flags: NeighborFlags,
        target_addr: Ipv6Addr,
        /// The Target Link-Layer Address option.
        lladdr: Option<MacAddr>,
    },
}

impl NdiscRepr {
    /// Validates what RFC 4861 §7.1.1/§7.1.2 asks of the ICMPv6 message:
    /// type NS or NA, code 0, at least 24 bytes (`Truncated` otherwise),
    /// target not multicast, and every option with a non-zero length that
    /// stays within the message; anything else is `Malformed`. Unknown
    /// options are skipped; of repeated link-layer address options the
    /// first counts, as in Linux; one that is not 8 bytes long (not an
    /// Ethernet address, RFC 2464 §6) is `Malformed`. Reserved bits are
    /// ignored, as the RFC requires of receivers.
    ///
    /// The checksum is not checked here (it needs the IPv6 addresses): use
    /// [`Icmpv6Repr::parse`](super::Icmpv6Repr::parse), which does, and
    /// see the module documentation for the IPv6 header checks left to the
    /// caller, hop limit 255 first.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv6Packet<&T>) -> Result<NdiscRepr> {
        packet.check_len()?;
        let option = match packet.msg_type() {
            Icmpv6Message::NeighborSolicit => OPT_SOURCE_LLADDR,
            Icmpv6Message::NeighborAdvert => OPT_TARGET_LLADDR,
            _ => return Err(Error::Malformed),
        };
        if packet.msg_code() != 0 {
            return Err(Error::Malformed);
        }
        let target_addr = packet.target_addr();
        if target_addr.is_multicast() {
            return Err(Error::Malformed);
        }
        let lladdr = find_lladdr(packet.ndisc_options(), option)?;
        Ok(if option == OPT_SOURCE_LLADDR {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            }
        } else {
            NdiscRepr::NeighborAdvert {
                flags: packet.neighbor_flags(),
                target_addr,
                lladdr,
            }
        })
    }

    /// Bytes written by [`emit`](Self::emit): 24, plus 8 with the option.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        let lladdr = match self {
            NdiscRepr::NeighborSolicit { lladdr, .. }
            | NdiscRepr::NeighborAdvert { lladdr, .. } => lladdr,
        };
        HEADER_LEN
            + match lladdr {
                Some(_) => LLADDR_OPT_LEN,
                None => 0,
            }
    }

    /// Writes the message, reserved bits zeroed, and the link-layer address
    /// option when there is one. The checksum is left alone: it needs the
    /// IPv6 addresses, and [`Icmpv6Repr::emit`](super::Icmpv6Repr::emit)
    /// fills it (or call [`Icmpv6Packet::fill_checksum`]). The IPv6 hop limit
    /// must be 255.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv6Packet<T>) {
        let (msg_type, flags, target_addr, option, lladdr) = match *self {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            } => (
                Icmpv6Message::NeighborSolicit,
                NeighborFlags::empty(),
                target_addr,
                OPT_SOURCE_LLADDR,
                lladdr,
            ),
            NdiscRepr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            } => (
                Icmpv6Message::NeighborAdvert,
                flags,
                target_addr,
                OPT_TARGET_LLADDR,
                lladdr,
            ),
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(0);
        packet.clear_ndisc_reserved();
        packet.set_neighbor_flags(flags);
        packet.set_target_addr(target_addr);
        if let Some(mac) = lladdr {
            let opt = &mut packet.ndisc_options_mut()[..LLADDR_OPT_LEN];
            opt[field::OPT_TYPE] = option;
            opt[field::OPT_LEN] = (LLADDR_OPT_LEN / OPT_UNIT) as u8;
            opt[field::OPT_LLADDR].copy_from_slice(mac.as_bytes());
        }
    }
}

/// Walks `options`, checking each is well formed, and returns the Ethernet
/// address in the first option of type `kind`.
fn find_lladdr(mut options: &[u8], kind: u8) -> Result<Option<MacAddr>> {
    let mut found = None;
    while !options.is_empty() {
        if options.len() <= field::OPT_LEN {
            return Err(Error::Malformed);
        }
        let len = usize::from(options[field::OPT_LEN]) * OPT_UNIT;
        if len == 0 || len > options.len() {
            return Err(Error::Malformed);
        }
        if options[field::OPT_TYPE] == kind && found.is_none() {
            if len != LLADDR_OPT_LEN {
                return Err(Error::Malformed);
            }
            found = Some(MacAddr::from_bytes(&options[field::OPT_LLADDR]));
        }
        options = &options[len..];
    }
    Ok(found)
}

/// The solicited-node multicast address of `addr`, `ff02::1:ffXX:XXXX` with
/// its low 24 bits (RFC 4291 §2.7.1): where NS for `addr` is sent, and a
/// group a node must join for each of its addresses.
#[inline]
pub fn solicited_node_multicast(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet destination of an IPv6 multicast address,
/// `33:33` and its low 32 bits (RFC 2464 §7).
#[inline]
pub fn multicast_mac(addr: &Ipv6Addr) -> MacAddr {
    let o = addr.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::icmpv6::Icmpv6Repr;
    use crate::wire::ipv6::Ipv6Packet;
    use crate::wire::IpProtocol;

    // Captured on a Linux 6.18 veth (tshark: checksums correct), whole IPv6
    // packets so the hop limit shows. The NS was sent by fd00::101
    // (60:00:60:00:01:01) to resolve fd00::1, to ff02::1:ff00:1 in an
    // Ethernet frame for 33:33:ff:00:00:01, with the source link-layer
    // address option.
    #[rustfmt::skip]
    static NS: [u8; 72] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x01, 0x87, 0x00, 0xbd, 0x98, 0x00, 0x00, 0x00, 0x00,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x01, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01,
    ];

    // The answer of fd00::1 (62:00:00:00:00:01, forwarding on): R, S and O
    // set, with the target link-layer address option.
    #[rustfmt::skip]
    static NA: [u8; 72] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x88, 0x00, 0x3b, 0x9c, 0xe0, 0x00, 0x00, 0x00,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x02, 0x01, 0x62, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    const HOST_MAC: MacAddr = MacAddr([0x60, 0x00, 0x60, 0x00, 0x01, 0x01]);
    const ROUTER_MAC: MacAddr = MacAddr([0x62, 0x00, 0x00, 0x00, 0x00, 0x01]);

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn ns_repr() -> NdiscRepr {
        NdiscRepr::NeighborSolicit {
            target_addr: addr("fd00::1"),
            lladdr: Some(HOST_MAC),
        }
    }

    fn na_repr() -> NdiscRepr {
        NdiscRepr::NeighborAdvert {
            flags: NeighborFlags::ROUTER | NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
            target_addr: addr("fd00::1"),
            lladdr: Some(ROUTER_MAC),
        }
    }

    fn icmp(ip: &[u8]) -> &[u8] {
        &ip[40..]
    }

    fn parse(bytes: &[u8]) -> Result<NdiscRepr> {
        NdiscRepr::parse(&Icmpv6Packet::new_unchecked(bytes))
    }

    /// `bytes` (an NS or NA message, from the fixed part on) with `options`
    /// in place of its options.
    fn with_options(bytes: &[u8], options: &[u8]) -> Vec<u8> {
        let mut out = bytes[..HEADER_LEN].to_vec();
        out.extend_from_slice(options);
        out
    }

    #[test]
    fn deconstruct_ns() {
        let ip = Ipv6Packet::new_checked(&NS[..]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
        let packet = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(packet.msg_type(), Icmpv6Message::NeighborSolicit);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0xbd98);
        assert!(packet.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(packet.neighbor_flags(), NeighborFlags::empty());
        assert_eq!(packet.target_addr(), addr("fd00::1"));
        assert_eq!(
            packet.ndisc_options(),
            &[0x01, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]
        );
        assert_eq!(ip.dst_addr(), solicited_node_multicast(&addr("fd00::1")));
    }

    #[test]
    fn deconstruct_na() {
        let ip = Ipv6Packet::new_checked(&NA[..]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        let packet = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(packet.msg_type(), Icmpv6Message::NeighborAdvert);
        assert_eq!(packet.checksum(), 0x3b9c);
        assert!(packet.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        let flags = packet.neighbor_flags();
        assert!(flags.contains(NeighborFlags::ROUTER));
        assert!(flags.contains(NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE));
        assert_eq!(flags.bits(), 0xe0);
        assert_eq!(packet.target_addr(), addr("fd00::1"));
        assert_eq!(packet.ndisc_options(), &NA[64..]);
    }

    #[test]
    fn construct_ns_and_na() {
        let mut bytes = [0xa5; 32];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv6Message::NeighborSolicit);
        packet.set_msg_code(0);
        packet.clear_ndisc_reserved();
        packet.set_target_addr(addr("fd00::1"));
        packet
            .ndisc_options_mut()
            .copy_from_slice(&[0x01, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]);
        packet.fill_checksum(&addr("fd00::101"), &addr("ff02::1:ff00:1"));
        assert_eq!(bytes, icmp(&NS));

        let mut bytes = [0xa5; 32];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv6Message::NeighborAdvert);
        packet.set_msg_code(0);
        packet.clear_ndisc_reserved();
        packet.set_neighbor_flags(
            NeighborFlags::ROUTER | NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
        );
        packet.set_target_addr(addr("fd00::1"));
        packet.ndisc_options_mut().copy_from_slice(&NA[64..]);
        packet.fill_checksum(&addr("fd00::1"), &addr("fd00::101"));
        assert_eq!(bytes, icmp(&NA));
    }

    #[test]
    fn parse_ns_and_na() {
        assert_eq!(parse(icmp(&NS)), Ok(ns_repr()));
        assert_eq!(parse(icmp(&NA)), Ok(na_repr()));
        // Through Icmpv6Repr, which checks the checksum first.
        for (ip, want) in [(&NS, ns_repr()), (&NA, na_repr())] {
            let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
            let packet = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert_eq!(
                Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &packet),
                Ok(Icmpv6Repr::Ndisc(want))
            );
            assert_eq!(
                Icmpv6Repr::parse(&ip.src_addr(), &addr("ff02::1"), &packet),
                Err(Error::Malformed),
                "checksum"
            );
        }
    }

    #[test]
    fn emit_ns_and_na() {
        for (ip, repr) in [(&NS, ns_repr()), (&NA, na_repr())] {
            let ip = Ipv6Packet::new_checked(&ip[..]).unwrap();
            let mut bytes = [0xa5; 32];
            let icmp_repr = Icmpv6Repr::Ndisc(repr);
            assert_eq!((repr.buffer_len(), icmp_repr.buffer_len()), (32, 32));
            icmp_repr.emit(
                &ip.src_addr(),
                &ip.dst_addr(),
                &mut Icmpv6Packet::new_unchecked(&mut bytes[..]),
            );
            assert_eq!(bytes, ip.payload());
        }
    }

    #[test]
    fn emit_without_option() {
        // A DAD probe: from ::, no source link-layer address option.
        // Checksum computed independently (Python, RFC 1071 sum).
        #[rustfmt::skip]
        let want: [u8; 24] = [
            0x87, 0x00, 0x7d, 0xa5, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        let repr = NdiscRepr::NeighborSolicit {
            target_addr: addr("fd00::1"),
            lladdr: None,
        };
        let mut bytes = [0xa5; 24];
        assert_eq!(repr.buffer_len(), 24);
        Icmpv6Repr::Ndisc(repr).emit(
            &Ipv6Addr::UNSPECIFIED,
            &addr("ff02::1:ff00:1"),
            &mut Icmpv6Packet::new_unchecked(&mut bytes[..]),
        );
        assert_eq!(bytes, want);
        assert_eq!(parse(&bytes), Ok(repr));

        // An unsolicited NA to all-nodes: Override only, with the option.
        #[rustfmt::skip]
        let want: [u8; 32] = [
            0x88, 0x00, 0xfa, 0x9a, 0x20, 0x00, 0x00, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x01, 0x62, 0x00, 0x00, 0x00, 0x00, 0x01,
        ];
        let repr = NdiscRepr::NeighborAdvert {
            flags: NeighborFlags::OVERRIDE,
            target_addr: addr("fd00::1"),
            lladdr: Some(ROUTER_MAC),
        };
        let mut bytes = [0xa5; 32];
        Icmpv6Repr::Ndisc(repr).emit(
            &addr("fd00::1"),
            &addr("ff02::1"),
            &mut Icmpv6Packet::new_unchecked(&mut bytes[..]),
        );
        assert_eq!(bytes, want);
        assert_eq!(parse(&bytes), Ok(repr));
    }

    #[test]
    fn unknown_and_repeated_options() {
        let ns = icmp(&NS);
        let sllao = &ns[24..32];
        // A nonce option (RFC 3971, type 14, one unit) is skipped.
        let nonce = [14, 1, 1, 2, 3, 4, 5, 6];
        // A made-up 3-unit option, and NA's option type, also skipped.
        let mut long = [0u8; 24];
        long[..2].copy_from_slice(&[200, 3]);
        let tllao = [2, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
        let other = [1, 1, 0x02, 0, 0, 0, 0, 9];
        for options in [
            [&nonce[..], sllao].concat(),
            [sllao, &nonce[..]].concat(),
            [&long[..], &tllao[..], sllao].concat(),
            [sllao, &other[..]].concat(),
        ] {
            assert_eq!(
                parse(&with_options(ns, &options)),
                Ok(ns_repr()),
                "{options:x?}"
            );
        }
        // Only unknown options: no address.
        assert_eq!(
            parse(&with_options(ns, &nonce)),
            Ok(NdiscRepr::NeighborSolicit {
                target_addr: addr("fd00::1"),
                lladdr: None
            })
        );
        // A repeated option of the wrong size after the first is not read.
        let mut big = [0u8; 16];
        big[..2].copy_from_slice(&[1, 2]);
        assert_eq!(
            parse(&with_options(ns, &[sllao, &big[..]].concat())),
            Ok(ns_repr())
        );
    }

    #[test]
    fn malformed_options() {
        let ns = icmp(&NS);
        let sllao = &ns[24..32];
        let mut two_units = [0u8; 16];
        two_units[..2].copy_from_slice(&[1, 2]);
        for options in [
            vec![1, 0, 0x60, 0, 0x60, 0, 1, 1],   // length 0
            vec![14, 0, 0, 0, 0, 0, 0, 0],        // unknown, length 0
            [sllao, &[14, 0][..]].concat(),       // length 0 after a good one
            vec![1, 2, 0x60, 0, 0x60, 0, 1, 1],   // says 16, has 8
            [sllao, &[14, 1, 0, 0][..]].concat(), // says 8, has 4
            [sllao, &[14][..]].concat(),          // a lone type byte
            vec![1],                              // ditto, alone
            two_units.to_vec(),                   // address not Ethernet
        ] {
            assert_eq!(
                parse(&with_options(ns, &options)),
                Err(Error::Malformed),
                "{options:x?}"
            );
        }
        let na = icmp(&NA);
        assert_eq!(
            parse(&with_options(na, &[2, 0, 0, 0, 0, 0, 0, 0])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn parse_rejects() {
        let mut bad_code = icmp(&NS).to_vec();
        bad_code[1] = 1;
        let mut multicast_target = icmp(&NA).to_vec();
        Icmpv6Packet::new_unchecked(&mut multicast_target[..]).set_target_addr(addr("ff02::1"));
        let mut other_type = icmp(&NS).to_vec();
        Icmpv6Packet::new_unchecked(&mut other_type[..]).set_msg_type(Icmpv6Message::RouterSolicit);
        for bytes in [bad_code, multicast_target, other_type] {
            assert_eq!(parse(&bytes), Err(Error::Malformed), "{bytes:x?}");
        }
    }

    #[test]
    fn reserved_bits_are_ignored() {
        // RFC 4861 §4.3/§4.4: zero when sent, ignored when received.
        let mut ns = icmp(&NS).to_vec();
        ns[4..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(parse(&ns), Ok(ns_repr()), "NS reserved");
        let mut na = icmp(&NA).to_vec();
        na[4..8].copy_from_slice(&[0x1f, 0xff, 0xff, 0xff]);
        let Ok(NdiscRepr::NeighborAdvert { flags, .. }) = parse(&na) else {
            panic!()
        };
        assert!(flags.is_empty());
        // The flags setter keeps them; emit clears them.
        let mut packet = Icmpv6Packet::new_unchecked(&mut na[..]);
        packet.set_neighbor_flags(NeighborFlags::SOLICITED);
        assert_eq!(packet.neighbor_flags(), NeighborFlags::SOLICITED);
        assert_eq!(&na[4..8], &[0x5f, 0xff, 0xff, 0xff]);
        na_repr().emit(&mut Icmpv6Packet::new_unchecked(&mut na[..]));
        assert_eq!(&na[4..8], &[0xe0, 0, 0, 0]);
    }

    #[test]
    fn truncated_at_every_length() {
        for (ip, repr) in [(&NS, ns_repr()), (&NA, na_repr())] {
            let full = icmp(ip);
            for len in 0..full.len() {
                let packet = Icmpv6Packet::new_unchecked(&full[..len]);
                let parsed = NdiscRepr::parse(&packet);
                if len < HEADER_LEN {
                    assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
                    assert_eq!(parsed, Err(Error::Truncated), "len {len}");
                } else if len == HEADER_LEN {
                    // No options at all is well formed.
                    assert!(parsed.is_ok(), "len {len}");
                } else {
                    assert_eq!(parsed, Err(Error::Malformed), "len {len}");
                }
                // With the IPv6 header's length fixed up too, the checksum
                // (which covers the length) fails, and nothing panics.
                let ip = Ipv6Packet::new_unchecked(&ip[..]);
                assert!(Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &packet).is_err());
            }
            assert_eq!(parse(full), Ok(repr));
        }
    }

    #[test]
    fn multicast_helpers() {
        assert_eq!(
            solicited_node_multicast(&addr("fd00::1")),
            addr("ff02::1:ff00:1")
        );
        assert_eq!(
            solicited_node_multicast(&addr("fe80::6200:60ff:fe00:101")),
            addr("ff02::1:ff00:101")
        );
        assert_eq!(
            solicited_node_multicast(&addr("2001:db8::aabb:ccdd:eeff")),
            addr("ff02::1:ffdd:eeff")
        );
        // The captured NS went to 33:33:ff:00:00:01.
        let group = solicited_node_multicast(&addr("fd00::1"));
        assert_eq!(
            multicast_mac(&group),
            MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x01])
        );
        assert_eq!(
            multicast_mac(&addr("ff02::1")),
            MacAddr([0x33, 0x33, 0, 0, 0, 1])
        );
        assert!(multicast_mac(&group).is_multicast());
    }

    #[test]
    fn flags_ops() {
        let mut flags = NeighborFlags::empty();
        assert!(flags.is_empty() && flags.contains(NeighborFlags::empty()));
        flags |= NeighborFlags::SOLICITED;
        assert!(flags.contains(NeighborFlags::SOLICITED));
        assert!(!flags.contains(NeighborFlags::SOLICITED | NeighborFlags::ROUTER));
        assert_eq!(NeighborFlags::from_bits_truncate(0xff).bits(), 0xe0);
        assert_eq!(NeighborFlags::default(), NeighborFlags::empty());
    }
}
