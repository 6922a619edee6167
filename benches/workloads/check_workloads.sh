#!/bin/sh
# Correctness checks of the workload programs themselves (not of an allocator):
# valgrind memcheck (memory errors, definite leaks), helgrind and drd (data
# races on the programs' own data), and gcc ThreadSanitizer + ASan/UBSan, all
# at tiny scale with glibc malloc.  ~3 min on 2 cores.
#
#   sh benches/workloads/check_workloads.sh
#   PROGS="many_threads" sh benches/workloads/check_workloads.sh   # some of them
#
# mstress hands blocks between threads with a C11 atomic exchange, which
# helgrind/drd cannot see; its valgrind build uses -DWL_VALGRIND
# (ANNOTATE_HAPPENS_BEFORE/AFTER from <valgrind/helgrind.h>).  drd is skipped
# for mstress for the same reason (TSan covers it).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
PROGS=${PROGS:-"larson xmalloc cache_scratch cache_thrash mstress rptest alloc_test thread_churn big_blocks many_threads"}
fail=0
run() { # name cmd...
  name=$1; shift
  if out=$("$@" 2>&1) && ! printf '%s\n' "$out" | grep -qE '==[0-9]+==|WARNING: ThreadSanitizer|runtime error|ERROR: AddressSanitizer'; then
    echo "ok   $name"
  else
    echo "FAIL $name"; printf '%s\n' "$out" | tail -20; fail=1
  fi
}
for p in $PROGS; do
  gcc -O2 -g -pthread -DWL_VALGRIND -o "$T/$p" "$HERE/$p.c" || exit 2
  gcc -O1 -g -pthread -fsanitize=thread -o "$T/tsan_$p" "$HERE/$p.c" || exit 2
  gcc -O1 -g -pthread -fsanitize=address,undefined -fno-sanitize-recover=all -o "$T/asan_$p" "$HERE/$p.c" || exit 2
  for t in 1 3; do
    run "memcheck $p t=$t" valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite "$T/$p" $t 0.005
  done
  run "helgrind $p" valgrind -q --tool=helgrind --error-exitcode=9 "$T/$p" 3 0.003
  [ "$p" = mstress ] || run "drd      $p" valgrind -q --tool=drd --error-exitcode=9 "$T/$p" 3 0.003
  # setarch -R: TSan needs a non-randomised layout on newer kernels
  run "tsan     $p" env TSAN_OPTIONS=halt_on_error=1 setarch -R "$T/tsan_$p" 4 0.02
  run "asan+ub  $p" "$T/asan_$p" 4 0.02
  # many_threads is about pools far larger than the machine: its barriers and
  # exchange with 256 threads alive at once
  [ "$p" = many_threads ] && run "tsan     $p t=256" env TSAN_OPTIONS=halt_on_error=1 setarch -R "$T/tsan_$p" 256 0.02
done
exit $fail
