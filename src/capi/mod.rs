//! Layer 6, capi: the top. The C API below and its bootstrap area; uses
//! every layer beneath it (`front` for bring-up, the big-block helpers and
//! the checks), and nothing uses it.
//!
//! The C allocation API (feature `capi`; built into `librseqalloc.so` by
//! `preload/`): glibc's malloc family with glibc's semantics, exported with
//! default visibility. Each entry point is a short forward to the few
//! functions below; errno is set in one place (`fail`), bad pointers are
//! judged by `check`, the class map's medium runs and the large-block registry.
//!
//! Semantics (glibc's, checked against glibc by tests/c/conformance.c):
//! `malloc(0)` is a unique 16-byte block; a size above `PTRDIFF_MAX` or an
//! overflowing product is NULL with `ENOMEM`; `realloc(p, 0)` frees `p` and
//! returns NULL; a failed `realloc` leaves the block alone; `posix_memalign`
//! returns `EINVAL`/`ENOMEM` without touching errno or `*memptr`; `memalign`
//! rounds an alignment up to a power of two; `free` never changes errno.
//!
//! # Safety (every `unsafe extern "C"` entry point)
//! The C contract of the function of that name (C23 7.24.3, glibc manual
//! "Memory Allocation"): a pointer passed in is NULL or a live block from
//! this API, and out-pointers are writable. Violations of the first are
//! detected where the arena's class map or the large-block registry can tell
//! (`check`).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::medium::Intent;
use crate::backend::{large, medium, pagemap};
use crate::cache::percpu;
use crate::front::check::{self, Bad};
use crate::front::global;
use crate::front::global::{alloc_big, free_big, resize_big};
use crate::front::{background, init, stats};
use crate::platform::os::{self, OS_PAGE};
use crate::platform::size_class::{SizeClass, MAX_SMALL};
use crate::rseq::cs;

/// The alignment of every `malloc` block (glibc's `MALLOC_ALIGNMENT`).
const MIN_ALIGN: usize = 16;
/// glibc refuses sizes above this (`checked_request2size`).
const PTRDIFF_MAX: usize = isize::MAX as usize;

// ---------------------------------------------------------------------------
// The core every entry point forwards to.

/// Allocates `size` bytes at 16-byte alignment: for small sizes one tail
/// call of the small entry point, which in this library also clears the
/// freed stamp (and on a miss goes to `rseqalloc_c_malloc_miss`). Checked
/// mode marks every block, so it takes the slow path (as does the first
/// allocation, before init).
#[inline(always)]
fn alloc(size: usize) -> *mut u8 {
    if size <= MAX_SMALL && check::stamping() {
        // SAFETY: size ≤ MAX_SMALL.
        return unsafe { cs::rseqalloc_malloc_small(size) };
    }
    alloc_slow(size, MIN_ALIGN, Intent::Plain)
}

/// Where the small entry point goes on a miss in this library: the
/// per-CPU slow path, then what a C allocation needs besides (the stamp
/// cleared, as a hit clears it; during init a bootstrap block; errno on
/// failure).
#[no_mangle]
extern "C" fn rseqalloc_c_malloc_miss(class: usize) -> *mut u8 {
    let Some(class) = SizeClass::from_index(class) else {
        return fail(libc::ENOMEM); // unreachable: the asm passes a class
    };
    let p = global::alloc_slow(class);
    if !p.is_null() {
        // SAFETY: a small object just handed to us.
        unsafe { check::clear_stamp(p) };
        return p;
    }
    if init::initialising_here() {
        return bootstrap::alloc(class.size(), class.alignment());
    }
    fail(libc::ENOMEM)
}

