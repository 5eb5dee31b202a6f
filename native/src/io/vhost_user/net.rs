//! virtio-net as this device speaks it: the feature bits it offers and the
//! virtio-net header in front of every frame, read from the guest's frames
//! into an [`Offload`] and written from one in front of ours.

use crate::dp::offload::{Gso, Offload, VNET_HDR_LEN};
use crate::wire::checksum;

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// The device announces an MTU to the guest (QEMU's `host_mtu=`).
pub const F_MTU: u64 = 1 << 3;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_ANY_LAYOUT: u64 = 1 << 27;
pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
/// Not virtio: vhost-user's "the back-end speaks protocol features".
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const F_VERSION_1: u64 = 1 << 32;

/// Everything offered. Headers may sit anywhere in a chain (ANY_LAYOUT: we
/// read and write chains as byte streams). MTU lets QEMU announce its
/// `host_mtu` to the guest (room for the NVGRE header). Not offered: ECN and UFO
/// segmentation, packed rings, an IOMMU, dirty logging (so no migration),
/// multiqueue.
pub const OFFERED: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_MTU
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_MRG_RXBUF
    | F_ANY_LAYOUT
    | F_INDIRECT_DESC
    | F_EVENT_IDX
    | F_PROTOCOL_FEATURES
    | F_VERSION_1;

/// The header with its `num_buffers` field (VERSION_1 or MRG_RXBUF).
pub const HDR_LEN_MRG: usize = VNET_HDR_LEN + 2;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;

/// Bytes of virtio-net header in front of every frame, both ways.
pub fn header_len(features: u64) -> usize {
    if features & (F_VERSION_1 | F_MRG_RXBUF) != 0 {
        HDR_LEN_MRG
    } else {
        VNET_HDR_LEN
    }
}

/// What the guest takes in frames sent to it, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestOffloads {
    /// Frames may leave their TCP/UDP checksum to finish (`csum` set).
    pub csum: bool,
    /// Large TCP/IPv4 segments (`Gso::Tcp4`).
    pub tso4: bool,
    /// Large TCP/IPv6 segments (`Gso::Tcp6`).
    pub tso6: bool,
}

impl GuestOffloads {
    pub fn from_features(features: u64) -> GuestOffloads {
        GuestOffloads {
            csum: features & F_GUEST_CSUM != 0,
            tso4: features & F_GUEST_TSO4 != 0,
            tso6: features & F_GUEST_TSO6 != 0,
        }
    }

    pub fn takes(&self, gso: Gso) -> bool {
        match gso {
            Gso::None => true,
            Gso::Tcp4 => self.tso4,
            Gso::Tcp6 => self.tso6,
            Gso::Unknown(_) => false,
        }
    }
}

/// The offload a guest's header asks for its `frame_len`-byte frame, or
/// None if the header lies: flags or a segmentation type that were not
/// negotiated, a segment size of 0, headers or a checksum beyond the frame.
pub fn parse_guest_header(h: &[u8; VNET_HDR_LEN], frame_len: usize, features: u64) -> Option<Offload> {
    let off = Offload::parse(h);
    let gso_ok = match h[1] {
        GSO_NONE => true,
        GSO_TCPV4 => features & F_HOST_TSO4 != 0,
        GSO_TCPV6 => features & F_HOST_TSO6 != 0,
        _ => false, // ECN, UDP: not offered
    };
    let flags_ok = h[0] & !F_NEEDS_CSUM == 0 && (h[0] == 0 || features & F_CSUM != 0);
    if !gso_ok || !flags_ok {
        return None;
    }
    if off.gso != Gso::None && (off.gso_size == 0 || off.hdr_len as usize > frame_len) {
        return None;
    }
    if let Some((start, offset)) = off.csum {
        if start as usize + offset as usize + 2 > frame_len {
            return None;
        }
    }
    Some(off)
}

/// What goes to the guest in front of a frame, and into it.
#[derive(Debug, PartialEq, Eq)]
pub struct ToGuest {
    pub header: [u8; VNET_HDR_LEN],
    /// A checksum finished for a guest that cannot: where in the frame it
    /// goes, and its bytes.
    pub finished: Option<(usize, [u8; 2])>,
}

