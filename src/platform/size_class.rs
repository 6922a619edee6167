//! Size classes: the sizes small objects are rounded up to, the one-load
//! size → class lookup, and each class's batch, span and cache shape.
//!
//! Classes are 16 bytes apart up to 128, then four per power of two up to
//! 32 KiB (jemalloc's spacing): at most 25% and on average ~12% internal
//! waste. Every class is a multiple of 16, so every object is 16-byte aligned
//! (glibc's guarantee); a class is further aligned to the largest power of two
//! dividing its size, because spans start on span-size boundaries.

/// The largest size served by size classes and per-CPU caches; larger
/// blocks are mapped whole.
///
/// ```
/// use std::alloc::{GlobalAlloc, Layout};
/// let big = Layout::from_size_align(rseqalloc::MAX_SMALL + 1, 8).unwrap();
/// unsafe {
///     let p = rseqalloc::RseqAlloc.alloc(big);
///     assert!(rseqalloc::usable_size(p) > rseqalloc::MAX_SMALL);
///     rseqalloc::RseqAlloc.dealloc(p, big);
/// }
/// ```
pub const MAX_SMALL: usize = 32 * 1024;

/// Number of header slots per region: class 0 is unused, so that a class's
/// index is its header's index and a zero class-map byte means "not small".
pub const NUM_CLASSES: usize = 41;

/// Object size of each class; `SIZES[0]` is the unused class 0.
const SIZES: [u32; NUM_CLASSES] = [
    0, 16, 32, 48, 64, 80, 96, 112, 128, // 16 apart
    160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, // four per doubling
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, //
    10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
];

/// What `free` needs to tell an object start of a class: three numbers per
/// class-map byte, in three arrays, so that each is one scaled load from
/// one base (a 16-byte entry would need its index shifted first). The bytes
/// that name no class (0, a medium run's marker) keep all-zero numbers,
/// which no address passes (an offset times 0 is never below a limit of 0),
/// so C `free` needs no range check of the byte before it looks. For class
/// size s, entry:
/// - `multiplier` M = ⌊2⁶⁴ / s⌋ + 1: for an offset < 2³², `offset * M mod
///   2⁶⁴` is below M exactly when the offset is a multiple of s (Lemire,
///   Kaser & Kurz, "Faster remainder by direct computation", 2019), and for
///   the multiple k·s it is k·e, with e = s·M - 2⁶⁴ in 1..=s;
/// - `limit` n·e, for the n whole objects of a span (its tail holds none):
///   the product is below it exactly at the starts of objects 0..n, since
///   n·e ≤ span size < M, so one compare tests the multiple and the tail;
/// - `span_mask` span size - 1: spans are aligned to their size, so an
///   address masked by it is its offset in its span.
#[cfg(any(test, feature = "capi"))]
struct ObjectStarts {
    multiplier: [u64; 256],
    limit: [u64; 256],
    span_mask: [u32; 256],
}

#[cfg(any(test, feature = "capi"))]
static OBJECT_STARTS: ObjectStarts = {
    let mut e = ObjectStarts { multiplier: [0; 256], limit: [0; 256], span_mask: [0; 256] };
    let mut c = 1;
    while c < NUM_CLASSES {
        let size = SIZES[c] as u64;
        let span = (SizeClass(c as u8).span_granules() << 16) as u64;
        // u64::MAX / size is ⌊2⁶⁴ / size⌋ except for a power of two, where
        // it is one less.
        let multiplier = u64::MAX / size + 1 + size.is_power_of_two() as u64;
        let excess = size.wrapping_mul(multiplier);
        assert!(excess >= 1 && excess <= size && span <= u32::MAX as u64);
        e.multiplier[c] = multiplier;
        e.limit[c] = (span / size) * excess;
        e.span_mask[c] = (span - 1) as u32;
        c += 1;
    }
    e
};

#[cfg(any(test, feature = "capi"))]
impl ObjectStarts {
    /// Whether an object of the class with map byte `byte` starts at `p`, an
    /// address in one of its spans.
    #[inline(always)]
    fn holds(&self, byte: u8, p: usize) -> bool {
        let b = byte as usize;
        let offset = (p as u32 & self.span_mask[b]) as u64;
        offset.wrapping_mul(self.multiplier[b]) < self.limit[b]
    }
}

