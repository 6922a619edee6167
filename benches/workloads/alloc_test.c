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

#define WS 16384

static uint64_t ops_per_thread, seed;
/* WL_ROUND=n (a power of two, 1..4096, default 1) rounds every size up to a
 * multiple of n: at 64, no cache line holds parts of two blocks, which
 * isolates false sharing between threads from everything else. */
static size_t ROUND = 1;

typedef struct {
  int id;
  uint64_t allocsum, freesum, nfree;
} targ_t;

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
  void **p = (void **)wl_malloc(WS * sizeof(void *));
  uint32_t *sz = (uint32_t *)wl_malloc(WS * sizeof(uint32_t));
  uint64_t *tag = (uint64_t *)wl_malloc(WS * sizeof(uint64_t));
  uint64_t seq = 0;
  for (int i = 0; i < WS; i++) {
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  for (uint64_t o = 0; o < ops_per_thread; o++) {
    size_t i = (size_t)wl_below(&rng, WS);
    ta->freesum += wl_check(p[i], sz[i], tag[i]);
    ta->nfree++;
    free(p[i]);
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
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
  wl_result("alloc-test", &a, (uint64_t)n * ops_per_thread, "pairs", el, fsum, nf);
  free(ta);
  return 0;
}
