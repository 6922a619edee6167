//! The central slab: for each size class, the spans carved into objects.
//! Objects leave and return in batches under one lock per batch; a span whose
//! objects have all come back returns to the page heap.
//!
//! Allocation prefers the span most recently given a free object (the list
//! head), so objects of one span tend to be reused together and sparse spans
//! can drain.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::pagemap::{self, Span};
use crate::platform::size_class::{SizeClass, NUM_CLASSES};
use crate::platform::sync::SpinLock;

/// A class's list of spans that have free objects (granule + 1; 0 = none).
struct SpanList {
    head: u32,
}

static LISTS: [SpinLock<SpanList>; NUM_CLASSES] = [const { SpinLock::new(SpanList { head: 0 }) }; NUM_CLASSES];

/// Objects handed out of spans and not returned, per class (for stats).
static OUTSTANDING: [AtomicU64; NUM_CLASSES] = [const { AtomicU64::new(0) }; NUM_CLASSES];
static SPANS_CARVED: AtomicU64 = AtomicU64::new(0);
static SPANS_RELEASED: AtomicU64 = AtomicU64::new(0);

/// Fills `out` with objects of `class`, carving new spans as needed. Returns
/// how many it got: fewer than `out.len()` only when memory runs out.
pub fn alloc_batch(class: SizeClass, out: &mut [*mut u8]) -> usize {
    let mut list = LISTS[class.index()].lock();
    let mut got = 0;
    while got < out.len() {
        let g = match list.head {
            0 => match pagemap::alloc_span(class) {
                Some(g) => {
                    // SAFETY: a fresh span owned by this class's lock.
                    let span = unsafe { pagemap::span(g) };
                    *span = Span {
                        free: core::ptr::null_mut(),
                        bump: 0,
                        capacity: (class.span_granules() * pagemap::GRANULE / class.size()) as u32,
                        allocated: 0,
                        next: 0,
                        prev: 0,
                        listed: false,
                    };
                    list.push_front(g);
                    SPANS_CARVED.fetch_add(1, Ordering::Relaxed);
                    g
                }
                None => break,
            },
            head => head as usize - 1,
        };
        // SAFETY: g heads this class's list; we hold the class lock.
        let span = unsafe { pagemap::span(g) };
        let base = pagemap::granule_base(g);
        while got < out.len() {
            let obj = if !span.free.is_null() {
                let obj = span.free;
                // SAFETY: a free object of this span stores the next free one
                // in its first word (written by `free_batch`).
                span.free = unsafe { *(obj as *mut *mut u8) };
                obj
            } else if span.bump < span.capacity {
                // SAFETY: bump < capacity keeps the object inside the span.
                let obj = unsafe { base.add(span.bump as usize * class.size()) };
                span.bump += 1;
                obj
            } else {
                break;
            };
            out[got] = obj;
            got += 1;
            span.allocated += 1;
        }
        if span.free.is_null() && span.bump == span.capacity {
            list.unlink(g);
        }
    }
    OUTSTANDING[class.index()].fetch_add(got as u64, Ordering::Relaxed);
    got
}

/// Returns objects of `class` to their spans; spans left empty go back to
/// the page heap.
///
/// # Safety
/// Every object is a currently allocated object of `class` that the caller
/// gives up.
pub unsafe fn free_batch(class: SizeClass, objects: &[*mut u8]) {
    let mut list = LISTS[class.index()].lock();
    for &obj in objects {
        let Some(g) = pagemap::granule_of(obj) else { continue };
        let g = pagemap::span_start(g, class);
        // SAFETY: the caller guarantees obj belongs to a live span of this
        // class, whose metadata this class's lock owns.
        let span = unsafe { pagemap::span(g) };
        // SAFETY: obj is a free object of at least 16 bytes.
        unsafe { *(obj as *mut *mut u8) = span.free };
        span.free = obj;
        span.allocated -= 1;
        if span.allocated == 0 {
            if span.listed {
                list.unlink(g);
            }
            // SAFETY: all of the span's objects are back and it is unlinked.
            unsafe { pagemap::free_span(g, class) };
            SPANS_RELEASED.fetch_add(1, Ordering::Relaxed);
        } else if !span.listed {
            list.push_front(g);
        }
    }
    OUTSTANDING[class.index()].fetch_sub(objects.len() as u64, Ordering::Relaxed);
}

/// Takes every class's lock (fork prepare).
pub fn lock_all() {
    LISTS.iter().for_each(SpinLock::acquire);
}

/// Drops the locks `lock_all` took.
///
/// # Safety
/// As for `SpinLock::release`: this thread called `lock_all`.
pub unsafe fn unlock_all() {
    // SAFETY: the caller's guarantee.
    LISTS.iter().for_each(|l| unsafe { l.release() });
}

/// Objects of `class` handed out by the central slab and not returned.
pub fn outstanding(class: SizeClass) -> u64 {
    OUTSTANDING[class.index()].load(Ordering::Relaxed)
}

/// Spans carved and spans returned to the page heap so far.
pub fn span_counts() -> (u64, u64) {
    (SPANS_CARVED.load(Ordering::Relaxed), SPANS_RELEASED.load(Ordering::Relaxed))
}

impl SpanList {
    fn push_front(&mut self, g: usize) {
        // SAFETY: g is a span of this list's class; the caller holds the
        // class lock, which owns its metadata.
        let span = unsafe { pagemap::span(g) };
        span.prev = 0;
        span.next = self.head;
        span.listed = true;
        if self.head != 0 {
            // SAFETY: as above, for the old head.
            unsafe { pagemap::span(self.head as usize - 1) }.prev = g as u32 + 1;
        }
        self.head = g as u32 + 1;
    }

    fn unlink(&mut self, g: usize) {
        // SAFETY: as in push_front; g is listed, so its neighbours are too.
        let span = unsafe { pagemap::span(g) };
        let (prev, next) = (span.prev, span.next);
        span.listed = false;
        if prev == 0 {
            self.head = next;
        } else {
            // SAFETY: as above.
            unsafe { pagemap::span(prev as usize - 1) }.next = next;
        }
        if next != 0 {
            // SAFETY: as above.
            unsafe { pagemap::span(next as usize - 1) }.prev = prev;
        }
    }
}
