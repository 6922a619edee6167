//! Region mode (issue 5): registers our critical sections with the patched
//! kernel's per-process restart regions, once.
//!
//! Whether the region copies run was decided while the loader relocated the
//! program (`super::resolve`). Init asks that decision again and, if the
//! region copies were chosen, registers the table (`register`) before it
//! publishes the regions to the sections: until then every section misses,
//! so none can run unprotected.
//!
//! The kernel's table is one per process and replaced as a whole
//! (kernel-patch/0001): a second copy of rseqalloc in the same process
//! (a `#[global_allocator]` program that also preloads librseqalloc.so) would
//! replace ours. TODO: the series has no "add to the table" operation yet.

use super::abi::{header as h, RseqCs};
use super::cs;
use super::resolve::{syscall5, SYS_PRCTL};

/// `struct rseq_region` (include/uapi/linux/rseq.h of the patched kernel).
#[repr(C)]
#[derive(Clone, Copy)]
struct RseqRegion {
    start: u64,
    post_commit: u64,
    restart: u64,
    flags: u64,
}

const _: () = assert!(core::mem::size_of::<RseqRegion>() as i64 == h::RSEQ_REGION_SIZE);

/// Registers every descriptor of our `__rseq_cs` part as a restart region
/// {start, start + post_commit_offset, abort_ip}: the region copies, which
/// need it, and the mainline ones, which then restart the same way whether
/// or not a descriptor is armed (the kernel applies an armed one first, and
/// no abort handler lies in a region). Returns whether the kernel took it.
pub fn register() -> bool {
    // SAFETY: the descriptors are static data emitted by the asm file,
    // relocated by now (init runs after relocation, unlike the resolvers).
    let descriptors: [RseqCs; cs::NUM_SECTIONS] = unsafe { cs::rseqalloc_rseq_cs };
    let table = descriptors.map(|d| RseqRegion {
        start: d.start_ip,
        post_commit: d.start_ip + d.post_commit_offset,
        restart: d.abort_ip,
        flags: 0,
    });
    // SAFETY: the kernel copies `table` (NUM_SECTIONS entries) and keeps
    // its own copy; the flags argument is 0.
    let err = unsafe {
        syscall5(
            SYS_PRCTL,
            h::PR_RSEQ_REGIONS,
            h::PR_RSEQ_REGIONS_SET_TABLE,
            table.as_ptr() as i64,
            table.len() as i64,
            0,
        )
    };
    err == 0
}
