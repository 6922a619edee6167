//! The `GlobalAlloc` implementation: layout → size class, then the per-CPU
//! fast path; everything else (over-aligned, medium, large, resize) in cold
//! helpers, of which the C API shares those for blocks above the classes.
//! Also the slow-path entries the asm calls on a miss: they bring the
//! allocator up, pick the cache path by mode, and tell the background
//! thread when memory went back to the page heap. Nothing here panics or
//! unwinds; failures return null.

use core::alloc::{GlobalAlloc, Layout};

use crate::backend::large;
use crate::backend::medium::{self, Intent, MAX_MEDIUM};
use crate::cache::{fallback, percpu};
use crate::front::allocator::RseqAlloc;
use crate::front::{background, init};
use crate::platform::config::{self, Options};
use crate::platform::size_class::{SizeClass, MAX_SMALL};
use crate::rseq::{self, cs, Mode};

impl RseqAlloc {
    /// Hands the options over before the first allocation. For
    /// `RseqAlloc` without options this folds away at compile time (the
    /// value is a constant), so the fast path is unchanged; with options,
    /// it is one load and a branch.
    #[inline(always)]
    fn hand_over_options(&self) {
        if !self.options.handed_over() {
            hand_over(&self.options);
        }
    }
}

#[cold]
#[inline(never)]
fn hand_over(options: &Options) {
    if options.hand_over() && init::ensure() && !config::code_options_used() {
        crate::platform::os::write_stderr(
            b"rseqalloc: the options set in code (RseqAlloc::with) are not in force: the allocator was already \
              running (a C allocation or another allocator came first); RSEQALLOC_VERBOSE=1 shows those in force\n",
        );
    }
}

/// Alignment every size class guarantees.
const MIN_ALIGN: usize = 16;

