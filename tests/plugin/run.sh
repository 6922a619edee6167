#!/usr/bin/env bash
# A plugin must survive dlclose: tests/plugin/plugin.rs (a cdylib whose
# global allocator is RseqAlloc) is loaded by tests/plugin/host.c with
# dlopen, called once, dlclosed, and the host then keeps being preempted
# under a 1 ms timer signal. Without the pin rseqalloc's constructor puts on
# the object, the kernel faults the host (SIGSEGV) when it next reads the
# thread's rseq_cs, which still names a descriptor in the unmapped plugin:
# every run on the tree before the pin. RUNS hosts per mode (default 10),
# with glibc's rseq area and with our own registration.
# Prints one line per check and "plugin: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-10}
cargo build --release -p rseqalloc-test-plugin 2>&1 | tail -n 1
plugin=$PWD/target/release/librseqalloc_test_plugin.so
host=$PWD/target/ctest/plugin-host
mkdir -p target/ctest
cc -O2 -Wall -o "$host" tests/plugin/host.c -ldl || { echo "plugin: 0 passed, 1 failed"; exit 1; }
passed=0 failed=0
for mode in glibc own; do
    envs=()
    [ "$mode" = own ] && envs=(GLIBC_TUNABLES=glibc.pthread.rseq=0)
    ok=0 statuses=()
    for _ in $(seq "$runs"); do
        env ${envs[@]+"${envs[@]}"} "$host" "$plugin" 3 >"$host.out" 2>&1
        status=$?
        statuses+=("$status")
        [ "$status" -eq 0 ] && grep -q "still mapped (pinned)" "$host.out" && ok=$((ok + 1))
    done
    if [ "$ok" -eq "$runs" ]; then
        passed=$((passed + 1)); echo "  ok    dlclose ($mode rseq): $ok of $runs hosts survived, plugin pinned"
    else
        failed=$((failed + 1)); echo "  FAIL  dlclose ($mode rseq): $ok of $runs hosts survived (statuses ${statuses[*]})"
    fi
done
echo "plugin: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
