//! The system calls the allocator makes: memory mappings, CPU queries,
//! rseq registration, threads, time and diagnostics, each wrapped so that
//! the rest of the crate never touches errno, never allocates and never
//! unwinds. Elsewhere the crate names libc only for its types and constants
//! and for the process hooks that the front's bring-up registers
//! (`pthread_atfork`, `atexit`); the load-time resolvers (`rseq::resolve`)
//! make raw system calls, because they run before libc is relocated.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::platform::decimal::parse_decimal;

/// The hardware page size the allocator assumes ("OS page").
pub const OS_PAGE: usize = 4096;

/// Maps `len` bytes of fresh, zeroed, read-write anonymous memory, or returns
/// null. A plain private mapping, as glibc's `mmap`ed blocks are: the kernel
/// charges it against the overcommit limit and `RLIMIT_AS`, so a request the
/// machine cannot back fails here, as it fails for glibc.
pub fn map(len: usize) -> *mut u8 {
    map_with(len, libc::PROT_READ | libc::PROT_WRITE, 0)
}

/// Maps `len` bytes of read-write memory that is never committed as a
/// whole (a bitmap touched only where the heap is): `MAP_NORESERVE` keeps
/// the untouched rest out of the overcommit heuristic's count.
#[cfg(feature = "capi")]
pub fn map_sparse(len: usize) -> *mut u8 {
    map_with(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_NORESERVE)
}

/// Reserves `len` bytes of address space with no access; `commit` makes
/// parts of it usable. Not charged for overcommit (nothing can be written),
/// only against `RLIMIT_AS`; `commit` is what the kernel charges.
pub fn reserve(len: usize) -> *mut u8 {
    map_with(len, libc::PROT_NONE, 0)
}

/// Maps `len` bytes that read as zeros and cannot be written until
/// `commit`ted, piece by piece: a table that any index may be read from
/// (untouched pages share the kernel's zero page) and whose pieces are
/// charged only when committed.
pub fn reserve_readable(len: usize) -> *mut u8 {
    map_with(len, libc::PROT_READ, 0)
}

/// Reserves `len` bytes with no access exactly at `at` (OS-page aligned),
/// or returns null if anything is mapped there already (or the kernel
/// refuses). Never replaces an existing mapping (`MAP_FIXED_NOREPLACE`).
pub fn reserve_at(at: usize, len: usize) -> *mut u8 {
    map_at_with(at, len, libc::PROT_NONE)
}

/// Maps `len` bytes of fresh read-write memory exactly at `at` (OS-page
/// aligned), charged as `map` is, or returns null if anything is mapped
/// there already: how a mapping grows into the free address space next to
/// it, whatever kernel mappings it is made of (`mremap` moves only one).
pub fn map_at(at: usize, len: usize) -> *mut u8 {
    map_at_with(at, len, libc::PROT_READ | libc::PROT_WRITE)
}

fn map_at_with(at: usize, len: usize, prot: i32) -> *mut u8 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
    let saved = errno();
    // SAFETY: MAP_FIXED_NOREPLACE fails rather than touch an existing
    // mapping.
    let p = unsafe { libc::mmap(at as *mut libc::c_void, len, prot, flags, -1, 0) };
    set_errno(saved);
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    if p as usize != at {
        // A kernel before 4.17 takes the flag as a hint and maps elsewhere.
        // SAFETY: the mapping was just made and nobody knows it.
        unsafe { unmap(p.cast(), len) };
        return ptr::null_mut();
    }
    p.cast()
}

fn map_with(len: usize, prot: i32, extra_flags: i32) -> *mut u8 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags;
    let saved = errno();
    // SAFETY: an anonymous mapping at a kernel-chosen address touches no
    // existing memory.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
    set_errno(saved);
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// The address-space limit (`RLIMIT_AS`, what `ulimit -v` sets), or None
/// when there is none.
pub fn address_space_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let saved = errno();
    // SAFETY: getrlimit fills the local struct.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    set_errno(saved);
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Bytes of RAM plus swap (`sysinfo`), or None where the kernel will not say.
pub fn memory_total() -> Option<u64> {
    let saved = errno();
    // SAFETY: sysinfo is plain data the call fills.
    let (ok, info) = unsafe {
        let mut info: libc::sysinfo = core::mem::zeroed();
        (libc::sysinfo(&mut info) == 0, info)
    };
    set_errno(saved);
    let unit = u64::from(info.mem_unit.max(1));
    ok.then(|| info.totalram.saturating_add(info.totalswap).saturating_mul(unit))
}

