//! GRE as NVGRE uses it (RFC 7637 §3.2): flags C=0, K=1, S=0, version 0,
//! protocol type 0x6558 (Transparent Ethernet Bridging), then a 32-bit key
//! holding the 24-bit Virtual Subnet ID and an 8-bit FlowID. The payload is
//! the inner Ethernet frame, without 802.1Q tag.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |0| |1|0| Reserved0       | Ver |   Protocol Type 0x6558        |
//! |               Virtual Subnet ID (VSID)        |    FlowID     |
//! ```

use core::fmt;

use super::{read_u16, read_u32, write_u16, write_u32, Error, EtherType, Result};

mod field {
    use crate::wire::field::*;

    pub const FLAGS_VERSION: Field = 0..2;
    pub const PROTOCOL: Field = 2..4;
    pub const KEY: Field = 4..8;
    pub const PAYLOAD: Rest = KEY.end..;
}

/// The NVGRE header: GRE with a key and nothing else. Other GRE shapes
/// (checksum, sequence number) are rejected, so they need no layout here.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// Lowest VSID for tenants: 0..=0xFFF are reserved (RFC 7637 §3.2) so they
/// cannot be confused with VLAN IDs.
pub const VSID_MIN: u32 = 4096;
/// Highest VSID for tenants: 0xFFFFFF is reserved for vendor use.
pub const VSID_MAX: u32 = 0xFF_FFFE;

// Bits of the FLAGS_VERSION word (RFC 2784 with RFC 2890's K and S).
const CHECKSUM_PRESENT: u16 = 0x8000;
const KEY_PRESENT: u16 = 0x2000;
const SEQ_PRESENT: u16 = 0x1000;
/// The rest of the first 13 bits: RFC 1701's routing bit and Reserved0.
const RESERVED0: u16 = 0x4ff8;
const VERSION: u16 = 0x0007;

const FLOW_ID_BITS: u32 = 8;
const VSID_LIMIT: u32 = 0xFF_FFFF;

/// Why a GRE packet is not NVGRE; each is its own drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvgreError {
    /// Shorter than the 8-byte NVGRE header.
    Truncated,
    /// C or S set, K clear, or a reserved bit set.
    Flags,
    /// GRE version ≠ 0.
    Version,
    /// Protocol type ≠ 0x6558.
    Protocol,
}

impl fmt::Display for NvgreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NvgreError::Truncated => "truncated",
            NvgreError::Flags => "bad GRE flags",
            NvgreError::Version => "bad GRE version",
            NvgreError::Protocol => "not transparent Ethernet bridging",
        })
    }
}

impl std::error::Error for NvgreError {}

/// A read/write view of an NVGRE-shaped GRE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> GrePacket<T> {
        GrePacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<GrePacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the 8-byte header fits. Only `Truncated` can come out of it.
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
    fn flags_version(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS_VERSION])
    }

    #[inline]
    pub fn checksum_present(&self) -> bool {
        self.flags_version() & CHECKSUM_PRESENT != 0
    }

    #[inline]
    pub fn key_present(&self) -> bool {
        self.flags_version() & KEY_PRESENT != 0
    }

    #[inline]
    pub fn seq_present(&self) -> bool {
        self.flags_version() & SEQ_PRESENT != 0
    }

    /// The reserved bits in place (mask 0x4ff8 of the first word); 0 when valid.
    #[inline]
    pub fn reserved0(&self) -> u16 {
        self.flags_version() & RESERVED0
    }

    #[inline]
    pub fn version(&self) -> u8 {
        (self.flags_version() & VERSION) as u8
    }

    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::PROTOCOL]))
    }

    #[inline]
    pub fn key(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::KEY])
    }

    #[inline]
    pub fn vsid(&self) -> u32 {
        self.key() >> FLOW_ID_BITS
    }

    #[inline]
    pub fn flow_id(&self) -> u8 {
        self.key() as u8
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    #[inline]
    fn set_flags_version(&mut self, mask: u16, value: u16) {
        let raw = (self.flags_version() & !mask) | (value & mask);
        write_u16(&mut self.buffer.as_mut()[field::FLAGS_VERSION], raw);
    }

    #[inline]
    pub fn set_checksum_present(&mut self, value: bool) {
        self.set_flags_version(CHECKSUM_PRESENT, if value { !0 } else { 0 });
    }

    #[inline]
    pub fn set_key_present(&mut self, value: bool) {
        self.set_flags_version(KEY_PRESENT, if value { !0 } else { 0 });
    }

    #[inline]
    pub fn set_seq_present(&mut self, value: bool) {
        self.set_flags_version(SEQ_PRESENT, if value { !0 } else { 0 });
    }

    /// Sets the reserved bits in place; bits outside mask 0x4ff8 are ignored.
    #[inline]
    pub fn set_reserved0(&mut self, value: u16) {
        self.set_flags_version(RESERVED0, value);
    }

    /// Sets the 3-bit version; higher bits are ignored.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        self.set_flags_version(VERSION, value.into());
    }

    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(&mut self.buffer.as_mut()[field::PROTOCOL], value.into());
    }

    #[inline]
    pub fn set_key(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::KEY], value);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A validated NVGRE header. Whether the VSID is in
