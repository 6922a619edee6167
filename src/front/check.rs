//! Bad-pointer defence for the C API: decides whether a small-block pointer
//! handed to `free` or `realloc` may be freed, and reports one that may not
//! in one line (then aborts, or with `RSEQALLOC_BAD_FREE=leak` counts it and
//! leaves it alone). Other pointers are freed by the medium and large paths,
//! which take only live block starts (the class map's run markers, the
//! large-block registry); `judge_other` names what is wrong with the rest.
//!
//! What is caught, and at what cost:
//! - **interior pointers** (not at an object start of their span), always:
//!   a mask and a multiply on every free;
//! - **double frees, by default**: `free` stamps a freed block's second word
//!   with `SECRET ^ address` and every C allocation clears it, so freeing a
//!   block whose stamp is intact is a double free. That catches a repeat free
//!   of a block not handed out again in between, wherever the block now sits
//!   (a CPU cache, the middle end, its span). It misses a second free that
//!   comes after the block was handed out again (it then looks like the new
//!   owner's free), two threads freeing the same block at the same moment,
//!   and a free of an object start that was never handed out. A program's
//!   own data equals the stamp only by a 2⁻⁶⁴ accident: the secret is random
//!   per process (`AT_RANDOM`) and the stamp depends on the address;
//! - **every double free, in checked mode** (`RSEQALLOC_CHECK=1`): one bit
//!   per 16 bytes of the arena's window (1/128 of it, a sparse mapping whose
//!   pages exist only where the heap is) says which object
//!   starts are handed out, flipped atomically by every C allocation and
//!   free, so a free of a block that is not handed out is reported whatever
//!   happened in between. The bits are flipped on the slow paths
//!   (`on_alloc`, `on_free`), before a block leaves or enters a cache: init
//!   runs the caches behind their try-locks in this mode (`Mode::Fallback`),
//!   so that every operation takes a slow path, and the hit paths test no
//!   mode at all (blocks are stamped in checked mode too).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::backend::page_heap;
use crate::platform::config::{BadFree, Config};
use crate::platform::os;
use crate::platform::size_class::SizeClass;

/// The stamp secret, odd; 0 before init, when no small block exists.
static SECRET: AtomicU64 = AtomicU64::new(0);
static LEAK: AtomicBool = AtomicBool::new(false);
/// Base of the checked mode's bitmap; 0 when not in checked mode.
static BITMAP: AtomicUsize = AtomicUsize::new(0);
static BAD_FREES: AtomicU64 = AtomicU64::new(0);

/// Why a pointer may not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Neither a live large block nor inside a span: rseqalloc never made it.
    Foreign,
    /// Inside a span, but not where an object starts.
    Interior,
    /// An object that is already free.
    DoubleFree,
    /// `free_sized` / `free_aligned_sized` named a size or alignment the
    /// block does not have.
    SizeMismatch,
}

/// Reads the options into place; maps the bitmap in checked mode, and
/// returns whether checked mode is on. Called once by init, after the arena
/// exists and before any small block does.
pub fn init(config: &Config) -> bool {
    LEAK.store(config.bad_free == BadFree::Leak, Ordering::Relaxed);
    if config.checked {
        let (_, arena_bytes) = page_heap::HEAP.map().window();
        let bitmap = os::map_sparse(arena_bytes / 128);
        if bitmap.is_null() {
            os::write_stderr(b"rseqalloc: RSEQALLOC_CHECK=1, but no memory for the bitmap; not checking\n");
        }
        BITMAP.store(bitmap as usize, Ordering::Relaxed);
    }
    SECRET.store(os::random_u64() | 1, Ordering::Relaxed);
    checked()
}

/// Whether checked mode is on (`RSEQALLOC_CHECK=1`).
#[inline(always)]
pub fn checked() -> bool {
    BITMAP.load(Ordering::Relaxed) != 0
}

/// Clears the freed stamp of a small block the C API is about to hand out
/// (the small entry point does this itself on a hit).
///
/// # Safety
/// `p` is a small object just taken from the allocator, at least 16 bytes.
#[inline(always)]
pub unsafe fn clear_stamp(p: *mut u8) {
    // SAFETY: the caller's guarantee: the object is ours and 16+ bytes long.
    unsafe { stamp(p).write(0) };
}

/// In checked mode, marks a small block the slow path hands out (its stamp
/// is already clear). Blocks from outside the arena (bootstrap blocks during
/// init) have no bit and are left alone.
#[inline]
pub fn on_alloc(p: *const u8) {
    if checked() && in_arena(p) {
        flip(p, true);
    }
}

/// In checked mode, marks a small block given back free, on the free slow
/// path, before it enters any cache: false (after reporting it as a double
/// free of `free`) if it was not handed out, and then it must be left alone.
#[inline]
pub fn on_free(p: *const u8) -> bool {
    if !checked() || !in_arena(p) || flip(p, false) {
        return true;
    }
    report("free", p, Bad::DoubleFree)
}

