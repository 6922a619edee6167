//! The comparison of the mainline and region modes: the cost of a
//! malloc+free pair and the restart counts, in whichever mode the allocator
//! runs (region mode on a kernel with restart regions, or
//! `RSEQALLOC_MODE=mainline`).
//! kernel-patch/run-qemu-tests.sh runs it in both modes in the same boot and
//! puts the ratio in its log; under QEMU TCG only such ratios mean anything.
//!
//! `cargo run --release -p rseqalloc-bench --example mode_pair [pairs-per-run]` prints one
//! `MODEBENCH` line:
//! * `pair_ns`: median over 9 runs of one thread's 32-byte alloc+dealloc
//!   pairs through `__rust_alloc`/`__rust_dealloc` (the cache always hits);
//! * `threads`, `contended_pair_ns`, `restarts`, `signals`: 2 threads per
//!   CPU doing mixed-size pairs for 2 s under a 50 µs SIGALRM; nanoseconds
//!   per pair per thread, and the restarts the abort handlers counted.

// The tests' helpers (SIGALRM timer), shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// `n` pairs of `size`-byte blocks; returns nanoseconds per pair.
fn pairs(n: u64, size: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: non-zero size; freed with its layout.
        unsafe { dealloc(black_box(alloc(black_box(layout))), layout) };
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    pairs(10_000, 32); // bring up, fill the cache

    let runs: Vec<f64> = (0..9).map(|_| pairs(n, 32)).collect();
    let pair_ns = median(runs.clone());

    common::alarm_every(50, on_alarm);
    let restarts_before = rseqalloc::stats().restarts();
    let threads = 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut done, start) = (0u64, Instant::now());
                while !stop.load(Ordering::Relaxed) {
                    for size in [16, 48, 200, 1024] {
                        pairs(250, size + i);
                    }
                    done += 1000;
                }
                start.elapsed().as_nanos() as f64 / done as f64
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let contended = median(workers.into_iter().map(|w| w.join().unwrap()).collect());
    common::stop_alarm();
    let stats = rseqalloc::stats();

    let runs: Vec<String> = runs.iter().map(|r| format!("{r:.2}")).collect();
    println!("mode_pair: single-thread runs of {n} pairs, ns/pair: {}", runs.join(" "));
    println!(
        "MODEBENCH mode={:?} pair_ns={pair_ns:.2} runs=9 threads={threads} contended_pair_ns={contended:.2} \
         restarts={} signals={} restarts_by_section={:?}",
        stats.mode,
        stats.restarts() - restarts_before,
        SIGNALS.load(Ordering::Relaxed),
        stats.restarts_by_section,
    );
}
