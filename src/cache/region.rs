//! The region, the data structure of a CPU cache: one region of
//! object-pointer stacks per CPU (or mm_cid), pushed and popped by the
//! critical sections in `asm/`. This module holds the layout, the headers
//! and their encoding, the mapping of every region, lazy layout, capacity
//! growth within the budget, and the remote stop–fence–spill protocol
//! (`LockedRegion::resize`); what to do on a miss and when to shrink or
//! drain is the policy's (`percpu`).
//!
//! ```text
//!  slabs + idx << REGION_SHIFT (128 KiB per region, lazily touched)
//!  +-------------------+  0
//!  | RegionMeta        |  lock, hit counters (bumped inside sections),
//!  |                   |  miss counters and budget (slow paths)
//!  +-------------------+  64
//!  | ClassHeader[41]   |  {current, aux, end, begin}: u16 slot indices
//!  +-------------------+  FIRST_SLOT * 8
//!  | class 1 slots     |  [begin, current) cached objects,
//!  | class 2 slots     |  [current, end) room, end <= begin + max_capacity
//!  | ...               |
//!  +-------------------+
//! ```
//!
//! A region is all zeros until its first slow-path visit: zero headers make
//! every pop see "empty" (current <= begin) and every push see "full"
//! (current >= end), so no section can touch an uninitialised region.
//! Sections only ever store `current`. Everything else (init, growing `end`)
//! happens under the region lock with a 64-bit CAS on the header, which fails
//! whenever a section committed in between; growing `end` needs no fence
//! because a section that read the old `end` simply used less room.

use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};

use crate::platform::os;
use crate::platform::size_class::{SizeClass, NUM_CLASSES};
use crate::platform::sync::{SpinGuard, SpinLock};
use crate::rseq::abi::header as h;
use crate::rseq::fence;

/// log2 of a region's size.
pub const REGION_SHIFT: u32 = 17;
/// Bytes per region.
pub const REGION_BYTES: usize = 1 << REGION_SHIFT;
/// Most regions a process uses; indices at or above miss to the middle end.
pub const MAX_CPUS: usize = 1024;

/// The first 64 bytes of a region.
#[repr(C, align(64))]
pub struct RegionMeta {
    /// Serialises init and capacity changes (and every operation in fallback
    /// mode).
    pub lock: SpinLock<()>,
    /// Set once the headers are laid out.
    pub initialized: AtomicBool,
    /// Pops served from this region; bumped by every pop section just
    /// before its commit, so a restarted pop may count twice (bounded by
    /// restarts).
    pub alloc_hits: AtomicU64,
    /// Pushes served; as `alloc_hits`.
    pub free_hits: AtomicU64,
    /// Allocations that found the stack empty.
    pub alloc_misses: AtomicU64,
    /// Frees that found the stack full.
    pub free_misses: AtomicU64,
    /// Σ over classes of (end - begin) × size: the budget in use.
    pub capacity_bytes: AtomicU64,
    /// A class missed and could not grow because the budget was spent; the
    /// background thread then moves capacity from classes that do not miss.
    pub starved: AtomicBool,
}

/// One size class's stack in a region.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClassHeader {
    /// Slot index one past the top object.
    pub current: u16,
    /// Misses since the background thread last looked (saturating), kept
    /// by the slow paths; sections never touch it.
    pub aux: u16,
    /// Slot index one past the last usable slot.
    pub end: u16,
    /// Slot index of the bottom of the stack.
    pub begin: u16,
}

/// The first slot after the meta block and the headers.
pub const FIRST_SLOT: usize = (h::HEADERS_OFF as usize + NUM_CLASSES * 8).div_ceil(8);

/// Each class's `begin`: classes' partitions laid end to end.
const BEGIN: [u16; NUM_CLASSES] = {
    let mut begin = [0u16; NUM_CLASSES];
    let mut next = FIRST_SLOT;
    let mut c = 1;
    while c < NUM_CLASSES {
        begin[c] = next as u16;
        next += match SizeClass::from_index(c) {
            Some(class) => class.max_capacity(),
            None => 0,
        };
        c += 1;
    }
    assert!(next <= REGION_BYTES / 8, "partitions overflow the region");
    begin
};

