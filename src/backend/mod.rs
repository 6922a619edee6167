//! Layer 2, backend: where memory comes from. The arena with its class
//! map, span table and page heap (`pagemap`), medium blocks as runs of
//! granules (`medium`), one mapping per large block (`large`) and the set of
//! live large blocks (`registry`). Uses `platform` only; never starts a
//! thread and never brings the allocator up (the front does both).

pub mod large;
pub mod medium;
pub mod pagemap;
pub mod registry;
