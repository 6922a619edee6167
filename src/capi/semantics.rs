//! The C API's core, with glibc's semantics: every exported symbol
//! (`exports`) is a short forward to the functions here. errno is set in
//! one place (`fail`); bad pointers are judged by `check`, the class map's
//! medium runs and the large-block registry; allocations that re-enter
//! during bring-up are served from `bootstrap`. Also the heap summary that
//! `mallinfo2` and `malloc_info` report.

use core::ffi::c_int;

use crate::backend::medium::Intent;
use crate::backend::{large, medium, page_heap, pagemap};
use crate::cache::percpu;
use crate::front::check::{self, Bad};
use crate::front::global;
use crate::front::global::{alloc_big, free_big, resize_big};
use crate::front::{init, stats};
use crate::platform::os;
use crate::platform::size_class::{SizeClass, MAX_SMALL};
use crate::rseq::cs;

use super::bootstrap;

/// The alignment of every `malloc` block (glibc's `MALLOC_ALIGNMENT`).
pub(super) const MIN_ALIGN: usize = 16;
/// glibc refuses sizes above this (`checked_request2size`).
const PTRDIFF_MAX: usize = isize::MAX as usize;

/// Allocates `size` bytes at 16-byte alignment: for small sizes one tail
/// call of the small entry point, which in this library also clears the
/// freed stamp, and on a miss goes to `rseqalloc_c_malloc_miss`. Every
/// section misses before init and in checked mode, so that miss path is
/// where the allocator comes up and where checked mode marks its blocks.
#[inline(always)]
pub(super) fn alloc(size: usize) -> *mut u8 {
    if size <= MAX_SMALL {
        // SAFETY: size ≤ MAX_SMALL.
        return unsafe { cs::rseqalloc_malloc_small(size) };
    }
    alloc_slow(size, MIN_ALIGN, Intent::Plain)
}

/// Where the small entry point goes on a miss in this library: the
/// per-CPU slow path, then what a C allocation needs besides (the stamp
/// cleared, as a hit clears it; checked mode's mark; during init a bootstrap
/// block; errno on failure).
#[no_mangle]
extern "C" fn rseqalloc_c_malloc_miss(class: usize) -> *mut u8 {
    let Some(class) = SizeClass::from_index(class) else {
        return fail(libc::ENOMEM); // unreachable: the asm passes a class
    };
    let p = global::alloc_slow(class);
    if !p.is_null() {
        // SAFETY: a small object just handed to us.
        unsafe { check::clear_stamp(p) };
        check::on_alloc(p);
        return p;
    }
    if init::initialising_here() {
        return bootstrap::alloc(class.size(), class.alignment());
    }
    fail(libc::ENOMEM)
}

/// Any size at any power-of-two alignment: over-aligned classes, medium and
/// large blocks (for `intent`, which a small block ignores), re-entry during
/// init, and failure.
#[cold]
#[inline(never)]
pub(super) fn alloc_slow(size: usize, align: usize, intent: Intent) -> *mut u8 {
    if size <= PTRDIFF_MAX {
        let p = match SizeClass::for_layout(size, align) {
            // A miss of its section marks the block (`rseqalloc_c_malloc_miss`).
            Some(class) => percpu::alloc(class),
            None => alloc_big(size, align, intent),
        };
        if !p.is_null() {
            return p;
        }
        if init::initialising_here() {
            return bootstrap::alloc(size, align);
        }
    }
    fail(libc::ENOMEM)
}

/// The one place errno is set: returns NULL with `errno = code`.
#[cold]
pub(super) fn fail(code: c_int) -> *mut u8 {
    os::set_errno(code);
    core::ptr::null_mut()
}

/// Allocates at `align` (any value: glibc's `memalign` rules).
pub(super) fn memalign_any(align: usize, size: usize) -> *mut u8 {
    if align <= MIN_ALIGN {
        return alloc(size);
    }
    if align > usize::MAX / 2 + 1 {
        return fail(libc::EINVAL); // cannot be rounded up to a power of two
    }
    alloc_slow(size, align.next_power_of_two(), Intent::Plain)
}

