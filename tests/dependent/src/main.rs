//! `rseqalloc-dependent per-cpu|forward`: allocates through `RseqAlloc` as
//! a user's program would and checks the mode `stats()` reports: the
//! per-CPU path on x86-64 glibc Linux, `Mode::Forward` elsewhere. Prints
//! the mode; exits non-zero (by a failed assertion) on anything else.

use std::collections::BTreeMap;

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

fn main() {
    let want = std::env::args().nth(1).expect("usage: rseqalloc-dependent per-cpu|forward");
    let mut map = BTreeMap::new();
    for i in 0..100_000u64 {
        map.insert(i, vec![i as u8; (i % 300) as usize]);
    }
    let threads: Vec<_> = (0..4).map(|t| std::thread::spawn(move || (0..10_000).map(|i| format!("{t}-{i}")).count())).collect();
    let made: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(made, 40_000);
    let big = vec![1u8; 3 << 20];
    // SAFETY: `big` is a live block from the global allocator.
    let usable = unsafe { rseqalloc::usable_size(big.as_ptr()) };
    assert!(usable == 0 || usable >= big.len(), "usable_size {usable} below the size asked for");
    let stats = rseqalloc::stats();
    println!("mode {:?}, {} entries, usable_size {usable}", stats.mode, map.len());
    match want.as_str() {
        "forward" => {
            assert_eq!(stats.mode, rseqalloc::Mode::Forward);
            assert_eq!(stats.totals.alloc_hits, 0);
            assert_eq!(rseqalloc::release(), 0);
        }
        "per-cpu" => {
            assert!(!matches!(stats.mode, rseqalloc::Mode::Forward | rseqalloc::Mode::Uninit), "{:?}", stats.mode);
            assert!(stats.totals.alloc_hits > 100_000);
            assert!(usable >= big.len());
        }
        other => panic!("unknown expectation {other}"),
    }
}
