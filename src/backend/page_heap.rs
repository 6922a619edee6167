//! The page heap: hands out and takes back the arena's 64 KiB granules, as
//! spans for the central slab (so an emptied span's memory serves any
//! class) or as the runs of n contiguous granules that hold medium blocks,
//! and gives free granules' pages back to the OS.
//!
//! ```text
//!  chunks[c]     the bits for granules c*32 .. c*32+31:
//!    free        bit i set: granule i is free (committed chunks only)
//!    released    bit i set: that free granule's pages went back to the OS
//!    fresh       bit i set: that free granule was never handed out
//!    aged        bit i set: free and backed by pages at the chunk's last decay visit
//! ```
//!
//! Runs never straddle a chunk (nor so a reservation), so a run is a bit
//! pattern in one `free` word; the class map's marker gives a run's start
//! and length in one byte load, and every marker is written under the page
//! heap lock (the lock's state holds the map's `ClassWriter`), so a free
//! that re-reads it under the lock cannot race another free of the same run.
//!
//! `release_free` gives free granules' pages back (`madvise`); a granule
//! stays committed, so handing it out again only costs the page faults.
//! `release_aged` is the time-based decay: visited at least a decay period
//! apart, a chunk gives back the granules that stayed free since its last
//! visit. While their pages go back, the granules are taken out of the heap,
//! so the lock is not held across `madvise`.
//!
//! The process has one page heap, `HEAP`; a test may build its own over an
//! arena of its own (`PageHeap::create`).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::arena::{self, Arena, ArenaCounters, CHUNK_ENTRY};
use crate::backend::pagemap::{ClassWriter, PageMap, RunAt, CHUNK_GRANULES, GRANULE};
use crate::platform::os;
use crate::platform::size_class::SizeClass;
use crate::platform::sync::{SpinGuard, SpinLock};

/// The page heap's bits for one chunk (module doc); all zero for a chunk
/// that is not ours or not yet committed.
#[repr(C)]
struct Chunk {
    free: u32,
    /// Subset of `free`.
    released: u32,
    /// Subset of `free`.
    fresh: u32,
    /// Subset of `free`.
    aged: u32,
}
const _: () = assert!(core::mem::size_of::<Chunk>() == CHUNK_ENTRY);

/// A page heap over one arena, with the arena's class map and span table.
pub struct PageHeap {
    map: PageMap,
    arena: ArenaCounters,
    state: SpinLock<HeapState>,
    /// Bytes of free granules whose pages went back to the OS.
    released: AtomicU64,
    /// Bytes of free granules still backed by pages (neither fresh nor released).
    free_backed: AtomicU64,
    /// `madvise` calls made.
    purges: AtomicU64,
    /// Times granules went back to the heap (`heap_frees`).
    heap_frees: AtomicU64,
    /// The decay period in ns (0: no time-based decay), and when the last
    /// decay step began (`decay_step`).
    decay_ns: AtomicU64,
    last_decay: AtomicU64,
}

/// What the page heap lock guards.
struct HeapState {
    arena: Arena,
    /// The right to write the class map.
    writer: ClassWriter,
    /// The chunk table (one `Chunk` per chunk of the window).
    chunks: *mut Chunk,
    /// Where the next `release_aged` visit starts (a `Visit` number).
    cursor: usize,
    /// No chunk below this has a free granule.
    lowest_free: usize,
    /// Gives back memory kept above the heap for reuse (the central slab's
    /// spare spans) before the heap grows: `init`'s argument.
    before_grow: Option<fn()>,
}

// SAFETY: the raw pointer is to the arena's tables, which live as long as
// the heap; the lock serialises use.
unsafe impl Send for HeapState {}

/// The page heap locked: what its bitmap operations need, so that only a
/// holder of the lock can call them.
struct HeapGuard<'h> {
    heap: &'h PageHeap,
    state: SpinGuard<'h, HeapState>,
}

/// The process's page heap.
pub static HEAP: PageHeap = PageHeap::new();

