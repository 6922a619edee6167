/*
 * tests/c/conformance.c: every exported allocation function, with its edge
 * cases and errno, printed one line per check. tests/preload.sh runs it once
 * against glibc and once with librseqalloc.so preloaded; the two outputs must
 * be identical, so only deterministic facts are printed (return codes, errno,
 * NULL-ness, alignment, usable size >= request as a boolean, contents).
 *
 * Functions glibc 2.36 does not export for linking (free_sized,
 * free_aligned_sized, __posix_memalign; cfree is only a compat symbol) are
 * weak references: under glibc they are NULL and free() or posix_memalign()
 * stands in, with the same printed line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void cfree(void *) __attribute__((weak));
extern void free_sized(void *, size_t) __attribute__((weak));
extern void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
extern int __posix_memalign(void **, size_t, size_t) __attribute__((weak)); /* not in glibc */

static int checks, failures;

/* A check whose value glibc documents: printed, and counted against the
 * expectation so that a lone run also says what went wrong. */
static void expect(const char *what, long got, long want) {
    checks++;
    if (got != want) failures++;
    printf("%s: %ld%s\n", what, got, got == want ? "" : "   <-- unexpected");
}

static const char *errname(int e) {
    switch (e) {
    case 0: return "0";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case 77: return "unchanged";
    default: return "other";
    }
}

static void expect_errno(const char *what, const char *want) {
    const char *got = errname(errno);
    checks++;
    if (strcmp(got, want) != 0) failures++;
    printf("%s errno: %s%s\n", what, got, strcmp(got, want) == 0 ? "" : "   <-- unexpected");
}

static int aligned(void *p, size_t a) { return p != NULL && (uintptr_t)p % a == 0; }

/* Writes the whole usable size, then checks it reads back. */
static int fill_usable(void *p, size_t n, unsigned char v) {
    size_t u = malloc_usable_size(p);
    if (u < n) return 0;
    memset(p, v, u);
    for (size_t i = 0; i < u; i++)
        if (((unsigned char *)p)[i] != v) return 0;
    return 1;
}

