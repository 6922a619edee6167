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
//!
//! A span's free objects are recorded without writing to most of them:
//! their offsets are packed as 16-bit numbers into a few of them (nodes,
//! `push_free`), so that a batch freed on one CPU and taken on another costs
//! a write and a read of one object in ~`node_capacity`, not a link written
//! into every object by one CPU and followed through every object, one
//! dependent cache miss after another, by the other.
//!
//! The process has one central slab, `CENTRAL`; a test may build its own
//! over a page heap of its own.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::page_heap::{PageHeap, HEAP};
use crate::backend::pagemap::{self, SpanList, GRANULE};
use crate::platform::size_class::{SizeClass, NUM_CLASSES};
use crate::platform::sync::{CacheLine, SpinGuard, SpinLock};

/// What a class's lock guards: its spans (which give access to their
/// metadata) and the bookkeeping of its spares.
struct Spans {
    list: SpanList,
    /// Spans on the spare stack.
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
    /// Spans on the spare stack (stats); written only under the lock.
    spares: AtomicU64,
    spans: SpinLock<Spans>,
}

// The lock and both counters on one line, which `CacheLine` keeps to itself.
const _: () = assert!(core::mem::size_of::<Class>() <= 64);

/// The central slab over one page heap.
pub struct CentralSlab<'h> {
    heap: &'h PageHeap,
    classes: [CacheLine<Class>; NUM_CLASSES],
    spans_carved: AtomicU64,
    spans_released: AtomicU64,
    spans_reused: AtomicU64,
    /// Spans that became spares (so that the background can tell memory
    /// came back, as it tells from the page heap's frees).
    spans_kept: AtomicU64,
}

/// The process's central slab.
pub static CENTRAL: CentralSlab<'static> = CentralSlab::new(&HEAP);

