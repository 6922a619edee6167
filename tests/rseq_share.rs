//! A Rust program using `RseqAlloc` and a C library that registers rseq by
//! the `__rseq_abi`/`__rseq_refcount` convention (tests/c/rseqlib.c,
//! opened with dlopen) share one rseq area when glibc registered none:
//! the library registers after the program allocated (main thread) and
//! before (new threads), its critical sections count right, and its
//! unregistration leaves the area registered for the allocator. Runs as a
//! child with `GLIBC_TUNABLES=glibc.pthread.rseq=0` (this binary exports
//! the two symbols: build.rs, as the README tells programs to); and under
//! glibc's registration, where the library fails as it does alone.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_char, c_int, c_long, c_void, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use rseqalloc::{Mode, RseqAlloc};

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

const THREADS: usize = 4;
const ROUNDS: usize = 200_000;

struct Lib {
    register: extern "C" fn() -> c_int,
    unregister: extern "C" fn() -> c_int,
    cpu: extern "C" fn() -> c_int,
    refcount: extern "C" fn() -> u32,
    inc: extern "C" fn(*mut c_long),
}

extern "C" {
    fn dlopen(path: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
}

/// Builds librseqlib.so next to this test binary.
fn build_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let out = exe.with_file_name("librseqlib.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/rseqlib.c");
    let status = Command::new("cc").args(["-O2", "-fPIC", "-shared", "-o"]).arg(&out).arg(src).status().unwrap();
    assert!(status.success(), "cc {src}");
    out
}

fn open(path: &str) -> Lib {
    let path = CString::new(path).unwrap();
    // SAFETY: dlopen/dlsym with valid C strings; the symbols have the C
    // types of tests/c/rseqlib.c, and the library is never closed.
    unsafe {
        let handle = dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen");
        let sym = |name: &str| {
            let p = dlsym(handle, CString::new(name).unwrap().as_ptr());
            assert!(!p.is_null(), "{name}");
            p
        };
        Lib {
            register: std::mem::transmute::<*mut c_void, extern "C" fn() -> c_int>(sym("rseqlib_register")),
            unregister: std::mem::transmute::<*mut c_void, extern "C" fn() -> c_int>(sym("rseqlib_unregister")),
            cpu: std::mem::transmute::<*mut c_void, extern "C" fn() -> c_int>(sym("rseqlib_cpu")),
            refcount: std::mem::transmute::<*mut c_void, extern "C" fn() -> u32>(sym("rseqlib_refcount")),
            inc: std::mem::transmute::<*mut c_void, extern "C" fn(*mut c_long)>(sym("rseqlib_inc")),
        }
    }
}

/// Increments interleaved with allocations: the library's sections and the
/// allocator's run on the same area one after the other.
fn work(lib: &Lib, counters: usize) {
    let mut keep: Vec<Box<[u8]>> = Vec::with_capacity(16);
    for i in 0..ROUNDS {
        (lib.inc)(counters as *mut c_long);
        if keep.len() == 16 {
            keep.swap_remove(i % 16);
        }
        keep.push(vec![i as u8; 16 + i % 512].into_boxed_slice());
    }
}

