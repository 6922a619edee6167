//! The heap has no ceiling, and huge requests fail as glibc's do.
//!
//! Growth: a child run of this binary with 4 MiB reservations
//! (`RSEQALLOC_TEST_RESERVATION`, a test hook) allocates about 100 MiB of
//! small and medium blocks, so the heap crosses dozens of reservations, with
//! a foreign mapping placed among them. Every block keeps its class and
//! usable size wherever it lies, the class map knows nothing of the foreign
//! mapping, no two blocks overlap (each is filled and checked), and freeing
//! everything gives the memory of every reservation back (`release()`,
//! RSS) and lets it be reused without new reservations.
//!
//! Huge requests: for 30 GiB, 64 GiB and 1 TiB, `Vec::try_reserve` fails
//! exactly when glibc's `malloc` of the same size (asked in the same run)
//! returns NULL, and `Vec::with_capacity` then ends in `handle_alloc_error`
//! (a child run, which must abort with std's message).

// Built only with the test hooks (RSEQALLOC_TEST_HOOKS=1, build.rs).
#![cfg(rseqalloc_test_hooks)]

mod common;

use std::alloc::{alloc, dealloc, Layout};
use std::process::Command;

use rseqalloc::test_hooks;

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const RESERVATION: usize = 4 * MIB;
/// Small classes, the largest small class, and medium runs of 2 to 16 granules.
const SIZES: [usize; 9] = [16, 64, 1000, 4000, 12_000, 32_768, 100_000, 600_000, 1 << 20];
/// Set in the child runs.
const CHILD: &str = "ARENA_GROWTH_CHILD";

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|f| f.parse().ok()).expect("statm rss");
    pages * 4096
}

/// Runs the test `name` of this binary again in a child with `env` set;
/// returns its exit status and its stderr.
fn child(name: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    print!("{stdout}");
    (out.status, stderr)
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

struct Block {
    p: *mut u8,
    layout: Layout,
}

fn fill(b: &Block, seed: usize) {
    // SAFETY: the block has layout.size() bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(b.p, b.layout.size()) };
    for (i, byte) in bytes.iter_mut().enumerate().step_by(512) {
        *byte = (seed + i) as u8;
    }
    bytes[bytes.len() - 1] = seed as u8;
}

fn check(b: &Block, seed: usize) {
    // SAFETY: as in fill.
    let bytes = unsafe { std::slice::from_raw_parts(b.p, b.layout.size()) };
    for (i, byte) in bytes.iter().enumerate().step_by(512) {
        assert_eq!(*byte, (seed + i) as u8, "block {seed} at {:p} overwritten", b.p);
    }
    assert_eq!(bytes[bytes.len() - 1], seed as u8, "block {seed} at {:p} overwritten", b.p);
}

/// The growth scenario, in the child with small reservations.
fn grow_and_check() {
    assert_eq!(std::env::var("RSEQALLOC_TEST_RESERVATION").ok().as_deref(), Some(RESERVATION.to_string().as_str()));
    let (base, window) = test_hooks::arena_window();
    let before = test_hooks::arena_reservations();
    let rss_before = rss();
    // Usable size per size in the first reservation: the reference.
    let mut usable = Vec::new();
    let mut blocks = Vec::new();
    for &size in &SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: p is live.
        usable.push(unsafe { rseqalloc::usable_size(p) });
        blocks.push(Block { p, layout });
    }
    // A mapping of someone else's: the kernel places it next to the lowest
    // reservation, where the heap would grow next.
    // SAFETY: a fresh anonymous mapping.
    let foreign = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * MIB,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as *mut u8;
    assert_ne!(foreign, libc::MAP_FAILED as *mut u8);
    let mut total = 0;
    let mut i = 0;
    while total < 100 * MIB {
        let size = SIZES[i % SIZES.len()];
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null(), "out of memory at {} MiB", total / MIB);
        let b = Block { p, layout };
        fill(&b, blocks.len());
        blocks.push(b);
        total += size;
        i += 1;
    }
    let made = test_hooks::arena_reservations() - before;
    println!("{} MiB in {} blocks over {} new reservations of 4 MiB", total / MIB, blocks.len(), made);
    assert!(made >= 20, "only {made} reservations for 100 MiB at 4 MiB each");
    let (lo, hi) = blocks.iter().fold((usize::MAX, 0), |(lo, hi), b| (lo.min(b.p as usize), hi.max(b.p as usize)));
    assert!(hi - lo >= 90 * MIB, "blocks span only {} MiB", (hi - lo) / MIB);
    for (k, b) in blocks.iter().enumerate() {
        let class = SIZES.iter().position(|&s| s == b.layout.size()).unwrap();
        // SAFETY: the block is live.
        assert_eq!(unsafe { rseqalloc::usable_size(b.p) }, usable[class], "usable size of block {k} at {:p}", b.p);
        let small = test_hooks::class_size_at(b.p);
        assert_eq!(small.is_some(), b.layout.size() <= rseqalloc::MAX_SMALL, "class of block {k}");
        assert!((b.p as usize).wrapping_sub(base) < window, "block {k} outside the window");
        if k >= SIZES.len() {
            check(b, k);
        }
    }
    // The foreign mapping, wherever it landed, is nobody's block; if it is
    // inside the window, the heap grew around it.
    for off in (0..3 * MIB).step_by(64 * 1024) {
        assert_eq!(test_hooks::class_size_at(foreign.wrapping_add(off)), None, "foreign page at +{off:#x}");
    }
    let inside = (foreign as usize).wrapping_sub(base) < window;
    println!("foreign mapping {}inside the window", if inside { "" } else { "not " });
    // Free everything: the pages of every reservation go back.
    let rss_full = rss();
    for b in blocks.drain(..) {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(b.p, b.layout) };
    }
    let released = rseqalloc::release();
    let rss_after = rss();
    println!(
        "RSS {} MiB before, {} MiB full, {} MiB after release() gave back {} MiB",
        rss_before / MIB,
        rss_full / MIB,
        rss_after / MIB,
        released / MIB
    );
    assert!(released >= 80 * MIB, "release() gave back only {} MiB", released / MIB);
    assert!(rss_after < rss_before + 16 * MIB, "RSS stayed at {} MiB", rss_after / MIB);
    // The same again: the freed granules serve it, with no new reservation.
    let reservations = test_hooks::arena_reservations();
    total = 0;
    while total < 90 * MIB {
        let layout = Layout::from_size_align(SIZES[i % SIZES.len()], 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null());
        blocks.push(Block { p, layout });
        total += layout.size();
        i += 1;
    }
    assert_eq!(test_hooks::arena_reservations(), reservations, "freed memory was not reused");
    for b in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(b.p, b.layout) };
    }
    // SAFETY: mapped above, unused.
    unsafe { libc::munmap(foreign.cast(), 3 * MIB) };
}

