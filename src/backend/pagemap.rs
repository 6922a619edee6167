//! The class map and the span table: what any pointer of the arena's window
//! holds, found in one byte load, and the metadata of every span, with the
//! lists of spans that the central slab threads through it.
//!
//! ```text
//!  window: | foreign | reservation | foreign | reservation (first) |
//!          ^ base
//!  granule g = (p - base) >> 16
//!  class_map[g]  class of the span covering g (0: free, large, or foreign),
//!                or RUN_HEAD + n at a medium run's first granule, RUN_BODY after
//!  spans[g]      Span metadata, valid at a span's first granule
//! ```
//!
//! Both tables cover the whole window (`arena.rs` maps them, read-only where
//! no reservation lies, so any pointer may be looked up and reads zero), so a
//! lookup is one subtraction, one compare and one byte load over every
//! reservation, like TCMalloc's page map.
//!
//! Who may write what is in the types: class bytes only through the
//! `ClassWriter` that the page heap keeps under its lock (so a free that
//! re-reads a run's marker under that lock cannot race another free of the
//! same run), and a span's metadata only through the `SpanList` of its class,
//! which the central slab keeps under the class's lock.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::platform::size_class::{SizeClass, NUM_CLASSES};

/// Span granularity: every span is 1 or 4 granules, aligned to its size.
pub const GRANULE_SHIFT: u32 = 16;
/// 64 KiB.
pub const GRANULE: usize = 1 << GRANULE_SHIFT;
/// Granules per chunk (the unit the arena commits), and the longest run
/// (runs never straddle chunks).
pub const CHUNK_GRANULES: usize = 32;

/// Class-map byte of a medium run's granules after the first.
const RUN_BODY: u8 = 0x80;
/// Class-map byte of a medium run's first granule, plus its length.
const RUN_HEAD: u8 = 0xC0;
const _: () = assert!(NUM_CLASSES <= RUN_BODY as usize && RUN_HEAD as usize + CHUNK_GRANULES <= u8::MAX as usize);

/// Per-span metadata, kept outside the span so the span holds only objects.
#[repr(C)]
pub struct Span {
    /// The head of the free-object nodes (`middle::central`); null when none.
    pub free: *mut u8,
    /// Objects at carving positions `[bump, capacity)` have never been
    /// handed out (`SizeClass::carve_order` maps a position to an object).
    pub bump: u32,
    /// Objects that fit in the span.
    pub capacity: u32,
    /// Objects handed out and not yet returned to this span.
    pub allocated: u32,
    /// Neighbours in the class's list of spans with free objects (granule + 1;
    /// 0 = none).
    next: u32,
    /// See `next`.
    prev: u32,
    /// Whether the span is in that list.
    listed: bool,
}

/// The window's lookups: its base, its size, and where its class map and
/// span table are. Zero (every lookup misses) until the arena publishes it.
pub struct PageMap {
    /// Granule 0's address.
    base: AtomicUsize,
    /// Granules in the window.
    granules: AtomicUsize,
    class_map: AtomicUsize,
    spans: AtomicUsize,
}

/// The right to write class bytes: one per map, kept by the page heap under
/// its lock (`PageMap::new` hands it out with the map).
pub struct ClassWriter(());

/// Where `p` lies among medium runs: read without the lock, so only the
/// owner of a live run may trust a `Start` (anyone may ask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAt {
    /// `p` is the start of the run of `n` granules beginning at granule `g`.
    Start { g: usize, n: usize },
    /// `p` is inside a run, but not at its start.
    Inside,
    /// `p` is in no run (a span, a free granule, or outside the arena).
    Outside,
}

impl PageMap {
    /// An empty map, and the one writer of its class bytes.
    pub const fn new() -> (PageMap, ClassWriter) {
        let map = PageMap {
            base: AtomicUsize::new(0),
            granules: AtomicUsize::new(0),
            class_map: AtomicUsize::new(0),
            spans: AtomicUsize::new(0),
        };
        (map, ClassWriter(()))
    }

    /// Publishes the window: `granules` granules from `base`, whose class map
    /// (one byte per granule) and span table lie at `class_map` and `spans`.
    pub fn publish(&self, base: usize, granules: usize, class_map: usize, spans: usize) {
        self.class_map.store(class_map, Ordering::Relaxed);
        self.spans.store(spans, Ordering::Relaxed);
        self.granules.store(granules, Ordering::Relaxed);
        self.base.store(base, Ordering::Release);
    }

