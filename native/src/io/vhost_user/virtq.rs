//! The split virtqueue (virtio 1.x §2.7) as a device uses it, over guest
//! memory the guest may rewrite at any moment. The ring's three parts are
//! checked once per batch to lie in guest memory ([`Ring::new`]); every
//! index read from the guest is checked before use; a chain is walked at
//! most as many steps as its table has entries; every buffer it names is
//! bounds-checked by [`GuestMemory`] on each copy. A chain that breaks a
//! rule is the guest's bad frame ([`Fault`]); a ring whose indices lie
//! cannot be used further ([`Broken`]).
//!
//! Ordering: the available index is loaded with Acquire (the entries and
//! descriptors the guest wrote before it are then visible); the used index
//! is stored with Release (our used entries and buffer contents before it);
//! a SeqCst fence separates publishing from reading the guest's
//! notification wishes, and asking for kicks from re-reading the index.

use super::memory::{GuestMemory, GuestSlice};
use super::net::{F_EVENT_IDX, F_INDIRECT_DESC};
use std::sync::atomic::{fence, AtomicU16, Ordering};

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// In the used ring's flags: "don't kick me".
const USED_F_NO_NOTIFY: u16 = 1;
/// In the available ring's flags: "don't interrupt me".
const AVAIL_F_NO_INTERRUPT: u16 = 1;

const DESC_LEN: usize = 16;
const USED_ELEM_LEN: usize = 8;
/// The largest queue the split ring allows.
pub const MAX_SIZE: u32 = 32768;

/// Where the front-end put the ring's parts (its own addresses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingAddrs {
    pub desc: u64,
    pub used: u64,
    pub avail: u64,
}

/// Why a chain was given up; the frame it held or was to hold is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A descriptor outside guest memory, pointing the wrong way, naming a
    /// `next` beyond its table, or a bad indirect table.
    BadDescriptor,
    /// More descriptors than its table holds: a loop.
    Loop,
    /// A frame from the guest larger than the buffer it is read into.
    Oversized,
    /// A chain from the guest shorter than the virtio-net header.
    Short,
}

/// The ring's indices lie (the available index ran more than a queue ahead,
/// a head beyond the table): nothing more can be taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

/// A queue size the split ring allows: a power of 2 up to 32768.
pub fn valid_size(n: u32) -> bool {
    n.is_power_of_two() && n <= MAX_SIZE
}

#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// One queue's ring, translated for one batch.
pub struct Ring<'m> {
    mem: &'m GuestMemory,
    desc: GuestSlice<'m>,
    avail: GuestSlice<'m>,
    used: GuestSlice<'m>,
    avail_flags: &'m AtomicU16,
    avail_idx: &'m AtomicU16,
    /// After the available ring's entries (EVENT_IDX): interrupt me when used passes it.
    used_event: &'m AtomicU16,
    used_flags: &'m AtomicU16,
    used_idx: &'m AtomicU16,
    /// After the used ring's entries (EVENT_IDX): kick me when available passes it.
    avail_event: &'m AtomicU16,
    size: u16,
    event_idx: bool,
    indirect: bool,
}

