//! Statistics: a snapshot of the counters every layer keeps, and the
//! reports (text or one JSON object, each headed by pid and program),
//! formatted without allocating.
//!
//! Hot-path counters cost nothing extra on the fast path beyond one
//! non-atomic increment of a per-CPU word inside each section; restarts are
//! counted on the abort path only; everything else on slow paths. On a
//! target without the per-CPU path the snapshot is `Stats::empty` in
//! `Mode::Forward`: the mode says so and every counter is zero.

use core::fmt;
#[cfg(rseqalloc_percpu)]
use core::fmt::Write;

use crate::platform::config::Config;
#[cfg(rseqalloc_percpu)]
use crate::platform::config::{self, Report};
use crate::platform::mode::{CacheIndex, Mode};
#[cfg(rseqalloc_percpu)]
use crate::platform::os::Line;
use crate::platform::size_class::{SizeClass, NUM_CLASSES};
#[cfg(rseqalloc_percpu)]
use crate::{
    backend::{large, medium, page_heap},
    cache::percpu,
    cache::region::{self, Region},
    front::background,
    middle::{central, transfer},
    platform::os,
    rseq::{self, cs, fence},
};
#[cfg(rseqalloc_percpu)]
use core::sync::atomic::Ordering;

/// Critical sections with a restart counter, in the asm's order.
pub const SECTIONS: [&str; 4] = ["pop", "push", "pop batch", "push batch"];

#[cfg(rseqalloc_percpu)]
const _: () = assert!(
    SECTIONS.len() == cs::NUM_SITES
        && cs::SITE_POP == 0
        && cs::SITE_PUSH == 1
        && cs::SITE_POP_BATCH == 2
        && cs::SITE_PUSH_BATCH == 3
);

/// Size classes a snapshot reports, smallest first (class 0 is unused).
const CLASSES: usize = NUM_CLASSES - 1;

/// Per-CPU detail kept in a snapshot; totals always cover every cache.
pub const SNAPSHOT_CPUS: usize = 256;

/// One CPU cache (a CPU id or an mm_cid, see [`Stats::cache_index`]).
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::new::<[u64; 4]>();
/// unsafe { rseqalloc::RseqAlloc.dealloc(rseqalloc::RseqAlloc.alloc(layout), layout) };
/// for cpu in rseqalloc::stats().per_cpu() {
///     println!("cache {}: {} hits, {} misses", cpu.index, cpu.alloc_hits, cpu.alloc_misses);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CpuStats {
    /// The cache's index.
    pub index: usize,
    /// Allocations served by the cache.
    pub alloc_hits: u64,
    /// Allocations that found the cache empty and took the slow path.
    pub alloc_misses: u64,
    /// Frees served by the cache.
    pub free_hits: u64,
    /// Frees that found the cache full and took the slow path.
    pub free_misses: u64,
    /// Bytes of free objects cached now.
    pub cached_bytes: u64,
    /// Bytes of capacity granted (the budget in use).
    pub capacity_bytes: u64,
}

impl CpuStats {
    #[cfg(any(rseqalloc_percpu, feature = "serde"))] // the JSON report's and serde's
    fn fields(&self) -> [(&'static str, u64); 7] {
        [
            ("index", self.index as u64),
            ("alloc_hits", self.alloc_hits),
            ("alloc_misses", self.alloc_misses),
            ("free_hits", self.free_hits),
            ("free_misses", self.free_misses),
            ("cached_bytes", self.cached_bytes),
            ("capacity_bytes", self.capacity_bytes),
        ]
    }
}

/// One size class: how many of its free objects wait in caches.
///
/// ```
/// let v = vec![0u8; 100];
/// for class in rseqalloc::stats().per_class() {
///     if class.cpu_cached > 0 {
///         println!("{} B: {} objects in CPU caches", class.size, class.cpu_cached);
///     }
/// }
/// # drop(v);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// The class's object size in bytes.
    pub size: u64,
    /// Free objects in all CPU caches: the summed depth of the class's stacks.
    pub cpu_cached: u64,
    /// Free objects in the class's transfer cache.
    pub transfer_cached: u64,
}

