/* Processes that end in unusual ways, and single-threaded ones, under
 * rseqalloc's background thread. Run preloaded by tests/preload.sh, which
 * times the first three from the outside.
 *
 *   exit before   frees 64 blocks of 200 KB, starts a worker that sleeps
 *                 0.3 s and returns, ends main with pthread_exit(NULL): the
 *                 process must exit 0 when the worker returns (glibc: 0.3 s);
 *   exit during   the same with the blocks freed while the worker runs, after
 *                 4 short workers: main first waits until rseqalloc's thread
 *                 ("rseqalloc-bg") runs (status 3 if it never does: the
 *                 case would prove nothing), and it must leave at the end;
 *   exit pending  as `during`, but the worker blocks SIGTERM, sends it to the
 *                 process and returns: no thread of the program can take it,
 *                 and glibc's last-thread exit drops it (status 0); ours,
 *                 which blocks every signal, must do the same;
 *   exit fork     a threaded parent whose rseqalloc thread runs forks; the
 *                 child, single-threaded, frees the blocks: after 0.3 s it
 *                 still has one thread (status 1 otherwise);
 *   exit idle     as `during`, but main stays: once everything freed went
 *                 back, our thread must leave (an idle program has none),
 *                 within 3 s at RSEQALLOC_DECAY_MS=100 (status 1 otherwise);
 *   exit single [rss]
 *                 single-threaded: after the frees /proc/self/task has one
 *                 entry (at once and 0.3 s later), unshare(CLONE_NEWUSER)
 *                 gives no EINVAL (the kernel's answer to a multi-threaded
 *                 caller; EPERM where user namespaces are off is reported
 *                 and tolerated); with `rss`, while the program keeps doing
 *                 light work (a 100 KB block allocated, written and freed
 *                 every 5 ms), RSS falls back within 4 MiB of its level
 *                 before the frees within 3 s, with no malloc_trim call.
 *                 Exits 1 on any failure (one line each).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

enum { BLOCKS = 64, BLOCK = 200 * 1000, MIB = 1 << 20 };

static void *volatile sink; /* keeps the compiler from eliding malloc/free pairs */

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Threads in /proc/self/task, or only those named `name`. */
static int threads(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = name ? fopen(path, "r") : NULL;
        if (f && fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\n")] = 0;
        if (f) fclose(f);
        n += !name || strcmp(comm, name) == 0;
    }
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

static void free_blocks(void) {
    void *blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        if (!blocks[i]) { perror("malloc"); exit(2); }
        memset(blocks[i], i + 1, BLOCK);
    }
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
}

/* Sleeps 0.3 s and returns; with a barrier, only once main reached it. */
static void *sleeper(void *barrier) {
    if (barrier) pthread_barrier_wait(barrier);
    pause_ms(300);
    return NULL;
}

/* Whether main has ended (its task is a zombie while other threads live). */
static int main_ended(void) {
    char path[64], stat[512] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)getpid());
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    char *paren = strrchr(stat, ')');
    return !paren || paren[1] == 0 || paren[2] == 'Z' || paren[2] == 'X';
}

/* Sends SIGTERM to the process once main has ended: before, main could
 * take it (a loaded valgrind run can keep main from its pthread_exit for
 * longer than the 0.3 s sleep), which would prove nothing about ours. */
static void *sleep_then_signal(void *arg) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    sleeper(arg);
    for (int i = 0; i < 10000 && !main_ended(); i++) pause_ms(1);
    kill(getpid(), SIGTERM);
    return NULL;
}

static void *short_worker(void *arg) {
    (void)arg;
    sink = malloc(100);
    free(sink);
    return NULL;
}

static int single(int check_rss) {
    int failures = 0;
    sink = malloc(100 * 1000); /* the allocator is up and warm */
    memset(sink, 1, 100 * 1000);
    free(sink);
    long before = rss();
    free_blocks();
    int n = threads(NULL);
    if (n != 1) { printf("FAIL: %d threads in /proc/self/task right after the frees\n", n); failures++; }
    pause_ms(300);
    n = threads(NULL);
    if (n != 1) { printf("FAIL: %d threads in /proc/self/task 0.3 s after the frees\n", n); failures++; }
    if (unshare(CLONE_NEWUSER) != 0) {
        if (errno == EINVAL) { printf("FAIL: unshare(CLONE_NEWUSER): EINVAL (more than one thread)\n"); failures++; }
        else printf("unshare(CLONE_NEWUSER) not allowed here (%s): not checked\n", strerror(errno));
    }
    if (check_rss) {
        double start = now(), took = -1;
        while (now() - start < 3.0) {
            sink = malloc(100 * 1000);
            memset(sink, 7, 100 * 1000);
            free(sink);
            if (rss() <= before + 4 * MIB) { took = now() - start; break; }
            pause_ms(5);
        }
        printf("RSS %.1f MiB before the frees, %.1f MiB now: back within 4 MiB after %.2f s of light work\n",
               before / (double)MIB, rss() / (double)MIB, took);
        if (took < 0) { printf("FAIL: RSS did not come back within 3 s\n"); failures++; }
        n = threads(NULL);
        if (n != 1) { printf("FAIL: %d threads in /proc/self/task at the end\n", n); failures++; }
    }
    return failures != 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "before";
    pthread_t t;
    if (strcmp(mode, "single") == 0) return single(argc > 2 && strcmp(argv[2], "rss") == 0);
    if (strcmp(mode, "before") == 0) {
        free_blocks();
        pthread_create(&t, NULL, sleeper, NULL);
        pthread_exit(NULL);
    }
    for (int i = 0; i < 4; i++) {
        pthread_create(&t, NULL, short_worker, NULL);
        pthread_join(t, NULL);
    }
    /* The worker's 0.3 s start once main has seen our thread (which can
     * take longer than that under valgrind). */
    static pthread_barrier_t seen;
    pthread_barrier_init(&seen, NULL, 2);
    pthread_create(&t, NULL, strcmp(mode, "pending") == 0 ? sleep_then_signal : sleeper, &seen);
    free_blocks();
    for (int i = 0; threads("rseqalloc-bg") != 1; i++) {
        if (i == 2000) { printf("the background thread never started\n"); return 3; }
        pause_ms(1);
    }
    pthread_barrier_wait(&seen);
    if (strcmp(mode, "idle") == 0) {
        pthread_join(t, NULL);
        double start = now(); /* checks seldom: each allocates, which is activity */
        while (pause_ms(500), threads("rseqalloc-bg") != 0 && now() - start < 3.0) {}
        int left = threads("rseqalloc-bg") == 0;
        printf("our thread %s after %.2f s idle\n", left ? "left" : "still runs", now() - start);
        return !left;
    }
    if (strcmp(mode, "fork") == 0) {
        pid_t child = fork();
        if (child == 0) {
            free_blocks();
            pause_ms(300);
            int n = threads(NULL);
            if (n != 1) printf("FAIL: %d threads in the fork child 0.3 s after its frees\n", n);
            fflush(stdout);
            _exit(n != 1);
        }
        int status = 1;
        waitpid(child, &status, 0);
        pthread_join(t, NULL);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    pthread_exit(NULL);
}