impl PageHeap {
    /// A page heap with no arena yet (every lookup in its map misses).
    pub const fn new() -> PageHeap {
        let (map, writer) = PageMap::new();
        PageHeap {
            map,
            arena: ArenaCounters::new(),
            state: SpinLock::new(HeapState {
                arena: Arena::new(),
                writer,
                chunks: core::ptr::null_mut(),
                cursor: 0,
                lowest_free: 0,
                before_grow: None,
            }),
            released: AtomicU64::new(0),
            free_backed: AtomicU64::new(0),
            purges: AtomicU64::new(0),
            heap_frees: AtomicU64::new(0),
            decay_ns: AtomicU64::new(0),
            last_decay: AtomicU64::new(0),
        }
    }

    /// Creates the arena sized for the process (its address-space limit):
    /// its tables and first reservation. Called once, by init, with what
    /// gives back memory kept for reuse above the heap before it grows
    /// (called without the heap lock, so it may free spans); false when the
    /// kernel refuses even a chunk.
    pub fn init(&self, before_grow: fn()) -> bool {
        let limit = os::address_space_limit();
        self.state.lock().before_grow = Some(before_grow);
        self.create(arena::window_size(limit), arena::reservation_size(limit))
    }

    /// Creates an arena of `window` bytes (a power of two, at least a chunk)
    /// growing by reservations of `step` bytes (a multiple of a chunk).
    /// Called once per heap; false when the kernel refuses even a chunk.
    pub fn create(&self, window: usize, step: usize) -> bool {
        let mut state = self.state.lock();
        if !state.arena.create(&self.map, &self.arena, window, step) {
            return false;
        }
        state.chunks = state.arena.chunk_table().cast();
        true
    }

    /// The class map and span table of the heap's arena.
    #[inline(always)]
    pub fn map(&self) -> &PageMap {
        &self.map
    }

