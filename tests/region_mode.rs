//! Region mode (the patched kernel's restart regions) as a program sees it,
//! on whatever kernel runs it.
//!
//! On a stock kernel `prctl(PR_RSEQ_REGIONS, PR_RSEQ_REGIONS_QUERY)` fails
//! with EINVAL and the allocator stays in a mainline mode. On a kernel with
//! the kernel-patch/ series it runs in `Mode::Region` unless
//! `RSEQALLOC_MODE=mainline|fallback` says otherwise; then no section stores
//! a descriptor (glibc's rseq area keeps `rseq_cs` = 0), while in mainline
//! mode the same traffic does arm descriptors; and under signals and
//! preemption the kernel restarts sections through their regions. The
//! allocator adds only its own regions: a second registrant in the same
//! process (another copy of rseqalloc, another library) adds and removes
//! its own beside them, and the allocator's stay and keep restarting.
//! `RSEQALLOC_EXPECT_MODE` (tests/common) pins the mode a run must be in.

mod common;

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rseqalloc::Mode;

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

const PR_RSEQ_REGIONS: libc::c_int = 74;
const PR_RSEQ_REGIONS_QUERY: libc::c_ulong = 1;
const PR_RSEQ_REGIONS_ADD: libc::c_ulong = 2;
const PR_RSEQ_REGIONS_REMOVE: libc::c_ulong = 3;
const PR_RSEQ_REGIONS_GET: libc::c_ulong = 4;
/// The signature before every restart address (glibc's `RSEQ_SIG`).
const RSEQ_SIG: u32 = 0x5305_3053;
/// How many regions the allocator adds: its 14 sections.
const OUR_REGIONS: usize = 14;

/// `struct rseq_region` of the patched kernel's uapi.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct RseqRegion {
    size: u32,
    sig: u32,
    start: u64,
    post_commit: u64,
    restart: u64,
}

extern "C" {
    /// glibc ≥ 2.35: where its rseq area sits from the thread pointer, and
    /// its size (0 when glibc did not register one).
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The table limit, or the errno of the query.
fn query() -> Result<i32, i32> {
    // SAFETY: QUERY with a null feature pointer reads and writes nothing.
    let r = unsafe { libc::prctl(PR_RSEQ_REGIONS, PR_RSEQ_REGIONS_QUERY, 0, 0, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// `prctl(PR_RSEQ_REGIONS, op, arg3, arg4, 0)`, or the errno.
fn regions_prctl(op: libc::c_ulong, arg3: u64, arg4: u64) -> Result<i32, i32> {
    // SAFETY: every operation reads or writes at most one RseqRegion at
    // arg3, which the callers pass as a live one where the operation uses it.
    let r = unsafe { libc::prctl(PR_RSEQ_REGIONS, op, arg3, arg4, 0 as libc::c_ulong) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// Every region of the process, walked with GET.
fn regions() -> Vec<RseqRegion> {
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let mut r = RseqRegion { size: std::mem::size_of::<RseqRegion>() as u32, ..Default::default() };
        match regions_prctl(PR_RSEQ_REGIONS_GET, &mut r as *mut RseqRegion as u64, from) {
            Ok(_) => {
                from = r.post_commit;
                all.push(r);
            }
            Err(e) => {
                assert_eq!(e, libc::ENOENT, "GET ends with ENOENT");
                return all;
            }
        }
    }
}

/// A second registrant beside the allocator: a region in code of its own
/// (`jmp .` then the signature and `ret` as restart), added and removed by
/// its handle (its start). The allocator's regions must stay as they were,
/// and GET must show both.
fn second_registrant() {
    let ours = regions();
    assert_eq!(ours.len(), OUR_REGIONS, "the allocator adds exactly its {OUR_REGIONS} regions: {ours:x?}");
    // SAFETY: a fresh anonymous mapping, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    let code: [u8; 17] = {
        let mut c = [0x90u8; 17];
        c[..2].copy_from_slice(&[0xeb, 0xfe]);
        c[12..16].copy_from_slice(&RSEQ_SIG.to_le_bytes());
        c[16] = 0xc3;
        c
    };
    // SAFETY: the page is writable and 4096 bytes long.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page.cast::<u8>(), code.len()) };
    let start = page as u64;
    let theirs = RseqRegion {
        size: std::mem::size_of::<RseqRegion>() as u32,
        sig: RSEQ_SIG,
        start,
        post_commit: start + 2,
        restart: start + 16,
    };
    regions_prctl(PR_RSEQ_REGIONS_ADD, &theirs as *const RseqRegion as u64, 0)
        .expect("a second registrant adds its region");
    let both = regions();
    assert_eq!(both.len(), OUR_REGIONS + 1, "both registrants' regions: {both:x?}");
    assert!(ours.iter().all(|r| both.contains(r)), "adding a region kept every one of ours");
    assert!(both.contains(&theirs), "GET shows the second registrant's region");
    // Removing someone else's region by a wrong handle is refused.
    assert_eq!(regions_prctl(PR_RSEQ_REGIONS_REMOVE, start + 1, 0), Err(libc::ENOENT));
    regions_prctl(PR_RSEQ_REGIONS_REMOVE, start, 0).expect("the second registrant removes its region");
    assert_eq!(regions(), ours, "removing theirs left ours as they were");
    // Adding again and unmapping the code drops it with the text.
    regions_prctl(PR_RSEQ_REGIONS_ADD, &theirs as *const RseqRegion as u64, 0).expect("re-add");
    // SAFETY: our own mapping; nothing runs in it.
    unsafe { libc::munmap(page, 4096) };
    assert_eq!(regions(), ours, "unmapping the second registrant's text dropped only its region");
}

/// The `rseq_cs` word of this thread's glibc rseq area, if glibc has one.
fn glibc_rseq_cs() -> Option<u64> {
    // SAFETY: plain reads of glibc's exported constants.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return None;
    }
    let tp: usize;
    // SAFETY: reads %fs:0, which glibc keeps pointing at the thread's TCB.
    unsafe { core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp) };
    let field = (tp as isize + offset + 8) as *const u64;
    // SAFETY: struct rseq's rseq_cs (offset 8) of this thread's live area.
    Some(unsafe { core::ptr::read_volatile(field) })
}

/// One small allocation and free through the global allocator.
fn pair() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: non-zero size; freed with its layout.
    unsafe { dealloc(black_box(alloc(layout)), layout) };
}

/// How often, over `rounds` pairs, this thread's rseq_cs was non-zero right
/// after a pair (None without a glibc area).
fn armed_after_pairs(rounds: u32) -> Option<u32> {
    glibc_rseq_cs()?;
    Some((0..rounds).map(|_| pair()).filter(|_| glibc_rseq_cs() != Some(0)).count() as u32)
}

/// Allocation traffic on 2 threads per CPU under a 20 µs SIGALRM until the
/// abort handlers counted a restart (at least `min` long, at most 30 s).
/// Returns the restarts seen.
fn restarts_under_pressure(min: Duration) -> u64 {
    extern "C" fn on_alarm(_: libc::c_int) {}
    common::alarm_every(20, on_alarm);
    let before = rseqalloc::stats().restarts();
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers: Vec<_> = (0..2 * cpus.max(2))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    (0..1000).for_each(|_| pair());
                }
            })
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30)
        && (start.elapsed() < min || rseqalloc::stats().restarts() == before)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    common::stop_alarm();
    rseqalloc::stats().restarts() - before
}

