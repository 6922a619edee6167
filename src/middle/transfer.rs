//! The middle end: per size class, a bounded stack of free objects that CPU
//! caches refill from and flush to in batches, one lock round trip per batch.
//! A CPU that only frees and one that only allocates meet here without
//! touching the spans; overflow goes to the central slab, underflow comes
//! from it.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::middle::central;
use crate::platform::size_class::{SizeClass, MAX_BATCH, NUM_CLASSES};
use crate::platform::sync::SpinLock;

/// Batches each class's transfer cache holds at most.
const BATCHES: usize = 16;
const SLOTS: usize = BATCHES * MAX_BATCH;

struct TransferCache {
    len: usize,
    /// The fewest objects held since the last `plunder`: that many sat idle.
    low: usize,
    slots: [*mut u8; SLOTS],
}

// SAFETY: the pointers are free objects owned by the cache; the lock
// serialises every access.
unsafe impl Send for TransferCache {}

static CACHES: [SpinLock<TransferCache>; NUM_CLASSES] =
    [const { SpinLock::new(TransferCache { len: 0, low: 0, slots: [core::ptr::null_mut(); SLOTS] }) }; NUM_CLASSES];

/// Objects per class currently held (for stats, read without the lock).
static HELD: [AtomicU64; NUM_CLASSES] = [const { AtomicU64::new(0) }; NUM_CLASSES];
static BATCHES_IN: AtomicU64 = AtomicU64::new(0);
static BATCHES_OUT: AtomicU64 = AtomicU64::new(0);

/// Fills `out` with free objects of `class`: from the transfer cache first,
/// then from the central slab. Returns how many; fewer than `out.len()` only
/// when memory runs out.
pub fn take(class: SizeClass, out: &mut [*mut u8]) -> usize {
    let got = {
        let mut cache = CACHES[class.index()].lock();
        let n = cache.len.min(out.len());
        let start = cache.len - n;
        out[..n].copy_from_slice(&cache.slots[start..cache.len]);
        cache.len = start;
        cache.low = cache.low.min(start);
        HELD[class.index()].store(start as u64, Ordering::Relaxed);
        n
    };
    BATCHES_OUT.fetch_add(1, Ordering::Relaxed);
    if got == out.len() {
        return got;
    }
    got + central::alloc_batch(class, &mut out[got..])
}

/// Gives free objects of `class` to the transfer cache; what does not fit
/// goes back to the central slab.
///
/// # Safety
/// Every object is a free object of `class` that the caller gives up.
pub unsafe fn give(class: SizeClass, objects: &[*mut u8]) {
    let capacity = BATCHES * class.batch();
    let stored = {
        let mut cache = CACHES[class.index()].lock();
        let n = (capacity.saturating_sub(cache.len)).min(objects.len());
        let start = cache.len;
        cache.slots[start..start + n].copy_from_slice(&objects[..n]);
        cache.len += n;
        HELD[class.index()].store(cache.len as u64, Ordering::Relaxed);
        n
    };
    BATCHES_IN.fetch_add(1, Ordering::Relaxed);
    if stored < objects.len() {
        // SAFETY: the caller's guarantee passes on.
        unsafe { central::free_batch(class, &objects[stored..]) };
    }
}

/// Returns every object the transfer caches hold to the central slab, so
/// that spans whose objects are all back go to the page heap (`release()`).
pub fn drain() {
    SizeClass::all().for_each(|class| drain_class(class, |_| usize::MAX));
}

/// Returns to the central slab, per class, as many objects as sat unused
/// since the previous call (the low-water mark), so that a burst's leftovers
/// do not pin spans forever (the background tick).
pub fn plunder() {
    SizeClass::all().for_each(|class| drain_class(class, |cache| core::mem::replace(&mut cache.low, cache.len)));
}

/// Moves up to `limit(cache)` objects of `class` to the central slab, a
/// batch per lock hold.
fn drain_class(class: SizeClass, limit: impl FnOnce(&mut TransferCache) -> usize) {
    let mut buf = [core::ptr::null_mut(); MAX_BATCH];
    let mut left = limit(&mut CACHES[class.index()].lock());
    while left > 0 {
        let n = {
            let mut cache = CACHES[class.index()].lock();
            let n = cache.len.min(MAX_BATCH).min(left);
            let start = cache.len - n;
            buf[..n].copy_from_slice(&cache.slots[start..cache.len]);
            cache.len = start;
            cache.low = cache.low.min(start);
            HELD[class.index()].store(start as u64, Ordering::Relaxed);
            n
        };
        if n == 0 {
            break;
        }
        left -= n;
        // SAFETY: the objects were free objects of `class` in the cache, now ours.
        unsafe { central::free_batch(class, &buf[..n]) };
    }
}

/// Takes every class's lock (fork prepare).
pub fn lock_all() {
    CACHES.iter().for_each(SpinLock::acquire);
}

/// Drops the locks `lock_all` took.
///
/// # Safety
/// As for `SpinLock::release`: this thread called `lock_all`.
pub unsafe fn unlock_all() {
    // SAFETY: the caller's guarantee.
    CACHES.iter().for_each(|c| unsafe { c.release() });
}

/// Objects of `class` held in the transfer cache.
pub fn held(class: SizeClass) -> u64 {
    HELD[class.index()].load(Ordering::Relaxed)
}

/// Batches taken from and given to the middle end so far.
pub fn batch_counts() -> (u64, u64) {
    (BATCHES_OUT.load(Ordering::Relaxed), BATCHES_IN.load(Ordering::Relaxed))
}
