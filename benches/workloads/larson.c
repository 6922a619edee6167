/* larson-like server simulation.
 *
 * A shared array of THREADS*SLOTS blocks (random sizes 8..1000 B) is split in
 * THREADS segments.  In each round every thread owns one segment and replaces
 * REPL random slots of it (verify + free the old block, malloc a new one of a
 * random size, tag it).  Segments rotate between rounds (thread t works on
 * segment (t+round) % THREADS), so blocks are allocated by one thread and freed
 * by another — the pattern of a server whose worker threads hand connections
 * (and their buffers) to each other.  A barrier separates rounds; no two
 * threads ever touch the same slot concurrently.
 *
 * ops = number of replacements (one free + one malloc each).
 */
#include "wl_common.h"

#define MIN_SZ 8
#define MAX_SZ 1000
#define SLOTS 4000 /* blocks per segment */

typedef struct {
  void *p;
  uint32_t sz;
  uint64_t tag;
} slot_t;

static slot_t *slots;
static int nthreads;
static uint64_t rounds, repl, seed;
static pthread_barrier_t bar;

typedef struct {
  int id;
  uint64_t allocsum, freesum, nfree;
} targ_t;

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  for (uint64_t r = 0; r < rounds; r++) {
    int seg = (int)((ta->id + r) % (uint64_t)nthreads);
    slot_t *s = slots + (size_t)seg * SLOTS;
    wl_rng rng;
    wl_rng_seed(&rng, seed, (uint64_t)ta->id, r + 1);
    for (uint64_t i = 0; i < repl; i++) {
      slot_t *e = &s[wl_below(&rng, SLOTS)];
      ta->freesum += wl_check(e->p, e->sz, e->tag);
      ta->nfree++;
      free(e->p);
      uint32_t sz = (uint32_t)wl_range(&rng, MIN_SZ, MAX_SZ);
      /* tag identifies (round, thread, i) uniquely */
      uint64_t tag = wl_tag(seed, ((r + 1) << 10) | (uint64_t)ta->id, i);
      e->p = wl_malloc(sz);
      e->sz = sz;
      e->tag = tag;
      wl_fill(e->p, sz, tag);
      ta->allocsum += tag;
    }
    pthread_barrier_wait(&bar);
  }
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "larson");
  nthreads = a.threads;
  seed = a.seed;
  rounds = 20;
  repl = wl_scaled(a.scale, 600000, 100);
  size_t n = (size_t)nthreads * SLOTS;
  slots = (slot_t *)wl_malloc(n * sizeof(slot_t));
  uint64_t allocsum = 0, freesum = 0, nfree = 0;
  wl_rng rng;
  wl_rng_seed(&rng, seed, 0xabcdef, 0);
  for (size_t i = 0; i < n; i++) {
    uint32_t sz = (uint32_t)wl_range(&rng, MIN_SZ, MAX_SZ);
    uint64_t tag = wl_tag(seed, 0, i);
    slots[i].p = wl_malloc(sz);
    slots[i].sz = sz;
    slots[i].tag = tag;
    wl_fill(slots[i].p, sz, tag);
    allocsum += tag;
  }
  pthread_barrier_init(&bar, NULL, (unsigned)nthreads);
  targ_t *ta = (targ_t *)calloc((size_t)nthreads, sizeof(targ_t));
  for (int i = 0; i < nthreads; i++) ta[i].id = i;
  double el = wl_run_all(nthreads, worker, ta, sizeof *ta);
  for (int i = 0; i < nthreads; i++) {
    allocsum += ta[i].allocsum;
    freesum += ta[i].freesum;
    nfree += ta[i].nfree;
  }
  for (size_t i = 0; i < n; i++) {
    freesum += wl_check(slots[i].p, slots[i].sz, slots[i].tag);
    nfree++;
    free(slots[i].p);
  }
  wl_expect_eq("allocsum==freesum", allocsum, freesum);
  wl_result("larson", &a, rounds * repl * (uint64_t)nthreads, "replacements", el, freesum, nfree);
  pthread_barrier_destroy(&bar);
  free(ta);
  free(slots);
  return 0;
}
