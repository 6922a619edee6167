//! Layer 5, front: the allocator as the program sees it. The public type
//! (`allocator`) and its `GlobalAlloc` with the big-block helpers and the
//! slow-path entries the asm calls (`global`), bring-up and the process
//! hooks (`init`), the background thread (`background`), the counters and
//! reports (`stats`) and the bad-pointer checks (`check`). The only layer
//! that initialises the allocator, picks the path by mode, or starts a
//! thread. Uses every layer below (`platform`, `rseq`, `backend`, `middle`,
//! `cache`).
//!
//! On a target without the per-CPU path, `forward` replaces it all and only
//! `allocator` and `stats` are built besides.

pub mod allocator;
#[cfg(rseqalloc_percpu)]
pub mod background;
#[cfg(feature = "capi")]
pub mod check;
#[cfg(not(rseqalloc_percpu))]
pub mod forward;
#[cfg(rseqalloc_percpu)]
pub mod global;
#[cfg(rseqalloc_percpu)]
pub mod init;
pub mod stats;
