//! Region mode: adds our critical sections to the patched kernel's restart
//! regions (`kernel-patch/`), once, and only ours.
//!
//! Whether the region copies run was decided while the loader relocated the
//! program (`super::resolve`). Init asks that decision again and, if the
//! region copies were chosen, adds our regions (`register`) before it
//! publishes the per-CPU regions to the sections: until then every section
//! misses, so none can run unprotected.
//!
//! Each region is added on its own and is known to the kernel by its start
//! address (kernel-patch/0001), so another copy of rseqalloc in the same
//! process (a `#[global_allocator]` program that also preloads
//! librseqalloc.so), or any other library with regions, adds and removes
//! its own beside ours. When our text is unmapped (`dlclose`), the kernel
//! drops our regions with it.

use super::abi::{header as h, RseqCs, RSEQ_SIG};
use super::cs;
use super::resolve::{syscall5, SYS_PRCTL};

/// `struct rseq_region` (include/uapi/linux/rseq.h of the patched kernel).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct RseqRegion {
    /// `size_of::<RseqRegion>()`: the version of the structure we know.
    size: u32,
    /// The 4 bytes before `restart`, which the kernel checks.
    sig: u32,
    start: u64,
    post_commit: u64,
    restart: u64,
}

const _: () = assert!(core::mem::size_of::<RseqRegion>() as i64 == h::RSEQ_REGION_SIZE);

const SIZE: u32 = core::mem::size_of::<RseqRegion>() as u32;

/// `prctl(PR_RSEQ_REGIONS, op, arg3, arg4, 0)`: the kernel's return value.
///
/// # Safety
/// `arg3` is what `op` expects: for ADD, the address of a live
/// `RseqRegion`; for GET, the address of a writable one whose `size` is
/// set; for REMOVE, a start address (not dereferenced).
unsafe fn regions_prctl(op: i64, arg3: i64, arg4: i64) -> i64 {
    // SAFETY: the caller vouches for `arg3`; the flags are 0.
    unsafe { syscall5(SYS_PRCTL, h::PR_RSEQ_REGIONS, op, arg3, arg4, 0) }
}

/// Whether the kernel already has exactly `region`: an earlier init of this
/// same copy added it (the global allocator and a test harness's second set
/// of caches each choose the mode once).
fn already_added(region: &RseqRegion) -> bool {
    let mut found = RseqRegion { size: SIZE, sig: 0, start: 0, post_commit: 0, restart: 0 };
    // SAFETY: GET writes one RseqRegion of `SIZE` bytes into `found`.
    let err =
        unsafe { regions_prctl(h::PR_RSEQ_REGIONS_GET, &mut found as *mut RseqRegion as i64, region.start as i64) };
    err == 0 && found == *region
}

/// Adds every descriptor of our `__rseq_cs` part as a restart region
/// {start, start + post_commit_offset, abort_ip}: the region copies, which
/// need it, and the mainline ones, which then restart the same way whether
/// or not a descriptor is armed (the kernel applies an armed one first, and
/// no abort handler lies in a region). Each abort handler is preceded by
/// `RSEQ_SIG`, which the kernel checks. A region the kernel already has,
/// exactly, counts as added (a second call adds nothing). Returns whether
/// the kernel has all of them; if it refused one, the ones this call added
/// are removed again, and nobody else's are touched.
pub fn register() -> bool {
    // SAFETY: the descriptors are static data emitted by the asm file,
    // relocated by now (init runs after relocation, unlike the resolvers).
    let descriptors: [RseqCs; cs::NUM_SECTIONS] = unsafe { cs::rseqalloc_rseq_cs };
    const _: () = assert!(cs::NUM_SECTIONS <= 32);
    let mut added: u32 = 0; // bit i: this call added descriptor i
    for (i, d) in descriptors.iter().enumerate() {
        let region = RseqRegion {
            size: SIZE,
            sig: RSEQ_SIG,
            start: d.start_ip,
            post_commit: d.start_ip + d.post_commit_offset,
            restart: d.abort_ip,
        };
        // SAFETY: ADD reads `region`, a live local, and keeps a copy.
        match unsafe { regions_prctl(h::PR_RSEQ_REGIONS_ADD, &region as *const RseqRegion as i64, 0) } {
            0 => added |= 1 << i,
            err if err == -h::EEXIST && already_added(&region) => {}
            _ => {
                for (j, undo) in descriptors.iter().enumerate().filter(|&(j, _)| added & (1 << j) != 0) {
                    debug_assert!(j < i);
                    // SAFETY: REMOVE takes the start address as a plain number.
                    unsafe { regions_prctl(h::PR_RSEQ_REGIONS_REMOVE, undo.start_ip as i64, 0) };
                }
                return false;
            }
        }
    }
    true
}
