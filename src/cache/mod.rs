//! Layer 4, cache: the CPU caches, one region of object stacks per CPU (or
//! mm_cid). The region data structure with its remote stop–fence–spill
//! protocol (`region`), the cache policy over it: fast paths, refill and
//! flush, shrink and drain (`percpu`), and the same regions without rseq
//! (`fallback`). Uses `platform`, `rseq`, `backend` and `middle`; brings
//! nothing up (the front's slow-path entries do, before they call in here).

pub mod fallback;
pub mod percpu;
pub mod region;