    /// The granule holding `p`, if `p` is inside the window.
    #[inline(always)]
    pub fn granule_of(&self, p: *const u8) -> Option<usize> {
        let offset = (p as usize).wrapping_sub(self.base.load(Ordering::Relaxed));
        let g = offset >> GRANULE_SHIFT;
        (g < self.granules.load(Ordering::Relaxed)).then_some(g)
    }

    /// Address of granule `g`.
    #[inline(always)]
    pub fn granule_base(&self, g: usize) -> *mut u8 {
        (self.base.load(Ordering::Relaxed) + (g << GRANULE_SHIFT)) as *mut u8
    }

    /// The window's base address and size in bytes (0, 0 before init):
    /// every reservation lies in it.
    #[cfg(any(test, feature = "capi", rseqalloc_test_hooks))]
    pub fn window(&self) -> (usize, usize) {
        (self.base.load(Ordering::Relaxed), self.granules.load(Ordering::Relaxed) << GRANULE_SHIFT)
    }

    /// The size class of the span holding `p`, or None if `p` is not in a
    /// small span (a large block, a foreign pointer, or free arena memory).
    #[inline(always)]
    pub fn class_of(&self, p: *const u8) -> Option<SizeClass> {
        SizeClass::from_index(self.map_byte(p)? as usize)
    }

    /// The class-map byte of the granule holding `p` (a size class index, a
    /// medium run's marker, or 0), if `p` is inside the window: C `free`
    /// hands it to `SizeClass::object_at` as it is.
    #[inline(always)]
    pub fn map_byte(&self, p: *const u8) -> Option<u8> {
        self.granule_of(p).map(|g| self.class_byte(g))
    }

    /// Looks `p` up among medium runs: one byte load.
    #[inline]
    pub fn run_at(&self, p: *const u8) -> RunAt {
        let Some(g) = self.granule_of(p) else { return RunAt::Outside };
        match self.class_byte(g) {
            byte if byte > RUN_HEAD && p == self.granule_base(g).cast_const() => {
                RunAt::Start { g, n: (byte - RUN_HEAD) as usize }
            }
            byte if byte >= RUN_BODY => RunAt::Inside,
            _ => RunAt::Outside,
        }
    }

    /// Whether granule `g` starts a live run of `n` granules.
    pub fn is_run(&self, g: usize, n: usize) -> bool {
        self.class_byte(g) == RUN_HEAD + n as u8
    }

    #[inline(always)]
    fn class_byte(&self, g: usize) -> u8 {
        debug_assert!(g < self.granules.load(Ordering::Relaxed));
        // SAFETY: callers pass g < granules, the length of the class map,
        // which is mapped readable for the whole window.
        unsafe { *(self.class_map.load(Ordering::Relaxed) as *const u8).add(g) }
    }

    /// Marks granules `[g, g + n)` as a span of `class`.
    pub fn mark_span(&self, w: &mut ClassWriter, g: usize, n: usize, class: SizeClass) {
        self.set(w, g, n, class.index() as u8);
    }

    /// Marks the `n` granules from `g` as a medium run.
    pub fn mark_run(&self, w: &mut ClassWriter, g: usize, n: usize) {
        self.set(w, g, 1, RUN_HEAD + n as u8);
        self.set(w, g + 1, n - 1, RUN_BODY);
    }

    /// Marks granules `[g, g + n)` as free (no span, no run).
    pub fn clear(&self, w: &mut ClassWriter, g: usize, n: usize) {
        self.set(w, g, n, 0);
    }

    fn set(&self, _: &mut ClassWriter, g: usize, n: usize, byte: u8) {
        debug_assert!(g + n <= self.granules.load(Ordering::Relaxed));
        let map = self.class_map.load(Ordering::Relaxed) as *mut u8;
        // SAFETY: [g, g + n) are granules of a reservation, whose class bytes
        // the arena made writable; the writer is unique (`PageMap::new`) and
        // `&mut` to it, so no other write races this one.
        unsafe { core::ptr::write_bytes(map.add(g), byte, n) };
    }
}

/// The first granule of the `class` span holding granule `g`.
#[inline(always)]
pub fn span_start(g: usize, class: SizeClass) -> usize {
    g & !(class.span_granules() - 1)
}