/// Maps `len` bytes aligned to `align` (a power of two ≥ OS_PAGE), read-write
/// or reserved (`prot_none`). Returns null on failure.
pub fn map_aligned(len: usize, align: usize, prot_none: bool) -> *mut u8 {
    map_skewed(len, align, 0, prot_none)
}

/// Maps `len` bytes whose byte `at` (a multiple of OS_PAGE below `len`) is
/// aligned to `align` (a power of two ≥ OS_PAGE), by mapping
/// `len + align - OS_PAGE` and trimming both ends: a block with a header
/// page before it costs its size plus the alignment, as glibc's `memalign`
/// does. Returns null on failure.
pub fn map_skewed(len: usize, align: usize, at: usize, prot_none: bool) -> *mut u8 {
    let Some(padded) = len.checked_add(align - OS_PAGE) else {
        return ptr::null_mut();
    };
    let raw = if prot_none { reserve(padded) } else { map(padded) } as usize;
    if raw == 0 {
        return ptr::null_mut();
    }
    let start = ((raw + at + align - 1) & !(align - 1)) - at;
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

/// Makes `[p, p + len)` of a reservation readable and writable; the kernel
/// charges it now, so this is where an over-committed heap fails (ENOMEM
/// under `vm.overcommit_memory=2`). Keeps errno.
///
/// # Safety
/// The range is OS-page aligned and inside a reservation made by `reserve`,
/// `reserve_at` or `reserve_readable`.
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    let saved = errno();
    // SAFETY: the caller guarantees the range is our own reservation.
    let ok = unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 };
    set_errno(saved);
    ok
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

/// Moves the pages of `[from, from + len)` to `dst`, replacing what was
/// mapped there, with no copy and no fault (their page tables move);
/// `[from, from + len)` is unmapped then. False, leaving both ranges as
/// they were, when the kernel refuses (the range spans two kernel mappings).
///
/// # Safety
/// The caller owns both ranges (OS-page aligned, not overlapping), and
/// nothing refers to what `[dst, dst + len)` held.
pub unsafe fn move_pages(from: *mut u8, len: usize, dst: *mut u8) -> bool {
    let saved = errno();
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    // SAFETY: the caller owns both ranges; MREMAP_FIXED replaces only dst's.
    let q = unsafe { libc::mremap(from.cast(), len, len, flags, dst.cast::<libc::c_void>()) };
    set_errno(saved);
    q == dst.cast()
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

/// This process's id.
pub fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The program's name as glibc keeps it (argv[0] after its last slash);
/// "?" if it is not UTF-8.
pub fn program_name() -> &'static str {
    extern "C" {
        static program_invocation_short_name: *const libc::c_char;
    }
    // SAFETY: glibc sets the pointer before any constructor runs and points
    // it into argv[0], which lives as long as the process.
    let name = unsafe { core::ffi::CStr::from_ptr(program_invocation_short_name) };
    name.to_str().unwrap_or("?")
}

/// The process's resident set now, in bytes (`/proc/self/statm`'s second
/// field, in pages); 0 if /proc is not mounted.
pub fn resident_bytes() -> u64 {
    let mut buf = [0u8; 128];
    let Some(n) = read_file(c"/proc/self/statm", &mut buf) else { return 0 };
    let mut fields = buf[..n].split(|&b| b == b' ');
    let pages = fields.nth(1).and_then(parse_decimal).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages as u64 * page
}

/// The process's peak resident set, in bytes (`getrusage`'s `ru_maxrss`).
pub fn peak_resident_bytes() -> u64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `usage` is writable.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64 * 1024
}

/// A line buffer on the stack that writes to stderr: formatting without
/// allocating. Output longer than the buffer is flushed in pieces.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    /// An empty buffer.
    pub fn new() -> Line {
        Line { buf: [0; 256], len: 0 }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        write_stderr(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
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

/// Nanoseconds on the monotonic clock (served by the vDSO: no system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a local the call fills; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps for `ns` nanoseconds (the background thread's tick).
pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 };
    // SAFETY: `ts` is a valid duration; a signal cutting the sleep short is harmless.
    unsafe { libc::nanosleep(&ts, ptr::null_mut()) };
}

/// `membarrier(cmd, flags, cpu)`. Keeps errno; returns the errno value on
/// failure (ENXIO names a CPU that is offline or does not exist).
pub fn membarrier(cmd: i32, flags: u32, cpu: i32) -> Result<(), i32> {
    let saved = errno();
    // SAFETY: membarrier reads no user memory.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, flags, cpu) };
    let result = if r >= 0 { Ok(()) } else { Err(errno()) };
    set_errno(saved);
    result
}

