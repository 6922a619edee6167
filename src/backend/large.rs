//! Blocks too big (or too aligned) for a size class or a medium run: each
//! has memory mapped for it alone, with a 32-byte header just before the
//! block recording that memory, so an unsized free finds it and `realloc`
//! can `mremap` it (when the kernel keeps it as one mapping).
//! Every live block is in the registry (`registry`), which is what makes
//! a pointer a large block: the header is read only after the registry says so.
//!
//! ```text
//!  map_base                       block (aligned)
//!  |<--------- offset ----------->|
//!  | (padding) | LargeHeader (32) | size bytes ... | (to OS page) |
//! ```
//!
//! A freed mapping is kept in a cache instead of unmapped, so a program
//! that allocates and frees big blocks pays neither the `mmap`/`munmap` pair
//! nor a page fault and a kernel clear of every page it writes (glibc serves
//! such a stream from its heap once its mmap threshold has grown, and
//! mimalloc and jemalloc retain freed memory the same way). A request takes
//! the smallest cached piece that fits and splits off what it does not need;
//! a freed piece merges with cached neighbours, so a stream of varied sizes
//! reuses one stretch of memory as a heap's top would. With no piece big
//! enough, the biggest grows into a fresh mapping in the free address space
//! right after or right before it (else it moves into a fresh mapping of the
//! whole size), and the pages of other cached pieces move into the new part
//! with `mremap`, no copy and no fault (`gather`): so freed pieces that are
//! not neighbours still serve one request, and only what the cache lacks is
//! new memory to fault in. A zeroed block from the cache is cleared with
//! stores, its end first: its pages are resident, and the program is about
//! to write them from the start (`zero`).
//!
//! The cache is bounded: at most `CACHE_SLOTS` pieces and `cache_cap()`
//! bytes, the largest of 8 MiB; four times the largest mapping freed so
//! far, up to 64 MiB (glibc keeps up to twice its mmap threshold, at most
//! 64 MiB, at the top of its heap), which lets freed neighbours merge and
//! serve the next request of a stream; and what frees have left below the
//! peak of live large bytes (at most as much as is live) plus an eighth of
//! what is live. The last term serves a program that holds many big blocks
//! and replaces them: its mapped memory stays within 12.5% of its peak, as
//! a heap's would, instead of faulting in again whatever a fixed bound
//! unmapped (20 blocks of 5–25 MiB held, mimalloc-bench's malloc-large:
//! 114 k page faults, 254 k without `gather`, 714 k with the 64 MiB bound,
//! against gperftools' 126 k: `WL_SHAPE=big-held benches/workloads/bin/big_blocks 1 0.5`). The
//! peak is forgotten whenever the decay unmaps idle pieces, and the bound
//! falls with what is live, so a program that frees everything keeps at
//! most the stream's 64 MiB. Of a piece longer than the bound only the
//! bound's worth is kept. Pieces unused
//! for a decay period are unmapped by the background thread or, without it,
//! by the next large free; `release()` unmaps all of them. The slots are
//! atomics, not a lock: a piece is taken by swapping its slot to zero, so
//! nothing here needs the fork handlers.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::backend::registry;
use crate::platform::config::Config;
use crate::platform::os::{self, OS_PAGE};
use crate::platform::zero::clear_for_writer;

/// Marks a real header (a debugging aid; the registry is the authority).
const MAGIC: u64 = 0x7273_6571_4c41_5247; // "rseqLARG"

/// The smallest offset: the header, rounded up to a cache line.
const MIN_OFFSET: usize = 64;

#[repr(C)]
struct LargeHeader {
    magic: u64,
    map_len: usize,
    offset: usize,
    size: usize,
}

static MAPPED: AtomicU64 = AtomicU64::new(0);
static IN_USE: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);

