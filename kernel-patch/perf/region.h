/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Restart regions for the benchmarks, in a page of their own: @n regions of
 * one "jmp ." each, 8 bytes apart, sharing one restart address ("ret",
 * after the signature). Having regions is all the benchmarks need: the
 * kernel then has a region table for the process (and its static key on),
 * which is what costs, not running the regions.
 */
#ifndef PERF_REGION_H
#define PERF_REGION_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define PR_RSEQ_REGIONS		74
#define PR_RSEQ_REGIONS_QUERY	1
#define PR_RSEQ_REGIONS_ADD	2
#define REGION_SIG		0x53053053
/* As many regions as fit before the restart address in the page. */
#define REGIONS_MAX		256

struct rseq_region {
	uint32_t size, sig;
	uint64_t start, post_commit, restart;
};

/* The kernel's per-process limit, or -1 (errno EINVAL) on a stock kernel. */
static inline int regions_limit(void)
{
	return prctl(PR_RSEQ_REGIONS, PR_RSEQ_REGIONS_QUERY, 0, 0, 0);
}

/* Returns 0 once @n regions are added, -1 (errno set) otherwise. */
static inline int add_regions(unsigned int n)
{
	uint32_t sig = REGION_SIG;
	struct rseq_region r;
	uint8_t *p, *restart;
	unsigned int i;

	if (n > REGIONS_MAX) {
		errno = EINVAL;
		return -1;
	}
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	memset(p, 0x90, 4096);
	for (i = 0; i < n; i++) {
		p[8 * i] = 0xeb;
		p[8 * i + 1] = 0xfe;
	}
	restart = p + 8 * REGIONS_MAX + 16;
	memcpy(restart - 4, &sig, 4);
	*restart = 0xc3;
	if (mprotect(p, 4096, PROT_READ | PROT_EXEC))
		return -1;
	for (i = 0; i < n; i++) {
		r = (struct rseq_region){ .size = sizeof(r), .sig = REGION_SIG,
			.start = (uint64_t)(p + 8 * i),
			.post_commit = (uint64_t)(p + 8 * i + 2),
			.restart = (uint64_t)restart };
		if (prctl(PR_RSEQ_REGIONS, PR_RSEQ_REGIONS_ADD, &r, 0, 0))
			return -1;
	}
	return 0;
}

#endif