/// The calling thread's CPU affinity mask.
pub fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        let saved = errno();
        let ok = libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0;
        set_errno(saved);
        ok.then_some(set)
    }
}

/// Moves the calling thread onto the CPUs of `set`; the kernel migrates it
/// before returning. False (errno kept) when no CPU of `set` is allowed.
pub fn set_affinity(set: &libc::cpu_set_t) -> bool {
    let saved = errno();
    // SAFETY: `set` is a valid mask of the size passed.
    let ok = unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), set) == 0 };
    set_errno(saved);
    ok
}

/// A mask holding only `cpu` (None past CPU_SETSIZE).
pub fn single_cpu_set(cpu: usize) -> Option<libc::cpu_set_t> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return None;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes one bit inside it.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        Some(set)
    }
}

/// The number of possible CPU ids (highest id + 1), read without allocating:
/// `/sys/devices/system/cpu/possible` ("0-3,8-11"), else the affinity mask;
/// None if neither tells.
pub fn possible_cpus() -> Option<usize> {
    let mut buf = [0u8; 256];
    if let Some(n) = read_file(c"/sys/devices/system/cpu/possible", &mut buf) {
        if let Some(max) = highest_listed_cpu(&buf[..n]) {
            return Some(max + 1);
        }
    }
    affinity().and_then(|set| {
        // SAFETY: CPU_ISSET reads one bit of the mask.
        (0..libc::CPU_SETSIZE as usize).rev().find(|&c| unsafe { libc::CPU_ISSET(c, &set) }).map(|c| c + 1)
    })
}

/// The highest CPU id in a kernel cpu list such as "0-3,8-11\n".
fn highest_listed_cpu(text: &[u8]) -> Option<usize> {
    let mut highest = None;
    for part in text.split(|&b| b == b',') {
        let part = part.strip_suffix(b"\n").unwrap_or(part);
        let last = part.rsplit(|&b| b == b'-').next()?;
        let value = parse_decimal(last)?;
        highest = highest.max(Some(value));
    }
    highest
}

/// Starts a detached thread running `body` with every signal blocked (so the
/// program's handlers never run on it) and names it `name`. glibc maps the
/// stack itself and may allocate the thread's TLS through us, so the caller
/// holds no allocator lock. Returns whether the thread started.
pub fn spawn_detached(name: &core::ffi::CStr, body: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> bool {
    with_signals_blocked(|| {
        let saved = errno();
        // SAFETY: attr and thread are locals initialised by the calls; the
        // new thread inherits the all-blocked mask set around this call.
        let ok = unsafe {
            let mut attr: libc::pthread_attr_t = core::mem::zeroed();
            let mut thread: libc::pthread_t = 0;
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
            let ok = libc::pthread_create(&mut thread, &attr, body, ptr::null_mut()) == 0;
            libc::pthread_attr_destroy(&mut attr);
            if ok {
                libc::pthread_setname_np(thread, name.as_ptr());
            }
            ok
        };
        set_errno(saved);
        ok
    })
}

/// How many mappings (kernel VMAs) the process has: the lines of
/// `/proc/self/maps`, read in pieces on the stack. None where /proc cannot
/// be read (a sandbox).
pub fn mapping_count() -> Option<usize> {
    let saved = errno();
    // SAFETY: the path is NUL-terminated; the fd is ours until closed.
    let fd = unsafe { libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        set_errno(saved);
        return None;
    }
    let (mut buf, mut lines) = ([0u8; 4096], Some(0));
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => lines = lines.map(|l| l + buf[..n].iter().filter(|&&b| b == b'\n').count()),
            Err(_) => {
                lines = None;
                break;
            }
        }
    }
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    set_errno(saved);
    lines
}

/// The live threads of this process, or None where /proc is not mounted.
/// `/proc/self/stat` gives the kernel's count (field 20) and the state of
/// the main thread (field 3): after `pthread_exit` from `main` that thread
/// is a zombie the kernel still counts until the whole process ends.
/// Read with raw open/read/close (no allocation).
pub fn thread_count() -> Option<usize> {
    let mut buf = [0u8; 1024];
    let n = read_file(c"/proc/self/stat", &mut buf)?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after the last ')'.
    let close = buf[..n].iter().rposition(|&b| b == b')')?;
    let mut fields = buf[close + 1..n].split(|&b| b == b' ').filter(|f| !f.is_empty());
    let zombie_main = fields.next()? == b"Z";
    let threads = parse_decimal(fields.nth(16)?)?;
    threads.checked_sub(zombie_main as usize)
}

