//! Blocks too big (or too aligned) for a size class: each is its own
//! mapping, with a 32-byte header just before the block recording the
//! mapping, so an unsized free finds it and `realloc` can `mremap` it.
//! Every live block is in the registry (`registry.rs`), which is what makes
//! a pointer a large block: the header is read only after the registry says so.
//!
//! ```text
//!  map_base                       block (aligned)
//!  |<--------- offset ----------->|
//!  | (padding) | LargeHeader (32) | size bytes ... | (to OS page) |
//! ```

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

/// Maps a block of `size` bytes aligned to `align` (a power of two). Its
/// memory is fresh from the kernel, hence zeroed. Null when out of memory.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let offset = align.max(MIN_OFFSET);
    let Some(map_len) = size.checked_add(offset).and_then(|n| n.checked_add(OS_PAGE - 1)).map(|n| n & !(OS_PAGE - 1))
    else {
        return core::ptr::null_mut();
    };
    let base = if align <= OS_PAGE { os::map(map_len) } else { os::map_aligned(map_len, align, false) };
    if base.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: offset < map_len, and the header fits below the block because
    // offset ≥ MIN_OFFSET ≥ size_of::<LargeHeader>().
    let block = unsafe { base.add(offset) };
    if !registry::insert(block) {
        // SAFETY: the mapping was just made and nobody knows it.
        unsafe { os::unmap(base, map_len) };
        return core::ptr::null_mut();
    }
    // SAFETY: as above; the header lies inside the fresh mapping.
    unsafe { header(block).write(LargeHeader { magic: MAGIC, map_len, offset, size }) };
    account(map_len as i64, size as i64, 1);
    block
}

/// Unmaps `block` if it is a live large block; returns false, touching
/// nothing, if it is not (never allocated here, or already freed).
///
/// # Safety
/// If `block` is a live large block, the caller gives it up.
pub unsafe fn free(block: *mut u8) -> bool {
    if !registry::remove(block) {
        return false;
    }
    // SAFETY: the registry vouches that the header is ours; the caller gives
    // the block up.
    unsafe {
        let hdr = header(block).read();
        debug_assert_eq!(hdr.magic, MAGIC);
        account(-(hdr.map_len as i64), -(hdr.size as i64), -1);
        os::unmap(block.sub(hdr.offset), hdr.map_len);
    }
    true
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
        account(new_len as i64 - hdr.map_len as i64, new_size as i64 - hdr.size as i64, 0);
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

fn account(mapped: i64, in_use: i64, count: i64) {
    MAPPED.fetch_add(mapped as u64, Ordering::Relaxed);
    IN_USE.fetch_add(in_use as u64, Ordering::Relaxed);
    COUNT.fetch_add(count as u64, Ordering::Relaxed);
}

/// (bytes mapped, bytes requested, blocks) for large blocks.
pub fn totals() -> (u64, u64, u64) {
    (MAPPED.load(Ordering::Relaxed), IN_USE.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed))
}
