// SPDX-License-Identifier: GPL-2.0
/*
 * The cost of restart regions for context switches, in the QEMU guest:
 * perf bench sched pipe and perf bench sched messaging -p (hackbench over
 * pipes), each in three settings, interleaved round by round so that a
 * slow spell of the host hits all three:
 *
 *   none     no process has regions: the static key is off;
 *   other    another process holds a region: the key is on, the benchmark's
 *            own mm has no table (one pointer test per switch-out);
 *   own      perf itself has a region (LD_PRELOAD=regions_preload.so): each
 *            switch-out of its tasks looks the saved user IP up.
 *
 * Prints "PERFBENCH <bench> <setting> <value>" per run and a
 * "PERFBENCH-SUMMARY" line per benchmark with the medians and the ratios to
 * "none". TCG timing is emulated: only ratios within one boot mean anything.
 * Exit status 1 when a run fails.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "region.h"

#define ROUNDS	5

static const char *const settings[] = { "none", "other", "own" };

struct bench {
	const char *name;
	const char *argv[12];
	const char *key;	/* output line holding the value */
	int after;		/* the value follows the key, or precedes it */
	double v[3][ROUNDS];
};

static struct bench benches[] = {
	{ "pipe", { "/usr/bin/perf", "bench", "sched", "pipe", "-l", "2000", NULL },
	  "usecs/op", 0 },
	{ "messaging", { "/usr/bin/perf", "bench", "sched", "messaging", "-p", "-g", "2",
			 "-l", "10", NULL },
	  "Total time:", 1 },
};

/* Run perf, return the number on its line holding @key (<0: failed). */
static double run(struct bench *b, int own)
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

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v)
{
	double s[ROUNDS];

	memcpy(s, v, sizeof(s));
	qsort(s, ROUNDS, sizeof(s[0]), cmp);
	return s[ROUNDS / 2];
}

int main(void)
{
	unsigned int i, round, s;
	pid_t holder = 0;
	int failed = 0;

	for (round = 0; round < ROUNDS; round++) {
		for (s = 0; s < 3; s++) {
			if (s == 1) {
				holder = fork();
				if (!holder) {
					if (add_one_region())
						_exit(1);
					pause();
					_exit(0);
				}
				usleep(100000);
			}
			for (i = 0; i < sizeof(benches) / sizeof(benches[0]); i++) {
				struct bench *b = &benches[i];

				b->v[s][round] = run(b, s == 2);
				printf("PERFBENCH %s %s %.3f\n", b->name, settings[s],
				       b->v[s][round]);
				failed |= b->v[s][round] < 0;
			}
			if (s == 1) {
				kill(holder, SIGKILL);
				waitpid(holder, NULL, 0);
			}
		}
	}
	for (i = 0; i < sizeof(benches) / sizeof(benches[0]); i++) {
		struct bench *b = &benches[i];
		double m0 = median(b->v[0]), m1 = median(b->v[1]), m2 = median(b->v[2]);

		printf("PERFBENCH-SUMMARY %s (%s, median of %d): none %.3f, other %.3f, own %.3f; other/none %.3f, own/none %.3f\n",
		       b->name, b->key, ROUNDS, m0, m1, m2, m1 / m0, m2 / m0);
	}
	return failed;
}
