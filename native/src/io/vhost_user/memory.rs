//! The guest's memory, as the front-end shares it (`SET_MEM_TABLE`): up to
//! eight regions, each a file descriptor we map. The guest can write any of
//! it at any time, so nothing here hands out a `&[u8]` into it: bytes are
//! copied in or out after a bounds check, and ring indices are read and
//! written as atomics. [`GuestSlice`] is the one type through which guest
//! memory is touched; it borrows the [`GuestMemory`] it points into, so no
//! access outlives the mapping.

use super::super::sys::*;
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU16;

/// One region as `SET_MEM_TABLE` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDesc {
    /// Where the guest sees it (descriptor addresses).
    pub guest_addr: u64,
    pub size: u64,
    /// Where the front-end has it mapped (ring addresses).
    pub user_addr: u64,
    /// Where the region starts in its file.
    pub mmap_offset: u64,
}

struct Region {
    desc: RegionDesc,
    /// The mapping: the file from 0 to the region's end.
    map: NonNull<u8>,
    map_len: usize,
}

impl Region {
    /// `len` bytes from offset `off` of the region, if they are in it.
    fn slice(&self, off: u64, len: usize) -> Option<GuestSlice<'_>> {
        if off > self.desc.size || len as u64 > self.desc.size - off {
            return None;
        }
        let at = (self.desc.mmap_offset + off) as usize;
        // SAFETY: `at + len` ≤ mmap_offset + size = map_len: inside the mapping.
        let ptr = unsafe { NonNull::new_unchecked(self.map.as_ptr().add(at)) };
        Some(GuestSlice { ptr, len, _mem: PhantomData })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are exactly what mmap returned; every
        // GuestSlice borrows the GuestMemory owning this region, so none is left.
        unsafe { munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

pub struct GuestMemory {
    regions: Vec<Region>,
}

// SAFETY: the mappings are plain shared memory; every access goes through
// GuestSlice (copies and atomics), which is as safe from several threads as
// it is against the guest writing concurrently.
unsafe impl Send for GuestMemory {}
// SAFETY: as for Send: no access assumes the memory is stable.
unsafe impl Sync for GuestMemory {}

/// Which address space an address is in.
#[derive(Clone, Copy)]
enum Space {
    Guest,
    User,
}

impl GuestMemory {
    /// At most this many regions (`VHOST_MEMORY_BASELINE_NREGIONS`).
    pub const MAX_REGIONS: usize = 8;

    /// Map every region from its file. Regions must be non-empty, end within
    /// their file (a mapping past the end of a file faults on access), and
    /// not overlap in either address space (a lookup would be ambiguous).
    pub fn map(descs: &[RegionDesc], fds: Vec<OwnedFd>) -> Result<GuestMemory, String> {
        if descs.is_empty() || descs.len() > Self::MAX_REGIONS {
            return Err(format!("{} memory regions (1..={} allowed)", descs.len(), Self::MAX_REGIONS));
        }
        if fds.len() != descs.len() {
            return Err(format!("{} memory regions but {} file descriptors", descs.len(), fds.len()));
        }
        for (i, d) in descs.iter().enumerate() {
            let end = |base: u64| base.checked_add(d.size);
            if d.size == 0 || end(d.guest_addr).is_none() || end(d.user_addr).is_none() || end(d.mmap_offset).is_none() {
                return Err(format!("memory region {i} {d:?}: empty or wraps around"));
            }
            for (j, e) in descs[..i].iter().enumerate() {
                let overlap = |a: u64, b: u64| a < b + e.size && b < a + d.size;
                if overlap(d.guest_addr, e.guest_addr) || overlap(d.user_addr, e.user_addr) {
                    return Err(format!("memory regions {j} and {i} overlap"));
                }
            }
        }
        let mut regions = Vec::with_capacity(descs.len());
        for (i, (d, fd)) in descs.iter().zip(fds).enumerate() {
            let file = File::from(fd);
            let file_len = file.metadata().map_err(|e| format!("memory region {i}: {e}"))?.len();
            let map_len = d.mmap_offset + d.size;
            if map_len > file_len || map_len > isize::MAX as u64 {
                return Err(format!("memory region {i} ends at {map_len} in a file of {file_len} bytes"));
            }
            // SAFETY: a fresh shared mapping of a file we own the descriptor
            // of; nothing else in this process refers to the address range.
            let p = unsafe {
                mmap(ptr::null_mut(), map_len as usize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, file.as_raw_fd(), 0)
            };
            if p == MAP_FAILED {
                return Err(format!("mapping memory region {i}: {}", std::io::Error::last_os_error()));
            }
            let map = NonNull::new(p.cast()).ok_or("mmap returned NULL")?;
            regions.push(Region { desc: *d, map, map_len: map_len as usize });
        }
        Ok(GuestMemory { regions })
    }

    /// The region holding `addr` and `addr`'s offset in it.
    fn find(&self, space: Space, addr: u64) -> Option<(&Region, u64)> {
        self.regions.iter().find_map(|r| {
            let base = match space {
                Space::Guest => r.desc.guest_addr,
                Space::User => r.desc.user_addr,
            };
            let off = addr.checked_sub(base)?;
            (off < r.desc.size).then_some((r, off))
        })
    }

    fn slice_in(&self, space: Space, addr: u64, len: usize) -> Option<GuestSlice<'_>> {
        let (r, off) = self.find(space, addr)?;
        r.slice(off, len)
    }

    /// `len` bytes at guest physical address `gpa`, if they lie in one region.
    pub fn slice(&self, gpa: u64, len: usize) -> Option<GuestSlice<'_>> {
        self.slice_in(Space::Guest, gpa, len)
    }