    fn lock(&self) -> HeapGuard<'_> {
        HeapGuard { heap: self, state: self.state.lock() }
    }

    /// Takes a span for `class`, committing a new chunk if needed, and
    /// records its class. Returns its first granule, or None when the arena
    /// is exhausted or the kernel refuses memory.
    pub fn alloc_span(&self, class: SizeClass) -> Option<usize> {
        let n = class.span_granules();
        let (g, _) = self.take_or_grow(n, n, n, |map, w, g| map.mark_span(w, g, n, class))?;
        Some(g)
    }

    /// Returns the `class` span starting at `g`.
    ///
    /// # Safety
    /// No object of the span is in use or cached anywhere, and the span's
    /// metadata is no longer linked into any list.
    pub unsafe fn free_span(&self, g: usize, class: SizeClass) {
        let n = class.span_granules();
        let mut heap = self.lock();
        self.map.clear(&mut heap.state.writer, g, n);
        heap.put(g, n);
    }

    /// Takes a run of `n` ≤ CHUNK_GRANULES free granules starting at a
    /// multiple of `align` (a power of two ≤ CHUNK_GRANULES), committing a
    /// chunk if needed, and marks it in the class map. Where the chosen chunk
    /// allows, the run starts where `room` ≥ n granules are free, so that a
    /// block expected to grow can do so in place. Returns its first granule
    /// and a mask of its granules known to read as zero (bit i: granule g + i
    /// was never handed out, or was released since). None when the arena is
    /// exhausted.
    pub fn alloc_run(&self, n: usize, align: usize, room: usize) -> Option<(usize, u32)> {
        debug_assert!((1..=CHUNK_GRANULES).contains(&n) && align.is_power_of_two() && align <= CHUNK_GRANULES);
        self.take_or_grow(n, align, room.clamp(n, CHUNK_GRANULES), |map, w, g| map.mark_run(w, g, n))
    }

    /// `HeapGuard::take_or_grow`, but when no free granules fit, first asks
    /// what was kept for reuse above the heap to come back (`init`), outside
    /// the lock, and looks again. `claim(map, writer, first granule)` marks
    /// the granules taken, under the lock.
    fn take_or_grow(
        &self,
        n: usize,
        align: usize,
        room: usize,
        claim: impl Fn(&PageMap, &mut ClassWriter, usize),
    ) -> Option<(usize, u32)> {
        let before_grow = {
            let mut heap = self.lock();
            if let Some(found) = heap.find(n, align, room) {
                claim(&self.map, &mut heap.state.writer, found.0);
                return Some(found);
            }
            heap.state.before_grow
        };
        if let Some(give_back) = before_grow {
            give_back();
        }
        let mut heap = self.lock();
        let found = heap.take_or_grow(n, align, room)?;
        claim(&self.map, &mut heap.state.writer, found.0);
        Some(found)
    }

    /// Frees the run starting exactly at `p`, re-checking the class map under
    /// the lock; returns its length in granules, or None (touching nothing)
    /// when `p` is not the start of a live run.
    ///
    /// # Safety
    /// If `p` starts a live run, the caller gives the block up.
    pub unsafe fn free_run(&self, p: *const u8) -> Option<usize> {
        let mut heap = self.lock();
        let RunAt::Start { g, n } = self.map.run_at(p) else { return None };
        self.map.clear(&mut heap.state.writer, g, n);
        heap.put(g, n);
        Some(n)
    }

    /// Resizes the live run of `n` granules at `g` to `m` granules in place:
    /// shrinking frees its tail; growing takes the free granules after it, if
    /// they are free and in the same chunk. Returns whether it did.
    ///
    /// # Safety
    /// The run of `n` granules at `g` is live and the caller owns it.
    pub unsafe fn resize_run(&self, g: usize, n: usize, m: usize) -> bool {
        let mut heap = self.lock();
        if !self.map.is_run(g, n) {
            return false; // the caller's promise is broken: leave the map alone
        }
        if m < n {
            self.map.clear(&mut heap.state.writer, g + m, n - m);
            heap.put(g + m, n - m);
        } else if m > n {
            let (c, i) = (g / CHUNK_GRANULES, g % CHUNK_GRANULES);
            if i + m > CHUNK_GRANULES {
                return false;
            }
            let bits = ((1u64 << (m - n)) - 1) as u32;
            if heap.chunk(c).free >> (i + n) & bits != bits {
                return false;
            }
            heap.take(c, bits << (i + n));
        }
        self.map.mark_run(&mut heap.state.writer, g, m);
        true
    }

    /// Gives the pages of every free granule back to the OS (those still
    /// backed) and returns how many bytes that was: the primitive under
    /// `release()` and `malloc_trim`.
    pub fn release_free(&self) -> usize {
        let visit = Visit::of(&self.lock().state.arena);
        (0..visit.len).map(|i| self.release_in_chunk(visit.chunk(i), |backed, _aged| backed)).sum()
    }

    /// One step of the time-based decay: visits up to `max_chunks` chunks
    /// (round robin over every reservation), gives back the granules that
    /// stayed free since the chunk's last visit, and remembers which are free
    /// now. Call it at most once per decay period. Returns the bytes given
    /// back.
    pub fn release_aged(&self, max_chunks: usize) -> usize {
        let (visit, first, count) = {
            let mut heap = self.lock();
            let visit = Visit::of(&heap.state.arena);
            if visit.len == 0 {
                return 0;
            }
            let first = heap.state.cursor % visit.len;
            let count = max_chunks.min(visit.len);
            heap.state.cursor = (first + count) % visit.len;
            (visit, first, count)
        };
        (first..first + count)
            .map(|i| self.release_in_chunk(visit.chunk(i % visit.len), |backed, aged| backed & aged))
            .sum()
    }

    /// Sets the decay period (`RSEQALLOC_DECAY_MS`, in ns; 0 turns the
    /// time-based decay off).
    pub fn set_decay_ns(&self, ns: u64) {
        self.decay_ns.store(ns, Ordering::Relaxed);
    }

    /// The decay period in ns (0: none).
    pub fn decay_ns(&self) -> u64 {
        self.decay_ns.load(Ordering::Relaxed)
    }

    /// The time-based decay at time `now`: if a decay period passed since the
    /// last step, claims this one (one caller per period, whichever thread
    /// comes first) and runs `release_aged(max_chunks)`. Returns whether it ran.
    pub fn decay_step(&self, now: u64, max_chunks: usize) -> bool {
        let decay = self.decay_ns();
        let last = self.last_decay.load(Ordering::Relaxed);
        let due = decay != 0
            && now.saturating_sub(last) >= decay
            && self.last_decay.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        if due {
            self.release_aged(max_chunks);
        }
        due
    }

    /// How many times granules went back to the heap (an emptied span, a
    /// freed or shrunk medium run): a caller that saw it change knows the
    /// heap grew.
    pub fn heap_frees(&self) -> u64 {
        self.heap_frees.load(Ordering::Relaxed)
    }

    /// Gives back the granules of chunk `c` that `pick(backed, aged)` selects
    /// (`backed`: free, neither fresh nor released), then marks every
    /// granule still backed as aged. The granules are taken out of the heap
    /// while their pages go back, so no lock is held across `madvise`.
    fn release_in_chunk(&self, c: usize, pick: impl Fn(u32, u32) -> u32) -> usize {
        let (taken, chunk_base) = {
            let mut heap = self.lock();
            if heap.chunk(c).free == 0 {
                return 0; // nothing free (or not ours: its entry may be read-only)
            }
            let chunk = heap.chunk_mut(c);
            let backed = chunk.free & !chunk.released & !chunk.fresh;
            let taken = pick(backed, chunk.aged) & backed;
            chunk.free &= !taken;
            chunk.aged = backed & !taken;
            (taken, heap.state.arena.chunk_base(c))
        };
        if taken == 0 {
            return 0;
        }
        let mut given_back = 0;
        let mut todo = taken;
        while todo != 0 {
            let start = todo.trailing_zeros();
            let run = (todo >> start).trailing_ones();
            let bits = ((1u64 << run) - 1) as u32;
            // SAFETY: the granules are free (no span, no object) and taken out
            // of the heap, inside a committed chunk of one of our reservations.
            if unsafe { os::release(chunk_base.add(start as usize * GRANULE), run as usize * GRANULE) } {
                given_back |= bits << start;
            }
            self.purges.fetch_add(1, Ordering::Relaxed);
            todo &= !(bits << start);
        }
        let mut heap = self.lock();
        let chunk = heap.chunk_mut(c);
        chunk.free |= taken;
        chunk.released |= given_back;
        heap.state.lowest_free = heap.state.lowest_free.min(c);
        let bytes = given_back.count_ones() as usize * GRANULE;
        self.released.fetch_add(bytes as u64, Ordering::Relaxed);
        self.free_backed.fetch_sub(bytes as u64, Ordering::Relaxed);
        bytes
    }

    /// Bytes of free granules whose pages are back with the OS.
    pub fn released_bytes(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Bytes of free granules still backed by pages (waiting for the decay).
    pub fn free_backed_bytes(&self) -> u64 {
        self.free_backed.load(Ordering::Relaxed)
    }

    /// `madvise` calls made to give pages back.
    pub fn purge_count(&self) -> u64 {
        self.purges.load(Ordering::Relaxed)
    }

    /// Bytes of the arena made read-write so far.
    pub fn mapped_bytes(&self) -> u64 {
        self.arena.mapped_bytes()
    }

    /// Reservations of address space made so far (the first included).
    #[cfg(any(test, rseqalloc_test_hooks))]
    pub fn reservations(&self) -> u64 {
        self.arena.reservations()
    }

    /// Takes the page heap lock (fork prepare).
    pub fn lock_all(&self) {
        self.state.acquire();
    }

    /// Drops the lock `lock_all` took.
    ///
    /// # Safety
    /// As for `SpinLock::release`: this thread called `lock_all`.
    pub unsafe fn unlock_all(&self) {
        // SAFETY: the caller's guarantee.
        unsafe { self.state.release() }
    }
}

