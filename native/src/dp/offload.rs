//! TCP segmentation and coalescing for TAP ports with a virtio-net header
//! (`IFF_VNET_HDR`), as wireguard-go does for TUN: the VM hands over TCP
//! segments of up to 64 KB with the checksum left to finish; the underlay
//! carries MTU-sized NVGRE packets. The virtio header has no GRE
//! segmentation type, so this is done here:
//! - `segment` splits an encapsulated large segment into encapsulated
//!   MTU-sized ones, each with its headers and checksums complete;
//! - `Coalescer` merges consecutive, in-order segments of one TCP flow that
//!   arrive decapsulated into one large segment for one TAP write.

use super::PacketBuf;
use crate::wire::{checksum, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket};

/// Bytes of `struct virtio_net_hdr` (no mergeable buffers).
pub const VNET_HDR_LEN: usize = 10;

/// The smallest TCP segment size a VM may ask to be cut into: Linux's own
/// floor (`net.ipv4.tcp_min_snd_mss`). It bounds what one frame can become
/// (a 64 KB segment, at most 1,366 packets).
pub const MIN_GSO_SIZE: u16 = 48;

const ETH: usize = EthernetFrame::<&[u8]>::HEADER_LEN;
const IPV4: usize = 20;
const IPV6: usize = 40;
const TCP_CHECKSUM: usize = 16;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gso {
    #[default]
    None,
    Tcp4,
    Tcp6,
    /// A type the TAP never offered (UDP, SCTP...): the frame is dropped.
    Unknown(u8),
}

/// What a virtio-net header says about the frame after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// A large TCP segment, to go on the wire as `gso_size`-byte segments.
    pub gso: Gso,
    pub gso_size: u16,
    /// Bytes of headers (Ethernet, IP, TCP) before the payload.
    pub hdr_len: u16,
    /// A checksum left to finish: summed from `.0`, stored at `.0 + .1`.
    pub csum: Option<(u16, u16)>,
}

impl Offload {
    /// Parse a virtio-net header (little-endian fields, as a TAP on this host writes them).
    pub fn parse(h: &[u8]) -> Offload {
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Offload {
            gso: match h[1] & !GSO_ECN {
                GSO_NONE => Gso::None,
                GSO_TCPV4 => Gso::Tcp4,
                GSO_TCPV6 => Gso::Tcp6,
                other => Gso::Unknown(other),
            },
            hdr_len: le(2),
            gso_size: le(4),
            csum: (h[0] & F_NEEDS_CSUM != 0).then(|| (le(6), le(8))),
        }
    }

    pub fn emit(&self, h: &mut [u8; VNET_HDR_LEN]) {
        *h = [0; VNET_HDR_LEN];
        if let Some((start, offset)) = self.csum {
            h[0] = F_NEEDS_CSUM;
            h[6..8].copy_from_slice(&start.to_le_bytes());
            h[8..10].copy_from_slice(&offset.to_le_bytes());
        }
        h[1] = match self.gso {
            Gso::None => GSO_NONE,
            Gso::Tcp4 => GSO_TCPV4,
            Gso::Tcp6 => GSO_TCPV6,
            Gso::Unknown(t) => t,
        };
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
    }

    /// What a VM's virtio-net header says, checked against the frame it came
    /// with before anything acts on it (the guest writes every field): a
    /// checksum to finish lies inside the frame; a large segment is a TCP
    /// segment of the family its type says, with data, a segment size of at
    /// least [`MIN_GSO_SIZE`], and, if it leaves a checksum to finish, that of
    /// TCP. The header length is taken from the frame's own headers (the
    /// guest's is a hint). `None`: the frame is dropped as malformed.
    pub fn validated(self, frame: &[u8]) -> Option<Offload> {
        if let Some((start, offset)) = self.csum {
            if (start as usize) < ETH || start as usize + offset as usize + 2 > frame.len() {
                return None;
            }
        }
        match self.gso {
            Gso::None => Some(Offload { gso_size: 0, hdr_len: 0, ..self }),
            Gso::Unknown(_) => None,
            Gso::Tcp4 | Gso::Tcp6 => {
                let l = layout(frame)?;
                let tcp_csum = (l.tcp as u16, TCP_CHECKSUM as u16);
                let ok = l.v4 == (self.gso == Gso::Tcp4)
                    && self.gso_size >= MIN_GSO_SIZE
                    && frame.len() > l.hdr_len
                    && self.csum.is_none_or(|c| c == tcp_csum);
                ok.then_some(Offload { hdr_len: l.hdr_len as u16, ..self })
            }
        }
    }

