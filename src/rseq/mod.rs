//! Layer 1, rseq: how threads reach a restartable-sequence area, and the
//! critical sections' Rust side. Uses `platform` only. The runtime is this
//! file; `abi` the shared layout, `cs` the asm sections, `resolve` which
//! copies the loader binds, `regions` registration with the patched kernel,
//! `fence` the remote fences.
//!
//! The rseq runtime: decides once per process how threads reach a
//! restartable-sequence area (glibc's, our own, or none), publishes that to the
//! critical sections, and registers our own area per thread where needed.
//!
//! Decision: glibc's area when `__rseq_size > 0`; else librseq's, where
//! librseq owns the registration (below); else our own 32-byte area,
//! registered lazily by each thread's first slow path; else
//! (ENOSYS under valgrind or rr, a seccomp denial, `RSEQALLOC_MODE=fallback`)
//! the locked fallback. We never register beside glibc and never write the
//! kernel's fields: only `rseq_cs`, from the asm's mainline copies.
//!
//! Where glibc registered none, the area we register is shared with other
//! rseq users through the convention of older librseq and the kernel's
//! selftests (asm, Data): it is the TLS symbol `__rseq_abi`, whose first
//! definition in the process wins, and `__rseq_refcount` counts the
//! thread's users of its registration. A thread whose area another user
//! registered first just counts itself in; one that registers first lets
//! later users count themselves in instead of failing with EINVAL. We never
//! unregister (the kernel forgets the area when the thread exits), so the
//! area stays registered for the others. The C library exports both names
//! too (`export`), so that a library opened later with `dlopen` binds to
//! the area we may have registered already; linked without lld (build.rs),
//! it cannot, and uses a private area where no object defines them.
//!
//! librseq 0.1 and later (and the kernel's selftests) keep their area
//! private, publish it as `rseq_offset`/`rseq_size`, register a thread only
//! when the program asks, and abort the process if a registration fails
//! after another thread's succeeded. So where one of them was loaded with
//! the program and glibc registered none, we never register: the sections
//! read librseq's area, and only threads librseq registered use the per-CPU
//! caches (the others take the slow paths). If we came up before its
//! constructor published the area, slow paths adopt it once it has. One
//! opened later with `dlopen` is not seen: its registration then fails
//! (EINVAL) on threads we registered, and aborts if another thread's
//! succeeded (README, limits).
//!
//! On a kernel with restart regions (kernel-patch/), the loader has bound
//! the sections to their region copies (`resolve`), and the mode is
//! `Region`: the same areas supply the cache index, but no section stores a
//! descriptor, because the kernel holds our sections in its per-process
//! table, registered here before the sections are published.
//!
//! Every thread's area is at the same thread-pointer offset, which `publish`
//! stores in the control block (asm/abi.h). In our own-area mode a thread's
//! area reads index -1 until `current_index`, on the thread's first slow
//! path, registers it.

pub mod abi;
pub mod cs;
pub mod fence;
pub mod regions;
pub mod resolve;

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::platform::config::{Config, ModeRequest};
use crate::platform::os;
use abi::{OwnTls, Rseq, RSEQ_SIG};
use cs::rseqalloc_ctl as CTL;

pub use crate::platform::mode::{CacheIndex, Mode};

static MODE: AtomicU8 = AtomicU8::new(0);
static INDEX: AtomicU8 = AtomicU8::new(0);

/// The process-wide mode.
#[inline]
pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        1 => Mode::RseqGlibc,
        2 => Mode::RseqOwn,
        3 => Mode::Fallback,
        4 => Mode::Region,
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

/// Whether sections read the index from our own area (registered per
/// thread) rather than glibc's.
static OWN_AREA: AtomicBool = AtomicBool::new(false);

/// Where librseq owns the registration but had not published its area when
/// we chose the mode (its constructor had not run: something allocated
/// before it): the sections still read our never-registered area, and slow
/// paths look for librseq's until they find it.
static LIBRSEQ_PENDING: AtomicBool = AtomicBool::new(false);

/// librseq's `rseq_size` before its constructor ran (and after its
/// destructor).
const LIBRSEQ_UNINIT: u32 = u32::MAX;

