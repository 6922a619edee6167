/* Producer/consumer hand-off in the shape of Lever and Boreham's malloc test
 * (USENIX 2000, "malloc() Performance in a Multithreaded Linux Environment";
 * mimalloc-bench's xmalloc-test), written from its description.
 *
 * P = ceil(THREADS/2) producers and C = max(1, THREADS/2) consumers (so
 * THREADS=1 still runs one of each: the workload is about cross-thread
 * frees, and THREADS=4 is the original's 2 + 2).  A producer mallocs 64-byte
 * objects in batches of 4096: each batch is a heap-allocated record holding
 * the 4096 pointers and a link, 32 776 bytes, itself allocated before its
 * objects and freed by the consumer after them.  Batches pass through ONE
 * shared queue of at most 100 batches (mutex + condition variables); a
 * producer waits while it is full.  Consumers pop batches, verify and free
 * every object, then the record.
 *
 * What this stresses is the middle end: every object of a class is
 * allocated on one CPU and freed on another, 4096 at a time, so a per-CPU
 * or per-thread cache overflows on the consumers and runs dry on the
 * producers, and up to 100 × 256 KiB of objects are in flight.  An
 * allocator that gives a span back to its page heap as soon as a consumer
 * has freed all its objects carves it again for the next batch.
 *
 * ops = objects passed (one malloc in a producer + one free in a consumer).
 *
 * WL_TRACE=1 (analysis) prints a TRACE line: how a producer's consecutive
 * objects lie (64 bytes above the previous one, 64 below, elsewhere: a
 * consumer walking its batch streams through memory only in the first two
 * cases) and the queue's mean depth at each push, with the waits on a full
 * and an empty queue (a deep queue means the consumers are the bottleneck
 * and read colder objects).
 */
#include "wl_common.h"

#define OBJ 64
#define BATCH 4096
#define QCAP 100 /* batches in the queue, at most */

typedef struct batch {
  struct batch *next;
  void *p[BATCH];
} batch_t;

_Static_assert(sizeof(batch_t) == 32776, "the original's batch record size");

static struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  batch_t *head, *tail;
  unsigned count;
  int producers_left;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0};

static uint64_t per_prod, seed;
static int trace;
static uint64_t t_up, t_down, t_other, t_depth, t_pushes, t_full, t_empty; /* WL_TRACE, under q.mu or atomic */

typedef struct {
  int id;
  uint64_t sum, n;
} targ_t;

static void q_push(batch_t *b) {
  pthread_mutex_lock(&q.mu);
  while (q.count == QCAP) {
    t_full++;
    pthread_cond_wait(&q.not_full, &q.mu);
  }
  t_depth += q.count;
  t_pushes++;
  b->next = NULL;
  if (q.tail)
    q.tail->next = b;
  else
    q.head = b;
  q.tail = b;
  q.count++;
  pthread_cond_signal(&q.not_empty);
  pthread_mutex_unlock(&q.mu);
}

/* NULL once every producer is done and the queue is empty */
static batch_t *q_pop(void) {
  batch_t *b = NULL;
  pthread_mutex_lock(&q.mu);
  while (q.count == 0 && q.producers_left > 0) {
    t_empty++;
    pthread_cond_wait(&q.not_empty, &q.mu);
  }
  if (q.count > 0) {
    b = q.head;
    q.head = b->next;
    if (!q.head) q.tail = NULL;
    q.count--;
    pthread_cond_signal(&q.not_full);
  }
  pthread_mutex_unlock(&q.mu);
  return b;
}

static void q_producer_done(void) {
  pthread_mutex_lock(&q.mu);
  q.producers_left--;
  pthread_cond_broadcast(&q.not_empty);
  pthread_mutex_unlock(&q.mu);
}

static void *producer(void *vp) {
  targ_t *ta = (targ_t *)vp;
  uint64_t made = 0;
  while (made < per_prod) {
    batch_t *b = (batch_t *)wl_malloc(sizeof(batch_t));
    for (int i = 0; i < BATCH; i++) {
      /* the last batch is short: its tail slots are NULL */
      if (made == per_prod) {
        b->p[i] = NULL;
        continue;
      }
      uint64_t tag = wl_tag(seed, 1 + (uint64_t)ta->id, made);
      void *p = wl_malloc(OBJ);
      if (trace && i > 0) {
        intptr_t d = (char *)p - (char *)b->p[i - 1];
        __atomic_fetch_add(d == OBJ ? &t_up : d == -OBJ ? &t_down : &t_other, 1, __ATOMIC_RELAXED);
      }
      wl_fill(p, OBJ, tag);
      b->p[i] = p;
      ta->sum += tag;
      made++;
    }
    q_push(b);
  }
  ta->n = made;
  q_producer_done();
  return NULL;
}

static void *consumer(void *vp) {
  targ_t *ta = (targ_t *)vp;
  batch_t *b;
  while ((b = q_pop()) != NULL) {
    for (int i = 0; i < BATCH && b->p[i]; i++) {
      ta->sum += wl_check(b->p[i], OBJ, 0);
      free(b->p[i]);
      ta->n++;
    }
    free(b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "xmalloc");
  seed = a.seed;
  trace = getenv("WL_TRACE") && atoi(getenv("WL_TRACE"));
  int nprod = (a.threads + 1) / 2;
  int ncons = a.threads / 2 > 0 ? a.threads / 2 : 1;
  per_prod = wl_scaled(a.scale, 16000000, 1000);
  q.producers_left = nprod;
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
  if (trace) {
    double n = (double)(t_up + t_down + t_other);
    printf("TRACE next_object_up=%.3f down=%.3f elsewhere=%.3f queue_mean_depth=%.1f full_waits=%llu empty_waits=%llu\n",
           t_up / n, t_down / n, t_other / n, (double)t_depth / (double)t_pushes, (unsigned long long)t_full,
           (unsigned long long)t_empty);
  }
  free(th);
  free(ta);
  return 0;
}
