/* A single-threaded program gets no thread from rseqalloc, and its freed
 * memory still goes back to the OS with no call. Run preloaded by
 * tests/preload.sh with a short RSEQALLOC_DECAY_MS.
 *
 * It frees 64 blocks of 200 KB (12.5 MiB, every page written), then:
 * - /proc/self/task has exactly one entry, at once and 0.3 s later;
 * - unshare(CLONE_NEWUSER) does not fail with EINVAL (the kernel's answer
 *   for a multi-threaded caller; EPERM where user namespaces are off is
 *   reported and tolerated);
 * - with `rss` as argument: while the program keeps doing light work (a
 *   100 KB block allocated, written and freed every 5 ms), RSS falls back
 *   to within 4 MiB of its level before the frees within 3 s, with no
 *   malloc_trim call.
 * Exits 0 when all of it holds, 1 otherwise (one line per failure).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BLOCKS = 64, BLOCK = 200 * 1000, MIB = 1 << 20 };

static int tasks(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static long rss(void) {
    long pages = -1, resident = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    if (f) fclose(f);
    return resident * 4096;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    int check_rss = argc > 1 && strcmp(argv[1], "rss") == 0;
    int failures = 0;
    void *warm = malloc(100 * 1000); /* the allocator is up and warm */
    memset(warm, 1, 100 * 1000);
    free(warm);
    long before = rss();
    void *blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        if (!blocks[i]) { perror("malloc"); return 2; }
        memset(blocks[i], i + 1, BLOCK);
    }
    long peak = rss();
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);

    int n = tasks();
    if (n != 1) { printf("FAIL: %d threads in /proc/self/task right after the frees\n", n); failures++; }
    pause_ms(300);
    n = tasks();
    if (n != 1) { printf("FAIL: %d threads in /proc/self/task 0.3 s after the frees\n", n); failures++; }
    if (unshare(CLONE_NEWUSER) != 0) {
        if (errno == EINVAL) { printf("FAIL: unshare(CLONE_NEWUSER): EINVAL (more than one thread)\n"); failures++; }
        else printf("unshare(CLONE_NEWUSER) not allowed here (%s): not checked\n", strerror(errno));
    }

    if (check_rss) {
        double start = now(), took = -1;
        while (now() - start < 3.0) {
            char *p = malloc(100 * 1000);
            memset(p, 7, 100 * 1000);
            free(p);
            if (rss() <= before + 4 * MIB) { took = now() - start; break; }
            pause_ms(5);
        }
        printf("RSS %.1f MiB before, %.1f MiB at the peak, %.1f MiB now; back within 4 MiB after %.2f s\n",
               before / (double)MIB, peak / (double)MIB, rss() / (double)MIB, took);
        if (took < 0) { printf("FAIL: RSS did not come back within 3 s\n"); failures++; }
        n = tasks();
        if (n != 1) { printf("FAIL: %d threads in /proc/self/task at the end\n", n); failures++; }
    }
    return failures != 0;
}