    /// The largest frame the underlay will carry for this one: a segment's, for GSO.
    #[inline]
    pub fn wire_len(&self, frame_len: usize) -> usize {
        match self.gso {
            Gso::None => frame_len,
            _ => frame_len.min(self.hdr_len as usize + self.gso_size as usize),
        }
    }
}

/// Finish a partial checksum in place: the one's-complement sum from `start`
/// (the field holds the pseudo-header sum) goes, inverted, into the field.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start + offset;
    if field + 2 > frame.len() {
        return false;
    }
    let sum = checksum::data(&frame[start..]);
    frame[field..field + 2].copy_from_slice(&(!sum).to_be_bytes());
    true
}

/// The layout of a TCP frame: where its TCP header starts and its headers end.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v4: bool,
    tcp: usize,
    hdr_len: usize,
}

/// The layout of a frame that is exactly one TCP segment: its IP length is
/// the frame's (bytes beyond it would be summed into checksums and cut into
/// segments as payload: such a frame gets no offload here).
fn layout(frame: &[u8]) -> Option<Layout> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (v4, tcp, end) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 || ip.more_frags() {
                return None;
            }
            (true, ETH + ip.header_len() as usize, ETH + ip.total_len() as usize)
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            (false, ETH + IPV6, ETH + IPV6 + ip.payload_len() as usize)
        }
        _ => return None,
    };
    if end != frame.len() {
        return None;
    }
    let t = TcpPacket::new_checked(frame.get(tcp..)?).ok()?;
    Some(Layout { v4, tcp, hdr_len: tcp + t.header_len() as usize })
}

/// The TCP checksum of a segment whose IP header is final: pseudo header,
/// then the TCP header (checksum field zeroed) and payload.
fn fill_tcp_checksum(frame: &mut [u8], l: &Layout) {
    let tcp_len = (frame.len() - l.tcp) as u32;
    frame[l.tcp + TCP_CHECKSUM..l.tcp + TCP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
    let pseudo = pseudo_header(frame, l, tcp_len);
    let sum = checksum::combine(&[pseudo, checksum::data(&frame[l.tcp..])]);
    frame[l.tcp + TCP_CHECKSUM..l.tcp + TCP_CHECKSUM + 2].copy_from_slice(&(!sum).to_be_bytes());
}

fn pseudo_header(frame: &[u8], l: &Layout, tcp_len: u32) -> u16 {
    if l.v4 {
        let ip = Ipv4Packet::new_unchecked(&frame[ETH..]);
        checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), IpProtocol::Tcp.into(), tcp_len)
    } else {
        let ip = Ipv6Packet::new_unchecked(&frame[ETH..]);
        checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), IpProtocol::Tcp.into(), tcp_len)
    }
}

/// Put the TCP checksum of a large segment (`frame`, Ethernet onwards) in
/// partial form again after its addresses or ports changed (a NAT): the
/// pseudo-header sum of its addresses and whole length, as segmentation
/// expects it. False if it is not a TCP segment.
pub fn set_partial_checksum(frame: &mut [u8]) -> bool {
    let Some(l) = layout(frame) else { return false };
    let pseudo = pseudo_header(frame, &l, (frame.len() - l.tcp) as u32);
    frame[l.tcp + TCP_CHECKSUM..l.tcp + TCP_CHECKSUM + 2].copy_from_slice(&pseudo.to_be_bytes());
    true
}

