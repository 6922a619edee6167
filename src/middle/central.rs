//! The central slab: for each size class, the spans carved into objects.
//! Objects leave and return in batches under one lock per batch.
//!
//! Allocation prefers the span most recently given a free object (the list
//! head), so objects of one span tend to be reused together and sparse spans
//! can drain.
//!
//! A span whose objects have all come back stays with its class as a spare
//! while the class is in use: when one CPU allocates what another frees,
//! spans empty and fill again all the time, and handing each to the page
//! heap only to carve it again costs a page heap round trip, a class map
//! write and, worse, a free list walk instead of a bump. Spares are reused
//! before the page heap is asked, and a spare is carved again from its
//! first object. `release_idle` (the decay step: the background tick, or a
//! slow path without the thread) gives back the spares that sat unused
//! since the previous step, or all of them if the class only freed, so a
//! class keeps at most its peak of spans while in steady use and gives them
//! to the page heap at the first step after it goes idle; `release()` gives
//! them all back at once. Before the page heap grows, every class's spares
//! go back to it, so memory one class emptied still serves the other classes
//! and medium blocks first.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::pagemap::{self, Span};
use crate::platform::size_class::{SizeClass, NUM_CLASSES};
use crate::platform::sync::{CacheLine, SpinLock};

/// A class's spans that are not fully handed out (granule + 1; 0 = none).
struct SpanList {
    /// Spans with free objects and some handed out, linked through `next`
    /// and `prev`.
    head: u32,
    /// Empty spans kept for reuse, linked through `next`.
    spare: u32,
    /// Spans on the `spare` stack.
    spares: u32,
    /// The fewest spares held since the last `release_idle`: that many sat
    /// unused.
    low: u32,
    /// Whether objects were taken since the last `release_idle`.
    taken: bool,
}

/// One class's lock and counters, on cache lines of their own (classes are
/// locked by different CPUs at once).
#[repr(C)]
struct Class {
    /// Objects handed out of spans and not returned (stats); written only
    /// under the lock, so with a plain load and store.
    outstanding: AtomicU64,
    /// Spans on the `spare` stack (stats); written only under the lock.
    spares: AtomicU64,
    spans: SpinLock<SpanList>,
}

static CLASSES: [CacheLine<Class>; NUM_CLASSES] = [const {
    CacheLine(Class {
        outstanding: AtomicU64::new(0),
        spares: AtomicU64::new(0),
        spans: SpinLock::new(SpanList { head: 0, spare: 0, spares: 0, low: 0, taken: false }),
    })
}; NUM_CLASSES];
static SPANS_CARVED: AtomicU64 = AtomicU64::new(0);
static SPANS_RELEASED: AtomicU64 = AtomicU64::new(0);
static SPANS_REUSED: AtomicU64 = AtomicU64::new(0);
/// Spans that became spares (so that the background can tell memory came
/// back, as it tells from the page heap's frees).
static SPANS_KEPT: AtomicU64 = AtomicU64::new(0);

