//! Medium blocks, above `MAX_SMALL` up to `MAX_MEDIUM`: each is a run of
//! whole 64 KiB granules from the arena's page heap, so allocating and
//! freeing one is a lock and a few bitmap operations, no system call, and its
//! pages stay resident for the next block until the decay or `release()`
//! gives them back.
//!
//! ```text
//!  class map:  | HEAD+n | BODY | BODY | ... |   (n granules, n ≤ 16)
//!  block:      ^ granule_base(g): the block starts the run, so it is
//!                aligned to 64 KiB (more on request, up to MAX_MEDIUM)
//! ```
//!
//! Why 1 MiB: a run at most half a chunk long still fits where a chunk is
//! half free, so medium blocks do not force a fresh chunk per block; and at
//! 1 MiB the page faults and zeroing of a new block cost more than the
//! `mmap`/`munmap` pair they save, so larger blocks lose little by being
//! mapped (`large`, which also keeps a few freed mappings for reuse).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::page_heap::{PageHeap, HEAP};
use crate::backend::pagemap::{RunAt, CHUNK_GRANULES, GRANULE};
use crate::platform::zero::clear_for_writer;

/// The largest medium block (and the largest alignment a medium run honours).
pub const MAX_MEDIUM: usize = 1 << 20;
const _: () = assert!(MAX_MEDIUM / GRANULE <= CHUNK_GRANULES / 2);

/// What a new block is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Any contents.
    Plain,
    /// Its bytes must read as zero (`alloc_zeroed`, `calloc`).
    Zeroed,
    /// A `realloc` moves a growing block here: place it where it can go on
    /// growing in place (room for a whole `MAX_MEDIUM` run after its start).
    Growing,
}

/// Medium blocks from one page heap.
pub struct MediumRuns<'h> {
    heap: &'h PageHeap,
    /// Bytes of live medium runs (whole granules).
    in_use: AtomicU64,
}

/// The process's medium blocks.
pub static MEDIUM: MediumRuns<'static> = MediumRuns::new(&HEAP);

/// Whether a block of `size` bytes at `align` is served here (the caller has
/// ruled out the size classes).
#[inline]
pub fn fits(size: usize, align: usize) -> bool {
    size <= MAX_MEDIUM && align <= MAX_MEDIUM
}

fn granules(size: usize) -> usize {
    size.div_ceil(GRANULE).max(1)
}