const _: () = {
    assert!(REGION_SHIFT as i64 == h::REGION_SHIFT);
    assert!(offset_of!(RegionMeta, alloc_hits) as i64 == h::META_OFF_ALLOC_HITS);
    assert!(offset_of!(RegionMeta, free_hits) as i64 == h::META_OFF_FREE_HITS);
    assert!(core::mem::size_of::<RegionMeta>() as i64 == h::HEADERS_OFF);
    assert!(offset_of!(ClassHeader, current) as i64 == h::HDR_OFF_CURRENT);
    assert!(offset_of!(ClassHeader, aux) as i64 == h::HDR_OFF_AUX);
    assert!(offset_of!(ClassHeader, end) as i64 == h::HDR_OFF_END);
    assert!(offset_of!(ClassHeader, begin) as i64 == h::HDR_OFF_BEGIN);
    assert!(core::mem::size_of::<ClassHeader>() as i64 == h::HDR_SIZE);
};

static SLABS: AtomicUsize = AtomicUsize::new(0);
static NCPU: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(0);

/// Maps the regions for `ncpu` caches; they stay mapped for the life of the
/// process (the kernel may be running a section on any of them).
pub fn map_slabs(ncpu: usize, budget: usize) -> Option<usize> {
    let base = os::map_aligned(ncpu * REGION_BYTES, REGION_BYTES, false);
    if base.is_null() {
        return None;
    }
    SLABS.store(base as usize, Ordering::Relaxed);
    NCPU.store(ncpu, Ordering::Relaxed);
    BUDGET.store(budget, Ordering::Relaxed);
    Some(base as usize)
}

/// Number of regions.
pub fn ncpu() -> usize {
    NCPU.load(Ordering::Relaxed)
}

/// The region of cache `idx`, if it exists.
pub fn region(idx: usize) -> Option<Region> {
    (idx < ncpu()).then(|| Region { base: SLABS.load(Ordering::Relaxed) + (idx << REGION_SHIFT) })
}

/// Takes every region's lock (fork prepare). Touches each region's first
/// page, so a region never used costs one page from the first fork on.
pub fn lock_all() {
    (0..ncpu()).filter_map(region).for_each(|r| r.meta().lock.acquire());
}

/// Drops the locks `lock_all` took.
///
/// # Safety
/// As for `SpinLock::release`: this thread called `lock_all`.
pub unsafe fn unlock_all() {
    // SAFETY: the caller's guarantee.
    (0..ncpu()).filter_map(region).for_each(|r| unsafe { r.meta().lock.release() });
}

/// A handle on one region.
#[derive(Clone, Copy)]
pub struct Region {
    base: usize,
}

/// A region whose lock this thread holds: what laying the region out and
/// changing its capacities need (sections race only with the header CASes),
/// and, in fallback mode and tests, plain pops and pushes. Unlocks on drop.
pub struct LockedRegion {
    region: Region,
    _guard: SpinGuard<'static, ()>,
}

impl core::ops::Deref for LockedRegion {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Region {
    /// Takes the region lock, waiting for it.
    pub fn lock(&self) -> LockedRegion {
        LockedRegion { region: *self, _guard: self.meta().lock.lock() }
    }

    /// Takes the region lock if it is free.
    pub fn try_lock(&self) -> Option<LockedRegion> {
        Some(LockedRegion { region: *self, _guard: self.meta().lock.try_lock()? })
    }

    /// Fences this region's cache (`fence::fence`).
    pub fn fence(&self) {
        fence::fence((self.base - SLABS.load(Ordering::Relaxed)) >> REGION_SHIFT)
    }

    /// The region's meta block.
    pub fn meta(&self) -> &'static RegionMeta {
        // SAFETY: the region lies in the slabs mapping, which is never
        // unmapped; RegionMeta is valid when zeroed (all atomics).
        unsafe { &*(self.base as *const RegionMeta) }
    }

