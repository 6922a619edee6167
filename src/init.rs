//! Brings the allocator up once per process: reads the options, chooses the
//! rseq mode, reserves the arena, maps the per-CPU regions, and publishes
//! them to the critical sections. Allocates nothing, so a first allocation
//! from anywhere (std's runtime, a libc constructor) can trigger it.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::config::{Config, VARIABLES};
use crate::{os, pagemap, percpu, rseq};

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Whether the allocator is up; brings it up on the first call. False only
/// if the kernel refused the memory for the arena or the regions.
#[inline]
pub fn ensure() -> bool {
    STATE.load(Ordering::Acquire) == READY || ensure_slow()
}

#[cold]
fn ensure_slow() -> bool {
    match STATE.compare_exchange(UNINIT, RUNNING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {
            let ok = bring_up();
            STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
            ok
        }
        Err(_) => loop {
            // Another thread is bringing it up; it takes microseconds.
            match STATE.load(Ordering::Acquire) {
                RUNNING => os::yield_now(),
                state => return state == READY,
            }
        },
    }
}

fn bring_up() -> bool {
    let config = Config::from_env();
    let ncpu = percpu::possible_cpus();
    if !pagemap::init() {
        return false;
    }
    let Some(slabs) = percpu::map_slabs(ncpu, config.cpu_cache_bytes) else {
        return false;
    };
    let (mode, area_off) = rseq::choose_mode(&config);
    let index = rseq::choose_index(&config, mode);
    rseq::publish(mode, index, area_off, slabs, ncpu as u32);
    if config.verbose {
        report(mode, index, ncpu);
    }
    true
}

fn report(mode: rseq::Mode, index: rseq::CacheIndex, ncpu: usize) {
    let mut line = crate::stats::Line::new();
    let _ = core::fmt::write(&mut line, format_args!("rseqalloc: mode {mode:?}, caches by {index:?}, {ncpu} caches\n"));
    line.flush();
    for var in VARIABLES {
        let name = var.name.to_str().unwrap_or("?");
        let value = os::getenv(var.name).map(|v| core::str::from_utf8(v).unwrap_or("?"));
        let _ = core::fmt::write(
            &mut line,
            format_args!("rseqalloc:   {name} = {} (default {}): {}\n", value.unwrap_or("unset"), var.default, var.doc),
        );
        line.flush();
    }
}
