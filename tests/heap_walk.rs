//! Heap random walk: many threads allocate, zero-allocate, reallocate and
//! free blocks of random sizes and alignments, filling each block with a
//! pattern derived from its identity and checking it before every realloc
//! and free. Blocks move between threads through a shared pool, and threads
//! are created and exit while the walk runs.

mod common;

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::Rng;

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

const THREADS_PER_ROUND: usize = 6;
const LIVE: usize = 256;

struct Block {
    ptr: *mut u8,
    layout: Layout,
    seed: u8,
}

// SAFETY: a Block is an owned allocation; whoever holds it may free it.
unsafe impl Send for Block {}

impl Block {
    fn fill(&self) {
        // SAFETY: ptr has layout.size() bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = self.seed.wrapping_add(i as u8);
        }
    }

    fn check(&self, upto: usize) {
        // SAFETY: as in fill.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, upto) };
        if let Some(i) = bytes.iter().enumerate().position(|(i, &b)| b != self.seed.wrapping_add(i as u8)) {
            panic!("block {:p} ({} bytes) corrupted at byte {i}", self.ptr, self.layout.size());
        }
    }
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(100) {
        0..=69 => 1 + rng.below(256),
        70..=89 => 1 + rng.below(4096),
        90..=97 => 1 + rng.below(32 * 1024),
        _ => 32 * 1024 + rng.below(1 << 20),
    } as usize;
    let align = match rng.below(20) {
        0 => 64,
        1 => 4096,
        2 => 1 << (5 + rng.below(12)),
        _ => 8,
    };
    Layout::from_size_align(size, align).unwrap()
}

/// Rounds of threads and steps per thread; `RSEQALLOC_TEST_QUICK=1` (used
/// under valgrind) shrinks the walk twentyfold.
fn scale() -> (usize, usize) {
    if std::env::var_os("RSEQALLOC_TEST_QUICK").is_some() {
        (3, 8_000)
    } else {
        (12, 40_000)
    }
}

fn walk(id: u64, steps: usize, pool: &Mutex<Vec<Block>>, checked: &AtomicU64) {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1 ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut live: Vec<Block> = Vec::with_capacity(LIVE);
    let mut checks = 0u64;
    for _ in 0..steps {
        match rng.below(10) {
            0..=3 if live.len() < LIVE => {
                let layout = random_layout(&mut rng);
                let zeroed = rng.below(4) == 0;
                // SAFETY: non-zero size.
                let ptr = unsafe {
                    if zeroed {
                        alloc_zeroed(layout)
                    } else {
                        alloc(layout)
                    }
                };
                assert!(!ptr.is_null(), "out of memory for {layout:?}");
                assert_eq!(ptr as usize % layout.align(), 0, "misaligned {layout:?}");
                if zeroed {
                    // SAFETY: ptr has layout.size() bytes.
                    assert!(
                        unsafe { std::slice::from_raw_parts(ptr, layout.size()) }.iter().all(|&b| b == 0),
                        "alloc_zeroed not zero"
                    );
                }
                let block = Block { ptr, layout, seed: rng.next() as u8 };
                block.fill();
                live.push(block);
            }
            4 | 5 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let b = &mut live[i];
                b.check(b.layout.size());
                let new_size = match rng.below(3) {
                    0 => (b.layout.size() / 2).max(1),
                    1 => b.layout.size() + 1 + rng.below(512) as usize,
                    _ => 1 + rng.below(64 * 1024) as usize,
                };
                // SAFETY: b.ptr was allocated with b.layout; new_size > 0.
                let ptr = unsafe { realloc(b.ptr, b.layout, new_size) };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % b.layout.align(), 0, "realloc lost alignment");
                let kept = b.layout.size().min(new_size);
                b.ptr = ptr;
                b.check(kept);
                b.layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                b.fill();
                checks += 1;
            }
            6 if !live.is_empty() => {
                // Hand a block to whichever thread takes it next.
                let b = live.swap_remove(rng.below(live.len() as u64) as usize);
                pool.lock().unwrap().push(b);
            }
            7 => {
                if let Some(b) = pool.lock().unwrap().pop() {
                    live.push(b);
                }
            }
            _ if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len() as u64) as usize);
                b.check(b.layout.size());
                // SAFETY: allocated with this layout, now given up.
                unsafe { dealloc(b.ptr, b.layout) };
                checks += 1;
            }
            _ => {}
        }
    }
    // Leave some blocks behind for threads of later rounds.
    let keep = live.len() / 4;
    pool.lock().unwrap().extend(live.drain(..keep));
    for b in live {
        b.check(b.layout.size());
        // SAFETY: as above.
        unsafe { dealloc(b.ptr, b.layout) };
        checks += 1;
    }
    checked.fetch_add(checks, Ordering::Relaxed);
}

fn main() {
    common::check_mode("heap_walk");
    let baseline = rseqalloc::stats().bytes_in_use;
    let pool = Arc::new(Mutex::new(Vec::<Block>::new()));
    let checked = Arc::new(AtomicU64::new(0));
    // Overlapping generations: each round starts new threads while the
    // previous round's are still running, then joins the previous round.
    let (rounds, steps) = scale();
    let mut previous: Vec<std::thread::JoinHandle<()>> = Vec::new();
    for round in 0..rounds {
        let current: Vec<_> = (0..THREADS_PER_ROUND)
            .map(|t| {
                let (pool, checked) = (pool.clone(), checked.clone());
                std::thread::spawn(move || walk((round * THREADS_PER_ROUND + t) as u64, steps, &pool, &checked))
            })
            .collect();
        for h in previous.drain(..) {
            h.join().expect("walker panicked");
        }
        previous = current;
    }
    for h in previous {
        h.join().expect("walker panicked");
    }
    let leftovers = std::mem::take(&mut *pool.lock().unwrap());
    for b in leftovers {
        b.check(b.layout.size());
        // SAFETY: as in walk.
        unsafe { dealloc(b.ptr, b.layout) };
    }
    let stats = rseqalloc::stats();
    println!("{stats}");
    // Everything the walk allocated is back: what is still in use is the
    // test's own bookkeeping (thread handles, the pool), well under 1 MiB.
    assert!(stats.bytes_in_use <= baseline + (1 << 20), "{} bytes still in use after the walk", stats.bytes_in_use);
    println!("heap_walk: {} blocks checked by {} threads", checked.load(Ordering::Relaxed), rounds * THREADS_PER_ROUND);
    println!("heap_walk: 1 passed, 0 failed");
}