impl<'m> Ring<'m> {
    /// The ring of `size` entries at `addrs` if all of it lies, aligned as
    /// the spec requires, in guest memory (each part within one region).
    pub fn new(mem: &'m GuestMemory, size: u16, addrs: &RingAddrs, features: u64) -> Option<Ring<'m>> {
        if !valid_size(size as u32) {
            return None;
        }
        let n = size as usize;
        let desc = mem.slice_user(addrs.desc, DESC_LEN * n).filter(|s| s.aligned(16))?;
        let avail = mem.slice_user(addrs.avail, 6 + 2 * n).filter(|s| s.aligned(2))?;
        let used = mem.slice_user(addrs.used, 6 + USED_ELEM_LEN * n).filter(|s| s.aligned(4))?;
        Some(Ring {
            mem,
            desc,
            avail,
            used,
            avail_flags: avail.u16_at(0)?,
            avail_idx: avail.u16_at(2)?,
            used_event: avail.u16_at(4 + 2 * n)?,
            used_flags: used.u16_at(0)?,
            used_idx: used.u16_at(2)?,
            avail_event: used.u16_at(4 + USED_ELEM_LEN * n)?,
            size,
            event_idx: features & F_EVENT_IDX != 0,
            indirect: features & F_INDIRECT_DESC != 0,
        })
    }

    #[inline]
    fn avail_idx(&self) -> u16 {
        u16::from_le(self.avail_idx.load(Ordering::Acquire))
    }

    /// The used index in guest memory (where a (re)started ring resumes).
    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.used_idx.load(Ordering::Acquire))
    }

    #[inline]
    fn slot(&self, idx: u16) -> usize {
        (idx & (self.size - 1)) as usize
    }

    #[inline]
    fn avail_entry(&self, idx: u16) -> u16 {
        let mut b = [0u8; 2];
        let ok = self.avail.read(4 + 2 * self.slot(idx), &mut b);
        debug_assert!(ok, "Ring::new checked the available ring's length");
        u16::from_le_bytes(b)
    }

    #[inline]
    fn write_used(&self, idx: u16, id: u16, len: u32) {
        let mut e = [0u8; USED_ELEM_LEN];
        e[..4].copy_from_slice(&(id as u32).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        let ok = self.used.write(4 + USED_ELEM_LEN * self.slot(idx), &e);
        debug_assert!(ok, "Ring::new checked the used ring's length");
    }

    #[inline]
    fn set_used_len(&self, idx: u16, len: u32) {
        let ok = self.used.write(4 + USED_ELEM_LEN * self.slot(idx) + 4, &len.to_le_bytes());
        debug_assert!(ok, "Ring::new checked the used ring's length");
    }

    /// The descriptors of the chain at `head`: through its indirect table
    /// if the head names one (only as the whole chain, and only if
    /// negotiated), else through the ring's table.
    fn chain(&self, head: u16) -> Result<Chain<'m>, Fault> {
        let d = read_desc(&self.desc, head).ok_or(Fault::BadDescriptor)?;
        if d.flags & DESC_F_INDIRECT == 0 {
            return Ok(Chain { table: self.desc, entries: self.size as u32, next: Some(head), seen: 0, head: Some(d) });
        }
        let entries = d.len as usize / DESC_LEN;
        if !self.indirect || d.flags & DESC_F_NEXT != 0 || d.len as usize % DESC_LEN != 0 || entries == 0 || entries > self.size as usize {
            return Err(Fault::BadDescriptor);
        }
        let table = self.mem.slice(d.addr, d.len as usize).ok_or(Fault::BadDescriptor)?;
        Ok(Chain { table, entries: entries as u32, next: Some(0), seen: 0, head: None })
    }

    /// Read the chain at `head` (device-readable buffers only) as one byte
    /// stream: the first `hdr.len()` bytes into `hdr`, the rest into
    /// `frame`. Returns the frame's length.
    pub fn read_chain(&self, head: u16, hdr: &mut [u8], frame: &mut [u8]) -> Result<usize, Fault> {
        let mut pos = 0;
        let mut chain = self.chain(head)?;
        while let Some(d) = chain.next_desc()? {
            if d.flags & DESC_F_WRITE != 0 {
                return Err(Fault::BadDescriptor);
            }
            let (mut addr, mut len) = (d.addr, d.len as usize);
            if pos < hdr.len() {
                let n = len.min(hdr.len() - pos);
                if !self.mem.read(addr, &mut hdr[pos..pos + n]) {
                    return Err(Fault::BadDescriptor);
                }
                pos += n;
                len -= n;
                addr = addr.wrapping_add(n as u64);
            }
            if len > 0 {
                let at = pos - hdr.len();
                let dst = frame.get_mut(at..at + len).ok_or(Fault::Oversized)?;
                if !self.mem.read(addr, dst) {
                    return Err(Fault::BadDescriptor);
                }
                pos += len;
            }
        }
        pos.checked_sub(hdr.len()).ok_or(Fault::Short)
    }

    /// Write from `src` into the chain at `head` (device-writable buffers
    /// only) until the chain is full or `src` is done. Returns the bytes
    /// written; `src` remembers where in guest memory its `mark`ed bytes went.
    fn write_chain(&self, head: u16, src: &mut Stream) -> Result<u32, Fault> {
        let mut written = 0u32;
        let mut chain = self.chain(head)?;
        while !src.done() {
            let Some(d) = chain.next_desc()? else { break };
            if d.flags & DESC_F_WRITE == 0 {
                return Err(Fault::BadDescriptor);
            }
            let (mut addr, mut room) = (d.addr, d.len as usize);
            while room > 0 && !src.done() {
                let chunk = src.chunk(room);
                src.note(addr, chunk.len());
                if !self.mem.write(addr, chunk) {
                    return Err(Fault::BadDescriptor);
                }
                src.advance(chunk.len());
                addr = addr.wrapping_add(chunk.len() as u64);
                room -= chunk.len();
                written += chunk.len() as u32;
            }
        }
        Ok(written)
    }
}

