//! Criterion micro-benchmarks of rseqalloc against the system allocator
//! (glibc), mimalloc, jemalloc, snmalloc and Google's TCMalloc, through their
//! `GlobalAlloc` impls, in one run:
//! malloc+free pairs per size class, LIFO bursts, realloc growth,
//! over-aligned layouts, zeroed allocation (and zeroed buffers then filled),
//! and frees on another thread.
//! Ends with a table of each benchmark's median and rseqalloc's ratio to the
//! best peer.
//!
//! `cargo bench -p rseqalloc-bench --features peers --bench peers`
//!
//! A thread has one rseq registration. TCMalloc runs its per-CPU caches only
//! if it owns it, which needs `GLIBC_TUNABLES=glibc.pthread.rseq=0`; and once
//! it owns it, no other library can use rseq on that thread (rseqalloc would
//! fall back to its locked mode). So the command runs two child processes:
//! one benchmarks TCMalloc with glibc's registration off (and checks
//! `MallocExtension_Internal_GetPerCpuCachesActive`), the other everything
//! else as a normal program runs (rseqalloc through glibc's registration).
//! The parent then prints one table from both children's results.
//!
//! Each allocator is called through its own type (`for_each_allocator!`),
//! as a program's `__rust_alloc` calls its `#[global_allocator]`: statically,
//! with the `GlobalAlloc` methods inlined where the allocator allows it. A
//! `&dyn GlobalAlloc` would add an indirect call to every operation of
//! every allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};

static RSEQ: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;
static GLIBC: System = System;
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static SNMALLOC: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;
static TCMALLOC: tcmalloc_better::TCMalloc = tcmalloc_better::TCMalloc;

extern "C" {
    fn MallocExtension_Internal_GetPerCpuCachesActive() -> bool;
}

/// Every allocator's name, in table order.
const NAMES: [&str; 6] = ["rseqalloc", "glibc", "mimalloc", "jemalloc", "snmalloc", "tcmalloc"];

/// Runs `$body` once for each allocator this child benchmarks, with `$name`
/// its name and `$a` a `&'static` reference of its own type, so that every
/// expansion is compiled for that allocator alone.
macro_rules! for_each_allocator {
    (|$name:ident, $a:ident| $body:block) => {{
        let tcmalloc_child = child().as_deref() == Some("tcmalloc");
        if !tcmalloc_child {
            for_each_allocator!(@one $name, $a, "rseqalloc", &RSEQ, $body);
            for_each_allocator!(@one $name, $a, "glibc", &GLIBC, $body);
            for_each_allocator!(@one $name, $a, "mimalloc", &MIMALLOC, $body);
            for_each_allocator!(@one $name, $a, "jemalloc", &JEMALLOC, $body);
            for_each_allocator!(@one $name, $a, "snmalloc", &SNMALLOC, $body);
        } else {
            for_each_allocator!(@one $name, $a, "tcmalloc", &TCMALLOC, $body);
        }
    }};
    (@one $name:ident, $a:ident, $n:expr, $alloc:expr, $body:block) => {{
        let $name: &'static str = $n;
        let $a = $alloc;
        $body
    }};
}

/// Which child process this is (`PEERS_BENCH_CHILD`): "tcmalloc" or "others".
fn child() -> Option<String> {
    std::env::var("PEERS_BENCH_CHILD").ok()
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair");
    for shift in 4..=15 {
        let l = layout(1 << shift, 8);
        for_each_allocator!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, l.size()), &l, |b, &l| {
                // SAFETY: non-zero size; freed with its layout.
                b.iter(|| unsafe { a.dealloc(black_box(a.alloc(black_box(l))), l) })
            });
        });
    }
    g.finish();
}

fn bursts(c: &mut Criterion) {
    let mut g = c.benchmark_group("lifo-burst");
    let l = layout(64, 8);
    for n in [1usize, 8, 64] {
        for_each_allocator!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut ptrs = [std::ptr::null_mut(); 64];
                b.iter(|| {
                    // SAFETY: non-zero size; each block freed once, in reverse.
                    unsafe {
                        for p in ptrs.iter_mut().take(n) {
                            *p = black_box(a.alloc(l));
                        }
                        for p in ptrs[..n].iter().rev() {
                            a.dealloc(black_box(*p), l);
                        }
                    }
                })
            });
        });
    }
    g.finish();
}

