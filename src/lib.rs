//! # rseqalloc: a per-CPU memory allocator built on restartable sequences
//!
//! Small allocations are pops and pushes on per-CPU stacks of object
//! pointers. Each runs in a few instructions of x86-64 assembly that the
//! kernel restarts if the thread is preempted, migrated or signalled inside
//! them (`rseq(2)`), so per-CPU data needs no atomics and no locks.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;
//!
//! fn main() {
//!     let words: Vec<String> = (0..100).map(|i| i.to_string()).collect();
//!     assert_eq!(words.len(), 100);
//!     let stats = rseqalloc::stats();
//!     println!("{stats}");
//! }
//! ```
//!
//! ## Design
//! `docs/design.md` (in the repository and the published crate) is the
//! design the code relies on: the layers below, the size classes, the
//! region layout and header encoding, the critical sections and their
//! restart, the modes, the remote stop–fence–spill protocol, the middle and
//! back ends, the background thread, fork, exit and `dlclose`, and the C API.
//!
//! ## Layers (each folder uses only those below it; `tests/layers.rs` checks)
//!
//! ```text
//!  capi/      the C API (feature `capi`, preload/): malloc & co. with
//!             glibc's semantics (semantics), the exported symbols
//!             (exports), allocations during bring-up (bootstrap)
//!  front/     the allocator as programs see it: `RseqAlloc` and its
//!             GlobalAlloc with the big-block helpers and the asm's slow-path
//!             entries (global), bring-up and process hooks (init), the
//!             background thread (background), counters and reports (stats),
//!             bad pointers for the C API (check); forward on other targets
//!  cache/     per-CPU regions: layout, headers and the remote
//!             stop–fence–spill protocol (region); the policy over them:
//!             inline alloc/free, refill/flush slow paths, shrink and drain
//!             (percpu); the same regions without rseq: sched_getcpu +
//!             try-lock (fallback)
//!  middle/    transfer: batches between CPUs, one lock per batch;
//!             central: spans carved into objects, per size class
//!  backend/   pagemap: the class map and span table; arena: the window and
//!             its reservations; page_heap: granules as spans and runs, and
//!             their decay; medium: 32 KiB–1 MiB blocks as runs of
//!             granules; large: one mapping per big block, a bounded cache
//!             of freed ones, realloc by mremap; registry: live large blocks
//!  rseq/      mode choice and area registration (mod), the asm sections
//!             (cs), which section copies the loader binds (resolve),
//!             registration with the patched kernel (regions), and fences:
//!             after one, no section that read a cache earlier commits (fence)
//!  platform/  syscalls (os), the spin lock (sync), options (config), size
//!             classes (size_class), the public mode names (mode), numbers
//!             (decimal), clearing reused memory backward (zero)
//! ```
//!
//! Only the front brings the allocator up, picks the cache path by mode,
//! and starts the background thread; the layers below never call up.
//!
//! ## Glossary
//! - **OS page**: the 4 KiB hardware page.
//! - **granule**: 64 KiB of the arena; a **span** is 1 or 4 granules carved
//!   into objects of one size class; a **run** is 1 to 16 granules holding
//!   one medium block.
//! - **region**: one CPU cache: 128 KiB holding a stack per size class.
//! - **cache index**: a CPU id, or the kernel's `mm_cid` (a per-process
//!   concurrency id, so a 4-thread process uses 4 caches on any host).
//! - **critical section**: asm that ends in one committing store; the kernel
//!   sends an interrupted thread to its abort handler, which starts over.
//!
//! ## What is fast and what is slow
//! - Fast: allocation and free of ≤ 32 KiB at alignment ≤ 16 when the CPU's
//!   stack is non-empty / not full: one call into a section, no atomics, no
//!   fences, no locks (README: instruction counts).
//! - Slow (`#[cold]`): a miss refills or flushes a batch through the middle
//!   end under one spin lock; first use of a CPU lays its region out; medium
//!   blocks (≤ 1 MiB) take a run under the page heap lock, no system call;
//!   bigger ones are `mmap`ed unless a cached mapping fits; over-aligned
//!   layouts pick a coarser class.
//!
//! ## Modes
//! The process picks one mode at its first allocation ([`Mode`]): glibc's
//! rseq area (glibc ≥ 2.35 registers one per thread), our own area where
//! glibc did not (`GLIBC_TUNABLES=glibc.pthread.rseq=0`), the patched
//! kernel's restart regions (`kernel-patch/`: sections need no descriptor
//! store), or the fallback where rseq is unavailable or
//! `RSEQALLOC_MODE=fallback` (valgrind, rr, gdb single-stepping). See the
//! README for every `RSEQALLOC_*` variable.
//!
//! ## Targets
//! The per-CPU path needs x86-64 Linux with glibc (build.rs sets
//! `cfg(rseqalloc_percpu)` there). On every other target the crate still
//! builds: [`RseqAlloc`] forwards every call to the system allocator,
//! [`stats()`] reports [`Mode::Forward`], and the build prints one warning
//! saying so. musl is such a target: it does not apply the IRELATIVE
//! relocations through which the loader binds the sections.
//!
//! The allocator itself needs only `core` and libc (`no_std`), and so
//! does `librseqalloc.so` (built with `panic = "abort"`, it brings its own
//! panic handler: `capi`); the C API in a Rust program and the test hooks
//! link `std`, as does forwarding (for `std::alloc::System`).