/// The header for `frame` going to a guest that takes `takes` (finishing
/// the checksum the frame leaves open if the guest cannot). None if the
/// frame is a large segment the guest does not take (it must be segmented
/// first), or its checksum offsets lie outside it.
pub fn to_guest(frame: &[u8], off: &Offload, takes: GuestOffloads) -> Option<ToGuest> {
    if !takes.takes(off.gso) {
        return None;
    }
    let mut header = [0u8; VNET_HDR_LEN];
    match off.csum {
        Some((start, offset)) if !takes.csum => {
            let (start, field) = (start as usize, start as usize + offset as usize);
            if field + 2 > frame.len() {
                return None;
            }
            // As dp::offload::complete_checksum: the field holds the
            // pseudo-header sum, so the sum from `start` covers it.
            let sum = checksum::data(&frame[start..]);
            Offload { csum: None, ..*off }.emit(&mut header);
            Some(ToGuest { header, finished: Some((field, (!sum).to_be_bytes())) })
        }
        _ => {
            off.emit(&mut header);
            Some(ToGuest { header, finished: None })
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const ALL: u64 = OFFERED;

    #[test]
    fn guest_headers_that_lie_are_refused() {
        let tso = Offload { gso: Gso::Tcp4, gso_size: 1448, hdr_len: 66, csum: Some((34, 16)) };
        let mut h = [0u8; VNET_HDR_LEN];
        tso.emit(&mut h);
        assert_eq!(parse_guest_header(&h, 9000, ALL), Some(tso));
        assert_eq!(parse_guest_header(&h, 9000, ALL & !F_HOST_TSO4), None, "TSO4 not negotiated");
        assert_eq!(parse_guest_header(&h, 60, ALL), None, "hdr_len beyond the frame");
        let zero = Offload { gso_size: 0, ..tso };
        zero.emit(&mut h);
        assert_eq!(parse_guest_header(&h, 9000, ALL), None, "gso_size 0");
        let csum = Offload { csum: Some((34, 16)), ..Offload::default() };
        csum.emit(&mut h);
        assert_eq!(parse_guest_header(&h, 52, ALL), Some(csum));
        assert_eq!(parse_guest_header(&h, 51, ALL), None, "checksum field beyond the frame");
        assert_eq!(parse_guest_header(&h, 52, ALL & !F_CSUM), None, "CSUM not negotiated");
        let mut udp = [0u8; VNET_HDR_LEN];
        udp[1] = 3;
        assert_eq!(parse_guest_header(&udp, 1000, ALL), None, "UFO was not offered");
        udp[1] = 0x81;
        assert_eq!(parse_guest_header(&udp, 1000, ALL), None, "ECN was not offered");
        let mut valid = [0u8; VNET_HDR_LEN];
        valid[0] = 2;
        assert_eq!(parse_guest_header(&valid, 1000, ALL), None, "DATA_VALID is for the device to set");
    }

    #[test]
    fn a_checksum_the_guest_cannot_finish_is_finished_for_it() {
        // 4 bytes before the checksummed part; the field (offset 2) holds a pseudo-header sum.
        let frame = [0xaa, 0xbb, 0xcc, 0xdd, 0x12, 0x34, 0x00, 0x05, 0xff, 0x00];
        let off = Offload { csum: Some((4, 2)), ..Offload::default() };
        let with_csum = GuestOffloads { csum: true, ..GuestOffloads::default() };
        let g = to_guest(&frame, &off, with_csum).unwrap();
        assert_eq!((g.header[0], g.finished), (1, None), "left to the guest");
        let g = to_guest(&frame, &off, GuestOffloads::default()).unwrap();
        assert_eq!(g.header, [0; VNET_HDR_LEN]);
        let (at, sum) = g.finished.unwrap();
        let mut done = frame;
        done[at..at + 2].copy_from_slice(&sum);
        let pseudo = 0x0005; // what the field held
        assert_eq!(checksum::combine(&[pseudo, checksum::data(&done[4..])]), 0xffff, "the finished sum verifies");
        assert!(to_guest(&frame[..7], &off, GuestOffloads::default()).is_none(), "field beyond the frame");
        let tso6 = Offload { gso: Gso::Tcp6, gso_size: 1000, hdr_len: 74, csum: Some((54, 16)) };
        assert!(to_guest(&[0; 100], &tso6, GuestOffloads { csum: true, tso4: true, tso6: false }).is_none());
    }
}
