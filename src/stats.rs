//! Statistics: a snapshot of the counters every layer keeps, and a printer
//! that writes through a fixed stack buffer so it never allocates.
//!
//! Hot-path counters cost nothing extra on the fast path beyond one
//! non-atomic increment of a per-CPU word inside each section; restarts are
//! counted on the abort path only; everything else on slow paths.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::percpu::{self, Region};
use crate::rseq::{self, cs, CacheIndex, Mode};
use crate::size_class::SizeClass;
use crate::{background, central, fence, large, medium, pagemap, transfer};

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

/// A snapshot of the allocator's state, from [`stats()`](crate::stats()).
/// Counters are read one by one while other threads run, so they are each
/// exact but not mutually atomic. `Display` prints a short report.
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
    pub restarts_by_section: [u64; cs::NUM_SITES],
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
    /// Bytes of the arena made usable, plus large mappings.
    pub bytes_mapped: u64,
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
    per_cpu: [CpuStats; SNAPSHOT_CPUS],
    per_cpu_len: usize,
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

    /// Fraction of allocations served by the per-CPU caches.
    pub fn alloc_hit_rate(&self) -> f64 {
        let t = &self.totals;
        t.alloc_hits as f64 / (t.alloc_hits + t.alloc_misses).max(1) as f64
    }
}

/// Takes a snapshot. Allocates nothing and takes no lock.
pub fn snapshot() -> Stats {
    let mut s = Stats {
        mode: rseq::mode(),
        cache_index: rseq::cache_index(),
        caches: percpu::ncpu(),
        caches_in_use: 0,
        totals: CpuStats::default(),
        restarts_by_section: [0; cs::NUM_SITES],
        batches_out: 0,
        batches_in: 0,
        transfer_bytes: 0,
        spans_carved: 0,
        spans_released: 0,
        bytes_mapped: 0,
        bytes_in_use: 0,
        large_blocks: 0,
        medium_bytes: medium::in_use_bytes(),
        large_cached_bytes: large::cached_bytes(),
        bytes_released: pagemap::released_bytes(),
        free_span_bytes: pagemap::free_backed_bytes(),
        drains: percpu::drain_count(),
        fences: fence::count(),
        purges: pagemap::purge_count(),
        background_thread: background::running(),
        bad_frees: bad_frees(),
        per_cpu: [CpuStats::default(); SNAPSHOT_CPUS],
        per_cpu_len: 0,
    };
    for (i, counter) in s.restarts_by_section.iter_mut().enumerate() {
        // SAFETY: the restart counters are a static array in the asm object.
        *counter = unsafe { cs::rseqalloc_restarts[i].load(Ordering::Relaxed) };
    }
    for idx in 0..s.caches {
        let Some(region) = percpu::region(idx) else { break };
        if !region.meta().initialized.load(Ordering::Acquire) {
            continue;
        }
        let cpu = cpu_stats(idx, region);
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
    (s.batches_out, s.batches_in) = transfer::batch_counts();
    (s.spans_carved, s.spans_released) = central::span_counts();
    let mut handed_out = 0u64;
    for class in SizeClass::all() {
        let size = class.size() as u64;
        s.transfer_bytes += transfer::held(class) * size;
        handed_out += central::outstanding(class) * size;
    }
    let (large_mapped, large_in_use, large_blocks) = large::totals();
    s.bytes_mapped = pagemap::mapped_bytes() + large_mapped;
    s.bytes_in_use =
        handed_out.saturating_sub(s.transfer_bytes + s.totals.cached_bytes) + large_in_use + s.medium_bytes;
    s.large_blocks = large_blocks;
    s
}

#[cfg(feature = "capi")]
fn bad_frees() -> u64 {
    crate::check::bad_frees()
}

#[cfg(not(feature = "capi"))]
fn bad_frees() -> u64 {
    0 // only the C API judges pointers
}

/// Prints a snapshot to stderr without allocating (`RSEQALLOC_STATS=1` at
/// exit, `malloc_stats`).
pub fn print(stats: &Stats) {
    let mut line = Line::new();
    let _ = fmt::write(&mut line, format_args!("rseqalloc stats:\n{stats}\n"));
    line.flush();
}

fn cpu_stats(index: usize, region: Region) -> CpuStats {
    let meta = region.meta();
    let cached_bytes = SizeClass::all().map(|c| (region.depth(c) * c.size()) as u64).sum();
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
        let r = &self.restarts_by_section;
        writeln!(
            f,
            "restarts:        {} (pop {}, push {}, pop batch {}, push batch {})",
            self.restarts(),
            r[cs::SITE_POP],
            r[cs::SITE_PUSH],
            r[cs::SITE_POP_BATCH],
            r[cs::SITE_PUSH_BATCH]
        )?;
        writeln!(f, "middle end:      {} batches out, {} in", self.batches_out, self.batches_in)?;
        writeln!(f, "spans:           {} carved, {} released", self.spans_carved, self.spans_released)?;
        writeln!(
            f,
            "bytes:           {} mapped, {} in use, {} in CPU caches, {} in transfer caches",
            self.bytes_mapped, self.bytes_in_use, t.cached_bytes, self.transfer_bytes
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
        write!(f, "bad frees:       {} left alone", self.bad_frees)
    }
}

/// A line buffer on the stack that writes to stderr: formatting without
/// allocating. Output longer than the buffer is flushed in pieces.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    /// An empty buffer.
    pub fn new() -> Line {
        Line { buf: [0; 256], len: 0 }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        crate::os::write_stderr(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}