/// Set the IP length of `frame` (now `frame.len()` bytes) and its IPv4 ID.
fn set_ip_len(frame: &mut [u8], l: &Layout, id: Option<u16>) {
    let len = frame.len() - ETH;
    if l.v4 {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH..]);
        ip.set_total_len(len as u16);
        if let Some(id) = id {
            ip.set_ident(id);
        }
        ip.fill_checksum();
    } else {
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[ETH..]);
        ip.set_payload_len((len - IPV6) as u16);
    }
}

/// Segments `segment` will produce from an encapsulated large segment of
/// `inner_len` bytes (0 if it is not one it can split).
pub fn segment_count(inner_len: usize, off: &Offload) -> usize {
    let payload = inner_len.saturating_sub(off.hdr_len as usize);
    if !matches!(off.gso, Gso::Tcp4 | Gso::Tcp6) || off.gso_size == 0 || payload == 0 {
        return 0;
    }
    payload.div_ceil(off.gso_size as usize)
}

/// Cut segments `first..first + out.len()` of `pkt` — an outer header of
/// `outer_len` bytes (IP + GRE, as the underlay socket sends it; none for a
/// frame going to a VM that does not take large segments) and a large
/// TCP segment described by `off` (validated: see [`Offload::validated`]) —
/// into `out`, each encapsulated with complete headers and checksums. A
/// caller with a bounded pool of buffers cuts a segment in several calls.
/// Returns false (and writes nothing useful) if the inner frame is not the
/// TCP segment the header claims or the range is not within its segments.
pub fn segment(pkt: &[u8], outer_len: usize, off: &Offload, first: usize, out: &mut [PacketBuf]) -> bool {
    let Some(inner) = pkt.get(outer_len..) else { return false };
    let Some(l) = layout(inner) else { return false };
    let hdr_len = off.hdr_len as usize;
    let total = segment_count(inner.len(), off);
    if hdr_len != l.hdr_len || (l.v4 != (off.gso == Gso::Tcp4)) || first + out.len() > total {
        return false;
    }
    let mss = off.gso_size as usize;
    let payload = &inner[hdr_len..];
    let tcp = TcpPacket::new_unchecked(&inner[l.tcp..hdr_len]);
    let (seq, flags) = (tcp.seq_number(), tcp.flags());
    let id = if l.v4 { Ipv4Packet::new_unchecked(&inner[ETH..]).ident() } else { 0 };
    for (j, seg) in out.iter_mut().enumerate() {
        let k = first + j;
        let chunk = &payload[k * mss..((k + 1) * mss).min(payload.len())];
        let total_len = outer_len + hdr_len + chunk.len();
        seg.reset();
        if seg.capacity() < total_len {
            *seg = PacketBuf::new(total_len);
        }
        let dst = &mut seg.spare_mut()[..total_len];
        dst[..outer_len + hdr_len].copy_from_slice(&pkt[..outer_len + hdr_len]);
        dst[outer_len + hdr_len..].copy_from_slice(chunk);
        seg.set_len(total_len);
        let (outer, frame) = seg.frame_mut().split_at_mut(outer_len);
        if outer_len > 0 {
            set_outer_len(outer, frame.len());
        }
        set_ip_len(frame, &l, Some(id.wrapping_add(k as u16)));
        let mut t = TcpPacket::new_unchecked(&mut frame[l.tcp..]);
        t.set_seq_number(seq.wrapping_add((k * mss) as u32));
        let mut f = flags;
        if k + 1 < total {
            f.remove(TcpFlags::FIN | TcpFlags::PSH);
        }
        if k > 0 {
            f.remove(TcpFlags::CWR);
        }
        t.set_flags(f);
        fill_tcp_checksum(frame, &l);
    }
    true
}

