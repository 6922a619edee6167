/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One restart region in a page of its own: "jmp ." as the region, the
 * signature, "ret" as the restart address. Adding it is all the benchmark
 * needs: the kernel then has a region table for the process (and its static
 * key on), which is what costs, not running the region.
 */
#ifndef PERF_REGION_H
#define PERF_REGION_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define PR_RSEQ_REGIONS		74
#define PR_RSEQ_REGIONS_ADD	2
#define REGION_SIG		0x53053053

struct rseq_region {
	uint32_t size, sig;
	uint64_t start, post_commit, restart;
};

/* Returns 0 once the region is added, -1 (errno set) otherwise. */
static inline int add_one_region(void)
{
	uint32_t sig = REGION_SIG;
	struct rseq_region r;
	uint8_t *p;

	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	memset(p, 0x90, 32);
	p[0] = 0xeb;
	p[1] = 0xfe;
	memcpy(p + 12, &sig, 4);
	p[16] = 0xc3;
	if (mprotect(p, 4096, PROT_READ | PROT_EXEC))
		return -1;
	r = (struct rseq_region){ .size = sizeof(r), .sig = REGION_SIG,
		.start = (uint64_t)p, .post_commit = (uint64_t)p + 2,
		.restart = (uint64_t)p + 16 };
	return prctl(PR_RSEQ_REGIONS, PR_RSEQ_REGIONS_ADD, &r, 0, 0) ? -1 : 0;
}

#endif