/// The largest number of objects moved between a CPU cache and the middle
/// end in one batch (stack buffers are this long).
pub const MAX_BATCH: usize = 32;

/// The order a span's objects are carved in (`SizeClass::carve_order`):
/// within each group of `group` objects (a whole number of lines), carving
/// position `j` takes object `(j % 8) * stride + j / 8`, so eight objects
/// carved in a row lie on lines of their own, and a group's lines still go
/// out together; past the last whole group, address order.
#[derive(Clone, Copy, Debug)]
pub struct CarveOrder {
    stride: usize,
    group: usize,
    /// Positions below this are permuted within their group.
    grouped: usize,
}

impl CarveOrder {
    /// The object (index from the span start) carved at position `bump`.
    #[inline]
    pub fn object(self, bump: usize) -> usize {
        if bump >= self.grouped {
            return bump;
        }
        let j = bump % self.group;
        bump - j + (j % 8) * self.stride + j / 8
    }

    /// Objects apart that two carved in a row are, at least (1: address
    /// order).
    #[cfg(test)]
    pub fn stride(self) -> usize {
        self.stride
    }
}

/// A small-object size class, `1..NUM_CLASSES`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct SizeClass(u8);

/// size → class for sizes ≤ MAX_SMALL at 16-byte alignment, one entry per
/// byte of size: a single byte load with no arithmetic before it, which
/// keeps two instructions off every fast path. It is 32 KiB of read-only
/// data, of which a program touches one 64-byte line per 64 sizes it uses.
/// The asm entry points read it too, by this name (declared hidden there,
/// so a shared library keeps it private).
#[no_mangle]
#[allow(non_upper_case_globals)] // the asm's name for it
static rseqalloc_class_of: [u8; MAX_SMALL + 1] = build_lookup();

const fn build_lookup() -> [u8; MAX_SMALL + 1] {
    let mut table = [0u8; MAX_SMALL + 1];
    let mut size = 0;
    while size < table.len() {
        table[size] = reference_class(size) as u8;
        size += 1;
    }
    table
}

/// The reference definition of size → class: the smallest class that fits.
/// `rseqalloc_class_of` must agree with it (a test checks every size).
pub const fn reference_class(size: usize) -> usize {
    let mut c = 1;
    while c < NUM_CLASSES - 1 && (SIZES[c] as usize) < size {
        c += 1;
    }
    c
}

impl SizeClass {
    /// The class for `size` bytes at alignment ≤ 16, or None above MAX_SMALL.
    /// Size 0 gets the smallest class.
    #[inline(always)]
    pub fn of(size: usize) -> Option<SizeClass> {
        if size <= MAX_SMALL {
            Some(Self::of_unchecked(size))
        } else {
            None
        }
    }

    /// The class for `size` ≤ MAX_SMALL at alignment ≤ 16.
    #[inline(always)]
    fn of_unchecked(size: usize) -> SizeClass {
        debug_assert!(size <= MAX_SMALL);
        // SAFETY: size ≤ MAX_SMALL, the table's last index.
        SizeClass(unsafe { *rseqalloc_class_of.get_unchecked(size) })
    }

    /// The smallest class that holds `size` bytes at alignment `align` (a
    /// power of two), or None when the block must be mapped instead.
    ///
    /// It is the class of `size` rounded up to a multiple of `align`:
    /// classes are spaced a quarter of their power of two apart, so the
    /// first one at or above a multiple of `align` is itself aligned to it
    /// (a test checks every size and alignment against the definition). One
    /// lookup, no search.
    #[inline]
    pub fn for_layout(size: usize, align: usize) -> Option<SizeClass> {
        // A zero-byte request rounds like a one-byte one.
        Self::of(size.max(1).checked_add(align - 1)? & !(align - 1))
    }

    /// The class with this index, if it is a real class.
    pub const fn from_index(index: usize) -> Option<SizeClass> {
        if index >= 1 && index < NUM_CLASSES {
            Some(SizeClass(index as u8))
        } else {
            None
        }
    }

