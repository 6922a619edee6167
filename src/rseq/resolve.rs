//! The load-time choice of critical-section copies: the indirect-function
//! resolvers of `asm/percpu_x86_64.S` ask it while the loader (or the
//! start-up code of a static-pie binary) relocates the program, before TLS,
//! errno or `environ` exist. So it uses raw system calls, not libc (`platform::os`
//! needs errno), and reads the environment from `/proc/self/environ` and the
//! auxiliary vector from `/proc/self/auxv`. Each answer is made once and
//! kept, so that init (`super::choose_mode`, `super::choose_index`) follows
//! exactly what the loader bound.

use core::sync::atomic::{AtomicU8, Ordering};

use super::abi::header as h;
use crate::platform::config::{self, ModeRequest, Word};

const SYS_READ: i64 = 0;
const SYS_CLOSE: i64 = 3;
pub(super) const SYS_PRCTL: i64 = 157;
const SYS_OPENAT: i64 = 257;
const AT_FDCWD: i64 = -100;
const O_RDONLY_CLOEXEC: i64 = 0o2_000_000;

/// 0: not decided yet; 1: mainline copies; 2: region copies.
static REGIONS: AtomicU8 = AtomicU8::new(0);
/// 0: not decided yet; 1: CPU-id copies; 2: mm_cid copies.
static MM_CID: AtomicU8 = AtomicU8::new(0);

