/* mstress-like: many threads, mixed sizes, long- and short-lived objects,
 * thread transfer, threads that die and are replaced.
 *
 * ROUNDS times, THREADS threads are created and joined (a thread's heap state
 * dies with it).  Each thread runs STEPS random steps on a private array of
 * short-lived blocks: allocate (replacing and freeing the previous occupant),
 * free, or swap a block with a random slot of a global transfer array
 * (atomic exchange) — the block then lives on past its thread and is freed by
 * some other thread, possibly in a later round.  Each thread also keeps a few
 * long-lived "retained" blocks until it exits.  Sizes: 70% 24..256 B, 28%
 * 256 B..4 KiB, 2% 4..64 KiB, 0.1% 64 KiB..1 MiB.  Blocks are
 * self-describing (tag and size in the first two words) since receivers do
 * not know them.
 *
 * ops = allocations.
 */
#include "wl_common.h"

/* helgrind/drd do not understand C11 atomics: build with -DWL_VALGRIND to tell
 * them that the atomic exchange publishes the block (see README). */
#ifdef WL_VALGRIND
#include <valgrind/helgrind.h>
#define HB(a) ANNOTATE_HAPPENS_BEFORE(a)
#define HA(a) ANNOTATE_HAPPENS_AFTER(a)
#else
#define HB(a) ((void)(a))
#define HA(a) ((void)(a))
#endif

#define ROUNDS 8
#define DATA 1024     /* short-lived slots per thread */
#define RETAIN 256    /* long-lived blocks per thread */
#define TRANSFER 1024 /* global transfer slots */

static _Atomic(uint64_t *) transfer[TRANSFER];
static uint64_t steps, seed;
static int nthreads;

typedef struct {
  int id, round;
  uint64_t allocsum, freesum, nalloc, nfree;
} targ_t;

static size_t pick_size(wl_rng *r) {
  uint64_t x = wl_below(r, 1000);
  if (x == 0) return wl_range(r, 65536, 1 << 20);
  if (x < 20) return wl_range(r, 4097, 65536);
  if (x < 300) return wl_range(r, 257, 4096);
  return wl_range(r, 24, 256);
}

static uint64_t *mk(targ_t *ta, wl_rng *r) {
  size_t sz = pick_size(r);
  uint64_t tag = wl_tag(seed, ((uint64_t)ta->round << 12) | (uint64_t)ta->id, ta->nalloc);
  uint64_t *p = (uint64_t *)wl_malloc(sz);
  wl_fill(p, sz, tag);
  p[1] = sz;
  /* small blocks are filled completely (as mimalloc's stress test does) */
  if (sz <= 1024)
    for (size_t w = 2; w < sz / 8 - 1; w++) p[w] = tag + w;
  ta->allocsum += tag;
  ta->nalloc++;
  return p;
}

static void rm(targ_t *ta, uint64_t *p) {
  if (!p) return;
  size_t sz = (size_t)p[1];
  if (sz < 24 || sz > (1 << 20)) wl_die("size word", p, sz, 0, sz);
  uint64_t tag = wl_check(p, sz, 0);
  if (sz <= 1024)
    for (size_t w = 2; w < sz / 8 - 1; w++)
      if (p[w] != tag + w) wl_die("body word", p, sz, tag + w, p[w]);
  ta->freesum += tag;
  ta->nfree++;
  free(p);
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  wl_rng rng;
  wl_rng_seed(&rng, seed, (uint64_t)ta->id, (uint64_t)ta->round + 1);
  uint64_t **data = (uint64_t **)calloc(DATA, sizeof(uint64_t *));
  uint64_t **retained = (uint64_t **)calloc(RETAIN, sizeof(uint64_t *));
  int nret = 0;
  for (uint64_t s = 0; s < steps; s++) {
    uint64_t x = wl_below(&rng, 100);
    size_t j = (size_t)wl_below(&rng, DATA);
    if (x < 2) {
      if (nret < RETAIN) retained[nret++] = mk(ta, &rng);
    } else if (x < 60) {
      rm(ta, data[j]);
      data[j] = mk(ta, &rng);
    } else if (x < 90) {
      rm(ta, data[j]);
      data[j] = NULL;
    } else {
      size_t t = (size_t)wl_below(&rng, TRANSFER);
      HB(&transfer[t]);
      data[j] = atomic_exchange_explicit(&transfer[t], data[j], memory_order_acq_rel);
      HA(&transfer[t]);
    }
  }
  for (size_t j = 0; j < DATA; j++) rm(ta, data[j]);
  for (int i = 0; i < nret; i++) rm(ta, retained[i]);
  free(data);
  free(retained);
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "mstress");
  seed = a.seed;
  nthreads = a.threads;
  steps = wl_scaled(a.scale, 750000, 2000);
  pthread_t *th = (pthread_t *)wl_malloc(sizeof(pthread_t) * (size_t)nthreads);
  targ_t *ta = (targ_t *)calloc((size_t)nthreads * ROUNDS, sizeof(targ_t));
  double t0 = wl_now();
  for (int r = 0; r < ROUNDS; r++) {
    for (int i = 0; i < nthreads; i++) {
      targ_t *t = &ta[r * nthreads + i];
      t->id = i;
      t->round = r;
      wl_create(&th[i], worker, t);
    }
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  }
  targ_t fin = {0};
  for (int t = 0; t < TRANSFER; t++) {
    uint64_t *p = atomic_exchange(&transfer[t], NULL);
    HA(&transfer[t]);
    rm(&fin, p);
  }
  double el = wl_now() - t0;
  uint64_t asum = 0, fsum = fin.freesum, na = 0, nf = fin.nfree;
  for (int i = 0; i < nthreads * ROUNDS; i++) {
    asum += ta[i].allocsum;
    fsum += ta[i].freesum;
    na += ta[i].nalloc;
    nf += ta[i].nfree;
  }
  wl_expect_eq("allocs==frees", na, nf);
  wl_expect_eq("allocsum==freesum", asum, fsum);
  wl_result("mstress", &a, na, "allocs", el, fsum, nf);
  free(th);
  free(ta);
  return 0;
}
