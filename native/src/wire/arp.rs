//! ARP (RFC 826), as seen by the core: Ethernet/IPv4 only in the `Repr`,
//! any hardware/protocol in the raw view.

use std::net::Ipv4Addr;

use super::{read_ipv4, read_u16, write_u16, Error, EtherType, MacAddr, Result};

enum_with_unknown! {
    pub enum ArpOperation(u16) {
        Request = 1,
        Reply = 2,
    }
}

/// `hardware_type` of Ethernet (RFC 826; IANA ARP parameters).
const HARDWARE_ETHERNET: u16 = 1;
const ETHERNET_ADDR_LEN: u8 = 6;
const IPV4_ADDR_LEN: u8 = 4;

mod field {
    use crate::wire::field::*;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;

    // The address fields follow each other, sized by HLEN and PLEN.
    pub const fn sha(hlen: u8, _plen: u8) -> Field {
        OPER.end..OPER.end + hlen as usize
    }
    pub const fn spa(hlen: u8, plen: u8) -> Field {
        let start = sha(hlen, plen).end;
        start..start + plen as usize
    }
    pub const fn tha(hlen: u8, plen: u8) -> Field {
        let start = spa(hlen, plen).end;
        start..start + hlen as usize
    }
    pub const fn tpa(hlen: u8, plen: u8) -> Field {
        let start = tha(hlen, plen).end;
        start..start + plen as usize
    }
}

