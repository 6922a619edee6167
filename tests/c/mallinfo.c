/* mallinfo2, mallinfo and malloc_info mean what glibc's mean: run once
 * under glibc and once preloaded, every check must hold in both.
 *   mallinfo [XML-FILE]: checks, then writes malloc_info's XML to XML-FILE
 *   after allocating small and mmapped blocks (tests/preload.sh compares
 *   its shape with glibc's).
 * glibc's meanings (malloc/malloc.c): arena = uordblks + fordblks is the
 * memory held outside mmapped blocks; mmapped blocks count only in
 * hblks/hblkhd, so in-use memory is uordblks + hblkhd; fsmblks and keepcost
 * are parts of fordblks; usmblks is 0. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

#define MIB ((size_t)1 << 20)
#define BIG 8           /* mmapped blocks */
#define BIG_SIZE (4 * MIB)
#define SMALL 100000    /* small blocks of 100 bytes: 10 MB */

static void consistent(const char *when, struct mallinfo2 m) {
    CHECK(m.arena == m.uordblks + m.fordblks, "%s: arena %zu != uordblks %zu + fordblks %zu", when, m.arena,
          m.uordblks, m.fordblks);
    CHECK(m.fsmblks <= m.fordblks, "%s: fsmblks %zu > fordblks %zu", when, m.fsmblks, m.fordblks);
    CHECK(m.keepcost <= m.fordblks, "%s: keepcost %zu > fordblks %zu", when, m.keepcost, m.fordblks);
    CHECK(m.usmblks == 0, "%s: usmblks %zu", when, m.usmblks);
}

int main(int argc, char **argv) {
    /* The threshold stays where it is: glibc raises it when an mmapped block is freed. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    struct mallinfo2 a = mallinfo2();
    consistent("start", a);

    void *big[BIG];
    for (int i = 0; i < BIG; i++) {
        big[i] = malloc(BIG_SIZE);
        memset(big[i], 1, BIG_SIZE);
    }
    struct mallinfo2 b = mallinfo2();
    consistent("after mmapped blocks", b);
    CHECK(b.hblks == a.hblks + BIG, "hblks %zu -> %zu, want +%d", a.hblks, b.hblks, BIG);
    CHECK(b.hblkhd >= a.hblkhd + BIG * BIG_SIZE && b.hblkhd <= a.hblkhd + BIG * (BIG_SIZE + MIB),
          "hblkhd %zu -> %zu", a.hblkhd, b.hblkhd);
    CHECK(b.uordblks < a.uordblks + MIB, "uordblks counts mmapped blocks: %zu -> %zu", a.uordblks, b.uordblks);

    static void *small[SMALL];
    for (int i = 0; i < SMALL; i++) {
        small[i] = malloc(100);
        memset(small[i], 2, 100);
    }
    struct mallinfo2 c = mallinfo2();
    consistent("after small blocks", c);
    CHECK(c.uordblks >= b.uordblks + SMALL * 100 && c.uordblks <= b.uordblks + SMALL * 160,
          "uordblks %zu -> %zu for %d blocks of 100 bytes", b.uordblks, c.uordblks, SMALL);
    CHECK(c.hblks == b.hblks && c.hblkhd == b.hblkhd, "small blocks changed hblks/hblkhd");
    CHECK(c.arena >= c.uordblks, "arena %zu < uordblks %zu", c.arena, c.uordblks);
    struct mallinfo old = mallinfo();
    CHECK((size_t)old.uordblks == c.uordblks && (size_t)old.hblks == c.hblks && (size_t)old.arena == c.arena,
          "mallinfo differs from mallinfo2");

    if (argc > 1) {
        FILE *f = fopen(argv[1], "w");
        CHECK(f && malloc_info(0, f) == 0, "malloc_info");
        if (f)
            fclose(f);
    }
    CHECK(malloc_info(1, stdout) == EINVAL, "malloc_info(1) is EINVAL");

    for (int i = 0; i < SMALL; i++)
        free(small[i]);
    for (int i = 0; i < BIG; i++)
        free(big[i]);
    struct mallinfo2 d = mallinfo2();
    consistent("after freeing", d);
    CHECK(d.hblks == a.hblks, "hblks %zu after freeing, %zu at start", d.hblks, a.hblks);
    CHECK(d.uordblks < a.uordblks + MIB, "uordblks %zu after freeing, %zu at start", d.uordblks, a.uordblks);
    printf("mallinfo: %s\n", failures ? "FAILED" : "every check holds");
    return failures != 0;
}
