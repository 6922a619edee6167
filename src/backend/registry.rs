//! The set of live large blocks: lets an unsized `free` tell a large block
//! from a foreign pointer without reading memory it may not own (the header
//! at `p - 32` of a foreign pointer can be unmapped).
//!
//! ```text
//!  hash(p) = p * golden ratio
//!  shard   = top 6 bits of hash(p): 64 independent tables, one lock each
//!  slot    = linear probing from (hash(p) >> 16) & mask; 0 = empty
//! ```
//!
//! Each shard is an open-addressing table in memory from `os::map` (never
//! malloc), doubled under its own lock at half load and never shrunk;
//! removal shifts later entries back, so there are no tombstones. Large
//! blocks cost an `mmap` each, so one lock round trip is noise beside it.

use crate::platform::os;
use crate::platform::sync::{CacheLine, SpinLock};

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;
/// Slots of a shard's first table: one OS page.
const FIRST_SLOTS: usize = os::OS_PAGE / 8;

struct Table {
    /// `mask + 1` slots of block addresses; null until the first insert.
    slots: *mut usize,
    mask: usize,
    len: usize,
}

// SAFETY: the table memory is owned by the shard; its lock serialises use.
unsafe impl Send for Table {}

/// A shard per cache line: threads freeing large blocks at once take
/// different shards' locks without taking each other's line.
const _: () = assert!(core::mem::size_of::<SpinLock<Table>>() <= 64);
static TABLES: [CacheLine<SpinLock<Table>>; SHARDS] =
    [const { CacheLine(SpinLock::new(Table { slots: core::ptr::null_mut(), mask: 0, len: 0 })) }; SHARDS];

fn hash(block: usize) -> usize {
    block.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn shard(block: usize) -> &'static SpinLock<Table> {
    &TABLES[hash(block) >> (usize::BITS - SHARD_BITS)]
}

/// Records a live large block. False only if the shard is nearly full and
/// the kernel refused the memory to grow it.
pub fn insert(block: *mut u8) -> bool {
    let key = block as usize;
    let mut table = shard(key).lock();
    if (table.len + 1) * 2 > table.mask + 1 && !table.grow() && (table.len + 1) * 16 > (table.mask + 1) * 15 {
        return false;
    }
    table.put(key);
    true
}

/// Forgets a block; returns whether it was live.
pub fn remove(block: *const u8) -> bool {
    let key = block as usize;
    let mut table = shard(key).lock();
    let Some(mut hole) = table.find(key) else { return false };
    // Backward-shift deletion: move each later entry of the probe run into
    // the hole unless its home lies cyclically in (hole, j].
    let mask = table.mask;
    let mut j = hole;
    loop {
        j = (j + 1) & mask;
        let entry = table.get(j);
        if entry == 0 {
            break;
        }
        let home = table.home(entry);
        let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
        if !stays {
            table.set(hole, entry);
            hole = j;
        }
    }
    table.set(hole, 0);
    table.len -= 1;
    true
}

/// Whether `block` is a live large block.
#[cfg(any(test, feature = "capi"))]
pub fn contains(block: *const u8) -> bool {
    let key = block as usize;
    shard(key).lock().find(key).is_some()
}

/// Takes every shard lock (fork prepare).
pub fn lock_all() {
    TABLES.iter().for_each(|t| t.acquire());
}

/// Drops the locks `lock_all` took.
///
/// # Safety
/// As for `SpinLock::release`: this thread called `lock_all`.
pub unsafe fn unlock_all() {
    // SAFETY: the caller's guarantee.
    TABLES.iter().for_each(|t| unsafe { t.release() });
}

impl Table {
    fn home(&self, key: usize) -> usize {
        (hash(key) >> 16) & self.mask
    }

    fn get(&self, i: usize) -> usize {
        // SAFETY: i ≤ mask, and the table has mask + 1 slots.
        unsafe { *self.slots.add(i) }
    }

    fn set(&mut self, i: usize, key: usize) {
        // SAFETY: as in `get`; the lock makes the access exclusive.
        unsafe { *self.slots.add(i) = key }
    }

    fn find(&self, key: usize) -> Option<usize> {
        if self.slots.is_null() {
            return None;
        }
        let mut i = self.home(key);
        loop {
            match self.get(i) {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// Adds a key known to be absent; the table has a free slot.
    fn put(&mut self, key: usize) {
        let mut i = self.home(key);
        while self.get(i) != 0 {
            i = (i + 1) & self.mask;
        }
        self.set(i, key);
        self.len += 1;
    }

    /// Doubles the table (or makes the first one). False if out of memory.
    fn grow(&mut self) -> bool {
        let slots = if self.slots.is_null() { FIRST_SLOTS } else { 2 * (self.mask + 1) };
        let fresh = os::map(slots * 8) as *mut usize;
        if fresh.is_null() {
            return false;
        }
        let old = Table { slots: self.slots, mask: self.mask, len: self.len };
        *self = Table { slots: fresh, mask: slots - 1, len: 0 };
        if !old.slots.is_null() {
            (0..=old.mask).map(|i| old.get(i)).filter(|&k| k != 0).for_each(|k| self.put(k));
            // SAFETY: the old table was mapped by `grow` with this length,
            // and only this shard, whose lock we hold, refers to it.
            unsafe { os::unmap(old.slots.cast(), (old.mask + 1) * 8) };
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_and_removes_survive_growth_and_shifts() {
        // Keys shaped like large blocks: a page-aligned mapping plus 64.
        let keys: Vec<usize> = (1..20_000usize).map(|i| 0x7000_0000_0000 + (i << 12) + 64).collect();
        for &k in &keys {
            assert!(insert(k as *mut u8));
        }
        for &k in &keys {
            assert!(contains(k as *const u8));
            assert!(!contains((k + 16) as *const u8));
        }
        for &k in keys.iter().step_by(2) {
            assert!(remove(k as *const u8));
            assert!(!remove(k as *const u8), "removed twice");
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(contains(k as *const u8), i % 2 == 1, "key {i}");
        }
        for &k in keys.iter().skip(1).step_by(2) {
            assert!(remove(k as *const u8));
        }
    }
}
