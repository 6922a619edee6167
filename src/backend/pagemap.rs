//! The arena and its maps: a window of address space in which the heap
//! grows by reservations, the class map that gives any pointer's size class
//! in one byte load, the span table, and the page heap that hands out and
//! takes back 64 KiB granules (so an emptied span's memory serves any
//! class), as spans or as the runs of n contiguous granules that hold
//! medium blocks (`medium`).
//!
//! ```text
//!  window: | foreign | reservation | foreign | reservation (first) |
//!          ^ base     chunks of 2 MiB = 32 granules, committed on demand
//!  granule g = (p - base) >> 16
//!  class_map[g]  class of the span covering g (0: free, large, or foreign),
//!                or RUN_HEAD + n at a medium run's first granule, RUN_BODY after
//!  spans[g]      Span metadata, valid at a span's first granule
//!  chunks[c]     the page heap's bits for granules c*32 .. c*32+31:
//!    free        bit i set: granule i is free (committed chunks only)
//!    released    bit i set: that free granule's pages went back to the OS
//!    fresh       bit i set: that free granule was never handed out
//!    aged        bit i set: free and backed by pages at the chunk's last decay visit
//! ```
//!
//! The window is fixed at init: twice the address-space limit in force
//! (`ulimit -v`) rounded up to a power of two, or without a limit eight
//! times RAM plus swap (at least 1 TiB), so the heap can grow to whatever
//! the process may map, while the tables (about 1/2000 of the window) stay a
//! small part of a limit. (A limit raised later does not widen it.) Only the first reservation exists at first; when its chunks are all
//! committed, the next one is placed just below the lowest (where the
//! kernel's top-down placement leaves room), or wherever the kernel puts it
//! inside the window; mappings of others in between are simply granules
//! whose class byte is 0. So the lookup stays one subtraction, one compare
//! and one byte load over every reservation, like TCMalloc's page map.
//!
//! Accounting is the kernel's, as for glibc's heaps: reservations are
//! `PROT_NONE` (charged only against `RLIMIT_AS`), a chunk is charged when
//! `mprotect` makes it writable, and so fails with ENOMEM exactly when the
//! kernel will not back it. The tables are one read-only mapping (reads of
//! untouched parts see zeros, so any pointer of the window may be looked
//! up) whose pieces are made writable as the reservations they describe
//! appear. Reservations take `RLIMIT_AS / 16` at a time (1 GiB without a
//! limit), halving when the kernel refuses, so a heap under `ulimit -v`
//! fills what the limit leaves.
//!
//! Runs never straddle a chunk (nor so a reservation), so a run is a bit
//! pattern in one `free` word; the class map's marker gives a run's start
//! and length in one byte load, and every marker is written under the page
//! heap lock, so a free that re-reads it under the lock cannot race another
//! free of the same run.
//!
//! `release_free` gives free granules' pages back (`madvise`); a granule
//! stays committed, so handing it out again only costs the page faults.
//! `release_aged` is the time-based decay: visited at least a decay period
//! apart, a chunk gives back the granules that stayed free since its last
//! visit. While their pages go back, the granules are taken out of the heap,
//! so the lock is not held across `madvise`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::platform::os::{self, OS_PAGE};
use crate::platform::size_class::{SizeClass, NUM_CLASSES};
use crate::platform::sync::SpinLock;

/// Span granularity: every span is 1 or 4 granules, aligned to its size.
pub const GRANULE_SHIFT: u32 = 16;
/// 64 KiB.
pub const GRANULE: usize = 1 << GRANULE_SHIFT;
/// Granules per chunk, and the longest run (runs never straddle chunks).
pub const CHUNK_GRANULES: usize = 32;
/// The unit of address space made usable at a time: a 2 MiB huge page.
const CHUNK: usize = GRANULE * CHUNK_GRANULES;
/// The largest reservation made at a time.
const MAX_RESERVATION: usize = 1 << 30;
/// The window's bounds (module doc).
const MIN_WINDOW: usize = 1 << 30;
const MAX_WINDOW: usize = 1 << 46;
/// The least window without an address-space limit, and the window when the
/// kernel does not say how much memory there is.
const DEFAULT_WINDOW: usize = 1 << 40;
// Span lists link spans by granule number + 1 in a u32.
const _: () = assert!(MAX_WINDOW / GRANULE < u32::MAX as usize);

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

