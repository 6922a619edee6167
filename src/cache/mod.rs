//! Layer 4, cache: the CPU caches, one region of object stacks per CPU (or
//! mm_cid). The regions, their inline fast paths, slow paths and remote operations
//! (`percpu`), and the same regions without rseq (`fallback`). Uses
//! `platform`, `rseq`, `backend` and `middle`; brings nothing up (the
//! front's slow-path entries do, before they call in here).

pub mod fallback;
pub mod percpu;
