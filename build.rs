//! Decides whether the target gets the per-CPU path (x86-64 Linux with
//! glibc: `cfg(rseqalloc_percpu)`); elsewhere it says once, as a cargo
//! warning, that `RseqAlloc` forwards to the system allocator, and builds
//! nothing else. On the per-CPU path it builds `asm/percpu_x86_64.S` with
//! `cc` (with `RSEQALLOC_C_API` for the C library, feature `capi`), and
//! turns `asm/abi.h` into Rust constants (`$OUT_DIR/abi_h.rs`) so that the
//! Rust twins of every shared constant are checked against the header at
//! compile time. It also builds `preload/` (the LD_PRELOAD library, same
//! sources), whose cdylib it links with `-z nodelete`.

use std::{env, fs, path::PathBuf};

fn main() {
    // The crate root holds asm/: this package's directory, or its parent when
    // building preload/.
    let mut root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let preload = !root.join("asm").is_dir();
    if preload {
        root.pop();
    }
    let asm = root.join("asm/percpu_x86_64.S");
    let abi = root.join("asm/abi.h");
    println!("cargo:rerun-if-changed={}", asm.display());
    println!("cargo:rerun-if-changed={}", abi.display());
    // The kernel may hold a pointer to our critical-section descriptors in a
    // thread's rseq_cs long after a section ran (it clears it lazily), so the
    // library must never be unmapped: dlclose keeps it.
    // A soname lets valgrind users name the library
    // (`--soname-synonyms=somalloc=librseqalloc.so`) and keeps it out of
    // `somalloc=NONE`, which matches every object without one. Every
    // build with the C API is for the C library: preload/'s cdylib, or the
    // published crate's own (`cargo rustc --release --features capi
    // --crate-type cdylib`); its test binaries take the flags harmlessly.
    if env::var_os("CARGO_FEATURE_CAPI").is_some() {
        println!("cargo:rustc-link-arg=-Wl,-z,nodelete");
        println!("cargo:rustc-link-arg=-Wl,-soname,librseqalloc.so");
    }

    // The C library links no `std` (src/capi/mod.rs says why), so it names
    // the C library itself, as `std` did for it. `cfg(rseqalloc_cdylib)`
    // marks that build: preload/'s here, the published crate's in its
    // Makefile's `cargo rustc` flags; never an rlib with `capi` in a Rust
    // program, whose `std` brings its own panic handler.
    println!("cargo::rustc-check-cfg=cfg(rseqalloc_cdylib)");
    if preload {
        println!("cargo:rustc-cfg=rseqalloc_cdylib");
        println!("cargo:rustc-link-lib=dylib=c");
    }

    // The test hooks (`rseqalloc::test_hooks`, src/test_hooks.rs) are for
    // this repository's tests: built with RSEQALLOC_TEST_HOOKS=1, never in
    // preload/ or the published crate (no tests/ there). A build-time
    // variable rather than a feature, so that `cargo add` does not offer
    // them; switching it rebuilds this crate and its dependents only.
    println!("cargo::rustc-check-cfg=cfg(rseqalloc_test_hooks)");
    println!("cargo:rerun-if-env-changed=RSEQALLOC_TEST_HOOKS");
    if !preload && root.join("tests").is_dir() && env::var_os("RSEQALLOC_TEST_HOOKS").is_some_and(|v| v == "1") {
        println!("cargo:rustc-cfg=rseqalloc_test_hooks");
    }

    // The sections are x86-64 asm bound by glibc's loader through indirect
    // functions (IRELATIVE relocations), and the runtime reads glibc's rseq
    // area: musl applies no IRELATIVE relocation, other systems have no rseq.
    println!("cargo::rustc-check-cfg=cfg(rseqalloc_percpu)");
    println!("cargo::rustc-check-cfg=cfg(rseqalloc_export_area)");
    let cfg = |key: &str| env::var(key).unwrap_or_default();
    let (arch, os, env) = (cfg("CARGO_CFG_TARGET_ARCH"), cfg("CARGO_CFG_TARGET_OS"), cfg("CARGO_CFG_TARGET_ENV"));
    if (arch.as_str(), os.as_str(), env.as_str()) != ("x86_64", "linux", "gnu") {
        println!(
            "cargo:warning=rseqalloc: no per-CPU path on {} (it needs x86_64 Linux with glibc): \
             RseqAlloc forwards to the system allocator, and stats().mode is Mode::Forward",
            env::var("TARGET").unwrap_or_default()
        );
        return;
    }
    println!("cargo:rustc-cfg=rseqalloc_percpu");
    // The tests export the shared rseq area, as the README tells programs
    // that open rseq-using libraries later to (tests/rseq_share.rs does).
    // preload/ and the published crate have no tests (cargo refuses the
    // instruction then).
    if !preload && root.join("tests").is_dir() {
        println!(
            "cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=__rseq_abi,--export-dynamic-symbol=__rseq_refcount"
        );
    }

    let mut build = cc::Build::new();
    build.file(&asm).include(root.join("asm"));
    // The C library's small malloc clears the freed stamp (src/front/check.rs).
    if env::var_os("CARGO_FEATURE_CAPI").is_some() {
        build.define("RSEQALLOC_C_API", None);
    }
    if env::var_os("CARGO_FEATURE_CAPI").is_some() {
        export_shared_area(&mut build);
    }
    build.compile("rseqalloc_percpu");

    let header = fs::read_to_string(&abi).expect("read asm/abi.h");
    let mut out = String::from("// Generated by build.rs from asm/abi.h. Do not edit.\n");
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue; // the include guard has no value
        };
        let value =
            if let Some(hex) = value.strip_prefix("0x") { i64::from_str_radix(hex, 16) } else { value.parse::<i64>() }
                .unwrap_or_else(|_| panic!("asm/abi.h: {name} is not a number: {value}"));
        out.push_str(&format!("pub const {name}: i64 = {value};\n"));
    }
    let path = PathBuf::from(env::var("OUT_DIR").unwrap()).join("abi_h.rs");
    fs::write(path, out).expect("write abi_h.rs");
}