/// Adds `n` to a counter that only the holder of its class lock writes
/// (`_held` proves it; no lock prefix: readers only ever need a recent value).
fn add(counter: &AtomicU64, n: u64, _held: &SpinGuard<'_, Spans>) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl<'h> CentralSlab<'h> {
    /// An empty central slab taking its spans from `heap`.
    pub const fn new(heap: &'h PageHeap) -> CentralSlab<'h> {
        CentralSlab {
            heap,
            classes: [const {
                CacheLine(Class {
                    outstanding: AtomicU64::new(0),
                    spares: AtomicU64::new(0),
                    spans: SpinLock::new(Spans { list: SpanList::new(), spares: 0, low: 0, taken: false }),
                })
            }; NUM_CLASSES],
            spans_carved: AtomicU64::new(0),
            spans_released: AtomicU64::new(0),
            spans_reused: AtomicU64::new(0),
            spans_kept: AtomicU64::new(0),
        }
    }

    /// Fills `out` with objects of `class`: from the listed spans, then the
    /// spares, then new spans. Returns how many it got: fewer than
    /// `out.len()` only when memory runs out.
    pub fn alloc_batch(&self, class: SizeClass, out: &mut [*mut u8]) -> usize {
        let map = self.heap.map();
        let state = &self.classes[class.index()];
        let mut spans = state.spans.lock();
        spans.taken = true;
        let mut got = 0;
        while got < out.len() {
            let g = match spans.list.head() {
                Some(g) => g,
                None => {
                    let g = match spans.take_spare(map) {
                        Some(g) => {
                            self.spans_reused.fetch_add(1, Ordering::Relaxed);
                            state.spares.store(spans.spares as u64, Ordering::Relaxed);
                            g
                        }
                        None => match self.heap.alloc_span(class) {
                            Some(g) => {
                                self.spans_carved.fetch_add(1, Ordering::Relaxed);
                                g
                            }
                            None => break,
                        },
                    };
                    let capacity = (class.span_granules() * GRANULE / class.size()) as u32;
                    // SAFETY: a span of this class that no list holds and
                    // none of whose objects is handed out.
                    unsafe { spans.list.adopt(map, g, capacity) };
                    g
                }
            };
            // SAFETY: g heads this class's list.
            let span = unsafe { spans.list.span(map, g) };
            let base = map.granule_base(g);
            let order = class.carve_order(span.capacity as usize);
            while got < out.len() {
                let obj = if !span.free.is_null() {
                    // SAFETY: the span's nodes, as `push_free` wrote them.
                    unsafe { pop_free(span, base) }
                } else if span.bump < span.capacity {
                    let at = order.object(span.bump as usize);
                    // SAFETY: at < capacity keeps the object inside the span.
                    let obj = unsafe { base.add(at * class.size()) };
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
                // SAFETY: g is listed (it heads the list).
                unsafe { spans.list.unlink(map, g) };
            }
        }
        // A CPU cache pops a refill last object first: reversed, the objects
        // of a span come out in carving order (address order, or for small
        // objects a stride through a few lines: `carve_order`), which the
        // hardware prefetcher follows when the program walks them in the
        // order it got them.
        out[..got].reverse();
        add(&state.outstanding, got as u64, &spans);
        got
    }

    /// Returns objects of `class` to their spans; spans left empty become
    /// the class's spares.
    ///
    /// # Safety
    /// Every object is a currently allocated object of `class` from this
    /// slab that the caller gives up.
    pub unsafe fn free_batch(&self, class: SizeClass, objects: &[*mut u8]) {
        let map = self.heap.map();
        let state = &self.classes[class.index()];
        let mut spans = state.spans.lock();
        for &obj in objects {
            let Some(g) = map.granule_of(obj) else { continue };
            let g = pagemap::span_start(g, class);
            // SAFETY: the caller guarantees obj belongs to a live span of
            // this class, so g starts one.
            let span = unsafe { spans.list.span(map, g) };
            // SAFETY: obj is an object of this span, now free.
            unsafe { push_free(span, map.granule_base(g), obj, class) };
            span.allocated -= 1;
            let emptied = span.allocated == 0;
            // SAFETY: as above, for every use of g below.
            unsafe {
                let listed = spans.list.is_listed(map, g);
                if emptied {
                    if listed {
                        spans.list.unlink(map, g);
                    }
                    // All of the span's objects are back and it is unlinked.
                    spans.list.push_spare(map, g);
                    spans.spares += 1;
                    self.spans_kept.fetch_add(1, Ordering::Relaxed);
                } else if !listed {
                    spans.list.push_front(map, g);
                }
            }
        }
        add(&state.outstanding, (objects.len() as u64).wrapping_neg(), &spans);
        state.spares.store(spans.spares as u64, Ordering::Relaxed);
    }

    /// Gives the page heap, per class, the spares that sat unused since the
    /// previous call (the decay step), or all of them if nothing was taken
    /// from the class meanwhile (it only freed: not in steady use), so that
    /// a class that went idle keeps none. Returns whether any went back.
    pub fn release_idle(&self) -> bool {
        SizeClass::all().fold(false, |any, class| {
            self.release_spares(class, |spans| if core::mem::take(&mut spans.taken) { spans.low } else { u32::MAX })
                | any
        })
    }

    /// Gives every class's spares to the page heap (`release()`).
    pub fn release_all(&self) {
        SizeClass::all().for_each(|class| {
            self.release_spares(class, |_| u32::MAX);
        });
    }

    /// Gives every class's spares to the page heap before it grows (its
    /// `before_grow`, set by init): memory one class emptied serves the
    /// other classes and medium blocks first. Classes whose lock is busy are
    /// skipped: the caller may hold one (a class carving a span), and two
    /// callers must not wait for each other.
    pub fn release_for_growth(&self) {
        for class in SizeClass::all().filter(|&c| self.spares(c) != 0) {
            let state = &self.classes[class.index()];
            if let Some(mut spans) = state.spans.try_lock() {
                self.release(&mut spans, class, u32::MAX);
                state.spares.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Gives `count(spans)` of `class`'s spares to the page heap, then
    /// starts a new low-water mark. Returns whether any went back.
    fn release_spares(&self, class: SizeClass, count: impl FnOnce(&mut Spans) -> u32) -> bool {
        let state = &self.classes[class.index()];
        let mut spans = state.spans.lock();
        let n = count(&mut spans);
        let any = self.release(&mut spans, class, n);
        state.spares.store(spans.spares as u64, Ordering::Relaxed);
        any
    }

    /// Gives up to `n` of `class`'s spares (`spans`'s) to the page heap and
    /// starts a new low-water mark. Returns whether any went.
    fn release(&self, spans: &mut Spans, class: SizeClass, n: u32) -> bool {
        let n = n.min(spans.spares);
        for _ in 0..n {
            let Some(g) = spans.take_spare(self.heap.map()) else { break };
            // SAFETY: a spare has all its objects back and is in no list.
            unsafe { self.heap.free_span(g, class) };
        }
        spans.low = spans.spares;
        self.spans_released.fetch_add(n as u64, Ordering::Relaxed);
        n != 0
    }

    /// Takes every class's lock (fork prepare).
    pub fn lock_all(&self) {
        self.classes.iter().for_each(|c| c.spans.acquire());
    }

    /// Drops the locks `lock_all` took.
    ///
    /// # Safety
    /// As for `SpinLock::release`: this thread called `lock_all`.
    pub unsafe fn unlock_all(&self) {
        // SAFETY: the caller's guarantee.
        self.classes.iter().for_each(|c| unsafe { c.spans.release() });
    }

    /// Objects of `class` handed out by the central slab and not returned.
    pub fn outstanding(&self, class: SizeClass) -> u64 {
        self.classes[class.index()].outstanding.load(Ordering::Relaxed)
    }

    /// Empty spans `class` keeps for reuse.
    pub fn spares(&self, class: SizeClass) -> u64 {
        self.classes[class.index()].spares.load(Ordering::Relaxed)
    }

    /// Bytes of the empty spans all classes keep for reuse.
    pub fn spare_bytes(&self) -> u64 {
        SizeClass::all().map(|class| self.spares(class) * (class.span_granules() * GRANULE) as u64).sum()
    }

    /// Spans that became spares so far.
    pub fn spans_kept(&self) -> u64 {
        self.spans_kept.load(Ordering::Relaxed)
    }

    /// Spans carved from the page heap, spans returned to it, and spares
    /// carved again, so far.
    pub fn span_counts(&self) -> (u64, u64, u64) {
        (
            self.spans_carved.load(Ordering::Relaxed),
            self.spans_released.load(Ordering::Relaxed),
            self.spans_reused.load(Ordering::Relaxed),
        )
    }
}

/// A node's 16-bit slots: `NEXT` holds the next node's offset in the span
/// in 16-byte units plus one (0: none), `COUNT` how many offsets (in the
/// same units) it holds, in the slots `offset_slot` names.
const NEXT: usize = 0;
const COUNT: usize = 1;

/// The slot of a node's `i`th offset: 2 and 3, then 8 on. Slots 4 to 7
/// (bytes 8 to 16) are left alone: they hold the C API's freed stamp
/// (`front/check.rs`), which must survive wherever a freed block sits.
const fn offset_slot(i: usize) -> usize {
    if i < 2 {
        2 + i
    } else {
        6 + i
    }
}

/// Offsets a node of `class` holds: every slot but `NEXT`, `COUNT` and the
/// stamp's four (2 in a 16-byte object, 26 in a 64-byte one).
fn node_capacity(class: SizeClass) -> usize {
    class.size() / 2 - 6
}

/// `obj`'s offset in the span at `base`, in 16-byte units: below 2^14 for
/// the largest spans (4 granules), so it fits a slot.
fn offset_of(base: *mut u8, obj: *mut u8) -> u16 {
    ((obj as usize - base as usize) >> 4) as u16
}

/// Reads slot `s` of node `node`.
///
/// # Safety
/// `node` is a free object of at least `2 * (s + 1)` bytes.
unsafe fn slot(node: *mut u8, s: usize) -> u16 {
    // SAFETY: the caller's guarantee; objects are 16-byte aligned.
    unsafe { (node as *const u16).add(s).read() }
}

/// Writes slot `s` of node `node`.
///
/// # Safety
/// As for `slot`.
unsafe fn set_slot(node: *mut u8, s: usize, v: u16) {
    // SAFETY: the caller's guarantee.
    unsafe { (node as *mut u16).add(s).write(v) }
}

/// Records `obj` as free in `span` (at `base`): its offset goes into the
/// head node while it has room; otherwise `obj` becomes the head node.
///
/// # Safety
/// `obj` is an object of `class` in that span, free from now on and not
/// recorded yet; `span.free` heads its nodes (null: none).
unsafe fn push_free(span: &mut pagemap::Span, base: *mut u8, obj: *mut u8, class: SizeClass) {
    let head = span.free;
    // SAFETY: a node is a free object of this class; every slot named is
    // inside it (`node_capacity`).
    unsafe {
        if !head.is_null() {
            let n = slot(head, COUNT) as usize;
            if n < node_capacity(class) {
                set_slot(head, offset_slot(n), offset_of(base, obj));
                set_slot(head, COUNT, n as u16 + 1);
                return;
            }
        }
        set_slot(obj, NEXT, if head.is_null() { 0 } else { offset_of(base, head) + 1 });
        set_slot(obj, COUNT, 0);
    }
    span.free = obj;
}

/// Takes a free object from `span` (at `base`): the last offset its head
/// node holds, or, once it holds none, the node itself.
///
/// # Safety
/// `span.free` is not null and heads nodes `push_free` wrote.
unsafe fn pop_free(span: &mut pagemap::Span, base: *mut u8) -> *mut u8 {
    let head = span.free;
    // SAFETY: the caller's guarantee; offsets lie inside the span.
    unsafe {
        let n = slot(head, COUNT) as usize;
        if n > 0 {
            set_slot(head, COUNT, n as u16 - 1);
            return base.add((slot(head, offset_slot(n - 1)) as usize) << 4);
        }
        let next = slot(head, NEXT) as usize;
        span.free = if next == 0 { core::ptr::null_mut() } else { base.add((next - 1) << 4) };
    }
    head
}

impl Spans {
    /// Takes a spare, if any (lowering the low-water mark).
    fn take_spare(&mut self, map: &pagemap::PageMap) -> Option<usize> {
        let g = self.list.pop_spare(map)?;
        self.spares -= 1;
        self.low = self.low.min(self.spares);
        Some(g)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::page_heap::tests::test_heap;
    use std::collections::HashSet;
    use std::vec::Vec;

    /// The smallest class, and a class of 4-granule spans.
    pub(crate) fn classes() -> (SizeClass, SizeClass) {
        let small = SizeClass::all().next().unwrap();
        let big = SizeClass::all().find(|c| c.span_granules() == 4).expect("a class of 4-granule spans");
        (small, big)
    }

    fn take(central: &CentralSlab<'_>, class: SizeClass, n: usize) -> Vec<*mut u8> {
        let mut out = std::vec![core::ptr::null_mut(); n];
        assert_eq!(central.alloc_batch(class, &mut out), n);
        out
    }

    fn capacity(class: SizeClass) -> usize {
        class.span_granules() * GRANULE / class.size()
    }

    #[test]
    fn a_batch_is_distinct_objects_of_its_class_carved_from_one_span() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        for class in [classes().0, classes().1] {
            let n = capacity(class).min(32);
            let objects = take(&central, class, n);
            let distinct: HashSet<usize> = objects.iter().map(|&p| p as usize).collect();
            assert_eq!(distinct.len(), n);
            for &p in &objects {
                assert_eq!(heap.map().class_of(p), Some(class));
                assert!(class.is_object_start(p as usize));
                // SAFETY: the object is ours and class.size() bytes long.
                unsafe { core::ptr::write_bytes(p, 0x5A, class.size()) };
            }
            assert_eq!(central.outstanding(class), n as u64);
        }
        assert_eq!(central.span_counts(), (2, 0, 0));
    }

    #[test]
    fn objects_carved_one_after_another_never_share_a_cache_line() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        let lines = |p: *mut u8, class: SizeClass| (p as usize >> 6)..=((p as usize + class.size() - 1) >> 6);
        let mut spread = 0;
        for class in SizeClass::all().filter(|c| c.size() < 128) {
            let stride = class.carve_order(capacity(class)).stride();
            let objects = take(&central, class, 64 * stride);
            // Any eight objects handed out in a row lie on lines of their own...
            for window in objects.windows(8) {
                for (i, &p) in window.iter().enumerate() {
                    for &q in &window[i + 1..] {
                        let (a, b) = (lines(p, class), lines(q, class));
                        assert!(a.end() < b.start() || b.end() < a.start(), "class {}: {p:?} and {q:?}", class.size());
                    }
                }
            }
            // ...and a group's lines hold nothing handed out elsewhere.
            let mut sorted: Vec<usize> = objects.iter().map(|&p| p as usize).collect();
            sorted.sort_unstable();
            assert!(sorted.windows(2).all(|w| w[1] - w[0] == class.size()), "class {}: a run of objects", class.size());
            spread += usize::from(stride > 1);
        }
        assert_eq!(spread, 6, "16, 32, 48, 80, 96 and 112 bytes are spread over lines");
    }

    #[test]
    fn emptied_spans_are_kept_as_spares_reused_and_released_when_idle() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        let class = classes().1;
        let cap = capacity(class);
        let objects = take(&central, class, cap + 1);
        assert_eq!(central.span_counts(), (2, 0, 0), "a full span makes the next batch carve another");
        let span_of = |p: *mut u8| pagemap::span_start(heap.map().granule_of(p).unwrap(), class);
        let lone =
            *objects.iter().find(|&&p| objects.iter().filter(|&&q| span_of(q) == span_of(p)).count() == 1).unwrap();
        let backed = heap.free_backed_bytes();
        // SAFETY: the objects are ours, of this class, given up once.
        unsafe { central.free_batch(class, &[lone]) };
        assert_eq!((central.spares(class), central.outstanding(class)), (1, cap as u64));
        assert_eq!(heap.free_backed_bytes(), backed, "a spare stays with its class");
        assert_eq!(heap.map().class_of(lone), Some(class));

        // In steady use (objects taken since the last step) the spares that
        // did not sit idle stay; a step with nothing taken releases them.
        assert!(!central.release_idle(), "the first step only sets the low-water mark");
        assert_eq!(central.spares(class), 1);
        assert!(central.release_idle(), "nothing was taken since: the class is idle");
        assert_eq!((central.spares(class), central.span_counts()), (0, (2, 1, 0)));
        assert_eq!(heap.free_backed_bytes(), backed + (class.span_granules() * GRANULE) as u64);
        assert_eq!(heap.map().class_of(lone), None, "a released span is no longer the class's");

        // A spare is carved again before the page heap is asked.
        let rest: Vec<*mut u8> = objects.iter().copied().filter(|&p| p != lone).collect();
        // SAFETY: as above.
        unsafe { central.free_batch(class, &rest) };
        assert_eq!(central.spares(class), 1);
        let again = take(&central, class, cap);
        assert_eq!(central.span_counts(), (2, 1, 1), "the spare served the batch");
        // SAFETY: as above.
        unsafe { central.free_batch(class, &again) };
        central.release_all();
        assert_eq!((central.spares(class), central.outstanding(class), central.span_counts()), (0, 0, (2, 2, 1)));
    }

    #[test]
    fn freed_objects_are_reused_first_from_the_span_last_given_one() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        let class = classes().0;
        let cap = capacity(class);
        let objects = take(&central, class, 2 * cap);
        assert_eq!(central.span_counts(), (2, 0, 0));
        // One object back to each full span: the later one heads the list.
        let (a, b) = (objects[3], objects[cap + 5]);
        // SAFETY: ours, of this class, given up once.
        unsafe { central.free_batch(class, &[a, b]) };
        assert_eq!(take(&central, class, 1), [b], "the span most recently given an object serves first");
        assert_eq!(take(&central, class, 1), [a]);
        assert_eq!(central.span_counts(), (2, 0, 0), "reuse carves nothing");
        // SAFETY: as above.
        unsafe { central.free_batch(class, &objects) };
        assert_eq!(central.spares(class), 2);
        central.release_all();
        assert_eq!(central.span_counts(), (2, 2, 0));
    }

    #[test]
    fn free_objects_are_recorded_in_a_few_of_them_and_their_stamps_kept() {
        let heap = test_heap();
        let central = CentralSlab::new(&heap);
        for class in [classes().0, SizeClass::all().find(|c| c.size() == 64).unwrap(), classes().1] {
            assert!(class.span_granules() * GRANULE / 16 <= u16::MAX as usize, "offsets fit a node's slots");
            let cap = capacity(class);
            let objects = take(&central, class, cap);
            // A stamp in every object's second word, as C `free` leaves it.
            let stamp = |p: *mut u8| (p as u64) ^ 0x5EC2E7;
            // SAFETY: the objects are ours and at least 16 bytes long.
            objects.iter().for_each(|&p| unsafe { (p as *mut u64).add(1).write(stamp(p)) });
            // Odd ones first, then the rest, in two batches.
            let (odd, even): (Vec<_>, Vec<_>) = objects.iter().enumerate().partition(|(i, _)| i % 2 == 1);
            let order: Vec<*mut u8> = odd.into_iter().chain(even).map(|(_, &p)| p).collect();
            // SAFETY: ours, of this class, given up once.
            unsafe { central.free_batch(class, &order[..cap / 2]) };
            let written = order[..cap / 2]
                .iter()
                // SAFETY: freed objects stay mapped; reading is fine.
                .filter(|&&p| unsafe { *(p as *const u64) } != 0)
                .count();
            assert!(written <= (cap / 2).div_ceil(node_capacity(class)), "{written} of {} objects written", cap / 2);
            // SAFETY: as above.
            unsafe { central.free_batch(class, &order[cap / 2..cap - 1]) };
            // SAFETY: as above.
            assert!(objects.iter().all(|&p| unsafe { (p as *const u64).add(1).read() } == stamp(p)), "stamps kept");
            let again = take(&central, class, cap - 1);
            let want: HashSet<usize> = order[..cap - 1].iter().map(|&p| p as usize).collect();
            assert_eq!(again.iter().map(|&p| p as usize).collect::<HashSet<_>>(), want, "the same objects, once each");
            // SAFETY: as above.
            unsafe { central.free_batch(class, &objects) };
        }
        central.release_all();
        assert_eq!(central.span_counts().0, central.span_counts().1);
    }
}
