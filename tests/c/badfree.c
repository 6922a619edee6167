/*
 * tests/c/badfree.c: hands the allocator one kind of bad pointer, named by
 * argv[1]. Under librseqalloc.so each must produce one diagnostic line and
 * SIGABRT (or, with RSEQALLOC_BAD_FREE=leak, the line and a normal exit);
 * tests/preload.sh checks both from the outside. "leak-all" makes every
 * mistake in turn and exits 0 if the process survives. Blocks of three kinds:
 * small (100 B, a size class), medium (200 KB, a run of arena granules) and
 * large (8 MiB, its own mapping).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static char not_heap[256] __attribute__((aligned(64)));

static int run(const char *what) {
    char *p = malloc(100), *m = malloc(200000), *q = malloc(8 << 20);
    if (!strcmp(what, "foreign")) free(not_heap + 64);
    else if (!strcmp(what, "foreign-mapping")) {
        char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        free(m + 4096); /* page aligned, like a large block, but not ours */
    } else if (!strcmp(what, "interior")) free(p + 16);
    else if (!strcmp(what, "interior-medium")) free(m + 4096);
    else if (!strcmp(what, "interior-medium-granule")) free(m + 65536); /* a granule start inside the run */
    else if (!strcmp(what, "interior-large")) free(q + 4096);
    else if (!strcmp(what, "realloc-interior")) p = realloc(p + 32, 200);
    else if (!strcmp(what, "realloc-interior-medium")) m = realloc(m + 65536, 300000);
    else if (!strcmp(what, "double-medium")) { free(m); free(m); }
    else if (!strcmp(what, "double")) { free(p); free(p); }
    else if (!strcmp(what, "double-large")) { free(q); free(q); }
    else if (!strcmp(what, "double-after-write")) { free(p); memset(p, 0, 16); free(p); }
    else return 2;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (strcmp(argv[1], "leak-all") == 0) {
        static const char *all[] = {"foreign", "foreign-mapping", "interior", "interior-medium",
                                    "interior-medium-granule", "interior-large", "realloc-interior",
                                    "realloc-interior-medium", "double", "double-medium", "double-large"};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) run(all[i]);
        puts("survived");
        return 0;
    }
    int r = run(argv[1]);
    puts("survived");
    return r;
}