    /// `class`'s header as one atomic word.
    fn header_word(&self, class: SizeClass) -> &'static AtomicU64 {
        // SAFETY: headers live at HEADERS_OFF + 8 * class inside the region;
        // they are 8-byte aligned.
        unsafe { &*((self.base + h::HEADERS_OFF as usize + 8 * class.index()) as *const AtomicU64) }
    }

    /// `class`'s header `current` field, the one sections store.
    fn current(&self, class: SizeClass) -> &'static AtomicU16 {
        // SAFETY: `current` is the first u16 of the header.
        unsafe { &*((self.base + h::HEADERS_OFF as usize + 8 * class.index()) as *const AtomicU16) }
    }

    /// Reads `class`'s header.
    pub fn header(&self, class: SizeClass) -> ClassHeader {
        decode(self.header_word(class).load(Ordering::Acquire))
    }

    /// Slot `i` of the region.
    fn slot(&self, i: u16) -> *mut *mut u8 {
        (self.base + 8 * i as usize) as *mut *mut u8
    }

    /// Objects cached for `class`.
    pub fn depth(&self, class: SizeClass) -> usize {
        let header = self.header(class);
        header.current.saturating_sub(header.begin) as usize
    }
}

impl LockedRegion {
    /// Counts a miss on `class` in its header's `aux` (saturating), which
    /// `resize`'s plan reads and clears.
    pub fn note_miss(&self, class: SizeClass) {
        self.update(class, |h| Some(ClassHeader { aux: h.aux.saturating_add(1), ..h }));
    }

    /// Replaces `class`'s header by `change(header)` with a CAS that fails
    /// (and retries) whenever a section committed meanwhile. Returns the
    /// header before the change, or None if `change` declined. Only
    /// sections race with it: the lock keeps every other writer out.
    fn update(&self, class: SizeClass, change: impl Fn(ClassHeader) -> Option<ClassHeader>) -> Option<ClassHeader> {
        let word = self.header_word(class);
        let mut old = word.load(Ordering::Acquire);
        loop {
            let new = change(decode(old))?;
            match word.compare_exchange(old, encode(new), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(decode(old)),
                Err(seen) => old = seen,
            }
        }
    }

    /// Lays out every class's empty stack with no capacity, once. `fence`
    /// is this region's fence.
    ///
    /// Sections read `current` and then `end` (or `begin`) with two loads, so
    /// a push that read the zero header's `current` must not go on to read a
    /// laid-out `end` (it would write slot 0, the meta block). Hence two
    /// steps: `current = begin` on a stopped stack, a fence, then the stack.
    pub fn init(&self, fence: impl FnOnce()) {
        let meta = self.meta();
        if meta.initialized.load(Ordering::Relaxed) {
            return;
        }
        for class in SizeClass::all() {
            let b = BEGIN[class.index()];
            self.header_word(class).store(encode(stopped(b)), Ordering::Release);
        }
        fence();
        for class in SizeClass::all() {
            let b = BEGIN[class.index()];
            let header = ClassHeader { current: b, aux: 0, end: b, begin: b };
            self.header_word(class).store(encode(header), Ordering::Release);
        }
        meta.initialized.store(true, Ordering::Release);
    }

    /// Raises `class`'s `end` by up to `want` slots, within its partition
    /// and the region's byte budget. Returns the slots added.
    pub fn grow(&self, class: SizeClass, want: usize) -> usize {
        let meta = self.meta();
        let header = self.header(class);
        if header.begin != BEGIN[class.index()] {
            return 0; // not laid out: sections must keep missing
        }
        let budget = BUDGET.load(Ordering::Relaxed) as u64;
        let used = meta.capacity_bytes.load(Ordering::Relaxed);
        let affordable = (budget.saturating_sub(used) / class.size() as u64) as usize;
        let wanted = want.min(class.max_capacity() - (header.end - header.begin) as usize);
        if affordable < wanted {
            meta.starved.store(true, Ordering::Relaxed);
        }
        let step = wanted.min(affordable);
        if step == 0 {
            return 0;
        }
        // `end` and `begin` only change under the lock we hold, so `step`
        // stays right while the CAS retries past sections' commits.
        self.update(class, |h| Some(ClassHeader { end: h.end + step as u16, ..h }));
        meta.capacity_bytes.fetch_add((step * class.size()) as u64, Ordering::Relaxed);
        step
    }