/// Whether the C API may free `p`, an object start of `class`: whether its
/// freed stamp is absent. If so, stamps it (the caller then frees it); if
/// not, says why (the caller reports it, off its hot path). Checked mode's
/// bitmap is consulted later, on the free slow path (`on_free`).
///
/// # Safety
/// `SizeClass::object_at(map byte of p, p) == Some(class)`: `p` is where an
/// object of `class` starts in a live span.
#[inline(always)]
pub unsafe fn take(p: *mut u8, class: SizeClass) -> Result<(), Bad> {
    debug_assert!(class.is_object_start(p as usize));
    let mark = SECRET.load(Ordering::Relaxed) ^ p as u64;
    // SAFETY: the caller's guarantee: p is an object start in a live span,
    // so its 16+ bytes are arena memory we may touch.
    unsafe {
        if stamp(p).read() == mark {
            return Err(Bad::DoubleFree);
        }
        stamp(p).write(mark);
    }
    Ok(())
}

/// Whether `p`, a pointer into a `class` span, is a handed-out block (for
/// `realloc` and `malloc_usable_size`, which keep it). Reports nothing.
///
/// # Safety
/// As for `take`.
pub unsafe fn is_live(p: *const u8, class: SizeClass) -> Result<(), Bad> {
    if !class.is_object_start(p as usize) {
        return Err(Bad::Interior);
    }
    let live = if checked() {
        let (word, bit) = bit_of(p);
        word.load(Ordering::Relaxed) & bit != 0
    } else {
        // SAFETY: as in `take`.
        unsafe { stamp(p as *mut u8).read() != SECRET.load(Ordering::Relaxed) ^ p as u64 }
    };
    if live {
        Ok(())
    } else {
        Err(Bad::DoubleFree)
    }
}

/// Reports a pointer that may not be freed: one line on stderr naming the
/// call, the address and the reason, then abort; with
/// `RSEQALLOC_BAD_FREE=leak`, counts it and returns false instead.
#[cold]
#[inline(never)]
pub fn report(op: &str, p: *const u8, why: Bad) -> bool {
    let reason = match why {
        Bad::Foreign => "not allocated by rseqalloc (or already freed)",
        Bad::Interior => "interior pointer",
        Bad::DoubleFree => "double free",
        Bad::SizeMismatch => "size or alignment does not match the block",
    };
    let leak = LEAK.load(Ordering::Relaxed);
    let tail = if leak { "; left alone (RSEQALLOC_BAD_FREE=leak)" } else { "" };
    let mut line = crate::platform::os::Line::new();
    let _ = core::fmt::write(&mut line, format_args!("rseqalloc: {op}(): invalid pointer {p:p}: {reason}{tail}\n"));
    line.flush();
    if !leak {
        os::abort();
    }
    BAD_FREES.fetch_add(1, Ordering::Relaxed);
    false
}

/// Why `p`, which is neither a small object start, a live medium or large
/// block nor a bootstrap block, may not be freed: inside a small span or a
/// medium run but not where a block starts, or not ours (a freed medium or
/// large block looks like this too).
pub fn judge_other(p: *const u8) -> Bad {
    if page_heap::HEAP.map().class_of(p).is_some() || crate::backend::medium::MEDIUM.is_interior(p) {
        Bad::Interior
    } else {
        Bad::Foreign
    }
}

/// Invalid pointers left alone so far (`RSEQALLOC_BAD_FREE=leak`).
pub fn bad_frees() -> u64 {
    BAD_FREES.load(Ordering::Relaxed)
}

/// The word `free` stamps: the second, so that the first stays free for the
/// central slab's free lists (asm/abi.h: the small malloc clears it there).
fn stamp(p: *mut u8) -> *mut u64 {
    p.wrapping_add(STAMP_OFFSET).cast()
}

const STAMP_OFFSET: usize = 8;
const _: () = assert!(STAMP_OFFSET as i64 == crate::rseq::abi::header::OBJ_OFF_STAMP);

/// Whether `p` lies in the arena (the bitmap covers nothing else).
fn in_arena(p: *const u8) -> bool {
    let (base, bytes) = page_heap::HEAP.map().window();
    (p as usize).wrapping_sub(base) < bytes
}

/// The bitmap word and bit of the object starting at `p`.
fn bit_of(p: *const u8) -> (&'static AtomicU8, u8) {
    let (base, _) = page_heap::HEAP.map().window();
    let index = (p as usize - base) >> 4;
    // SAFETY: p is in the arena, and the bitmap has a bit per 16 bytes of
    // it; it is never unmapped.
    let word = unsafe { &*((BITMAP.load(Ordering::Relaxed) + index / 8) as *const AtomicU8) };
    (word, 1 << (index % 8))
}

/// Sets (`to_live`) or clears the bit of `p`; returns whether it changed.
#[cold]
fn flip(p: *const u8, to_live: bool) -> bool {
    let (word, bit) = bit_of(p);
    let old = if to_live { word.fetch_or(bit, Ordering::Relaxed) } else { word.fetch_and(!bit, Ordering::Relaxed) };
    (old & bit != 0) != to_live
}
