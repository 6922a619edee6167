//! Memory goes back to the OS: several threads allocate 1 GiB in small and
//! medium blocks (touching every page) and free it all. With no call from
//! the program, the process's RSS (/proc/self/statm) must fall back to within
//! a few MiB of its level before the burst within twice the decay period
//! plus a margin. Then, in a child run with the decay turned off
//! (RSEQALLOC_DECAY_MS=0), `rseqalloc::release()` must do it at once.

mod common;

use std::alloc::{alloc, dealloc, Layout};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

const MIB: usize = 1 << 20;
const THREADS: usize = 4;
/// How far above its level before the burst RSS may stay.
const MARGIN: usize = 8 * MIB;
/// Sizes cycled through: small classes up to 32 KiB and medium blocks.
const SIZES: [usize; 8] = [24, 200, 1000, 4000, 12_000, 32_768, 100_000, 250_000];

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|f| f.parse().ok()).expect("statm rss");
    pages * 4096
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// `total` bytes over THREADS threads, every page written, then all freed by
/// the threads that allocated them, which then exit.
fn burst(total: usize) {
    let per_thread = total / THREADS;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut blocks = Vec::new();
                let mut bytes = 0;
                let mut i = t;
                while bytes < per_thread {
                    let layout = Layout::from_size_align(SIZES[i % SIZES.len()], 8).unwrap();
                    // SAFETY: a non-zero size.
                    let p = unsafe { alloc(layout) };
                    assert!(!p.is_null(), "out of memory in the burst");
                    for page in (0..layout.size()).step_by(4096) {
                        // SAFETY: inside the block.
                        unsafe { p.add(page).write(1) };
                    }
                    blocks.push((p as usize, layout));
                    bytes += layout.size();
                    i += 1;
                }
                for (p, layout) in blocks {
                    // SAFETY: allocated above with this layout.
                    unsafe { dealloc(p as *mut u8, layout) };
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().expect("burst thread"));
}

/// Polls RSS until it is within MARGIN of `baseline` or `deadline` passes;
/// returns how long it took.
fn wait_for_rss(baseline: usize, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if rss() <= baseline + MARGIN {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn main() {
    common::check_mode("release");
    let explicit = std::env::args().any(|a| a == "--explicit");
    // Warm up: threads, the arena's first chunk, std's buffers.
    burst(16 * MIB);
    rseqalloc::release();
    let baseline = rss();
    burst(1 << 30);
    // Sampled now: the thread leaves once nothing is left for it to give back.
    let thread_ran = rseqalloc::stats().background_thread;
    let after_free = rss();
    println!(
        "release: RSS {:.1} MiB before the burst, {:.1} MiB just after freeing 1 GiB",
        mib(baseline),
        mib(after_free)
    );
    if explicit {
        let released = rseqalloc::release();
        let now = rss();
        println!("release: release() gave back {:.1} MiB; RSS now {:.1} MiB", mib(released), mib(now));
        assert!(now <= baseline + MARGIN, "RSS stayed at {:.1} MiB after release()", mib(now));
        assert!(rseqalloc::stats().drains > 0, "release() drained no CPU cache");
    } else {
        let decay_ms: u64 = std::env::var("RSEQALLOC_DECAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
        let deadline = Duration::from_millis(2 * decay_ms) + Duration::from_secs(5);
        let took = wait_for_rss(baseline, deadline);
        let s = rseqalloc::stats();
        println!(
            "release: RSS {:.1} MiB after {:?} with no call (decay {decay_ms} ms); {} purges, background thread {} after the burst",
            mib(rss()),
            took.unwrap_or(deadline),
            s.purges,
            if thread_ran { "running" } else { "not running" }
        );
        assert!(took.is_some(), "RSS did not come back within {deadline:?}:\n{s}");
        assert!(thread_ran, "the background thread never started");
        // The same again, released on demand in a process without decay.
        let me = std::env::current_exe().expect("current exe");
        let status = std::process::Command::new(me)
            .arg("--explicit")
            .env("RSEQALLOC_DECAY_MS", "0")
            .status()
            .expect("run the explicit-release child");
        assert!(status.success(), "the explicit-release child failed");
    }
    if !explicit {
        println!("release: 1 passed, 0 failed");
    }
}
