//! Forced-restart stress: 4× more threads than CPUs run every critical
//! section (push, pop, batch push, batch pop) on tokens while SIGALRM fires
//! every 20 µs, a thread keeps flipping the workers' CPU affinities, and a
//! remote thread shrinks, drains and regrows random caches with the fenced
//! remote protocol. At the end every token must be accounted for exactly
//! once, and the restart counters must show that each kind of section was
//! restarted at least once. The remote thread visits the caches in turn, and
//! the run lasts until the workers have used as many caches as the process
//! has CPUs and a remote operation (stop, fence, spill) has taken tokens out
//! of each of them while the workers ran: at 64 vCPUs (the QEMU guest), the
//! fences reach all 64.
//!
//! In fallback mode (RSEQALLOC_MODE=fallback, or no rseq) the same traffic
//! goes through the locked path: tokens must be conserved, and nothing may
//! restart. Runs as its own process (harness = false) because it repoints
//! the critical sections at a test slab.

#[cfg(not(rseqalloc_test_hooks))]
fn main() {
    println!("stress_restarts: skipped: it drives rseqalloc::test_hooks, built with RSEQALLOC_TEST_HOOKS=1");
}

#[cfg(rseqalloc_test_hooks)]
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
#[cfg(rseqalloc_test_hooks)]
use std::sync::{Arc, Mutex};
#[cfg(rseqalloc_test_hooks)]
use std::time::{Duration, Instant};

#[cfg(rseqalloc_test_hooks)]
mod common;

#[cfg(rseqalloc_test_hooks)]
use rseqalloc::test_hooks::{self, Index, Slab};
#[cfg(rseqalloc_test_hooks)]
use rseqalloc::Mode;

#[cfg(rseqalloc_test_hooks)]
const TOKENS: usize = 8192;
/// Two classes whose stacks are kept small, so that pushes find them full
/// and pops find them empty often, and batches are partial.
#[cfg(rseqalloc_test_hooks)]
const CLASSES: [usize; 2] = [1, 9];
#[cfg(rseqalloc_test_hooks)]
const CAPACITY: usize = 48;
/// The run's limit: at least this, and 2 s per CPU (a 64-vCPU guest under
/// TCG runs every vCPU on the host's few cores).
#[cfg(rseqalloc_test_hooks)]
const MAX_SECONDS: u64 = 60;

#[cfg(rseqalloc_test_hooks)]
static SIGNALS: AtomicU64 = AtomicU64::new(0);

#[cfg(rseqalloc_test_hooks)]
extern "C" fn on_alarm(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

#[cfg(rseqalloc_test_hooks)]
fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_else(|_| "0".into());
    let highest = text.trim().split([',', '-']).filter_map(|s| s.parse::<usize>().ok()).max().unwrap_or(0);
    highest + 1
}

#[cfg(rseqalloc_test_hooks)]
struct Rng(u64);
#[cfg(rseqalloc_test_hooks)]
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Tokens a remote operation spilled, for workers to pick up again.
#[cfg(rseqalloc_test_hooks)]
static SPILLED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