/// Makes the C library export the shared rseq area `__rseq_abi` and its
/// count `__rseq_refcount` (asm, Data: placeholders that rustc lists, which
/// `--defsym` points at the thread-local storage), so that a library
/// following that convention and opened later with `dlopen` binds to the
/// area we may have registered. GNU ld refuses this link (a TLS reference
/// to a name a non-TLS placeholder defines), lld takes it: it is Rust's
/// default linker on this target since 1.90, and rustup's toolchains ship it
/// (as `gcc-ld/ld.lld`) since long before; else `ld.lld` on PATH. Without
/// either, the library builds without the export and says so.
fn export_shared_area(build: &mut cc::Build) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let host = env::var("HOST").unwrap_or_default();
    let bundled = sysroot.map(|root| root.join("lib/rustlib").join(host).join("bin/gcc-ld"));
    let on_path = || env::split_paths(&env::var_os("PATH").unwrap_or_default()).any(|dir| dir.join("ld.lld").is_file());
    match bundled {
        Some(dir) if dir.join("ld.lld").is_file() => println!("cargo:rustc-link-arg=-B{}", dir.display()),
        _ if on_path() => {}
        _ => {
            println!(
                "cargo:warning=rseqalloc: no lld found (rustup's rust-lld or ld.lld): librseqalloc.so will not \
                 export __rseq_abi, so a library using that rseq convention opened later with dlopen may fail \
                 to register rseq where glibc's registration is off"
            );
            return;
        }
    }
    println!("cargo:rustc-link-arg=-fuse-ld=lld");
    println!(
        "cargo:rustc-link-arg=-Wl,--defsym=__rseq_abi=rseqalloc_shared_abi,--defsym=__rseq_refcount=rseqalloc_shared_refcount"
    );
    println!("cargo:rustc-cfg=rseqalloc_export_area");
    build.define("RSEQALLOC_EXPORT_AREA", None);
}
