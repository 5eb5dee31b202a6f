//! Ethernet II frames (no FCS: the kernel strips it before TAP/socket reads).

use super::{read_u16, write_u16, Error, MacAddr, Result};

enum_with_unknown! {
    /// EtherType values; 802.3 length values (< 0x0600) land in `Unknown`.
    pub enum EtherType(u16) {
        Ipv4 = 0x0800,
        Arp = 0x0806,
        Ipv6 = 0x86dd,
        /// IEEE 802.1Q C-tag.
        Vlan = 0x8100,
        /// IEEE 802.1ad S-tag.
        QinQ = 0x88a8,
        /// NVGRE's inner payload type (RFC 7637 §3.2).
        TransparentEthernetBridging = 0x6558,
    }
}

impl EtherType {
    /// Whether the frame carries an 802.1Q/802.1ad tag where the EtherType
    /// would be; NVGRE inner frames must not (RFC 7637 §3.2).
    #[inline]
    pub fn is_vlan_tag(self) -> bool {
        matches!(self, EtherType::Vlan | EtherType::QinQ)
    }
}

mod field {
    use crate::wire::field::*;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = ETHERTYPE.end..;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A read/write view of an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensures every getter can be called without panicking.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
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
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(value.as_bytes());
    }

    #[inline]
    pub fn set_src_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(value.as_bytes());
    }

    #[inline]
    pub fn set_ethertype(&mut self, value: EtherType) {
        write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], value.into());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A validated Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &EthernetFrame<&T>) -> Result<EthernetRepr> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Bytes written by [`emit`](Self::emit): the header only.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // ARP request from 60:00:60:00:01:01 (10.0.1.101) for 10.0.1.1.
    #[rustfmt::skip]
    static FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x08, 0x06, 0x00, 0x01,
        0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x0a, 0x00, 0x01, 0x65,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x01,
    ];

    fn repr() -> EthernetRepr {
        EthernetRepr {
            src_addr: MacAddr([0x60, 0x00, 0x60, 0x00, 0x01, 0x01]),
            dst_addr: MacAddr::BROADCAST,
            ethertype: EtherType::Arp,
        }
    }

    #[test]
    fn deconstruct() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), "60:00:60:00:01:01".parse().unwrap());
        assert_eq!(frame.ethertype(), EtherType::Arp);
        assert_eq!(frame.payload(), &FRAME[14..]);
        assert_eq!(frame.into_inner().len(), FRAME.len());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 42];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([0x60, 0x00, 0x60, 0x00, 0x01, 0x01]));
        frame.set_ethertype(EtherType::Arp);
        frame.payload_mut().copy_from_slice(&FRAME[14..]);
        assert_eq!(bytes, FRAME);
    }

    #[test]
    fn parse() {
        let frame = EthernetFrame::new_unchecked(&FRAME[..]);
        assert_eq!(EthernetRepr::parse(&frame), Ok(repr()));
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 14];
        let r = repr();
        assert_eq!(r.buffer_len(), bytes.len());
        r.emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, FRAME[..14]);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            let frame = EthernetFrame::new_unchecked(&FRAME[..len]);
            assert_eq!(frame.check_len(), Err(Error::Truncated));
            assert_eq!(EthernetRepr::parse(&frame), Err(Error::Truncated));
        }
        let frame = EthernetFrame::new_checked(&FRAME[..HEADER_LEN]).unwrap();
        assert_eq!(frame.payload(), &[]);
    }

    #[test]
    fn vlan_tag() {
        // 802.1Q C-tag (VID 100) in front of IPv4: the EtherType slot holds the TPID.
        let mut tagged = [0u8; 18];
        tagged[12..18].copy_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        let frame = EthernetFrame::new_checked(&tagged[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::Vlan);
        assert!(frame.ethertype().is_vlan_tag());
        assert!(EtherType::from(0x88a8).is_vlan_tag());
        for plain in [0x0800, 0x0806, 0x86dd, 0x6558, 0x9100, 0x0040] {
            assert!(!EtherType::from(plain).is_vlan_tag(), "{plain:#x}");
        }
    }

    #[test]
    fn ethertype_roundtrip() {
        for (n, t) in [
            (0x0800, EtherType::Ipv4),
            (0x0806, EtherType::Arp),
            (0x86dd, EtherType::Ipv6),
            (0x8100, EtherType::Vlan),
            (0x88a8, EtherType::QinQ),
            (0x6558, EtherType::TransparentEthernetBridging),
            (0x88cc, EtherType::Unknown(0x88cc)),
        ] {
            assert_eq!(EtherType::from(n), t);
            assert_eq!(u16::from(t), n);
        }
    }
}
