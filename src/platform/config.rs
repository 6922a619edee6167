//! Runtime options: one table, [`OPTIONS`], with a row per `RSEQALLOC_*`
//! variable (its default, what it accepts, what it means). The parsed
//! [`Config`], the README's configuration table (checked by a test),
//! `RSEQALLOC_VERBOSE` and every message about a bad value or an unknown
//! name come from that table, and the load-time readers in `rseq::resolve`
//! parse with the same functions. A value comes from the environment if set
//! and valid, else from code ([`Options`], given to `RseqAlloc::with`), else
//! the row's default. Nothing here allocates. On a target without the
//! per-CPU path only the builder is used (`RseqAlloc` forwards).
#![cfg_attr(not(rseqalloc_percpu), allow(dead_code))]

use core::ffi::CStr;
use core::fmt;
#[cfg(rseqalloc_percpu)]
use core::fmt::Write as _;
#[cfg(rseqalloc_percpu)]
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::platform::decimal::parse_decimal;
#[cfg(rseqalloc_percpu)]
use crate::platform::os::{self, Line};

/// Which per-CPU machinery the process may use (`RSEQALLOC_MODE`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ModeRequest {
    /// rseq when the kernel and the thread registration allow it, else the fallback.
    Auto,
    /// rseq; if it is unavailable, a warning is printed and the fallback runs.
    Rseq,
    /// Mainline rseq even on a kernel with restart regions. The loader
    /// decides this before any code runs, so only the environment sets it.
    Mainline,
    /// Never enter a critical section (debuggers, valgrind, rr).
    Fallback,
}

/// What `free` and `realloc` of the C API do with a pointer rseqalloc never
/// handed out (`RSEQALLOC_BAD_FREE`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BadFree {
    /// Print one line naming the pointer and abort (SIGABRT).
    Abort,
    /// Print the line, count it in the stats, and leave the pointer alone.
    Leak,
}

/// How a stats report is written (`RSEQALLOC_STATS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Report {
    /// Text under a header line naming pid and program.
    Text,
    /// One line holding one JSON object, whose first members are `pid` and
    /// `program`.
    Json,
}

/// The options in force, one field per `RSEQALLOC_*` variable, read once
/// at the first allocation ([`Stats::config`](crate::Stats::config)).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Config {
    /// `RSEQALLOC_MODE`.
    pub mode: ModeRequest,
    /// `RSEQALLOC_MMCID`: index caches by `mm_cid` where the kernel offers it.
    pub mm_cid: bool,
    /// `RSEQALLOC_CPU_CACHE_BYTES`: bytes of objects one CPU's cache may hold.
    pub cpu_cache_bytes: usize,
    /// `RSEQALLOC_VERBOSE`: print the chosen mode and options at init.
    pub verbose: bool,
    /// `RSEQALLOC_STATS`: the stats report written to stderr at exit, if any.
    pub stats_at_exit: Option<Report>,
    /// `RSEQALLOC_BAD_FREE` (C API).
    pub bad_free: BadFree,
    /// `RSEQALLOC_CHECK`: track every small object's state (exact
    /// double-free detection in the C API).
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

/// Default per-CPU cache budget. A cache only fills up to it with objects
/// the program freed, and idle caches are drained, so it is a ceiling, not
/// a cost; 2 MiB rather than 1 MiB roughly halved the misses of a workload
/// with many classes of large objects (rptest: 7.9% -> 4.4%) and raised
/// its throughput by 13-36% (BENCHMARKS.md).
pub const DEFAULT_CPU_CACHE_BYTES: usize = 2 << 20;

/// Default decay: jemalloc's dirty_decay_ms is 10 s, mimalloc's purge delay
/// 10 ms; 1 s returns a burst within seconds and costs little on a busy heap.
pub const DEFAULT_DECAY_MS: usize = 1000;

/// A word of an option's value (at most 8 bytes), packed into an integer.
/// The load-time readers (`rseq::resolve`) may run before their object is
/// relocated and before libc's `memcmp` can be called: comparing packed
/// words needs neither a call nor a pointer read from static data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Word {
    bits: u64,
    len: usize,
}

impl Word {
    /// `text` packed; it must be 1 to 8 bytes (checked when a table is built).
    const fn new(text: &str) -> Word {
        let bytes = text.as_bytes();
        assert!(!bytes.is_empty() && bytes.len() <= 8);
        let mut buf = [0u8; 8];
        let mut i = 0;
        while i < bytes.len() {
            buf[i] = bytes[i];
            i += 1;
        }
        Word { bits: u64::from_le_bytes(buf), len: bytes.len() }
    }

    /// The first `len` bytes of `buf` as a word; None if `len` is over 8.
    #[inline]
    pub fn from_buf(buf: [u8; 8], len: usize) -> Option<Word> {
        let mask = match len {
            0..=7 => (1u64 << (8 * len)) - 1,
            8 => !0,
            _ => return None,
        };
        Some(Word { bits: u64::from_le_bytes(buf) & mask, len })
    }

    /// `text` as a word; None if it is longer than 8 bytes.
    fn from_bytes(text: &[u8]) -> Option<Word> {
        let mut buf = [0u8; 8];
        buf.get_mut(..text.len())?.copy_from_slice(text);
        Word::from_buf(buf, text.len())
    }