#![cfg_attr(
    any(
        not(any(test, feature = "capi", rseqalloc_test_hooks)),
        all(rseqalloc_cdylib, panic = "abort", not(rseqalloc_test_hooks))
    ),
    no_std
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

#[cfg(not(rseqalloc_percpu))]
extern crate std;

#[cfg(all(not(rseqalloc_percpu), feature = "capi"))]
compile_error!("rseqalloc: the C API (feature `capi`) needs the per-CPU path: x86-64 Linux with glibc");
#[cfg(all(not(rseqalloc_percpu), rseqalloc_test_hooks))]
compile_error!("rseqalloc: the test hooks need the per-CPU path: x86-64 Linux with glibc");

// The layers, bottom to top: each uses only those above it in this list
// (tests/layers.rs checks it).
#[cfg(rseqalloc_percpu)]
mod backend;
#[cfg(rseqalloc_percpu)]
mod cache;
#[cfg(feature = "capi")]
mod capi;
mod front;
#[cfg(rseqalloc_percpu)]
mod middle;
mod platform;
#[cfg(rseqalloc_percpu)]
mod rseq;

#[cfg(rseqalloc_test_hooks)]
pub mod test_hooks;

pub use front::allocator::RseqAlloc;
#[cfg(not(rseqalloc_percpu))]
pub use front::forward::usable_size;
#[cfg(rseqalloc_percpu)]
pub use front::global::usable_size;
pub use front::stats::{ClassStats, CpuStats, Stats};
pub use platform::config::{BadFree, Config, ModeRequest, Options, Report};
pub use platform::mode::{CacheIndex, Mode};
pub use platform::size_class::MAX_SMALL;

/// A snapshot of the allocator's counters: the active [`Mode`], what caches
/// are indexed by, per-CPU hits and misses, middle-end traffic, bytes mapped
/// and in use, and critical-section restarts. Allocates nothing.
///
/// ```
/// let stats = rseqalloc::stats();
/// assert!(stats.caches_in_use <= stats.caches);
/// println!("mode {:?}, {} restarts", stats.mode, stats.restarts());
/// ```
pub fn stats() -> Stats {
    #[cfg(rseqalloc_percpu)]
    return front::stats::snapshot();
    #[cfg(not(rseqalloc_percpu))]
    return Stats::empty(Mode::Forward);
}

/// Returns all free memory to the OS at once and says how many bytes of
/// arena pages and cached mappings went back (`malloc_trim` in the C API).
/// Every CPU's cache is drained, even while its CPU allocates (a fenced
/// remote operation), the transfer caches go back to their spans, spans
/// left empty go to the page heap, every free granule's pages go back with
/// `madvise(MADV_DONTNEED)`, and the cache of freed large mappings is
/// unmapped. Without this call the same happens on its own within a few
/// seconds of the memory going idle (`RSEQALLOC_DECAY_MS`). Where
/// `RseqAlloc` forwards to the system allocator, it does nothing and
/// returns 0.
///
/// ```
/// let blocks: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 4000]).collect();
/// drop(blocks);
/// let released = rseqalloc::release();
/// println!("{released} bytes back to the OS");
/// ```
pub fn release() -> usize {
    #[cfg(rseqalloc_percpu)]
    return front::background::release_all();
    #[cfg(not(rseqalloc_percpu))]
    0
}
