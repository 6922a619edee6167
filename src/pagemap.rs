//! The arena and its maps: one reservation of address space holding every
//! span, the class map that gives any pointer's size class in one byte load,
//! the span table, and the page heap that hands out and takes back 64 KiB
//! granules (so an emptied span's memory serves any class), as spans or as
//! the runs of n contiguous granules that hold medium blocks (`medium.rs`).
//!
//! ```text
//!  arena:  | chunk 0 (2 MiB = 32 granules) | chunk 1 | ... committed on demand
//!  granule g = (p - base) >> 16
//!  class_map[g]  class of the span covering g (0: free, large, or foreign),
//!                or RUN_HEAD + n at a medium run's first granule, RUN_BODY after
//!  spans[g]      Span metadata, valid at a span's first granule
//!  chunk_free[c] bit i set: granule c*32+i is free (committed chunks only)
//!  released[c]   bit i set: that free granule's pages went back to the OS
//!  fresh[c]      bit i set: that free granule was never handed out
//!  aged[c]       bit i set: free and backed by pages at chunk c's last decay visit
//! ```
//!
//! Runs never straddle a chunk, so a run is a bit pattern in one word of
//! `chunk_free`; the class map's marker gives a run's start and length in one
//! byte load, and every marker is written under the page heap lock, so a free
//! that re-reads it under the lock cannot race another free of the same run.
//!
//! `release_free` gives free granules' pages back (`madvise`); a granule
//! stays committed, so handing it out again only costs the page faults.
//! `release_aged` is the time-based decay: visited at least a decay period
//! apart, a chunk gives back the granules that stayed free since its last
//! visit. While their pages go back, the granules are taken out of the heap,
//! so the lock is not held across `madvise`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::os;
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::SpinLock;

/// Span granularity: every span is 1 or 4 granules, aligned to its size.
pub const GRANULE_SHIFT: u32 = 16;
/// 64 KiB.
pub const GRANULE: usize = 1 << GRANULE_SHIFT;
/// Granules per chunk, and the longest run (runs never straddle chunks).
pub const CHUNK_GRANULES: usize = 32;
/// The unit of address space made usable at a time: a 2 MiB huge page.
const CHUNK: usize = GRANULE * CHUNK_GRANULES;
/// Reservation sizes tried in turn (`ulimit -v`, overcommit=2 refuse big ones).
const RESERVATIONS: [usize; 5] = [64 << 30, 16 << 30, 4 << 30, 1 << 30, 256 << 20];

/// Class-map byte of a medium run's granules after the first.
const RUN_BODY: u8 = 0x80;
/// Class-map byte of a medium run's first granule, plus its length.
const RUN_HEAD: u8 = 0xC0;
const _: () = assert!(NUM_CLASSES <= RUN_BODY as usize && RUN_HEAD as usize + CHUNK_GRANULES <= u8::MAX as usize);

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
/// Bytes of free granules still backed by pages (neither fresh nor released).
static FREE_BACKED: AtomicU64 = AtomicU64::new(0);
/// `madvise` calls made.
static PURGES: AtomicU64 = AtomicU64::new(0);

struct PageHeap {
    /// `chunk_free` array (one u32 per chunk of the arena).
    chunk_free: *mut u32,
    /// `released` array (one u32 per chunk): subset of the free bits.
    released: *mut u32,
    /// `fresh` array (one u32 per chunk): subset of the free bits.
    fresh: *mut u32,
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
    fresh: core::ptr::null_mut(),
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
        let meta_len = granules + granules * core::mem::size_of::<Span>() + chunks * 16;
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
        heap.fresh = (chunk_free + chunks * 8) as *mut u32;
        heap.aged = (chunk_free + chunks * 12) as *mut u32;
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
    SizeClass::from_index(map_byte(p)? as usize)
}

/// The class-map byte of the granule holding `p` (a size class index, a
/// medium run's marker, or 0), if `p` is inside the arena: C `free` hands
/// it to `SizeClass::object_at` as it is.
#[inline(always)]
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub fn map_byte(p: *const u8) -> Option<u8> {
    granule_of(p).map(class_byte)
}

/// The arena's base address and size in bytes (0, 0 before init).
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub fn arena() -> (usize, usize) {
    (BASE.load(Ordering::Relaxed), GRANULES.load(Ordering::Relaxed) << GRANULE_SHIFT)
}

// Spans are aligned to their size in the arena, which is what lets
// `SizeClass::is_object_start` find an offset in a span by a mask.
const _: () = assert!(CHUNK >= 4 * GRANULE, "spans must not straddle the base alignment");

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
    let (g, _) = HEAP.lock().take_or_grow(n, n, n)?;
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
    HEAP.lock().put(g, n);
}

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

