// SPDX-License-Identifier: GPL-2.0
/*
 * LD_PRELOAD shim for perfbench: gives the benchmarked process (perf) a
 * restart region, so that every switch-out of its threads looks its IP up.
 */
#include <stdio.h>
#include <stdlib.h>
#include "region.h"

__attribute__((constructor)) static void add_region_at_load(void)
{
	if (add_regions(1)) {
		perror("regions_preload: PR_RSEQ_REGIONS_ADD");
		exit(1);
	}
}
