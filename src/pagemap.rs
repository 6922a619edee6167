//! The arena and its maps: one reservation of address space holding every
//! span, the class map that gives any pointer's size class in one byte load,
//! the span table, and the page heap that hands out and takes back 64 KiB
//! granules (so an emptied span's memory serves any class).
//!
//! ```text
//!  arena:  | chunk 0 (2 MiB = 32 granules) | chunk 1 | ... committed on demand
//!  granule g = (p - base) >> 16
//!  class_map[g]  class of the span covering g (0: free, large, or foreign)
//!  spans[g]      Span metadata, valid at a span's first granule
//!  chunk_free[c] bit i set: granule c*32+i is free (committed chunks only)
//!  released[c]   bit i set: that free granule's pages went back to the OS
//!  aged[c]       bit i set: free and unreleased at chunk c's last decay visit
//! ```
//!
//! `release_free` gives free granules' pages back (`madvise`); a granule
//! stays committed, so handing it out again only costs the page faults.
//! `release_aged` is the time-based decay: visited at least a decay period
//! apart, a chunk gives back the granules that stayed free since its last
//! visit. While their pages go back, the granules are taken out of the heap,
//! so the lock is not held across `madvise`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::os;
use crate::size_class::SizeClass;
use crate::sync::SpinLock;

/// Span granularity: every span is 1 or 4 granules, aligned to its size.
pub const GRANULE_SHIFT: u32 = 16;
/// 64 KiB.
pub const GRANULE: usize = 1 << GRANULE_SHIFT;
const CHUNK_GRANULES: usize = 32;
/// The unit of address space made usable at a time: a 2 MiB huge page.
const CHUNK: usize = GRANULE * CHUNK_GRANULES;
/// Reservation sizes tried in turn (`ulimit -v`, overcommit=2 refuse big ones).
const RESERVATIONS: [usize; 5] = [64 << 30, 16 << 30, 4 << 30, 1 << 30, 256 << 20];

/// Per-span metadata, kept outside the span so the span holds only objects.
#[repr(C)]
pub struct Span {
    /// Freed objects, linked through their first word.
    pub free: *mut u8,
    /// Objects `[bump, capacity)` have never been handed out.
    pub bump: u32,
    /// Objects that fit in the span.
    pub capacity: u32,
    /// Objects handed out and not yet returned to this span.
    pub allocated: u32,
    /// Neighbours in the class's list of spans with free objects (granule + 1;
    /// 0 = none).
    pub next: u32,
    /// See `next`.
    pub prev: u32,
    /// Whether the span is in that list.
    pub listed: bool,
}

static BASE: AtomicUsize = AtomicUsize::new(0);
static GRANULES: AtomicUsize = AtomicUsize::new(0);
static CLASS_MAP: AtomicUsize = AtomicUsize::new(0);
static SPANS: AtomicUsize = AtomicUsize::new(0);
static MAPPED: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
/// Bytes of free granules whose pages were not given back.
static FREE_UNRELEASED: AtomicU64 = AtomicU64::new(0);
/// `madvise` calls made.
static PURGES: AtomicU64 = AtomicU64::new(0);

struct PageHeap {
    /// `chunk_free` array (one u32 per chunk of the arena).
    chunk_free: *mut u32,
    /// `released` array (one u32 per chunk): subset of the free bits.
    released: *mut u32,
    /// `aged` array (one u32 per chunk): see the module doc.
    aged: *mut u32,
    /// The chunk the next `release_aged` visit starts at.
    cursor: usize,
    /// Chunks made read-write so far, from the arena base up.
    committed: usize,
    /// No chunk below this has a free granule.
    lowest_free: usize,
}

// SAFETY: the raw pointer is to process-wide metadata; the lock serialises use.
unsafe impl Send for PageHeap {}

