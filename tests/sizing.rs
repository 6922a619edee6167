//! Container-like sizing: with more threads than allowed CPUs (and, when
//! tests/run.sh runs it under `taskset -c 1`, a single sparse CPU id), the
//! caches in use follow the CPUs the process may use or its concurrency,
//! never the host's CPU count, and every cache keeps to its byte budget.

mod common;

use std::alloc::{alloc, dealloc, Layout};

use rseqalloc::CacheIndex;

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that sched_getaffinity fills.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("possible");
    text.trim().split([',', '-']).filter_map(|s| s.parse::<usize>().ok()).max().unwrap_or(0) + 1
}

/// Steps of `churn` over all threads, beyond 20 threads: a 64-vCPU QEMU
/// guest runs 130 threads on the host's few cores.
const TOTAL_STEPS: usize = 4_000_000;

fn churn(seed: u64, steps: usize) {
    let mut rng = common::Rng(seed | 1);
    let mut live: Vec<(usize, Layout)> = Vec::new();
    for _ in 0..steps {
        if live.len() < 500 && rng.below(2) == 0 {
            let layout = Layout::from_size_align(1 + rng.below(8000) as usize, 8).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            live.push((p as usize, layout));
        } else if let Some((p, layout)) = live.pop() {
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(p as *mut u8, layout) };
        }
    }
    for (p, layout) in live {
        // SAFETY: as above.
        unsafe { dealloc(p as *mut u8, layout) };
    }
}

fn main() {
    common::check_mode("sizing");
    let allowed = allowed_cpus();
    let threads = 2 * allowed.len() + 2;
    let steps = (TOTAL_STEPS / threads).min(200_000);
    let workers: Vec<_> = (0..threads).map(|t| std::thread::spawn(move || churn(t as u64 * 7919, steps))).collect();
    workers.into_iter().for_each(|w| w.join().unwrap());

    let s = rseqalloc::stats();
    let budget: u64 = std::env::var("RSEQALLOC_CPU_CACHE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(2 << 20);
    let indices: Vec<usize> = s.per_cpu().iter().map(|c| c.index).collect();
    println!(
        "sizing: {} threads on CPUs {allowed:?}; {} caches possible, {} in use {indices:?} (by {:?})",
        threads, s.caches, s.caches_in_use, s.cache_index
    );
    assert_eq!(s.caches, possible_cpus(), "one cache per possible CPU id");
    assert!(s.caches_in_use >= 1, "no cache was used");
    assert!(s.caches_in_use <= allowed.len(), "{} caches in use for {} allowed CPUs", s.caches_in_use, allowed.len());
    match s.cache_index {
        // CPU ids: only the CPUs the process may run on.
        CacheIndex::CpuId => assert!(indices.iter().all(|i| allowed.contains(i)), "a cache of a CPU we cannot use"),
        // Concurrency ids: dense from 0, below the allowed CPU count.
        CacheIndex::MmCid => assert!(indices.iter().all(|&i| i < allowed.len()), "an mm_cid past the concurrency"),
    }
    for cpu in s.per_cpu() {
        assert!(
            cpu.capacity_bytes <= budget,
            "cache {} holds {} bytes of capacity > {budget}",
            cpu.index,
            cpu.capacity_bytes
        );
    }
    println!("sizing: 1 passed, 0 failed");
}