impl ClassStats {
    #[cfg(any(rseqalloc_percpu, feature = "serde"))] // the JSON report's and serde's
    fn fields(&self) -> [(&'static str, u64); 3] {
        [("size", self.size), ("cpu_cached", self.cpu_cached), ("transfer_cached", self.transfer_cached)]
    }
}

/// A snapshot of the allocator's state, from [`stats()`](crate::stats()).
/// Counters are read one by one while other threads run, so they are each
/// exact but not mutually atomic. `Display` prints a short report; with the
/// `serde` feature it is `Serialize` (the fields of the JSON report).
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// let p = unsafe { rseqalloc::RseqAlloc.alloc(layout) };
/// let s = rseqalloc::stats();
/// assert!(s.bytes_in_use >= 112 && s.bytes_mapped >= s.bytes_in_use);
/// println!("{:?}: {:.1}% hits, {} restarts\n{s}", s.mode, 100.0 * s.alloc_hit_rate(), s.restarts());
/// unsafe { rseqalloc::RseqAlloc.dealloc(p, layout) };
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// How critical sections reach an rseq area, or the fallback.
    pub mode: Mode,
    /// Whether caches are indexed by CPU id or by `mm_cid`.
    pub cache_index: CacheIndex,
    /// Caches the process may use (possible CPU ids).
    pub caches: usize,
    /// Caches touched so far.
    pub caches_in_use: usize,
    /// Sums over all caches.
    pub totals: CpuStats,
    /// Critical-section restarts, per section: pop, push, pop batch, push batch.
    pub restarts_by_section: [u64; SECTIONS.len()],
    /// Batches taken from the middle end (transfer cache, then central slab).
    pub batches_out: u64,
    /// Batches given back to the middle end.
    pub batches_in: u64,
    /// Bytes of free objects in transfer caches.
    pub transfer_bytes: u64,
    /// Spans carved from the page heap, and spans returned to it.
    pub spans_carved: u64,
    /// See `spans_carved`.
    pub spans_released: u64,
    /// Empty spans a class kept and carved again without the page heap.
    pub spans_reused: u64,
    /// Bytes of the empty spans classes keep for reuse now (given to the
    /// page heap once unused for a decay step).
    pub spare_bytes: u64,
    /// Bytes the allocator holds from the OS now: arena pages made usable
    /// and not given back (`bytes_released` is already subtracted, so this
    /// falls after `release()`), plus large mappings.
    pub bytes_mapped: u64,
    /// Bytes of the arena made usable so far, given back or not: its
    /// high-water mark, which grows only when the page heap had no room.
    pub arena_bytes: u64,
    /// The process's resident memory now (`/proc/self/statm`), everything
    /// it maps and not only the allocator's: what `ps` shows as RSS.
    pub resident_bytes: u64,
    /// The process's peak resident memory (`getrusage`'s `ru_maxrss`).
    pub peak_resident_bytes: u64,
    /// Bytes in blocks the program holds (class-rounded for small blocks).
    pub bytes_in_use: u64,
    /// Large blocks live now.
    pub large_blocks: u64,
    /// Bytes of live medium blocks, in whole granules (in `bytes_in_use`).
    pub medium_bytes: u64,
    /// Bytes of freed large mappings kept for reuse (in `bytes_mapped`).
    pub large_cached_bytes: u64,
    /// Bytes of free arena memory given back to the OS (decay, `release()`,
    /// `malloc_trim`) and not reused since.
    pub bytes_released: u64,
    /// Bytes of free arena memory still backed by pages: emptied spans
    /// waiting for the decay.
    pub free_span_bytes: u64,
    /// CPU caches emptied by an idle drain or `release()`.
    pub drains: u64,
    /// Fences made for remote cache operations.
    pub fences: u64,
    /// `madvise` calls that gave pages back.
    pub purges: u64,
    /// Whether the background thread runs.
    pub background_thread: bool,
    /// Invalid pointers the C API left alone (`RSEQALLOC_BAD_FREE=leak`).
    pub bad_frees: u64,
    /// The options in force: from the environment, from code
    /// (`RseqAlloc::with`), or defaults.
    pub config: Config,
    per_cpu: [CpuStats; SNAPSHOT_CPUS],
    per_cpu_len: usize,
    per_class: [ClassStats; CLASSES],
}

impl Stats {
    /// Total critical-section restarts.
    pub fn restarts(&self) -> u64 {
        self.restarts_by_section.iter().sum()
    }

    /// Per-cache detail for the caches in use (the first SNAPSHOT_CPUS).
    pub fn per_cpu(&self) -> &[CpuStats] {
        &self.per_cpu[..self.per_cpu_len]
    }

    /// Per size class, smallest first: free objects in the CPU caches and
    /// the transfer cache.
    pub fn per_class(&self) -> &[ClassStats] {
        &self.per_class
    }

