//! TCP segment header (RFC 9293), as a view only: what segmentation offload
//! and coalescing need to split a large segment or merge small ones
//! (sequence numbers, flags, options, payload, checksum). The core does not
//! terminate TCP, so there is no `Repr`.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |  Rsvd |C|E|U|A|P|R|S|F|                               |
//! | Offset|       |W|C|R|C|S|S|Y|I|            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options (data offset > 5)                  |
//! ```

use core::ops::{BitAnd, BitOr, BitOrAssign, Not};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{checksum, read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result};

mod field {
    use crate::wire::field::*;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in the high nibble; the low nibble is reserved (its last
    /// bit once RFC 3540's NS, now proposed for AccECN).
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: Rest = URGENT.end..;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS.start;

/// The eight control bits in the byte after the data offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    #[inline]
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// The flags byte as on the wire.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Every bit of the byte is a flag, so any value is valid.
    #[inline]
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    #[inline]
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    #[inline]
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;

    #[inline]
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl Not for TcpFlags {
    type Output = TcpFlags;

    #[inline]
    fn not(self) -> TcpFlags {
        TcpFlags(!self.0)
    }
}

/// A read/write view of a TCP segment. The buffer must be exactly the
/// segment (the IP payload): TCP has no length field, and the checksum
/// covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures `20 <= header_len <= buffer length` (data offset ≥ 5), so
    /// options and payload slices are in bounds.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            Err(Error::Malformed)
        } else if header_len > len {
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

    /// Sequence numbers wrap: compare and add with `wrapping_*`.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The 4 reserved bits after the data offset; 0 from most senders.
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFF] & 0x0f
    }

    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    #[inline]
    pub fn psh(&self) -> bool {
        self.flags().contains(TcpFlags::PSH)
    }

    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    #[inline]
    pub fn urg(&self) -> bool {
        self.flags().contains(TcpFlags::URG)
    }

    #[inline]
    pub fn ece(&self) -> bool {
        self.flags().contains(TcpFlags::ECE)
    }

    #[inline]
    pub fn cwr(&self) -> bool {
        self.flags().contains(TcpFlags::CWR)
    }

    /// The raw window field (before any window scaling).
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The options between the fixed header and `header_len`, unparsed.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// Sequence space the segment takes: payload length, plus one each for
    /// SYN and FIN. The next segment of a stream starts this far on.
    #[inline]
    pub fn segment_len(&self) -> usize {
        self.payload().len() + usize::from(self.syn()) + usize::from(self.fin())
    }

    /// The one's-complement sum of `pseudo` and the whole segment.
    #[inline]
    fn sum(&self, pseudo: u16) -> u16 {
        checksum::combine(&[pseudo, checksum::data(self.buffer.as_ref())])
    }

    #[inline]
    fn pseudo_v4(&self, src_addr: &Ipv4Addr, dst_addr: &Ipv4Addr) -> u16 {
        let len = self.buffer.as_ref().len() as u32;
        checksum::pseudo_header_v4(*src_addr, *dst_addr, IpProtocol::Tcp.into(), len)
    }

    #[inline]
    fn pseudo_v6(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> u16 {
        let len = self.buffer.as_ref().len() as u32;
        checksum::pseudo_header_v6(*src_addr, *dst_addr, IpProtocol::Tcp.into(), len)
    }

    /// Whether the checksum is correct for a segment carried in IPv4 from
    /// `src_addr` to `dst_addr`.
    #[inline]
    pub fn verify_checksum_v4(&self, src_addr: &Ipv4Addr, dst_addr: &Ipv4Addr) -> bool {
        self.sum(self.pseudo_v4(src_addr, dst_addr)) == !0
    }

    /// Whether the checksum is correct for a segment carried in IPv6 from
    /// `src_addr` to `dst_addr`.
    #[inline]
    pub fn verify_checksum_v6(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> bool {
        self.sum(self.pseudo_v6(src_addr, dst_addr)) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ_NUM], value);
    }

    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_NUM], value);
    }

    /// Sets the header length in bytes, a multiple of 4 in 20..=60, leaving
    /// the reserved bits alone.
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0f) | ((value / 4) << 4);
    }

    /// Sets the 4 reserved bits; higher bits of `value` are ignored.
    #[inline]
    pub fn set_reserved(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0xf0) | (value & 0x0f);
    }

    /// Sets all eight control bits at once.
    #[inline]
    pub fn set_flags(&mut self, value: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = value.bits();
    }

    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::WIN_SIZE], value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let range = HEADER_LEN..usize::from(self.header_len());
        &mut self.buffer.as_mut()[range]
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }

    /// Recomputes the checksum over the IPv4 pseudo header and the whole
    /// buffer.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src_addr: &Ipv4Addr, dst_addr: &Ipv4Addr) {
        self.set_checksum(0);
        let sum = self.sum(self.pseudo_v4(src_addr, dst_addr));
        self.set_checksum(!sum);
    }

    /// Recomputes the checksum over the IPv6 pseudo header and the whole
    /// buffer.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum(self.pseudo_v6(src_addr, dst_addr));
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Captured on a Linux 6.18 veth (tshark: checksums correct): a Python
    // client at 10.0.1.101:34300 / [fd00::101]:58074 connecting to port
    // 8080 of 10.0.1.1 / fd00::1 and sending "hello nvgred\n". These are the
    // TCP segments; the IP addresses are below.
    //
    // SYN with MSS 1460, SACK permitted, timestamps, NOP, window scale 10.
    #[rustfmt::skip]
    static SYN_V4: [u8; 40] = [
        0x85, 0xfc, 0x1f, 0x90, 0x9b, 0x67, 0x15, 0x94, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0,
        0x78, 0x54, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x0e, 0x10, 0x59, 0xba,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    // PSH+ACK with the 13 data bytes after NOP, NOP, timestamps.
    #[rustfmt::skip]
    static DATA_V4: [u8; 45] = [
        0x85, 0xfc, 0x1f, 0x90, 0x9b, 0x67, 0x15, 0x95, 0xa2, 0x80, 0xaf, 0x10, 0x80, 0x18, 0x00, 0x3f,
        0x45, 0x42, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x0e, 0x10, 0x59, 0xba, 0x74, 0x6a, 0x0d, 0x33,
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x6e, 0x76, 0x67, 0x72, 0x65, 0x64, 0x0a,
    ];

    // The same over IPv6 (MSS 1440).
    #[rustfmt::skip]
    static SYN_V6: [u8; 40] = [
        0xe2, 0xda, 0x1f, 0x90, 0x31, 0xb3, 0xaa, 0x8e, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfd, 0x20,
        0x12, 0x81, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0, 0x04, 0x02, 0x08, 0x0a, 0x2e, 0x4e, 0x30, 0x71,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    #[rustfmt::skip]
    static DATA_V6: [u8; 45] = [
        0xe2, 0xda, 0x1f, 0x90, 0x31, 0xb3, 0xaa, 0x8f, 0x30, 0x6f, 0x9c, 0x98, 0x80, 0x18, 0x00, 0x40,
        0x82, 0x37, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x2e, 0x4e, 0x30, 0x72, 0x95, 0x95, 0xcf, 0xe2,
        0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x6e, 0x76, 0x67, 0x72, 0x65, 0x64, 0x0a,
    ];

    const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
    const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    fn client_v6() -> Ipv6Addr {
        "fd00::101".parse().unwrap()
    }

    fn server_v6() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    #[test]
    fn deconstruct_syn() {
        let packet = TcpPacket::new_checked(&SYN_V4[..]).unwrap();
        assert_eq!(packet.src_port(), 34300);
        assert_eq!(packet.dst_port(), 8080);
        assert_eq!(packet.seq_number(), 0x9b67_1594);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.reserved(), 0);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert!(packet.syn() && !packet.ack() && !packet.fin() && !packet.rst());
        assert!(!packet.psh() && !packet.urg() && !packet.ece() && !packet.cwr());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.checksum(), 0x7854);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options(), &SYN_V4[20..]);
        assert_eq!(
            &packet.options()[..4],
            &[0x02, 0x04, 0x05, 0xb4],
            "MSS 1460"
        );
        assert_eq!(packet.payload(), &[]);
        assert_eq!(packet.segment_len(), 1, "SYN takes one");
        assert!(packet.verify_checksum_v4(&CLIENT_V4, &SERVER_V4));
        assert!(!packet.verify_checksum_v4(&CLIENT_V4, &Ipv4Addr::new(10, 0, 1, 2)));
    }

    #[test]
    fn deconstruct_data() {
        let packet = TcpPacket::new_checked(&DATA_V4[..]).unwrap();
        assert_eq!(packet.seq_number(), 0x9b67_1595);
        assert_eq!(packet.ack_number(), 0xa280_af10);
        assert_eq!(packet.header_len(), 32);
        assert_eq!(packet.flags(), TcpFlags::PSH | TcpFlags::ACK);
        assert!(packet.psh() && packet.ack() && !packet.syn());
        assert_eq!(packet.window_len(), 63);
        assert_eq!(packet.checksum(), 0x4542);
        assert_eq!(packet.options(), &DATA_V4[20..32]);
        assert_eq!(packet.payload(), b"hello nvgred\n");
        assert_eq!(packet.segment_len(), 13);
        assert!(packet.verify_checksum_v4(&CLIENT_V4, &SERVER_V4));
        assert_eq!(packet.into_inner().len(), 45);
    }

    #[test]
    fn ipv6_checksums() {
        for bytes in [&SYN_V6[..], &DATA_V6[..]] {
            let packet = TcpPacket::new_checked(bytes).unwrap();
            assert!(packet.verify_checksum_v6(&client_v6(), &server_v6()));
            assert!(!packet.verify_checksum_v6(&client_v6(), &"fd00::2".parse().unwrap()));
            let mut copy = bytes.to_vec();
            let mut packet = TcpPacket::new_unchecked(&mut copy[..]);
            packet.set_checksum(0xa5a5);
            packet.fill_checksum_v6(&client_v6(), &server_v6());
            assert_eq!(copy, bytes);
        }
        let packet = TcpPacket::new_checked(&DATA_V6[..]).unwrap();
        assert_eq!(
            (packet.checksum(), packet.payload()),
            (0x8237, &b"hello nvgred\n"[..])
        );
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 45];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(34300);
        packet.set_dst_port(8080);
        packet.set_seq_number(0x9b67_1595);
        packet.set_ack_number(0xa280_af10);
        packet.set_header_len(32);
        packet.set_reserved(0);
        packet.set_flags(TcpFlags::PSH | TcpFlags::ACK);
        packet.set_window_len(63);
        packet.set_urgent_at(0);
        packet.options_mut().copy_from_slice(&DATA_V4[20..32]);
        packet.payload_mut().copy_from_slice(b"hello nvgred\n");
        packet.fill_checksum_v4(&CLIENT_V4, &SERVER_V4);
        assert_eq!(bytes, DATA_V4);
    }

    #[test]
    fn split_segment() {
        // What segmentation offload does: the header repeated, the payload
        // cut at 5 bytes, sequence numbers advanced, PSH on the last piece
        // only, checksums filled. Expected checksums computed independently
        // (Python, RFC 1071 sum).
        let whole = TcpPacket::new_checked(&DATA_V4[..]).unwrap();
        let header = &DATA_V4[..usize::from(whole.header_len())];
        let mut seq = whole.seq_number();
        let mut at = 0;
        for (size, last, want) in [(5, false, 0x8abf), (8, true, 0x613c)] {
            let mut bytes = [header, &whole.payload()[at..at + size]].concat();
            let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
            packet.set_seq_number(seq);
            let mut flags = whole.flags();
            if !last {
                flags.remove(TcpFlags::PSH | TcpFlags::FIN);
            }
            packet.set_flags(flags);
            packet.fill_checksum_v4(&CLIENT_V4, &SERVER_V4);
            assert_eq!(packet.checksum(), want, "piece at {at}");
            let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
            assert!(packet.verify_checksum_v4(&CLIENT_V4, &SERVER_V4));
            assert_eq!(packet.psh(), last);
            seq = seq.wrapping_add(packet.segment_len() as u32);
            at += size;
        }
        assert_eq!(seq, 0x9b67_15a2, "the next byte after the 13");
    }

    #[test]
    fn flag_bits() {
        let all = [
            (TcpFlags::FIN, 0x01),
            (TcpFlags::SYN, 0x02),
            (TcpFlags::RST, 0x04),
            (TcpFlags::PSH, 0x08),
            (TcpFlags::ACK, 0x10),
            (TcpFlags::URG, 0x20),
            (TcpFlags::ECE, 0x40),
            (TcpFlags::CWR, 0x80),
        ];
        let mut bytes = SYN_V4;
        for (flag, bit) in all {
            assert_eq!(flag.bits(), bit);
            let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
            packet.set_flags(flag);
            let getters = [
                packet.fin(),
                packet.syn(),
                packet.rst(),
                packet.psh(),
                packet.ack(),
                packet.urg(),
                packet.ece(),
                packet.cwr(),
            ];
            for (i, on) in getters.into_iter().enumerate() {
                assert_eq!(on, 1 << i == bit, "flag {bit:#x}, getter {i}");
            }
            assert_eq!(bytes[13], bit);
            assert_eq!(bytes[12], 0xa0, "data offset untouched");
        }
        let mut flags = TcpFlags::SYN | TcpFlags::ACK;
        flags |= TcpFlags::ECE;
        assert!(flags.contains(TcpFlags::SYN | TcpFlags::ECE));
        assert!(flags.intersects(TcpFlags::ECE | TcpFlags::CWR));
        assert!(!flags.intersects(TcpFlags::FIN | TcpFlags::RST));
        flags.remove(TcpFlags::SYN);
        flags.insert(TcpFlags::FIN);
        assert_eq!(flags.bits(), 0x51);
        assert_eq!(flags & !TcpFlags::ACK, TcpFlags::FIN | TcpFlags::ECE);
        assert_eq!(TcpFlags::from_bits(0xff), !TcpFlags::empty());
        assert!(TcpFlags::default().is_empty());
    }

    #[test]
    fn data_offset_and_reserved_are_independent() {
        let mut bytes = DATA_V4;
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_reserved(0xf);
        assert_eq!((packet.header_len(), packet.reserved()), (32, 0xf));
        packet.set_header_len(20);
        assert_eq!((packet.header_len(), packet.reserved()), (20, 0xf));
        assert_eq!(packet.options(), &[]);
        assert_eq!(packet.payload().len(), 25);
        packet.set_reserved(0x10);
        assert_eq!(packet.reserved(), 0);
        assert_eq!(packet.flags(), TcpFlags::PSH | TcpFlags::ACK);
    }

    #[test]
    fn fin_counts_in_segment_len() {
        let mut bytes = DATA_V4;
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_flags(TcpFlags::FIN | TcpFlags::ACK);
        assert_eq!(packet.segment_len(), 14);
    }

    #[test]
    fn truncated_at_every_length() {
        for bytes in [&SYN_V4[..], &DATA_V4[..], &SYN_V6[..], &DATA_V6[..]] {
            let header_len = usize::from(bytes[12] >> 4) * 4;
            for len in 0..bytes.len() {
                let packet = TcpPacket::new_unchecked(&bytes[..len]);
                if len < header_len {
                    assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
                } else {
                    // Only payload is missing: the layout is fine, the
                    // checksum (which covers the length) is not.
                    assert_eq!(packet.check_len(), Ok(()), "len {len}");
                    assert_eq!(packet.payload(), &bytes[header_len..len]);
                    assert!(!packet.verify_checksum_v4(&CLIENT_V4, &SERVER_V4));
                    assert!(!packet.verify_checksum_v6(&client_v6(), &server_v6()));
                }
            }
        }
    }

    #[test]
    fn bad_data_offset() {
        for (offset, want) in [
            (0, Err(Error::Malformed)),
            (4, Err(Error::Malformed)),
            (5, Ok(())),
            (10, Ok(())),
            (11, Err(Error::Truncated)),
            (15, Err(Error::Truncated)),
        ] {
            let mut bytes = SYN_V4;
            bytes[12] = offset << 4;
            assert_eq!(
                TcpPacket::new_unchecked(&bytes[..]).check_len(),
                want,
                "offset {offset}"
            );
        }
    }
}
