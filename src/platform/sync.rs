//! An allocation-free spin lock for the slow paths: test-and-test-and-set,
//! with `sched_yield` once spinning stops paying.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::platform::os;

/// Protects a `T` that the slow paths share. Holds are short (a batch copy,
/// a span carve); `std::sync::Mutex` is avoided because it may allocate and
/// cannot be built in a `const` array of every size class on older toolchains.
// C layout: the flag comes first, on the line that holds the start of the
// value, which is where a holder looks next.
#[repr(C)]
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one holder at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above; the lock owns the value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new unlocked lock.
    pub const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, spinning and then yielding while another holds it.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        self.lock_contended()
    }

    #[cold]
    fn lock_contended(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    core::hint::spin_loop();
                    spins += 1;
                } else {
                    os::yield_now();
                }
            }
            if let Some(guard) = self.try_lock() {
                return guard;
            }
        }
    }

    /// Takes the lock and keeps it past the caller's scope, for the fork
    /// handlers, which take every lock in one callback and drop them in
    /// another (`init::fork_prepare`).
    pub fn acquire(&self) {
        core::mem::forget(self.lock());
    }

    /// Drops a lock taken with `acquire`.
    ///
    /// # Safety
    /// This thread took the lock with `acquire` (in the child of a fork, the
    /// forking thread's hold is the child's own) and uses nothing it guards.
    pub unsafe fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        if self.locked.swap(true, Ordering::Acquire) {
            None
        } else {
            Some(SpinGuard { lock: self })
        }
    }
}

/// Access to the locked value; unlocks on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A `T` alone on its 64-byte cache line (or lines), so that CPUs writing
/// neighbouring entries of an array of them do not take the line from each
/// other (false sharing): per-class locks and counters, lock shards.
#[repr(align(64))]
pub struct CacheLine<T>(pub T);

// A `CacheLine` starts a line and owns every line it touches: its size is
// rounded up to whole lines, so an array's neighbours never share one.
const _: () = assert!(
    core::mem::align_of::<CacheLine<u8>>() == 64
        && core::mem::size_of::<CacheLine<u8>>() == 64
        && core::mem::size_of::<CacheLine<[u8; 65]>>() == 128
);

impl<T> Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
