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

use crate::backend::pagemap::{self, RunAt, GRANULE};

/// The largest medium block (and the largest alignment a medium run honours).
pub const MAX_MEDIUM: usize = 1 << 20;
const _: () = assert!(MAX_MEDIUM / GRANULE <= pagemap::CHUNK_GRANULES / 2);

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

/// Bytes of live medium runs (whole granules).
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// Whether a block of `size` bytes at `align` is served here (the caller has
/// ruled out the size classes).
#[inline]
pub fn fits(size: usize, align: usize) -> bool {
    size <= MAX_MEDIUM && align <= MAX_MEDIUM
}

fn granules(size: usize) -> usize {
    size.div_ceil(GRANULE).max(1)
}

/// Takes a run for `size` bytes at `align` (as `fits`) for `intent`; a
/// zeroed block's first `size` bytes are written only where granules may be
/// dirty. The caller brought the allocator up. Null if the arena is exhausted
/// (the caller maps instead).
pub fn alloc(size: usize, align: usize, intent: Intent) -> *mut u8 {
    debug_assert!(fits(size, align));
    let n = granules(size);
    let room = if intent == Intent::Growing { MAX_MEDIUM / GRANULE } else { n };
    let Some((g, clean)) = pagemap::alloc_run(n, granules(align), room) else {
        return core::ptr::null_mut();
    };
    IN_USE.fetch_add((n * GRANULE) as u64, Ordering::Relaxed);
    let block = pagemap::granule_base(g);
    if intent == Intent::Zeroed {
        // SAFETY: the run was just taken for us and is n granules long.
        unsafe { zero_dirty(block, size, !clean & (((1u64 << n) - 1) as u32)) };
    }
    block
}

/// Zeroes the first `size` bytes of the run at `block`, in the granules
/// whose bits are set in `dirty`, with stores: a dirty granule's pages are
/// resident, and a program that asks for zeroed memory writes it next, so
/// clearing it here costs one pass over cached memory where dropping the
/// pages (`madvise`) would cost a system call and then a fault and a kernel
/// clear of every page written (glibc's `calloc` also clears reused memory
/// with `memset`; clean granules, never written or given back, are skipped).
///
/// # Safety
/// The caller owns the run, and it covers `size` bytes and every bit of `dirty`.
unsafe fn zero_dirty(block: *mut u8, size: usize, mut dirty: u32) {
    while dirty != 0 {
        let start = dirty.trailing_zeros() as usize;
        let len = (dirty >> start).trailing_ones() as usize;
        dirty &= !((((1u64 << len) - 1) as u32) << start);
        let (from, end) = (start * GRANULE, (start + len) * GRANULE);
        let to = end.min(size);
        if from >= to {
            break;
        }
        // SAFETY: [from, to) lies inside the caller's run.
        unsafe { core::ptr::write_bytes(block.add(from), 0, to - from) };
    }
}

/// Frees `p` if it starts a live medium run; returns false, touching
/// nothing, if it does not (re-checked under the page heap lock, so two
/// frees of one block cannot both succeed).
///
/// # Safety
/// If `p` starts a live run, the caller gives the block up.
pub unsafe fn free(p: *mut u8) -> bool {
    if !matches!(pagemap::run_at(p), RunAt::Start { .. }) {
        return false;
    }
    // SAFETY: the caller's guarantee passes on.
    match unsafe { pagemap::free_run(p) } {
        Some(n) => {
            IN_USE.fetch_sub((n * GRANULE) as u64, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// The usable size of the live run starting at `p` (whole granules), or
/// None if `p` starts no run. Anyone may ask; only the owner's answer is firm.
#[inline]
pub fn usable_size(p: *const u8) -> Option<usize> {
    match pagemap::run_at(p) {
        RunAt::Start { n, .. } => Some(n * GRANULE),
        _ => None,
    }
}

/// Whether `p` points inside a medium run but not at its start (a
/// diagnostic's reason).
#[cfg(feature = "capi")]
pub fn is_interior(p: *const u8) -> bool {
    pagemap::run_at(p) == RunAt::Inside
}

/// Resizes the medium block `p` in place to hold `new_size` (> MAX_SMALL,
/// ≤ MAX_MEDIUM) bytes: a shrink frees the run's tail, a growth takes the
/// free granules after it. Returns false, leaving the block alone, when the
/// neighbours are taken (the caller then moves the block).
///
/// # Safety
/// `p` is a live medium block owned by the caller.
pub unsafe fn resize(p: *mut u8, new_size: usize) -> bool {
    let RunAt::Start { g, n } = pagemap::run_at(p) else { return false };
    let m = granules(new_size);
    // SAFETY: the caller owns the live run.
    if m == n || unsafe { pagemap::resize_run(g, n, m) } {
        IN_USE.fetch_add(((m * GRANULE) as u64).wrapping_sub((n * GRANULE) as u64), Ordering::Relaxed);
        return true;
    }
    false
}

/// Bytes of live medium runs.
pub fn in_use_bytes() -> u64 {
    IN_USE.load(Ordering::Relaxed)
}