    fn write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let bytes = self.bits.to_le_bytes();
        out.write_str(core::str::from_utf8(&bytes[..self.len]).unwrap_or("?"))
    }
}

/// The words a yes/no option accepts: at an even index they mean no, at an
/// odd one yes.
pub const FLAG_WORDS: [Word; 8] = [
    Word::new("0"),
    Word::new("1"),
    Word::new("off"),
    Word::new("on"),
    Word::new("no"),
    Word::new("yes"),
    Word::new("false"),
    Word::new("true"),
];

/// `RSEQALLOC_MODE`'s words, in [`ModeRequest`] order.
pub const MODE_WORDS: [Word; 4] = [Word::new("auto"), Word::new("rseq"), Word::new("mainline"), Word::new("fallback")];
const MODES: [ModeRequest; 4] = [ModeRequest::Auto, ModeRequest::Rseq, ModeRequest::Mainline, ModeRequest::Fallback];

/// `RSEQALLOC_STATS`'s words besides yes and no (which mean text and none),
/// in [`Report`] order.
const STATS_WORDS: [Word; 2] = [Word::new("text"), Word::new("json")];

/// `RSEQALLOC_STATS`'s value in the table for `report`: no (0), yes (1,
/// text), or a word of `STATS_WORDS` (`Kind::FlagOr`: 2 + its index).
const fn stats_value(report: Option<Report>) -> usize {
    match report {
        None => 0,
        Some(Report::Text) => 1,
        Some(Report::Json) => 2 + Report::Json as usize,
    }
}

/// `RSEQALLOC_BAD_FREE`'s words, in [`BadFree`] order.
const BAD_FREE_WORDS: [Word; 2] = [Word::new("abort"), Word::new("leak")];