/// A read/write view of an ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the fixed part and the address fields it sizes fit the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::OPER.end || len < field::tpa(self.hardware_len(), self.protocol_len()).end {
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
    pub fn hardware_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::HTYPE])
    }

    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::PTYPE]))
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    #[inline]
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(&self.buffer.as_ref()[field::OPER]))
    }

    #[inline]
    pub fn source_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::sha(self.hardware_len(), self.protocol_len())]
    }

    #[inline]
    pub fn source_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::spa(self.hardware_len(), self.protocol_len())]
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::tha(self.hardware_len(), self.protocol_len())]
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::tpa(self.hardware_len(), self.protocol_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::HTYPE], value);
    }

    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(&mut self.buffer.as_mut()[field::PTYPE], value.into());
    }

    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    #[inline]
    pub fn set_operation(&mut self, value: ArpOperation) {
        write_u16(&mut self.buffer.as_mut()[field::OPER], value.into());
    }

    /// Address setters: `value` must be `hardware_len()`/`protocol_len()` long.
    #[inline]
    pub fn set_source_hardware_addr(&mut self, value: &[u8]) {
        let range = field::sha(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    #[inline]
    pub fn set_source_protocol_addr(&mut self, value: &[u8]) {
        let range = field::spa(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, value: &[u8]) {
        let range = field::tha(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, value: &[u8]) {
        let range = field::tpa(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }
}

/// A validated ARP packet. An enum, like smoltcp's, to leave room for other
/// hardware/protocol pairs; Ethernet/IPv4 is the only one NVGRE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpRepr {
    EthernetIpv4 {
        operation: ArpOperation,
        source_hardware_addr: MacAddr,
        source_protocol_addr: Ipv4Addr,
        target_hardware_addr: MacAddr,
        target_protocol_addr: Ipv4Addr,
    },
}

impl ArpRepr {
    /// Accepts only Ethernet/IPv4 with 6/4-byte addresses; any operation
    /// value is kept (policy decides what to answer).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ArpPacket<&T>) -> Result<ArpRepr> {
        packet.check_len()?;
        if packet.hardware_type() != HARDWARE_ETHERNET
            || packet.protocol_type() != EtherType::Ipv4
            || packet.hardware_len() != ETHERNET_ADDR_LEN
            || packet.protocol_len() != IPV4_ADDR_LEN
        {
            return Err(Error::Malformed);
        }
        Ok(ArpRepr::EthernetIpv4 {
            operation: packet.operation(),
            source_hardware_addr: MacAddr::from_bytes(packet.source_hardware_addr()),
            source_protocol_addr: read_ipv4(packet.source_protocol_addr()),
            target_hardware_addr: MacAddr::from_bytes(packet.target_hardware_addr()),
            target_protocol_addr: read_ipv4(packet.target_protocol_addr()),
        })
    }

    /// Bytes of an Ethernet/IPv4 ARP packet (the only kind there is to parse).
    pub const ETHERNET_IPV4_LEN: usize = field::tpa(ETHERNET_ADDR_LEN, IPV4_ADDR_LEN).end;

    /// Bytes written by [`emit`](Self::emit) (28 for Ethernet/IPv4).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        match self {
            ArpRepr::EthernetIpv4 { .. } => Self::ETHERNET_IPV4_LEN,
        }
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        match *self {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => {
                packet.set_hardware_type(HARDWARE_ETHERNET);
                packet.set_protocol_type(EtherType::Ipv4);
                packet.set_hardware_len(ETHERNET_ADDR_LEN);
                packet.set_protocol_len(IPV4_ADDR_LEN);
                packet.set_operation(operation);
                packet.set_source_hardware_addr(source_hardware_addr.as_bytes());
                packet.set_source_protocol_addr(&source_protocol_addr.octets());
                packet.set_target_hardware_addr(target_hardware_addr.as_bytes());
                packet.set_target_protocol_addr(&target_protocol_addr.octets());
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Who has 10.0.1.1? Tell 10.0.1.101 (60:00:60:00:01:01).
    #[rustfmt::skip]
    static PACKET: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x0a, 0x00,
        0x01, 0x65, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x01,
    ];

    fn repr() -> ArpRepr {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: MacAddr([0x60, 0x00, 0x60, 0x00, 0x01, 0x01]),
            source_protocol_addr: Ipv4Addr::new(10, 0, 1, 101),
            target_hardware_addr: MacAddr::default(),
            target_protocol_addr: Ipv4Addr::new(10, 0, 1, 1),
        }
    }

    #[test]
    fn deconstruct() {
        let packet = ArpPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), EtherType::Ipv4);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(
            packet.source_hardware_addr(),
            &[0x60, 0x00, 0x60, 0x00, 0x01, 0x01]
        );
        assert_eq!(packet.source_protocol_addr(), &[10, 0, 1, 101]);
        assert_eq!(packet.target_hardware_addr(), &[0; 6]);
        assert_eq!(packet.target_protocol_addr(), &[10, 0, 1, 1]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 28];
        let mut packet = ArpPacket::new_unchecked(&mut bytes[..]);
        packet.set_hardware_type(1);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(ArpOperation::Request);
        packet.set_source_hardware_addr(&[0x60, 0x00, 0x60, 0x00, 0x01, 0x01]);
        packet.set_source_protocol_addr(&[10, 0, 1, 101]);
        packet.set_target_hardware_addr(&[0; 6]);
        packet.set_target_protocol_addr(&[10, 0, 1, 1]);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn parse() {
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_unchecked(&PACKET[..])),
            Ok(repr())
        );
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 28];
        assert_eq!(repr().buffer_len(), bytes.len());
        repr().emit(&mut ArpPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn parse_keeps_unknown_operation() {
        let mut bytes = PACKET;
        bytes[7] = 9;
        let ArpRepr::EthernetIpv4 { operation, .. } =
            ArpRepr::parse(&ArpPacket::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(operation, ArpOperation::Unknown(9));
    }

    #[test]
    fn parse_rejects_other_hardware_or_protocol() {
        // (offset, value): hardware type, protocol type, hlen, plen.
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = [0u8; 64];
            bytes[..28].copy_from_slice(&PACKET);
            bytes[at] = value;
            let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(
                ArpRepr::parse(&packet),
                Err(Error::Malformed),
                "byte {at} = {value}"
            );
        }
    }

    #[test]
    fn variable_layout() {
        // Hardware length 8, protocol length 16 (say, a made-up EUI-64/IPv6 ARP).
        let mut bytes = [0u8; 8 + 2 * (8 + 16)];
        let mut packet = ArpPacket::new_unchecked(&mut bytes[..]);
        packet.set_hardware_len(8);
        packet.set_protocol_len(16);
        packet.set_target_protocol_addr(&[7; 16]);
        assert!(packet.check_len().is_ok());
        assert_eq!(packet.source_protocol_addr(), &[0; 16]);
        assert_eq!(packet.target_protocol_addr(), &[7; 16]);
        let short = ArpPacket::new_unchecked(&bytes[..bytes.len() - 1]);
        assert_eq!(short.check_len(), Err(Error::Truncated));
        // The largest layout the length bytes allow (8 + 2 * 510) is still checked.
        let huge = [0xffu8; 8];
        assert_eq!(
            ArpPacket::new_checked(&huge[..]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET.len() {
            let packet = ArpPacket::new_unchecked(&PACKET[..len]);
            assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
            assert_eq!(ArpRepr::parse(&packet), Err(Error::Truncated));
        }
    }
}
