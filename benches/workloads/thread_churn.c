/* thread-churn: threads are created and joined continually.
 *
 * The main thread keeps a rolling window of THREADS live workers: it creates
 * TOTAL workers in all, joining the oldest before starting a new one.  Each
 * worker (1) takes up to two batches of blocks left in a global stash by
 * earlier (usually already dead) workers, verifies and frees them; (2)
 * allocates ALLOCS blocks of random size (16 B..2 KiB, 1 in 32 up to 32 KiB),
 * replaces some of them, frees half itself and (3) leaves the other half in
 * the stash, packed in a heap-allocated batch record, for later workers.
 * This stresses per-thread state set-up and tear-down (caches of dead threads,
 * first-call paths) and frees of memory whose allocating thread has exited.
 *
 * ops = worker threads created (each does ALLOCS+ALLOCS/4 mallocs).
 */
#include "wl_common.h"

#define ALLOCS 256
#define KEEP (ALLOCS / 2)

typedef struct batch {
  struct batch *next;
  int n;
  uint32_t sz[KEEP];
  uint64_t tag[KEEP];
  void *p[KEEP];
} batch_t;

static pthread_mutex_t stash_mu = PTHREAD_MUTEX_INITIALIZER;
static batch_t *stash;
static uint64_t seed;

typedef struct {
  uint64_t k; /* worker number */
  uint64_t allocsum, freesum, nfree;
} targ_t;

static size_t pick_size(wl_rng *r) {
  if (wl_below(r, 32) == 0) return wl_range(r, 2049, 32768);
  return wl_range(r, 16, 2048);
}

static void free_batch(targ_t *ta, batch_t *b) {
  for (int i = 0; i < b->n; i++) {
    ta->freesum += wl_check(b->p[i], b->sz[i], b->tag[i]);
    ta->nfree++;
    free(b->p[i]);
  }
  free(b);
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  batch_t *got[2] = {NULL, NULL};
  pthread_mutex_lock(&stash_mu);
  for (int i = 0; i < 2 && stash; i++) {
    got[i] = stash;
    stash = stash->next;
  }
  pthread_mutex_unlock(&stash_mu);
  for (int i = 0; i < 2; i++)
    if (got[i]) free_batch(ta, got[i]);

  wl_rng rng;
  wl_rng_seed(&rng, seed, ta->k, 3);
  void *p[ALLOCS];
  uint32_t sz[ALLOCS];
  uint64_t tag[ALLOCS];
  uint64_t seq = 0;
  for (int i = 0; i < ALLOCS; i++) {
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, ta->k, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  for (int o = 0; o < ALLOCS / 4; o++) {
    int i = (int)wl_below(&rng, ALLOCS);
    ta->freesum += wl_check(p[i], sz[i], tag[i]);
    ta->nfree++;
    free(p[i]);
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, ta->k, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  batch_t *b = (batch_t *)wl_malloc(sizeof(batch_t));
  b->n = 0;
  for (int i = 0; i < ALLOCS; i++) {
    if (i & 1) {
      b->p[b->n] = p[i];
      b->sz[b->n] = sz[i];
      b->tag[b->n] = tag[i];
      b->n++;
    } else {
      ta->freesum += wl_check(p[i], sz[i], tag[i]);
      ta->nfree++;
      free(p[i]);
    }
  }
  pthread_mutex_lock(&stash_mu);
  b->next = stash;
  stash = b;
  pthread_mutex_unlock(&stash_mu);
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "thread-churn");
  seed = a.seed;
  int n = a.threads;
  uint64_t total = wl_scaled(a.scale, 3000, 50);
  if (total < (uint64_t)n) total = (uint64_t)n;
  pthread_t *th = (pthread_t *)wl_malloc(sizeof(pthread_t) * (size_t)n);
  targ_t *ta = (targ_t *)calloc(total, sizeof(targ_t));
  double t0 = wl_now();
  for (uint64_t k = 0; k < total; k++) {
    int slot = (int)(k % (uint64_t)n);
    if (k >= (uint64_t)n) pthread_join(th[slot], NULL);
    ta[k].k = k;
    wl_create(&th[slot], worker, &ta[k]);
  }
  for (int i = 0; i < n && (uint64_t)i < total; i++) pthread_join(th[i], NULL);
  targ_t fin = {0};
  while (stash) {
    batch_t *b = stash;
    stash = b->next;
    free_batch(&fin, b);
  }
  double el = wl_now() - t0;
  uint64_t asum = 0, fsum = fin.freesum, nf = fin.nfree;
  for (uint64_t k = 0; k < total; k++) {
    asum += ta[k].allocsum;
    fsum += ta[k].freesum;
    nf += ta[k].nfree;
  }
  wl_expect_eq("allocsum==freesum", asum, fsum);
  wl_result("thread-churn", &a, total, "threads", el, fsum, nf);
  free(th);
  free(ta);
  return 0;
}
