//! Region mode (issue 5): detects the patched kernel's per-process restart
//! regions, picks the descriptor-free copies of the critical sections, and
//! registers our sections with the kernel once.
//!
//! The choice is made by `rseqalloc_regions_chosen`, which the indirect-
//! function resolvers of `asm/percpu_x86_64.S` call while the loader (or the
//! start-up code of a static-pie binary) relocates the program: before TLS,
//! errno or `environ` exist. So it uses raw system calls, not libc (`os.rs`
//! needs errno), and reads `RSEQALLOC_MODE` from `/proc/self/environ`. Init
//! then asks it again and, if the region copies were chosen, registers the
//! table (`register`) before it publishes the regions to the sections: until
//! then every section misses, so none can run unprotected.
//!
//! The kernel's table is one per process and replaced as a whole
//! (kernel-patch/0001): a second copy of rseqalloc in the same process
//! (a `#[global_allocator]` program that also preloads librseqalloc.so) would
//! replace ours. TODO: the series has no "add to the table" operation yet.

use core::sync::atomic::{AtomicU8, Ordering};

use super::abi::{header as h, RseqCs};
use super::cs;

/// `struct rseq_region` (include/uapi/linux/rseq.h of the patched kernel).
#[repr(C)]
#[derive(Clone, Copy)]
struct RseqRegion {
    start: u64,
    post_commit: u64,
    restart: u64,
    flags: u64,
}

const _: () = assert!(core::mem::size_of::<RseqRegion>() as i64 == h::RSEQ_REGION_SIZE);

const SYS_READ: i64 = 0;
const SYS_CLOSE: i64 = 3;
const SYS_PRCTL: i64 = 157;
const SYS_OPENAT: i64 = 257;
const AT_FDCWD: i64 = -100;
const O_RDONLY_CLOEXEC: i64 = 0o2_000_000;

/// 0: not decided yet; 1: mainline copies; 2: region copies.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// A system call with up to five arguments; returns the kernel's value
/// (negative errno on failure) without touching errno. prctl(2) reads all
/// five, and PR_RSEQ_REGIONS rejects non-zero unused ones, so callers pass
/// every argument.
///
/// # Safety
/// The arguments are valid for system call `nr` (pointers it reads or
/// writes are valid for the lengths it uses).
#[inline]
unsafe fn syscall5(nr: i64, a1: i64, a2: i64, a3: i64, a4: i64, a5: i64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers
    // only rax, rcx and r11, and needs no stack.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            in("r8") a5,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret
}

/// Whether the kernel has restart regions with room for our sections:
/// `PR_RSEQ_REGIONS_QUERY` returns the table limit; a stock kernel EINVAL.
pub fn kernel_has_regions() -> bool {
    // SAFETY: QUERY with a null feature pointer reads and writes nothing.
    let max = unsafe { syscall5(SYS_PRCTL, h::PR_RSEQ_REGIONS, h::PR_RSEQ_REGIONS_QUERY, 0, 0, 0) };
    max >= h::NUM_SECTIONS
}

/// Whether the region copies of the sections run in this process. Decided
/// on the first call (a resolver's, at load time) and fixed from then on:
/// region copies on a kernel with restart regions, unless `RSEQALLOC_MODE`
/// in the initial environment is `mainline` or `fallback`.
#[no_mangle]
pub extern "C" fn rseqalloc_regions_chosen() -> bool {
    let mut chosen = CHOSEN.load(Ordering::Relaxed);
    if chosen == 0 {
        chosen = if kernel_has_regions() && !mode_denies_regions() { 2 } else { 1 };
        CHOSEN.store(chosen, Ordering::Relaxed);
    }
    chosen == 2
}

/// Whether `RSEQALLOC_MODE` is `mainline` or `fallback` in this process's
/// initial environment. Without /proc (a sandbox, an initramfs that did not
/// mount it) there is no override.
///
/// This code runs before relocation has finished in a static binary, where
/// libc's `memcmp`/`memset` (themselves indirect functions) may not be
/// callable yet: it compares words, and leaves buffers uninitialised, so
/// that the compiler emits no call to them.
fn mode_denies_regions() -> bool {
    let mut value = [0u8; 8];
    if initial_env_value(b"RSEQALLOC_MODE=", &mut value) != Some(8) {
        return false; // both words that deny are 8 bytes long
    }
    let word = u64::from_ne_bytes(value);
    word == u64::from_ne_bytes(*b"mainline") || word == u64::from_ne_bytes(*b"fallback")
}

