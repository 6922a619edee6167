//! Memory follows the load without anyone calling anything: a background
//! thread, started lazily the first time 4 MiB of freed arena memory wait in
//! the page heap (never from a constructor, so programs that daemonise or
//! drop privileges at start-up are unaffected; a program that never frees
//! much never gets one), wakes every tick to
//! - give free arena memory back to the OS on a time-based decay
//!   (`RSEQALLOC_DECAY_MS`; `pagemap::release_aged`), and unmap cached
//!   large mappings unused for a decay period,
//! - drain the caches of CPUs idle for a few decay periods,
//! - move cache capacity toward the classes that miss: a CPU whose budget
//!   stopped a class from growing takes a quarter of the capacity of each
//!   class there that did not miss,
//! - return transfer-cache objects that sat unused for a tick to their spans.
//!
//! Without the thread (`RSEQALLOC_BACKGROUND=0`, or below the threshold),
//! the slow paths that hand granules back run the decay in bounded steps
//! instead (`on_heap_free`).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::config::Config;
use crate::percpu::{self, MAX_CPUS};
use crate::{large, os, pagemap, transfer};

/// Freed arena bytes still backed by pages that make the thread worth
/// starting.
const START_FREE_BACKED: u64 = 4 << 20;
/// Longest sleep between ticks.
const MAX_TICK_NS: u64 = 1_000_000_000;
/// A cache unused for this many decay periods is drained.
const IDLE_DECAYS: u64 = 2;
/// Chunks (2 MiB each) one slow-path decay step visits at most.
const SLOW_PATH_CHUNKS: usize = 64;

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;

static ENABLED: AtomicBool = AtomicBool::new(false);
static THREAD: AtomicU8 = AtomicU8::new(NOT_STARTED);
static DECAY_NS: AtomicU64 = AtomicU64::new(0);
/// When the last decay step began (thread or slow path).
static LAST_DECAY: AtomicU64 = AtomicU64::new(0);

/// Per cache: the activity count (hits and misses) last seen, and when it
/// last changed. Only the thread touches them.
static LAST_ACTIVITY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ACTIVE_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Takes the options (init).
pub fn init(config: &Config) {
    DECAY_NS.store(config.decay_ms as u64 * 1_000_000, Ordering::Relaxed);
    ENABLED.store(config.background, Ordering::Relaxed);
}

#[cold]
fn start() {
    if THREAD.compare_exchange(NOT_STARTED, STARTING, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    // The new thread's TLS may be allocated through us (re-entering here,
    // which sees STARTING and returns).
    let started = os::spawn_detached(c"rseqalloc-bg", run);
    // On failure (thread limit, no memory) stay disabled: slow paths decay.
    THREAD.store(if started { RUNNING } else { NOT_STARTED }, Ordering::Relaxed);
    ENABLED.store(started, Ordering::Relaxed);
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
    loop {
        let decay = DECAY_NS.load(Ordering::Relaxed);
        os::sleep_ns(if decay == 0 { MAX_TICK_NS } else { decay.min(MAX_TICK_NS) });
        tick(os::now_ns());
    }
}

/// One round of the thread's work at time `now`.
fn tick(now: u64) {
    let decay = DECAY_NS.load(Ordering::Relaxed);
    for idx in 0..percpu::ncpu() {
        tend_cache(idx, now, decay);
    }
    transfer::plunder();
    if decay_due(now, decay) {
        pagemap::release_aged(usize::MAX);
        large::release_cached(decay);
    }
}

/// Drains cache `idx` if it has been idle for `IDLE_DECAYS` decay periods;
/// otherwise, if its budget stopped a class from growing, moves capacity
/// from the classes that did not miss since the last tick.
fn tend_cache(idx: usize, now: u64, decay: u64) {
    let Some(region) = percpu::region(idx) else { return };
    let meta = region.meta();
    if !meta.initialized.load(Ordering::Acquire) {
        return;
    }
    let activity = [&meta.alloc_hits, &meta.free_hits, &meta.alloc_misses, &meta.free_misses]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add);
    if LAST_ACTIVITY[idx].swap(activity, Ordering::Relaxed) != activity {
        ACTIVE_AT[idx].store(now, Ordering::Relaxed);
    } else if decay != 0 && now.saturating_sub(ACTIVE_AT[idx].load(Ordering::Relaxed)) >= IDLE_DECAYS * decay {
        percpu::drain(idx);
        return;
    }
    let starved = meta.starved.swap(false, Ordering::Relaxed);
    percpu::shrink(idx, |_, header| {
        let capacity = (header.end - header.begin) as usize;
        (starved && header.aux == 0 && capacity > 0).then(|| capacity - capacity.div_ceil(4))
    });
}

/// Whether a decay step is due at `now`, claiming it if so (one caller per
/// period, thread or slow path).
fn decay_due(now: u64, decay: u64) -> bool {
    let last = LAST_DECAY.load(Ordering::Relaxed);
    decay != 0
        && now.saturating_sub(last) >= decay
        && LAST_DECAY.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Granules just went back to the page heap (an emptied span, a freed
/// medium block): start the thread once enough waits there, and until it
/// runs, run a bounded decay step if one is due. Callers hold no heap lock
/// (a region lock at most, in fallback mode).
pub fn on_heap_free() {
    if THREAD.load(Ordering::Relaxed) == RUNNING {
        return;
    }
    if ENABLED.load(Ordering::Relaxed)
        && THREAD.load(Ordering::Relaxed) == NOT_STARTED
        && pagemap::free_backed_bytes() >= START_FREE_BACKED
    {
        return start();
    }
    let decay = DECAY_NS.load(Ordering::Relaxed);
    if decay != 0 && decay_due(os::now_ns(), decay) {
        pagemap::release_aged(SLOW_PATH_CHUNKS);
    }
}
