//! Memory follows the load without anyone calling anything: a background
//! thread, started lazily in a process that started threads of its own,
//! the first time 4 MiB of freed arena memory wait in the page heap or as
//! spans the classes keep empty (never
//! from a constructor, so programs that daemonise or drop privileges at
//! start-up are unaffected; a program that never frees much never gets
//! one), wakes every tick to
//! - give free arena memory back to the OS on a time-based decay
//!   (`RSEQALLOC_DECAY_MS`; `pagemap::decay_step`), and unmap cached
//!   large mappings unused for a decay period,
//! - drain the caches of CPUs idle for a few decay periods,
//! - move cache capacity toward the classes that miss: a CPU whose budget
//!   stopped a class from growing takes a quarter of the capacity of each
//!   class there that did not miss,
//! - return transfer-cache objects that sat unused for a tick to their spans,
//!   and the empty spans a class kept and did not use to the page heap.
//!
//! The thread leaves once nothing is left for it (every cache drained, the
//! transfer caches empty, no free pages or cached mappings waiting for the
//! decay), so an idle process has no thread of ours; the next time 4 MiB
//! wait in the page heap starts one again.
//!
//! The thread never keeps a process alive. Every `CHECK_NS` it counts the
//! process's live threads; once it is the only one left (`main` ended with
//! `pthread_exit` and the other threads returned), it returns, and glibc's
//! last-thread rule calls `exit(0)`, as it would have when the program's
//! last thread returned. A signal sent to the process in between (it stays
//! pending: the thread blocks every signal, so that the program's handlers
//! never run on it) ends with the process, as one sent after the last
//! thread returned does without us.
//!
//! A process that never started a thread gets none from us (it could not
//! `unshare(CLONE_NEWUSER)` or `setns` into a user namespace any more), nor
//! does one that has only one thread when the heap calls for ours, nor one
//! without /proc, where the thread could not count.
//!
//! Without the thread (single-threaded, `RSEQALLOC_BACKGROUND=0`, below the
//! threshold, or after it left), the slow paths that hand granules back run
//! the decay in bounded steps instead (`on_heap_free`).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::backend::{large, page_heap};
use crate::cache::percpu;
use crate::cache::region::{self, MAX_CPUS};
use crate::middle::{central, transfer};
use crate::platform::config::Config;
use crate::platform::os;
use crate::platform::size_class::SizeClass;

/// Freed arena bytes still backed by pages that make the thread worth
/// starting.
const START_FREE_BACKED: u64 = 4 << 20;
/// Longest time between ticks.
const MAX_TICK_NS: u64 = 1_000_000_000;
/// How often the thread checks that it is not the process's last thread
/// (one read of `/proc/self/stat`), and how often a process that may not start it is asked
/// again: the delay between the program's last thread returning and the
/// process's exit, at worst.
const CHECK_NS: u64 = 100_000_000;
/// A cache unused for this many decay periods is drained.
const IDLE_DECAYS: u64 = 2;
/// Chunks (2 MiB each) one slow-path decay step visits at most.
const SLOW_PATH_CHUNKS: usize = 64;

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;

static ENABLED: AtomicBool = AtomicBool::new(false);
static THREAD: AtomicU8 = AtomicU8::new(NOT_STARTED);
/// `page_heap::HEAP.heap_frees()` when the slow paths last looked.
static HEAP_FREES_SEEN: AtomicU64 = AtomicU64::new(0);
/// When a start was last refused because the process had no thread of its
/// own (asked again after `CHECK_NS`).
static REFUSED_AT: AtomicU64 = AtomicU64::new(0);

/// Per cache: the activity count (hits and misses) last seen, and when it
/// last changed. Only the thread touches them.
static LAST_ACTIVITY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ACTIVE_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Takes the options (init).
pub fn init(config: &Config) {
    page_heap::HEAP.set_decay_ns(config.decay_ms as u64 * 1_000_000);
    ENABLED.store(config.background, Ordering::Relaxed);
}