    /// `class`'s capacity in objects (0 while it is not laid out or is
    /// stopped). Stable while the lock is held: only its holder moves `end`
    /// and `begin`.
    pub fn capacity(&self, class: SizeClass) -> usize {
        let header = self.header(class);
        header.end.saturating_sub(header.begin) as usize
    }

    /// Sets the capacity of some classes while sections may be running on
    /// this region from any CPU: the remote-operation protocol (stop the
    /// stack, fence, then change it; `tests/model_remote.rs` checks it).
    /// `plan(class, header)` gives a class's new capacity in slots
    /// (None leaves the class alone; growing is `grow`'s job, so a
    /// larger value keeps the capacity); `header.aux` tells it the class's
    /// misses since the previous call, and every count starts again at zero.
    /// Cached objects above the new capacity go to `spill`. Returns the bytes
    /// of budget given up.
    ///
    /// 1. Stop each planned class: a CAS sets `end = 0, begin = 0xFFFF`, so
    ///    every section that reads the header from now on misses. Sections
    ///    that read it earlier may still commit `current`.
    /// 2. `fence()`: afterwards none of those can commit any more.
    /// 3. Read the now stable `current`, spill what is above the new end.
    /// 4. If that lowered `current`: store it, still stopped, and fence
    ///    again. Sections load `current` and `begin` separately, so a pop that
    ///    read the old `current` must not meet the restored `begin`.
    /// 5. Store the new headers.
    ///
    /// The lock keeps init, growth and fallback-mode operations out, and
    /// `fence` keeps the promise of step 2 (`Region::fence`, or a test's
    /// simulation).
    pub fn resize(
        &self,
        mut plan: impl FnMut(SizeClass, ClassHeader) -> Option<usize>,
        mut fence: impl FnMut(),
        mut spill: impl FnMut(SizeClass, &[*mut u8]),
    ) -> usize {
        // (old end, new end) of each stopped class; 0 = not stopped (no
        // partition starts at slot 0).
        let mut planned = [(0u16, 0u16); NUM_CLASSES];
        for class in SizeClass::all() {
            let header = self.header(class);
            if header.begin != BEGIN[class.index()] {
                continue;
            }
            let Some(capacity) = plan(class, header) else {
                if header.aux != 0 {
                    self.update(class, |h| Some(ClassHeader { aux: 0, ..h }));
                }
                continue;
            };
            let new_end = header.begin + capacity.min((header.end - header.begin) as usize) as u16;
            self.update(class, |h| Some(ClassHeader { aux: h.aux, ..stopped(h.current) }));
            planned[class.index()] = (header.end, new_end);
        }
        if planned.iter().all(|&(_, new_end)| new_end == 0) {
            return 0;
        }
        fence();
        let mut lowered = false;
        for class in SizeClass::all() {
            let new_end = planned[class.index()].1;
            let current = self.header(class).current;
            if new_end == 0 || current <= new_end {
                continue;
            }
            // SAFETY: slots [new_end, current) hold committed objects of this
            // class; the stop and the fence keep every section out.
            let objects = unsafe { core::slice::from_raw_parts(self.slot(new_end), (current - new_end) as usize) };
            spill(class, objects);
            self.header_word(class).store(encode(stopped(new_end)), Ordering::Release);
            lowered = true;
        }
        if lowered {
            fence();
        }
        let mut given_up = 0;
        for class in SizeClass::all() {
            let (old_end, new_end) = planned[class.index()];
            if new_end == 0 {
                continue;
            }
            let current = self.header(class).current;
            let header = ClassHeader { current, aux: 0, end: new_end, begin: BEGIN[class.index()] };
            self.header_word(class).store(encode(header), Ordering::Release);
            given_up += (old_end - new_end) as usize * class.size();
        }
        self.meta().capacity_bytes.fetch_sub(given_up as u64, Ordering::Relaxed);
        given_up
    }