fn read_desc(table: &GuestSlice, i: u16) -> Option<Desc> {
    let mut b = [0u8; DESC_LEN];
    if !table.read(i as usize * DESC_LEN, &mut b) {
        return None;
    }
    Some(Desc {
        addr: u64::from_le_bytes(b[..8].try_into().unwrap()),
        len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// Walks a chain through one table, at most `entries` steps.
struct Chain<'m> {
    table: GuestSlice<'m>,
    entries: u32,
    next: Option<u16>,
    seen: u32,
    /// The first descriptor, when already read.
    head: Option<Desc>,
}

impl Chain<'_> {
    fn next_desc(&mut self) -> Result<Option<Desc>, Fault> {
        let Some(i) = self.next.take() else { return Ok(None) };
        if i as u32 >= self.entries {
            return Err(Fault::BadDescriptor);
        }
        self.seen += 1;
        if self.seen > self.entries {
            return Err(Fault::Loop);
        }
        let d = match self.head.take() {
            Some(d) => d,
            None => read_desc(&self.table, i).ok_or(Fault::BadDescriptor)?,
        };
        if d.flags & DESC_F_INDIRECT != 0 {
            return Err(Fault::BadDescriptor); // nested, or inside a chain
        }
        if d.flags & DESC_F_NEXT != 0 {
            self.next = Some(d.next);
        }
        Ok(Some(d))
    }
}

/// Bytes to write into a guest's buffers: up to four pieces in a row (a
/// header, a frame, perhaps cut around a checksum we finish). Remembers
/// where the bytes at stream offsets `mark`, `mark + 1` landed.
pub struct Stream<'a> {
    parts: [&'a [u8]; 4],
    part: usize,
    off: usize,
    pos: usize,
    mark: usize,
    pub marked: [Option<u64>; 2],
}

impl<'a> Stream<'a> {
    pub fn new(parts: [&'a [u8]; 4], mark: usize) -> Stream<'a> {
        let mut s = Stream { parts, part: 0, off: 0, pos: 0, mark, marked: [None; 2] };
        s.skip_empty();
        s
    }

    fn skip_empty(&mut self) {
        while self.part < self.parts.len() && self.off == self.parts[self.part].len() {
            self.part += 1;
            self.off = 0;
        }
    }

    fn done(&self) -> bool {
        self.part == self.parts.len()
    }

    fn chunk(&self, max: usize) -> &'a [u8] {
        let p = self.parts[self.part];
        &p[self.off..p.len().min(self.off + max)]
    }

    /// `n` bytes at the current position go to guest address `addr`.
    fn note(&mut self, addr: u64, n: usize) {
        for k in 0..2 {
            let at = self.mark + k;
            if (self.pos..self.pos + n).contains(&at) {
                self.marked[k] = Some(addr.wrapping_add((at - self.pos) as u64));
            }
        }
    }

    fn advance(&mut self, n: usize) {
        self.off += n;
        self.pos += n;
        self.skip_empty();
    }
}

/// Why a frame could not be put into the guest's receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Not enough buffers available.
    NoRoom,
    /// Larger than one chain holds, without mergeable buffers.
    TooLarge,
    Fault(Fault),
    Broken,
}

/// Our side of one queue: where we are in the rings, and what we last
/// told or heard from the guest. Lives with the queue, used under its lock.
#[derive(Debug, Default)]
pub struct Cursor {
    /// The next available entry to take.
    last_avail: u16,
    /// The available index as last read.
    avail_seen: u16,
    /// The used index as written (entries may be ahead of what is published).
    used: u16,
    published: u16,
    /// The used index when we last decided whether to interrupt.
    signalled: u16,
    /// Whether the guest is asked to kick.
    kicks: bool,
}

impl Cursor {
    /// Resume a (re)started ring: take from `base`, complete after what the
    /// guest's used index says. `kicks`: whether to ask the guest to kick.
    pub fn start(ring: &Ring, base: u16, kicks: bool) -> Cursor {
        let used = ring.used_idx();
        let mut c = Cursor { last_avail: base, avail_seen: base, used, published: used, signalled: used, kicks: !kicks };
        c.set_kicks(ring, kicks);
        c
    }

    /// Where the next `start` resumes (`GET_VRING_BASE`).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// Whether the guest has made buffers available that we have not taken.
    pub fn pending(&mut self, ring: &Ring) -> Result<bool, Broken> {
        if self.avail_seen == self.last_avail {
            self.avail_seen = ring.avail_idx();
            if self.avail_seen.wrapping_sub(self.last_avail) > ring.size {
                return Err(Broken);
            }
        }
        Ok(self.avail_seen != self.last_avail)
    }

    /// Take the next available chain's head, if any.
    pub fn take(&mut self, ring: &Ring) -> Result<Option<u16>, Broken> {
        if !self.pending(ring)? {
            return Ok(None);
        }
        let head = ring.avail_entry(self.last_avail);
        if head >= ring.size {
            return Err(Broken);
        }
        self.last_avail = self.last_avail.wrapping_add(1);
        Ok(Some(head))
    }

    /// Hand a chain back to the guest, `len` bytes written into it.
    pub fn give_back(&mut self, ring: &Ring, head: u16, len: u32) {
        ring.write_used(self.used, head, len);
        self.used = self.used.wrapping_add(1);
    }

    /// Make the used entries written so far visible to the guest.
    pub fn publish(&mut self, ring: &Ring) {
        if self.used != self.published {
            ring.used_idx.store(self.used.to_le(), Ordering::Release);
            self.published = self.used;
        }
    }

    /// Whether the guest wants an interrupt for what was published since
    /// the last time this was asked (EVENT_IDX: if the used index passed
    /// the event it set; else unless it said "no interrupts").
    pub fn wants_interrupt(&mut self, ring: &Ring) -> bool {
        let (old, new) = (self.signalled, self.published);
        if old == new {
            return false;
        }
        self.signalled = new;
        fence(Ordering::SeqCst);
        if ring.event_idx {
            let event = u16::from_le(ring.used_event.load(Ordering::Relaxed));
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            u16::from_le(ring.avail_flags.load(Ordering::Relaxed)) & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Ask the guest to kick when it makes buffers available, or not to.
    /// With EVENT_IDX, asking means "after the entry I take next".
    pub fn set_kicks(&mut self, ring: &Ring, on: bool) {
        if ring.event_idx {
            if on {
                ring.avail_event.store(self.last_avail.to_le(), Ordering::Relaxed);
            }
        } else if on != self.kicks {
            ring.used_flags.store(if on { 0 } else { USED_F_NO_NOTIFY.to_le() }, Ordering::Relaxed);
        }
        self.kicks = on;
    }

    pub fn kicks(&self) -> bool {
        self.kicks
    }

    /// After asking for kicks: whether buffers came meanwhile (then no
    /// kick may come for them, and they must be taken now).
    pub fn pending_after_asking(&mut self, ring: &Ring) -> Result<bool, Broken> {
        fence(Ordering::SeqCst);
        self.avail_seen = self.last_avail;
        self.pending(ring)
    }

    /// Put `src` into the guest's receive ring: into one chain, or with
    /// `mergeable` into as many as it takes, the count going into the
    /// header's `num_buffers` (stream offset `src.mark`). Nothing is taken
    /// if the frame does not fit; chains are given back (empty) if the
    /// guest's descriptors are bad. Entries are written, not published.
    pub fn push(&mut self, ring: &Ring, src: &mut Stream, mergeable: bool) -> Result<(), PushError> {
        let (first_avail, first_used) = (self.last_avail, self.used);
        let rollback = |c: &mut Cursor, e: PushError| {
            c.last_avail = first_avail;
            c.used = first_used;
            Err(e)
        };
        let mut chains: u16 = 0;
        while !src.done() {
            if chains > 0 && !mergeable {
                return rollback(self, PushError::TooLarge);
            }
            let head = match self.take(ring) {
                Err(Broken) => return Err(PushError::Broken),
                Ok(None) => return rollback(self, PushError::NoRoom),
                Ok(Some(h)) => h,
            };
            match ring.write_chain(head, src) {
                Ok(n) => self.give_back(ring, head, n),
                Err(f) => {
                    // A part-frame must not reach the guest: every chain
                    // taken for it goes back empty.
                    let mut i = first_used;
                    while i != self.used {
                        ring.set_used_len(i, 0);
                        i = i.wrapping_add(1);
                    }
                    self.give_back(ring, head, 0);
                    return Err(PushError::Fault(f));
                }
            }
            chains += 1;
        }
        if chains > 1 {
            for (at, b) in src.marked.iter().zip(chains.to_le_bytes()) {
                if let Some(at) = at {
                    ring.mem.write(*at, &[b]);
                }
            }
        }
        Ok(())
    }
}