    /// `len` bytes at the front-end's address `uva` (rings are given so), if in one region.
    pub fn slice_user(&self, uva: u64, len: usize) -> Option<GuestSlice<'_>> {
        self.slice_in(Space::User, uva, len)
    }

    /// The largest piece of `[gpa, gpa + want)` that starts at `gpa` and lies in one region.
    fn piece(&self, gpa: u64, want: usize) -> Option<GuestSlice<'_>> {
        let (r, off) = self.find(Space::Guest, gpa)?;
        r.slice(off, want.min((r.desc.size - off).min(usize::MAX as u64) as usize))
    }

    /// Copy guest memory at `gpa` into `dst`, across regions if it spans
    /// several. False (with `dst` partly written) if any byte is not mapped.
    pub fn read(&self, mut gpa: u64, mut dst: &mut [u8]) -> bool {
        while !dst.is_empty() {
            let Some(s) = self.piece(gpa, dst.len()) else { return false };
            let (now, rest) = dst.split_at_mut(s.len());
            s.read(0, now);
            dst = rest;
            let Some(next) = gpa.checked_add(s.len() as u64) else { return dst.is_empty() };
            gpa = next;
        }
        true
    }

    /// Copy `src` into guest memory at `gpa`, across regions if it spans
    /// several. False (with a prefix written) if any byte is not mapped.
    pub fn write(&self, mut gpa: u64, mut src: &[u8]) -> bool {
        while !src.is_empty() {
            let Some(s) = self.piece(gpa, src.len()) else { return false };
            let (now, rest) = src.split_at(s.len());
            s.write(0, now);
            src = rest;
            let Some(next) = gpa.checked_add(s.len() as u64) else { return src.is_empty() };
            gpa = next;
        }
        true
    }
}

/// A bounds-checked window on guest memory. Copies in and out, and 16-bit
/// atomics for ring indices; never a reference to guest bytes.
#[derive(Clone, Copy)]
pub struct GuestSlice<'m> {
    ptr: NonNull<u8>,
    len: usize,
    _mem: PhantomData<&'m GuestMemory>,
}

