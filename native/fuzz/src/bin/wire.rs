//! The wire formats: what parses must emit and parse back the same, and
//! what is filled (checksums) must verify. The first byte picks the format.
#![no_main]

use nvgred_fuzz::input::Reader;
use nvgred_native::dp::offload::{Offload, VNET_HDR_LEN};
use nvgred_native::wire::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const FORMATS: u8 = 13;
const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 101);
const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x101);
const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);

/// The one's-complement sum by 16-bit words, the plain way (RFC 1071).
fn reference_sum(b: &[u8]) -> u16 {
    let mut sum: u64 = b.chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn one(data: &[u8]) {
    let mut r = Reader::new(data);
    let format = r.byte() % FORMATS;
    let b = r.rest();
    match format {
        0 => {
            if let Ok(repr) = EthernetRepr::parse(&EthernetFrame::new_unchecked(b)) {
                let mut out = [0u8; ETHERNET_HEADER_LEN];
                repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
                assert_eq!(out, b[..ETHERNET_HEADER_LEN], "Ethernet header round trip");
            }
        }
        1 => {
            if let Ok(repr) = ArpRepr::parse(&ArpPacket::new_unchecked(b)) {
                let mut out = vec![0u8; repr.buffer_len()];
                repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
                assert_eq!(out, b[..out.len()], "ARP round trip");
            }
        }
        2 => {
            if let Ok(repr) = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(b)) {
                let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
                repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
                let again = Ipv4Repr::parse(&Ipv4Packet::new_checked(&out[..]).expect("emitted IPv4 passes check_len"));
                assert_eq!(again, Ok(repr), "IPv4 round trip");
            }
        }
        3 => {
            if let Ok(repr) = Ipv6Repr::parse(&Ipv6Packet::new_unchecked(b)) {
                let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
                repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
                let again = Ipv6Repr::parse(&Ipv6Packet::new_checked(&out[..]).expect("emitted IPv6 passes check_len"));
                assert_eq!(again, Ok(repr), "IPv6 round trip");
            }
        }
        4 => {
            // With the checksum that makes these bytes pass, so the per-type checks run.
            let mut fixed = b.to_vec();
            if Icmpv4Packet::new_checked(&fixed[..]).is_err() {
                return;
            }
            Icmpv4Packet::new_unchecked(&mut fixed[..]).fill_checksum();
            if let Ok(repr) = Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&fixed[..])) {
                let mut out = vec![0u8; repr.buffer_len()];
                repr.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]));
                let packet = Icmpv4Packet::new_checked(&out[..]).expect("emitted ICMP passes check_len");
                assert!(packet.verify_checksum(), "emitted ICMP checksum");
                assert_eq!(Icmpv4Repr::parse(&packet), Ok(repr), "ICMP round trip");
            }
        }
        5 => {
            let mut fixed = b.to_vec();
            if Icmpv6Packet::new_checked(&fixed[..]).is_err() {
                return;
            }
            Icmpv6Packet::new_unchecked(&mut fixed[..]).fill_checksum(&SRC6, &DST6);
            if let Ok(repr) = Icmpv6Repr::parse(&SRC6, &DST6, &Icmpv6Packet::new_unchecked(&fixed[..])) {
                let mut out = vec![0u8; repr.buffer_len()];
                repr.emit(&SRC6, &DST6, &mut Icmpv6Packet::new_unchecked(&mut out[..]));
                let packet = Icmpv6Packet::new_checked(&out[..]).expect("emitted ICMPv6 passes check_len");
                assert_eq!(Icmpv6Repr::parse(&SRC6, &DST6, &packet), Ok(repr), "ICMPv6 round trip");
            }
        }
        6 => {
            if let Ok(repr) = NdiscRepr::parse(&Icmpv6Packet::new_unchecked(b)) {
                let mut out = vec![0u8; repr.buffer_len()];
                repr.emit(&mut Icmpv6Packet::new_unchecked(&mut out[..]));
                let packet = Icmpv6Packet::new_checked(&out[..]).expect("emitted ND passes check_len");
                assert_eq!(NdiscRepr::parse(&packet), Ok(repr), "ND round trip");
            }
        }
        7 => {
            if let Ok(repr) = UdpRepr::parse(&UdpPacket::new_unchecked(b)) {
                let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
                repr.emit(&mut UdpPacket::new_unchecked(&mut out[..]));
                let mut packet = UdpPacket::new_checked(&mut out[..]).expect("emitted UDP passes check_len");
                packet.fill_checksum_v6(&SRC6, &DST6);
                assert!(packet.verify_checksum_v6(&SRC6, &DST6), "filled UDP checksum verifies");
                assert_eq!(UdpRepr::parse(&UdpPacket::new_unchecked(&out[..])), Ok(repr), "UDP round trip");
            }
        }
        8 => {
            if let Ok(repr) = NvgreRepr::parse(&GrePacket::new_unchecked(b)) {
                let mut out = [0u8; GRE_HEADER_LEN];
                repr.emit(&mut GrePacket::new_unchecked(&mut out[..]));
                assert_eq!(out, b[..GRE_HEADER_LEN], "NVGRE header round trip");
            }
        }
        9 => {
            if let Ok(t) = TcpPacket::new_checked(b) {
                let hdr = t.header_len() as usize;
                assert_eq!(t.options().len() + TCP_HEADER_LEN, hdr, "TCP options");
                assert_eq!(t.payload().len() + hdr, b.len(), "TCP payload");
                let mut out = b.to_vec();
                let mut seg = TcpPacket::new_unchecked(&mut out[..]);
                seg.fill_checksum_v4(&SRC4, &DST4);
                assert!(seg.verify_checksum_v4(&SRC4, &DST4), "filled TCP checksum verifies (IPv4)");
                seg.fill_checksum_v6(&SRC6, &DST6);
                assert!(seg.verify_checksum_v6(&SRC6, &DST6), "filled TCP checksum verifies (IPv6)");
            }
        }
        10 => {
            if let Ok(h) = <[u8; VNET_HDR_LEN]>::try_from(&b[..b.len().min(VNET_HDR_LEN)]) {
                let off = Offload::parse(&h);
                let mut out = [0u8; VNET_HDR_LEN];
                off.emit(&mut out);
                assert_eq!(Offload::parse(&out), off, "virtio-net header round trip");
                assert!(off.wire_len(b.len()) <= b.len(), "a segment no longer than its frame");
            }
        }
        11 => {
            assert_eq!(checksum::data(b), reference_sum(b), "the checksum of {} bytes", b.len());
            // An incremental update (RFC 1624) leaves a checksum that verifies.
            let words = b.len() / 2;
            if words >= 3 && b.iter().any(|&x| x != 0) {
                let mut h = b[..words * 2].to_vec();
                let field = (h[0] as usize % words) * 2;
                let changed = (field / 2 + 1 + h[1] as usize % (words - 1)) % words * 2;
                h[field..field + 2].fill(0);
                let sum = !checksum::data(&h);
                h[field..field + 2].copy_from_slice(&sum.to_be_bytes());
                let old = u16::from_be_bytes([h[changed], h[changed + 1]]);
                let new = u16::from_be_bytes([h[2], h[3]]) ^ old.rotate_left(3);
                h[changed..changed + 2].copy_from_slice(&new.to_be_bytes());
                let updated = checksum::update(sum, old, new);
                h[field..field + 2].copy_from_slice(&updated.to_be_bytes());
                if h.iter().any(|&x| x != 0) {
                    assert_eq!(checksum::data(&h), 0xffff, "a checksum updated from {sum:#06x} ({old:#06x} -> {new:#06x}) verifies");
                }
            }
        }
        _ => {
            if let Ok(mac) = std::str::from_utf8(b).unwrap_or("").parse::<MacAddr>() {
                assert_eq!(mac.to_string().parse(), Ok(mac), "MAC address text round trip");
            }
        }
    }
}

nvgred_fuzz::fuzz_target!(one);
