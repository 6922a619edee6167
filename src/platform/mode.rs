//! The public names for how the process runs its caches: [`Mode`] and
//! [`CacheIndex`], which `stats()` reports on every target (the per-CPU
//! runtime in `rseq` sets them; a forwarding build only ever says
//! [`Mode::Forward`]).

/// How the process runs its per-CPU caches, chosen at its first allocation.
///
/// ```
/// use rseqalloc::Mode;
/// let v = Box::new(1u8); // any allocation through RseqAlloc brings it up
/// match rseqalloc::stats().mode {
///     Mode::RseqGlibc | Mode::RseqOwn => println!("restartable sequences"),
///     Mode::Region => println!("the patched kernel's restart regions"),
///     Mode::Fallback => println!("no rseq here: sched_getcpu and try-locks"),
///     Mode::Forward => println!("this target has no per-CPU path: the system allocator"),
///     Mode::Uninit => println!("RseqAlloc has not allocated yet"),
///     _ => println!("a mode this program does not know yet"),
/// }
/// # drop(v);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Mode {
    /// Not initialised yet: nothing has been allocated through `RseqAlloc`.
    Uninit,
    /// Critical sections through the area glibc registered for every thread.
    RseqGlibc,
    /// Critical sections through our own area, registered per thread.
    RseqOwn,
    /// No critical sections: `sched_getcpu` plus a per-CPU try-lock (rseq
    /// unavailable, `RSEQALLOC_MODE=fallback`, or the C library's checked
    /// mode, `RSEQALLOC_CHECK=1`).
    Fallback,
    /// Descriptor-free critical sections registered once as the kernel's
    /// restart regions (kernel-patch/, `PR_RSEQ_REGIONS`); the cache index
    /// still comes from glibc's rseq area or our own.
    Region,
    /// The target has no per-CPU path (it needs x86-64 Linux with glibc):
    /// `RseqAlloc` forwards every call to the system allocator, and the
    /// build printed a warning saying so.
    Forward,
}

/// What a CPU cache index means.
///
/// ```
/// if rseqalloc::stats().cache_index == rseqalloc::CacheIndex::MmCid {
///     println!("caches follow this process's concurrency, not the host's CPU count");
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CacheIndex {
    /// The CPU number (`rseq.cpu_id`, or `sched_getcpu` in fallback).
    CpuId,
    /// The kernel's per-process concurrency id (`rseq.mm_cid`, Linux 6.3+):
    /// a 4-thread process on a 64-CPU host touches 4 caches.
    MmCid,
}
