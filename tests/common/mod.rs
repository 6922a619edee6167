//! Helpers shared by the test binaries that run with `RseqAlloc` installed.
#![allow(dead_code)] // each test binary uses a different subset

use rseqalloc::Mode;

/// The mode the test runner says this run must be in
/// (`RSEQALLOC_EXPECT_MODE=glibc|own|fallback|region`), if it says.
pub fn expected_mode() -> Option<Mode> {
    match std::env::var("RSEQALLOC_EXPECT_MODE").ok()?.as_str() {
        "glibc" => Some(Mode::RseqGlibc),
        "own" => Some(Mode::RseqOwn),
        "fallback" => Some(Mode::Fallback),
        "region" => Some(Mode::Region),
        other => panic!("RSEQALLOC_EXPECT_MODE={other}: expected glibc, own, fallback or region"),
    }
}

/// Checks the process runs in the expected mode and prints it. The
/// allocator comes up at its first allocation, so this makes one.
pub fn check_mode(test: &str) {
    let layout = std::alloc::Layout::new::<u64>();
    // SAFETY: a block of `layout`, freed with it.
    unsafe {
        use std::alloc::GlobalAlloc;
        rseqalloc::RseqAlloc.dealloc(rseqalloc::RseqAlloc.alloc(layout), layout);
    }
    let stats = rseqalloc::stats();
    println!("{test}: mode {:?}, caches by {:?}", stats.mode, stats.cache_index);
    if let Some(want) = expected_mode() {
        assert_eq!(stats.mode, want, "{test}: wrong mode");
    }
}

/// Delivers SIGALRM to `handler` every `us` microseconds, to whichever
/// thread the kernel picks: signals force restarts of sections in flight.
pub fn alarm_every(us: i64, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: installs a handler the caller provides (it must be
    // async-signal-safe) and arms the process's real-time timer.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let t = libc::timeval { tv_sec: 0, tv_usec: us };
        libc::setitimer(libc::ITIMER_REAL, &libc::itimerval { it_interval: t, it_value: t }, std::ptr::null_mut());
    }
}

/// Stops the timer `alarm_every` started.
pub fn stop_alarm() {
    // SAFETY: disarms the process's real-time timer.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &std::mem::zeroed(), std::ptr::null_mut()) };
}

/// A small xorshift generator: deterministic, allocation-free.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
