#!/usr/bin/env bash
# The whole test suite, in every mode the allocator can run in:
#   glibc     rseq through the area glibc registered for every thread (default)
#   cpu-id    the same, with caches indexed by CPU id instead of mm_cid
#   own       rseq through our own per-thread registration (glibc's turned off)
#   fallback  no critical sections (RSEQALLOC_MODE=fallback)
#   plus: one sparse CPU (taskset -c 1), a one-CPU cpuset cgroup, remote
#         fences without membarrier
#   valgrind  the fallback as valgrind forces it (rseq(2) gives ENOSYS there)
#   plus: the stats reports and the preload tool (tests/tool.sh), and
#         builds for other targets and the minimum Rust version
#         (tests/targets.sh)
# In each, tests/preload.sh then runs C programs and real programs with
# target/release/librseqalloc.so preloaded, and tests/plugin/run.sh unloads a
# plugin built on rseqalloc from a C host.
# Prints a closing "N passed, N failed" line and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
# Every cargo command here builds rseqalloc with the test hooks (build.rs),
# so that none rebuilds it for another setting.
export RSEQALLOC_TEST_HOOKS=1

if ! command -v valgrind >/dev/null; then
    echo "== installing valgrind"
    (apt-get update -qq && apt-get install -y -qq valgrind >/dev/null) || { echo "cannot install valgrind"; exit 1; }
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed_steps=()

# run NAME ENV... -- COMMAND...: runs one step, keeping its output for the tally.
run() {
    local name=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo "== $name"
    if ! env "${envs[@]}" "$@" 2>&1 | tee -a "$log"; then
        failed_steps+=("$name")
    fi
}

cargo build --release --tests 2>&1 | tail -n 2 || { echo "build failed"; exit 1; }
cargo build --release -p rseqalloc-bench --examples 2>&1 | tail -n 1 || { echo "build failed"; exit 1; }
cargo build --release -p rseqalloc-preload 2>&1 | tail -n 1 || { echo "build failed"; exit 1; } # librseqalloc.so

all_tests=(cargo test --release --tests)
run "glibc mode (+ doc tests)" RSEQALLOC_EXPECT_MODE=glibc -- cargo test --release
run "unit tests with the C API (libtest itself on our malloc)" -- cargo test --release -p rseqalloc --features capi --lib
run "preload, glibc mode" -- tests/preload.sh glibc
run "stats reports and the preload tool (--help, make install)" -- tests/tool.sh
run "stats with the serde feature" -- cargo test --release --features serde --test stats
# A dependent crate on musl (run) and aarch64 (check), and the minimum Rust
# version: about 3 minutes cold on a loaded 2-core host.
run "other targets and the minimum Rust version" -- tests/targets.sh
run "a plugin survives dlclose (glibc and own rseq)" -- tests/plugin/run.sh
run "glibc mode, caches by CPU id" RSEQALLOC_EXPECT_MODE=glibc RSEQALLOC_MMCID=0 -- "${all_tests[@]}"
run "own registration" RSEQALLOC_EXPECT_MODE=own GLIBC_TUNABLES=glibc.pthread.rseq=0 -- "${all_tests[@]}"
run "preload, own registration" -- tests/preload.sh own
# Container-like: one allowed CPU with a sparse id, more threads than CPUs.
run "one sparse CPU (taskset -c 1)" RSEQALLOC_EXPECT_MODE=glibc -- \
    taskset -c 1 cargo test --release --test sizing --test global_alloc --test release --test api
run "a one-CPU cpuset cgroup, caches by CPU id" RSEQALLOC_EXPECT_MODE=glibc RSEQALLOC_MMCID=0 -- \
    tests/in-cpuset.sh cargo test --release --test sizing --test release
run "remote fences by migration (no membarrier)" RSEQALLOC_EXPECT_MODE=glibc RSEQALLOC_MEMBARRIER=0 -- \
    cargo test --release --test stress_restarts --test release
run "fallback" RSEQALLOC_EXPECT_MODE=fallback RSEQALLOC_MODE=fallback -- "${all_tests[@]}"
run "preload, fallback" -- tests/preload.sh fallback
# --fair-sched: valgrind runs one thread at a time, and its default lock lets
# spinning workers starve the thread that would tell them to stop.
run "valgrind (fallback)" RSEQALLOC_EXPECT_MODE=fallback RSEQALLOC_TEST_QUICK=1 \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="valgrind -q --fair-sched=yes --error-exitcode=99" -- \
    cargo test --release --test global_alloc --test heap_walk --test stress_restarts --test api

run "preload, valgrind (fallback)" -- tests/preload.sh valgrind

# Tally every "N passed; M failed" (libtest) and "N passed, M failed" (our
# harness-less binaries) line.
read -r passed failed < <(grep -oE '[0-9]+ passed[;,] [0-9]+ failed' "$log" |
    awk '{p += $1; f += $3} END {print p + 0, f + 0}')
if [ ${#failed_steps[@]} -gt 0 ]; then
    echo "failed steps: ${failed_steps[*]}"
    failed=$((failed + ${#failed_steps[@]}))
fi
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
