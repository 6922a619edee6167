//! Freed big blocks are reused dirty, and that stays safe and bounded:
//! `alloc_zeroed` reads zero however its memory was used before (dirty
//! medium runs, cached mappings split, merged and grown), a steady stream of
//! 5–25 MiB blocks is served from freed memory without faulting its pages in
//! again, blocks carved from merged pieces resize intact, and the cache of
//! freed mappings stays within its bound and goes back to the OS at
//! `release()` and on the decay, even without the background thread.
//!
//! `RseqAlloc` is called directly (the binary keeps the system allocator as
//! its global one), so only these checks move the counters they read. The
//! checks run in order in one process: the cache's bound follows the largest
//! mapping freed so far, which only grows. The decay check runs in a child
//! with its own options.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

use common::Rng;
use rseqalloc::{usable_size, RseqAlloc};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// Writes `byte` over the whole usable size of a live block.
fn dirty(p: *mut u8, byte: u8) {
    // SAFETY: callers pass a live block of RseqAlloc; its usable size is ours.
    unsafe { p.write_bytes(byte, usable_size(p)) };
}

fn all(p: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY: callers pass a live block of at least len bytes.
    unsafe { std::slice::from_raw_parts(p, len) }.iter().all(|&b| b == byte)
}

fn minor_faults() -> i64 {
    // SAFETY: getrusage fills the local struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt
    }
}

fn alloc(size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { RseqAlloc.alloc(layout(size)) };
    assert!(!p.is_null(), "out of memory for {size} bytes");
    p
}

fn alloc_zeroed(size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { RseqAlloc.alloc_zeroed(layout(size)) };
    assert!(!p.is_null(), "out of memory for {size} bytes");
    p
}

fn free(p: *mut u8, size: usize) {
    // SAFETY: callers pass a live block allocated with this size.
    unsafe { RseqAlloc.dealloc(p, layout(size)) };
}

/// Random medium and large sizes, blocks held and replaced, every freed
/// block dirty over its whole usable size: every zeroed block reads zero,
/// every plain block keeps what was written until it is freed.
fn zeroed_blocks_read_zero_however_reused() {
    rseqalloc::release();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut held: [(usize, usize, u8); 8] = [(0, 0, 0); 8];
    let mut zeroed = 0;
    for step in 0..300 {
        let k = rng.below(held.len() as u64) as usize;
        let (p, size, tag) = held[k];
        if p != 0 {
            assert!(all(p as *const u8, size, tag), "step {step}: a held block of {size} bytes changed");
            dirty(p as *mut u8, 0xA5);
            free(p as *mut u8, size);
        }
        let size = match rng.below(4) {
            0 => 33_000 + rng.below(MIB as u64 - 33_000) as usize,
            1 => MIB + 1 + rng.below(3 * MIB as u64) as usize,
            _ => MIB + rng.below(12 * MIB as u64) as usize,
        };
        let p = if rng.below(2) == 0 {
            let p = alloc_zeroed(size);
            assert!(all(p, size, 0), "step {step}: alloc_zeroed({size}) reused dirty memory");
            zeroed += 1;
            p
        } else {
            alloc(size)
        };
        let tag = step as u8 | 1;
        // SAFETY: a live block of `size` bytes.
        unsafe { p.write_bytes(tag, size) };
        held[k] = (p as usize, size, tag);
    }
    for (p, size, _) in held {
        if p != 0 {
            free(p as *mut u8, size);
        }
    }
    println!("large_reuse: {zeroed} zeroed blocks read zero after dirty reuse");
}

