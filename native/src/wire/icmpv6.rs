//! ICMPv6 (RFC 4443). The `Repr` covers what the core sends and reads: echo,
//! Packet Too Big, and Neighbor Solicitation/Advertisement (see
//! [`ndisc`](super::ndisc)); other messages are visible through the raw view.
//!
//! Unlike ICMPv4, the checksum covers an IPv6 pseudo header (RFC 4443 §2.3),
//! so checksum methods take the IPv6 source and destination addresses.

use std::net::Ipv6Addr;

use super::ipv6::{Ipv6Packet, Ipv6Repr, HEADER_LEN as IPV6_HEADER_LEN};
use super::ndisc::NdiscRepr;
use super::{checksum, read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result};

enum_with_unknown! {
    pub enum Icmpv6Message(u8) {
        DstUnreachable = 1,
        PacketTooBig = 2,
        TimeExceeded = 3,
        ParamProblem = 4,
        EchoRequest = 128,
        EchoReply = 129,
        RouterSolicit = 133,
        RouterAdvert = 134,
        NeighborSolicit = 135,
        NeighborAdvert = 136,
        Redirect = 137,
    }
}

impl Icmpv6Message {
    /// Error messages have types 0..=127 (RFC 4443 §2.1); a node never
    /// answers one with another error (§2.4 (e)).
    #[inline]
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

mod field {
    use crate::wire::field::*;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Meaning depends on the type: echo ident and sequence number, Packet
    /// Too Big MTU, Neighbor Discovery flags and reserved bits.
    pub const REST_OF_HEADER: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const MTU: Field = 4..8;
    pub const DATA: Rest = REST_OF_HEADER.end..;
}

/// Every ICMPv6 message starts with this 8-byte header.
pub const HEADER_LEN: usize = field::DATA.start;

/// Largest ICMPv6 error message: the whole packet must fit the IPv6 minimum
/// MTU of 1280 bytes (RFC 4443 §2.4 (c)), less the 40-byte IPv6 header.
/// An error quotes at most `MAX_ERROR_LEN - HEADER_LEN` bytes of the
/// invoking packet, its IPv6 header included.
pub const MAX_ERROR_LEN: usize = 1280 - IPV6_HEADER_LEN;

/// A read/write view of an ICMPv6 message. The buffer must be exactly the
/// message (the IPv6 payload after any extension headers): the checksum
/// covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    // Visible to `ndisc`, which adds the Neighbor Discovery accessors.
    pub(super) buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// The module's [`HEADER_LEN`], reachable through the type.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer without checking it; getters may panic until
    /// [`check_len`](Self::check_len) succeeds.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensures the 8-byte header fits and, for Neighbor Solicitation and
    /// Advertisement, the 16-byte target address after it, so the
    /// [`ndisc`](super::ndisc) getters are in bounds for those types.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let needed = match self.msg_type() {
            Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert => {
                super::ndisc::HEADER_LEN
            }
            _ => HEADER_LEN,
        };
        if len < needed {
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
    pub fn msg_type(&self) -> Icmpv6Message {
        Icmpv6Message::from(self.buffer.as_ref()[field::TYPE])
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

    /// Packet Too Big: the MTU of the next hop (RFC 4443 §3.2).
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU])
    }

    /// Everything after the 8-byte header: echo data, the invoking packet
    /// for error messages, the target address and options for ND.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }

    /// The one's-complement sum of the pseudo header and the message.
    #[inline]
    fn sum(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> u16 {
        let data = self.buffer.as_ref();
        checksum::combine(&[
            checksum::pseudo_header_v6(
                *src_addr,
                *dst_addr,
                IpProtocol::Icmpv6.into(),
                data.len() as u32,
            ),
            checksum::data(data),
        ])
    }

    /// Whether the checksum over the pseudo header (the addresses of the
    /// enclosing IPv6 packet) and the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> bool {
        self.sum(src_addr, dst_addr) == !0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, value: Icmpv6Message) {
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

    #[inline]
    pub fn set_mtu(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::MTU], value);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Recomputes the checksum over the pseudo header and the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum(src_addr, dst_addr);
        self.set_checksum(!sum);
    }

    /// Turns an echo request into its reply in place: ident, sequence number
    /// and data stay as they are (RFC 4443 §4.2), the type changes and the
    /// checksum is recomputed for `src_addr`/`dst_addr`, the addresses of
    /// the reply. The caller writes those into the IPv6 header; they need
    /// not be the request's swapped (a request to a multicast address is
    /// answered from a unicast one, RFC 4443 §4.2), hence the full sum.
    #[inline]
    pub fn make_echo_reply(&mut self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) {
        self.set_msg_type(Icmpv6Message::EchoReply);
        self.fill_checksum(src_addr, dst_addr);
    }
}

