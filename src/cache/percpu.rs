//! The CPU-cache policy over the regions (`region`): the inline fast paths
//! into the critical sections, what a miss does (lay the region out, count
//! the miss, grow the class by a batch, refill or flush a batch through the
//! middle end), and the remote operations others decide on: shrinking a
//! cache (the background thread's capacity moves) and draining one (idle
//! caches, `release()`).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cache::region::{self, region, ClassHeader, Region};
use crate::middle::{central, transfer};
use crate::platform::size_class::{SizeClass, MAX_BATCH};
use crate::rseq::{self, cs};

/// Caches emptied by `drain` so far.
static DRAINS: AtomicU64 = AtomicU64::new(0);

/// Allocates an object of `class`: the small entry point after its size
/// lookup, so that a hit is one tail call and a miss goes straight to the
/// front's slow-path entry (`rseqalloc_alloc_slow`), which brings the
/// allocator up and comes back to `alloc_slow` here.
#[inline(always)]
pub fn alloc(class: SizeClass) -> *mut u8 {
    // SAFETY: a class's index; the regions stay mapped once published
    // (`map_slabs`).
    unsafe { cs::rseqalloc_malloc_class(class.index()) }
}

/// Frees an object of `class`, as `alloc` does: a push on this CPU's stack,
/// else (through the front's `rseqalloc_free_slow`) `free_slow`, from one
/// tail call.
///
/// # Safety
/// `p` is an allocated object of `class` that the caller gives up.
#[inline(always)]
pub unsafe fn free(class: SizeClass, p: *mut u8) {
    // SAFETY: as in `alloc`; the caller gives up p, an object of `class`.
    unsafe { cs::rseqalloc_free_class(p, class.index()) }
}

/// Batches a refill or a flush moves at most in one trip to the middle end.
/// A stack grown past two batches has shown the class misses often on this
/// CPU: one that only allocates (or only frees) what another CPU frees (or
/// allocates) then misses every batch, and each miss costs the section's
/// retry, the region lock and a transfer-cache lock round trip whose lines
/// last sat on the other CPU. Moving up to half the stack's capacity per
/// trip, within this many batches, divides those by up to this factor; a
/// small stack (a tiny heap, a class seldom used) still moves one batch.
const MOVE_BATCHES: usize = 4;

/// Objects a refill or flush of `class` moves when its stack holds up to
/// `capacity` objects: half of that, one batch at least and `MOVE_BATCHES`
/// at most, so that the stack keeps room for the opposite direction.
fn move_size(class: SizeClass, capacity: usize) -> usize {
    (capacity / 2).clamp(class.batch(), MOVE_BATCHES * class.batch())
}

/// The stack was empty (or the thread is not registered yet): register,
/// grow the stack's capacity, and refill it (`move_size`). The caller (the
/// front's slow-path entry) brought the allocator up in an rseq mode.
#[inline]
pub fn alloc_slow(class: SizeClass) -> *mut u8 {
    let mut buf = [core::ptr::null_mut(); MOVE_BATCHES * MAX_BATCH];
    let Some(region) = rseq::current_index().and_then(region) else {
        // No usable index (registration failed): go to the middle end.
        return if transfer::TRANSFER.take(class, &mut buf[..1]) == 1 { buf[0] } else { core::ptr::null_mut() };
    };
    let capacity = prepare(region, class, true);
    // The stack may have been refilled meanwhile (another thread on this
    // CPU, or our own registration just happened): try the fast path again.
    // SAFETY: as in `alloc`.
    let p = unsafe { cs::rseqalloc_cs_pop(class.index()) };
    if !p.is_null() {
        return p;
    }
    let n = transfer::TRANSFER.take(class, &mut buf[..move_size(class, capacity)]);
    if n == 0 {
        return core::ptr::null_mut();
    }
    let rest = n - 1;
    // SAFETY: buf[..rest] are free objects of class we own.
    let pushed = unsafe { cs::rseqalloc_cs_push_batch(class.index(), buf.as_ptr(), rest) };
    if pushed < rest {
        // SAFETY: the objects the section did not take are still ours.
        unsafe { transfer::TRANSFER.give(class, &buf[pushed..rest]) };
    }
    buf[rest]
}