/// More blocks than a CPU cache holds: they reach the allocator's slow
/// path, where a thread joins the registration.
fn allocate_past_the_cache() {
    let layout = Layout::from_size_align(8192, 8).unwrap();
    // SAFETY: blocks allocated with `layout` and freed with it.
    unsafe {
        let blocks: Vec<*mut u8> = (0..2000).map(|_| GLOBAL.alloc(layout)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        blocks.into_iter().for_each(|p| GLOBAL.dealloc(p, layout));
    }
}

/// Run as a child (`RSEQ_SHARE_CHILD=<lib path>`).
#[test]
fn child() {
    let Some(path) = std::env::var_os("RSEQ_SHARE_CHILD") else { return };
    // After: this thread allocated first, so the allocator registered.
    allocate_past_the_cache();
    assert_eq!(rseqalloc::stats().mode, Mode::RseqOwn);
    let lib = open(path.to_str().unwrap());
    assert_eq!((lib.register)(), 0, "after: the library registers after the allocator");
    assert!((lib.cpu)() >= 0);
    assert_eq!((lib.refcount)(), 2, "after: both users counted");
    let counters: &'static mut [c_long] = Box::leak(vec![0; libc::CPU_SETSIZE as usize].into_boxed_slice());
    let base = counters.as_mut_ptr() as usize;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                let lib = open(std::env::var("RSEQ_SHARE_CHILD").unwrap().as_str());
                // Before: the library registers this thread first.
                assert_eq!((lib.register)(), 0, "before: the library registers first");
                allocate_past_the_cache();
                assert_eq!((lib.refcount)(), 2, "before: the allocator counted itself in");
                work(&lib, base);
                assert_eq!((lib.unregister)(), 0);
                assert!((lib.cpu)() >= 0, "before: still registered for the allocator");
                allocate_past_the_cache();
            })
        })
        .collect();
    work(&lib, base);
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!((lib.unregister)(), 0);
    assert!((lib.cpu)() >= 0, "after: still registered for the allocator");
    allocate_past_the_cache();
    let sum: c_long = counters.iter().sum();
    assert_eq!(sum as usize, ROUNDS * (THREADS + 1), "per-CPU counters add up");
    let s = rseqalloc::stats();
    assert!(s.totals.alloc_hits > ROUNDS as u64, "the allocator's sections hit: {}", s.totals.alloc_hits);
    println!("rseq_share: {sum} increments in the library's sections, {} allocator hits", s.totals.alloc_hits);
}

/// Run as a child under glibc's registration (`RSEQ_SHARE_GLIBC=<lib>`):
/// a library of the convention cannot register beside glibc's area (one
/// area per thread: EINVAL), before or after our first allocation, exactly
/// as without rseqalloc, and allocation goes on.
#[test]
fn child_glibc() {
    let Some(path) = std::env::var_os("RSEQ_SHARE_GLIBC") else { return };
    allocate_past_the_cache();
    if rseqalloc::stats().mode != Mode::RseqGlibc {
        println!("rseq_share: glibc registered no area here (old glibc or kernel)");
        return;
    }
    let refused = |lib: &Lib| {
        assert_eq!((lib.register)(), -1, "the library registers beside glibc's area");
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINVAL));
        assert_eq!((lib.refcount)(), 0);
        assert!((lib.cpu)() < 0);
    };
    refused(&open(path.to_str().unwrap()));
    std::thread::spawn(move || {
        let lib = open(path.to_str().unwrap());
        refused(&lib); // before this thread's first allocation
        allocate_past_the_cache();
    })
    .join()
    .unwrap();
    println!("rseq_share: refused beside glibc's area, as without rseqalloc");
}

/// Runs the test `child` of this binary as a child process, with `var`
/// naming the library (built once: the tests run in parallel) and glibc's
/// registration on or off; returns the child's output once it succeeded.
fn run_child(child: &str, var: &str, glibc_rseq: bool) -> String {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    let lib = LIB.get_or_init(build_lib);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(var, lib)
        .env("GLIBC_TUNABLES", if glibc_rseq { "glibc.pthread.rseq=1" } else { "glibc.pthread.rseq=0" })
        .env_remove("RSEQALLOC_MODE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    assert!(out.status.success(), "{child} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn a_library_of_the_convention_fails_beside_glibc_as_it_does_alone() {
    let stdout = run_child("child_glibc", "RSEQ_SHARE_GLIBC", true);
    assert!(
        stdout.contains("rseq_share: refused beside glibc's area") || stdout.contains("glibc registered no area here"),
        "{stdout}"
    );
}

#[test]
fn a_library_registering_rseq_shares_the_area_in_both_orders() {
    let stdout = run_child("child", "RSEQ_SHARE_CHILD", false);
    assert!(stdout.contains("rseq_share: 1000000 increments"), "{stdout}");
}
