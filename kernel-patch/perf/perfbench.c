// SPDX-License-Identifier: GPL-2.0
/*
 * The cost of restart regions for context switches and fork, in the QEMU
 * guest. Three benchmarks, each in three settings, interleaved round by
 * round so that a slow spell of the host hits every setting:
 *
 * perf bench sched pipe and perf bench sched messaging -p (hackbench over
 * pipes):
 *   none     no process has regions: the static key is off;
 *   other    another process holds a region: the key is on, the benchmark's
 *            own mm has no table (one pointer test per switch-out);
 *   own      perf itself has a region (LD_PRELOAD=regions_preload.so): each
 *            switch-out of its tasks looks the saved user IP up, and each
 *            of messaging's forks copies the table.
 *
 * fork: fork() of a child which exits at once, plus waitpid(), from a
 * small static process holding
 *   none     no region;
 *   one      one region (one registrant): fork copies a one-entry table;
 *   full     as many regions as the kernel's QUERY limit allows: fork
 *            copies the largest table (kvmalloc() and memcpy()).
 *
 * On a kernel without the series (QUERY fails with EINVAL: the stock
 * kernel, the baseline of STOCK=1) only the "none" settings run.
 *
 * Prints "PERFBENCH-KERNEL patched|stock", "PERFBENCH <bench> <setting>
 * <value>" per run and a "PERFBENCH-SUMMARY" line per benchmark with the
 * medians and the ratios to "none". TCG timing is emulated: only ratios
 * mean anything. Exit status 1 when a run fails.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "region.h"

#define ROUNDS		5
#define FORKS		301	/* fork()+waitpid() per run; the median is kept */
#define NSETTINGS	3

struct bench {
	const char *name;
	const char *unit;
	const char *settings[NSETTINGS];
	/* perf benchmarks: the command and where its number is */
	const char *argv[12];
	const char *key;	/* output line holding the value */
	int after;		/* the value follows the key, or precedes it */
	double v[NSETTINGS][ROUNDS];
};

enum { PIPE, MESSAGING, FORK, NBENCH };

static struct bench benches[NBENCH] = {
	[PIPE] = { "pipe", "usecs/op", { "none", "other", "own" },
		   { "/usr/bin/perf", "bench", "sched", "pipe", "-l", "2000", NULL },
		   "usecs/op", 0 },
	[MESSAGING] = { "messaging", "Total time: s", { "none", "other", "own" },
			{ "/usr/bin/perf", "bench", "sched", "messaging", "-p", "-g", "2",
			  "-l", "10", NULL },
			"Total time:", 1 },
	[FORK] = { "fork", "us per fork+wait", { "none", "one", "full" } },
};

static int limit;	/* the kernel's region limit; 0: stock kernel */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, size_t n)
{
	double s[FORKS];

	memcpy(s, v, n * sizeof(s[0]));
	qsort(s, n, sizeof(s[0]), cmp);
	return s[n / 2];
}

