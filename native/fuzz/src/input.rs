//! How a target's bytes are read, and written by the seed tool. Packets in
//! one input are a batch, as a worker reads them: each is a 2-byte
//! little-endian length and its bytes (the last one may be cut short).
//!
//! - `vm_frames`: port selector (1 byte), then up to [`MAX_BATCH`] frames,
//!   each after its virtio-net header (10 bytes): `[port] ([vnet hdr][len][frame])*`.
//! - `underlay`: family (1 byte: even IPv4, odd IPv6), then up to
//!   [`MAX_BATCH`] packets, each after an address selector (IPv6: the outer
//!   source and destination, a nibble each): `[family] ([addrs][len][packet])*`.
//! - `wire`: format selector (1 byte), then the bytes.
//! - `policy_decode`: the bytes.
//! - `nat`: operations, see [`nat_op`].

use nvgred_native::dp::offload::{Offload, VNET_HDR_LEN};

/// Packets per input: enough for a batch to share lookups and merges.
pub const MAX_BATCH: usize = 8;

/// Reads an input front to back; reads past the end come back short.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// One byte, 0 past the end.
    pub fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A length-prefixed packet (cut short at the end of the input).
    pub fn packet(&mut self) -> &'a [u8] {
        let len = match *self.take(2) {
            [a, b] => u16::from_le_bytes([a, b]) as usize,
            [a] => a as usize,
            _ => 0,
        };
        self.take(len)
    }

    /// The rest.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.rest.len())
    }
}

/// A frame from a VM with its virtio-net header.
pub type VmFrame<'a> = ([u8; VNET_HDR_LEN], &'a [u8]);

/// A VM input: the port selector and its frames.
pub fn vm_frames(data: &[u8]) -> (u8, Vec<VmFrame<'_>>) {
    let mut r = Reader::new(data);
    let port = r.byte();
    let mut frames = Vec::new();
    while !r.is_empty() && frames.len() < MAX_BATCH {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let got = r.take(VNET_HDR_LEN);
        hdr[..got.len()].copy_from_slice(got);
        frames.push((hdr, r.packet()));
    }
    (port, frames)
}

/// An underlay input: IPv6 or not, and each packet with its address selector.
pub fn underlay(data: &[u8]) -> (bool, Vec<(u8, &[u8])>) {
    let mut r = Reader::new(data);
    let v6 = r.byte() & 1 == 1;
    let mut packets = Vec::new();
    while !r.is_empty() && packets.len() < MAX_BATCH {
        let addrs = r.byte();
        packets.push((addrs, r.packet()));
    }
    (v6, packets)
}

fn put_packet(out: &mut Vec<u8>, p: &[u8]) {
    let len = u16::try_from(p.len()).expect("a packet of at most 65535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(p);
}

/// The input [`vm_frames`] reads back as these frames from port selector `port`.
pub fn write_vm_frames(port: u8, frames: &[(Offload, &[u8])]) -> Vec<u8> {
    let mut out = vec![port];
    for (off, frame) in frames {
        let mut hdr = [0u8; VNET_HDR_LEN];
        off.emit(&mut hdr);
        out.extend_from_slice(&hdr);
        put_packet(&mut out, frame);
    }
    out
}

/// The input [`underlay`] reads back as these packets.
pub fn write_underlay(v6: bool, packets: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = vec![v6 as u8];
    for (addrs, p) in packets {
        out.push(*addrs);
        put_packet(&mut out, p);
    }
    out
}

/// The `nat` target's operations: `([op][len][bytes])*`, `op & MASK` one of
/// these; bit 2 picks Fabrikam's routing domain over Contoso's, bit 7 a
/// 576-byte MTU.
pub mod nat_op {
    pub const MASK: u8 = 3;
    /// A tenant's IPv4 packet to the NAT.
    pub const OUTBOUND: u8 = 0;
    /// An IPv4 packet from the uplink.
    pub const INBOUND: u8 = 1;
    /// A mirrored event's bytes, applied to a table of their own.
    pub const EVENT: u8 = 2;
    /// Time passes: the first byte × 16 s, then the timers run.
    pub const TICK: u8 = 3;
}

/// One `nat` operation as the target reads it.
pub fn write_nat_op(out: &mut Vec<u8>, op: u8, bytes: &[u8]) {
    out.push(op);
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}
