//! Memory for allocations that re-enter the allocator from inside its own
//! bring-up, on the thread doing it (`init::initialising_here`): a bump
//! area in .bss. Its blocks are never reused: `free` recognises and ignores
//! them, `realloc` copies out of them. Bring-up allocates nothing today, so
//! this is a defence against a libc or loader call that starts to.

use core::cell::UnsafeCell;

use core::sync::atomic::{AtomicUsize, Ordering};

const BYTES: usize = 64 * 1024;
/// Each block is preceded by a 16-byte header holding its size.
const HEADER: usize = 16;

#[repr(C, align(4096))]
struct Area(UnsafeCell<[u8; BYTES]>);

// SAFETY: bytes are handed out once each, by the atomic cursor.
unsafe impl Sync for Area {}

static AREA: Area = Area(UnsafeCell::new([0; BYTES]));
static USED: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    AREA.0.get() as usize
}

/// A zeroed block of `size` bytes at `align` (≤ 4096), or null when the
/// area is used up.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let mut used = USED.load(Ordering::Relaxed);
    loop {
        let start = (used + HEADER).next_multiple_of(align.max(HEADER));
        let Some(end) = start.checked_add(size).filter(|&end| end <= BYTES && align <= 4096) else {
            return core::ptr::null_mut();
        };
        match USED.compare_exchange(used, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                let block = (base() + start) as *mut u8;
                // SAFETY: [start - HEADER, end) is ours alone, inside the area.
                unsafe { block.sub(HEADER).cast::<usize>().write(size) };
                return block;
            }
            Err(seen) => used = seen,
        }
    }
}

/// The size of a bootstrap block, or None if `p` is not in the area.
pub fn size_of(p: *const u8) -> Option<usize> {
    let offset = (p as usize).wrapping_sub(base());
    // SAFETY: a block's header lies HEADER bytes before it, inside the
    // area; a pointer that is not a block start reads some other word of
    // the area, which is harmless for a pointer already known to be bad.
    (HEADER..BYTES).contains(&offset).then(|| unsafe { (p.sub(HEADER) as *const usize).read_unaligned() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_are_aligned_distinct_and_remember_their_size() {
        let a = super::alloc(10, 16);
        let b = super::alloc(100, 4096);
        assert!(!a.is_null() && !b.is_null() && a != b);
        assert_eq!(b as usize % 4096, 0);
        assert_eq!(super::size_of(a), Some(10));
        assert_eq!(super::size_of(b), Some(100));
        assert_eq!(super::size_of(&0u8), None);
        assert!(super::alloc(super::BYTES, 16).is_null());
    }
}