/// What a variable accepts. Every value is kept as a `usize`: 0 or 1 for
/// a flag, the word's index for a choice, the number itself.
pub enum Kind {
    /// Yes or no ([`FLAG_WORDS`]).
    Flag,
    /// Yes, no, or one of these words (values 2, 3, ...).
    FlagOr(&'static [Word]),
    /// One of these words.
    Choice(&'static [Word]),
    /// A decimal integer in `min..=max`.
    Number {
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
}

/// One row of the table.
pub struct Opt {
    /// The environment variable.
    pub name: &'static CStr,
    /// What it accepts.
    pub kind: Kind,
    /// The value used when neither the environment nor code sets it.
    pub default: usize,
    /// What it does (the README's "meaning" column, Markdown).
    pub doc: &'static str,
}

/// The options, by index into [`OPTIONS`].
#[derive(Clone, Copy)]
pub enum Id {
    /// `RSEQALLOC_MODE`
    Mode,
    /// `RSEQALLOC_MMCID`
    MmCid,
    /// `RSEQALLOC_CPU_CACHE_BYTES`
    CpuCacheBytes,
    /// `RSEQALLOC_VERBOSE`
    Verbose,
    /// `RSEQALLOC_STATS`
    Stats,
    /// `RSEQALLOC_BAD_FREE`
    BadFree,
    /// `RSEQALLOC_CHECK`
    Check,
    /// `RSEQALLOC_DECAY_MS`
    DecayMs,
    /// `RSEQALLOC_BACKGROUND`
    Background,
    /// `RSEQALLOC_MEMBARRIER`
    Membarrier,
}

/// Number of options.
pub const COUNT: usize = 10;

/// Every variable rseqalloc reads, in [`Id`] order.
pub const OPTIONS: [Opt; COUNT] = [
    Opt {
        name: c"RSEQALLOC_MODE",
        kind: Kind::Choice(&MODE_WORDS),
        default: ModeRequest::Auto as usize,
        doc: "`rseq` warns if rseq is unavailable; `mainline` never uses the kernel's restart regions; `fallback` never enters a critical section (use it under gdb). The loader reads `mainline` and `fallback` from the initial environment",
    },
    Opt {
        name: c"RSEQALLOC_MMCID",
        kind: Kind::Flag,
        default: 1,
        doc: "`1`: index caches by `mm_cid` where the kernel offers it; `0`: by CPU id. The loader reads it from the initial environment",
    },
    Opt {
        name: c"RSEQALLOC_CPU_CACHE_BYTES",
        kind: Kind::Number { min: 4096, max: 1 << 28 },
        default: DEFAULT_CPU_CACHE_BYTES,
        doc: "bytes of free objects one CPU cache may hold",
    },
    Opt {
        name: c"RSEQALLOC_VERBOSE",
        kind: Kind::Flag,
        default: 0,
        doc: "`1`: print the mode and every option (its value and where it came from) to stderr at start-up",
    },
    Opt {
        name: c"RSEQALLOC_STATS",
        kind: Kind::FlagOr(&STATS_WORDS),
        default: 0,
        doc: "`1` or `text`: print the stats (mode, hits, restarts, bytes, bad frees) to stderr at exit, headed by pid and program; `json`: one JSON object per process instead. Written without allocating (a program that closes stderr at exit, as GNU coreutils do, prints nothing)",
    },
    Opt {
        name: c"RSEQALLOC_BAD_FREE",
        kind: Kind::Choice(&BAD_FREE_WORDS),
        default: BadFree::Abort as usize,
        doc: "C API: `abort` after the diagnostic for a pointer rseqalloc never handed out, or `leak`: print, count (`bad frees`) and leave it alone (`realloc` then returns NULL, `ENOMEM`)",
    },
    Opt {
        name: c"RSEQALLOC_CHECK",
        kind: Kind::Flag,
        default: 0,
        doc: "C API: `1` tracks every small block's state in a bitmap (1/128 of the heap's window, touched only where the heap is; an atomic per allocation and free, and the caches run behind their try-locks, mode `Fallback`, so that every operation takes the slow path that flips the bit), so every double free of a small block is caught",
    },
    Opt {
        name: c"RSEQALLOC_DECAY_MS",
        kind: Kind::Number { min: 0, max: 3_600_000 },
        default: DEFAULT_DECAY_MS,
        doc: "free arena memory goes back to the OS (`MADV_DONTNEED`) after 1–2× this long unused, cached large mappings after this long, idle CPU caches are drained after 2×; `0`: only on `release()` / `malloc_trim`",
    },
    Opt {
        name: c"RSEQALLOC_BACKGROUND",
        kind: Kind::Flag,
        default: 1,
        doc: "`1`: a background thread, started when 4 MiB of freed memory wait in the page heap while the program runs threads of its own (never from a constructor, never in a single-threaded program), runs the decay, idle drains and capacity moves, and returns once nothing is left to give back or it is the last thread; `0`: no thread, slow paths run bounded decay steps when memory goes back to the page heap",
    },
    Opt {
        name: c"RSEQALLOC_MEMBARRIER",
        kind: Kind::Flag,
        default: 1,
        doc: "`1`: fence remote cache operations with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`; `0`: by migrating the fencing thread onto the CPU(s), the fallback where membarrier-RSEQ is missing",
    },
];

#[cfg(rseqalloc_percpu)]
/// `RSEQALLOC_*` names that our tools read, not the library: they are
/// not reported as unknown.
const TOOL_VARIABLES: [&CStr; 4] = [
    c"RSEQALLOC_LIB",         // bin/rseqalloc-run: where librseqalloc.so is
    c"RSEQALLOC_TEST_HOOKS",  // build.rs: builds the test hooks
    c"RSEQALLOC_EXPECT_MODE", // tests: the mode tests/run.sh expects
    c"RSEQALLOC_TEST_QUICK",  // tests: shorter runs (valgrind)
];

/// With the test hooks, the size in bytes of each arena reservation, so
/// that tests cross reservations (`pagemap`). Not an option: a build
/// without the hooks does not read it, and reports it as unknown.
#[cfg(all(rseqalloc_percpu, rseqalloc_test_hooks))]
pub const TEST_RESERVATION: &CStr = c"RSEQALLOC_TEST_RESERVATION";

/// Parses a yes/no value with the table's rules.
#[inline]
pub fn parse_flag(word: Word) -> Option<bool> {
    parse_choice(word, &FLAG_WORDS).map(|i| i % 2 == 1)
}

/// The index of `word` in `words`.
#[inline]
pub fn parse_choice(word: Word, words: &[Word]) -> Option<usize> {
    words.iter().position(|w| *w == word)
}

/// The [`ModeRequest`] with `RSEQALLOC_MODE`'s word number `index`.
#[inline]
pub fn mode_request(index: usize) -> ModeRequest {
    MODES.get(index).copied().unwrap_or(ModeRequest::Auto)
}

impl Kind {
    /// The value `text` sets, or None if this kind does not accept it.
    fn parse(&self, text: &[u8]) -> Option<usize> {
        match *self {
            Kind::Flag => parse_flag(Word::from_bytes(text)?).map(usize::from),
            Kind::FlagOr(words) => {
                let word = Word::from_bytes(text)?;
                parse_flag(word).map(usize::from).or_else(|| parse_choice(word, words).map(|i| i + 2))
            }
            Kind::Choice(words) => parse_choice(Word::from_bytes(text)?, words),
            Kind::Number { min, max } => parse_decimal(text).filter(|v| (min..=max).contains(v)),
        }
    }

    /// Writes `value` as a user would set it.
    fn write_value(&self, value: usize, out: &mut impl fmt::Write) -> fmt::Result {
        match *self {
            Kind::Flag => write!(out, "{value}"),
            Kind::FlagOr(_) if value < 2 => write!(out, "{value}"),
            Kind::FlagOr(words) => words.get(value - 2).map_or(Ok(()), |w| w.write(out)),
            Kind::Choice(words) => words.get(value).map_or(Ok(()), |w| w.write(out)),
            Kind::Number { .. } => write!(out, "{value}"),
        }
    }

    /// Writes what this kind accepts, as the README and the messages say it.
    fn write_accepted(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let words = match *self {
            Kind::Flag => return write_flag_words(out, &[]),
            Kind::FlagOr(words) => return write_flag_words(out, words),
            Kind::Choice(words) => words,
            Kind::Number { min, max } => return write!(out, "a decimal integer from {min} to {max}"),
        };
        for (i, word) in words.iter().enumerate() {
            out.write_str(match i {
                0 => "",
                i if i + 1 == words.len() => " or ",
                _ => ", ",
            })?;
            out.write_char('`')?;
            word.write(out)?;
            out.write_char('`')?;
        }
        Ok(())
    }
}

/// "`0`/`off`/`no`/`false` or `1`/`on`/`yes`/`true`", with `extra` words
/// before the "or" ("..., `1`/`on`/`yes`/`true`, `text` or `json`").
fn write_flag_words(out: &mut impl fmt::Write, extra: &[Word]) -> fmt::Result {
    let groups = 2 + extra.len();
    for group in 0..groups {
        out.write_str(match group {
            0 => "",
            g if g + 1 == groups => " or ",
            _ => ", ",
        })?;
        let words: &mut dyn Iterator<Item = &Word> = match group {
            0 => &mut FLAG_WORDS.iter().step_by(2),
            1 => &mut FLAG_WORDS.iter().skip(1).step_by(2),
            g => &mut extra[g - 2..g - 1].iter(),
        };
        for (i, word) in words.enumerate() {
            out.write_str(if i == 0 { "`" } else { "`/`" })?;
            word.write(out)?;
        }
        out.write_char('`')?;
    }
    Ok(())
}

#[cfg(rseqalloc_percpu)]
/// Where a value in force came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Default = 0,
    Code = 1,
    Environment = 2,
}

/// Options set in code: `static GLOBAL: RseqAlloc = RseqAlloc::with(Options::new().decay_ms(5000));`.
/// The first allocation through that allocator hands them to
/// initialisation; an `RSEQALLOC_*` variable set in the environment wins
/// over the same option set here. `RSEQALLOC_MMCID` and
/// `RSEQALLOC_MODE=mainline` are decided by the loader before any code
/// runs, so only the environment sets them.
///
/// Each setter panics on a value outside the option's range (the README's
/// table); in a `static` initialiser that is a compile-time error.
///
/// ```
/// use rseqalloc::{Options, RseqAlloc};
/// static GLOBAL: RseqAlloc = RseqAlloc::with(Options::new().decay_ms(5000).background(false));
/// assert_eq!(GLOBAL.options(), Options::new().background(false).decay_ms(5000));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Options {
    values: [usize; COUNT],
    /// Bit `Id as usize`: set in code.
    set: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Nothing set: every option from the environment or its default.
    pub const fn new() -> Options {
        let mut values = [0; COUNT];
        let mut i = 0;
        while i < COUNT {
            values[i] = OPTIONS[i].default;
            i += 1;
        }
        Options { values, set: 0 }
    }

    const fn with(mut self, id: Id, value: usize) -> Options {
        self.values[id as usize] = value;
        self.set |= 1 << id as u32;
        self
    }

    const fn number(self, id: Id, value: usize, what: &str) -> Options {
        if let Kind::Number { min, max } = OPTIONS[id as usize].kind {
            if value < min || value > max {
                panic!("{}", what);
            }
        }
        self.with(id, value)
    }

    /// `RSEQALLOC_MODE`: `Auto`, `Rseq` or `Fallback` (`Mainline` is the
    /// loader's choice: set it in the environment; here it panics).
    pub const fn mode(self, mode: ModeRequest) -> Options {
        if matches!(mode, ModeRequest::Mainline) {
            panic!("rseqalloc::Options::mode: Mainline is decided by the loader; set RSEQALLOC_MODE=mainline instead");
        }
        self.with(Id::Mode, mode as usize)
    }

    /// `RSEQALLOC_CPU_CACHE_BYTES`: 4096 to 268435456.
    pub const fn cpu_cache_bytes(self, bytes: usize) -> Options {
        self.number(Id::CpuCacheBytes, bytes, "rseqalloc::Options::cpu_cache_bytes: out of range (4096 to 268435456)")
    }

    /// `RSEQALLOC_VERBOSE`.
    pub const fn verbose(self, on: bool) -> Options {
        self.with(Id::Verbose, on as usize)
    }

    /// `RSEQALLOC_STATS`: the report written at exit, if any.
    pub const fn stats_at_exit(self, report: Option<Report>) -> Options {
        self.with(Id::Stats, stats_value(report))
    }

    /// `RSEQALLOC_BAD_FREE` (C API).
    pub const fn bad_free(self, what: BadFree) -> Options {
        self.with(Id::BadFree, what as usize)
    }

    /// `RSEQALLOC_CHECK` (C API).
    pub const fn checked(self, on: bool) -> Options {
        self.with(Id::Check, on as usize)
    }

    /// `RSEQALLOC_DECAY_MS`: 0 to 3600000.
    pub const fn decay_ms(self, ms: usize) -> Options {
        self.number(Id::DecayMs, ms, "rseqalloc::Options::decay_ms: out of range (0 to 3600000)")
    }

    /// `RSEQALLOC_BACKGROUND`.
    pub const fn background(self, on: bool) -> Options {
        self.with(Id::Background, on as usize)
    }

    /// `RSEQALLOC_MEMBARRIER`.
    pub const fn membarrier(self, on: bool) -> Options {
        self.with(Id::Membarrier, on as usize)
    }
}

#[cfg(rseqalloc_percpu)]
impl Options {
    /// Whether nothing is set (then there is nothing to hand over).
    #[inline(always)]
    pub(crate) const fn is_empty(&self) -> bool {
        self.set == 0
    }

