//! Runtime options: the `RSEQALLOC_*` environment variables, read once at
//! init without allocating. Each variable has one row in `VARIABLES`, which
//! the README mirrors and `RSEQALLOC_VERBOSE=1` prints.

use crate::os;
use crate::stats::Report;
use core::ffi::CStr;

/// Which per-CPU machinery the process may use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ModeRequest {
    /// rseq when the kernel and the thread registration allow it, else the fallback.
    Auto,
    /// rseq; if it is unavailable, a warning is printed and the fallback runs.
    Rseq,
    /// Mainline rseq even on a kernel with restart regions (the loader reads
    /// this one from the initial environment: `rseq::resolve`).
    Mainline,
    /// Never enter a critical section (debuggers, valgrind, rr).
    Fallback,
}

/// The options in force, read once by `Config::from_env`.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// `RSEQALLOC_MODE`.
    pub mode: ModeRequest,
    /// `RSEQALLOC_CPU_CACHE_BYTES`: bytes of objects one CPU's cache may hold.
    pub cpu_cache_bytes: usize,
    /// `RSEQALLOC_VERBOSE`: print the chosen mode and options at init.
    pub verbose: bool,
    /// `RSEQALLOC_STATS`: write the stats report to stderr at exit, as text
    /// or as one JSON object.
    pub stats_at_exit: Option<Report>,
    /// `RSEQALLOC_BAD_FREE`: what the C API does with a pointer it never
    /// handed out.
    #[cfg_attr(not(feature = "capi"), allow(dead_code))] // read by the C API only
    pub bad_free: BadFree,
    /// `RSEQALLOC_CHECK`: track every small object's state (exact double-free
    /// detection in the C API).
    #[cfg_attr(not(feature = "capi"), allow(dead_code))] // read by the C API only
    pub checked: bool,
    /// `RSEQALLOC_DECAY_MS`: how long free memory stays before it goes back
    /// to the OS (0: only on `release()` / `malloc_trim`).
    pub decay_ms: usize,
    /// `RSEQALLOC_BACKGROUND`: whether a background thread may do the
    /// decay, idle drains and capacity moves (else slow paths do the decay).
    pub background: bool,
    /// `RSEQALLOC_MEMBARRIER`: fence remote cache operations with
    /// membarrier-RSEQ (else by migrating onto the CPU).
    pub membarrier: bool,
}

/// What `free` and `realloc` do with an invalid pointer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BadFree {
    /// Print one line naming the pointer and abort (SIGABRT).
    Abort,
    /// Print the line, count it in the stats, and leave the pointer alone.
    Leak,
}

/// Default per-CPU cache budget. A cache only fills up to it with objects
/// the program freed, and idle caches are drained, so it is a ceiling, not
/// a cost; 2 MiB rather than 1 MiB roughly halved the misses of a workload
/// with many classes of large objects (rptest: 7.9% -> 4.4%) and raised
/// its throughput by 13-36% (BENCHMARKS.md).
pub const DEFAULT_CPU_CACHE_BYTES: usize = 2 << 20;

/// Default decay: jemalloc's dirty_decay_ms is 10 s, mimalloc's purge delay
/// 10 ms; 1 s returns a burst within seconds and costs little on a busy heap.
pub const DEFAULT_DECAY_MS: usize = 1000;

/// One documented variable: name, default, meaning.
pub struct Variable {
    /// The environment variable.
    pub name: &'static CStr,
    /// Its default as the user would write it.
    pub default: &'static str,
    /// One line on what it does.
    pub doc: &'static str,
}

