//! Layer 3, middle end: objects between the CPU caches and the back end.
//! Spans carved into objects per size class (`central`) and the bounded
//! per-class stacks that batches go through (`transfer`). Uses `platform`
//! and `backend`.

pub mod central;
pub mod transfer;