    /// Every class, smallest first.
    pub fn all() -> impl Iterator<Item = SizeClass> {
        (1..NUM_CLASSES).map(|i| SizeClass(i as u8))
    }

    /// This class's index (its header slot and class-map byte).
    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Object size in bytes.
    #[inline(always)]
    pub const fn size(self) -> usize {
        SIZES[self.0 as usize] as usize
    }

    /// The alignment every object of this class has: the largest power of two
    /// dividing its size (what the tests hold `for_layout` to; the C API
    /// aligns a block it makes during init to it).
    #[cfg(any(test, feature = "capi"))]
    pub const fn alignment(self) -> usize {
        1 << self.size().trailing_zeros()
    }

    /// Whether `p`, an address in one of this class's spans, is where an
    /// object starts (so it may be freed). Spans are aligned to their size
    /// in the arena, so the offset is a mask: no lookup of the span.
    #[inline(always)]
    #[cfg(any(test, feature = "capi"))]
    pub fn is_object_start(self, p: usize) -> bool {
        OBJECT_STARTS.holds(self.0, p)
    }

    /// The class whose object starts at `p`, given the class-map byte of
    /// p's granule (`PageMap::map_byte`): None when the byte names no class
    /// or `p` is not where one of its objects starts. One table entry and no
    /// range check of the byte (`ObjectStarts`).
    #[inline(always)]
    #[cfg(any(test, feature = "capi"))]
    pub fn object_at(map_byte: u8, p: usize) -> Option<SizeClass> {
        OBJECT_STARTS.holds(map_byte, p).then_some(SizeClass(map_byte))
    }

    /// Objects moved per batch between a CPU cache and the middle end: about
    /// 16 KiB, between 2 and MAX_BATCH.
    pub const fn batch(self) -> usize {
        let b = (16 * 1024) / self.size();
        if b > MAX_BATCH {
            MAX_BATCH
        } else if b < 2 {
            2
        } else {
            b
        }
    }

    /// How a fresh span's objects are ordered so that consecutively carved
    /// objects never share a 64-byte cache line (`CarveOrder`): objects
    /// that tile lines exactly share one only within a row of `64 / size`;
    /// otherwise two objects `d` apart never share one once
    /// `d * size >= size + 63`, and the stride is one more, because across
    /// the wrap from one column to the next, eight positions in a row can
    /// hold objects `stride - 1` apart. Address order (stride 1) for
    /// classes whose objects own their lines (multiples of 64 B) or are
    /// 128 B and larger (neighbours share at most an edge line).
    ///
    /// Why: a CPU cache hands a just-freed object back first, and the
    /// objects carved one after another go to different threads (a thread
    /// hands its object to another, or moves to another CPU with it). In
    /// address order four 16-byte objects share a line, and threads on two
    /// CPUs end up writing one line (cache-scratch, cache-thrash).
    pub const fn carve_order(self, capacity: usize) -> CarveOrder {
        let size = self.size();
        let stride = if size % 64 == 0 || size >= 128 {
            1
        } else if 64 % size == 0 {
            64 / size
        } else {
            (size + 63).div_ceil(size) + 1
        };
        let group = 8 * stride;
        CarveOrder { stride, group, grouped: if stride == 1 { 0 } else { capacity / group * group } }
    }

    /// Span size in 64 KiB granules: one, or four above 8 KiB so that a span
    /// wastes at most ~6% to its tail.
    pub const fn span_granules(self) -> usize {
        if self.size() <= 8192 {
            1
        } else {
            4
        }
    }

