//! A plugin built on rseqalloc: its one entry point allocates a `Vec` of
//! boxes through the critical sections, so the calling thread's `rseq_cs`
//! names one of this object's descriptors when it returns.

#[global_allocator]
static GLOBAL: rseqalloc::RseqAlloc = rseqalloc::RseqAlloc;

/// Allocates `n` boxes, sums them, frees them.
#[no_mangle]
pub extern "C" fn plugin_work(n: usize) -> usize {
    let boxes: Vec<Box<usize>> = (0..n).map(Box::new).collect();
    boxes.iter().map(|b| **b).sum()
}
