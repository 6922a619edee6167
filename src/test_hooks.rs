//! Test-only access (built with `RSEQALLOC_TEST_HOOKS=1`: build.rs) to the per-CPU machinery on a
//! slab the test owns: the real critical sections, driven with either the
//! thread's real rseq area or a fake one whose cache index the test sets.
//! Not a supported API: it repoints the process-wide control block, so a
//! process that uses it must not also allocate through `RseqAlloc`.

use core::sync::atomic::Ordering;

use crate::cache::region::{self, ClassHeader, LockedRegion};
use crate::platform::config::{Config, ModeRequest};
use crate::platform::size_class::SizeClass;
use crate::rseq::abi::Rseq;
use crate::rseq::{self, cs, CacheIndex, Mode};

pub use crate::platform::size_class::NUM_CLASSES;

/// Offset of the class headers in a region (`Slab::region_base`).
pub const HEADERS_OFF: usize = crate::rseq::abi::header::HEADERS_OFF as usize;

/// Where sections read the cache index from.
pub enum Index {
    /// The thread's real, registered rseq area (glibc's or our own): the
    /// kernel really restarts sections.
    Real,
    /// A fake, unregistered area owned by the test: `FakeArea::set` picks the
    /// cache, and nothing ever restarts. Only the installing thread may use it.
    Fake(&'static FakeArea),
}

/// A struct rseq the kernel does not know about.
#[repr(transparent)]
pub struct FakeArea(core::cell::UnsafeCell<Rseq>);

// SAFETY: used by one thread only (`Index::Fake` contract).
unsafe impl Sync for FakeArea {}

impl FakeArea {
    /// A leaked fake area with cpu_id = mm_cid = `index`.
    pub fn new(index: u32) -> &'static FakeArea {
        let area = Box::leak(Box::new(FakeArea(core::cell::UnsafeCell::new(Rseq {
            cpu_id_start: 0,
            cpu_id: index,
            rseq_cs: 0,
            flags: 0,
            node_id: 0,
            mm_cid: index,
            padding: 0,
        }))));
        area
    }

    /// Makes the sections use cache `index` (any value; ≥ ncpu must miss).
    pub fn set(&self, index: u32) {
        // SAFETY: only the owning thread writes or reads through sections.
        unsafe {
            (*self.0.get()).cpu_id = index;
            (*self.0.get()).mm_cid = index;
        }
    }
}

/// A test-owned slab that the critical sections now operate on.
pub struct Slab {
    mode: Mode,
}

impl Slab {
    /// Maps `ncpu` regions with `budget` bytes each and points the sections
    /// at them. With `Index::Real`, the mode is chosen as the allocator
    /// would (so it may be the fallback, where `push`/`pop` take the region
    /// lock instead).
    ///
    /// # Safety
    /// Call once per process, before any other thread uses the sections, in
    /// a process that does not allocate through `RseqAlloc`.
    pub unsafe fn install(ncpu: usize, budget: usize, index: Index) -> Slab {
        let slabs = region::map_slabs(ncpu, budget).expect("map test slab");
        let config = Config::load();
        let (mode, area_off) = match index {
            Index::Real => rseq::choose_mode(&config),
            Index::Fake(area) => {
                // SAFETY: an offset from the thread pointer to any address is
                // just arithmetic; only this thread uses it.
                let tp = unsafe { cs::rseqalloc_thread_pointer() } as isize;
                (Mode::RseqGlibc, area.0.get() as isize - tp)
            }
        };
        let cache =
            if matches!(config.mode, ModeRequest::Fallback) { CacheIndex::CpuId } else { rseq::choose_index(mode) };
        rseq::publish(mode, cache, area_off, slabs, ncpu as u32);
        crate::rseq::fence::init(mode, config.membarrier);
        // Point this thread's sections at the area (a fake one needs it; a
        // real one would do it on the first miss anyway).
        rseq::current_index();
        Slab { mode }
    }