#[cold]
fn start() {
    if THREAD.compare_exchange(NOT_STARTED, STARTING, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    if !program_threaded() {
        REFUSED_AT.store(os::now_ns(), Ordering::Relaxed);
        THREAD.store(NOT_STARTED, Ordering::Relaxed);
        return;
    }
    // The new thread's TLS may be allocated through us (re-entering here,
    // which sees STARTING and returns).
    let started = os::spawn_detached(c"rseqalloc-bg", run);
    // On failure (thread limit, no memory) stay disabled: slow paths decay.
    THREAD.store(if started { RUNNING } else { NOT_STARTED }, Ordering::Relaxed);
    ENABLED.store(started, Ordering::Relaxed);
}

/// Whether the program started a thread of its own and has one besides the
/// caller now (so ours is never the second thread of a single-threaded
/// process, nor started during its exit or in a fork child), counted where
/// the kernel can tell us when it has none left. glibc's flag answers "never
/// started one" without a system call.
fn program_threaded() -> bool {
    os::single_threaded() != Some(true) && os::thread_count() >= Some(2)
}

/// Whether the thread runs (stats).
pub fn running() -> bool {
    THREAD.load(Ordering::Relaxed) == RUNNING
}

/// In a fork child: the thread was not copied; start one again when needed.
pub fn forget_thread() {
    if THREAD.swap(NOT_STARTED, Ordering::Relaxed) != NOT_STARTED {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    let mut last_tick = os::now_ns();
    loop {
        // A decay shorter than the check keeps its own pace.
        os::sleep_ns(tick_ns().min(CHECK_NS));
        match os::thread_count() {
            Some(n) if n > 1 => {}
            // The last thread (or one that can no longer count): the slow
            // paths take the decay back, and returning runs glibc's
            // last-thread rule.
            _ => {
                THREAD.store(NOT_STARTED, Ordering::Relaxed);
                return core::ptr::null_mut();
            }
        }
        let now = os::now_ns();
        if now.saturating_sub(last_tick) >= tick_ns() {
            last_tick = now;
            if !tick(now) && !stays_when_idle() {
                return core::ptr::null_mut();
            }
        }
    }
}

/// The time between ticks: the decay period, at most `MAX_TICK_NS`.
fn tick_ns() -> u64 {
    match page_heap::HEAP.decay_ns() {
        0 => MAX_TICK_NS,
        decay => decay.min(MAX_TICK_NS),
    }
}

/// One round of the thread's work at time `now`. Returns whether anything
/// is left for later rounds: a cache in use, or idle but not drained yet;
/// objects in the transfer caches or empty spans kept by a class; with a
/// decay, free pages or cached mappings still to give back.
fn tick(now: u64) -> bool {
    let decay = page_heap::HEAP.decay_ns();
    let caches = (0..region::ncpu()).fold(false, |busy, idx| tend_cache(idx, now, decay) | busy);
    transfer::TRANSFER.plunder();
    central::CENTRAL.release_idle();
    if page_heap::HEAP.decay_step(now, usize::MAX) {
        large::release_cached(decay);
    }
    caches
        || SizeClass::all().any(|class| transfer::TRANSFER.held(class) != 0 || central::CENTRAL.spares(class) != 0)
        || decay != 0 && (page_heap::HEAP.free_backed_bytes() != 0 || large::cached_bytes() != 0)
}

/// Drains cache `idx` if it has been idle for `IDLE_DECAYS` decay periods;
/// otherwise, if its budget stopped a class from growing, moves capacity
/// from the classes that did not miss since the last tick. Returns whether
/// the cache needs later rounds (in use, or waiting for its drain).
fn tend_cache(idx: usize, now: u64, decay: u64) -> bool {
    let Some(region) = region::region(idx) else { return false };
    let meta = region.meta();
    if !meta.initialized.load(Ordering::Acquire) {
        return false;
    }
    let activity = [&meta.alloc_hits, &meta.free_hits, &meta.alloc_misses, &meta.free_misses]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add);
    let active = LAST_ACTIVITY[idx].swap(activity, Ordering::Relaxed) != activity;
    if active {
        ACTIVE_AT[idx].store(now, Ordering::Relaxed);
    } else if decay != 0 && now.saturating_sub(ACTIVE_AT[idx].load(Ordering::Relaxed)) >= IDLE_DECAYS * decay {
        percpu::drain(idx);
        return false;
    }
    let starved = meta.starved.swap(false, Ordering::Relaxed);
    percpu::shrink(idx, |_, header| {
        let capacity = (header.end - header.begin) as usize;
        (starved && header.aux == 0 && capacity > 0).then(|| capacity - capacity.div_ceil(4))
    });
    active || decay != 0
}

/// Nothing is left for the thread: it leaves, so that an idle process has
/// no thread of ours waking it, unless 4 MiB came back to the page heap
/// meanwhile (a heap free that saw the thread running neither started one
/// nor ran a decay step; one that slips between the two checks leaves its
/// memory to the next heap free). Returns whether the thread stays.
fn stays_when_idle() -> bool {
    THREAD.store(NOT_STARTED, Ordering::Relaxed);
    waiting_bytes() >= START_FREE_BACKED
        && THREAD.compare_exchange(NOT_STARTED, RUNNING, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Granules just went back to the page heap (an emptied span, a freed
/// medium block): start the thread once enough waits there, in a process
/// that started threads of its own; until it runs, run a bounded decay
/// step if one is due. Called by the front's slow paths, holding no lock.
pub fn on_heap_free() {
    if THREAD.load(Ordering::Relaxed) == RUNNING {
        return;
    }
    let now = os::now_ns();
    if ENABLED.load(Ordering::Relaxed)
        && THREAD.load(Ordering::Relaxed) == NOT_STARTED
        && waiting_bytes() >= START_FREE_BACKED
        && now.saturating_sub(REFUSED_AT.load(Ordering::Relaxed)) >= CHECK_NS
    {
        start();
        if THREAD.load(Ordering::Relaxed) == RUNNING {
            return;
        }
    }
    if page_heap::HEAP.decay_step(now, SLOW_PATH_CHUNKS) {
        central::CENTRAL.release_idle();
    }
}

/// Freed memory still backed by pages that waits for the decay: free
/// granules in the page heap, and the spans classes keep empty (they reach
/// the page heap at the next decay step once unused).
fn waiting_bytes() -> u64 {
    page_heap::HEAP.free_backed_bytes() + central::CENTRAL.spare_bytes()
}

/// After a cache slow path: if granules went back to the page heap or a
/// class kept an emptied span since the last look (a flush emptied a
/// span), `on_heap_free`. Two loads and a compare when nothing did.
#[inline]
pub fn after_slow_path() {
    let frees = page_heap::HEAP.heap_frees().wrapping_add(central::CENTRAL.spans_kept());
    if HEAP_FREES_SEEN.load(Ordering::Relaxed) != frees {
        HEAP_FREES_SEEN.store(frees, Ordering::Relaxed);
        on_heap_free();
    }
}

/// Returns all free memory to the OS at once, without waiting for the
/// decay (`rseqalloc::release`, `malloc_trim`): every cache drained, the
/// transfer caches back to their spans, every free granule's pages and the
/// cached large mappings given back. Returns the bytes given back.
pub fn release_all() -> usize {
    percpu::drain_all();
    transfer::TRANSFER.drain();
    central::CENTRAL.release_all();
    page_heap::HEAP.release_free() + large::release_cached(0)
}