impl<'m> GuestSlice<'m> {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `[off, off + n)` is inside.
    #[inline]
    fn holds(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|end| end <= self.len)
    }

    /// Whether the window starts at a multiple of `align` in our address space.
    pub fn aligned(&self, align: usize) -> bool {
        self.ptr.as_ptr() as usize % align == 0
    }

    /// Copy `dst.len()` bytes from `off`; false (nothing copied) if out of bounds.
    #[inline]
    pub fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.holds(off, dst.len()) {
            return false;
        }
        // SAFETY: in bounds of a live mapping (borrowed for 'm); `dst` is
        // ours and cannot overlap guest memory. The guest may write the
        // bytes meanwhile: we copy whatever is there, as the device would.
        unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copy `src` to `off`; false (nothing copied) if out of bounds.
    #[inline]
    pub fn write(&self, off: usize, src: &[u8]) -> bool {
        if !self.holds(off, src.len()) {
            return false;
        }
        // SAFETY: in bounds of a live, writable mapping; `src` is ours.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len()) };
        true
    }

    /// The 16-bit field at `off` (aligned, in bounds) as an atomic, for ring
    /// indices and flags shared with the guest.
    #[inline]
    pub fn u16_at(&self, off: usize) -> Option<&'m AtomicU16> {
        if !self.holds(off, 2) || (self.ptr.as_ptr() as usize + off) % 2 != 0 {
            return None;
        }
        // SAFETY: aligned, in bounds, and the mapping lives for 'm. Atomics
        // are the sound way to share the field with another writer.
        Some(unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::io::vhost_user::tests::memfd;

    fn dup(fd: &OwnedFd) -> OwnedFd {
        fd.try_clone().unwrap()
    }

    #[test]
    fn copies_span_regions_and_stop_at_holes() {
        let fd = memfd(0x3000);
        // Guest 0x10000.. is file 0x0..0x1000, guest 0x11000.. is file 0x2000..0x3000.
        let descs = [
            RegionDesc { guest_addr: 0x10000, size: 0x1000, user_addr: 0x7000_0000, mmap_offset: 0 },
            RegionDesc { guest_addr: 0x11000, size: 0x1000, user_addr: 0x7000_2000, mmap_offset: 0x2000 },
        ];
        let m = GuestMemory::map(&descs, vec![dup(&fd), dup(&fd)]).unwrap();
        let data: Vec<u8> = (0..64).collect();
        assert!(m.write(0x10fe0, &data), "a write across the two regions");
        let mut back = [0u8; 64];
        assert!(m.read(0x10fe0, &mut back));
        assert_eq!(&back[..], &data[..]);
        // The second half landed at file offset 0x2000, seen at user 0x7000_2000.
        let mut tail = [0u8; 32];
        assert!(m.slice_user(0x7000_2000, 32).unwrap().read(0, &mut tail));
        assert_eq!(&tail[..], &data[32..]);
        // Not a single region: no slice; past the end: no access.
        assert!(m.slice(0x10fe0, 64).is_none());
        assert!(!m.read(0x11fe0, &mut back), "runs past the last region");
        assert!(!m.write(0xfff0, &data), "starts before the first region");
        assert!(!m.read(u64::MAX - 4, &mut back), "wraps around");
        assert!(m.slice(0x10000, 0x1000).unwrap().u16_at(0xfff).is_none(), "misaligned");
        assert!(m.slice(0x10000, 0x1000).unwrap().u16_at(0x1000).is_none(), "out of bounds");
    }

    #[test]
    fn tables_that_lie_are_refused() {
        let fd = memfd(0x2000);
        let r = |guest_addr, size, mmap_offset| RegionDesc { guest_addr, size, user_addr: guest_addr, mmap_offset };
        let refused = |d: &[RegionDesc], n: usize| GuestMemory::map(d, (0..n).map(|_| dup(&fd)).collect()).is_err();
        assert!(refused(&[r(0, 0x3000, 0)], 1), "beyond the end of the file");
        assert!(refused(&[r(0, 0x1000, 0x1800)], 1), "offset + size beyond the file");
        assert!(refused(&[r(0, 0, 0)], 1), "empty");
        assert!(refused(&[r(u64::MAX - 10, 0x1000, 0)], 1), "wraps around");
        assert!(refused(&[r(0, 0x1000, 0), r(0x800, 0x1000, 0)], 2), "overlapping");
        assert!(refused(&[r(0, 0x1000, 0)], 2), "fd count differs");
        assert!(refused(&[], 0), "no regions");
        assert!(GuestMemory::map(&[r(0, 0x1000, 0), r(0x1000, 0x1000, 0x1000)], vec![dup(&fd), dup(&fd)]).is_ok());
    }
}