    /// Fraction of allocations served by the per-CPU caches.
    pub fn alloc_hit_rate(&self) -> f64 {
        let t = &self.totals;
        t.alloc_hits as f64 / (t.alloc_hits + t.alloc_misses).max(1) as f64
    }

    /// A snapshot with every counter zero, in `mode`: what a target without
    /// the per-CPU path reports (`Mode::Forward`), and where `snapshot`
    /// starts.
    pub(crate) fn empty(mode: Mode) -> Stats {
        let mut per_class = [ClassStats::default(); CLASSES];
        for (slot, class) in per_class.iter_mut().zip(SizeClass::all()) {
            slot.size = class.size() as u64;
        }
        Stats {
            mode,
            cache_index: CacheIndex::CpuId,
            caches: 0,
            caches_in_use: 0,
            totals: CpuStats::default(),
            restarts_by_section: [0; SECTIONS.len()],
            batches_out: 0,
            batches_in: 0,
            transfer_bytes: 0,
            spans_carved: 0,
            spans_released: 0,
            spans_reused: 0,
            spare_bytes: 0,
            bytes_mapped: 0,
            arena_bytes: 0,
            resident_bytes: 0,
            peak_resident_bytes: 0,
            bytes_in_use: 0,
            large_blocks: 0,
            medium_bytes: 0,
            large_cached_bytes: 0,
            bytes_released: 0,
            free_span_bytes: 0,
            drains: 0,
            fences: 0,
            purges: 0,
            background_thread: false,
            bad_frees: 0,
            config: Config::default(),
            per_cpu: [CpuStats::default(); SNAPSHOT_CPUS],
            per_cpu_len: 0,
            per_class,
        }
    }

    /// Every field as the JSON report and `serde` name it, in one list so
    /// the two cannot disagree.
    #[cfg(any(rseqalloc_percpu, feature = "serde"))] // the JSON report's and serde's
    fn fields(&self) -> [(&'static str, Field<'_>); 36] {
        use Field::*;
        let t = &self.totals;
        [
            ("mode", Name(mode_name(self.mode))),
            ("cache_index", Name(if self.cache_index == CacheIndex::MmCid { "MmCid" } else { "CpuId" })),
            ("caches", Num(self.caches as u64)),
            ("caches_in_use", Num(self.caches_in_use as u64)),
            ("alloc_hits", Num(t.alloc_hits)),
            ("alloc_misses", Num(t.alloc_misses)),
            ("free_hits", Num(t.free_hits)),
            ("free_misses", Num(t.free_misses)),
            ("cpu_cached_bytes", Num(t.cached_bytes)),
            ("cpu_capacity_bytes", Num(t.capacity_bytes)),
            ("restarts_by_section", Nums(&self.restarts_by_section)),
            ("batches_out", Num(self.batches_out)),
            ("batches_in", Num(self.batches_in)),
            ("transfer_bytes", Num(self.transfer_bytes)),
            ("spans_carved", Num(self.spans_carved)),
            ("spans_released", Num(self.spans_released)),
            ("spans_reused", Num(self.spans_reused)),
            ("spare_bytes", Num(self.spare_bytes)),
            ("bytes_mapped", Num(self.bytes_mapped)),
            ("arena_bytes", Num(self.arena_bytes)),
            ("resident_bytes", Num(self.resident_bytes)),
            ("peak_resident_bytes", Num(self.peak_resident_bytes)),
            ("bytes_in_use", Num(self.bytes_in_use)),
            ("large_blocks", Num(self.large_blocks)),
            ("medium_bytes", Num(self.medium_bytes)),
            ("large_cached_bytes", Num(self.large_cached_bytes)),
            ("bytes_released", Num(self.bytes_released)),
            ("free_span_bytes", Num(self.free_span_bytes)),
            ("drains", Num(self.drains)),
            ("fences", Num(self.fences)),
            ("purges", Num(self.purges)),
            ("background_thread", Flag(self.background_thread)),
            ("bad_frees", Num(self.bad_frees)),
            ("per_cpu", Cpus(self.per_cpu())),
            ("per_class", Classes(self.per_class())),
            ("options", Options(&self.config)),
        ]
    }
}