static int all(const void *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != v) return 0;
    return 1;
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    const size_t huge = (size_t)PTRDIFF_MAX + 1;
    char line[128];
    void *p, *q;

    /* malloc */
    enum { ZEROS = 1000 };
    static void *zeros[ZEROS];
    int ok = 1;
    for (int i = 0; i < ZEROS; i++) ok &= (zeros[i] = malloc(0)) != NULL;
    qsort(zeros, ZEROS, sizeof *zeros, cmp_ptr);
    for (int i = 1; i < ZEROS; i++) ok &= zeros[i] != zeros[i - 1];
    for (int i = 0; i < ZEROS; i++) free(zeros[i]);
    expect("malloc(0) x1000 non-null and unique", ok, 1);
    static const size_t sizes[] = {1, 7, 8, 15, 16, 17, 24, 100, 1000, 4096, 5000, 32767, 32768, 32769,
                                   65536, 100000, 1 << 20, 5 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        p = malloc(n);
        snprintf(line, sizeof line, "malloc(%zu) 16-aligned, usable >= n, usable fully writable", n);
        expect(line, aligned(p, 16) && fill_usable(p, n, 0x5a), 1);
        free(p);
    }
    errno = 0;
    expect("malloc(SIZE_MAX) is NULL", malloc(SIZE_MAX) == NULL, 1);
    expect_errno("malloc(SIZE_MAX)", "ENOMEM");
    errno = 0;
    expect("malloc(PTRDIFF_MAX + 1) is NULL", malloc(huge) == NULL, 1);
    expect_errno("malloc(PTRDIFF_MAX + 1)", "ENOMEM");
    errno = 0;
    expect("malloc(PTRDIFF_MAX) is NULL", malloc(PTRDIFF_MAX) == NULL, 1);
    expect_errno("malloc(PTRDIFF_MAX)", "ENOMEM");

    /* free never changes errno */
    errno = 77;
    free(NULL);
    expect_errno("free(NULL)", "unchanged");
    p = malloc(100);
    q = malloc(1 << 20);
    errno = 77;
    free(p);
    free(q);
    expect_errno("free(small), free(large)", "unchanged");
    expect("malloc_usable_size(NULL)", (long)malloc_usable_size(NULL), 0);

    /* calloc */
    p = malloc(1000);
    memset(p, 0xaa, 1000);
    free(p);
    p = calloc(10, 100);
    expect("calloc(10, 100) zeroed after dirty reuse", p != NULL && all(p, 1000, 0), 1);
    free(p);
    p = calloc(1, 3 << 20);
    expect("calloc(1, 3 MiB) zeroed", p != NULL && all(p, 3 << 20, 0), 1);
    memset(p, 0xaa, 3 << 20);
    free(p);
    p = calloc(3, 1 << 20); /* may reuse the dirty mapping just freed */
    expect("calloc(3, 1 MiB) zeroed after dirty reuse", p != NULL && all(p, 3 << 20, 0), 1);
    free(p);
    {   /* medium sizes: memset below 256 KiB of dirty memory, dropped pages above */
        static const size_t sizes[] = {40000, 100000, 300000, 1 << 20};
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            p = malloc(sizes[i]);
            memset(p, 0xaa, sizes[i]);
            free(p);
            p = calloc(1, sizes[i]);
            expect("calloc of a medium size zeroed after dirty reuse", p != NULL && all(p, sizes[i], 0), 1);
            free(p);
        }
    }
    p = calloc(0, 0);
    expect("calloc(0, 0) non-null", p != NULL, 1);
    free(p);
    errno = 0;
    expect("calloc(SIZE_MAX / 2, 3) overflow is NULL", calloc(SIZE_MAX / 2, 3) == NULL, 1);
    expect_errno("calloc overflow", "ENOMEM");
    errno = 0;
    expect("calloc(1, PTRDIFF_MAX + 1) is NULL", calloc(1, huge) == NULL, 1);
    expect_errno("calloc(1, PTRDIFF_MAX + 1)", "ENOMEM");

    /* realloc */
    p = realloc(NULL, 10);
    expect("realloc(NULL, 10) non-null", p != NULL, 1);
    errno = 77;
    expect("realloc(p, 0) is NULL (and frees p)", realloc(p, 0) == NULL, 1);
    expect_errno("realloc(p, 0)", "unchanged");
    static const size_t steps[] = {10, 20, 100, 1000, 30000, 40000, 200000, 5 << 20, 100000, 20000, 50, 1};
    p = NULL;
    size_t have = 0;
    ok = 1;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        size_t n = steps[i], keep = have < n ? have : n;
        q = realloc(p, n);
        ok &= q != NULL && all(q, keep, 0x3c) && aligned(q, 16) && malloc_usable_size(q) >= n;
        memset(q, 0x3c, n);
        p = q;
        have = n;
    }
    expect("realloc through 10 B .. 5 MiB .. 1 B keeps contents", ok, 1);
    memset(p, 0x3c, 1);
    errno = 0;
    expect("realloc(p, SIZE_MAX) is NULL", realloc(p, SIZE_MAX) == NULL, 1);
    expect_errno("realloc(p, SIZE_MAX)", "ENOMEM");
    errno = 0;
    expect("realloc(p, PTRDIFF_MAX + 1) is NULL", realloc(p, huge) == NULL, 1);
    expect_errno("realloc(p, PTRDIFF_MAX + 1)", "ENOMEM");
    expect("failed realloc leaves the block intact", all(p, 1, 0x3c) && malloc_usable_size(p) >= 1, 1);
    free(p);
    p = malloc(1 << 20);
    memset(p, 0x11, 1 << 20);
    errno = 0;
    expect("realloc(large, SIZE_MAX) is NULL", realloc(p, SIZE_MAX) == NULL, 1);
    expect_errno("realloc(large, SIZE_MAX)", "ENOMEM");
    expect("failed realloc leaves the large block intact", all(p, 1 << 20, 0x11), 1);
    free(p);

    /* reallocarray */
    p = reallocarray(NULL, 10, 10);
    expect("reallocarray(NULL, 10, 10) non-null", p != NULL, 1);
    memset(p, 0x22, 100);
    errno = 0;
    expect("reallocarray overflow is NULL", reallocarray(p, SIZE_MAX / 2, 3) == NULL, 1);
    expect_errno("reallocarray overflow", "ENOMEM");
    expect("reallocarray overflow leaves the block intact", all(p, 100, 0x22), 1);
    q = reallocarray(p, 100, 100);
    expect("reallocarray(p, 100, 100) keeps contents", q != NULL && all(q, 100, 0x22), 1);
    free(q);

    /* posix_memalign */
    static const size_t bad_aligns[] = {0, 1, 4, 12, 24, 48, 100, 4097};
    for (size_t i = 0; i < sizeof bad_aligns / sizeof *bad_aligns; i++) {
        void *sentinel = (void *)0x1234;
        p = sentinel;
        errno = 77;
        snprintf(line, sizeof line, "posix_memalign(align %zu)", bad_aligns[i]);
        expect(line, posix_memalign(&p, bad_aligns[i], 16) == EINVAL ? EINVAL : -1, EINVAL);
        expect_errno(line, "unchanged");
        expect("  *memptr untouched", p == sentinel, 1);
    }
    static const size_t good_aligns[] = {8, 16, 32, 64, 256, 4096, 8192, 65536, 1 << 20, 4 << 20};
    for (size_t i = 0; i < sizeof good_aligns / sizeof *good_aligns; i++) {
        for (size_t n = 0; n <= 70000; n += 35000) {
            p = NULL;
            snprintf(line, sizeof line, "posix_memalign(align %zu, size %zu) = 0, aligned, writable", good_aligns[i],
                     n);
            expect(line, posix_memalign(&p, good_aligns[i], n) == 0 && aligned(p, good_aligns[i]) &&
                             fill_usable(p, n, 0x77), 1);
            free(p);
        }
    }
    p = (void *)0x1234;
    expect("posix_memalign(64, SIZE_MAX) = ENOMEM", posix_memalign(&p, 64, SIZE_MAX) == ENOMEM, 1);
    expect("  *memptr untouched", p == (void *)0x1234, 1);

    /* aligned_alloc, memalign, valloc, pvalloc */
    p = aligned_alloc(64, 100);
    expect("aligned_alloc(64, 100) aligned", aligned(p, 64) && fill_usable(p, 100, 1), 1);
    free(p);
    p = aligned_alloc(4096, 10);
    expect("aligned_alloc(4096, 10) aligned", aligned(p, 4096) && fill_usable(p, 10, 1), 1);
    free(p);
    p = aligned_alloc(3, 10); /* glibc < 2.38: memalign rules */
    expect("aligned_alloc(3, 10) non-null", p != NULL, 1);
    free(p);
    p = memalign(8, 10);
    expect("memalign(8, 10) 16-aligned", aligned(p, 16), 1);
    free(p);
    p = memalign(24, 100);
    expect("memalign(24, 100) rounds up to 32", aligned(p, 32) && fill_usable(p, 100, 2), 1);
    free(p);
    p = memalign(3000, 100);
    expect("memalign(3000, 100) rounds up to 4096", aligned(p, 4096) && fill_usable(p, 100, 2), 1);
    free(p);
    p = memalign(1 << 16, 1 << 17);
    expect("memalign(64 KiB, 128 KiB) aligned", aligned(p, 1 << 16) && fill_usable(p, 1 << 17, 2), 1);
    free(p);
    errno = 0;
    expect("memalign(SIZE_MAX / 2 + 2, 1) is NULL", memalign(SIZE_MAX / 2 + 2, 1) == NULL, 1);
    expect_errno("memalign(SIZE_MAX / 2 + 2, 1)", "EINVAL");
    errno = 0;
    expect("memalign(4096, SIZE_MAX) is NULL", memalign(4096, SIZE_MAX) == NULL, 1);
    expect_errno("memalign(4096, SIZE_MAX)", "ENOMEM");
    long page = sysconf(_SC_PAGESIZE);
    p = valloc(1);
    expect("valloc(1) page aligned", aligned(p, page) && fill_usable(p, 1, 3), 1);
    free(p);
    p = valloc(5000);
    expect("valloc(5000) page aligned", aligned(p, page) && fill_usable(p, 5000, 3), 1);
    free(p);
    p = pvalloc(1);
    expect("pvalloc(1) page aligned, usable >= page", aligned(p, page) && fill_usable(p, page, 4), 1);
    free(p);
    p = pvalloc(5000);
    expect("pvalloc(5000) usable >= 2 pages", aligned(p, page) && fill_usable(p, 2 * page, 4), 1);
    free(p);
    errno = 0;
    expect("pvalloc(SIZE_MAX) is NULL", pvalloc(SIZE_MAX) == NULL, 1);
    expect_errno("pvalloc(SIZE_MAX)", "ENOMEM");

    /* cfree, free_sized, free_aligned_sized (C23) */
    p = malloc(10);
    errno = 77;
    if (cfree) cfree(p); else free(p);
    expect_errno("cfree", "unchanged");
    p = malloc(100);
    if (free_sized) free_sized(p, 100); else free(p);
    p = malloc(1 << 20);
    if (free_sized) free_sized(p, 1 << 20); else free(p);
    p = aligned_alloc(256, 1000);
    errno = 77;
    if (free_aligned_sized) free_aligned_sized(p, 256, 1000); else free(p);
    expect_errno("free_sized, free_aligned_sized", "unchanged");

    /* glibc's internal names */
    p = __libc_malloc(100);
    q = __libc_realloc(p, 200);
    expect("__libc_malloc, __libc_realloc", q != NULL && fill_usable(q, 200, 5), 1);
    __libc_free(q);
    p = __libc_calloc(10, 10);
    expect("__libc_calloc zeroed", p != NULL && all(p, 100, 0), 1);
    __libc_free(p);
    p = __libc_memalign(128, 10);
    expect("__libc_memalign aligned", aligned(p, 128), 1);
    __libc_free(p);
    p = __libc_valloc(10);
    q = __libc_pvalloc(10);
    expect("__libc_valloc, __libc_pvalloc page aligned", aligned(p, page) && aligned(q, page), 1);
    __libc_free(p);
    __libc_free(q);
    p = NULL;
    expect("__posix_memalign(512)", (__posix_memalign ? __posix_memalign : posix_memalign)(&p, 512, 10) == 0 &&
                                        aligned(p, 512), 1);
    __libc_free(p);

    /* malloc_trim, mallopt, mallinfo, mallinfo2, malloc_info, malloc_stats */
    p = malloc(1000);
    q = malloc(1 << 20);
    struct mallinfo2 mi2 = mallinfo2();
    expect("mallinfo2 counts the blocks in use", mi2.uordblks + mi2.hblkhd >= 1000 + (1 << 20), 1);
    struct mallinfo mi = mallinfo();
    expect("mallinfo counts the blocks in use", (size_t)mi.uordblks + (size_t)mi.hblkhd >= 1000 + (1 << 20), 1);
    free(p);
    free(q);
    int trimmed = malloc_trim(0);
    expect("malloc_trim(0) returns 0 or 1", trimmed == 0 || trimmed == 1, 1);
    expect("mallopt(M_ARENA_MAX, 2)", mallopt(M_ARENA_MAX, 2), 1);
    expect("mallopt(M_TRIM_THRESHOLD, 1 MiB)", mallopt(M_TRIM_THRESHOLD, 1 << 20), 1);
    FILE *null = fopen("/dev/null", "w");
    expect("malloc_info(0, f)", malloc_info(0, null), 0);
    expect("malloc_info(1, f)", malloc_info(1, null), EINVAL);
    fclose(null);
    int saved = dup(2), devnull = open("/dev/null", 1);
    dup2(devnull, 2); /* malloc_stats writes to stderr; the formats differ */
    malloc_stats();
    dup2(saved, 2);
    expect("malloc_stats returned", 1, 1);

    printf("conformance: %d checks, %d unexpected\n", checks, failures);
    return failures != 0;
}
