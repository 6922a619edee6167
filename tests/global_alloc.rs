//! RseqAlloc as the global allocator under real std workloads: collections,
//! strings, channels passing boxes between threads, many short threads, a
//! Vec grown by realloc to tens of MiB, zeroed and over-aligned allocations.

mod common;

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

/// `RSEQALLOC_TEST_QUICK=1` (used under valgrind) divides the work by 10.
fn scale(n: u64) -> u64 {
    if std::env::var_os("RSEQALLOC_TEST_QUICK").is_some() {
        n / 10
    } else {
        n
    }
}

fn collections() {
    let n = scale(200_000) as u32;
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    let mut tree = BTreeMap::new();
    let mut queue = VecDeque::new();
    for i in 0..n {
        map.entry(format!("key-{}", i % 5000)).or_default().push(i);
        tree.insert(i.wrapping_mul(2_654_435_761), i.to_string());
        queue.push_back(vec![i as u8; (i % 300) as usize]);
        if queue.len() > 1000 {
            let v = queue.pop_front().unwrap();
            assert!(v.iter().all(|&b| b == v.first().copied().unwrap_or(0)));
        }
    }
    assert_eq!(map.len(), 5000.min(n as usize));
    assert_eq!(map.values().map(Vec::len).sum::<usize>(), n as usize);
    assert_eq!(tree.len(), n as usize);
    let total: u64 = tree.values().map(|s| s.parse::<u64>().unwrap()).sum();
    assert_eq!(total, (n as u64 - 1) * n as u64 / 2);
}

fn channels() {
    let per_producer = scale(50_000);
    let (tx, rx) = mpsc::channel::<Box<[u64]>>();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..per_producer {
                    let len = (i % 97 + 1) as usize;
                    tx.send(vec![p * 1_000_000 + i; len].into_boxed_slice()).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut count = 0u64;
        for b in rx {
            let v = b[0];
            assert!(b.iter().all(|&x| x == v), "a box was corrupted in flight");
            assert_eq!(b.len() as u64, (v % 1_000_000) % 97 + 1);
            count += 1;
        }
        count
    });
    producers.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(consumer.join().unwrap(), 4 * per_producer);
}

fn short_threads() {
    for round in 0..scale(50) {
        let handles: Vec<_> = (0..8)
            .map(|t| std::thread::spawn(move || (0..1000).map(|i| format!("{round}-{t}-{i}")).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().len(), 1000);
        }
    }
}

fn big_vec_by_realloc() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..scale(48 << 20) / 8 {
        v.push(i);
    }
    assert!(v.capacity() as u64 * 8 >= scale(48 << 20));
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    v.truncate(1000);
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
}

fn zeroed_after_dirty_reuse() {
    for size in [16usize, 100, 4096, 30_000, 100_000, 3 << 20] {
        let dirty = vec![0xA5u8; size];
        drop(dirty);
        let clean = vec![0u8; size];
        assert!(clean.iter().all(|&b| b == 0), "alloc_zeroed of {size} bytes was not zero");
    }
}

fn over_aligned() {
    for shift in 4..=20 {
        let align = 1usize << shift;
        for size in [1usize, align / 2 + 1, align, 3 * align + 5] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(0x5A, size);
                let z = alloc_zeroed(layout);
                assert_eq!(z as usize % align, 0);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                let q = realloc(p, layout, size * 2 + 1);
                assert_eq!(q as usize % align, 0, "realloc lost alignment {align}");
                assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0x5A));
                dealloc(q, Layout::from_size_align(size * 2 + 1, align).unwrap());
                dealloc(z, layout);
            }
        }
    }
}

fn main() {
    common::check_mode("global_alloc");
    let checks: [(&str, fn()); 6] = [
        ("collections", collections),
        ("channels", channels),
        ("short_threads", short_threads),
        ("big_vec_by_realloc", big_vec_by_realloc),
        ("zeroed_after_dirty_reuse", zeroed_after_dirty_reuse),
        ("over_aligned", over_aligned),
    ];
    for (name, check) in checks {
        check();
        println!("global_alloc: {name} ok");
    }
    let stats = rseqalloc::stats();
    assert!(stats.totals.alloc_hits + stats.totals.alloc_misses > 0);
    if stats.mode != rseqalloc::Mode::Fallback {
        assert!(stats.alloc_hit_rate() > 0.5, "the per-CPU caches served too little:\n{stats}");
    }
    println!("{stats}");
    println!("global_alloc: {} passed, 0 failed", checks.len());
}