/// One value of the JSON report (and of `serde`'s view of [`Stats`]).
#[cfg(any(rseqalloc_percpu, feature = "serde"))] // the JSON report's and serde's
enum Field<'a> {
    Num(u64),
    Flag(bool),
    Name(&'a str),
    Nums(&'a [u64]),
    Cpus(&'a [CpuStats]),
    Classes(&'a [ClassStats]),
    /// `RSEQALLOC_*` name → value in force, as a user would write it.
    Options(&'a Config),
}

#[cfg(any(rseqalloc_percpu, feature = "serde"))] // the JSON report's and serde's
fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Uninit => "Uninit",
        Mode::RseqGlibc => "RseqGlibc",
        Mode::RseqOwn => "RseqOwn",
        Mode::Fallback => "Fallback",
        Mode::Region => "Region",
        Mode::Forward => "Forward",
    }
}

/// Takes a snapshot. Allocates nothing and takes no lock.
#[cfg(rseqalloc_percpu)]
pub fn snapshot() -> Stats {
    let mut s = Stats::empty(rseq::mode());
    s.cache_index = rseq::cache_index();
    s.caches = region::ncpu();
    s.medium_bytes = medium::MEDIUM.in_use_bytes();
    s.large_cached_bytes = large::cached_bytes();
    s.bytes_released = page_heap::HEAP.released_bytes();
    s.free_span_bytes = page_heap::HEAP.free_backed_bytes();
    s.drains = percpu::drain_count();
    s.fences = fence::count();
    s.purges = page_heap::HEAP.purge_count();
    s.background_thread = background::running();
    s.bad_frees = bad_frees();
    s.config = config::in_force();
    (s.resident_bytes, s.peak_resident_bytes) = (os::resident_bytes(), os::peak_resident_bytes());
    for (i, counter) in s.restarts_by_section.iter_mut().enumerate() {
        // SAFETY: the restart counters are a static array in the asm object.
        *counter = unsafe { cs::rseqalloc_restarts[i].load(Ordering::Relaxed) };
    }
    for idx in 0..s.caches {
        let Some(region) = region::region(idx) else { break };
        if !region.meta().initialized.load(Ordering::Acquire) {
            continue;
        }
        // One read of each stack's depth feeds both the per-class and the
        // per-CPU view, so the two always sum to the same bytes.
        let mut cached_bytes = 0;
        for (slot, class) in s.per_class.iter_mut().zip(SizeClass::all()) {
            let depth = region.depth(class) as u64;
            slot.cpu_cached += depth;
            cached_bytes += depth * class.size() as u64;
        }
        let cpu = cpu_stats(idx, region, cached_bytes);
        s.caches_in_use += 1;
        let t = &mut s.totals;
        t.alloc_hits += cpu.alloc_hits;
        t.alloc_misses += cpu.alloc_misses;
        t.free_hits += cpu.free_hits;
        t.free_misses += cpu.free_misses;
        t.cached_bytes += cpu.cached_bytes;
        t.capacity_bytes += cpu.capacity_bytes;
        if s.per_cpu_len < SNAPSHOT_CPUS {
            s.per_cpu[s.per_cpu_len] = cpu;
            s.per_cpu_len += 1;
        }
    }
    (s.batches_out, s.batches_in) = transfer::TRANSFER.batch_counts();
    (s.spans_carved, s.spans_released, s.spans_reused) = central::CENTRAL.span_counts();
    s.spare_bytes = central::CENTRAL.spare_bytes();
    let mut handed_out = 0u64;
    for (slot, class) in s.per_class.iter_mut().zip(SizeClass::all()) {
        let size = class.size() as u64;
        slot.transfer_cached = transfer::TRANSFER.held(class);
        s.transfer_bytes += slot.transfer_cached * size;
        handed_out += central::CENTRAL.outstanding(class) * size;
    }
    let (large_mapped, large_in_use, large_blocks) = large::totals();
    s.arena_bytes = page_heap::HEAP.mapped_bytes();
    s.bytes_mapped = s.arena_bytes.saturating_sub(s.bytes_released) + large_mapped;
    s.bytes_in_use =
        handed_out.saturating_sub(s.transfer_bytes + s.totals.cached_bytes) + large_in_use + s.medium_bytes;
    s.large_blocks = large_blocks;
    s
}

#[cfg(all(rseqalloc_percpu, feature = "capi"))]
fn bad_frees() -> u64 {
    crate::front::check::bad_frees()
}

#[cfg(all(rseqalloc_percpu, not(feature = "capi")))]
fn bad_frees() -> u64 {
    0 // only the C API judges pointers
}

/// Writes a snapshot to stderr without allocating, headed by this
/// process's pid and program name, so that reports from the processes of a
/// forking program can be told apart (`RSEQALLOC_STATS` at exit,
/// `malloc_stats`). The report is formatted in a mapping of its own and
/// written with one `write(2)`, so that reports of processes exiting at the
/// same moment do not interleave (a pipe keeps up to 4 KiB in one piece, a
/// file opened for appending the whole write); where the mapping is
/// refused it goes out in pieces.
#[cfg(rseqalloc_percpu)]
pub fn report(format: Report) {
    /// Room for a report: about 150 bytes per cache, far less in all.
    const BYTES: usize = 1 << 20;
    let stats = snapshot();
    let mapping = os::map(BYTES);
    if mapping.is_null() {
        let mut line = Line::new();
        let _ = write_report(&mut line, &stats, format);
        line.flush();
        return;
    }
    // SAFETY: a fresh read-write mapping of BYTES bytes that only this call
    // knows about.
    let mut out = Buffer { bytes: unsafe { core::slice::from_raw_parts_mut(mapping, BYTES) }, len: 0 };
    let _ = write_report(&mut out, &stats, format); // a full buffer keeps what fit
    os::write_stderr(&out.bytes[..out.len]);
    // SAFETY: the mapping is ours, and `out` is not used after this.
    unsafe { os::unmap(mapping, BYTES) };
}

#[cfg(rseqalloc_percpu)]
fn write_report(out: &mut impl Write, stats: &Stats, format: Report) -> fmt::Result {
    let (pid, program) = (os::pid(), os::program_name());
    match format {
        Report::Text => writeln!(out, "rseqalloc stats, pid {pid} ({}):\n{stats}", program.escape_debug()),
        Report::Json => {
            write!(out, "{{\"pid\":{pid},\"program\":")?;
            write_json_str(out, program)?;
            for (name, value) in stats.fields() {
                write!(out, ",\"{name}\":")?;
                write_json(out, &value)?;
            }
            writeln!(out, "}}")
        }
    }
}

/// Formatted text in borrowed memory; writes past its end fail and keep
/// what fit.
#[cfg(rseqalloc_percpu)]
struct Buffer<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

#[cfg(rseqalloc_percpu)]
impl Write for Buffer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(rseqalloc_percpu)]
fn write_json(out: &mut impl Write, value: &Field<'_>) -> fmt::Result {
    match *value {
        Field::Num(n) => write!(out, "{n}"),
        Field::Flag(b) => write!(out, "{b}"),
        Field::Name(text) => write_json_str(out, text),
        Field::Nums(list) => write_json_list(out, list, |out, n| write!(out, "{n}")),
        Field::Cpus(cpus) => write_json_list(out, cpus, |out, c| write_json_object(out, &c.fields())),
        Field::Classes(classes) => write_json_list(out, classes, |out, c| write_json_object(out, &c.fields())),
        Field::Options(config) => {
            out.write_char('{')?;
            for (i, option) in config.options().enumerate() {
                write!(out, "{}\"{}\":\"{option}\"", if i > 0 { "," } else { "" }, option.name())?;
            }
            out.write_char('}')
        }
    }
}

#[cfg(rseqalloc_percpu)]
fn write_json_list<W: Write, T>(
    out: &mut W,
    items: &[T],
    mut item: impl FnMut(&mut W, &T) -> fmt::Result,
) -> fmt::Result {
    out.write_char('[')?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        item(out, x)?;
    }
    out.write_char(']')
}

