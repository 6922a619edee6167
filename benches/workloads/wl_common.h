/* Shared helpers for the rseqalloc workload shoot-out (benches/workloads).
 *
 * Every workload is a small C program: `prog THREADS [SCALE [SEED]]`.
 * It prints exactly one machine-readable line on stdout:
 *
 *   RESULT name=<w> threads=<t> scale=<s> seed=<n> ops=<n> unit=<u>
 *          elapsed=<sec> ops_per_sec=<x> checksum=0x<hex> verified=<n>
 *          malloc_from=<shared object that defines malloc/free>
 *
 * and exits 0 only if every self-check passed.  Blocks carry a tag derived
 * from a deterministic RNG; whoever frees a block first verifies its tag
 * (head word and tail word) and adds it to a checksum.  The checksum is a
 * function of (threads, scale, seed) only — never of the allocator or of the
 * thread interleaving — so the runner can compare it across allocators.
 */
#ifndef WL_COMMON_H
#define WL_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WL_UNUSED __attribute__((unused))

/* ---------- RNG: splitmix64 seeding + xorshift64* stream ---------- */
static inline uint64_t wl_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

typedef struct { uint64_t s; } wl_rng;

static inline void wl_rng_seed(wl_rng *r, uint64_t seed, uint64_t a, uint64_t b) {
  r->s = wl_mix(wl_mix(wl_mix(seed) ^ a) ^ (b * 0x2545f4914f6cdd1dULL)) | 1;
}
static inline uint64_t wl_next(wl_rng *r) {
  uint64_t x = r->s;
  x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
  r->s = x;
  return x * 0x2545f4914f6cdd1dULL;
}
/* uniform in [0, n) */
static inline uint64_t wl_below(wl_rng *r, uint64_t n) {
  return (uint64_t)(((unsigned __int128)wl_next(r) * n) >> 64);
}
/* uniform in [lo, hi] */
static inline uint64_t wl_range(wl_rng *r, uint64_t lo, uint64_t hi) {
  return lo + wl_below(r, hi - lo + 1);
}
/* true with probability pct/100 */
static inline int wl_chance(wl_rng *r, unsigned pct) { return wl_below(r, 100) < pct; }

/* ---------- block tagging ---------- */
/* Tag for block number `seq` made by logical producer `who`; never 0. */
static inline uint64_t wl_tag(uint64_t seed, uint64_t who, uint64_t seq) {
  return wl_mix(seed ^ (who << 40) ^ seq) | 1;
}

static void wl_die(const char *what, const void *p, size_t sz, uint64_t want, uint64_t got) {
  fprintf(stderr, "VERIFY FAILED: %s block=%p size=%zu want=%016llx got=%016llx\n", what, p, sz,
          (unsigned long long)want, (unsigned long long)got);
  fflush(stderr);
  exit(2);
}

/* Write the tag into a block of `sz` bytes (sz >= 8).  Head word = tag,
 * tail word (if sz >= 16) = ~tag ^ sz; for big blocks one word per 4 KiB page
 * is written too so that the allocator's pages are really touched (RSS). */
static inline void wl_fill(void *p, size_t sz, uint64_t tag) {
  unsigned char *b = (unsigned char *)p;
  memcpy(b, &tag, 8);
  if (sz >= 16) {
    uint64_t t = ~tag ^ (uint64_t)sz;
    memcpy(b + sz - 8, &t, 8);
  }
  for (size_t off = 4096; off + 8 <= sz - 8; off += 4096) memcpy(b + off, &tag, 8);
}

/* Check a block filled by wl_fill; returns the tag.  Aborts the process on
 * corruption.  If `want` != 0 the tag must equal it. */
static inline uint64_t wl_check(const void *p, size_t sz, uint64_t want) {
  const unsigned char *b = (const unsigned char *)p;
  uint64_t tag, t;
  if (!p) wl_die("null block", p, sz, want, 0);
  memcpy(&tag, b, 8);
  if (want && tag != want) wl_die("head tag", p, sz, want, tag);
  if (sz >= 16) {
    memcpy(&t, b + sz - 8, 8);
    if (t != (~tag ^ (uint64_t)sz)) wl_die("tail tag", p, sz, ~tag ^ (uint64_t)sz, t);
  }
  for (size_t off = 4096; off + 8 <= sz - 8; off += 4096) {
    memcpy(&t, b + off, 8);
    if (t != tag) wl_die("page tag", p, sz, tag, t);
  }
  return tag;
}