/// Pieces the cache holds at most.
const CACHE_SLOTS: usize = 32;
/// The cache's byte bound never drops below this.
const CACHE_FLOOR: u64 = 8 << 20;
/// The most the bound grows to with the largest mapping freed (module doc).
const CACHE_STREAM_MAX: u64 = 64 << 20;
/// A cached piece this much longer than a request is split; a shorter
/// excess stays with the block (so it is never worth a slot of its own).
const SPLIT_MIN: usize = 64 << 10;
/// A slot word is `(base >> 12) << LEN_BITS | len >> 12` (0: empty): one
/// word, so a compare-exchange takes base and length together. User-space
/// addresses have 47 bits, so 35 bits of page number fit above 29 of length.
const LEN_BITS: u32 = 29;
static CACHE: [AtomicU64; CACHE_SLOTS] = [const { AtomicU64::new(0) }; CACHE_SLOTS];
/// When each slot was filled (`os::now_ns`); written just after the slot, so
/// a racing reader may see the previous age and release a piece early.
static CACHED_AT: [AtomicU64; CACHE_SLOTS] = [const { AtomicU64::new(0) }; CACHE_SLOTS];
/// Bytes of the pieces in the cache (reserved before a slot is filled).
static CACHED: AtomicU64 = AtomicU64::new(0);
/// The most bytes live large blocks have held since the decay last found
/// the cache idle (the cache's bound follows it).
static HIGH_WATER: AtomicU64 = AtomicU64::new(0);
/// The longest mapping freed so far (the cache's bound follows it).
static LARGEST_FREED: AtomicU64 = AtomicU64::new(0);
/// `gather` moves pages only while the process has fewer mappings than this.
const GATHER_MAPPINGS_MAX: usize = 4096;
/// `gather` recounts the mappings at every this many calls.
const GATHER_CHECK_EVERY: u64 = 32;
static GATHER_CALLS: AtomicU64 = AtomicU64::new(0);
static GATHER_ALLOWED: AtomicBool = AtomicBool::new(false);
/// `RSEQALLOC_DECAY_MS` in nanoseconds (0: no decay).
static DECAY_NS: AtomicU64 = AtomicU64::new(0);

/// Takes the options (init).
pub fn init(config: &Config) {
    DECAY_NS.store(config.decay_ms as u64 * 1_000_000, Ordering::Relaxed);
}

/// Makes a block of `size` bytes aligned to `align` (a power of two), from
/// cached memory when the alignment is a page or less, else a new mapping.
/// With `zero`, memory from the cache is cleared; a new mapping is zero
/// already. Null when out of memory.
pub fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    // Over page alignment, the header gets a page of its own before the
    // aligned block, so the mapping is the block plus the alignment.
    let offset = if align <= OS_PAGE { align.max(MIN_OFFSET) } else { OS_PAGE };
    let Some(need) = size.checked_add(offset).and_then(|n| n.checked_add(OS_PAGE - 1)).map(|n| n & !(OS_PAGE - 1))
    else {
        return core::ptr::null_mut();
    };
    let cached = if align <= OS_PAGE { cache_take(need) } else { None };
    let (base, map_len) = match cached {
        Some(Piece { base, len, dirty }) => {
            let from = dirty.start.max(offset);
            if zero && dirty.end > from {
                // SAFETY: the piece left the cache for us alone; the bytes
                // in `dirty` (within len) may hold old data, the rest is fresh.
                unsafe { clear_for_writer(base.add(from), dirty.end - from) };
            }
            (base, len)
        }
        None => {
            let map = || if align <= OS_PAGE { os::map(need) } else { os::map_skewed(need, align, offset, false) };
            let mut base = map();
            // Under `ulimit -v` or strict overcommit, cached memory must not
            // be why a request fails: give it back and try once more.
            if base.is_null() && release_cached(0) != 0 {
                base = map();
            }
            if base.is_null() {
                return core::ptr::null_mut();
            }
            MAPPED.fetch_add(need as u64, Ordering::Relaxed);
            (base, need)
        }
    };
    // SAFETY: offset < map_len, and the header fits below the block because
    // offset ≥ MIN_OFFSET ≥ size_of::<LargeHeader>().
    let block = unsafe { base.add(offset) };
    if !registry::insert(block) {
        unmap(base, map_len);
        return core::ptr::null_mut();
    }
    // SAFETY: as above; the header lies inside the mapping, which is ours.
    unsafe { header(block).write(LargeHeader { magic: MAGIC, map_len, offset, size }) };
    account(size as i64, 1);
    block
}

/// Caches or unmaps `block` if it is a live large block; returns false,
/// touching nothing, if it is not (never allocated here, or already freed).
///
/// # Safety
/// If `block` is a live large block, the caller gives it up.
pub unsafe fn free(block: *mut u8) -> bool {
    if !registry::remove(block) {
        return false;
    }
    // SAFETY: the registry vouched that the header is ours; the caller gives
    // the block up, and the registry no longer knows it.
    let hdr = unsafe { header(block).read() };
    debug_assert_eq!(hdr.magic, MAGIC);
    account(-(hdr.size as i64), -1);
    LARGEST_FREED.fetch_max(hdr.map_len as u64, Ordering::Relaxed);
    // The decay's step for programs without the background thread.
    let decay = DECAY_NS.load(Ordering::Relaxed);
    if decay != 0 {
        release_cached(decay);
    }
    cache_put(block.wrapping_sub(hdr.offset), hdr.map_len);
    true
}

