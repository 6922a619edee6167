// SPDX-License-Identifier: GPL-2.0
/*
 * /init for the rseq-regions QEMU test initramfs.
 *
 * Makes the kernel's random pool ready ("KTEST-INFO random pool ready
 * after Ns"), then runs every executable in /tests in name order, each in
 * its own process with a time limit, and prints one "KTEST-RESULT <name>
 * <status>" line per test on the console, where status is PASS,
 * FAIL(exit=N), FAIL(signal=N) or FAIL(timeout) (after "KTEST-HUNG" lines
 * saying where its threads waited). Then "KTEST-DONE" and a reboot: without ACPI a
 * power-off would only halt, while RB_AUTOBOOT plus QEMU's -no-reboot
 * makes QEMU exit.
 *
 * Words of the kernel command line that the kernel does not know reach
 * this program's environment (RR_ITERS=..., KTEST_TIMEOUT=...), and the
 * tests inherit them. A test named "NN-name@VAR=value,VAR2=value2" also
 * gets those variables: that is how one binary runs in several modes
 * (RSEQALLOC_MODE=mainline next to the default region mode).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_DIR	"/tests"

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The tests' 50us timers need a high-resolution clocksource; under a busy
 * host TCG guests have fallen back to jiffies, so say which one runs.
 */
static const char *clocksource(void)
{
	static char buf[64] = "unknown";
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");

	if (f) {
		if (fgets(buf, sizeof(buf), f))
			buf[strcspn(buf, "\n")] = 0;
		fclose(f);
	}
	return buf;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Makes the kernel's random pool ready before any test runs; returns the
 * seconds that took, or -1 if /dev/random still does not poll readable.
 * A static binary cannot find glibc's getrandom() with dlsym, so Rust's
 * getrandom crate (proptest seeds from it) falls back to /dev/urandom after
 * poll()ing /dev/random until the pool is initialised. poll() waits for
 * interrupt entropy alone, which an idle TCG guest without RDRAND or
 * virtio-rng gathers over many minutes (model_remote sat in that poll for
 * over 7 minutes at 16 vCPUs). A blocking getrandom(2) instead has the
 * kernel gather timer-jitter entropy until the pool is ready, as the first
 * read of a real system's boot would.
 */
static double random_pool_ready(void)
{
	struct pollfd pfd = { .events = POLLIN };
	double t0 = now();
	char byte;
	int ready;

	while (getrandom(&byte, 1, 0) < 0 && errno == EINTR)
		;
	pfd.fd = open("/dev/random", O_RDONLY);
	ready = pfd.fd >= 0 && poll(&pfd, 1, 0) == 1;
	if (pfd.fd >= 0)
		close(pfd.fd);
	return ready ? now() - t0 : -1;
}

/* Prints one line of a /proc file, prefixed, if it can be read. */
static void show(const char *prefix, const char *path)
{
	char buf[512];
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = 0;
		printf("KTEST-HUNG %s %s\n", prefix, buf);
	}
	fclose(f);
}

/*
 * Where a timed-out test's threads are, before it is killed: each thread's
 * state, the system call it is in (number and arguments) and, where the
 * kernel has CONFIG_STACKTRACE, its kernel stack. Tells a blocked test
 * (a futex, a membarrier) from a busy one (state R, "running").
 */
static void dump_threads(pid_t pid)
{
	char path[64], file[400];
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	while (dir && (d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s/stat", path, d->d_name);
		show("stat", file);
		snprintf(file, sizeof(file), "%s/%s/syscall", path, d->d_name);
		show("syscall", file);
		snprintf(file, sizeof(file), "%s/%s/wchan", path, d->d_name);
		show("wchan", file);
	}
	if (dir)
		closedir(dir);
}

/* Run one test; returns its status word, or -1 on timeout. */
static int run(const char *name, int timeout)
{
	char path[512];
	int status = 0;
	double deadline;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s", TEST_DIR, name);
	pid = fork();
	if (pid < 0)
		return 255 << 8;
	if (!pid) {
		char *vars = strchr(name, '@'), *var;

		/* Own process group, so a timeout can kill helpers too. */
		setpgid(0, 0);
		if (vars) {
			vars = strdup(vars + 1);
			for (var = strtok(vars, ","); var; var = strtok(NULL, ","))
				putenv(var);
		}
		execl(path, name, (char *)NULL);
		perror(path);
		_exit(127);
	}
	deadline = now() + timeout;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return 255 << 8;
		if (now() > deadline) {
			dump_threads(pid);
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(20000);
	}
}

int main(void)
{
	const char *env = getenv("KTEST_TIMEOUT");
	int timeout = env ? atoi(env) : 240;
	char **names = NULL;
	int n = 0, cap = 0, i, failed = 0;
	double pool;
	struct utsname u;
	struct dirent *d;
	DIR *dir;

	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	uname(&u);
	printf("KTEST-INFO kernel %s %s, %ld cpus online, clocksource %s\n",
	       u.release, u.version, sysconf(_SC_NPROCESSORS_ONLN),
	       clocksource());
	pool = random_pool_ready();
	if (pool < 0)
		printf("KTEST-INFO random pool not ready: /dev/random does not poll readable\n");
	else
		printf("KTEST-INFO random pool ready after %.1fs\n", pool);

	/* Every test is run: the list grows, it never drops one. */
	dir = opendir(TEST_DIR);
	while (dir && (d = readdir(dir))) {
		if (d->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
		}
		if (!names || !(names[n++] = strdup(d->d_name))) {
			printf("KTEST-DONE 0 tests, 1 failed (out of memory listing %s)\n",
			       TEST_DIR);
			fflush(stdout);
			reboot(RB_AUTOBOOT);
		}
	}
	qsort(names, n, sizeof(names[0]), by_name);

	for (i = 0; i < n; i++) {
		double t0 = now();
		int st;

		printf("KTEST-START %s\n", names[i]);
		st = run(names[i], timeout);
		if (st == -1)
			printf("KTEST-RESULT %s FAIL(timeout)", names[i]);
		else if (WIFSIGNALED(st))
			printf("KTEST-RESULT %s FAIL(signal=%d)", names[i],
			       WTERMSIG(st));
		else if (WEXITSTATUS(st))
			printf("KTEST-RESULT %s FAIL(exit=%d)", names[i],
			       WEXITSTATUS(st));
		else
			printf("KTEST-RESULT %s PASS", names[i]);
		printf(" %.1fs\n", now() - t0);
		failed += st != 0;
	}
	printf("KTEST-DONE %d tests, %d failed\n", n, failed);
	fflush(stdout);
	sync();
	reboot(RB_AUTOBOOT);
	return 0;
}