#[test]
fn heap_grows_across_reservations() {
    if in_child() {
        return grow_and_check();
    }
    common::check_mode("arena_growth");
    let (status, stderr) =
        child("heap_grows_across_reservations", &[("RSEQALLOC_TEST_RESERVATION", &RESERVATION.to_string())]);
    assert!(status.success(), "the child failed: {status}\n{stderr}");
    // The hook's variable is one the test build reads, not an unknown name.
    assert!(!stderr.contains("is not a variable"), "the hook's variable was reported as unknown:\n{stderr}");
}

/// Whether glibc's malloc (this binary's libc, not the global allocator)
/// gives `size` bytes.
fn glibc_gives(size: usize) -> bool {
    // SAFETY: plain malloc/free of libc's own heap. (black_box: the
    // compiler would fold a malloc/free pair and its null check away.)
    unsafe {
        let p = std::hint::black_box(libc::malloc(size));
        libc::free(p);
        !p.is_null()
    }
}

#[test]
fn huge_requests_fail_as_glibc_says() {
    if in_child() {
        // Ends in handle_alloc_error (abort) when the allocator says no.
        let size: usize = std::env::var("HUGE_SIZE").unwrap().parse().unwrap();
        let v: Vec<u8> = Vec::with_capacity(size);
        println!("got {} bytes", v.capacity());
        return;
    }
    for size in [30 * GIB, 64 * GIB, 1 << 40] {
        let glibc = glibc_gives(size);
        let mut v: Vec<u8> = Vec::new();
        let ours = v.try_reserve(size).is_ok();
        println!("{} GiB: glibc {}, rseqalloc {}", size / GIB, glibc, ours);
        assert_eq!(ours, glibc, "try_reserve of {} GiB", size / GIB);
        drop(v);
        if !glibc {
            let (status, stderr) = child("huge_requests_fail_as_glibc_says", &[("HUGE_SIZE", &size.to_string())]);
            assert_eq!(status.code(), None, "the child was not killed: {status}\n{stderr}");
            assert!(
                stderr.contains(&format!("memory allocation of {size} bytes failed")),
                "no handle_alloc_error report: {stderr}"
            );
        }
    }
    // Growing a block past what the kernel will give fails and keeps it.
    let mut v = vec![7u8; 4 * MIB];
    let glibc = glibc_gives(1 << 46);
    assert_eq!(v.try_reserve(1 << 46).is_ok(), glibc, "try_reserve growing to 64 TiB");
    assert!(v.iter().all(|&b| b == 7), "a failed realloc changed the block");
}
