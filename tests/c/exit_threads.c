/* A process must be able to exit, whatever rseqalloc's background thread
 * is doing. Run from tests/preload.sh, which times it from the outside.
 *
 *   exit_threads before   frees 64 blocks of 200 KB, starts a worker that
 *                         sleeps 0.3 s and returns, ends main with
 *                         pthread_exit(NULL): the process must exit 0 as
 *                         soon as the worker returns (glibc: 0.3 s);
 *   exit_threads during   the same, with the blocks freed while the worker
 *                         runs (so a background thread has a reason to
 *                         start) and 4 more workers started and joined
 *                         first;
 *   exit_threads pending  as `during`, but the worker blocks SIGTERM, sends
 *                         it to the process and returns: the signal has no
 *                         thread to take it, and glibc's last-thread exit
 *                         drops it (status 0); rseqalloc's thread, which
 *                         blocks every signal, must do the same;
 *   exit_threads count    prints the number of threads in /proc/self/task
 *                         after the frees of `during` and a 0.3 s wait
 *                         (rseqalloc's thread may show here: it must leave
 *                         at the exit anyway).
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BLOCKS = 64, BLOCK = 200 * 1000 };

static void free_blocks(void) {
    void *blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        if (!blocks[i]) { perror("malloc"); exit(2); }
        memset(blocks[i], i, BLOCK);
    }
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
}

static void *sleeper(void *arg) {
    (void)arg;
    struct timespec t = {0, 300 * 1000 * 1000};
    nanosleep(&t, NULL);
    return NULL;
}

static void *sleep_then_signal(void *arg) {
    (void)arg;
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    sleeper(NULL);
    kill(getpid(), SIGTERM);
    return NULL;
}

static void *short_worker(void *arg) {
    (void)arg;
    free(malloc(100));
    return NULL;
}

static int tasks(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "before";
    pthread_t t;
    if (strcmp(mode, "before") == 0) {
        free_blocks();
        pthread_create(&t, NULL, sleeper, NULL);
        pthread_exit(NULL);
    }
    /* The others: the program is threaded when it frees. */
    for (int i = 0; i < 4; i++) {
        pthread_create(&t, NULL, short_worker, NULL);
        pthread_join(t, NULL);
    }
    pthread_create(&t, NULL, strcmp(mode, "pending") == 0 ? sleep_then_signal : sleeper, NULL);
    free_blocks();
    if (strcmp(mode, "count") == 0) {
        pthread_join(t, NULL);
        printf("%d\n", tasks());
        return 0;
    }
    pthread_exit(NULL);
}
