/* A host that unloads a plugin built on rseqalloc (tests/plugin/plugin.rs):
 *   host PLUGIN.so [ROUNDS]
 * dlopens the plugin, calls plugin_work once, dlcloses it, then keeps
 * being preempted for 0.2 s (a 1 ms timer signal and sched_yield), so the
 * kernel reads this thread's rseq_cs again. Were the plugin unmapped while
 * rseq_cs still named one of its descriptors, that read would fault and
 * the kernel would kill the host with SIGSEGV. ROUNDS (default 1) repeats
 * the whole cycle in this process. Exits 0 and prints whether the plugin
 * is still mapped (rseqalloc pins it) when it survives.
 */
#include <dlfcn.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static volatile sig_atomic_t ticks;
static void on_tick(int sig) { (void)sig; ticks++; }

static int mapped(const char *path) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (maps && fgets(line, sizeof line, maps)) found |= strstr(line, base) != NULL;
    if (maps) fclose(maps);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: host PLUGIN.so [ROUNDS]\n"); return 2; }
    int rounds = argc > 2 ? atoi(argv[2]) : 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every_ms = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &every_ms, NULL);
    for (int r = 0; r < rounds; r++) {
        void *plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!plugin) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
        size_t (*work)(size_t) = (size_t (*)(size_t))dlsym(plugin, "plugin_work");
        if (!work) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 2; }
        size_t sum = work(1000);
        if (sum != 999 * 1000 / 2) { fprintf(stderr, "plugin_work: %zu\n", sum); return 1; }
        if (dlclose(plugin) != 0) { fprintf(stderr, "dlclose: %s\n", dlerror()); return 2; }
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        do {
            sched_yield();
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < 200000000L);
    }
    printf("survived %d round(s), %d timer signals; plugin %s\n", rounds, (int)ticks,
           mapped(argv[1]) ? "still mapped (pinned)" : "unmapped");
    return 0;
}
