/* alloc-test-like: per-thread random alloc/free over a working set.
 *
 * Each thread owns WS slots (its working set).  It fills them, then does OPS
 * steps: pick a random slot, verify and free its block, allocate a new one of
 * a random size (80% 16..128 B, 15% 128 B..1 KiB, 4.5% 1..8 KiB, 0.5%
 * 8..64 KiB) and tag it.  Nothing crosses threads: this is the pure fast path
 * plus the cache misses of a working set larger than L1/L2.
 *
 * ops = malloc+free pairs.
 */
#include "wl_common.h"
#include <sched.h>

/* WL_WS=n (16..1048576, default 16384) sets the slots per thread: a
 * working set small enough for the caches separates the allocator's
 * placement of blocks from its per-operation cost. */
static int WS = 16384;

static uint64_t ops_per_thread, seed;
/* WL_ROUND=n (a power of two, 1..4096, default 1) rounds every size up to a
 * multiple of n: at 64, no cache line holds parts of two blocks, which
 * isolates false sharing between threads from everything else. */
static size_t ROUND = 1;

typedef struct {
  int id;
  uint64_t allocsum, freesum, nfree;
  uint64_t lines, pages; /* WL_FOOTPRINT=1 */
  uint64_t foreign;      /* WL_FOREIGN=1 */
} targ_t;

/* WL_FOOTPRINT=1: at the end of its run each thread counts the distinct
 * 64-byte lines and 4 KiB pages its checks and fills touch (the head and
 * tail word of every live block, and one word per 4 KiB of a big one), and
 * main prints the mean per thread. A thread whose blocks sit among other
 * threads' blocks needs more lines and pages for the same blocks. */
static int FOOTPRINT = 0;

/* WL_SIZES=small: sizes 8 B..2 KiB, 3 in 4 of them 8..128 B (the
 * random-replacement working set of issue 14; with WL_WS=10000) instead of
 * the default mix up to 64 KiB. */
static int SMALL = 0;

/* WL_FOREIGN=1: each thread counts the blocks it gets that another thread
 * freed last (a table of who freed what, indexed by address), and main
 * prints them per thousand allocations of the replacement loop. A cache
 * that threads share hands one thread's freed blocks to the next. The
 * table is read and written with relaxed atomics (clean under TSan; helgrind
 * and drd do not model them, so check_workloads.sh runs without this knob). */
static int FOREIGN = 0;
#define FOREIGN_BITS 24
static unsigned char *freed_by; /* thread id + 1, by (address >> 4) */

static unsigned char *freed_slot(const void *p) {
  return &freed_by[((uintptr_t)p >> 4) & ((1u << FOREIGN_BITS) - 1)];
}

/* WL_PIN=1: thread i runs only on the i-th allowed CPU (modulo their
 * number), so that which threads share a CPU is fixed: at 2 threads on 2
 * CPUs none does, at 4 two per CPU do. The threads then start filling
 * their working sets together, as the threads of a server start at once. */
static int PIN = 0;
static pthread_barrier_t start;