    /// The mode the slab runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the sections index caches by (CPU ids or concurrency ids).
    pub fn cache_index(&self) -> CacheIndex {
        rseq::cache_index()
    }

    /// Pushes on the current cache's stack of `class`. False when full or
    /// the thread has no usable index. `p` is an opaque token: sections store
    /// it and never dereference it.
    #[allow(clippy::not_unsafe_ptr_arg_deref)] // the pointers are tokens: only stored, never read through
    pub fn push(&self, class: usize, p: *mut u8) -> bool {
        let class = SizeClass::from_index(class).expect("class");
        if self.mode == Mode::Fallback {
            return self.locked(|r| r.push(class, p)).unwrap_or(false);
        }
        // SAFETY: the slab is mapped; p is an opaque token to the section.
        unsafe { cs::rseqalloc_cs_push(class.index(), p) }
    }

    /// Pops from the current cache's stack of `class`.
    pub fn pop(&self, class: usize) -> Option<*mut u8> {
        let class = SizeClass::from_index(class).expect("class");
        if self.mode == Mode::Fallback {
            return self.locked(|r| r.pop(class)).flatten();
        }
        // SAFETY: as in `push`.
        let p = unsafe { cs::rseqalloc_cs_pop(class.index()) };
        (!p.is_null()).then_some(p)
    }

    /// Pops up to `out.len()` objects with one commit; returns how many.
    pub fn pop_batch(&self, class: usize, out: &mut [*mut u8]) -> usize {
        let class = SizeClass::from_index(class).expect("class");
        if self.mode == Mode::Fallback {
            return self.locked(|r| out.iter_mut().map_while(|o| r.pop(class).map(|p| *o = p)).count()).unwrap_or(0);
        }
        // SAFETY: out is writable for its length.
        unsafe { cs::rseqalloc_cs_pop_batch(class.index(), out.as_mut_ptr(), out.len()) }
    }

    /// Pushes a prefix of `items` with one commit; returns its length.
    #[allow(clippy::not_unsafe_ptr_arg_deref)] // the pointers are tokens: only stored, never read through
    pub fn push_batch(&self, class: usize, items: &[*mut u8]) -> usize {
        let class = SizeClass::from_index(class).expect("class");
        if self.mode == Mode::Fallback {
            return self.locked(|r| items.iter().take_while(|&&p| r.push(class, p)).count()).unwrap_or(0);
        }
        // SAFETY: items is readable for its length.
        unsafe { cs::rseqalloc_cs_push_batch(class.index(), items.as_ptr(), items.len()) }
    }

    /// Lays out cache `cpu` and raises `class`'s capacity by up to `slots`;
    /// returns the slots added.
    pub fn grow(&self, cpu: usize, class: usize, slots: usize) -> usize {
        let region = region::region(cpu).expect("cpu");
        self.grow_fenced(cpu, class, slots, || region.fence())
    }

    /// `grow`, with `fence` standing for the fence that laying the region
    /// out needs (a test's simulation).
    pub fn grow_fenced(&self, cpu: usize, class: usize, slots: usize, fence: impl FnOnce()) -> usize {
        let class = SizeClass::from_index(class).expect("class");
        let region = region::region(cpu).expect("cpu");
        let region = region.lock();
        region.init(fence);
        region.grow(class, slots)
    }

    /// Empties `class`'s stack in cache `cpu` under its lock. Only sound
    /// when no other thread runs sections (single-threaded tests, or after
    /// the workers joined).
    pub fn drain(&self, cpu: usize, class: usize) -> Vec<*mut u8> {
        let class = SizeClass::from_index(class).expect("class");
        let region = region::region(cpu).expect("cpu");
        let region = region.lock();
        core::iter::from_fn(|| region.pop(class)).collect()
    }