/// Frees any pointer `free` may see; `op` names the C function for a
/// diagnostic.
///
/// # Safety
/// `p` is NULL or a block the caller gives up (checked where possible).
#[inline(always)]
pub(super) unsafe fn free_any(op: &str, p: *mut u8) {
    match page_heap::HEAP.map().map_byte(p).and_then(|byte| SizeClass::object_at(byte, p as usize)) {
        // SAFETY: object_at(p) is class.
        Some(class) => match unsafe { check::take(p, class) } {
            // SAFETY: a block that passes `take` is an object of `class`
            // that the caller gives up.
            Ok(()) => unsafe { percpu::free(class, p) },
            Err(why) => reject(p, why, op),
        },
        // SAFETY: the caller's guarantee passes on.
        None => unsafe { free_other(p, op) },
    }
}

/// `check::report` with `p` first: `free_any` then keeps `p` in the
/// register in which it arrived and passes it on (a move fewer each way).
#[cold]
#[inline(never)]
fn reject(p: *mut u8, why: Bad, op: &str) {
    check::report(op, p, why);
}

/// NULL, medium and large blocks, bootstrap blocks (never freed), and
/// pointers that are not a block start: inside a small or medium span, or
/// foreign.
///
/// # Safety
/// As for `free_any`.
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut u8, op: &str) {
    // SAFETY: free_big touches only live medium runs and registered large
    // blocks, which the caller gives up.
    if p.is_null() || unsafe { free_big(p) } || bootstrap::size_of(p).is_some() {
        return;
    }
    check::report(op, p, check::judge_other(p));
}

/// The usable size of a live block, or why `p` is not one.
pub(super) fn usable(p: *const u8) -> Result<usize, Bad> {
    if let Some(class) = page_heap::HEAP.map().class_of(p) {
        // SAFETY: class_of(p) is class.
        return unsafe { check::is_live(p, class) }.map(|()| class.size());
    }
    if let Some(size) = medium::MEDIUM.usable_size(p) {
        return Ok(size);
    }
    if large::is_live(p) {
        // SAFETY: the registry says p is a live large block.
        return Ok(unsafe { large::usable_size(p as *mut u8) });
    }
    bootstrap::size_of(p).ok_or_else(|| check::judge_other(p))
}

/// `realloc` of a non-null pointer to a non-zero size.
///
/// # Safety
/// `p` is a live block, given up on success.
pub(super) unsafe fn resize(p: *mut u8, size: usize) -> *mut u8 {
    let old = match usable(p) {
        Ok(old) => old,
        Err(why) => {
            check::report("realloc", p, why);
            return fail(libc::ENOMEM); // with RSEQALLOC_BAD_FREE=leak
        }
    };
    match page_heap::HEAP.map().class_of(p) {
        // The block still fits its class: a later free finds the same class.
        Some(class) if SizeClass::of(size) == Some(class) => return p,
        Some(_) => {}
        None if size > PTRDIFF_MAX => return fail(libc::ENOMEM),
        None if size > MAX_SMALL && bootstrap::size_of(p).is_none() => {
            // SAFETY: `usable` vouched that p is live: not small and not a
            // bootstrap block, so medium or large; given up on success, left
            // as it was on failure.
            if let Some(q) = unsafe { resize_big(p, size) } {
                return q;
            }
        }
        None => {}
    }
    // A block growing past the classes is placed where it can go on growing.
    let q = if size > MAX_SMALL && size > old { alloc_slow(size, MIN_ALIGN, Intent::Growing) } else { alloc(size) };
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; the copy fits both.
        unsafe {
            core::ptr::copy_nonoverlapping(p, q, old.min(size));
            free_any("realloc", p);
        }
    }
    q
}

/// # Safety
/// As for `free_any`.
pub(super) unsafe fn free_checked(op: &str, p: *mut u8, align: usize, size: usize) {
    if p.is_null() {
        return;
    }
    let bad = match usable(p) {
        Ok(usable) if size <= usable && align != 0 && p as usize % align == 0 => None,
        Ok(_) => Some(Bad::SizeMismatch),
        Err(why) => Some(why),
    };
    match bad {
        Some(why) => {
            check::report(op, p, why);
        }
        // SAFETY: the caller's guarantee.
        None => unsafe { free_any(op, p) },
    }
}

