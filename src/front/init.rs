//! Brings the allocator up once per process: reads the options, chooses the
//! rseq mode, reserves the arena, maps the per-CPU regions, and publishes
//! them to the critical sections. Allocates nothing, so a first allocation
//! from anywhere (the dynamic loader, a libc constructor, std's runtime) can
//! trigger it. A call that re-enters from inside bring-up (same thread) is
//! told so at once (`initialising_here`) instead of waiting for itself.
//!
//! A constructor (`.init_array`) runs at load time, outside any malloc
//! call (so that no libc lock glibc may hold around a first malloc is taken
//! again): it pins the object that holds the allocator (a plugin that links
//! rseqalloc must survive `dlclose`: the kernel may still read a descriptor
//! there), looks up glibc's single-threaded flag (the background thread's
//! rule), registers fork handlers that hold every allocator lock across
//! `fork`, and an exit handler printing the stats with `RSEQALLOC_STATS`.
//! In the C library it also brings the allocator up; in a Rust program the
//! first allocation does, so that it reads the options set in code
//! (`RseqAlloc::with`).

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::backend::{page_heap, registry};
use crate::cache::region::{self, MAX_CPUS};
use crate::front::{background, stats};
use crate::middle::{central, transfer};
use crate::platform::config::{self, Config};
use crate::platform::os;
use crate::rseq::{self, cs, fence};

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// The thread pointer of the thread running `bring_up` (0 otherwise).
static INIT_THREAD: AtomicUsize = AtomicUsize::new(0);
/// `RSEQALLOC_STATS`: 0 no report at exit, 1 text, 2 JSON.
static STATS_AT_EXIT: AtomicU8 = AtomicU8::new(0);

/// Whether the allocator is up; brings it up on the first call. False only
/// if the kernel refused the memory for the arena or the regions.
#[inline]
pub fn ensure() -> bool {
    STATE.load(Ordering::Acquire) == READY || ensure_slow()
}

#[cold]
fn ensure_slow() -> bool {
    match STATE.compare_exchange(UNINIT, RUNNING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            INIT_THREAD.store(this_thread(), Ordering::Relaxed);
            // A successful malloc leaves errno alone; the probes below may not
            // (a refused reservation, an absent auxv entry).
            let errno = os::errno();
            let ok = bring_up();
            os::set_errno(errno);
            INIT_THREAD.store(0, Ordering::Relaxed);
            STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
            ok
        }
        Err(_) => loop {
            // Another thread is bringing it up; it takes microseconds.
            match STATE.load(Ordering::Acquire) {
                RUNNING if initialising_here() => return false,
                RUNNING => os::yield_now(),
                state => return state == READY,
            }
        },
    }
}

/// Whether this thread is inside `bring_up`: an allocation now re-entered
/// the allocator from init, and must be served without it (the C API's
/// bootstrap area).
pub fn initialising_here() -> bool {
    INIT_THREAD.load(Ordering::Relaxed) == this_thread()
}

fn this_thread() -> usize {
    // SAFETY: reads %fs:0, which glibc keeps pointing at the thread's TCB.
    unsafe { cs::rseqalloc_thread_pointer() as usize }
}

fn bring_up() -> bool {
    let config = Config::load();
    let ncpu = os::possible_cpus().map_or(MAX_CPUS, |n| n.min(MAX_CPUS));
    if !page_heap::HEAP.init(|| central::CENTRAL.release_for_growth()) {
        return false;
    }
    let Some(slabs) = region::map_slabs(ncpu, config.cpu_cache_bytes) else {
        return false;
    };
    #[cfg(feature = "capi")]
    let checked = crate::front::check::init(&config);
    #[cfg(not(feature = "capi"))]
    let checked = false;
    // Checked mode marks every small block in its bitmap as it is handed
    // out and given back, which only the slow paths do: so the caches run
    // behind their try-locks, where every operation takes a slow path, and
    // the critical sections (which mark nothing) never hit.
    let (mode, area_off) = if checked { (rseq::Mode::Fallback, 0) } else { rseq::choose_mode(&config) };
    let index = rseq::choose_index(mode);
    fence::init(mode, config.membarrier);
    background::init(&config);
    crate::backend::large::init(&config);
    let at_exit = match config.stats_at_exit {
        None => 0,
        Some(crate::platform::config::Report::Text) => 1,
        Some(crate::platform::config::Report::Json) => 2,
    };
    STATS_AT_EXIT.store(at_exit, Ordering::Relaxed);
    rseq::publish(mode, index, area_off, slabs, ncpu as u32);
    if config.verbose {
        report(mode, index, ncpu);
    }
    true
}

fn report(mode: rseq::Mode, index: rseq::CacheIndex, ncpu: usize) {
    let mut line = crate::platform::os::Line::new();
    let _ = core::fmt::write(&mut line, format_args!("rseqalloc: mode {mode:?}, caches by {index:?}, {ncpu} caches\n"));
    line.flush();
    config::print_in_force();
}

/// Runs when the library or program is loaded, before `main`, with no
/// libc lock held: brings the allocator up and registers the process hooks.
/// (glibc passes argc, argv and envp; the SysV ABI lets us ignore them.)
#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

extern "C" fn at_load() {
    // Both may allocate (through us, when we are the C malloc): here no
    // allocator entry point is under way, so such an allocation is served
    // as any other (bringing the allocator up if it is the first).
    os::pin_own_object(at_load as *const libc::c_void);
    os::find_single_threaded_flag();
    // The C library comes up now: C code allocates from the first
    // constructor on. A Rust program comes up at its first allocation,
    // which hands over any options set in code (`RseqAlloc::with`).
    #[cfg(feature = "capi")]
    if !ensure() {
        return;
    }
    // SAFETY: the handlers are `extern "C"` functions that live as long as
    // the process (the object that holds them is pinned above).
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_child));
        libc::atexit(print_stats);
    }
}

/// Before `fork`: takes every allocator lock, in the order the slow paths
/// nest them (a region, then a transfer cache or a central list, then the
/// page heap; the registry nests nothing), so no other thread is inside a
/// slow path when the child is copied. Critical sections need nothing: a
/// section another thread had begun is simply never committed in the child.
extern "C" fn fork_prepare() {
    // A bring-up under way on another thread finishes first: in the child
    // no thread would finish it.
    while STATE.load(Ordering::Acquire) == RUNNING && !initialising_here() {
        os::yield_now();
    }
    region::lock_all();
    transfer::TRANSFER.lock_all();
    central::CENTRAL.lock_all();
    page_heap::HEAP.lock_all();
    registry::lock_all();
}

/// After `fork`, in parent and child: drops what `fork_prepare` took. The
/// child's only thread is the one that forked, which holds them all.
extern "C" fn fork_release() {
    // SAFETY: fork_prepare took every lock on this thread (or, in the child,
    // on the thread it was copied from).
    unsafe {
        registry::unlock_all();
        page_heap::HEAP.unlock_all();
        central::CENTRAL.unlock_all();
        transfer::TRANSFER.unlock_all();
        region::unlock_all();
    }
}

/// After `fork`, in the child: as `fork_release`; the background thread
/// was not copied, so it will start again when the heap is big enough.
extern "C" fn fork_child() {
    fork_release();
    background::forget_thread();
}

/// At exit: the stats report `RSEQALLOC_STATS` asks for, if any.
extern "C" fn print_stats() {
    let format = match STATS_AT_EXIT.load(Ordering::Relaxed) {
        0 => return,
        1 => crate::platform::config::Report::Text,
        _ => crate::platform::config::Report::Json,
    };
    stats::report(format);
}
