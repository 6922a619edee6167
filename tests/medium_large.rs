//! Blocks above the size classes through `RseqAlloc` called directly (this
//! binary keeps the system allocator as its global one, so only these tests
//! move the counters they read): medium runs (32 KiB to 1 MiB) and large
//! mappings with their cache (`large_reuse.rs` has the cache's reuse
//! policy and bound). The tests share one lock because they read
//! process-wide counters and rely on first-fit placement.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

use rseqalloc::{usable_size, RseqAlloc, MAX_SMALL};

const GRANULE: usize = 64 * 1024;
const MAX_MEDIUM: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    // SAFETY: callers pass a live block of at least len bytes.
    unsafe { std::slice::from_raw_parts_mut(p, len) }.iter_mut().enumerate().for_each(|(i, b)| *b = seed ^ i as u8);
}

fn holds(p: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: as in fill.
    unsafe { std::slice::from_raw_parts(p, len) }.iter().enumerate().all(|(i, &b)| b == seed ^ i as u8)
}

fn zero(p: *const u8, len: usize) -> bool {
    // SAFETY: as in fill.
    unsafe { std::slice::from_raw_parts(p, len) }.iter().all(|&b| b == 0)
}

#[test]
fn medium_sizes_and_alignments_get_whole_granules() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = rseqalloc::stats().medium_bytes;
    for size in [MAX_SMALL + 1, 40_000, GRANULE, GRANULE + 1, 100_000, 300_000, 700_000, MAX_MEDIUM] {
        for align in [8, 4096, GRANULE, 256 * 1024, MAX_MEDIUM] {
            let l = layout(size, align);
            unsafe {
                let p = RseqAlloc.alloc(l);
                assert!(!p.is_null(), "{l:?}");
                assert_eq!(p as usize % align.max(GRANULE), 0, "a run starts a granule, aligned as asked: {l:?}");
                assert_eq!(usable_size(p), size.div_ceil(GRANULE) * GRANULE, "{l:?}");
                assert_eq!(rseqalloc::stats().medium_bytes, before + usable_size(p) as u64);
                fill(p, usable_size(p), size as u8);
                assert!(holds(p, usable_size(p), size as u8));
                RseqAlloc.dealloc(p, l);
            }
            assert_eq!(rseqalloc::stats().medium_bytes, before, "freeing {l:?} gave its granules back");
        }
    }
    // Small sizes aligned beyond every class get a run of one granule.
    unsafe {
        let l = layout(100, 2 * GRANULE);
        let p = RseqAlloc.alloc(l);
        assert_eq!(p as usize % (2 * GRANULE), 0);
        assert_eq!(usable_size(p), GRANULE);
        RseqAlloc.dealloc(p, l);
    }
}

#[test]
fn freed_runs_are_reused_and_nothing_leaks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = layout(200_000, 16);
    unsafe {
        let p = RseqAlloc.alloc(l);
        RseqAlloc.dealloc(p, l);
        assert_eq!(RseqAlloc.alloc(l), p, "first fit hands the freed run out again");
        RseqAlloc.dealloc(p, l);
    }
    // The same random walk twice: both end with every run back in the page
    // heap, so the second, placing its runs first-fit exactly as the first
    // did, must not commit more arena. (Its reallocs only shrink: a block
    // that grows is placed by another rule, which the free chunks the first
    // walk committed would sway.)
    let walk = || {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut live: Vec<(*mut u8, Layout)> = Vec::new();
        for step in 0..4000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let size = MAX_SMALL + 1 + (rng % (MAX_MEDIUM - MAX_SMALL) as u64) as usize;
            unsafe {
                if live.len() < 40 && step % 3 != 2 {
                    let l = layout(size, 16);
                    let p = RseqAlloc.alloc(l);
                    assert!(!p.is_null());
                    *p = step as u8;
                    live.push((p, l));
                } else if let Some((p, l)) = live.pop() {
                    if step % 2 == 0 {
                        let (first, size) = (*p, size.min(l.size()));
                        let q = RseqAlloc.realloc(p, l, size);
                        assert_eq!(q, p, "a medium block shrinks in place");
                        assert_eq!(*q, first, "realloc kept the first byte");
                        live.insert(0, (q, layout(size, 16)));
                    } else {
                        RseqAlloc.dealloc(p, l);
                    }
                }
            }
        }
        for (p, l) in live {
            unsafe { RseqAlloc.dealloc(p, l) };
        }
    };
    let before = rseqalloc::stats();
    walk();
    let once = rseqalloc::stats();
    walk();
    let twice = rseqalloc::stats();
    assert_eq!(once.medium_bytes, before.medium_bytes, "runs leaked by the walk");
    assert_eq!(twice.medium_bytes, before.medium_bytes, "runs leaked by the second walk");
    assert_eq!(twice.arena_bytes, once.arena_bytes, "the same walk again needed more arena: freed runs were lost");
}

