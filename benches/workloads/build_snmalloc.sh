#!/bin/sh
# Build snmalloc as a preloadable shared object for the shoot-out, from the
# sources the crates.io crate snmalloc-sys 0.3.8 vendors (the version the
# micro-benchmarks' snmalloc-rs uses), with the flags of snmalloc's own
# CMake shim target (libsnmallocshim.so: malloc.cc + new.cc, release,
# pthread destructors, no C++ runtime linked in).  No CMake needed.
#
#   sh benches/workloads/build_snmalloc.sh [OUTDIR=/var/tmp/snm]
#
# Produces $OUTDIR/shim/libsnmallocshim.so; `shootout.py --snmalloc PATH`
# adds it as the `snmalloc` column.  ~1 min on 2 cores.  Needs cargo, g++ and crates.io access.
set -eu
OUT=${1:-/var/tmp/snm}
mkdir -p "$OUT/src" "$OUT/shim"
cd "$OUT"
cat > Cargo.toml <<'TOML'
[package]
name = "snm"
version = "0.1.0"
edition = "2021"

[dependencies]
snmalloc-sys = { version = "=0.3.8", default-features = false }
TOML
[ -f src/lib.rs ] || echo '' > src/lib.rs
cargo fetch
S=$(cargo metadata --format-version 1 |
  python3 -c 'import json,sys,os; print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"] == "snmalloc-sys"))')/snmalloc
cd "$OUT/shim"
F="-std=c++20 -O3 -fPIC -mcx16 -mprfchw -fvisibility=hidden -fomit-frame-pointer -ffunction-sections
   -ftls-model=initial-exec -fno-exceptions -fno-rtti -DNDEBUG -DSNMALLOC_USE_PTHREAD_DESTRUCTORS
   -DSNMALLOC_USE_WAIT_ON_ADDRESS=1 -DSNMALLOC_CHECK_LOADS=false -DSNMALLOC_PAGEID=false"
for f in malloc new; do
  # shellcheck disable=SC2086
  g++ $F -I "$S/src" '-DSNMALLOC_EXPORT=__attribute__((visibility("default")))' \
    -c "$S/src/snmalloc/override/$f.cc" -o "$f.o"
done
# linked as C, as the CMake target does when the linker has no -nostdlib++
gcc -shared -o libsnmallocshim.so malloc.o new.o -lpthread
# smoke test: the preloaded library must be the one that defines malloc
cat > t.c <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) { Dl_info i; void *v[100]; for (int k = 0; k < 100; k++) v[k] = malloc(64);
  for (int k = 0; k < 100; k++) free(v[k]); dladdr((void *)malloc, &i); puts(i.dli_fname); return 0; }
C
gcc -O2 t.c -o t
LD_PRELOAD="$OUT/shim/libsnmallocshim.so" ./t | grep -q libsnmallocshim
echo "built $OUT/shim/libsnmallocshim.so"
