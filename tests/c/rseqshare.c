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
 * Built twice: linked with the library, and (-DRSEQLIB_DLOPEN) opening it
 * with dlopen after this thread's first allocations, so that its
 * __rseq_abi binds to whichever object already defines one (rseqalloc's,
 * when preloaded) and the "after" order meets an area rseqalloc already
 * registered.
 * Where glibc registered an area, a library of this convention cannot
 * register (EINVAL: a thread has one area), with rseqalloc or without; the
 * program then checks exactly that, and that allocation works around it.
 *   rseqshare shared|solo              (linked)
 *   rseqshare-dlopen shared|solo LIB   (dlopen) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rseqtest.h"

#ifdef RSEQLIB_DLOPEN
static int (*rseqlib_register)(void);
static int (*rseqlib_unregister)(void);
static int (*rseqlib_cpu)(void);
static uint32_t (*rseqlib_refcount)(void);
static void (*rseqlib_inc)(long *counters);

static void open_library(const char *path) {
    void *h = dlopen(path, RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        exit(2);
    }
    *(void **)&rseqlib_register = dlsym(h, "rseqlib_register");
    *(void **)&rseqlib_unregister = dlsym(h, "rseqlib_unregister");
    *(void **)&rseqlib_cpu = dlsym(h, "rseqlib_cpu");
    *(void **)&rseqlib_refcount = dlsym(h, "rseqlib_refcount");
    *(void **)&rseqlib_inc = dlsym(h, "rseqlib_inc");
}
#else
int rseqlib_register(void);
int rseqlib_unregister(void);
int rseqlib_cpu(void);
uint32_t rseqlib_refcount(void);
void rseqlib_inc(long *counters);
static void open_library(const char *path) { (void)path; }
#endif

/* glibc >= 2.35: the size of the area it registered, 0 if none. */
extern const unsigned int __rseq_size __attribute__((weak));

#define THREADS 4
#define ROUNDS 200000
static long counters[CPU_SETSIZE];
static int shared, glibc_area;

/* Under glibc's area the library never registered: no increments. */
static void work(void) {
    increments_between_allocations(glibc_area ? NULL : rseqlib_inc, counters, ROUNDS);
}

static void unregister_and_check(const char *who) {
    CHECK(rseqlib_unregister() == 0, who);
    if (shared) /* rseqalloc still counts itself in: the area stays registered */
        CHECK(rseqlib_cpu() >= 0, who);
    else
        CHECK(rseqlib_cpu() < 0, who);
    free(malloc(100));
}

/* Under glibc's registration: the library's attempt fails as it does
 * without rseqalloc, and leaves nothing half done. */
static void register_fails(const char *who) {
    errno = 0;
    CHECK(rseqlib_register() == -1 && errno == EINVAL, who);
    CHECK(rseqlib_refcount() == 0 && rseqlib_cpu() < 0, who);
}

static void *registers_before_allocating(void *arg) {
    (void)arg;
    if (glibc_area) {
        register_fails("before: the library cannot register beside glibc");
        allocate_past_the_cache();
        work();
        return NULL;
    }
    CHECK(rseqlib_register() == 0, "before: the library registers first");
    CHECK(rseqlib_cpu() >= 0, "before: registered");
    allocate_past_the_cache();
    CHECK(rseqlib_refcount() == 1u + shared, "before: rseqalloc counted itself in");
    work();
    unregister_and_check("before: unregister");
    return NULL;
}

int main(int argc, char **argv) {
#ifdef RSEQLIB_DLOPEN
    int args = 3;
#else
    int args = 2;
#endif
    if (argc != args || (strcmp(argv[1], "shared") && strcmp(argv[1], "solo"))) {
        fprintf(stderr, "usage: %s shared|solo%s\n", argv[0], args == 3 ? " LIBRARY" : "");
        return 2;
    }
    shared = !strcmp(argv[1], "shared");
    glibc_area = &__rseq_size && __rseq_size > 0;
    /* after: this thread has allocated (and rseqalloc brought itself up). */
    allocate_past_the_cache();
    open_library(argv[args - 1]);
    if (glibc_area) {
        register_fails("after: the library cannot register beside glibc");
    } else {
        CHECK(rseqlib_register() == 0, "after: the library registers after rseqalloc");
        CHECK(rseqlib_cpu() >= 0, "after: registered");
        CHECK(rseqlib_refcount() == 1u + shared, "after: counts both users");
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, registers_before_allocating, NULL);
    work();
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    long sum = 0;
    if (!glibc_area) {
        unregister_and_check("after: unregister");
        for (int i = 0; i < CPU_SETSIZE; i++)
            sum += counters[i];
        CHECK(sum == (long)ROUNDS * (THREADS + 1), "per-CPU counters add up");
    }
    printf("rseqshare %s%s: %ld increments in critical sections, %d failures\n", argv[1],
           glibc_area ? " (glibc's area: the library cannot register)" : "", sum, failures);
    return failures != 0;
}
