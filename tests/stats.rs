//! What `stats()` adds for observability: the process's resident and peak
//! bytes, the per-class depth of the caches (consistent with the per-CPU
//! bytes), and `bytes_mapped` falling by what `release()` gave back.

use std::alloc::{GlobalAlloc, Layout};

use rseqalloc::RseqAlloc;

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

const MIB: usize = 1 << 20;

#[test]
fn resident_peak_classes_and_release() {
    let layout = Layout::from_size_align(4096, 8).unwrap();
    // 64 MiB of 4 KiB blocks, each page touched, then all freed.
    // SAFETY (all blocks below): non-zero size; each freed once with its layout.
    let blocks: Vec<usize> = (0..64 * MIB / 4096)
        .map(|_| unsafe {
            let p = RseqAlloc.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, 4096);
            p as usize
        })
        .collect();
    let held = rseqalloc::stats();
    assert!(held.resident_bytes >= 64 * MIB as u64, "resident {} while 64 MiB are touched", held.resident_bytes);
    assert!(held.peak_resident_bytes >= held.resident_bytes / 2 && held.peak_resident_bytes >= 64 * MIB as u64);
    blocks.iter().for_each(|&p| unsafe { RseqAlloc.dealloc(p as *mut u8, layout) });

    let freed = rseqalloc::stats();
    let class = freed.per_class().iter().find(|c| c.size == 4096).expect("a 4 KiB class");
    assert!(class.cpu_cached + class.transfer_cached > 0, "freed 4 KiB blocks wait in some cache: {class:?}");
    let by_class: u64 = freed.per_class().iter().map(|c| c.cpu_cached * c.size).sum();
    assert_eq!(by_class, freed.totals.cached_bytes, "per-class depths and per-CPU bytes disagree");
    assert!(freed.per_class().windows(2).all(|w| w[0].size < w[1].size), "classes smallest first");

    let released = rseqalloc::release() as u64;
    let after = rseqalloc::stats();
    println!(
        "release() gave back {} MiB: bytes_mapped {} -> {} MiB, arena high-water mark {} MiB",
        released / MIB as u64,
        freed.bytes_mapped / MIB as u64,
        after.bytes_mapped / MIB as u64,
        after.arena_bytes / MIB as u64
    );
    assert!(released >= 32 * MIB as u64, "release() returned only {released} bytes");
    assert!(
        after.bytes_mapped + released <= freed.bytes_mapped,
        "bytes_mapped did not fall by what release() returned"
    );
    assert!(after.arena_bytes >= freed.arena_bytes, "the high-water mark never falls");
}

/// With the `serde` feature, `Stats` serializes to the fields of the JSON
/// report: numbers, the mode's name, and the per-CPU and per-class lists.
#[cfg(feature = "serde")]
#[test]
fn serde_gives_the_report_fields() {
    let v = vec![1u8; 100];
    let stats = rseqalloc::stats();
    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
    assert_eq!(json["mode"], format!("{:?}", stats.mode));
    assert_eq!(json["bytes_mapped"].as_u64(), Some(stats.bytes_mapped));
    assert_eq!(json["restarts_by_section"].as_array().unwrap().len(), 4);
    let classes = json["per_class"].as_array().unwrap();
    assert_eq!(classes.len(), stats.per_class().len());
    assert_eq!(classes[0]["size"].as_u64(), Some(16));
    let cpus = json["per_cpu"].as_array().unwrap();
    assert_eq!(cpus.len(), stats.per_cpu().len());
    assert!(cpus.iter().all(|c| c["alloc_hits"].is_u64() && c["index"].is_u64()));
    drop(v);
}