/// The chunks that may hold free granules, numbered `0..len`: the arena's
/// chunks less the newest reservation's chunks not yet committed (up to a
/// whole reservation, which the decay's bounded steps would otherwise spend
/// their visits on). A snapshot: a chunk committed since is visited next time.
#[derive(Clone, Copy)]
struct Visit {
    lo: usize,
    len: usize,
    /// The first uncommitted chunk, and how many follow it.
    gap: usize,
    skip: usize,
}

impl Visit {
    fn of(arena: &Arena) -> Visit {
        Visit::over(arena.chunks(), arena.uncommitted())
    }

    fn over(chunks: core::ops::Range<usize>, uncommitted: core::ops::Range<usize>) -> Visit {
        let skip = uncommitted.len();
        Visit { lo: chunks.start, len: chunks.len() - skip, gap: uncommitted.start, skip }
    }

    /// The `i`th chunk (i < len).
    fn chunk(self, i: usize) -> usize {
        let c = self.lo + i;
        if c >= self.gap {
            c + self.skip
        } else {
            c
        }
    }
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

impl HeapGuard<'_> {
    /// Chunk `c`'s bits (zero for a chunk that is not ours).
    fn chunk(&self, c: usize) -> &Chunk {
        debug_assert!(c < self.state.arena.granules() / CHUNK_GRANULES);
        // SAFETY: c is a chunk of the window, so inside the chunk table,
        // which is mapped (readable) for the whole window.
        unsafe { &*self.state.chunks.add(c) }
    }

