/* many-threads: a thread pool far larger than the machine, the same work.
 *
 * The total work and the total live memory are fixed; THREADS only says how
 * many threads share them, so every change in throughput or RSS between 64,
 * 256 and 1024 threads is what the allocator pays for more threads.  All
 * THREADS threads are alive at once.  Each holds LIVE / THREADS blocks (its
 * working set: 70% 16..128 B, 22% 129 B..1 KiB, 7% 1..8 KiB, 1% 8..32 KiB,
 * about 700 B on average, 22 MiB over all threads at the default LIVE)
 * and does 4 M × SCALE / THREADS steps: pick a random slot, take its block out,
 * put a new block of a random size in.  The old block is freed by its
 * owner, except one step in ten, when it is handed off: put in a random
 * mailbox of a shared exchange of EXCHANGE mailboxes (a mutex and one
 * block each), whose previous block the sender takes out, verifies and
 * frees.  So a handed-off block is freed by whichever thread next uses its
 * mailbox, nearly always another one (a request passed to another worker).
 *
 * Why a shared exchange and not one mailbox per thread: with 1024 threads
 * on 2 CPUs nearly every thread waits for a CPU, so a block sent to a given
 * thread would wait for the scheduler to run it, and the blocks in flight
 * (and the peak RSS) would measure the scheduler's period.  The exchange
 * holds at most EXCHANGE blocks in flight at every thread count and every
 * hand-off succeeds at once.
 *
 * After the timed steps every thread stops at a barrier; main empties the
 * exchange and reads the RSS with all working sets live, then every thread
 * frees its whole working set and stops again, still alive, and main reads
 * the RSS of the process holding nothing: what the allocator keeps for
 * THREADS live threads (their caches, its own metadata), over the threads'
 * stacks, which cost every allocator the same.  One line:
 *
 *   POOL live_kib=<sum of the working sets' block sizes> held_rss_kib=<RSS,
 *       all live> empty_rss_kib=<RSS, nothing live> handed=<blocks handed off>
 *       cpu_ms=<CPU time of the whole process during the timed steps>
 *
 * cpu_ms is there because on a shared machine the wall clock of a pool this
 * size measures the other tenants too: CPU time counts only our threads.
 *
 * ops = replacements (one free, by the owner or by the next user of the
 * mailbox, + one malloc).  Knobs: WL_LIVE=n total live blocks (default
 * 32768), WL_HANDOFF=pct of the steps whose old block is handed off
 * (0..100, default 10).
 */
#include "wl_common.h"

#include <sys/resource.h>

#define EXCHANGE 4096
#define STACK_SIZE (256 * 1024)

typedef struct {
  pthread_mutex_t mu;
  void *p; /* NULL: empty */
  uint32_t sz;
  uint64_t tag;
} mailbox_t;

typedef struct {
  int id;
  uint64_t allocsum, freesum, nfree, handed;
  uint64_t live_bytes; /* of its working set, before it frees it */
  char pad[64];
} targ_t;

static mailbox_t exchange[EXCHANGE];
static int nthreads, ws, handoff_pct;
static uint64_t steps, seed;
/* filled (main reads the clock), start, steps done (main empties the
 * exchange and reads the held RSS), measured, emptied (main reads the
 * empty RSS), and exit: each with all threads and main */
static pthread_barrier_t bar;

static size_t pick_size(wl_rng *r) {
  uint64_t x = wl_below(r, 100);
  if (x < 70) return wl_range(r, 16, 128);
  if (x < 92) return wl_range(r, 129, 1024);
  if (x < 99) return wl_range(r, 1025, 8192);
  return wl_range(r, 8193, 32768);
}

static void verify_free(targ_t *ta, void *p, size_t sz, uint64_t tag) {
  ta->freesum += wl_check(p, sz, tag);
  ta->nfree++;
  free(p);
}