#[cfg(rseqalloc_test_hooks)]
fn worker(
    slab: &Slab,
    seed: u64,
    mut mine: Vec<usize>,
    stop: &AtomicBool,
    tid: &AtomicI32,
    used: &[AtomicU64],
) -> Vec<usize> {
    tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    test_hooks::register_thread();
    let mut rng = Rng(seed | 1);
    let mut buf = [std::ptr::null_mut::<u8>(); 32];
    while !stop.load(Ordering::Relaxed) {
        // Which cache this round's sections (most likely) use.
        if let Some(n) = test_hooks::current_index().and_then(|i| used.get(i)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if mine.len() < 32 {
            mine.append(&mut SPILLED.lock().unwrap());
        }
        for _ in 0..256 {
            let r = rng.next();
            let class = CLASSES[(r & 1) as usize];
            match (r >> 1) % 4 {
                0 => {
                    if let Some(&t) = mine.last() {
                        if slab.push(class, t as *mut u8) {
                            mine.pop();
                        }
                    }
                }
                1 => {
                    if let Some(p) = slab.pop(class) {
                        mine.push(p as usize);
                    }
                }
                2 => {
                    let n = ((r >> 8) as usize % 32 + 1).min(mine.len());
                    let items: Vec<*mut u8> = mine[mine.len() - n..].iter().map(|&t| t as *mut u8).collect();
                    let k = slab.push_batch(class, &items);
                    // The section pushed items[..k]: drop exactly those.
                    let start = mine.len() - n;
                    mine.drain(start..start + k);
                }
                _ => {
                    let n = (r >> 8) as usize % 32 + 1;
                    let k = slab.pop_batch(class, &mut buf[..n]);
                    mine.extend(buf[..k].iter().map(|&p| p as usize));
                }
            }
        }
    }
    mine
}

#[cfg(rseqalloc_test_hooks)]
fn main() {
    let ncpu = possible_cpus();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // RSEQALLOC_TEST_QUICK=1 (valgrind, which runs one thread at a time and
    // delivers each signal slowly): fewer threads, a gentler timer, 1 s.
    let quick = std::env::var_os("RSEQALLOC_TEST_QUICK").is_some();
    let threads = if quick { 2 } else { 4 * cpus.max(2) };
    let (tick_us, run_for) = if quick { (2000, Duration::from_secs(1)) } else { (20, Duration::from_secs(2)) };
    // SAFETY: this process never allocates through RseqAlloc; the slab is
    // installed before any worker exists.
    let slab = Arc::new(unsafe { Slab::install(ncpu, 1 << 20, Index::Real) });
    let mode = slab.mode();
    for cpu in 0..ncpu {
        for class in CLASSES {
            slab.grow(cpu, class, CAPACITY);
        }
    }
    println!(
        "stress: mode {mode:?}, caches by {:?}, {threads} threads on {cpus} CPUs, {ncpu} caches, {TOKENS} tokens",
        slab.cache_index()
    );
    if let Some(want) = common::expected_mode() {
        assert_eq!(mode, want, "stress: wrong mode");
    }

    // SIGALRM every 20 µs, delivered to whichever thread the kernel picks.
    common::alarm_every(tick_us, on_alarm);

    let stop = Arc::new(AtomicBool::new(false));
    let tids: Arc<Vec<AtomicI32>> = Arc::new((0..threads).map(|_| AtomicI32::new(0)).collect());
    let per = TOKENS / threads;
    // Per cache: rounds of worker sections on it, remote operations (and
    // their fences) on it, tokens those spilled.
    let counters = || Arc::new((0..ncpu).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let (used, remote_on, fenced, spilled_from) = (counters(), counters(), counters(), counters());
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let (slab, stop, tids, used) = (slab.clone(), stop.clone(), tids.clone(), used.clone());
            // Token values are multiples of 16, as real objects would be.
            let mine: Vec<usize> = (i * per..(i + 1) * per).map(|t| (t + 1) << 4).collect();
            std::thread::spawn(move || worker(&slab, i as u64 * 0x9E37_79B9 + 7, mine, &stop, &tids[i], &used))
        })
        .collect();

    // The migrator: pin a random worker to a random CPU, or release it.
    let migrations = Arc::new(AtomicU64::new(0));
    let migrator = {
        let (stop, tids, migrations) = (stop.clone(), tids.clone(), migrations.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(12345);
            while !stop.load(Ordering::Relaxed) {
                let r = rng.next();
                let tid = tids[r as usize % tids.len()].load(Ordering::Relaxed);
                if tid != 0 {
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        if r & 0x100 == 0 {
                            libc::CPU_SET((r >> 16) as usize % cpus, &mut set);
                        } else {
                            (0..cpus).for_each(|c| libc::CPU_SET(c, &mut set));
                        }
                        if libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) == 0 {
                            migrations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    // The remote thread: visit the caches in turn and shrink (often to
    // nothing) a random class of each while its CPU may be pushing and
    // popping, keep what spills, and grow it back now and then.
    let remote_ops = Arc::new(AtomicU64::new(0));
    let remote = {
        let (slab, stop, remote_ops) = (slab.clone(), stop.clone(), remote_ops.clone());
        let (remote_on, fenced, spilled_from) = (remote_on.clone(), fenced.clone(), spilled_from.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(999);
            let mut spilled = 0;
            let mut cpu = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = rng.next();
                cpu = (cpu + 1) % ncpu;
                let class = CLASSES[(r >> 8) as usize % 2];
                let capacity = (r >> 16) as usize % (CAPACITY + 1);
                let out = slab.shrink_remote(cpu, class, capacity, || {
                    slab.fence(cpu);
                    fenced[cpu].fetch_add(1, Ordering::Relaxed);
                });
                remote_on[cpu].fetch_add(1, Ordering::Relaxed);
                spilled_from[cpu].fetch_add(out.len() as u64, Ordering::Relaxed);
                spilled += out.len();
                SPILLED.lock().unwrap().extend(out.into_iter().map(|p| p as usize));
                if r & (1 << 40) == 0 {
                    slab.grow(cpu, class, CAPACITY);
                }
                remote_ops.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(100));
            }
            spilled
        })
    };

    // Run until every section restarted at least once and the remote
    // operations reached every cache the workers used, as many as there
    // are CPUs (or the limit).
    let start = Instant::now();
    let rseq = mode != Mode::Fallback;
    let limit = Duration::from_secs(MAX_SECONDS.max(2 * cpus as u64));
    let want = cpus.min(threads).min(ncpu);
    // The caches the workers used, and those of them nothing spilled from yet.
    let reach = || {
        let used: Vec<usize> = (0..ncpu).filter(|&i| used[i].load(Ordering::Relaxed) > 0).collect();
        let unreached = used.iter().copied().filter(|&i| spilled_from[i].load(Ordering::Relaxed) == 0).collect();
        (used, unreached)
    };
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let r = test_hooks::restarts();
        let (used, unreached): (Vec<usize>, Vec<usize>) = reach();
        let done = if rseq {
            r.iter().all(|&n| n > 0) && used.len() >= want && unreached.is_empty() && start.elapsed() > run_for
        } else {
            start.elapsed() > run_for
        };
        if done || start.elapsed() > limit {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut held: Vec<usize> = Vec::with_capacity(TOKENS);
    for w in workers {
        held.extend(w.join().expect("worker panicked"));
    }
    migrator.join().unwrap();
    let spilled_count = remote.join().expect("remote thread panicked");
    held.append(&mut SPILLED.lock().unwrap());
    common::stop_alarm();

    let cached = Mutex::new(0usize);
    for cpu in 0..ncpu {
        for class in CLASSES {
            let drained = slab.drain(cpu, class);
            *cached.lock().unwrap() += drained.len();
            held.extend(drained.into_iter().map(|p| p as usize));
        }
    }
    let restarts = test_hooks::restarts();
    let (used_caches, unreached) = reach();
    let least = |v: &[AtomicU64]| used_caches.iter().map(|&i| v[i].load(Ordering::Relaxed)).min().unwrap_or(0);
    println!(
        "stress: workers used {} caches (of {cpus} CPUs); each saw at least {} remote operations, {} fences and {} tokens spilled",
        used_caches.len(),
        least(&remote_on),
        least(&fenced),
        least(&spilled_from)
    );
    println!(
        "stress: {:.1} s, {} signals, {} migrations, {} remote operations ({} tokens spilled), {} tokens cached at the end",
        start.elapsed().as_secs_f64(),
        SIGNALS.load(Ordering::Relaxed),
        migrations.load(Ordering::Relaxed),
        remote_ops.load(Ordering::Relaxed),
        spilled_count,
        cached.into_inner().unwrap()
    );
    println!(
        "stress: restarts pop {}, push {}, pop batch {}, push batch {}",
        restarts[0], restarts[1], restarts[2], restarts[3]
    );

    held.sort_unstable();
    let expected: Vec<usize> = (0..per * threads).map(|t| (t + 1) << 4).collect();
    let lost = expected.len() as i64 - held.len() as i64;
    held.dedup();
    assert_eq!(held.len() as i64 + lost, expected.len() as i64, "a token was duplicated");
    assert_eq!(held, expected, "tokens were lost or invented");
    assert!(remote_ops.load(Ordering::Relaxed) > 0, "the remote thread never ran");
    if rseq {
        for (name, n) in ["pop", "push", "pop batch", "push batch"].iter().zip(restarts) {
            assert!(n > 0, "the {name} section was never restarted");
        }
        assert!(used_caches.len() >= want, "workers used only caches {used_caches:?}, fewer than the {want} CPUs");
        assert!(unreached.is_empty(), "no remote operation spilled from caches {unreached:?} the workers used");
    } else {
        assert_eq!(restarts, [0; 4], "the fallback must never enter a section");
    }
    println!("stress: all {} tokens accounted for", expected.len());
    println!("stress_restarts: 1 passed, 0 failed");
}
