//! An open-addressing hash table from a packed `u64` key to a small `Copy`
//! value, stored inline: a lookup touches one slot (usually one cache line),
//! and the slot of a key can be prefetched before it is needed, so a batch
//! of lookups in a table much larger than the cache overlaps its misses.
//! Linear probing, at most 70% full. The slots are shared (`Arc`): a
//! snapshot that changes a few records shares its predecessor's table and
//! keeps the changes in an overlay (see `tables::Overlay`); only building
//! or merging writes, into a table nobody else holds yet.

use std::sync::Arc;

const EMPTY: u64 = u64::MAX;
/// Load factor ceiling, in tenths.
const MAX_LOAD_TENTHS: usize = 7;

#[derive(Clone, Copy)]
struct Slot<V> {
    key: u64,
    value: V,
}

#[derive(Clone)]
pub struct IndexTable<V> {
    slots: Arc<[Slot<V>]>,
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
        // Collected straight into the `Arc` (no copy of a built table).
        let slots: Arc<[Slot<V>]> = std::iter::repeat_n(Slot { key: EMPTY, value: V::default() }, slots).collect();
        IndexTable { mask: slots.len() - 1, slots, len: 0 }
    }

    /// The slots to write: the table's own, or a copy if another snapshot
    /// still shares them (then this table stops sharing).
    fn slots_mut(&mut self) -> &mut [Slot<V>] {
        Arc::make_mut(&mut self.slots)
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
        let mask = self.mask;
        let slots = self.slots_mut();
        let mut i = mix(key) as usize & mask;
        loop {
            let slot = &mut slots[i];
            if slot.key == key {
                slot.value = value;
                return;
            }
            if slot.key == EMPTY {
                *slot = Slot { key, value };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Remove `key` if present, shifting the entries of its probe run back
    /// so that every key stays reachable from its home slot.
    pub fn remove(&mut self, key: u64) {
        let mask = self.mask;
        let mut i = mix(key) as usize & mask;
        loop {
            let k = self.slots[i].key;
            if k == EMPTY {
                return;
            }
            if k == key {
                break;
            }
            i = (i + 1) & mask;
        }
        let slots = self.slots_mut();
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let k = slots[j].key;
            if k == EMPTY {
                break;
            }
            // An entry may fill the hole only if its home slot is not
            // between the hole (exclusive) and itself (inclusive), cyclically.
            let home = mix(k) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                slots[hole] = slots[j];
                hole = j;
            }
        }
        slots[hole].key = EMPTY;
        self.len -= 1;
    }

    /// Every (key, value) held, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.slots.iter().filter(|s| s.key != EMPTY).map(|s| (s.key, &s.value))
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
        // SAFETY: a prefetch is a hint; `slot` is a valid reference.
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

    /// Removal keeps every other key reachable, in a table small enough
    /// that probe runs wrap around its end.
    #[test]
    fn removes_keep_the_rest_reachable() {
        let mut t = IndexTable::<u32>::with_capacity(40);
        let mut model = std::collections::BTreeMap::new();
        let mut x = 12345u64;
        for step in 0..20_000u32 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = (x >> 33) % 48;
            if x & 1 == 0 && model.len() < 40 {
                t.insert(key, step);
                model.insert(key, step);
            } else {
                t.remove(key);
                model.remove(&key);
            }
            assert_eq!(t.len(), model.len());
            for k in 0..48 {
                assert_eq!(t.get(k), model.get(&k), "key {k} after step {step}");
            }
        }
    }

    #[test]
    fn a_shared_table_is_copied_on_write() {
        let mut a = IndexTable::<u32>::with_capacity(4);
        a.insert(1, 1);
        let b = a.clone();
        a.insert(1, 2);
        a.remove(7);
        assert_eq!((a.get(1), b.get(1)), (Some(&2), Some(&1)));
    }
}