fn main() {
    pair(); // brings the allocator up
    common::check_mode("region_mode");
    let mode = rseqalloc::stats().mode;
    let requested = std::env::var("RSEQALLOC_MODE").unwrap_or_default();
    let mut passed = 0;

    match query() {
        Err(errno) => {
            assert_eq!(errno, libc::EINVAL, "a kernel without restart regions must refuse the query with EINVAL");
            assert_ne!(mode, Mode::Region, "region mode without restart regions");
            println!("region_mode: stock kernel: PR_RSEQ_REGIONS_QUERY gives EINVAL; mode {mode:?}");
        }
        Ok(max) => {
            assert!(max >= 14, "the table limit {max} cannot hold our 14 sections");
            if matches!(requested.as_str(), "mainline" | "fallback") {
                assert_ne!(mode, Mode::Region, "RSEQALLOC_MODE={requested} must keep region mode off");
            } else {
                assert_eq!(mode, Mode::Region, "a kernel with restart regions (limit {max}) must give region mode");
            }
            println!("region_mode: restart regions available (limit {max}); mode {mode:?}");
        }
    }
    passed += 1;

    // Region copies never arm a descriptor; mainline copies arm one on every
    // section, and the kernel clears it only lazily, so it is seen set.
    if let Some(armed) = armed_after_pairs(1000) {
        match mode {
            Mode::Region => assert_eq!(armed, 0, "region mode stored an rseq_cs descriptor"),
            Mode::RseqGlibc => assert!(armed > 0, "mainline mode never armed a descriptor: is the check blind?"),
            _ => {}
        }
        println!("region_mode: rseq_cs non-zero after {armed} of 1000 pairs");
        passed += 1;
    }

    if mode == Mode::Region {
        second_registrant();
        println!("region_mode: a second registrant added and removed its region; our {OUR_REGIONS} stayed");
        passed += 1;
        let restarts = restarts_under_pressure(Duration::from_secs(1));
        println!("region_mode: {restarts} restarts through the region table");
        assert!(restarts > 0, "no section was restarted in region mode");
        passed += 1;
    }
    println!("region_mode: {passed} passed, 0 failed");
}