/* Run perf, return the number on its line holding @key (<0: failed). */
static double run_perf(const struct bench *b, int own)
{
	char buf[4096], *line;
	int fd[2], status;
	double v = -1;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	if (pipe(fd))
		return -1;
	pid = fork();
	if (!pid) {
		dup2(fd[1], 1);
		close(fd[0]);
		if (own)
			setenv("LD_PRELOAD", "/lib/regions_preload.so", 1);
		execv(b->argv[0], (char **)b->argv);
		_exit(127);
	}
	close(fd[1]);
	while (n < sizeof(buf) - 1 && (r = read(fd[0], buf + n, sizeof(buf) - 1 - n)) > 0)
		n += r;
	buf[n] = 0;
	close(fd[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return -1;
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char *k = strstr(line, b->key);

		if (!k)
			continue;
		/* "Total time: 1.234 [sec]" or "   12.345 usecs/op" */
		v = strtod(b->after ? k + strlen(b->key) : line, NULL);
	}
	return v;
}

/*
 * In a fresh process holding @nregions regions, the median time in
 * microseconds of FORKS fork()+waitpid() of a child which exits at once
 * (<0: failed). A fresh process each time, so that the settings differ
 * only in their region tables.
 */
static double run_fork(int nregions)
{
	int fd[2], status;
	double v = -1;
	pid_t pid;

	if (pipe(fd))
		return -1;
	pid = fork();
	if (!pid) {
		double t[FORKS], t0;
		pid_t c;
		int i;

		close(fd[0]);
		if (nregions && add_regions(nregions))
			_exit(1);
		for (i = 0; i < FORKS; i++) {
			t0 = now();
			c = fork();
			if (!c)
				_exit(0);
			if (c < 0 || waitpid(c, &status, 0) != c)
				_exit(1);
			t[i] = now() - t0;
		}
		v = median(t, FORKS) * 1e6;
		_exit(write(fd[1], &v, sizeof(v)) == sizeof(v) ? 0 : 1);
	}
	close(fd[1]);
	if (read(fd[0], &v, sizeof(v)) != sizeof(v))
		v = -1;
	close(fd[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return -1;
	return v;
}

/* A process which holds one region until it is killed. */
static pid_t start_holder(void)
{
	pid_t pid = fork();

	if (!pid) {
		if (add_regions(1))
			_exit(1);
		pause();
		_exit(0);
	}
	usleep(100000);
	return pid;
}

static int record(struct bench *b, int s, int round, double v)
{
	b->v[s][round] = v;
	printf("PERFBENCH %s %s %.3f\n", b->name, b->settings[s], v);
	fflush(stdout);
	return v < 0;
}

int main(void)
{
	int nsettings, round, s, failed = 0;
	unsigned int i;
	pid_t holder;

	limit = regions_limit();
	if (limit < 0)
		limit = 0;
	if (limit > REGIONS_MAX) {
		fprintf(stderr, "perfbench: the kernel allows %d regions, region.h fits %d\n",
			limit, REGIONS_MAX);
		return 1;
	}
	nsettings = limit ? NSETTINGS : 1;
	printf("PERFBENCH-KERNEL %s (region limit %d)\n", limit ? "patched" : "stock", limit);
	for (round = 0; round < ROUNDS; round++) {
		for (s = 0; s < nsettings; s++) {
			holder = 0;
			/*
			 * The key is released HZ after the last table goes:
			 * give it that time, so that "none" runs with it off.
			 */
			if (s == 0 && limit)
				usleep(1500000);
			if (s == 1)
				holder = start_holder();
			failed |= record(&benches[PIPE], s, round, run_perf(&benches[PIPE], s == 2));
			failed |= record(&benches[MESSAGING], s, round,
					 run_perf(&benches[MESSAGING], s == 2));
			if (holder) {
				kill(holder, SIGKILL);
				waitpid(holder, NULL, 0);
			}
		}
		for (s = 0; s < nsettings; s++)
			failed |= record(&benches[FORK], s, round,
					 run_fork(s == 0 ? 0 : s == 1 ? 1 : limit));
	}
	for (i = 0; i < NBENCH; i++) {
		const struct bench *b = &benches[i];
		double m[NSETTINGS];

		for (s = 0; s < nsettings; s++)
			m[s] = median(b->v[s], ROUNDS);
		if (!limit) {
			printf("PERFBENCH-SUMMARY %s (%s, median of %d): %s %.3f\n",
			       b->name, b->unit, ROUNDS, b->settings[0], m[0]);
			continue;
		}
		printf("PERFBENCH-SUMMARY %s (%s, median of %d): %s %.3f, %s %.3f, %s %.3f; %s/%s %.3f, %s/%s %.3f\n",
		       b->name, b->unit, ROUNDS, b->settings[0], m[0], b->settings[1], m[1],
		       b->settings[2], m[2], b->settings[1], b->settings[0], m[1] / m[0],
		       b->settings[2], b->settings[0], m[2] / m[0]);
	}
	return failed;
}