static HEAP: SpinLock<PageHeap> = SpinLock::new(PageHeap {
    chunk_free: core::ptr::null_mut(),
    released: core::ptr::null_mut(),
    aged: core::ptr::null_mut(),
    cursor: 0,
    committed: 0,
    lowest_free: 0,
});

/// Reserves the arena and maps its metadata. Called once by init.
pub fn init() -> bool {
    for size in RESERVATIONS {
        let base = os::map_aligned(size, CHUNK, true);
        if base.is_null() {
            continue;
        }
        let granules = size / GRANULE;
        let chunks = granules / CHUNK_GRANULES;
        let meta_len = granules + granules * core::mem::size_of::<Span>() + chunks * 12;
        let meta = os::map(meta_len);
        if meta.is_null() {
            // SAFETY: the reservation was just made and is unused.
            unsafe { os::unmap(base, size) };
            continue;
        }
        let spans = meta as usize + granules;
        let chunk_free = spans + granules * core::mem::size_of::<Span>();
        let mut heap = HEAP.lock();
        heap.chunk_free = chunk_free as *mut u32;
        heap.released = (chunk_free + chunks * 4) as *mut u32;
        heap.aged = (chunk_free + chunks * 8) as *mut u32;
        drop(heap);
        CLASS_MAP.store(meta as usize, Ordering::Relaxed);
        SPANS.store(spans, Ordering::Relaxed);
        GRANULES.store(granules, Ordering::Relaxed);
        BASE.store(base as usize, Ordering::Release);
        return true;
    }
    false
}

/// The granule holding `p`, if `p` is inside the arena.
#[inline(always)]
pub fn granule_of(p: *const u8) -> Option<usize> {
    let offset = (p as usize).wrapping_sub(BASE.load(Ordering::Relaxed));
    let g = offset >> GRANULE_SHIFT;
    (g < GRANULES.load(Ordering::Relaxed)).then_some(g)
}

/// The size class of the span holding `p`, or None if `p` is not in a small
/// span (a large block, a foreign pointer, or free arena memory).
#[inline(always)]
pub fn class_of(p: *const u8) -> Option<SizeClass> {
    let g = granule_of(p)?;
    // SAFETY: g < GRANULES, the length of the class map.
    let byte = unsafe { *(CLASS_MAP.load(Ordering::Relaxed) as *const u8).add(g) };
    SizeClass::from_index(byte as usize)
}

/// The arena's base address and size in bytes (0, 0 before init).
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub fn arena() -> (usize, usize) {
    (BASE.load(Ordering::Relaxed), GRANULES.load(Ordering::Relaxed) << GRANULE_SHIFT)
}

/// How far `p` lies into the `class` span holding it. The arena base is
/// chunk aligned and spans are aligned to their size within it, so this is
/// a mask, no lookup.
#[inline(always)]
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub fn offset_in_span(p: *const u8, class: SizeClass) -> usize {
    const _: () = assert!(CHUNK >= 4 * GRANULE, "spans must not straddle the base alignment");
    p as usize & ((class.span_granules() << GRANULE_SHIFT) - 1)
}

/// Address of granule `g`.
#[inline(always)]
pub fn granule_base(g: usize) -> *mut u8 {
    (BASE.load(Ordering::Relaxed) + (g << GRANULE_SHIFT)) as *mut u8
}

/// The first granule of the `class` span holding granule `g`.
#[inline(always)]
pub fn span_start(g: usize, class: SizeClass) -> usize {
    g & !(class.span_granules() - 1)
}

/// The metadata of the span starting at granule `g`.
///
/// # Safety
/// `g` < GRANULES, and the caller holds the lock that owns that span's
/// metadata (its class's central lock), so the `&mut` is unique.
#[allow(clippy::mut_from_ref)]
pub unsafe fn span(g: usize) -> &'static mut Span {
    // SAFETY: the caller guarantees the index and exclusivity.
    unsafe { &mut *(SPANS.load(Ordering::Relaxed) as *mut Span).add(g) }
}

