//! `RseqAlloc` on a target without the per-CPU path: every call goes to
//! the system allocator, so that a crate depending on rseqalloc builds and
//! runs anywhere Rust does (`stats()` says `Mode::Forward`).

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use crate::front::allocator::RseqAlloc;

// SAFETY: each method passes its arguments to the same method of `System`,
// whose contract is the one `GlobalAlloc` states.
unsafe impl GlobalAlloc for RseqAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc* with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: ptr came from System with this layout; the caller's
        // guarantees on new_size pass on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The usable size of a block handed out by [`RseqAlloc`], which here is
/// the system allocator's: `malloc_usable_size` where the C library has it
/// (Linux with glibc or musl, Android, FreeBSD), `malloc_size` on Apple
/// targets, and 0 ("unknown": no more than the layout's size may be used)
/// elsewhere.
///
/// # Safety
/// `ptr` was returned by [`RseqAlloc`] and is still allocated.
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        extern "C" {
            fn malloc_usable_size(ptr: *mut core::ffi::c_void) -> usize;
        }
        // SAFETY: std's System allocates from the C heap on these targets
        // (malloc, or posix_memalign when over-aligned), and the caller
        // guarantees the block is live.
        unsafe { malloc_usable_size(ptr as *mut _) }
    }
    #[cfg(target_vendor = "apple")]
    {
        extern "C" {
            fn malloc_size(ptr: *const core::ffi::c_void) -> usize;
        }
        // SAFETY: as above, with the Apple C library's malloc zone.
        unsafe { malloc_size(ptr.cast()) }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_vendor = "apple")))]
    {
        let _ = ptr;
        0
    }
}
