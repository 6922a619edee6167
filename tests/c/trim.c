/*
 * tests/c/trim.c: malloc_trim must really give memory back. For small,
 * medium and large blocks in turn: allocates and touches them, frees them
 * all, and measures the resident set before and after malloc_trim(0).
 * Passes if each trim returns at least half of what the blocks occupied;
 * exits 1 otherwise.
 */
#define _GNU_SOURCE
#include <malloc.h>
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

int main(void) {
    int ok = phase("small", 64 * 1024, 1024);   /* 64 MiB in size classes */
    ok &= phase("medium", 320, 200 * 1024);     /* 64 MiB in runs of arena granules */
    ok &= phase("large", 2, 3 << 20);           /* 6 MiB of mappings, kept in the cache when freed */
    return !ok;
}