/// Takes a span for `class` from the page heap, committing a new chunk if
/// needed, and records its class. Returns its first granule, or None when the
/// arena is exhausted or the kernel refuses memory.
pub fn alloc_span(class: SizeClass) -> Option<usize> {
    let n = class.span_granules();
    let mut heap = HEAP.lock();
    let g = heap.find(n).or_else(|| heap.grow().and_then(|_| heap.find(n)))?;
    drop(heap);
    set_class(g, n, class.index() as u8);
    Some(g)
}

/// Returns the `class` span starting at `g` to the page heap.
///
/// # Safety
/// No object of the span is in use or cached anywhere, and the span's
/// metadata is no longer linked into any list.
pub unsafe fn free_span(g: usize, class: SizeClass) {
    let n = class.span_granules();
    set_class(g, n, 0);
    let mut heap = HEAP.lock();
    let chunk = g / CHUNK_GRANULES;
    let bits = ((1u64 << n) - 1) as u32;
    // SAFETY: chunk < committed because g came from alloc_span.
    unsafe { *heap.chunk_free.add(chunk) |= bits << (g % CHUNK_GRANULES) };
    heap.lowest_free = heap.lowest_free.min(chunk);
    FREE_UNRELEASED.fetch_add((n * GRANULE) as u64, Ordering::Relaxed);
}

fn set_class(g: usize, n: usize, byte: u8) {
    let map = CLASS_MAP.load(Ordering::Relaxed) as *mut u8;
    // SAFETY: [g, g + n) is a span inside the arena, whose class bytes only
    // the span's owner writes.
    unsafe { core::ptr::write_bytes(map.add(g), byte, n) };
}

/// Gives the pages of every free granule back to the OS (those not given
/// back already) and returns how many bytes that was: the primitive under
/// `release()` and `malloc_trim`.
pub fn release_free() -> usize {
    let chunks = HEAP.lock().committed;
    (0..chunks).map(|c| release_in_chunk(c, |free, released, _aged| free & !released)).sum()
}

/// One step of the time-based decay: visits up to `max_chunks` chunks (round
/// robin), gives back the granules that stayed free since the chunk's last
/// visit, and remembers which are free now. Call it at most once per decay
/// period. Returns the bytes given back.
pub fn release_aged(max_chunks: usize) -> usize {
    let (first, visit, committed) = {
        let mut heap = HEAP.lock();
        let committed = heap.committed.max(1);
        let first = heap.cursor % committed;
        let visit = max_chunks.min(heap.committed);
        heap.cursor = first + visit;
        (first, visit, committed)
    };
    (first..first + visit)
        .map(|c| release_in_chunk(c % committed, |free, released, aged| free & !released & aged))
        .sum()
}

/// Gives back the granules of chunk `c` that `pick(free, released, aged)`
/// selects (a subset of the free, unreleased ones), then marks every free
/// unreleased granule of the chunk as aged. The granules are taken out of
/// the heap while their pages go back, so no lock is held across `madvise`.
fn release_in_chunk(c: usize, pick: impl Fn(u32, u32, u32) -> u32) -> usize {
    let taken = {
        let heap = HEAP.lock();
        if c >= heap.committed {
            return 0;
        }
        // SAFETY: c < committed ≤ number of chunks, the arrays' length.
        let (free, released, aged) =
            unsafe { (&mut *heap.chunk_free.add(c), *heap.released.add(c), &mut *heap.aged.add(c)) };
        let taken = pick(*free, released, *aged) & *free & !released;
        *free &= !taken;
        *aged = *free & !released;
        taken
    };
    let mut given_back = 0;
    let mut todo = taken;
    while todo != 0 {
        let start = todo.trailing_zeros();
        let run = (todo >> start).trailing_ones();
        let bits = ((1u64 << run) - 1) as u32;
        // SAFETY: the granules are free (no span, no object) and taken out of
        // the heap, inside a committed chunk of our reservation.
        if unsafe { os::release(granule_base(c * CHUNK_GRANULES + start as usize), run as usize * GRANULE) } {
            given_back |= bits << start;
        }
        PURGES.fetch_add(1, Ordering::Relaxed);
        todo &= !(bits << start);
    }
    let mut heap = HEAP.lock();
    // SAFETY: as above.
    unsafe {
        *heap.chunk_free.add(c) |= taken;
        *heap.released.add(c) |= given_back;
    }
    heap.lowest_free = heap.lowest_free.min(c);
    let bytes = given_back.count_ones() as usize * GRANULE;
    RELEASED.fetch_add(bytes as u64, Ordering::Relaxed);
    FREE_UNRELEASED.fetch_sub(bytes as u64, Ordering::Relaxed);
    bytes
}