/// The three ways a cached mapping is reused, each dirty beforehand: split
/// (a smaller block from a bigger piece), merged (two freed neighbours make
/// one piece), grown (a bigger block from the biggest piece, by `mremap`).
fn split_merged_and_grown_pieces_are_zeroed_and_kept() {
    rseqalloc::release();
    let mapped = rseqalloc::stats().bytes_mapped;
    let big = alloc(10 * MIB);
    dirty(big, 0x5A);
    free(big, 10 * MIB);
    let cached = rseqalloc::stats().large_cached_bytes;
    assert!(cached >= 10 * MIB as u64, "the freed mapping is cached ({cached} bytes)");
    // Split: two blocks from the one piece, no new mapping.
    let a = alloc_zeroed(3 * MIB);
    let b = alloc_zeroed(5 * MIB);
    assert!(all(a, 3 * MIB, 0) && all(b, 5 * MIB, 0), "blocks split from a dirty piece read zero");
    let s = rseqalloc::stats();
    assert_eq!(s.bytes_mapped, mapped + cached, "split blocks come from the cached piece, not new mappings");
    assert_eq!(a as usize + 3 * MIB + PAGE, b as usize, "the second block is carved right after the first");
    dirty(a, 0x11);
    dirty(b, 0x22);
    // Merge: freed neighbours become one piece again, which serves a block
    // as big as both.
    free(a, 3 * MIB);
    free(b, 5 * MIB);
    let whole = alloc_zeroed(9 * MIB);
    assert_eq!(whole, a, "the merged piece serves a block spanning both freed ones");
    assert!(all(whole, 9 * MIB, 0), "a block over two merged dirty pieces reads zero");
    assert_eq!(rseqalloc::stats().bytes_mapped, mapped + cached, "no new mapping for the merged piece");
    dirty(whole, 0x33);
    free(whole, 9 * MIB);
    // Grow: with only a 10 MiB piece cached, a 16 MiB block grows it.
    let grown = alloc_zeroed(16 * MIB);
    assert!(all(grown, 16 * MIB, 0), "a grown dirty piece reads zero");
    assert_eq!(rseqalloc::stats().large_cached_bytes, 0, "the piece was grown, not left in the cache");
    // SAFETY: a live block of 16 MiB.
    unsafe { grown.write_bytes(0x44, 16 * MIB) };
    // A block from merged pieces resizes intact, whether the kernel can
    // resize its mapping or it has to move by copy.
    // SAFETY: a live block allocated with this layout.
    let moved = unsafe { RseqAlloc.realloc(grown, layout(16 * MIB), 40 * MIB) };
    assert!(!moved.is_null(), "realloc of a block from the cache failed");
    assert!(all(moved, 16 * MIB, 0x44), "realloc kept the contents");
    free(moved, 40 * MIB);
    rseqalloc::release();
}

/// The bound: with 3 MiB blocks freed and nothing large live, four such
/// mappings; with 40 MiB blocks, 64 MiB, or while more is live, what the
/// frees left below the peak of live bytes (at most as much as is live)
/// and an eighth of what is live. `release()` empties it.
fn the_cache_stays_within_its_bound() {
    rseqalloc::release();
    let four = 4 * (3 * MIB + PAGE) as u64;
    let blocks: Vec<*mut u8> = (0..12).map(|_| alloc(3 * MIB)).collect();
    for (i, &p) in blocks.iter().enumerate() {
        free(p, 3 * MIB);
        let live = ((blocks.len() - 1 - i) * 3 * MIB) as u64;
        let below_peak = (blocks.len() * 3 * MIB) as u64 - live;
        let cached = rseqalloc::stats().large_cached_bytes;
        let bound = four.max(below_peak.min(live) + live / 8);
        assert!(cached <= bound, "{cached} bytes cached with {live} live");
    }
    let cached = rseqalloc::stats().large_cached_bytes;
    assert!(cached <= four, "{cached} bytes cached once nothing is live, above four 3 MiB mappings");
    assert!(rseqalloc::stats().large_cached_bytes >= 9 * MIB as u64, "the cache keeps what fits");
    let blocks: Vec<*mut u8> = (0..20).map(|_| alloc(40 * MIB)).collect();
    for (i, &p) in blocks.iter().enumerate() {
        free(p, 40 * MIB);
        let live = ((blocks.len() - 1 - i) * 40 * MIB) as u64;
        let below_peak = (blocks.len() * 40 * MIB) as u64 - live;
        let cached = rseqalloc::stats().large_cached_bytes;
        let bound = (64 * MIB as u64).max(below_peak.min(live) + live / 8);
        assert!(cached <= bound, "{cached} bytes cached with {live} live");
    }
    let cached = rseqalloc::stats().large_cached_bytes;
    assert!(cached <= 64 * MIB as u64, "{cached} bytes cached once nothing is live");
    let released = rseqalloc::release();
    assert!(released as u64 >= cached, "release() reports the cache it unmapped");
    assert_eq!(rseqalloc::stats().large_cached_bytes, 0, "release() empties the cache");
}