    /// Whether initialisation no longer needs these: nothing is set, or
    /// some options from code were handed over already.
    #[inline(always)]
    pub(crate) fn handed_over(&self) -> bool {
        self.is_empty() || CODE_STATE.load(Ordering::Acquire) == CODE_READY
    }

    /// Hands these options to initialisation, if no other options from code
    /// came first; returns whether these are the ones.
    #[cold]
    pub(crate) fn hand_over(&self) -> bool {
        match CODE_STATE.compare_exchange(CODE_NONE, CODE_WRITING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                for (slot, value) in CODE_VALUES.iter().zip(self.values) {
                    slot.store(value, Ordering::Relaxed);
                }
                CODE_SET.store(self.set, Ordering::Relaxed);
                CODE_STATE.store(CODE_READY, Ordering::Release);
                true
            }
            Err(_) => {
                while CODE_STATE.load(Ordering::Acquire) != CODE_READY {
                    os::yield_now();
                }
                false
            }
        }
    }

    /// The options handed over, or none.
    fn handed() -> Options {
        if CODE_STATE.load(Ordering::Acquire) != CODE_READY {
            return Options::new();
        }
        let mut options = Options { values: [0; COUNT], set: CODE_SET.load(Ordering::Relaxed) };
        for (value, slot) in options.values.iter_mut().zip(&CODE_VALUES) {
            *value = slot.load(Ordering::Relaxed);
        }
        options
    }
}

