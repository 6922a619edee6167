//! Layer 6, capi: the top. The C API: its glibc-semantics core
//! (`semantics`), the exported symbols (`exports`) and the bootstrap area
//! for allocations during bring-up (`bootstrap`). Uses every layer beneath
//! it (`front` for bring-up, the big-block helpers and the checks), and
//! nothing uses it.
//!
//! The C allocation API (feature `capi`; built into `librseqalloc.so` by
//! `preload/`): glibc's malloc family with glibc's semantics, exported with
//! default visibility. Each entry point is a short forward to the few
//! functions of `semantics`; errno is set in one place (`fail`), bad
//! pointers are judged by `check`, the class map's medium runs and the
//! large-block registry.
//!
//! Semantics (glibc's, checked against glibc by tests/c/conformance.c):
//! `malloc(0)` is a unique 16-byte block; a size above `PTRDIFF_MAX` or an
//! overflowing product is NULL with `ENOMEM`; `realloc(p, 0)` frees `p` and
//! returns NULL; a failed `realloc` leaves the block alone; `posix_memalign`
//! returns `EINVAL`/`ENOMEM` without touching errno or `*memptr`; `memalign`
//! rounds an alignment up to a power of two; `free` never changes errno.
//!
//! # Safety (every `unsafe extern "C"` entry point)
//! The C contract of the function of that name (C23 7.24.3, glibc manual
//! "Memory Allocation"): a pointer passed in is NULL or a live block from
//! this API, and out-pointers are writable. Violations of the first are
//! detected where the arena's class map or the large-block registry can tell
//! (`check`).

mod bootstrap;
mod exports;
mod semantics;

// The C library (`librseqalloc.so`, built with `panic = "abort"`) links no
// `std` (lib.rs; unless built with the test hooks, which use it): `std`'s
// panic machinery (message formatting, backtraces, DWARF parsing) was half
// of the library's code, and it brought `libgcc_s` into every process,
// pages that count in each process's RSS. Two items stand in for what
// `std` provided.

/// The panic handler. The allocator has no panicking path by design; a
/// panic would be a bug, and it ends the process as every fatal error does.
#[cfg(all(rseqalloc_cdylib, panic = "abort", not(rseqalloc_test_hooks)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    crate::platform::os::abort()
}

// The precompiled `core` names `rust_eh_personality` in its unwind tables
// even under `panic = "abort"`. Nothing unwinds through the library; a
// foreign exception that tried would reach this personality, which aborts.
// Hidden, so that the library exports only the C API.
#[cfg(all(rseqalloc_cdylib, panic = "abort", not(rseqalloc_test_hooks)))]
core::arch::global_asm!(
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality, @function",
    "rust_eh_personality:",
    "    jmp abort@PLT",
    ".size rust_eh_personality, . - rust_eh_personality",
);
