//! IPv6 fixed header (RFC 8200). Extension headers are payload to us.

use std::net::Ipv6Addr;

use super::{read_ipv6, read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result};

mod field {
    use crate::wire::field::*;

    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

pub const HEADER_LEN: usize = field::DST_ADDR.end;

// Layout of the first 32-bit word: version(4) traffic class(8) flow label(20).
const VERSION_SHIFT: u32 = 28;
const TRAFFIC_CLASS_SHIFT: u32 = 20;
const FLOW_LABEL: u32 = 0x000f_ffff;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the header and `payload_len` bytes after it fit the buffer;
    /// bytes past them (Ethernet padding) are ignored.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || HEADER_LEN + usize::from(self.payload_len()) > len {
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
    fn ver_tc_flow(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    #[inline]
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> VERSION_SHIFT) as u8
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> TRAFFIC_CLASS_SHIFT) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & FLOW_LABEL
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The `payload_len` bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    fn set_ver_tc_flow(&mut self, mask: u32, value: u32) {
        let raw = (self.ver_tc_flow() & !mask) | (value & mask);
        write_u32(&mut self.buffer.as_mut()[field::VER_TC_FLOW], raw);
    }

    #[inline]
    pub fn set_version(&mut self, value: u8) {
        self.set_ver_tc_flow(0xf << VERSION_SHIFT, u32::from(value) << VERSION_SHIFT);
    }

    #[inline]
    pub fn set_traffic_class(&mut self, value: u8) {
        self.set_ver_tc_flow(
            0xff << TRAFFIC_CLASS_SHIFT,
            u32::from(value) << TRAFFIC_CLASS_SHIFT,
        );
    }

    /// Sets the 20-bit flow label; higher bits of `value` are ignored.
    #[inline]
    pub fn set_flow_label(&mut self, value: u32) {
        self.set_ver_tc_flow(FLOW_LABEL, value);
    }

    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.into();
    }

    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A validated IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

impl Ipv6Repr {
    /// Rejects truncated buffers and version ≠ 6.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv6Packet<&T>) -> Result<Ipv6Repr> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
        })
    }

    /// Bytes written by [`emit`](Self::emit): the fixed header only.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header with flow label 0.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        debug_assert!(
            self.payload_len <= usize::from(u16::MAX),
            "payload too long"
        );
        packet.set_version(6);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(0);
        packet.set_payload_len(self.payload_len as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // ICMPv6 echo request fe80::6200:60ff:fe00:101 → fe80::1, hop limit 64
    // (tshark: ICMPv6 checksum correct).
    #[rustfmt::skip]
    static PACKET: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x62, 0x00, 0x60, 0xff, 0xfe, 0x00, 0x01, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x80, 0x00, 0x62, 0x2b, 0x12, 0x34, 0x00, 0x01,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    fn src() -> Ipv6Addr {
        "fe80::6200:60ff:fe00:101".parse().unwrap()
    }

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: src(),
            dst_addr: "fe80::1".parse().unwrap(),
            next_header: IpProtocol::Icmpv6,
            payload_len: 16,
            hop_limit: 64,
            traffic_class: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0);
        assert_eq!(packet.flow_label(), 0);
        assert_eq!(packet.payload_len(), 16);
        assert_eq!(packet.next_header(), IpProtocol::Icmpv6);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), src());
        assert_eq!(
            packet.dst_addr(),
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)
        );
        assert_eq!(packet.payload(), &PACKET[40..]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 56];
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(6);
        packet.set_traffic_class(0);
        packet.set_flow_label(0);
        packet.set_payload_len(16);
        packet.set_next_header(IpProtocol::Icmpv6);
        packet.set_hop_limit(64);
        packet.set_src_addr(src());
        packet.set_dst_addr("fe80::1".parse().unwrap());
        packet.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn first_word_fields_are_independent() {
        let mut bytes = PACKET;
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_traffic_class(0xb8);
        packet.set_flow_label(0xf_ffff);
        assert_eq!(
            (
                packet.version(),
                packet.traffic_class(),
                packet.flow_label()
            ),
            (6, 0xb8, 0xf_ffff)
        );
        packet.set_flow_label(0x12_3456);
        assert_eq!(
            (
                packet.version(),
                packet.traffic_class(),
                packet.flow_label()
            ),
            (6, 0xb8, 0x2_3456)
        );
        packet.set_version(0);
        assert_eq!((packet.version(), packet.traffic_class()), (0, 0xb8));
    }

    #[test]
    fn parse() {
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&PACKET[..])),
            Ok(repr())
        );
        let mut bytes = PACKET;
        bytes[0] = 0x40;
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_unchecked(&bytes[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 56];
        let r = repr();
        let mut packet = Ipv6Packet::new_unchecked(&mut bytes[..]);
        r.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(r.buffer_len(), 40);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET.len() {
            let packet = Ipv6Packet::new_unchecked(&PACKET[..len]);
            assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
            assert_eq!(Ipv6Repr::parse(&packet), Err(Error::Truncated));
        }
        let mut padded = [0u8; 64];
        padded[..56].copy_from_slice(&PACKET);
        assert_eq!(
            Ipv6Packet::new_checked(&padded[..]).unwrap().payload(),
            &PACKET[40..]
        );
    }
}
