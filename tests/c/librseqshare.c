/* librseq 0.1 and later beside rseqalloc (tests/c/librseqmodel.c models
 * librseq's registration): a program linked with it registers every thread
 * through it, before or after the thread's first allocations, and its
 * critical sections count right while threads allocate between
 * increments. librseq aborts if one thread's registration fails after
 * another's succeeded, and returns -1 on the first failure; where glibc
 * registered no area, rseqalloc must therefore never register one itself.
 *   librseqshare lib-first|alloc-first */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rseqtest.h"

int rseq_register_current_thread(void);
int rseqmodel_cpu(void);
void rseqmodel_inc(long *counters);

#define THREADS 4
#define ROUNDS 200000
static long counters[CPU_SETSIZE];
static int lib_first;

/* One thread's life: register through librseq and allocate, in this
 * run's order; then increments interleaved with allocations. */
static void *thread_life(void *arg) {
    (void)arg;
    int registered;
    errno = 0;
    if (lib_first) {
        registered = rseq_register_current_thread() == 0;
        CHECK(registered, "librseq registers a thread before its first allocation");
        allocate_past_the_cache();
    } else {
        allocate_past_the_cache();
        registered = rseq_register_current_thread() == 0;
        CHECK(registered, "librseq registers a thread after its first allocations");
    }
    if (!registered)
        return NULL;
    CHECK(rseqmodel_cpu() >= 0, "registered");
    increments_between_allocations(rseqmodel_inc, counters, ROUNDS);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "lib-first") && strcmp(argv[1], "alloc-first"))) {
        fprintf(stderr, "usage: librseqshare lib-first|alloc-first\n");
        return 2;
    }
    lib_first = !strcmp(argv[1], "lib-first");
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, thread_life, NULL);
    thread_life(NULL); /* the main thread too */
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    long sum = 0;
    for (int i = 0; i < CPU_SETSIZE; i++)
        sum += counters[i];
    CHECK(sum == (long)ROUNDS * (THREADS + 1), "per-CPU counters add up");
    printf("librseqshare %s: %ld increments in critical sections, %d failures\n", argv[1], sum, failures);
    return failures != 0;
}