#[cfg(rseqalloc_percpu)]
const CODE_NONE: u8 = 0;
#[cfg(rseqalloc_percpu)]
const CODE_WRITING: u8 = 1;
#[cfg(rseqalloc_percpu)]
const CODE_READY: u8 = 2;
#[cfg(rseqalloc_percpu)]
/// Options from code: none yet, being written, or written (`hand_over`).
static CODE_STATE: AtomicU8 = AtomicU8::new(CODE_NONE);
#[cfg(rseqalloc_percpu)]
static CODE_VALUES: [AtomicUsize; COUNT] = [const { AtomicUsize::new(0) }; COUNT];
#[cfg(rseqalloc_percpu)]
static CODE_SET: AtomicU32 = AtomicU32::new(0);
#[cfg(rseqalloc_percpu)]
/// Whether `Config::load` found options from code (so they are in force).
static CODE_USED: AtomicBool = AtomicBool::new(false);

#[cfg(rseqalloc_percpu)]
/// The values in force and where each came from, once `Config::load` ran.
static LOADED: AtomicBool = AtomicBool::new(false);
#[cfg(rseqalloc_percpu)]
static IN_FORCE: [AtomicUsize; COUNT] = [const { AtomicUsize::new(0) }; COUNT];
#[cfg(rseqalloc_percpu)]
static SOURCES: [AtomicU8; COUNT] = [const { AtomicU8::new(Source::Default as u8) }; COUNT];

#[cfg(rseqalloc_percpu)]
impl Config {
    /// Reads every option: the environment, else the options handed over
    /// from code, else the defaults. A value the table does not accept is
    /// reported on stderr (the variable, the value, what is accepted, the
    /// value used) and replaced; so is an unknown `RSEQALLOC_*` name. The
    /// result is kept for [`in_force`] and `print_in_force`.
    pub fn load() -> Config {
        let code = Options::handed();
        CODE_USED.store(CODE_STATE.load(Ordering::Acquire) == CODE_READY, Ordering::Relaxed);
        let mut values = [0usize; COUNT];
        for (i, opt) in OPTIONS.iter().enumerate() {
            let from_code = code.set & (1 << i) != 0;
            let fallback = (code.values[i], if from_code { Source::Code } else { Source::Default });
            let (value, source) = match os::getenv(opt.name) {
                None => fallback,
                Some(text) => match opt.kind.parse(text) {
                    Some(value) => (value, Source::Environment),
                    None => {
                        report_invalid(opt, text, fallback.0, fallback.1);
                        fallback
                    }
                },
            };
            values[i] = value;
            IN_FORCE[i].store(value, Ordering::Relaxed);
            SOURCES[i].store(source as u8, Ordering::Relaxed);
        }
        LOADED.store(true, Ordering::Release);
        report_unknown_names();
        Config::from_values(&values)
    }
}

impl Config {
    fn from_values(v: &[usize; COUNT]) -> Config {
        let flag = |id: Id| v[id as usize] != 0;
        Config {
            mode: mode_request(v[Id::Mode as usize]),
            mm_cid: flag(Id::MmCid),
            cpu_cache_bytes: v[Id::CpuCacheBytes as usize],
            verbose: flag(Id::Verbose),
            stats_at_exit: match v[Id::Stats as usize] {
                0 => None,
                v if v == stats_value(Some(Report::Json)) => Some(Report::Json),
                _ => Some(Report::Text),
            },
            bad_free: if v[Id::BadFree as usize] == BadFree::Leak as usize { BadFree::Leak } else { BadFree::Abort },
            checked: flag(Id::Check),
            decay_ms: v[Id::DecayMs as usize],
            background: flag(Id::Background),
            membarrier: flag(Id::Membarrier),
        }
    }
}