/// Where an object loaded with the program defines librseq's `rseq_offset`
/// and `rseq_size` (librseq 0.1 and later, the kernel's rseq selftests):
/// Some(its area's thread-pointer offset, or None while it has not
/// published one). Called where glibc registered no area, so the area is
/// librseq's own: it registers it per thread, when the program asks it to.
fn librseq_area() -> Option<Option<isize>> {
    let (mut offset, mut size) = (0isize, 0u32);
    // SAFETY: both out-pointers are locals.
    if !unsafe { cs::rseqalloc_librseq(&mut offset, &mut size) } {
        return None;
    }
    Some((size != LIBRSEQ_UNINIT && offset != 0).then_some(offset))
}

/// Points the sections at librseq's area once it has published it (a slow
/// path's check while `LIBRSEQ_PENDING`).
#[cold]
fn adopt_librseq_area() {
    if let Some(Some(area)) = librseq_area() {
        if LIBRSEQ_PENDING.swap(false, Ordering::Relaxed) {
            point_sections_at(area);
        }
    }
}

/// Whether `rseq(2)` works here: a registration of nothing fails with
/// EINVAL where it does, ENOSYS (valgrind, rr, old kernels) or EPERM
/// (seccomp) where it does not.
fn rseq_available() -> bool {
    // SAFETY: a null area of length 0 registers nothing.
    unsafe { os::rseq_register(core::ptr::null_mut(), 0, RSEQ_SIG) == libc::EINVAL }
}

/// Names the area every section reads, as a thread-pointer offset: at
/// init, and once later where librseq published its area after we came up.
/// Sections may run meanwhile: a mainline copy arms its descriptor in the
/// area it read once and reads the index from that same area, and a region
/// copy reads `idx_off` alone, so a section sees one area or the other,
/// never a mix.
fn point_sections_at(area_off: isize) {
    // SAFETY: the control block is a static of atomics; `idx_field` was
    // stored before (`publish`).
    let ctl = unsafe { &CTL };
    let field = ctl.idx_field.load(Ordering::Relaxed) as isize;
    ctl.idx_off.store(area_off + field, Ordering::Relaxed);
    ctl.area_off.store(area_off, Ordering::Relaxed);
}

/// Chooses the mode for the process. Runs once, from init, on the first
/// allocating thread. Returns the mode and the thread-pointer offset of the
/// area that critical sections will read (meaningless in fallback).
pub fn choose_mode(config: &Config) -> (Mode, isize) {
    if config.mode == ModeRequest::Fallback {
        return (Mode::Fallback, 0);
    }
    let mut offset: isize = 0;
    let mut size: u32 = 0;
    // SAFETY: both out-pointers are locals.
    let glibc = unsafe { cs::rseqalloc_glibc_rseq(&mut offset, &mut size) };
    let librseq = librseq_area();
    let (mode, area_off) = if glibc && size > 0 {
        (Mode::RseqGlibc, offset)
    } else if librseq.is_some() && rseq_available() {
        // librseq owns the registration: read its area, never register.
        let area = librseq.flatten();
        LIBRSEQ_PENDING.store(area.is_none(), Ordering::Relaxed);
        // SAFETY: a plain read of a link-time constant.
        (Mode::RseqOwn, area.unwrap_or_else(|| unsafe { cs::rseqalloc_own_tls_offset() }))
    } else if librseq.is_none() && register_own_thread() {
        OWN_AREA.store(true, Ordering::Relaxed);
        (Mode::RseqOwn, own_area().0)
    } else {
        if config.mode == ModeRequest::Rseq {
            os::write_stderr(b"rseqalloc: RSEQALLOC_MODE=rseq, but rseq(2) is unavailable; using the fallback\n");
        }
        return (Mode::Fallback, 0);
    };
    // The loader already bound the sections (`resolve`); the region copies
    // are only safe once the kernel holds their table. If it refuses it,
    // the fallback keeps every section missing (ncpu stays 0).
    if !resolve::rseqalloc_regions_chosen() {
        return (mode, area_off);
    }
    if regions::register() {
        return (Mode::Region, area_off);
    }
    os::write_stderr(b"rseqalloc: the kernel refused our restart regions; using the fallback\n");
    (Mode::Fallback, 0)
}

/// Whether caches will be indexed by `mm_cid`: as the loader decided when it
/// bound the small entry points (`resolve`), outside the fallback.
pub fn choose_index(mode: Mode) -> CacheIndex {
    if mode != Mode::Fallback && resolve::rseqalloc_mm_cid_chosen() {
        CacheIndex::MmCid
    } else {
        CacheIndex::CpuId
    }
}

