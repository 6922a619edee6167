//! The fallback for processes without rseq (valgrind, rr, seccomp, old
//! kernels, `RSEQALLOC_MODE=fallback`): the same per-CPU regions, indexed by
//! `sched_getcpu`, each guarded by a try-lock instead of a critical section.
//! A thread that finds its CPU's lock taken (it was preempted or migrated
//! onto a busy CPU) goes straight to the middle end rather than wait.

use crate::cache::region::{self, LockedRegion};
use crate::middle::transfer;
use crate::platform::os;
use crate::platform::size_class::{SizeClass, MAX_BATCH};

/// Allocates an object of `class` in fallback mode.
pub fn alloc(class: SizeClass) -> *mut u8 {
    if let Some(region) = os::current_cpu().and_then(region::region) {
        let meta = region.meta();
        if let Some(locked) = region.try_lock() {
            locked.init(|| region.fence());
            if let Some(p) = locked.pop(class) {
                bump(&meta.alloc_hits);
                return p;
            }
            bump(&meta.alloc_misses);
            locked.grow(class, class.batch());
            // Declared here, not above: zeroing it costs as much as a hit.
            let mut buf = [core::ptr::null_mut(); MAX_BATCH];
            let n = transfer::TRANSFER.take(class, &mut buf[..class.batch()]);
            if n == 0 {
                return core::ptr::null_mut();
            }
            let kept = refill(&locked, class, &buf[..n - 1]);
            if kept < n - 1 {
                // SAFETY: the objects that did not fit are still ours.
                unsafe { transfer::TRANSFER.give(class, &buf[kept..n - 1]) };
            }
            return buf[n - 1];
        }
    }
    let mut one = [core::ptr::null_mut()];
    if transfer::TRANSFER.take(class, &mut one) == 1 {
        one[0]
    } else {
        core::ptr::null_mut()
    }
}

/// Frees an object of `class` in fallback mode.
///
/// # Safety
/// `p` is an allocated object of `class` that the caller gives up.
pub unsafe fn free(class: SizeClass, p: *mut u8) {
    if let Some(region) = os::current_cpu().and_then(region::region) {
        let meta = region.meta();
        if let Some(locked) = region.try_lock() {
            locked.init(|| region.fence());
            if locked.push(class, p) {
                bump(&meta.free_hits);
                return;
            }
            bump(&meta.free_misses);
            if locked.grow(class, class.batch()) > 0 && locked.push(class, p) {
                return;
            }
            let mut buf = [core::ptr::null_mut(); MAX_BATCH + 1];
            let mut n = 0;
            while n < class.batch() {
                match locked.pop(class) {
                    Some(q) => buf[n] = q,
                    None => break,
                }
                n += 1;
            }
            buf[n] = p;
            // SAFETY: the popped objects and p are free objects of class.
            return unsafe { transfer::TRANSFER.give(class, &buf[..=n]) };
        }
    }
    // SAFETY: the caller gives up p.
    unsafe { transfer::TRANSFER.give(class, &[p]) }
}

/// Pushes as many of `objects` as fit; returns how many.
fn refill(region: &LockedRegion, class: SizeClass, objects: &[*mut u8]) -> usize {
    objects.iter().take_while(|&&q| region.push(class, q)).count()
}

/// A counter bump under the region lock: a plain load and store would do,
/// but the counters are atomics because stats read them concurrently.
fn bump(counter: &core::sync::atomic::AtomicU64) {
    use core::sync::atomic::Ordering::Relaxed;
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}