/// Any size at any power-of-two alignment: over-aligned classes, medium and
/// large blocks (for `intent`, which a small block ignores), checked mode,
/// re-entry during init, and failure.
#[cold]
#[inline(never)]
fn alloc_slow(size: usize, align: usize, intent: Intent) -> *mut u8 {
    if size <= PTRDIFF_MAX {
        let p = match SizeClass::for_layout(size, align) {
            Some(class) => {
                let p = percpu::alloc(class);
                if !p.is_null() {
                    check::on_alloc(p);
                }
                p
            }
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
fn fail(code: c_int) -> *mut u8 {
    os::set_errno(code);
    core::ptr::null_mut()
}

/// Allocates at `align` (any value: glibc's `memalign` rules).
fn memalign_any(align: usize, size: usize) -> *mut u8 {
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
unsafe fn free_any(op: &str, p: *mut u8) {
    match pagemap::map_byte(p).and_then(|byte| SizeClass::object_at(byte, p as usize)) {
        // SAFETY: object_at(p) is class.
        Some(class) => match unsafe { check::take(p, class) } {
            // SAFETY: a block that passes `take` is an object of `class`
            // that the caller gives up.
            Ok(()) => unsafe { percpu::free(class, p) },
            Err(why) => {
                check::report(op, p, why);
            }
        },
        // SAFETY: the caller's guarantee passes on.
        None => unsafe { free_other(op, p) },
    }
}

/// NULL, medium and large blocks, bootstrap blocks (never freed), and
/// pointers that are not a block start: inside a small or medium span, or
/// foreign.
///
/// # Safety
/// As for `free_any`.
#[cold]
#[inline(never)]
unsafe fn free_other(op: &str, p: *mut u8) {
    // SAFETY: free_big touches only live medium runs and registered large
    // blocks, which the caller gives up.
    if p.is_null() || unsafe { free_big(p) } || bootstrap::size_of(p).is_some() {
        return;
    }
    check::report(op, p, check::judge_other(p));
}

/// The usable size of a live block, or why `p` is not one.
fn usable(p: *const u8) -> Result<usize, Bad> {
    if let Some(class) = pagemap::class_of(p) {
        // SAFETY: class_of(p) is class.
        return unsafe { check::is_live(p, class) }.map(|()| class.size());
    }
    if let Some(size) = medium::usable_size(p) {
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
unsafe fn resize(p: *mut u8, size: usize) -> *mut u8 {
    let old = match usable(p) {
        Ok(old) => old,
        Err(why) => {
            check::report("realloc", p, why);
            return fail(libc::ENOMEM); // with RSEQALLOC_BAD_FREE=leak
        }
    };
    match pagemap::class_of(p) {
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

// ---------------------------------------------------------------------------
// The exported API: each a short forward.

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

/// # Safety
/// As for `free_any`.
unsafe fn free_checked(op: &str, p: *mut u8, align: usize, size: usize) {
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

/// The allocator's memory in glibc's terms, for `mallinfo2` and
/// `malloc_info`. glibc's `arena` is memory held from the OS outside
/// mmapped blocks, split exactly into `uordblks` (in use) and `fordblks`
/// (free); mmapped blocks are counted only in `hblks`/`hblkhd`, so in use
/// is `uordblks + hblkhd`. Here the arena's backed pages (less those given
/// back) and the cache of freed large mappings play the heap; live large
/// blocks are the mmapped ones.
struct Heap {
    /// Arena pages backed now, plus cached freed large mappings.
    arena: u64,
    /// The most arena pages ever backed (glibc's `max_system_mem`).
    arena_max: u64,
    /// Bytes of small and medium blocks handed out.
    in_use: u64,
    /// Free objects in CPU and transfer caches (glibc's fast bins): count, bytes.
    fast: (u64, u64),
    /// The snapshot all this comes from (its per-class cached objects are
    /// `malloc_info`'s sizes), taken before writing, which may allocate.
    stats: stats::Stats,
    /// Other free pieces held: emptied granules still backed and cached
    /// large mappings (count of granules, and all free bytes but `fast`).
    rest: (u64, u64),
    /// Live large blocks: count, bytes mapped.
    mmap: (u64, u64),
    /// What `malloc_trim` gives back without draining a cache.
    releasable: u64,
}

fn heap() -> Heap {
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

fn write_info(out: &mut impl core::fmt::Write, h: &Heap) -> core::fmt::Result {
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

/// Memory for allocations that re-enter the allocator from inside its own
/// bring-up, on the thread doing it (`init::initialising_here`): a bump
/// area in .bss. Its blocks are never reused: `free` recognises and ignores
/// them, `realloc` copies out of them. Bring-up allocates nothing today, so
/// this is a defence against a libc or loader call that starts to.
mod bootstrap {
    use core::cell::UnsafeCell;

    use super::{AtomicUsize, Ordering};

    const BYTES: usize = 64 * 1024;
    /// Each block is preceded by a 16-byte header holding its size.
    const HEADER: usize = 16;

    #[repr(C, align(4096))]
    struct Area(UnsafeCell<[u8; BYTES]>);

    // SAFETY: bytes are handed out once each, by the atomic cursor.
    unsafe impl Sync for Area {}

    static AREA: Area = Area(UnsafeCell::new([0; BYTES]));
    static USED: AtomicUsize = AtomicUsize::new(0);

    fn base() -> usize {
        AREA.0.get() as usize
    }

    /// A zeroed block of `size` bytes at `align` (≤ 4096), or null when the
    /// area is used up.
    pub fn alloc(size: usize, align: usize) -> *mut u8 {
        let mut used = USED.load(Ordering::Relaxed);
        loop {
            let start = (used + HEADER).next_multiple_of(align.max(HEADER));
            let Some(end) = start.checked_add(size).filter(|&end| end <= BYTES && align <= 4096) else {
                return core::ptr::null_mut();
            };
            match USED.compare_exchange(used, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let block = (base() + start) as *mut u8;
                    // SAFETY: [start - HEADER, end) is ours alone, inside the area.
                    unsafe { block.sub(HEADER).cast::<usize>().write(size) };
                    return block;
                }
                Err(seen) => used = seen,
            }
        }
    }

    /// The size of a bootstrap block, or None if `p` is not in the area.
    pub fn size_of(p: *const u8) -> Option<usize> {
        let offset = (p as usize).wrapping_sub(base());
        // SAFETY: a block's header lies HEADER bytes before it, inside the
        // area; a pointer that is not a block start reads some other word of
        // the area, which is harmless for a pointer already known to be bad.
        (HEADER..BYTES).contains(&offset).then(|| unsafe { (p.sub(HEADER) as *const usize).read_unaligned() })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn blocks_are_aligned_distinct_and_remember_their_size() {
            let a = super::alloc(10, 16);
            let b = super::alloc(100, 4096);
            assert!(!a.is_null() && !b.is_null() && a != b);
            assert_eq!(b as usize % 4096, 0);
            assert_eq!(super::size_of(a), Some(10));
            assert_eq!(super::size_of(b), Some(100));
            assert_eq!(super::size_of(&0u8), None);
            assert!(super::alloc(super::BYTES, 16).is_null());
        }
    }
}