/// Set the length fields of an outer header (IPv4 or IPv6, then GRE) for an
/// inner frame of `inner_len` bytes.
fn set_outer_len(outer: &mut [u8], inner_len: usize) {
    let total = outer.len() + inner_len;
    if outer[0] >> 4 == 4 {
        let mut ip = Ipv4Packet::new_unchecked(outer);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
    } else {
        Ipv6Packet::new_unchecked(outer).set_payload_len((total - IPV6) as u16);
    }
}

/// One large TCP segment being built from consecutive segments of one flow,
/// for one TAP write. Segments join only if the result is exactly what the
/// sender's TCP would have made as one segment: same headers but for lengths,
/// IDs, sequence and checksum; in order; all but the last of one size; a
/// valid checksum each (what is merged is vouched for, as the merged frame
/// goes up marked "checksum to finish"); plain ACK segments (PSH only last).
#[derive(Default)]
pub struct Coalescer {
    /// Segments merged into the buffer so far (0: empty).
    pub count: usize,
    layout: Option<Layout>,
    next_seq: u32,
    size: usize,
    last_short: bool,
}

/// A merged segment may not grow past this (IPv4 total length).
const MAX_MERGED: usize = 65_535 - 64;

impl Coalescer {
    /// Start merging with `frame` (whose offload is `off`) into `into`
    /// (which takes a copy). False if the frame cannot start a merge (not a
    /// plain in-order TCP data segment).
    pub fn start(&mut self, into: &mut PacketBuf, frame: &[u8], off: Offload) -> bool {
        self.count = 0;
        let Some(l) = mergeable(frame, off) else { return false };
        let payload = frame.len() - l.hdr_len;
        into.reset();
        into.offload = off;
        into.spare_mut()[..frame.len()].copy_from_slice(frame);
        into.set_len(frame.len());
        let seq = TcpPacket::new_unchecked(&frame[l.tcp..]).seq_number();
        *self = Coalescer { count: 1, layout: Some(l), next_seq: seq.wrapping_add(payload as u32), size: payload, last_short: false };
        true
    }

    /// Append `frame` (whose offload is `off`) to the merge in `into` if it continues it.
    pub fn append(&mut self, into: &mut PacketBuf, frame: &[u8], off: Offload) -> bool {
        let Some(l) = self.layout else { return false };
        let merged = into.frame();
        if self.last_short || merged.len() + frame.len() - l.hdr_len > MAX_MERGED {
            return false;
        }
        let Some(fl) = mergeable(frame, off) else { return false };
        if fl.hdr_len != l.hdr_len || fl.v4 != l.v4 || !same_headers(merged, frame, &l) {
            return false;
        }
        let t = TcpPacket::new_unchecked(&frame[l.tcp..]);
        let payload = frame.len() - l.hdr_len;
        if t.seq_number() != self.next_seq || payload > self.size {
            return false;
        }
        if TcpPacket::new_unchecked(&merged[l.tcp..]).psh() {
            return false; // the merge already ends a push
        }
        let at = merged.len();
        into.spare_mut()[at..at + payload].copy_from_slice(&frame[l.hdr_len..]);
        into.set_len(at + payload);
        if t.psh() {
            let mut mt = TcpPacket::new_unchecked(&mut into.frame_mut()[l.tcp..]);
            let f = mt.flags() | TcpFlags::PSH;
            mt.set_flags(f);
        }
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        self.last_short = payload < self.size;
        self.count += 1;
        true
    }