/// A system call with up to five arguments; returns the kernel's value
/// (negative errno on failure) without touching errno. prctl(2) reads all
/// five, and PR_RSEQ_REGIONS rejects non-zero unused ones, so callers pass
/// every argument.
///
/// # Safety
/// The arguments are valid for system call `nr` (pointers it reads or
/// writes are valid for the lengths it uses).
#[inline]
pub(super) unsafe fn syscall5(nr: i64, a1: i64, a2: i64, a3: i64, a4: i64, a5: i64) -> i64 {
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
fn kernel_has_regions() -> bool {
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
    decided(&REGIONS, || kernel_has_regions() && !mode_denies_regions())
}

/// Whether caches are indexed by `mm_cid` in this process, which also picks
/// the mainline copies of the small entry points (they read the index
/// at a constant offset). Decided on the first call, like
/// `rseqalloc_regions_chosen`: `mm_cid` when the kernel maintains it
/// (`AT_RSEQ_FEATURE_SIZE` ≥ 28) and `RSEQALLOC_MMCID` in the initial
/// environment is not 0, off, no or false, unless the sections may read
/// an area another object initialised (`foreign_area`).
#[no_mangle]
pub extern "C" fn rseqalloc_mm_cid_chosen() -> bool {
    decided(&MM_CID, || kernel_has_mm_cid() && !env_denies_mm_cid() && !foreign_area())
}

/// Whether glibc registered no area and the one the sections will read
/// (`super::choose_mode`) is another object's: librseq's (an object loaded
/// with the program defines its `rseq_offset`), or another definition of
/// `__rseq_abi` bound before ours. Such areas start with only `cpu_id` at
/// -1 (ours, with `mm_cid` too), so on a thread that has not registered
/// yet `mm_cid` reads 0, a valid index no registration protects; `cpu_id`
/// reads -1, which every section takes as a miss. glibc registers before
/// the loader relocates the other objects, and each object's references
/// to data (and TLS offsets) are bound before its indirect functions.
fn foreign_area() -> bool {
    let (mut offset, mut size) = (0isize, 0u32);
    // SAFETY: both out-pointers are locals; the helpers read GOT entries.
    let glibc = unsafe { super::cs::rseqalloc_glibc_rseq(&mut offset, &mut size) } && size > 0;
    // SAFETY: as above.
    let librseq = unsafe { super::cs::rseqalloc_librseq(&mut offset, &mut size) };
    // SAFETY: plain reads of GOT entries.
    let (shared, ours) =
        unsafe { (super::cs::rseqalloc_shared_area_offset(), super::cs::rseqalloc_own_shared_offset()) };
    !glibc && (librseq || (shared != 0 && shared != ours))
}

/// A yes/no decision made once: `decide` runs on the first call only.
fn decided(state: &AtomicU8, decide: impl FnOnce() -> bool) -> bool {
    let mut value = state.load(Ordering::Relaxed);
    if value == 0 {
        value = if decide() { 2 } else { 1 };
        state.store(value, Ordering::Relaxed);
    }
    value == 2
}

/// Whether the kernel keeps `mm_cid` in the rseq area, from
/// /proc/self/auxv (getauxval is libc's, which may not be relocated yet).
fn kernel_has_mm_cid() -> bool {
    // The vector is (type, value) pairs of u64, a few hundred bytes.
    let mut buf = [core::mem::MaybeUninit::<u64>::uninit(); 128];
    let filled = with_proc_file(b"/proc/self/auxv\0", |fd| {
        let mut filled = 0usize;
        while filled < core::mem::size_of_val(&buf) {
            // SAFETY: the range [filled, size) of buf is writable; fd is ours.
            let n = unsafe {
                let at = (buf.as_mut_ptr() as *mut u8).add(filled);
                syscall5(SYS_READ, fd, at as i64, (core::mem::size_of_val(&buf) - filled) as i64, 0, 0)
            };
            if n <= 0 {
                break;
            }
            filled += n as usize;
        }
        filled
    })
    .unwrap_or(0);
    let words = filled / 8;
    (0..words / 2).any(|i| {
        // SAFETY: the kernel wrote the first `filled` bytes.
        let (kind, value) = unsafe { (buf[2 * i].assume_init(), buf[2 * i + 1].assume_init()) };
        kind == super::abi::AT_RSEQ_FEATURE_SIZE && value >= super::abi::MM_CID_FEATURE_SIZE
    })
}

/// The "NAME=" prefixes of the two options read here. Literals rather than
/// the options table's names: the table holds pointers, which may not be
/// relocated yet when this runs (a unit test keeps them equal).
const MMCID_PREFIX: &[u8] = b"RSEQALLOC_MMCID=";
const MODE_PREFIX: &[u8] = b"RSEQALLOC_MODE=";

/// Whether `RSEQALLOC_MMCID` in the initial environment turns `mm_cid` off,
/// by the options table's rules (a value it does not accept means the
/// default, as `Config::load` will say).
fn env_denies_mm_cid() -> bool {
    initial_env_word(MMCID_PREFIX).and_then(config::parse_flag) == Some(false)
}

/// Whether `RSEQALLOC_MODE` is `mainline` or `fallback` in this process's
/// initial environment, by the options table's rules. Without /proc (a
/// sandbox, an initramfs that did not mount it) there is no override.
fn mode_denies_regions() -> bool {
    let mode = initial_env_word(MODE_PREFIX).and_then(|word| config::parse_choice(word, &config::MODE_WORDS));
    matches!(mode.map(config::mode_request), Some(ModeRequest::Mainline | ModeRequest::Fallback))
}

/// The value of the variable named by `prefix` ("NAME=") in the initial
/// environment as a packed word, or None if it is absent, longer than a
/// word, or unreadable.
///
/// This code runs before relocation has finished in a static binary, where
/// libc's `memcmp`/`memset` (themselves indirect functions) may not be
/// callable yet, and before its own object's pointers are relocated: it
/// compares packed words (`config::Word`), reads no pointer from static
/// data, and zeroes its buffer as one word, so that the compiler emits no
/// call to them.
fn initial_env_word(prefix: &[u8]) -> Option<Word> {
    let mut value = [0u8; 8];
    let len = initial_env_value(prefix, &mut value)?;
    Word::from_buf(value, len)
}

/// Copies the value of the variable named by `prefix` ("NAME=") from
/// /proc/self/environ into `out`; returns its length, or None if it is
/// absent, longer than `out`, or the file cannot be read.
fn initial_env_value(prefix: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut scan = EnvScan { prefix, col: 0, matching: true, len: 0, found: None };
    with_proc_file(b"/proc/self/environ\0", |fd| {
        let mut buf = [core::mem::MaybeUninit::<u8>::uninit(); 256];
        while scan.found.is_none() {
            // SAFETY: buf is writable for its length; fd is ours.
            let n = unsafe { syscall5(SYS_READ, fd, buf.as_mut_ptr() as i64, buf.len() as i64, 0, 0) };
            if n <= 0 {
                break;
            }
            for b in buf.iter().take(n as usize) {
                // SAFETY: the kernel wrote the first n bytes.
                scan.feed(unsafe { b.assume_init() }, out);
            }
        }
    })?;
    scan.found.flatten()
}

/// Opens the /proc file at `path` (NUL-terminated) read-only, runs `read`
/// on its descriptor and closes it; None if it cannot be opened.
fn with_proc_file<T>(path: &[u8], read: impl FnOnce(i64) -> T) -> Option<T> {
    debug_assert_eq!(path.last(), Some(&0));
    // SAFETY: a NUL-terminated path; the flags ask for nothing else.
    let fd = unsafe { syscall5(SYS_OPENAT, AT_FDCWD, path.as_ptr() as i64, O_RDONLY_CLOEXEC, 0, 0) };
    if fd < 0 {
        return None;
    }
    let value = read(fd);
    // SAFETY: closes the descriptor opened above.
    unsafe { syscall5(SYS_CLOSE, fd, 0, 0, 0, 0) };
    Some(value)
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

#[cfg(test)]
mod tests {
    use super::{EnvScan, MMCID_PREFIX, MODE_PREFIX};
    use crate::platform::config::{Id, OPTIONS};

    fn scan(env: &[u8]) -> Option<Option<usize>> {
        let mut out = [0u8; 8];
        let mut s = EnvScan { prefix: b"RSEQALLOC_MODE=", col: 0, matching: true, len: 0, found: None };
        env.iter().for_each(|&b| s.feed(b, &mut out));
        s.found
    }

    #[test]
    fn prefixes_name_the_tables_options() {
        for (prefix, id) in [(MMCID_PREFIX, Id::MmCid), (MODE_PREFIX, Id::Mode)] {
            assert_eq!(prefix, [OPTIONS[id as usize].name.to_bytes(), b"="].concat());
        }
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