/// glibc's `__libc_single_threaded` (glibc ≥ 2.32: true until the process
/// first calls `pthread_create`), found by `find_single_threaded_flag`.
static SINGLE_THREADED: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());

/// Looks up `__libc_single_threaded` by name, so that a glibc without it
/// still loads us. `dlsym` may allocate (its error string), so only the
/// load-time constructor calls this, outside any allocator entry point.
pub fn find_single_threaded_flag() {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads
    // the loaded objects' symbol tables.
    let flag = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
    SINGLE_THREADED.store(flag.cast(), Ordering::Relaxed);
}

/// Whether glibc says the process never started a thread; None when the
/// flag was not found (old glibc, static link, or before the constructor).
pub fn single_threaded() -> Option<bool> {
    let flag = SINGLE_THREADED.load(Ordering::Relaxed);
    // SAFETY: a non-null pointer is glibc's `char __libc_single_threaded`,
    // which lives as long as libc; glibc writes it before a new thread runs.
    (!flag.is_null()).then(|| unsafe { core::ptr::read_volatile(flag) } != 0)
}

/// Keeps the object that holds `ours` (a shared library that links
/// rseqalloc, such as a plugin) loaded for the rest of the process:
/// `dlclose` would otherwise unmap it while a thread's `rseq_cs` still
/// names one of its critical-section descriptors (the kernel clears it
/// lazily, and faults the thread if it cannot read it), and a thread's
/// own rseq area in its TLS would be freed while registered. Nothing to do
/// in the main program (never unloaded) or a static one (`dladdr` knows no
/// object). `dlopen` allocates, so only the load-time constructor calls
/// this.
pub fn pin_own_object(ours: *const libc::c_void) {
    // SAFETY: Dl_info is plain data that dladdr fills; the names it returns
    // belong to the loader and stay valid while the object is loaded.
    unsafe {
        let mut own: libc::Dl_info = core::mem::zeroed();
        let mut main: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(ours, &mut own) == 0 || own.dli_fname.is_null() {
            return;
        }
        // The kernel's AT_PHDR lies in the main program's image.
        let phdr = auxval(libc::AT_PHDR) as *const libc::c_void;
        if libc::dladdr(phdr, &mut main) != 0 && main.dli_fbase == own.dli_fbase {
            return;
        }
        // RTLD_NOLOAD finds the object already loaded (this one, whose
        // constructor is running) and RTLD_NODELETE marks it: dlclose then
        // never unmaps it. The handle is kept on purpose.
        let flags = libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE;
        if libc::dlopen(own.dli_fname, flags).is_null() {
            write_stderr(b"rseqalloc: could not pin the object that holds the allocator; unloading it would crash\n");
        }
    }
}

/// 64 random bits from the kernel's `AT_RANDOM` bytes (16 bytes it puts on
/// every new process's stack), read without a system call or allocation.
#[cfg(feature = "capi")]
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
#[cfg(feature = "capi")]
pub fn glibc_minor() -> u32 {
    // SAFETY: gnu_get_libc_version returns a NUL-terminated static string.
    let text = unsafe { core::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_bytes();
    let minor = text.split(|&b| b == b'.').nth(1).unwrap_or(b"");
    parse_decimal(minor).unwrap_or(0) as u32
}

/// Writes bytes to a stdio stream (`malloc_info`'s output). Stdio may
/// allocate its buffer, so only entry points outside the allocator call it.
///
/// # Safety
/// `stream` is an open `FILE`.
#[cfg(feature = "capi")]
pub unsafe fn write_stream(stream: *mut libc::FILE, bytes: &[u8]) {
    // SAFETY: the caller guarantees the stream; `bytes` is readable.
    unsafe { libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), stream) };
}

/// Ends the process at once with SIGABRT (after a diagnostic).
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(highest_listed_cpu(b"0-1\n"), Some(1));
        assert_eq!(highest_listed_cpu(b"0\n"), Some(0));
        assert_eq!(highest_listed_cpu(b"0-3,8-11\n"), Some(11));
        assert_eq!(highest_listed_cpu(b"2,5,7"), Some(7));
        assert_eq!(highest_listed_cpu(b"garbage"), None);
        assert_eq!(highest_listed_cpu(b""), None);
    }
}
