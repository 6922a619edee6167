//! The rseq runtime: decides once per process how threads reach a
//! restartable-sequence area (glibc's, our own, or none), publishes that to the
//! critical sections, and registers our own area per thread where needed.
//!
//! Decision (design.md §3.8): glibc's area when `__rseq_size > 0`; else our
//! own 32-byte area, registered lazily by each thread's first slow path; else
//! (ENOSYS under valgrind or rr, a seccomp denial, `RSEQALLOC_MODE=fallback`)
//! the locked fallback. We never register beside glibc and never write the
//! kernel's fields: only `rseq_cs`, from the asm.

pub mod abi;
pub mod cs;

use core::sync::atomic::{AtomicU8, Ordering};

use crate::config::{Config, ModeRequest};
use crate::os;
use abi::{OwnTls, Rseq, AT_RSEQ_FEATURE_SIZE, MM_CID_FEATURE_SIZE, RSEQ_SIG};
use cs::rseqalloc_ctl as CTL;

/// How the process runs its per-CPU caches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Not initialised yet.
    Uninit,
    /// Critical sections through the area glibc registered for every thread.
    RseqGlibc,
    /// Critical sections through our own area, registered per thread.
    RseqOwn,
    /// No critical sections: `sched_getcpu` plus a per-CPU try-lock.
    Fallback,
}

/// What a CPU cache index means.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CacheIndex {
    /// The CPU number (`rseq.cpu_id`, or `sched_getcpu` in fallback).
    CpuId,
    /// The kernel's per-process concurrency id (`rseq.mm_cid`, Linux 6.3+):
    /// a 4-thread process on a 64-CPU host touches 4 caches.
    MmCid,
}

static MODE: AtomicU8 = AtomicU8::new(0);
static INDEX: AtomicU8 = AtomicU8::new(0);

/// The process-wide mode.
#[inline]
pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        1 => Mode::RseqGlibc,
        2 => Mode::RseqOwn,
        3 => Mode::Fallback,
        _ => Mode::Uninit,
    }
}

/// What cache indices mean in this process.
pub fn cache_index() -> CacheIndex {
    if INDEX.load(Ordering::Relaxed) == 1 {
        CacheIndex::MmCid
    } else {
        CacheIndex::CpuId
    }
}

/// A thread's attempt at registering our own area (`OwnTls::state`).
#[repr(u32)]
enum OwnState {
    NotTried = 0,
    Registered = 1,
    Failed = 2,
}

/// Chooses the mode for the process. Runs once, from init, on the first
/// allocating thread. Returns the mode and the thread-pointer offset of the
/// area that critical sections will arm (meaningless in fallback).
pub fn choose_mode(config: &Config) -> (Mode, isize) {
    if config.mode == ModeRequest::Fallback {
        return (Mode::Fallback, 0);
    }
    let mut offset: isize = 0;
    let mut size: u32 = 0;
    // SAFETY: both out-pointers are locals.
    let glibc = unsafe { cs::rseqalloc_glibc_rseq(&mut offset, &mut size) };
    if glibc && size > 0 {
        return (Mode::RseqGlibc, offset);
    }
    if register_own_thread() {
        // SAFETY: a plain read of a link-time constant.
        return (Mode::RseqOwn, unsafe { cs::rseqalloc_own_tls_offset() });
    }
    if config.mode == ModeRequest::Rseq {
        os::write_stderr(b"rseqalloc: RSEQALLOC_MODE=rseq, but rseq(2) is unavailable; using the fallback\n");
    }
    (Mode::Fallback, 0)
}

/// Whether caches will be indexed by `mm_cid`.
pub fn choose_index(config: &Config, mode: Mode) -> CacheIndex {
    let kernel_has_mm_cid = os::auxval(AT_RSEQ_FEATURE_SIZE) >= MM_CID_FEATURE_SIZE;
    if config.use_mm_cid && kernel_has_mm_cid && mode != Mode::Fallback {
        CacheIndex::MmCid
    } else {
        CacheIndex::CpuId
    }
}