/// Memory from the cache: `len` bytes at `base`, of which the bytes at the
/// offsets in `dirty` may hold a freed block's data (the rest is fresh).
struct Piece {
    base: *mut u8,
    len: usize,
    dirty: core::ops::Range<usize>,
}

/// The cache's byte bound now (module doc).
fn cache_cap() -> u64 {
    let stream = (4 * LARGEST_FREED.load(Ordering::Relaxed)).min(CACHE_STREAM_MAX);
    let in_use = IN_USE.load(Ordering::Relaxed);
    let below_peak = HIGH_WATER.load(Ordering::Relaxed).saturating_sub(in_use);
    CACHE_FLOOR.max(stream).max(below_peak.min(in_use) + in_use / 8)
}

fn unpack(word: u64) -> (usize, usize) {
    (((word >> LEN_BITS) << 12) as usize, ((word & ((1 << LEN_BITS) - 1)) << 12) as usize)
}

/// Takes the piece in slot `i` if the slot still holds `word`.
fn take_slot(i: usize, word: u64) -> bool {
    // Acquire: pairs with cache_put's Release, so the piece is as it was left.
    let taken = word != 0 && CACHE[i].compare_exchange(word, 0, Ordering::Acquire, Ordering::Relaxed).is_ok();
    if taken {
        CACHED.fetch_sub(unpack(word).1 as u64, Ordering::Relaxed);
    }
    taken
}

/// Keeps the freed piece `[base, base + len)` in the cache, merged with the
/// cached pieces next to it, evicting the oldest to make room; of a piece
/// longer than the bound, only the bound's worth is kept, the rest unmapped.
fn cache_put(base: *mut u8, len: usize) {
    let (mut start, mut len) = (base as usize, len);
    let mut merged = true;
    while merged {
        merged = false;
        for (i, slot) in CACHE.iter().enumerate() {
            let word = slot.load(Ordering::Relaxed);
            let (b, l) = unpack(word);
            if word != 0 && (b + l == start || start + len == b) && take_slot(i, word) {
                (start, len, merged) = (start.min(b), len + l, true);
            }
        }
    }
    let cap = cache_cap() & !(OS_PAGE as u64 - 1);
    if len as u64 > cap {
        unmap((start + cap as usize) as *mut u8, len - cap as usize);
        len = cap as usize;
    }
    let base = start as *mut u8;
    let (page, pages) = (start as u64 >> 12, len as u64 >> 12);
    if page < 1 << (64 - LEN_BITS) && pages < 1 << LEN_BITS {
        let word = page << LEN_BITS | pages;
        for _ in 0..=CACHE_SLOTS {
            let reserve = |c: u64| (c + len as u64 <= cap).then_some(c + len as u64);
            if CACHED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, reserve).is_ok() {
                // Release: whoever takes the slot sees the piece as we left it.
                let slot = CACHE
                    .iter()
                    .position(|s| s.compare_exchange(0, word, Ordering::Release, Ordering::Relaxed).is_ok());
                if let Some(i) = slot {
                    CACHED_AT[i].store(os::now_ns(), Ordering::Relaxed);
                    return;
                }
                CACHED.fetch_sub(len as u64, Ordering::Relaxed);
            }
            let oldest = (0..CACHE_SLOTS)
                .filter(|&i| CACHE[i].load(Ordering::Relaxed) != 0)
                .min_by_key(|&i| CACHED_AT[i].load(Ordering::Relaxed));
            let freed = oldest.map_or(0, |i| evict(i, CACHE[i].load(Ordering::Acquire)));
            if freed == 0 {
                break;
            }
        }
    }
    unmap(base, len);
}