    /// Chunk `c`'s bits, to change.
    ///
    /// Only chunks of our reservations may be changed: their table entries
    /// were made writable when the reservation was adopted.
    fn chunk_mut(&mut self, c: usize) -> &mut Chunk {
        debug_assert!(self.state.arena.chunks().contains(&c));
        // SAFETY: as in `chunk`; the caller passes a chunk of a reservation
        // (debug-checked), whose entry is writable; `&mut self` holds the lock.
        unsafe { &mut *self.state.chunks.add(c) }
    }

    /// `find`, committing a new chunk if no committed one has room.
    fn take_or_grow(&mut self, n: usize, align: usize, room: usize) -> Option<(usize, u32)> {
        self.find(n, align, room).or_else(|| self.grow().and_then(|_| self.find(n, align, room)))
    }

    /// Finds and takes `n` free granules starting at a multiple of `align`:
    /// address-ordered first fit, as jemalloc places extents, except that the
    /// lowest start followed by `room` > n free granules wins if any chunk
    /// has one (then every chunk may be visited). Returns the first granule
    /// and the run's clean mask (see `alloc_run`). A few word operations per
    /// chunk visited (chunks that are not ours read as full).
    fn find(&mut self, n: usize, align: usize, room: usize) -> Option<(usize, u32)> {
        let mut first_fit = None;
        let chunks = self.state.arena.chunks();
        self.state.lowest_free = self.state.lowest_free.max(chunks.start);
        for c in self.state.lowest_free..chunks.end {
            let word = self.chunk(c).free;
            if word == 0 && c == self.state.lowest_free {
                self.state.lowest_free += 1;
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
        let heap = self.heap;
        let chunk = self.chunk_mut(c);
        debug_assert_eq!(chunk.free & bits, bits);
        chunk.free &= !bits;
        let clean = (chunk.released | chunk.fresh) & bits;
        heap.released.fetch_sub(((chunk.released & bits).count_ones() as usize * GRANULE) as u64, Ordering::Relaxed);
        heap.free_backed.fetch_sub(((bits & !clean).count_ones() as usize * GRANULE) as u64, Ordering::Relaxed);
        chunk.released &= !bits;
        chunk.fresh &= !bits;
        chunk.aged &= !bits;
        clean
    }

    /// Gives back the `n` granules from `g` (inside one chunk).
    fn put(&mut self, g: usize, n: usize) {
        let c = g / CHUNK_GRANULES;
        self.chunk_mut(c).free |= (((1u64 << n) - 1) as u32) << (g % CHUNK_GRANULES);
        self.state.lowest_free = self.state.lowest_free.min(c);
        self.heap.free_backed.fetch_add((n * GRANULE) as u64, Ordering::Relaxed);
        self.heap.heap_frees.fetch_add(1, Ordering::Relaxed);
    }

    /// Commits the next chunk of the arena, all its granules free and fresh.
    fn grow(&mut self) -> Option<()> {
        let c = self.state.arena.grow(&self.heap.arena)?;
        let chunk = self.chunk_mut(c);
        (chunk.free, chunk.fresh) = (u32::MAX, u32::MAX);
        self.state.lowest_free = self.state.lowest_free.min(c);
        Some(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::arena::CHUNK;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec::Vec;

    /// A page heap of its own over a fresh 64 MiB window that grows by
    /// 4 MiB reservations: what the other layers' unit tests build on.
    pub(crate) fn test_heap() -> Box<PageHeap> {
        heap_over(64 << 20, 4 << 20)
    }

    fn heap_over(window: usize, step: usize) -> Box<PageHeap> {
        let heap = Box::new(PageHeap::new());
        assert!(heap.create(window, step), "the kernel refused a test arena");
        heap
    }

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

    #[test]
    fn a_visit_skips_the_uncommitted_chunks_of_the_newest_reservation() {
        // Reservations [10, 16) (newest, committed up to 12) and [16, 30).
        let visit = Visit::over(10..30, 12..16);
        let chunks: Vec<usize> = (0..visit.len).map(|i| visit.chunk(i)).collect();
        assert_eq!(chunks, (10..12).chain(16..30).collect::<Vec<_>>());
    }

    fn is_free(heap: &PageHeap, g: usize, n: usize) -> bool {
        let guard = heap.lock();
        let bits = ((1u64 << n) - 1) as u32;
        guard.chunk(g / CHUNK_GRANULES).free >> (g % CHUNK_GRANULES) & bits == bits
    }

    #[test]
    fn runs_are_marked_aligned_resized_and_freed_once() {
        let heap = test_heap();
        let map = heap.map();
        for n in [1, 2, 3, 5, 16, 17, 32] {
            for align in [1, 2, 8, 32] {
                let (g, _) = heap.alloc_run(n, align, n).expect("arena space");
                let p = map.granule_base(g);
                assert_eq!(g % align, 0, "run of {n} at {g} not aligned to {align} granules");
                assert!(!is_free(&heap, g, 1));
                assert_eq!(map.run_at(p), RunAt::Start { g, n });
                assert_eq!(map.class_of(p), None, "a run is not a size class");
                assert_eq!(map.run_at(p.wrapping_add(16)), RunAt::Inside);
                assert_eq!(map.run_at(p.wrapping_add(n * GRANULE - 1)), RunAt::Inside);
                if n > 1 {
                    assert_eq!(map.run_at(p.wrapping_add(GRANULE)), RunAt::Inside);
                    // SAFETY: the run is live and ours.
                    assert!(unsafe { heap.resize_run(g, n, 1) });
                    assert!(is_free(&heap, g + 1, n - 1), "a shrink frees the tail");
                    assert_eq!(map.run_at(p), RunAt::Start { g, n: 1 });
                    // SAFETY: as above.
                    assert!(unsafe { heap.resize_run(g, 1, n) }, "the freed tail can be taken back");
                    assert_eq!(map.run_at(p), RunAt::Start { g, n });
                    // SAFETY: as above. Not past the end of the chunk.
                    assert!(!unsafe { heap.resize_run(g, n, CHUNK_GRANULES + 1 - g % CHUNK_GRANULES) });
                }
                // SAFETY: the run is ours; interior pointers are refused.
                unsafe {
                    assert_eq!(heap.free_run(p.wrapping_add(GRANULE * (n - 1) + 64)), None);
                    assert_eq!(heap.free_run(p), Some(n));
                    assert_eq!(heap.free_run(p), None, "freed twice");
                }
                assert!(is_free(&heap, g, n), "a freed run's granules are free again");
                assert_eq!(map.run_at(p), RunAt::Outside);
            }
        }
    }

    #[test]
    fn spans_are_aligned_classed_and_their_granules_come_back() {
        let heap = test_heap();
        let map = heap.map();
        for class in SizeClass::all() {
            let n = class.span_granules();
            let g = heap.alloc_span(class).expect("arena space");
            assert_eq!(g % n, 0, "a span is aligned to its size");
            let p = map.granule_base(g);
            assert_eq!(map.class_of(p), Some(class));
            assert_eq!(map.class_of(p.wrapping_add(n * GRANULE - 1)), Some(class));
            assert_eq!(map.class_of(p.wrapping_add(n * GRANULE)), None);
            assert_eq!(map.run_at(p), RunAt::Outside, "a span is not a run");
            // SAFETY: the span is fresh and ours; its memory is committed.
            unsafe { p.add(n * GRANULE - 1).write(7) };
            // SAFETY: nothing of the span is in use.
            unsafe { heap.free_span(g, class) };
            assert_eq!(map.class_of(p), None);
            assert!(is_free(&heap, g, n));
        }
        assert_eq!(heap.mapped_bytes(), CHUNK as u64, "freed spans are reused, so one chunk serves them all");
    }

    #[test]
    fn freed_granules_coalesce_into_a_whole_chunk() {
        let heap = test_heap();
        let firsts: Vec<usize> = (0..CHUNK_GRANULES).map(|_| heap.alloc_run(1, 1, 1).expect("space").0).collect();
        assert_eq!(heap.mapped_bytes(), CHUNK as u64);
        let lowest = *firsts.iter().min().unwrap();
        assert_eq!(lowest % CHUNK_GRANULES, 0, "first fit fills the chunk from its start");
        // Free in an order that leaves holes until the last free.
        for i in (0..CHUNK_GRANULES).step_by(2).chain((1..CHUNK_GRANULES).step_by(2)) {
            // SAFETY: each run is ours and freed once.
            assert_eq!(unsafe { heap.free_run(heap.map().granule_base(firsts[i])) }, Some(1));
        }
        let (g, _) = heap.alloc_run(CHUNK_GRANULES, 1, CHUNK_GRANULES).expect("space");
        assert_eq!(g, lowest, "the freed granules make one whole-chunk run again");
        assert_eq!(heap.mapped_bytes(), CHUNK as u64, "no new chunk was committed");
    }

    #[test]
    fn accounting_follows_granules_through_free_release_and_reuse() {
        let heap = test_heap();
        let map = heap.map();
        let (g, clean) = heap.alloc_run(4, 1, 4).expect("space");
        assert_eq!(clean, 0b1111, "fresh granules read as zero");
        let p = map.granule_base(g);
        // SAFETY: the run is ours and 4 granules long.
        unsafe { core::ptr::write_bytes(p, 0xAB, 4 * GRANULE) };
        assert_eq!(heap.free_backed_bytes(), 0, "fresh granules are not counted as backed");
        // SAFETY: the run is ours.
        unsafe { heap.resize_run(g, 4, 1) };
        assert_eq!(heap.free_backed_bytes(), 3 * GRANULE as u64, "the freed tail is backed");

        // The decay: the first visit only marks the free granules aged.
        assert_eq!(heap.release_aged(usize::MAX), 0);
        assert_eq!(heap.release_aged(usize::MAX), 3 * GRANULE, "granules free since the last visit go back");
        assert_eq!((heap.released_bytes(), heap.free_backed_bytes()), (3 * GRANULE as u64, 0));
        assert!(heap.purge_count() >= 1);

        // Taking the released granules back: they read as zero, and say so.
        // SAFETY: the run is ours.
        assert!(unsafe { heap.resize_run(g, 1, 4) });
        assert_eq!(heap.released_bytes(), 0);
        // SAFETY: granules 1..4 of the run are ours again.
        let tail = unsafe { core::slice::from_raw_parts(p.add(GRANULE), 3 * GRANULE) };
        assert!(tail.iter().all(|&b| b == 0), "released pages come back zeroed");

        // SAFETY: the run is ours.
        assert_eq!(unsafe { heap.free_run(p) }, Some(4));
        assert_eq!(heap.free_backed_bytes(), 4 * GRANULE as u64);
        assert_eq!(heap.release_free(), 4 * GRANULE, "release_free gives back every backed granule");
        assert_eq!(heap.release_free(), 0, "and nothing twice");
        let (g2, clean) = heap.alloc_run(4, 1, 4).expect("space");
        assert_eq!((g2, clean), (g, 0b1111), "released granules are handed out as clean");
    }

    #[test]
    fn the_heap_grows_by_reservations_and_stops_at_the_window() {
        // An 8 MiB window of 2 MiB reservations: at most four chunks.
        let heap = heap_over(8 << 20, 2 << 20);
        let (base, bytes) = heap.map().window();
        assert_eq!(bytes, 8 << 20);
        let mut runs = Vec::new();
        while let Some((g, _)) = heap.alloc_run(CHUNK_GRANULES, 1, CHUNK_GRANULES) {
            let p = heap.map().granule_base(g) as usize;
            assert!(p >= base && p + CHUNK <= base + bytes, "every chunk lies in the window");
            runs.push(p);
            assert!(runs.len() <= 4, "more chunks than the window holds");
        }
        assert!(!runs.is_empty());
        assert_eq!(heap.mapped_bytes(), (runs.len() * CHUNK) as u64);
        assert_eq!(heap.reservations(), runs.len() as u64, "one reservation per chunk here");
        // SAFETY: the run is ours.
        assert_eq!(unsafe { heap.free_run(runs[0] as *const u8) }, Some(CHUNK_GRANULES));
        assert!(heap.alloc_run(1, 1, 1).is_some(), "a freed chunk serves again once the window is full");
    }
}
