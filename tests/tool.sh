#!/usr/bin/env bash
# What a user of the LD_PRELOAD library operates:
# - reports: RSEQALLOC_STATS=1 heads each process's report with its pid and
#   program name, RSEQALLOC_STATS=json writes one JSON object per process
#   (a program that forks three children gives four), malloc_stats() too;
# - bin/rseqalloc-run: --help (every variable of src/platform/config.rs, which the
#   README's table lists too), --version (Cargo.toml's), bad options;
# - make install / uninstall into a temporary prefix, and the installed
#   wrapper finding its library.
# Prints "tool: N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lib=$root/target/release/librseqalloc.so
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() { # check NAME STATUS
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "  ok    $1"; else failed=$((failed + 1)); echo "  FAIL  $1"; fi
}
[ -f "$lib" ] || { echo "no $lib: run make"; exit 1; }

cat >"$work/forker.c" <<'C'
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
/* Allocates, forks three children that allocate and exit normally (so each
 * runs its exit handlers), waits for them; with an argument, also calls
 * malloc_stats(). */
int main(int argc, char **argv) {
    char *keep[1000];
    for (int i = 0; i < 1000; i++) keep[i] = memset(malloc(i + 1), 1, i + 1);
    for (int c = 0; c < 3; c++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 1000; i++) free(keep[i]);
            exit(0);
        }
        waitpid(pid, NULL, 0);
    }
    if (argc > 1) malloc_stats();
    return 0;
}
C
cc -O2 -o "$work/forker" "$work/forker.c"

RSEQALLOC_STATS=json LD_PRELOAD=$lib "$work/forker" 2>"$work/json.err"
check "RSEQALLOC_STATS=json: the program runs" $?
python3 - "$work/json.err" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
objs = [json.loads(l) for l in lines]
assert len(objs) == 4, f"{len(objs)} objects for 4 processes"
assert len({o["pid"] for o in objs}) == 4, "pids repeat"
for o in objs:
    assert o["program"] == "forker", o["program"]
    assert list(o)[:2] == ["pid", "program"], list(o)[:3]
    assert o["mode"] in ("RseqGlibc", "RseqOwn", "Region", "Fallback"), o["mode"]
    assert len(o["per_class"]) == 40 and all(c["size"] > 0 for c in o["per_class"])
    assert o["resident_bytes"] > 0 and o["peak_resident_bytes"] > 0
    assert o["bytes_mapped"] >= o["bytes_in_use"] and o["alloc_hits"] > 0
PY
check "RSEQALLOC_STATS=json: one JSON object per process (4), headed by pid and program" $?

RSEQALLOC_STATS=1 LD_PRELOAD=$lib "$work/forker" 2>"$work/text.err"
headers=$(grep -cE '^rseqalloc stats, pid [0-9]+ \(forker\):$' "$work/text.err")
pids=$(grep -oE '^rseqalloc stats, pid [0-9]+' "$work/text.err" | sort -u | wc -l)
[ "$headers" -eq 4 ] && [ "$pids" -eq 4 ] && [ "$(grep -c '^mode:' "$work/text.err")" -eq 4 ]
check "RSEQALLOC_STATS=1: four reports, each headed by its own pid and the program name" $?

LD_PRELOAD=$lib "$work/forker" stats 2>"$work/ms.err"
grep -qE '^rseqalloc stats, pid [0-9]+ \(forker\):$' "$work/ms.err" && grep -q '^cached objects:' "$work/ms.err"
check "malloc_stats(): the same report, with its header" $?

RSEQALLOC_STATS=yaml LD_PRELOAD=$lib "$work/forker" 2>"$work/bad.err"
[ $? -eq 0 ] && grep -qF 'rseqalloc: RSEQALLOC_STATS="yaml" is not valid: expected `0`/`off`/`no`/`false`, `1`/`on`/`yes`/`true`, `text` or `json`; using 0 (the default)' "$work/bad.err" &&
    ! grep -q '^rseqalloc stats' "$work/bad.err"
check "RSEQALLOC_STATS=yaml: reported, no report written" $?

