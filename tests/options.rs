//! Options: set in code through `RseqAlloc::with` (this binary's global
//! allocator), overridden by the environment, every bad value and unknown
//! `RSEQALLOC_*` name reported with what was given, what is accepted and
//! what is used, and the load-time reader of `RSEQALLOC_MMCID` following
//! the same rules. Each case runs this binary again as a child with the
//! environment under test, and reads the options in force it prints.

use std::process::Command;

use rseqalloc::{BadFree, ModeRequest, Options, RseqAlloc};

mod common;

const CODE: Options = Options::new().decay_ms(5000).cpu_cache_bytes(1 << 20).bad_free(BadFree::Leak);

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc::with(CODE);

/// Run as a child (`OPTIONS_CHILD=1`): prints the options in force.
#[test]
fn child_prints_config() {
    if std::env::var_os("OPTIONS_CHILD").is_none() {
        return;
    }
    let s = rseqalloc::stats();
    let c = s.config;
    println!(
        "CONFIG decay_ms={} cpu_cache_bytes={} bad_free={:?} mm_cid={} mode={:?} index={:?} stats_mode={:?}",
        c.decay_ms, c.cpu_cache_bytes, c.bad_free, c.mm_cid, c.mode, s.cache_index, s.mode
    );
}

/// Runs the child with `vars` added to the environment (and every
/// `RSEQALLOC_*` variable of ours removed but the mode the suite runs in);
/// returns its CONFIG line and its stderr.
fn child(vars: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_prints_config", "--nocapture", "--test-threads=1"]);
    for (name, _) in std::env::vars() {
        if name.starts_with("RSEQALLOC_") && name != "RSEQALLOC_MODE" {
            cmd.env_remove(name);
        }
    }
    cmd.env("OPTIONS_CHILD", "1");
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at = stdout.find("CONFIG ").unwrap_or_else(|| panic!("no CONFIG in {stdout}"));
    let line = stdout[at..].lines().next().unwrap_or_default();
    (line.to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn options_from_code_are_in_force() {
    common::check_mode("options");
    let (config, stderr) = child(&[]);
    assert!(config.contains("decay_ms=5000 cpu_cache_bytes=1048576 bad_free=Leak"), "{config}");
    assert!(!stderr.contains("rseqalloc:"), "nothing to report: {stderr}");
    // This process too (its first allocation handed them over).
    let c = rseqalloc::stats().config;
    if std::env::var_os("RSEQALLOC_DECAY_MS").is_none() {
        assert_eq!(c.decay_ms, 5000);
    }
    assert_eq!(GLOBAL.options(), CODE);
}

#[test]
fn the_environment_wins_over_code() {
    let (config, stderr) = child(&[
        ("RSEQALLOC_DECAY_MS", "7000"),
        ("RSEQALLOC_BAD_FREE", "abort"),
        ("RSEQALLOC_VERBOSE", "1"),
        ("RSEQALLOC_STATS", "json"),
    ]);
    assert!(config.contains("decay_ms=7000 cpu_cache_bytes=1048576 bad_free=Abort"), "{config}");
    assert!(stderr.contains("rseqalloc:   RSEQALLOC_DECAY_MS=7000 (environment; default 1000)"), "{stderr}");
    assert!(stderr.contains("rseqalloc:   RSEQALLOC_CPU_CACHE_BYTES=1048576 (code; default 2097152)"), "{stderr}");
    assert!(stderr.contains("rseqalloc:   RSEQALLOC_CHECK=0 (default; default 0)"), "{stderr}");
    // The stats report at exit carries the options in force.
    assert!(stderr.contains(r#""RSEQALLOC_DECAY_MS":"7000","#), "{stderr}");
    assert!(stderr.contains(r#""RSEQALLOC_CPU_CACHE_BYTES":"1048576","#), "{stderr}");
}

#[test]
fn bad_values_are_reported_with_what_is_used() {
    let (config, stderr) = child(&[
        ("RSEQALLOC_DECAY_MS", "5s"),
        ("RSEQALLOC_CPU_CACHE_BYTES", "1"),
        ("RSEQALLOC_STATS", " 1"),
        ("RSEQALLOC_BACKGROUND", "-1"),
    ]);
    assert!(config.contains("decay_ms=5000 cpu_cache_bytes=1048576"), "code values stand: {config}");
    for want in [
        "rseqalloc: RSEQALLOC_DECAY_MS=\"5s\" is not valid: expected a decimal integer from 0 to 3600000; using 5000 (set in code)",
        "rseqalloc: RSEQALLOC_CPU_CACHE_BYTES=\"1\" is not valid: expected a decimal integer from 4096 to 268435456; using 1048576 (set in code)",
        "rseqalloc: RSEQALLOC_STATS=\" 1\" is not valid: expected `0`/`off`/`no`/`false`, `1`/`on`/`yes`/`true`, `text` or `json`; using 0 (the default)",
        "rseqalloc: RSEQALLOC_BACKGROUND=\"-1\" is not valid: expected `0`/`off`/`no`/`false` or `1`/`on`/`yes`/`true`; using 1 (the default)",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn unknown_names_are_reported_with_the_nearest() {
    let (_, stderr) = child(&[("RSEQALLOC_STAT", "1"), ("RSEQALLOC_NOT_A_THING", "1")]);
    assert!(
        stderr.contains(
            "rseqalloc: RSEQALLOC_STAT is not a variable rseqalloc reads; ignored (did you mean RSEQALLOC_STATS?)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("rseqalloc: RSEQALLOC_NOT_A_THING is not a variable rseqalloc reads; ignored\n"),
        "{stderr}"
    );
}

/// `RSEQALLOC_MMCID` is read twice: by the loader (which binds the small
/// entry points) and at init (which reports). Both follow the table: a
/// value it does not accept means the default, 1, in both.
#[test]
fn mm_cid_follows_the_table_at_load_and_at_init() {
    let (plain, _) = child(&[]);
    if plain.contains("stats_mode=Fallback") || !plain.contains("index=MmCid") {
        return; // no mm_cid here (fallback, or a kernel before 6.3)
    }
    for bad in ["2", "-1", " 0", "0 ", "00", "offf"] {
        let (config, stderr) = child(&[("RSEQALLOC_MMCID", bad)]);
        assert!(config.contains("mm_cid=true") && config.contains("index=MmCid"), "{bad:?}: {config}");
        let want = format!("rseqalloc: RSEQALLOC_MMCID=\"{bad}\" is not valid: expected `0`/`off`/`no`/`false` or `1`/`on`/`yes`/`true`; using 1 (the default)");
        assert!(stderr.contains(&want), "{bad:?}: {stderr}");
    }
    for off in ["0", "off", "no", "false"] {
        let (config, stderr) = child(&[("RSEQALLOC_MMCID", off)]);
        assert!(config.contains("mm_cid=false") && config.contains("index=CpuId"), "{off:?}: {config}");
        assert!(!stderr.contains("rseqalloc:"), "{off:?}: {stderr}");
    }
}

#[test]
fn mode_follows_the_table() {
    let (config, stderr) = child(&[("RSEQALLOC_MODE", "Fallback")]);
    assert!(stderr.contains("rseqalloc: RSEQALLOC_MODE=\"Fallback\" is not valid: expected `auto`, `rseq`, `mainline` or `fallback`; using auto (the default)"), "{stderr}");
    assert!(config.contains("mode=Auto"), "{config}");
    let (config, _) = child(&[("RSEQALLOC_MODE", "fallback")]);
    assert!(config.contains("mode=Fallback") && config.contains("stats_mode=Fallback"), "{config}");
    assert_ne!(Options::new().mode(ModeRequest::Fallback), Options::new());
}
