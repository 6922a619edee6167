//! CPU fences for remote operations on a cache: after `fence(idx)` returns,
//! no critical section that read cache `idx`'s headers before the call can
//! still commit. A remote drain or shrink first stops the headers, then
//! fences, then trusts what it reads (`cache::region`, `LockedRegion::resize`).
//!
//! Preferred: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`, which
//! interrupts the target CPU if it runs a thread of ours, so that a section
//! there aborts before it runs another user instruction. CPU-id caches fence
//! that one CPU (`MEMBARRIER_CMD_FLAG_CPU`); `mm_cid` caches fence every CPU,
//! because a concurrency id names no CPU.
//!
//! Without membarrier-RSEQ (kernels before 5.10, seccomp filters,
//! `RSEQALLOC_MEMBARRIER=0`) the fence migrates the calling thread onto the
//! target CPU (every allowed CPU for `mm_cid`) and back: once it has run
//! there, whatever thread ran a section there was preempted, and preemption
//! aborts sections. A CPU our affinity cannot reach runs none of our threads.
//!
//! In fallback mode no section ever runs, every cache operation holds the
//! region lock, and the fence does nothing.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::platform::os;
use crate::rseq::{self, CacheIndex, Mode};

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;
const MEMBARRIER_CMD_FLAG_CPU: u32 = 1 << 0;

/// How fences are made in this process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FenceKind {
    /// No sections run (fallback mode): the region lock is the fence.
    Lock,
    /// `membarrier` with the RSEQ command.
    Membarrier,
    /// Migrating the calling thread onto the CPU(s).
    Migrate,
}

static KIND: AtomicU8 = AtomicU8::new(0);
static FENCES: AtomicU64 = AtomicU64::new(0);

/// Chooses the fence for the process (init, after the mode): registers for
/// membarrier-RSEQ when sections will run and `allow_membarrier` holds.
pub fn init(mode: Mode, allow_membarrier: bool) {
    let kind = match mode {
        Mode::Fallback | Mode::Uninit => FenceKind::Lock,
        _ if allow_membarrier && os::membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0).is_ok() => {
            FenceKind::Membarrier
        }
        _ => FenceKind::Migrate,
    };
    KIND.store(kind as u8, Ordering::Relaxed);
}

/// The fence in use.
pub fn kind() -> FenceKind {
    match KIND.load(Ordering::Relaxed) {
        1 => FenceKind::Membarrier,
        2 => FenceKind::Migrate,
        _ => FenceKind::Lock,
    }
}

/// Fences cache `idx`: on return, every section that began before the call
/// has committed or will abort without committing.
pub fn fence(idx: usize) {
    let all = rseq::cache_index() == CacheIndex::MmCid;
    match kind() {
        FenceKind::Lock => return,
        FenceKind::Membarrier => {
            let (flags, cpu) = if all { (0, 0) } else { (MEMBARRIER_CMD_FLAG_CPU, idx as i32) };
            // ENXIO: the CPU is offline or absent, so no section runs there.
            if os::membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, flags, cpu).is_err() && !all {
                migrate_through(idx..idx + 1);
            }
        }
        FenceKind::Migrate if all => migrate_through(0..os::possible_cpus().unwrap_or(libc::CPU_SETSIZE as usize)),
        FenceKind::Migrate => migrate_through(idx..idx + 1),
    }
    FENCES.fetch_add(1, Ordering::Relaxed);
}

/// Runs the calling thread on each CPU of `cpus` in turn (skipping those it
/// may not use), then restores its affinity.
fn migrate_through(cpus: core::ops::Range<usize>) {
    let Some(original) = os::affinity() else { return };
    for cpu in cpus {
        if let Some(set) = os::single_cpu_set(cpu) {
            os::set_affinity(&set);
        }
    }
    os::set_affinity(&original);
}

/// Fences made so far.
pub fn count() -> u64 {
    FENCES.load(Ordering::Relaxed)
}
