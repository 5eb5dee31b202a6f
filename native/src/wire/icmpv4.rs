//! ICMPv4 (RFC 792). The `Repr` covers what the core sends and reads: echo,
//! and Destination Unreachable (Fragmentation Needed above all, RFC 1191);
//! other messages are visible through the raw view.

use super::ipv4::{Ipv4Packet, Ipv4Repr, HEADER_LEN as IPV4_HEADER_LEN};
use super::{checksum, read_u16, set_u8_checksummed, write_u16, Error, Result};

enum_with_unknown! {
    pub enum Icmpv4Message(u8) {
        EchoReply = 0,
        DstUnreachable = 3,
        EchoRequest = 8,
        TimeExceeded = 11,
    }
}

enum_with_unknown! {
    /// Codes of Destination Unreachable (RFC 792, RFC 1122 §3.2.2.1,
    /// RFC 1812 §5.2.7.1).
    pub enum DstUnreachable(u8) {
        NetUnreachable = 0,
        HostUnreachable = 1,
        ProtoUnreachable = 2,
        PortUnreachable = 3,
        /// Fragmentation needed and DF set; carries the next-hop MTU (RFC 1191).
        FragRequired = 4,
        SrcRouteFailed = 5,
        DstNetUnknown = 6,
        DstHostUnknown = 7,
        SrcHostIsolated = 8,
        NetProhibited = 9,
        HostProhibited = 10,
        NetUnreachToS = 11,
        HostUnreachToS = 12,
        /// Communication administratively prohibited (RFC 1812), e.g. by a filter.
        CommProhibited = 13,
        HostPrecedViol = 14,
        PrecedCutoff = 15,
    }
}

mod field {
    use crate::wire::field::*;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Meaning depends on the type; for echo it is ident and sequence number.
    pub const REST_OF_HEADER: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    /// Destination Unreachable: 16 unused bits, then the next-hop MTU
    /// (RFC 1191 §4; unused for codes other than 4).
    pub const UNUSED: Field = 4..6;
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const DATA: Rest = REST_OF_HEADER.end..;
}

/// Every ICMPv4 message starts with this 8-byte header.
pub const HEADER_LEN: usize = field::DATA.start;

/// A read/write view of an ICMPv4 message. The buffer must be exactly the
/// message (the IPv4 payload): the checksum covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

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
    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.buffer.as_ref()[field::TYPE])
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQNO])
    }

    /// Destination Unreachable / Fragmentation Needed: the MTU of the next
    /// hop (RFC 1191); 0 from routers that predate it.
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// Everything after the 8-byte header: echo data, or the offending
    /// packet's header for error messages.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }

    /// Whether the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, value: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_IDENT], value);
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_SEQNO], value);
    }

    /// Sets the next-hop MTU and zeroes the 16 unused bits before it.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        let buf = self.buffer.as_mut();
        write_u16(&mut buf[field::UNUSED], 0);
        write_u16(&mut buf[field::NEXT_HOP_MTU], value);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Recomputes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }

    /// Turns an echo request into its reply in place: ident, sequence number
    /// and data stay as they are (RFC 792), only the type changes, and the
    /// checksum is patched rather than summed over the data again. IPv4 has
    /// no pseudo header for ICMP, so the caller just swaps the IP addresses.
    #[inline]
    pub fn make_echo_reply(&mut self) {
        let reply = Icmpv4Message::EchoReply.into();
        set_u8_checksummed(self.buffer.as_mut(), field::TYPE, reply, field::CHECKSUM);
    }
}