static inline void *wl_malloc(size_t sz) {
  void *p = malloc(sz);
  if (!p) {
    fprintf(stderr, "malloc(%zu) returned NULL\n", sz);
    exit(3);
  }
  return p;
}

/* ---------- timing / args / result ---------- */
static inline double wl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
  int threads;
  double scale;
  uint64_t seed;
} wl_args;

static WL_UNUSED wl_args wl_parse(int argc, char **argv, const char *name) {
  wl_args a = {1, 1.0, 42};
  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: %s THREADS [SCALE=1.0 [SEED=42]]\n", name);
    exit(64);
  }
  a.threads = atoi(argv[1]);
  if (argc > 2) a.scale = atof(argv[2]);
  if (argc > 3) a.seed = strtoull(argv[3], NULL, 0);
  if (a.threads < 1 || a.threads > 1024 || !(a.scale > 0)) {
    fprintf(stderr, "%s: bad arguments\n", name);
    exit(64);
  }
  return a;
}

/* scaled count, at least `min` */
static inline uint64_t wl_scaled(double scale, uint64_t base, uint64_t min) {
  double v = (double)base * scale;
  uint64_t n = (uint64_t)(v + 0.5);
  return n < min ? min : n;
}

/* The shared object that defines the malloc (and free) this process really
 * calls — lets the runner prove that LD_PRELOAD took effect. */
static WL_UNUSED const char *wl_malloc_from(void) {
  Dl_info im, ifr;
  void *(*m)(size_t) = malloc;
  void (*f)(void *) = free;
  if (!dladdr((void *)m, &im) || !im.dli_fname) return "unknown";
  if (!dladdr((void *)f, &ifr) || !ifr.dli_fname || strcmp(im.dli_fname, ifr.dli_fname) != 0)
    return "mixed";
  return im.dli_fname;
}

static WL_UNUSED void wl_result(const char *name, const wl_args *a, uint64_t ops, const char *unit,
                                double elapsed, uint64_t checksum, uint64_t verified) {
  printf("RESULT name=%s threads=%d scale=%g seed=%llu ops=%llu unit=%s elapsed=%.6f "
         "ops_per_sec=%.1f checksum=0x%016llx verified=%llu malloc_from=%s\n",
         name, a->threads, a->scale, (unsigned long long)a->seed, (unsigned long long)ops, unit,
         elapsed, elapsed > 0 ? (double)ops / elapsed : 0.0, (unsigned long long)checksum,
         (unsigned long long)verified, wl_malloc_from());
  fflush(stdout);
  /* Steady-state RSS: what the allocator still holds after the work, once
   * the process has idled for WL_STEADY_MS (shootout.py --steady-ms). */
  const char *steady = getenv("WL_STEADY_MS");
  if (steady && atoi(steady) > 0) {
    usleep((useconds_t)atoi(steady) * 1000);
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%*d %ld", &pages) == 1) printf("STEADY rss_kib=%ld\n", pages * 4);
    if (f) fclose(f);
    fflush(stdout);
  }
}

static WL_UNUSED void wl_expect_eq(const char *what, uint64_t want, uint64_t got) {
  if (want != got) {
    fprintf(stderr, "CHECK FAILED: %s want=%016llx got=%016llx\n", what, (unsigned long long)want,
            (unsigned long long)got);
    exit(2);
  }
}

static inline void wl_create(pthread_t *t, void *(*fn)(void *), void *arg) {
  int e = pthread_create(t, NULL, fn, arg);
  if (e) {
    fprintf(stderr, "pthread_create failed: %s\n", strerror(e));
    exit(4);
  }
}

/* The cache-scratch/-thrash loop: `iter` times, malloc an `objsz`-byte
 * object, write every byte `reps` times, fold it into *sum, free it.
 * *first, if `first` is not NULL, gets the first object's address. */
