//! Criterion micro-benchmark: one malloc+free pair per size class, through
//! `RseqAlloc` and the system allocator (glibc) in the same run, plus the
//! share of those operations that left the fast path (from `stats()`).
//!
//! `cargo bench -p rseqalloc-bench --features micro --bench pair`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rseqalloc::RseqAlloc;

const SIZES: [usize; 8] = [16, 64, 256, 1024, 4096, 8192, 16384, 32768];

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: non-zero size; the block is freed with its layout.
    unsafe {
        let p = a.alloc(black_box(layout));
        a.dealloc(black_box(p), layout);
    }
}

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("malloc+free pair");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        group.bench_with_input(BenchmarkId::new("rseqalloc", size), &layout, |b, &l| b.iter(|| pair(&RseqAlloc, l)));
        group.bench_with_input(BenchmarkId::new("glibc", size), &layout, |b, &l| b.iter(|| pair(&System, l)));
    }
    group.finish();
    let s = rseqalloc::stats();
    let ops = s.totals.alloc_hits + s.totals.alloc_misses;
    println!(
        "rseqalloc: {} allocations, {:.4}% took the slow path, {} restarts, mode {:?}",
        ops,
        100.0 * s.totals.alloc_misses as f64 / ops.max(1) as f64,
        s.restarts(),
        s.mode
    );
}

criterion_group!(benches, pairs);
criterion_main!(benches);
