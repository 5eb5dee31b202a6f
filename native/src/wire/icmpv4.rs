//! ICMPv4 (RFC 792). The core only answers echo requests, so the `Repr`
//! covers echo; other messages are visible through the raw view.

use super::{checksum, read_u16, set_u8_checksummed, write_u16, Error, Result};

enum_with_unknown! {
    pub enum Icmpv4Message(u8) {
        EchoReply = 0,
        DstUnreachable = 3,
        EchoRequest = 8,
        TimeExceeded = 11,
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

/// A validated ICMPv4 echo message borrowing its data from the packet.
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
}

impl<'a> Icmpv4Repr<'a> {
    /// Accepts echo request/reply with code 0 and a correct checksum; any
    /// other message is `Malformed` as far as the core is concerned.
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
            _ => Err(Error::Malformed),
        }
    }

    /// The parts both echo variants share.
    #[inline]
    fn echo(&self) -> (Icmpv4Message, u16, u16, &'a [u8]) {
        match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (Icmpv4Message::EchoRequest, ident, seq_no, data),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (Icmpv4Message::EchoReply, ident, seq_no, data),
        }
    }

    /// Bytes written by [`emit`](Self::emit): header and data.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.echo().3.len()
    }

    /// Writes the message and fills the checksum; the packet's buffer must be
    /// exactly `buffer_len()` bytes, since the checksum covers all of it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        let (msg_type, ident, seq_no, data) = self.echo();
        packet.set_msg_type(msg_type);
        packet.set_msg_code(0);
        packet.set_echo_ident(ident);
        packet.set_echo_seq_no(seq_no);
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod test {
    use super::*;

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
        Icmpv4Packet::new_unchecked(&mut unreachable[..])
            .set_msg_type(Icmpv4Message::DstUnreachable);
        let mut unknown = ECHO_REQUEST;
        Icmpv4Packet::new_unchecked(&mut unknown[..]).set_msg_type(Icmpv4Message::from(13));
        for bytes in [&mut bad_code, &mut unreachable, &mut unknown] {
            Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        }
        for bytes in [bad_checksum, bad_code, unreachable, unknown] {
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
}