#[cfg(rseqalloc_percpu)]
fn write_json_object(out: &mut impl Write, fields: &[(&str, u64)]) -> fmt::Result {
    out.write_char('{')?;
    for (i, (name, n)) in fields.iter().enumerate() {
        write!(out, "{}\"{name}\":{n}", if i > 0 { "," } else { "" })?;
    }
    out.write_char('}')
}

#[cfg(rseqalloc_percpu)]
/// A JSON string: quotes, backslashes and control characters escaped.
fn write_json_str(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

#[cfg(feature = "serde")]
mod serde_impl {
    //! `Serialize` for the snapshot types, from the same field lists as the
    //! JSON report.
    use super::{ClassStats, CpuStats, Field, Stats};
    use serde::ser::{Serialize, SerializeMap, Serializer};

    impl Serialize for Stats {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let fields = self.fields();
            let mut map = serializer.serialize_map(Some(fields.len()))?;
            for (name, value) in &fields {
                map.serialize_entry(name, value)?;
            }
            map.end()
        }
    }

    impl Serialize for Field<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match *self {
                Field::Num(n) => serializer.serialize_u64(n),
                Field::Flag(b) => serializer.serialize_bool(b),
                Field::Name(text) => serializer.serialize_str(text),
                Field::Nums(list) => serializer.collect_seq(list),
                Field::Cpus(cpus) => serializer.collect_seq(cpus),
                Field::Classes(classes) => serializer.collect_seq(classes),
                Field::Options(config) => serializer.collect_map(config.options().map(|o| (o.name(), Value(o)))),
            }
        }
    }

    /// An option's value as a string, written without allocating.
    struct Value(crate::platform::config::OptionValue);

    impl Serialize for Value {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&self.0)
        }
    }

    fn numbers<S: Serializer>(serializer: S, fields: &[(&str, u64)]) -> Result<S::Ok, S::Error> {
        serializer.collect_map(fields.iter().copied())
    }

    impl Serialize for CpuStats {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            numbers(serializer, &self.fields())
        }
    }

    impl Serialize for ClassStats {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            numbers(serializer, &self.fields())
        }
    }
}

