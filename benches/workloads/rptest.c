/* rptest-like: rpmalloc's benchmark style — random sizes across threads.
 *
 * Each thread runs LOOPS loops.  A loop: (1) frees everything other threads
 * posted to its mailbox; (2) allocates COUNT blocks of random size (log-
 * uniform 16 B..16 KiB, 1 in 100 of 16..256 KiB); (3) does OPS random
 * operations on them (free + re-malloc with a new size, or realloc to a new
 * size, contents preserved); (4) frees half of the blocks itself and posts the
 * other half, as one batch, to the mailbox of another thread (rotating
 * target), which frees them in its next loop (at most MAXPENDING batches
 * may wait in a mailbox; a poster drains its own mailbox while it waits).
 *
 * ops = malloc + realloc calls.
 */
#include "wl_common.h"

#include <sched.h>

#define COUNT 1000
#define OPS 1000

typedef struct batch {
  struct batch *next;
  int n;
  uint32_t sz[COUNT / 2];
  uint64_t tag[COUNT / 2];
  void *p[COUNT / 2];
} batch_t;

typedef struct {
  pthread_mutex_t mu;
  batch_t *head;
  int count; /* batches waiting */
  char pad[64];
} mailbox_t;

/* Back-pressure: a thread posts to a mailbox only while it holds fewer than
 * MAXPENDING batches, otherwise it drains its own mailbox and yields until the
 * owner catches up.  Without it a preempted thread's mailbox grows without
 * bound and peak RSS measures the scheduler, not the allocator. */
#define MAXPENDING 4

static mailbox_t *boxes;
static int nthreads;
static uint64_t loops, seed;
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static int done; /* threads that made their last post */

typedef struct {
  int id;
  uint64_t allocsum, freesum, ops, nfree;
} targ_t;

static size_t pick_size(wl_rng *r) {
  if (wl_below(r, 100) == 0) return wl_range(r, 16385, 262144);
  unsigned e = 4 + (unsigned)wl_below(r, 10); /* 2^4 .. 2^13 */
  return wl_range(r, (1u << e), (2u << e));   /* up to 16 KiB */
}

static void drain(targ_t *ta) {
  mailbox_t *mb = &boxes[ta->id];
  pthread_mutex_lock(&mb->mu);
  batch_t *b = mb->head;
  mb->head = NULL;
  mb->count = 0;
  pthread_mutex_unlock(&mb->mu);
  while (b) {
    batch_t *next = b->next;
    for (int i = 0; i < b->n; i++) {
      ta->freesum += wl_check(b->p[i], b->sz[i], b->tag[i]);
      ta->nfree++;
      free(b->p[i]);
    }
    free(b);
    b = next;
  }
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  void **p = (void **)wl_malloc(COUNT * sizeof(void *));
  size_t *sz = (size_t *)wl_malloc(COUNT * sizeof(size_t));
  uint64_t *tag = (uint64_t *)wl_malloc(COUNT * sizeof(uint64_t));
  uint64_t seq = 0;
  for (uint64_t l = 0; l < loops; l++) {
    wl_rng rng;
    wl_rng_seed(&rng, seed, (uint64_t)ta->id, l + 1);
    drain(ta);
    for (int i = 0; i < COUNT; i++) {
      sz[i] = pick_size(&rng);
      tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
      p[i] = wl_malloc(sz[i]);
      wl_fill(p[i], sz[i], tag[i]);
      ta->allocsum += tag[i];
    }
    ta->ops += COUNT;
    for (int o = 0; o < OPS; o++) {
      int i = (int)wl_below(&rng, COUNT);
      size_t nsz = pick_size(&rng);
      wl_check(p[i], sz[i], tag[i]);
      if (wl_chance(&rng, 30)) {
        void *np = realloc(p[i], nsz);
        if (!np) wl_die("realloc returned NULL", p[i], nsz, 0, 0);
        uint64_t head;
        memcpy(&head, np, 8);
        if (head != tag[i]) wl_die("realloc lost contents", np, nsz, tag[i], head);
        p[i] = np;
        sz[i] = nsz;
        wl_fill(np, nsz, tag[i]);
      } else {
        ta->freesum += tag[i];
        ta->nfree++;
        free(p[i]);
        tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
        sz[i] = nsz;
        p[i] = wl_malloc(nsz);
        wl_fill(p[i], nsz, tag[i]);
        ta->allocsum += tag[i];
      }
      ta->ops++;
    }
    batch_t *b = (batch_t *)wl_malloc(sizeof(batch_t));
    b->n = 0;
    for (int i = 0; i < COUNT; i++) {
      if (i & 1) {
        b->p[b->n] = p[i];
        b->sz[b->n] = (uint32_t)sz[i];
        b->tag[b->n] = tag[i];
        b->n++;
      } else {
        ta->freesum += wl_check(p[i], sz[i], tag[i]);
        ta->nfree++;
        free(p[i]);
      }
    }
    int to = (int)((ta->id + 1 + l) % (uint64_t)nthreads);
    mailbox_t *mb = &boxes[to];
    for (;;) {
      pthread_mutex_lock(&mb->mu);
      if (mb->count < MAXPENDING) {
        b->next = mb->head;
        mb->head = b;
        mb->count++;
        pthread_mutex_unlock(&mb->mu);
        break;
      }
      pthread_mutex_unlock(&mb->mu);
      drain(ta); /* keeps a cycle of full mailboxes from deadlocking */
      sched_yield();
    }
  }
  /* keep draining until every thread has made its last post */
  pthread_mutex_lock(&done_mu);
  done++;
  for (;;) {
    int all = done == nthreads;
    pthread_mutex_unlock(&done_mu);
    drain(ta);
    if (all) break;
    sched_yield();
    pthread_mutex_lock(&done_mu);
  }
  free(p);
  free(sz);
  free(tag);
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "rptest");
  seed = a.seed;
  nthreads = a.threads;
  loops = wl_scaled(a.scale, 1200, 4);
  boxes = (mailbox_t *)calloc((size_t)nthreads, sizeof(mailbox_t));
  for (int i = 0; i < nthreads; i++) pthread_mutex_init(&boxes[i].mu, NULL);
  targ_t *ta = (targ_t *)calloc((size_t)nthreads, sizeof(targ_t));
  for (int i = 0; i < nthreads; i++) ta[i].id = i;
  double el = wl_run_all(nthreads, worker, ta, sizeof *ta);
  uint64_t asum = 0, fsum = 0, ops = 0, nf = 0;
  for (int i = 0; i < nthreads; i++) {
    asum += ta[i].allocsum;
    fsum += ta[i].freesum;
    ops += ta[i].ops;
    nf += ta[i].nfree;
  }
  wl_expect_eq("allocsum==freesum", asum, fsum);
  wl_result("rptest", &a, ops, "allocs", el, fsum, nf);
  for (int i = 0; i < nthreads; i++) pthread_mutex_destroy(&boxes[i].mu);
  free(boxes);
  free(ta);
  return 0;
}
