//! The main job: one multi-threaded allocation workload run through
//! rseqalloc and through the system allocator (glibc malloc) in the same
//! process, printing throughput, the ratio, and rseqalloc's stats.
//!
//! `cargo run --release -p rseqalloc-bench --example demo [threads] [seconds-per-allocator]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rseqalloc::RseqAlloc;

/// Each thread keeps a working set of blocks of mixed sizes and replaces a
/// pseudo-random one per step; every 64th block goes to the next thread,
/// which frees it (a cross-thread free). Returns operations (alloc + free).
fn worker<A: GlobalAlloc>(
    a: &A,
    id: u64,
    stop: &AtomicBool,
    to_next: mpsc::Sender<usize>,
    from_prev: mpsc::Receiver<usize>,
) -> u64 {
    const SLOTS: usize = 1024;
    let mut slots: [(usize, usize); SLOTS] = [(0, 0); SLOTS];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ id;
    let mut ops = 0u64;
    let layout_of = |size: usize| Layout::from_size_align(size, 8).unwrap();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1024 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let slot = (rng as usize) % SLOTS;
            // Mostly small sizes, like real programs: 8..512 B, sometimes 4 KiB.
            let size = if rng % 16 == 0 { 4096 } else { 8 + ((rng >> 20) as usize % 504) };
            let (old, old_size) = slots[slot];
            if old != 0 {
                if rng % 64 == 1 {
                    let _ = to_next.send(old | (old_size << 48));
                } else {
                    // SAFETY: old was allocated by `a` with this layout.
                    unsafe { a.dealloc(old as *mut u8, layout_of(old_size)) };
                }
                ops += 1;
            }
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(layout_of(size)) };
            assert!(!p.is_null());
            // SAFETY: p has `size` bytes.
            unsafe { p.write_bytes(id as u8, size.min(64)) };
            slots[slot] = (p as usize, size);
            ops += 1;
        }
        while let Ok(packed) = from_prev.try_recv() {
            // SAFETY: allocated by `a` in another worker with this size.
            unsafe { a.dealloc((packed & ((1 << 48) - 1)) as *mut u8, layout_of(packed >> 48)) };
            ops += 1;
        }
    }
    for (p, size) in slots {
        if p != 0 {
            // SAFETY: as above.
            unsafe { a.dealloc(p as *mut u8, layout_of(size)) };
        }
    }
    // Blocks still in flight are freed by whoever receives them; drain ours.
    drop(to_next);
    for packed in from_prev.iter() {
        // SAFETY: as above.
        unsafe { a.dealloc((packed & ((1 << 48) - 1)) as *mut u8, layout_of(packed >> 48)) };
    }
    ops
}

fn run<A: GlobalAlloc + Sync + 'static>(a: &'static A, threads: usize, seconds: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel()).unzip();
    let mut receivers: Vec<Option<mpsc::Receiver<usize>>> = receivers.into_iter().map(Some).collect();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (stop, total) = (stop.clone(), total.clone());
            let to_next = senders[(i + 1) % threads].clone();
            let from_prev = receivers[i].take().unwrap();
            std::thread::spawn(move || {
                total.fetch_add(worker(a, i as u64, &stop, to_next, from_prev), Ordering::Relaxed)
            })
        })
        .collect();
    drop(senders);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

static RSEQ: RseqAlloc = RseqAlloc;
static SYSTEM: System = System;

fn main() {
    let mut args = std::env::args().skip(1);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2 * cpus);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1.0);
    println!("workload: {threads} threads, mixed 8 B..4 KiB blocks, 1/64 freed by another thread");
    // Alternate the two allocators three times and keep the median of each,
    // because this machine is shared and noisy.
    let (mut ours, mut system) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        ours.push(run(&RSEQ, threads, seconds));
        system.push(run(&SYSTEM, threads, seconds));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (ours, system) = (median(&mut ours), median(&mut system));
    println!("rseqalloc: {:>8.1} M ops/s (median of 3)", ours / 1e6);
    println!("glibc:     {:>8.1} M ops/s (median of 3)", system / 1e6);
    println!("ratio:     {:>8.2}x rseqalloc / glibc", ours / system);
    println!("\nrseqalloc stats:\n{}", rseqalloc::stats());
}