    /// The most objects one CPU's cache may hold for this class: its slot
    /// partition in the region. About 128 KiB of objects, capped at 1024 and
    /// never below two batches.
    pub const fn max_capacity(self) -> usize {
        let c = (128 * 1024) / self.size();
        let floor = 2 * self.batch();
        if c > 1024 {
            1024
        } else if c < floor {
            floor
        } else {
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn carving_order_is_a_permutation_of_every_span() {
        for class in SizeClass::all() {
            let capacity = class.span_granules() * 64 * 1024 / class.size();
            let order = class.carve_order(capacity);
            let mut seen = std::vec![false; capacity];
            for bump in 0..capacity {
                let at = order.object(bump);
                assert!(at < capacity && !seen[at], "class {} position {bump} gives {at}", class.size());
                seen[at] = true;
            }
        }
    }

    #[test]
    fn lookup_agrees_with_reference_for_every_size() {
        for size in 0..=MAX_SMALL {
            assert_eq!(SizeClass::of_unchecked(size).index(), reference_class(size), "size {size}");
        }
    }

    #[test]
    fn classes_are_increasing_multiples_of_16_and_fit_their_spans() {
        for (a, b) in SizeClass::all().zip(SizeClass::all().skip(1)) {
            assert!(a.size() < b.size());
        }
        for c in SizeClass::all() {
            assert_eq!(c.size() % 16, 0);
            let span = c.span_granules() * 64 * 1024;
            assert!(span / c.size() >= 8, "class {} has fewer than 8 objects per span", c.size());
            assert!((span % c.size()) * 16 <= span, "class {} wastes over 1/16 of its span", c.size());
            assert!(c.batch() >= 2 && c.batch() <= MAX_BATCH);
            assert!(c.max_capacity() >= 2 * c.batch());
        }
        assert_eq!(SizeClass::from_index(NUM_CLASSES - 1).unwrap().size(), MAX_SMALL);
    }

    #[test]
    fn object_offsets_are_exactly_the_multiples_inside_the_span() {
        for c in SizeClass::all() {
            let span = c.span_granules() * 64 * 1024;
            for offset in 0..span {
                let expected = offset % c.size() == 0 && offset + c.size() <= span;
                // A span at 1 MiB in the arena: the offset is the low bits.
                assert_eq!(c.is_object_start((1 << 20) + offset), expected, "class {} offset {offset}", c.size());
            }
        }
    }

    #[test]
    fn object_at_names_a_class_only_for_class_bytes_at_object_starts() {
        for byte in 0..=255u8 {
            let class = SizeClass::from_index(byte as usize);
            for offset in [0, 16, 48, 64, 96, 4096, 65536 - 16, 65536, 3 * 65536] {
                let p = (1 << 20) + offset;
                let expected = class.filter(|c| c.is_object_start(p));
                assert_eq!(SizeClass::object_at(byte, p), expected, "byte {byte} offset {offset}");
            }
        }
    }

    #[test]
    fn for_layout_is_the_smallest_aligned_class_that_fits() {
        for shift in 0..=16 {
            let align = 1usize << shift;
            for size in 0..=MAX_SMALL {
                let smallest = SizeClass::all().find(|c| c.size() >= size && c.alignment() >= align);
                assert_eq!(SizeClass::for_layout(size, align), smallest, "size {size} align {align}");
            }
        }
    }

    proptest! {
        #[test]
        fn class_fits_request_and_bounds_waste(size in 0usize..=MAX_SMALL) {
            let c = SizeClass::of(size).unwrap();
            prop_assert!(c.size() >= size);
            // A zero-byte request gets the 16-byte class like a one-byte one.
            let asked = size.max(1);
            prop_assert!(c.size() - asked <= 15usize.max(asked / 4), "size {} -> {}", size, c.size());
            prop_assert!(c.alignment() >= 16);
        }

        #[test]
        fn lookup_is_monotone(a in 0usize..=MAX_SMALL, b in 0usize..=MAX_SMALL) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(SizeClass::of(lo).unwrap() <= SizeClass::of(hi).unwrap());
        }

        #[test]
        fn over_aligned_classes_honour_alignment(size in 0usize..=MAX_SMALL, shift in 0u32..=16) {
            let align = 1usize << shift;
            match SizeClass::for_layout(size, align) {
                Some(c) => {
                    prop_assert!(c.size() >= size);
                    prop_assert!(c.alignment() >= align);
                    prop_assert_eq!(c.size() % align, 0);
                }
                // Only alignments beyond every class's may go to mappings.
                None => prop_assert!(align > 16 && SizeClass::all().all(|c| c.size() < size || c.alignment() < align)),
            }
        }

        #[test]
        fn too_big_has_no_class(size in MAX_SMALL + 1..usize::MAX) {
            prop_assert!(SizeClass::of(size).is_none());
        }
    }
}