# The variables the library reads: one row each in src/platform/config.rs.
vars=$(grep -oE 'name: c"RSEQALLOC_[A-Z_]+"' src/platform/config.rs | grep -oE 'RSEQALLOC_[A-Z_]+' | sort -u)
[ -n "$vars" ]
check "src/platform/config.rs lists variables" $?
bin/rseqalloc-run --help >"$work/help" 2>&1
s=$?
missing=$(for v in $vars; do grep -qE "^  $v \(default " "$work/help" || echo "$v"; done)
[ $s -eq 0 ] && grep -q '^usage: rseqalloc-run' "$work/help" && [ -z "$missing" ]
check "--help exits 0 and lists every variable with its default${missing:+ (missing: $missing)}" $?
missing=$(for v in $vars; do grep -qE "^\| \`$v\` \|" README.md || echo "$v"; done)
[ -z "$missing" ]
check "README's configuration table lists every variable${missing:+ (missing: $missing)}" $?

wrong=$(for v in $vars; do
    want=$(sed -n "s/^  $v (default \(.*\))\$/\1/p" "$work/help")
    grep -qF "| \`$v\` | \`$want\` |" README.md || echo "$v"
done)
[ -z "$wrong" ]
check "README's defaults are the library's${wrong:+ (differ: $wrong)}" $?

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$(bin/rseqalloc-run --version)" = "rseqalloc-run $version" ]
check "--version prints Cargo.toml's version ($version)" $?
bin/rseqalloc-run --frobnicate >/dev/null 2>&1
[ $? -eq 2 ]
check "an unknown option exits 2 instead of running a program named after it" $?
bin/rseqalloc-run >/dev/null 2>&1
[ $? -eq 2 ]
check "no program: usage, exit 2" $?
[ "$(bin/rseqalloc-run sh -c 'echo "$LD_PRELOAD"')" = "$lib" ]
check "runs the program with the repository's library preloaded" $?

prefix=$work/prefix
make -s install PREFIX="$prefix" >"$work/make.log" 2>&1
s=$?
[ $s -eq 0 ] && [ -x "$prefix/bin/rseqalloc-run" ] && [ -f "$prefix/lib/librseqalloc.so" ]
check "make install PREFIX=...: bin/rseqalloc-run and lib/librseqalloc.so" $?
[ "$(env -u RSEQALLOC_LIB "$prefix/bin/rseqalloc-run" sh -c 'echo "$LD_PRELOAD"')" = "$prefix/lib/librseqalloc.so" ]
check "the installed wrapper preloads the installed library" $?
RSEQALLOC_STATS=1 "$prefix/bin/rseqalloc-run" "$work/forker" 2>"$work/installed.err"
grep -qE '^rseqalloc stats, pid [0-9]+ \(forker\):$' "$work/installed.err"
check "a program run through the installed wrapper uses rseqalloc" $?
"$prefix/bin/rseqalloc-run" --help >"$work/installed.help"
grep -q '^  RSEQALLOC_MODE (default ' "$work/installed.help"
check "the installed --help lists the variables (from the installed library)" $?
make -s uninstall PREFIX="$prefix" >>"$work/make.log" 2>&1
[ $? -eq 0 ] && [ -z "$(find "$prefix" -type f)" ]
check "make uninstall removes what install put there" $?

# What cargo publish would ship: the library's own files only, with the
# design notes its sources point to.
cargo package -p rseqalloc --list --allow-dirty >"$work/package" 2>/dev/null
s=$?
[ $s -eq 0 ] && grep -qx 'src/lib.rs' "$work/package" && grep -qx 'asm/percpu_x86_64.S' "$work/package" &&
    grep -qx 'LICENSE-MIT' "$work/package" && grep -qx 'LICENSE-APACHE' "$work/package" &&
    grep -qx 'docs/design.md' "$work/package" &&
    ! grep -qE '^(tests|benches|kernel-patch|preload|examples)/' "$work/package"
check "cargo package ships the library's own files only ($(wc -l <"$work/package") files)" $?

# BENCHMARKS.md's charts are drawn from its own tables.
stale=0
python3 benches/charts.py markdown BENCHMARKS.md "$work/svg" >/dev/null || stale=1
for f in micro shootout-throughput shootout-rss; do cmp -s "$work/svg/$f.svg" "benches/svg/$f.svg" || stale=1; done
check "benches/svg/ holds the charts of BENCHMARKS.md's current tables (python3 benches/charts.py markdown BENCHMARKS.md benches/svg)" $stale

echo "tool: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