    /// Finish the merge in `into`: lengths fixed, and, if segments were
    /// merged, the offload that tells the TAP (checksum left to finish,
    /// segment size) with the pseudo-header sum in the checksum field.
    pub fn finish(&mut self, into: &mut PacketBuf) {
        let Some(l) = self.layout.take() else { return };
        let merged = std::mem::take(&mut self.count);
        if merged < 2 {
            return;
        }
        let frame = into.frame_mut();
        set_ip_len(frame, &l, None);
        let tcp_len = (frame.len() - l.tcp) as u32;
        let pseudo = pseudo_header(frame, &l, tcp_len);
        frame[l.tcp + TCP_CHECKSUM..l.tcp + TCP_CHECKSUM + 2].copy_from_slice(&pseudo.to_be_bytes());
        into.offload = Offload {
            gso: if l.v4 { Gso::Tcp4 } else { Gso::Tcp6 },
            gso_size: self.size as u16,
            hdr_len: l.hdr_len as u16,
            csum: Some((l.tcp as u16, TCP_CHECKSUM as u16)),
        };
    }
}

/// A TCP data segment that may be merged: IPv4 without options, DF, not a
/// fragment, or IPv6 with TCP next; only ACK (and PSH); a valid checksum,
/// or one in partial form (`off`, see [`received`]).
fn mergeable(frame: &[u8], off: Offload) -> Option<Layout> {
    let l = layout(frame)?;
    if frame.len() <= l.hdr_len {
        return None;
    }
    if l.v4 {
        let ip = Ipv4Packet::new_unchecked(&frame[ETH..]);
        if ip.header_len() as usize != IPV4 || !ip.dont_frag() || ip.total_len() as usize != frame.len() - ETH {
            return None;
        }
    } else if Ipv6Packet::new_unchecked(&frame[ETH..]).payload_len() as usize != frame.len() - ETH - IPV6 {
        return None;
    }
    let t = TcpPacket::new_unchecked(&frame[l.tcp..]);
    if t.flags() & !(TcpFlags::ACK | TcpFlags::PSH) != TcpFlags::empty() || !t.ack() {
        return None;
    }
    if off.csum.is_some() {
        return Some(l);
    }
    let tcp_len = (frame.len() - l.tcp) as u32;
    let sum = checksum::combine(&[pseudo_header(frame, &l, tcp_len), checksum::data(&frame[l.tcp..])]);
    (sum == 0xffff).then_some(l)
}

/// What the VM's stack must be told about a decapsulated frame, if anything:
/// - a TCP segment longer than any that crossed the wire (at most
///   `wire_frame` bytes each) was merged on receive (GRO, which NIC drivers
///   do by default) or crossed whole (a sender's segmentation offload that
///   the path never needed to apply): it goes up as one large segment, cut
///   at the payload a full wire segment carries. Its checksum must hold or
///   be in partial form (the pseudo-header sum, as GRO and offloads leave
///   it); a whole one takes the partial form;
/// - a TCP segment whose checksum is in partial form (a sender's checksum
///   offload on a virtual link left it to finish) goes up as "checksum to
///   finish".
///
/// `None` for anything else: it goes up as it is. (Were a valid checksum to
/// equal the pseudo-header sum by chance, finishing it gives it back.)
pub fn received(frame: &mut [u8], wire_frame: usize) -> Option<Offload> {
    let l = layout(frame)?;
    let pseudo = pseudo_header(frame, &l, (frame.len() - l.tcp) as u32);
    let field = l.tcp + TCP_CHECKSUM..l.tcp + TCP_CHECKSUM + 2;
    let partial = frame[field.clone()] == pseudo.to_be_bytes();
    let csum = Some((l.tcp as u16, TCP_CHECKSUM as u16));
    let Some(segment) = wire_frame.checked_sub(l.hdr_len).filter(|&s| s > 0 && frame.len() > wire_frame) else {
        return partial.then_some(Offload { csum, ..Offload::default() });
    };
    if !partial {
        if checksum::combine(&[pseudo, checksum::data(&frame[l.tcp..])]) != 0xffff {
            return None;
        }
        frame[field].copy_from_slice(&pseudo.to_be_bytes());
    }
    Some(Offload {
        gso: if l.v4 { Gso::Tcp4 } else { Gso::Tcp6 },
        gso_size: segment.min(u16::MAX as usize) as u16,
        hdr_len: l.hdr_len as u16,
        csum,
    })
}

