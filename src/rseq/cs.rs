//! The critical sections of `asm/percpu_x86_64.S` as Rust sees them: extern
//! declarations with their safety contracts, and the control block they read.
//!
//! Each entry point below is an indirect function: the loader binds it once
//! to the mainline or the region copy of its section (`super::resolve`), so
//! a call through it costs what a call to either copy would.

use core::mem::offset_of;
use core::sync::atomic::{AtomicI64, AtomicIsize, AtomicU32, AtomicU64, AtomicUsize};

use super::abi::{header as h, RseqCs};

/// The control block every section reads (`rseqalloc_ctl` in the asm file).
/// Init fills it once; `ncpu` is stored last, and 0 means "not yet", which
/// makes every section miss. Until then the area is our own TLS block's.
#[repr(C, align(64))]
pub struct Ctl {
    /// Offset of the cache index in struct rseq: `cpu_id` or `mm_cid`.
    pub idx_field: AtomicI64,
    /// Base address of the per-CPU regions.
    pub slabs: AtomicUsize,
    /// Number of regions; an index ≥ this misses.
    pub ncpu: AtomicU32,
    /// Thread-pointer offset of the rseq area every thread uses.
    pub area_off: AtomicIsize,
    /// `area_off + idx_field`: where region copies read the index.
    pub idx_off: AtomicIsize,
}

const _: () = {
    assert!(offset_of!(Ctl, idx_field) as i64 == h::CTL_OFF_IDX_FIELD);
    assert!(offset_of!(Ctl, slabs) as i64 == h::CTL_OFF_SLABS);
    assert!(offset_of!(Ctl, ncpu) as i64 == h::CTL_OFF_NCPU);
    assert!(offset_of!(Ctl, area_off) as i64 == h::CTL_OFF_AREA_OFF);
    assert!(offset_of!(Ctl, idx_off) as i64 == h::CTL_OFF_IDX_OFF);
    assert!(core::mem::size_of::<Ctl>() as i64 == h::CTL_SIZE);
};

/// Which critical section an abort counter belongs to.
pub const SITE_POP: usize = h::SITE_POP as usize;
/// See `SITE_POP`.
pub const SITE_PUSH: usize = h::SITE_PUSH as usize;
/// See `SITE_POP`.
pub const SITE_POP_BATCH: usize = h::SITE_POP_BATCH as usize;
/// See `SITE_POP`.
pub const SITE_PUSH_BATCH: usize = h::SITE_PUSH_BATCH as usize;
/// Number of critical sections.
pub const NUM_SITES: usize = h::NUM_SITES as usize;
/// Number of descriptors in our part of `__rseq_cs` (asm/abi.h says which).
pub const NUM_SECTIONS: usize = h::NUM_SECTIONS as usize;