/// One option in force: its variable and value ([`Config::options`]);
/// `Display` writes the value as a user would set it.
#[derive(Clone, Copy)]
pub(crate) struct OptionValue {
    opt: &'static Opt,
    value: usize,
}

impl OptionValue {
    /// The variable's name.
    pub(crate) fn name(&self) -> &'static str {
        self.opt.name.to_str().unwrap_or("?")
    }
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.opt.kind.write_value(self.value, f)
    }
}

impl Config {
    /// Every option with its value, in the table's order (the stats
    /// report's `options`).
    pub(crate) fn options(&self) -> impl Iterator<Item = OptionValue> {
        let values = self.values();
        OPTIONS.iter().zip(values).map(|(opt, value)| OptionValue { opt, value })
    }

    /// The table's values of these options (`from_values` undone).
    fn values(&self) -> [usize; COUNT] {
        let mut v = [0; COUNT];
        v[Id::Mode as usize] = MODES.iter().position(|m| *m == self.mode).unwrap_or(0);
        v[Id::MmCid as usize] = self.mm_cid as usize;
        v[Id::CpuCacheBytes as usize] = self.cpu_cache_bytes;
        v[Id::Verbose as usize] = self.verbose as usize;
        v[Id::Stats as usize] = stats_value(self.stats_at_exit);
        v[Id::BadFree as usize] = self.bad_free as usize;
        v[Id::Check as usize] = self.checked as usize;
        v[Id::DecayMs as usize] = self.decay_ms;
        v[Id::Background as usize] = self.background as usize;
        v[Id::Membarrier as usize] = self.membarrier as usize;
        v
    }
}

/// Every option at its default.
impl Default for Config {
    fn default() -> Config {
        Config::from_values(&Options::new().values)
    }
}

#[cfg(rseqalloc_percpu)]
/// The options in force (the defaults before the first allocation).
pub fn in_force() -> Config {
    if !LOADED.load(Ordering::Acquire) {
        return Config::default();
    }
    let mut values = [0usize; COUNT];
    for (value, slot) in values.iter_mut().zip(&IN_FORCE) {
        *value = slot.load(Ordering::Relaxed);
    }
    Config::from_values(&values)
}

#[cfg(rseqalloc_percpu)]
/// Whether the options handed over from code are in force; false when
/// initialisation had begun before they were handed over.
pub fn code_options_used() -> bool {
    CODE_USED.load(Ordering::Relaxed)
}

#[cfg(rseqalloc_percpu)]
/// Prints every option in force, where it came from, its default and its
/// meaning (`RSEQALLOC_VERBOSE=1`).
pub fn print_in_force() {
    let mut line = Line::new();
    for (i, opt) in OPTIONS.iter().enumerate() {
        let source = match SOURCES[i].load(Ordering::Relaxed) {
            1 => "code",
            2 => "environment",
            _ => "default",
        };
        let _ = write!(line, "rseqalloc:   {}=", opt.name.to_str().unwrap_or("?"));
        let _ = opt.kind.write_value(IN_FORCE[i].load(Ordering::Relaxed), &mut line);
        let _ = write!(line, " ({source}; default ");
        let _ = opt.kind.write_value(opt.default, &mut line);
        let _ = writeln!(line, "): {}", opt.doc);
        line.flush();
    }
}

#[cfg(rseqalloc_percpu)]
/// `rseqalloc: NAME="value" is not valid: expected …; using V (the default)`.
fn report_invalid(opt: &Opt, text: &[u8], used: usize, source: Source) {
    let mut line = Line::new();
    let _ = write!(line, "rseqalloc: {}=\"", opt.name.to_str().unwrap_or("?"));
    let _ = write_escaped(text, &mut line);
    let _ = line.write_str("\" is not valid: expected ");
    let _ = opt.kind.write_accepted(&mut line);
    let _ = line.write_str("; using ");
    let _ = opt.kind.write_value(used, &mut line);
    let _ = line.write_str(if source == Source::Code { " (set in code)\n" } else { " (the default)\n" });
    line.flush();
}

#[cfg(rseqalloc_percpu)]
/// Writes up to 64 bytes of `text`, printable ASCII as is, others as `\xNN`.
fn write_escaped(text: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    for &b in text.iter().take(64) {
        match b {
            b'"' | b'\\' => write!(out, "\\{}", b as char)?,
            0x20..=0x7e => out.write_char(b as char)?,
            _ => write!(out, "\\x{b:02x}")?,
        }
    }
    if text.len() > 64 {
        out.write_str("...")?;
    }
    Ok(())
}

#[cfg(rseqalloc_percpu)]
extern "C" {
    /// The process environment (POSIX).
    static environ: *const *const core::ffi::c_char;
}

