//! IPv4 (RFC 791): the NVGRE underlay and the inner packets the router sees.

use std::net::Ipv4Addr;

use super::{
    checksum, read_ipv4, read_u16, set_u8_checksummed, write_u16, Error, IpProtocol, Result,
};

mod field {
    use crate::wire::field::*;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of a header without options, the only kind we emit.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

// Bits of the FLG_OFF word; the top bit is reserved and must be zero.
const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures `header_len <= total_len <= buffer length`, so header and
    /// payload slices are in bounds; bytes past `total_len` (Ethernet
    /// padding) are ignored.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || total_len < header_len {
            Err(Error::Malformed)
        } else if total_len > len {
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
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    #[inline]
    fn flg_off(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & DONT_FRAG != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flg_off() & MORE_FRAGS != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & FRAG_OFFSET) << 3
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// Whether the header checksum, options included, is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..usize::from(self.header_len())]) == !0
    }

    /// The bytes between the header (options skipped) and `total_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes; must be a multiple of 4 in 20..=60.
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) & 0x0f);
    }

    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (value << 2);
    }

    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & !0x03) | (value & 0x03);
    }

    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], value);
    }

    #[inline]
    fn set_flg_off(&mut self, mask: u16, value: u16) {
        let raw = (self.flg_off() & !mask) | (value & mask);
        write_u16(&mut self.buffer.as_mut()[field::FLG_OFF], raw);
    }

    /// Zeroes the flags and the fragment offset, reserved bit included.
    #[inline]
    pub fn clear_flags(&mut self) {
        self.set_flg_off(!0, 0);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flg_off(DONT_FRAG, if value { DONT_FRAG } else { 0 });
    }

    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flg_off(MORE_FRAGS, if value { MORE_FRAGS } else { 0 });
    }

    /// Sets the fragment offset in bytes; must be a multiple of 8.
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        self.set_flg_off(FRAG_OFFSET, value >> 3);
    }

    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.into();
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Recomputes the header checksum over `header_len()` bytes.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = usize::from(self.header_len());
        let sum = checksum::data(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(!sum);
    }

    /// Decrements the TTL and patches the checksum incrementally, as a
    /// router does per hop. The caller must first drop (or answer with Time
    /// Exceeded) packets whose TTL is ≤ 1 (RFC 1812 §5.3.1); a TTL of 0 is
    /// left alone rather than wrapped to 255.
    #[inline]
    pub fn decrement_hop_limit(&mut self) {
        let hop_limit = self.hop_limit();
        if hop_limit > 0 {
            set_u8_checksummed(
                self.buffer.as_mut(),
                field::TTL,
                hop_limit - 1,
                field::CHECKSUM,
            );
        }
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// A validated IPv4 header. Options and fragmentation are not represented:
/// parse skips options, and fragment fields stay visible on the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
    /// 6 bits.
    pub dscp: u8,
    /// 2 bits.
    pub ecn: u8,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Rejects truncated buffers, version ≠ 4 and bad header checksums.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>) -> Result<Ipv4Repr> {
        packet.check_len()?;
        if packet.version() != 4 || !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.total_len() - u16::from(packet.header_len())),
            hop_limit: packet.hop_limit(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Bytes written by [`emit`](Self::emit): the header only; the packet
    /// buffer needs `payload_len` more after it to pass `check_len`.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes an option-less header with ident 0 (fine for atomic datagrams,
    /// RFC 6864) and fills the checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        debug_assert!(self.dscp < 64 && self.ecn < 4, "dscp/ecn out of range");
        debug_assert!(
            HEADER_LEN + self.payload_len <= usize::from(u16::MAX),
            "payload too long"
        );
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN as u8);
        packet.set_dscp(self.dscp);
        packet.set_ecn(self.ecn);
        packet.set_total_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_ident(0);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_hop_limit(self.hop_limit);
        packet.set_next_header(self.next_header);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // NVGRE underlay packet 192.168.0.22 → 192.168.0.33, DF, TTL 64,
    // carrying an ARP request in VSID 6000 (tshark: checksum correct).
    #[rustfmt::skip]
    static OUTER: [u8; 70] = [
        0x45, 0x00, 0x00, 0x46, 0x00, 0x00, 0x40, 0x00, 0x40, 0x2f, 0xb9, 0x01, 0xc0, 0xa8, 0x00, 0x16,
        0xc0, 0xa8, 0x00, 0x21, 0x20, 0x00, 0x65, 0x58, 0x00, 0x17, 0x70, 0x01, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
        0x00, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x0a, 0x00, 0x01, 0x65, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x00, 0x01, 0x01,
    ];

    // The ICMP echo request of icmpv4.rs, 10.0.1.101 → 10.0.1.1, ident
    // 0xbeef, with a 4-byte Router Alert option (RFC 2113).
    #[rustfmt::skip]
    static WITH_OPTION: [u8; 72] = [
        0x46, 0x00, 0x00, 0x48, 0xbe, 0xef, 0x40, 0x00, 0x40, 0x01, 0xd0, 0x5b, 0x0a, 0x00, 0x01, 0x65,
        0x0a, 0x00, 0x01, 0x01, 0x94, 0x04, 0x00, 0x00, 0x08, 0x00, 0x26, 0xf8, 0x12, 0x34, 0x00, 0x01,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
        0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 22),
            dst_addr: Ipv4Addr::new(192, 168, 0, 33),
            next_header: IpProtocol::Gre,
            payload_len: 50,
            hop_limit: 64,
            dscp: 0,
            ecn: 0,
            dont_frag: true,
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Ipv4Packet::new_checked(&OUTER[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp(), 0);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.total_len(), 70);
        assert_eq!(packet.ident(), 0);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.next_header(), IpProtocol::Gre);
        assert_eq!(packet.checksum(), 0xb901);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 22));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 33));
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), &OUTER[20..]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 70];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp(0);
        packet.set_ecn(0);
        packet.set_total_len(70);
        packet.set_ident(0);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_more_frags(false);
        packet.set_frag_offset(0);
        packet.set_hop_limit(64);
        packet.set_next_header(IpProtocol::Gre);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 0, 22));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 0, 33));
        packet.fill_checksum();
        packet.payload_mut().copy_from_slice(&OUTER[20..]);
        assert_eq!(bytes, OUTER);
    }

    #[test]
    fn field_setters_round_trip() {
        let mut bytes = OUTER;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_dscp(46);
        packet.set_ecn(3);
        packet.set_more_frags(true);
        packet.set_frag_offset(1480);
        packet.set_ident(0x1234);
        assert_eq!((packet.dscp(), packet.ecn()), (46, 3));
        assert!(packet.dont_frag() && packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
        packet.set_dont_frag(false);
        packet.set_more_frags(false);
        assert_eq!(packet.frag_offset(), 1480);
        assert!(!packet.dont_frag() && !packet.more_frags());
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.ident(), 0x1234);
    }

    #[test]
    fn parse() {
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&OUTER[..])),
            Ok(repr())
        );
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 70];
        let r = repr();
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        r.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&OUTER[20..]);
        assert_eq!(r.buffer_len(), 20);
        assert_eq!(bytes, OUTER);
    }

    #[test]
    fn options_are_skipped() {
        let packet = Ipv4Packet::new_checked(&WITH_OPTION[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.payload(), &WITH_OPTION[24..]);
        let r = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!((r.next_header, r.payload_len), (IpProtocol::Icmp, 48));
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        // A 46-byte minimum Ethernet payload holding a 28-byte IPv4 packet.
        let mut bytes = [0u8; 46];
        bytes[..20].copy_from_slice(&OUTER[..20]);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_total_len(28);
        packet.fill_checksum();
        packet.payload_mut().copy_from_slice(&[1; 8]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &[1; 8]);
        assert_eq!(Ipv4Repr::parse(&packet).unwrap().payload_len, 8);
    }

    #[test]
    fn fragments_are_accepted() {
        let mut bytes = OUTER;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        packet.set_frag_offset(8 * 185);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(Ipv4Repr::parse(&packet).is_ok());
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
    }

    #[test]
    fn truncated() {
        for len in 0..OUTER.len() {
            let packet = Ipv4Packet::new_unchecked(&OUTER[..len]);
            assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
            assert_eq!(Ipv4Repr::parse(&packet), Err(Error::Truncated));
        }
    }

    #[test]
    fn bad_lengths() {
        let with_header_byte = |ver_ihl: u8, total_len: u16| {
            let mut bytes = OUTER;
            bytes[0] = ver_ihl;
            bytes[2..4].copy_from_slice(&total_len.to_be_bytes());
            Ipv4Packet::new_unchecked(bytes).check_len()
        };
        assert_eq!(with_header_byte(0x44, 70), Err(Error::Malformed), "IHL < 5");
        assert_eq!(with_header_byte(0x40, 70), Err(Error::Malformed), "IHL 0");
        assert_eq!(
            with_header_byte(0x45, 19),
            Err(Error::Malformed),
            "total < header"
        );
        assert_eq!(
            with_header_byte(0x4f, 59),
            Err(Error::Malformed),
            "total < options"
        );
        assert_eq!(
            with_header_byte(0x45, 71),
            Err(Error::Truncated),
            "total > buffer"
        );
        assert_eq!(with_header_byte(0x4f, 70), Ok(()), "60-byte header fits");
        let mut short = [0u8; 40];
        short[..20].copy_from_slice(&OUTER[..20]);
        short[0] = 0x4f;
        short[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_unchecked(&short[..]).check_len(),
            Err(Error::Malformed)
        );
        short[2..4].copy_from_slice(&60u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_unchecked(&short[..]).check_len(),
            Err(Error::Truncated),
            "options > buffer"
        );
    }

    #[test]
    fn parse_rejects_version_and_checksum() {
        let mut bytes = OUTER;
        bytes[0] = 0x65;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
            Err(Error::Malformed)
        );

        let mut bytes = OUTER;
        bytes[11] ^= 1;
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn decrement_hop_limit_matches_recompute() {
        for packet_bytes in [&OUTER[..], &WITH_OPTION[..]] {
            let mut bytes = packet_bytes.to_vec();
            let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
            packet.set_hop_limit(255);
            packet.fill_checksum();
            for ttl in (0..255).rev() {
                packet.decrement_hop_limit();
                assert_eq!(packet.hop_limit(), ttl);
                assert!(packet.verify_checksum(), "ttl {ttl}");
                let incremental = packet.checksum();
                packet.fill_checksum();
                assert_eq!(packet.checksum(), incremental, "ttl {ttl}");
            }
            let checksum = packet.checksum();
            packet.decrement_hop_limit();
            assert_eq!(
                (packet.hop_limit(), packet.checksum()),
                (0, checksum),
                "TTL 0 is left alone"
            );
        }
    }
}
