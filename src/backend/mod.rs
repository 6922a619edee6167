//! Layer 2, backend: where memory comes from. The class map and span table
//! (`pagemap`), the window and its reservations (`arena`), the granules
//! handed out as spans and runs and their pages given back (`page_heap`),
//! medium blocks as runs of granules (`medium`), one mapping per large block
//! (`large`) and the set of live large blocks (`registry`). Uses `platform` only; never starts a
//! thread and never brings the allocator up (the front does both).

pub mod arena;
pub mod large;
pub mod medium;
pub mod page_heap;
pub mod pagemap;
pub mod registry;
