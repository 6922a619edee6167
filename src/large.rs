//! Blocks too big (or too aligned) for a size class or a medium run: each
//! is its own mapping, with a 32-byte header just before the block recording
//! the mapping, so an unsized free finds it and `realloc` can `mremap` it.
//! Every live block is in the registry (`registry.rs`), which is what makes
//! a pointer a large block: the header is read only after the registry says so.
//!
//! ```text
//!  map_base                       block (aligned)
//!  |<--------- offset ----------->|
//!  | (padding) | LargeHeader (32) | size bytes ... | (to OS page) |
//! ```
//!
//! A freed mapping is kept in a small cache instead of unmapped, so a
//! program that allocates and frees blocks of one size pays neither the
//! `mmap`/`munmap` pair nor the page faults each time (mimalloc and jemalloc
//! retain freed memory the same way). The cache is bounded: at most
//! `CACHE_SLOTS` mappings and `cache_cap()` bytes, the larger of 8 MiB and an
//! eighth of the bytes in live large blocks, so it adds at most 12.5% to a
//! big heap's footprint (issue 4 holds RSS to 1.2× the best peer);
//! `release_cached` unmaps what has sat there long enough, and `release()` all of
//! it. The slots are atomics, not a lock: a slot is taken by swapping it to
//! zero, so nothing here needs the fork handlers.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::os::{self, OS_PAGE};
use crate::registry;

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

/// Mappings the cache holds at most.
const CACHE_SLOTS: usize = 16;
/// The cache's byte bound never drops below this.
const CACHE_FLOOR: u64 = 8 << 20;
/// A slot word is `(base >> 12) << LEN_BITS | len >> 12` (0: empty): one
/// word, so a compare-exchange takes base and length together. User-space
/// addresses have 47 bits, so 35 bits of page number fit above 29 of length.
const LEN_BITS: u32 = 29;
static CACHE: [AtomicU64; CACHE_SLOTS] = [const { AtomicU64::new(0) }; CACHE_SLOTS];
/// When each slot was filled (`os::now_ns`); written just after the slot, so
/// a racing reader may see the previous age and release a mapping early.
static CACHED_AT: [AtomicU64; CACHE_SLOTS] = [const { AtomicU64::new(0) }; CACHE_SLOTS];
/// Bytes of the mappings in the cache (reserved before a slot is filled).
static CACHED: AtomicU64 = AtomicU64::new(0);

/// Makes a block of `size` bytes aligned to `align` (a power of two), from a
/// cached mapping when one fits (page alignment or less), else a new one.
/// With `zero`, a reused mapping is cleared by dropping its pages; a new one
/// is zero already. Null when out of memory.
pub fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    let offset = align.max(MIN_OFFSET);
    let Some(need) = size.checked_add(offset).and_then(|n| n.checked_add(OS_PAGE - 1)).map(|n| n & !(OS_PAGE - 1))
    else {
        return core::ptr::null_mut();
    };
    let cached = if align <= OS_PAGE { cache_take(need) } else { None };
    let (base, map_len) = match cached {
        Some((base, len)) => {
            // SAFETY: the mapping left the cache for us alone.
            if zero && !unsafe { os::release(base, len) } {
                // SAFETY: as above; the mapping is len bytes long.
                unsafe { core::ptr::write_bytes(base, 0, len) };
            }
            (base, len)
        }
        None => {
            let base = if align <= OS_PAGE { os::map(need) } else { os::map_aligned(need, align, false) };
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
    cache_put(block.wrapping_sub(hdr.offset), hdr.map_len);
    true
}

/// The cache's byte bound now (module doc).
fn cache_cap() -> u64 {
    CACHE_FLOOR.max(IN_USE.load(Ordering::Relaxed) / 8)
}

/// Keeps the freed mapping `[base, base + len)` in the cache, evicting the
/// oldest to make room, or unmaps it if it cannot fit.
fn cache_put(base: *mut u8, len: usize) {
    let cap = cache_cap();
    let (page, pages) = (base as u64 >> 12, len as u64 >> 12);
    if len as u64 <= cap && page < 1 << (64 - LEN_BITS) && pages < 1 << LEN_BITS {
        let word = page << LEN_BITS | pages;
        for _ in 0..=CACHE_SLOTS {
            let reserve = |c: u64| (c + len as u64 <= cap).then_some(c + len as u64);
            if CACHED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, reserve).is_ok() {
                // Release: whoever takes the slot sees the mapping as we left it.
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

/// Takes the smallest cached mapping of `need` to `need + need / 4` bytes
/// (the spacing of jemalloc's large size classes: a block wastes at most a
/// fifth of its mapping); None when none fits.
fn cache_take(need: usize) -> Option<(*mut u8, usize)> {
    while CACHED.load(Ordering::Relaxed) != 0 {
        let (i, word, len) = (0..CACHE_SLOTS)
            .map(|i| {
                let word = CACHE[i].load(Ordering::Relaxed);
                (i, word, ((word & ((1 << LEN_BITS) - 1)) << 12) as usize)
            })
            .filter(|&(_, word, len)| word != 0 && need <= len && len <= need + need / 4)
            .min_by_key(|&(_, _, len)| len)?;
        // Acquire: pairs with cache_put's Release.
        if CACHE[i].compare_exchange(word, 0, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            CACHED.fetch_sub(len as u64, Ordering::Relaxed);
            return Some((((word >> LEN_BITS) << 12) as *mut u8, len));
        }
    }
    None
}

/// Unmaps the mapping in slot `i` if the slot still holds `word`; returns
/// its bytes (0 if another thread took it first).
fn evict(i: usize, word: u64) -> usize {
    if word == 0 || CACHE[i].compare_exchange(word, 0, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return 0;
    }
    let len = ((word & ((1 << LEN_BITS) - 1)) << 12) as usize;
    CACHED.fetch_sub(len as u64, Ordering::Relaxed);
    unmap(((word >> LEN_BITS) << 12) as *mut u8, len);
    len
}

/// Unmaps the cached mappings that have sat unused for at least
/// `older_than_ns` nanoseconds (0: all of them) and returns their bytes.
/// For the decay (the background thread) and `release()`.
pub fn release_cached(older_than_ns: u64) -> usize {
    let now = os::now_ns();
    (0..CACHE_SLOTS)
        .filter(|&i| now.saturating_sub(CACHED_AT[i].load(Ordering::Relaxed)) >= older_than_ns)
        .map(|i| evict(i, CACHE[i].load(Ordering::Acquire)))
        .sum()
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
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
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
    IN_USE.fetch_add(in_use as u64, Ordering::Relaxed);
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
