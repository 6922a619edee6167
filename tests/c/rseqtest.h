/* What the rseq sharing tests (tests/c/rseqshare.c, tests/c/librseqshare.c)
 * share: CHECK, which reports a failed condition and counts it in
 * `failures`, and allocations that reach rseqalloc's slow path on the
 * calling thread, where it registers or joins the thread's rseq area. */
#ifndef RSEQTEST_H
#define RSEQTEST_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond, what)                                               \
    do {                                                                \
        if (!(cond)) {                                                  \
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);         \
            printf("FAIL %s: %s (errno %d)\n", what, #cond, errno);     \
        }                                                               \
    } while (0)

/* More blocks than a CPU cache holds. */
static void allocate_past_the_cache(void) {
    enum { N = 2000 };
    static __thread void *held[N];
    for (int i = 0; i < N; i++)
        held[i] = malloc(8192);
    for (int i = 0; i < N; i++)
        free(held[i]);
}
#endif