#[test]
fn medium_realloc_grows_and_shrinks_in_place_or_moves_intact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    unsafe {
        let p = RseqAlloc.alloc(layout(MAX_MEDIUM, 16));
        fill(p, 40_000, 7);
        let q = RseqAlloc.realloc(p, layout(MAX_MEDIUM, 16), 40_000);
        assert_eq!(q, p, "a shrink stays in place");
        assert_eq!(usable_size(p), GRANULE);
        let q = RseqAlloc.realloc(p, layout(40_000, 16), 900_000);
        assert_eq!(q, p, "the tail just freed is free: the growth stays in place");
        assert_eq!(usable_size(p), 14 * GRANULE);
        assert!(holds(p, 40_000, 7));
        fill(p, 900_000, 9);
        // Beyond the medium limit: a mapping, contents kept.
        let big = RseqAlloc.realloc(p, layout(900_000, 16), 3 << 20);
        assert!(!big.is_null() && big != p);
        assert!(holds(big, 900_000, 9));
        // Back down: the mapping shrinks (mremap), into the classes it moves.
        let mid = RseqAlloc.realloc(big, layout(3 << 20, 16), 200_000);
        assert!(holds(mid, 200_000, 9));
        let small = RseqAlloc.realloc(mid, layout(200_000, 16), 1000);
        assert!(holds(small, 1000, 9));
        assert_eq!(usable_size(small), 1024);
        // Small into medium: a move.
        let m = RseqAlloc.realloc(small, layout(1000, 16), 100_000);
        assert!(holds(m, 1000, 9));
        assert_eq!(usable_size(m), 2 * GRANULE);
        RseqAlloc.dealloc(m, layout(100_000, 16));
    }
}

#[test]
fn a_block_growing_past_the_classes_is_placed_to_double_in_place() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    unsafe {
        // Make sure some chunk has a whole MAX_MEDIUM stretch free.
        let room = RseqAlloc.alloc(layout(MAX_MEDIUM, 16));
        RseqAlloc.dealloc(room, layout(MAX_MEDIUM, 16));
        let (mut p, mut size) = (RseqAlloc.alloc(layout(20_000, 8)), 20_000);
        fill(p, size, 3);
        p = RseqAlloc.realloc(p, layout(size, 8), GRANULE);
        size = GRANULE;
        let start = p;
        for new in [2 * GRANULE, 4 * GRANULE, 8 * GRANULE, MAX_MEDIUM] {
            p = RseqAlloc.realloc(p, layout(size, 8), new);
            assert_eq!(p, start, "doubling to {new} moved the block");
            size = new;
        }
        assert!(holds(p, 20_000, 3));
        RseqAlloc.dealloc(p, layout(size, 8));
    }
}

#[test]
fn zeroed_medium_blocks_read_zero_after_dirty_reuse() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Dirty granules are cleared with stores at every size.
    for size in [40_000, 100_000, 300_000, 600_000, MAX_MEDIUM] {
        let l = layout(size, 16);
        unsafe {
            let p = RseqAlloc.alloc(l);
            p.write_bytes(0xAB, usable_size(p));
            RseqAlloc.dealloc(p, l);
            let z = RseqAlloc.alloc_zeroed(l);
            assert_eq!(z, p, "the dirty run is reused");
            assert!(zero(z, size), "alloc_zeroed({size}) on a dirty run");
            z.write_bytes(0xCD, size);
            RseqAlloc.dealloc(z, l);
        }
    }
    // Released granules read zero without being written.
    rseqalloc::release();
    unsafe {
        let l = layout(300_000, 16);
        let z = RseqAlloc.alloc_zeroed(l);
        assert!(zero(z, 300_000));
        RseqAlloc.dealloc(z, l);
    }
}

#[test]
fn large_mappings_are_cached_reused_and_trimmed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    rseqalloc::release();
    assert_eq!(rseqalloc::stats().large_cached_bytes, 0, "release() empties the cache");
    let l = layout(4 << 20, 16);
    unsafe {
        let p = RseqAlloc.alloc(l);
        p.write_bytes(0xEE, 4 << 20);
        let mapped = rseqalloc::stats().bytes_mapped;
        RseqAlloc.dealloc(p, l);
        let s = rseqalloc::stats();
        assert!(s.large_cached_bytes >= 4 << 20, "the freed mapping is cached");
        assert_eq!(s.bytes_mapped, mapped, "a cached mapping stays mapped");
        let q = RseqAlloc.alloc(l);
        assert_eq!(q, p, "the cached mapping is handed out again");
        assert_eq!(rseqalloc::stats().large_cached_bytes, 0);
        RseqAlloc.dealloc(q, l);
        let z = RseqAlloc.alloc_zeroed(l);
        assert_eq!(z, p);
        assert!(zero(z, 4 << 20), "alloc_zeroed from the cache");
        RseqAlloc.dealloc(z, l);
        // A smaller block is carved from the cached mapping; the rest stays
        // cached and takes the block back when it is freed.
        let half = RseqAlloc.alloc(layout(2 << 20, 16));
        assert_eq!(half, p);
        assert!(rseqalloc::stats().large_cached_bytes >= (2 << 20) - 4096);
        RseqAlloc.dealloc(half, layout(2 << 20, 16));
        let before_trim = rseqalloc::stats();
        assert!(before_trim.large_cached_bytes >= 4 << 20);
        let released = rseqalloc::release();
        assert!(released as u64 >= before_trim.large_cached_bytes, "release() reports the cache it unmapped");
        let after = rseqalloc::stats();
        assert_eq!(after.large_cached_bytes, 0);
        // bytes_mapped also drops by the arena pages release() gave back.
        let arena_released = after.bytes_released - before_trim.bytes_released;
        assert_eq!(after.bytes_mapped, before_trim.bytes_mapped - before_trim.large_cached_bytes - arena_released);
    }
}