/// Looks `p` up in the class map: one byte load.
#[inline]
pub fn run_at(p: *const u8) -> RunAt {
    let Some(g) = granule_of(p) else { return RunAt::Outside };
    match class_byte(g) {
        byte if byte > RUN_HEAD && p == granule_base(g).cast_const() => {
            RunAt::Start { g, n: (byte - RUN_HEAD) as usize }
        }
        byte if byte >= RUN_BODY => RunAt::Inside,
        _ => RunAt::Outside,
    }
}

/// Takes a run of `n` ≤ CHUNK_GRANULES free granules starting at a multiple
/// of `align` (a power of two ≤ CHUNK_GRANULES), committing a chunk if
/// needed, and marks it in the class map. Where the chosen chunk allows, the
/// run starts where `room` ≥ n granules are free, so that a block expected
/// to grow can do so in place. Returns its first granule and a mask of its
/// granules known to read as zero (bit i: granule g + i was never handed
/// out, or was released since). None when the arena is exhausted.
pub fn alloc_run(n: usize, align: usize, room: usize) -> Option<(usize, u32)> {
    debug_assert!((1..=CHUNK_GRANULES).contains(&n) && align.is_power_of_two() && align <= CHUNK_GRANULES);
    let mut heap = HEAP.lock();
    let (g, clean) = heap.take_or_grow(n, align, room.clamp(n, CHUNK_GRANULES))?;
    mark_run(g, n);
    Some((g, clean))
}

/// Frees the run starting exactly at `p`, re-checking the class map under the
/// lock; returns its length in granules, or None (touching nothing) when `p`
/// is not the start of a live run.
///
/// # Safety
/// If `p` starts a live run, the caller gives the block up.
pub unsafe fn free_run(p: *const u8) -> Option<usize> {
    let mut heap = HEAP.lock();
    let RunAt::Start { g, n } = run_at(p) else { return None };
    set_class(g, n, 0);
    heap.put(g, n);
    Some(n)
}

/// Resizes the live run of `n` granules at `g` to `m` granules in place:
/// shrinking frees its tail; growing takes the free granules after it, if
/// they are free and in the same chunk. Returns whether it did.
///
/// # Safety
/// The run of `n` granules at `g` is live and the caller owns it.
pub unsafe fn resize_run(g: usize, n: usize, m: usize) -> bool {
    let mut heap = HEAP.lock();
    if class_byte(g) != RUN_HEAD + n as u8 {
        return false; // the caller's promise is broken: leave the map alone
    }
    if m < n {
        set_class(g + m, n - m, 0);
        heap.put(g + m, n - m);
    } else if m > n {
        let (c, i) = (g / CHUNK_GRANULES, g % CHUNK_GRANULES);
        if i + m > CHUNK_GRANULES {
            return false;
        }
        let bits = ((1u64 << (m - n)) - 1) as u32;
        // SAFETY: c < committed: the run is in a committed chunk.
        if unsafe { *heap.chunk_free.add(c) } >> (i + n) & bits != bits {
            return false;
        }
        heap.take(c, bits << (i + n));
    }
    mark_run(g, m);
    true
}

fn mark_run(g: usize, n: usize) {
    set_class(g, 1, RUN_HEAD + n as u8);
    set_class(g + 1, n - 1, RUN_BODY);
}

#[inline(always)]
fn class_byte(g: usize) -> u8 {
    // SAFETY: callers pass g < GRANULES, the length of the class map.
    unsafe { *(CLASS_MAP.load(Ordering::Relaxed) as *const u8).add(g) }
}

fn set_class(g: usize, n: usize, byte: u8) {
    let map = CLASS_MAP.load(Ordering::Relaxed) as *mut u8;
    // SAFETY: [g, g + n) is a span inside the arena, whose class bytes only
    // the span's owner writes.
    unsafe { core::ptr::write_bytes(map.add(g), byte, n) };
}

/// Gives the pages of every free granule back to the OS (those still
/// backed) and returns how many bytes that was: the primitive under
/// `release()` and `malloc_trim`.
pub fn release_free() -> usize {
    let chunks = HEAP.lock().committed;
    (0..chunks).map(|c| release_in_chunk(c, |backed, _aged| backed)).sum()
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
    (first..first + visit).map(|c| release_in_chunk(c % committed, |backed, aged| backed & aged)).sum()
}

