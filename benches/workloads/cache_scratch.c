/* cache-scratch: passive false sharing.
 *
 * The main thread mallocs THREADS small objects (8 B) back to back — they
 * typically share a cache line — and hands object i to thread i.  Each thread
 * frees the object it was given (a cross-thread free), then ITER times:
 * malloc an 8 B object, write every byte REPS times, read it back, free it.
 * An allocator that hands the just-freed object (or its neighbours) back to
 * the thread makes threads on different CPUs write the same cache line
 * ("passive" false sharing, induced by the handoff).
 *
 * ops = byte writes.  A HANDOFF line says how many threads got their
 * handed-off object back as their first object, and how many pairs of
 * threads' first objects share a cache line.
 */
#include "wl_common.h"

/* WL_OBJSZ=n (1..4096, default 8) sets the object size: at 64, objects of
 * different threads can no longer share a line, which isolates the false
 * sharing from everything else the allocator does. */
static int OBJSZ = 8;
/* WL_WARM=1: each thread mallocs and frees one object before it frees the
 * one it was given. Google TCMalloc sends a thread's first malloc to its
 * slow path (its sampler starts at 0), which refills the CPU cache and
 * buries the handed-off object under a fresh batch; one warm-up pair takes
 * that first malloc, so every allocator meets the handoff in steady state. */
static int WARM = 0;
#define ITER 1000

static uint64_t reps, seed;

typedef struct {
  int id;
  unsigned char *given;
  uint64_t sum;
  uintptr_t first; /* the first object the thread got after the handoff */
} targ_t;

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  /* the object from main carries a known pattern */
  for (int k = 0; k < OBJSZ; k++)
    if (ta->given[k] != (unsigned char)(ta->id * 7 + k)) {
      fprintf(stderr, "VERIFY FAILED: handed-off object corrupt\n");
      exit(2);
    }
  if (WARM) {
    volatile unsigned char *w = (volatile unsigned char *)wl_malloc((size_t)OBJSZ);
    w[0] = 1; /* used, so the compiler keeps the pair */
    free((void *)w);
  }
  free(ta->given);
  wl_write_objects(ITER, OBJSZ, reps, (unsigned char)(seed + (uint64_t)ta->id), &ta->sum, &ta->first,
                   wl_sharing_of(ta->id, ITER));
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "cache-scratch");
  const char *objsz = getenv("WL_OBJSZ");
  if (objsz) OBJSZ = atoi(objsz);
  const char *warm = getenv("WL_WARM");
  WARM = warm && atoi(warm) != 0;
  if (OBJSZ < 1 || OBJSZ > 4096) {
    fprintf(stderr, "WL_OBJSZ must be 1..4096\n");
    return 2;
  }
  seed = a.seed;
  reps = wl_scaled(a.scale, 80000, 10);
  int n = a.threads;
  targ_t *ta = (targ_t *)calloc((size_t)n, sizeof(targ_t));
  for (int i = 0; i < n; i++) {
    ta[i].id = i;
    ta[i].given = (unsigned char *)wl_malloc(OBJSZ);
    for (int k = 0; k < OBJSZ; k++) ta[i].given[k] = (unsigned char)(i * 7 + k);
  }
  double el = wl_run_all(n, worker, ta, sizeof *ta);
  wl_sharing_report(n, ITER);
  uint64_t sum = 0;
  for (int i = 0; i < n; i++) sum = wl_mix(sum ^ ta[i].sum);
  /* Where the false sharing comes from: how many threads got their
   * handed-off object straight back, and how many pairs of threads wrote
   * first objects in one cache line. */
  int reused = 0, pairs = 0;
  for (int i = 0; i < n; i++) {
    reused += ta[i].first == (uintptr_t)ta[i].given;
    for (int j = i + 1; j < n; j++) pairs += ta[i].first >> 6 == ta[j].first >> 6;
  }
  printf("HANDOFF threads=%d got_given_back=%d thread_pairs_sharing_a_line=%d\n", n, reused, pairs);
  wl_result("cache-scratch", &a, (uint64_t)n * ITER * reps * OBJSZ, "writes", el, sum,
            (uint64_t)n * ITER);
  free(ta);
  return 0;
}
