#!/bin/sh
# Build Google TCMalloc (per-CPU caches, rseq) as a preloadable shared object
# for the shoot-out, from the crates.io crate libtcmalloc-sys (sources of
# google/tcmalloc + abseil vendored by the tcmalloc-better project).
#
#   sh benches/workloads/build_tcmalloc_google.sh [OUTDIR=/var/tmp/tcg]
#
# Produces $OUTDIR/shim/libtcmalloc_google.so (the runner's default path).
# Takes ~5 min on 2 cores.  Needs cargo, gcc, g++ and crates.io access.
# Per-CPU mode needs GLIBC_TUNABLES=glibc.pthread.rseq=0 at run time (glibc
# otherwise owns the thread's rseq registration and TCMalloc silently falls
# back to per-thread caches); shootout.py sets it for this allocator.
set -eu
OUT=${1:-/var/tmp/tcg}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/tcgso/src" "$OUT/shim"
cd "$OUT/tcgso"
cat > Cargo.toml <<'TOML'
[package]
name = "tcgso"
version = "0.1.0"
edition = "2024"

[dependencies]
libtcmalloc-sys = "=0.1.14"
TOML
[ -f src/lib.rs ] || echo '' > src/lib.rs
cargo build --release
A=$(find target/release/build -name libtcmalloc.a | head -1)
[ -n "$A" ] || { echo "libtcmalloc.a not found" >&2; exit 1; }
cd "$OUT/shim"
gcc -O2 -fPIC -fno-builtin -c "$HERE/tcmalloc_google_shim.c" -o shim.o
g++ -shared -o libtcmalloc_google.so shim.o -Wl,--whole-archive "$OUT/tcgso/$A" \
    -Wl,--no-whole-archive -static-libstdc++ -static-libgcc -lpthread -Wl,-z,now
# smoke test: the per-CPU freelists must be in use
cat > t.c <<'C'
#include <stdlib.h>
#include <malloc.h>
int main(void) { void *v[100]; for (int i = 0; i < 100; i++) v[i] = malloc(64);
  for (int i = 0; i < 100; i++) free(v[i]); malloc_stats(); return 0; }
C
gcc -O2 t.c -o t
GLIBC_TUNABLES=glibc.pthread.rseq=0 LD_PRELOAD="$OUT/shim/libtcmalloc_google.so" ./t 2>&1 |
  grep 'per-CPU cache freelist'
echo "built $OUT/shim/libtcmalloc_google.so"