/// Gives back the granules of chunk `c` that `pick(backed, aged)` selects
/// (`backed`: free, neither fresh nor released), then marks every granule
/// still backed as aged. The granules are taken out of the heap while their
/// pages go back, so no lock is held across `madvise`.
fn release_in_chunk(c: usize, pick: impl Fn(u32, u32) -> u32) -> usize {
    let taken = {
        let heap = HEAP.lock();
        if c >= heap.committed {
            return 0;
        }
        // SAFETY: c < committed ≤ number of chunks, the arrays' length.
        let (free, backed, aged) = unsafe {
            let free = &mut *heap.chunk_free.add(c);
            let backed = *free & !*heap.released.add(c) & !*heap.fresh.add(c);
            (free, backed, &mut *heap.aged.add(c))
        };
        let taken = pick(backed, *aged) & backed;
        *free &= !taken;
        *aged = backed & !taken;
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
    FREE_BACKED.fetch_sub(bytes as u64, Ordering::Relaxed);
    bytes
}

/// Bytes of free granules whose pages are back with the OS.
pub fn released_bytes() -> u64 {
    RELEASED.load(Ordering::Relaxed)
}

/// Bytes of free granules still backed by pages (waiting for the decay).
pub fn free_backed_bytes() -> u64 {
    FREE_BACKED.load(Ordering::Relaxed)
}

/// `madvise` calls made to give pages back.
pub fn purge_count() -> u64 {
    PURGES.load(Ordering::Relaxed)
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

/// The positions in `free` (bit i: granule i of a chunk is free) where a run
/// of `n` free granules starts at a multiple of `align` (powers of two ≤ 32).
/// Bit i survives where granules i..i+len are all free, doubling len; bits
/// shifted in from above are zero, so no run leaves the chunk.
fn run_starts(free: u32, n: usize, align: usize) -> u32 {
    /// Per log2(align): the bit positions that are multiples of align.
    const ALIGNED: [u32; 6] = [u32::MAX, 0x5555_5555, 0x1111_1111, 0x0101_0101, 0x0001_0001, 1];
    let (mut starts, mut len) = (free, 1);
    while 2 * len <= n {
        starts &= starts >> len;
        len *= 2;
    }
    if len < n {
        starts &= starts >> (n - len);
    }
    starts & ALIGNED[align.trailing_zeros() as usize]
}

impl PageHeap {
    /// `find`, committing a new chunk if no committed one has room.
    fn take_or_grow(&mut self, n: usize, align: usize, room: usize) -> Option<(usize, u32)> {
        self.find(n, align, room).or_else(|| self.grow().and_then(|_| self.find(n, align, room)))
    }

    /// Finds and takes `n` free granules starting at a multiple of `align`:
    /// address-ordered first fit, as jemalloc places extents, except that the
    /// lowest start followed by `room` > n free granules wins if any chunk
    /// has one (then every committed chunk may be visited). Returns the first
    /// granule and the run's clean mask (see `alloc_run`). A few word
    /// operations per chunk visited.
    fn find(&mut self, n: usize, align: usize, room: usize) -> Option<(usize, u32)> {
        let mut first_fit = None;
        for c in self.lowest_free..self.committed {
            // SAFETY: c < committed ≤ number of chunks.
            let word = unsafe { *self.chunk_free.add(c) };
            if word == 0 && c == self.lowest_free {
                self.lowest_free += 1;
            }
            if (word.count_ones() as usize) < n {
                continue;
            }
            let starts = run_starts(word, n, align);
            if starts == 0 {
                continue;
            }
            let roomy = if room > n { run_starts(word, room, align) } else { starts };
            if roomy != 0 {
                return Some(self.take_run(c, roomy.trailing_zeros() as usize, n));
            }
            first_fit = first_fit.or(Some((c, starts.trailing_zeros() as usize)));
        }
        first_fit.map(|(c, i)| self.take_run(c, i, n))
    }

    /// Takes the `n` free granules from granule `i` of chunk `c`; returns
    /// the first and the run's clean mask.
    fn take_run(&mut self, c: usize, i: usize, n: usize) -> (usize, u32) {
        let clean = self.take(c, (((1u64 << n) - 1) as u32) << i);
        (c * CHUNK_GRANULES + i, clean >> i)
    }

    /// Takes the free granules `bits` of chunk `c`; returns which of them
    /// read as zero (fresh or released).
    fn take(&mut self, c: usize, bits: u32) -> u32 {
        // SAFETY: the caller passes c < committed ≤ number of chunks.
        let (word, released, fresh, aged) = unsafe {
            let aged = &mut *self.aged.add(c);
            (&mut *self.chunk_free.add(c), &mut *self.released.add(c), &mut *self.fresh.add(c), aged)
        };
        debug_assert_eq!(*word & bits, bits);
        *word &= !bits;
        RELEASED.fetch_sub(((*released & bits).count_ones() as usize * GRANULE) as u64, Ordering::Relaxed);
        let clean = (*released | *fresh) & bits;
        FREE_BACKED.fetch_sub(((bits & !clean).count_ones() as usize * GRANULE) as u64, Ordering::Relaxed);
        *released &= !bits;
        *fresh &= !bits;
        *aged &= !bits;
        clean
    }

    /// Gives back the `n` granules from `g` (inside one chunk).
    fn put(&mut self, g: usize, n: usize) {
        let chunk = g / CHUNK_GRANULES;
        let bits = ((1u64 << n) - 1) as u32;
        // SAFETY: chunk < committed because g came from the heap.
        unsafe { *self.chunk_free.add(chunk) |= bits << (g % CHUNK_GRANULES) };
        self.lowest_free = self.lowest_free.min(chunk);
        FREE_BACKED.fetch_add((n * GRANULE) as u64, Ordering::Relaxed);
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
        unsafe {
            *self.chunk_free.add(self.committed) = u32::MAX;
            *self.fresh.add(self.committed) = u32::MAX;
        }
        self.committed += 1;
        MAPPED.fetch_add(CHUNK as u64, Ordering::Relaxed);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn run_starts_are_exactly_the_aligned_free_runs(free: u32, n in 1usize..=32, shift in 0u32..=5) {
            let align = 1usize << shift;
            let want = (0..32usize)
                .filter(|&i| i % align == 0 && i + n <= 32 && (i..i + n).all(|j| free >> j & 1 == 1))
                .fold(0u32, |m, i| m | 1 << i);
            prop_assert_eq!(run_starts(free, n, align), want);
        }
    }

    #[cfg(not(feature = "capi"))]
    fn is_free(g: usize, n: usize) -> bool {
        let heap = HEAP.lock();
        let bits = ((1u64 << n) - 1) as u32;
        // SAFETY: g is a granule of a committed chunk (it held a run).
        unsafe { *heap.chunk_free.add(g / CHUNK_GRANULES) >> (g % CHUNK_GRANULES) & bits == bits }
    }

    // With the C API, libtest's own mallocs share the page heap and could take
    // a granule between a free and the check that it is free.
    #[cfg(not(feature = "capi"))]
    #[test]
    fn runs_are_marked_aligned_resized_and_freed_once() {
        assert!(crate::init::ensure());
        for n in [1, 2, 3, 5, 16, 17, 32] {
            for align in [1, 2, 8, 32] {
                let (g, _) = alloc_run(n, align, n).expect("arena space");
                let p = granule_base(g);
                assert_eq!(g % align, 0, "run of {n} at {g} not aligned to {align} granules");
                assert!(!is_free(g, 1));
                assert_eq!(run_at(p), RunAt::Start { g, n });
                assert_eq!(class_of(p), None, "a run is not a size class");
                assert_eq!(run_at(p.wrapping_add(16)), RunAt::Inside);
                assert_eq!(run_at(p.wrapping_add(n * GRANULE - 1)), RunAt::Inside);
                if n > 1 {
                    assert_eq!(run_at(p.wrapping_add(GRANULE)), RunAt::Inside);
                    // SAFETY: the run is live and ours.
                    assert!(unsafe { resize_run(g, n, 1) });
                    assert!(is_free(g + 1, n - 1), "a shrink frees the tail");
                    assert_eq!(run_at(p), RunAt::Start { g, n: 1 });
                    // SAFETY: as above.
                    assert!(unsafe { resize_run(g, 1, n) }, "the freed tail can be taken back");
                    assert_eq!(run_at(p), RunAt::Start { g, n });
                    // SAFETY: as above. Not past the end of the chunk.
                    assert!(!unsafe { resize_run(g, n, CHUNK_GRANULES + 1 - g % CHUNK_GRANULES) });
                }
                // SAFETY: the run is ours; interior pointers are refused.
                unsafe {
                    assert_eq!(free_run(p.wrapping_add(GRANULE * (n - 1) + 64)), None);
                    assert_eq!(free_run(p), Some(n));
                    assert_eq!(free_run(p), None, "freed twice");
                }
                assert!(is_free(g, n), "a freed run's granules are free again");
                assert_eq!(run_at(p), RunAt::Outside);
            }
        }
    }
}