    /// Sets `class`'s capacity in cache `cpu` to at most `capacity` slots
    /// with the remote-operation protocol (stop, fence, spill, restore),
    /// which is safe while other threads run sections on the cache. Returns
    /// the objects that no longer fit. `fence` (called once or twice) stands
    /// for the real fence (`Slab::fence`) or a test's simulation of one.
    pub fn shrink_remote(&self, cpu: usize, class: usize, capacity: usize, fence: impl FnMut()) -> Vec<*mut u8> {
        let class = SizeClass::from_index(class).expect("class");
        let region = region::region(cpu).expect("cpu");
        let mut spilled = Vec::new();
        region.lock().resize(
            |c, _| (c == class).then_some(capacity),
            fence,
            |_, objects| spilled.extend_from_slice(objects),
        );
        spilled
    }

    /// The allocator's fence for cache `cpu` (membarrier-RSEQ, or migration).
    pub fn fence(&self, cpu: usize) {
        crate::rseq::fence::fence(cpu)
    }

    /// Address of cache `cpu`'s region, for a test that plays the sections'
    /// loads and stores in Rust: `class`'s header is the u64 at
    /// `HEADERS_OFF + 8 * class`, slot `i` the pointer at `8 * i`.
    pub fn region_base(&self, cpu: usize) -> usize {
        region::region(cpu).expect("cpu").meta() as *const _ as usize
    }

    /// `class`'s header in cache `cpu`.
    pub fn header(&self, cpu: usize, class: usize) -> ClassHeader {
        region::region(cpu).expect("cpu").header(SizeClass::from_index(class).expect("class"))
    }

    /// Simulates an aborted push or batch push: writes `junk` into every
    /// slot of `class` at or above `current`, which a section may have
    /// written before losing its commit.
    #[allow(clippy::not_unsafe_ptr_arg_deref)] // the pointers are tokens: only stored, never read through
    pub fn scribble_above_top(&self, cpu: usize, class: usize, junk: *mut u8) {
        let h = self.header(cpu, class);
        let region = region::region(cpu).expect("cpu");
        for slot in h.current..h.end {
            // SAFETY: [current, end) are slots of this class's partition.
            unsafe { *((region.meta() as *const _ as usize + 8 * slot as usize) as *mut *mut u8) = junk };
        }
    }

    fn locked<R>(&self, f: impl FnOnce(&LockedRegion) -> R) -> Option<R> {
        let region = crate::platform::os::current_cpu().and_then(region::region)?;
        let locked = region.try_lock()?;
        locked.init(|| region.fence());
        Some(f(&locked))
    }
}

/// Registers the calling thread's own rseq area if the process runs in
/// that mode (glibc's area needs nothing). Returns whether the thread can
/// run sections.
pub fn register_thread() -> bool {
    rseq::current_index().is_some()
}

/// The cache the calling thread's sections would use now (it may change
/// at once): a test counts which caches its threads reached.
pub fn current_index() -> Option<usize> {
    rseq::current_index()
}

/// Restart counts per section (pop, push, pop batch, push batch).
pub fn restarts() -> [u64; cs::NUM_SITES] {
    // SAFETY: the counters are a static array in the asm object.
    core::array::from_fn(|i| unsafe { cs::rseqalloc_restarts[i].load(Ordering::Relaxed) })
}

/// Reservations of address space the heap has made so far (the first
/// included); `RSEQALLOC_TEST_RESERVATION=<bytes>` in the environment at
/// load time sets their size, so a test can make the heap cross many.
pub fn arena_reservations() -> u64 {
    crate::backend::page_heap::HEAP.reservations()
}

/// The window every reservation lies in: (base, bytes).
pub fn arena_window() -> (usize, usize) {
    crate::backend::page_heap::HEAP.map().window()
}

/// The size class's size if `p` lies in a small span (the class map's
/// answer: None for medium and large blocks, free granules and anything
/// that is not ours).
pub fn class_size_at(p: *const u8) -> Option<usize> {
    crate::backend::page_heap::HEAP.map().class_of(p).map(|class| class.size())
}
