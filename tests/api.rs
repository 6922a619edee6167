//! The public API through `RseqAlloc` called directly (this binary keeps the
//! system allocator as its global one): sizes, alignment, zeroing, realloc
//! across classes and of mapped blocks, out-of-memory, usable size, stats.

use std::alloc::{GlobalAlloc, Layout};

use rseqalloc::{usable_size, RseqAlloc, MAX_SMALL};

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn every_small_size_gets_a_distinct_writable_block_of_its_class() {
    let mut blocks = Vec::new();
    for size in (1..=MAX_SMALL).step_by(7) {
        unsafe {
            let p = RseqAlloc.alloc(layout(size, 8));
            assert!(!p.is_null());
            assert_eq!(p as usize % 16, 0, "default alignment is 16");
            let usable = usable_size(p);
            assert!(usable >= size && usable <= size + 15usize.max(size / 4));
            p.write_bytes(0xC3, usable);
            blocks.push((p, size));
        }
    }
    let mut addrs: Vec<usize> = blocks.iter().map(|&(p, _)| p as usize).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), blocks.len(), "a block was handed out twice");
    for (p, size) in blocks {
        unsafe { RseqAlloc.dealloc(p, layout(size, 8)) };
    }
}

#[test]
fn alignment_up_to_and_beyond_64k_is_honoured() {
    for shift in 0..=21 {
        let align = 1usize << shift;
        for size in [1, 24, 1000, 40_000, 200_000] {
            unsafe {
                let l = layout(size, align);
                let p = RseqAlloc.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(1, size);
                RseqAlloc.dealloc(p, l);
            }
        }
    }
}

#[test]
fn mapped_blocks_grow_by_remap_and_keep_their_contents() {
    unsafe {
        let l = layout(100_000, 16);
        let mut p = RseqAlloc.alloc_zeroed(l);
        assert!(std::slice::from_raw_parts(p, 100_000).iter().all(|&b| b == 0));
        for i in 0..100_000 {
            *p.add(i) = i as u8;
        }
        let mut size = 100_000;
        for new_size in [1 << 20, 5 << 20, 64 << 20, 300_000] {
            p = RseqAlloc.realloc(p, layout(size, 16), new_size);
            assert!(!p.is_null());
            assert!((0..100_000).all(|i| *p.add(i) == i as u8), "contents lost growing to {new_size}");
            size = new_size;
        }
        assert!(usable_size(p) >= size);
        // Down into the size classes and back out.
        p = RseqAlloc.realloc(p, layout(size, 16), 1000);
        assert!((0..1000).all(|i| *p.add(i) == i as u8));
        assert_eq!(usable_size(p), 1024);
        p = RseqAlloc.realloc(p, layout(1000, 16), 1010);
        assert_eq!(usable_size(p), 1024, "a realloc within the class keeps the block");
        p = RseqAlloc.realloc(p, layout(1010, 16), 50_000);
        assert!((0..1000).all(|i| *p.add(i) == i as u8));
        RseqAlloc.dealloc(p, layout(50_000, 16));
    }
}

#[test]
fn out_of_memory_is_null_not_abort() {
    unsafe {
        assert!(RseqAlloc.alloc(layout(isize::MAX as usize - 4096, 1)).is_null());
        assert!(RseqAlloc.alloc_zeroed(layout(1 << 62, 4096)).is_null());
        let p = RseqAlloc.alloc(layout(64, 8));
        assert!(RseqAlloc.realloc(p, layout(64, 8), isize::MAX as usize - 8192).is_null());
        // A failed realloc leaves the old block alive.
        p.write_bytes(7, 64);
        RseqAlloc.dealloc(p, layout(64, 8));
    }
}

#[test]
fn stats_see_the_traffic() {
    let before = rseqalloc::stats();
    let l = layout(48, 8);
    unsafe {
        let ptrs: Vec<*mut u8> = (0..10_000).map(|_| RseqAlloc.alloc(l)).collect();
        for p in ptrs {
            RseqAlloc.dealloc(p, l);
        }
    }
    let after = rseqalloc::stats();
    let ops = |s: &rseqalloc::Stats| s.totals.alloc_hits + s.totals.alloc_misses;
    if after.mode == rseqalloc::Mode::Fallback {
        // A busy CPU lock sends an allocation straight to the middle end.
        assert!(ops(&after) + after.batches_out >= ops(&before) + before.batches_out + 10_000);
    } else {
        assert!(ops(&after) >= ops(&before) + 10_000);
    }
    assert!(after.caches_in_use >= 1 && after.caches_in_use <= after.caches);
    assert!(after.bytes_mapped >= after.bytes_in_use);
    assert_eq!(after.restarts(), after.restarts_by_section.iter().sum::<u64>());
    assert!(!format!("{after}").is_empty());
}
