/* The small malloc+free pair through the C API, for any preloaded malloc:
 *
 *   gcc -O2 -o /tmp/c-pair benches/c/pair.c
 *   LD_PRELOAD=target/release/librseqalloc.so /tmp/c-pair [PAIRS [SIZE]]
 *
 * Prints the median of 5 timed rounds in ns per pair. The pointer goes
 * through a volatile, so the compiler cannot drop the calls. With
 * PAIR_CPU_TIME=1 a round is timed by the thread's CPU clock instead of the
 * wall clock, so that time the thread spends preempted on a loaded host
 * does not count (its caches still suffer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void) {
  struct timespec t;
  clock_gettime(clock_id, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long pairs = argc > 1 ? atol(argv[1]) : 50000000;
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
  if (pairs <= 0 || size == 0) {
    fprintf(stderr, "usage: %s [PAIRS > 0 [SIZE > 0]]\n", argv[0]);
    return 2;
  }
  if (getenv("PAIR_CPU_TIME")) clock_id = CLOCK_THREAD_CPUTIME_ID;
  void *volatile sink;
  double ns[5];
  for (int round = 0; round < 5; round++) {
    double t0 = now();
    for (long i = 0; i < pairs; i++) {
      void *p = malloc(size);
      sink = p;
      free(p);
    }
    ns[round] = (now() - t0) * 1e9 / (double)pairs;
  }
  (void)sink;
  qsort(ns, 5, sizeof ns[0], cmp);
  printf("c-pair size=%zu ns_per_pair=%.2f%s\n", size, ns[2], clock_id == CLOCK_MONOTONIC ? "" : " (CPU time)");
  return 0;
}