/* WL_SHARING=1 (cache-scratch, cache-thrash): each thread logs the cache
 * line of every object it gets and the CPU it runs on then, and a SHARING
 * line counts the lines that two threads used from different CPUs. Such a
 * line moves between the CPUs' caches on every write; the count is the
 * allocator's placement (and the scheduler's migrations), not a time, so
 * it can be compared between allocators on a loaded host, where the
 * threads rarely run at once and the throughput hides the false sharing. */
enum { WL_SHARING_THREADS = 64, WL_SHARING_OBJECTS = 1000 };
typedef struct {
  uintptr_t line;
  int cpu, thread;
} wl_line_use;
static WL_UNUSED wl_line_use wl_sharing_log[WL_SHARING_THREADS * WL_SHARING_OBJECTS];

/* The log of thread `id`, or NULL when WL_SHARING is off or it does not fit. */
static WL_UNUSED wl_line_use *wl_sharing_of(int id, int iter) {
  const char *on = getenv("WL_SHARING");
  if (!on || atoi(on) == 0 || id >= WL_SHARING_THREADS || iter > WL_SHARING_OBJECTS) return NULL;
  return &wl_sharing_log[id * WL_SHARING_OBJECTS];
}

static int wl_line_use_cmp(const void *a, const void *b) {
  uintptr_t x = ((const wl_line_use *)a)->line, y = ((const wl_line_use *)b)->line;
  return x < y ? -1 : x > y;
}

/* After the threads are joined: prints the SHARING line if WL_SHARING is on. */
static WL_UNUSED void wl_sharing_report(int threads, int iter) {
  if (!wl_sharing_of(0, iter)) return;
  if (threads > WL_SHARING_THREADS) threads = WL_SHARING_THREADS;
  size_t n = 0;
  for (int t = 0; t < threads; t++)
    for (int i = 0; i < iter; i++) {
      wl_line_use u = wl_sharing_log[t * WL_SHARING_OBJECTS + i];
      u.thread = t;
      wl_sharing_log[n++] = u; /* n <= t * WL_SHARING_OBJECTS + i: never ahead of the read */
    }
  qsort(wl_sharing_log, n, sizeof *wl_sharing_log, wl_line_use_cmp);
  size_t lines = 0, shared = 0;
  for (size_t a = 0, b; a < n; a = b) {
    int two = 0;
    for (b = a; b < n && wl_sharing_log[b].line == wl_sharing_log[a].line; b++)
      for (size_t c = a; c < b && !two; c++)
        two = wl_sharing_log[c].thread != wl_sharing_log[b].thread && wl_sharing_log[c].cpu != wl_sharing_log[b].cpu;
    lines++;
    shared += two;
  }
  printf("SHARING threads=%d lines=%zu lines_used_by_threads_on_two_cpus=%zu\n", threads, lines, shared);
}

static WL_UNUSED void wl_write_objects(int iter, int objsz, uint64_t reps, unsigned char salt, uint64_t *sum,
                                       uintptr_t *first, wl_line_use *log) {
  for (int i = 0; i < iter; i++) {
    volatile unsigned char *p = (volatile unsigned char *)wl_malloc((size_t)objsz);
    if (first && i == 0) *first = (uintptr_t)p;
    if (log) log[i] = (wl_line_use){(uintptr_t)p >> 6, sched_getcpu(), 0};
    for (int k = 0; k < objsz; k++) p[k] = (unsigned char)k;
    for (uint64_t r = 0; r < reps; r++)
      for (int k = 0; k < objsz; k++) p[k] = (unsigned char)(p[k] * 3 + r + k + salt);
    for (int k = 0; k < objsz; k++) *sum = *sum * 31 + p[k];
    free((void *)p);
  }
}

/* Runs fn on n threads, thread i getting (char *)args + i * stride, and
 * returns the wall time from the first start to the last join. */
static WL_UNUSED double wl_run_all(int n, void *(*fn)(void *), void *args, size_t stride) {
  pthread_t *th = (pthread_t *)wl_malloc(sizeof(pthread_t) * (size_t)n);
  double t0 = wl_now();
  for (int i = 0; i < n; i++) wl_create(&th[i], fn, (char *)args + (size_t)i * stride);
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  double el = wl_now() - t0;
  free(th);
  return el;
}

#endif