/// Same Ethernet, IP and TCP headers but for lengths, IPv4 ID and checksum,
/// TCP sequence number, PSH and checksum.
fn same_headers(a: &[u8], b: &[u8], l: &Layout) -> bool {
    if a[..ETH] != b[..ETH] {
        return false;
    }
    if l.v4 {
        // version..TOS, flags..protocol, addresses
        if a[ETH..ETH + 2] != b[ETH..ETH + 2] || a[ETH + 6..ETH + 10] != b[ETH + 6..ETH + 10] || a[ETH + 12..l.tcp] != b[ETH + 12..l.tcp] {
            return false;
        }
    } else if a[ETH..ETH + 4] != b[ETH..ETH + 4] || a[ETH + 6..l.tcp] != b[ETH + 6..l.tcp] {
        return false;
    }
    let (ta, tb) = (&a[l.tcp..l.hdr_len], &b[l.tcp..l.hdr_len]);
    // ports; ack, offset; window; urgent and options
    ta[0..4] == tb[0..4] && ta[8..13] == tb[8..13] && ta[14..16] == tb[14..16] && ta[18..] == tb[18..]
        && (ta[13] & !TcpFlags::PSH.bits()) == (tb[13] & !TcpFlags::PSH.bits())
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::dp::testkit::*;
    use crate::wire::{IpProtocol, Ipv4Repr};

    /// A TCP segment frame with `payload` bytes, complete checksum.
    fn tcp_frame(seq: u32, payload: &[u8], flags: TcpFlags) -> Vec<u8> {
        let mut tcp = vec![0u8; 32 + payload.len()];
        {
            let mut t = TcpPacket::new_unchecked(&mut tcp[..]);
            t.set_src_port(40000);
            t.set_dst_port(5201);
            t.set_seq_number(seq);
            t.set_ack_number(77);
            t.set_header_len(32);
            t.set_flags(flags);
            t.set_window_len(512);
            t.options_mut().copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]); // NOP NOP TS
            t.payload_mut().copy_from_slice(payload);
        }
        let ip = Ipv4Repr {
            src_addr: v4(CONTOSO1.0),
            dst_addr: v4(CONTOSO3.0),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.len(),
            hop_limit: 64,
            dscp: 0,
            ecn: 0,
            dont_frag: true,
        };
        let mut p = vec![0u8; 20 + tcp.len()];
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
        p[20..].copy_from_slice(&tcp);
        let mut f = ethernet(mac(CONTOSO1.1), mac(CONTOSO3.1), EtherType::Ipv4, &p);
        let l = layout(&f).unwrap();
        fill_tcp_checksum(&mut f, &l);
        f
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_large_segment_splits_into_valid_mtu_sized_segments_and_merges_back() {
        let payload = data(10_000);
        let big = tcp_frame(1000, &payload, TcpFlags::ACK | TcpFlags::PSH);
        let outer = [0x45u8, 0, 0, 0, 0, 0, 0x40, 0, 64, 47, 0, 0, 192, 168, 0, 22, 192, 168, 0, 33, 0x20, 0, 0x65, 0x58, 0, 0x17, 0x70, 0x01];
        let mut pkt = outer.to_vec();
        pkt.extend_from_slice(&big);
        let off = Offload { gso: Gso::Tcp4, gso_size: 1400, hdr_len: 14 + 20 + 32, csum: Some((34, 16)) };
        let n = segment_count(big.len(), &off);
        assert_eq!(n, 8);
        let mut segs: Vec<PacketBuf> = (0..n).map(|_| PacketBuf::new(2048)).collect();
        // Cut in two calls, as a worker with a small pool does.
        assert!(segment(&pkt, outer.len(), &off, 0, &mut segs[..3]));
        assert!(segment(&pkt, outer.len(), &off, 3, &mut segs[3..]));
        assert!(!segment(&pkt, outer.len(), &off, 7, &mut segs[..2]), "beyond the last segment");

        let mut merged = PacketBuf::new(70_000);
        let mut c = Coalescer::default();
        for (k, s) in segs.iter().enumerate() {
            let outer_ip = Ipv4Packet::new_checked(s.frame()).unwrap();
            assert!(outer_ip.verify_checksum());
            assert_eq!(outer_ip.total_len() as usize, s.len());
            let frame = &s.frame()[outer.len()..];
            let l = layout(frame).unwrap();
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            assert!(ip.verify_checksum());
            let t = TcpPacket::new_checked(&frame[l.tcp..]).unwrap();
            assert!(t.verify_checksum_v4(&ip.src_addr(), &ip.dst_addr()), "segment {k} checksum");
            assert_eq!(t.seq_number(), 1000 + 1400 * k as u32);
            assert_eq!(t.psh(), k == n - 1, "PSH only on the last");
            assert!(frame.len() <= 14 + 20 + 32 + 1400);
            let ok = if k == 0 { c.start(&mut merged, frame, Offload::default()) } else { c.append(&mut merged, frame, Offload::default()) };
            assert!(ok, "segment {k} merges");
        }
        c.finish(&mut merged);
        assert_eq!(merged.offload.gso, Gso::Tcp4);
        assert_eq!(merged.offload.gso_size, 1400);
        // Finishing the checksum the TAP way gives back the original segment.
        let (start, offset) = merged.offload.csum.unwrap();
        let mut out = merged.frame().to_vec();
        assert!(complete_checksum(&mut out, start as usize, offset as usize));
        assert_eq!(&out[34..], &big[34..], "TCP header and payload as sent");
        assert_eq!(Ipv4Packet::new_checked(&out[14..]).unwrap().total_len() as usize, big.len() - 14);
    }

    #[test]
    fn segments_that_do_not_continue_the_flow_are_not_merged() {
        let mut merged = PacketBuf::new(70_000);
        let mut c = Coalescer::default();
        let a = tcp_frame(1, &data(1000), TcpFlags::ACK);
        assert!(c.start(&mut merged, &a, Offload::default()));
        assert!(!c.append(&mut merged, &tcp_frame(5000, &data(1000), TcpFlags::ACK), Offload::default()), "out of order");
        assert!(!c.append(&mut merged, &tcp_frame(1001, &data(1200), TcpFlags::ACK), Offload::default()), "larger than the first");
        assert!(!c.append(&mut merged, &tcp_frame(1001, &data(1000), TcpFlags::ACK | TcpFlags::FIN), Offload::default()), "FIN");
        let mut bad = tcp_frame(1001, &data(1000), TcpFlags::ACK);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(!c.append(&mut merged, &bad, Offload::default()), "a bad checksum is never vouched for");
        assert!(c.append(&mut merged, &tcp_frame(1001, &data(500), TcpFlags::ACK), Offload::default()), "a shorter last one");
        assert!(!c.append(&mut merged, &tcp_frame(1501, &data(500), TcpFlags::ACK), Offload::default()), "nothing after a short one");
        assert!(!c.start(&mut merged, &tcp_frame(1, &[], TcpFlags::ACK), Offload::default()), "no payload, nothing to merge");
        assert!(!c.start(&mut merged, &ping(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 64), Offload::default()), "not TCP");
    }

    #[test]
    fn a_segment_the_kernel_merged_on_receive_goes_up_as_one_large_segment() {
        let payload = data(20_000);
        let whole = tcp_frame(1000, &payload, TcpFlags::ACK);
        let wire_frame = 1500 - 28; // what one NVGRE packet over a 1500-byte PA MTU carries
        let l = layout(&whole).unwrap();
        let pseudo = pseudo_header(&whole, &l, (whole.len() - l.tcp) as u32);
        let expected = Offload { gso: Gso::Tcp4, gso_size: (wire_frame - 66) as u16, hdr_len: 66, csum: Some((34, 16)) };

        // As GRO leaves it: the pseudo-header sum in the checksum field.
        let mut gro = whole.clone();
        gro[34 + 16..34 + 18].copy_from_slice(&pseudo.to_be_bytes());
        assert_eq!(received(&mut gro, wire_frame), Some(expected));
        let mut finished = gro.clone();
        assert!(complete_checksum(&mut finished, 34, 16));
        assert_eq!(finished, whole, "the TAP's checksum is the sender's");

        // A whole, valid checksum (a reassembled packet) takes the partial form.
        let mut reassembled = whole.clone();
        assert_eq!(received(&mut reassembled, wire_frame), Some(expected));
        assert_eq!(reassembled, gro);

        // Neither: goes up as it is.
        let mut bad = whole.clone();
        bad[100] ^= 0xff;
        assert_eq!(received(&mut bad.clone(), wire_frame), None);
        // Not longer than the wire carries, with a whole checksum, or not TCP: nothing to do.
        assert_eq!(received(&mut tcp_frame(1, &data(1000), TcpFlags::ACK), wire_frame), None);
        assert_eq!(received(&mut ping(CONTOSO1, mac(CONTOSO3.1), CONTOSO3.0, 64), 40), None);
    }

    #[test]
    fn a_segment_with_its_checksum_left_to_finish_goes_up_so_and_merges() {
        // As a sender's checksum offload leaves segments on a virtual link.
        let partial = |seq: u32, n: usize| {
            let mut f = tcp_frame(seq, &data(n), TcpFlags::ACK);
            let l = layout(&f).unwrap();
            let pseudo = pseudo_header(&f, &l, (f.len() - l.tcp) as u32);
            f[34 + 16..34 + 18].copy_from_slice(&pseudo.to_be_bytes());
            f
        };
        let mut a = partial(1, 1000);
        let off = received(&mut a, 1472).expect("a partial checksum is recognised");
        assert_eq!(off, Offload { csum: Some((34, 16)), ..Offload::default() });
        let mut finished = a.clone();
        assert!(complete_checksum(&mut finished, 34, 16));
        assert_eq!(finished, tcp_frame(1, &data(1000), TcpFlags::ACK), "finishing it gives the sender's checksum");

        // Merged with its successors; alone, it keeps its offload.
        let mut merged = PacketBuf::new(70_000);
        let mut c = Coalescer::default();
        assert!(c.start(&mut merged, &a, off));
        assert_eq!(merged.offload, off, "a merge of one goes up as that segment");
        let mut b = partial(1001, 1000);
        let off_b = received(&mut b, 1472).unwrap();
        assert!(!c.append(&mut merged, &b, Offload::default()), "without its offload, a partial checksum is a bad one");
        assert!(c.append(&mut merged, &b, off_b));
        c.finish(&mut merged);
        let (start, offset) = merged.offload.csum.unwrap();
        let mut out = merged.frame().to_vec();
        assert!(complete_checksum(&mut out, start as usize, offset as usize));
        let l = layout(&out).unwrap();
        assert_eq!(checksum::combine(&[pseudo_header(&out, &l, (out.len() - l.tcp) as u32), checksum::data(&out[l.tcp..])]), 0xffff);
    }

    #[test]
    fn the_virtio_header_round_trips() {
        let off = Offload { gso: Gso::Tcp6, gso_size: 1380, hdr_len: 86, csum: Some((54, 16)) };
        let mut h = [0u8; VNET_HDR_LEN];
        off.emit(&mut h);
        assert_eq!(h, [1, 4, 86, 0, 0x64, 0x05, 54, 0, 16, 0]);
        assert_eq!(Offload::parse(&h), off);
        assert_eq!(off.wire_len(60_000), 86 + 1380);
        assert_eq!(Offload::default().wire_len(1514), 1514);
    }
}
