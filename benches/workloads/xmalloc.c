/* xmalloc-like producer/consumer with cross-thread frees.
 *
 * P = ceil(THREADS/2) producers and C = max(1, THREADS/2) consumers (so
 * THREADS=1 still runs one producer and one consumer: the workload is about
 * cross-thread frees).  Producers malloc blocks of random small sizes (mostly
 * 16..256 B, 1 in 64 up to 4 KiB), tag them, and pack BATCH of them into a
 * heap-allocated batch record which is pushed onto a bounded queue owned by
 * consumer (p % C).  Consumers pop batches, verify and free every block and
 * the batch record.  All memory is freed by a thread other than the one that
 * allocated it — the asymmetric pattern that starves per-thread caches.
 *
 * ops = blocks passed (one malloc in the producer + one free in the consumer).
 */
#include "wl_common.h"

#define BATCH 64
#define QCAP 64 /* batches per queue */

typedef struct batch {
  int n;
  uint32_t sz[BATCH];
  void *p[BATCH];
} batch_t;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  batch_t *ring[QCAP];
  unsigned head, count;
  int producers_left;
} queue_t;

static queue_t *queues;
static int nprod, ncons;
static uint64_t per_prod, seed;

typedef struct {
  int id;
  uint64_t sum, n;
} targ_t;

static void q_push(queue_t *q, batch_t *b) {
  pthread_mutex_lock(&q->mu);
  while (q->count == QCAP) pthread_cond_wait(&q->not_full, &q->mu);
  q->ring[(q->head + q->count) % QCAP] = b;
  q->count++;
  pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

/* returns NULL when all producers feeding this queue are done and it is empty */
static batch_t *q_pop(queue_t *q) {
  batch_t *b = NULL;
  pthread_mutex_lock(&q->mu);
  while (q->count == 0 && q->producers_left > 0) pthread_cond_wait(&q->not_empty, &q->mu);
  if (q->count > 0) {
    b = q->ring[q->head];
    q->head = (q->head + 1) % QCAP;
    q->count--;
    pthread_cond_signal(&q->not_full);
  }
  pthread_mutex_unlock(&q->mu);
  return b;
}

static void q_producer_done(queue_t *q) {
  pthread_mutex_lock(&q->mu);
  q->producers_left--;
  pthread_cond_broadcast(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

static void *producer(void *vp) {
  targ_t *ta = (targ_t *)vp;
  queue_t *q = &queues[ta->id % ncons];
  wl_rng rng;
  wl_rng_seed(&rng, seed, 1000 + (uint64_t)ta->id, 0);
  uint64_t made = 0;
  while (made < per_prod) {
    batch_t *b = (batch_t *)wl_malloc(sizeof(batch_t));
    b->n = 0;
    while (b->n < BATCH && made < per_prod) {
      uint32_t sz = wl_below(&rng, 64) == 0 ? (uint32_t)wl_range(&rng, 257, 4096)
                                            : (uint32_t)wl_range(&rng, 16, 256);
      uint64_t tag = wl_tag(seed, 1 + (uint64_t)ta->id, made);
      void *p = wl_malloc(sz);
      wl_fill(p, sz, tag);
      b->p[b->n] = p;
      b->sz[b->n] = sz;
      b->n++;
      ta->sum += tag;
      made++;
    }
    q_push(q, b);
  }
  ta->n = made;
  q_producer_done(q);
  return NULL;
}

static void *consumer(void *vp) {
  targ_t *ta = (targ_t *)vp;
  queue_t *q = &queues[ta->id];
  batch_t *b;
  while ((b = q_pop(q)) != NULL) {
    for (int i = 0; i < b->n; i++) {
      ta->sum += wl_check(b->p[i], b->sz[i], 0);
      free(b->p[i]);
    }
    ta->n += (uint64_t)b->n;
    free(b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "xmalloc");
  seed = a.seed;
  nprod = (a.threads + 1) / 2;
  ncons = a.threads / 2 > 0 ? a.threads / 2 : 1;
  per_prod = wl_scaled(a.scale, 12000000, 1000);
  queues = (queue_t *)calloc((size_t)ncons, sizeof(queue_t));
  for (int c = 0; c < ncons; c++) {
    pthread_mutex_init(&queues[c].mu, NULL);
    pthread_cond_init(&queues[c].not_empty, NULL);
    pthread_cond_init(&queues[c].not_full, NULL);
  }
  for (int p = 0; p < nprod; p++) queues[p % ncons].producers_left++;
  pthread_t *th = (pthread_t *)wl_malloc(sizeof(pthread_t) * (size_t)(nprod + ncons));
  targ_t *ta = (targ_t *)calloc((size_t)(nprod + ncons), sizeof(targ_t));
  double t0 = wl_now();
  for (int c = 0; c < ncons; c++) {
    ta[nprod + c].id = c;
    wl_create(&th[nprod + c], consumer, &ta[nprod + c]);
  }
  for (int p = 0; p < nprod; p++) {
    ta[p].id = p;
    wl_create(&th[p], producer, &ta[p]);
  }
  for (int i = 0; i < nprod + ncons; i++) pthread_join(th[i], NULL);
  double el = wl_now() - t0;
  uint64_t made = 0, freed = 0, asum = 0, fsum = 0;
  for (int p = 0; p < nprod; p++) made += ta[p].n, asum += ta[p].sum;
  for (int c = 0; c < ncons; c++) freed += ta[nprod + c].n, fsum += ta[nprod + c].sum;
  wl_expect_eq("blocks made==freed", made, freed);
  wl_expect_eq("allocsum==freesum", asum, fsum);
  wl_result("xmalloc", &a, made, "blocks", el, fsum, freed);
  for (int c = 0; c < ncons; c++) {
    pthread_mutex_destroy(&queues[c].mu);
    pthread_cond_destroy(&queues[c].not_empty);
    pthread_cond_destroy(&queues[c].not_full);
  }
  free(queues);
  free(th);
  free(ta);
  return 0;
}