/// `VSID_MIN..=VSID_MAX` and known is policy, checked by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NvgreRepr {
    /// 24 bits.
    pub vsid: u32,
    /// Per-flow entropy (RFC 7637 §3.2); 0 when not generated.
    pub flow_id: u8,
}

impl NvgreRepr {
    /// The module's [`HEADER_LEN`]: every NVGRE header has this size.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Checks in the order length, flags, version, protocol, so a packet
    /// wrong in several ways is counted under the first.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &GrePacket<&T>,
    ) -> core::result::Result<NvgreRepr, NvgreError> {
        packet.check_len().map_err(|_| NvgreError::Truncated)?;
        if packet.checksum_present()
            || packet.seq_present()
            || !packet.key_present()
            || packet.reserved0() != 0
        {
            return Err(NvgreError::Flags);
        }
        if packet.version() != 0 {
            return Err(NvgreError::Version);
        }
        if packet.protocol_type() != EtherType::TransparentEthernetBridging {
            return Err(NvgreError::Protocol);
        }
        Ok(NvgreRepr {
            vsid: packet.vsid(),
            flow_id: packet.flow_id(),
        })
    }

    /// The GRE key: VSID in the top 24 bits, FlowID in the low 8.
    #[inline]
    pub const fn key(&self) -> u32 {
        self.vsid << FLOW_ID_BITS | self.flow_id as u32
    }

    /// Bytes written by [`emit`](Self::emit): the header only.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GrePacket<T>) {
        debug_assert!(
            self.vsid <= VSID_LIMIT,
            "VSID {:#x} exceeds 24 bits",
            self.vsid
        );
        packet.set_checksum_present(false);
        packet.set_reserved0(0);
        packet.set_key_present(true);
        packet.set_seq_present(false);
        packet.set_version(0);
        packet.set_protocol_type(EtherType::TransparentEthernetBridging);
        packet.set_key(self.key());
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::EthernetFrame;

    // NVGRE key 0x00177001 (VSID 6000, FlowID 1) carrying an ARP request
    // from 60:00:60:00:01:01; the GRE part of ipv4.rs's underlay packet
    // 192.168.0.22 → 192.168.0.33.
    #[rustfmt::skip]
    static PACKET: [u8; 50] = [
        0x20, 0x00, 0x65, 0x58, 0x00, 0x17, 0x70, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x60, 0x00,
        0x60, 0x00, 0x01, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x60, 0x00,
        0x60, 0x00, 0x01, 0x01, 0x0a, 0x00, 0x01, 0x65, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00,
        0x01, 0x01,
    ];

    const REPR: NvgreRepr = NvgreRepr {
        vsid: 6000,
        flow_id: 1,
    };

    fn parse(bytes: &[u8]) -> core::result::Result<NvgreRepr, NvgreError> {
        NvgreRepr::parse(&GrePacket::new_unchecked(bytes))
    }

    #[test]
    fn deconstruct() {
        let packet = GrePacket::new_checked(&PACKET[..]).unwrap();
        assert!(!packet.checksum_present());
        assert!(packet.key_present());
        assert!(!packet.seq_present());
        assert_eq!(packet.reserved0(), 0);
        assert_eq!(packet.version(), 0);
        assert_eq!(
            packet.protocol_type(),
            EtherType::TransparentEthernetBridging
        );
        assert_eq!(packet.key(), 0x0017_7001);
        assert_eq!(packet.vsid(), 6000);
        assert_eq!(packet.flow_id(), 1);
        let inner = EthernetFrame::new_checked(packet.payload()).unwrap();
        assert_eq!(inner.src_addr(), "60:00:60:00:01:01".parse().unwrap());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 50];
        let mut packet = GrePacket::new_unchecked(&mut bytes[..]);
        packet.set_checksum_present(false);
        packet.set_reserved0(0);
        packet.set_key_present(true);
        packet.set_seq_present(false);
        packet.set_version(0);
        packet.set_protocol_type(EtherType::TransparentEthernetBridging);
        packet.set_key(0x0017_7001);
        packet.payload_mut().copy_from_slice(&PACKET[8..]);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn flag_setters_round_trip() {
        let mut bytes = [0u8; 8];
        let mut packet = GrePacket::new_unchecked(&mut bytes[..]);
        packet.set_checksum_present(true);
        packet.set_seq_present(true);
        packet.set_reserved0(!0);
        packet.set_version(7);
        assert!(packet.checksum_present() && packet.seq_present() && !packet.key_present());
        assert_eq!((packet.reserved0(), packet.version()), (0x4ff8, 7));
        assert_eq!(packet.into_inner(), &[0xdf, 0xff, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn parse_ok() {
        assert_eq!(parse(&PACKET), Ok(REPR));
        assert_eq!(REPR.key(), 0x0017_7001);
        // Just the header, no inner frame: the core checks the frame itself.
        assert_eq!(parse(&PACKET[..8]), Ok(REPR));
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 8];
        assert_eq!(REPR.buffer_len(), bytes.len());
        REPR.emit(&mut GrePacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET[..8]);
        let top = NvgreRepr {
            vsid: VSID_MAX,
            flow_id: 0xff,
        };
        top.emit(&mut GrePacket::new_unchecked(&mut bytes[..]));
        assert_eq!(parse(&bytes), Ok(top));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "exceeds 24 bits")]
    fn emit_rejects_wide_vsid() {
        NvgreRepr {
            vsid: 1 << 24,
            flow_id: 0,
        }
        .emit(&mut GrePacket::new_unchecked([0u8; 8]));
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                GrePacket::new_unchecked(&PACKET[..len]).check_len(),
                Err(Error::Truncated)
            );
            assert_eq!(
                parse(&PACKET[..len]),
                Err(NvgreError::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn flags() {
        // K with each other bit of the first 13 (C, routing, S, Reserved0),
        // then K alone cleared: 12 + 1 words.
        let others = (3..16).map(|bit| 1u16 << bit).filter(|&b| b != KEY_PRESENT);
        let bad_words: Vec<u16> = others.map(|b| b | KEY_PRESENT).chain([0]).collect();
        assert_eq!(bad_words.len(), 13);
        for word in bad_words {
            let mut bytes = PACKET;
            bytes[..2].copy_from_slice(&word.to_be_bytes());
            assert_eq!(parse(&bytes), Err(NvgreError::Flags), "{word:#06x}");
        }
    }

    #[test]
    fn version() {
        for version in 1..=7 {
            let mut bytes = PACKET;
            GrePacket::new_unchecked(&mut bytes[..]).set_version(version);
            assert_eq!(parse(&bytes), Err(NvgreError::Version), "version {version}");
        }
        // PPTP's enhanced GRE (version 1) also sets S, which is checked first.
        let pptp = [0x30, 0x81, 0x88, 0x0b, 0, 0, 0, 0];
        assert_eq!(
            parse(&pptp),
            Err(NvgreError::Flags),
            "S set is checked first"
        );
    }

    #[test]
    fn protocol() {
        for protocol in [EtherType::Ipv4, EtherType::Ipv6, EtherType::from(0x88be)] {
            let mut bytes = PACKET;
            GrePacket::new_unchecked(&mut bytes[..]).set_protocol_type(protocol);
            assert_eq!(parse(&bytes), Err(NvgreError::Protocol), "{protocol:?}");
        }
    }

    #[test]
    fn vsid_bounds() {
        // Parse does not enforce the tenant range: that is policy.
        let mut bytes = PACKET;
        GrePacket::new_unchecked(&mut bytes[..]).set_key(0xffff_ff00);
        assert_eq!(
            parse(&bytes),
            Ok(NvgreRepr {
                vsid: 0xff_ffff,
                flow_id: 0
            })
        );
    }
}