/// Publishes the decision to the critical sections. `area_off` is the
/// thread-pointer offset of the rseq area; `slabs`/`ncpu` describe the
/// regions. In fallback mode `ncpu` stays 0, so every section misses.
pub fn publish(mode: Mode, index: CacheIndex, area_off: isize, slabs: usize, ncpu: u32) {
    INDEX.store(matches!(index, CacheIndex::MmCid) as u8, Ordering::Relaxed);
    if mode != Mode::Fallback {
        let field = match index {
            CacheIndex::CpuId => core::mem::offset_of!(Rseq, cpu_id),
            CacheIndex::MmCid => core::mem::offset_of!(Rseq, mm_cid),
        } as isize;
        // SAFETY: the control block is a static; init writes it before
        // `ncpu` != 0 lets any section use it (and `point_sections_at` may
        // once more later, safely). A mainline section reads the index from
        // the area it armed, so any mix of old and new words it sees is safe;
        // a region copy reads `idx_off` alone.
        let ctl = unsafe { &CTL };
        ctl.idx_field.store(field as i64, Ordering::Relaxed);
        point_sections_at(area_off);
        ctl.slabs.store(slabs, Ordering::Relaxed);
        ctl.ncpu.store(ncpu, Ordering::Release);
    }
    let code = match mode {
        Mode::Uninit | Mode::Forward => 0, // Forward: never on this path
        Mode::RseqGlibc => 1,
        Mode::RseqOwn => 2,
        Mode::Fallback => 3,
        Mode::Region => 4,
    };
    MODE.store(code, Ordering::Release);
}

/// The current thread's cache index as the slow paths see it (it may be
/// stale at once; only critical sections get a trustworthy one), after
/// making sure the thread's sections can find its rseq area. None when this
/// thread cannot use the per-CPU caches: its rseq registration failed, or its
/// index is out of range.
pub fn current_index() -> Option<usize> {
    match mode() {
        Mode::Uninit | Mode::Forward => None,
        Mode::Fallback => os::current_cpu(),
        Mode::RseqGlibc | Mode::RseqOwn | Mode::Region => {
            if LIBRSEQ_PENDING.load(Ordering::Relaxed) {
                adopt_librseq_area();
            } else if OWN_AREA.load(Ordering::Relaxed) && !register_own_thread() {
                return None;
            }
            read_index()
        }
    }
}

/// The thread-pointer offsets of the area we register where glibc
/// registered none, and of its count of users: `__rseq_abi` and
/// `__rseq_refcount` wherever defined (by us too, except in a C library
/// linked without the export: build.rs), else our private ones.
fn own_area() -> (isize, isize) {
    // SAFETY: plain reads of link-time constants (GOT entries the loader
    // filled before any code of ours ran).
    let (area, count, own) = unsafe {
        (cs::rseqalloc_shared_area_offset(), cs::rseqalloc_shared_refcount_offset(), cs::rseqalloc_own_tls_offset())
    };
    let own_count = own + core::mem::offset_of!(OwnTls, count) as isize;
    match (area, count) {
        (0, _) => (own, own_count),
        (area, 0) => (area, own_count),
        shared => shared,
    }
}

/// A thread-local object of this thread at `offset` from the thread pointer.
///
/// # Safety
/// `offset` is the thread-pointer offset of an initial-exec TLS object of
/// type `T`, and only this thread touches it.
unsafe fn thread_local<T>(offset: isize) -> *mut T {
    // SAFETY: the caller's guarantee; the sum is the object's address.
    unsafe { cs::rseqalloc_thread_pointer().wrapping_offset(offset).cast() }
}

/// This thread's registration state (`OwnTls::state`).
fn own_state() -> *mut u32 {
    // SAFETY: the block is this thread's initial-exec TLS, at a constant
    // offset from the thread pointer.
    unsafe { thread_local::<u8>(cs::rseqalloc_own_tls_offset() + core::mem::offset_of!(OwnTls, state) as isize).cast() }
}

