//! Layer 0, platform: what every other layer stands on. System calls
//! (`os`), the slow paths' spin lock (`sync`), the options table (`config`),
//! the size classes (`size_class`), the public mode names (`mode`), the
//! number parser they share (`decimal`) and the clearing of reused memory
//! (`zero`). Uses nothing else in the crate.
//!
//! On a target without the per-CPU path (`RseqAlloc` forwards) only
//! `config`, `size_class`, `mode` and `decimal` are built: they describe the
//! options and the stats, which exist everywhere.

pub mod config;
pub mod decimal;
pub mod mode;
#[cfg(rseqalloc_percpu)]
pub mod os;
// Forwarding uses only the class sizes (the stats' per-class list).
#[cfg_attr(not(rseqalloc_percpu), allow(dead_code))]
pub mod size_class;
#[cfg(rseqalloc_percpu)]
pub mod sync;
#[cfg(rseqalloc_percpu)]
pub mod zero;