/// Bytes of free granules whose pages are back with the OS.
pub fn released_bytes() -> u64 {
    RELEASED.load(Ordering::Relaxed)
}

/// Takes the page heap lock (fork prepare).
pub fn lock_all() {
    HEAP.acquire();
}

/// Drops the lock `lock_all` took.
///
/// # Safety
/// As for `SpinLock::release`: this thread called `lock_all`.
pub unsafe fn unlock_all() {
    // SAFETY: the caller's guarantee.
    unsafe { HEAP.release() }
}

/// Bytes of the arena made read-write so far.
pub fn mapped_bytes() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

/// Bytes of free granules still backed by pages (waiting for the decay).
pub fn free_unreleased_bytes() -> u64 {
    FREE_UNRELEASED.load(Ordering::Relaxed)
}

/// `madvise` calls made to give pages back.
pub fn purge_count() -> u64 {
    PURGES.load(Ordering::Relaxed)
}

impl PageHeap {
    /// Finds and takes `n` (1 or 4) free granules aligned to `n`.
    fn find(&mut self, n: usize) -> Option<usize> {
        for c in self.lowest_free..self.committed {
            // SAFETY: c < committed ≤ number of chunks.
            let word = unsafe { &mut *self.chunk_free.add(c) };
            let usable = if n == 1 {
                *word
            } else {
                // A bit survives where it and its three successors are free,
                // at quad-aligned positions.
                *word & (*word >> 1) & (*word >> 2) & (*word >> 3) & 0x1111_1111
            };
            if usable != 0 {
                let i = usable.trailing_zeros() as usize;
                let bits = (((1u64 << n) - 1) as u32) << i;
                *word &= !bits;
                // SAFETY: as above.
                let (released, aged) = unsafe { (&mut *self.released.add(c), &mut *self.aged.add(c)) };
                let released_bytes = ((*released & bits).count_ones() as usize * GRANULE) as u64;
                RELEASED.fetch_sub(released_bytes, Ordering::Relaxed);
                FREE_UNRELEASED.fetch_sub((n * GRANULE) as u64 - released_bytes, Ordering::Relaxed);
                *released &= !bits;
                *aged &= !bits;
                return Some(c * CHUNK_GRANULES + i);
            }
            if *word == 0 && c == self.lowest_free {
                self.lowest_free += 1;
            }
        }
        None
    }

    /// Commits the next chunk of the reservation.
    fn grow(&mut self) -> Option<()> {
        let chunks = GRANULES.load(Ordering::Relaxed) / CHUNK_GRANULES;
        if self.committed == chunks {
            return None;
        }
        let start = granule_base(self.committed * CHUNK_GRANULES);
        // SAFETY: the chunk is inside our reservation and not yet in use.
        if !unsafe { os::commit(start, CHUNK) } {
            return None;
        }
        // SAFETY: committed < chunks, the length of chunk_free.
        unsafe { *self.chunk_free.add(self.committed) = u32::MAX };
        self.committed += 1;
        MAPPED.fetch_add(CHUNK as u64, Ordering::Relaxed);
        FREE_UNRELEASED.fetch_add(CHUNK as u64, Ordering::Relaxed);
        Some(())
    }
}