impl<'h> MediumRuns<'h> {
    /// No blocks yet, taking runs from `heap`.
    pub const fn new(heap: &'h PageHeap) -> MediumRuns<'h> {
        MediumRuns { heap, in_use: AtomicU64::new(0) }
    }

    /// Takes a run for `size` bytes at `align` (as `fits`) for `intent`; a
    /// zeroed block's first `size` bytes are written only where granules may be
    /// dirty. The caller brought the allocator up. Null if the arena is exhausted
    /// (the caller maps instead).
    pub fn alloc(&self, size: usize, align: usize, intent: Intent) -> *mut u8 {
        debug_assert!(fits(size, align));
        let n = granules(size);
        let room = if intent == Intent::Growing { MAX_MEDIUM / GRANULE } else { n };
        let Some((g, clean)) = self.heap.alloc_run(n, granules(align), room) else {
            return core::ptr::null_mut();
        };
        self.in_use.fetch_add((n * GRANULE) as u64, Ordering::Relaxed);
        let block = self.heap.map().granule_base(g);
        if intent == Intent::Zeroed {
            // SAFETY: the run was just taken for us and is n granules long.
            unsafe { zero_dirty(block, size, !clean & (((1u64 << n) - 1) as u32)) };
        }
        block
    }

    /// Frees `p` if it starts a live medium run; returns false, touching
    /// nothing, if it does not (re-checked under the page heap lock, so two
    /// frees of one block cannot both succeed).
    ///
    /// # Safety
    /// If `p` starts a live run, the caller gives the block up.
    pub unsafe fn free(&self, p: *mut u8) -> bool {
        if !matches!(self.heap.map().run_at(p), RunAt::Start { .. }) {
            return false;
        }
        // SAFETY: the caller's guarantee passes on.
        match unsafe { self.heap.free_run(p) } {
            Some(n) => {
                self.in_use.fetch_sub((n * GRANULE) as u64, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The usable size of the live run starting at `p` (whole granules), or
    /// None if `p` starts no run. Anyone may ask; only the owner's answer is firm.
    #[inline]
    pub fn usable_size(&self, p: *const u8) -> Option<usize> {
        match self.heap.map().run_at(p) {
            RunAt::Start { n, .. } => Some(n * GRANULE),
            _ => None,
        }
    }

    /// Whether `p` points inside a medium run but not at its start (a
    /// diagnostic's reason).
    #[cfg(any(test, feature = "capi"))]
    pub fn is_interior(&self, p: *const u8) -> bool {
        self.heap.map().run_at(p) == RunAt::Inside
    }

    /// Resizes the medium block `p` in place to hold `new_size` (> MAX_SMALL,
    /// ≤ MAX_MEDIUM) bytes: a shrink frees the run's tail, a growth takes the
    /// free granules after it. Returns false, leaving the block alone, when the
    /// neighbours are taken (the caller then moves the block).
    ///
    /// # Safety
    /// `p` is a live medium block owned by the caller.
    pub unsafe fn resize(&self, p: *mut u8, new_size: usize) -> bool {
        let RunAt::Start { g, n } = self.heap.map().run_at(p) else { return false };
        let m = granules(new_size);
        // SAFETY: the caller owns the live run.
        if m == n || unsafe { self.heap.resize_run(g, n, m) } {
            self.in_use.fetch_add(((m * GRANULE) as u64).wrapping_sub((n * GRANULE) as u64), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Bytes of live medium runs.
    pub fn in_use_bytes(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }
}

/// Zeroes the first `size` bytes of the run at `block`, in the granules
/// whose bits are set in `dirty`, with stores: a dirty granule's pages are
/// resident, and a program that asks for zeroed memory writes it next, so
/// clearing it here costs one pass over cached memory where dropping the
/// pages (`madvise`) would cost a system call and then a fault and a kernel
/// clear of every page written (glibc's `calloc` also clears reused memory
/// with `memset`; clean granules, never written or given back, are skipped).
/// The highest dirty granules go first, so that the block's start is what
/// the clear leaves cached for the program's first writes (`zero`).
///
/// # Safety
/// The caller owns the run, and it covers `size` bytes and every bit of `dirty`.
unsafe fn zero_dirty(block: *mut u8, size: usize, mut dirty: u32) {
    while dirty != 0 {
        // The highest stretch of set bits: granules [start, end).
        let end = (u32::BITS - dirty.leading_zeros()) as usize;
        let start = end - (dirty << (u32::BITS as usize - end)).leading_ones() as usize;
        dirty &= ((1u64 << start) - 1) as u32;
        let (from, to) = (start * GRANULE, (end * GRANULE).min(size));
        if from < to {
            // SAFETY: [from, to) lies inside the caller's run.
            unsafe { clear_for_writer(block.add(from), to - from) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::page_heap::tests::test_heap;

    #[test]
    fn a_run_splits_its_tail_off_and_merges_it_back() {
        let heap = test_heap();
        let medium = MediumRuns::new(&heap);
        let p = medium.alloc(3 * GRANULE + 1, 16, Intent::Plain);
        assert!(!p.is_null());
        assert_eq!(p as usize % GRANULE, 0);
        assert_eq!((medium.usable_size(p), medium.in_use_bytes()), (Some(4 * GRANULE), 4 * GRANULE as u64));
        assert!(medium.is_interior(p.wrapping_add(GRANULE)) && !medium.is_interior(p));
        assert_eq!(medium.usable_size(p.wrapping_add(GRANULE)), None);

        // SAFETY: p is our live block.
        assert!(unsafe { medium.resize(p, GRANULE) }, "a shrink always succeeds");
        assert_eq!((medium.usable_size(p), medium.in_use_bytes()), (Some(GRANULE), GRANULE as u64));
        let q = medium.alloc(2 * GRANULE, 16, Intent::Plain);
        assert_eq!(q, p.wrapping_add(GRANULE), "the split-off tail serves the next block");
        // SAFETY: p is ours; q sits right after it.
        assert!(!unsafe { medium.resize(p, 2 * GRANULE) }, "no growth over a live neighbour");
        // SAFETY: q is ours, freed once.
        assert!(unsafe { medium.free(q) });
        // SAFETY: p is ours.
        assert!(unsafe { medium.resize(p, MAX_MEDIUM) }, "the freed neighbours merge into p");
        assert_eq!((medium.usable_size(p), medium.in_use_bytes()), (Some(MAX_MEDIUM), MAX_MEDIUM as u64));
        // SAFETY: p is ours; the second free must be refused.
        unsafe {
            assert!(medium.free(p));
            assert!(!medium.free(p), "freed twice");
        }
        assert_eq!(medium.in_use_bytes(), 0);
        assert_eq!(medium.usable_size(p), None);
    }

    #[test]
    fn zeroed_blocks_read_as_zero_even_over_dirty_granules() {
        let heap = test_heap();
        let medium = MediumRuns::new(&heap);
        let size = 2 * GRANULE + 100;
        let p = medium.alloc(size, 16, Intent::Plain);
        // SAFETY: p is our block of at least `size` bytes.
        unsafe { core::ptr::write_bytes(p, 0xEE, size) };
        // SAFETY: p is ours, freed once.
        assert!(unsafe { medium.free(p) });
        let z = medium.alloc(size, 16, Intent::Zeroed);
        assert_eq!(z, p, "the dirty run is reused");
        // SAFETY: z is our block of at least `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(z, size) };
        assert!(bytes.iter().all(|&b| b == 0));
        // SAFETY: z is ours.
        assert!(unsafe { medium.free(z) });
    }

    #[test]
    fn only_dirty_granules_below_the_size_are_cleared() {
        let mut run = std::vec![0xEEu8; 6 * GRANULE];
        let size = 4 * GRANULE + 5;
        // Granules 0 and 2 to 5 dirty (4 ends at `size`, 5 lies past it), 1 clean.
        // SAFETY: the buffer covers six granules.
        unsafe { zero_dirty(run.as_mut_ptr(), size, 0b11_1101) };
        let granule = |g: usize| &run[g * GRANULE..(g + 1) * GRANULE];
        assert!(granule(0).iter().all(|&b| b == 0));
        assert!(granule(1).iter().all(|&b| b == 0xEE), "a clean granule is left alone");
        assert!(run[2 * GRANULE..size].iter().all(|&b| b == 0));
        assert!(run[size..].iter().all(|&b| b == 0xEE), "nothing past the size");
    }

    #[test]
    fn a_growing_block_is_placed_where_it_can_grow_and_alignment_is_kept() {
        let heap = test_heap();
        let medium = MediumRuns::new(&heap);
        let small = medium.alloc(GRANULE, 16, Intent::Plain);
        let growing = medium.alloc(GRANULE, 16, Intent::Growing);
        // SAFETY: `growing` is ours.
        assert!(unsafe { medium.resize(growing, MAX_MEDIUM) }, "room for a whole MAX_MEDIUM run was left");
        let aligned = medium.alloc(GRANULE, 8 * GRANULE, Intent::Plain);
        assert_eq!(aligned as usize % (8 * GRANULE), 0);
        // SAFETY: all three are ours, freed once.
        unsafe { assert!(medium.free(small) && medium.free(growing) && medium.free(aligned)) };
        assert_eq!(medium.in_use_bytes(), 0);
    }
}