fn realloc_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc-growth-16B-to-1MiB");
    for_each_allocator!(|name, a| {
        g.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: every step reallocates the live block with its layout.
                unsafe {
                    let mut size = 16;
                    // black_box: called statically, glibc's malloc/realloc/free
                    // are known to the optimiser, which would drop them.
                    let mut p = black_box(a.alloc(layout(size, 8)));
                    while size < 1 << 20 {
                        let new = size * 2;
                        p = black_box(a.realloc(p, layout(size, 8), new));
                        *p.add(new - 1) = 1;
                        size = new;
                    }
                    a.dealloc(black_box(p), layout(size, 8));
                }
            })
        });
    });
    g.finish();
}

fn over_aligned(c: &mut Criterion) {
    let mut g = c.benchmark_group("over-aligned");
    for (size, align) in [(64usize, 64usize), (100, 1024), (4096, 4096)] {
        let l = layout(size, align);
        for_each_allocator!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, format!("{size}B@{align}")), &l, |b, &l| {
                // SAFETY: as in `pairs`.
                b.iter(|| unsafe { a.dealloc(black_box(a.alloc(black_box(l))), l) })
            });
        });
    }
    g.finish();
}

fn zeroed(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc-zeroed");
    for size in [4096usize, 1 << 20] {
        let l = layout(size, 16);
        for_each_allocator!(|name, a| {
            g.bench_with_input(BenchmarkId::new(name, size), &l, |b, &l| {
                // SAFETY: as in `pairs`; the read keeps the zeroing honest.
                b.iter(|| unsafe {
                    let p = black_box(a.alloc_zeroed(black_box(l)));
                    black_box(*p.add(l.size() / 2));
                    a.dealloc(p, l)
                })
            });
        });
    }
    g.finish();
}

/// `vec![0u8; n]` and then written whole, as a program fills a buffer it
/// asked for zeroed: sizes from 0.3 to 1 MB in turn (medium runs here), and
/// 2 MiB (a mapping). Freed memory comes back dirty, so this measures how
/// each allocator clears it: with stores, or by dropping the pages and
/// taking a fault on each when the program writes it.
fn zeroed_filled(c: &mut Criterion) {
    let mut g = c.benchmark_group("vec-zeroed-filled");
    let shapes: [(&str, &[usize]); 2] =
        [("300K-1M", &[300_000, 475_000, 650_000, 825_000, 1_000_000]), ("2MiB", &[2 << 20])];
    for (param, sizes) in shapes {
        for_each_allocator!(|name, a| {
            g.bench_function(BenchmarkId::new(name, param), |b| {
                let mut i = 0;
                b.iter(|| {
                    let l = layout(sizes[i % sizes.len()], 1);
                    i += 1;
                    // SAFETY: non-zero size; the block is written within its
                    // size and freed once, with its layout.
                    unsafe {
                        let p = black_box(a.alloc_zeroed(l));
                        p.write_bytes(1, l.size());
                        a.dealloc(black_box(p), l)
                    }
                })
            });
        });
    }
    g.finish();
}

/// Blocks allocated here and freed by a worker thread, 64 at a time.
fn cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross-thread-free-64x64B");
    let l = layout(64, 8);
    for_each_allocator!(|name, a| {
        let (to_worker, from_main) = mpsc::sync_channel::<[usize; 64]>(4);
        let (done, wait) = mpsc::sync_channel::<()>(4);
        let worker = std::thread::spawn(move || {
            for batch in from_main {
                // SAFETY: allocated by `a` with this layout; freed once.
                batch.iter().for_each(|&p| unsafe { a.dealloc(p as *mut u8, l) });
                done.send(()).unwrap();
            }
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut batch = [0usize; 64];
                // SAFETY: non-zero size.
                batch.iter_mut().for_each(|p| *p = unsafe { a.alloc(l) } as usize);
                to_worker.send(batch).unwrap();
                wait.recv().unwrap();
            })
        });
        drop(to_worker);
        worker.join().unwrap();
    });
    g.finish();
}

