//! The exported C symbols: glibc's malloc family and its internal
//! `__libc_*` names, with default visibility, each a short forward to the
//! core (`semantics`). The contract of every `unsafe extern "C"` one is in
//! the `capi` module's doc.

use core::ffi::{c_int, c_void};

use super::semantics::{
    alloc, alloc_slow, fail, free_any, free_checked, heap, memalign_any, resize, usable, write_info, MIN_ALIGN,
};
use crate::backend::medium::Intent;
use crate::front::{background, stats};
use crate::platform::os::{self, OS_PAGE};
use crate::platform::size_class::MAX_SMALL;

/// C `malloc`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc(size).cast()
}

/// C `free`.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the C contract (module doc).
    unsafe { free_any("free", p.cast()) }
}

/// C `calloc`: overflow is ENOMEM; medium and large blocks are zeroed
/// only where their memory may be dirty.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else { return fail(libc::ENOMEM).cast() };
    if total > MAX_SMALL {
        return alloc_slow(total, MIN_ALIGN, Intent::Zeroed).cast();
    }
    let p = alloc(total);
    if !p.is_null() {
        // SAFETY: p has at least total writable bytes.
        unsafe { core::ptr::write_bytes(p, 0, total) };
    }
    p.cast()
}

/// C `realloc`: NULL is malloc; size 0 frees and returns NULL (glibc).
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let p = p.cast::<u8>();
    if p.is_null() {
        return alloc(size).cast();
    }
    if size == 0 {
        // SAFETY: the C contract.
        unsafe { free_any("realloc", p) };
        return core::ptr::null_mut();
    }
    // SAFETY: the C contract.
    unsafe { resize(p, size).cast() }
}

/// glibc `reallocarray`: `realloc` of `n * size`, ENOMEM on overflow.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the C contract.
        Some(total) => unsafe { realloc(p, total) },
        None => fail(libc::ENOMEM).cast(),
    }
}

/// POSIX `posix_memalign`: EINVAL unless `align` is a power-of-two multiple
/// of `sizeof(void *)`; ENOMEM; neither errno nor `*memptr` changes on
/// failure.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if align % core::mem::size_of::<usize>() != 0 || !(align / core::mem::size_of::<usize>()).is_power_of_two() {
        return libc::EINVAL;
    }
    let errno = os::errno();
    let p = memalign_any(align, size);
    if p.is_null() {
        os::set_errno(errno);
        return libc::ENOMEM;
    }
    // SAFETY: the C contract: memptr is writable.
    unsafe { *memptr = p.cast() };
    0
}

/// C `aligned_alloc`. glibc before 2.38 treats it as `memalign`; 2.38 and
/// later refuse an alignment that is not a power of two with EINVAL. We do
/// what the running glibc does.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() && os::glibc_minor() >= 38 {
        return fail(libc::EINVAL).cast();
    }
    memalign_any(align, size).cast()
}

/// glibc `memalign`: an alignment that is not a power of two is rounded up.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    memalign_any(align, size).cast()
}

/// glibc `valloc`: page aligned.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    memalign_any(OS_PAGE, size).cast()
}

/// glibc `pvalloc`: page aligned, size rounded up to whole pages.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.checked_add(OS_PAGE - 1) {
        Some(rounded) => memalign_any(OS_PAGE, rounded & !(OS_PAGE - 1)).cast(),
        None => fail(libc::ENOMEM).cast(),
    }
}

/// glibc `malloc_usable_size`: 0 for NULL (and for a pointer that is not a
/// live block).
#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    usable(p.cast()).unwrap_or(0)
}

/// The ancient `cfree`: `free`.
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: the C contract.
    unsafe { free_any("cfree", p.cast()) }
}

/// C23 `free_sized`: checks that `size` fits the block, then frees it.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: the C contract.
    unsafe { free_checked("free_sized", p.cast(), 1, size) }
}

/// C23 `free_aligned_sized`: checks size and alignment, then frees.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: the C contract.
    unsafe { free_checked("free_aligned_sized", p.cast(), align, size) }
}

/// glibc `malloc_trim`: returns free memory to the OS ([`crate::release`]) and
/// 1 if there was any. `pad` is ignored: there is no heap top to keep.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    (background::release_all() > 0) as c_int
}

/// glibc `malloc_stats`: our stats on stderr.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    stats::report(crate::platform::config::Report::Text);
}

/// glibc `mallinfo2`, with glibc's field meanings (`Heap`): `arena =
/// uordblks + fordblks`, mmapped (large) blocks only in `hblks`/`hblkhd`,
/// fast-bin-like free objects in `smblks`/`fsmblks` (part of `fordblks`),
/// `keepcost` what a trim releases at once.
#[no_mangle]
pub extern "C" fn mallinfo2() -> libc::mallinfo2 {
    let h = heap();
    let n = |v: u64| v as usize;
    libc::mallinfo2 {
        arena: n(h.arena),
        ordblks: n(h.rest.0),
        smblks: n(h.fast.0),
        hblks: n(h.mmap.0),
        hblkhd: n(h.mmap.1),
        usmblks: 0,
        fsmblks: n(h.fast.1),
        uordblks: n(h.in_use),
        fordblks: n(h.arena - h.in_use),
        keepcost: n(h.releasable),
    }
}

/// glibc `mallinfo`: `mallinfo2` squeezed into ints (saturating, where glibc
/// wraps).
#[no_mangle]
pub extern "C" fn mallinfo() -> libc::mallinfo {
    let m = mallinfo2();
    let int = |v: usize| v.min(c_int::MAX as usize) as c_int;
    libc::mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// glibc `mallopt`: every parameter is accepted and ignored (1 = success).
#[no_mangle]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// glibc `malloc_info`: glibc's XML shape (malloc/malloc.c), so tools that
/// read it work: one `<heap>` (the arena) listing free objects per size
/// class in `<sizes>`, then the totals of fast-bin-like (cached objects),
/// other free, mmapped (large) blocks, and the memory held. EINVAL unless
/// `options` is 0. Stdio may allocate, which is fine here: no allocator
/// lock is held.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut libc::FILE) -> c_int {
    if options != 0 {
        return libc::EINVAL;
    }
    struct Stream(*mut libc::FILE);
    impl core::fmt::Write for Stream {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            // SAFETY: the C contract: the stream is open.
            unsafe { os::write_stream(self.0, s.as_bytes()) };
            Ok(())
        }
    }
    let h = heap();
    let _ = write_info(&mut Stream(stream), &h);
    0
}

// glibc's internal names, which some programs and libraries call directly
// (pre-2.25 glibc required `__libc_memalign` of a replacement malloc).

/// `malloc`.
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    malloc(size)
}

/// `free`.
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: the C contract.
    unsafe { free(p) }
}

/// `calloc`.
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    calloc(n, size)
}

/// `realloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C contract.
    unsafe { realloc(p, size) }
}

/// `memalign`.
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

/// `valloc`.
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}

/// `pvalloc`.
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}

/// `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn __posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: the C contract.
    unsafe { posix_memalign(memptr, align, size) }
}
