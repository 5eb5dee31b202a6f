//! An open-addressing hash table from a packed `u64` key to a small `Copy`
//! value, stored inline: a lookup touches one slot (usually one cache line),
//! and the slot of a key can be prefetched before it is needed, so a batch
//! of lookups in a table much larger than the cache overlaps its misses.
//! Linear probing, at most 70% full, built once per snapshot (no removal).

const EMPTY: u64 = u64::MAX;
/// Load factor ceiling, in tenths.
const MAX_LOAD_TENTHS: usize = 7;

#[derive(Clone, Copy)]
struct Slot<V> {
    key: u64,
    value: V,
}

pub struct IndexTable<V> {
    slots: Box<[Slot<V>]>,
    mask: usize,
    len: usize,
}

/// The 64-bit finalizer of MurmurHash3: every key bit reaches the low bits
/// the slot index is taken from.
#[inline]
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl<V: Copy + Default> Default for IndexTable<V> {
    fn default() -> Self {
        IndexTable::with_capacity(0)
    }
}

impl<V: Copy + Default> IndexTable<V> {
    /// A table that holds `n` keys without growing.
    pub fn with_capacity(n: usize) -> IndexTable<V> {
        let slots = (n * 10 / MAX_LOAD_TENTHS + 1).next_power_of_two().max(8);
        IndexTable { slots: vec![Slot { key: EMPTY, value: V::default() }; slots].into_boxed_slice(), mask: slots - 1, len: 0 }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Insert or replace; `key` must not be `u64::MAX`.
    pub fn insert(&mut self, key: u64, value: V) {
        debug_assert_ne!(key, EMPTY);
        if (self.len + 1) * 10 > self.slots.len() * MAX_LOAD_TENTHS {
            self.grow();
        }
        let mut i = mix(key) as usize & self.mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.key == key {
                slot.value = value;
                return;
            }
            if slot.key == EMPTY {
                *slot = Slot { key, value };
                self.len += 1;
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Insert unless present; returns the value now held.
    pub fn insert_if_absent(&mut self, key: u64, value: V) -> V {
        match self.get(key) {
            Some(v) => *v,
            None => {
                self.insert(key, value);
                value
            }
        }
    }

    fn grow(&mut self) {
        let mut bigger = IndexTable::with_capacity(self.slots.len() * 2 * MAX_LOAD_TENTHS / 10);
        for s in self.slots.iter().filter(|s| s.key != EMPTY) {
            bigger.insert(s.key, s.value);
        }
        *self = bigger;
    }

    #[inline]
    pub fn get(&self, key: u64) -> Option<&V> {
        let mut i = mix(key) as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.key == key {
                return Some(&slot.value);
            }
            if slot.key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Start loading the slot `key` hashes to; the lookup that follows finds
    /// it in the cache.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        let slot = &self.slots[mix(key) as usize & self.mask];
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::x86_64::_mm_prefetch(slot as *const Slot<V> as *const i8, std::arch::x86_64::_MM_HINT_T0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Bytes the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<V>>()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn holds_a_million_keys_that_differ_only_in_high_bits() {
        let mut t = IndexTable::<u32>::with_capacity(16);
        for i in 0..1_000_000u64 {
            t.insert((6000 << 32) | (0x0a00_0000 + (i << 8)), i as u32);
        }
        assert_eq!(t.len(), 1_000_000);
        for i in (0..1_000_000u64).step_by(997) {
            assert_eq!(t.get((6000 << 32) | (0x0a00_0000 + (i << 8))), Some(&(i as u32)));
        }
        assert_eq!(t.get(1), None);
        t.insert((6000 << 32) | 0x0a00_0000, 7);
        assert_eq!(t.get((6000 << 32) | 0x0a00_0000), Some(&7));
        assert_eq!(t.len(), 1_000_000);
        assert!(t.heap_bytes() <= 1_000_000 * 16 * 10 / 7 * 2);
    }
}