/// The window's base: granule 0.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Granules in the window.
static GRANULES: AtomicUsize = AtomicUsize::new(0);
static CLASS_MAP: AtomicUsize = AtomicUsize::new(0);
static SPANS: AtomicUsize = AtomicUsize::new(0);
static MAPPED: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
/// Bytes of free granules still backed by pages (neither fresh nor released).
static FREE_BACKED: AtomicU64 = AtomicU64::new(0);
/// `madvise` calls made.
static PURGES: AtomicU64 = AtomicU64::new(0);
/// Reservations made.
static RESERVATIONS: AtomicU64 = AtomicU64::new(0);
/// Times granules went back to the heap (`heap_frees`).
static HEAP_FREES: AtomicU64 = AtomicU64::new(0);
/// The decay period in ns (0: no time-based decay), and when the last
/// decay step began (`decay_step`).
static DECAY_NS: AtomicU64 = AtomicU64::new(0);
static LAST_DECAY: AtomicU64 = AtomicU64::new(0);

struct PageHeap {
    /// The `chunks` table (one `Chunk` per chunk of the window).
    chunks: *mut Chunk,
    /// Chunks `[lo, hi)` hold every reservation (and whatever lies between).
    lo: usize,
    hi: usize,
    /// Chunks `[next_commit, reserved_end)` of the newest reservation are
    /// not yet committed; the older reservations are committed whole.
    next_commit: usize,
    reserved_end: usize,
    /// Bytes the next reservation asks for.
    step: usize,
    /// Where the next `release_aged` visit starts (a `Visit` number).
    cursor: usize,
    /// No chunk below this has a free granule.
    lowest_free: usize,
    /// Gives back memory kept above the heap for reuse (the central slab's
    /// spare spans) before the heap grows: `init`'s argument.
    before_grow: Option<fn()>,
}

// SAFETY: the raw pointer is to process-wide metadata; the lock serialises use.
unsafe impl Send for PageHeap {}

static HEAP: SpinLock<PageHeap> = SpinLock::new(PageHeap {
    chunks: core::ptr::null_mut(),
    lo: 0,
    hi: 0,
    next_commit: 0,
    reserved_end: 0,
    step: 0,
    cursor: 0,
    lowest_free: 0,
    before_grow: None,
});

/// The tables' layout in their one mapping: byte offsets, each OS-page
/// aligned, of the class map (1 byte per granule), the span table and the
/// chunk table, and the total length.
struct Tables {
    spans: usize,
    chunks: usize,
    len: usize,
}

impl Tables {
    fn for_granules(granules: usize) -> Tables {
        let page = |n: usize| (n + OS_PAGE - 1) & !(OS_PAGE - 1);
        let spans = page(granules);
        let chunks = spans + page(granules * core::mem::size_of::<Span>());
        let len = chunks + page(granules / CHUNK_GRANULES * core::mem::size_of::<Chunk>());
        Tables { spans, chunks, len }
    }
}

/// Makes the table entries of chunks `[a, b)` writable (each table's bytes
/// for them, rounded out to OS pages). False when the kernel refuses.
fn commit_tables(a: usize, b: usize) -> bool {
    let (map, granules) = (CLASS_MAP.load(Ordering::Relaxed), GRANULES.load(Ordering::Relaxed));
    let tables = Tables::for_granules(granules);
    let pieces = [
        (0, CHUNK_GRANULES),
        (tables.spans, CHUNK_GRANULES * core::mem::size_of::<Span>()),
        (tables.chunks, core::mem::size_of::<Chunk>()),
    ];
    pieces.iter().all(|&(offset, per_chunk)| {
        let from = (map + offset + a * per_chunk) & !(OS_PAGE - 1);
        let to = (map + offset + b * per_chunk + OS_PAGE - 1) & !(OS_PAGE - 1);
        // SAFETY: [from, to) lies inside the tables' mapping: the table at
        // `offset` has `per_chunk` bytes for every chunk of the window and
        // ends on a page boundary.
        unsafe { os::commit(from as *mut u8, to - from) }
    })
}