/// Reads the index field of this thread's area in use; negative values
/// (unregistered, registration failed) give None.
fn read_index() -> Option<usize> {
    // SAFETY: `idx_off` is the thread-pointer offset of a u32 field of this
    // thread's glibc-registered or own area (`publish`).
    let value = unsafe {
        let tp = cs::rseqalloc_thread_pointer();
        let field = tp.wrapping_offset(CTL.idx_off.load(Ordering::Relaxed));
        core::ptr::read_volatile(field as *const u32) as i32
    };
    usize::try_from(value).ok()
}

/// Registers this thread's own area if it has not tried yet. Returns whether
/// the thread now has a working registration. Signals are blocked around it
/// so that a handler's allocation cannot see a half-made registration.
fn register_own_thread() -> bool {
    let state = own_state();
    // SAFETY: this and every access to `state`, `area` and `count` below:
    // they are initial-exec TLS of this thread (ours, or the object's that
    // defined `__rseq_abi` first), touched only on this thread: by us, with
    // signals blocked while we change them, and by other users of the
    // convention, which do not run meanwhile.
    let tried = unsafe { state.read() };
    match tried {
        s if s == OwnState::Registered as u32 => return true,
        s if s == OwnState::Failed as u32 => return false,
        _ => {}
    }
    os::with_signals_blocked(|| {
        // SAFETY: as above.
        if unsafe { state.read() } != OwnState::NotTried as u32 {
            return;
        }
        let (area_off, count_off) = own_area();
        // SAFETY: as above.
        let (area, count) = unsafe { (thread_local::<Rseq>(area_off), thread_local::<u32>(count_off)) };
        // SAFETY: as above.
        let err = if unsafe { count.read_volatile() } > 0 {
            0 // another user registered this area on this thread: count us in
        } else {
            // SAFETY: the area is 32-byte aligned TLS of this thread and
            // lives as long as the thread; the kernel forgets it when the
            // thread exits.
            unsafe { os::rseq_register(area.cast(), core::mem::size_of::<Rseq>() as u32, RSEQ_SIG) }
        };
        // EBUSY: this very area is registered already, by a user that keeps
        // no count; it works for us as it is.
        let ok = err == 0 || err == libc::EBUSY;
        // SAFETY: as above.
        unsafe {
            if ok {
                count.write_volatile(count.read_volatile() + 1);
            }
            state.write(if ok { OwnState::Registered } else { OwnState::Failed } as u32);
        }
    });
    // SAFETY: as above.
    unsafe { state.read() == OwnState::Registered as u32 }
}

/// Placeholders that make rustc list `__rseq_abi` and `__rseq_refcount` in
/// the C library's version script, so that the library exports them: rustc
/// exports only symbols Rust defines, and stable Rust cannot define a
/// thread-local one. build.rs points both names at the thread-local storage
/// in the asm (`--defsym`, asm's Data), so these bytes are never the
/// symbols' values; nothing may refer to them from Rust.
///
/// They must not be constants: LLVM's constant merging points a promoted
/// constant with the same bytes (a `"\u{0}"` literal, a `&0u8`, a `&false`
/// in the same codegen unit) at an external constant of those bytes, and
/// `--defsym` then turns that pointer into a garbage one (lld links the
/// GOT-relative load of a symbol made thread-local without a word, putting
/// the symbol's thread-pointer offset in the displacement). Which
/// literals share the placeholders' unit changes with any edit, so a
/// constant placeholder crashed whichever code drew the short straw.
/// Atomics have interior mutability, so LLVM sees writable globals, which
/// it never merges with anything.
#[cfg(rseqalloc_export_area)]
mod export {
    use core::sync::atomic::AtomicU8;

    #[no_mangle]
    static __rseq_abi: AtomicU8 = AtomicU8::new(0);
    #[no_mangle]
    static __rseq_refcount: AtomicU8 = AtomicU8::new(0);

    /// Promoted constants equal to a placeholder's bytes, in the
    /// placeholders' own module, keep their own addresses. Whether LLVM
    /// sees both in one module depends on how the crate splits into codegen
    /// units: with constant placeholders this test faulted after an
    /// unrelated change elsewhere in the crate, and passed before it.
    #[cfg(test)]
    #[test]
    fn constants_equal_to_the_placeholders_keep_their_own_address() {
        let zero: &'static u8 = &0;
        let flag: &'static bool = &false;
        assert_eq!(*core::hint::black_box(zero), 0);
        assert!(!*core::hint::black_box(flag));
        assert_eq!(core::hint::black_box("\u{0}").as_bytes(), [0]);
    }
}