extern "C" {
    /// The control block. Written by `rseq::publish` (and the test hooks)
    /// only; the asm reads it with plain loads, which x86-TSO orders.
    pub static rseqalloc_ctl: Ctl;

    /// Restart counts per section, bumped by the abort handlers.
    pub static rseqalloc_restarts: [AtomicU64; NUM_SITES];

    /// Our descriptors in `__rseq_cs`, mainline and region copies (the asm
    /// file checks their number against `NUM_SECTIONS`).
    pub static rseqalloc_rseq_cs: [RseqCs; NUM_SECTIONS];

    /// Allocates a block of `size` ≤ MAX_SMALL bytes at alignment ≤ 16: a pop
    /// on the current CPU's stack of its class, or on a miss a tail call of
    /// `rseqalloc_alloc_slow` (in the C library: of
    /// `capi::rseqalloc_c_malloc_miss`, and a hit clears the freed stamp).
    /// Null only when memory runs out.
    ///
    /// # Safety
    /// `size` ≤ MAX_SMALL.
    pub fn rseqalloc_malloc_small(size: usize) -> *mut u8;

    /// `rseqalloc_malloc_small` entered after its size lookup.
    ///
    /// # Safety
    /// `class` is a `SizeClass` index.
    pub fn rseqalloc_malloc_class(class: usize) -> *mut u8;

    /// Frees a block of `size` ≤ MAX_SMALL bytes allocated at alignment ≤ 16:
    /// a push on the current CPU's stack of its class, or on a miss a tail
    /// call of `rseqalloc_free_slow`.
    ///
    /// # Safety
    /// `object` is a live block allocated with this size at alignment ≤ 16,
    /// which the caller gives up.
    pub fn rseqalloc_free_small(object: *mut u8, size: usize);

    /// `rseqalloc_free_small` entered after its size lookup.
    ///
    /// # Safety
    /// `class` is a `SizeClass` index and `object` a live object of that
    /// class, which the caller gives up.
    pub fn rseqalloc_free_class(object: *mut u8, class: usize);

    /// Pops the top object of `class`'s stack in the current CPU's region.
    /// Returns null if the stack is empty or stopped, or if the thread has no
    /// usable index (unregistered, or `ctl` not yet published).
    ///
    /// # Safety
    /// `class < NUM_CLASSES`, and `ctl`, when published, describes regions
    /// that stay mapped for the life of the process and whose every header
    /// is all zero, laid out or stopped (docs/design.md, "The per-CPU
    /// region"; the cache layer keeps it).
    pub fn rseqalloc_cs_pop(class: usize) -> *mut u8;

    /// Pushes `object` on `class`'s stack in the current CPU's region.
    /// Returns false if the stack is full or stopped, or the thread has no
    /// usable index.
    ///
    /// # Safety
    /// As for `rseqalloc_cs_pop`; `object` is a free object of `class` that
    /// the caller gives up.
    pub fn rseqalloc_cs_push(class: usize, object: *mut u8) -> bool;

    /// Moves up to `n` objects from the top of `class`'s stack to `out`,
    /// returning how many, with one commit.
    ///
    /// # Safety
    /// As for `rseqalloc_cs_pop`; `out` is writable for `n` pointers.
    pub fn rseqalloc_cs_pop_batch(class: usize, out: *mut *mut u8, n: usize) -> usize;

    /// Pushes `items[0..k]` on `class`'s stack, k = min(n, free slots), and
    /// returns k, with one commit. The caller keeps `items[k..n]`.
    ///
    /// # Safety
    /// As for `rseqalloc_cs_push`, for each of `items[0..n]`.
    pub fn rseqalloc_cs_push_batch(class: usize, items: *const *mut u8, n: usize) -> usize;

    /// The thread-pointer offset of `rseqalloc_own_tls` (initial-exec TLS).
    /// The same for every thread.
    pub fn rseqalloc_own_tls_offset() -> isize;
    /// The thread-pointer offset of `__rseq_abi`, the rseq area shared with
    /// other users (initial-exec TLS, maybe another object's); 0 where no
    /// object defines it (possible in the C library only).
    pub fn rseqalloc_shared_area_offset() -> isize;
    /// The same for `__rseq_refcount`, the count of users of the area's
    /// registration.
    pub fn rseqalloc_shared_refcount_offset() -> isize;

    /// The thread-pointer offset of this object's own definition of the
    /// shared area (0 in a C library without one).
    pub fn rseqalloc_own_shared_offset() -> isize;

    /// This thread's thread pointer (`%fs` base).
    pub fn rseqalloc_thread_pointer() -> *mut u8;

    /// glibc's `__rseq_offset` and `__rseq_size`, if this glibc exports them.
    ///
    /// # Safety
    /// Both pointers are writable.
    pub fn rseqalloc_glibc_rseq(offset: *mut isize, size: *mut u32) -> bool;

    /// librseq's `rseq_offset` and `rseq_size` (weak references): false
    /// where no object loaded with the program defines them.
    ///
    /// # Safety
    /// Both pointers are writable.
    pub fn rseqalloc_librseq(offset: *mut isize, size: *mut u32) -> bool;
}
