/* wl_spawn: run one workload process and report its own resource usage.
 *
 *   wl_spawn PROG ARGS...      (env WL_PRELOAD=path sets LD_PRELOAD for PROG only)
 *
 * Why a helper: ru_maxrss survives execve, so a process forked from the
 * (large) Python runner starts with the runner's RSS as its peak.  This tiny
 * helper forks PROG from a small address space, waits for it with wait4()
 * and appends one line to stdout:
 *
 *   WLRUSAGE maxrss_kib=<n> utime=<s> stime=<s> status=<exit code|-signal>
 *
 * It exits with PROG's exit code (128+signal if PROG was killed).  PROG gets
 * SIGKILL if the helper dies (timeouts in the runner kill the helper).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: wl_spawn PROG ARGS...\n");
    return 64;
  }
  const char *pre = getenv("WL_PRELOAD");
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 70;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (pre && *pre)
      setenv("LD_PRELOAD", pre, 1);
    else
      unsetenv("LD_PRELOAD");
    unsetenv("WL_PRELOAD");
    execv(argv[1], argv + 1);
    perror("execv");
    _exit(127);
  }
  int st;
  struct rusage ru;
  if (wait4(pid, &st, 0, &ru) < 0) {
    perror("wait4");
    return 70;
  }
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
  printf("WLRUSAGE maxrss_kib=%ld utime=%.4f stime=%.4f status=%d\n", ru.ru_maxrss,
         (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6,
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6, code);
  fflush(stdout);
  return code >= 0 ? code : 128 - code;
}