#[cfg(rseqalloc_percpu)]
/// Reports every `RSEQALLOC_*` variable that is neither in the table nor
/// one of our tools', with the nearest known name when one is close.
fn report_unknown_names() {
    // SAFETY: `environ` is null or a null-terminated array of C strings;
    // nobody calls setenv while the allocator initialises.
    let mut entry = unsafe { environ };
    while !entry.is_null() {
        // SAFETY: as above: `entry` points into the array.
        let text = unsafe { *entry };
        if text.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated "NAME=value".
        let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
        let name = bytes.split(|&b| b == b'=').next().unwrap_or(bytes);
        if is_unknown(name) {
            report_unknown(name);
        }
        // SAFETY: the array ends with a null entry, not yet reached.
        entry = unsafe { entry.add(1) };
    }
}

#[cfg(rseqalloc_percpu)]
/// Whether `name` starts with `RSEQALLOC_` but is neither in the table
/// nor a tool's (nor, with the test hooks, `TEST_RESERVATION`).
fn is_unknown(name: &[u8]) -> bool {
    #[cfg(rseqalloc_test_hooks)]
    if name == TEST_RESERVATION.to_bytes() {
        return false;
    }
    name.starts_with(b"RSEQALLOC_")
        && !OPTIONS.iter().any(|opt| opt.name.to_bytes() == name)
        && !TOOL_VARIABLES.iter().any(|tool| tool.to_bytes() == name)
}

#[cfg(rseqalloc_percpu)]
fn report_unknown(name: &[u8]) {
    let mut line = Line::new();
    let _ = line.write_str("rseqalloc: ");
    let _ = write_escaped(name, &mut line);
    let _ = line.write_str(" is not a variable rseqalloc reads; ignored");
    let nearest = OPTIONS.iter().map(|opt| (distance(name, opt.name.to_bytes()), opt.name)).min_by_key(|(d, _)| *d);
    if let Some((_, near)) = nearest.filter(|(d, _)| *d <= 3) {
        let _ = write!(line, " (did you mean {}?)", near.to_str().unwrap_or("?"));
    }
    let _ = line.write_str("\n");
    line.flush();
}