/// A validated ICMPv6 message the core handles, borrowing its data from the
/// packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv6Repr<'a> {
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
    /// Packet Too Big quoting the invoking packet: its IPv6 header, then
    /// `data`, as much of its payload as fits (RFC 4443 §3.2).
    PacketTooBig {
        mtu: u32,
        /// The quoted header. Its `payload_len` is the invoking packet's,
        /// usually more than `data` holds.
        header: Ipv6Repr,
        data: &'a [u8],
    },
    /// Neighbor Solicitation or Advertisement.
    Ndisc(NdiscRepr),
}

impl<'a> Icmpv6Repr<'a> {
    /// Accepts, with a correct checksum for `src_addr`/`dst_addr` (the
    /// enclosing IPv6 packet's): echo request/reply with code 0; Packet Too
    /// Big (any code: "ignored by the receiver", RFC 4443 §3.2) quoting at
    /// least an IPv6 header with version 6; Neighbor Solicitation and
    /// Advertisement as [`NdiscRepr::parse`] accepts them. Any other message
    /// is `Malformed` as far as the core is concerned.
    ///
    /// The quoted packet is normally cut short, so its payload length is not
    /// checked against what is included: `data` is whatever follows the
    /// quoted header. The hop limit of ND messages is the caller's to check
    /// (255, RFC 4861 §7.1): it is in the IPv6 header, not here.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        src_addr: &Ipv6Addr,
        dst_addr: &Ipv6Addr,
        packet: &Icmpv6Packet<&'a T>,
    ) -> Result<Icmpv6Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum(src_addr, dst_addr) {
            return Err(Error::Malformed);
        }
        // Borrow from the underlying buffer, not from `packet`, so the repr
        // can outlive the view.
        let data = &packet.buffer.as_ref()[field::DATA];
        match (packet.msg_type(), packet.msg_code()) {
            (Icmpv6Message::EchoRequest, 0) => Ok(Icmpv6Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Icmpv6Message::EchoReply, 0) => Ok(Icmpv6Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Icmpv6Message::PacketTooBig, _) => {
                let (header, data) = parse_quoted(data)?;
                Ok(Icmpv6Repr::PacketTooBig {
                    mtu: packet.mtu(),
                    header,
                    data,
                })
            }
            (Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert, _) => {
                NdiscRepr::parse(packet).map(Icmpv6Repr::Ndisc)
            }
            _ => Err(Error::Malformed),
        }
    }

    /// Bytes written by [`emit`](Self::emit).
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv6Repr::PacketTooBig { header, data, .. } => {
                HEADER_LEN + header.buffer_len() + data.len()
            }
            Icmpv6Repr::Ndisc(ndisc) => ndisc.buffer_len(),
        }
    }

    /// Writes the message and fills the checksum for `src_addr`/`dst_addr`,
    /// the addresses the caller puts in the IPv6 header; the packet's buffer
    /// must be exactly `buffer_len()` bytes, since the checksum covers all
    /// of it.
    ///
    /// Packet Too Big re-serialises the quoted header with
    /// [`Ipv6Repr::emit`] (flow label 0) and copies `data` after it; the
    /// caller chooses how much of the invoking packet `data` holds, keeping
    /// `buffer_len()` ≤ [`MAX_ERROR_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src_addr: &Ipv6Addr,
        dst_addr: &Ipv6Addr,
        packet: &mut Icmpv6Packet<T>,
    ) {
        match *self {
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => emit_echo(packet, Icmpv6Message::EchoRequest, ident, seq_no, data),
            Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => emit_echo(packet, Icmpv6Message::EchoReply, ident, seq_no, data),
            Icmpv6Repr::PacketTooBig { mtu, header, data } => {
                packet.set_msg_type(Icmpv6Message::PacketTooBig);
                packet.set_msg_code(0);
                packet.set_mtu(mtu);
                let quoted = packet.data_mut();
                let (ip, rest) = quoted.split_at_mut(header.buffer_len());
                header.emit(&mut Ipv6Packet::new_unchecked(ip));
                rest[..data.len()].copy_from_slice(data);
            }
            Icmpv6Repr::Ndisc(ndisc) => ndisc.emit(packet),
        }
        packet.fill_checksum(src_addr, dst_addr);
    }
}

