/*
 * tests/c/trim.c: malloc_trim must really give memory back. Allocates and
 * touches 64 MiB of small blocks, frees them all, and measures the resident
 * set before and after malloc_trim(0). Passes if trimming returns at least
 * half of what the blocks occupied; exits 1 otherwise.
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

int main(void) {
    enum { N = 64 * 1024, SIZE = 1024 };
    static char *blocks[N];
    long start = rss_kib();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(SIZE - 16 * (i % 4));
        memset(blocks[i], 1, SIZE - 16 * (i % 4));
    }
    long full = rss_kib();
    for (int i = 0; i < N; i++) free(blocks[i]);
    long freed = rss_kib();
    int r = malloc_trim(0);
    long trimmed = rss_kib();
    int ok = r == 1 && (freed - trimmed) * 2 >= full - start;
    printf("trim: %s (RSS KiB: start %ld, 64 MiB live %ld, all freed %ld, after malloc_trim %ld; returned %d)\n",
           ok ? "ok" : "FAILED", start, full, freed, trimmed, r);
    return !ok;
}