/// Copies the value of the variable named by `prefix` ("NAME=") from
/// /proc/self/environ into `out`; returns its length, or None if it is
/// absent, longer than `out`, or the file cannot be read.
fn initial_env_value(prefix: &[u8], out: &mut [u8]) -> Option<usize> {
    let path = b"/proc/self/environ\0";
    // SAFETY: a NUL-terminated path; the flags ask for nothing else.
    let fd = unsafe { syscall5(SYS_OPENAT, AT_FDCWD, path.as_ptr() as i64, O_RDONLY_CLOEXEC, 0, 0) };
    if fd < 0 {
        return None;
    }
    let mut scan = EnvScan { prefix, col: 0, matching: true, len: 0, found: None };
    let mut buf = [core::mem::MaybeUninit::<u8>::uninit(); 256];
    loop {
        // SAFETY: buf is writable for its length; fd is ours.
        let n = unsafe { syscall5(SYS_READ, fd, buf.as_mut_ptr() as i64, buf.len() as i64, 0, 0) };
        if n <= 0 {
            break;
        }
        for b in buf.iter().take(n as usize) {
            // SAFETY: the kernel wrote the first n bytes.
            scan.feed(unsafe { b.assume_init() }, out);
        }
        if scan.found.is_some() {
            break;
        }
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { syscall5(SYS_CLOSE, fd, 0, 0, 0, 0) };
    scan.found.flatten()
}

/// A streaming matcher over NUL-separated "NAME=value" entries.
struct EnvScan<'a> {
    prefix: &'a [u8],
    /// Bytes seen of the current entry.
    col: usize,
    /// Whether the current entry still matches `prefix`.
    matching: bool,
    /// Value bytes copied so far (may exceed `out.len()`: too long).
    len: usize,
    /// Set at the end of the matching entry: Some(len) if the value fit.
    found: Option<Option<usize>>,
}

impl EnvScan<'_> {
    fn feed(&mut self, b: u8, out: &mut [u8]) {
        if self.found.is_some() {
            return;
        }
        if b == 0 {
            if self.matching && self.col >= self.prefix.len() {
                self.found = Some((self.len <= out.len()).then_some(self.len));
            }
            (self.col, self.matching, self.len) = (0, true, 0);
            return;
        }
        if self.matching {
            match self.prefix.get(self.col) {
                Some(&want) => self.matching = b == want,
                None => {
                    if let Some(slot) = out.get_mut(self.len) {
                        *slot = b;
                    }
                    self.len += 1;
                }
            }
        }
        self.col += 1;
    }
}

/// Registers every descriptor of our `__rseq_cs` part as a restart region
/// {start, start + post_commit_offset, abort_ip}: the region copies, which
/// need it, and the mainline ones, which then restart the same way whether
/// or not a descriptor is armed (the kernel applies an armed one first, and
/// no abort handler lies in a region). Returns whether the kernel took it.
pub fn register() -> bool {
    // SAFETY: the descriptors are static data emitted by the asm file,
    // relocated by now (init runs after relocation, unlike the resolvers).
    let descriptors: [RseqCs; cs::NUM_SECTIONS] = unsafe { cs::rseqalloc_rseq_cs };
    let table = descriptors.map(|d| RseqRegion {
        start: d.start_ip,
        post_commit: d.start_ip + d.post_commit_offset,
        restart: d.abort_ip,
        flags: 0,
    });
    // SAFETY: the kernel copies `table` (NUM_SECTIONS entries) and keeps
    // its own copy; the flags argument is 0.
    let err = unsafe {
        syscall5(
            SYS_PRCTL,
            h::PR_RSEQ_REGIONS,
            h::PR_RSEQ_REGIONS_SET_TABLE,
            table.as_ptr() as i64,
            table.len() as i64,
            0,
        )
    };
    err == 0
}

#[cfg(test)]
mod tests {
    use super::EnvScan;

    fn scan(env: &[u8]) -> Option<Option<usize>> {
        let mut out = [0u8; 8];
        let mut s = EnvScan { prefix: b"RSEQALLOC_MODE=", col: 0, matching: true, len: 0, found: None };
        env.iter().for_each(|&b| s.feed(b, &mut out));
        s.found
    }

    #[test]
    fn environ_entries_match_whole_names_only() {
        assert_eq!(scan(b"A=1\0RSEQALLOC_MODE=fallback\0B=2\0"), Some(Some(8)));
        assert_eq!(scan(b"XRSEQALLOC_MODE=mainline\0"), None);
        assert_eq!(scan(b"RSEQALLOC_MODE_X=1\0"), None);
        assert_eq!(scan(b"RSEQALLOC_MODE=\0"), Some(Some(0)));
        assert_eq!(scan(b"RSEQALLOC_MODE=far-too-long\0"), Some(None));
        assert_eq!(scan(b"PATH=/bin\0"), None);
    }
}
