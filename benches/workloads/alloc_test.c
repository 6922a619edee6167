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
} targ_t;

/* WL_FOOTPRINT=1: at the end of its run each thread counts the distinct
 * 64-byte lines and 4 KiB pages its checks and fills touch (the head and
 * tail word of every live block, and one word per 4 KiB of a big one), and
 * main prints the mean per thread. A thread whose blocks sit among other
 * threads' blocks needs more lines and pages for the same blocks. */
static int FOOTPRINT = 0;

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
  if (x < 800) size = wl_range(r, 16, 128);
  else if (x < 950) size = wl_range(r, 129, 1024);
  else if (x < 995) size = wl_range(r, 1025, 8192);
  else size = wl_range(r, 8193, 65536);
  return (size + ROUND - 1) & ~(ROUND - 1);
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
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
    free(p[i]);
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
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
  const char *round = getenv("WL_ROUND");
  if (round) ROUND = (size_t)atol(round);
  if (ROUND < 1 || ROUND > 4096 || (ROUND & (ROUND - 1))) {
    fprintf(stderr, "WL_ROUND must be a power of two, 1..4096\n");
    return 2;
  }
  seed = a.seed;
  ops_per_thread = wl_scaled(a.scale, 5000000, 1000);
  int n = a.threads;
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
  wl_result("alloc-test", &a, (uint64_t)n * ops_per_thread, "pairs", el, fsum, nf);
  free(ta);
  return 0;
}
