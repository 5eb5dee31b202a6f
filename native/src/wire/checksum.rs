//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are returned folded but not complemented so they can be combined;
//! a header checksum field holds `!combine(...)`, and a received header is
//! valid when the sum over it, checksum included, is `0xffff`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds the carries of a wide one's-complement sum into 16 bits.
#[inline]
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One's-complement sum of `data` as big-endian 16-bit words, an odd trailing
/// byte padded with zero.
pub fn data(data: &[u8]) -> u16 {
    // Summing 32-bit words and folding gives the same result as 16-bit words
    // (2^16 ≡ 1 mod 0xffff) in half the iterations; u64 cannot overflow for
    // any slice that fits in memory.
    let mut chunks = data.chunks_exact(4);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .sum();
    for word in chunks.remainder().chunks(2) {
        sum += u64::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
    }
    fold(sum)
}

/// One's-complement sum of partial sums.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: u32) -> u16 {
    combine(&[
        data(src),
        data(dst),
        u16::from(protocol),
        (len >> 16) as u16,
        len as u16,
    ])
}

/// Sum of the IPv4 pseudo header (RFC 768/793) for an upper-layer checksum.
/// `len` is the upper-layer length and fits 16 bits for IPv4.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u16 {
    pseudo_header(&src.octets(), &dst.octets(), protocol, len)
}

/// Sum of the IPv6 pseudo header (RFC 8200 §8.1) for an upper-layer checksum.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u16 {
    pseudo_header(&src.octets(), &dst.octets(), next_header, len)
}

/// The checksum field after one covered 16-bit word changes from `old` to
/// `new`, without touching the rest of the data: RFC 1624 eqn. 3,
/// HC' = ~(~HC + ~m + m'), which (unlike eqn. 2) never yields a spurious -0.
#[inline]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!checksum) + u64::from(!old) + u64::from(new))
}

#[cfg(test)]
mod test {
    use super::*;

    // Tiny deterministic generator: no crates, and failures are reproducible.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for w in data.chunks(2) {
            sum += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn data_matches_rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
    }

    #[test]
    fn data_matches_reference_every_length() {
        let mut state = 1;
        let buf: Vec<u8> = (0..300).map(|_| lcg(&mut state) as u8).collect();
        for len in 0..buf.len() {
            assert_eq!(data(&buf[..len]), reference(&buf[..len]), "len {len}");
        }
        assert_eq!(data(&[0xff; 4096]), 0xffff);
    }

    #[test]
    fn combine_is_split_invariant() {
        let buf: Vec<u8> = (0..=255).collect();
        assert_eq!(combine(&[data(&buf[..100]), data(&buf[100..])]), data(&buf));
    }

    #[test]
    fn pseudo_headers() {
        // Checked against the ICMPv6 echo request in ipv6.rs (tshark: correct).
        let src: Ipv6Addr = "fe80::6200:60ff:fe00:101".parse().unwrap();
        let dst: Ipv6Addr = "fe80::1".parse().unwrap();
        #[rustfmt::skip]
        let icmp = [
            0x80, 0x00, 0x62, 0x2b, 0x12, 0x34, 0x00, 0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
        ];
        assert_eq!(
            combine(&[pseudo_header_v6(src, dst, 58, 16), data(&icmp)]),
            0xffff
        );

        let v4 = pseudo_header_v4(
            Ipv4Addr::new(10, 0, 1, 101),
            Ipv4Addr::new(10, 0, 1, 1),
            17,
            8,
        );
        assert_eq!(v4, reference(&[10, 0, 1, 101, 10, 0, 1, 1, 0, 17, 0, 8]));
    }

    #[test]
    fn update_matches_full_recompute() {
        let mut state = 7;
        for _ in 0..20_000 {
            let mut buf = [0u8; 20];
            buf.fill_with(|| lcg(&mut state) as u8);
            buf[10..12].fill(0);
            let csum = !data(&buf);
            buf[10..12].copy_from_slice(&csum.to_be_bytes());

            let at = 2 * (lcg(&mut state) as usize % 10);
            if at == 10 {
                continue;
            }
            let old = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let new = lcg(&mut state) as u16;
            buf[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update(csum, old, new);
            buf[10..12].fill(0);
            assert_eq!(
                updated,
                !data(&buf),
                "update({csum:#x}, {old:#x}, {new:#x})"
            );
        }
    }
}
