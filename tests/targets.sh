#!/usr/bin/env bash
# rseqalloc as a dependency on the targets this host does not run natively,
# through tests/dependent/ (a crate that uses RseqAlloc as its global
# allocator and checks the mode stats() reports):
#   host     built and run: the per-CPU path
#   musl     x86_64-unknown-linux-musl, a static binary: built and run; it
#            forwards to musl's malloc (Mode::Forward) and the build said so
#   aarch64  aarch64-unknown-linux-gnu: cargo check, and the build's warning
#   MSRV     the rust-version of Cargo.toml: the library and the dependent
#            crate built and run with that toolchain
# Installs missing targets and the toolchain with rustup. Prints
# "targets: N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
unset RSEQALLOC_TEST_HOOKS # what a dependent crate gets (tests/run.sh sets it)
root=$PWD
dep=$root/tests/dependent
target=$root/target/dependent
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0 failed=0
check() { # check NAME STATUS
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "  ok    $1"; else failed=$((failed + 1)); echo "  FAIL  $1"; tail -n 20 "$log"; fi
}
forward_warning='rseqalloc: no per-CPU path on'

# The lock file keeps to versions that build with the minimum Rust version
# (cargo's MSRV-aware resolver reads rust-version), for every toolchain.
(cd "$dep" && CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile -q) >"$log" 2>&1
check "resolve tests/dependent for Rust $msrv" $?

(cd "$dep" && CARGO_TARGET_DIR=$target cargo run -q --release -- per-cpu) >"$log" 2>&1
check "host: a dependent crate runs on the per-CPU path" $?

for t in x86_64-unknown-linux-musl aarch64-unknown-linux-gnu; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t" >/dev/null 2>&1
done

# -vv shows build-script warnings (cargo prints them anyway for path
# dependencies like this one; from crates.io only with -vv).
(cd "$dep" && CARGO_TARGET_DIR=$target cargo build --release --target x86_64-unknown-linux-musl) >"$log" 2>&1
s=$?
grep -q "$forward_warning x86_64-unknown-linux-musl" "$log"
check "musl: builds, and the build warns that RseqAlloc forwards" $((s | $?))
musl_bin=$target/x86_64-unknown-linux-musl/release/rseqalloc-dependent
file "$musl_bin" | grep -q 'static' && "$musl_bin" forward >"$log" 2>&1
check "musl: the static binary runs, stats() says Mode::Forward" $?

touch "$root/build.rs" # so the build script runs again and warns again
(cd "$dep" && CARGO_TARGET_DIR=$target cargo check --target aarch64-unknown-linux-gnu) >"$log" 2>&1
s=$?
grep -q "$forward_warning aarch64-unknown-linux-gnu" "$log"
check "aarch64-unknown-linux-gnu: cargo check passes, with the forwarding warning" $((s | $?))

if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1
fi
(cd "$dep" && CARGO_TARGET_DIR=$target/msrv rustup run "$msrv" cargo run -q --release -- per-cpu) >"$log" 2>&1
check "Rust $msrv (rust-version): the library and a dependent crate build and run" $?

# The published crate alone builds the LD_PRELOAD library with `make`.
pkg=$root/target/package
cargo package -q -p rseqalloc --allow-dirty --no-verify >"$log" 2>&1 &&
    rm -rf "$pkg/unpacked" && mkdir -p "$pkg/unpacked" &&
    tar xzf "$pkg/rseqalloc-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1).crate" -C "$pkg/unpacked" &&
    (cd "$pkg"/unpacked/rseqalloc-* && CARGO_TARGET_DIR=$target/package make -s) >>"$log" 2>&1 &&
    (cd "$pkg"/unpacked/rseqalloc-* && RSEQALLOC_STATS=1 RSEQALLOC_LIB=$target/package/release/librseqalloc.so \
        bin/rseqalloc-run /bin/true) >>"$log" 2>&1 &&
    grep -qE '^rseqalloc stats, pid [0-9]+ \(true\):$' "$log"
check "the published crate builds librseqalloc.so with make" $?

echo "targets: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
