//! A packet buffer with headroom, so headers are added and removed in place.
//!
//! The frame lives in `data[start..end]`. Encapsulation prepends the outer
//! IP + GRE header into the headroom; decapsulation moves `start` forward.
//! Neither copies the frame.

use super::offload::Offload;

pub struct PacketBuf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
    /// What the TAP's virtio-net header said about the frame (or will say).
    pub offload: Offload,
}

impl PacketBuf {
    /// Room for the largest outer header (IPv6 40 + GRE 8) plus slack for a
    /// virtio-net header in front of it.
    pub const HEADROOM: usize = 128;

    /// A buffer that holds frames up to `capacity` bytes after the headroom.
    pub fn new(capacity: usize) -> PacketBuf {
        PacketBuf {
            data: vec![0u8; Self::HEADROOM + capacity].into_boxed_slice(),
            start: Self::HEADROOM,
            end: Self::HEADROOM,
            offload: Offload::default(),
        }
    }

    /// A buffer holding a copy of `frame` (tests, benchmarks).
    pub fn from_frame(frame: &[u8]) -> PacketBuf {
        let mut b = PacketBuf::new(frame.len().max(2048));
        b.spare_mut()[..frame.len()].copy_from_slice(frame);
        b.set_len(frame.len());
        b
    }

    /// Empty the buffer and restore the full headroom.
    #[inline]
    pub fn reset(&mut self) {
        self.start = Self::HEADROOM;
        self.end = Self::HEADROOM;
        self.offload = Offload::default();
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The longest frame the buffer holds from where its frame starts now.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.data.len() - self.start
    }

    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Everything from the frame's start to the end of the buffer: where a
    /// read() puts a new frame, followed by [`set_len`](Self::set_len).
    #[inline]
    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..]
    }

    #[inline]
    pub fn set_len(&mut self, len: usize) {
        assert!(self.start + len <= self.data.len(), "frame longer than buffer");
        self.end = self.start + len;
    }

    /// Grow the frame by `n` bytes at the front and return them. Returns
    /// `None` if the headroom is exhausted.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        Some(&mut self.data[self.start..self.start + n])
    }

    /// Drop `n` bytes from the front and keep the next `len` bytes as the frame
    /// (an outer header and whatever trailed the inner frame).
    #[inline]
    pub fn narrow(&mut self, n: usize, len: usize) {
        assert!(n + len <= self.len(), "narrow beyond the frame");
        self.start += n;
        self.end = self.start + len;
    }

    /// Shorten the frame to `len` bytes.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn prepend_and_narrow_move_the_frame_in_place() {
        let mut b = PacketBuf::from_frame(&[1, 2, 3, 4]);
        b.prepend(2).unwrap().copy_from_slice(&[8, 9]);
        assert_eq!(b.frame(), &[8, 9, 1, 2, 3, 4]);
        b.narrow(2, 3);
        assert_eq!(b.frame(), &[1, 2, 3]);
        assert!(b.prepend(PacketBuf::HEADROOM + 1).is_none());
        b.reset();
        assert!(b.is_empty());
    }
}