/// The allocator's memory in glibc's terms, for `mallinfo2` and
/// `malloc_info`. glibc's `arena` is memory held from the OS outside
/// mmapped blocks, split exactly into `uordblks` (in use) and `fordblks`
/// (free); mmapped blocks are counted only in `hblks`/`hblkhd`, so in use
/// is `uordblks + hblkhd`. Here the arena's backed pages (less those given
/// back) and the cache of freed large mappings play the heap; live large
/// blocks are the mmapped ones.
pub(super) struct Heap {
    /// Arena pages backed now, plus cached freed large mappings.
    pub(super) arena: u64,
    /// The most arena pages ever backed (glibc's `max_system_mem`).
    pub(super) arena_max: u64,
    /// Bytes of small and medium blocks handed out.
    pub(super) in_use: u64,
    /// Free objects in CPU and transfer caches (glibc's fast bins): count, bytes.
    pub(super) fast: (u64, u64),
    /// The snapshot all this comes from (its per-class cached objects are
    /// `malloc_info`'s sizes), taken before writing, which may allocate.
    pub(super) stats: stats::Stats,
    /// Other free pieces held: emptied granules still backed and cached
    /// large mappings (count of granules, and all free bytes but `fast`).
    pub(super) rest: (u64, u64),
    /// Live large blocks: count, bytes mapped.
    pub(super) mmap: (u64, u64),
    /// What `malloc_trim` gives back without draining a cache.
    pub(super) releasable: u64,
}

pub(super) fn heap() -> Heap {
    let s = stats::snapshot();
    let (large_mapped, large_in_use, _) = large::totals();
    // The arena's pages backed now (its high-water mark less those given
    // back), plus the cached freed large mappings.
    let arena = s.arena_bytes.saturating_sub(s.bytes_released) + s.large_cached_bytes;
    let in_use = s.bytes_in_use.saturating_sub(large_in_use).min(arena);
    let fast_count = s.per_class().iter().map(|c| c.cpu_cached + c.transfer_cached).sum();
    let fast_bytes = s.totals.cached_bytes + s.transfer_bytes;
    let free = arena - in_use;
    Heap {
        arena,
        arena_max: s.arena_bytes.max(arena),
        in_use,
        fast: (fast_count, fast_bytes.min(free)),
        rest: (s.free_span_bytes / pagemap::GRANULE as u64, free.saturating_sub(fast_bytes)),
        mmap: (s.large_blocks, large_mapped.saturating_sub(s.large_cached_bytes)),
        releasable: (s.free_span_bytes + s.large_cached_bytes).min(free),
        stats: s,
    }
}

pub(super) fn write_info(out: &mut impl core::fmt::Write, h: &Heap) -> core::fmt::Result {
    let (fast, rest) = (h.fast, h.rest);
    let totals = |out: &mut dyn core::fmt::Write| {
        writeln!(out, "<total type=\"fast\" count=\"{}\" size=\"{}\"/>", fast.0, fast.1)?;
        writeln!(out, "<total type=\"rest\" count=\"{}\" size=\"{}\"/>", rest.0, rest.1)
    };
    let system = |out: &mut dyn core::fmt::Write| {
        writeln!(out, "<system type=\"current\" size=\"{}\"/>", h.arena)?;
        writeln!(out, "<system type=\"max\" size=\"{}\"/>", h.arena_max)?;
        writeln!(out, "<aspace type=\"total\" size=\"{}\"/>", h.arena)?;
        writeln!(out, "<aspace type=\"mprotect\" size=\"{}\"/>", h.arena)
    };
    writeln!(out, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>")?;
    let mut from = 1;
    for class in h.stats.per_class() {
        let count = class.cpu_cached + class.transfer_cached;
        if count > 0 {
            writeln!(
                out,
                "  <size from=\"{from}\" to=\"{}\" total=\"{}\" count=\"{count}\"/>",
                class.size,
                class.size * count
            )?;
        }
        from = class.size + 1;
    }
    writeln!(out, "</sizes>")?;
    totals(out)?;
    system(out)?;
    writeln!(out, "</heap>")?;
    totals(out)?;
    writeln!(out, "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>", h.mmap.0, h.mmap.1)?;
    system(out)?;
    writeln!(out, "</malloc>")
}