/// A steady stream of 5–25 MiB blocks, one at a time, every page written:
/// after the first few, the blocks come from freed memory, so the pages do
/// not fault in again (without the cache, each block faults all of its
/// pages in), and no more than the stream's two biggest blocks stay mapped.
fn a_stream_of_big_blocks_reuses_memory() {
    rseqalloc::release();
    let base = rseqalloc::stats().bytes_mapped;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut step = |count: usize| {
        let mut pages = 0;
        for _ in 0..count {
            let size = 5 * MIB + rng.below(20 * MIB as u64) as usize;
            let p = alloc(size);
            for off in (0..size).step_by(PAGE) {
                // SAFETY: inside the live block.
                unsafe { p.add(off).write(1) };
            }
            pages += size.div_ceil(PAGE);
            free(p, size);
        }
        pages
    };
    step(10);
    let before = minor_faults();
    let pages = step(60);
    let faults = minor_faults() - before;
    let mapped = rseqalloc::stats().bytes_mapped - base;
    println!("large_reuse: a stream of 60 blocks of 5-25 MiB wrote {pages} pages and took {faults} minor faults");
    assert!(faults * 10 < pages as i64, "{faults} faults for {pages} pages written: freed memory was not reused");
    assert!(mapped <= 50 * MIB as u64 + MIB as u64, "{mapped} bytes stay mapped for a stream of ≤ 25 MiB blocks");
    rseqalloc::release();
}

/// Two freed pieces that are not neighbours (a live block between them)
/// serve one block bigger than either: one grows, the other's pages move
/// into it, so few of its pages fault in (growing one alone faults in half
/// of them), and, zeroed, it reads zero over both dirty pieces.
fn scattered_pieces_serve_one_block() {
    rseqalloc::release();
    let (a, x, b) = (alloc(6 * MIB), alloc(2 * MIB), alloc(6 * MIB));
    dirty(a, 0x61);
    dirty(b, 0x62);
    free(a, 6 * MIB);
    free(b, 6 * MIB);
    let before = minor_faults();
    let p = alloc_zeroed(12 * MIB);
    assert!(all(p, 12 * MIB, 0), "a block over two gathered dirty pieces reads zero");
    // SAFETY: a live block of 12 MiB.
    unsafe { p.write_bytes(0x63, 12 * MIB) };
    let faults = minor_faults() - before;
    let pages = (12 * MIB / PAGE) as i64;
    println!("large_reuse: a 12 MiB block over two scattered 6 MiB pieces took {faults} faults for {pages} pages");
    assert!(faults * 4 < pages, "{faults} faults for {pages} pages: the second piece was not reused");
    free(p, 12 * MIB);
    free(x, 2 * MIB);
    rseqalloc::release();
}

/// Twenty 5–25 MiB blocks held, a random one replaced at each step, every
/// page written (mimalloc-bench's malloc-large): a new block bigger than
/// any cached piece grows one and takes other pieces' pages, and the cache
/// keeps what frees leave below the peak of live bytes, so after the first
/// 80 steps fewer than one page in forty faults in (0.7% here; 4.5% when
/// pieces only grew, 13% when a third of the growths failed and the cache
/// held at most 64 MiB), and the cache stays within its bound after every
/// free.
fn a_held_set_of_big_blocks_reuses_memory() {
    rseqalloc::release();
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut held = [(0usize, 0usize); 20];
    let (mut peak, mut pages, mut faults) = (0usize, 0usize, 0i64);
    for step in 0..200 {
        let k = rng.below(held.len() as u64) as usize;
        if held[k].0 != 0 {
            free(held[k].0 as *mut u8, held[k].1);
            held[k].1 = 0;
            let live = held.iter().map(|h| h.1).sum::<usize>() as u64;
            let cached = rseqalloc::stats().large_cached_bytes;
            let bound = (64 * MIB as u64).max((peak as u64 - live).min(live) + live / 8);
            assert!(cached <= bound, "step {step}: {cached} bytes cached with {live} live (peak {peak})");
        }
        let size = 5 * MIB + rng.below(20 * MIB as u64) as usize;
        let before = minor_faults();
        let p = alloc(size);
        // SAFETY: a live block of `size` bytes.
        unsafe { p.write_bytes(step as u8, size) };
        if step >= 80 {
            faults += minor_faults() - before;
            pages += size.div_ceil(PAGE);
        }
        held[k] = (p as usize, size);
        peak = peak.max(held.iter().map(|h| h.1).sum());
    }
    for (p, size) in held {
        free(p as *mut u8, size);
    }
    println!("large_reuse: 120 replacements among 20 held blocks of 5-25 MiB wrote {pages} pages and took {faults} minor faults");
    assert!(faults * 40 < pages as i64, "{faults} faults for {pages} pages written: freed memory was not reused");
    rseqalloc::release();
}