static void pin_thread(int id) {
  cpu_set_t allowed, one;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  int n = CPU_COUNT(&allowed), k = id % n;
  for (int c = 0; c < CPU_SETSIZE; c++) {
    if (CPU_ISSET(c, &allowed) && k-- == 0) {
      CPU_ZERO(&one);
      CPU_SET(c, &one);
      pthread_setaffinity_np(pthread_self(), sizeof one, &one);
      return;
    }
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static uint64_t count_distinct(uint64_t *v, size_t n, int shift) {
  for (size_t k = 0; k < n; k++) v[k] >>= shift;
  qsort(v, n, sizeof *v, cmp_u64);
  uint64_t d = 0;
  for (size_t k = 0; k < n; k++) d += k == 0 || v[k] != v[k - 1];
  return d;
}

static void footprint(targ_t *ta, void **p, const uint32_t *sz) {
  size_t n = 0, cap = (size_t)WS * 2;
  for (int i = 0; i < WS; i++) cap += sz[i] / 4096;
  uint64_t *at = (uint64_t *)wl_malloc(cap * sizeof *at);
  for (int i = 0; i < WS; i++) {
    uint64_t b = (uint64_t)(uintptr_t)p[i];
    at[n++] = b;
    at[n++] = b + sz[i] - 8;
    for (size_t off = 4096; off + 8 <= sz[i] - 8; off += 4096) at[n++] = b + off;
  }
  ta->lines = count_distinct(at, n, 6);
  /* count_distinct shifted in place: lines >> 6 more bits are pages */
  ta->pages = count_distinct(at, n, 6);
  free(at);
}

static size_t pick_size(wl_rng *r) {
  uint64_t x = wl_below(r, 1000);
  size_t size;
  if (SMALL) size = x < 750 ? wl_range(r, 8, 128) : wl_range(r, 129, 2048);
  else if (x < 800) size = wl_range(r, 16, 128);
  else if (x < 950) size = wl_range(r, 129, 1024);
  else if (x < 995) size = wl_range(r, 1025, 8192);
  else size = wl_range(r, 8193, 65536);
  return (size + ROUND - 1) & ~(ROUND - 1);
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  if (PIN) {
    pin_thread(ta->id);
    pthread_barrier_wait(&start);
  }
  wl_rng rng;
  wl_rng_seed(&rng, seed, (uint64_t)ta->id, 7);
  void **p = (void **)wl_malloc((size_t)WS * sizeof(void *));
  uint32_t *sz = (uint32_t *)wl_malloc((size_t)WS * sizeof(uint32_t));
  uint64_t *tag = (uint64_t *)wl_malloc((size_t)WS * sizeof(uint64_t));
  uint64_t seq = 0;
  for (int i = 0; i < WS; i++) {
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  for (uint64_t o = 0; o < ops_per_thread; o++) {
    size_t i = (size_t)wl_below(&rng, (uint64_t)WS);
    ta->freesum += wl_check(p[i], sz[i], tag[i]);
    ta->nfree++;
    if (FOREIGN) __atomic_store_n(freed_slot(p[i]), (unsigned char)(ta->id + 1), __ATOMIC_RELAXED);
    free(p[i]);
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
    if (FOREIGN) {
      unsigned char by = __atomic_load_n(freed_slot(p[i]), __ATOMIC_RELAXED);
      ta->foreign += by != 0 && by != (unsigned char)(ta->id + 1);
    }
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  if (FOOTPRINT) footprint(ta, p, sz);
  for (int i = 0; i < WS; i++) {
    ta->freesum += wl_check(p[i], sz[i], tag[i]);
    ta->nfree++;
    free(p[i]);
  }
  free(p);
  free(sz);
  free(tag);
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "alloc-test");
  const char *ws = getenv("WL_WS");
  if (ws) WS = atoi(ws);
  if (WS < 16 || WS > 1048576) {
    fprintf(stderr, "WL_WS must be 16..1048576\n");
    return 2;
  }
  const char *fp = getenv("WL_FOOTPRINT");
  FOOTPRINT = fp && atoi(fp) != 0;
  const char *sizes = getenv("WL_SIZES");
  SMALL = sizes && strcmp(sizes, "small") == 0;
  if (sizes && !SMALL) {
    fprintf(stderr, "WL_SIZES must be small (or unset)\n");
    return 2;
  }
  const char *pin = getenv("WL_PIN");
  PIN = pin && atoi(pin) != 0;
  const char *fo = getenv("WL_FOREIGN");
  FOREIGN = fo && atoi(fo) != 0;
  if (FOREIGN && (a.threads > 254 || !(freed_by = (unsigned char *)calloc(1u << FOREIGN_BITS, 1)))) {
    fprintf(stderr, "WL_FOREIGN needs at most 254 threads and 16 MiB\n");
    return 2;
  }
  const char *round = getenv("WL_ROUND");
  if (round) ROUND = (size_t)atol(round);
  if (ROUND < 1 || ROUND > 4096 || (ROUND & (ROUND - 1))) {
    fprintf(stderr, "WL_ROUND must be a power of two, 1..4096\n");
    return 2;
  }
  seed = a.seed;
  ops_per_thread = wl_scaled(a.scale, 5000000, 1000);
  int n = a.threads;
  if (PIN) pthread_barrier_init(&start, NULL, (unsigned)n);
  targ_t *ta = (targ_t *)calloc((size_t)n, sizeof(targ_t));
  for (int i = 0; i < n; i++) ta[i].id = i;
  double el = wl_run_all(n, worker, ta, sizeof *ta);
  uint64_t asum = 0, fsum = 0, nf = 0;
  for (int i = 0; i < n; i++) {
    asum += ta[i].allocsum;
    fsum += ta[i].freesum;
    nf += ta[i].nfree;
  }
  wl_expect_eq("allocsum==freesum", asum, fsum);
  if (FOOTPRINT) {
    uint64_t lines = 0, pages = 0;
    for (int i = 0; i < n; i++) lines += ta[i].lines, pages += ta[i].pages;
    printf("FOOTPRINT threads=%d lines_per_thread=%llu pages_per_thread=%llu\n", n,
           (unsigned long long)(lines / (uint64_t)n), (unsigned long long)(pages / (uint64_t)n));
  }
  if (FOREIGN) {
    uint64_t foreign = 0;
    for (int i = 0; i < n; i++) foreign += ta[i].foreign;
    printf("FOREIGN threads=%d per_thousand=%.1f\n", n, 1000.0 * (double)foreign / (double)((uint64_t)n * ops_per_thread));
  }
  wl_result("alloc-test", &a, (uint64_t)n * ops_per_thread, "pairs", el, fsum, nf);
  free(ta);
  return 0;
}
