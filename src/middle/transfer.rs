//! The middle end: per size class, a bounded stack of free objects that CPU
//! caches refill from and flush to in batches, one lock round trip per batch.
//! A CPU that only frees and one that only allocates meet here without
//! touching the spans; overflow goes to the central slab, underflow comes
//! from it.
//!
//! The process has one set of transfer caches, `TRANSFER`; a test may build
//! its own in front of a central slab of its own.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::middle::central::{CentralSlab, CENTRAL};
use crate::platform::size_class::{SizeClass, MAX_BATCH, NUM_CLASSES};
use crate::platform::sync::{CacheLine, SpinGuard, SpinLock};

/// Batches a class's transfer cache holds at first, and at least: a CPU
/// that frees a burst of up to this many batches leaves them for the CPUs
/// that allocate next.
const MIN_BATCHES: usize = 16;
/// Batches it may grow to while CPUs give it more than it holds...
const MAX_BATCHES: usize = 64;
/// ...but not past this many bytes of objects (or its first size): growth
/// pays where batches are small and moves frequent (objects under 512 B,
/// whose batch of 32 holds less than 16 KiB), not for big objects.
const MAX_GROWN_BYTES: usize = 256 << 10;
const SLOTS: usize = MAX_BATCHES * MAX_BATCH;

/// Capacity follows demand, as in TCMalloc's resizable transfer caches: a
/// give that finds the cache full (its objects would go back to their
/// spans, to be taken out again by the next refill) grows the class by a
/// batch, up to `max_capacity`; objects that sat unused for a background
/// tick (`plunder`) go back to their spans and take their capacity with
/// them, down to `MIN_BATCHES`. The slots are static and touched only as
/// they fill, so capacity a class never uses costs no memory.
#[repr(C)]
struct TransferCache {
    len: usize,
    /// The fewest objects held since the last `plunder`: that many sat idle.
    low: usize,
    /// Objects the cache holds at most now (a multiple of the class's batch).
    capacity: usize,
    slots: [*mut u8; SLOTS],
}

// SAFETY: the pointers are free objects owned by the cache; the lock
// serialises every access.
unsafe impl Send for TransferCache {}

/// One class's cache and counters, on cache lines of their own: classes are
/// locked by different CPUs at once. The counters, the lock and the
/// cache's header fill the first line.
#[repr(C)]
struct Class {
    /// Objects held (stats); like the batch counts, written only under the
    /// lock, so with a plain load and store.
    held: AtomicU64,
    batches_in: AtomicU64,
    batches_out: AtomicU64,
    cache: SpinLock<TransferCache>,
}

// The three counters, the lock word and the cache's header (`len`, `low`,
// `capacity`) within the first line, which `CacheLine` keeps to itself; the
// slots follow on lines of their own.
const _: () = assert!(core::mem::offset_of!(Class, cache) + core::mem::size_of::<SpinLock<[usize; 3]>>() <= 64);

/// The transfer caches in front of one central slab.
pub struct TransferCaches<'c> {
    central: &'c CentralSlab<'c>,
    classes: [CacheLine<Class>; NUM_CLASSES],
}

/// The process's transfer caches.
pub static TRANSFER: TransferCaches<'static> = TransferCaches::new(&CENTRAL);

/// Adds one to a counter only the holder of its class lock writes (`_held`
/// proves it, so a plain load and store do).
fn count(counter: &AtomicU64, _held: &SpinGuard<'_, TransferCache>) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl TransferCache {
    /// Moves the top `min(len, out.len())` objects to `out`; returns how many.
    fn pop_into(&mut self, out: &mut [*mut u8]) -> usize {
        let n = self.len.min(out.len());
        let start = self.len - n;
        out[..n].copy_from_slice(&self.slots[start..self.len]);
        self.len = start;
        self.low = self.low.min(start);
        n
    }
}

/// The most objects `class`'s cache may grow to hold: `MAX_BATCHES`, within
/// `MAX_GROWN_BYTES`, never below `MIN_BATCHES`.
fn max_capacity(class: SizeClass) -> usize {
    let batch = class.batch();
    let by_bytes = MAX_GROWN_BYTES / class.size() / batch * batch;
    by_bytes.min(MAX_BATCHES * batch).max(MIN_BATCHES * batch)
}

