/* Requests the machine cannot back, and a heap filled to the address-space
 * limit. tests/preload.sh runs each with and without the library and
 * compares: glibc is the oracle.
 *
 *   limits huge       one line per request: what it returned and errno.
 *                     The output must be identical to glibc's.
 *   limits fill SIZE  allocates SIZE-byte blocks (each written) until malloc
 *                     returns NULL, then frees them all and does it again;
 *                     prints "reached N MiB, errno E; again M MiB". Run under
 *                     `ulimit -v`: the preloaded N must come near glibc's.
 *   limits grown KIND re-runs itself under a 1 GB address-space limit (so
 *                     the heap grows by reservations of 1/16 of it), spreads
 *                     160 MiB of blocks over several reservations, then frees
 *                     one bad pointer in the newest: KIND is interior,
 *                     interior-medium, double or foreign (a mapping placed
 *                     among the reservations). Preloaded, each must be
 *                     reported and abort, as in the first reservation.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static void show(const char *what, void *p) {
    printf("%-40s %s errno=%s\n", what, p ? "non-NULL" : "NULL", errno == ENOMEM ? "ENOMEM" : errno == EINVAL ? "EINVAL" : errno ? "other" : "0");
}

#define TRY(what, expr)                                                                                                \
    do {                                                                                                               \
        errno = 0;                                                                                                     \
        void *p_ = (expr);                                                                                             \
        show(what, p_);                                                                                                \
        free(p_);                                                                                                      \
    } while (0)

static void huge(void) {
    const size_t G = (size_t)1 << 30;
    const size_t sizes[] = {2 * G, 4 * G, 30 * G, 64 * G, (size_t)1 << 40, (size_t)1 << 46, SIZE_MAX / 2, SIZE_MAX - 4096};
    char what[64];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        snprintf(what, sizeof what, "malloc(%#zx)", n);
        TRY(what, malloc(n));
        snprintf(what, sizeof what, "calloc(1, %#zx)", n);
        TRY(what, calloc(1, n));
        snprintf(what, sizeof what, "calloc(%#zx, 16)", n);
        TRY(what, calloc(n, 16));
        snprintf(what, sizeof what, "memalign(1 << 20, %#zx)", n);
        TRY(what, memalign((size_t)1 << 20, n));
        snprintf(what, sizeof what, "memalign(%#zx, 100)", n);
        TRY(what, memalign(n, 100));
    }
    TRY("memalign(1 << 40, 4096)", memalign((size_t)1 << 40, 4096));
    TRY("memalign(1 << 62, 1 << 62)", memalign((size_t)1 << 62, (size_t)1 << 62));
    TRY("memalign((1 << 63) + 1, 16)", memalign(((size_t)1 << 63) + 1, 16));
    TRY("aligned_alloc(1 << 40, 1 << 40)", aligned_alloc((size_t)1 << 40, (size_t)1 << 40));
    {
        void *p = NULL;
        errno = 0;
        int r = posix_memalign(&p, (size_t)1 << 40, 4096);
        printf("%-40s %s\n", "posix_memalign(1 << 40, 4096)", r == ENOMEM ? "ENOMEM" : r ? "error" : "0");
        free(p);
    }
    /* realloc that cannot grow keeps the block, from each kind of block. */
    const size_t from[] = {100, 200000, 4 << 20};
    const size_t to[] = {30 * G, (size_t)1 << 46};
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 2; j++) {
            unsigned char *p = malloc(from[i]);
            memset(p, 0x5a, from[i]);
            errno = 0;
            void *q = realloc(p, to[j]);
            snprintf(what, sizeof what, "realloc(%zu-byte block, %#zx)", from[i], to[j]);
            show(what, q);
            if (q) {
                free(q);
                continue;
            }
            int intact = 1;
            for (size_t k = 0; k < from[i]; k++)
                intact &= p[k] == 0x5a;
            printf("%-40s %s\n", "  the block after the failed realloc", intact ? "intact" : "CHANGED");
            free(p);
        }
    }
}

/* Blocks are chained through their first word, so the chain costs nothing. */
static size_t fill(size_t size, void **chain) {
    size_t n = 0;
    for (;;) {
        void **p = malloc(size);
        if (!p)
            return n;
        ((char *)p)[size - 1] = 1;
        *p = *chain;
        *chain = p;
        n++;
    }
}

static void drain(void *chain) {
    while (chain) {
        void *next = *(void **)chain;
        free(chain);
        chain = next;
    }
}

static int grown(char **argv) {
    const char *kind = argv[2];
    if (!getenv("LIMITS_GROWN")) {
        /* The allocator reads the limit when it starts: set it, run again. */
        struct rlimit as = {1000000000, 1000000000};
        if (setrlimit(RLIMIT_AS, &as) || setenv("LIMITS_GROWN", "1", 1))
            return 3;
        execv("/proc/self/exe", argv);
        return 3;
    }
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    char *last = NULL, *medium;
    for (size_t bytes = 0; bytes < (size_t)160 << 20; bytes += 4000) {
        last = malloc(4000);
        if (!last)
            return 4;
        last[0] = 1;
        lo = (uintptr_t)last < lo ? (uintptr_t)last : lo;
        hi = (uintptr_t)last > hi ? (uintptr_t)last : hi;
    }
    medium = malloc(200000);
    if (!medium)
        return 4;
    printf("blocks spread over %zu MiB\n", (size_t)(hi - lo) >> 20);
    fflush(stdout);
    /* Each reservation is at most 1/16 of the limit (60 MiB): a spread of
     * 128 MiB crosses at least three. */
    if (hi - lo < (size_t)128 << 20)
        return 5;
    if (!strcmp(kind, "interior"))
        free(last + 16);
    else if (!strcmp(kind, "interior-medium"))
        free(medium + 65536);
    else if (!strcmp(kind, "double")) {
        free(last);
        free(last);
    } else if (!strcmp(kind, "foreign")) {
        char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        free(m + 4096);
    } else
        return 2;
    puts("survived");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "grown"))
        return grown(argv);
    if (argc == 2 && !strcmp(argv[1], "huge")) {
        huge();
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "fill")) {
        size_t size = strtoul(argv[2], NULL, 10);
        if (size < sizeof(void *))
            return 2;
        void *chain = NULL;
        size_t first = fill(size, &chain);
        int err = errno;
        drain(chain);
        chain = NULL;
        size_t again = fill(size, &chain);
        drain(chain);
        printf("reached %zu MiB, errno %s; again %zu MiB\n", first * size >> 20, err == ENOMEM ? "ENOMEM" : "other",
               again * size >> 20);
        return 0;
    }
    fprintf(stderr, "usage: limits huge | limits fill SIZE | limits grown KIND\n");
    return 2;
}
