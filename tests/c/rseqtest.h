/* What the rseq sharing tests (tests/c/rseqshare.c, tests/c/librseqshare.c)
 * share: CHECK, which reports a failed condition and counts it in
 * `failures`; allocations that reach rseqalloc's slow path on the calling
 * thread, where it registers or joins the thread's rseq area; and the
 * work loop of increments between allocations. */
#ifndef RSEQTEST_H
#define RSEQTEST_H
#include <errno.h>
#include <sched.h>
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

/* `rounds` per-CPU increments through `inc` (none if NULL), each followed
 * by a free and a malloc, so that the library's critical sections and
 * rseqalloc's run on the same rseq area one after the other. */
static void increments_between_allocations(void (*inc)(long *), long *counters, int rounds) {
    void *keep[16] = {0};
    for (int i = 0; i < rounds; i++) {
        if (inc)
            inc(counters);
        free(keep[i % 16]);
        keep[i % 16] = malloc(16 + i % 512);
        if (i % 1000 == 0)
            sched_yield();
    }
    for (int i = 0; i < 16; i++)
        free(keep[i]);
}
#endif