/// The stack was full: grow its capacity if the budget allows, else flush
/// objects (`move_size`) to the middle end. The caller (the front's
/// slow-path entry) runs in an rseq mode.
///
/// # Safety
/// `p` is an allocated object of `class` that the caller gives up.
#[inline]
pub unsafe fn free_slow(class: SizeClass, p: *mut u8) {
    let mut buf = [core::ptr::null_mut(); MOVE_BATCHES * MAX_BATCH + 1];
    if let Some(region) = rseq::current_index().and_then(region) {
        let capacity = prepare(region, class, false);
        // SAFETY: as in `free`.
        if unsafe { cs::rseqalloc_cs_push(class.index(), p) } {
            return;
        }
        // SAFETY: buf has room for `move_size` objects and one more.
        let n = unsafe { cs::rseqalloc_cs_pop_batch(class.index(), buf.as_mut_ptr(), move_size(class, capacity)) };
        buf[n] = p;
        // SAFETY: the popped objects and p are free objects of class.
        return unsafe { transfer::TRANSFER.give(class, &buf[..=n]) };
    }
    // SAFETY: the caller gives up p.
    unsafe { transfer::TRANSFER.give(class, &[p]) }
}

/// Shrinks cache `idx` while its CPU may be allocating, as
/// `LockedRegion::resize` plans it: objects above the new capacities go to
/// the middle end. Returns the bytes of budget given up.
pub fn shrink(idx: usize, plan: impl FnMut(SizeClass, ClassHeader) -> Option<usize>) -> usize {
    resize(idx, plan, |class, objects| {
        // SAFETY: resize spills objects it took out of the cache:
        // free objects of `class` that nobody else holds.
        unsafe { transfer::TRANSFER.give(class, objects) }
    })
}

/// `LockedRegion::resize` on cache `idx`, with its fence.
fn resize(
    idx: usize,
    plan: impl FnMut(SizeClass, ClassHeader) -> Option<usize>,
    spill: impl FnMut(SizeClass, &[*mut u8]),
) -> usize {
    let Some(region) = region(idx) else { return 0 };
    let meta = region.meta();
    if !meta.initialized.load(Ordering::Acquire) {
        return 0;
    }
    region.lock().resize(plan, || region.fence(), spill)
}

/// Empties cache `idx` (`shrink` to nothing) and gives its slot pages to
/// the OS: the idle drain and `release()`. Returns whether it held capacity.
pub fn drain(idx: usize) -> bool {
    // A drained cache's objects are cold: straight back to their spans, so
    // that emptied spans reach the page heap at the next decay step.
    let spill = |class, objects: &[*mut u8]| {
        // SAFETY: as in `shrink`.
        unsafe { central::CENTRAL.free_batch(class, objects) }
    };
    if resize(idx, |_, _| Some(0), spill) == 0 {
        return false;
    }
    if let Some(region) = region(idx) {
        region.lock().release_slots();
    }
    DRAINS.fetch_add(1, Ordering::Relaxed);
    true
}

/// Empties every cache (`drain`).
pub fn drain_all() {
    (0..region::ncpu()).for_each(|idx| {
        drain(idx);
    });
}

/// Caches emptied by `drain` so far.
pub fn drain_count() -> u64 {
    DRAINS.load(Ordering::Relaxed)
}

/// Slow-path preparation after a miss: lay the region out on first use,
/// count the miss (in the meta block and in the class's `aux`), and grow
/// the class's capacity by a batch if the budget allows. Returns the
/// class's capacity in objects after that.
fn prepare(region: Region, class: SizeClass, alloc_miss: bool) -> usize {
    let meta = region.meta();
    let locked = region.lock();
    locked.init(|| region.fence());
    let counter = if alloc_miss { &meta.alloc_misses } else { &meta.free_misses };
    counter.fetch_add(1, Ordering::Relaxed);
    locked.note_miss(class);
    locked.grow(class, class.batch());
    locked.capacity(class)
}