#[cfg(rseqalloc_percpu)]
fn cpu_stats(index: usize, region: Region, cached_bytes: u64) -> CpuStats {
    let meta = region.meta();
    CpuStats {
        index,
        alloc_hits: meta.alloc_hits.load(Ordering::Relaxed),
        alloc_misses: meta.alloc_misses.load(Ordering::Relaxed),
        free_hits: meta.free_hits.load(Ordering::Relaxed),
        free_misses: meta.free_misses.load(Ordering::Relaxed),
        cached_bytes,
        capacity_bytes: meta.capacity_bytes.load(Ordering::Relaxed),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        if self.mode == Mode::Forward {
            return write!(
                f,
                "mode:            Forward: this target has no per-CPU path; the system allocator serves every call"
            );
        }
        writeln!(f, "mode:            {:?}, caches indexed by {:?}", self.mode, self.cache_index)?;
        writeln!(f, "caches:          {} in use of {}", self.caches_in_use, self.caches)?;
        writeln!(
            f,
            "alloc hits:      {} ({} misses, {:.3}% hit)",
            t.alloc_hits,
            t.alloc_misses,
            100.0 * self.alloc_hit_rate()
        )?;
        writeln!(f, "free hits:       {} ({} misses)", t.free_hits, t.free_misses)?;
        write!(f, "restarts:        {} (", self.restarts())?;
        for (i, (name, n)) in SECTIONS.iter().zip(self.restarts_by_section).enumerate() {
            write!(f, "{}{name} {n}", if i > 0 { ", " } else { "" })?;
        }
        writeln!(f, ")")?;
        writeln!(f, "middle end:      {} batches out, {} in", self.batches_out, self.batches_in)?;
        writeln!(
            f,
            "spans:           {} carved, {} released, {} reused; {} bytes kept empty",
            self.spans_carved, self.spans_released, self.spans_reused, self.spare_bytes
        )?;
        writeln!(
            f,
            "bytes:           {} mapped, {} in use, {} in CPU caches, {} in transfer caches",
            self.bytes_mapped, self.bytes_in_use, t.cached_bytes, self.transfer_bytes
        )?;
        writeln!(
            f,
            "process:         {} bytes resident, {} at peak; arena high-water mark {} bytes",
            self.resident_bytes, self.peak_resident_bytes, self.arena_bytes
        )?;
        writeln!(
            f,
            "free arena:      {} bytes backed, {} returned to the OS ({} purges)",
            self.free_span_bytes, self.bytes_released, self.purges
        )?;
        writeln!(
            f,
            "background:      thread {}, {} cache drains, {} fences",
            if self.background_thread { "running" } else { "not running" },
            self.drains,
            self.fences
        )?;
        writeln!(
            f,
            "large blocks:    {} ({} bytes of freed mappings cached)",
            self.large_blocks, self.large_cached_bytes
        )?;
        writeln!(f, "medium blocks:   {} bytes", self.medium_bytes)?;
        write!(f, "cached objects: ")?;
        for c in self.per_class().iter().filter(|c| c.cpu_cached + c.transfer_cached > 0) {
            write!(f, " {}B:{}+{}", c.size, c.cpu_cached, c.transfer_cached)?;
        }
        writeln!(f, " (size: in CPU caches + in transfer caches)")?;
        write!(f, "bad frees:       {} left alone", self.bad_frees)
    }
}