/// A validated ICMPv4 message the core handles, borrowing its data from the
/// packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// Destination Unreachable quoting the invoking datagram: its IPv4
    /// header, then `data`, the start of its payload (RFC 792 asks for 8
    /// bytes; RFC 1812 §4.3.2.3 allows up to 576 bytes of message in all,
    /// as Linux sends).
    DstUnreachable {
        reason: DstUnreachable,
        /// Meaningful for `FragRequired` only (RFC 1191); 0 otherwise.
        next_hop_mtu: u16,
        /// The quoted header. Its `payload_len` is the invoking datagram's,
        /// usually more than `data` holds.
        header: Ipv4Repr,
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Accepts, with a correct checksum: echo request/reply with code 0, and
    /// Destination Unreachable (any code; unknown ones kept as
    /// `DstUnreachable::Unknown`) quoting a well-formed IPv4 header. Any
    /// other message is `Malformed` as far as the core is concerned.
    ///
    /// The quoted header must fit and have version 4, IHL ≥ 5 and
    /// total length ≥ header length; its checksum is not checked (Linux does
    /// not either), and its options are skipped. The quoted datagram is
    /// normally cut short, so its total length is not checked against what
    /// is included: `data` is whatever follows the quoted header, possibly
    /// fewer than the 8 bytes RFC 792 asks for.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv4Packet<&'a T>) -> Result<Icmpv4Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        // Borrow from the underlying buffer, not from `packet`, so the repr
        // can outlive the view.
        let ident = packet.echo_ident();
        let seq_no = packet.echo_seq_no();
        let data = &packet.buffer.as_ref()[field::DATA];
        match (packet.msg_type(), packet.msg_code()) {
            (Icmpv4Message::EchoRequest, 0) => Ok(Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }),
            (Icmpv4Message::EchoReply, 0) => Ok(Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            }),
            (Icmpv4Message::DstUnreachable, code) => {
                let (header, data) = parse_quoted(data)?;
                Ok(Icmpv4Repr::DstUnreachable {
                    reason: DstUnreachable::from(code),
                    next_hop_mtu: packet.next_hop_mtu(),
                    header,
                    data,
                })
            }
            _ => Err(Error::Malformed),
        }
    }

    /// Bytes written by [`emit`](Self::emit): header and data (and the
    /// quoted IPv4 header for errors).
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv4Repr::DstUnreachable { header, data, .. } => {
                HEADER_LEN + header.buffer_len() + data.len()
            }
        }
    }

    /// Writes the message and fills the checksum; the packet's buffer must be
    /// exactly `buffer_len()` bytes, since the checksum covers all of it.
    ///
    /// Destination Unreachable re-serialises the quoted header with
    /// [`Ipv4Repr::emit`] (ident 0, no options, header checksum filled) and
    /// copies `data` after it; the caller chooses how much of the invoking
    /// datagram `data` holds (at least its first 8 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => emit_echo(packet, Icmpv4Message::EchoRequest, ident, seq_no, data),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => emit_echo(packet, Icmpv4Message::EchoReply, ident, seq_no, data),
            Icmpv4Repr::DstUnreachable {
                reason,
                next_hop_mtu,
                header,
                data,
            } => {
                packet.set_msg_type(Icmpv4Message::DstUnreachable);
                packet.set_msg_code(reason.into());
                packet.set_next_hop_mtu(next_hop_mtu);
                let quoted = packet.data_mut();
                let (ip, rest) = quoted.split_at_mut(header.buffer_len());
                header.emit(&mut Ipv4Packet::new_unchecked(ip));
                rest[..data.len()].copy_from_slice(data);
            }
        }
        packet.fill_checksum();
    }
}

fn emit_echo<T: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut Icmpv4Packet<T>,
    msg_type: Icmpv4Message,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) {
    packet.set_msg_type(msg_type);
    packet.set_msg_code(0);
    packet.set_echo_ident(ident);
    packet.set_echo_seq_no(seq_no);
    packet.data_mut()[..data.len()].copy_from_slice(data);
}