/// Every variable rseqalloc reads.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: c"RSEQALLOC_MODE",
        default: "auto",
        doc: "auto | rseq | mainline | fallback: mainline never uses restart regions; fallback never enters a critical section (use under gdb)",
    },
    Variable {
        name: c"RSEQALLOC_MMCID",
        default: "1",
        doc: "1: index caches by mm_cid when the kernel offers it; 0: by CPU id (read from the initial environment, at load time)",
    },
    Variable {
        name: c"RSEQALLOC_CPU_CACHE_BYTES",
        default: "2097152",
        doc: "bytes of free objects one CPU's cache may hold (4096 .. 268435456)",
    },
    Variable { name: c"RSEQALLOC_VERBOSE", default: "0", doc: "1: print the mode and every option to stderr at init" },
    Variable {
        name: c"RSEQALLOC_STATS",
        default: "0",
        doc: "1: print the stats (mode, hits, restarts, bytes) to stderr at exit, headed by pid and program; json: one JSON object per process instead",
    },
    Variable {
        name: c"RSEQALLOC_BAD_FREE",
        default: "abort",
        doc: "abort | leak: what free/realloc of a pointer rseqalloc never handed out does (C API)",
    },
    Variable {
        name: c"RSEQALLOC_CHECK",
        default: "0",
        doc: "1: track every small block's state, so every double free is caught (C API; slower)",
    },
    Variable {
        name: c"RSEQALLOC_DECAY_MS",
        default: "1000",
        doc: "free memory goes back to the OS (MADV_DONTNEED) after 1-2x this long idle; 0: only on release/trim",
    },
    Variable {
        name: c"RSEQALLOC_BACKGROUND",
        default: "1",
        doc: "1: a thread, started once 4 MiB of freed memory wait, releases memory and drains idle caches; 0: slow paths do",
    },
    Variable {
        name: c"RSEQALLOC_MEMBARRIER",
        default: "1",
        doc: "1: fence remote cache operations with membarrier-RSEQ; 0: by migrating onto the CPU",
    },
];

impl Config {
    /// Reads the environment. A malformed value is reported on stderr and
    /// replaced by its default, so a typo never stops the program.
    pub fn from_env() -> Config {
        let mode = match os::getenv(c"RSEQALLOC_MODE") {
            None | Some(b"auto") | Some(b"") => ModeRequest::Auto,
            Some(b"rseq") => ModeRequest::Rseq,
            Some(b"mainline") => ModeRequest::Mainline,
            Some(b"fallback") => ModeRequest::Fallback,
            Some(_) => {
                warn(c"RSEQALLOC_MODE", b"auto, rseq, mainline or fallback");
                ModeRequest::Auto
            }
        };
        let bad_free = match os::getenv(c"RSEQALLOC_BAD_FREE") {
            None | Some(b"abort") | Some(b"") => BadFree::Abort,
            Some(b"leak") => BadFree::Leak,
            Some(_) => {
                warn(c"RSEQALLOC_BAD_FREE", b"abort or leak");
                BadFree::Abort
            }
        };
        Config {
            mode,
            cpu_cache_bytes: number(c"RSEQALLOC_CPU_CACHE_BYTES", DEFAULT_CPU_CACHE_BYTES, 4096, 1 << 28),
            verbose: flag(c"RSEQALLOC_VERBOSE", false),
            stats_at_exit: match os::getenv(c"RSEQALLOC_STATS") {
                Some(b"json") => Some(Report::Json),
                Some(b"text") => Some(Report::Text),
                Some(b"0" | b"1" | b"on" | b"off" | b"yes" | b"no" | b"true" | b"false") | None => {
                    flag(c"RSEQALLOC_STATS", false).then_some(Report::Text)
                }
                Some(_) => {
                    warn(c"RSEQALLOC_STATS", b"0, 1, text or json");
                    None
                }
            },
            bad_free,
            checked: flag(c"RSEQALLOC_CHECK", false),
            decay_ms: number(c"RSEQALLOC_DECAY_MS", DEFAULT_DECAY_MS, 0, 3_600_000),
            background: flag(c"RSEQALLOC_BACKGROUND", true),
            membarrier: flag(c"RSEQALLOC_MEMBARRIER", true),
        }
    }
}

fn flag(name: &CStr, default: bool) -> bool {
    match os::getenv(name) {
        None | Some(b"") => default,
        Some(b"1") | Some(b"on") | Some(b"yes") | Some(b"true") => true,
        Some(b"0") | Some(b"off") | Some(b"no") | Some(b"false") => false,
        Some(_) => {
            warn(name, b"0 or 1");
            default
        }
    }
}

fn number(name: &CStr, default: usize, min: usize, max: usize) -> usize {
    let Some(text) = os::getenv(name) else {
        return default;
    };
    match parse_decimal(text) {
        Some(v) if (min..=max).contains(&v) => v,
        _ => {
            warn(name, b"a decimal number in range");
            default
        }
    }
}

/// Parses an unsigned decimal number; None on anything else or overflow.
pub fn parse_decimal(text: &[u8]) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0usize, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(digit as usize)
    })
}

fn warn(name: &CStr, expected: &[u8]) {
    os::write_stderr(b"rseqalloc: ignoring ");
    os::write_stderr(name.to_bytes());
    os::write_stderr(b": expected ");
    os::write_stderr(expected);
    os::write_stderr(b"\n");
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn decimals_parse_strictly() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1048576"), Some(1 << 20));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"12k"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b"99999999999999999999999"), None);
    }
}