// SAFETY: blocks come from size classes (whose objects are distinct, at least
// `size` long, and aligned to the class alignment ≥ the layout's) or from
// their own mappings; dealloc derives the same class from the same layout.
unsafe impl GlobalAlloc for RseqAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.hand_over_options();
        if layout.size() <= MAX_SMALL && layout.align() <= MIN_ALIGN {
            // SAFETY: size ≤ MAX_SMALL.
            return unsafe { cs::rseqalloc_malloc_small(layout.size()) };
        }
        alloc_unusual(layout)
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() <= MAX_SMALL && layout.align() <= MIN_ALIGN {
            // SAFETY: the caller gives up ptr, allocated with this layout.
            return unsafe { cs::rseqalloc_free_small(ptr, layout.size()) };
        }
        // SAFETY: as above.
        unsafe { dealloc_unusual(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.hand_over_options();
        match SizeClass::for_layout(layout.size(), layout.align()) {
            Some(class) => {
                let p = percpu::alloc(class);
                if !p.is_null() {
                    // SAFETY: p has at least layout.size() writable bytes.
                    unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
                }
                p
            }
            None => alloc_big(layout.size(), layout.align(), Intent::Zeroed),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let old_class = SizeClass::for_layout(layout.size(), align);
        let new_class = SizeClass::for_layout(new_size, align);
        match (old_class, new_class) {
            // Same class: the block already fits, and a later dealloc with
            // the new layout derives the same class.
            (Some(a), Some(b)) if a == b => return ptr,
            (None, None) => {
                // SAFETY: ptr is a live medium or large block (its layout
                // has no class), given up on success.
                if let Some(q) = unsafe { resize_big(ptr, new_size) } {
                    return q;
                }
            }
            _ => {}
        }
        // SAFETY: the new layout is valid: the caller guarantees new_size
        // rounded to align does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        let new = if new_class.is_none() && new_size > layout.size() {
            // Growing: placed where it can go on growing in place.
            alloc_big(new_size, align, Intent::Growing)
        } else {
            // SAFETY: a valid layout with non-zero size.
            unsafe { self.alloc(new_layout) }
        };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy fits both.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// `alloc_slow` for the asm entry point `rseqalloc_malloc_small`, which
/// tail-calls it on a miss (the C library's entry point calls
/// `capi::rseqalloc_c_malloc_miss` instead).
#[cfg(not(feature = "capi"))]
#[no_mangle]
extern "C" fn rseqalloc_alloc_slow(class: usize) -> *mut u8 {
    match SizeClass::from_index(class) {
        Some(class) => alloc_slow(class),
        None => core::ptr::null_mut(), // unreachable: the asm passes a table entry
    }
}

/// `free_slow` for the asm entry point `rseqalloc_free_small`.
///
/// # Safety
/// As for `free_slow`, with `class` a valid class index.
#[no_mangle]
unsafe extern "C" fn rseqalloc_free_slow(p: *mut u8, class: usize) {
    // Checked mode (C API) unmarks the block here: every free misses there.
    #[cfg(feature = "capi")]
    if !crate::front::check::on_free(p) {
        return;
    }
    if let Some(class) = SizeClass::from_index(class) {
        // SAFETY: the caller's guarantee passes on.
        unsafe { free_slow(class, p) }
    }
}

/// A small allocation missed its CPU's stack (or the process or thread is
/// not set up yet): bring the allocator up, then refill through the cache
/// of the mode in force. Null when out of memory.
#[cold]
#[inline(never)]
pub(crate) fn alloc_slow(class: SizeClass) -> *mut u8 {
    if !init::ensure() {
        return core::ptr::null_mut();
    }
    let p = match rseq::mode() {
        Mode::Fallback => fallback::alloc(class),
        Mode::Uninit => return core::ptr::null_mut(),
        _ => percpu::alloc_slow(class),
    };
    background::after_slow_path();
    p
}

/// A small free found its CPU's stack full: flush through the cache of the
/// mode in force.
///
/// # Safety
/// `p` is an allocated object of `class` that the caller gives up.
#[cold]
#[inline(never)]
unsafe fn free_slow(class: SizeClass, p: *mut u8) {
    if rseq::mode() == Mode::Fallback {
        // SAFETY: the caller's guarantee passes on.
        unsafe { fallback::free(class, p) }
    } else {
        // SAFETY: the caller's guarantee passes on.
        unsafe { percpu::free_slow(class, p) }
    }
    background::after_slow_path();
}

/// Over-aligned small layouts and large ones.
#[cold]
#[inline(never)]
fn alloc_unusual(layout: Layout) -> *mut u8 {
    match SizeClass::for_layout(layout.size(), layout.align()) {
        Some(class) => percpu::alloc(class),
        None => alloc_big(layout.size(), layout.align(), Intent::Plain),
    }
}

/// # Safety
/// `ptr` was allocated by `alloc_unusual` with `layout` and is given up.
#[cold]
#[inline(never)]
unsafe fn dealloc_unusual(ptr: *mut u8, layout: Layout) {
    match SizeClass::for_layout(layout.size(), layout.align()) {
        // SAFETY: the caller's guarantee: ptr is an object of this class.
        Some(class) => unsafe { percpu::free(class, ptr) },
        None => {
            // SAFETY: the caller's guarantee: ptr is a medium or large block
            // (so `free_big` finds it; its answer carries no news).
            unsafe { free_big(ptr) };
        }
    }
}

/// A block no size class serves: a medium run when the layout fits one and
/// the arena has room, else a mapping. A zeroed block is written only where
/// its memory may be dirty. Null when out of memory. Never inlined, so that
/// its callers stay frameless and reach the size classes by a tail call.
#[inline(never)]
pub(crate) fn alloc_big(size: usize, align: usize, intent: Intent) -> *mut u8 {
    // A program's first allocation may be a mapping, which needs no arena:
    // the options it follows (the decay, the background thread) are read
    // at bring-up all the same. Without an arena, mappings still work.
    if init::ensure() && medium::fits(size, align) {
        let p = medium::MEDIUM.alloc(size, align, intent);
        if !p.is_null() {
            return p;
        }
    }
    large::alloc(size, align, intent == Intent::Zeroed)
}

/// Frees a medium or large block; false, touching nothing, if `p` is
/// neither (the class map, then the registry, decides).
///
/// # Safety
/// If `p` is a live medium or large block, the caller gives it up.
pub(crate) unsafe fn free_big(p: *mut u8) -> bool {
    // SAFETY: the caller's guarantee passes on.
    if unsafe { medium::MEDIUM.free(p) } {
        background::on_heap_free();
        return true;
    }
    // SAFETY: not medium, so the caller's guarantee makes it a large block
    // or no block (which `large::free` leaves alone).
    unsafe { large::free(p) }
}

/// Resizes a medium or large block without copying it by hand: a medium
/// run in place while `new_size` stays medium and the next granules are
/// free, a mapping with `mremap`. None when the block must move instead,
/// which includes a mapping the kernel would not resize (out of memory, or
/// made of cached pieces of two kernel mappings, which one `mremap` cannot
/// span): the block is then intact, and a move either succeeds or fails
/// for want of memory.
///
/// # Safety
/// `p` is a live medium or large block, given up on Some; no size class
/// serves `new_size` at the block's alignment.
pub(crate) unsafe fn resize_big(p: *mut u8, new_size: usize) -> Option<*mut u8> {
    if medium::MEDIUM.usable_size(p).is_some() {
        // SAFETY: the caller's guarantee.
        return (new_size <= MAX_MEDIUM && unsafe { medium::MEDIUM.resize(p, new_size) }).then_some(p);
    }
    // SAFETY: not medium, so the caller's guarantee makes it large.
    unsafe { large::can_remap(p) }.then(|| unsafe { large::realloc(p, new_size) }).filter(|q| !q.is_null())
}

/// The usable size of a block handed out by [`RseqAlloc`]: its size class,
/// a medium block's whole granules, or a large block's mapping less its
/// header. Needs no layout: the arena's class map knows every small block's
/// class and every medium run's length.
///
/// # Safety
/// `ptr` was returned by [`RseqAlloc`] and is still allocated.
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// unsafe {
///     let p = rseqalloc::RseqAlloc.alloc(layout);
///     assert_eq!(rseqalloc::usable_size(p), 112);
///     rseqalloc::RseqAlloc.dealloc(p, layout);
/// }
/// ```
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    match crate::backend::page_heap::HEAP.map().class_of(ptr) {
        Some(class) => class.size(),
        // SAFETY: the caller guarantees a live block; not small or medium,
        // so large.
        None => medium::MEDIUM.usable_size(ptr).unwrap_or_else(|| unsafe { large::usable_size(ptr as *mut u8) }),
    }
}