/// A class's spans that are not fully handed out, linked through the span
/// table: the list of spans with free objects and some handed out, and the
/// stack of empty spans kept for reuse. Holding it `&mut` (under the class's
/// lock) is what gives access to the metadata of the class's spans.
pub struct SpanList {
    /// First granule + 1 of the list's head, linked through `next` and
    /// `prev`; 0 = empty.
    head: u32,
    /// First granule + 1 of the top spare, linked through `next`; 0 = none.
    spare: u32,
}

impl SpanList {
    /// No spans.
    pub const fn new() -> SpanList {
        SpanList { head: 0, spare: 0 }
    }

    /// The first granule of the list's head span, if any.
    pub fn head(&self) -> Option<usize> {
        self.head.checked_sub(1).map(|g| g as usize)
    }

    /// The metadata of the span starting at granule `g`, for as long as
    /// the list is held.
    ///
    /// # Safety
    /// `g` starts a span of this list's class in `map`'s window (carved by
    /// this list's owner and not yet given back).
    pub unsafe fn span<'l>(&'l mut self, map: &PageMap, g: usize) -> &'l mut Span {
        // SAFETY: the caller guarantees the index (inside the span table,
        // writable as a reservation's) and that the span is this class's;
        // `&mut self` is the class's lock, which owns its spans' metadata.
        unsafe { &mut *(map.spans.load(Ordering::Relaxed) as *mut Span).add(g) }
    }

    /// Sets up the metadata of the span at `g` (fresh, or a spare taken
    /// back), of `capacity` objects none of which is handed out, and puts it
    /// at the head.
    ///
    /// # Safety
    /// As for `span`.
    pub unsafe fn adopt(&mut self, map: &PageMap, g: usize, capacity: u32) {
        // SAFETY: the caller's guarantee.
        let span = unsafe { self.span(map, g) };
        *span = Span { free: core::ptr::null_mut(), bump: 0, capacity, allocated: 0, next: 0, prev: 0, listed: false };
        // SAFETY: as above.
        unsafe { self.push_front(map, g) };
    }

    /// Whether the span at `g` is in the list.
    ///
    /// # Safety
    /// As for `span`.
    pub unsafe fn is_listed(&mut self, map: &PageMap, g: usize) -> bool {
        // SAFETY: the caller's guarantee.
        unsafe { self.span(map, g) }.listed
    }

    /// Puts the span at `g` at the head.
    ///
    /// # Safety
    /// As for `span`; the span is not in the list.
    pub unsafe fn push_front(&mut self, map: &PageMap, g: usize) {
        let head = self.head;
        // SAFETY: the caller's guarantee.
        let span = unsafe { self.span(map, g) };
        (span.prev, span.next, span.listed) = (0, head, true);
        if head != 0 {
            // SAFETY: the head is a listed span of this class.
            unsafe { self.span(map, head as usize - 1) }.prev = g as u32 + 1;
        }
        self.head = g as u32 + 1;
    }

    /// Keeps the empty span at `g` (in no list) as a spare.
    ///
    /// # Safety
    /// As for `span`; none of the span's objects is handed out, and it is in
    /// neither the list nor the spares.
    pub unsafe fn push_spare(&mut self, map: &PageMap, g: usize) {
        let top = self.spare;
        // SAFETY: the caller's guarantee.
        unsafe { self.span(map, g) }.next = top;
        self.spare = g as u32 + 1;
    }

    /// Takes the top spare, if any: a span of this list's class none of
    /// whose objects is handed out, in no list.
    pub fn pop_spare(&mut self, map: &PageMap) -> Option<usize> {
        let g = self.spare.checked_sub(1)? as usize;
        // SAFETY: a spare is a span of this class (`push_spare`).
        self.spare = unsafe { self.span(map, g) }.next;
        Some(g)
    }

    /// Takes the span at `g` out of the list.
    ///
    /// # Safety
    /// As for `span`; the span is in the list.
    pub unsafe fn unlink(&mut self, map: &PageMap, g: usize) {
        // SAFETY: the caller's guarantee.
        let span = unsafe { self.span(map, g) };
        let (prev, next) = (span.prev, span.next);
        span.listed = false;
        if prev == 0 {
            self.head = next;
        } else {
            // SAFETY: a listed span's neighbours are listed spans of its class.
            unsafe { self.span(map, prev as usize - 1) }.next = next;
        }
        if next != 0 {
            // SAFETY: as above.
            unsafe { self.span(map, next as usize - 1) }.prev = prev;
        }
    }
}
