//! The only caller of libc system calls: memory mappings, CPU queries, rseq
//! registration and diagnostics, each wrapped so that the rest of the crate
//! never touches errno, never allocates and never unwinds.

use core::ptr;

/// The hardware page size the allocator assumes ("OS page").
pub const OS_PAGE: usize = 4096;

/// Maps `len` bytes of fresh, zeroed, read-write anonymous memory, or returns
/// null. `MAP_NORESERVE` keeps big lazily-touched regions from counting
/// against overcommit heuristics.
pub fn map(len: usize) -> *mut u8 {
    map_with(len, libc::PROT_READ | libc::PROT_WRITE)
}

/// Reserves `len` bytes of address space with no access; `commit` makes parts
/// of it usable.
pub fn reserve(len: usize) -> *mut u8 {
    map_with(len, libc::PROT_NONE)
}

fn map_with(len: usize, prot: i32) -> *mut u8 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: an anonymous mapping at a kernel-chosen address touches no
    // existing memory.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `len` bytes aligned to `align` (a power of two ≥ OS_PAGE) by mapping
/// `len + align` and trimming both ends. Returns null on failure.
pub fn map_aligned(len: usize, align: usize, prot_none: bool) -> *mut u8 {
    let Some(padded) = len.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = if prot_none { reserve(padded) } else { map(padded) } as usize;
    if raw == 0 {
        return ptr::null_mut();
    }
    let start = (raw + align - 1) & !(align - 1);
    // SAFETY: both trimmed pieces lie inside the mapping just made, which no
    // one else knows about yet.
    unsafe {
        if start > raw {
            unmap(raw as *mut u8, start - raw);
        }
        let tail = raw + padded - (start + len);
        if tail > 0 {
            unmap((start + len) as *mut u8, tail);
        }
    }
    start as *mut u8
}

/// Unmaps a range. Keeps errno: `free` must not change it (C11 7.22.3).
///
/// # Safety
/// The caller owns `[p, p + len)`, a whole mapping or OS-page aligned part of
/// one, and nothing refers to it any more.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    let saved = errno();
    // SAFETY: the caller guarantees the range is ours to drop.
    unsafe { libc::munmap(p.cast(), len) };
    set_errno(saved);
}

/// Makes `[p, p + len)` of a reservation readable and writable.
///
/// # Safety
/// The range is OS-page aligned and inside a reservation made by `reserve`.
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    // SAFETY: the caller guarantees the range is our own reservation.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Grows or shrinks a mapping, moving it if needed. Returns null on failure,
/// in which case the old mapping is untouched.
///
/// # Safety
/// `[p, p + old_len)` is a whole mapping owned by the caller.
pub unsafe fn remap(p: *mut u8, old_len: usize, new_len: usize) -> *mut u8 {
    let saved = errno();
    // SAFETY: the caller owns the mapping; MREMAP_MAYMOVE never clobbers
    // other mappings.
    let q = unsafe { libc::mremap(p.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    set_errno(saved);
    if q == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        q.cast()
    }
}

/// Returns the physical CPU the thread runs on (possibly stale at once), or
/// None where the kernel will not say.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions; glibc serves it from the rseq
    // area or the vDSO, and falls back to the getcpu syscall.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Registers `area` as this thread's rseq area with `rseq(2)`.
/// Returns 0 or the errno value.
///
/// # Safety
/// `area` is a 32-byte aligned struct rseq that stays valid for as long as the
/// thread lives (thread-local storage of this thread).
pub unsafe fn rseq_register(area: *mut u8, len: u32, sig: u32) -> i32 {
    let saved = errno();
    // SAFETY: the caller guarantees the area outlives the registration.
    let r = unsafe { libc::syscall(libc::SYS_rseq, area, len, 0, sig) };
    let result = if r == 0 { 0 } else { errno() };
    set_errno(saved);
    result
}

/// Runs `f` with every signal blocked, so that a signal handler that
/// allocates cannot interleave with a half-done thread registration.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t is plain data; the calls only read and write the two
    // local sets and this thread's signal mask.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        r
    }
}

/// Reads the auxiliary vector entry `kind` (0 when absent).
pub fn auxval(kind: u64) -> u64 {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(kind) }
}

/// Reads a small file into `buf` with raw open/read/close (fopen allocates).
/// Returns the number of bytes read, or None.
pub fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    let saved = errno();
    // SAFETY: `path` is NUL-terminated; `buf` is writable for its length.
    let n = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            set_errno(saved);
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    set_errno(saved);
    usize::try_from(n).ok()
}

/// Reads an environment variable without allocating.
pub fn getenv(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv returns null or a pointer into the environment block,
    // which lives for the whole process (we never call setenv).
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            None
        } else {
            Some(core::ffi::CStr::from_ptr(p).to_bytes())
        }
    }
}

/// Writes bytes to stderr, ignoring errors (diagnostics must never fail).
pub fn write_stderr(bytes: &[u8]) {
    let saved = errno();
    // SAFETY: `bytes` is readable for its length.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    set_errno(saved);
}

/// Yields the CPU to another thread (spin-lock back-off).
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

/// This thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's errno.
pub fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// Gives `[p, p + len)` back to the kernel: the pages stay mapped and read
/// as zeros when next touched (`madvise(MADV_DONTNEED)`, private anonymous
/// memory). Keeps errno. Returns whether the kernel agreed.
///
/// # Safety
/// The range is OS-page aligned, ours, and holds nothing anyone still reads.
pub unsafe fn release(p: *mut u8, len: usize) -> bool {
    let saved = errno();
    // SAFETY: the caller guarantees the range is ours and unused.
    let ok = unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) == 0 };
    set_errno(saved);
    ok
}

/// 64 random bits from the kernel's `AT_RANDOM` bytes (16 bytes it puts on
/// every new process's stack), read without a system call or allocation.
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub fn random_u64() -> u64 {
    let p = auxval(libc::AT_RANDOM) as *const u64;
    if p.is_null() {
        return 0x6a09_e667_f3bc_c908; // no auxv entry: any constant will do
    }
    // SAFETY: AT_RANDOM points to 16 readable bytes for the process's life;
    // they need not be aligned.
    unsafe { p.add(1).read_unaligned() }
}

/// The running glibc's minor version (36 for 2.36), from
/// `gnu_get_libc_version`, which returns a static string.
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub fn glibc_minor() -> u32 {
    // SAFETY: gnu_get_libc_version returns a NUL-terminated static string.
    let text = unsafe { core::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_bytes();
    let minor = text.split(|&b| b == b'.').nth(1).unwrap_or(b"");
    crate::config::parse_decimal(minor).unwrap_or(0) as u32
}

/// Writes bytes to a stdio stream (`malloc_info`'s output). Stdio may
/// allocate its buffer, so only entry points outside the allocator call it.
///
/// # Safety
/// `stream` is an open `FILE`.
#[cfg_attr(not(feature = "capi"), allow(dead_code))] // the C API's
pub unsafe fn write_stream(stream: *mut libc::FILE, bytes: &[u8]) {
    // SAFETY: the caller guarantees the stream; `bytes` is readable.
    unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), stream) };
}

/// Ends the process at once with SIGABRT (after a diagnostic).
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// Nanoseconds on the monotonic clock (`clock_gettime(CLOCK_MONOTONIC)`,
/// served by the vDSO without a system call): ages for cached memory.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
