/*
 * tests/c/fork.c: fork while other threads allocate and free as fast as they
 * can. The allocator's fork handlers must leave no lock held in the child;
 * the child allocates, forks a grandchild that allocates, then execs
 * /bin/sh, which allocates too. A child that hangs on a lock never exits,
 * so each wait has a deadline. Exits 1 if any child failed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;

static void *hammer(void *arg) {
    unsigned s = (unsigned)(long)arg;
    void *keep[64] = {0};
    while (!atomic_load(&stop)) {
        int i = rand_r(&s) % 64;
        free(keep[i]);
        size_t n = rand_r(&s) % 8 == 0 ? 40000 + rand_r(&s) % 100000 : rand_r(&s) % 2000;
        keep[i] = malloc(n);
        memset(keep[i], 1, n < 64 ? n : 64);
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

/* What a child does: allocate, fork again, exec. Exit status 0 = fine. */
static int child(void) {
    for (int i = 0; i < 10000; i++) {
        void *p = malloc(i % 3000 + 1);
        if (!p) return 2;
        free(p);
    }
    void *big = malloc(1 << 20);
    free(big);
    pid_t g = fork();
    if (g == 0) {
        void *p = calloc(100, 100);
        _exit(p ? 0 : 3);
    }
    int st;
    if (g < 0 || waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 4;
    execl("/bin/sh", "sh", "-c", "x=$(echo allocating in sh); test -n \"$x\"", (char *)NULL);
    return 5;
}

/* Waits for pid up to 20 s; kills it on timeout. */
static int wait_ok(pid_t pid) {
    for (int i = 0; i < 2000; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) && WEXITSTATUS(st) == 0;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 0;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 200, threads = 4, passed = 0, failed = 0;
    pthread_t t[4];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) _exit(child());
        if (pid > 0 && wait_ok(pid)) passed++; else failed++;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("fork: %d of %d forks ok (4 allocating threads; each child allocates, forks, execs)\n", passed,
           passed + failed);
    return failed != 0;
}
