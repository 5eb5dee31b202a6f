//! UDP (RFC 768), with the IPv4 and IPv6 checksum rules (RFC 8200 §8.1).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{checksum, read_u16, write_u16, Error, IpProtocol, Result};

mod field {
    use crate::wire::field::*;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: Rest = CHECKSUM.end..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// The checksum field of a datagram sent without one (IPv4 only).
const NO_CHECKSUM: u16 = 0;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

// `len` is the length field, not a collection size: no `is_empty`.
#[allow(clippy::len_without_is_empty)]
impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures `8 <= len field <= buffer length`; bytes past the length
    /// field (padding) are ignored.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let datagram_len = usize::from(self.len());
        if datagram_len < HEADER_LEN {
            Err(Error::Malformed)
        } else if datagram_len > len {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header and payload, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The bytes between the header and the length field's end.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// The one's-complement sum of `pseudo` and the datagram (up to the
    /// length field).
    #[inline]
    fn sum(&self, pseudo: u16) -> u16 {
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::combine(&[pseudo, checksum::data(datagram)])
    }

    #[inline]
    fn pseudo_v4(&self, src_addr: &Ipv4Addr, dst_addr: &Ipv4Addr) -> u16 {
        let len = u32::from(self.len());
        checksum::pseudo_header_v4(*src_addr, *dst_addr, IpProtocol::Udp.into(), len)
    }

    #[inline]
    fn pseudo_v6(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> u16 {
        let len = u32::from(self.len());
        checksum::pseudo_header_v6(*src_addr, *dst_addr, IpProtocol::Udp.into(), len)
    }

    /// Whether the checksum is correct for a datagram carried in IPv4;
    /// a zero checksum means "none" (RFC 768) and passes.
    #[inline]
    pub fn verify_checksum_v4(&self, src_addr: &Ipv4Addr, dst_addr: &Ipv4Addr) -> bool {
        self.checksum() == NO_CHECKSUM || self.sum(self.pseudo_v4(src_addr, dst_addr)) == !0
    }

    /// Whether the checksum is correct for a datagram carried in IPv6; a
    /// zero checksum fails, IPv6 makes it mandatory (RFC 8200 §8.1).
    #[inline]
    pub fn verify_checksum_v6(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> bool {
        self.checksum() != NO_CHECKSUM && self.sum(self.pseudo_v6(src_addr, dst_addr)) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Stores `!sum`, or 0xffff when that is 0: 0 would mean "no checksum"
    /// (RFC 768; RFC 8200 §8.1).
    #[inline]
    fn store_checksum(&mut self, sum: u16) {
        let checksum = match !sum {
            NO_CHECKSUM => !0,
            checksum => checksum,
        };
        self.set_checksum(checksum);
    }

    /// Computes the checksum over the IPv4 pseudo header and the datagram
    /// (up to the length field).
    #[inline]
    pub fn fill_checksum_v4(&mut self, src_addr: &Ipv4Addr, dst_addr: &Ipv4Addr) {
        self.set_checksum(0);
        let sum = self.sum(self.pseudo_v4(src_addr, dst_addr));
        self.store_checksum(sum);
    }

    /// Computes the checksum over the IPv6 pseudo header and the datagram
    /// (up to the length field).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum(self.pseudo_v6(src_addr, dst_addr));
        self.store_checksum(sum);
    }
}

/// A UDP header whose length field is consistent with the buffer. The
/// checksum needs the IP addresses, so it is checked and filled on the
/// packet (`verify_checksum_v4/v6`, `fill_checksum_v4/v6`), not here; ports
/// are not judged (0 included): that is policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &UdpPacket<&T>) -> Result<UdpRepr> {
        packet.check_len()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Bytes written by [`emit`](Self::emit): the header only; the packet
    /// buffer needs `payload_len` more after it.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with checksum 0. Write the payload, then call
    /// `fill_checksum_v4/v6` (mandatory for IPv6).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>) {
        debug_assert!(
            HEADER_LEN + self.payload_len <= usize::from(u16::MAX),
            "payload too long"
        );
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_checksum(NO_CHECKSUM);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Captured on a Linux 6.18 veth (tshark: checksums correct): "nvgred
    // udp test" from a Python socket, 10.0.1.101:33568 → 10.0.1.1:4789 and
    // [fd00::101]:33483 → [fd00::1]:4789.
    #[rustfmt::skip]
    static DATAGRAM_V4: [u8; 23] = [
        0x83, 0x20, 0x12, 0xb5, 0x00, 0x17, 0x99, 0x6a, 0x6e, 0x76, 0x67, 0x72, 0x65, 0x64, 0x20, 0x75,
        0x64, 0x70, 0x20, 0x74, 0x65, 0x73, 0x74,
    ];

    #[rustfmt::skip]
    static DATAGRAM_V6: [u8; 23] = [
        0x82, 0xcb, 0x12, 0xb5, 0x00, 0x17, 0xb5, 0x21, 0x6e, 0x76, 0x67, 0x72, 0x65, 0x64, 0x20, 0x75,
        0x64, 0x70, 0x20, 0x74, 0x65, 0x73, 0x74,
    ];

    const SRC_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
    const DST_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    fn src_v6() -> Ipv6Addr {
        "fd00::101".parse().unwrap()
    }

    fn dst_v6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    fn repr() -> UdpRepr {
        UdpRepr {
            src_port: 33568,
            dst_port: 4789,
            payload_len: 15,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = UdpPacket::new_checked(&DATAGRAM_V4[..]).unwrap();
        assert_eq!(packet.src_port(), 33568);
        assert_eq!(packet.dst_port(), 4789);
        assert_eq!(packet.len(), 23);
        assert_eq!(packet.checksum(), 0x996a);
        assert_eq!(packet.payload(), b"nvgred udp test");
        assert!(packet.verify_checksum_v4(&SRC_V4, &DST_V4));
        assert!(!packet.verify_checksum_v4(&SRC_V4, &Ipv4Addr::new(10, 0, 1, 2)));

        let packet = UdpPacket::new_checked(&DATAGRAM_V6[..]).unwrap();
        assert_eq!((packet.src_port(), packet.checksum()), (33483, 0xb521));
        assert!(packet.verify_checksum_v6(&src_v6(), &dst_v6()));
        assert!(!packet.verify_checksum_v6(&src_v6(), &"fd00::2".parse().unwrap()));
        assert_eq!(packet.into_inner().len(), 23);
    }

    #[test]
    fn construct() {
        for (want, v6) in [(DATAGRAM_V4, false), (DATAGRAM_V6, true)] {
            let mut bytes = [0xa5; 23];
            let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
            packet.set_src_port(u16::from_be_bytes([want[0], want[1]]));
            packet.set_dst_port(4789);
            packet.set_len(23);
            packet.payload_mut().copy_from_slice(b"nvgred udp test");
            if v6 {
                packet.fill_checksum_v6(&src_v6(), &dst_v6());
            } else {
                packet.fill_checksum_v4(&SRC_V4, &DST_V4);
            }
            assert_eq!(bytes, want);
        }
    }

    #[test]
    fn parse() {
        assert_eq!(
            UdpRepr::parse(&UdpPacket::new_unchecked(&DATAGRAM_V4[..])),
            Ok(repr())
        );
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 23];
        assert_eq!(repr().buffer_len(), 8);
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        repr().emit(&mut packet);
        assert_eq!(packet.checksum(), 0);
        packet.payload_mut().copy_from_slice(b"nvgred udp test");
        packet.fill_checksum_v4(&SRC_V4, &DST_V4);
        assert_eq!(bytes, DATAGRAM_V4);
    }

    #[test]
    fn zero_checksum_rules() {
        // Sent without a checksum: fine in IPv4, not in IPv6.
        let mut bytes = DATAGRAM_V4;
        UdpPacket::new_unchecked(&mut bytes[..]).set_checksum(0);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum_v4(&SRC_V4, &DST_V4));
        assert!(!packet.verify_checksum_v6(&src_v6(), &dst_v6()));

        // A payload whose checksum computes to 0 is sent as 0xffff. The last
        // two bytes, 0x0d69, were picked with an independent Python RFC 1071
        // sum so the sum over pseudo header and datagram is 0xffff.
        let mut bytes = [0xa5; 24];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        UdpRepr {
            payload_len: 16,
            ..repr()
        }
        .emit(&mut packet);
        packet.payload_mut()[..14].copy_from_slice(b"nvgred udp tes");
        packet.payload_mut()[14..].copy_from_slice(&[0x0d, 0x69]);
        packet.fill_checksum_v4(&SRC_V4, &DST_V4);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum_v4(&SRC_V4, &DST_V4));
    }

    #[test]
    fn padding_is_ignored() {
        let mut bytes = [0u8; 46];
        bytes[..23].copy_from_slice(&DATAGRAM_V4);
        bytes[23..].fill(0x5a);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), b"nvgred udp test");
        assert!(packet.verify_checksum_v4(&SRC_V4, &DST_V4));
        assert_eq!(UdpRepr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..DATAGRAM_V4.len() {
            let packet = UdpPacket::new_unchecked(&DATAGRAM_V4[..len]);
            assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
            assert_eq!(UdpRepr::parse(&packet), Err(Error::Truncated));
        }
    }

    #[test]
    fn bad_length_field() {
        for (len, want) in [
            (0, Err(Error::Malformed)),
            (7, Err(Error::Malformed)),
            (8, Ok(())),
            (23, Ok(())),
            (24, Err(Error::Truncated)),
            (0xffff, Err(Error::Truncated)),
        ] {
            let mut bytes = DATAGRAM_V4;
            UdpPacket::new_unchecked(&mut bytes[..]).set_len(len);
            let packet = UdpPacket::new_unchecked(&bytes[..]);
            assert_eq!(packet.check_len(), want, "length {len}");
            if want.is_ok() {
                assert_eq!(packet.payload().len(), usize::from(len) - 8);
            }
        }
    }
}
