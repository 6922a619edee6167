//! Walks the `__rseq_cs` section of this test binary (read from
//! /proc/self/exe, then looked at in memory after relocation) and checks
//! every critical-section descriptor the way the kernel will:
//! version and flags 0, start < commit, abort outside [start, commit), and
//! the signature 0x53053053 in the 4 bytes before abort. Also checks that
//! `__rseq_cs_ptr_array` points at each descriptor exactly once. The region
//! copies' descriptors are checked the same way: they become the restart
//! regions {start, commit, abort} that region mode registers, and the
//! kernel's table also rejects a restart address inside a region.

const RSEQ_SIG: u32 = 0x5305_3053;

struct Section {
    addr: u64,
    size: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The named section's link-time address and size, from the ELF file.
fn find_section(elf: &[u8], name: &str) -> Option<Section> {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELF64 expected");
    let shoff = u64_at(elf, 0x28) as usize;
    let shentsize = u16_at(elf, 0x3a) as usize;
    let shnum = u16_at(elf, 0x3c) as usize;
    let shstrndx = u16_at(elf, 0x3e) as usize;
    let strtab = u64_at(elf, shoff + shstrndx * shentsize + 0x18) as usize;
    (0..shnum).find_map(|i| {
        let sh = shoff + i * shentsize;
        let name_off = strtab + u32_at(elf, sh) as usize;
        let end = elf[name_off..].iter().position(|&b| b == 0).unwrap();
        (&elf[name_off..name_off + end] == name.as_bytes())
            .then(|| Section { addr: u64_at(elf, sh + 0x10), size: u64_at(elf, sh + 0x20) })
    })
}

/// Load bias: where the kernel put the program headers, minus where the
/// file says they are (PT_PHDR).
fn load_bias(elf: &[u8]) -> u64 {
    let phoff = u64_at(elf, 0x20) as usize;
    let phentsize = u16_at(elf, 0x36) as usize;
    let phnum = u16_at(elf, 0x38) as usize;
    let phdr_vaddr = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32_at(elf, ph) == 6 /* PT_PHDR */)
        .map(|ph| u64_at(elf, ph + 0x10))
        .expect("PT_PHDR");
    // SAFETY: getauxval only reads the auxiliary vector.
    let phdr = unsafe { libc::getauxval(libc::AT_PHDR) };
    phdr - phdr_vaddr
}

#[test]
fn every_descriptor_is_valid() {
    // Make sure the critical sections are linked into this binary.
    let _ = rseqalloc::stats();
    let elf = std::fs::read("/proc/self/exe").unwrap();
    let cs = find_section(&elf, "__rseq_cs").expect("no __rseq_cs section");
    let ptrs = find_section(&elf, "__rseq_cs_ptr_array").expect("no __rseq_cs_ptr_array section");
    let bias = load_bias(&elf);
    assert_eq!(cs.size % 32, 0, "descriptors are 32 bytes");
    let count = (cs.size / 32) as usize;
    assert_eq!(
        count, 14,
        "malloc_small, free_small, pop, push, pop batch, push batch; each as a mainline and a region copy, \
         and malloc_small and free_small with a second mainline copy (CPU id and mm_cid)"
    );

    let base = (cs.addr + bias) as *const u64;
    let mut starts = Vec::new();
    for i in 0..count {
        // SAFETY: the section is mapped, relocated and 32-byte aligned.
        let d = unsafe { std::slice::from_raw_parts(base.add(4 * i), 4) };
        let (version, flags) = (d[0] as u32, (d[0] >> 32) as u32);
        let (start, len, abort) = (d[1], d[2], d[3]);
        assert_eq!((version, flags), (0, 0), "descriptor {i}: version and flags must be 0");
        assert!(len > 0, "descriptor {i}: empty range");
        assert!(start < start + len, "descriptor {i}: start must precede commit");
        assert!(!(start..start + len).contains(&abort), "descriptor {i}: abort inside the section");
        // SAFETY: abort - 4 lies in this binary's text.
        let sig = unsafe { ((abort - 4) as *const u32).read_unaligned() };
        assert_eq!(sig, RSEQ_SIG, "descriptor {i}: signature before abort");
        starts.push(start);
    }
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), count, "two descriptors share a section");

    assert_eq!(ptrs.size as usize, 8 * count);
    let mut pointed: Vec<u64> = (0..count)
        // SAFETY: the pointer array is mapped and relocated.
        .map(|i| unsafe { *((ptrs.addr + bias) as *const u64).add(i) })
        .collect();
    pointed.sort_unstable();
    let expected: Vec<u64> = (0..count as u64).map(|i| cs.addr + bias + 32 * i).collect();
    assert_eq!(pointed, expected, "__rseq_cs_ptr_array must point at each descriptor once");
}