/// Adds `n` to a counter that only the holder of its class lock writes
/// (no lock prefix: readers only ever need a recent value).
fn add_locked(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Fills `out` with objects of `class`: from the listed spans, then the
/// spares, then new spans. Returns how many it got: fewer than `out.len()`
/// only when memory runs out.
pub fn alloc_batch(class: SizeClass, out: &mut [*mut u8]) -> usize {
    let state = &CLASSES[class.index()];
    let mut list = state.spans.lock();
    list.taken = true;
    let mut got = 0;
    while got < out.len() {
        let g = match list.head {
            0 => {
                let g = match list.take_spare() {
                    Some(g) => {
                        SPANS_REUSED.fetch_add(1, Ordering::Relaxed);
                        state.spares.store(list.spares as u64, Ordering::Relaxed);
                        g
                    }
                    None => match pagemap::alloc_span(class) {
                        Some(g) => {
                            SPANS_CARVED.fetch_add(1, Ordering::Relaxed);
                            g
                        }
                        None => break,
                    },
                };
                // SAFETY: a span of this class that no list holds and none
                // of whose objects is handed out; the class lock owns it.
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
                g
            }
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
    // A CPU cache pops a refill last object first: reversed, the objects of
    // a span come out in address order, which the hardware prefetcher
    // follows when the program walks them in the order it got them.
    out[..got].reverse();
    add_locked(&state.outstanding, got as u64);
    got
}

/// Returns objects of `class` to their spans; spans left empty become the
/// class's spares.
///
/// # Safety
/// Every object is a currently allocated object of `class` that the caller
/// gives up.
pub unsafe fn free_batch(class: SizeClass, objects: &[*mut u8]) {
    let state = &CLASSES[class.index()];
    let mut list = state.spans.lock();
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
            list.push_spare(g);
        } else if !span.listed {
            list.push_front(g);
        }
    }
    add_locked(&state.outstanding, (objects.len() as u64).wrapping_neg());
    state.spares.store(list.spares as u64, Ordering::Relaxed);
}

/// Gives the page heap, per class, the spares that sat unused since the
/// previous call (the decay step), or all of them if nothing was taken from
/// the class meanwhile (it only freed: not in steady use), so that a class
/// that went idle keeps none. Returns whether any went back.
pub fn release_idle() -> bool {
    SizeClass::all().fold(false, |any, class| {
        release_spares(class, |list| if core::mem::take(&mut list.taken) { list.low } else { u32::MAX }) | any
    })
}

/// Gives every class's spares to the page heap (`release()`).
pub fn release_all() {
    SizeClass::all().for_each(|class| {
        release_spares(class, |_| u32::MAX);
    });
}

/// Gives every class's spares to the page heap before it grows (its
/// `before_grow`, set by init): memory one class emptied serves the other
/// classes and medium blocks first. Classes whose lock is busy are skipped:
/// the caller may hold one (a class carving a span), and two callers must
/// not wait for each other.
pub fn release_for_growth() {
    for class in SizeClass::all().filter(|&c| spares(c) != 0) {
        let state = &CLASSES[class.index()];
        if let Some(mut list) = state.spans.try_lock() {
            list.release(class, u32::MAX);
            state.spares.store(0, Ordering::Relaxed);
        }
    }
}

/// Gives `count(list)` of `class`'s spares to the page heap, then starts a
/// new low-water mark. Returns whether any went back.
fn release_spares(class: SizeClass, count: impl FnOnce(&mut SpanList) -> u32) -> bool {
    let state = &CLASSES[class.index()];
    let mut list = state.spans.lock();
    let n = count(&mut list);
    let any = list.release(class, n);
    state.spares.store(list.spares as u64, Ordering::Relaxed);
    any
}

/// Takes every class's lock (fork prepare).
pub fn lock_all() {
    CLASSES.iter().for_each(|c| c.spans.acquire());
}

/// Drops the locks `lock_all` took.
///
/// # Safety
/// As for `SpinLock::release`: this thread called `lock_all`.
pub unsafe fn unlock_all() {
    // SAFETY: the caller's guarantee.
    CLASSES.iter().for_each(|c| unsafe { c.spans.release() });
}

/// Objects of `class` handed out by the central slab and not returned.
pub fn outstanding(class: SizeClass) -> u64 {
    CLASSES[class.index()].outstanding.load(Ordering::Relaxed)
}

/// Empty spans `class` keeps for reuse.
pub fn spares(class: SizeClass) -> u64 {
    CLASSES[class.index()].spares.load(Ordering::Relaxed)
}

/// Bytes of the empty spans all classes keep for reuse.
pub fn spare_bytes() -> u64 {
    SizeClass::all().map(|class| spares(class) * (class.span_granules() * pagemap::GRANULE) as u64).sum()
}

/// Spans that became spares so far.
pub fn spans_kept() -> u64 {
    SPANS_KEPT.load(Ordering::Relaxed)
}

/// Spans carved from the page heap, spans returned to it, and spares
/// carved again, so far.
pub fn span_counts() -> (u64, u64, u64) {
    (SPANS_CARVED.load(Ordering::Relaxed), SPANS_RELEASED.load(Ordering::Relaxed), SPANS_REUSED.load(Ordering::Relaxed))
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

    /// Keeps the empty span `g` (in no list) as a spare.
    fn push_spare(&mut self, g: usize) {
        SPANS_KEPT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in push_front.
        unsafe { pagemap::span(g) }.next = self.spare;
        self.spare = g as u32 + 1;
        self.spares += 1;
    }

    /// Gives up to `n` spares of `class` (this list's) to the page heap and
    /// starts a new low-water mark. Returns whether any went.
    fn release(&mut self, class: SizeClass, n: u32) -> bool {
        let n = n.min(self.spares);
        for _ in 0..n {
            let Some(g) = self.take_spare() else { break };
            // SAFETY: a spare has all its objects back and is in no list.
            unsafe { pagemap::free_span(g, class) };
        }
        self.low = self.spares;
        SPANS_RELEASED.fetch_add(n as u64, Ordering::Relaxed);
        n != 0
    }

    /// Takes a spare, if any (lowering the low-water mark).
    fn take_spare(&mut self) -> Option<usize> {
        let g = self.spare.checked_sub(1)? as usize;
        // SAFETY: as in push_front.
        self.spare = unsafe { pagemap::span(g) }.next;
        self.spares -= 1;
        self.low = self.low.min(self.spares);
        Some(g)
    }
}
