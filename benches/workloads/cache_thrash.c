/* cache-thrash: active false sharing.
 *
 * Every thread, ITER times: malloc an 8 B object, write every byte REPS times,
 * read it back, free it.  No object ever crosses threads; an allocator that
 * places small objects of different threads (or of different CPUs) in the
 * same cache line makes the threads fight over that line ("active" false
 * sharing, caused by the allocator alone).
 *
 * ops = byte writes.
 */
#include "wl_common.h"

/* WL_OBJSZ=n (1..4096, default 8) sets the object size: at 64, objects of
 * different threads can no longer share a line, which isolates the false
 * sharing from everything else the allocator does. */
static int OBJSZ = 8;
#define ITER 1000

static uint64_t reps, seed;

typedef struct {
  int id;
  uint64_t sum;
} targ_t;

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  wl_write_objects(ITER, OBJSZ, reps, (unsigned char)(seed + (uint64_t)ta->id), &ta->sum, NULL,
                   wl_sharing_of(ta->id, ITER));
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "cache-thrash");
  const char *objsz = getenv("WL_OBJSZ");
  if (objsz) OBJSZ = atoi(objsz);
  if (OBJSZ < 1 || OBJSZ > 4096) {
    fprintf(stderr, "WL_OBJSZ must be 1..4096\n");
    return 2;
  }
  seed = a.seed;
  reps = wl_scaled(a.scale, 80000, 10);
  int n = a.threads;
  targ_t *ta = (targ_t *)calloc((size_t)n, sizeof(targ_t));
  for (int i = 0; i < n; i++) ta[i].id = i;
  double el = wl_run_all(n, worker, ta, sizeof *ta);
  wl_sharing_report(n, ITER);
  uint64_t sum = 0;
  for (int i = 0; i < n; i++) sum = wl_mix(sum ^ ta[i].sum);
  wl_result("cache-thrash", &a, (uint64_t)n * ITER * reps * OBJSZ, "writes", el, sum,
            (uint64_t)n * ITER);
  free(ta);
  return 0;
}