/// Splits the quoted part of an ICMPv4 error into the invoking datagram's
/// header and the payload bytes that follow it (see [`Icmpv4Repr::parse`]).
fn parse_quoted(quoted: &[u8]) -> Result<(Ipv4Repr, &[u8])> {
    if quoted.len() < IPV4_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(quoted);
    let header_len = ip.header_len();
    if ip.version() != 4 || usize::from(header_len) < IPV4_HEADER_LEN {
        return Err(Error::Malformed);
    }
    if usize::from(header_len) > quoted.len() {
        return Err(Error::Truncated);
    }
    let payload_len = ip
        .total_len()
        .checked_sub(u16::from(header_len))
        .ok_or(Error::Malformed)?;
    let header = Ipv4Repr {
        src_addr: ip.src_addr(),
        dst_addr: ip.dst_addr(),
        next_header: ip.next_header(),
        payload_len: usize::from(payload_len),
        hop_limit: ip.hop_limit(),
        dscp: ip.dscp(),
        ecn: ip.ecn(),
        dont_frag: ip.dont_frag(),
    };
    Ok((header, &quoted[usize::from(header_len)..]))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::IpProtocol;
    use std::net::Ipv4Addr;

    // Echo request ident 0x1234 seq 1, 40 bytes of data (tshark: checksum correct).
    #[rustfmt::skip]
    static ECHO_REQUEST: [u8; 48] = [
        0x08, 0x00, 0x26, 0xf8, 0x12, 0x34, 0x00, 0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
        0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
        0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];

    fn request() -> Icmpv4Repr<'static> {
        Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: &ECHO_REQUEST[8..],
        }
    }

    #[test]
    fn deconstruct() {
        let packet = Icmpv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0x26f8);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), &ECHO_REQUEST[8..]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5; 48];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv4Message::EchoRequest);
        packet.set_msg_code(0);
        packet.set_echo_ident(0x1234);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(&ECHO_REQUEST[8..]);
        packet.fill_checksum();
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn parse() {
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&ECHO_REQUEST[..])),
            Ok(request())
        );
    }

    #[test]
    fn emit() {
        let mut bytes = [0xa5; 48];
        assert_eq!(request().buffer_len(), bytes.len());
        request().emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn emit_reply_parses_back() {
        let reply = Icmpv4Repr::EchoReply {
            ident: 7,
            seq_no: 9,
            data: b"ping",
        };
        let mut bytes = [0xa5; 12];
        reply.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&bytes[..])),
            Ok(reply)
        );
    }

    #[test]
    fn make_echo_reply_in_place() {
        let mut bytes = ECHO_REQUEST;
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        packet.make_echo_reply();
        assert!(packet.verify_checksum());
        let incremental = packet.checksum();
        packet.fill_checksum();
        assert_eq!(packet.checksum(), incremental);
        let want = Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 1,
            data: &ECHO_REQUEST[8..],
        };
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&bytes[..])),
            Ok(want)
        );
    }

    #[test]
    fn parse_rejects() {
        let mut bad_checksum = ECHO_REQUEST;
        bad_checksum[47] ^= 0x80;
        let mut bad_code = ECHO_REQUEST;
        Icmpv4Packet::new_unchecked(&mut bad_code[..]).set_msg_code(1);
        let mut unreachable = ECHO_REQUEST;
        Icmpv4Packet::new_unchecked(&mut unreachable[..]).set_msg_type(Icmpv4Message::TimeExceeded);
        let mut unknown = ECHO_REQUEST;
        Icmpv4Packet::new_unchecked(&mut unknown[..]).set_msg_type(Icmpv4Message::from(13));
        let mut unreachable_garbage = ECHO_REQUEST;
        Icmpv4Packet::new_unchecked(&mut unreachable_garbage[..])
            .set_msg_type(Icmpv4Message::DstUnreachable);
        for bytes in [
            &mut bad_code,
            &mut unreachable,
            &mut unknown,
            &mut unreachable_garbage,
        ] {
            Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        }
        // The "quoted header" of the last one starts 0x10: IP version 1.
        for bytes in [
            bad_checksum,
            bad_code,
            unreachable,
            unknown,
            unreachable_garbage,
        ] {
            assert_eq!(
                Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&bytes[..])),
                Err(Error::Malformed)
            );
        }
        assert_eq!(
            Icmpv4Packet::new_unchecked(&unknown[..]).msg_type(),
            Icmpv4Message::Unknown(13)
        );
    }

    #[test]
    fn truncated() {
        for len in 0..ECHO_REQUEST.len() {
            let packet = Icmpv4Packet::new_unchecked(&ECHO_REQUEST[..len]);
            if len < HEADER_LEN {
                assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
                assert_eq!(Icmpv4Repr::parse(&packet), Err(Error::Truncated));
            } else {
                // Dropping data breaks the checksum rather than the layout.
                assert_eq!(
                    Icmpv4Repr::parse(&packet),
                    Err(Error::Malformed),
                    "len {len}"
                );
            }
        }
    }

    // Fragmentation Needed from a Linux 6.18 router (fd00 lab: 10.0.1.1,
    // next hop MTU 1280) for `ping -M do -s 1300 -p a5 10.0.2.2` from
    // 10.0.1.101: the quoted header (ident 0, DF, TTL 64, total length 1328)
    // and the first 520 of its 1308 payload bytes, 576 bytes of IPv4 in all
    // (tshark: checksum correct). This is the ICMP message; past byte 52
    // everything is the ping pattern 0xa5.
    #[rustfmt::skip]
    static FRAG_NEEDED_HEAD: [u8; 52] = [
        0x03, 0x04, 0x52, 0x56, 0x00, 0x00, 0x05, 0x00, 0x45, 0x00, 0x05, 0x30, 0x00, 0x00, 0x40, 0x00,
        0x40, 0x01, 0x1e, 0x67, 0x0a, 0x00, 0x01, 0x65, 0x0a, 0x00, 0x02, 0x02, 0x08, 0x00, 0x04, 0x69,
        0x1f, 0x40, 0x00, 0x01, 0xa0, 0x99, 0x01, 0x6b, 0x00, 0x00, 0x00, 0x00, 0xc6, 0xe7, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00,
    ];
    const FRAG_NEEDED_LEN: usize = 556;

    fn frag_needed() -> [u8; FRAG_NEEDED_LEN] {
        let mut bytes = [0xa5; FRAG_NEEDED_LEN];
        bytes[..FRAG_NEEDED_HEAD.len()].copy_from_slice(&FRAG_NEEDED_HEAD);
        bytes
    }

    fn frag_needed_repr(bytes: &[u8]) -> Icmpv4Repr<'_> {
        Icmpv4Repr::DstUnreachable {
            reason: DstUnreachable::FragRequired,
            next_hop_mtu: 1280,
            header: Ipv4Repr {
                src_addr: Ipv4Addr::new(10, 0, 1, 101),
                dst_addr: Ipv4Addr::new(10, 0, 2, 2),
                next_header: IpProtocol::Icmp,
                payload_len: 1308,
                hop_limit: 64,
                dscp: 0,
                ecn: 0,
                dont_frag: true,
            },
            data: &bytes[28..],
        }
    }

    // Port Unreachable from Linux for a UDP datagram 10.0.1.101:33568 →
    // 10.0.1.1:4789 (the one in udp.rs), quoted whole (tshark: checksum
    // correct). The quoted ident is 0x44b1, which Ipv4Repr does not keep.
    #[rustfmt::skip]
    static PORT_UNREACHABLE: [u8; 51] = [
        0x03, 0x03, 0x13, 0x8b, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x2b, 0x44, 0xb1, 0x40, 0x00,
        0x40, 0x11, 0xdf, 0xab, 0x0a, 0x00, 0x01, 0x65, 0x0a, 0x00, 0x01, 0x01, 0x83, 0x20, 0x12, 0xb5,
        0x00, 0x17, 0x99, 0x6a, 0x6e, 0x76, 0x67, 0x72, 0x65, 0x64, 0x20, 0x75, 0x64, 0x70, 0x20, 0x74,
        0x65, 0x73, 0x74,
    ];

    fn parse_bytes(bytes: &[u8]) -> Result<Icmpv4Repr<'_>> {
        Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(bytes))
    }

    #[test]
    fn deconstruct_frag_needed() {
        let bytes = frag_needed();
        let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(
            DstUnreachable::from(packet.msg_code()),
            DstUnreachable::FragRequired
        );
        assert_eq!(packet.checksum(), 0x5256);
        assert_eq!(packet.next_hop_mtu(), 1280);
        assert!(packet.verify_checksum());
        let quoted = Ipv4Packet::new_unchecked(packet.data());
        assert_eq!(quoted.total_len(), 1328);
        assert!(quoted.verify_checksum());
        assert_eq!(quoted.check_len(), Err(Error::Truncated), "quote is cut");
    }

    #[test]
    fn construct_frag_needed() {
        let mut bytes = [0xa5; FRAG_NEEDED_LEN];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv4Message::DstUnreachable);
        packet.set_msg_code(DstUnreachable::FragRequired.into());
        packet.set_next_hop_mtu(1280);
        packet.data_mut().copy_from_slice(&frag_needed()[8..]);
        packet.fill_checksum();
        assert_eq!(bytes, frag_needed());
    }

    #[test]
    fn parse_frag_needed() {
        let bytes = frag_needed();
        assert_eq!(parse_bytes(&bytes), Ok(frag_needed_repr(&bytes)));
    }

    #[test]
    fn emit_frag_needed() {
        // Linux quotes ident 0 for DF pings, so re-serialising the header
        // gives back the router's exact message.
        let want = frag_needed();
        let repr = frag_needed_repr(&want);
        let mut bytes = [0xa5; FRAG_NEEDED_LEN];
        assert_eq!(repr.buffer_len(), bytes.len());
        bytes[4..8].fill(0x5a);
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, want);
    }

    #[test]
    fn emit_minimal_quote_parses_back() {
        // RFC 792's minimum: the header and 8 bytes of the invoking datagram.
        let want = frag_needed();
        let Icmpv4Repr::DstUnreachable { header, data, .. } = frag_needed_repr(&want) else {
            unreachable!()
        };
        let repr = Icmpv4Repr::DstUnreachable {
            reason: DstUnreachable::FragRequired,
            next_hop_mtu: 1422,
            header,
            data: &data[..8],
        };
        let mut bytes = [0xa5; 36];
        assert_eq!(repr.buffer_len(), bytes.len());
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        // Checksum computed independently (Python, RFC 1071 sum).
        assert_eq!(&bytes[..4], &[0x03, 0x04, 0xcb, 0xc3]);
        assert_eq!(&bytes[4..8], &[0, 0, 0x05, 0x8e]);
        assert_eq!(bytes[8..36], want[8..36]);
        assert_eq!(parse_bytes(&bytes), Ok(repr));
    }

    #[test]
    fn parse_port_unreachable() {
        let repr = parse_bytes(&PORT_UNREACHABLE).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::DstUnreachable {
                reason: DstUnreachable::PortUnreachable,
                next_hop_mtu: 0,
                header: Ipv4Repr {
                    src_addr: Ipv4Addr::new(10, 0, 1, 101),
                    dst_addr: Ipv4Addr::new(10, 0, 1, 1),
                    next_header: IpProtocol::Udp,
                    payload_len: 23,
                    hop_limit: 64,
                    dscp: 0,
                    ecn: 0,
                    dont_frag: true,
                },
                data: &PORT_UNREACHABLE[28..],
            }
        );
        // Re-emitted, only the quoted ident and header checksum differ.
        let mut bytes = [0xa5; 51];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes[..2], PORT_UNREACHABLE[..2]);
        assert_eq!(bytes[4..12], PORT_UNREACHABLE[4..12]);
        assert_eq!(bytes[12..14], [0, 0]);
        assert_eq!(bytes[14..18], PORT_UNREACHABLE[14..18]);
        assert_eq!(bytes[20..], PORT_UNREACHABLE[20..]);
        assert!(Icmpv4Packet::new_unchecked(&bytes[..]).verify_checksum());
        assert!(Ipv4Packet::new_unchecked(&bytes[8..28]).verify_checksum());
    }

    #[test]
    fn dst_unreachable_codes() {
        for (code, reason) in [
            (0, DstUnreachable::NetUnreachable),
            (1, DstUnreachable::HostUnreachable),
            (3, DstUnreachable::PortUnreachable),
            (4, DstUnreachable::FragRequired),
            (13, DstUnreachable::CommProhibited),
            (15, DstUnreachable::PrecedCutoff),
            (16, DstUnreachable::Unknown(16)),
        ] {
            assert_eq!(DstUnreachable::from(code), reason);
            assert_eq!(u8::from(reason), code);
            let mut bytes = PORT_UNREACHABLE;
            let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
            packet.set_msg_code(code);
            packet.fill_checksum();
            let Ok(Icmpv4Repr::DstUnreachable { reason: parsed, .. }) = parse_bytes(&bytes) else {
                panic!("code {code}")
            };
            assert_eq!(parsed, reason);
        }
    }

    #[test]
    fn next_hop_mtu_setter_clears_unused() {
        let mut bytes = [0xff; 8];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_next_hop_mtu(0x0578);
        assert_eq!(packet.next_hop_mtu(), 1400);
        assert_eq!(&bytes[4..], &[0, 0, 0x05, 0x78]);
    }

    #[test]
    fn parse_rejects_bad_quotes() {
        // (offset into the message, new bytes): quoted version 6, IHL 4,
        // IHL 0, total length 19 < header length 20.
        let patches: [(usize, &[u8]); 4] =
            [(8, &[0x65]), (8, &[0x44]), (8, &[0x40]), (10, &[0, 19])];
        for (at, patch) in patches {
            let mut bytes = PORT_UNREACHABLE;
            bytes[at..at + patch.len()].copy_from_slice(patch);
            Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
            assert_eq!(
                parse_bytes(&bytes),
                Err(Error::Malformed),
                "{at}: {patch:x?}"
            );
        }
        // IHL 15: a 60-byte quoted header that is not all there.
        let mut bytes = PORT_UNREACHABLE;
        bytes[8] = 0x4f;
        Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        assert_eq!(parse_bytes(&bytes), Err(Error::Truncated));
        // IHL 6 with room for it: the option word is skipped.
        bytes[8] = 0x46;
        Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        let Ok(Icmpv4Repr::DstUnreachable { header, data, .. }) = parse_bytes(&bytes) else {
            panic!()
        };
        assert_eq!((header.payload_len, data), (19, &PORT_UNREACHABLE[32..]));
    }

    #[test]
    fn dst_unreachable_truncated_at_every_length() {
        let full = frag_needed();
        for len in 0..full.len() {
            let packet = Icmpv4Packet::new_unchecked(&full[..len]);
            if len < HEADER_LEN {
                assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
                assert_eq!(Icmpv4Repr::parse(&packet), Err(Error::Truncated));
                continue;
            }
            // Usually a checksum error, but not always: 238 words of 0xa5a5
            // sum to 0 (mod 0xffff), so cutting 476 bytes of pattern goes
            // unnoticed. It must not panic either way.
            let _ = Icmpv4Repr::parse(&packet);
            // With the checksum fixed up, the structure is what is judged.
            let mut bytes = full[..len].to_vec();
            Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
            let parsed = parse_bytes(&bytes);
            if len < HEADER_LEN + IPV4_HEADER_LEN {
                assert_eq!(parsed, Err(Error::Truncated), "len {len}");
            } else {
                let Ok(Icmpv4Repr::DstUnreachable { header, data, .. }) = parsed else {
                    panic!("len {len}: {parsed:?}")
                };
                assert_eq!(header.payload_len, 1308);
                assert_eq!(data, &full[28..len]);
            }
        }
    }
}