impl<'c> TransferCaches<'c> {
    /// Empty transfer caches in front of `central`.
    pub const fn new(central: &'c CentralSlab<'c>) -> TransferCaches<'c> {
        TransferCaches {
            central,
            classes: [const {
                CacheLine(Class {
                    held: AtomicU64::new(0),
                    batches_in: AtomicU64::new(0),
                    batches_out: AtomicU64::new(0),
                    cache: SpinLock::new(TransferCache {
                        len: 0,
                        low: 0,
                        capacity: 0,
                        slots: [core::ptr::null_mut(); SLOTS],
                    }),
                })
            }; NUM_CLASSES],
        }
    }

    /// Fills `out` with free objects of `class`: from the transfer cache
    /// first, then from the central slab. Returns how many; fewer than
    /// `out.len()` only when memory runs out.
    pub fn take(&self, class: SizeClass, out: &mut [*mut u8]) -> usize {
        let state = &self.classes[class.index()];
        let got = {
            let mut cache = state.cache.lock();
            let n = cache.pop_into(out);
            state.held.store(cache.len as u64, Ordering::Relaxed);
            count(&state.batches_out, &cache);
            n
        };
        if got == out.len() {
            return got;
        }
        got + self.central.alloc_batch(class, &mut out[got..])
    }

    /// Gives free objects of `class` to the transfer cache; what does not
    /// fit goes back to the central slab, and the cache grows by a batch.
    ///
    /// # Safety
    /// Every object is a free object of `class` from this cache's central
    /// slab that the caller gives up.
    pub unsafe fn give(&self, class: SizeClass, objects: &[*mut u8]) {
        let state = &self.classes[class.index()];
        let stored = {
            let mut cache = state.cache.lock();
            if cache.capacity == 0 {
                cache.capacity = MIN_BATCHES * class.batch();
            }
            let n = (cache.capacity - cache.len).min(objects.len());
            let start = cache.len;
            cache.slots[start..start + n].copy_from_slice(&objects[..n]);
            cache.len += n;
            if n < objects.len() {
                cache.capacity = (cache.capacity + class.batch()).min(max_capacity(class));
            }
            state.held.store(cache.len as u64, Ordering::Relaxed);
            count(&state.batches_in, &cache);
            n
        };
        if stored < objects.len() {
            // SAFETY: the caller's guarantee passes on.
            unsafe { self.central.free_batch(class, &objects[stored..]) };
        }
    }

    /// Returns every object the transfer caches hold to the central slab, so
    /// that spans whose objects are all back go to the page heap
    /// (`release()`).
    pub fn drain(&self) {
        SizeClass::all().for_each(|class| self.drain_class(class, |_| usize::MAX));
    }

    /// Returns to the central slab, per class, as many objects as sat unused
    /// since the previous call (the low-water mark), so that a burst's
    /// leftovers do not pin spans forever, and shrinks the cache by as many
    /// whole batches (the background tick).
    pub fn plunder(&self) {
        SizeClass::all().for_each(|class| {
            self.drain_class(class, |cache| {
                let idle = core::mem::replace(&mut cache.low, cache.len);
                let floor = MIN_BATCHES * class.batch();
                cache.capacity = cache.capacity.saturating_sub(idle - idle % class.batch()).max(floor);
                idle
            })
        });
    }

    /// Moves up to `limit(cache)` objects of `class` to the central slab, a
    /// batch per lock hold.
    fn drain_class(&self, class: SizeClass, limit: impl FnOnce(&mut TransferCache) -> usize) {
        let state = &self.classes[class.index()];
        let mut buf = [core::ptr::null_mut(); MAX_BATCH];
        let mut left = limit(&mut state.cache.lock());
        while left > 0 {
            let n = {
                let mut cache = state.cache.lock();
                let n = cache.pop_into(&mut buf[..left.min(MAX_BATCH)]);
                state.held.store(cache.len as u64, Ordering::Relaxed);
                n
            };
            if n == 0 {
                break;
            }
            left -= n;
            // SAFETY: the objects were free objects of `class` in the cache,
            // now ours.
            unsafe { self.central.free_batch(class, &buf[..n]) };
        }
    }

    /// Takes every class's lock (fork prepare).
    pub fn lock_all(&self) {
        self.classes.iter().for_each(|c| c.cache.acquire());
    }

    /// Drops the locks `lock_all` took.
    ///
    /// # Safety
    /// As for `SpinLock::release`: this thread called `lock_all`.
    pub unsafe fn unlock_all(&self) {
        // SAFETY: the caller's guarantee.
        self.classes.iter().for_each(|c| unsafe { c.cache.release() });
    }

    /// Objects of `class` held in the transfer cache.
    pub fn held(&self, class: SizeClass) -> u64 {
        self.classes[class.index()].held.load(Ordering::Relaxed)
    }

    /// Batches taken from and given to the middle end so far.
    pub fn batch_counts(&self) -> (u64, u64) {
        self.classes.iter().fold((0, 0), |(out, into), c| {
            (out + c.batches_out.load(Ordering::Relaxed), into + c.batches_in.load(Ordering::Relaxed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::page_heap::tests::test_heap;
    use crate::middle::central::tests::classes;
    use std::boxed::Box;
    use std::vec::Vec;

    fn sorted(mut v: Vec<*mut u8>) -> Vec<*mut u8> {
        v.sort();
        v
    }

    #[test]
    fn batches_given_are_the_batches_taken_without_touching_spans() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        let caches = Box::new(TransferCaches::new(&central));
        let class = classes().0;
        let mut batch = std::vec![core::ptr::null_mut(); class.batch()];
        assert_eq!(caches.take(class, &mut batch), class.batch(), "an empty cache takes from the central slab");
        assert_eq!(central.outstanding(class), class.batch() as u64);
        // SAFETY: free objects of this class from this slab, given up once.
        unsafe { caches.give(class, &batch) };
        assert_eq!(caches.held(class), class.batch() as u64);
        let mut again = std::vec![core::ptr::null_mut(); class.batch()];
        assert_eq!(caches.take(class, &mut again), class.batch());
        assert_eq!(sorted(again.clone()), sorted(batch.clone()), "the same objects come back");
        assert_eq!(caches.held(class), 0);
        assert_eq!(central.outstanding(class), class.batch() as u64, "the spans never saw them");
        assert_eq!(caches.batch_counts(), (2, 1));
        // SAFETY: as above.
        unsafe { caches.give(class, &again) };
        caches.drain();
        assert_eq!((caches.held(class), central.outstanding(class)), (0, 0), "a drain returns everything");
        assert_eq!((central.span_counts(), central.spares(class)), ((1, 0, 0), 1), "its emptied span is a spare");
    }

    #[test]
    fn what_does_not_fit_goes_to_the_central_slab_and_grows_the_cache() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        let caches = Box::new(TransferCaches::new(&central));
        let class = classes().0;
        let (capacity, batch) = (MIN_BATCHES * class.batch(), class.batch());
        let mut objects = std::vec![core::ptr::null_mut(); capacity + 3 + batch];
        assert_eq!(caches.take(class, &mut objects), capacity + 3 + batch);
        let (first, second) = objects.split_at(capacity + 3);
        // SAFETY: free objects of this class from this slab, given up once.
        unsafe { caches.give(class, first) };
        assert_eq!(caches.held(class), capacity as u64);
        assert_eq!(central.outstanding(class), (capacity + batch) as u64, "the 3 over capacity went to their spans");
        // SAFETY: as above.
        unsafe { caches.give(class, second) };
        assert_eq!(caches.held(class), (capacity + batch) as u64, "a give that overflowed grew the cache a batch");
        // Taking more than the cache holds takes the rest from the spans.
        let mut more = std::vec![core::ptr::null_mut(); capacity + batch + 1];
        assert_eq!(caches.take(class, &mut more), capacity + batch + 1);
        assert_eq!(caches.held(class), 0);
        assert_eq!(central.outstanding(class), (capacity + batch + 1) as u64);
        // SAFETY: as above.
        unsafe { caches.give(class, &more) };
        caches.drain();
        assert_eq!(central.outstanding(class), 0);
    }

    #[test]
    fn plunder_returns_only_what_sat_idle_since_the_last_one() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        let caches = Box::new(TransferCaches::new(&central));
        let class = classes().0;
        let n = 3 * class.batch();
        let mut objects = std::vec![core::ptr::null_mut(); n];
        assert_eq!(caches.take(class, &mut objects), n);
        // SAFETY: free objects of this class from this slab, given up once.
        unsafe { caches.give(class, &objects) };
        caches.plunder();
        assert_eq!(caches.held(class), n as u64, "the first look only sets the low-water mark");
        let mut one = [core::ptr::null_mut(); 1];
        assert_eq!(caches.take(class, &mut one), 1);
        // SAFETY: as above.
        unsafe { caches.give(class, &one) };
        caches.plunder();
        assert_eq!(caches.held(class), 1, "all but the one object in use since sat idle");
        assert_eq!(central.outstanding(class), 1);
        caches.plunder();
        assert_eq!(caches.held(class), 0);
        assert_eq!((central.span_counts(), central.spares(class)), ((1, 0, 0), 1));
    }
}
