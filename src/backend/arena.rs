//! The arena: a window of address space, fixed at init, in which the heap
//! grows by reservations, committed a 2 MiB chunk at a time, and the one
//! mapping that holds the tables describing the window.
//!
//! ```text
//!  window: | foreign | reservation | foreign | reservation (first) |
//!          ^ base     chunks of 2 MiB = 32 granules, committed on demand
//!  tables: | class map | span table | chunk table |   (one mapping)
//! ```
//!
//! The process's window is twice the address-space limit in force
//! (`ulimit -v`) rounded up to a power of two, or without a limit eight
//! times RAM plus swap (at least 1 TiB), so the heap can grow to whatever
//! the process may map, while the tables (about 1/2000 of the window) stay a
//! small part of a limit. (A limit raised later does not widen it.) Only
//! the first reservation exists at first; when its chunks are all
//! committed, the next one is placed just below the lowest (where the
//! kernel's top-down placement leaves room), or wherever the kernel puts it
//! inside the window; mappings of others in between are simply granules
//! whose class byte is 0 (`pagemap.rs`).
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

use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::pagemap::{PageMap, Span, CHUNK_GRANULES, GRANULE};
use crate::platform::os::{self, OS_PAGE};

/// The unit of address space made usable at a time: a 2 MiB huge page.
pub const CHUNK: usize = GRANULE * CHUNK_GRANULES;
/// Bytes of the chunk table per chunk (the page heap's bits).
pub const CHUNK_ENTRY: usize = 16;
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
// Spans are aligned to their size in the arena, which is what lets
// `SizeClass::is_object_start` find an offset in a span by a mask.
const _: () = assert!(CHUNK >= 4 * GRANULE, "spans must not straddle the base alignment");

/// What the arena has done, readable without the page heap lock.
pub struct ArenaCounters {
    mapped: AtomicU64,
    reservations: AtomicU64,
}

impl ArenaCounters {
    /// Nothing done yet.
    pub const fn new() -> ArenaCounters {
        ArenaCounters { mapped: AtomicU64::new(0), reservations: AtomicU64::new(0) }
    }

    /// Bytes made read-write so far.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Reservations of address space made so far (the first included).
    #[cfg(any(test, rseqalloc_test_hooks))]
    pub fn reservations(&self) -> u64 {
        self.reservations.load(Ordering::Relaxed)
    }
}

/// The reservations: which chunks of the window are ours and how far they
/// are committed. Kept under the page heap lock.
pub struct Arena {
    /// The window's base and the tables' mapping (0 before `create`).
    base: usize,
    tables: usize,
    granules: usize,
    /// Chunks `[lo, hi)` hold every reservation (and whatever lies between).
    lo: usize,
    hi: usize,
    /// Chunks `[next_commit, reserved_end)` of the newest reservation are
    /// not yet committed; the older reservations are committed whole.
    next_commit: usize,
    reserved_end: usize,
    /// Bytes the next reservation asks for.
    step: usize,
}

/// The tables' layout in their one mapping: byte offsets, each OS-page
/// aligned, of the class map (1 byte per granule, at 0), the span table and
/// the chunk table, and the total length.
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
        let len = chunks + page(granules / CHUNK_GRANULES * CHUNK_ENTRY);
        Tables { spans, chunks, len }
    }
}

/// The process's window size (module doc) under the address-space limit
/// `limit`.
pub fn window_size(limit: Option<usize>) -> usize {
    let want = match limit {
        Some(limit) => limit.saturating_mul(2),
        None => {
            os::memory_total().map_or(DEFAULT_WINDOW, |m| usize::try_from(m).unwrap_or(MAX_WINDOW).saturating_mul(8))
        }
    };
    let floor = if limit.is_some() { MIN_WINDOW } else { DEFAULT_WINDOW };
    want.clamp(floor, MAX_WINDOW).next_power_of_two()
}

/// The size of the process's reservations (module doc); with the test
/// hooks, `RSEQALLOC_TEST_RESERVATION` (bytes) sets it, so tests cross
/// reservations.
pub fn reservation_size(limit: Option<usize>) -> usize {
    #[cfg(rseqalloc_test_hooks)]
    if let Some(bytes) =
        os::getenv(crate::platform::config::TEST_RESERVATION).and_then(crate::platform::decimal::parse_decimal)
    {
        return bytes.clamp(CHUNK, MAX_RESERVATION) & !(CHUNK - 1);
    }
    limit.map_or(MAX_RESERVATION, |limit| (limit / 16).clamp(CHUNK, MAX_RESERVATION) & !(CHUNK - 1))
}

impl Arena {
    /// No window yet.
    pub const fn new() -> Arena {
        Arena { base: 0, tables: 0, granules: 0, lo: 0, hi: 0, next_commit: 0, reserved_end: 0, step: 0 }
    }

