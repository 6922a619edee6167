/*
 * tests/c/trim.c: malloc_trim must really give memory back. For small,
 * medium and large blocks in turn: allocates and touches them, frees them
 * all, and measures the resident set before and after malloc_trim(0).
 * Passes if each trim returns at least half of what the blocks occupied.
 * Then a burst: 4 threads allocate 1 GiB of small and medium blocks, touch
 * every page and free them; malloc_trim(0) must bring RSS back within 8 MiB
 * of its level before the burst at once (tests/preload.sh runs this with
 * RSEQALLOC_DECAY_MS=0, so nothing else gives memory back). Exits 1 on any
 * failure.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Allocates and touches `count` blocks of about `size` bytes, frees them,
 * trims, and checks that trimming gave back at least half of them. */
static int phase(const char *what, int count, size_t size) {
    static char *blocks[64 * 1024];
    long start = rss_kib();
    for (int i = 0; i < count; i++) {
        blocks[i] = malloc(size - 16 * (i % 4));
        memset(blocks[i], 1, size - 16 * (i % 4));
    }
    long full = rss_kib();
    for (int i = 0; i < count; i++) free(blocks[i]);
    long freed = rss_kib();
    int r = malloc_trim(0);
    long trimmed = rss_kib();
    int ok = r == 1 && (freed - trimmed) * 2 >= full - start;
    printf("trim %s: %s (RSS KiB: start %ld, %d x %zu live %ld, all freed %ld, after malloc_trim %ld; returned %d)\n",
           what, ok ? "ok" : "FAILED", start, count, size, full, freed, trimmed, r);
    return ok;
}

#define BURST_THREADS 4
#define BURST_BYTES (1L << 30)

/* One burst thread: its share of BURST_BYTES in blocks of 24 B to 250 KB,
 * every page written, then all freed. */
static void *burst_thread(void *arg) {
    static const size_t sizes[] = {24, 200, 1000, 4000, 12000, 32768, 100000, 250000};
    size_t n = 0, cap = 1 << 16, bytes = 0;
    char **blocks = malloc(cap * sizeof *blocks);
    for (size_t i = (size_t)arg; bytes < BURST_BYTES / BURST_THREADS; i++) {
        size_t size = sizes[i % 8];
        if (n == cap) blocks = realloc(blocks, (cap *= 2) * sizeof *blocks);
        char *p = malloc(size);
        if (!p) return (void *)1;
        for (size_t at = 0; at < size; at += 4096) p[at] = 1;
        blocks[n++] = p;
        bytes += size;
    }
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    free(blocks);
    return NULL;
}

static int burst(void) {
    long start = rss_kib();
    pthread_t t[BURST_THREADS];
    for (long i = 0; i < BURST_THREADS; i++) pthread_create(&t[i], NULL, burst_thread, (void *)i);
    int failed = 0;
    for (int i = 0; i < BURST_THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        failed |= r != NULL;
    }
    long freed = rss_kib();
    int r = malloc_trim(0);
    long trimmed = rss_kib();
    int ok = !failed && r == 1 && trimmed <= start + 8 * 1024;
    printf("trim burst: %s (RSS KiB: start %ld, 1 GiB allocated and freed by 4 threads %ld, after malloc_trim %ld)\n",
           ok ? "ok" : "FAILED", start, freed, trimmed);
    return ok;
}

int main(void) {
    int ok = phase("small", 64 * 1024, 1024);   /* 64 MiB in size classes */
    ok &= phase("medium", 320, 200 * 1024);     /* 64 MiB in runs of arena granules */
    ok &= phase("large", 2, 3 << 20);           /* 6 MiB of mappings, kept in the cache when freed */
    ok &= burst();
    return !ok;
}
