/* The small malloc+free pair through the C API, for any preloaded malloc:
 *
 *   gcc -O2 -o /tmp/c-pair benches/c/pair.c
 *   LD_PRELOAD=target/release/librseqalloc.so /tmp/c-pair [PAIRS [SIZE]]
 *
 * Prints the median of 5 timed rounds in ns per pair. The pointer goes
 * through a volatile, so the compiler cannot drop the calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
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
  printf("c-pair size=%zu ns_per_pair=%.2f\n", size, ns[2]);
  return 0;
}