fn emit_echo<T: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut Icmpv6Packet<T>,
    msg_type: Icmpv6Message,
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

/// Splits the quoted part of an ICMPv6 error into the invoking packet's
/// header and the bytes that follow it (see [`Icmpv6Repr::parse`]).
fn parse_quoted(quoted: &[u8]) -> Result<(Ipv6Repr, &[u8])> {
    if quoted.len() < IPV6_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let ip = Ipv6Packet::new_unchecked(quoted);
    if ip.version() != 6 {
        return Err(Error::Malformed);
    }
    let header = Ipv6Repr {
        src_addr: ip.src_addr(),
        dst_addr: ip.dst_addr(),
        next_header: ip.next_header(),
        payload_len: usize::from(ip.payload_len()),
        hop_limit: ip.hop_limit(),
        traffic_class: ip.traffic_class(),
    };
    Ok((header, &quoted[IPV6_HEADER_LEN..]))
}

#[cfg(test)]
mod test {
    use super::*;

    // Captured on a Linux 6.18 veth (tshark: checksums correct); these are
    // the ICMPv6 messages, the addresses are below.
    //
    // `ping -6 -s 16 fd00::1` from fd00::101: ident 0x1f3e, seq 1, 16 bytes
    // of data (a struct timeval).
    #[rustfmt::skip]
    static ECHO_REQUEST: [u8; 24] = [
        0x80, 0x00, 0x9f, 0x9f, 0x1f, 0x3e, 0x00, 0x01, 0xa0, 0x99, 0x01, 0x6b, 0x00, 0x00, 0x00, 0x00,
        0x21, 0xc6, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    // fd00::1's reply.
    #[rustfmt::skip]
    static ECHO_REPLY: [u8; 24] = [
        0x81, 0x00, 0x9e, 0x9f, 0x1f, 0x3e, 0x00, 0x01, 0xa0, 0x99, 0x01, 0x6b, 0x00, 0x00, 0x00, 0x00,
        0x21, 0xc6, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    // Packet Too Big from router fd00::1 (next hop MTU 1280) to fd00::101
    // for `ping -6 -M do -s 1300 -p a5 fd00:2::2`: the quoted packet (flow
    // label 0x5fe2f, payload length 1308) is cut to fill 1280 bytes of IPv6,
    // 1240 of ICMPv6. Past byte 72 everything is the ping pattern 0xa5.
    #[rustfmt::skip]
    static PACKET_TOO_BIG_HEAD: [u8; 72] = [
        0x02, 0x00, 0xe8, 0x35, 0x00, 0x00, 0x05, 0x00, 0x60, 0x05, 0xfe, 0x2f, 0x05, 0x1c, 0x3a, 0x40,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01,
        0xfd, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x80, 0x00, 0xa4, 0x1e, 0x1f, 0x3f, 0x00, 0x01, 0xa0, 0x99, 0x01, 0x6b, 0x00, 0x00, 0x00, 0x00,
        0xae, 0xd5, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    // Port Unreachable from fd00::1 quoting a UDP datagram: a type the Repr
    // does not cover.
    #[rustfmt::skip]
    static PORT_UNREACHABLE: [u8; 71] = [
        0x01, 0x04, 0xca, 0x22, 0x00, 0x00, 0x00, 0x00, 0x60, 0x0a, 0xc8, 0x1a, 0x00, 0x17, 0x11, 0x40,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01,
        0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x82, 0xcb, 0x12, 0xb5, 0x00, 0x17, 0xb5, 0x21, 0x6e, 0x76, 0x67, 0x72, 0x65, 0x64, 0x20, 0x75,
        0x64, 0x70, 0x20, 0x74, 0x65, 0x73, 0x74,
    ];

    fn host() -> Ipv6Addr {
        "fd00::101".parse().unwrap()
    }

    fn router() -> Ipv6Addr {
        "fd00::1".parse().unwrap()
    }

    fn packet_too_big() -> [u8; MAX_ERROR_LEN] {
        let mut bytes = [0xa5; MAX_ERROR_LEN];
        bytes[..PACKET_TOO_BIG_HEAD.len()].copy_from_slice(&PACKET_TOO_BIG_HEAD);
        bytes
    }

    fn quoted_header() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: host(),
            dst_addr: "fd00:2::2".parse().unwrap(),
            next_header: IpProtocol::Icmpv6,
            payload_len: 1308,
            hop_limit: 64,
            traffic_class: 0,
        }
    }

    fn parse<'a>(src: &Ipv6Addr, dst: &Ipv6Addr, bytes: &'a [u8]) -> Result<Icmpv6Repr<'a>> {
        Icmpv6Repr::parse(src, dst, &Icmpv6Packet::new_unchecked(bytes))
    }

    #[test]
    fn deconstruct_echo() {
        let packet = Icmpv6Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv6Message::EchoRequest);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0x9f9f);
        assert_eq!(packet.echo_ident(), 0x1f3e);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), &ECHO_REQUEST[8..]);
        assert!(packet.verify_checksum(&host(), &router()));
        assert!(
            packet.verify_checksum(&router(), &host()),
            "the pseudo header sum does not depend on the order"
        );
        assert!(!packet.verify_checksum(&host(), &"fd00::2".parse().unwrap()));
        assert_eq!(packet.into_inner().len(), 24);
    }

    #[test]
    fn construct_echo() {
        let mut bytes = [0xa5; 24];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv6Message::EchoRequest);
        packet.set_msg_code(0);
        packet.set_echo_ident(0x1f3e);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(&ECHO_REQUEST[8..]);
        packet.fill_checksum(&host(), &router());
        assert_eq!(bytes, ECHO_REQUEST);
    }

    #[test]
    fn parse_echo() {
        let want = Icmpv6Repr::EchoRequest {
            ident: 0x1f3e,
            seq_no: 1,
            data: &ECHO_REQUEST[8..],
        };
        assert_eq!(parse(&host(), &router(), &ECHO_REQUEST), Ok(want));
        let want = Icmpv6Repr::EchoReply {
            ident: 0x1f3e,
            seq_no: 1,
            data: &ECHO_REPLY[8..],
        };
        assert_eq!(parse(&router(), &host(), &ECHO_REPLY), Ok(want));
    }

    #[test]
    fn emit_echo_reply() {
        let repr = Icmpv6Repr::EchoReply {
            ident: 0x1f3e,
            seq_no: 1,
            data: &ECHO_REQUEST[8..],
        };
        let mut bytes = [0xa5; 24];
        assert_eq!(repr.buffer_len(), bytes.len());
        repr.emit(
            &router(),
            &host(),
            &mut Icmpv6Packet::new_unchecked(&mut bytes[..]),
        );
        assert_eq!(bytes, ECHO_REPLY);
    }

    #[test]
    fn make_echo_reply_in_place() {
        let mut bytes = ECHO_REQUEST;
        Icmpv6Packet::new_unchecked(&mut bytes[..]).make_echo_reply(&router(), &host());
        assert_eq!(bytes, ECHO_REPLY, "Linux's own reply, byte for byte");

        // A request to all-nodes answered from the unicast address.
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        let mut bytes = ECHO_REQUEST;
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(&host(), &all_nodes);
        packet.make_echo_reply(&router(), &host());
        assert!(packet.verify_checksum(&router(), &host()));
        assert_eq!(packet.msg_type(), Icmpv6Message::EchoReply);
    }

    #[test]
    fn deconstruct_packet_too_big() {
        let bytes = packet_too_big();
        let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv6Message::PacketTooBig);
        assert!(packet.msg_type().is_error());
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0xe835);
        assert_eq!(packet.mtu(), 1280);
        assert!(packet.verify_checksum(&router(), &host()));
        let quoted = Ipv6Packet::new_unchecked(packet.data());
        assert_eq!(quoted.flow_label(), 0x5fe2f);
        assert_eq!(quoted.check_len(), Err(Error::Truncated), "quote is cut");
    }

    #[test]
    fn construct_packet_too_big() {
        let mut bytes = [0x5a; MAX_ERROR_LEN];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Icmpv6Message::PacketTooBig);
        packet.set_msg_code(0);
        packet.set_mtu(1280);
        packet.data_mut().copy_from_slice(&packet_too_big()[8..]);
        packet.fill_checksum(&router(), &host());
        assert_eq!(bytes, packet_too_big());
    }

    #[test]
    fn parse_packet_too_big() {
        let bytes = packet_too_big();
        assert_eq!(
            parse(&router(), &host(), &bytes),
            Ok(Icmpv6Repr::PacketTooBig {
                mtu: 1280,
                header: quoted_header(),
                data: &bytes[48..],
            })
        );
        // The code is ignored by the receiver (RFC 4443 §3.2).
        let mut bytes = packet_too_big();
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_code(7);
        packet.fill_checksum(&router(), &host());
        assert!(matches!(
            parse(&router(), &host(), &bytes),
            Ok(Icmpv6Repr::PacketTooBig { mtu: 1280, .. })
        ));
    }

    #[test]
    fn emit_packet_too_big() {
        let quote = packet_too_big();
        let repr = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            header: quoted_header(),
            data: &quote[48..],
        };
        let mut bytes = [0xa5; MAX_ERROR_LEN];
        bytes[4..48].fill(0x5a);
        assert_eq!(repr.buffer_len(), bytes.len());
        repr.emit(
            &router(),
            &host(),
            &mut Icmpv6Packet::new_unchecked(&mut bytes[..]),
        );
        // Ipv6Repr drops the flow label; with it zeroed, the checksum is
        // 0xe66a (computed independently, Python RFC 1071 sum).
        let mut want = packet_too_big();
        want[2..4].copy_from_slice(&[0xe6, 0x6a]);
        want[9..12].fill(0);
        assert_eq!(bytes[..], want[..]);
    }

    #[test]
    fn emit_short_packet_too_big_parses_back() {
        let quote = packet_too_big();
        let repr = Icmpv6Repr::PacketTooBig {
            mtu: 1400,
            header: quoted_header(),
            data: &quote[48..56],
        };
        let mut bytes = [0xa5; 56];
        assert_eq!(repr.buffer_len(), bytes.len());
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&router(), &host(), &mut packet);
        assert_eq!(packet.mtu(), 1400);
        assert_eq!(parse(&router(), &host(), &bytes), Ok(repr));
    }

    #[test]
    fn packet_too_big_truncated_at_every_length() {
        let full = packet_too_big();
        for len in 0..full.len() {
            let packet = Icmpv6Packet::new_unchecked(&full[..len]);
            if len < HEADER_LEN {
                assert_eq!(packet.check_len(), Err(Error::Truncated), "len {len}");
            }
            // Usually a checksum error; must not panic either way.
            let _ = Icmpv6Repr::parse(&router(), &host(), &packet);
            // With the checksum fixed up, the structure is what is judged.
            let mut bytes = full[..len].to_vec();
            if len >= HEADER_LEN {
                Icmpv6Packet::new_unchecked(&mut bytes[..]).fill_checksum(&router(), &host());
            }
            let parsed = parse(&router(), &host(), &bytes);
            if len < HEADER_LEN + IPV6_HEADER_LEN {
                assert_eq!(parsed, Err(Error::Truncated), "len {len}");
            } else {
                let Ok(Icmpv6Repr::PacketTooBig { header, data, .. }) = parsed else {
                    panic!("len {len}: {parsed:?}")
                };
                assert_eq!(header, quoted_header());
                assert_eq!(data, &full[48..len]);
            }
        }
    }

    #[test]
    fn parse_rejects() {
        let mut bad_checksum = ECHO_REQUEST;
        bad_checksum[23] ^= 1;
        let mut bad_code = ECHO_REQUEST;
        Icmpv6Packet::new_unchecked(&mut bad_code[..]).set_msg_code(1);
        let mut not_v6 = packet_too_big();
        not_v6[8] = 0x40;
        let mut unknown = ECHO_REQUEST;
        Icmpv6Packet::new_unchecked(&mut unknown[..]).set_msg_type(Icmpv6Message::from(200));
        for bytes in [&mut bad_code[..], &mut not_v6[..], &mut unknown[..]] {
            Icmpv6Packet::new_unchecked(bytes).fill_checksum(&host(), &router());
        }
        for bytes in [
            &bad_checksum[..],
            &bad_code[..],
            &not_v6[..],
            &unknown[..],
            &PORT_UNREACHABLE[..],
        ] {
            assert_eq!(
                parse(&host(), &router(), bytes),
                Err(Error::Malformed),
                "{:x?}",
                &bytes[..4]
            );
        }
        // The port unreachable itself is fine, just not represented.
        let packet = Icmpv6Packet::new_checked(&PORT_UNREACHABLE[..]).unwrap();
        assert!(packet.verify_checksum(&router(), &host()));
        assert_eq!(packet.msg_type(), Icmpv6Message::DstUnreachable);
        // Echo truncated at every length: the layout stays valid from 8 on.
        for len in 0..ECHO_REQUEST.len() {
            let packet = Icmpv6Packet::new_unchecked(&ECHO_REQUEST[..len]);
            let want = if len < HEADER_LEN {
                Error::Truncated
            } else {
                Error::Malformed
            };
            assert_eq!(
                Icmpv6Repr::parse(&host(), &router(), &packet),
                Err(want),
                "len {len}"
            );
        }
    }

    #[test]
    fn message_roundtrip() {
        for (n, m) in [
            (1, Icmpv6Message::DstUnreachable),
            (2, Icmpv6Message::PacketTooBig),
            (3, Icmpv6Message::TimeExceeded),
            (4, Icmpv6Message::ParamProblem),
            (128, Icmpv6Message::EchoRequest),
            (129, Icmpv6Message::EchoReply),
            (133, Icmpv6Message::RouterSolicit),
            (134, Icmpv6Message::RouterAdvert),
            (135, Icmpv6Message::NeighborSolicit),
            (136, Icmpv6Message::NeighborAdvert),
            (137, Icmpv6Message::Redirect),
            (143, Icmpv6Message::Unknown(143)),
        ] {
            assert_eq!(Icmpv6Message::from(n), m);
            assert_eq!(u8::from(m), n);
            assert_eq!(m.is_error(), n < 128);
        }
        assert!(Icmpv6Message::Unknown(127).is_error());
    }
}