/// In a child with a 200 ms decay and no background thread: a cached
/// mapping unused for a decay period is unmapped by the next large free.
fn the_cache_decays_without_the_background_thread() {
    let a = alloc(2 * MIB);
    let b = alloc(2 * MIB);
    free(a, 2 * MIB);
    let s = rseqalloc::stats();
    assert!(s.large_cached_bytes >= 2 * MIB as u64, "the freed mapping is cached");
    assert!(!s.background_thread);
    std::thread::sleep(Duration::from_millis(300));
    free(b, 2 * MIB);
    let after = rseqalloc::stats();
    assert!(
        after.large_cached_bytes < 3 * MIB as u64,
        "the aged mapping stayed cached: {} bytes",
        after.large_cached_bytes
    );
    assert!(after.bytes_mapped + 2 * MIB as u64 <= s.bytes_mapped, "the aged mapping was not unmapped");
}

/// In a child under an address-space limit (`ulimit -v`): a request that
/// fits only once the cached mappings are given back succeeds, since memory
/// kept for reuse must never be why an allocation fails; one that does not
/// fit even then fails with null.
fn cached_memory_never_causes_enomem() {
    let a = alloc(60 * MIB);
    dirty(a, 0x71);
    free(a, 60 * MIB);
    assert!(rseqalloc::stats().large_cached_bytes >= 60 * MIB as u64, "the freed mapping is cached");
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let limit = vm_kib * 1024 + 40 * MIB as u64;
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the local structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0, "getrlimit");
        let rl = libc::rlimit { rlim_cur: limit, rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &rl), 0, "setrlimit");
    }
    // 2 MiB aligned, so it cannot come from the cache: it needs a new
    // mapping of 82 MiB, which fits only without the 60 cached.
    let big = Layout::from_size_align(80 * MIB, 2 * MIB).unwrap();
    let too_big = Layout::from_size_align(200 * MIB, 16).unwrap();
    // SAFETY: non-zero sizes.
    let (p, q) = unsafe { (RseqAlloc.alloc(big), RseqAlloc.alloc(too_big)) };
    let cached = rseqalloc::stats().large_cached_bytes;
    // The limit goes before any assertion: a panic under it cannot even
    // allocate its message.
    // SAFETY: as above.
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &old), 0, "setrlimit") };
    assert!(!p.is_null(), "80 MiB failed under the limit while 60 MiB sat in the cache");
    assert_eq!(cached, 0, "the cache was given back");
    assert!(q.is_null(), "200 MiB fit under a limit it exceeds");
    // SAFETY: a live block of 80 MiB, allocated with this layout.
    unsafe {
        p.write_bytes(0x72, 80 * MIB);
        RseqAlloc.dealloc(p, big);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--decay") {
        the_cache_decays_without_the_background_thread();
        return;
    }
    if std::env::args().any(|a| a == "--limit") {
        cached_memory_never_causes_enomem();
        return;
    }
    common::check_mode("large_reuse");
    // The bound first: it follows the largest mapping freed so far.
    let checks: [(&str, fn()); 6] = [
        ("the cache stays within its bound", the_cache_stays_within_its_bound),
        ("zeroed blocks read zero however reused", zeroed_blocks_read_zero_however_reused),
        ("split, merged and grown pieces", split_merged_and_grown_pieces_are_zeroed_and_kept),
        ("a stream of big blocks reuses memory", a_stream_of_big_blocks_reuses_memory),
        ("a held set of big blocks reuses memory", a_held_set_of_big_blocks_reuses_memory),
        ("scattered pieces serve one block", scattered_pieces_serve_one_block),
    ];
    for (name, check) in checks {
        check();
        println!("large_reuse: {name}: ok");
    }
    let me = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(me)
        .arg("--decay")
        .env("RSEQALLOC_DECAY_MS", "200")
        .env("RSEQALLOC_BACKGROUND", "0")
        .status()
        .expect("run the decay child");
    assert!(status.success(), "the decay child failed: {status}");
    println!("large_reuse: the cache decays without the background thread: ok");
    let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .arg("--limit")
        .status()
        .expect("run the limit child");
    assert!(status.success(), "the limit child failed: {status}");
    println!("large_reuse: cached memory never causes ENOMEM: ok");
    println!("large_reuse: {} passed, 0 failed", checks.len() + 2);
}