/// Publishes the decision to the critical sections. `area_off` is the
/// thread-pointer offset of the rseq area; `slabs`/`ncpu` describe the
/// regions. In fallback mode the sections stay disarmed and always miss.
pub fn publish(mode: Mode, index: CacheIndex, area_off: isize, slabs: usize, ncpu: u32) {
    INDEX.store(matches!(index, CacheIndex::MmCid) as u8, Ordering::Relaxed);
    if mode != Mode::Fallback {
        let field = match index {
            CacheIndex::CpuId => core::mem::offset_of!(Rseq, cpu_id),
            CacheIndex::MmCid => core::mem::offset_of!(Rseq, mm_cid),
        };
        // SAFETY: the control block is a static; only init writes it, once,
        // before any section can see `cs_off` != 0.
        let ctl = unsafe { &CTL };
        ctl.idx_off.store((area_off + field as isize) as i64, Ordering::Relaxed);
        ctl.slabs.store(slabs, Ordering::Relaxed);
        ctl.ncpu.store(ncpu, Ordering::Relaxed);
        let cs_off = area_off + core::mem::offset_of!(Rseq, rseq_cs) as isize;
        ctl.cs_off.store(cs_off as i64, Ordering::Release);
    }
    let code = match mode {
        Mode::Uninit => 0,
        Mode::RseqGlibc => 1,
        Mode::RseqOwn => 2,
        Mode::Fallback => 3,
    };
    MODE.store(code, Ordering::Release);
}

/// The current thread's cache index as the slow paths see it (it may be
/// stale at once; only critical sections get a trustworthy one). None when
/// this thread cannot use the per-CPU caches: its rseq registration failed,
/// or its index is out of range.
pub fn current_index() -> Option<usize> {
    match mode() {
        Mode::Uninit => None,
        Mode::Fallback => os::current_cpu(),
        Mode::RseqGlibc => read_index(),
        Mode::RseqOwn => {
            if register_own_thread() {
                read_index()
            } else {
                None
            }
        }
    }
}

/// Reads the armed area's index field of this thread; negative values
/// (unregistered, registration failed) give None.
fn read_index() -> Option<usize> {
    // SAFETY: `idx_off` was published by init as the offset of a u32 field of
    // this thread's rseq area, which lives in this thread's TLS/TCB.
    unsafe {
        let off = CTL.idx_off.load(Ordering::Relaxed) as isize;
        let field = cs::rseqalloc_thread_pointer().wrapping_offset(off) as *const u32;
        let value = core::ptr::read_volatile(field) as i32;
        usize::try_from(value).ok()
    }
}

/// Registers this thread's own area if it has not tried yet. Returns whether
/// the thread now has a working registration. Signals are blocked around it
/// so that a handler's allocation cannot see a half-made registration.
fn register_own_thread() -> bool {
    // SAFETY: the TLS block is this thread's; `rseqalloc_own_tls_offset` is
    // its offset from the thread pointer.
    let tls = unsafe {
        &mut *(cs::rseqalloc_thread_pointer().wrapping_offset(cs::rseqalloc_own_tls_offset()) as *mut OwnTls)
    };
    match tls.state {
        s if s == OwnState::Registered as u32 => return true,
        s if s == OwnState::Failed as u32 => return false,
        _ => {}
    }
    os::with_signals_blocked(|| {
        if tls.state != OwnState::NotTried as u32 {
            return;
        }
        // SAFETY: the area is 32-byte aligned TLS of this thread and lives as
        // long as the thread; the kernel forgets it when the thread exits.
        let err = unsafe {
            os::rseq_register((&mut tls.area as *mut Rseq).cast(), core::mem::size_of::<Rseq>() as u32, RSEQ_SIG)
        };
        tls.state = if err == 0 { OwnState::Registered } else { OwnState::Failed } as u32;
    });
    tls.state == OwnState::Registered as u32
}