    /// Maps the tables of a window of `window` bytes (a power of two, at
    /// least a chunk) and makes its first reservation of `step` bytes (a
    /// multiple of a chunk), which ends the window; publishes the window in
    /// `map`. False, leaving nothing mapped, when the kernel refuses even a
    /// chunk.
    pub fn create(&mut self, map: &PageMap, counters: &ArenaCounters, window: usize, step: usize) -> bool {
        let granules = window / GRANULE;
        let tables = Tables::for_granules(granules);
        let mem = os::reserve_readable(tables.len);
        if mem.is_null() {
            return false;
        }
        (self.tables, self.granules, self.step) = (mem as usize, granules, step.max(CHUNK));
        let Some((first, len)) = self.reserve(counters, |_, len| os::map_aligned(len, CHUNK, true) as usize) else {
            // SAFETY: the tables were just mapped and nothing refers to them.
            unsafe { os::unmap(mem, tables.len) };
            return false;
        };
        // The first reservation ends the window: the next ones go below it.
        self.base = (first + len).saturating_sub(window);
        let c = (first - self.base) / CHUNK;
        (self.lo, self.hi) = (c, c);
        if !self.adopt(first, len) {
            // SAFETY: the reservation and the tables were just made and are unused.
            unsafe {
                os::unmap(first as *mut u8, len);
                os::unmap(mem, tables.len);
            }
            return false;
        }
        map.publish(self.base, granules, self.tables, self.tables + tables.spans);
        true
    }

    /// The chunks that hold every reservation (and whatever lies between).
    pub fn chunks(&self) -> core::ops::Range<usize> {
        self.lo..self.hi
    }

    /// The chunks of the newest reservation not yet committed.
    pub fn uncommitted(&self) -> core::ops::Range<usize> {
        self.next_commit..self.reserved_end
    }

    /// Granules in the window.
    pub fn granules(&self) -> usize {
        self.granules
    }

    /// The chunk table: `CHUNK_ENTRY` bytes per chunk of the window, readable
    /// everywhere, writable for the chunks of reservations.
    pub fn chunk_table(&self) -> *mut u8 {
        (self.tables + Tables::for_granules(self.granules).chunks) as *mut u8
    }

    /// Commits the next chunk of the newest reservation, reserving another
    /// when it is all committed. Returns the chunk, or None when the window
    /// is full or the kernel refuses.
    pub fn grow(&mut self, counters: &ArenaCounters) -> Option<usize> {
        if self.next_commit == self.reserved_end {
            let (start, len) = self.reserve(counters, Arena::place)?;
            if !self.adopt(start, len) {
                // SAFETY: the reservation was just made and is unused.
                unsafe { os::unmap(start as *mut u8, len) };
                return None;
            }
        }
        let c = self.next_commit;
        // SAFETY: the chunk is inside our newest reservation and not yet in use.
        if !unsafe { os::commit(self.chunk_base(c), CHUNK) } {
            return None;
        }
        self.next_commit += 1;
        counters.mapped.fetch_add(CHUNK as u64, Ordering::Relaxed);
        Some(c)
    }

    /// Address of chunk `c`.
    pub fn chunk_base(&self, c: usize) -> *mut u8 {
        (self.base + c * CHUNK) as *mut u8
    }

    /// Makes a reservation with `place` (which returns its address or 0),
    /// asking for `step` bytes and halving down to a chunk while the kernel
    /// refuses; a refused size is not asked for again. Returns its address
    /// and length.
    fn reserve(&mut self, counters: &ArenaCounters, place: impl Fn(&Arena, usize) -> usize) -> Option<(usize, usize)> {
        loop {
            let len = self.step;
            let start = place(self, len);
            if start != 0 {
                counters.reservations.fetch_add(1, Ordering::Relaxed);
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
        let end = self.base + self.granules * GRANULE;
        let below = self.base + self.lo * CHUNK;
        if below - self.base >= len {
            let p = os::reserve_at(below - len, len);
            if !p.is_null() {
                return p as usize;
            }
        }
        let p = os::map_aligned(len, CHUNK, true) as usize;
        if p != 0 && (p < self.base || p + len > end) {
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
        let a = (start - self.base) / CHUNK;
        let b = a + len / CHUNK;
        if !self.commit_tables(a, b) {
            return false;
        }
        (self.lo, self.hi) = (self.lo.min(a), self.hi.max(b));
        (self.next_commit, self.reserved_end) = (a, b);
        true
    }

    /// Makes the table entries of chunks `[a, b)` writable (each table's bytes
    /// for them, rounded out to OS pages). False when the kernel refuses.
    fn commit_tables(&self, a: usize, b: usize) -> bool {
        let tables = Tables::for_granules(self.granules);
        let pieces = [
            (0, CHUNK_GRANULES),
            (tables.spans, CHUNK_GRANULES * core::mem::size_of::<Span>()),
            (tables.chunks, CHUNK_ENTRY),
        ];
        pieces.iter().all(|&(offset, per_chunk)| {
            let from = (self.tables + offset + a * per_chunk) & !(OS_PAGE - 1);
            let to = (self.tables + offset + b * per_chunk + OS_PAGE - 1) & !(OS_PAGE - 1);
            // SAFETY: [from, to) lies inside the tables' mapping: the table at
            // `offset` has `per_chunk` bytes for every chunk of the window and
            // ends on a page boundary.
            unsafe { os::commit(from as *mut u8, to - from) }
        })
    }
}
