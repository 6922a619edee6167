/* big-blocks: blocks above the small sizes, allocated, written and freed in
 * a loop: what a program pays for memory the allocator gives back dirty or
 * fresh, zeroed or not.  WL_SHAPE picks the shape (default calloc-held):
 *
 *   calloc-held   calloc of 300 KB–1 MB, then memset; 32 blocks held, a
 *                 random one replaced each step
 *   zeroed-fill   calloc of 300 KB–1 MB, filled, freed (Rust's
 *                 `vec![0u8; n]` then written: alloc_zeroed is calloc)
 *   zeroed-2m     the same with 2 MiB blocks
 *   big-random    malloc of 1–4 MB, fully written; 8 blocks held, a random
 *                 one replaced each step
 *   big-loop      malloc of 5–25 MiB, one byte written per 4 KiB page,
 *                 freed: one block at a time
 *   big-held      malloc of 5–25 MiB, fully written; 20 blocks held, a
 *                 random one replaced each step (mimalloc-bench's
 *                 malloc-large: C++ `make_unique<char[]>(n)` in a loop)
 *
 * Each thread runs the loop on its own blocks.  A calloc'd block is checked
 * to read zero at the start of every page and in its last word before it is
 * written (the words the previous owner of the memory tagged), so memory
 * reused dirty and not cleared fails the run.
 *
 * ops = blocks allocated (each also written and freed).
 */
#include "wl_common.h"

typedef struct {
  const char *name;
  size_t lo, hi; /* sizes, inclusive */
  int held;      /* blocks each thread keeps */
  int zeroed;    /* calloc instead of malloc */
  int full;      /* memset the whole block, else one byte per page */
  uint64_t ops;  /* per thread at scale 1 */
} shape_t;

static const shape_t SHAPES[] = {
    {"calloc-held", 300000, 1000000, 32, 1, 1, 12000},
    {"zeroed-fill", 300000, 1000000, 1, 1, 1, 20000},
    {"zeroed-2m", 2 << 20, 2 << 20, 1, 1, 1, 6000},
    {"big-random", 1000000, 4000000, 8, 0, 1, 4000},
    {"big-loop", 5 << 20, 25 << 20, 1, 0, 0, 2000},
    {"big-held", 5 << 20, 25 << 20, 20, 0, 1, 2000},
};

typedef struct {
  const shape_t *shape;
  uint64_t id, ops, seed;
  uint64_t allocsum, freesum, nfree;
} targ_t;

/* The words wl_fill writes (head, one per page, tail) must read zero. */
static void check_zero(const unsigned char *b, size_t sz) {
  uint64_t w;
  for (size_t off = 0; off + 8 <= sz; off += 4096) {
    memcpy(&w, b + off, 8);
    if (w) wl_die("calloc not zeroed", b, sz, 0, w);
  }
  memcpy(&w, b + sz - 8, 8);
  if (w) wl_die("calloc tail not zeroed", b, sz, 0, w);
}

static void *worker(void *vp) {
  targ_t *ta = (targ_t *)vp;
  const shape_t *s = ta->shape;
  wl_rng r;
  wl_rng_seed(&r, ta->seed, ta->id, 0xb16b);
  void **p = (void **)calloc((size_t)s->held, sizeof(void *));
  size_t *sz = (size_t *)calloc((size_t)s->held, sizeof(size_t));
  uint64_t *tag = (uint64_t *)calloc((size_t)s->held, sizeof(uint64_t));
  if (!p || !sz || !tag) exit(3);
  for (uint64_t i = 0; i < ta->ops; i++) {
    int k = (int)wl_below(&r, (uint64_t)s->held);
    if (p[k]) {
      ta->freesum += wl_check(p[k], sz[k], tag[k]);
      ta->nfree++;
      free(p[k]);
    }
    size_t n = (size_t)wl_range(&r, s->lo, s->hi);
    unsigned char *b = (unsigned char *)(s->zeroed ? calloc(1, n) : malloc(n));
    if (!b) {
      fprintf(stderr, "allocating %zu bytes failed\n", n);
      exit(3);
    }
    if (s->zeroed) check_zero(b, n);
    uint64_t t = wl_tag(ta->seed, ta->id, i);
    if (s->full) {
      memset(b, (int)(t >> 56) | 1, n);
    } else {
      for (size_t off = 0; off < n; off += 4096) b[off] = (unsigned char)(t | 1);
    }
    wl_fill(b, n, t);
    ta->allocsum += t;
    p[k] = b, sz[k] = n, tag[k] = t;
  }
  for (int k = 0; k < s->held; k++) {
    if (!p[k]) continue;
    ta->freesum += wl_check(p[k], sz[k], tag[k]);
    ta->nfree++;
    free(p[k]);
  }
  free(p);
  free(sz);
  free(tag);
  return NULL;
}

int main(int argc, char **argv) {
  wl_args a = wl_parse(argc, argv, "big_blocks");
  const char *want = getenv("WL_SHAPE");
  const shape_t *s = NULL;
  for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
    if (!want || strcmp(want, SHAPES[i].name) == 0) {
      s = &SHAPES[i];
      break;
    }
  if (!s) {
    fprintf(stderr, "big_blocks: unknown WL_SHAPE %s (calloc-held, zeroed-fill, zeroed-2m, big-random, "
                    "big-loop, big-held)\n", want);
    return 64;
  }
  uint64_t ops = wl_scaled(a.scale, s->ops, 1);
  targ_t *ta = (targ_t *)calloc((size_t)a.threads, sizeof(targ_t));
  if (!ta) return 3;
  for (int i = 0; i < a.threads; i++) ta[i] = (targ_t){.shape = s, .id = (uint64_t)i, .ops = ops, .seed = a.seed};
  double el = wl_run_all(a.threads, worker, ta, sizeof(targ_t));
  uint64_t allocsum = 0, freesum = 0, nfree = 0;
  for (int i = 0; i < a.threads; i++) {
    allocsum += ta[i].allocsum;
    freesum += ta[i].freesum;
    nfree += ta[i].nfree;
  }
  wl_expect_eq("tags freed == tags allocated", allocsum, freesum);
  free(ta);
  wl_result(s->name, &a, ops * (uint64_t)a.threads, "blocks", el, allocsum, nfree);
  return 0;
}
