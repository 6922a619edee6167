//! The public allocator type, [`RseqAlloc`], and the options it carries:
//! `global` (or `forward`, where there is no per-CPU path) implements
//! `GlobalAlloc` for it.

use crate::platform::config::Options;

/// The rseqalloc global allocator. On a target without the per-CPU path
/// it forwards every call to the system allocator ([`Mode::Forward`](crate::Mode::Forward)),
/// and options set in code have no effect.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;
///
/// fn main() {
///     let v: Vec<u64> = (0..1000).collect();
///     assert_eq!(v.iter().sum::<u64>(), 499_500);
/// }
/// ```
///
/// With options set in code ([`Options`]); the environment's
/// `RSEQALLOC_*` variables win over them:
///
/// ```
/// use rseqalloc::{Options, RseqAlloc};
///
/// #[global_allocator]
/// static GLOBAL: RseqAlloc = RseqAlloc::with(Options::new().decay_ms(5000));
///
/// fn main() {
///     let v: Vec<u64> = (0..1000).collect();
///     assert_eq!(rseqalloc::stats().config.decay_ms, 5000);
///     # drop(v);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RseqAlloc {
    pub(crate) options: Options,
}

/// The allocator with every option from the environment or its default,
/// so that `static GLOBAL: RseqAlloc = RseqAlloc;` reads as a unit struct.
#[allow(non_upper_case_globals)]
pub const RseqAlloc: RseqAlloc = RseqAlloc::with(Options::new());

impl RseqAlloc {
    /// An allocator whose first allocation brings rseqalloc up with
    /// `options` (each overridden by its `RSEQALLOC_*` variable when that
    /// is set). If the process allocated before, through the C API
    /// (feature `capi`) or another `RseqAlloc` whose options came first,
    /// these are not in force, and the first allocation says so on stderr.
    pub const fn with(options: Options) -> RseqAlloc {
        RseqAlloc { options }
    }

    /// The options this allocator hands over ([`stats`](crate::stats())
    /// has those in force).
    pub const fn options(&self) -> Options {
        self.options
    }
}