    /// Gives the pages of an emptied region's slots back to the OS (they
    /// read as zeros when it is used again). Does nothing unless every
    /// class's capacity is zero, which keeps every section off the slots.
    pub fn release_slots(&self) -> bool {
        let meta = self.meta();
        if !meta.initialized.load(Ordering::Relaxed) || meta.capacity_bytes.load(Ordering::Relaxed) != 0 {
            return false;
        }
        // SAFETY: the slot pages past the first (which holds the meta block
        // and headers) belong to this region, and no class may use a slot.
        unsafe { os::release((self.base + os::OS_PAGE) as *mut u8, REGION_BYTES - os::OS_PAGE) }
    }

    /// Pops with plain memory operations (fallback mode and tests): no
    /// section may run on this region.
    pub fn pop(&self, class: SizeClass) -> Option<*mut u8> {
        let header = self.header(class);
        if header.current <= header.begin {
            return None;
        }
        let top = header.current - 1;
        // SAFETY: begin <= top < end lies in the class's partition.
        let p = unsafe { *self.slot(top) };
        self.current(class).store(top, Ordering::Release);
        Some(p)
    }

    /// Pushes with plain memory operations; false when full. Same contract
    /// as `pop`.
    pub fn push(&self, class: SizeClass, p: *mut u8) -> bool {
        let header = self.header(class);
        if header.current >= header.end {
            return false;
        }
        // SAFETY: current < end lies in the class's partition.
        unsafe { *self.slot(header.current) = p };
        self.current(class).store(header.current + 1, Ordering::Release);
        true
    }
}

/// A header on which every section misses: pushes see it full (`end` 0),
/// pops see it empty (`begin` 0xFFFF); only `current` is meaningful.
fn stopped(current: u16) -> ClassHeader {
    ClassHeader { current, aux: 0, end: 0, begin: u16::MAX }
}

/// The shift of the header field at byte offset `off` (asm/abi.h's
/// `HDR_OFF_*`) in the header read as one little-endian word.
const fn shift(off: i64) -> u32 {
    8 * off as u32
}

/// The header as the one word the slow paths load and compare-and-swap.
fn encode(header: ClassHeader) -> u64 {
    (header.current as u64) << shift(h::HDR_OFF_CURRENT)
        | (header.aux as u64) << shift(h::HDR_OFF_AUX)
        | (header.end as u64) << shift(h::HDR_OFF_END)
        | (header.begin as u64) << shift(h::HDR_OFF_BEGIN)
}

/// The header in the word `encode` made.
fn decode(v: u64) -> ClassHeader {
    ClassHeader {
        current: (v >> shift(h::HDR_OFF_CURRENT)) as u16,
        aux: (v >> shift(h::HDR_OFF_AUX)) as u16,
        end: (v >> shift(h::HDR_OFF_END)) as u16,
        begin: (v >> shift(h::HDR_OFF_BEGIN)) as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_partitions_are_disjoint() {
        let h = ClassHeader { current: 1, aux: 2, end: 3, begin: 4 };
        assert_eq!(decode(encode(h)), h);
        // The word is the header's memory read as one u64, as
        // `header_word` reads it beside the sections' 16-bit `current`.
        // SAFETY: ClassHeader is 8 bytes of plain integers.
        let memory: [u8; 8] = unsafe { core::mem::transmute(h) };
        assert_eq!(encode(h), u64::from_le_bytes(memory));
        for class in SizeClass::all() {
            let b = BEGIN[class.index()] as usize;
            assert!(b >= FIRST_SLOT);
            if let Some(next) = SizeClass::from_index(class.index() + 1) {
                assert_eq!(b + class.max_capacity(), BEGIN[next.index()] as usize);
            } else {
                assert!(b + class.max_capacity() <= REGION_BYTES / 8);
            }
        }
    }
}
