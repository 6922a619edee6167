/* A library that registers rseq by the __rseq_abi/__rseq_refcount
 * convention (librseqlib.so, tests/c/rseqlib.c) keeps working beside
 * rseqalloc when glibc registered no area (GLIBC_TUNABLES=
 * glibc.pthread.rseq=0), whichever registers first on a thread:
 *   - after: this thread allocated first (rseqalloc registered the area);
 *     the library's registration succeeds and counts itself in;
 *   - before: a new thread registers through the library first, then
 *     allocates (rseqalloc counts itself in);
 * and in both, the library's critical sections run (per-CPU counters add
 * up while threads allocate between increments), and its unregistration
 * leaves the area registered for rseqalloc (when `shared`: rseqalloc is
 * loaded) or unregisters it (`solo`: the library alone).
 *   rseqshare shared|solo */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rseqlib_register(void);
int rseqlib_unregister(void);
int rseqlib_cpu(void);
uint32_t rseqlib_refcount(void);
void rseqlib_inc(long *counters);

#define THREADS 4
#define ROUNDS 200000
static long counters[CPU_SETSIZE];
static int shared, failures;

#define CHECK(cond, what)                                   \
    do {                                                    \
        if (!(cond)) {                                      \
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED); \
            printf("FAIL %s: %s\n", what, #cond);           \
        }                                                   \
    } while (0)

/* Increments interleaved with allocations, so the library's sections and
 * rseqalloc's run on the same area one after the other. */
static void work(void) {
    void *keep[16] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        rseqlib_inc(counters);
        free(keep[i % 16]);
        keep[i % 16] = malloc(16 + i % 512);
        if (i % 1000 == 0)
            sched_yield();
    }
    for (int i = 0; i < 16; i++)
        free(keep[i]);
}

static void unregister_and_check(const char *who) {
    CHECK(rseqlib_unregister() == 0, who);
    if (shared) /* rseqalloc still counts itself in: the area stays registered */
        CHECK(rseqlib_cpu() >= 0, who);
    else
        CHECK(rseqlib_cpu() < 0, who);
    free(malloc(100));
}

static void *registers_before_allocating(void *arg) {
    (void)arg;
    CHECK(rseqlib_register() == 0, "before: the library registers first");
    CHECK(rseqlib_cpu() >= 0, "before: registered");
    /* rseqalloc's first allocations on this thread: more than a CPU cache
     * holds, so they reach its slow path, which counts it in. */
    enum { N = 2000 };
    static __thread void *held[N];
    for (int i = 0; i < N; i++)
        held[i] = malloc(8192);
    for (int i = 0; i < N; i++)
        free(held[i]);
    CHECK(rseqlib_refcount() == 1u + shared, "before: rseqalloc counted itself in");
    work();
    unregister_and_check("before: unregister");
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "shared") && strcmp(argv[1], "solo"))) {
        fprintf(stderr, "usage: rseqshare shared|solo\n");
        return 2;
    }
    shared = !strcmp(argv[1], "shared");
    /* after: this thread has allocated (and rseqalloc brought itself up). */
    for (int i = 0; i < 1000; i++)
        free(malloc(64));
    CHECK(rseqlib_register() == 0, "after: the library registers after rseqalloc");
    CHECK(rseqlib_cpu() >= 0, "after: registered");
    CHECK(rseqlib_refcount() == 1u + shared, "after: counts both users");
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, registers_before_allocating, NULL);
    work();
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    unregister_and_check("after: unregister");
    long sum = 0;
    for (int i = 0; i < CPU_SETSIZE; i++)
        sum += counters[i];
    CHECK(sum == (long)ROUNDS * (THREADS + 1), "per-CPU counters add up");
    printf("rseqshare %s: %ld increments in critical sections, %d failures\n", argv[1], sum, failures);
    return failures != 0;
}