/// Takes cached memory for a mapping of `need` bytes: the smallest piece
/// that holds it, its excess split off and cached again; else the biggest
/// piece grown, with other pieces' pages moved in. None when the cache is
/// empty or no mapping can be made.
fn cache_take(need: usize) -> Option<Piece> {
    while CACHED.load(Ordering::Relaxed) != 0 {
        let pieces = (0..CACHE_SLOTS).map(|i| (i, CACHE[i].load(Ordering::Relaxed))).filter(|&(_, w)| w != 0);
        let fits = pieces.clone().filter(|&(_, w)| unpack(w).1 >= need).min_by_key(|&(_, w)| unpack(w).1);
        let (i, word) = fits.or_else(|| pieces.max_by_key(|&(_, w)| unpack(w).1))?;
        if !take_slot(i, word) {
            continue;
        }
        let (start, len) = unpack(word);
        let base = start as *mut u8;
        if len >= need {
            if len - need < SPLIT_MIN {
                return Some(Piece { base, len, dirty: 0..len });
            }
            cache_put(base.wrapping_add(need), len - need);
            return Some(Piece { base, len: need, dirty: 0..need });
        }
        // The piece grows into the free address space just after it or just
        // before it, which works whatever kernel mappings it was merged
        // from; other pieces' pages move into the new part (`gather`), so
        // that what is new memory, to fault in, is at most the difference.
        let more = need - len;
        let piece = if !os::map_at(start + len, more).is_null() {
            MAPPED.fetch_add(more as u64, Ordering::Relaxed);
            Piece { base, len: need, dirty: 0..len + gather(start + len, more, true) }
        } else if start > more && !os::map_at(start - more, more).is_null() {
            MAPPED.fetch_add(more as u64, Ordering::Relaxed);
            let moved = gather(start - more, more, false);
            Piece { base: (start - more) as *mut u8, len: need, dirty: more - moved..need }
        } else {
            // No room next to it: a fresh mapping, into which this piece
            // and others move with their pages (as `mremap` would move this
            // one alone, and only if it is one kernel mapping: a piece
            // merged from two the kernel keeps apart stays in the cache).
            cache_put(base, len);
            let fresh = os::map(need);
            if fresh.is_null() {
                return None;
            }
            MAPPED.fetch_add(need as u64, Ordering::Relaxed);
            Piece { base: fresh, len: need, dirty: 0..gather(fresh as usize, need, true) }
        };
        return Some(piece);
    }
    None
}

/// Moves the pages of other cached pieces into `[at, at + room)`, the fresh
/// part of a piece being grown, packed against the old part (from the low
/// end when `upward`, else from the high end), so that the block reuses
/// resident memory where it would fault in every page of `room`: freed
/// pieces that are not neighbours in the address space still serve one
/// request, as a heap's coalesced free space would. The biggest pieces go
/// first; of one longer than the room left, the room's worth moves and the
/// rest stays cached. Returns the bytes moved (they hold old data).
fn gather(at: usize, room: usize, upward: bool) -> usize {
    if !gathering_allowed() {
        return 0;
    }
    let (mut moved, mut tried) = (0, 0u64);
    while room - moved >= SPLIT_MIN {
        let left = room - moved;
        let biggest = (0..CACHE_SLOTS)
            .filter(|&i| tried & 1 << i == 0)
            .map(|i| (i, CACHE[i].load(Ordering::Relaxed)))
            .filter(|&(_, w)| w != 0 && unpack(w).1 >= SPLIT_MIN)
            .max_by_key(|&(_, w)| unpack(w).1);
        let Some((i, word)) = biggest else { break };
        tried |= 1 << i;
        if !take_slot(i, word) {
            continue;
        }
        let (start, len) = unpack(word);
        let take = len.min(left);
        let (from, rest) = (start + len - take, len - take);
        let dst = if upward { at + moved } else { at + left - take };
        // SAFETY: the piece left the cache for us alone, and `dst` lies in
        // the fresh part of the caller's piece, which nothing refers to.
        if unsafe { os::move_pages(from as *mut u8, take, dst as *mut u8) } {
            MAPPED.fetch_sub(take as u64, Ordering::Relaxed);
            moved += take;
            match rest {
                0 => {}
                // Too short to be worth a slot.
                1..SPLIT_MIN => unmap(start as *mut u8, rest),
                _ => cache_put(start as *mut u8, rest),
            }
        } else {
            // Made of two kernel mappings: leave it for the cache.
            cache_put(start as *mut u8, len);
        }
    }
    moved
}

/// Whether `gather` may move pages now. A piece moved next to another stays
/// a kernel mapping of its own (the kernel merges neighbours only when they
/// share their origin), and a piece cut from a longer one splits it, so the
/// process's mapping count grows with the moves until the pieces are
/// unmapped; past `GATHER_MAPPINGS_MAX` (a sixteenth of the kernel's
/// default `vm.max_map_count`, 65530) pieces are grown without moves until
/// unmaps bring it down. The count (a read of `/proc/self/maps`, about as
/// long as faulting in a few pages) is taken at every `GATHER_CHECK_EVERY`th
/// call; where /proc cannot be read, nothing moves.
fn gathering_allowed() -> bool {
    if GATHER_CALLS.fetch_add(1, Ordering::Relaxed) % GATHER_CHECK_EVERY == 0 {
        let allowed = os::mapping_count().is_some_and(|n| n < GATHER_MAPPINGS_MAX);
        GATHER_ALLOWED.store(allowed, Ordering::Relaxed);
    }
    GATHER_ALLOWED.load(Ordering::Relaxed)
}