/// Reads criterion's median estimates and prints, per benchmark, each
/// allocator's median and rseqalloc's ratio to the best peer (< 1: faster).
fn summary() {
    // Criterion writes under $CARGO_TARGET_DIR when it is set, else under
    // the workspace's target/ (this package is the workspace root's benches/).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let root = target.join("criterion");
    let groups = [
        "pair",
        "lifo-burst",
        "realloc-growth-16B-to-1MiB",
        "over-aligned",
        "alloc-zeroed",
        "vec-zeroed-filled",
        "cross-thread-free-64x64B",
    ];
    let names: Vec<&str> = NAMES.to_vec();
    // The same medians as JSON, for benches/charts.py's SVG chart.
    let mut json = format!("{{\"allocators\": {names:?}, \"benchmarks\": [");
    println!("\n| benchmark | {} | rseqalloc / best peer |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    for group in groups {
        let dir = root.join(group);
        let mut params: Vec<String> = match std::fs::read_dir(dir.join("rseqalloc")) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => continue,
        };
        params.retain(|p| p != "report" && p != "new" && p != "base" && p != "change");
        params.sort_by_key(|p| p.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().unwrap_or(0));
        if params.is_empty() {
            params.push(String::new()); // a group without parameters
        }
        for param in params {
            let median = |name: &str| -> Option<f64> {
                let file = dir.join(name).join(&param).join("new/estimates.json");
                let text = std::fs::read_to_string(file).ok()?;
                let at = text.find("\"median\"")?;
                let pe = text[at..].find("\"point_estimate\":")? + at + 17;
                text[pe..].split([',', '}']).next()?.parse().ok()
            };
            let times: Vec<Option<f64>> = names.iter().map(|n| median(n)).collect();
            let best_peer = times[1..].iter().flatten().cloned().fold(f64::INFINITY, f64::min);
            let cells: Vec<String> = times.iter().map(|t| t.map_or("-".into(), |t| format!("{t:.1} ns"))).collect();
            let ratio = times[0].map_or("-".into(), |t| format!("{:.2}", t / best_peer));
            println!("| {group}/{param} | {} | {ratio} |", cells.join(" | "));
            let ns: Vec<String> =
                names.iter().zip(&times).filter_map(|(n, t)| Some(format!("{n:?}: {}", (*t)?))).collect();
            json += &format!("{{\"name\": \"{group}/{param}\", \"ns\": {{{}}}}},", ns.join(", "));
        }
    }
    let json = json.trim_end_matches(',').to_string() + "]}\n";
    let summary = root.join("peers-summary.json");
    let svg = root.join("peers.svg");
    let charts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts.py");
    let drawn = std::fs::write(&summary, json).is_ok()
        && std::process::Command::new("python3")
            .arg(&charts)
            .args(["micro".as_ref(), summary.as_os_str(), svg.as_os_str()])
            .status()
            .is_ok_and(|s| s.success());
    if !drawn {
        eprintln!("no chart: python3 {} micro {} {} failed", charts.display(), summary.display(), svg.display());
    }
}

fn main() {
    let Some(which) = child() else {
        // The parent: one child per rseq owner, then the table.
        let exe = std::env::current_exe().unwrap();
        for (which, tunables) in [("tcmalloc", Some("glibc.pthread.rseq=0")), ("others", None)] {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(std::env::args_os().skip(1)).env("PEERS_BENCH_CHILD", which);
            if let Some(t) = tunables {
                cmd.env("GLIBC_TUNABLES", t);
            }
            let status = cmd.status().unwrap();
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        summary();
        return;
    };
    if which == "tcmalloc" {
        // SAFETY: non-zero size; freed at once. Brings TCMalloc up.
        unsafe { TCMALLOC.dealloc(TCMALLOC.alloc(layout(64, 8)), layout(64, 8)) };
        // SAFETY: a query without preconditions, exported by TCMalloc.
        let per_cpu = unsafe { MallocExtension_Internal_GetPerCpuCachesActive() };
        println!("TCMalloc per-CPU caches active: {per_cpu}");
        assert!(per_cpu, "TCMalloc is not in per-CPU mode: the comparison would be unfair to it");
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
        .sample_size(20);
    pairs(&mut c);
    bursts(&mut c);
    realloc_growth(&mut c);
    over_aligned(&mut c);
    zeroed(&mut c);
    zeroed_filled(&mut c);
    cross_thread(&mut c);
    c.final_summary();
    if which == "others" {
        let s = rseqalloc::stats();
        let ops = s.totals.alloc_hits + s.totals.alloc_misses;
        println!(
            "rseqalloc: mode {:?}, {ops} small allocations, {:.4}% on the slow path, {} restarts",
            s.mode,
            100.0 * s.totals.alloc_misses as f64 / ops.max(1) as f64,
            s.restarts()
        );
    }
}