/// The window's size (module doc).
fn window_size(limit: Option<usize>) -> usize {
    let want = match limit {
        Some(limit) => limit.saturating_mul(2),
        None => {
            os::memory_total().map_or(DEFAULT_WINDOW, |m| usize::try_from(m).unwrap_or(MAX_WINDOW).saturating_mul(8))
        }
    };
    let floor = if limit.is_some() { MIN_WINDOW } else { DEFAULT_WINDOW };
    want.clamp(floor, MAX_WINDOW).next_power_of_two()
}

/// The size of each reservation (module doc); with the test hooks,
/// `RSEQALLOC_TEST_RESERVATION` (bytes) sets it, so tests cross reservations.
fn reservation_size(limit: Option<usize>) -> usize {
    #[cfg(rseqalloc_test_hooks)]
    if let Some(bytes) =
        os::getenv(crate::platform::config::TEST_RESERVATION).and_then(crate::platform::decimal::parse_decimal)
    {
        return bytes.clamp(CHUNK, MAX_RESERVATION) & !(CHUNK - 1);
    }
    limit.map_or(MAX_RESERVATION, |limit| (limit / 16).clamp(CHUNK, MAX_RESERVATION) & !(CHUNK - 1))
}

/// Reserves the window's tables and the first reservation. Called once by
/// init, with what gives back memory kept for reuse above the heap before it
/// grows (called without the heap lock, so it may free spans); false when
/// the kernel refuses even a chunk.
pub fn init(before_grow: fn()) -> bool {
    let limit = os::address_space_limit();
    let window = window_size(limit);
    let granules = window / GRANULE;
    let tables = Tables::for_granules(granules);
    let map = os::reserve_readable(tables.len);
    if map.is_null() {
        return false;
    }
    let mut heap = HEAP.lock();
    heap.before_grow = Some(before_grow);
    heap.step = reservation_size(limit);
    let Some((first, len)) = heap.reserve(|_, len| os::map_aligned(len, CHUNK, true) as usize) else {
        drop(heap);
        // SAFETY: the tables were just mapped and nothing refers to them.
        unsafe { os::unmap(map, tables.len) };
        return false;
    };
    // The first reservation ends the window: the next ones go below it.
    let base = (first + len).saturating_sub(window);
    CLASS_MAP.store(map as usize, Ordering::Relaxed);
    SPANS.store(map as usize + tables.spans, Ordering::Relaxed);
    GRANULES.store(granules, Ordering::Relaxed);
    BASE.store(base, Ordering::Release);
    heap.chunks = (map as usize + tables.chunks) as *mut Chunk;
    let c = (first - base) / CHUNK;
    (heap.lo, heap.hi) = (c, c);
    if !heap.adopt(first, len) {
        // SAFETY: the reservation was just made and is unused.
        unsafe { os::unmap(first as *mut u8, len) };
        return false;
    }
    true
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

/// The window's base address and size in bytes (0, 0 before init): every
/// reservation lies in it.
#[cfg_attr(not(any(feature = "capi", rseqalloc_test_hooks)), allow(dead_code))] // the C API's, the tests'
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
/// needed (`take_or_grow`), and records its class. Returns its first
/// granule, or None when the arena is exhausted or the kernel refuses memory.
pub fn alloc_span(class: SizeClass) -> Option<usize> {
    let n = class.span_granules();
    let (g, _) = take_or_grow(n, n, n, |g| set_class(g, n, class.index() as u8))?;
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
    let (g, clean) = take_or_grow(n, align, room.clamp(n, CHUNK_GRANULES), |g| mark_run(g, n))?;
    Some((g, clean))
}

/// `PageHeap::take_or_grow`, but when no free granules fit, first asks what
/// was kept for reuse above the heap to come back (`init`), outside the
/// lock, and looks again. `claim(first granule)` runs under the lock.
fn take_or_grow(n: usize, align: usize, room: usize, claim: impl Fn(usize)) -> Option<(usize, u32)> {
    let before_grow = {
        let mut heap = HEAP.lock();
        if let Some(found) = heap.find(n, align, room) {
            claim(found.0);
            return Some(found);
        }
        heap.before_grow
    };
    if let Some(give_back) = before_grow {
        give_back();
    }
    let mut heap = HEAP.lock();
    let found = heap.take_or_grow(n, align, room)?;
    claim(found.0);
    Some(found)
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
        if heap.chunk(c).free >> (i + n) & bits != bits {
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
    let visit = Visit::of(&HEAP.lock());
    (0..visit.len).map(|i| release_in_chunk(visit.chunk(i), |backed, _aged| backed)).sum()
}

/// One step of the time-based decay: visits up to `max_chunks` chunks (round
/// robin over every reservation), gives back the granules that stayed free
/// since the chunk's last visit, and remembers which are free now. Call it
/// at most once per decay period. Returns the bytes given back.
pub fn release_aged(max_chunks: usize) -> usize {
    let (visit, first, count) = {
        let mut heap = HEAP.lock();
        let visit = Visit::of(&heap);
        if visit.len == 0 {
            return 0;
        }
        let first = heap.cursor % visit.len;
        let count = max_chunks.min(visit.len);
        heap.cursor = (first + count) % visit.len;
        (visit, first, count)
    };
    (first..first + count).map(|i| release_in_chunk(visit.chunk(i % visit.len), |backed, aged| backed & aged)).sum()
}

/// Sets the decay period (`RSEQALLOC_DECAY_MS`, in ns; 0 turns the
/// time-based decay off).
pub fn set_decay_ns(ns: u64) {
    DECAY_NS.store(ns, Ordering::Relaxed);
}

/// The decay period in ns (0: none).
pub fn decay_ns() -> u64 {
    DECAY_NS.load(Ordering::Relaxed)
}

/// The time-based decay at time `now`: if a decay period passed since the
/// last step, claims this one (one caller per period, whichever thread
/// comes first) and runs `release_aged(max_chunks)`. Returns whether it ran.
pub fn decay_step(now: u64, max_chunks: usize) -> bool {
    let decay = decay_ns();
    let last = LAST_DECAY.load(Ordering::Relaxed);
    let due = decay != 0
        && now.saturating_sub(last) >= decay
        && LAST_DECAY.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
    if due {
        release_aged(max_chunks);
    }
    due
}

/// How many times granules went back to the heap (an emptied span, a freed
/// or shrunk medium run): a caller that saw it change knows the heap grew.
pub fn heap_frees() -> u64 {
    HEAP_FREES.load(Ordering::Relaxed)
}

/// The chunks that may hold free granules, numbered `0..len`: `[lo, hi)`
/// less the newest reservation's chunks not yet committed (up to a whole
/// reservation, which the decay's bounded steps would otherwise spend their
/// visits on). A snapshot: a chunk committed since is visited next time.
#[derive(Clone, Copy)]
struct Visit {
    lo: usize,
    len: usize,
    /// The first uncommitted chunk, and how many follow it.
    gap: usize,
    skip: usize,
}

impl Visit {
    fn of(heap: &PageHeap) -> Visit {
        let skip = heap.reserved_end - heap.next_commit;
        Visit { lo: heap.lo, len: heap.hi - heap.lo - skip, gap: heap.next_commit, skip }
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

/// Gives back the granules of chunk `c` that `pick(backed, aged)` selects
/// (`backed`: free, neither fresh nor released), then marks every granule
/// still backed as aged. The granules are taken out of the heap while their
/// pages go back, so no lock is held across `madvise`.
fn release_in_chunk(c: usize, pick: impl Fn(u32, u32) -> u32) -> usize {
    let taken = {
        let mut heap = HEAP.lock();
        let chunk = heap.chunk(c);
        if chunk.free == 0 {
            return 0; // nothing free (or not ours: its entry may be read-only)
        }
        let chunk = heap.chunk_mut(c);
        let backed = chunk.free & !chunk.released & !chunk.fresh;
        let taken = pick(backed, chunk.aged) & backed;
        chunk.free &= !taken;
        chunk.aged = backed & !taken;
        taken
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
        // SAFETY: the granules are free (no span, no object) and taken out of
        // the heap, inside a committed chunk of one of our reservations.
        if unsafe { os::release(granule_base(c * CHUNK_GRANULES + start as usize), run as usize * GRANULE) } {
            given_back |= bits << start;
        }
        PURGES.fetch_add(1, Ordering::Relaxed);
        todo &= !(bits << start);
    }
    let mut heap = HEAP.lock();
    let chunk = heap.chunk_mut(c);
    chunk.free |= taken;
    chunk.released |= given_back;
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

/// Reservations of address space made so far (the first included).
#[cfg_attr(not(rseqalloc_test_hooks), allow(dead_code))] // the tests'
pub fn reservations() -> u64 {
    RESERVATIONS.load(Ordering::Relaxed)
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
    /// Chunk `c`'s bits (zero for a chunk that is not ours).
    fn chunk(&self, c: usize) -> &Chunk {
        debug_assert!(c < GRANULES.load(Ordering::Relaxed) / CHUNK_GRANULES);
        // SAFETY: c is a chunk of the window, so inside the chunk table,
        // which is mapped (readable) for the whole window.
        unsafe { &*self.chunks.add(c) }
    }

    /// Chunk `c`'s bits, to change.
    ///
    /// Only chunks of our reservations may be changed: their table entries
    /// were made writable when the reservation was adopted.
    fn chunk_mut(&mut self, c: usize) -> &mut Chunk {
        debug_assert!((self.lo..self.hi).contains(&c));
        // SAFETY: as in `chunk`; the caller passes a chunk of a reservation
        // (debug-checked), whose entry is writable; `&mut self` is the lock.
        unsafe { &mut *self.chunks.add(c) }
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
        self.lowest_free = self.lowest_free.max(self.lo);
        for c in self.lowest_free..self.hi {
            let word = self.chunk(c).free;
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
        let chunk = self.chunk_mut(c);
        debug_assert_eq!(chunk.free & bits, bits);
        chunk.free &= !bits;
        let clean = (chunk.released | chunk.fresh) & bits;
        RELEASED.fetch_sub(((chunk.released & bits).count_ones() as usize * GRANULE) as u64, Ordering::Relaxed);
        FREE_BACKED.fetch_sub(((bits & !clean).count_ones() as usize * GRANULE) as u64, Ordering::Relaxed);
        chunk.released &= !bits;
        chunk.fresh &= !bits;
        chunk.aged &= !bits;
        clean
    }

    /// Gives back the `n` granules from `g` (inside one chunk).
    fn put(&mut self, g: usize, n: usize) {
        let c = g / CHUNK_GRANULES;
        self.chunk_mut(c).free |= (((1u64 << n) - 1) as u32) << (g % CHUNK_GRANULES);
        self.lowest_free = self.lowest_free.min(c);
        FREE_BACKED.fetch_add((n * GRANULE) as u64, Ordering::Relaxed);
        HEAP_FREES.fetch_add(1, Ordering::Relaxed);
    }

    /// Commits the next chunk of the newest reservation, reserving another
    /// when it is all committed.
    fn grow(&mut self) -> Option<()> {
        if self.next_commit == self.reserved_end {
            let (start, len) = self.reserve(PageHeap::place)?;
            if !self.adopt(start, len) {
                // SAFETY: the reservation was just made and is unused.
                unsafe { os::unmap(start as *mut u8, len) };
                return None;
            }
        }
        let c = self.next_commit;
        // SAFETY: the chunk is inside our newest reservation and not yet in use.
        if !unsafe { os::commit(granule_base(c * CHUNK_GRANULES), CHUNK) } {
            return None;
        }
        let chunk = self.chunk_mut(c);
        (chunk.free, chunk.fresh) = (u32::MAX, u32::MAX);
        self.next_commit += 1;
        self.lowest_free = self.lowest_free.min(c);
        MAPPED.fetch_add(CHUNK as u64, Ordering::Relaxed);
        Some(())
    }

    /// Makes a reservation with `place` (which returns its address or 0),
    /// asking for `step` bytes and halving down to a chunk while the kernel
    /// refuses; a refused size is not asked for again. Returns its address
    /// and length.
    fn reserve(&mut self, place: impl Fn(&PageHeap, usize) -> usize) -> Option<(usize, usize)> {
        loop {
            let len = self.step;
            let start = place(self, len);
            if start != 0 {
                RESERVATIONS.fetch_add(1, Ordering::Relaxed);
                return Some((start, len));
            }
            if len == CHUNK {
                return None;
            }
            self.step = (len / 2).max(CHUNK) & !(CHUNK - 1);
        }
    }

    /// Where a new reservation of `len` bytes goes: just below the lowest one
    /// if that is free, else where the kernel puts it if that is inside the
    /// window (chunk-aligned). 0 when neither works.
    fn place(&self, len: usize) -> usize {
        let base = BASE.load(Ordering::Relaxed);
        let end = base + (GRANULES.load(Ordering::Relaxed) << GRANULE_SHIFT);
        let below = base + self.lo * CHUNK;
        if below - base >= len {
            let p = os::reserve_at(below - len, len);
            if !p.is_null() {
                return p as usize;
            }
        }
        let p = os::map_aligned(len, CHUNK, true) as usize;
        if p != 0 && (p < base || p + len > end) {
            // SAFETY: the reservation was just made and nobody knows it.
            unsafe { os::unmap(p as *mut u8, len) };
            return 0;
        }
        p
    }

    /// Takes the reservation `[start, start + len)` (chunk-aligned, inside
    /// the window) into the heap: makes its table entries writable and makes
    /// it the one whose chunks are committed next. False when the kernel
    /// refuses the table pages.
    fn adopt(&mut self, start: usize, len: usize) -> bool {
        let a = (start - BASE.load(Ordering::Relaxed)) / CHUNK;
        let b = a + len / CHUNK;
        if !commit_tables(a, b) {
            return false;
        }
        (self.lo, self.hi) = (self.lo.min(a), self.hi.max(b));
        (self.next_commit, self.reserved_end) = (a, b);
        true
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

    #[test]
    fn a_visit_skips_the_uncommitted_chunks_of_the_newest_reservation() {
        // Reservations [10, 16) (newest, committed up to 12) and [16, 30).
        let heap = PageHeap {
            chunks: core::ptr::null_mut(),
            lo: 10,
            hi: 30,
            next_commit: 12,
            reserved_end: 16,
            step: 0,
            cursor: 0,
            lowest_free: 0,
            before_grow: None,
        };
        let visit = Visit::of(&heap);
        let chunks: std::vec::Vec<usize> = (0..visit.len).map(|i| visit.chunk(i)).collect();
        assert_eq!(chunks, (10..12).chain(16..30).collect::<std::vec::Vec<_>>());
    }

    #[cfg(not(feature = "capi"))]
    fn is_free(g: usize, n: usize) -> bool {
        let heap = HEAP.lock();
        let bits = ((1u64 << n) - 1) as u32;
        heap.chunk(g / CHUNK_GRANULES).free >> (g % CHUNK_GRANULES) & bits == bits
    }

    // With the C API, libtest's own mallocs share the page heap and could take
    // a granule between a free and the check that it is free.
    #[cfg(not(feature = "capi"))]
    #[test]
    fn runs_are_marked_aligned_resized_and_freed_once() {
        assert!(crate::front::init::ensure());
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