/// Unmaps the piece in slot `i` if the slot still holds `word`; returns its
/// bytes (0 if another thread took it first).
fn evict(i: usize, word: u64) -> usize {
    if !take_slot(i, word) {
        return 0;
    }
    let (start, len) = unpack(word);
    unmap(start as *mut u8, len);
    len
}

/// Unmaps the cached pieces that have sat unused for at least
/// `older_than_ns` nanoseconds (0: all of them) and returns their bytes.
/// For the decay (the background thread, large frees) and `release()`.
pub fn release_cached(older_than_ns: u64) -> usize {
    let now = os::now_ns();
    let freed = (0..CACHE_SLOTS)
        .filter(|&i| now.saturating_sub(CACHED_AT[i].load(Ordering::Relaxed)) >= older_than_ns)
        .map(|i| evict(i, CACHE[i].load(Ordering::Acquire)))
        .sum();
    if freed != 0 {
        // Memory idle for a decay period was not needed to reach the old
        // peak again: the bound now follows what is still mapped.
        HIGH_WATER.store(IN_USE.load(Ordering::Relaxed) + CACHED.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    freed
}

/// Unmaps a mapping nobody refers to any more.
fn unmap(base: *mut u8, len: usize) {
    // SAFETY: callers pass a whole mapping of ours that left the cache, the
    // registry and every header.
    unsafe { os::unmap(base, len) };
    MAPPED.fetch_sub(len as u64, Ordering::Relaxed);
}

/// Whether `block` is a live large block (the registry's word, so any
/// pointer may be asked).
#[cfg(feature = "capi")]
pub fn is_live(block: *const u8) -> bool {
    registry::contains(block)
}

/// The usable size of a block made by `alloc`.
///
/// # Safety
/// `block` is a live large block (`is_live`).
pub unsafe fn usable_size(block: *mut u8) -> usize {
    // SAFETY: the caller guarantees the header is ours.
    let hdr = unsafe { header(block).read() };
    hdr.map_len - hdr.offset
}

/// Resizes a block in place or by moving its pages with `mremap`; the
/// alignment is kept because the offset within the first page is. Returns
/// null, leaving the block intact, when the kernel refuses.
///
/// # Safety
/// `block` is a live large block, given up on success.
pub unsafe fn realloc(block: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the header is ours.
    unsafe {
        let hdr = header(block).read();
        let Some(new_len) =
            new_size.checked_add(hdr.offset).and_then(|n| n.checked_add(OS_PAGE - 1)).map(|n| n & !(OS_PAGE - 1))
        else {
            return core::ptr::null_mut();
        };
        let base = os::remap(block.sub(hdr.offset), hdr.map_len, new_len);
        if base.is_null() {
            return core::ptr::null_mut();
        }
        let moved = base.add(hdr.offset);
        if moved != block {
            registry::remove(block);
            if !registry::insert(moved) {
                // The block exists but a free could no longer find it.
                os::write_stderr(b"rseqalloc: out of memory for the large-block registry\n");
                os::abort();
            }
        }
        header(moved).write(LargeHeader { map_len: new_len, size: new_size, ..hdr });
        MAPPED.fetch_add((new_len as u64).wrapping_sub(hdr.map_len as u64), Ordering::Relaxed);
        account(new_size as i64 - hdr.size as i64, 0);
        moved
    }
}

/// Whether `realloc` keeps the block's alignment: only offsets within the
/// first OS page survive `mremap`, which moves whole pages.
///
/// # Safety
/// As for `usable_size`.
pub unsafe fn can_remap(block: *mut u8) -> bool {
    // SAFETY: the caller guarantees the header is ours.
    unsafe { header(block).read().offset < OS_PAGE }
}

fn header(block: *mut u8) -> *mut LargeHeader {
    block.wrapping_sub(core::mem::size_of::<LargeHeader>()).cast()
}

fn account(in_use: i64, count: i64) {
    let now = IN_USE.fetch_add(in_use as u64, Ordering::Relaxed).wrapping_add(in_use as u64);
    if in_use > 0 {
        HIGH_WATER.fetch_max(now, Ordering::Relaxed);
    }
    COUNT.fetch_add(count as u64, Ordering::Relaxed);
}

/// (bytes mapped, bytes requested, blocks) for large blocks; the mapped
/// bytes include the cache's.
pub fn totals() -> (u64, u64, u64) {
    (MAPPED.load(Ordering::Relaxed), IN_USE.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed))
}

/// Bytes of freed mappings kept in the cache.
pub fn cached_bytes() -> u64 {
    CACHED.load(Ordering::Relaxed)
}
