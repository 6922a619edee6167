//! The allocation and free fast paths exactly as a Rust program gets them:
//! `RseqAlloc` is this program's global allocator, so `__rust_alloc` and
//! `__rust_dealloc` are the entry points whose machine code
//! `benches/fastpath-instructions.sh` reads and counts.
//! `cargo run --release -p rseqalloc-bench --example fastpath [size]` times a pair.

use std::alloc::{alloc, dealloc, Layout};

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

fn main() {
    let size = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(32usize).max(1);
    let layout = Layout::from_size_align(size, 8).unwrap();
    let n = 100_000_000u64;
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: non-zero size; freed with its layout.
        unsafe {
            let p = alloc(std::hint::black_box(layout));
            dealloc(std::hint::black_box(p), layout);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{size}-byte alloc+dealloc pair through __rust_alloc: {ns:.2} ns");
    println!("{}", rseqalloc::stats());
}