#[cfg(rseqalloc_percpu)]
/// Edit distance (Levenshtein) between two names, on the stack; names
/// longer than 47 bytes count as far from everything.
fn distance(a: &[u8], b: &[u8]) -> usize {
    const MAX: usize = 47;
    if a.len() > MAX || b.len() > MAX {
        return usize::MAX;
    }
    let mut row = [0usize; MAX + 1];
    for (j, slot) in row.iter_mut().enumerate().take(b.len() + 1) {
        *slot = j;
    }
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The setters of numbers state their option's range in their doc and
    /// their panic (const fns cannot format it from the table): this keeps
    /// both equal to the table's.
    #[test]
    fn setters_state_the_tables_ranges() {
        let src = include_str!("config.rs");
        for opt in &OPTIONS {
            let Kind::Number { min, max } = opt.kind else { continue };
            let name = opt.name.to_str().unwrap();
            let setter = name.trim_start_matches("RSEQALLOC_").to_lowercase();
            let doc = format!("/// `{name}`: {min} to {max}.");
            let panic = format!("rseqalloc::Options::{setter}: out of range ({min} to {max})");
            assert!(src.contains(&doc), "Options::{setter} should be documented as {doc:?}");
            assert!(src.contains(&panic), "Options::{setter} should panic with {panic:?}");
        }
    }

    #[test]
    fn stats_words_have_their_report_values() {
        let json = Word::new("json");
        assert_eq!(Kind::FlagOr(&STATS_WORDS).parse(b"json"), Some(stats_value(Some(Report::Json))));
        assert_eq!(Kind::FlagOr(&STATS_WORDS).parse(b"text"), Some(2 + Report::Text as usize));
        assert_eq!(STATS_WORDS[Report::Json as usize], json);
        for report in [None, Some(Report::Text), Some(Report::Json)] {
            let config = Config::from_values(&Options::new().stats_at_exit(report).values);
            assert_eq!(config.stats_at_exit, report);
            assert_eq!(config.values()[Id::Stats as usize], stats_value(report));
        }
    }

    #[test]
    fn ids_index_their_rows() {
        let names = OPTIONS.iter().map(|o| o.name.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(names[Id::Mode as usize], "RSEQALLOC_MODE");
        assert_eq!(names[Id::MmCid as usize], "RSEQALLOC_MMCID");
        assert_eq!(names[Id::CpuCacheBytes as usize], "RSEQALLOC_CPU_CACHE_BYTES");
        assert_eq!(names[Id::Verbose as usize], "RSEQALLOC_VERBOSE");
        assert_eq!(names[Id::Stats as usize], "RSEQALLOC_STATS");
        assert_eq!(names[Id::BadFree as usize], "RSEQALLOC_BAD_FREE");
        assert_eq!(names[Id::Check as usize], "RSEQALLOC_CHECK");
        assert_eq!(names[Id::DecayMs as usize], "RSEQALLOC_DECAY_MS");
        assert_eq!(names[Id::Background as usize], "RSEQALLOC_BACKGROUND");
        assert_eq!(names[Id::Membarrier as usize], "RSEQALLOC_MEMBARRIER");
        for (opt, mode) in MODE_WORDS.iter().zip(MODES) {
            assert_eq!(parse_choice(*opt, &MODE_WORDS).map(mode_request), Some(mode));
        }
    }

    #[test]
    fn only_whole_listed_words_are_accepted() {
        let flag = &OPTIONS[Id::MmCid as usize].kind;
        for (text, want) in [("0", Some(0)), ("1", Some(1)), ("off", Some(0)), ("true", Some(1))] {
            assert_eq!(flag.parse(text.as_bytes()), want, "{text}");
        }
        for bad in ["2", "-1", " 0", "0 ", "", "01", "On", "yes please", "\u{0}"] {
            assert_eq!(flag.parse(bad.as_bytes()), None, "{bad:?}");
        }
        let mode = &OPTIONS[Id::Mode as usize].kind;
        assert_eq!(mode.parse(b"mainline"), Some(ModeRequest::Mainline as usize));
        for bad in ["", "main", "mainlinex", "FALLBACK", " auto"] {
            assert_eq!(mode.parse(bad.as_bytes()), None, "{bad:?}");
        }
        let decay = &OPTIONS[Id::DecayMs as usize].kind;
        assert_eq!(decay.parse(b"3600000"), Some(3_600_000));
        assert_eq!(decay.parse(b"3600001"), None);
        assert_eq!(decay.parse(b"+5"), None);
        // The load-time reader's packing agrees with the runtime's.
        let mut buf = *b"fallback";
        assert_eq!(Word::from_buf(buf, 8), Word::from_bytes(b"fallback"));
        buf[1] = b'x';
        assert_eq!(Word::from_buf(buf, 1), Word::from_bytes(b"f"));
        assert_eq!(Word::from_buf(buf, 9), None);
    }

    #[test]
    fn unknown_names_are_found_and_matched_to_the_nearest() {
        assert!(is_unknown(b"RSEQALLOC_STAT"));
        assert!(!is_unknown(b"RSEQALLOC_STATS"));
        assert!(!is_unknown(b"RSEQALLOC_LIB"));
        assert!(!is_unknown(b"PATH"));
        assert_eq!(distance(b"RSEQALLOC_STAT", b"RSEQALLOC_STATS"), 1);
        assert_eq!(distance(b"RSEQALLOC_DECAY", b"RSEQALLOC_DECAY_MS"), 3);
        assert_eq!(distance(b"abc", b"abc"), 0);
    }

    #[test]
    fn configs_give_back_their_values() {
        let o = Options::new()
            .decay_ms(5000)
            .stats_at_exit(Some(Report::Json))
            .bad_free(BadFree::Leak)
            .mode(ModeRequest::Rseq);
        assert_eq!(Config::from_values(&o.values).values(), o.values);
        let shown: Vec<String> =
            Config::from_values(&o.values).options().map(|v| format!("{}={v}", v.name())).collect();
        assert!(shown.contains(&"RSEQALLOC_MODE=rseq".to_string()), "{shown:?}");
        assert!(shown.contains(&"RSEQALLOC_BAD_FREE=leak".to_string()), "{shown:?}");
        assert!(shown.contains(&"RSEQALLOC_DECAY_MS=5000".to_string()), "{shown:?}");
        assert!(shown.contains(&"RSEQALLOC_STATS=json".to_string()), "{shown:?}");
    }

    #[test]
    fn code_options_set_what_they_name() {
        let o = Options::new().decay_ms(5000).background(false).mode(ModeRequest::Fallback);
        let c = Config::from_values(&o.values);
        assert_eq!((c.decay_ms, c.background, c.mode), (5000, false, ModeRequest::Fallback));
        assert_eq!(c.cpu_cache_bytes, DEFAULT_CPU_CACHE_BYTES);
        assert!(Options::new().is_empty() && !o.is_empty());
        assert!(std::panic::catch_unwind(|| Options::new().decay_ms(3_600_001)).is_err());
        assert!(std::panic::catch_unwind(|| Options::new().cpu_cache_bytes(4095)).is_err());
        assert!(std::panic::catch_unwind(|| Options::new().mode(ModeRequest::Mainline)).is_err());
    }

    /// The README's configuration table, as the table makes it.
    fn readme_table() -> String {
        let mut out = String::from("| variable | default | accepts | meaning |\n| --- | --- | --- | --- |\n");
        for opt in &OPTIONS {
            let mut default = String::new();
            opt.kind.write_value(opt.default, &mut default).unwrap();
            let mut accepts = String::new();
            opt.kind.write_accepted(&mut accepts).unwrap();
            let name = opt.name.to_str().unwrap();
            out += &format!("| `{name}` | `{default}` | {accepts} | {} |\n", opt.doc);
        }
        out
    }

    #[test]
    fn readme_table_is_the_options_table() {
        let readme = include_str!("../../README.md");
        let want = readme_table();
        assert!(
            readme.contains(&want),
            "README.md's configuration table differs from src/platform/config.rs's OPTIONS; replace it with:\n\n{want}"
        );
    }
}