/* Puts the block in mailbox k and frees the block that was there. */
static void hand_off(targ_t *ta, int k, void *p, uint32_t sz, uint64_t tag) {
  mailbox_t *mb = &exchange[k];
  pthread_mutex_lock(&mb->mu);
  mailbox_t old = *mb;
  mb->p = p;
  mb->sz = sz;
  mb->tag = tag;
  pthread_mutex_unlock(&mb->mu);
  ta->handed++;
  if (old.p) verify_free(ta, old.p, old.sz, old.tag);
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  wl_rng rng;
  wl_rng_seed(&rng, seed, (uint64_t)ta->id, 11);
  void **p = (void **)wl_malloc((size_t)ws * sizeof(void *));
  uint32_t *sz = (uint32_t *)wl_malloc((size_t)ws * sizeof(uint32_t));
  uint64_t *tag = (uint64_t *)wl_malloc((size_t)ws * sizeof(uint64_t));
  uint64_t seq = 0;
  for (int i = 0; i < ws; i++) {
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  pthread_barrier_wait(&bar); /* filled */
  pthread_barrier_wait(&bar); /* start */
  for (uint64_t o = 0; o < steps; o++) {
    int i = (int)wl_below(&rng, (uint64_t)ws);
    if (wl_chance(&rng, (unsigned)handoff_pct)) {
      hand_off(ta, (int)wl_below(&rng, EXCHANGE), p[i], sz[i], tag[i]);
    } else {
      verify_free(ta, p[i], sz[i], tag[i]);
    }
    sz[i] = (uint32_t)pick_size(&rng);
    tag[i] = wl_tag(seed, 1 + (uint64_t)ta->id, seq++);
    p[i] = wl_malloc(sz[i]);
    wl_fill(p[i], sz[i], tag[i]);
    ta->allocsum += tag[i];
  }
  for (int i = 0; i < ws; i++) ta->live_bytes += sz[i];
  pthread_barrier_wait(&bar); /* steps done: main reads the held RSS */
  pthread_barrier_wait(&bar); /* measured */
  for (int i = 0; i < ws; i++) verify_free(ta, p[i], sz[i], tag[i]);
  free(p);
  free(sz);
  free(tag);
  pthread_barrier_wait(&bar); /* emptied: main reads the empty RSS */
  pthread_barrier_wait(&bar); /* exit */
  return NULL;
}

static long rss_kib(void) {
  long pages = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%*d %ld", &pages) != 1) pages = 0;
  if (f) fclose(f);
  return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static int env_int(const char *name, int def, int lo, int hi) {
  const char *s = getenv(name);
  int v = s ? atoi(s) : def;
  if (v < lo || v > hi) {
    fprintf(stderr, "%s must be %d..%d\n", name, lo, hi);
    exit(64);
  }
  return v;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "many-threads");
  seed = a.seed;
  nthreads = a.threads;
  int live = env_int("WL_LIVE", 32768, 1, 1 << 24);
  handoff_pct = env_int("WL_HANDOFF", 10, 0, 100);
  ws = live / nthreads > 0 ? live / nthreads : 1;
  steps = wl_scaled(a.scale, 4000000, 1000) / (uint64_t)nthreads;
  if (steps < 16) steps = 16;

  targ_t *ta = (targ_t *)calloc((size_t)nthreads + 1, sizeof(targ_t)); /* [nthreads]: main */
  pthread_t *th = (pthread_t *)wl_malloc(sizeof(pthread_t) * (size_t)nthreads);
  if (!ta) {
    fprintf(stderr, "calloc failed\n");
    return 3;
  }
  for (int k = 0; k < EXCHANGE; k++) pthread_mutex_init(&exchange[k].mu, NULL);
  for (int i = 0; i < nthreads; i++) ta[i].id = i;
  pthread_barrier_init(&bar, NULL, (unsigned)nthreads + 1);
  /* 1024 default stacks would reserve 8 GiB of address space; a thread
   * here needs a few KiB */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, STACK_SIZE);
  for (int i = 0; i < nthreads; i++) {
    int e = pthread_create(&th[i], &attr, worker, &ta[i]);
    if (e) {
      fprintf(stderr, "pthread_create failed: %s\n", strerror(e));
      return 4;
    }
  }
  pthread_attr_destroy(&attr);

  /* The clock starts while every worker waits at the start barrier: read
   * after it, main could run only once most workers had done their steps */
  pthread_barrier_wait(&bar); /* filled */
  double t0 = wl_now(), c0 = cpu_s();
  pthread_barrier_wait(&bar); /* start */
  pthread_barrier_wait(&bar); /* steps done */
  targ_t *fin = &ta[nthreads];
  for (int k = 0; k < EXCHANGE; k++)
    if (exchange[k].p) verify_free(fin, exchange[k].p, exchange[k].sz, exchange[k].tag);
  double el = wl_now() - t0, cpu = cpu_s() - c0;
  long held = rss_kib();
  pthread_barrier_wait(&bar); /* measured */
  pthread_barrier_wait(&bar); /* emptied */
  long empty = rss_kib();
  pthread_barrier_wait(&bar); /* exit */
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);

  uint64_t asum = 0, fsum = 0, nf = 0, handed = 0, live_bytes = 0;
  for (int i = 0; i <= nthreads; i++) {
    asum += ta[i].allocsum;
    fsum += ta[i].freesum;
    nf += ta[i].nfree;
    handed += ta[i].handed;
    live_bytes += ta[i].live_bytes;
  }
  wl_expect_eq("allocsum==freesum", asum, fsum);
  printf("POOL live_kib=%llu held_rss_kib=%ld empty_rss_kib=%ld handed=%llu cpu_ms=%.0f\n",
         (unsigned long long)(live_bytes / 1024), held, empty, (unsigned long long)handed, cpu * 1e3);
  wl_result("many-threads", &a, steps * (uint64_t)nthreads, "replacements", el, fsum, nf);
  pthread_barrier_destroy(&bar);
  for (int k = 0; k < EXCHANGE; k++) pthread_mutex_destroy(&exchange[k].mu);
  free(th);
  free(ta);
  return 0;
}
