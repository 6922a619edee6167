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

/// Checks the process runs in the expected mode and prints it.
pub fn check_mode(test: &str) {
    let stats = rseqalloc::stats();
    println!("{test}: mode {:?}, caches by {:?}", stats.mode, stats.cache_index);
    if let Some(want) = expected_mode() {
        assert_eq!(stats.mode, want, "{test}: wrong mode");
    }
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
